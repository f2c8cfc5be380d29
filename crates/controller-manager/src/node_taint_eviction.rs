//! The taint eviction controller (upstream's taint-eviction-controller): a pod on a node with a
//! NoExecute taint it does not tolerate is deleted at once; one that tolerates every such taint
//! for a while (`tolerationSeconds`) is deleted when that while, counted from the taint's
//! `timeAdded`, is over; one that tolerates them forever stays. Each eviction is announced
//! with a `TaintManagerEviction` event on the pod and a `DisruptionTarget` condition.
//!
//! Counting from `timeAdded` (not from when this process noticed the taint) keeps the promise
//! across controller restarts; a taint without one counts from when it was first seen here.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use styrman_runtime::{Recorder, WorkQueue, reference_to};

use super::events;

const WORKERS: usize = 8;

/// Upstream's ToleratesTaint.
fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if toleration
        .effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// When a pod with `tolerations` must go from a node with these NoExecute `taints`: `now` if
/// one is not tolerated, the earliest end of a limited toleration otherwise, None if every
/// taint is tolerated forever (or there are none). Each taint is judged by the first
/// toleration matching it, as upstream's GetMatchingTolerations picks it.
fn decide(taints: &[Taint], tolerations: &[Toleration], now: Timestamp) -> Option<Timestamp> {
    let mut earliest: Option<Timestamp> = None;
    for taint in taints {
        let Some(toleration) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Some(now);
        };
        if let Some(end) = toleration_end(toleration, taint, now) {
            earliest = Some(earliest.map_or(end, |e| e.min(end)));
        }
    }
    earliest
}

/// The end of one limited toleration of `taint`; None if unlimited.
fn toleration_end(toleration: &Toleration, taint: &Taint, now: Timestamp) -> Option<Timestamp> {
    let seconds = toleration.toleration_seconds?.max(0);
    let since = taint.time_added.as_ref().map_or(now, |t| t.0);
    Some(
        since
            .saturating_add(SignedDuration::from_secs(seconds))
            .unwrap_or(since),
    )
}

struct PodEntry {
    node: String,
    uid: Option<String>,
    tolerations: Vec<Toleration>,
}

#[derive(Default)]
struct State {
    /// Each node's NoExecute taints, a missing timeAdded filled in with when it was first seen.
    taints: HashMap<String, Vec<Taint>>,
    /// Pods bound to a node and not yet being deleted, by `namespace/name`.
    pods: HashMap<String, PodEntry>,
    on_node: HashMap<String, BTreeSet<String>>,
    /// When each doomed pod is to be deleted.
    scheduled: HashMap<String, Timestamp>,
}

impl State {
    /// Records a node's taints; returns the pods to judge again if its NoExecute ones changed.
    fn set_node(&mut self, node: &Node, now: Timestamp) -> Vec<String> {
        let name = node.name_any();
        let previous = self.taints.get(&name).cloned().unwrap_or_default();
        let taints: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter(|t| t.effect == "NoExecute")
            .map(|t| {
                let mut t = t.clone();
                if t.time_added.is_none() {
                    let seen = previous
                        .iter()
                        .find(|p| p.key == t.key && p.value == t.value)
                        .and_then(|p| p.time_added.clone());
                    t.time_added = Some(seen.unwrap_or(Time(now)));
                }
                t
            })
            .collect();
        if taints == previous {
            return Vec::new();
        }
        if taints.is_empty() {
            self.taints.remove(&name);
        } else {
            self.taints.insert(name.clone(), taints);
        }
        self.on_node
            .get(&name)
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn remove_node(&mut self, name: &str) -> Vec<String> {
        self.taints.remove(name);
        self.on_node
            .get(name)
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn set_pod(&mut self, key: &str, entry: PodEntry) {
        self.remove_pod(key);
        self.on_node
            .entry(entry.node.clone())
            .or_default()
            .insert(key.to_string());
        self.pods.insert(key.to_string(), entry);
    }

    fn remove_pod(&mut self, key: &str) {
        self.scheduled.remove(key);
        if let Some(old) = self.pods.remove(key)
            && let Some(keys) = self.on_node.get_mut(&old.node)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.on_node.remove(&old.node);
            }
        }
    }

