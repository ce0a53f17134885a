//! Bearer-token authentication: JWTs signed by the operator's identity
//! provider, verified with its public key (`JWT_PUBLIC_KEY`), beside API
//! keys. A token names its tenant (`tenant_id`) and roles (`roles`), must
//! carry `exp` (checked, as `nbf` is when present) and, when the operator
//! sets them, the expected `aud` (`JWT_AUDIENCE`) and `iss` (`JWT_ISSUER`).
//! The algorithm follows the key: RSA keys take RS256/384/512 and
//! PS256/384/512, EC keys ES256/ES384, Ed25519 keys EdDSA; `none` and HMAC
//! are never accepted (a public key cannot check them).

use std::collections::BTreeSet;
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use minoots_core::TenantId;
use minoots_core::auth::{Principal, Role};
use minoots_node::TokenVerifier;
use serde::Deserialize;

/// Seconds of clock difference allowed when checking `exp` and `nbf`.
pub const LEEWAY_S: u64 = 30;

/// Verifies JWTs with one public key.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

/// The claims a token must carry (beyond what [`Validation`] checks).
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(alias = "tenantId")]
    tenant_id: String,
    roles: Vec<String>,
    #[serde(default)]
    sub: Option<String>,
    exp: i64,
}

impl JwtVerifier {
    /// A verifier for `key`: PEM text, or the path of a PEM file.
    pub fn new(key: &str, audience: Option<&str>, issuer: Option<&str>) -> Result<Self, String> {
        let pem = if key.trim_start().starts_with("-----BEGIN") {
            key.to_owned()
        } else {
            std::fs::read_to_string(Path::new(key))
                .map_err(|e| format!("JWT_PUBLIC_KEY: neither PEM text nor a readable file ({key}): {e}"))?
        };
        let (key, algorithms) = if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
            let rsa = [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];
            (key, [rsa.as_slice(), &[Algorithm::PS256, Algorithm::PS384, Algorithm::PS512]].concat())
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem.as_bytes()) {
            (key, vec![Algorithm::ES256, Algorithm::ES384])
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem.as_bytes()) {
            (key, vec![Algorithm::EdDSA])
        } else {
            return Err("JWT_PUBLIC_KEY: not an RSA, EC or Ed25519 public key in PEM".into());
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = issuer {
            validation.set_issuer(&[issuer]);
        }
        Ok(Self { key, validation })
    }
}

impl TokenVerifier for JwtVerifier {
    fn verify(&self, token: &str) -> Result<Principal, String> {
        let data = decode::<Claims>(token, &self.key, &self.validation).map_err(|e| e.to_string())?;
        let claims = data.claims;
        let tenant_id = TenantId::parse("tenant_id", &claims.tenant_id).map_err(|e| format!("claim {e}"))?;
        let roles = claims
            .roles
            .iter()
            .map(|role| Role::parse("roles", role))
            .collect::<Result<BTreeSet<Role>, _>>()
            .map_err(|e| format!("claim {e}"))?;
        Ok(Principal {
            tenant_id,
            roles,
            key_id: format!("jwt:{}", claims.sub.unwrap_or_default()),
            expires_at_ms: Some(claims.exp.saturating_mul(1_000)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn keys() -> (String, EncodingKey) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key pair");
        let private = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("private key");
        (pair.public_key_pem(), private)
    }

    #[allow(clippy::disallowed_methods)] // Tokens carry real times, as an identity provider issues them.
    fn now_s() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
    }

    fn sign(key: &EncodingKey, claims: serde_json::Value) -> String {
        encode(&Header::new(Algorithm::ES256), &claims, key).expect("sign")
    }

    #[test]
    fn a_valid_token_names_its_tenant_roles_and_expiry() {
        let (public, private) = keys();
        let verifier =
            JwtVerifier::new(&public, Some("minoots"), Some("https://idp.example")).expect("verifier");
        let exp = now_s() + 600;
        let claims = json!({"tenant_id": "acme", "roles": ["timer.read", "timer.write"], "sub": "svc-1",
            "exp": exp, "aud": "minoots", "iss": "https://idp.example"});
        let principal = verifier.verify(&sign(&private, claims)).expect("valid");
        assert_eq!(principal.tenant_id.as_str(), "acme");
        assert_eq!(principal.roles, [Role::TimerRead, Role::TimerWrite].into());
        assert_eq!((principal.key_id.as_str(), principal.expires_at_ms), ("jwt:svc-1", Some(exp * 1_000)));
    }

    #[test]
    fn expired_early_foreign_or_malformed_tokens_are_refused() {
        let (public, private) = keys();
        let verifier = JwtVerifier::new(&public, Some("minoots"), None).expect("verifier");
        let base =
            json!({"tenant_id": "acme", "roles": ["timer.read"], "aud": "minoots", "exp": now_s() + 600});
        let with = |field: &str, value: serde_json::Value| {
            let mut claims = base.clone();
            claims[field] = value;
            sign(&private, claims)
        };
        let refused = |token: &str| verifier.verify(token).expect_err("refused");
        assert!(refused(&with("exp", json!(now_s() - 3_600))).contains("Expired"));
        assert!(refused(&with("nbf", json!(now_s() + 3_600))).contains("Immature"));
        assert!(refused(&with("aud", json!("someone-else"))).contains("Audience"));
        assert!(refused(&with("roles", json!(["root"]))).contains("roles"));
        assert!(refused(&with("tenant_id", json!("no spaces allowed"))).contains("tenant_id"));
        let mut no_exp = base.clone();
        no_exp.as_object_mut().expect("object").remove("exp");
        assert!(refused(&sign(&private, no_exp)).contains("exp"));
        // Signed by another key, or not signed at all.
        let (_, other) = keys();
        assert!(refused(&sign(&other, base.clone())).contains("Signature"));
        let unsigned = format!("{}.", sign(&private, base).rsplit_once('.').expect("three parts").0);
        assert!(verifier.verify(&unsigned).is_err());
        assert!(verifier.verify("not a token").is_err());
    }

    #[test]
    fn a_key_that_is_not_a_public_key_is_refused_at_start() {
        assert!(
            JwtVerifier::new("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", None, None)
                .is_err()
        );
        assert!(JwtVerifier::new("/no/such/key.pem", None, None).unwrap_err().contains("JWT_PUBLIC_KEY"));
    }
}
