//! The Deployment controller: rolls a Deployment's pod template out through ReplicaSets, one
//! per template (named by its hash), as upstream's does: RollingUpdate within maxSurge and
//! maxUnavailable, Recreate (all old pods gone before new ones start), proportional scaling
//! when resized mid-rollout, pause and resume, revisions and their history limit, and the
//! status and conditions `kubectl rollout status` waits on. `kubectl rollout undo` needs
//! nothing here: kubectl copies the old ReplicaSet's template back into the Deployment.
//!
//! [`sizes`] holds the arithmetic, [`status`] the conditions, [`util`] the naming rules; this
//! module reads the caches and makes the API calls.

mod sizes;
mod status;
mod util;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use styrman_runtime::labels::{selector_is_empty, selector_matches};
use styrman_runtime::{Recorder, WorkQueue, reference_to};

use crate::informer::{Cache, Change, Informers, key_of, labels_of};
use crate::pod_state::{controller_of, controller_ref};
use util::{replicas, revision, rs_replicas, rs_status};

const CONTROLLER: &str = "deployment-controller";
/// kube-controller-manager's `--concurrent-deployment-syncs`.
const WORKERS: usize = 5;
/// How often a Recreate rollout looks again while old pods are still terminating.
const OLD_PODS_POLL: Duration = Duration::from_millis(500);

struct Controller {
    client: kube::Client,
    deployments: Arc<Cache<Deployment>>,
    replicasets: Arc<Cache<ReplicaSet>>,
    queue: Arc<WorkQueue<String>>,
    recorder: Recorder,
}

fn owning_deployment(rs: &ReplicaSet) -> Option<String> {
    let owner = controller_of(&rs.metadata)?;
    (owner.kind == "Deployment").then(|| format!("{}/{}", rs.metadata.namespace.as_deref().unwrap_or(""), owner.name))
}

/// Registers the controller's handlers on the shared informers and returns its workers.
pub fn start(client: kube::Client, informers: &mut Informers) -> BoxFuture<'static, anyhow::Result<()>> {
    let queue: Arc<WorkQueue<String>> = WorkQueue::new();
    let deployment_informer = informers.get::<Deployment>(watcher::Config::default());
    deployment_informer.on_change({
        let queue = Arc::clone(&queue);
        move |change| match change {
            Change::Applied { new, .. } => queue.add(key_of(&**new)),
            Change::Deleted(old) => queue.add(key_of(&**old)),
        }
    });
    let deployments = deployment_informer.cache();
    let rs_informer = informers.get::<ReplicaSet>(watcher::Config::default());
    rs_informer.on_change({
        let queue = Arc::clone(&queue);
        let deployments = Arc::clone(&deployments);
        move |change| {
            let (old, new) = match change {
                Change::Applied { old, new } => (old, new),
                Change::Deleted(gone) => (None, gone),
            };
            let owner = owning_deployment(new);
            if let Some(owner) = &owner {
                queue.add(owner.clone());
            }
            if let Some(previous) = old.and_then(|o| owning_deployment(o))
                && Some(&previous) != owner.as_ref()
            {
                queue.add(previous);
            }
            if controller_of(&new.metadata).is_none() {
                let namespace = new.metadata.namespace.as_deref().unwrap_or("");
                for d in deployments.list(namespace) {
                    let selects = d.spec.as_ref().is_some_and(|s| {
                        !selector_is_empty(&s.selector) && selector_matches(&s.selector, labels_of(&**new))
                    });
                    if selects {
                        queue.add(key_of(&*d));
                    }
                }
            }
        }
    });
    let replicasets = rs_informer.cache();
    let controller = Arc::new(Controller {
        recorder: Recorder::new(client.clone(), CONTROLLER),
        client,
        deployments: Arc::clone(&deployments),
        replicasets: Arc::clone(&replicasets),
        queue: Arc::clone(&queue),
    });
    let workers = async move {
        deployments.wait_synced().await;
        replicasets.wait_synced().await;
        queue
            .run_workers(WORKERS, CONTROLLER, move |key: String| {
                let controller = Arc::clone(&controller);
                async move { controller.sync(&key).await }
            })
            .await;
    };
    Box::pin(async move {
        workers.await;
        anyhow::bail!("the deployment workers ended")
    })
}

