//! Webhook signatures, and the keys an operator configures.
//!
//! `Minoots-Signature: t=<unix seconds>,v2=<hex HMAC-SHA256(key,
//! "<t>.<tenant id>.<idempotency key>.<body>")>`, with a second `v2=` made
//! with the *next* key while a rotation is under way, so receivers can rotate
//! without a gap (accept either; Stripe's scheme). The signed text names the
//! tenant and the message (the idempotency key) as well as the time and the
//! body: a receiver that checks them knows whose fire it is and which one,
//! whatever the body claims.
//!
//! Each tenant signs with its own key ([`crate::tenant_keys`]), generated on
//! first use and kept in the action store, so one tenant can never make the
//! server sign something that verifies under another tenant's key. An
//! operator may configure keys instead ([`SigningKeys`]): per tenant, or one
//! for every tenant (a single-tenant deployment; then receivers must check
//! the signed tenant).

use std::collections::BTreeMap;
use std::path::Path;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Shortest accepted key, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// A current key and, during a rotation, the next one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyPair {
    /// Signs every request.
    pub current: String,
    /// Also signs every request while set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Keys the operator configured: one pair for every tenant and/or pairs per
/// tenant. Tenants with neither sign with their generated key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeys {
    /// For every tenant without its own pair (all tenants share it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<KeyPair>,
    /// Per-tenant pairs.
    #[serde(default)]
    pub tenants: BTreeMap<String, KeyPair>,
}

/// Why the keys file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The file could not be read.
    #[error("signing keys file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("signing keys file {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl SigningKeys {
    /// One key for every tenant.
    pub fn single(current: String, next: Option<String>) -> Result<Self, String> {
        let keys = Self { default: Some(KeyPair { current, next }), tenants: BTreeMap::new() };
        keys.check()?;
        Ok(keys)
    }

    /// Reads the keys file at `path`.
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| KeysError::Io { path: path.display().to_string(), source })?;
        let keys: Self = serde_json::from_str(&text)
            .map_err(|e| KeysError::Invalid { path: path.display().to_string(), message: e.to_string() })?;
        keys.check().map_err(|message| KeysError::Invalid { path: path.display().to_string(), message })?;
        Ok(keys)
    }

    fn check(&self) -> Result<(), String> {
        let pairs = self
            .default
            .iter()
            .map(|p| ("default".to_owned(), p))
            .chain(self.tenants.iter().map(|(t, p)| (format!("tenants.{t}"), p)));
        for (name, pair) in pairs {
            for (which, key) in [("current", Some(&pair.current)), ("next", pair.next.as_ref())] {
                if key.is_some_and(|k| k.len() < MIN_KEY_BYTES) {
                    return Err(format!("{name}.{which} must be at least {MIN_KEY_BYTES} bytes"));
                }
            }
        }
        Ok(())
    }

    /// The configured pair that signs `tenant`'s requests, if the operator configured one.
    pub fn for_tenant(&self, tenant: &str) -> Option<&KeyPair> {
        self.tenants.get(tenant).or(self.default.as_ref())
    }
}

/// A fresh random key: 32 bytes from the OS, hex.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// What one signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// Unix seconds when the request was sent.
    pub unix_seconds: i64,
    /// The tenant whose fire it is.
    pub tenant_id: &'a str,
    /// The message id: the delivery's idempotency key.
    pub message_id: &'a str,
    /// The request body.
    pub body: &'a [u8],
}

impl Signed<'_> {
    fn mac(&self, key: &str) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
        for part in
            [self.unix_seconds.to_string().as_bytes(), self.tenant_id.as_bytes(), self.message_id.as_bytes()]
        {
            mac.update(part);
            mac.update(b".");
        }
        mac.update(self.body);
        mac
    }

    /// Hex HMAC-SHA256 of `"<t>.<tenant>.<message id>.<body>"`.
    pub fn sign(&self, key: &str) -> String {
        hex::encode(self.mac(key).finalize().into_bytes())
    }

    /// The `Minoots-Signature` header value: `pair`'s current key, and its next one while set.
    pub fn header(&self, pair: &KeyPair) -> String {
        let mut header = format!("t={},v2={}", self.unix_seconds, self.sign(&pair.current));
        if let Some(next) = &pair.next {
            header.push_str(&format!(",v2={}", self.sign(next)));
        }
        header
    }
}

