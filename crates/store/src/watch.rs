use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::{Event, Result};

/// Events that committed together (one write batch, or one etcd watch response), in revision
/// order. Shared, not copied, between the watchers that see the whole batch.
pub type EventBatch = Arc<[Event]>;

/// How many batches a watch buffers for a consumer before the producer waits. A consumer that
/// stops reading holds at most this much; the embedded backend then drops its live feed and
/// catches up from the revision log once the consumer reads again.
pub(crate) const WATCH_BUFFER: usize = 64;

/// The changes a watch delivers, as a [`futures::Stream`] of batches. An `Err` item ends the
/// stream (for example [`crate::StoreError::Compacted`] when a consumer fell behind history that
/// was compacted meanwhile). Dropping the stream cancels the watch.
pub struct WatchStream {
    rx: mpsc::Receiver<Result<EventBatch>>,
}

impl WatchStream {
    /// A stream fed by a producer task through the returned sender.
    pub(crate) fn channel() -> (mpsc::Sender<Result<EventBatch>>, WatchStream) {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        (tx, WatchStream { rx })
    }

    /// The next batch, or `None` once the watch has ended.
    pub async fn next_batch(&mut self) -> Option<Result<EventBatch>> {
        self.rx.recv().await
    }
}

impl futures::Stream for WatchStream {
    type Item = Result<EventBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
