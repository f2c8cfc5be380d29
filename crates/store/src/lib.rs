//! The revisioned key-value store that holds all cluster state.
//!
//! Every component keeps its state behind the API server, and the API server keeps it here, as
//! kube-apiserver does with etcd. The model is etcd's: one global, strictly increasing
//! [`Revision`] bumped by every write; each key remembers the revision that created it and the
//! one that last modified it (`resourceVersion` in the API is the modification revision); writes
//! are guarded by compare-and-swap on that revision; a watch replays every change after a
//! revision, each event carrying the previous value; compaction forgets history below a revision,
//! and asking for it afterwards fails with [`StoreError::Compacted`] (HTTP 410 in the API).
//!
//! Two backends implement [`Backend`]:
//! - [`embedded`]: a redb file in the data directory with a single group-commit writer. The
//!   default: nothing to set up.
//! - [`etcd`]: a real etcd v3 cluster, for HA. Keys are laid out exactly as Kubernetes lays them
//!   out (see [`keys`]), so `etcdctl get /registry/... --prefix` works as users expect.
//!
//! Callers hold a [`Store`] (`Arc<dyn Backend>`) and never learn which backend is behind it.

pub mod embedded;
mod error;
pub mod etcd;
pub mod keys;
mod watch;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use error::{Result, StoreError};
pub use watch::{EventBatch, WatchStream};

/// A point in the store's history. Starts at 0 for an empty store; each successful write takes
/// the next one. Signed, as etcd's is, so it maps 1:1 onto etcd revisions.
pub type Revision = i64;

/// One key as stored at some revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// The revision of the write that created this key (since it last did not exist).
    pub create_revision: Revision,
    /// The revision of the write that produced this value; for a deletion event, the revision of
    /// the deletion itself.
    pub mod_revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For `Put`, the new value. For `Delete`, the key with an empty value and the deletion's
    /// revision as `mod_revision`.
    pub kv: KeyValue,
    /// The value the key had before this change: `None` for a creation, and possibly `None`
    /// (on etcd) for an event at the compaction horizon whose previous value lay below it.
    pub prev: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A read of the keys under a prefix, in key order.
#[derive(Clone, Debug, Default)]
pub struct RangeRequest {
    /// Only keys starting with this. For a directory-like listing end it with `/`, so that
    /// `/registry/pods/default/` does not also match `/registry/pods/default2/...`.
    pub prefix: String,
    /// Start at this key (inclusive) instead of at the prefix: how a `continue` token resumes.
    /// Use [`keys::after`] to continue after the last key of a previous page.
    pub start: Option<String>,
    /// At most this many keys; 0 means no limit.
    pub limit: usize,
    /// Read the store as it was at this revision; `None` (or a revision of 0 or less, as on
    /// etcd) reads the newest state.
    pub revision: Option<Revision>,
}

#[derive(Clone, Debug, Default)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// More keys follow the last one returned.
    pub more: bool,
    /// The revision this read saw: the requested one, or the store's current revision.
    pub revision: Revision,
}

#[derive(Clone, Debug)]
pub struct DeleteResponse {
    /// The revision of the deletion.
    pub revision: Revision,
    /// The value that was deleted.
    pub prev: KeyValue,
}

/// What every backend offers. All operations are linearizable: a read issued after a write was
/// acknowledged sees it, and every acknowledged write is durable.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// `"embedded"` or `"etcd"`, for logs and benchmarks.
    fn name(&self) -> &'static str;

    /// The newest value of `key`, if it exists.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse>;

    /// Creates `key`; fails with [`StoreError::AlreadyExists`] if it exists. Returns the revision
    /// of the write (its create and mod revision).
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision>;

    /// Replaces the value of `key` if its mod revision is still `expected`; otherwise fails with
    /// [`StoreError::Conflict`] carrying the current value, or [`StoreError::NotFound`].
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision>;

    /// Deletes `key`, only if its mod revision is `expected` when one is given.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<DeleteResponse>;

    /// Every change to a key under `prefix` with a revision greater than `after`, in revision
    /// order, each exactly once, then live changes as they commit. `after` may be the current
    /// revision (only new changes) but not below the compaction horizon: that fails with
    /// [`StoreError::Compacted`], at the call or, when a compaction races with it, as the
    /// stream's first item.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// The revision of the newest committed write.
    async fn current_revision(&self) -> Result<Revision>;

    /// Forgets history below `revision`: afterwards reads at a revision below it and watches
    /// starting below it fail with [`StoreError::Compacted`]. Reads at `revision` or later, and
    /// watches from `revision` on, stay complete (on etcd a deletion at exactly `revision` is
    /// forgotten too, so replay it from `revision`, not from the one before).
    async fn compact(&self, revision: Revision) -> Result<()>;
}

/// A handle on whichever backend was configured.
pub type Store = Arc<dyn Backend>;

/// Which backend to open.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    /// A redb file inside this directory (created if missing).
    Embedded { data_dir: std::path::PathBuf },
    /// A real etcd v3 cluster.
    Etcd { endpoints: Vec<String> },
}

impl StoreConfig {
    /// The configuration a command line gives: `--etcd-servers` if set (comma-separated URLs),
    /// else the embedded store under `--data-dir`.
    pub fn from_flags(data_dir: &std::path::Path, etcd_servers: Option<&str>) -> StoreConfig {
        match etcd_servers.map(str::trim).filter(|s| !s.is_empty()) {
            Some(servers) => StoreConfig::Etcd {
                endpoints: servers
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
            },
            None => StoreConfig::Embedded {
                data_dir: data_dir.to_path_buf(),
            },
        }
    }
}

/// Opens the configured backend. For etcd this waits, retrying, until the cluster answers (each
/// failed attempt is logged with the reason); use [`etcd::EtcdStore::connect`] for one attempt.
pub async fn open(config: &StoreConfig) -> Result<Store> {
    match config {
        StoreConfig::Embedded { data_dir } => {
            let store = embedded::EmbeddedStore::open(data_dir)?;
            Ok(Arc::new(store))
        }
        StoreConfig::Etcd { endpoints } => {
            let store = etcd::EtcdStore::connect_with_retry(endpoints).await?;
            Ok(Arc::new(store))
        }
    }
}
