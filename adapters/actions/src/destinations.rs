//! The connect-time half of the webhook destination rule
//! ([`minoots_core::destination`]): the HTTP client's DNS resolver resolves a
//! name with the system resolver and keeps only the addresses the operator's
//! policy allows, so a name that resolves — or rebinds, between schedule time
//! and the attempt — to a private address reaches nothing. Literal addresses
//! skip DNS; the executor checks them with the same policy before each
//! attempt. The client also refuses redirects, so a destination cannot send
//! the runner elsewhere.

use std::net::SocketAddr;
use std::sync::Arc;

use minoots_core::destination::{DestinationPolicy, Refused};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Resolves names, keeping only the addresses `policy` allows.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<DestinationPolicy>,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<DestinationPolicy>) -> Self {
        Self { policy }
    }

    /// The addresses of `host` that the policy allows; the first refusal when there are none.
    pub async fn allowed_addresses(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let resolved =
            tokio::net::lookup_host((host, 0)).await.map_err(|e| ResolveError::Lookup(e.to_string()))?;
        let mut allowed = Vec::new();
        let mut refusal = None;
        for address in resolved {
            match self.policy.check_resolved(host, address.ip()) {
                Ok(()) => allowed.push(address),
                Err(refused) => {
                    refusal.get_or_insert(refused);
                }
            }
        }
        match (allowed.is_empty(), refusal) {
            (false, _) => Ok(allowed),
            (true, Some(refused)) => Err(ResolveError::Refused(refused)),
            (true, None) => Err(ResolveError::Lookup(format!("{host} has no addresses"))),
        }
    }
}

/// Why a name gave no address to connect to.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The policy refuses every address the name resolved to: the destination's fault, for good.
    #[error("destination refused: {0}")]
    Refused(Refused),
    /// The lookup failed (may succeed later).
    #[error("DNS lookup failed: {0}")]
    Lookup(String),
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        Box::pin(async move {
            let addresses = resolver.allowed_addresses(name.as_str()).await?;
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// The policy refusal somewhere in `error`'s chain of sources, if any.
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(ResolveError::Refused(refused)) = e.downcast_ref::<ResolveError>() {
            return Some(refused);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_allowed() {
        let guarded = GuardedResolver::new(Arc::new(DestinationPolicy::default()));
        let err = guarded.allowed_addresses("localhost").await.expect_err("loopback refused");
        assert!(matches!(err, ResolveError::Refused(Refused::PrivateAddress { .. })), "{err}");
        let open = GuardedResolver::new(Arc::new(DestinationPolicy::allow_all()));
        let addresses = open.allowed_addresses("localhost").await.expect("allowed");
        assert!(addresses.iter().all(|a| a.ip().is_loopback()));
    }
}
