//! Webhook signing keys and signatures.
//!
//! `Minoots-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>`,
//! with a second `v1=` made with the tenant's *next* key while one is set,
//! so receivers can rotate without a gap (accept either; Stripe's scheme).
//! Keys are per tenant with a default for tenants without their own. There is
//! no built-in key: standalone mode generates one into its data directory
//! ([`SigningKeys::load_or_create`]); cluster deployments must configure one.

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

/// The keys file: a default pair and per-tenant pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeys {
    /// For tenants without their own pair.
    pub default: KeyPair,
    /// Per-tenant pairs.
    #[serde(default)]
    pub tenants: BTreeMap<String, KeyPair>,
}

/// Why the keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The file could not be read or written.
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
        let keys = Self { default: KeyPair { current, next }, tenants: BTreeMap::new() };
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

    /// Reads the keys file at `path`, creating it with a fresh random default
    /// key (readable by the owner only) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, KeysError> {
        if path.exists() {
            return Self::load(path);
        }
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        let keys =
            Self { default: KeyPair { current: hex::encode(bytes), next: None }, tenants: BTreeMap::new() };
        let io = |source| KeysError::Io { path: path.display().to_string(), source };
        let text = serde_json::to_string_pretty(&keys).unwrap_or_default();
        write_private(path, &text).map_err(io)?;
        Ok(keys)
    }

    fn check(&self) -> Result<(), String> {
        let pairs = std::iter::once(("default".to_owned(), &self.default))
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

    /// The pair that signs `tenant`'s requests.
    pub fn for_tenant(&self, tenant: &str) -> &KeyPair {
        self.tenants.get(tenant).unwrap_or(&self.default)
    }

    /// The `Minoots-Signature` header value for `body` sent at `unix_seconds`.
    pub fn signature_header(&self, tenant: &str, unix_seconds: i64, body: &[u8]) -> String {
        let pair = self.for_tenant(tenant);
        let mut header = format!("t={unix_seconds},v1={}", sign(&pair.current, unix_seconds, body));
        if let Some(next) = &pair.next {
            header.push_str(&format!(",v1={}", sign(next, unix_seconds, body)));
        }
        header
    }
}

/// Hex HMAC-SHA256 of `"<t>.<body>"`.
pub fn sign(key: &str, unix_seconds: i64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a `Minoots-Signature` header against `key` (what a receiver does):
/// one of its `v1` values must match. Returns the signed time.
pub fn verify(header: &str, key: &str, body: &[u8]) -> Option<i64> {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let t = t?;
    let matches = |hex_signature: &&str| {
        hex::decode(hex_signature).is_ok_and(|bytes| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("any length");
            mac.update(t.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.verify_slice(&bytes).is_ok() // constant-time comparison
        })
    };
    signatures.iter().any(matches).then_some(t)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_with_current_and_next_and_verifies() {
        let keys = SigningKeys::single("k".repeat(32), Some("n".repeat(32))).expect("valid");
        let header = keys.signature_header("acme", 1_700_000_000, b"{\"a\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(header.matches("v1=").count(), 2);
        assert_eq!(verify(&header, &"k".repeat(32), b"{\"a\":1}"), Some(1_700_000_000));
        assert_eq!(verify(&header, &"n".repeat(32), b"{\"a\":1}"), Some(1_700_000_000));
        assert_eq!(verify(&header, &"x".repeat(32), b"{\"a\":1}"), None);
        assert_eq!(verify(&header, &"k".repeat(32), b"{\"a\":2}"), None);
        assert!(SigningKeys::single("short".into(), None).is_err());
    }

    #[test]
    fn creates_a_private_key_file_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("signing-keys.json");
        let first = SigningKeys::load_or_create(&path).expect("created");
        let second = SigningKeys::load_or_create(&path).expect("loaded");
        assert_eq!(first, second);
        assert_eq!(first.default.current.len(), 64);
    }
}