    /// Judges one pod again; returns when to look at it if its deletion is (re)scheduled.
    fn evaluate(&mut self, key: &str, now: Timestamp) -> Option<Timestamp> {
        let decision = self.pods.get(key).and_then(|pod| {
            let taints = self.taints.get(&pod.node).map(Vec::as_slice).unwrap_or_default();
            decide(taints, &pod.tolerations, now)
        });
        match decision {
            None => {
                if self.scheduled.remove(key).is_some() {
                    tracing::info!(pod = key, "pod's eviction cancelled");
                }
                None
            }
            Some(at) if self.scheduled.get(key) == Some(&at) => None,
            Some(at) => {
                self.scheduled.insert(key.to_string(), at);
                Some(at)
            }
        }
    }
}

fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// A change from either watch; boxed, as a Pod event is large and they queue up in the stream.
enum Change {
    Node(Box<Result<Event<Node>, watcher::Error>>),
    Pod(Box<Result<Event<Pod>, watcher::Error>>),
}

/// The names seen in the current (re)list, to forget what went while the watch was down.
#[derive(Default)]
struct Listing {
    nodes: Option<HashSet<String>>,
    pods: Option<HashSet<String>>,
}

pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    let state: Arc<Mutex<State>> = Default::default();
    let queue: Arc<WorkQueue<String>> = WorkQueue::new();
    let recorder = events::recorder(client.clone(), "taint-eviction-controller");
    let workers = tokio::spawn(Arc::clone(&queue).run_workers(WORKERS, "taint-eviction", {
        let (client, state) = (client.clone(), Arc::clone(&state));
        move |key: String| {
            let (client, state, recorder) = (client.clone(), Arc::clone(&state), recorder.clone());
            async move { evict_if_due(&client, &state, &recorder, &key).await }
        }
    }));
    let nodes = watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(|e| Change::Node(Box::new(e)));
    let pods = watcher::watcher(
        Api::<Pod>::all(client),
        watcher::Config::default().fields("spec.nodeName!="),
    )
    .default_backoff()
    .map(|e| Change::Pod(Box::new(e)));
    let mut changes = futures::stream::select(nodes.boxed(), pods.boxed());
    let mut listing = Listing::default();
    while let Some(change) = changes.next().await {
        let now = Timestamp::now();
        let mut state = state.lock().expect("taint eviction lock");
        let to_judge = match change {
            Change::Node(event) => on_node(&mut state, &mut listing, *event, now),
            Change::Pod(event) => on_pod(&mut state, &mut listing, *event),
        };
        for key in to_judge {
            if let Some(at) = state.evaluate(&key, now) {
                let delay = at.duration_since(now);
                queue.add_after(
                    key,
                    if delay.is_negative() {
                        std::time::Duration::ZERO
                    } else {
                        delay.unsigned_abs()
                    },
                );
            }
        }
    }
    workers.abort();
    anyhow::bail!("the taint eviction controller's watches ended")
}

/// Records a node change; returns the pods to judge again.
fn on_node(
    state: &mut State,
    listing: &mut Listing,
    event: Result<Event<Node>, watcher::Error>,
    now: Timestamp,
) -> Vec<String> {
    match event {
        Ok(Event::Init) => {
            listing.nodes = Some(HashSet::new());
            Vec::new()
        }
        Ok(Event::InitApply(node)) => {
            listing.nodes.get_or_insert_with(HashSet::new).insert(node.name_any());
            state.set_node(&node, now)
        }
        Ok(Event::Apply(node)) => state.set_node(&node, now),
        Ok(Event::Delete(node)) => state.remove_node(&node.name_any()),
        Ok(Event::InitDone) => {
            let listed = listing.nodes.take().unwrap_or_default();
            let gone: Vec<String> = state.taints.keys().filter(|n| !listed.contains(*n)).cloned().collect();
            gone.iter().flat_map(|n| state.remove_node(n)).collect()
        }
        Err(e) => {
            tracing::warn!(error = %e, "taint eviction node watch failed; retrying");
            Vec::new()
        }
    }
}

