//! The endpoints controller: every Service that selects pods has an `Endpoints` object of
//! its name listing those pods' addresses, ready ones under `addresses` and the others under
//! `notReadyAddresses`, with the Service's ports resolved against each pod. Services without a
//! selector are left alone (their Endpoints are their users'); an Endpoints whose Service is
//! gone is deleted.
//!
//! Services, pods and Endpoints are watched into caches; a pod change wakes only the Services
//! in its namespace that select its old or new labels, and a sync writes only when what the
//! Endpoints should say differs from what it says.

pub(crate) mod cache;
pub(crate) mod pods;
pub(crate) mod subsets;
pub(crate) mod trigger;
pub(crate) mod writes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use styrman_runtime::WorkQueue;

use cache::{Change, NamespacedCache, without_managed_fields};
use trigger::TriggerTimes;
use writes::OwnWrites;

/// kube-controller-manager's `--concurrent-endpoint-syncs`.
const WORKERS: usize = 5;
/// How soon a Service whose cache lags this controller's own write is looked at again.
const STALE_RECHECK: Duration = Duration::from_millis(50);
/// The label that marks the endpoints of a Service without a cluster IP.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// Endpoints used as leader-election locks by old components carry this; they have no
/// Service and must not be swept away as leftovers.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

struct Controller {
    client: kube::Client,
    services: Arc<NamespacedCache<Service>>,
    pods: Arc<NamespacedCache<Pod>>,
    endpoints: Arc<NamespacedCache<Endpoints>>,
    triggers: TriggerTimes,
    writes: OwnWrites,
    queue: Arc<WorkQueue<String>>,
}

/// A watch event, boxed so the stream's items stay small.
enum Wake {
    Service(Box<Event<Service>>),
    Pod(Box<Event<Pod>>),
    Endpoints(Box<Event<Endpoints>>),
}

pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    let controller = Arc::new(Controller {
        client: client.clone(),
        services: NamespacedCache::new(),
        pods: NamespacedCache::new(),
        endpoints: NamespacedCache::new(),
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
    let endpoints = watcher::watcher(Api::<Endpoints>::all(client.clone()), config())
        .default_backoff()
        .map(|r| r.map(|e| Wake::Endpoints(Box::new(without_managed_fields(e)))));
    let mut wakes = futures::stream::select_all([services.boxed(), pods.boxed(), endpoints.boxed()]);
    let mut workers = None;
    while let Some(wake) = wakes.next().await {
        match wake {
            Ok(wake) => controller.handle(wake),
            Err(e) => tracing::warn!(error = %e, "endpoints controller watch failed; retrying"),
        }
        // Nothing is synced before every cache is filled: a Service not listed yet is not a
        // gone Service, and pods not listed yet are not missing endpoints.
        if workers.is_none() && controller.synced() {
            controller.queue_leftovers();
            workers = Some(tokio::spawn(Arc::clone(&controller.queue).run_workers(WORKERS, "endpoints", {
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
    anyhow::bail!("the endpoints controller's watches ended")
}

impl Controller {
    fn synced(&self) -> bool {
        self.services.is_synced() && self.pods.is_synced() && self.endpoints.is_synced()
    }

    /// Endpoints whose Service may have gone while no controller watched: each is looked at
    /// once, and deleted if its Service is gone.
    fn queue_leftovers(&self) {
        for endpoints in self.endpoints.all() {
            let meta = &endpoints.metadata;
            if meta.annotations.as_ref().is_some_and(|a| a.contains_key(LEADER_ANNOTATION)) {
                continue;
            }
            if let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name) {
                self.queue.add(pods::key(namespace, name));
            }
        }
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
            Wake::Endpoints(event) => {
                if matches!(*event, Event::InitDone) {
                    self.writes.clear();
                }
                for change in self.endpoints.apply(*event) {
                    let (endpoints, version) = match &change {
                        Change::Upsert { new, .. } => (new, new.metadata.resource_version.as_deref()),
                        Change::Delete(old) => (old, None),
                    };
                    let (Some(namespace), Some(name)) = (&endpoints.metadata.namespace, &endpoints.metadata.name) else {
                        continue;
                    };
                    let key = pods::key(namespace, name);
                    let echo = self.writes.observed(&key, name, version);
                    // As upstream, only a deletion by someone else wakes the Service (to make
                    // its Endpoints again); changes come from pods and Services.
                    if !echo && version.is_none() {
                        self.queue.add(key);
                    }
                }
            }
        }
    }

    async fn sync(&self, key: String) -> anyhow::Result<()> {
        if self.writes.outstanding(&key) {
            self.queue.add_after(key, STALE_RECHECK);
            return Ok(());
        }
        let (namespace, name) = pods::split_key(&key);
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), namespace);
        let current = self.endpoints.get(namespace, name);
        let Some(service) = self.services.get(namespace, name) else {
            self.triggers.forget(&key);
            if current.is_some() {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => self.writes.deleted(&key, name),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e).context("deleting the Endpoints of a gone Service"),
                }
            }
            return Ok(());
        };
        if !pods::wants_endpoints(&service) {
            return Ok(());
        }
        let selected = pods::selected_pods(&self.pods, &service);
        let trigger_time = self.triggers.compute(&key, &service, &selected);
        let mut subsets = subsets::for_service(&service, &selected);
        let truncated = subsets::truncate(&mut subsets);
        let labels = labels_for(&service);
        if let Some(current) = &current {
            let annotations = current.metadata.annotations.clone().unwrap_or_default();
            let unchanged = subsets::normalized(current.subsets.as_deref().unwrap_or_default()) == subsets
                && current.metadata.labels.clone().unwrap_or_default() == labels
                && annotations.contains_key(OVER_CAPACITY) == truncated;
            if unchanged {
                return Ok(());
            }
        }
        let mut endpoints = match &current {
            Some(current) => (**current).clone(),
            None => Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some(namespace.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            },
        };
        endpoints.subsets = (!subsets.is_empty()).then_some(subsets);
        endpoints.metadata.labels = (!labels.is_empty()).then_some(labels);
        let mut annotations = endpoints.metadata.annotations.take().unwrap_or_default();
        match trigger_time {
            Some(time) => annotations.insert(trigger::ANNOTATION.into(), trigger::format(time)),
            None => annotations.remove(trigger::ANNOTATION),
        };
        if truncated {
            annotations.insert(OVER_CAPACITY.into(), "truncated".into());
        } else {
            annotations.remove(OVER_CAPACITY);
        }
        endpoints.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
        let written = if current.is_some() {
            api.replace(name, &PostParams::default(), &endpoints)
                .await
                .context("updating the Endpoints")?
        } else {
            match api.create(&PostParams::default(), &endpoints).await {
                Ok(created) => created,
                Err(e) if writes::namespace_terminating(&e) => return Ok(()),
                Err(e) => return Err(e).context("creating the Endpoints"),
            }
        };
        self.writes.wrote(&key, name, written.metadata.resource_version);
        Ok(())
    }
}

/// An Endpoints object's labels: its Service's, and the headless mark for a Service without
/// a cluster IP.
fn labels_for(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    if pods::has_cluster_ip(service) {
        labels.remove(HEADLESS_LABEL);
    } else {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}
