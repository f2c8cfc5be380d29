//! The endpointslice controller: every Service that selects pods has `discovery.k8s.io/v1`
//! EndpointSlices listing those pods (at most [`MAX_ENDPOINTS_PER_SLICE`] each), named
//! `<service>-<random>`, labelled with the Service's name and this controller's, and owned by
//! the Service, so the garbage collector deletes them with it (as upstream).
//!
//! Services, pods, node metadata (for zones) and this controller's slices are watched into
//! caches; [`reconcile`] decides what to write, and a sync writes only that.

mod reconcile;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use styrman_runtime::WorkQueue;

use crate::endpoints::cache::{Change, NamespacedCache, without_managed_fields};
use crate::endpoints::pods;
use crate::endpoints::trigger::{self, TriggerTimes};
use crate::endpoints::writes::{self, OwnWrites};
use reconcile::{CONTROLLER_NAME, Inputs, MANAGED_BY_LABEL, SERVICE_NAME_LABEL};

/// kube-controller-manager's `--concurrent-service-endpoint-syncs`.
const WORKERS: usize = 5;
/// kube-controller-manager's `--max-endpoints-per-slice`.
const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// How soon a Service whose cache lags this controller's own writes is looked at again.
const STALE_RECHECK: Duration = Duration::from_millis(50);
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

type NodeMeta = PartialObjectMeta<Node>;

struct Controller {
    client: kube::Client,
    services: Arc<NamespacedCache<Service>>,
    pods: Arc<NamespacedCache<Pod>>,
    nodes: Arc<NamespacedCache<NodeMeta>>,
    slices: Arc<NamespacedCache<EndpointSlice>>,
    triggers: TriggerTimes,
    writes: OwnWrites,
    queue: Arc<WorkQueue<String>>,
}

/// A watch event, boxed so the stream's items stay small.
enum Wake {
    Service(Box<Event<Service>>),
    Pod(Box<Event<Pod>>),
    Node(Box<Event<NodeMeta>>),
    Slice(Box<Event<EndpointSlice>>),
}

pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    let controller = Arc::new(Controller {
        client: client.clone(),
        services: NamespacedCache::new(),
        pods: NamespacedCache::new(),
        nodes: NamespacedCache::new(),
        slices: NamespacedCache::new(),
        triggers: TriggerTimes::default(),
        writes: OwnWrites::default(),
        queue: WorkQueue::new(),
    });
    let config = watcher::Config::default;
    let services = watcher::watcher(Api::<Service>::all(client.clone()), config())
        .default_backoff()
        .map(|r| r.map(|e| Wake::Service(Box::new(without_managed_fields(e)))));
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), config())
        .default_backoff()
        .map(|r| r.map(|e| Wake::Pod(Box::new(without_managed_fields(e)))));
    // Only the zone label is read from nodes: their metadata is enough.
    let nodes = watcher::watcher(Api::<NodeMeta>::all(client.clone()), config())
        .default_backoff()
        .map(|r| r.map(|e| Wake::Node(Box::new(without_managed_fields(e)))));
    let slices = watcher::watcher(
        Api::<EndpointSlice>::all(client.clone()),
        config().labels(&format!("{MANAGED_BY_LABEL}={CONTROLLER_NAME}")),
    )
    .default_backoff()
    .map(|r| r.map(|e| Wake::Slice(Box::new(without_managed_fields(e)))));
    let mut wakes = futures::stream::select_all([services.boxed(), pods.boxed(), nodes.boxed(), slices.boxed()]);
    let mut workers = None;
    while let Some(wake) = wakes.next().await {
        match wake {
            Ok(wake) => controller.handle(wake),
            Err(e) => tracing::warn!(error = %e, "endpointslice controller watch failed; retrying"),
        }
        // As upstream, nothing is synced before every cache is filled once.
        if workers.is_none() && controller.synced() {
            workers = Some(tokio::spawn(Arc::clone(&controller.queue).run_workers(WORKERS, "endpointslice", {
                let controller = Arc::clone(&controller);
                move |key: String| {
                    let controller = Arc::clone(&controller);
                    async move { controller.sync(key).await }
                }
            })));
        }
    }
    if let Some(workers) = workers {
        workers.abort();
    }
    anyhow::bail!("the endpointslice controller's watches ended")
}

impl Controller {
    fn synced(&self) -> bool {
        self.services.is_synced() && self.pods.is_synced() && self.nodes.is_synced() && self.slices.is_synced()
    }

