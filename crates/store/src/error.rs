use std::path::PathBuf;

use crate::{KeyValue, Revision};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store operation failed. The API server maps each to a Kubernetes `Status`
/// (`AlreadyExists` 409, `NotFound` 404, `Conflict` 409, `Compacted` 410, `FutureRevision` 504,
/// the rest 500/503), so the variants are about what the caller can do next, not about which
/// backend failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key:?} already exists")]
    AlreadyExists { key: String },

    #[error("key {key:?} not found")]
    NotFound { key: String },

    /// A compare-and-swap lost: the key was modified since `expected`. `current` is its value
    /// now, so a retry loop needs no second read.
    #[error("key {key:?} was modified: expected revision {expected}, now {}", current.mod_revision)]
    Conflict {
        key: String,
        expected: Revision,
        current: Box<KeyValue>,
    },

    /// The requested revision is below the compaction horizon: history that old is gone.
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted { requested: Revision, compacted: Revision },

    /// The requested revision is newer than anything committed.
    #[error("revision {requested} is in the future (current is {current})")]
    FutureRevision { requested: Revision, current: Revision },

    /// The data file exists but is not a store this program can trust. Never re-initialised:
    /// the operator decides what to do with it.
    #[error("refusing to use the data file {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },

    /// The backend cannot be reached (etcd down, network trouble): worth retrying.
    #[error("store unavailable: {0}")]
    Unavailable(String),

    /// A request the store cannot carry out as asked (bad key, bad revision).
    #[error("invalid store request: {0}")]
    Invalid(String),

    /// Anything else (I/O errors, a closed store).
    #[error("store error: {0}")]
    Internal(String),
}

impl StoreError {
    /// Worth retrying the same request later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}
