//! `GET /api/openapi.json`: the OpenAPI 3.1 description of the REST API. It
//! is written by hand in `openapi.json` beside this crate's `Cargo.toml` (so
//! it reads as a document, not as generated code) and compiled in; the test
//! below checks that it documents exactly the routes [`crate::api_router`]
//! serves. A server serves it with only the action kinds its operator's
//! policy accepts, so the document says what this server takes.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::Value;

use crate::AppState;

/// The document as written, listing every action kind.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// The document listing only the action kinds in `kinds`.
pub fn document_for(kinds: &[&str]) -> String {
    let mut doc: Value =
        serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON (checked by its tests)");
    if let Some(action) = doc.pointer_mut("/components/schemas/Action") {
        keep_kinds(action, kinds);
    }
    doc.to_string()
}

/// Drops the kinds not in `kinds` from the `Action` schema: from its `kind`
/// enum, and the `oneOf` branches (a branch names its kind by `const` or `enum`).
fn keep_kinds(action: &mut Value, kinds: &[&str]) {
    let accepted = |v: &Value| v.as_str().is_some_and(|k| kinds.contains(&k));
    if let Some(Value::Array(names)) = action.pointer_mut("/properties/kind/enum") {
        names.retain(accepted);
    }
    if let Some(Value::Array(branches)) = action.get_mut("oneOf") {
        branches.retain_mut(|branch| match branch.pointer_mut("/properties/kind") {
            Some(kind) if kind.get("const").is_some() => kind.get("const").is_some_and(accepted),
            Some(kind) => match kind.get_mut("enum") {
                Some(Value::Array(names)) => {
                    names.retain(accepted);
                    !names.is_empty()
                }
                _ => true,
            },
            None => true,
        });
    }
}

/// `GET /api/openapi.json`.
pub async fn document(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], state.document)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn documented() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.1")), Some(true));
        let paths = doc["paths"].as_object().expect("paths object");
        let mut out = BTreeSet::new();
        for (path, item) in paths {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                    out.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn documents_exactly_the_served_routes() {
        let served: BTreeSet<(String, String)> =
            crate::route_table().into_iter().map(|(m, p)| (m.to_string(), p.to_owned())).collect();
        assert_eq!(documented(), served);
    }

    #[test]
    fn the_served_document_lists_only_the_accepted_action_kinds() {
        let kinds_of = |doc: &str| -> (Vec<String>, usize) {
            let doc: Value = serde_json::from_str(doc).expect("JSON");
            let action = &doc["components"]["schemas"]["Action"];
            let names = action["properties"]["kind"]["enum"].as_array().expect("enum");
            let names = names.iter().map(|n| n.as_str().expect("name").to_owned()).collect();
            (names, action["oneOf"].as_array().expect("branches").len())
        };
        let all = ["webhook", "nats", "command", "file", "workflow_event", "agent_prompt"];
        assert_eq!(kinds_of(&document_for(&all)), (all.map(str::to_owned).to_vec(), 5));
        assert_eq!(kinds_of(OPENAPI_JSON), kinds_of(&document_for(&all)));
        assert_eq!(kinds_of(&document_for(&["webhook", "nats"])), (vec!["webhook".into(), "nats".into()], 2));
        let one_agent = kinds_of(&document_for(&["webhook", "nats", "agent_prompt"]));
        assert_eq!(one_agent, (vec!["webhook".into(), "nats".into(), "agent_prompt".into()], 3));
    }

    #[test]
    fn every_reference_resolves() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON");
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "dangling reference {r}");
        }
    }

    fn collect_refs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v.as_str()) {
                        ("$ref", Some(r)) => out.push(r.to_owned()),
                        _ => collect_refs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
