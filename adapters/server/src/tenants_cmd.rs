//! `minoots tenants quota|show`: a tenant's own quota limits, kept with its
//! keys (the data directory's store or a cluster's PostgreSQL). A running
//! server picks a change up within a few seconds. Limits not set for the
//! tenant fall back to the operator's defaults (`MINOOTS_QUOTA_*`).

use std::error::Error;
use std::sync::Arc;

use minoots_core::TenantId;
use minoots_core::quota::QuotaLimits;
use minoots_node::{Clock, SystemClock};

use crate::keys_cmd::KeyStoreArgs;

/// `minoots tenants ...`
#[derive(Debug, clap::Args)]
pub struct TenantsArgs {
    #[command(flatten)]
    pub store: KeyStoreArgs,
    #[command(subcommand)]
    pub command: TenantsCommand,
}

/// Tenant commands.
#[derive(Debug, clap::Subcommand)]
pub enum TenantsCommand {
    /// Set a tenant's own quota limits: a number, or `default` for the operator's default.
    /// Limits not named keep their value.
    Quota {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Timers in status scheduled at once (limitType `burst`).
        #[arg(long, value_parser = parse_limit)]
        pending_timers: Option<Limit>,
        /// Timers created per UTC day (limitType `daily`).
        #[arg(long, value_parser = parse_limit)]
        daily_creates: Option<Limit>,
        /// API requests per second (limitType `rate`; at most 4294967295).
        #[arg(long, value_parser = parse_limit)]
        requests_per_second: Option<Limit>,
    },
    /// Show a tenant's own quota limits.
    Show {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
}

/// A limit given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The operator's default.
    Default,
    /// This value.
    Value(u64),
}

fn parse_limit(text: &str) -> Result<Limit, String> {
    if text == "default" {
        return Ok(Limit::Default);
    }
    match text.parse::<u64>() {
        Ok(value) if i64::try_from(value).is_ok() => Ok(Limit::Value(value)),
        _ => Err(format!("{text:?} is not a whole number from 0 to 9223372036854775807, nor `default`")),
    }
}

/// Runs a tenant command.
pub async fn run(args: TenantsArgs) -> Result<(), Box<dyn Error>> {
    let clock = Arc::new(SystemClock::new());
    let store = args.store.open(clock.clone()).await?;
    match args.command {
        TenantsCommand::Quota { tenant, pending_timers, daily_creates, requests_per_second } => {
            let tenant_id = TenantId::parse("tenant", &tenant)?;
            let mut limits = store.tenant_quota(&tenant_id).await?;
            let apply = |current: Option<u64>, given: Option<Limit>| match given {
                None => current,
                Some(Limit::Default) => None,
                Some(Limit::Value(v)) => Some(v),
            };
            limits.pending_timers = apply(limits.pending_timers, pending_timers);
            limits.daily_creates = apply(limits.daily_creates, daily_creates);
            let rate = apply(limits.requests_per_second.map(u64::from), requests_per_second);
            limits.requests_per_second = rate
                .map(|v| u32::try_from(v).map_err(|_| "--requests-per-second: at most 4294967295"))
                .transpose()?;
            store.set_tenant_quota(tenant_id.clone(), limits, clock.now().wall_ms).await?;
            print_limits(&tenant_id, &limits);
        }
        TenantsCommand::Show { tenant } => {
            let tenant_id = TenantId::parse("tenant", &tenant)?;
            print_limits(&tenant_id, &store.tenant_quota(&tenant_id).await?);
        }
    }
    Ok(())
}

fn print_limits(tenant: &TenantId, limits: &QuotaLimits) {
    let show = |v: Option<u64>| v.map_or_else(|| "default".to_owned(), |v| v.to_string());
    println!("tenant:              {tenant}");
    println!("pending timers:      {}", show(limits.pending_timers));
    println!("daily creates:       {}", show(limits.daily_creates));
    println!("requests per second: {}", show(limits.requests_per_second.map(u64::from)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_numbers_or_default() {
        assert_eq!(parse_limit("default"), Ok(Limit::Default));
        assert_eq!(parse_limit("0"), Ok(Limit::Value(0)));
        assert!(parse_limit("-1").is_err());
        assert!(parse_limit("9223372036854775808").is_err());
        assert!(parse_limit("lots").unwrap_err().contains("default"));
    }
}
