//! Action bundles: what runs when a timer fires. This module owns their
//! typed shape, the rules a bundle must pass at schedule time (so a bundle
//! that can never run is a 400, not a dead letter an hour later), and the
//! retry arithmetic (exponential backoff with full jitter). It is pure: the
//! runner that performs the actions lives in the `minoots-actions` adapter.
//!
//! Wire shape (MINOOTS's, camelCase):
//! `{actions: [{id, kind, parameters}], retryPolicy: {maxAttempts,
//! backoffInitialMs, backoffMultiplier, backoffMaxMs}, concurrency}`.
//! Kinds: `webhook`, `nats`, `command`, `file`, `workflow_event`,
//! `agent_prompt`. `command` and `file` are refused unless the operator
//! allowed them ([`ActionPolicy`]); `workflow_event` and `agent_prompt` need
//! an operator-configured agent endpoint.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::command::{CommandPolicy, CommandRefused};
use crate::destination::DestinationPolicy;
use crate::error::ValidationError;
use crate::limits::{
    ACTION_ID_LEN_MAX, ACTIONS_MAX, ATTEMPTS_MAX, BACKOFF_MAX_MS, COMMAND_ARGS_MAX, CONCURRENCY_MAX,
    FILE_NAME_BYTES_MAX, FILE_PATH_BYTES_MAX, TIMEOUT_MAX_MS,
};

/// What the operator allows, checked when a bundle is scheduled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionPolicy {
    /// Command lines a `command` action may run.
    pub commands: CommandPolicy,
    /// Whether `file` actions may run (the operator configured a base directory).
    pub files_allowed: bool,
    /// Whether `workflow_event` / `agent_prompt` actions have an endpoint to go to.
    pub agent_endpoint: bool,
    /// Where webhooks may go.
    pub webhook_destinations: DestinationPolicy,
}

impl ActionPolicy {
    /// The action kinds a bundle may use under this policy, in the order
    /// [`parse_bundle`] names them (the served API document lists these).
    pub fn accepted_kinds(&self) -> Vec<&'static str> {
        let mut kinds = vec!["webhook", "nats"];
        if self.commands != CommandPolicy::Off {
            kinds.push("command");
        }
        if self.files_allowed {
            kinds.push("file");
        }
        if self.agent_endpoint {
            kinds.extend(["workflow_event", "agent_prompt"]);
        }
        kinds
    }
}

/// A validated bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionBundle {
    /// In the order given; ids unique.
    pub actions: Vec<Action>,
    /// How failed deliveries are retried.
    pub retry_policy: RetryPolicy,
    /// Most actions of one fire run at once.
    pub concurrency: u32,
}

/// One action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    /// Unique within the bundle; part of the idempotency key.
    pub id: String,
    /// What to do.
    pub kind: ActionKind,
}

/// The kinds of action and their parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionKind {
    /// An HTTP request.
    Webhook(WebhookAction),
    /// A NATS message.
    Nats(NatsAction),
    /// A program run without a shell.
    Command(CommandAction),
    /// A file written under the operator's base directory.
    File(FileAction),
    /// A workflow event for the operator's agent endpoint.
    WorkflowEvent(AgentAction),
    /// MINOOTS's agent prompt, for the operator's agent endpoint.
    AgentPrompt(AgentAction),
}

impl ActionKind {
    /// The wire name (`webhook`, …), used as a metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "webhook",
            Self::Nats(_) => "nats",
            Self::Command(_) => "command",
            Self::File(_) => "file",
            Self::WorkflowEvent(_) => "workflow_event",
            Self::AgentPrompt(_) => "agent_prompt",
        }
    }
}

/// `webhook` parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAction {
    /// `GET`, `POST` (default), `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// `http://` or `https://` URL.
    pub url: String,
    /// Extra request headers (the signature and id headers cannot be overridden).
    pub headers: BTreeMap<String, String>,
    /// The body: `None` sends the event envelope; a JSON string is sent as text.
    pub body: Option<Value>,
    /// Per-request timeout; `None`: the server's default.
    pub timeout_ms: Option<u64>,
}