    fn handle(&self, wake: Wake) {
        match wake {
            Wake::Service(event) => {
                for change in self.services.apply(*event) {
                    let service = match &change {
                        Change::Upsert { new, .. } => new,
                        Change::Delete(old) => old,
                    };
                    if let (Some(namespace), Some(name)) = (&service.metadata.namespace, &service.metadata.name) {
                        self.queue.add(pods::key(namespace, name));
                    }
                }
            }
            Wake::Pod(event) => {
                for change in self.pods.apply(*event) {
                    let keys = match &change {
                        Change::Upsert { old, new } => pods::services_for_pod_change(&self.services, old.as_deref(), Some(new)),
                        Change::Delete(old) => pods::services_for_pod_change(&self.services, Some(old), None),
                    };
                    keys.into_iter().for_each(|key| self.queue.add(key));
                }
            }
            Wake::Node(event) => {
                self.nodes.apply(*event);
            }
            Wake::Slice(event) => {
                if matches!(*event, Event::InitDone) {
                    self.writes.clear();
                }
                for change in self.slices.apply(*event) {
                    let (slice, version) = match &change {
                        Change::Upsert { new, .. } => (new, new.metadata.resource_version.as_deref()),
                        Change::Delete(old) => (old, None),
                    };
                    let meta = &slice.metadata;
                    let service = meta.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL));
                    let (Some(namespace), Some(name), Some(service)) = (&meta.namespace, &meta.name, service) else {
                        continue;
                    };
                    let key = pods::key(namespace, service);
                    // Someone else's change to a slice (or its deletion) is undone by a sync;
                    // the echo of this controller's own write needs none.
                    if !self.writes.observed(&key, name, version) {
                        self.queue.add(key);
                    }
                }
            }
        }
    }

    fn zone_of(&self, node: &str) -> Option<Option<String>> {
        let node = self.nodes.get("", node)?;
        Some(node.metadata.labels.as_ref().and_then(|l| l.get(ZONE_LABEL)).filter(|z| !z.is_empty()).cloned())
    }

    async fn sync(&self, key: String) -> anyhow::Result<()> {
        if self.writes.outstanding(&key) {
            self.queue.add_after(key, STALE_RECHECK);
            return Ok(());
        }
        let (namespace, name) = pods::split_key(&key);
        let Some(service) = self.services.get(namespace, name) else {
            // Its slices are owned by it: the garbage collector deletes them.
            self.triggers.forget(&key);
            return Ok(());
        };
        if !pods::wants_endpoints(&service) || service.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let selected = pods::selected_pods(&self.pods, &service);
        let existing: Vec<Arc<EndpointSlice>> = self
            .slices
            .in_namespace(namespace)
            .into_iter()
            .filter(|s| s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).map(String::as_str) == Some(name))
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .collect();
        let trigger_time = self.triggers.compute(&key, &service, &selected);
        let zone_of = |node: &str| self.zone_of(node);
        let (plan, skipped) = reconcile::plan(&Inputs {
            service: &service,
            pods: &selected,
            existing: &existing,
            zone_of: &zone_of,
            max_per_slice: MAX_ENDPOINTS_PER_SLICE,
        });

        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), namespace);
        let params = PostParams::default();
        let annotate = |slice: &mut EndpointSlice| {
            let mut annotations = slice.metadata.annotations.take().unwrap_or_default();
            match trigger_time {
                Some(time) => annotations.insert(trigger::ANNOTATION.into(), trigger::format(time)),
                None => annotations.remove(trigger::ANNOTATION),
            };
            slice.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
        };
        for mut slice in plan.create {
            annotate(&mut slice);
            match api.create(&params, &slice).await {
                Ok(created) => {
                    let created_name = created.metadata.name.unwrap_or_default();
                    self.writes.wrote(&key, &created_name, created.metadata.resource_version);
                }
                // The namespace is going, and its slices with it.
                Err(e) if writes::namespace_terminating(&e) => return Ok(()),
                Err(e) => return Err(e).context("creating an EndpointSlice"),
            }
        }
        for mut slice in plan.update {
            annotate(&mut slice);
            let slice_name = slice.metadata.name.clone().unwrap_or_default();
            let updated = api
                .replace(&slice_name, &params, &slice)
                .await
                .with_context(|| format!("updating EndpointSlice {slice_name}"))?;
            self.writes.wrote(&key, &slice_name, updated.metadata.resource_version);
        }
        for slice in plan.delete {
            let slice_name = slice.metadata.name.clone().unwrap_or_default();
            match api.delete(&slice_name, &DeleteParams::default()).await {
                Ok(_) => self.writes.deleted(&key, &slice_name),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e).with_context(|| format!("deleting EndpointSlice {slice_name}")),
            }
        }
        anyhow::ensure!(
            skipped.is_empty(),
            "pods {} are on nodes not known yet; they are left out until they are",
            skipped.join(", ")
        );
        Ok(())
    }
}
