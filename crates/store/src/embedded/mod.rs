//! The embedded backend: one redb file, `store.redb`, in the data directory.
//!
//! Three tables, all written in the same transaction:
//! - `meta`: the format marker, the newest revision, and the compaction horizon;
//! - `objects`: key → (create revision, mod revision) of every live key;
//! - `log`: revision → the write at that revision (see [`codec`]), holding its value.
//!
//! Writes go through a single writer thread ([`writer`]) that commits everything waiting in one
//! transaction and one fsync (group commit); no caller is answered before its batch is durable.
//! Reads open a redb read transaction, a consistent snapshot that never blocks the writer. A read
//! at an older revision starts from the newest state and undoes the log entries after it. A watch
//! ([`feed`]) replays the log, then follows the batches the writer broadcasts after each commit.

mod codec;
mod feed;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{
    Backend, DeleteResponse, EventBatch, KeyValue, RangeRequest, RangeResponse, Result, Revision, StoreError,
    WatchStream,
};
use codec::LogEntry;
use writer::{Request, WriteOp, WriteOutcome};

/// The file inside the data directory.
pub const FILE_NAME: &str = "store.redb";

const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const OBJECTS: TableDefinition<&str, (i64, i64)> = TableDefinition::new("objects");
const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");

/// `meta` keys.
const FORMAT_KEY: &str = "styrman.store.format";
const REVISION_KEY: &str = "revision";
const COMPACTED_KEY: &str = "compacted";
/// Bumped on any incompatible change of the tables or the log encoding.
const FORMAT_VERSION: i64 = 1;

/// How many committed batches the live feed keeps for slow watchers before they must catch up
/// from the log instead.
const FEED_CAPACITY: usize = 1024;

/// A batch of events as committed, with the revisions it covers (contiguous).
pub(crate) struct Committed {
    first: Revision,
    last: Revision,
    events: EventBatch,
    /// The longest prefix every key in the batch shares: a watch whose prefix it starts with
    /// takes the whole batch without looking at each key (the common case: many watchers of
    /// one resource).
    common_prefix: String,
}

impl Committed {
    pub(crate) fn new(first: Revision, last: Revision, events: EventBatch) -> Committed {
        let mut common: &str = events.first().map_or("", |e| e.kv.key.as_str());
        for event in events.iter().skip(1) {
            let shared = common
                .bytes()
                .zip(event.kv.key.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            // Cut on a character boundary.
            let cut = (0..=shared).rev().find(|&i| common.is_char_boundary(i)).unwrap_or(0);
            common = &common[..cut];
        }
        let common_prefix = common.to_string();
        Committed {
            first,
            last,
            events,
            common_prefix,
        }
    }
}

/// What readers, the writer and the watch feeds share.
pub(crate) struct Shared {
    db: Database,
    path: PathBuf,
    /// The newest committed revision; published after each commit.
    revision: AtomicI64,
    /// The compaction horizon: revisions below it are gone.
    compacted: AtomicI64,
}

pub struct EmbeddedStore {
    shared: Arc<Shared>,
    /// `None` only while dropping: closing it stops the writer.
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Watches subscribe here. The writer holds the other sender; once both are gone, every
    /// watch task sees the feed close and ends.
    feed: broadcast::Sender<Arc<Committed>>,
}

impl EmbeddedStore {
    /// Opens `DIR/store.redb`, creating the directory and the file when they do not exist. An
    /// existing file that is damaged, was written by something else, or has another format
    /// version is refused with [`StoreError::Corrupt`] naming it; it is never re-initialised.
    pub fn open(data_dir: &Path) -> Result<EmbeddedStore> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Internal(format!("cannot create data directory {}: {e}", data_dir.display())))?;
        let path = data_dir.join(FILE_NAME);
        let fresh = match std::fs::metadata(&path) {
            Ok(m) => m.len() == 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(corrupt(&path, format!("cannot read it: {e}"))),
        };
        let db = open_database(&path, fresh)?;
        let (revision, compacted) = if fresh {
            initialise(&db, &path)?
        } else {
            check_format(&db, &path)?
        };
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let shared = Arc::new(Shared {
            db,
            path,
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
        });
        let (requests, writer) = writer::spawn(shared.clone(), feed.clone())?;
        tracing::info!(path = %shared.path.display(), revision, "embedded store open");
        Ok(EmbeddedStore {
            shared,
            requests: Some(requests),
            writer: Some(writer),
            feed,
        })
    }

    /// The path of the redb file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome> {
        let (reply, answer) = oneshot::channel();
        let requests = self.requests.as_ref().expect("requests are only taken on drop");
        requests
            .send(Request { op, reply })
            .await
            .map_err(|_| StoreError::Internal("the store's writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Internal("the store's writer has stopped".into()))?
    }

    /// Runs a blocking read on the blocking pool: redb calls block on I/O.
    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Shared) -> Result<T> + Send + 'static) -> Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }
}