/// `nats` parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NatsAction {
    /// A concrete subject (no wildcards).
    pub subject: String,
    /// The payload: `None` sends the event envelope.
    pub payload: Option<Value>,
}

/// `command` parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandAction {
    /// One of the operator's allowed programs.
    pub program: String,
    /// Arguments, passed as they are (never through a shell).
    pub args: Vec<String>,
    /// Kill the program after this long; `None`: the server's default.
    pub timeout_ms: Option<u64>,
}

/// `file` parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileAction {
    /// Relative to the operator's base directory; no `..`, not absolute.
    pub path: String,
    /// What to write: `None` writes the event envelope; a JSON string is written as text.
    pub content: Option<Value>,
    /// Append a line instead of replacing the file.
    pub append: bool,
}

/// `workflow_event` / `agent_prompt` parameters: passed to the agent endpoint as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentAction {
    /// The action's `parameters` object.
    pub parameters: Value,
}

/// How a failed delivery is retried.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts in all (1: never retried).
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry.
    pub backoff_initial_ms: u64,
    /// Growth of the ceiling per retry.
    pub backoff_multiplier: f64,
    /// Largest ceiling.
    pub backoff_max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 5, backoff_initial_ms: 1_000, backoff_multiplier: 2.0, backoff_max_ms: 300_000 }
    }
}

impl RetryPolicy {
    /// The backoff ceiling after failed attempt number `attempt` (1-based):
    /// `min(max, initial × multiplier^(attempt−1))`.
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        let exponent = attempt.saturating_sub(1).min(1_000) as i32;
        let ceiling = self.backoff_initial_ms as f64 * self.backoff_multiplier.powi(exponent);
        if ceiling.is_finite() && ceiling < self.backoff_max_ms as f64 {
            ceiling as u64
        } else {
            self.backoff_max_ms
        }
    }

    /// The delay before the retry that follows failed attempt `attempt`, with
    /// full jitter drawn from `random` (uniform in `0..=ceiling`), but never
    /// sooner than a receiver's `Retry-After` (capped at [`BACKOFF_MAX_MS`]).
    pub fn retry_delay_ms(&self, attempt: u32, random: u64, retry_after_ms: Option<u64>) -> u64 {
        let ceiling = self.ceiling_ms(attempt);
        let jittered = if ceiling == 0 { 0 } else { random % (ceiling + 1) };
        match retry_after_ms {
            Some(after) => after.min(BACKOFF_MAX_MS),
            None => jittered,
        }
    }
}

/// What tenants and subscribers see in place of a webhook header's value.
pub const REDACTED: &str = "[redacted]";

/// A bundle as tenants and subscribers see it: webhook `headers` are
/// write-only (they carry credentials), so each value is [`REDACTED`]; their
/// names stay. Everything else is as given.
pub fn redacted_bundle(bundle: &Value) -> Value {
    let mut shown = bundle.clone();
    let actions = shown.get_mut("actions").and_then(Value::as_array_mut).into_iter().flatten();
    for action in actions.filter(|a| a.get("kind").and_then(Value::as_str) == Some("webhook")) {
        let headers = action.pointer_mut("/parameters/headers").and_then(Value::as_object_mut);
        for value in headers.into_iter().flat_map(|h| h.values_mut()) {
            *value = Value::String(REDACTED.to_owned());
        }
    }
    shown
}