/// Checks a `Minoots-Signature` header against `key` (what a receiver does):
/// its `t` is the signed time, and one of its `v2` values must be the
/// signature of `(t, tenant_id, message_id, body)`. Returns the signed time.
pub fn verify(header: &str, key: &str, tenant_id: &str, message_id: &str, body: &[u8]) -> Option<i64> {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v2", value)) => signatures.push(value),
            _ => {}
        }
    }
    let signed = Signed { unix_seconds: t?, tenant_id, message_id, body };
    let matches = |hex_signature: &&str| {
        hex::decode(hex_signature).is_ok_and(|bytes| signed.mac(key).verify_slice(&bytes).is_ok()) // constant time
    };
    signatures.iter().any(matches).then_some(signed.unix_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_tenant_message_time_and_body_with_current_and_next() {
        let pair = KeyPair { current: "k".repeat(32), next: Some("n".repeat(32)) };
        let signed =
            Signed { unix_seconds: 1_700_000_000, tenant_id: "acme", message_id: "t1:1:hook", body: b"{}" };
        let header = signed.header(&pair);
        assert!(header.starts_with("t=1700000000,v2="));
        assert_eq!(header.matches("v2=").count(), 2);
        let check = |key: &str, tenant: &str, id: &str, body: &[u8]| verify(&header, key, tenant, id, body);
        assert_eq!(check(&"k".repeat(32), "acme", "t1:1:hook", b"{}"), Some(1_700_000_000));
        assert_eq!(check(&"n".repeat(32), "acme", "t1:1:hook", b"{}"), Some(1_700_000_000));
        assert_eq!(check(&"x".repeat(32), "acme", "t1:1:hook", b"{}"), None, "another key");
        assert_eq!(check(&"k".repeat(32), "other", "t1:1:hook", b"{}"), None, "another tenant");
        assert_eq!(check(&"k".repeat(32), "acme", "t2:1:hook", b"{}"), None, "another message");
        assert_eq!(check(&"k".repeat(32), "acme", "t1:1:hook", b"{ }"), None, "another body");
        assert!(SigningKeys::single("short".into(), None).is_err());
    }

    /// The README's receiver snippet computes this value for these inputs.
    #[test]
    fn the_signed_text_is_time_tenant_message_and_body_joined_by_dots() {
        let signed = Signed {
            unix_seconds: 1_700_000_000,
            tenant_id: "tenant-local",
            message_id: "tid:1:hook",
            body: br#"{"a":1}"#,
        };
        assert_eq!(
            signed.sign("example-signing-key-0123456789"),
            "dab9035cf554b83d47666d2d0ee318ac54719e7ca6891ce337e8056fcabd01a3"
        );
    }

    #[test]
    fn configured_keys_apply_per_tenant_then_to_everyone() {
        let mut keys = SigningKeys::default();
        assert_eq!(keys.for_tenant("a"), None, "nothing configured: tenants use their generated keys");
        keys.tenants.insert("a".into(), KeyPair { current: "a".repeat(16), next: None });
        assert_eq!(keys.for_tenant("a").map(|p| p.current.as_str()), Some("aaaaaaaaaaaaaaaa"));
        assert_eq!(keys.for_tenant("b"), None);
        keys.default = Some(KeyPair { current: "d".repeat(16), next: None });
        assert_eq!(keys.for_tenant("b").map(|p| p.current.as_str()), Some("dddddddddddddddd"));
        assert_eq!(generate_key().len(), 64);
    }
}
