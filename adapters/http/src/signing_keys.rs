//! A tenant's webhook signing keys over REST (role `tenant.admin`):
//! `GET /api/signing-keys` shows the pair its receivers verify with
//! (generating it on first look), `POST /api/signing-keys/rotate` adds a
//! next key (requests then carry both signatures), `POST
//! /api/signing-keys/promote` makes the next key the only one. Keys the
//! operator configured are never shown: the answer says `"source":
//! "operator"` and rotation is the operator's.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use minoots_actions::signing::KeyPair;
use minoots_actions::{KeySource, TenantKeys};
use serde::Serialize;

use crate::AppState;
use crate::deliveries::{failed, now_ms, store};
use crate::error::HttpError;
use crate::extract::{AdminRole, Caller, QueryPairs};

/// What a tenant sees of its keys.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeysView {
    tenant_id: String,
    /// `generated` (the tenant's own, kept by the server) or `operator` (configured; not shown).
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

impl SigningKeysView {
    fn generated(tenant_id: String, pair: KeyPair) -> Self {
        Self { tenant_id, source: "generated", current: Some(pair.current), next: pair.next }
    }
}

fn keys(state: &AppState) -> Result<&TenantKeys, HttpError> {
    state
        .config
        .signing_keys
        .as_deref()
        .ok_or_else(|| HttpError::not_found("actions are not enabled on this server"))
}

fn tenant_of(caller: &Caller<AdminRole>, params: &[(String, String)]) -> Result<String, HttpError> {
    let mut requested = None;
    for (name, value) in params {
        match name.as_str() {
            "tenantId" => requested = Some(value.as_str()),
            other => return Err(HttpError::invalid(other, "is not a parameter of this route")),
        }
    }
    Ok(caller.principal.scope(requested)?.to_string())
}

fn operator_managed() -> HttpError {
    HttpError::new(
        StatusCode::CONFLICT,
        "operator_managed",
        "this tenant's signing keys are configured by the operator; only the operator can rotate them",
    )
}

/// `GET /api/signing-keys`.
pub async fn show(
    State(state): State<AppState>,
    caller: Caller<AdminRole>,
    QueryPairs(params): QueryPairs,
) -> Result<Json<SigningKeysView>, HttpError> {
    let tenant = tenant_of(&caller, &params)?;
    match keys(&state)?.source(&tenant).await.map_err(failed)? {
        KeySource::Operator => {
            Ok(Json(SigningKeysView { tenant_id: tenant, source: "operator", current: None, next: None }))
        }
        KeySource::Generated(pair) => Ok(Json(SigningKeysView::generated(tenant, pair))),
    }
}

/// The tenant whose generated keys a rotate or promote changes, with the
/// keys (to forget the cached pair) and the store; 409 when the operator
/// configured them.
async fn generated_keys<'a>(
    state: &'a AppState,
    caller: &Caller<AdminRole>,
    params: &[(String, String)],
) -> Result<(String, &'a TenantKeys, &'a minoots_actions::ActionStore), HttpError> {
    let tenant = tenant_of(caller, params)?;
    let keys = keys(state)?;
    if keys.source(&tenant).await.map_err(failed)? == KeySource::Operator {
        return Err(operator_managed());
    }
    Ok((tenant, keys, store(state)?))
}

/// `POST /api/signing-keys/rotate`.
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller<AdminRole>,
    QueryPairs(params): QueryPairs,
) -> Result<Json<SigningKeysView>, HttpError> {
    let (tenant, keys, store) = generated_keys(&state, &caller, &params).await?;
    let pair = store.rotate_tenant_key(&tenant, now_ms()).await.map_err(failed)?;
    keys.forget(&tenant);
    Ok(Json(SigningKeysView::generated(tenant, pair)))
}

/// `POST /api/signing-keys/promote`.
pub async fn promote(
    State(state): State<AppState>,
    caller: Caller<AdminRole>,
    QueryPairs(params): QueryPairs,
) -> Result<Json<SigningKeysView>, HttpError> {
    let (tenant, keys, store) = generated_keys(&state, &caller, &params).await?;
    let Some(pair) = store.promote_tenant_key(&tenant, now_ms()).await.map_err(failed)? else {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            "no_rotation",
            "no rotation is under way: POST /api/signing-keys/rotate first",
        ));
    };
    keys.forget(&tenant);
    Ok(Json(SigningKeysView::generated(tenant, pair)))
}