/// Parses and checks `actionBundle` against the operator's `policy`.
/// Errors name the field (`actionBundle.actions[0].parameters.url`).
pub fn parse_bundle(value: &Value, policy: &ActionPolicy) -> Result<ActionBundle, ValidationError> {
    const FIELD: &str = "actionBundle";
    let object = value.as_object().ok_or_else(|| ValidationError::new(FIELD, "must be an object"))?;
    known_keys(FIELD, object, &["actions", "retryPolicy", "concurrency"])?;
    let actions_value = object
        .get("actions")
        .ok_or_else(|| ValidationError::new(format!("{FIELD}.actions"), "is required"))?;
    let list = actions_value
        .as_array()
        .ok_or_else(|| ValidationError::new(format!("{FIELD}.actions"), "must be an array"))?;
    if list.is_empty() || list.len() > ACTIONS_MAX {
        return Err(ValidationError::new(
            format!("{FIELD}.actions"),
            format!("must hold 1-{ACTIONS_MAX} actions"),
        ));
    }
    let mut actions = Vec::with_capacity(list.len());
    let mut ids = BTreeSet::new();
    for (index, item) in list.iter().enumerate() {
        let field = format!("{FIELD}.actions[{index}]");
        let action = parse_action(&field, index, item, policy)?;
        if !ids.insert(action.id.clone()) {
            return Err(ValidationError::new(format!("{field}.id"), "must be unique within the bundle"));
        }
        actions.push(action);
    }
    let retry_policy = match object.get("retryPolicy") {
        None | Some(Value::Null) => RetryPolicy::default(),
        Some(v) => parse_retry(&format!("{FIELD}.retryPolicy"), v)?,
    };
    let concurrency = match object.get("concurrency") {
        None | Some(Value::Null) => 4,
        Some(v) => uint(&format!("{FIELD}.concurrency"), v, 1, u64::from(CONCURRENCY_MAX))? as u32,
    };
    Ok(ActionBundle { actions, retry_policy, concurrency })
}

fn parse_action(
    field: &str,
    index: usize,
    item: &Value,
    policy: &ActionPolicy,
) -> Result<Action, ValidationError> {
    let object = item.as_object().ok_or_else(|| ValidationError::new(field, "must be an object"))?;
    known_keys(field, object, &["id", "kind", "parameters", "escalation"])?;
    let id = match object.get("id") {
        None | Some(Value::Null) => format!("action-{}", index + 1),
        Some(Value::String(id)) => {
            let ok = !id.is_empty()
                && id.len() <= ACTION_ID_LEN_MAX
                && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(ValidationError::new(
                    format!("{field}.id"),
                    format!("must be 1-{ACTION_ID_LEN_MAX} characters of A-Z a-z 0-9 - _ ."),
                ));
            }
            id.clone()
        }
        Some(_) => return Err(ValidationError::new(format!("{field}.id"), "must be a string")),
    };
    let kind_field = format!("{field}.kind");
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| ValidationError::new(&kind_field, "is required (a string)"))?;
    let empty = Map::new();
    let params_field = format!("{field}.parameters");
    let params = match object.get("parameters") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => return Err(ValidationError::new(params_field, "must be an object")),
    };
    let p = Params { field: &params_field, map: params };
    let kind = match kind {
        "webhook" => ActionKind::Webhook(parse_webhook(&p, &policy.webhook_destinations)?),
        "nats" => {
            p.known(&["subject", "payload"])?;
            let subject = p.required_str("subject")?;
            if !valid_subject(&subject) {
                return Err(p.error(
                    "subject",
                    "must be a NATS subject: dot-separated tokens without spaces or wildcards",
                ));
            }
            ActionKind::Nats(NatsAction { subject, payload: p.map.get("payload").cloned() })
        }
        "command" => {
            if policy.commands == CommandPolicy::Off {
                return Err(ValidationError::new(kind_field, CommandRefused::Off.message()));
            }
            p.known(&["program", "args", "timeoutMs"])?;
            let program = p.required_str("program")?;
            let args = match p.map.get("args") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) if items.len() <= COMMAND_ARGS_MAX => items
                    .iter()
                    .map(|a| a.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| p.error("args", "must be an array of strings"))?,
                Some(_) => {
                    return Err(
                        p.error("args", format!("must be an array of at most {COMMAND_ARGS_MAX} strings"))
                    );
                }
            };
            match policy.commands.check(&program, &args) {
                Ok(()) => {}
                Err(refused @ CommandRefused::Args) => return Err(p.error("args", refused.message())),
                Err(refused) => return Err(p.error("program", refused.message())),
            }
            ActionKind::Command(CommandAction { program, args, timeout_ms: p.timeout()? })
        }
        "file" => {
            if !policy.files_allowed {
                return Err(ValidationError::new(
                    kind_field,
                    "file actions are disabled: the operator has not configured a base directory",
                ));
            }
            p.known(&["path", "content", "append"])?;
            let path = p.required_str("path")?;
            let ok = !path.starts_with('/')
                && !path.contains('\\')
                && !path.contains('\0')
                && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
            if !ok {
                return Err(p.error("path", "must be a relative path without empty, '.' or '..' parts"));
            }
            if path.len() > FILE_PATH_BYTES_MAX
                || path.split('/').any(|part| part.len() > FILE_NAME_BYTES_MAX)
            {
                return Err(p.error(
                    "path",
                    format!(
                        "must be at most {FILE_PATH_BYTES_MAX} bytes, each part at most {FILE_NAME_BYTES_MAX}"
                    ),
                ));
            }
            let append = match p.map.get("append") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(p.error("append", "must be a boolean")),
            };
            ActionKind::File(FileAction { path, content: p.map.get("content").cloned(), append })
        }
        "workflow_event" | "agent_prompt" => {
            if !policy.agent_endpoint {
                return Err(ValidationError::new(
                    kind_field,
                    format!("{kind} actions need an agent endpoint, which the operator has not configured"),
                ));
            }
            let action = AgentAction { parameters: Value::Object(params.clone()) };
            if kind == "workflow_event" {
                ActionKind::WorkflowEvent(action)
            } else {
                ActionKind::AgentPrompt(action)
            }
        }
        _ => {
            return Err(ValidationError::new(
                kind_field,
                "must be one of webhook, nats, command, file, workflow_event, agent_prompt",
            ));
        }
    };
    Ok(Action { id, kind })
}

