//! The generic REST storage: get, list, watch, create, update, patch and delete for every kind,
//! on objects held as JSON, as kube-apiserver's generic registry does. What differs per kind
//! (defaults, status handling, generation) lives in [`crate::strategy`].

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use styrman_store::{EventKind, KeyValue, RangeRequest, Revision, Store, StoreError, keys};
use tokio::sync::mpsc;

use crate::conversion;
use crate::kinds::{self, Kind};
use crate::object::{self, meta_str, metadata_mut};
use crate::request::{Query, ResourceRequest};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};
use crate::strategy;
use crate::table::{self, IncludeObject};

/// How a response should be shaped, from the Accept header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Object,
    Table(IncludeObject),
    /// `as=PartialObjectMetadata` (or `...List`): metadata only.
    Metadata,
}

/// What a handler produced.
pub enum Reply {
    Json(u16, Value),
    Bytes(u16, Vec<u8>),
    /// A watch: newline-delimited JSON events.
    Stream(mpsc::Receiver<Bytes>),
}

/// How long a write without a precondition keeps retrying after losing to concurrent writes
/// (upstream's GuaranteedUpdate retries until the request's own timeout, 60 s).
const RETRY_FOR: Duration = Duration::from_secs(60);
/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);
/// How long a watch waits for a client to take an event before giving up on it.
const STALLED_WATCH: Duration = Duration::from_secs(15);
/// Default and upper bound on a watch's life, as kube-apiserver's `--min-request-timeout`.
const WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Clone)]
pub struct Registry {
    store: Store,
    cache: std::sync::Arc<crate::watchcache::WatchCache>,
    services: std::sync::Arc<crate::services::Allocator>,
    /// Objects decoded for selector watches, shared between them.
    decoded: std::sync::Arc<crate::decoded::Decoded>,
    /// What signs service account tokens (`serviceaccounts/token`).
    tokens: Option<std::sync::Arc<crate::tokens::TokenIssuer>>,
}

/// One request's context.
pub struct Call<'a> {
    pub kind: &'static Kind,
    pub request: &'a ResourceRequest,
    pub query: &'a Query,
    pub shape: Shape,
    /// `fieldManager`, or the client's name from its User-Agent.
    pub manager: String,
    /// What the response's `Warning` headers will say.
    pub warnings: std::sync::Mutex<Vec<String>>,
}

impl Call<'_> {
    /// Drops the fields the kind does not have, as `fieldValidation` says (refusing them when
    /// Strict, warning about them by default).
    fn validate_fields(&self, object: &mut Value, options_kind: &str) -> ApiResult<()> {
        let mode = crate::validation::Mode::from_query(self.query, options_kind)?;
        let unknown = crate::validation::check(self.kind, object, mode)?;
        if mode == crate::validation::Mode::Warn {
            let mut warnings = self.warnings.lock().expect("warnings lock");
            warnings.extend(unknown.into_iter().map(|u| format!("unknown field \"{u}\"")));
        }
        Ok(())
    }

    fn namespace(&self) -> Option<&str> {
        if self.kind.namespaced {
            self.request.namespace.as_deref()
        } else {
            None
        }
    }

    fn name(&self) -> &str {
        self.request.name.as_deref().unwrap_or("")
    }

    fn key(&self, name: &str) -> String {
        keys::object_key(self.kind.storage, self.namespace(), name)
    }

    fn dry_run(&self) -> ApiResult<bool> {
        match self.query.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::invalid_option(
                "CreateOptions",
                "dryRun",
                format!("Unsupported value: \"{other}\": supported values: \"All\""),
            )),
        }
    }
}

impl Registry {
    pub fn new(store: Store) -> Registry {
        Registry {
            cache: std::sync::Arc::new(crate::watchcache::WatchCache::new(store.clone())),
            decoded: std::sync::Arc::default(),
            store,
            services: Default::default(),
            tokens: None,
        }
    }

