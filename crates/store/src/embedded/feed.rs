//! Watches on the embedded store.
//!
//! Each watch is a task that first replays the revision log after the requested revision, then
//! follows the live feed the writer broadcasts after every commit. The live feed is a bounded
//! ring: a watcher that falls behind it (its consumer stopped reading, or the machine is busy)
//! is told it lagged and goes back to the log, which holds everything since the compaction
//! horizon. So no event is lost or repeated, and a slow consumer costs a bounded amount of memory.

use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;

use super::codec::LogEntry;
use super::{COMPACTED_KEY, Committed, LOG, META, REVISION_KEY, Shared, db_err, load_prev};
use crate::{Event, EventBatch, Result, Revision, StoreError, WatchStream};
use redb::ReadableDatabase;

/// Log entries read per blocking call while catching up.
const CATCH_UP_CHUNK: usize = 1024;

pub(crate) fn watch(
    shared: Arc<Shared>,
    live: broadcast::Receiver<Arc<Committed>>,
    prefix: String,
    after: Revision,
) -> Result<WatchStream> {
    if after < 0 {
        return Err(StoreError::Invalid(format!("cannot watch after negative revision {after}")));
    }
    let compacted = shared.compacted.load(std::sync::atomic::Ordering::Acquire);
    if after + 1 < compacted {
        return Err(StoreError::Compacted { requested: after, compacted });
    }
    // `live` was subscribed before the log is read, so nothing committed in between is missed.
    let (tx, stream) = WatchStream::channel();
    tokio::spawn(Follower { shared, prefix, last: after, tx, live }.run());
    Ok(stream)
}

/// Why a watch task ends.
enum Stop {
    /// The consumer dropped its stream.
    Closed,
    Failed(StoreError),
}

type Step = std::result::Result<(), Stop>;

struct Follower {
    shared: Arc<Shared>,
    prefix: String,
    /// The newest revision delivered (or known not to concern this watch).
    last: Revision,
    tx: mpsc::Sender<Result<EventBatch>>,
    live: broadcast::Receiver<Arc<Committed>>,
}

impl Follower {
    async fn run(mut self) {
        let mut step = self.catch_up().await;
        while step.is_ok() {
            let next = tokio::select! {
                _ = self.tx.closed() => return,
                next = self.live.recv() => next,
            };
            step = match next {
                Ok(batch) => self.forward(&batch).await,
                Err(RecvError::Lagged(_)) => self.catch_up().await,
                Err(RecvError::Closed) => return,
            };
        }
        if let Err(Stop::Failed(e)) = step {
            let _ = self.tx.send(Err(e)).await;
        }
    }

    async fn send(&self, events: EventBatch) -> Step {
        self.tx.send(Ok(events)).await.map_err(|_| Stop::Closed)
    }

    async fn forward(&mut self, batch: &Committed) -> Step {
        if batch.last <= self.last {
            return Ok(());
        }
        if batch.first > self.last + 1 {
            // Batches in between were missed (subscribed mid-way): the log has them.
            return self.catch_up().await;
        }
        let wanted = |e: &Event| e.revision() > self.last && e.kv.key.starts_with(&self.prefix);
        let matching = batch.events.iter().filter(|e| wanted(e)).count();
        let events: Option<EventBatch> = if matching == batch.events.len() {
            Some(batch.events.clone())
        } else if matching > 0 {
            Some(batch.events.iter().filter(|e| wanted(e)).cloned().collect())
        } else {
            None
        };
        self.last = batch.last;
        match events {
            Some(events) => self.send(events).await,
            None => Ok(()),
        }
    }

    /// Replays the log from `last` up to the newest committed revision.
    async fn catch_up(&mut self) -> Step {
        loop {
            let shared = self.shared.clone();
            let prefix = self.prefix.clone();
            let after = self.last;
            let chunk = tokio::task::spawn_blocking(move || read_log(&shared, &prefix, after))
                .await
                .map_err(|e| Stop::Failed(StoreError::Internal(format!("watch task failed: {e}"))))?
                .map_err(Stop::Failed)?;
            self.last = chunk.reached;
            if !chunk.events.is_empty() {
                self.send(chunk.events.into()).await?;
            }
            if chunk.caught_up {
                return Ok(());
            }
        }
    }
}

struct Chunk {
    events: Vec<Event>,
    /// Every revision up to this one has been read.
    reached: Revision,
    /// `reached` is the newest revision of the snapshot read.
    caught_up: bool,
}

fn read_log(shared: &Shared, prefix: &str, after: Revision) -> Result<Chunk> {
    let txn = shared.db.begin_read().map_err(db_err)?;
    let meta = txn.open_table(META).map_err(db_err)?;
    let meta_value = |k: &str| -> Result<i64> { Ok(meta.get(k).map_err(db_err)?.map(|g| g.value()).unwrap_or(0)) };
    let current = meta_value(REVISION_KEY)?;
    let compacted = meta_value(COMPACTED_KEY)?;
    if after + 1 < compacted {
        return Err(StoreError::Compacted { requested: after, compacted });
    }
    let log = txn.open_table(LOG).map_err(db_err)?;
    let mut events = Vec::new();
    let mut reached = after;
    let mut scanned = 0;
    for item in log.range(after + 1..=current).map_err(db_err)? {
        let (rev, bytes) = item.map_err(db_err)?;
        let rev = rev.value();
        let entry = LogEntry::decode(bytes.value())
            .ok_or_else(|| StoreError::Internal(format!("revision log entry {rev} is damaged")))?;
        if entry.key.starts_with(prefix) {
            events.push(entry.event(rev, load_prev(&log, entry.prev_mod_revision)?));
        }
        reached = rev;
        scanned += 1;
        if scanned == CATCH_UP_CHUNK {
            break;
        }
    }
    let caught_up = scanned < CATCH_UP_CHUNK || reached == current;
    Ok(Chunk { events, reached: if caught_up { current } else { reached }, caught_up })
}
