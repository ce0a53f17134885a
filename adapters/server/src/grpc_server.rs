//! The gRPC listener of `minoots serve`: one tonic server carrying the timer
//! API (`minoots.timer.v1.HorologyKernel`, [`KernelService`]), gRPC health
//! (`grpc.health.v1`, SERVING for the whole server and for the kernel) and
//! gRPC reflection (v1, from the proto crate's descriptor set), with a 4 MiB
//! request limit, at most [`GrpcLimits::max_connections`] connections (one
//! more is closed at once) and streams per connection, a deadline for a new
//! connection's opening bytes and TLS handshake (so a client that connects and
//! stays silent cannot hold a slot), HTTP/2 keep-alive pings that drop dead
//! peers, and TLS (optionally requiring client certificates) when the
//! operator gives a certificate. It owns only the
//! assembly; the service lives in `minoots-node`, which also runs under the
//! simulator. Real tokio only.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use minoots_node::NodeHandle;
use minoots_node::grpc::KernelService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codegen::http;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

/// A request whose protobuf does not decode is the client's fault: tonic
/// answers it INTERNAL ("failed to decode Protobuf message: …", before any
/// handler runs, in the response headers); this says INVALID_ARGUMENT instead.
fn decode_errors_are_invalid_arguments<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let internal = headers.get("grpc-status").is_some_and(|code| code == "13");
    let undecodable = headers
        .get("grpc-message")
        .and_then(|message| message.to_str().ok())
        .is_some_and(|message| message.starts_with("failed%20to%20decode%20Protobuf"));
    if internal && undecodable {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    response
}

/// How often an idle HTTP/2 connection is pinged; a peer that does not answer within as long is dropped.
const KEEPALIVE_MS: u64 = 30_000;

/// Bytes a new connection must send before its opening deadline: the HTTP/2
/// client preface (24) and a SETTINGS frame header (9). A TLS ClientHello is
/// longer; the rest of a TLS handshake has its own timeout.
const OPENING_BYTES: usize = 33;

/// Limits and TLS of the gRPC listener.
#[derive(Debug, Clone)]
pub struct GrpcLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most concurrent calls (streams included) on one connection.
    pub max_streams_per_connection: u32,
    /// Time a new connection has to send its opening bytes (and, with TLS, to finish its handshake).
    pub opening_timeout_ms: u64,
    /// TLS, when the operator gave a certificate.
    pub tls: Option<ServerTlsConfig>,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        Self {
            max_connections: 4_096,
            max_streams_per_connection: 256,
            opening_timeout_ms: 10_000,
            tls: None,
        }
    }
}

/// The gRPC TLS settings from `(certificate, key)` PEM files and an
/// optional client CA (then clients must present a certificate it issued);
/// a client that has not finished its handshake within `handshake_timeout_ms`
/// is disconnected (as on the REST listener).
pub fn grpc_tls(
    cert_key: Option<&(PathBuf, PathBuf)>,
    client_ca: Option<&Path>,
    handshake_timeout_ms: u64,
) -> Result<Option<ServerTlsConfig>, String> {
    let Some((cert, key)) = cert_key else { return Ok(None) };
    let read =
        |name: &str, path: &Path| std::fs::read(path).map_err(|e| format!("{name} {}: {e}", path.display()));
    let identity = Identity::from_pem(read("MINOOTS_TLS_CERT", cert)?, read("MINOOTS_TLS_KEY", key)?);
    let mut tls = ServerTlsConfig::new()
        .identity(identity)
        .timeout(std::time::Duration::from_millis(handshake_timeout_ms.max(1)));
    if let Some(ca) = client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read("MINOOTS_TLS_CLIENT_CA", ca)?));
    }
    Ok(Some(tls))
}

/// An accepted connection holding one of the listener's connection slots
/// until it closes; until the client has sent [`OPENING_BYTES`], reading
/// fails once `opening` expires (and hyper closes the connection).
struct Capped {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// Opening bytes still expected, and by when.
    opening: Option<(usize, Pin<Box<tokio::time::Sleep>>)>,
}

