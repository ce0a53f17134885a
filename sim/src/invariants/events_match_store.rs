//! **Every relayed event matches the store.** Each event a node handed to
//! its subscribers (scheduled, fired, cancelled) is, field for field, the
//! outbox row with the same sequence number that the database committed,
//! and each event a client received over gRPC `StreamTimerEvents` is that
//! row as the wire shows it: nothing is published that was not recorded.

use minoots_core::event::OutboxEvent;
use minoots_node::grpc::event_to_wire;

use super::{Property, Violation};
use crate::oracle::Oracle;
use crate::world::Database;

/// Checks each relayed event once.
#[derive(Debug, Default)]
pub struct EventsMatchStore {
    next: usize,
    next_streamed: usize,
}

fn row(outbox: &[OutboxEvent], seq: u64) -> Option<&OutboxEvent> {
    outbox.binary_search_by_key(&seq, |row| row.seq).ok().map(|i| &outbox[i])
}

impl Property for EventsMatchStore {
    fn check(&mut self, db: &Database, oracle: &Oracle, found: &mut Vec<Violation>) {
        let outbox = db.model.outbox();
        for relayed in &oracle.relayed[self.next..] {
            let event = &relayed.event;
            let problem = match row(outbox, event.seq) {
                None => Some("no outbox row has its sequence number".to_owned()),
                Some(row) if row != event => Some(format!("the outbox row {} is {row:?}", row.seq)),
                Some(_) => None,
            };
            if let Some(problem) = problem {
                found.push(Violation {
                    property: "events-match-store",
                    message: format!(
                        "n{} relayed event seq {} ({} {}#{}) but {problem}",
                        relayed.node + 1,
                        event.seq,
                        event.kind.as_str(),
                        event.timer_id,
                        event.occurrence
                    ),
                    subjects: vec![event.timer_id.to_string(), format!("n{}", relayed.node + 1)],
                });
            }
        }
        self.next = oracle.relayed.len();
        for streamed in &oracle.streamed[self.next_streamed..] {
            let event = &streamed.event;
            let problem = match row(outbox, event.seq) {
                None => Some("no outbox row has its sequence number".to_owned()),
                Some(row) if event_to_wire(row) != *event => {
                    Some(format!("the outbox row {} on the wire is {:?}", row.seq, event_to_wire(row)))
                }
                Some(_) => None,
            };
            if let Some(problem) = problem {
                found.push(Violation {
                    property: "events-match-store",
                    message: format!(
                        "the gRPC stream of n{} delivered event seq {} ({}) but {problem}",
                        streamed.node + 1,
                        event.seq,
                        event.dedupe_key
                    ),
                    subjects: vec![event.dedupe_key.split(':').next().unwrap_or("").to_owned()],
                });
            }
        }
        self.next_streamed = oracle.streamed.len();
    }
}