/// Request headers a webhook's `headers` may not set: the runner's own, and
/// those that would change where or how the request travels.
fn reserved_header(lower: &str) -> bool {
    const NAMES: [&str; 9] = [
        "idempotency-key",
        "content-length",
        "host",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
    ];
    NAMES.contains(&lower) || lower.starts_with("minoots-") || lower.starts_with("proxy-")
}

fn parse_webhook(p: &Params<'_>, destinations: &DestinationPolicy) -> Result<WebhookAction, ValidationError> {
    p.known(&["url", "method", "headers", "body", "timeoutMs"])?;
    let url = p.required_str("url")?;
    if let Err(refused) = destinations.check_url(&url) {
        return Err(p.error("url", refused.to_string()));
    }
    let method = match p.map.get("method") {
        None | Some(Value::Null) => "POST".to_owned(),
        Some(Value::String(m)) => {
            let upper = m.to_ascii_uppercase();
            if !matches!(upper.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
                return Err(p.error("method", "must be one of GET, POST, PUT, PATCH, DELETE"));
            }
            upper
        }
        Some(_) => return Err(p.error("method", "must be a string")),
    };
    let mut headers = BTreeMap::new();
    match p.map.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let field = format!("headers.{name}");
                let valid_name =
                    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                if !valid_name {
                    return Err(p.error(&field, "must be a header name (letters, digits, '-')"));
                }
                let lower = name.to_ascii_lowercase();
                if reserved_header(&lower) {
                    return Err(p.error(&field, "is set by the runner and cannot be overridden"));
                }
                let text = value
                    .as_str()
                    .filter(|v| !v.chars().any(|c| c.is_control()))
                    .ok_or_else(|| p.error(&field, "must be a string without control characters"))?;
                headers.insert(name.clone(), text.to_owned());
            }
        }
        Some(_) => return Err(p.error("headers", "must be an object of strings")),
    }
    Ok(WebhookAction { method, url, headers, body: p.map.get("body").cloned(), timeout_ms: p.timeout()? })
}