    /// With service account tokens issued by `issuer`.
    pub fn with_tokens(mut self, issuer: crate::tokens::TokenIssuer) -> Registry {
        self.tokens = Some(std::sync::Arc::new(issuer));
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn read(&self, kind: &Kind, key: &str, name: &str) -> ApiResult<(Value, KeyValue)> {
        let kv = self
            .store
            .get(key)
            .await
            .map_err(|e| ApiError::from_store(e, kind, name))?
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        let object = conversion::decode(kind, &kv.value, kv.mod_revision).map_err(ApiError::internal)?;
        Ok((object, kv))
    }

    /// One stored object of `kind` (for handlers that read what they act on: `pods/log`).
    pub async fn object(&self, kind: &Kind, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        let key = keys::object_key(kind.storage, namespace, name);
        Ok(self.read(kind, &key, name).await?.0)
    }

    pub async fn get(&self, call: &Call<'_>) -> ApiResult<Reply> {
        if crate::component_status::is(call.kind) {
            return self.component_statuses(call).await;
        }
        let (object, _) = self.read(call.kind, &call.key(call.name()), call.name()).await?;
        if call.request.subresource.as_deref() == Some("scale") {
            return Ok(Reply::Json(200, crate::scale::to_scale(&object)));
        }
        Ok(match call.shape {
            Shape::Object => Reply::Json(200, object),
            Shape::Metadata => Reply::Json(200, table::partial_metadata(&object)),
            Shape::Table(include) => Reply::Json(
                200,
                table::table(
                    call.kind,
                    std::slice::from_ref(&object),
                    json!({"resourceVersion": rv(&object)}),
                    include,
                    true,
                ),
            ),
        })
    }

    /// `componentstatuses`: computed on each read, never stored.
    async fn component_statuses(&self, call: &Call<'_>) -> ApiResult<Reply> {
        call.warnings
            .lock()
            .expect("warnings lock")
            .push(crate::component_status::WARNING.to_string());
        let mut items = crate::component_status::all(&self.store).await;
        if let Some(name) = call.request.name.as_deref() {
            items.retain(|i| object::name(i) == name);
            if items.is_empty() {
                return Err(ApiError::not_found(call.kind, name));
            }
        }
        let single = call.request.name.is_some();
        Ok(Reply::Json(
            200,
            match call.shape {
                Shape::Table(include) => table::table(call.kind, &items, json!({}), include, true),
                Shape::Metadata | Shape::Object if single => items.swap_remove(0),
                _ => json!({"kind": "ComponentStatusList", "apiVersion": "v1", "metadata": {}, "items": items}),
            },
        ))
    }

    /// Objects under the call's prefix matching its selectors, one page: (items, list
    /// revision, continue token).
    async fn list_page(&self, call: &Call<'_>) -> ApiResult<(Vec<ListItem>, Revision, Option<String>)> {
        let labels = LabelSelector::parse(call.query.get("labelSelector").unwrap_or(""))?;
        let fields = FieldSelector::parse(call.query.get("fieldSelector").unwrap_or(""), call.kind)?;
        let limit = call.query.number("limit")?.unwrap_or(0) as usize;
        let prefix = keys::prefix(call.kind.storage, call.namespace());
        let (mut start, mut revision) = (None, None);
        if let Some(token) = call.query.get("continue").filter(|t| !t.is_empty()) {
            let (rv, next) = decode_continue(token)?;
            start = Some(next);
            revision = Some(rv);
        } else {
            revision = self.list_revision(call).await?.or(revision);
        }
        let mut items = Vec::new();
        let mut read_at = revision;
        loop {
            // Read ahead of the limit: selectors may drop much of what a page holds.
            let batch = if limit == 0 { 0 } else { (limit - items.len()).max(64) };
            let page = self
                .store
                .range(RangeRequest { prefix: prefix.clone(), start: start.clone(), limit: batch, revision: read_at })
                .await
                .map_err(|e| match e {
                    StoreError::Compacted { .. } if call.query.get("continue").is_some() => ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                    ),
                    other => ApiError::from_store(other, call.kind, ""),
                })?;
            read_at = Some(page.revision);
            let mut last_key = None;
            for kv in page.kvs {
                last_key = Some(kv.key.clone());
                // Objects are decoded only when a selector needs to look inside them.
                let object = if labels.is_empty() && fields.is_empty() {
                    None
                } else {
                    let object =
                        conversion::decode(call.kind, &kv.value, kv.mod_revision).map_err(ApiError::internal)?;
                    if !(labels.matches(&object) && fields.matches(&object)) {
                        continue;
                    }
                    Some(object)
                };
                items.push(ListItem { kv, object });
                if limit > 0 && items.len() == limit {
                    break;
                }
            }
            let full = limit > 0 && items.len() == limit;
            let more_in_store = page.more || (full && last_key.is_some());
            if full || !page.more {
                let token = match (&last_key, more_in_store && full) {
                    (Some(k), true) => {
                        // Is anything left after the last key we looked at?
                        let probe = self
                            .store
                            .range(RangeRequest {
                                prefix: prefix.clone(),
                                start: Some(keys::after(k)),
                                limit: 1,
                                revision: read_at,
                            })
                            .await
                            .map_err(|e| ApiError::from_store(e, call.kind, ""))?;
                        (!probe.kvs.is_empty()).then(|| encode_continue(page.revision, &keys::after(k)))
                    }
                    _ => None,
                };
                return Ok((items, page.revision, token));
            }
            start = last_key.map(|k| keys::after(&k));
        }
    }

