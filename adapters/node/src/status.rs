//! What a node reports about itself ([`NodeStatus`], [`NodeRole`]): for
//! `/health`, gRPC health, metrics and logs. Its own module so that the
//! parts of the node that watch the status (quotas, streams) need nothing
//! else of the handle.

/// The node's state, for `/health` and gRPC health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node.
    pub node_id: String,
    /// What the node is doing now.
    pub role: NodeRole,
    /// Current fencing epoch, once known.
    pub epoch: Option<u64>,
    /// The leader's address, when this node follows one.
    pub leader: Option<String>,
    /// Whether the last store operation succeeded.
    pub store_ok: bool,
    /// Occurrences in memory.
    pub due_index: usize,
    /// Writes waiting for a commit.
    pub queued_writes: usize,
}

/// What a node is doing: the engine's leadership, or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// Opening the store (standalone) or not yet asked for the lease.
    Opening,
    /// Leading: it fires and takes writes.
    Leader,
    /// Standalone, and another writer opened the store after it.
    Deposed,
    /// Following a leader (or none known yet).
    Follower,
    /// Shut down.
    Stopped,
}

impl NodeRole {
    /// The name `/health`, logs and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opening => "opening",
            Self::Leader => "leader",
            Self::Deposed => "deposed",
            Self::Follower => "follower",
            Self::Stopped => "stopped",
        }
    }
}

impl From<&minoots_core::Leadership> for NodeRole {
    fn from(leadership: &minoots_core::Leadership) -> Self {
        use minoots_core::Leadership;
        match leadership {
            Leadership::Opening => Self::Opening,
            Leadership::Leader { .. } => Self::Leader,
            Leadership::Deposed { .. } => Self::Deposed,
            Leadership::Follower { .. } => Self::Follower,
        }
    }
}

/// Raft mode: the node's consensus state, as its Raft layer reports it (for
/// `/health`'s `raft` block and the `minoots_raft_*` metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsensusStatus {
    /// This node's Raft id.
    pub node_id: u64,
    /// `Leader`, `Follower`, `Candidate` or `Learner`.
    pub state: &'static str,
    /// Whether this node is the Raft leader (its engine leads once its term's
    /// barrier is applied).
    pub is_leader: bool,
    /// The Raft leader's transport address, when one is known.
    pub leader_address: Option<String>,
    /// The current term.
    pub term: u64,
    /// The last log index known committed.
    pub commit_index: u64,
    /// The last log index applied to this node's state.
    pub applied_index: u64,
    /// Whether this node is part of a working majority: a leader whose
    /// quorum answered within an election timeout, or a follower that knows
    /// its leader. False while an election runs or a quorum is lost.
    pub quorum: bool,
    /// Whether this node has caught up with the cluster since it started
    /// (before, it refuses reads as retryable).
    pub caught_up: bool,
}
