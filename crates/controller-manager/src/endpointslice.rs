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
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use styrman_runtime::WorkQueue;

use crate::endpoints::pods;
use crate::endpoints::trigger::{self, TriggerTimes};
use crate::endpoints::writes::{self, OwnWrites};
use crate::informer::{Cache, Change, Informers};
use futures::future::BoxFuture;
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
    services: Arc<Cache<Service>>,
    pods: Arc<Cache<Pod>>,
    nodes: Arc<Cache<NodeMeta>>,
    slices: Arc<Cache<EndpointSlice>>,
    triggers: TriggerTimes,
    writes: OwnWrites,
    queue: Arc<WorkQueue<String>>,
}

/// Registers the controller's handlers on the shared informers and returns its workers.
pub fn start(client: kube::Client, informers: &mut Informers) -> BoxFuture<'static, anyhow::Result<()>> {
    let config = watcher::Config::default;
    let services = informers.get::<Service>(config());
    let pods = informers.get::<Pod>(config());
    // Only the zone label is read from nodes: their metadata is enough.
    let nodes = informers.get::<NodeMeta>(config());
    let slices = informers.get::<EndpointSlice>(config().labels(&format!("{MANAGED_BY_LABEL}={CONTROLLER_NAME}")));
    let controller = Arc::new(Controller {
        client,
        services: services.cache(),
        pods: pods.cache(),
        nodes: nodes.cache(),
        slices: slices.cache(),
        triggers: TriggerTimes::default(),
        writes: OwnWrites::default(),
        queue: WorkQueue::new(),
    });
    services.on_change({
        let queue = Arc::clone(&controller.queue);
        move |change| pods::queue_service(&queue, change)
    });
    pods.on_change({
        let (queue, services) = (Arc::clone(&controller.queue), Arc::clone(&controller.services));
        move |change| pods::queue_services_for_pod_change(&queue, &services, change)
    });
    slices.on_relist({
        let controller = Arc::clone(&controller);
        move || controller.writes.clear()
    });
    slices.on_change({
        let controller = Arc::clone(&controller);
        move |change| controller.slice_changed(change)
    });
    let workers = {
        let controller = Arc::clone(&controller);
        async move {
            // As upstream, nothing is synced before every cache is filled once.
            controller.services.wait_synced().await;
            controller.pods.wait_synced().await;
            controller.nodes.wait_synced().await;
            controller.slices.wait_synced().await;
            Arc::clone(&controller.queue)
                .run_workers(WORKERS, "endpointslice", move |key: String| {
                    let controller = Arc::clone(&controller);
                    async move { controller.sync(key).await }
                })
                .await;
        }
    };
    Box::pin(async move {
        workers.await;
        anyhow::bail!("the endpointslice workers ended")
    })
}

impl Controller {
    fn slice_changed(&self, change: Change<'_, EndpointSlice>) {
        let (slice, version) = match change {
            Change::Applied { new, .. } => (new, new.metadata.resource_version.as_deref()),
            Change::Deleted(old) => (old, None),
        };
        let meta = &slice.metadata;
        let service = meta.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL));
        let (Some(namespace), Some(name), Some(service)) = (&meta.namespace, &meta.name, service) else {
            return;
        };
        let key = pods::key(namespace, service);
        // Someone else's change to a slice (or its deletion) is undone by a sync; the echo of
        // this controller's own write needs none.
        if !self.writes.observed(&key, name, version) {
            self.queue.add(key);
        }
    }

    fn zone_of(&self, node: &str) -> Option<Option<String>> {
        let node = self.nodes.get("", node)?;
        Some(
            node.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(ZONE_LABEL))
                .filter(|z| !z.is_empty())
                .cloned(),
        )
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
            .list(namespace)
            .into_iter()
            .filter(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .map(String::as_str)
                    == Some(name)
            })
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
                    self.writes
                        .wrote(&key, &created_name, created.metadata.resource_version);
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