    /// The revision a list reads at, from `resourceVersion` and `resourceVersionMatch`.
    async fn list_revision(&self, call: &Call<'_>) -> ApiResult<Option<Revision>> {
        let rv = call.query.get("resourceVersion").filter(|v| !v.is_empty());
        let matching = call.query.get("resourceVersionMatch").filter(|v| !v.is_empty());
        let parsed = rv.map(parse_rv).transpose()?;
        match (parsed, matching) {
            (None, Some(_)) => Err(ApiError::invalid_option(
                "ListOptions",
                "resourceVersionMatch",
                "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
            )),
            (Some(0), Some("Exact")) => Err(ApiError::invalid_option(
                "ListOptions",
                "resourceVersionMatch",
                "Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"".into(),
            )),
            (Some(n), Some("Exact")) => Ok(Some(n)),
            (Some(n), None | Some("NotOlderThan")) => {
                let current = self
                    .store
                    .current_revision()
                    .await
                    .map_err(|e| ApiError::from_store(e, call.kind, ""))?;
                if n > current {
                    return Err(ApiError::timeout(format!(
                        "Too large resource version: {n}, current: {current}"
                    )));
                }
                Ok(None)
            }
            (_, Some(other)) => Err(ApiError::invalid_option(
                "ListOptions",
                "resourceVersionMatch",
                format!("Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""),
            )),
            (None, None) => Ok(None),
        }
    }

    pub async fn list(&self, call: &Call<'_>) -> ApiResult<Reply> {
        if crate::component_status::is(call.kind) {
            return self.component_statuses(call).await;
        }
        let (items, revision, token) = self.list_page(call).await?;
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if let Some(t) = token {
            metadata["continue"] = json!(t);
        }
        Ok(match call.shape {
            Shape::Table(include) => {
                let objects = items
                    .into_iter()
                    .map(|i| i.into_object(call.kind))
                    .collect::<ApiResult<Vec<_>>>()?;
                Reply::Json(200, table::table(call.kind, &objects, metadata, include, true))
            }
            Shape::Metadata => {
                let items = items
                    .into_iter()
                    .map(|i| i.into_object(call.kind).map(|o| table::partial_metadata(&o)))
                    .collect::<ApiResult<Vec<_>>>()?;
                Reply::Json(
                    200,
                    json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                           "metadata": metadata, "items": items}),
                )
            }
            Shape::Object => {
                // Written out directly: the stored bytes are already the objects' JSON, so a
                // list of thousands costs a copy each, not a parse and a print.
                let mut body = Vec::with_capacity(items.iter().map(|i| i.kv.value.len() + 32).sum::<usize>() + 256);
                body.extend_from_slice(b"{\"kind\":");
                serde_json::to_writer(&mut body, &format!("{}List", call.kind.kind)).expect("JSON encodes");
                body.extend_from_slice(b",\"apiVersion\":");
                serde_json::to_writer(&mut body, &call.kind.api_version()).expect("JSON encodes");
                body.extend_from_slice(b",\"metadata\":");
                serde_json::to_writer(&mut body, &metadata).expect("JSON encodes");
                body.extend_from_slice(b",\"items\":[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    item.write_json(call.kind, &mut body)?;
                }
                body.extend_from_slice(b"]}\n");
                Reply::Bytes(200, body)
            }
        })
    }

    pub async fn watch(&self, call: &Call<'_>) -> ApiResult<Reply> {
        let labels = LabelSelector::parse(call.query.get("labelSelector").unwrap_or(""))?;
        let fields = FieldSelector::parse(call.query.get("fieldSelector").unwrap_or(""), call.kind)?;
        let timeout = call
            .query
            .number("timeoutSeconds")?
            .map(Duration::from_secs)
            .unwrap_or(WATCH_TIMEOUT)
            .min(WATCH_TIMEOUT);
        let rv = call
            .query
            .get("resourceVersion")
            .filter(|v| !v.is_empty())
            .map(parse_rv)
            .transpose()?;
        let bookmarks = call.query.flag("allowWatchBookmarks");
        let send_initial = call.query.flag("sendInitialEvents");
        match (
            send_initial,
            call.query.get("resourceVersionMatch").filter(|m| !m.is_empty()),
        ) {
            (true, Some("NotOlderThan")) | (false, None) => {}
            (true, _) => {
                return Err(ApiError::invalid_option(
                    "ListOptions",
                    "sendInitialEvents",
                    "Forbidden: sendInitialEvents is forbidden for watch unless resourceVersionMatch is set to NotOlderThan"
                        .into(),
                ));
            }
            (false, Some(_)) => {
                return Err(ApiError::invalid_option(
                    "ListOptions",
                    "resourceVersionMatch",
                    "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
                        .into(),
                ));
            }
        }
        let prefix = keys::prefix(call.kind.storage, call.namespace());
        let (tx, rx) = mpsc::channel(256);

        // Without a resource version (or with "0"), or when asked to, a watch starts with the
        // current state.
        let (initial, from) = match rv {
            Some(n) if n > 0 && !send_initial => (Vec::new(), n),
            _ => {
                let page = self
                    .store
                    .range(RangeRequest {
                        prefix: prefix.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| ApiError::from_store(e, call.kind, ""))?;
                let objects = page
                    .kvs
                    .iter()
                    .filter_map(|kv| conversion::decode(call.kind, &kv.value, kv.mod_revision).ok())
                    .filter(|o| labels.matches(o) && fields.matches(o))
                    .collect::<Vec<_>>();
                (objects, page.revision)
            }
        };
        let resource_prefix = keys::prefix(call.kind.storage, None);
        let stream = match self.cache.watch(&resource_prefix, &prefix, from).await {
            Ok(s) => s,
            Err(StoreError::Compacted { compacted, .. }) => {
                let gone = ApiError::expired(format!("too old resource version: {from} ({compacted})"));
                let line = event_line("ERROR", &gone.to_value());
                let _ = tx.try_send(line);
                return Ok(Reply::Stream(rx));
            }
            Err(e) => return Err(ApiError::from_store(e, call.kind, "")),
        };
        let kind = call.kind;
        let shape = call.shape;
        // Whole objects, no selectors: events go out as the stored bytes, never decoded.
        let plain = shape == Shape::Object && labels.is_empty() && fields.is_empty() && !conversion::converts(kind);
        // Selectors only choose events: whole objects still go out as the stored bytes.
        let raw = shape == Shape::Object && !conversion::converts(kind);
        let decoded = std::sync::Arc::clone(&self.decoded);
        tokio::spawn(async move {
            let mut encoder = EventEncoder {
                kind,
                shape,
                first: true,
            };
            // Every event up to this revision has been delivered: what a bookmark reports.
            let mut delivered = from;
            for object in initial {
                if tx.send(encoder.line("ADDED", &object)).await.is_err() {
                    return;
                }
            }
            if send_initial && tx.send(bookmark_line(kind, delivered, true)).await.is_err() {
                return;
            }
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
            let mut stream = stream;
            loop {
                let batch = tokio::select! {
                    _ = &mut deadline => return,
                    _ = tx.closed() => return,
                    _ = ticks.tick(), if bookmarks => {
                        if tx.send(bookmark_line(kind, delivered, false)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    batch = stream.next() => batch,
                };
                let events = match batch {
                    None => return,
                    Some(Ok(events)) => events,
                    Some(Err(StoreError::Compacted { requested, compacted })) => {
                        let gone = ApiError::expired(format!("too old resource version: {requested} ({compacted})"));
                        let _ = tx.send(event_line("ERROR", &gone.to_value())).await;
                        return;
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(event_line("ERROR", &ApiError::internal(e).to_value())).await;
                        return;
                    }
                };
                for event in events.iter() {
                    delivered = delivered.max(event.revision());
                    let line = if plain {
                        raw_event_line(event)
                    } else {
                        watch_event(kind, event, &labels, &fields, &decoded).and_then(|chosen| {
                            if raw {
                                raw_line(chosen.type_, chosen.stored, event.revision())
                            } else {
                                Some(encoder.line_at(chosen.type_, &chosen.object, event.revision()))
                            }
                        })
                    };
                    let Some(line) = line else { continue };
                    // A client that takes nothing for this long has stopped reading: its watch
                    // ends rather than holding events for it (it resumes from the last
                    // resource version it did read).
                    // Only a full channel starts the clock: no timer per event.
                    match tx.try_send(line) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                        Err(mpsc::error::TrySendError::Full(line)) => {
                            if !matches!(tokio::time::timeout(STALLED_WATCH, tx.send(line)).await, Ok(Ok(()))) {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Reply::Stream(rx))
    }

    pub async fn create(&self, call: &Call<'_>, body: Value) -> ApiResult<Reply> {
        match call.request.subresource.as_deref() {
            None => {}
            Some("binding") => return self.bind(call, body).await,
            Some("token") => return self.token_request(call, body).await,
            Some(_) => return Err(ApiError::method_not_allowed()),
        }
        let mut object = check_body(call.kind, body)?;
        call.validate_fields(&mut object, "CreateOptions")?;
        self.create_owned(call, object, &Ownership::Update).await
    }

    /// Creates `object` (already checked against the kind and validated), recording its
    /// managed fields as `ownership` says.
    async fn create_owned(&self, call: &Call<'_>, mut object: Value, ownership: &Ownership) -> ApiResult<Reply> {
        let meta = metadata_mut(&mut object);
        if let Some(ns) = call.namespace() {
            match meta.get("namespace").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                Some(body_ns) if body_ns != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    meta.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            meta.remove("namespace");
        }
        if meta_str(&object, "name").is_none() {
            match meta_str(&object, "generateName") {
                Some(prefix) => {
                    let name = format!("{prefix}{}", random_suffix());
                    metadata_mut(&mut object).insert("name".into(), json!(name));
                }
                None => {
                    return Err(ApiError::invalid(
                        call.kind,
                        "",
                        vec![crate::status::Cause {
                            reason: "FieldValueRequired".into(),
                            message: "Required value: name or generateName is required".into(),
                            field: "metadata.name".into(),
                        }],
                    ));
                }
            }
        }
        let name = object::name(&object).to_string();
        strategy::validate_name(call.kind, &name)?;
        if let Some(ns) = call.namespace() {
            self.check_namespace_open(call.kind, ns, &name).await?;
        }
        if (call.kind.group, call.kind.kind) == ("", "Pod") {
            self.admit_priority(&mut object).await?;
            crate::admission::default_toleration_seconds(&mut object);
        }
        crate::defaults::apply(call.kind, &mut object);
        // Before the required fields' zero values are filled in.
        reject_missing_required(call.kind, &object)?;
        strategy::prepare_for_create(call.kind, &mut object);
        let _allocation = match is_service(call.kind) {
            true => Some(self.services.assign(&self.store, call.kind, &mut object, None).await?),
            false => None,
        };
        ownership.record(call.kind, None, &mut object, &call.manager, None);
        let dry_run = call.dry_run()?;
        if dry_run {
            return Ok(Reply::Json(201, object));
        }
        let key = call.key(&name);
        let revision = self
            .store
            .create(&key, conversion::encode(call.kind, &object))
            .await
            .map_err(|e| ApiError::from_store(e, call.kind, &name))?;
        object::set_resource_version(&mut object, revision);
        Ok(Reply::Json(201, object))
    }

    /// `pods/binding`: assigns a pod to a node, once (what the scheduler does).
    /// TokenRequest: a token for the service account, bound to a pod when the request says
    /// so, as upstream's `serviceaccounts/<name>/token` issues it.
    async fn token_request(&self, call: &Call<'_>, request: Value) -> ApiResult<Reply> {
        let issuer = self.tokens.clone().ok_or_else(ApiError::method_not_allowed)?;
        let name = call.name().to_string();
        let namespace = call.request.namespace.clone().unwrap_or_default();
        let account = self.object(call.kind, Some(&namespace), &name).await?;
        let spec = &request["spec"];
        let mut audiences: Vec<String> = spec["audiences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        if audiences.is_empty() {
            audiences.push(crate::tokens::ISSUER.to_string());
        }
        let expiration = spec["expirationSeconds"].as_i64().unwrap_or(3600);
        let invalid = |field: &str, message: String| {
            ApiError::invalid(
                call.kind,
                &name,
                vec![crate::status::Cause {
                    reason: "FieldValueInvalid".into(),
                    message,
                    field: field.into(),
                }],
            )
        };
        if expiration < 600 {
            return Err(invalid(
                "spec.expirationSeconds",
                "may not specify a duration less than 10 minutes".into(),
            ));
        }
        if expiration > 1 << 32 {
            return Err(invalid(
                "spec.expirationSeconds",
                "may not specify a duration larger than 2^32 seconds".into(),
            ));
        }
        let bound = &spec["boundObjectRef"];
        let mut pod_ref = None;
        if bound.is_object() {
            let kind = bound["kind"].as_str().unwrap_or("");
            if kind != "Pod" {
                return Err(invalid(
                    "spec.boundObjectRef.kind",
                    format!("Unsupported value: \"{kind}\": supported values: \"Pod\""),
                ));
            }
            let pod_name = bound["name"].as_str().unwrap_or("").to_string();
            let pods = crate::kinds::find("", "v1", "pods").expect("in the table");
            let pod = self.object(pods, Some(&namespace), &pod_name).await?;
            let uid = meta_str(&pod, "uid").unwrap_or("").to_string();
            if let Some(wanted) = bound["uid"].as_str().filter(|u| !u.is_empty())
                && wanted != uid
            {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "the UID in the bound object reference ({wanted}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                ));
            }
            pod_ref = Some((pod_name, uid));
        }
        let claims = crate::tokens::Claims {
            namespace: &namespace,
            service_account: (&name, meta_str(&account, "uid").unwrap_or("")),
            pod: pod_ref.as_ref().map(|(n, u)| (n.as_str(), u.as_str())),
            audiences: &audiences,
            expiration_seconds: expiration,
        };
        let now = jiff::Timestamp::now().as_second();
        let (token, expires) = issuer.issue(&claims, now).map_err(ApiError::internal)?;
        let mut spec = spec.clone();
        spec["audiences"] = json!(audiences);
        spec["expirationSeconds"] = json!(expiration);
        let expires = jiff::Timestamp::from_second(expires).map_err(ApiError::internal)?;
        Ok(Reply::Json(
            201,
            json!({
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
                "spec": spec,
                "status": {"token": token, "expirationTimestamp": expires.to_string()},
            }),
        ))
    }

    async fn bind(&self, call: &Call<'_>, binding: Value) -> ApiResult<Reply> {
        let name = call.name().to_string();
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::invalid(
                    call.kind,
                    &name,
                    vec![crate::status::Cause {
                        reason: "FieldValueRequired".into(),
                        message: "Required value".into(),
                        field: "target.name".into(),
                    }],
                )
            })?
            .to_string();
        let key = call.key(&name);
        for _ in attempts() {
            let (pod, kv) = self.read(call.kind, &key, &name).await?;
            if meta_str(&pod, "deletionTimestamp").is_some() {
                return Err(ApiError::conflict(call.kind, &name));
            }
            if let Some(current) = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{current}\""
                    ),
                ));
            }
            let mut bound = pod.clone();
            bound["spec"]["nodeName"] = json!(node);
            let condition = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": object::now_rfc3339()});
            let status = bound["status"]
                .as_object_mut()
                .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
            if let Some(Value::Array(conditions)) = status {
                conditions.retain(|c| c["type"] != "PodScheduled");
                conditions.push(condition);
            }
            crate::managed::record(call.kind, Some(&pod), &mut bound, &call.manager, Some("binding"));
            match self
                .store
                .update(&key, conversion::encode(call.kind, &bound), kv.mod_revision)
                .await
            {
                Ok(_) => {
                    return Ok(Reply::Bytes(
                        201,
                        crate::status::success(call.kind, &name, meta_str(&pod, "uid").unwrap_or("")),
                    ));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, call.kind, &name)),
            }
        }
        Err(ApiError::conflict(call.kind, &name))
    }

    /// Rejects content in a namespace that does not exist or is being deleted.
    async fn check_namespace_open(&self, kind: &Kind, ns: &str, name: &str) -> ApiResult<()> {
        let namespaces = kinds::find("", "v1", "namespaces").expect("namespaces are in the table");
        let (namespace, _) = self
            .read(namespaces, &keys::object_key(namespaces.storage, None, ns), ns)
            .await?;
        if meta_str(&namespace, "deletionTimestamp").is_some() {
            let mut err = ApiError::forbidden(
                kind,
                name,
                &format!("unable to create new content in namespace {ns} because it is being terminated"),
            );
            if let Some(details) = err.details.as_mut() {
                details.causes.push(crate::status::Cause {
                    reason: "NamespaceTerminating".into(),
                    message: format!("namespace {ns} is being terminated"),
                    field: "metadata.namespace".into(),
                });
            }
            return Err(err);
        }
        Ok(())
    }

    pub async fn update(&self, call: &Call<'_>, body: Value) -> ApiResult<Reply> {
        if call.request.subresource.as_deref() == Some("scale") {
            return self.update_scale(call, |_| Ok(body.clone())).await;
        }
        let name = call.name().to_string();
        let mut incoming = check_body(call.kind, body)?;
        call.validate_fields(&mut incoming, "UpdateOptions")?;
        if object::name(&incoming) != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                object::name(&incoming)
            )));
        }
        let key = call.key(&name);
        // A resource version in the body is a precondition; without one the update is
        // unconditional and is retried on a concurrent write.
        let pinned = meta_str(&incoming, "resourceVersion").map(parse_rv).transpose()?;
        for _ in attempts() {
            let (current, kv) = self.read(call.kind, &key, &name).await?;
            if pinned.is_some_and(|rv| rv != kv.mod_revision) {
                return Err(ApiError::conflict(call.kind, &name));
            }
            match self
                .write_update(call, current, kv.mod_revision, incoming.clone(), &Ownership::Update)
                .await
            {
                Err(e) if e.is_write_conflict() && pinned.is_none() => continue,
                other => return other,
            }
        }
        Err(ApiError::conflict(call.kind, &name))
    }

    /// Stores `incoming` as the new state of an object currently `current` at `revision`.
    async fn write_update(
        &self,
        call: &Call<'_>,
        current: Value,
        revision: Revision,
        incoming: Value,
        ownership: &Ownership,
    ) -> ApiResult<Reply> {
        let name = call.name();
        let key = &call.key(name);
        let subresource = call.request.subresource.as_deref();
        let mut incoming = incoming;
        crate::defaults::apply(call.kind, &mut incoming);
        // Checked before the required fields' zero values are filled in; refused only when the
        // update changes the object.
        let missing = match subresource {
            None => crate::validation::missing_required(call.kind, &incoming),
            Some(_) => Vec::new(),
        };
        let mut updated = strategy::prepare_for_update(call.kind, subresource, &current, incoming)?;
        let _allocation = match is_service(call.kind) && subresource.is_none() {
            true => Some(
                self.services
                    .assign(&self.store, call.kind, &mut updated, Some(&current))
                    .await?,
            ),
            false => None,
        };
        let unchanged = updated == current;
        if unchanged && matches!(ownership, Ownership::Update) {
            return Ok(Reply::Json(200, current));
        }
        if !unchanged && !missing.is_empty() {
            return Err(ApiError::invalid(call.kind, name, missing));
        }
        ownership.record(call.kind, Some(&current), &mut updated, &call.manager, subresource);
        // An apply that changes neither the object nor who owns what writes nothing.
        if unchanged && crate::managed::same_ownership(&updated, &current) {
            return Ok(Reply::Json(200, current));
        }
        metadata_mut(&mut updated).remove("resourceVersion");
        if call.dry_run()? {
            // Nothing was written: the object is still at its current version.
            object::set_resource_version(&mut updated, revision);
            return Ok(Reply::Json(200, updated));
        }
        // The last finalizer of an object being deleted is gone: the object goes.
        if meta_str(&updated, "deletionTimestamp").is_some() && strategy::nothing_holds(call.kind, &updated) {
            let deleted = self
                .store
                .delete(key, Some(revision))
                .await
                .map_err(|e| ApiError::from_store(e, call.kind, name))?;
            object::set_resource_version(&mut updated, deleted.revision);
            return Ok(Reply::Json(200, updated));
        }
        let new_revision = self
            .store
            .update(key, conversion::encode(call.kind, &updated), revision)
            .await
            .map_err(|e| ApiError::from_store(e, call.kind, name))?;
        object::set_resource_version(&mut updated, new_revision);
        Ok(Reply::Json(200, updated))
    }

    /// The Priority admission plugin: a new pod's `spec.priority` (and `preemptionPolicy`)
    /// come from its PriorityClass, or from the global default class, or are 0.
    async fn admit_priority(&self, pod: &mut Value) -> ApiResult<()> {
        let classes = crate::kinds::find("scheduling.k8s.io", "v1", "priorityclasses").expect("in the table");
        let name = pod
            .pointer("/spec/priorityClassName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let class = match name.as_deref() {
            Some(name) => {
                let key = keys::object_key(classes.storage, None, name);
                let kv = self
                    .store
                    .get(&key)
                    .await
                    .map_err(|e| ApiError::from_store(e, classes, name))?;
                match kv {
                    Some(kv) => Some(serde_json::from_slice::<Value>(&kv.value).map_err(ApiError::internal)?),
                    None => {
                        return Err(ApiError::forbidden(
                            call_pods(),
                            object::name(pod),
                            &format!("no PriorityClass with name {name} was found"),
                        ));
                    }
                }
            }
            None => {
                let prefix = keys::prefix(classes.storage, None);
                let page = self
                    .store
                    .range(RangeRequest {
                        prefix,
                        start: None,
                        limit: 0,
                        revision: None,
                    })
                    .await
                    .map_err(|e| ApiError::from_store(e, classes, ""))?;
                page.kvs
                    .iter()
                    .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
                    .find(|c| c["globalDefault"] == true)
            }
        };
        let (value, policy) = match &class {
            Some(c) => (
                c["value"].as_i64().unwrap_or(0),
                c["preemptionPolicy"]
                    .as_str()
                    .unwrap_or("PreemptLowerPriority")
                    .to_string(),
            ),
            None => (0, "PreemptLowerPriority".to_string()),
        };
        if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64)
            && given != value
        {
            return Err(ApiError::forbidden(
                call_pods(),
                object::name(pod),
                &format!(
                    "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
                ),
            ));
        }
        let spec = pod.get_mut("spec").and_then(Value::as_object_mut);
        if let Some(spec) = spec {
            if let Some(c) = &class
                && name.is_none()
            {
                spec.insert("priorityClassName".into(), c["metadata"]["name"].clone());
            }
            spec.insert("priority".into(), json!(value));
            spec.entry("preemptionPolicy").or_insert(json!(policy));
        }
        Ok(())
    }

    /// Server-side apply: `body` is the manager's configuration (YAML or JSON).
    pub async fn apply(&self, call: &Call<'_>, body: &[u8]) -> ApiResult<Reply> {
        let subresource = call.request.subresource.as_deref();
        if subresource.is_some_and(|s| s != "status") {
            return Err(ApiError::method_not_allowed());
        }
        let manager = match call.query.get("fieldManager") {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => return Err(ApiError::bad_request("PATCH with apply requires fieldManager")),
        };
        let force = call.query.flag("force");
        let config = crate::yaml::to_json(body)?;
        for field in ["apiVersion", "kind"] {
            if config.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(ApiError::bad_request(format!(
                    "{field} must be set in an applied configuration"
                )));
            }
        }
        let mut config = check_body(call.kind, config)?;
        let name = call.name().to_string();
        match meta_str(&config, "name") {
            Some(n) if n == name => {}
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            None => {
                metadata_mut(&mut config).insert("name".into(), json!(name));
            }
        }
        call.validate_fields(&mut config, "PatchOptions")?;
        // Managed fields are the server's to keep for an applier.
        metadata_mut(&mut config).remove("managedFields");
        let key = call.key(&name);
        for _ in attempts() {
            let (current, kv) = match self.read(call.kind, &key, &name).await {
                Ok(found) => found,
                Err(e) if e.code == 404 && subresource.is_none() => {
                    let applied = crate::apply::applied_fields(call.kind, &config, None);
                    let ownership = Ownership::Apply {
                        manager: manager.clone(),
                        applied,
                        forced: Default::default(),
                    };
                    match self.create_owned(call, config.clone(), &ownership).await {
                        Err(e) if e.reason == "AlreadyExists" => continue,
                        other => return other,
                    }
                }
                Err(e) => return Err(e),
            };
            let plan = crate::apply::plan(call.kind, &current, &config, &manager, subresource, force)?;
            let ownership = Ownership::Apply {
                manager: manager.clone(),
                applied: plan.applied,
                forced: plan.forced,
            };
            match self
                .write_update(call, current, kv.mod_revision, plan.object, &ownership)
                .await
            {
                Err(e) if e.is_write_conflict() => continue,
                other => return other,
            }
        }
        Err(ApiError::conflict(call.kind, &name))
    }

    pub async fn patch(&self, call: &Call<'_>, content_type: &str, body: &[u8]) -> ApiResult<Reply> {
        let name = call.name().to_string();
        let key = call.key(&name);
        let patch: Value =
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        if call.request.subresource.as_deref() == Some("scale") {
            return self
                .update_scale(call, |scale| {
                    let mut patched = scale.clone();
                    crate::patch::apply(call.kind, content_type, &mut patched, &patch)?;
                    Ok(patched)
                })
                .await;
        }
        for _ in attempts() {
            let (current, kv) = self.read(call.kind, &key, &name).await?;
            let mut patched = current.clone();
            crate::patch::apply(call.kind, content_type, &mut patched, &patch)?;
            call.validate_fields(&mut patched, "PatchOptions")?;
            // A patch that names a resource version makes it a precondition; one that does not
            // is retried on a conflicting write, as upstream's GuaranteedUpdate does.
            let pinned = match names_resource_version(&patch) {
                true => meta_str(&patched, "resourceVersion").map(parse_rv).transpose()?,
                false => None,
            };
            if pinned.is_some_and(|rv| rv != kv.mod_revision) {
                return Err(ApiError::conflict(call.kind, &name));
            }
            match self
                .write_update(call, current, kv.mod_revision, patched, &Ownership::Update)
                .await
            {
                Err(e) if e.is_write_conflict() && pinned.is_none() => continue,
                other => return other,
            }
        }
        Err(ApiError::conflict(call.kind, &name))
    }

    /// Reads the Scale of the call's object, lets `change` produce the new Scale, and writes
    /// its replica count back (a Scale naming a resource version makes it a precondition).
    async fn update_scale(&self, call: &Call<'_>, change: impl Fn(&Value) -> ApiResult<Value>) -> ApiResult<Reply> {
        let name = call.name().to_string();
        let key = call.key(&name);
        for _ in attempts() {
            let (current, kv) = self.read(call.kind, &key, &name).await?;
            // As for patches: only a resource version the caller gave is a precondition.
            let scale = change(&without_resource_version(&crate::scale::to_scale(&current)))?;
            let pinned = meta_str(&scale, "resourceVersion").map(parse_rv).transpose()?;
            if pinned.is_some_and(|rv| rv != kv.mod_revision) {
                return Err(ApiError::conflict(call.kind, &name));
            }
            let updated = crate::scale::apply_scale(&current, &scale)?;
            match self
                .write_update(call, current, kv.mod_revision, updated, &Ownership::Update)
                .await
            {
                Ok(Reply::Json(code, object)) => {
                    return Ok(Reply::Json(code, crate::scale::to_scale(&object)));
                }
                Err(e) if e.is_write_conflict() && pinned.is_none() => continue,
                other => return other,
            }
        }
        Err(ApiError::conflict(call.kind, &name))
    }

    /// Deletes the call's object, or marks it for deletion where something holds it. The
    /// preconditions (`preconditions.uid`, `preconditions.resourceVersion`) are checked against
    /// each fresh read; a delete that loses to a concurrent write is retried, as upstream's, and
    /// answers 409 only when a precondition fails.
    pub async fn delete(&self, call: &Call<'_>, options: Value) -> ApiResult<Reply> {
        let name = call.name().to_string();
        let key = call.key(&name);
        strategy::check_delete(call.kind, &name)?;
        let dry_run = call.dry_run()?;
        let wanted_rv = options
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(parse_rv)
            .transpose()?;
        for _ in attempts() {
            let (current, kv) = self.read(call.kind, &key, &name).await?;
            check_delete_preconditions(call.kind, &name, &current, kv.mod_revision, &options, wanted_rv)?;
            match self
                .delete_once(call, &key, current, kv.mod_revision, &options, dry_run)
                .await
            {
                Err(e) if e.is_write_conflict() => continue,
                other => return other,
            }
        }
        Err(ApiError::conflict(call.kind, &name))
    }

    /// One attempt of [`Registry::delete`] on the object as read at `revision`.
    async fn delete_once(
        &self,
        call: &Call<'_>,
        key: &str,
        current: Value,
        revision: Revision,
        options: &Value,
        dry_run: bool,
    ) -> ApiResult<Reply> {
        let name = object::name(&current).to_string();
        if let Some(deferred) = strategy::deferred_deletion(call.kind, &current, options) {
            if dry_run || deferred == current {
                return Ok(Reply::Json(200, deferred));
            }
            let mut deferred = deferred;
            let revision = self
                .store
                .update(key, conversion::encode(call.kind, &deferred), revision)
                .await
                .map_err(|e| ApiError::from_store(e, call.kind, &name))?;
            object::set_resource_version(&mut deferred, revision);
            return Ok(Reply::Json(200, deferred));
        }
        if dry_run {
            return Ok(Reply::Json(200, current));
        }
        let deleted = self
            .store
            .delete(key, Some(revision))
            .await
            .map_err(|e| ApiError::from_store(e, call.kind, &name))?;
        if strategy::returns_deleted_object(call.kind) {
            let mut object = current;
            object::set_resource_version(&mut object, deleted.revision);
            return Ok(Reply::Json(200, object));
        }
        Ok(Reply::Bytes(
            200,
            crate::status::success(call.kind, &name, meta_str(&current, "uid").unwrap_or("")),
        ))
    }

    pub async fn delete_collection(&self, call: &Call<'_>, options: Value) -> ApiResult<Reply> {
        let (items, revision, _) = self.list_page(call).await?;
        let mut deleted = Vec::new();
        for item in items {
            let item = item.into_object(call.kind)?;
            let name = object::name(&item).to_string();
            let request = ResourceRequest {
                name: Some(name),
                verb: crate::request::Verb::Delete,
                ..call.request.clone()
            };
            let one = Call {
                kind: call.kind,
                request: &request,
                query: call.query,
                shape: Shape::Object,
                manager: call.manager.clone(),
                warnings: Default::default(),
            };
            match self.delete(&one, options.clone()).await {
                Ok(_) => deleted.push(item),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Reply::Json(
            200,
            json!({
                "kind": format!("{}List", call.kind.kind),
                "apiVersion": call.kind.api_version(),
                "metadata": {"resourceVersion": revision.to_string()},
                "items": deleted,
            }),
        ))
    }
}

