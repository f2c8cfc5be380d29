//! The etcd backend: a real etcd v3 cluster (3.4 or newer) through `etcd-client`.
//!
//! Every operation maps onto one etcd request, the way kube-apiserver's etcd3 storage does it:
//! create is a transaction guarded by `create_revision == 0`, update and delete are guarded by
//! `mod_revision == expected` and read the current value in the else branch, so a lost
//! compare-and-swap costs one round trip. etcd's revisions are used unchanged.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tonic::Code;

use crate::{
    Backend, DeleteResponse, Event, EventBatch, EventKind, KeyValue, RangeRequest, RangeResponse, Result, Revision,
    StoreError, WatchStream, keys,
};

/// How long one request may take before it fails as [`StoreError::Unavailable`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub struct EtcdStore {
    client: Client,
    endpoints: Arc<[String]>,
}

impl EtcdStore {
    /// One attempt to reach the cluster: connects and asks for the current revision, so an
    /// unreachable cluster fails here with [`StoreError::Unavailable`] naming the endpoints.
    pub async fn connect(endpoints: &[String]) -> Result<EtcdStore> {
        if endpoints.is_empty() {
            return Err(StoreError::Invalid("no etcd endpoints given".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let unavailable =
            |e: etcd_client::Error| StoreError::Unavailable(format!("etcd at {}: {e}", endpoints.join(",")));
        let client = Client::connect(endpoints, Some(options)).await.map_err(unavailable)?;
        let store = EtcdStore {
            client,
            endpoints: endpoints.into(),
        };
        store.current_revision().await?;
        Ok(store)
    }

    /// Connects, retrying with backoff (up to 5 s between attempts) for as long as the cluster is
    /// unreachable; each failure is logged with its reason. Other errors end the wait.
    pub async fn connect_with_retry(endpoints: &[String]) -> Result<EtcdStore> {
        let mut delay = Duration::from_millis(200);
        loop {
            match EtcdStore::connect(endpoints).await {
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot reach etcd; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }

    fn map_err(&self, e: etcd_client::Error) -> StoreError {
        map_error(&self.endpoints, e)
    }

    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse> {
        self.client.kv_client().txn(txn).await.map_err(|e| self.map_err(e))
    }

    async fn get_current(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut kv = self.client.kv_client();
        let mut resp = kv.get(key, None).await.map_err(|e| self.map_err(e))?;
        resp.take_kvs().into_iter().next().map(convert_kv).transpose()
    }
}

fn map_error(endpoints: &[String], e: etcd_client::Error) -> StoreError {
    match &e {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            if message.contains("required revision has been compacted") {
                // etcd does not say which revision is the horizon in this error.
                return StoreError::Compacted {
                    requested: 0,
                    compacted: 0,
                };
            }
            if message.contains("required revision is a future revision") {
                return StoreError::FutureRevision {
                    requested: 0,
                    current: 0,
                };
            }
            match status.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                    StoreError::Unavailable(format!("etcd at {}: {message}", endpoints.join(",")))
                }
                Code::InvalidArgument => StoreError::Invalid(format!("etcd: {message}")),
                _ => StoreError::Internal(format!("etcd: {e}")),
            }
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            StoreError::Unavailable(format!("etcd at {}: {e}", endpoints.join(",")))
        }
        _ => StoreError::Internal(format!("etcd: {e}")),
    }
}

fn convert_kv(kv: etcd_client::KeyValue) -> Result<KeyValue> {
    let (create_revision, mod_revision) = (kv.create_revision(), kv.mod_revision());
    let (key, value) = kv.into_key_value();
    let key = String::from_utf8(key).map_err(|_| StoreError::Internal("etcd returned a non-UTF-8 key".into()))?;
    Ok(KeyValue {
        key,
        value: Bytes::from(value),
        create_revision,
        mod_revision,
    })
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Internal("etcd response without a header".into()))
}

/// The current value read in a failed transaction's else branch.
fn else_value(responses: Vec<TxnOpResponse>) -> Result<Option<KeyValue>> {
    for response in responses {
        if let TxnOpResponse::Get(mut get) = response {
            return get.take_kvs().into_iter().next().map(convert_kv).transpose();
        }
    }
    Ok(None)
}

#[async_trait]
impl Backend for EtcdStore {
    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.get_current(key).await
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        let start = match &request.start {
            Some(s) if s.as_str() > request.prefix.as_str() => s.clone(),
            _ => request.prefix.clone(),
        };
        let mut options = GetOptions::new().with_limit(request.limit as i64);
        options = match keys::prefix_end(&request.prefix) {
            Some(end) => options.with_range(end),
            None => options.with_from_key(),
        };
        if let Some(revision) = request.revision.filter(|&r| r > 0) {
            options = options.with_revision(revision);
        }
        let mut kv = self.client.kv_client();
        let mut resp = kv.get(start, Some(options)).await.map_err(|e| match self.map_err(e) {
            StoreError::Compacted { .. } => StoreError::Compacted {
                requested: request.revision.unwrap_or_default(),
                compacted: 0,
            },
            StoreError::FutureRevision { .. } => StoreError::FutureRevision {
                requested: request.revision.unwrap_or_default(),
                current: 0,
            },
            other => other,
        })?;
        let revision = match request.revision.filter(|&r| r > 0) {
            Some(r) => r,
            None => header_revision(resp.header())?,
        };
        let more = resp.more();
        let kvs = resp
            .take_kvs()
            .into_iter()
            .map(convert_kv)
            .collect::<Result<Vec<_>>>()?;
        Ok(RangeResponse { kvs, more, revision })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists { key: key.to_string() });
        }
        header_revision(resp.header())
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn).await?;
        if resp.succeeded() && expected > 0 {
            return header_revision(resp.header());
        }
        match else_value(resp.op_responses())? {
            Some(current) => Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                current: Box::new(current),
            }),
            None => Err(StoreError::NotFound { key: key.to_string() }),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<DeleteResponse> {
        let guard = match expected {
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
            None => Compare::create_revision(key, CompareOp::Greater, 0),
        };
        let txn = Txn::new()
            .when([guard])
            .and_then([TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()))])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn).await?;
        let revision = header_revision(resp.header())?;
        if resp.succeeded() {
            for op in resp.op_responses() {
                if let TxnOpResponse::Delete(mut deleted) = op
                    && let Some(prev) = deleted.take_prev_kvs().into_iter().next()
                {
                    return Ok(DeleteResponse {
                        revision,
                        prev: convert_kv(prev)?,
                    });
                }
            }
            // The guard held, so the key existed; a missing prev_kv means etcd lost it.
            return Err(StoreError::Internal(format!(
                "etcd deleted {key:?} without returning it"
            )));
        }
        match else_value(resp.op_responses())? {
            Some(current) => Err(StoreError::Conflict {
                key: key.to_string(),
                expected: expected.unwrap_or_default(),
                current: Box::new(current),
            }),
            None => Err(StoreError::NotFound { key: key.to_string() }),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        if after < 0 {
            return Err(StoreError::Invalid(format!(
                "cannot watch after negative revision {after}"
            )));
        }
        let mut options = WatchOptions::new()
            .with_start_revision(after + 1)
            .with_prev_key()
            .with_progress_notify();
        options = match keys::prefix_end(prefix) {
            Some(end) => options.with_range(end),
            None => options.with_from_key(),
        };
        // etcd accepts a watch below its compaction horizon and cancels it a moment later; ask
        // first, so that the common case fails at the call as it does on the embedded store.
        let probe = GetOptions::new().with_count_only().with_revision(after + 1);
        match self
            .client
            .kv_client()
            .get(prefix, Some(probe))
            .await
            .map_err(|e| self.map_err(e))
        {
            Err(StoreError::Compacted { .. }) => {
                return Err(StoreError::Compacted {
                    requested: after,
                    compacted: 0,
                });
            }
            Ok(_) | Err(StoreError::FutureRevision { .. }) => {}
            Err(other) => return Err(other),
        }
        let mut client = self.client.watch_client();
        let mut etcd_stream = client.watch(prefix, Some(options)).await.map_err(|e| self.map_err(e))?;
        // The first response says whether the watch was created or refused (compacted).
        let first = etcd_stream.message().await.map_err(|e| self.map_err(e))?;
        let first = first.ok_or_else(|| StoreError::Unavailable("etcd closed the watch stream".into()))?;
        if first.canceled() {
            return Err(watch_canceled(&first, after));
        }
        let endpoints = self.endpoints.clone();
        // The etcd stream stays in the state: dropping the WatchStream drops it, which cancels
        // the watch on the server.
        let state = (etcd_stream, Some(first));
        let stream = futures::stream::unfold(state, move |(mut etcd_stream, mut pending)| {
            let endpoints = endpoints.clone();
            async move {
                loop {
                    let response = match pending.take() {
                        Some(r) => Ok(Some(r)),
                        None => etcd_stream.message().await,
                    };
                    let item: Result<EventBatch> = match response {
                        Ok(Some(r)) if r.canceled() => Err(watch_canceled(&r, after)),
                        // Progress notifications and the creation answer carry no events.
                        Ok(Some(r)) if r.events().is_empty() => continue,
                        Ok(Some(r)) => r
                            .events()
                            .iter()
                            .map(convert_event)
                            .collect::<Result<Vec<_>>>()
                            .map(Into::into),
                        Ok(None) => Err(StoreError::Unavailable("etcd closed the watch stream".into())),
                        Err(e) => Err(map_error(&endpoints, e)),
                    };
                    return Some((item, (etcd_stream, None)));
                }
            }
        });
        Ok(WatchStream::new(stream))
    }

    async fn current_revision(&self) -> Result<Revision> {
        let mut kv = self.client.kv_client();
        let resp = kv
            .get(keys::REGISTRY, Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| self.map_err(e))?;
        header_revision(resp.header())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut client = self.client.clone();
        client
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
            .map_err(|e| match self.map_err(e) {
                StoreError::Compacted { .. } => StoreError::Compacted {
                    requested: revision,
                    compacted: 0,
                },
                StoreError::FutureRevision { .. } => StoreError::FutureRevision {
                    requested: revision,
                    current: 0,
                },
                other => other,
            })?;
        Ok(())
    }
}

fn watch_canceled(response: &etcd_client::WatchResponse, after: Revision) -> StoreError {
    if response.compact_revision() > 0 {
        StoreError::Compacted {
            requested: after,
            compacted: response.compact_revision(),
        }
    } else {
        StoreError::Unavailable(format!("etcd canceled the watch: {}", response.cancel_reason()))
    }
}

fn convert_event(event: &etcd_client::Event) -> Result<Event> {
    let kv = event
        .kv()
        .ok_or_else(|| StoreError::Internal("etcd watch event without a key".into()))?;
    let prev = event.prev_kv().cloned().map(convert_kv).transpose()?;
    let kind = match event.event_type() {
        EventType::Put => EventKind::Put,
        EventType::Delete => EventKind::Delete,
    };
    let mut kv = convert_kv(kv.clone())?;
    if kind == EventKind::Delete {
        // etcd reports a deletion's create revision as 0; keep the key's, as the embedded store does.
        kv.create_revision = prev.as_ref().map_or(0, |p| p.create_revision);
    }
    Ok(Event { kind, kv, prev })
}