impl Connected for Capped {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some((_, deadline)) = &mut self.opening
            && deadline.as_mut().poll(cx).is_ready()
        {
            let timed_out = "the client did not open its connection in time";
            return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, timed_out)));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some((expected, _))) = (&read, &mut self.opening) {
            let got = buf.filled().len() - before;
            if got >= *expected {
                self.opening = None;
            } else {
                *expected -= got;
            }
        }
        read
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepted connections, each holding a slot; past `max` a new one is closed at once.
fn capped_incoming(
    listener: TcpListener,
    max: usize,
    opening_timeout: Duration,
) -> impl futures::Stream<Item = std::io::Result<Capped>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(max.max(1)));
    futures::stream::unfold((listener, slots), move |(listener, slots)| async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a gRPC connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, max, "too many gRPC connections: closed a new one");
                continue;
            };
            // No Nagle: an event-stream message is small and must leave at once,
            // not wait for the client's delayed ACK (tens of ms).
            let _ = stream.set_nodelay(true);
            let opening = Some((OPENING_BYTES, Box::pin(tokio::time::sleep(opening_timeout))));
            return Some((Ok(Capped { stream, _slot: slot, opening }), (listener, slots)));
        }
    })
}

/// Why the gRPC server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GrpcServeError {
    /// The address could not be bound.
    #[error("cannot bind the gRPC address {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The reflection descriptors did not decode (a build problem).
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Binds `addr` and serves gRPC until `shutdown` completes.
#[allow(dead_code)] // `serve` binds its listeners itself; kept for callers that pass an address.
pub async fn serve_grpc(
    addr: SocketAddr,
    handle: NodeHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GrpcServeError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| GrpcServeError::Bind { addr, source })?;
    serve_grpc_listener(listener, handle, GrpcLimits::default(), shutdown).await
}