/// One object of a list: its stored bytes, and the object itself when a selector decoded it.
struct ListItem {
    kv: KeyValue,
    object: Option<Value>,
}

impl ListItem {
    fn into_object(self, kind: &Kind) -> ApiResult<Value> {
        match self.object {
            Some(object) => Ok(object),
            None => conversion::decode(kind, &self.kv.value, self.kv.mod_revision).map_err(ApiError::internal),
        }
    }

    fn write_json(&self, kind: &Kind, out: &mut Vec<u8>) -> ApiResult<()> {
        match &self.object {
            Some(object) => serde_json::to_writer(&mut *out, object).map_err(ApiError::internal),
            None if conversion::converts(kind) => {
                let object =
                    conversion::decode(kind, &self.kv.value, self.kv.mod_revision).map_err(ApiError::internal)?;
                serde_json::to_writer(&mut *out, &object).map_err(ApiError::internal)
            }
            None => object::write_with_resource_version(&self.kv.value, self.kv.mod_revision, out)
                .map_err(ApiError::internal),
        }
    }
}

/// How a write's managed fields are recorded.
enum Ownership {
    /// An Update operation (create, update, patch): the writer owns what it changed.
    Update,
    /// A server-side apply: the manager owns exactly what it applied.
    Apply {
        manager: String,
        applied: std::collections::BTreeSet<crate::managed::FieldPath>,
        forced: std::collections::BTreeSet<crate::managed::FieldPath>,
    },
}

