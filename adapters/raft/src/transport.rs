//! Raft RPCs between nodes over gRPC (`minoots.raft.v1`): the client side
//! openraft calls ([`PeerFactory`], one lazily connected channel per peer)
//! and the server side that hands requests to the local node
//! ([`RaftService`]). Each message is the openraft request or result as
//! JSON in a `RaftPayload`; a transport failure is "unreachable" to
//! openraft, which backs off and retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use minoots_node::clock::Clock;

use minoots_proto::raft_v1::RaftPayload;
use minoots_proto::raft_v1::raft_client::RaftClient;
use minoots_proto::raft_v1::raft_server;
use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use crate::log_store::LogStore;
use crate::types::{RaftNode, TypeConfig};

/// How long connecting to a peer may take before the call counts as unreachable.
const CONNECT_TIMEOUT_MS: u64 = 500;

/// Which RPC a call is.
#[derive(Debug, Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

/// Opens clients to peers (openraft's network factory).
#[derive(Debug, Clone, Default)]
pub struct PeerFactory;

/// A client of one peer.
pub struct PeerClient {
    target: u64,
    channel: Result<Channel, String>,
}

impl RaftNetworkFactory<TypeConfig> for PeerFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient { target, channel: peer_channel(&node.addr) }
    }
}

/// A lazily connected channel to the Raft transport at `address`.
pub(crate) fn peer_channel(address: &str) -> Result<Channel, String> {
    Endpoint::from_shared(address.to_owned())
        .map(|e| e.connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS)).connect_lazy())
        .map_err(|e| format!("peer address {address:?}: {e}"))
}

fn network<E: std::error::Error>(e: impl std::error::Error + 'static) -> RPCError<u64, BasicNode, E> {
    RPCError::Network(NetworkError::new(&e))
}

fn unreachable<E: std::error::Error>(e: impl std::error::Error + 'static) -> RPCError<u64, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&e))
}

/// A transport failure as an error value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportFailure(String);

impl PeerClient {
    async fn exchange<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let channel = self.channel.clone().map_err(|e| unreachable(TransportFailure(e)))?;
        let body = serde_json::to_vec(request).map_err(network)?;
        let mut client = RaftClient::new(channel).max_decoding_message_size(usize::MAX);
        let payload = RaftPayload { body };
        let call = async move {
            match rpc {
                Rpc::AppendEntries => client.append_entries(payload).await,
                Rpc::Vote => client.vote(payload).await,
                Rpc::InstallSnapshot => client.install_snapshot(payload).await,
            }
        };
        let reply =
            tokio::time::timeout(option.hard_ttl(), call).await.map_err(network)?.map_err(unreachable)?;
        let result: Result<Resp, E> = serde_json::from_slice(&reply.into_inner().body).map_err(network)?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.exchange(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>>
    {
        self.exchange(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.exchange(Rpc::Vote, &rpc, &option).await
    }
}

/// Asks the peer at `address` whether it has Raft state (bootstrap).
pub(crate) async fn probe(channel: Channel, timeout: Duration) -> Result<bool, String> {
    let mut client = RaftClient::new(channel);
    let reply = tokio::time::timeout(timeout, client.probe(RaftPayload { body: Vec::new() }))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&reply.into_inner().body).map_err(|e| e.to_string())
}

/// When this node last heard a leader (an `AppendEntries`, heartbeats
/// included), by its monotonic clock.
pub struct LeaderContact {
    clock: Arc<dyn Clock>,
    last_mono_ms: AtomicU64,
}

impl LeaderContact {
    /// Contact starts now.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let now = clock.now().mono_ms;
        Self { clock, last_mono_ms: AtomicU64::new(now) }
    }

    /// A leader was heard (or an election was started: wait again).
    pub fn heard(&self) {
        self.last_mono_ms.store(self.clock.now().mono_ms, Ordering::Relaxed);
    }

    /// How long no leader has been heard.
    pub fn silent_for_ms(&self) -> u64 {
        self.clock.now().mono_ms.saturating_sub(self.last_mono_ms.load(Ordering::Relaxed))
    }
}

/// The server side: hands each request to the local Raft node.
#[derive(Clone)]
pub struct RaftService {
    raft: RaftNode,
    log: LogStore,
    contact: Arc<LeaderContact>,
}

impl RaftService {
    /// Serves `raft`, whose log is `log` (for probes), noting leader contact in `contact`.
    pub fn new(raft: RaftNode, log: LogStore, contact: Arc<LeaderContact>) -> Self {
        Self { raft, log, contact }
    }

    /// The tonic service.
    pub fn into_server(self) -> raft_server::RaftServer<Self> {
        raft_server::RaftServer::new(self).max_decoding_message_size(usize::MAX)
    }
}

fn decode<T: DeserializeOwned>(request: tonic::Request<RaftPayload>) -> Result<T, tonic::Status> {
    serde_json::from_slice(&request.into_inner().body)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable Raft message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
    serde_json::to_vec(value)
        .map(|body| tonic::Response::new(RaftPayload { body }))
        .map_err(|e| tonic::Status::internal(format!("encoding a Raft reply: {e}")))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        self.contact.heard();
        let result = self.raft.append_entries(decode(request)?).await;
        encode(&result)
    }

    async fn vote(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        let result = self.raft.vote(decode(request)?).await;
        encode(&result)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        let result = self.raft.install_snapshot(decode(request)?).await;
        encode(&result)
    }

    async fn probe(
        &self,
        _request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        let has_state = self.log.has_state().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        encode(&has_state)
    }
}