/// Records a pod change; returns the pods to judge again.
fn on_pod(state: &mut State, listing: &mut Listing, event: Result<Event<Pod>, watcher::Error>) -> Vec<String> {
    match event {
        Ok(Event::Init) => {
            listing.pods = Some(HashSet::new());
            Vec::new()
        }
        Ok(Event::InitApply(pod) | Event::Apply(pod)) => {
            let key = pod_key(&pod);
            if let Some(listed) = listing.pods.as_mut() {
                listed.insert(key.clone());
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
            // Already going, or done: nothing to evict.
            if pod.metadata.deletion_timestamp.is_some()
                || matches!(phase, Some("Succeeded" | "Failed"))
                || node.is_empty()
            {
                state.remove_pod(&key);
                return Vec::new();
            }
            let tolerations = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default();
            state.set_pod(
                &key,
                PodEntry {
                    node,
                    uid: pod.uid(),
                    tolerations,
                },
            );
            vec![key]
        }
        Ok(Event::Delete(pod)) => {
            state.remove_pod(&pod_key(&pod));
            Vec::new()
        }
        Ok(Event::InitDone) => {
            let listed = listing.pods.take().unwrap_or_default();
            let gone: Vec<String> = state.pods.keys().filter(|k| !listed.contains(*k)).cloned().collect();
            gone.iter().for_each(|k| state.remove_pod(k));
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(error = %e, "taint eviction pod watch failed; retrying");
            Vec::new()
        }
    }
}

/// Deletes the pod if its time has come (its schedule may have moved or gone since the timer
/// was set: the schedule, not the timer, decides).
async fn evict_if_due(
    client: &kube::Client,
    state: &Mutex<State>,
    recorder: &Recorder,
    key: &str,
) -> anyhow::Result<()> {
    let (at, uid) = {
        let state = state.lock().expect("taint eviction lock");
        let Some(at) = state.scheduled.get(key).copied() else {
            return Ok(());
        };
        if at > Timestamp::now() {
            return Ok(());
        }
        (at, state.pods.get(key).and_then(|p| p.uid.clone()))
    };
    let (namespace, name) = key.split_once('/').context("a pod key is namespace/name")?;
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Some(pod) = api.get_opt(name).await.context("reading the pod")? else {
        return Ok(());
    };
    if pod.uid() != uid || pod.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    tracing::info!(pod = key, "evicting pod from a NoExecute-tainted node");
    recorder.normal(
        reference_to(&pod),
        "TaintManagerEviction",
        format!("Marking for deletion Pod {key}"),
    );
    let condition = json!({"status": {"conditions": [{
        "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
        "message": "Taint manager: deleting due to NoExecute taint",
        "lastTransitionTime": Timestamp::now().round(jiff::Unit::Second)?.to_string(),
    }]}});
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(condition))
        .await
    {
        tracing::debug!(pod = key, error = %e, "cannot set the DisruptionTarget condition");
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => return Err(e).context("deleting the pod"),
    }
    let mut state = state.lock().expect("taint eviction lock");
    if state.scheduled.get(key) == Some(&at) {
        state.scheduled.remove(key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, added: Option<&str>) -> Taint {
        Taint {
            key: key.into(),
            value: None,
            effect: "NoExecute".into(),
            time_added: added.map(|t| Time(t.parse().unwrap())),
        }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            ..Default::default()
        }
    }

    fn at(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
    const NOT_READY: &str = "node.kubernetes.io/not-ready";

    #[test]
    fn untolerated_taints_evict_now() {
        let now = at("2025-01-01T00:01:00Z");
        let taints = [taint(UNREACHABLE, Some("2025-01-01T00:00:00Z"))];
        assert_eq!(decide(&taints, &[], now), Some(now));
        assert_eq!(decide(&taints, &[toleration(NOT_READY, None)], now), Some(now));
        // An Equal toleration with another value does not match.
        let wrong_value = Toleration {
            key: Some(UNREACHABLE.into()),
            operator: Some("Equal".into()),
            value: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(decide(&taints, &[wrong_value], now), Some(now));
    }

    #[test]
    fn limited_tolerations_count_from_time_added() {
        let now = at("2025-01-01T00:01:00Z");
        let taints = [taint(UNREACHABLE, Some("2025-01-01T00:00:00Z"))];
        assert_eq!(
            decide(&taints, &[toleration(UNREACHABLE, Some(300))], now),
            Some(at("2025-01-01T00:05:00Z"))
        );
        // Long over already: now-ish (the past).
        assert_eq!(
            decide(&taints, &[toleration(UNREACHABLE, Some(10))], now),
            Some(at("2025-01-01T00:00:10Z"))
        );
        assert_eq!(
            decide(&taints, &[toleration(UNREACHABLE, Some(-5))], now),
            Some(at("2025-01-01T00:00:00Z"))
        );
        // No timeAdded: from now.
        assert_eq!(
            decide(&[taint(UNREACHABLE, None)], &[toleration(UNREACHABLE, Some(30))], now),
            Some(at("2025-01-01T00:01:30Z"))
        );
    }

    #[test]
    fn forever_tolerations_keep_the_pod_and_the_earliest_limit_wins() {
        let now = at("2025-01-01T00:01:00Z");
        let taints = [
            taint(UNREACHABLE, Some("2025-01-01T00:00:00Z")),
            taint(NOT_READY, Some("2025-01-01T00:00:30Z")),
        ];
        let wildcard = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert_eq!(decide(&taints, &[wildcard], now), None);
        assert_eq!(decide(&[], &[], now), None);
        let both = [toleration(UNREACHABLE, None), toleration(NOT_READY, Some(60))];
        assert_eq!(decide(&taints, &both, now), Some(at("2025-01-01T00:01:30Z")));
        let both = [toleration(UNREACHABLE, Some(20)), toleration(NOT_READY, Some(60))];
        assert_eq!(decide(&taints, &both, now), Some(at("2025-01-01T00:00:20Z")));
    }

    #[test]
    fn state_schedules_and_cancels_as_taints_come_and_go() {
        let now = at("2025-01-01T00:01:00Z");
        let mut state = State::default();
        state.set_pod(
            "ns/a",
            PodEntry {
                node: "n".into(),
                uid: None,
                tolerations: vec![],
            },
        );
        state.set_pod(
            "ns/b",
            PodEntry {
                node: "n".into(),
                uid: None,
                tolerations: vec![toleration(UNREACHABLE, None)],
            },
        );
        let mut node = Node::default();
        node.metadata.name = Some("n".into());
        node.spec = Some(Default::default());
        node.spec.as_mut().unwrap().taints = Some(vec![taint(UNREACHABLE, None)]);
        let judged = state.set_node(&node, now);
        assert_eq!(judged, ["ns/a", "ns/b"]);
        assert_eq!(state.evaluate("ns/a", now), Some(now));
        assert_eq!(state.evaluate("ns/b", now), None);
        // The same taints again (timeAdded still missing): nothing to judge, the first-seen
        // time is kept.
        assert!(state.set_node(&node, at("2025-01-01T00:02:00Z")).is_empty());
        node.spec.as_mut().unwrap().taints = None;
        assert_eq!(state.set_node(&node, now).len(), 2);
        assert_eq!(state.evaluate("ns/a", now), None);
        assert!(state.scheduled.is_empty());
        state.remove_pod("ns/a");
        assert_eq!(state.on_node["n"].len(), 1);
    }
}
