//! The Raft state machine of one node: the standalone store's SQLite state
//! (`minoots.db`), changed only by applying committed entries through
//! `SqliteStore::apply_replicated` — a batch of entries and the applied mark
//! in one transaction — and its snapshots, consistent copies of that
//! database kept in `raft-snapshots/` and shipped, in chunks read from the
//! file, to nodes that lag behind the purged log.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use minoots_store::SqliteStore;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, SnapshotMeta};
use serde::{Deserialize, Serialize};

use crate::types::{
    LogEntry, LogId, Membership, ReplicatedReply, ReplicatedWrite, StorageError, TypeConfig, storage_error,
};

/// The applied position recorded with the state (its `replica_applied` mark).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedMark {
    last_applied: Option<LogId>,
    membership: Membership,
}

/// The state machine. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct StateMachine {
    store: Arc<SqliteStore>,
    snapshot_dir: PathBuf,
    /// Distinguishes concurrent snapshot builds' files.
    builds: Arc<AtomicU64>,
    /// The membership the applied mark holds, once read: applying a batch
    /// needs it to write the next mark, and it changes only by applying a
    /// membership entry or installing a snapshot.
    membership: Arc<Mutex<Option<Membership>>>,
}

fn sm_error(verb: ErrorVerb, what: impl std::fmt::Display) -> StorageError {
    storage_error(ErrorSubject::StateMachine, verb, what)
}

fn snap_error(verb: ErrorVerb, what: impl std::fmt::Display) -> StorageError {
    storage_error(ErrorSubject::Snapshot(None), verb, what)
}

impl StateMachine {
    /// The state machine over `store`, with snapshots in `snapshot_dir`.
    pub fn new(store: Arc<SqliteStore>, snapshot_dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&snapshot_dir)?;
        Ok(Self { store, snapshot_dir, builds: Arc::default(), membership: Arc::default() })
    }

    fn current_data(&self) -> PathBuf {
        self.snapshot_dir.join("current.db")
    }

    fn current_meta(&self) -> PathBuf {
        self.snapshot_dir.join("current.json")
    }

    /// Where a snapshot being received is written (one at a time: openraft
    /// abandons a transfer when another begins).
    fn receiving(&self) -> PathBuf {
        self.snapshot_dir.join("receiving.db")
    }

    async fn mark(&self) -> Result<AppliedMark, StorageError> {
        let text = self.store.replica_mark().await.map_err(|e| sm_error(ErrorVerb::Read, e))?;
        let mark: AppliedMark = match text {
            Some(text) => serde_json::from_str(&text).map_err(|e| sm_error(ErrorVerb::Read, e))?,
            None => AppliedMark::default(),
        };
        self.remember(&mark.membership);
        Ok(mark)
    }

    /// The applied membership: remembered, or read with the mark once.
    async fn membership(&self) -> Result<Membership, StorageError> {
        let known = self.membership.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        match known {
            Some(membership) => Ok(membership),
            None => Ok(self.mark().await?.membership),
        }
    }

    fn remember(&self, membership: &Membership) {
        *self.membership.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(membership.clone());
    }

    /// Keeps `data` (a database copy) and `meta` as the current snapshot,
    /// replacing the previous one.
    async fn keep_current(
        &self,
        data: &Path,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
    ) -> Result<(), StorageError> {
        let meta_text = serde_json::to_vec(meta).map_err(|e| snap_error(ErrorVerb::Write, e))?;
        let staged_meta = self.snapshot_dir.join("current.json.new");
        tokio::fs::write(&staged_meta, meta_text).await.map_err(|e| snap_error(ErrorVerb::Write, e))?;
        tokio::fs::rename(data, self.current_data()).await.map_err(|e| snap_error(ErrorVerb::Write, e))?;
        tokio::fs::rename(&staged_meta, self.current_meta())
            .await
            .map_err(|e| snap_error(ErrorVerb::Write, e))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let build = self.builds.fetch_add(1, Ordering::Relaxed);
        let staged = self.snapshot_dir.join(format!("building-{build}.db"));
        let _ = tokio::fs::remove_file(&staged).await;
        let mark = self.store.copy_replica_to(&staged).await.map_err(|e| snap_error(ErrorVerb::Write, e))?;
        let mark: AppliedMark = match mark {
            Some(text) => serde_json::from_str(&text).map_err(|e| snap_error(ErrorVerb::Read, e))?,
            None => AppliedMark::default(),
        };
        let snapshot_id = match mark.last_applied {
            Some(id) => format!("{}-{}-{build}", id.leader_id.term, id.index),
            None => format!("0-0-{build}"),
        };
        let meta =
            SnapshotMeta { last_log_id: mark.last_applied, last_membership: mark.membership, snapshot_id };
        self.keep_current(&staged, &meta).await?;
        let data =
            tokio::fs::File::open(self.current_data()).await.map_err(|e| snap_error(ErrorVerb::Read, e))?;
        Ok(Snapshot { meta, snapshot: Box::new(data) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let mark = self.mark().await?;
        Ok((mark.last_applied, mark.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ReplicatedReply>, StorageError>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut mark = AppliedMark { last_applied: None, membership: self.membership().await? };
        // Which entries carry a write, so each reply goes back to its entry.
        let mut writes: Vec<ReplicatedWrite> = Vec::new();
        let mut carries_write: Vec<bool> = Vec::new();
        for entry in entries {
            mark.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => carries_write.push(false),
                EntryPayload::Normal(write) => {
                    writes.push(write);
                    carries_write.push(true);
                }
                EntryPayload::Membership(membership) => {
                    mark.membership = Membership::new(Some(entry.log_id), membership);
                    carries_write.push(false);
                }
            }
        }
        if carries_write.is_empty() {
            return Ok(Vec::new());
        }
        let mark_text = serde_json::to_string(&mark).map_err(|e| sm_error(ErrorVerb::Write, e))?;
        let mut replies = self
            .store
            .apply_replicated(&writes, &mark_text)
            .await
            .map_err(|e| sm_error(ErrorVerb::Write, e))?
            .into_iter();
        self.remember(&mark.membership);
        Ok(carries_write
            .into_iter()
            .map(|write| {
                if write {
                    replies.next().unwrap_or(ReplicatedReply::Applied)
                } else {
                    ReplicatedReply::Applied
                }
            })
            .collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let file =
            tokio::fs::File::create(self.receiving()).await.map_err(|e| snap_error(ErrorVerb::Write, e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        use tokio::io::AsyncWriteExt;
        snapshot.flush().await.map_err(|e| snap_error(ErrorVerb::Write, e))?;
        snapshot.sync_all().await.map_err(|e| snap_error(ErrorVerb::Write, e))?;
        drop(snapshot);
        let received = self.receiving();
        self.store.install_replica_from(&received).await.map_err(|e| snap_error(ErrorVerb::Write, e))?;
        self.remember(&meta.last_membership);
        self.keep_current(&received, meta).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let meta = match tokio::fs::read(self.current_meta()).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(snap_error(ErrorVerb::Read, e)),
        };
        let meta: SnapshotMeta<u64, openraft::BasicNode> =
            serde_json::from_slice(&meta).map_err(|e| snap_error(ErrorVerb::Read, e))?;
        let data =
            tokio::fs::File::open(self.current_data()).await.map_err(|e| snap_error(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(data) }))
    }
}