impl Drop for EmbeddedStore {
    /// Stops the writer after it has answered everything queued, so that the file is closed
    /// (and can be opened again) once the last reader is done.
    fn drop(&mut self) {
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn open_database(path: &Path, fresh: bool) -> Result<Database> {
    let mut builder = Database::builder();
    // Verify every page's checksum on open, so that a file altered behind our back is refused
    // with an error instead of being trusted (or panicking later).
    builder.set_check_integrity_on_open(true);
    let opened = if fresh {
        builder.create(path)
    } else {
        builder.open(path)
    };
    opened.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => corrupt(path, "it is already open in another process".to_string()),
        other => corrupt(path, format!("it is not a readable store file ({other})")),
    })
}

fn initialise(db: &Database, path: &Path) -> Result<(Revision, Revision)> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut meta = txn.open_table(META).map_err(db_err)?;
        meta.insert(FORMAT_KEY, FORMAT_VERSION).map_err(db_err)?;
        meta.insert(REVISION_KEY, 0).map_err(db_err)?;
        meta.insert(COMPACTED_KEY, 0).map_err(db_err)?;
        txn.open_table(OBJECTS).map_err(db_err)?;
        txn.open_table(LOG).map_err(db_err)?;
    }
    txn.commit().map_err(db_err)?;
    tracing::info!(path = %path.display(), "initialised a new embedded store");
    Ok((0, 0))
}

fn check_format(db: &Database, path: &Path) -> Result<(Revision, Revision)> {
    let txn = db.begin_read().map_err(db_err)?;
    let meta = txn
        .open_table(META)
        .map_err(|e| corrupt(path, format!("it has no styrman metadata ({e})")))?;
    let get = |key: &str| -> Result<Option<i64>> { Ok(meta.get(key).map_err(db_err)?.map(|g| g.value())) };
    match get(FORMAT_KEY)? {
        Some(FORMAT_VERSION) => {}
        Some(other) => {
            return Err(corrupt(
                path,
                format!("it has store format {other}, this styrman reads format {FORMAT_VERSION}"),
            ));
        }
        None => return Err(corrupt(path, "it has no styrman format marker".to_string())),
    }
    let revision = get(REVISION_KEY)?.ok_or_else(|| corrupt(path, "no revision recorded".into()))?;
    let compacted = get(COMPACTED_KEY)?.unwrap_or(0);
    txn.open_table(OBJECTS)
        .map_err(|e| corrupt(path, format!("no object table ({e})")))?;
    txn.open_table(LOG)
        .map_err(|e| corrupt(path, format!("no revision log ({e})")))?;
    Ok((revision, compacted))
}

fn corrupt(path: &Path, reason: String) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    }
}

pub(crate) fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Internal(format!("embedded store: {}", e.into()))
}

/// The value of the log entry at `revision`, decoded, as the key stood after that write.
fn load(log: &impl ReadableTable<i64, &'static [u8]>, revision: Revision) -> Result<KeyValue> {
    let guard = log
        .get(revision)
        .map_err(db_err)?
        .ok_or_else(|| StoreError::Internal(format!("revision log has no entry {revision}")))?;
    let entry = LogEntry::decode(guard.value())
        .ok_or_else(|| StoreError::Internal(format!("revision log entry {revision} is damaged")))?;
    Ok(entry.key_value(revision))
}

/// `prev` of an entry: the value its key had before, if it existed.
fn load_prev(log: &impl ReadableTable<i64, &'static [u8]>, prev: Revision) -> Result<Option<KeyValue>> {
    if prev == 0 { Ok(None) } else { load(log, prev).map(Some) }
}

