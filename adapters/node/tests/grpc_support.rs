//! Shared harness of the gRPC tests: a real node (driver + `ModelStore` +
//! `SystemClock`) with a few API keys, its `KernelService` served by plain
//! tonic on 127.0.0.1:0, and small helpers for requests with keys, status
//! checks and reading event streams with a deadline. Included with
//! `mod grpc_support;` by the `grpc_*` test files (cargo also builds it alone,
//! as an empty test target).
#![cfg(not(madsim))]
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use minoots_core::TenantId;
use minoots_core::auth::Role;
use minoots_node::grpc::KernelService;
use minoots_node::{ApiKeyRecord, KeyStore, NodeConfig, NodeHandle, SystemClock, hash_api_key, start_node};
use minoots_testkit::model_store::ModelStore;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Status};

pub const TENANT_A: &str = "tenant-a";
pub const TENANT_B: &str = "tenant-b";
/// Tenant A, timer.read + timer.write + timer.cancel.
pub const KEY_A: &str = "key-a-rwc";
/// Tenant A, timer.read only.
pub const KEY_A_READ: &str = "key-a-read";
/// Tenant A, timer.write only.
pub const KEY_A_WRITE: &str = "key-a-write";
/// Tenant A, tenant.admin.
pub const KEY_A_ADMIN: &str = "key-a-admin";
/// Tenant B, timer.read + timer.write + timer.cancel.
pub const KEY_B: &str = "key-b-rwc";
/// The operator's key (tenant `ops`): timer.read + operator, streams every tenant.
pub const KEY_OPERATOR: &str = "key-operator";

/// How long a test waits for anything that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct TestNode {
    pub handle: NodeHandle,
    pub store: Arc<ModelStore>,
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    node: tokio::task::JoinHandle<()>,
}

impl TestNode {
    /// Starts a node with the keys above and serves gRPC on a free port.
    pub async fn start() -> TestNode {
        TestNode::start_with(NodeConfig::new("node-1", 42)).await
    }

    /// Like [`TestNode::start`], with a chosen node configuration.
    pub async fn start_with(config: NodeConfig) -> TestNode {
        let clock = Arc::new(SystemClock::new());
        let store = Arc::new(ModelStore::new(clock.clone()));
        let rwc = [Role::TimerRead, Role::TimerWrite, Role::TimerCancel];
        let keys: [(&str, &str, &[Role]); 6] = [
            (KEY_A, TENANT_A, &rwc),
            (KEY_A_READ, TENANT_A, &[Role::TimerRead]),
            (KEY_A_WRITE, TENANT_A, &[Role::TimerWrite]),
            (KEY_A_ADMIN, TENANT_A, &[Role::TenantAdmin]),
            (KEY_B, TENANT_B, &rwc),
            (KEY_OPERATOR, "ops", &[Role::TimerRead, Role::Operator]),
        ];
        for (secret, tenant, roles) in keys {
            let record = ApiKeyRecord {
                id: format!("id-{secret}"),
                tenant_id: TenantId::parse("tenant", tenant).expect("test tenant"),
                roles: roles.iter().copied().collect(),
                label: secret.to_owned(),
                created_at_ms: 0,
                revoked_at_ms: None,
            };
            store.insert_key(record, hash_api_key(secret)).await.expect("insert key");
        }
        let (handle, node) = start_node(config, store.clone(), store.clone(), clock);
        let leader =
            tokio::time::timeout(PATIENCE, handle.wait_for_role(minoots_node::NodeRole::Leader)).await;
        assert_eq!(leader, Ok(true), "the node did not become leader");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let service = KernelService::new(handle.clone()).into_server();
        let server = tokio::spawn(async move {
            let served =
                Server::builder().add_service(service).serve_with_incoming(TcpIncoming::from(listener)).await;
            served.expect("gRPC server failed");
        });
        TestNode { handle, store, addr, server, node }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client of the full (extended) API.
    pub async fn client(
        &self,
    ) -> minoots_proto::horology_kernel_client::HorologyKernelClient<tonic::transport::Channel> {
        minoots_proto::horology_kernel_client::HorologyKernelClient::connect(self.url())
            .await
            .expect("connect")
    }

    /// A client generated from MINOOTS's contract only.
    pub async fn contract_client(
        &self,
    ) -> minoots_proto::contract::horology_kernel_client::HorologyKernelClient<tonic::transport::Channel>
    {
        minoots_proto::contract::horology_kernel_client::HorologyKernelClient::connect(self.url())
            .await
            .expect("connect")
    }

    pub async fn stop(self) {
        self.server.abort();
        self.handle.shutdown();
        let _ = tokio::time::timeout(PATIENCE, self.node).await;
    }
}

/// `message` with metadata `x-api-key: key`.
pub fn with_key<T>(key: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("x-api-key", key.parse().expect("ascii key"));
    request
}

/// Asserts a call failed with `code`; returns the status.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, Status>, code: Code) -> Status {
    match result {
        Ok(response) => panic!("expected {code:?}, got {:?}", response.into_inner()),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}

/// The `x-minoots-field` metadata of a status.
pub fn field_of(status: &Status) -> Option<String> {
    status.metadata().get("x-minoots-field").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The next message of a server stream, failing the test on timeout, error or end.
pub async fn next_message<T>(stream: &mut tonic::Streaming<T>) -> T {
    match tokio::time::timeout(PATIENCE, stream.message()).await {
        Err(_) => panic!("no event within {PATIENCE:?}"),
        Ok(Err(status)) => panic!("stream failed: {status:?}"),
        Ok(Ok(None)) => panic!("stream ended"),
        Ok(Ok(Some(message))) => message,
    }
}

/// Whether a server stream stays silent for `wait`.
pub async fn stays_silent<T: std::fmt::Debug>(stream: &mut tonic::Streaming<T>, wait: Duration) -> bool {
    match tokio::time::timeout(wait, stream.message()).await {
        Err(_) => true,
        Ok(other) => {
            eprintln!("stream was not silent: {other:?}");
            false
        }
    }
}
