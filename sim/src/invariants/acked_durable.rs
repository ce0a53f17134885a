//! **Nothing acknowledged is lost.** Every schedule a client was told
//! succeeded exists in the store, with the content the client was shown
//! (id, schedule, labels, key, …; not the fields that change as it fires);
//! every cancel a client was told succeeded stays cancelled — the timer is
//! never resurrected; and no client was ever told an acknowledged timer does
//! not exist. What `ack-before-commit` breaks when a commit then fails.

use minoots_core::timer::TimerStatus;
use minoots_node::grpc::timer_to_wire;
use minoots_proto as pb;

use super::{Property, Violation};
use crate::oracle::Oracle;
use crate::world::Database;

/// Re-checks every acknowledged write at each step (they can be lost at any
/// time, not only when acknowledged).
#[derive(Debug, Default)]
pub struct AckedDurable {
    next_anomaly: usize,
}

/// The fields of a timer that never change after it is created.
fn immutable(t: &pb::Timer) -> pb::Timer {
    pb::Timer {
        status: 0,
        fire_at_iso: if t.schedule_kind == "once" { t.fire_at_iso.clone() } else { String::new() },
        fired_at_iso: String::new(),
        cancelled_at_iso: String::new(),
        cancel_reason: String::new(),
        cancelled_by: String::new(),
        next_occurrence: 0,
        fired_count: 0,
        ..t.clone()
    }
}

impl Property for AckedDurable {
    fn check(&mut self, db: &Database, oracle: &Oracle, found: &mut Vec<Violation>) {
        let timers = db.model.timers();
        for (id, acked) in &oracle.acked {
            let subjects = vec![id.to_string()];
            match timers.get(id) {
                None => found.push(Violation {
                    property: "acked-durable",
                    message: format!(
                        "timer {id} was acknowledged to c{} at {:.3}s but is not in the store",
                        acked.client + 1,
                        acked.true_us as f64 / 1e6
                    ),
                    subjects,
                }),
                Some(record) => {
                    let stored = immutable(&timer_to_wire(record));
                    let shown = immutable(&acked.wire);
                    if stored != shown {
                        found.push(Violation {
                            property: "acked-durable",
                            message: format!(
                                "timer {id} in the store differs from what c{} was shown:\n  shown  {shown:?}\n  stored {stored:?}",
                                acked.client + 1
                            ),
                            subjects,
                        });
                    }
                }
            }
        }
        for (id, cancel) in &oracle.cancels {
            let status = timers.get(id).map(|t| t.status);
            if status != Some(TimerStatus::Cancelled) {
                found.push(Violation {
                    property: "acked-durable",
                    message: format!(
                        "timer {id}'s cancel was acknowledged to c{} at {:.3}s but the store has it {}",
                        cancel.client + 1,
                        cancel.true_us as f64 / 1e6,
                        status.map_or("missing", |s| s.as_str())
                    ),
                    subjects: vec![id.to_string()],
                });
            }
        }
        for anomaly in &oracle.anomalies[self.next_anomaly..] {
            if anomaly.property == "acked-durable" {
                found.push(Violation {
                    property: "acked-durable",
                    message: anomaly.message.clone(),
                    subjects: anomaly.timer.iter().map(|t| t.to_string()).collect(),
                });
            }
        }
        self.next_anomaly = oracle.anomalies.len();
    }
}
