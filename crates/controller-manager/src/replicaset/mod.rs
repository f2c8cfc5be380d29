//! The ReplicaSet and ReplicationController controllers: keep as many active pods as the owner
//! asks for, adopting matching orphans and releasing pods that stopped matching, and report
//! what exists in the owner's status. One generic controller serves both kinds ([`kind`]).
//!
//! Pods are created in slow-start batches (1, 2, 4, …) so a broken template fails once, not
//! five hundred times; scale-downs delete the least useful pods first ([`ranking`]).
//! [`expectations`] keep a sync from acting on a cache that has not yet seen its last writes.

mod expectations;
mod kind;
mod ranking;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use serde_json::{Value, json};
use styrman_runtime::labels::{selector_is_empty, selector_matches};
use styrman_runtime::{Recorder, WorkQueue, reference_to};

use crate::informer::{Cache, Change, Informers, key_of, labels_of};
use crate::pod_state::{controller_of, controller_ref, is_active, is_available, is_ready, until_available};
use expectations::Expectations;
pub use kind::Replicated;

/// Most pods one sync creates or deletes (upstream's burstReplicas).
const BURST: usize = 500;
/// Pod changes reach their owner's sync at most this often: each sync reads all the owner's
/// pods, and a large ReplicaSet's pods change thousands of times a second while they start.
const POD_CHANGES_WINDOW: Duration = Duration::from_millis(100);

pub fn start_replicasets(client: kube::Client, informers: &mut Informers) -> BoxFuture<'static, anyhow::Result<()>> {
    Box::pin(run::<ReplicaSet>(client, informers))
}

pub fn start_replication_controllers(
    client: kube::Client,
    informers: &mut Informers,
) -> BoxFuture<'static, anyhow::Result<()>> {
    Box::pin(run::<ReplicationController>(client, informers))
}

struct Controller<K> {
    client: kube::Client,
    owners: Arc<Cache<K>>,
    pods: Arc<Cache<Pod>>,
    expectations: Arc<Expectations>,
    queue: Arc<WorkQueue<String>>,
    recorder: Recorder,
}

/// The key of the owner of kind `K` that controls `pod`, if one does.
fn owner_key<K: Replicated>(pod: &Pod) -> Option<String> {
    let owner = controller_of(&pod.metadata)?;
    (owner.kind == K::kind(&())).then(|| format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), owner.name))
}

/// Registers the controller's handlers on the shared informers and returns its workers.
fn run<K: Replicated>(
    client: kube::Client,
    informers: &mut Informers,
) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
    let queue: Arc<WorkQueue<String>> = WorkQueue::new();
    let expectations = Arc::new(Expectations::default());

    let owner_informer = informers.get::<K>(watcher::Config::default());
    owner_informer.on_change({
        let queue = Arc::clone(&queue);
        move |change| match change {
            Change::Applied { new, .. } => queue.add(key_of(&**new)),
            Change::Deleted(old) => queue.add(key_of(&**old)),
        }
    });
    let owners = owner_informer.cache();

    let pod_informer = informers.get::<Pod>(watcher::Config::default());
    pod_informer.on_change({
        let queue = Arc::clone(&queue);
        let owners = Arc::clone(&owners);
        let expectations = Arc::clone(&expectations);
        move |change| on_pod_change::<K>(change, &owners, &queue, &expectations)
    });
    let pods = pod_informer.cache();

    let controller = Arc::new(Controller {
        recorder: Recorder::new(client.clone(), K::CONTROLLER),
        client,
        owners: Arc::clone(&owners),
        pods: Arc::clone(&pods),
        expectations,
        queue: Arc::clone(&queue),
    });
    let workers = async move {
        owners.wait_synced().await;
        pods.wait_synced().await;
        queue
            .run_workers(K::WORKERS, K::CONTROLLER, move |key: String| {
                let controller = Arc::clone(&controller);
                async move { controller.sync(&key).await }
            })
            .await;
    };
    async move {
        workers.await;
        anyhow::bail!("the {} workers ended", K::CONTROLLER)
    }
}

/// Enqueues the owners a pod change concerns: its controller (old and new), or, for an orphan,
/// every owner in its namespace that would adopt it.
fn on_pod_change<K: Replicated>(
    change: Change<'_, Pod>,
    owners: &Cache<K>,
    queue: &Arc<WorkQueue<String>>,
    expectations: &Expectations,
) {
    match change {
        Change::Applied { old, new } => {
            let owner = owner_key::<K>(new);
            if let Some(owner) = &owner {
                expectations.observed(owner, new, false);
                queue.add_coalesced(owner.clone(), POD_CHANGES_WINDOW);
            }
            if let Some(previous) = old.and_then(|o| owner_key::<K>(o))
                && Some(&previous) != owner.as_ref()
            {
                queue.add_coalesced(previous, POD_CHANGES_WINDOW);
            }
            let labels_changed = old.is_none_or(|o| o.metadata.labels != new.metadata.labels);
            if controller_of(&new.metadata).is_none() && labels_changed {
                let namespace = new.metadata.namespace.as_deref().unwrap_or("");
                for candidate in owners.list(namespace) {
                    if candidate
                        .selector()
                        .is_some_and(|s| !selector_is_empty(&s) && selector_matches(&s, labels_of(&**new)))
                    {
                        queue.add(key_of(&*candidate));
                    }
                }
            }
        }
        Change::Deleted(pod) => {
            if let Some(owner) = owner_key::<K>(pod) {
                expectations.observed(&owner, pod, true);
                queue.add_coalesced(owner, POD_CHANGES_WINDOW);
            }
        }
    }
}