fn parse_retry(field: &str, value: &Value) -> Result<RetryPolicy, ValidationError> {
    let map = value.as_object().ok_or_else(|| ValidationError::new(field, "must be an object"))?;
    known_keys(field, map, &["maxAttempts", "backoffInitialMs", "backoffMultiplier", "backoffMaxMs"])?;
    let defaults = RetryPolicy::default();
    let get_uint = |key: &str, min: u64, max: u64, default: u64| match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => uint(&format!("{field}.{key}"), v, min, max),
    };
    let max_attempts =
        get_uint("maxAttempts", 1, u64::from(ATTEMPTS_MAX), u64::from(defaults.max_attempts))? as u32;
    let backoff_initial_ms = get_uint("backoffInitialMs", 0, BACKOFF_MAX_MS, defaults.backoff_initial_ms)?;
    let backoff_max_ms =
        get_uint("backoffMaxMs", 0, BACKOFF_MAX_MS, defaults.backoff_max_ms.max(backoff_initial_ms))?;
    if backoff_max_ms < backoff_initial_ms {
        return Err(ValidationError::new(format!("{field}.backoffMaxMs"), "must be ≥ backoffInitialMs"));
    }
    let backoff_multiplier = match map.get("backoffMultiplier") {
        None | Some(Value::Null) => defaults.backoff_multiplier,
        Some(v) => v.as_f64().filter(|m| (1.0..=10.0).contains(m)).ok_or_else(|| {
            ValidationError::new(format!("{field}.backoffMultiplier"), "must be a number from 1 to 10")
        })?,
    };
    Ok(RetryPolicy { max_attempts, backoff_initial_ms, backoff_multiplier, backoff_max_ms })
}

/// An action's `parameters`, with the field prefix errors carry.
struct Params<'a> {
    field: &'a str,
    map: &'a Map<String, Value>,
}

impl Params<'_> {
    fn error(&self, key: &str, rule: impl Into<String>) -> ValidationError {
        ValidationError::new(format!("{}.{key}", self.field), rule)
    }

    fn known(&self, keys: &[&str]) -> Result<(), ValidationError> {
        known_keys(self.field, self.map, keys)
    }

    fn required_str(&self, key: &str) -> Result<String, ValidationError> {
        match self.map.get(key) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 2_048 => Ok(s.clone()),
            _ => Err(self.error(key, "is required: a string of 1-2048 bytes")),
        }
    }

    fn timeout(&self) -> Result<Option<u64>, ValidationError> {
        match self.map.get("timeoutMs") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => uint(&format!("{}.timeoutMs", self.field), v, 1, TIMEOUT_MAX_MS).map(Some),
        }
    }
}

fn known_keys(field: &str, map: &Map<String, Value>, keys: &[&str]) -> Result<(), ValidationError> {
    match map.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(unknown) => Err(ValidationError::new(
            format!("{field}.{unknown}"),
            format!("is not a known field (expected one of: {})", keys.join(", ")),
        )),
        None => Ok(()),
    }
}

fn uint(field: &str, value: &Value, min: u64, max: u64) -> Result<u64, ValidationError> {
    crate::draft::whole_number(value)
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| ValidationError::new(field, format!("must be an integer from {min} to {max}")))
}