impl Ownership {
    fn record(&self, kind: &Kind, before: Option<&Value>, after: &mut Value, writer: &str, subresource: Option<&str>) {
        match self {
            Ownership::Update => crate::managed::record(kind, before, after, writer, subresource),
            Ownership::Apply {
                manager,
                applied,
                forced,
            } => crate::managed::record_apply(kind, before, after, manager, subresource, applied, forced),
        }
    }
}

/// Attempts of a write without a precondition: as many as fit in [`RETRY_FOR`].
fn attempts() -> impl Iterator<Item = ()> {
    let deadline = std::time::Instant::now() + RETRY_FOR;
    std::iter::from_fn(move || (std::time::Instant::now() < deadline).then_some(()))
}

/// DeleteOptions' preconditions against the object as read at `revision`: 409 when one fails.
fn check_delete_preconditions(
    kind: &Kind,
    name: &str,
    current: &Value,
    revision: Revision,
    options: &Value,
    wanted_rv: Option<Revision>,
) -> ApiResult<()> {
    if let Some(uid) = options.pointer("/preconditions/uid").and_then(Value::as_str)
        && meta_str(current, "uid") != Some(uid)
    {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                kind.qualified_plural(),
                meta_str(current, "uid").unwrap_or("")
            ),
        ));
    }
    if wanted_rv.is_some_and(|rv| rv != revision) {
        return Err(ApiError::conflict(kind, name));
    }
    Ok(())
}

