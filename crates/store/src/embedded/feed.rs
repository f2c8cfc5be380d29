//! Watches on the embedded store.
//!
//! A watch first replays the revision log after the requested revision, then follows the live
//! feed the writer broadcasts after every commit. The live feed is a bounded ring shared by all
//! watches: one that falls behind it (its consumer stopped reading, or the machine is busy) is
//! told it lagged and goes back to the log, which holds everything since the compaction horizon.
//! So no event is lost or repeated, and a slow consumer costs no memory beyond the ring. A watch
//! is a plain stream polled by its consumer, not a task of its own: one wake-up per batch.

use std::sync::Arc;

use redb::ReadableDatabase;
use tokio::sync::broadcast::{self, error::RecvError};

use super::codec::LogEntry;
use super::{COMPACTED_KEY, Committed, LOG, META, REVISION_KEY, Shared, db_err, load_prev};
use crate::{Event, EventBatch, Result, Revision, StoreError, WatchStream};

/// Log entries read per blocking call while catching up.
const CATCH_UP_CHUNK: usize = 1024;

pub(crate) fn watch(
    shared: Arc<Shared>,
    live: broadcast::Receiver<Arc<Committed>>,
    prefix: String,
    after: Revision,
) -> Result<WatchStream> {
    if after < 0 {
        return Err(StoreError::Invalid(format!(
            "cannot watch after negative revision {after}"
        )));
    }
    let compacted = shared.compacted.load(std::sync::atomic::Ordering::Acquire);
    if after + 1 < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
    }
    // `live` was subscribed before the log is read, so nothing committed in between is missed.
    let follower = Follower {
        shared,
        prefix,
        last: after,
        live,
        behind: true,
    };
    Ok(WatchStream::new(futures::stream::unfold(
        follower,
        |mut f| async move {
            let item = f.next().await?;
            Some((item, f))
        },
    )))
}

struct Follower {
    shared: Arc<Shared>,
    prefix: String,
    /// The newest revision delivered (or known not to concern this watch).
    last: Revision,
    live: broadcast::Receiver<Arc<Committed>>,
    /// The log holds revisions after `last` that the live feed will not deliver.
    behind: bool,
}

impl Follower {
    /// The next non-empty batch; `None` when the store has closed.
    async fn next(&mut self) -> Option<Result<EventBatch>> {
        loop {
            if self.behind {
                let chunk = match self.read_log_chunk().await {
                    Ok(chunk) => chunk,
                    Err(e) => return Some(Err(e)),
                };
                self.last = chunk.reached;
                self.behind = !chunk.caught_up;
                if !chunk.events.is_empty() {
                    return Some(Ok(chunk.events.into()));
                }
                continue;
            }
            match self.live.recv().await {
                Ok(batch) => {
                    if let Some(events) = self.take(&batch) {
                        return Some(Ok(events));
                    }
                }
                Err(RecvError::Lagged(_)) => self.behind = true,
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// This watch's part of a live batch, if any.
    fn take(&mut self, batch: &Committed) -> Option<EventBatch> {
        if batch.last <= self.last {
            return None;
        }
        if batch.first > self.last + 1 {
            // Batches in between were missed (subscribed mid-way): the log has them.
            self.behind = true;
            return None;
        }
        if batch.first > self.last && batch.common_prefix.starts_with(&self.prefix) {
            self.last = batch.last;
            return Some(batch.events.clone());
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
        events
    }

    async fn read_log_chunk(&self) -> Result<Chunk> {
        let shared = self.shared.clone();
        let prefix = self.prefix.clone();
        let after = self.last;
        tokio::task::spawn_blocking(move || read_log(&shared, &prefix, after))
            .await
            .map_err(|e| StoreError::Internal(format!("watch read failed: {e}")))?
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
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
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
    Ok(Chunk {
        events,
        reached: if caught_up { current } else { reached },
        caught_up,
    })
}