/// A concrete NATS subject: non-empty dot-separated tokens, no whitespace, no wildcards.
pub fn valid_subject(subject: &str) -> bool {
    subject.chars().count() <= 256
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && !token.chars().any(|c| c.is_whitespace() || c.is_control())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn open() -> ActionPolicy {
        ActionPolicy {
            commands: CommandPolicy::from_rules(&["/bin/echo **".to_owned()]).expect("rule"),
            files_allowed: true,
            agent_endpoint: true,
            webhook_destinations: DestinationPolicy::default(),
        }
    }

    fn field_of(value: Value, policy: &ActionPolicy) -> String {
        parse_bundle(&value, policy).expect_err("must be refused").field
    }

    #[test]
    fn whole_numbers_written_as_floats_are_integers() {
        let policy = ActionPolicy::default();
        assert!(
            parse_bundle(
                &json!({"actions": [{"kind": "nats", "parameters": {"subject": "a"}}], "concurrency": 2.0}),
                &policy
            )
            .is_ok()
        );
        let hook = |t: Value| json!({"actions": [{"kind": "webhook", "parameters": {"url": "https://example.com", "timeoutMs": t}}]});
        assert!(parse_bundle(&hook(json!(1500.0)), &policy).is_ok());
        assert_eq!(field_of(hook(json!(1500.5)), &policy), "actionBundle.actions[0].parameters.timeoutMs");
    }

    #[test]
    fn accepted_kinds_are_exactly_those_a_bundle_may_use() {
        let minimal = [
            ("webhook", json!({"url": "https://example.com/h"})),
            ("nats", json!({"subject": "orders.due"})),
            ("command", json!({"program": "/bin/echo"})),
            ("file", json!({"path": "out.txt"})),
            ("workflow_event", json!({})),
            ("agent_prompt", json!({})),
        ];
        for policy in [ActionPolicy::default(), open()] {
            let accepted = policy.accepted_kinds();
            for (kind, parameters) in &minimal {
                let bundle = json!({"actions": [{"kind": kind, "parameters": parameters}]});
                let parsed = parse_bundle(&bundle, &policy);
                assert_eq!(parsed.is_ok(), accepted.contains(kind), "{kind} under {policy:?}: {parsed:?}");
            }
        }
        assert_eq!(open().accepted_kinds().len(), minimal.len());
    }

    #[test]
    fn parses_a_full_bundle_with_defaults() {
        let bundle = parse_bundle(
            &json!({"actions": [
                {"id": "hook", "kind": "webhook", "parameters": {"url": "https://example.com/h", "headers": {"X-A": "1"}}},
                {"kind": "nats", "parameters": {"subject": "orders.due"}},
                {"kind": "command", "parameters": {"program": "/bin/echo", "args": ["a b", ";rm"]}},
                {"kind": "file", "parameters": {"path": "out/fired.log", "append": true}},
                {"kind": "agent_prompt", "parameters": {"prompt": "hi"}}
            ]}),
            &open(),
        )
        .expect("valid");
        assert_eq!(bundle.actions.len(), 5);
        assert_eq!(bundle.actions[1].id, "action-2");
        assert_eq!(bundle.retry_policy, RetryPolicy::default());
        let ActionKind::Webhook(hook) = &bundle.actions[0].kind else { panic!("webhook") };
        assert_eq!(hook.method, "POST");
        let ActionKind::Command(cmd) = &bundle.actions[2].kind else { panic!("command") };
        assert_eq!(cmd.args, vec!["a b".to_owned(), ";rm".to_owned()]);
    }

    #[test]
    fn webhook_header_values_are_redacted_and_nothing_else() {
        let bundle = json!({"actions": [
            {"kind": "webhook", "parameters": {"url": "https://x", "headers": {"Authorization": "Bearer s3cret", "X-A": "1"}}},
            {"kind": "nats", "parameters": {"subject": "a", "payload": {"headers": {"k": "v"}}}}
        ], "retryPolicy": {"maxAttempts": 2}});
        let shown = redacted_bundle(&bundle);
        assert_eq!(
            shown["actions"][0]["parameters"]["headers"],
            json!({"Authorization": REDACTED, "X-A": REDACTED})
        );
        assert_eq!(shown["actions"][0]["parameters"]["url"], "https://x");
        assert_eq!(shown["actions"][1], bundle["actions"][1]);
        assert_eq!(shown["retryPolicy"], bundle["retryPolicy"]);
        assert_eq!(redacted_bundle(&json!("not a bundle")), json!("not a bundle"));
    }

    #[test]
    fn refuses_what_cannot_run_naming_the_field() {
        let closed = ActionPolicy::default();
        let command = json!({"actions": [{"kind": "command", "parameters": {"program": "/bin/echo"}}]});
        assert_eq!(field_of(command.clone(), &closed), "actionBundle.actions[0].kind");
        let other = json!({"actions": [{"kind": "command", "parameters": {"program": "/bin/sh"}}]});
        assert_eq!(field_of(other, &open()), "actionBundle.actions[0].parameters.program");
        let file = json!({"actions": [{"kind": "file", "parameters": {"path": "a"}}]});
        assert_eq!(field_of(file, &closed), "actionBundle.actions[0].kind");
        let long_name = "n".repeat(256);
        for path in ["/etc/passwd", "../x", "a/../b", "a//b", "", long_name.as_str()] {
            let bad = json!({"actions": [{"kind": "file", "parameters": {"path": path}}]});
            assert_eq!(field_of(bad, &open()), "actionBundle.actions[0].parameters.path", "{path}");
        }
        let agent = json!({"actions": [{"kind": "workflow_event"}]});
        assert_eq!(field_of(agent, &closed), "actionBundle.actions[0].kind");
        let cases = [
            (json!([]), "actionBundle"),
            (json!({}), "actionBundle.actions"),
            (json!({"actions": []}), "actionBundle.actions"),
            (json!({"actions": [{"kind": "fax"}]}), "actionBundle.actions[0].kind"),
            (
                json!({"actions": [{"kind": "webhook", "parameters": {"url": "ftp://x"}}]}),
                "actionBundle.actions[0].parameters.url",
            ),
            (
                json!({"actions": [{"kind": "webhook", "parameters": {"url": "https://x", "method": "TRACE"}}]}),
                "actionBundle.actions[0].parameters.method",
            ),
            (
                json!({"actions": [{"kind": "webhook", "parameters": {"url": "https://x", "headers": {"Minoots-Signature": "x"}}}]}),
                "actionBundle.actions[0].parameters.headers.Minoots-Signature",
            ),
            (
                json!({"actions": [{"kind": "webhook", "parameters": {"url": "https://x", "headers": {"Host": "internal"}}}]}),
                "actionBundle.actions[0].parameters.headers.Host",
            ),
            (
                json!({"actions": [{"kind": "webhook", "parameters": {"url": "http://[zz/"}}]}),
                "actionBundle.actions[0].parameters.url",
            ),
            (
                json!({"actions": [{"kind": "webhook", "parameters": {"url": "http://example.com:99999/"}}]}),
                "actionBundle.actions[0].parameters.url",
            ),
            (
                json!({"actions": [{"kind": "webhook", "parameters": {"url": "http://169.254.169.254/latest/"}}]}),
                "actionBundle.actions[0].parameters.url",
            ),
            (
                json!({"actions": [{"kind": "webhook", "parameters": {"url": "https://x", "timeoutMs": 0}}]}),
                "actionBundle.actions[0].parameters.timeoutMs",
            ),
            (
                json!({"actions": [{"kind": "nats", "parameters": {"subject": "a.*"}}]}),
                "actionBundle.actions[0].parameters.subject",
            ),
            (
                json!({"actions": [{"id": "a", "kind": "nats", "parameters": {"subject": "a"}}, {"id": "a", "kind": "nats", "parameters": {"subject": "b"}}]}),
                "actionBundle.actions[1].id",
            ),
            (
                json!({"actions": [{"kind": "nats", "parameters": {"subject": "a"}}], "retryPolicy": {"maxAttempts": 0}}),
                "actionBundle.retryPolicy.maxAttempts",
            ),
            (
                json!({"actions": [{"kind": "nats", "parameters": {"subject": "a"}}], "retryPolicy": {"backoffInitialMs": 10, "backoffMaxMs": 5}}),
                "actionBundle.retryPolicy.backoffMaxMs",
            ),
            (
                json!({"actions": [{"kind": "nats", "parameters": {"subject": "a"}}], "concurrency": 0}),
                "actionBundle.concurrency",
            ),
            (
                json!({"actions": [{"kind": "nats", "parameters": {"subject": "a", "sbject": 1}}]}),
                "actionBundle.actions[0].parameters.sbject",
            ),
        ];
        for (value, field) in cases {
            assert_eq!(field_of(value.clone(), &open()), field, "{value}");
        }
    }

    #[test]
    fn backoff_grows_to_its_ceiling_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_attempts: 10,
            backoff_initial_ms: 100,
            backoff_multiplier: 2.0,
            backoff_max_ms: 1_000,
        };
        assert_eq!(
            (1..=6).map(|a| policy.ceiling_ms(a)).collect::<Vec<_>>(),
            vec![100, 200, 400, 800, 1_000, 1_000]
        );
        for random in [0, 1, 99, 100, 101, u64::MAX] {
            assert!(policy.retry_delay_ms(3, random, None) <= 400);
        }
        assert_eq!(policy.retry_delay_ms(1, 7, Some(1_000)), 1_000);
        assert_eq!(policy.retry_delay_ms(1, 7, Some(u64::MAX)), BACKOFF_MAX_MS);
        let zero = RetryPolicy { backoff_initial_ms: 0, backoff_max_ms: 0, ..policy };
        assert_eq!(zero.retry_delay_ms(4, 12345, None), 0);
        assert_eq!(policy.ceiling_ms(u32::MAX), 1_000);
    }
}
