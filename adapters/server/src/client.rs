//! The client side every command-line tool of this binary shares, so that
//! `timers` and `bench` reach a server and report its errors the same way:
//! connection flags and the gRPC channel, the `x-api-key` interceptor,
//! status → error text, and the parsers of durations, instants and
//! `key=value` labels (core's, so the command line reads them exactly as the
//! API does).

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt;
use std::time::Duration;

pub(crate) use minoots_node::grpc::code_name;
use minoots_proto::timer_v1::horology_kernel_client::HorologyKernelClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Largest reply the client decodes (a full page of 1,000 timers with metadata).
const DECODE_BYTES_MAX: usize = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// gRPC address of a running server (`http://host:port`).
    #[arg(
        long,
        value_name = "URL",
        env = "MINOOTS_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub server: String,
    /// API key, sent as gRPC metadata `x-api-key` on every call (default: the standalone development key).
    #[arg(
        long,
        value_name = "KEY",
        env = "MINOOTS_API_KEY",
        default_value = "local-dev-key",
        hide_env_values = true,
        global = true
    )]
    pub api_key: String,
}

/// A `HorologyKernel` client that sends the API key on every call.
pub(crate) type KernelClient = HorologyKernelClient<InterceptedService<Channel, ApiKey>>;

/// Adds `x-api-key` to every request.
#[derive(Debug, Clone)]
pub(crate) struct ApiKey(MetadataValue<Ascii>);

impl Interceptor for ApiKey {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("x-api-key", self.0.clone());
        Ok(request)
    }
}

impl ConnectArgs {
    /// The server URL with a scheme (`127.0.0.1:50051` → `http://127.0.0.1:50051`).
    pub(crate) fn server_url(&self) -> String {
        normalize_server_url(&self.server)
    }

