//! Running one attempt of one action: the side effect and its
//! classification (delivered, failed and worth retrying, failed for good).
//!
//! - `webhook`: signed HTTP or HTTPS request (see [`crate::signing`]; the
//!   system's roots plus the operator's CA bundle); 2xx delivers; 408, 429
//!   and 5xx are retried (honouring `Retry-After` seconds); other statuses
//!   are not; redirects are not followed. A tenant's webhook reaches only the
//!   destinations the operator's policy allows, checked again at connect
//!   time after DNS ([`crate::destinations`]); a refusal fails for good.
//!   At most [`RESPONSE_READ_MAX_BYTES`] of a response are read. Each
//!   tenant's destination has a circuit breaker ([`crate::circuits`]): while it is open an attempt is
//!   not made but deferred ([`Undelivered::Deferred`]), which does not count
//!   against the delivery's retry budget.
//! - `nats`: core NATS publish (with `Nats-Msg-Id` = idempotency key, so a
//!   stream capturing the subject drops repeats), flushed to the server.
//! - `command`: the allow-listed program, no shell, the envelope on stdin;
//!   exit code and output tail recorded; non-zero exit is retried.
//! - `file`: written (or appended) under the tenant's directory in the
//!   operator's base directory, following no symlink ([`crate::files`]).
//! - `workflow_event` / `agent_prompt`: to the operator's agent endpoint
//!   (a signed webhook, or a NATS subject).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use minoots_core::action::{Action, ActionKind, CommandAction, FileAction, WebhookAction};
use minoots_core::breaker::BreakerConfig;
use minoots_core::command::{CommandPolicy, CommandRefused};
use minoots_core::destination::DestinationPolicy;
use minoots_node::Clock;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::circuits::{Circuits, Deferral};
use crate::destinations::{GuardedResolver, refusal_in};
use crate::files::FileError;
use crate::signing::Signed;
use crate::store::NewDelivery;
use crate::tenant_keys::TenantKeys;

/// Most bytes of output or response body kept in an attempt record.
const OUTPUT_KEEP_BYTES: usize = 2_048;
/// Most bytes of a webhook response read; the rest is never read.
pub const RESPONSE_READ_MAX_BYTES: usize = 64 * 1024;

/// Where `workflow_event` and `agent_prompt` actions go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentEndpoint {
    /// A signed webhook.
    pub webhook_url: Option<String>,
    /// A NATS subject (used when no webhook URL is set).
    pub nats_subject: Option<String>,
}

/// What the operator configured for running actions.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Default webhook timeout (`ACTION_WEBHOOK_TIMEOUT_MS`).
    pub webhook_timeout_ms: u64,
    /// Command lines `command` actions may run (`ACTION_COMMAND_ALLOW`).
    pub commands: CommandPolicy,
    /// The whole environment of a command besides the fire's `MINOOTS_*` variables:
    /// the variables the operator passes through (`ACTION_COMMAND_ENV`), with their values.
    pub command_env: Vec<(String, String)>,
    /// Whether a command's output is kept in the delivery history, which its
    /// tenant reads (`ACTION_COMMAND_SHOW_OUTPUT`); otherwise only the exit code is.
    pub command_output_visible: bool,
    /// Default command timeout.
    pub command_timeout_ms: u64,
    /// Where `file` actions write; `None`: file actions are off.
    pub file_base_dir: Option<PathBuf>,
    /// The agent endpoint.
    pub agent: AgentEndpoint,
    /// Each webhook destination's circuit breaker (`ACTION_WEBHOOK_BREAKER_*`).
    pub webhook_breaker: BreakerConfig,
    /// Where tenants' webhooks may go (`ACTION_WEBHOOK_ALLOW_PRIVATE`, `ACTION_WEBHOOK_ALLOWED_DESTINATIONS`).
    pub webhook_destinations: DestinationPolicy,
    /// Roots trusted for HTTPS webhooks beside the system's: a PEM bundle (`ACTION_WEBHOOK_CA_FILE`).
    pub webhook_roots_pem: Option<Vec<u8>>,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            webhook_timeout_ms: 10_000,
            commands: CommandPolicy::Off,
            command_env: Vec::new(),
            command_output_visible: false,
            command_timeout_ms: 30_000,
            file_base_dir: None,
            agent: AgentEndpoint::default(),
            webhook_breaker: BreakerConfig::default(),
            webhook_destinations: DestinationPolicy::default(),
            webhook_roots_pem: None,
        }
    }
}