fn reject_missing_required(kind: &Kind, object: &Value) -> ApiResult<()> {
    let causes = crate::validation::missing_required(kind, object);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(kind, object::name(object), causes))
    }
}

fn call_pods() -> &'static Kind {
    crate::kinds::find("", "v1", "pods").expect("pods are in the table")
}

fn is_service(kind: &Kind) -> bool {
    (kind.group, kind.kind) == ("", "Service")
}

/// Checks a request body names the kind the URL does, filling in what may be left out.
fn check_body(kind: &Kind, body: Value) -> ApiResult<Value> {
    let Value::Object(mut map) = body else {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    };
    let api_version = kind.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
        None => {
            map.insert("apiVersion".into(), json!(api_version));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k == kind.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                kind.kind
            )));
        }
        None => {
            map.insert("kind".into(), json!(kind.kind));
        }
    }
    // Keep kind and apiVersion first, as Go's structs put them.
    let mut ordered = serde_json::Map::new();
    for key in ["kind", "apiVersion"] {
        if let Some(v) = map.remove(key) {
            ordered.insert(key.into(), v);
        }
    }
    ordered.extend(map);
    Ok(Value::Object(ordered))
}

/// What a watcher with these selectors sees of a store event: objects entering the selection
/// are ADDED, leaving it DELETED.
/// What a selector watch sends for one store event.
struct Chosen<'e> {
    type_: &'static str,
    /// The object version the event shows (the last one, for a deletion), decoded...
    object: std::sync::Arc<Value>,
    /// ...and as stored.
    stored: &'e [u8],
}