/// What one sync found and did, for the status written at its end.
struct Rollout {
    d: Deployment,
    /// Every ReplicaSet the Deployment controls, kept current as this sync writes them.
    sets: Vec<ReplicaSet>,
    /// The name of the ReplicaSet whose template is the Deployment's, once known.
    new: Option<String>,
    /// Look again after this long (minReadySeconds, deadlines, terminating pods).
    again: Option<Duration>,
}

impl Rollout {
    fn new_set(&self) -> Option<&ReplicaSet> {
        let name = self.new.as_deref()?;
        self.sets.iter().find(|rs| rs.metadata.name.as_deref() == Some(name))
    }

    fn old_sets(&self) -> Vec<ReplicaSet> {
        self.sets
            .iter()
            .filter(|rs| rs.metadata.name.as_deref() != self.new.as_deref())
            .cloned()
            .collect()
    }

    fn replace(&mut self, updated: ReplicaSet) {
        match self
            .sets
            .iter_mut()
            .find(|rs| rs.metadata.name == updated.metadata.name)
        {
            Some(slot) => *slot = updated,
            None => self.sets.push(updated),
        }
    }

    fn look_again(&mut self, after: Duration) {
        self.again = Some(self.again.map_or(after, |a| a.min(after)));
    }
}

impl Controller {
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (namespace, name) = key.split_once('/').context("deployment key")?;
        let Some(d) = self.deployments.get(namespace, name) else {
            return Ok(());
        };
        let d = (*d).clone();
        let Some(selector) = d.spec.as_ref().map(|s| s.selector.clone()) else {
            return Ok(());
        };
        if selector_is_empty(&selector) {
            self.recorder.warning(
                reference_to(&d),
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            return Ok(());
        }
        let deleting = d.metadata.deletion_timestamp.is_some();
        let sets = self.claim(&d, &selector, !deleting).await?;
        let mut rollout = Rollout {
            new: find_new(&d, &sets).and_then(|rs| rs.metadata.name.clone()),
            d,
            sets,
            again: None,
        };
        if deleting {
            return self.write_status(&mut rollout).await;
        }
        self.check_paused(&mut rollout);
        if util::is_paused(&rollout.d) || is_scaling_event(&rollout) {
            self.scale(&mut rollout).await?;
            if util::is_paused(&rollout.d) {
                self.cleanup(&rollout).await?;
            }
        } else if util::is_recreate(&rollout.d) {
            self.recreate(&mut rollout).await?;
        } else {
            self.rolling(&mut rollout).await?;
        }
        self.write_status(&mut rollout).await
    }

