//! How `minoots serve` holds its REST connections: at most
//! `max_connections` at once (one more is closed at once, so a flood of idle
//! sockets cannot exhaust the process's descriptors, which its database
//! connections need too); TLS when the operator gives a certificate, each
//! handshake bounded by the header timeout; a client must send a request's
//! headers within the header timeout — the first request's and, on a
//! kept-alive connection, each next one's, so idle and half-sent
//! connections are closed (slow bodies: the body timeout on the router). No
//! Nagle: event-stream frames leave at once. On shutdown, connections are
//! asked to finish and given [`DRAIN_MS`] to do so.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::rustls;

/// How long open connections get to finish after shutdown begins.
pub const DRAIN_MS: u64 = 5_000;

/// Limits and TLS of a listener.
#[derive(Clone)]
pub struct ListenConfig {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time a client has for a TLS handshake and for each request's headers (idle included).
    pub header_timeout_ms: u64,
    /// The server's certificate and key, when it speaks TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The certificates of a PEM file (at least one), errors naming `setting`.
pub fn pem_certificates(
    setting: &str,
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{setting} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{setting} {}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// The private key of a PEM file, errors naming `setting`.
pub fn pem_private_key(
    setting: &str,
    path: &Path,
) -> Result<rustls::pki_types::PrivateKeyDer<'static>, String> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{setting} {}: {e}", path.display()))
}

/// Loads a PEM certificate chain and private key into a TLS server config
/// offering `alpn` (e.g. `http/1.1`).
pub fn tls_config(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = pem_certificates("MINOOTS_TLS_CERT", cert)?;
    let key = pem_private_key("MINOOTS_TLS_KEY", key)?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("MINOOTS_TLS_CERT/MINOOTS_TLS_KEY: {e}"))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Serves `app` on `listener` until `shutdown` completes, then drains.
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    config: ListenConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let connections = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let header_timeout = Duration::from_millis(config.header_timeout_ms.max(1));
    let acceptor = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or a connection reset before accept: keep serving.
                    tracing::warn!(error = %e, "accepting a REST connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = config.max_connections, "too many REST connections: closed a new one");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (app, stop, acceptor) = (app.clone(), stop_rx.clone(), acceptor.clone());
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(tcp, peer, app, header_timeout, stop).await,
                Some(acceptor) => match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => serve_connection(tls, peer, app, header_timeout, stop).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let everyone = u32::try_from(config.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_millis(DRAIN_MS), connections.acquire_many(everyone)).await;
}

/// Serves one connection from `peer`; handlers see the address as `ConnectInfo<SocketAddr>`.
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        tower::ServiceExt::oneshot(app.clone(), request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}