/// The event a watch with selectors sees for a store event, if any: an object that starts
/// matching is ADDED, one that stops is DELETED, as kube-apiserver's cacher reports them.
fn watch_event<'e>(
    kind: &Kind,
    event: &'e styrman_store::Event,
    labels: &LabelSelector,
    fields: &FieldSelector,
    decoded: &crate::decoded::Decoded,
) -> Option<Chosen<'e>> {
    let matches = |o: &Value| labels.matches(o) && fields.matches(o);
    let prev = event.prev.as_ref();
    let prev_object = || prev.and_then(|p| decoded.get(kind, &p.value, p.mod_revision));
    match event.kind {
        EventKind::Delete => {
            let stored = &prev?.value;
            let object = prev_object()?;
            matches(&object).then_some(Chosen {
                type_: "DELETED",
                object,
                stored,
            })
        }
        EventKind::Put => {
            let object = decoded.get(kind, &event.kv.value, event.revision())?;
            let now = matches(&object);
            let before = prev_object().is_some_and(|p| matches(&p));
            let type_ = match (before, now) {
                (false, true) => "ADDED",
                (true, true) => "MODIFIED",
                (true, false) => "DELETED",
                (false, false) => return None,
            };
            Some(Chosen {
                type_,
                object,
                stored: &event.kv.value,
            })
        }
    }
}

