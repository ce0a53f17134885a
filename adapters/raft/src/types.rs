//! The Raft mode's openraft types: what a log entry carries (one
//! [`ReplicatedWrite`]) and what applying it answers (a [`ReplicatedReply`]).
//! Node ids are the numbers of `KERNEL_RAFT_PEERS`; a node's openraft
//! address is its Raft transport URL; a snapshot is a file (a copy of the
//! state database), read and written in chunks, never held in memory whole.

pub use minoots_store::sqlite::replica::{ReplicatedReply, ReplicatedWrite};

openraft::declare_raft_types!(
    /// The Raft mode's type configuration.
    pub TypeConfig:
        D = ReplicatedWrite,
        R = ReplicatedReply,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = tokio::fs::File,
);

/// A Raft node of this service.
pub type RaftNode = openraft::Raft<TypeConfig>;
/// A log entry.
pub type LogEntry = openraft::Entry<TypeConfig>;
/// A log position.
pub type LogId = openraft::LogId<u64>;
/// A storage failure as openraft reports it.
pub type StorageError = openraft::StorageError<u64>;
/// The cluster's membership as stored.
pub type Membership = openraft::StoredMembership<u64, openraft::BasicNode>;

/// A storage failure while doing `what`, for openraft.
pub(crate) fn storage_error(
    subject: openraft::ErrorSubject<u64>,
    verb: openraft::ErrorVerb,
    what: impl std::fmt::Display,
) -> StorageError {
    StorageError::from(openraft::StorageIOError::new(subject, verb, openraft::AnyError::error(what)))
}