impl<K: Replicated> Controller<K> {
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (namespace, name) = key.split_once('/').context("owner key")?;
        let Some(owner) = self.owners.get(namespace, name) else {
            self.expectations.forget(key);
            return Ok(());
        };
        let Some(selector) = owner.selector().filter(|s| !selector_is_empty(s)) else {
            tracing::warn!(owner = key, "no selector, or an empty one: nothing is managed");
            return Ok(());
        };
        let pods = self.claim(&owner, &selector).await?;
        let active: Vec<Arc<Pod>> = pods.into_iter().filter(|p| is_active(p)).collect();

        let mut failure = None;
        if owner.meta().deletion_timestamp.is_none() && self.expectations.satisfied(key, &self.pods) {
            failure = self.manage(&owner, key, &active).await.err();
        }
        self.update_status(&owner, &active, failure.as_ref()).await?;

        let min_ready = owner.min_ready_seconds();
        if min_ready > 0 {
            let now = jiff::Timestamp::now();
            if let Some(wait) = active.iter().filter_map(|p| until_available(p, min_ready, now)).min() {
                self.queue.add_after(key.to_string(), wait + Duration::from_millis(50));
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The pods this owner controls, after adopting matching orphans and releasing pods it
    /// controls that no longer match (upstream's PodControllerRefManager).
    async fn claim(&self, owner: &K, selector: &LabelSelector) -> anyhow::Result<Vec<Arc<Pod>>> {
        let uid = owner.meta().uid.as_deref().unwrap_or("");
        let namespace = owner.meta().namespace.as_deref().unwrap_or("");
        let owner_deleting = owner.meta().deletion_timestamp.is_some();
        let mut mine = Vec::new();
        let mut rechecked = false;
        for pod in self.pods.list(namespace) {
            let matches = selector_matches(selector, labels_of(&*pod));
            match controller_of(&pod.metadata) {
                Some(r) if r.uid == uid => {
                    if matches || owner_deleting {
                        mine.push(pod);
                    } else {
                        self.release(owner, &pod).await?;
                    }
                }
                Some(_) => {}
                None if matches && !owner_deleting && pod.metadata.deletion_timestamp.is_none() => {
                    // Adopt only if the owner is still there: the cache may lag its deletion.
                    if !rechecked {
                        let live = Api::<K>::namespaced(self.client.clone(), namespace)
                            .get_opt(&owner.name_any())
                            .await?;
                        if live.is_none_or(|l| {
                            l.meta().uid.as_deref() != Some(uid) || l.meta().deletion_timestamp.is_some()
                        }) {
                            return Ok(mine);
                        }
                        rechecked = true;
                    }
                    let adopted = self.adopt(owner, &pod).await?;
                    tracing::debug!(pod = pod.name_any(), adopted = adopted.is_some(), "adopting");
                    if let Some(adopted) = adopted {
                        mine.push(Arc::new(adopted));
                    }
                }
                None => {}
            }
        }
        Ok(mine)
    }

    async fn adopt(&self, owner: &K, pod: &Pod) -> anyhow::Result<Option<Pod>> {
        let patch = json!({"metadata": {
            "ownerReferences": [controller_ref(owner)],
            "uid": pod.metadata.uid,
        }});
        self.patch_pod(pod, patch).await
    }

    async fn release(&self, owner: &K, pod: &Pod) -> anyhow::Result<()> {
        let patch = json!({"metadata": {
            "ownerReferences": [{"$patch": "delete", "uid": owner.meta().uid}],
            "uid": pod.metadata.uid,
        }});
        self.patch_pod(pod, patch).await.map(drop)
    }

    /// A strategic merge patch of the pod's owner references; a pod gone meanwhile is no error.
    async fn patch_pod(&self, pod: &Pod, patch: Value) -> anyhow::Result<Option<Pod>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or(""));
        match api
            .patch(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(pod) => Ok(Some(pod)),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 || e.code == 422 => {
                tracing::debug!(pod = pod.name_any(), error = %e, "owner references not patched");
                Ok(None)
            }
            Err(e) => Err(e).context("patching a pod's owner references"),
        }
    }

