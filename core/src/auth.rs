//! Roles and principals. Authentication (looking a key up) is the driver's
//! job; deciding what a principal may do is pure and lives here.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use crate::error::ValidationError;
use crate::ids::TenantId;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Get, list, fires, stream.
    #[serde(rename = "timer.read")]
    TimerRead,
    /// Create.
    #[serde(rename = "timer.write")]
    TimerWrite,
    /// Cancel.
    #[serde(rename = "timer.cancel")]
    TimerCancel,
    /// Everything in the tenant (every role above).
    #[serde(rename = "tenant.admin")]
    TenantAdmin,
    /// The operator's: streams every tenant's events (`__all__`). Not a
    /// tenant role — `tenant.admin` never implies it and the development
    /// key does not hold it; only the operator grants it
    /// (`minoots keys create --roles operator`).
    #[serde(rename = "operator")]
    Operator,
}

impl Role {
    /// Every role, in order.
    pub const ALL: [Role; 5] =
        [Role::TimerRead, Role::TimerWrite, Role::TimerCancel, Role::TenantAdmin, Role::Operator];
    /// The roles that act inside one tenant (all but [`Role::Operator`]).
    pub const TENANT: [Role; 4] = [Role::TimerRead, Role::TimerWrite, Role::TimerCancel, Role::TenantAdmin];

    /// The API spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::TimerRead => "timer.read",
            Role::TimerWrite => "timer.write",
            Role::TimerCancel => "timer.cancel",
            Role::TenantAdmin => "tenant.admin",
            Role::Operator => "operator",
        }
    }

    /// Parses the API spelling, naming `field` in the error.
    pub fn parse(field: &str, text: &str) -> Result<Role, ValidationError> {
        Role::ALL.into_iter().find(|r| r.as_str() == text).ok_or_else(|| {
            ValidationError::new(
                field,
                "must be one of timer.read, timer.write, timer.cancel, tenant.admin, operator",
            )
        })
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The key's tenant: every request is scoped to it.
    pub tenant_id: TenantId,
    /// The key's roles.
    pub roles: BTreeSet<Role>,
    /// The key's id (not the secret), for logs; `jwt:<sub>` for a bearer token.
    pub key_id: String,
    /// When the credential stops being valid (a bearer token's `exp`, wall
    /// ms); `None` for API keys, which last until revoked.
    pub expires_at_ms: Option<crate::time::WallMs>,
}

/// Why a principal may not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    /// The key lacks a role.
    #[error("the API key lacks role {0}")]
    MissingRole(&'static str),
    /// The request names another tenant than the key's.
    #[error("the API key belongs to tenant {key_tenant}, not {requested}")]
    WrongTenant {
        /// The key's tenant.
        key_tenant: String,
        /// The tenant the request named.
        requested: String,
    },
}

impl Principal {
    /// Whether the principal holds `role` (tenant.admin holds every tenant
    /// role, never [`Role::Operator`]).
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role) || (role != Role::Operator && self.roles.contains(&Role::TenantAdmin))
    }

    /// `Ok` if the principal holds `role`.
    pub fn require(&self, role: Role) -> Result<(), Forbidden> {
        if self.has(role) { Ok(()) } else { Err(Forbidden::MissingRole(role.as_str())) }
    }

    /// Resolves the tenant a request acts on: the key's own tenant when the
    /// request names none (or names it); anything else is forbidden.
    pub fn scope(&self, requested: Option<&str>) -> Result<TenantId, Forbidden> {
        match requested {
            None | Some("") => Ok(self.tenant_id.clone()),
            Some(t) if t == self.tenant_id.as_str() => Ok(self.tenant_id.clone()),
            Some(t) => Err(Forbidden::WrongTenant {
                key_tenant: self.tenant_id.to_string(),
                requested: t.to_owned(),
            }),
        }
    }
}