impl ExecConfig {
    /// The schedule-time policy matching this configuration.
    pub fn policy(&self) -> minoots_core::action::ActionPolicy {
        minoots_core::action::ActionPolicy {
            commands: self.commands.clone(),
            files_allowed: self.file_base_dir.is_some(),
            agent_endpoint: self.agent.webhook_url.is_some() || self.agent.nats_subject.is_some(),
            webhook_destinations: self.webhook_destinations.clone(),
        }
    }
}

/// A delivered attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    /// HTTP status or exit code.
    pub status_code: Option<i64>,
    /// Response or output tail.
    pub output: Option<String>,
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Worth another attempt.
    pub retryable: bool,
    /// HTTP status or exit code.
    pub status_code: Option<i64>,
    /// What went wrong, for people.
    pub error: String,
    /// The receiver asked to wait this long.
    pub retry_after_ms: Option<u64>,
}

/// Why an attempt did not deliver.
#[derive(Debug, Clone, PartialEq)]
pub enum Undelivered {
    /// The attempt was made and failed.
    Failed(Failure),
    /// No attempt was made: the destination's circuit breaker refused it.
    /// Not an attempt: it is not recorded and does not use up the retry budget.
    Deferred(Deferral),
}

impl From<Failure> for Undelivered {
    fn from(failure: Failure) -> Self {
        Undelivered::Failed(failure)
    }
}

impl Failure {
    /// A failure not worth retrying.
    pub fn permanent(error: impl Into<String>) -> Self {
        Self { retryable: false, status_code: None, error: error.into(), retry_after_ms: None }
    }

    /// A failure worth retrying.
    pub fn transient(error: impl Into<String>) -> Self {
        Self { retryable: true, status_code: None, error: error.into(), retry_after_ms: None }
    }
}

