//! The endpoints controller: every Service that selects pods has an `Endpoints` object of
//! its name listing those pods' addresses, ready ones under `addresses` and the others under
//! `notReadyAddresses`, with the Service's ports resolved against each pod. Services without a
//! selector are left alone (their Endpoints are their users'); an Endpoints whose Service is
//! gone is deleted.
//!
//! Services, pods and Endpoints are watched into caches; a pod change wakes only the Services
//! in its namespace that select its old or new labels, and a sync writes only when what the
//! Endpoints should say differs from what it says.

pub(crate) mod pods;
pub(crate) mod subsets;
pub(crate) mod trigger;
pub(crate) mod writes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use styrman_runtime::WorkQueue;

use crate::informer::{Cache, Change, Informers};
use futures::future::BoxFuture;
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
    services: Arc<Cache<Service>>,
    pods: Arc<Cache<Pod>>,
    endpoints: Arc<Cache<Endpoints>>,
    triggers: TriggerTimes,
    writes: OwnWrites,
    queue: Arc<WorkQueue<String>>,
}

/// Registers the controller's handlers on the shared informers and returns its workers.
pub fn start(client: kube::Client, informers: &mut Informers) -> BoxFuture<'static, anyhow::Result<()>> {
    let services = informers.get::<Service>(watcher::Config::default());
    let pods = informers.get::<Pod>(watcher::Config::default());
    let endpoints = informers.get::<Endpoints>(watcher::Config::default());
    let controller = Arc::new(Controller {
        client,
        services: services.cache(),
        pods: pods.cache(),
        endpoints: endpoints.cache(),
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
    endpoints.on_relist({
        let controller = Arc::clone(&controller);
        move || controller.writes.clear()
    });
    endpoints.on_change({
        let controller = Arc::clone(&controller);
        move |change| controller.endpoints_changed(change)
    });
    let workers = {
        let controller = Arc::clone(&controller);
        async move {
            // Nothing is synced before every cache is filled: a Service not listed yet is not
            // a gone Service, and pods not listed yet are not missing endpoints.
            controller.services.wait_synced().await;
            controller.pods.wait_synced().await;
            controller.endpoints.wait_synced().await;
            controller.queue_leftovers();
            Arc::clone(&controller.queue)
                .run_workers(WORKERS, "endpoints", move |key: String| {
                    let controller = Arc::clone(&controller);
                    async move { controller.sync(key).await }
                })
                .await;
        }
    };
    Box::pin(async move {
        workers.await;
        anyhow::bail!("the endpoints workers ended")
    })
}

impl Controller {
    /// Endpoints whose Service may have gone while no controller watched: each is looked at
    /// once, and deleted if its Service is gone.
    fn queue_leftovers(&self) {
        for endpoints in self.endpoints.all() {
            let meta = &endpoints.metadata;
            if meta
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(LEADER_ANNOTATION))
            {
                continue;
            }
            if let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name) {
                self.queue.add(pods::key(namespace, name));
            }
        }
    }

    fn endpoints_changed(&self, change: Change<'_, Endpoints>) {
        let (endpoints, version) = match change {
            Change::Applied { new, .. } => (new, new.metadata.resource_version.as_deref()),
            Change::Deleted(old) => (old, None),
        };
        let (Some(namespace), Some(name)) = (&endpoints.metadata.namespace, &endpoints.metadata.name) else {
            return;
        };
        let key = pods::key(namespace, name);
        let echo = self.writes.observed(&key, name, version);
        // As upstream, only a deletion by someone else wakes the Service (to make its
        // Endpoints again); changes come from pods and Services.
        if !echo && version.is_none() {
            self.queue.add(key);
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
