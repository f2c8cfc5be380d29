//! The single writer: group commit.
//!
//! redb allows one write transaction at a time and each durable commit costs an fsync, so one
//! thread takes every request waiting in its queue, applies them in order in one transaction,
//! commits once, and only then answers them all. Requests that fail their precondition
//! (exists / not found / revision mismatch) take no revision and do not hold up the others.
//! After a commit the batch's events go to the live watch feed before any caller is answered, so
//! a client that saw its write acknowledged can count on every watcher receiving it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use redb::{ReadableTable, Table, WriteTransaction};
use std::thread::JoinHandle;

use tokio::sync::{broadcast, mpsc, oneshot};

use super::codec::LogEntry;
use super::{COMPACTED_KEY, Committed, LOG, META, OBJECTS, REVISION_KEY, Shared, db_err, load};
use crate::{Event, EventKind, KeyValue, Result, Revision, StoreError};

/// Most requests one transaction takes; bounds the latency a batch adds to its first request.
const MAX_BATCH: usize = 4096;
/// How long, and how many times at most, the writer waits for more requests to join a batch.
const LINGER: std::time::Duration = std::time::Duration::from_micros(40);
const LINGER_ROUNDS: usize = 4;
/// Queue length before `send` waits: backpressure on writers when the disk falls behind.
const QUEUE: usize = 8192;

pub(crate) enum WriteOp {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

pub(crate) struct Request {
    pub op: WriteOp,
    pub reply: oneshot::Sender<Result<WriteOutcome>>,
}

pub(crate) struct WriteOutcome {
    pub revision: Revision,
    /// For a deletion, the deleted value.
    pub prev: Option<KeyValue>,
}

/// The live feed of committed batches, for watches.
type Feed = broadcast::Sender<Arc<Committed>>;

pub(crate) fn spawn(shared: Arc<Shared>, feed: Feed) -> Result<(mpsc::Sender<Request>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let handle = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || run(shared, feed, rx))
        .map_err(|e| StoreError::Internal(format!("cannot start the store writer: {e}")))?;
    Ok((tx, handle))
}

fn run(shared: Arc<Shared>, feed: Feed, mut rx: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        drain(&mut rx, &mut batch);
        // Several writers are active: linger while their requests keep arriving. The fsync
        // costs about the same for 30 writes as for 60, so a short wait that fills the batch
        // buys throughput; a lone writer never waits.
        let mut lingered = 0;
        while batch.len() > 1 && batch.len() < MAX_BATCH && lingered < LINGER_ROUNDS {
            let before = batch.len();
            std::thread::sleep(LINGER);
            drain(&mut rx, &mut batch);
            if batch.len() == before {
                break;
            }
            lingered += 1;
        }
        commit_batch(&shared, &feed, &mut batch);
    }
    tracing::debug!("store writer stopped: every handle was dropped");
}

fn drain(rx: &mut mpsc::Receiver<Request>, batch: &mut Vec<Request>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
}

fn commit_batch(shared: &Shared, feed: &Feed, batch: &mut Vec<Request>) {
    let start = shared.revision.load(Ordering::Acquire);
    let mut results: Vec<Result<WriteOutcome>> = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    let applied = (|| -> Result<(WriteTransaction, Revision)> {
        let txn = shared.db.begin_write().map_err(db_err)?;
        let mut revision = start;
        {
            let mut tables = Tables {
                meta: txn.open_table(META).map_err(db_err)?,
                objects: txn.open_table(OBJECTS).map_err(db_err)?,
                log: txn.open_table(LOG).map_err(db_err)?,
                buffer: Vec::new(),
            };
            for request in batch.iter() {
                let result = tables.apply(&request.op, &mut revision, &mut events);
                results.push(result);
            }
            if revision != start {
                tables.meta.insert(REVISION_KEY, revision).map_err(db_err)?;
            }
        }
        Ok((txn, revision))
    })();

    let outcome = applied.and_then(|(txn, revision)| {
        if revision == start && !results.iter().any(|r| r.is_ok()) {
            // Nothing to make durable: every request failed its precondition.
            txn.abort().map_err(db_err)?;
        } else {
            txn.commit().map_err(db_err)?;
        }
        Ok(revision)
    });

    match outcome {
        Ok(revision) => {
            shared.revision.store(revision, Ordering::Release);
            for (request, result) in batch.iter().zip(&results) {
                if let (WriteOp::Compact { revision: to }, Ok(_)) = (&request.op, result) {
                    shared.compacted.fetch_max(*to, Ordering::AcqRel);
                }
            }
            if !events.is_empty() {
                let committed = Committed::new(start + 1, revision, events.into());
                // No receiver is fine: nobody is watching.
                let _ = feed.send(Arc::new(committed));
            }
            for (request, result) in batch.drain(..).zip(results) {
                let _ = request.reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "store commit failed; the batch is rejected");
            for request in batch.drain(..) {
                let _ = request
                    .reply
                    .send(Err(StoreError::Internal(format!("commit failed: {e}"))));
            }
        }
    }
}

struct Tables<'txn> {
    meta: Table<'txn, &'static str, i64>,
    objects: Table<'txn, &'static str, (i64, i64)>,
    log: Table<'txn, i64, &'static [u8]>,
    /// Reused for encoding log entries.
    buffer: Vec<u8>,
}

