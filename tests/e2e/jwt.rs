//! Bearer tokens beside API keys: a server started with `JWT_PUBLIC_KEY`
//! and `JWT_AUDIENCE` serves a token's tenant with its roles, refuses
//! expired, foreign, wrongly addressed or ambiguous credentials with 401
//! naming `authorization`, and ends an event stream when its token expires.

#![allow(clippy::disallowed_methods)] // Tokens carry real times, as an identity provider issues them.

use std::time::Duration;

use futures::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::support::{DEV_KEY, Server, data_dir, http};

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

fn key_pair() -> (String, EncodingKey) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key pair");
    (pair.public_key_pem(), EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("private key"))
}

fn token(key: &EncodingKey, tenant: &str, roles: &[&str], aud: &str, exp: i64) -> String {
    let claims = json!({"tenant_id": tenant, "roles": roles, "aud": aud, "sub": "svc", "exp": exp});
    encode(&Header::new(Algorithm::ES256), &claims, key).expect("sign")
}

async fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = http().get(format!("{}{path}", server.rest));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_name_their_tenant_and_end_their_streams_at_expiry() {
    let (public, private) = key_pair();
    let dir = data_dir();
    let path = dir.path().to_string_lossy().into_owned();
    let server = Server::start_with(
        &["--data-dir", &path],
        &[("JWT_PUBLIC_KEY", &public), ("JWT_AUDIENCE", "minoots")],
    );
    let valid = token(&private, "acme", &["timer.read", "timer.write"], "minoots", now_s() + 600);
    let bearer = format!("Bearer {valid}");

    // The token's tenant and roles: it creates and sees only acme's timers.
    let created = http()
        .post(format!("{}/api/timers", server.rest))
        .header("authorization", &bearer)
        .json(&json!({"duration": "1h"}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status().as_u16(), 201);
    let created: Value = created.json().await.expect("json");
    assert_eq!(created["tenantId"], "acme");
    let (status, page) = get(&server, "/api/timers", &[("authorization", &bearer)]).await;
    assert_eq!((status, page["timers"].as_array().map(Vec::len)), (200, Some(1)));
    let (_, theirs) = get(&server, "/api/timers", &[("x-api-key", DEV_KEY)]).await;
    assert_eq!(theirs["timers"].as_array().map(Vec::len), Some(0), "tenant-local sees none of acme's");
    let id = created["id"].as_str().expect("id");
    let cancel = http()
        .post(format!("{}/api/timers/{id}/cancel", server.rest))
        .header("authorization", &bearer)
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancel.status().as_u16(), 403, "no timer.cancel role in the token");

    // Refused: expired, another key, another audience, both credentials at once, not Bearer.
    let (_, other) = key_pair();
    let refusals = [
        format!("Bearer {}", token(&private, "acme", &["timer.read"], "minoots", now_s() - 3_600)),
        format!("Bearer {}", token(&other, "acme", &["timer.read"], "minoots", now_s() + 600)),
        format!("Bearer {}", token(&private, "acme", &["timer.read"], "elsewhere", now_s() + 600)),
        format!("Basic {valid}"),
    ];
    for authorization in &refusals {
        let (status, body) = get(&server, "/api/timers", &[("authorization", authorization)]).await;
        assert_eq!((status, body["error"]["field"].as_str()), (401, Some("authorization")), "{body}");
    }
    let (status, body) =
        get(&server, "/api/timers", &[("authorization", &bearer), ("x-api-key", DEV_KEY)]).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("not both")), "{body}");

    // A stream opened with a token ends, saying why, when the token expires.
    let short = format!("Bearer {}", token(&private, "acme", &["timer.read"], "minoots", now_s() + 2));
    let response = http()
        .get(format!("{}/api/timers/stream", server.rest))
        .header("authorization", &short)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status().as_u16(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: error") {
                return true;
            }
        }
        false
    })
    .await
    .expect("the stream ends within 20 s");
    assert!(ended && text.contains("unauthenticated"), "{text}");
}