/// A watch event line from stored bytes, stamped with `revision`.
fn raw_line(kind_of_event: &str, stored: &[u8], revision: Revision) -> Option<Bytes> {
    let mut line = Vec::with_capacity(stored.len() + 64);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind_of_event.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    object::write_with_resource_version(stored, revision, &mut line).ok()?;
    line.extend_from_slice(b"}\n");
    Some(Bytes::from(line))
}

/// A watch event straight from the store's bytes (no selectors to apply).
fn raw_event_line(event: &styrman_store::Event) -> Option<Bytes> {
    let (kind_of_event, stored) = match (event.kind, &event.prev) {
        (EventKind::Put, None) => ("ADDED", &event.kv.value),
        (EventKind::Put, Some(_)) => ("MODIFIED", &event.kv.value),
        (EventKind::Delete, Some(prev)) => ("DELETED", &prev.value),
        (EventKind::Delete, None) => return None,
    };
    raw_line(kind_of_event, stored, event.revision())
}

struct EventEncoder {
    kind: &'static Kind,
    shape: Shape,
    /// Table column definitions go with the first event only, as upstream does.
    first: bool,
}

impl EventEncoder {
    /// The line for `object` as of `revision` (a deletion's revision, for the last version of
    /// a deleted object), without copying a whole object to restamp it.
    fn line_at(&mut self, kind_of_event: &str, object: &Value, revision: Revision) -> Bytes {
        if self.shape == Shape::Metadata {
            let mut partial = table::partial_metadata(object);
            object::set_resource_version(&mut partial, revision);
            return event_line(kind_of_event, &partial);
        }
        if rv(object) == revision.to_string() {
            return self.line(kind_of_event, object);
        }
        let mut restamped = object.clone();
        object::set_resource_version(&mut restamped, revision);
        self.line(kind_of_event, &restamped)
    }

    fn line(&mut self, kind_of_event: &str, object: &Value) -> Bytes {
        let encoded = match self.shape {
            Shape::Object => object.clone(),
            Shape::Metadata => table::partial_metadata(object),
            Shape::Table(include) => {
                let t = table::table(
                    self.kind,
                    std::slice::from_ref(object),
                    json!({"resourceVersion": rv(object)}),
                    include,
                    self.first,
                );
                self.first = false;
                t
            }
        };
        event_line(kind_of_event, &encoded)
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("JSON encodes");
    line.push(b'\n');
    Bytes::from(line)
}

/// A BOOKMARK event: only the resource version means anything; `initial_end` marks the end of
/// the initial events of a `sendInitialEvents` watch.
fn bookmark_line(kind: &Kind, revision: Revision, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": metadata}),
    )
}

/// Whether a patch body (merge, strategic or JSON patch) sets or tests the resource version.
fn names_resource_version(patch: &Value) -> bool {
    match patch {
        Value::Array(ops) => ops.iter().any(|op| op["path"] == "/metadata/resourceVersion"),
        _ => patch.pointer("/metadata/resourceVersion").is_some_and(|v| !v.is_null()),
    }
}

/// A copy of `object` without `metadata.resourceVersion`.
fn without_resource_version(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(meta) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    copy
}

fn rv(object: &Value) -> String {
    meta_str(object, "resourceVersion").unwrap_or("").to_string()
}

pub fn parse_rv(text: &str) -> ApiResult<Revision> {
    text.parse::<Revision>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {text:?}")))
}

/// Continue tokens as kube-apiserver writes them: base64url of
/// `{"v":"meta.k8s.io/v1","rv":<revision>,"start":"<next key>"}`.
fn encode_continue(revision: Revision, start: &str) -> String {
    use base64::Engine;
    let body = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": start});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).expect("JSON encodes"))
}

fn decode_continue(token: &str) -> ApiResult<(Revision, String)> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let body: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let revision = body["rv"].as_i64().filter(|r| *r > 0).ok_or_else(bad)?;
    let start = body["start"].as_str().ok_or_else(bad)?.to_string();
    Ok((revision, start))
}

/// Five characters from the alphabet kube-apiserver uses for generated names.
fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue(42, "/registry/pods/default/b\0");
        assert_eq!(
            decode_continue(&token).unwrap(),
            (42, "/registry/pods/default/b\0".to_string())
        );
        assert_eq!(decode_continue("garbage!").unwrap_err().code, 400);
    }

    #[test]
    fn body_kind_must_match() {
        let cms = kinds::find("", "v1", "configmaps").unwrap();
        let ok = check_body(
            cms,
            json!({"metadata": {"name": "a"}, "apiVersion": "v1", "kind": "ConfigMap"}),
        )
        .unwrap();
        assert_eq!(ok.as_object().unwrap().keys().next().unwrap(), "kind");
        assert_eq!(check_body(cms, json!({"kind": "Secret"})).unwrap_err().code, 400);
        assert_eq!(check_body(cms, json!({"apiVersion": "apps/v1"})).unwrap_err().code, 400);
        assert_eq!(check_body(cms, json!([1])).unwrap_err().code, 400);
    }
}