impl Shared {
    fn check_revision(&self, requested: Revision, current: Revision, compacted: Revision) -> Result<()> {
        if requested < compacted {
            return Err(StoreError::Compacted { requested, compacted });
        }
        if requested > current {
            return Err(StoreError::FutureRevision { requested, current });
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let objects = txn.open_table(OBJECTS).map_err(db_err)?;
        let Some(mod_revision) = objects.get(key).map_err(db_err)?.map(|g| g.value().1) else {
            return Ok(None);
        };
        let log = txn.open_table(LOG).map_err(db_err)?;
        load(&log, mod_revision).map(Some)
    }

    fn range(&self, request: &RangeRequest) -> Result<RangeResponse> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        let meta_value = |k: &str| -> Result<i64> { Ok(meta.get(k).map_err(db_err)?.map(|g| g.value()).unwrap_or(0)) };
        let current = meta_value(REVISION_KEY)?;
        let compacted = meta_value(COMPACTED_KEY)?;
        let at = request.revision.filter(|&r| r > 0).unwrap_or(current);
        self.check_revision(at, current, compacted)?;

        let start = match &request.start {
            Some(s) if s.as_str() > request.prefix.as_str() => s.as_str(),
            _ => request.prefix.as_str(),
        };
        let in_range = |k: &str| k >= start && k.starts_with(&request.prefix);
        let objects = txn.open_table(OBJECTS).map_err(db_err)?;
        let log = txn.open_table(LOG).map_err(db_err)?;

        // Keys written after `at`: the mod revision each had at `at` (0 = absent), taken from the
        // first later entry of each key.
        let mut rewound = std::collections::BTreeMap::<String, Revision>::new();
        if at < current {
            for item in log.range(at + 1..=current).map_err(db_err)? {
                let (rev, bytes) = item.map_err(db_err)?;
                let entry = LogEntry::decode(bytes.value())
                    .ok_or_else(|| StoreError::Internal(format!("revision log entry {} is damaged", rev.value())))?;
                if in_range(entry.key) {
                    rewound.entry(entry.key.to_string()).or_insert(entry.prev_mod_revision);
                }
            }
        }

        // Merge the newest state with the rewound keys, in key order; a mod revision of 0 is a
        // key that did not exist at `at`.
        let mut page = Page::new(request.limit);
        let mut rewound = rewound.into_iter().peekable();
        'scan: for item in objects.range::<&str>(start..).map_err(db_err)? {
            let (key, revs) = item.map_err(db_err)?;
            let key = key.value();
            if !key.starts_with(&request.prefix) {
                break;
            }
            // Keys that exist only at `at` (deleted since) and sort before this one.
            while let Some((_, prev)) = rewound.next_if(|(rk, _)| rk.as_str() < key) {
                if !page.push(&log, prev)? {
                    break 'scan;
                }
            }
            let mod_revision = match rewound.next_if(|(rk, _)| rk.as_str() == key) {
                Some((_, prev)) => prev,
                None => revs.value().1,
            };
            if !page.push(&log, mod_revision)? {
                break 'scan;
            }
        }
        if !page.more {
            for (_, prev) in rewound {
                if !page.push(&log, prev)? {
                    break;
                }
            }
        }
        let Page { kvs, more, .. } = page;
        Ok(RangeResponse {
            kvs,
            more,
            revision: at,
        })
    }
}

/// One page of a range being filled.
struct Page {
    kvs: Vec<KeyValue>,
    limit: usize,
    more: bool,
}

impl Page {
    fn new(limit: usize) -> Page {
        Page {
            kvs: Vec::new(),
            limit: if limit == 0 { usize::MAX } else { limit },
            more: false,
        }
    }

    /// Adds the key whose value is at `mod_revision` (0: absent, skipped). False once full.
    fn push(&mut self, log: &impl ReadableTable<i64, &'static [u8]>, mod_revision: Revision) -> Result<bool> {
        if mod_revision == 0 {
            return Ok(true);
        }
        if self.kvs.len() == self.limit {
            self.more = true;
            return Ok(false);
        }
        self.kvs.push(load(log, mod_revision)?);
        Ok(true)
    }
}

#[async_trait]
impl Backend for EmbeddedStore {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.read(move |s| s.get(&key)).await
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.read(move |s| s.range(&request)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let outcome = self
            .write(WriteOp::Create {
                key: key.to_string(),
                value,
            })
            .await?;
        Ok(outcome.revision)
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let outcome = self
            .write(WriteOp::Update {
                key: key.to_string(),
                value,
                expected,
            })
            .await?;
        Ok(outcome.revision)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<DeleteResponse> {
        let outcome = self
            .write(WriteOp::Delete {
                key: key.to_string(),
                expected,
            })
            .await?;
        let prev = outcome
            .prev
            .ok_or_else(|| StoreError::Internal("a deletion lost its previous value".into()))?;
        Ok(DeleteResponse {
            revision: outcome.revision,
            prev,
        })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        feed::watch(self.shared.clone(), self.feed.subscribe(), prefix.to_string(), after)
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.revision.load(Ordering::Acquire))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.write(WriteOp::Compact { revision }).await.map(|_| ())
    }
}