    /// The ReplicaSets this Deployment controls, adopting matching orphans and releasing ones
    /// that no longer match.
    async fn claim(
        &self,
        d: &Deployment,
        selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
        adopt: bool,
    ) -> anyhow::Result<Vec<ReplicaSet>> {
        let uid = d.metadata.uid.as_deref().unwrap_or("");
        let namespace = d.metadata.namespace.as_deref().unwrap_or("");
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
        let mut mine = Vec::new();
        for rs in self.replicasets.list(namespace) {
            let matches = selector_matches(selector, labels_of(&*rs));
            match controller_of(&rs.metadata) {
                Some(r) if r.uid == uid => {
                    if matches || !adopt {
                        mine.push((*rs).clone());
                    } else {
                        let patch = json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": uid}], "uid": rs.metadata.uid}});
                        ignore_gone(
                            api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Strategic(patch))
                                .await,
                        )?;
                    }
                }
                None if matches && adopt && rs.metadata.deletion_timestamp.is_none() => {
                    let patch = json!({"metadata": {"ownerReferences": [controller_ref(d)], "uid": rs.metadata.uid}});
                    if let Some(adopted) = ignore_gone(
                        api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Strategic(patch))
                            .await,
                    )? {
                        mine.push(adopted);
                    }
                }
                _ => {}
            }
        }
        Ok(mine)
    }

    /// Paused and resumed Deployments say so in their Progressing condition.
    fn check_paused(&self, rollout: &mut Rollout) {
        let paused = util::is_paused(&rollout.d);
        let status = rollout.d.status.get_or_insert_with(Default::default);
        let reason = status::condition(status, status::PROGRESSING).and_then(|c| c.reason.clone());
        if paused && reason.as_deref() != Some(status::PAUSED) {
            status::set_condition(
                status,
                status::PROGRESSING,
                "Unknown",
                status::PAUSED,
                "Deployment is paused".into(),
            );
        } else if !paused && reason.as_deref() == Some(status::PAUSED) {
            status::set_condition(
                status,
                status::PROGRESSING,
                "Unknown",
                status::RESUMED,
                "Deployment is resumed".into(),
            );
        }
    }

    /// Finds or makes the new ReplicaSet, and moves it to the newest revision.
    async fn ensure_new(&self, rollout: &mut Rollout, create: bool) -> anyhow::Result<()> {
        let next_revision = rollout.old_sets().iter().map(revision).max().unwrap_or(0) + 1;
        let d = rollout.d.clone();
        if let Some(existing) = rollout.new_set().cloned() {
            let mut updated = existing.clone();
            let mut changed = util::copy_deployment_annotations(&d, &mut updated);
            changed |= util::set_revision(&mut updated, next_revision);
            let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            if let Some(spec) = updated.spec.as_mut()
                && spec.min_ready_seconds != min_ready
            {
                spec.min_ready_seconds = min_ready;
                changed = true;
            }
            if changed {
                let written = self.update_rs(&updated).await?;
                rollout.replace(written);
            }
            if status::condition(
                rollout.d.status.get_or_insert_with(Default::default),
                status::PROGRESSING,
            )
            .is_none()
            {
                let name = existing.name_any();
                status::set_condition(
                    rollout.d.status.get_or_insert_with(Default::default),
                    status::PROGRESSING,
                    "True",
                    "FoundNewReplicaSet",
                    format!("Found new replica set {name:?}"),
                );
            }
        } else if create {
            let created = self.create_new(rollout, next_revision).await?;
            rollout.new = created.metadata.name.clone();
            rollout.replace(created);
        }
        if let Some(new) = rollout.new_set() {
            self.set_deployment_revision(rollout, revision(new)).await?;
        }
        Ok(())
    }

    async fn create_new(&self, rollout: &mut Rollout, revision: i64) -> anyhow::Result<ReplicaSet> {
        let d = &rollout.d;
        let spec = d.spec.as_ref().context("deployment without spec")?;
        let collisions = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = util::template_hash(&spec.template, collisions);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(util::TEMPLATE_HASH.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(util::TEMPLATE_HASH.into(), hash.clone());
        let size = if util::is_recreate(d) {
            replicas(d)
        } else {
            sizes::rolling_new_size(d, &rollout.sets, 0)
        };
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", d.name_any())),
                namespace: d.metadata.namespace.clone(),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                owner_references: Some(vec![controller_ref(d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(size),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        util::copy_deployment_annotations(d, &mut rs);
        util::set_revision(&mut rs, revision);
        util::set_replicas_annotations(&mut rs, replicas(d), replicas(d) + util::max_surge(d));
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), d.metadata.namespace.as_deref().unwrap_or(""));
        match api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                let name = created.name_any();
                status::set_condition(
                    rollout.d.status.get_or_insert_with(Default::default),
                    status::PROGRESSING,
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set {name:?}"),
                );
                if size > 0 {
                    self.recorder.normal(
                        reference_to(&rollout.d),
                        "ScalingReplicaSet",
                        format!("Scaled up replica set {name} from 0 to {size}"),
                    );
                }
                Ok(created)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // The name is taken: by this template's set (a stale cache), or by another
                // template with the same hash, which a collision count moves past.
                let existing = api.get(&rs.name_any()).await?;
                let ours = controller_of(&existing.metadata).is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| util::same_template(t, &spec.template));
                if ours && same {
                    return Ok(existing);
                }
                let status = rollout.d.status.get_or_insert_with(Default::default);
                status.collision_count = Some(collisions.unwrap_or(0) + 1);
                self.write_status(rollout).await?;
                anyhow::bail!(
                    "hash collision for the new ReplicaSet of {}; will retry",
                    rollout.d.name_any()
                )
            }
            Err(e) => {
                self.recorder.warning(
                    reference_to(d),
                    "FailedCreate",
                    format!("Failed to create new replica set {:?}: {e}", rs.name_any()),
                );
                Err(e).context("creating the new ReplicaSet")
            }
        }
    }

    /// The Deployment's revision annotation follows its new ReplicaSet's.
    async fn set_deployment_revision(&self, rollout: &mut Rollout, revision: i64) -> anyhow::Result<()> {
        let value = revision.to_string();
        if rollout
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(util::REVISION))
            == Some(&value)
        {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(
            self.client.clone(),
            rollout.d.metadata.namespace.as_deref().unwrap_or(""),
        );
        let patch = json!({"metadata": {"annotations": {util::REVISION: value}}});
        let patched = api
            .patch(&rollout.d.name_any(), &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        rollout.d.metadata = patched.metadata;
        Ok(())
    }

    async fn update_rs(&self, rs: &ReplicaSet) -> anyhow::Result<ReplicaSet> {
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), rs.metadata.namespace.as_deref().unwrap_or(""));
        api.replace(&rs.name_any(), &PostParams::default(), rs)
            .await
            .with_context(|| format!("updating ReplicaSet {}", rs.name_any()))
    }

    /// Sizes a ReplicaSet and stamps it with the Deployment's size, with upstream's event.
    async fn scale_rs(&self, rollout: &mut Rollout, name: &str, size: i32) -> anyhow::Result<bool> {
        let Some(rs) = rollout.sets.iter().find(|rs| rs.metadata.name.as_deref() == Some(name)) else {
            return Ok(false);
        };
        let mut updated = rs.clone();
        let before = rs_replicas(rs);
        let d = &rollout.d;
        let annotations_changed =
            util::set_replicas_annotations(&mut updated, replicas(d), replicas(d) + util::max_surge(d));
        if before == size && !annotations_changed {
            return Ok(false);
        }
        if let Some(spec) = updated.spec.as_mut() {
            spec.replicas = Some(size);
        }
        let written = self.update_rs(&updated).await?;
        if before != size {
            let direction = if size > before { "up" } else { "down" };
            self.recorder.normal(
                reference_to(&rollout.d),
                "ScalingReplicaSet",
                format!("Scaled {direction} replica set {name} from {before} to {size}"),
            );
        }
        rollout.replace(written);
        Ok(before != size)
    }

    async fn rolling(&self, rollout: &mut Rollout) -> anyhow::Result<()> {
        self.ensure_new(rollout, true).await?;
        let d = rollout.d.clone();
        let desired = replicas(&d);
        // Scale the new set up (or down, if it is above the Deployment's size).
        if let Some(new) = rollout.new_set().cloned() {
            let current = rs_replicas(&new);
            let size = if current > desired {
                desired
            } else {
                sizes::rolling_new_size(&d, &rollout.sets, current)
            };
            if size != current {
                self.scale_rs(rollout, &new.name_any(), size).await?;
                return Ok(());
            }
        }
        // Then the old ones down, unhealthy pods first, within the unavailability budget.
        let mut old: Vec<ReplicaSet> = rollout.old_sets().into_iter().filter(status::is_active).collect();
        if !old.is_empty() {
            sizes::oldest_first(&mut old);
            let budget = sizes::old_scale_down_budget(&d, &rollout.sets, rollout.new_set());
            if budget > 0 {
                let (cleaned, removed) = sizes::cleanup_unhealthy(&old, budget);
                let mut scaled = false;
                for (rs, size) in old.iter().zip(cleaned) {
                    scaled |= self.scale_rs(rollout, &rs.name_any(), size).await?;
                }
                let mut old: Vec<ReplicaSet> = rollout.old_sets().into_iter().filter(status::is_active).collect();
                sizes::oldest_first(&mut old);
                for (rs, size) in old.iter().zip(sizes::scale_down_available(&d, &rollout.sets, &old)) {
                    scaled |= self.scale_rs(rollout, &rs.name_any(), size).await?;
                }
                if scaled || removed > 0 {
                    return Ok(());
                }
            }
        }
        let status = status::calculate(&rollout.d, &rollout.sets, rollout.new_set());
        if status::is_complete(&rollout.d, &status) {
            self.cleanup(rollout).await?;
        }
        Ok(())
    }

    async fn recreate(&self, rollout: &mut Rollout) -> anyhow::Result<()> {
        self.ensure_new(rollout, false).await?;
        let mut scaled_down = false;
        for rs in rollout.old_sets().into_iter().filter(status::is_active) {
            scaled_down |= self.scale_rs(rollout, &rs.name_any(), 0).await?;
        }
        if scaled_down {
            return Ok(());
        }
        if self.old_pods_running(rollout).await? {
            rollout.look_again(OLD_PODS_POLL);
            return Ok(());
        }
        if rollout.new_set().is_none() {
            self.ensure_new(rollout, true).await?;
        }
        if let Some(new) = rollout.new_set().cloned() {
            let desired = replicas(&rollout.d);
            self.scale_rs(rollout, &new.name_any(), desired).await?;
        }
        let status = status::calculate(&rollout.d, &rollout.sets, rollout.new_set());
        if status::is_complete(&rollout.d, &status) {
            self.cleanup(rollout).await?;
        }
        Ok(())
    }

    /// Whether any pod of an old ReplicaSet still runs (or is still terminating): Recreate
    /// starts new pods only after every old one is gone. Asked of the API server, since this
    /// controller keeps no pod cache.
    async fn old_pods_running(&self, rollout: &Rollout) -> anyhow::Result<bool> {
        let old = rollout.old_sets();
        if old.iter().any(|rs| rs_status(rs).0 > 0) {
            return Ok(true);
        }
        if old.is_empty() {
            return Ok(false);
        }
        let old_uids: Vec<&str> = old.iter().filter_map(|rs| rs.metadata.uid.as_deref()).collect();
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            rollout.d.metadata.namespace.as_deref().unwrap_or(""),
        );
        let selector = selector_string(&rollout.d);
        let pods = api.list(&ListParams::default().labels(&selector)).await?;
        Ok(pods.items.iter().any(|p| {
            let owned = controller_of(&p.metadata).is_some_and(|r| old_uids.contains(&r.uid.as_str()));
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            owned && !matches!(phase, Some("Succeeded" | "Failed"))
        }))
    }

    /// Resizes without rolling out (paused Deployments, or a scale in the middle of a
    /// rollout): the active set takes the new size, or all active sets share it
    /// proportionally.
    async fn scale(&self, rollout: &mut Rollout) -> anyhow::Result<()> {
        self.ensure_new(rollout, false).await?;
        let d = rollout.d.clone();
        let desired = replicas(&d);
        let active: Vec<ReplicaSet> = rollout
            .sets
            .iter()
            .filter(|rs| status::is_active(rs))
            .cloned()
            .collect();
        // One active set (or none, but a newest one): it simply takes the new size.
        let only = match active.len() {
            0 => latest(&rollout.sets).cloned(),
            1 => active.first().cloned(),
            _ => None,
        };
        if let Some(rs) = only {
            self.scale_rs(rollout, &rs.name_any(), desired).await?;
            return Ok(());
        }
        // The new set already has everything: the old ones go.
        if let Some(new) = rollout.new_set().cloned()
            && rs_replicas(&new) == desired
            && rs_status(&new).2 == desired
        {
            for rs in rollout.old_sets().into_iter().filter(status::is_active) {
                self.scale_rs(rollout, &rs.name_any(), 0).await?;
            }
            return Ok(());
        }
        if util::is_recreate(&d) {
            return Ok(());
        }
        let mut active = active;
        sizes::sort_for_proportional(&d, &mut active);
        for (rs, size) in active.iter().zip(sizes::proportional_sizes(&d, &active)) {
            self.scale_rs(rollout, &rs.name_any(), size).await?;
        }
        Ok(())
    }

    /// Deletes the oldest empty old ReplicaSets beyond `revisionHistoryLimit`.
    async fn cleanup(&self, rollout: &Rollout) -> anyhow::Result<()> {
        let limit = rollout
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let mut empty: Vec<ReplicaSet> = rollout
            .old_sets()
            .into_iter()
            .filter(|rs| rs_replicas(rs) == 0 && rs_status(rs).0 == 0 && rs.metadata.deletion_timestamp.is_none())
            .collect();
        if empty.len() <= limit {
            return Ok(());
        }
        empty.sort_by_key(revision);
        let api: Api<ReplicaSet> = Api::namespaced(
            self.client.clone(),
            rollout.d.metadata.namespace.as_deref().unwrap_or(""),
        );
        for rs in &empty[..empty.len() - limit] {
            ignore_gone(api.delete(&rs.name_any(), &DeleteParams::default()).await.map(|_| ()))?;
        }
        Ok(())
    }

    /// Writes the status the ReplicaSets show, when it changed, and schedules the next look.
    async fn write_status(&self, rollout: &mut Rollout) -> anyhow::Result<()> {
        let mut status = status::calculate(&rollout.d, &rollout.sets, rollout.new_set());
        if let Some(wait) = status::set_progress(&rollout.d, &mut status, rollout.new_set()) {
            rollout.look_again(wait + Duration::from_millis(100));
        }
        if let Some(min_ready) = rollout
            .d
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .filter(|s| *s > 0)
            && status.available_replicas < status.ready_replicas
        {
            rollout.look_again(Duration::from_secs(min_ready.unsigned_abs().into()));
        }
        let stored = self.deployments.get(
            rollout.d.metadata.namespace.as_deref().unwrap_or(""),
            &rollout.d.name_any(),
        );
        let stored_status: Option<DeploymentStatus> = stored.and_then(|d| d.status.clone());
        if stored_status.as_ref() != Some(&status) {
            let mut updated = rollout.d.clone();
            updated.status = Some(status);
            let api: Api<Deployment> = Api::namespaced(
                self.client.clone(),
                rollout.d.metadata.namespace.as_deref().unwrap_or(""),
            );
            let written = api
                .replace_status(&rollout.d.name_any(), &PostParams::default(), &updated)
                .await
                .context("updating the deployment status")?;
            rollout.d = written;
        }
        if let Some(after) = rollout.again {
            self.queue.add_after(key_of(&rollout.d), after);
        }
        Ok(())
    }
}