/// Serves gRPC on an already bound listener (port 0 in tests) until
/// `shutdown` completes, then drains open calls. Event streams end when the
/// node stops, so stop the node before (or together with) `shutdown`.
pub async fn serve_grpc_listener(
    listener: TcpListener,
    handle: NodeHandle,
    limits: GrpcLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GrpcServeError> {
    let kernel = KernelService::new(handle).into_server();

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_service_status("", ServingStatus::Serving).await;
    health_reporter.set_service_status(minoots_proto::SERVICE_NAME, ServingStatus::Serving).await;

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(minoots_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let local = listener.local_addr().ok();
    tracing::info!(addr = ?local, tls = limits.tls.is_some(), "gRPC listening");
    let mut builder = Server::builder()
        .layer(tower::util::MapResponseLayer::new(decode_errors_are_invalid_arguments))
        .max_concurrent_streams(Some(limits.max_streams_per_connection))
        .http2_keepalive_interval(Some(Duration::from_millis(KEEPALIVE_MS)))
        .http2_keepalive_timeout(Some(Duration::from_millis(KEEPALIVE_MS)));
    if let Some(tls) = limits.tls.clone() {
        builder = builder.tls_config(tls)?;
    }
    builder
        .add_service(health)
        .add_service(reflection)
        .add_service(kernel)
        .serve_with_incoming_shutdown(
            capped_incoming(
                listener,
                limits.max_connections,
                Duration::from_millis(limits.opening_timeout_ms.max(1)),
            ),
            shutdown,
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    use minoots_core::TenantId;
    use minoots_core::auth::Role;
    use minoots_node::{ApiKeyRecord, KeyStore, NodeConfig, SystemClock, hash_api_key, start_node};
    use minoots_proto::horology_kernel_client::HorologyKernelClient;
    use minoots_testkit::model_store::ModelStore;
    use tonic::transport::Channel;
    use tonic::{Code, Request};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as WireServing;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    const KEY: &str = "server-test-key";

    /// Sends bytes as they are (to send what is not protobuf).
    #[derive(Debug, Clone, Copy)]
    struct RawCodec;
    #[derive(Debug)]
    struct RawEncoder;
    #[derive(Debug)]
    struct RawDecoder;

    impl tonic::codec::Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }

    impl tonic::codec::Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(
            &mut self,
            item: Vec<u8>,
            dst: &mut tonic::codec::EncodeBuf<'_>,
        ) -> Result<(), tonic::Status> {
            bytes::BufMut::put_slice(dst, &item);
            Ok(())
        }
    }

    impl tonic::codec::Decoder for RawDecoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(
            &mut self,
            src: &mut tonic::codec::DecodeBuf<'_>,
        ) -> Result<Option<Vec<u8>>, tonic::Status> {
            let bytes = bytes::Buf::chunk(src).to_vec();
            bytes::Buf::advance(src, bytes.len());
            Ok(Some(bytes))
        }
    }
    const PATIENCE: Duration = Duration::from_secs(10);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_kernel_health_and_reflection_and_stops_with_open_streams() {
        let clock = Arc::new(SystemClock::new());
        let store = Arc::new(ModelStore::new(clock.clone()));
        let record = ApiKeyRecord {
            id: "k1".into(),
            tenant_id: TenantId::parse("tenant", "t1").expect("tenant"),
            roles: [Role::TimerRead, Role::TimerWrite].into_iter().collect(),
            label: "test".into(),
            created_at_ms: 0,
            revoked_at_ms: None,
        };
        store.insert_key(record, hash_api_key(KEY)).await.expect("key");
        let (handle, node) = start_node(NodeConfig::new("n1", 1), store.clone(), store, clock);
        assert!(
            tokio::time::timeout(PATIENCE, handle.wait_for_role(minoots_node::NodeRole::Leader))
                .await
                .expect("leader in time")
        );

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server =
            tokio::spawn(serve_grpc_listener(listener, handle.clone(), GrpcLimits::default(), async {
                let _ = stop_rx.await;
            }));
        let channel =
            Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");

        // Health: the server and the kernel are SERVING.
        let mut health = HealthClient::new(channel.clone());
        for service in ["", minoots_proto::SERVICE_NAME] {
            let reply = health.check(HealthCheckRequest { service: service.into() }).await.expect("health");
            assert_eq!(reply.into_inner().status, WireServing::Serving as i32, "service {service:?}");
        }

        // Reflection lists the kernel and describes it.
        let mut reflection = ServerReflectionClient::new(channel.clone());
        let ask = |request| ServerReflectionRequest { host: String::new(), message_request: Some(request) };
        let requests = futures::stream::iter([
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(minoots_proto::SERVICE_NAME.into())),
        ]);
        let mut answers = reflection.server_reflection_info(requests).await.expect("reflection").into_inner();
        match answers.message().await.expect("answer").and_then(|a| a.message_response) {
            Some(MessageResponse::ListServicesResponse(list)) => {
                assert!(list.service.iter().any(|s| s.name == minoots_proto::SERVICE_NAME), "{list:?}");
            }
            other => panic!("unexpected reflection answer: {other:?}"),
        }
        match answers.message().await.expect("answer").and_then(|a| a.message_response) {
            Some(MessageResponse::FileDescriptorResponse(files)) => {
                assert!(!files.file_descriptor_proto.is_empty())
            }
            other => panic!("unexpected reflection answer: {other:?}"),
        }

        // The kernel is mounted, authenticates, and refuses requests over 4 MiB.
        let mut kernel = HorologyKernelClient::new(channel.clone());
        let anonymous = kernel.list_timers(minoots_proto::TimerListRequest::default()).await;
        assert_eq!(anonymous.map(|_| ()).map_err(|s| s.code()), Err(Code::Unauthenticated));
        let mut huge = Request::new(minoots_proto::TimerScheduleRequest {
            metadata_json: "x".repeat(5 * 1024 * 1024),
            ..Default::default()
        });
        huge.metadata_mut().insert("x-api-key", KEY.parse().expect("key"));
        let status = kernel.schedule_timer(huge).await.expect_err("over the limit");
        assert!(matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted), "{status:?}");

        // Bytes that are not protobuf: the client's fault, INVALID_ARGUMENT (not INTERNAL).
        let mut raw = tonic::client::Grpc::new(channel.clone());
        raw.ready().await.expect("ready");
        let mut garbage = Request::new(vec![0xff_u8, 0xff, 0xff]);
        garbage.metadata_mut().insert("x-api-key", KEY.parse().expect("key"));
        let path = http::uri::PathAndQuery::from_static("/minoots.timer.v1.HorologyKernel/GetTimer");
        let status = raw.unary(garbage, path, RawCodec).await.expect_err("not protobuf");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

        // An open event stream ends when the node stops, so shutdown completes.
        let mut watch = Request::new(minoots_proto::TimerEventStreamRequest::default());
        watch.metadata_mut().insert("x-api-key", KEY.parse().expect("key"));
        let mut events = kernel.stream_timer_events(watch).await.expect("stream").into_inner();
        handle.shutdown();
        let _ = tokio::time::timeout(PATIENCE, node).await.expect("node stops");
        let end = tokio::time::timeout(PATIENCE, events.message()).await.expect("stream ends");
        assert_eq!(end.map_err(|s| s.code()).map(|_| ()), Err(Code::Unavailable));
        let _ = stop_tx.send(());
        let served = tokio::time::timeout(PATIENCE, server).await.expect("server stops").expect("join");
        assert!(served.is_ok(), "{served:?}");
    }
}