    /// Creates or deletes pods so that `active` has the owner's replica count.
    async fn manage(&self, owner: &K, key: &str, active: &[Arc<Pod>]) -> anyhow::Result<()> {
        let want = usize::try_from(owner.replicas()).unwrap_or(0);
        if active.len() < want {
            let missing = (want - active.len()).min(BURST);
            let pod = self.pod_from_template(owner)?;
            let mut batch = 1;
            let mut left = missing;
            while left > 0 {
                let size = batch.min(left);
                let results = futures::future::join_all((0..size).map(|_| self.create_pod(owner, key, &pod))).await;
                left -= size;
                if let Some(e) = results.into_iter().find_map(Result::err) {
                    return Err(e);
                }
                batch *= 2;
            }
        } else if active.len() > want {
            let surplus = (active.len() - want).min(BURST);
            let mut victims = active.to_vec();
            ranking::deletion_order(&mut victims, active);
            victims.truncate(surplus);
            let results = futures::future::join_all(victims.iter().map(|p| self.delete_pod(owner, key, p))).await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return Err(e);
            }
        }
        Ok(())
    }

    fn pod_from_template(&self, owner: &K) -> anyhow::Result<Pod> {
        let template = owner.template().context("the owner has no pod template")?;
        let meta = template.metadata.clone().unwrap_or_default();
        Ok(Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", owner.name_any())),
                namespace: owner.meta().namespace.clone(),
                labels: meta.labels,
                annotations: meta.annotations,
                finalizers: meta.finalizers,
                owner_references: Some(vec![controller_ref(owner)]),
                ..Default::default()
            },
            spec: template.spec.clone(),
            status: None,
        })
    }

    async fn create_pod(&self, owner: &K, key: &str, pod: &Pod) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), owner.meta().namespace.as_deref().unwrap_or(""));
        match api.create(&PostParams::default(), pod).await {
            Ok(created) => {
                let name = created.name_any();
                self.expectations.expect_created(key, name.clone());
                self.recorder
                    .normal(reference_to(owner), "SuccessfulCreate", format!("Created pod: {name}"));
                Ok(())
            }
            Err(e) => {
                self.recorder.warning(
                    reference_to(owner),
                    "FailedCreate",
                    format!("Error creating: {}", api_message(&e)),
                );
                Err(anyhow::Error::new(e).context("FailedCreate"))
            }
        }
    }

    async fn delete_pod(&self, owner: &K, key: &str, pod: &Pod) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or(""));
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.expectations.expect_deleted(key, uid.clone());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&pod.name_any(), &params).await {
            Ok(_) => {
                self.recorder.normal(
                    reference_to(owner),
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", pod.name_any()),
                );
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                self.expectations.observed(key, pod, true);
                Ok(())
            }
            Err(e) => {
                self.expectations.observed(key, pod, true);
                self.recorder.warning(
                    reference_to(owner),
                    "FailedDelete",
                    format!("Error deleting: {}", api_message(&e)),
                );
                Err(anyhow::Error::new(e).context("FailedDelete"))
            }
        }
    }

    /// Writes the status the pods show, when it differs from the stored one.
    async fn update_status(
        &self,
        owner: &K,
        active: &[Arc<Pod>],
        failure: Option<&anyhow::Error>,
    ) -> anyhow::Result<()> {
        let current = owner.status_json();
        let desired = desired_status(owner, active, failure, &current, jiff::Timestamp::now());
        // Compare after a round trip through the typed status, so absent and zero agree.
        let desired_object = owner.with_status(desired)?;
        if desired_object.status_json() == current {
            return Ok(());
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), owner.meta().namespace.as_deref().unwrap_or(""));
        api.replace_status(&owner.name_any(), &PostParams::default(), &desired_object)
            .await
            .context("updating the status")?;
        Ok(())
    }
}

/// The owner's status as `active` shows it. Counts upstream omits when zero are left out.
fn desired_status<K: Replicated>(
    owner: &K,
    active: &[Arc<Pod>],
    failure: Option<&anyhow::Error>,
    current: &Value,
    now: jiff::Timestamp,
) -> Value {
    let template_labels = owner
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = active
        .iter()
        .filter(|p| template_labels.iter().all(|(k, v)| labels_of(&***p).get(k) == Some(v)))
        .count();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    let available = active
        .iter()
        .filter(|p| is_available(p, owner.min_ready_seconds(), now))
        .count();
    let nonzero = |n: usize| if n == 0 { Value::Null } else { json!(n) };

    let mut conditions: Vec<Value> = current["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["type"] != "ReplicaFailure")
        .cloned()
        .collect();
    if let Some(e) = failure {
        let reason = if format!("{e}") == "FailedDelete" {
            "FailedDelete"
        } else {
            "FailedCreate"
        };
        let previous = current["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "ReplicaFailure");
        let since = previous.map_or_else(
            || json!(now.round(jiff::Unit::Second).unwrap_or(now).to_string()),
            |p| p["lastTransitionTime"].clone(),
        );
        conditions.push(json!({
            "type": "ReplicaFailure",
            "status": "True",
            "reason": reason,
            "message": format!("{:#}", e).trim_start_matches(&format!("{reason}: ")).to_string(),
            "lastTransitionTime": since,
        }));
    }
    let mut status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": nonzero(fully_labeled),
        "readyReplicas": nonzero(ready),
        "availableReplicas": nonzero(available),
        "observedGeneration": owner.meta().generation,
    });
    if !conditions.is_empty() {
        status["conditions"] = Value::Array(conditions);
    }
    status
}

/// The API's message for an error, as upstream's events quote it.
fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(e) => e.message.clone(),
        other => other.to_string(),
    }
}
