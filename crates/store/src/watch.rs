use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};

use crate::{Event, Result};

/// Events that committed together (one write batch, or one etcd watch response), in revision
/// order. Shared, not copied, between the watchers that see the whole batch.
pub type EventBatch = Arc<[Event]>;

/// The changes a watch delivers, as a [`futures::Stream`] of batches. An `Err` item is the last
/// one (for example [`crate::StoreError::Compacted`] when history the watch still needed was
/// compacted meanwhile). Dropping the stream cancels the watch.
pub struct WatchStream {
    inner: BoxStream<'static, Result<EventBatch>>,
}

impl WatchStream {
    /// Wraps a backend's stream, ending it after its first error.
    pub(crate) fn new(stream: impl Stream<Item = Result<EventBatch>> + Send + 'static) -> WatchStream {
        WatchStream::from_stream(stream)
    }

    /// A watch made of any stream of batches (a cache in front of the store, say), ending after
    /// its first error.
    pub fn from_stream(stream: impl Stream<Item = Result<EventBatch>> + Send + 'static) -> WatchStream {
        let mut failed = false;
        let inner = stream
            .take_while(move |item| {
                let go_on = !failed;
                failed = item.is_err();
                std::future::ready(go_on)
            })
            .boxed();
        WatchStream { inner }
    }

    /// The next batch, or `None` once the watch has ended.
    pub async fn next_batch(&mut self) -> Option<Result<EventBatch>> {
        self.inner.next().await
    }
}

impl Stream for WatchStream {
    type Item = Result<EventBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}
