//! **Clients only get answers a correct service can give.** The workload
//! sends only valid requests with its own key and tenant, so a reply such as
//! INVALID_ARGUMENT, ALREADY_EXISTS on a same-key retry, PERMISSION_DENIED,
//! INTERNAL, a cancel answered OK with a timer that is not cancelled, or an
//! idempotent retry answered with a different timer, is a bug.

use super::{Property, Violation};
use crate::oracle::Oracle;
use crate::world::Database;

/// Reports each client anomaly of this kind once.
#[derive(Debug, Default)]
pub struct ApiContract {
    next: usize,
}

impl Property for ApiContract {
    fn check(&mut self, _db: &Database, oracle: &Oracle, found: &mut Vec<Violation>) {
        for anomaly in &oracle.anomalies[self.next..] {
            if anomaly.property == "api-contract" {
                let mut subjects: Vec<String> = anomaly.timer.iter().map(|t| t.to_string()).collect();
                if let Some(who) = anomaly.message.split(':').next() {
                    subjects.push(who.to_owned());
                }
                found.push(Violation {
                    property: "api-contract",
                    message: anomaly.message.clone(),
                    subjects,
                });
            }
        }
        self.next = oracle.anomalies.len();
    }
}