impl Tables<'_> {
    fn apply(&mut self, op: &WriteOp, revision: &mut Revision, events: &mut Vec<Event>) -> Result<WriteOutcome> {
        match op {
            WriteOp::Create { key, value } => {
                let rev = *revision + 1;
                // Insert first and look at what was there: one tree walk instead of two in the
                // common case; the rare clash puts the old entry back.
                if let Some(old) = self.swap_object(key, (rev, rev))? {
                    self.objects.insert(key.as_str(), old).map_err(db_err)?;
                    return Err(StoreError::AlreadyExists { key: key.clone() });
                }
                let entry = LogEntry {
                    kind: EventKind::Put,
                    create_revision: rev,
                    prev_mod_revision: 0,
                    key,
                    value,
                };
                self.record(&entry, value.clone(), rev, None, events)?;
                *revision = rev;
                Ok(WriteOutcome {
                    revision: rev,
                    prev: None,
                })
            }
            WriteOp::Update { key, value, expected } => {
                let (create, current) = self.current(key)?;
                if current != *expected {
                    return Err(StoreError::Conflict {
                        key: key.clone(),
                        expected: *expected,
                        current: Box::new(load(&self.log, current)?),
                    });
                }
                let rev = *revision + 1;
                self.objects.insert(key.as_str(), (create, rev)).map_err(db_err)?;
                let prev = load(&self.log, current)?;
                let entry = LogEntry {
                    kind: EventKind::Put,
                    create_revision: create,
                    prev_mod_revision: current,
                    key,
                    value,
                };
                self.record(&entry, value.clone(), rev, Some(prev), events)?;
                *revision = rev;
                Ok(WriteOutcome {
                    revision: rev,
                    prev: None,
                })
            }
            WriteOp::Delete { key, expected } => {
                let (create, current) = self.current(key)?;
                let prev = load(&self.log, current)?;
                if expected.is_some_and(|e| e != current) {
                    return Err(StoreError::Conflict {
                        key: key.clone(),
                        expected: expected.unwrap_or_default(),
                        current: Box::new(prev),
                    });
                }
                let rev = *revision + 1;
                let entry = LogEntry {
                    kind: EventKind::Delete,
                    create_revision: create,
                    prev_mod_revision: current,
                    key,
                    value: &[],
                };
                self.objects.remove(key.as_str()).map_err(db_err)?;
                self.record(&entry, Bytes::new(), rev, Some(prev.clone()), events)?;
                *revision = rev;
                Ok(WriteOutcome {
                    revision: rev,
                    prev: Some(prev),
                })
            }
            WriteOp::Compact { revision: to } => {
                self.compact(*to, *revision)?;
                Ok(WriteOutcome {
                    revision: *revision,
                    prev: None,
                })
            }
        }
    }

    /// (create revision, mod revision) of a live key.
    fn current(&self, key: &str) -> Result<(Revision, Revision)> {
        self.objects
            .get(key)
            .map_err(db_err)?
            .map(|g| g.value())
            .ok_or_else(|| StoreError::NotFound { key: key.to_string() })
    }

    /// Sets a key's (create, mod) revisions, returning what it had.
    fn swap_object(&mut self, key: &str, revs: (Revision, Revision)) -> Result<Option<(Revision, Revision)>> {
        Ok(self.objects.insert(key, revs).map_err(db_err)?.map(|old| old.value()))
    }

    /// Appends `entry` to the log at `rev` and queues its event for the watches. `value` is
    /// the entry's value as the caller's `Bytes`, shared with the event rather than copied.
    fn record(
        &mut self,
        entry: &LogEntry<'_>,
        value: Bytes,
        rev: Revision,
        prev: Option<KeyValue>,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        self.buffer.clear();
        entry.encode_into(&mut self.buffer);
        self.log.insert(rev, self.buffer.as_slice()).map_err(db_err)?;
        let kv = KeyValue {
            key: entry.key.to_string(),
            value,
            create_revision: entry.create_revision,
            mod_revision: rev,
        };
        events.push(Event {
            kind: entry.kind,
            kv,
            prev,
        });
        Ok(())
    }

    /// Drops the log entries nothing at or above `to` can need: an entry superseded by a write
    /// below `to`, and a deletion below `to`. The newest entry of each key below `to` stays, as
    /// etcd keeps it: it is the key's value at `to` (a range at `to` reads it) and the `prev` of
    /// the key's next write (a watch from `to` reports it).
    fn compact(&mut self, to: Revision, current: Revision) -> Result<()> {
        let from = self
            .meta
            .get(COMPACTED_KEY)
            .map_err(db_err)?
            .map(|g| g.value())
            .unwrap_or(0);
        if to <= from {
            return Err(StoreError::Compacted {
                requested: to,
                compacted: from,
            });
        }
        if to > current {
            return Err(StoreError::FutureRevision { requested: to, current });
        }
        let mut doomed = Vec::new();
        for item in self.log.range(from.max(1)..to).map_err(db_err)? {
            let (rev, bytes) = item.map_err(db_err)?;
            let Some(entry) = LogEntry::decode(bytes.value()) else {
                return Err(StoreError::Internal(format!(
                    "revision log entry {} is damaged",
                    rev.value()
                )));
            };
            if entry.prev_mod_revision != 0 {
                doomed.push(entry.prev_mod_revision);
            }
            if entry.kind == EventKind::Delete {
                doomed.push(rev.value());
            }
        }
        for rev in &doomed {
            self.log.remove(*rev).map_err(db_err)?;
        }
        self.meta.insert(COMPACTED_KEY, to).map_err(db_err)?;
        tracing::debug!(from, to, removed = doomed.len(), "compacted the revision log");
        Ok(())
    }
}