/// Runs attempts.
pub struct Executor {
    /// Tenants' webhooks: only to destinations the policy allows.
    tenant_http: reqwest::Client,
    /// The operator's own endpoint (agent actions): anywhere it points.
    operator_http: reqwest::Client,
    nats: Option<async_nats::Client>,
    keys: Arc<TenantKeys>,
    config: ExecConfig,
    circuits: Circuits,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor signing with each tenant's `keys`, publishing `nats` actions through
    /// `nats` (if connected); its circuit breakers are timed by `clock`.
    /// Fails when the operator's CA bundle cannot be used.
    pub fn new(
        config: ExecConfig,
        keys: Arc<TenantKeys>,
        nats: Option<async_nats::Client>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let roots = match &config.webhook_roots_pem {
            Some(pem) => reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("ACTION_WEBHOOK_CA_FILE: not a PEM bundle of certificates: {e}"))?,
            None => Vec::new(),
        };
        let builder = || {
            roots.iter().cloned().fold(
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("minoots/", env!("CARGO_PKG_VERSION"))),
                reqwest::ClientBuilder::add_root_certificate,
            )
        };
        let resolver = GuardedResolver::new(Arc::new(config.webhook_destinations.clone()));
        let tenant_http = builder()
            .dns_resolver(Arc::new(resolver))
            .build()
            .map_err(|e| format!("building the webhook client: {e}"))?;
        let operator_http = builder().build().map_err(|e| format!("building the webhook client: {e}"))?;
        let circuits = Circuits::new(config.webhook_breaker, clock);
        Ok(Self { tenant_http, operator_http, nats, keys, config, circuits })
    }

    /// The configuration.
    pub fn config(&self) -> &ExecConfig {
        &self.config
    }

    /// Runs one attempt of `action` for `delivery`.
    pub async fn run(
        &self,
        delivery: &NewDelivery,
        action: &Action,
        attempt: u32,
    ) -> Result<Delivered, Undelivered> {
        match &action.kind {
            ActionKind::Webhook(hook) => {
                // Literal addresses skip DNS, so the resolver cannot judge them: check here.
                let url = self
                    .config
                    .webhook_destinations
                    .check_literal(&hook.url)
                    .map_err(|refused| Failure::permanent(format!("destination refused: {refused}")))?;
                let body = body_bytes(hook.body.as_ref(), &delivery.envelope);
                self.webhook(&self.tenant_http, delivery, hook, url, body, attempt).await
            }
            ActionKind::Nats(nats) => {
                let payload = body_bytes(nats.payload.as_ref(), &delivery.envelope);
                Ok(self.publish(&nats.subject, delivery, payload).await?)
            }
            ActionKind::Command(command) => Ok(self.command(delivery, command).await?),
            ActionKind::File(file) => Ok(self.file(delivery, file).await?),
            ActionKind::WorkflowEvent(agent) | ActionKind::AgentPrompt(agent) => {
                let envelope: Value = serde_json::from_str(&delivery.envelope).unwrap_or(Value::Null);
                let body = serde_json::json!({
                    "kind": action.kind.name(),
                    "actionId": action.id,
                    "parameters": agent.parameters,
                    "event": envelope,
                });
                let bytes = serde_json::to_vec(&body).unwrap_or_default();
                if let Some(url) = &self.config.agent.webhook_url {
                    let parsed = reqwest::Url::parse(url).map_err(|e| {
                        Failure::transient(format!("ACTION_AGENT_WEBHOOK_URL {url} is not a URL: {e}"))
                    })?;
                    let hook = WebhookAction {
                        method: "POST".into(),
                        url: url.clone(),
                        headers: BTreeMap::new(),
                        body: None,
                        timeout_ms: None,
                    };
                    let body = (bytes, "application/json");
                    self.webhook(&self.operator_http, delivery, &hook, parsed, body, attempt).await
                } else if let Some(subject) = &self.config.agent.nats_subject {
                    Ok(self.publish(subject, delivery, (bytes, "application/json")).await?)
                } else {
                    Err(Failure::permanent("no agent endpoint is configured for this action kind").into())
                }
            }
        }
    }

    async fn webhook(
        &self,
        http: &reqwest::Client,
        delivery: &NewDelivery,
        hook: &WebhookAction,
        url: reqwest::Url,
        (body, content_type): (Vec<u8>, &'static str),
        attempt: u32,
    ) -> Result<Delivered, Undelivered> {
        let keys = self
            .keys
            .pair(&delivery.tenant_id)
            .await
            .map_err(|e| Failure::transient(format!("the tenant's signing key is unavailable: {e}")))?;
        let destination = destination_of(&delivery.tenant_id, &url);
        let circuit = self.circuits.admit(&destination).map_err(Undelivered::Deferred)?;
        let method = reqwest::Method::from_bytes(hook.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let timeout_ms = hook.timeout_ms.unwrap_or(self.config.webhook_timeout_ms);
        #[allow(clippy::disallowed_methods)] // The signature's timestamp is wall time by definition.
        let unix_seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let signature = Signed {
            unix_seconds,
            tenant_id: &delivery.tenant_id,
            message_id: &delivery.idempotency_key,
            body: &body,
        }
        .header(&keys);
        let mut request = http
            .request(method, url)
            .timeout(Duration::from_millis(timeout_ms))
            .header("content-type", content_type);
        for (name, value) in &hook.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .header("idempotency-key", &delivery.idempotency_key)
            .header("minoots-timer-id", &delivery.timer_id)
            .header("minoots-tenant-id", &delivery.tenant_id)
            .header("minoots-occurrence", delivery.occurrence.to_string())
            .header("minoots-attempt", attempt.to_string())
            .header("minoots-signature", signature)
            .body(body);
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                if let Some(refused) = refusal_in(&e) {
                    // Not the destination's trouble: its breaker is left as it was.
                    circuit.finish(true);
                    return Err(Failure::permanent(format!("destination refused: {refused}")).into());
                }
                circuit.finish(false);
                let what = if e.is_timeout() { "timed out" } else { "failed" };
                return Err(Failure::transient(format!("request {what}: {}", error_chain(&e))).into());
            }
        };
        let status = response.status().as_u16();
        let retry_after_ms = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|seconds| seconds.saturating_mul(1_000));
        let retryable = status == 408 || status == 429 || status >= 500;
        // Only server-side trouble counts against the destination.
        circuit.finish(!retryable || status == 429);
        let mut body = Vec::new();
        while body.len() < RESPONSE_READ_MAX_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        body.truncate(RESPONSE_READ_MAX_BYTES);
        let head = excerpt(&String::from_utf8_lossy(&body), Keep::Head);
        if (200..300).contains(&status) {
            return Ok(Delivered { status_code: Some(i64::from(status)), output: head });
        }
        Err(Undelivered::Failed(Failure {
            retryable,
            status_code: Some(i64::from(status)),
            error: format!("HTTP {status}{}", head.map(|t| format!(": {t}")).unwrap_or_default()),
            retry_after_ms: if status == 429 || status == 503 { retry_after_ms } else { None },
        }))
    }

    async fn publish(
        &self,
        subject: &str,
        delivery: &NewDelivery,
        (payload, _content_type): (Vec<u8>, &'static str),
    ) -> Result<Delivered, Failure> {
        let Some(client) = &self.nats else {
            return Err(Failure::transient("NATS is not configured (set NATS_URL)"));
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", delivery.idempotency_key.as_str());
        headers.insert("Idempotency-Key", delivery.idempotency_key.as_str());
        headers.insert("Minoots-Timer-Id", delivery.timer_id.as_str());
        headers.insert("Minoots-Tenant-Id", delivery.tenant_id.as_str());
        client
            .publish_with_headers(subject.to_owned(), headers, payload.into())
            .await
            .map_err(|e| Failure::transient(format!("publish to {subject}: {e}")))?;
        tokio::time::timeout(Duration::from_secs(5), client.flush())
            .await
            .map_err(|_| Failure::transient("NATS flush timed out"))?
            .map_err(|e| Failure::transient(format!("NATS flush: {e}")))?;
        Ok(Delivered { status_code: None, output: None })
    }

    async fn command(&self, delivery: &NewDelivery, command: &CommandAction) -> Result<Delivered, Failure> {
        if let Err(refused) = self.config.commands.check(&command.program, &command.args) {
            let what = match refused {
                CommandRefused::Off => String::new(),
                CommandRefused::Program => format!("{} ", command.program),
                CommandRefused::Args => format!("the arguments of {} ", command.program),
            };
            return Err(Failure::permanent(format!("{what}{}", refused.message())));
        }
        let mut child = tokio::process::Command::new(&command.program)
            .args(&command.args)
            .env_clear()
            .envs(self.config.command_env.iter().map(|(name, value)| (name, value)))
            .env("MINOOTS_TIMER_ID", &delivery.timer_id)
            .env("MINOOTS_TENANT_ID", &delivery.tenant_id)
            .env("MINOOTS_OCCURRENCE", delivery.occurrence.to_string())
            .env("MINOOTS_IDEMPOTENCY_KEY", &delivery.idempotency_key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so that whatever it starts can be killed with it.
            .process_group(0)
            .spawn()
            .map_err(|e| Failure::transient(format!("starting {}: {e}", command.program)))?;
        // When the attempt ends — finished, failed or timed out — nothing the
        // program started keeps running.
        let _group = child.id().and_then(ProcessGroup::of);
        let stdin = child.stdin.take();
        let envelope = delivery.envelope.as_bytes();
        // The envelope is written while the program runs (a program that never
        // reads it must not block the attempt), and the timeout bounds both:
        // when it expires the attempt's future is dropped, and with it the
        // child, which is killed.
        let attempt = async {
            let feed = async move {
                if let Some(mut stdin) = stdin {
                    // A program that does not read its input is fine; closing stdin ends it.
                    let _ = stdin.write_all(envelope).await;
                }
            };
            let ((), output) = tokio::join!(feed, child.wait_with_output());
            output
        };
        let timeout = Duration::from_millis(command.timeout_ms.unwrap_or(self.config.command_timeout_ms));
        let output = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return Err(Failure::transient(format!("running {}: {e}", command.program))),
            Err(_) => {
                return Err(Failure::transient(format!(
                    "{} timed out after {timeout:?} and was killed",
                    command.program
                )));
            }
        };
        let code = output.status.code().map(i64::from);
        let tail = if self.config.command_output_visible {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            excerpt(&text, Keep::Tail)
        } else {
            None
        };
        if output.status.success() {
            Ok(Delivered { status_code: code, output: tail })
        } else {
            Err(Failure {
                status_code: code,
                ..Failure::transient(format!(
                    "{} exited with {}{}",
                    command.program,
                    code.map_or("a signal".to_owned(), |c| format!("code {c}")),
                    tail.map(|t| format!(": {t}")).unwrap_or_default()
                ))
            })
        }
    }

    async fn file(&self, delivery: &NewDelivery, file: &FileAction) -> Result<Delivered, Failure> {
        let Some(base) = self.config.file_base_dir.clone() else {
            return Err(Failure::permanent("file actions are disabled (no base directory configured)"));
        };
        let (bytes, _) = body_bytes(file.content.as_ref(), &delivery.envelope);
        let (tenant, path, append) = (delivery.tenant_id.clone(), file.path.clone(), file.append);
        let written = tokio::task::spawn_blocking(move || {
            crate::files::write_under(&base, &tenant, &path, &bytes, append)
        })
        .await
        .map_err(|e| Failure::transient(format!("writing {}: {e}", file.path)))?;
        match written {
            Ok(()) => Ok(Delivered { status_code: None, output: None }),
            Err(FileError::Refused(why)) => Err(Failure::permanent(why)),
            Err(FileError::Io(why)) => Err(Failure::transient(why)),
        }
    }
}

/// The bytes to send: the envelope by default, a JSON string as text, other JSON as JSON.
fn body_bytes(value: Option<&Value>, envelope: &str) -> (Vec<u8>, &'static str) {
    match value {
        None | Some(Value::Null) => (envelope.as_bytes().to_vec(), "application/json"),
        Some(Value::String(text)) => (text.as_bytes().to_vec(), "text/plain; charset=utf-8"),
        Some(other) => (serde_json::to_vec(other).unwrap_or_default(), "application/json"),
    }
}

/// `tenant scheme://host:port`: a breaker's key. Per tenant, so one tenant's
/// failing deliveries never hold back another's to the same host.
fn destination_of(tenant_id: &str, url: &reqwest::Url) -> String {
    format!(
        "{tenant_id} {}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// Which end of an output an attempt record keeps.
#[derive(Debug, Clone, Copy)]
enum Keep {
    /// The start (a response: its status line's explanation comes first).
    Head,
    /// The end (a program's output: its last words come last).
    Tail,
}

/// At most [`OUTPUT_KEEP_BYTES`] of `text`, trimmed, NUL replaced (no store keeps NUL in text).
fn excerpt(text: &str, keep: Keep) -> Option<String> {
    let text = text.replace('\0', "\u{fffd}");
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let kept = match keep {
        Keep::Head => {
            let mut end = text.len().min(OUTPUT_KEEP_BYTES);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            &text[..end]
        }
        Keep::Tail => {
            let mut start = text.len().saturating_sub(OUTPUT_KEEP_BYTES);
            while !text.is_char_boundary(start) {
                start += 1;
            }
            &text[start..]
        }
    };
    Some(kept.to_owned())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A command's process group, killed (SIGKILL) when dropped: the program's
/// children and grandchildren end with its attempt.
struct ProcessGroup(rustix::process::Pid);

impl ProcessGroup {
    fn of(pid: u32) -> Option<Self> {
        i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw).map(ProcessGroup)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // Already gone (ESRCH) is the usual case for a program that ended cleanly.
        let _ = rustix::process::kill_process_group(self.0, rustix::process::Signal::KILL);
    }
}