    /// Opens one HTTP/2 connection to the server.
    pub(crate) async fn channel(&self) -> Result<Channel, Box<dyn Error>> {
        let url = self.server_url();
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| format!("--server {url}: not a valid address: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        endpoint.connect().await.map_err(|e| format!("cannot connect to {url}: {}", error_chain(&e)).into())
    }

    /// A client over `channel` carrying this API key.
    pub(crate) fn client(&self, channel: Channel) -> Result<KernelClient, Box<dyn Error>> {
        let key: MetadataValue<Ascii> = self
            .api_key
            .parse()
            .map_err(|_| "--api-key: must be printable ASCII (it travels as gRPC metadata)".to_owned())?;
        Ok(HorologyKernelClient::with_interceptor(channel, ApiKey(key))
            .max_decoding_message_size(DECODE_BYTES_MAX))
    }

    /// Connects and returns a client.
    pub(crate) async fn connect(&self) -> Result<KernelClient, Box<dyn Error>> {
        let channel = self.channel().await?;
        self.client(channel)
    }
}

/// Adds `http://` when the address has no scheme.
pub(crate) fn normalize_server_url(server: &str) -> String {
    let server = server.trim();
    if server.contains("://") { server.to_owned() } else { format!("http://{server}") }
}

/// `error: cause: cause …`, for transport errors whose `Display` says little.
pub(crate) fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    // Bounded: error chains are short; stop after a few links regardless.
    for _ in 0..8 {
        let Some(cause) = source else { break };
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A failed call: what was attempted and the server's status.
#[derive(Debug)]
pub(crate) struct CallError {
    what: &'static str,
    status: tonic::Status,
}

impl CallError {
    pub(crate) fn new(what: &'static str, status: tonic::Status) -> Self {
        Self { what, status }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, status_text(&self.status))
    }
}

impl Error for CallError {}

/// `gRPC INVALID_ARGUMENT: message (field: fireAt; retry after 200 ms; leader: …)`.
pub(crate) fn status_text(status: &tonic::Status) -> String {
    let mut text = format!("gRPC {}: {}", code_name(status.code()), status.message());
    let meta = |key: &str| status.metadata().get(key).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut hints = Vec::new();
    if let Some(field) = meta("x-minoots-field") {
        hints.push(format!("field: {field}"));
    }
    if let Some(ms) = meta("retry-after-ms") {
        hints.push(format!("retry after {ms} ms"));
    }
    if let Some(leader) = meta("x-minoots-leader") {
        hints.push(format!("leader: {leader}"));
    }
    if status.code() == tonic::Code::Unavailable
        && let Some(source) = Error::source(status)
    {
        hints.push(error_chain(source));
    }
    if !hints.is_empty() {
        text.push_str(&format!(" ({})", hints.join("; ")));
    }
    text
}

// ---------------------------------------------------------------------------
// Parsers (core's, with the command line's wording)
// ---------------------------------------------------------------------------

/// A duration in milliseconds, as the API reads one
/// ([`minoots_core::validate::duration_text_ms`]: plain milliseconds or
/// humantime text such as `250ms`, `30s`, `1h 30m`). Zero is allowed here
/// (`--webhook-outage 0ms`); the server refuses a zero timer duration itself.
pub(crate) fn parse_duration_ms(text: &str) -> Result<u64, String> {
    minoots_core::validate::duration_text_ms(text).map_err(|e| format!("`{text}` {}", e.rule()))
}

/// An ISO-8601 instant (`2026-01-02T03:04:05Z`, offsets allowed) as UTC
/// milliseconds, as the API reads one ([`minoots_core::validate::parse_instant`]).
pub(crate) fn parse_instant_ms(text: &str) -> Result<i64, String> {
    minoots_core::validate::parse_instant("instant", text).map_err(|e| format!("`{text}` {}", e.message))
}

/// One `key=value` label. The value may contain `=`; the key may not be empty.
pub(crate) fn parse_label(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("label `{text}` must look like key=value"));
    };
    if key.is_empty() {
        return Err(format!("label `{text}` has an empty key"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Labels as a map; naming a key twice is an error rather than a silent overwrite.
pub(crate) fn label_map(pairs: &[(String, String)]) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for (key, value) in pairs {
        if map.insert(key.clone(), value.clone()).is_some() {
            return Err(format!("label `{key}` given twice"));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_humantime_and_plain_milliseconds() {
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h 30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("1500"), Ok(1_500));
        assert_eq!(parse_duration_ms(" 2s "), Ok(2_000));
        assert!(parse_duration_ms("").is_err());
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("-5s").is_err());
    }

    #[test]
    fn labels_parse_key_value_and_reject_bad_shapes() {
        assert_eq!(parse_label("team=ops"), Ok(("team".into(), "ops".into())));
        assert_eq!(parse_label("expr=a=b"), Ok(("expr".into(), "a=b".into())), "value keeps later `=`");
        assert_eq!(parse_label("empty="), Ok(("empty".into(), String::new())));
        let no_eq = parse_label("team").expect_err("no `=`");
        assert!(no_eq.contains("key=value"), "{no_eq}");
        let no_key = parse_label("=ops").expect_err("empty key");
        assert!(no_key.contains("empty key"), "{no_key}");
        let pairs = vec![("a".to_owned(), "1".to_owned()), ("a".to_owned(), "2".to_owned())];
        let dup = label_map(&pairs).expect_err("duplicate key");
        assert!(dup.contains("`a` given twice"), "{dup}");
    }

    #[test]
    fn status_text_carries_metadata_hints() {
        let mut status = tonic::Status::invalid_argument("fireAt: must not be in the past");
        status.metadata_mut().insert("x-minoots-field", MetadataValue::from_static("fireAt"));
        status.metadata_mut().insert("retry-after-ms", MetadataValue::from_static("250"));
        assert_eq!(
            status_text(&status),
            "gRPC INVALID_ARGUMENT: fireAt: must not be in the past (field: fireAt; retry after 250 ms)"
        );
        assert_eq!(normalize_server_url("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(normalize_server_url("https://h:1"), "https://h:1");
    }
}