/// The oldest ReplicaSet whose template is the Deployment's (upstream's FindNewReplicaSet).
fn find_new<'a>(d: &Deployment, sets: &'a [ReplicaSet]) -> Option<&'a ReplicaSet> {
    let template = &d.spec.as_ref()?.template;
    let mut matching: Vec<&ReplicaSet> = sets
        .iter()
        .filter(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| util::same_template(t, template))
        })
        .collect();
    matching.sort_by(|a, b| {
        let created = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a)
            .cmp(&created(b))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    matching.first().copied()
}

fn latest(sets: &[ReplicaSet]) -> Option<&ReplicaSet> {
    sets.iter()
        .max_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// A resize, not a template change: an active set's desired-replicas annotation differs from
/// the Deployment's replicas.
fn is_scaling_event(rollout: &Rollout) -> bool {
    let desired = replicas(&rollout.d);
    rollout
        .sets
        .iter()
        .filter(|rs| status::is_active(rs))
        .any(|rs| util::desired_annotation(rs).is_some_and(|n| n != desired))
}

/// The Deployment's selector as a label-selector query string.
fn selector_string(d: &Deployment) -> String {
    let Some(selector) = d.spec.as_ref().map(|s| &s.selector) else {
        return String::new();
    };
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// A write that found its object gone (or changed under it) is nothing to retry.
fn ignore_gone<T>(result: Result<T, kube::Error>) -> anyhow::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 422 => Ok(None),
        Err(e) => Err(e.into()),
    }
}
