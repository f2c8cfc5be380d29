//! What selects a pod, for PodTopologySpread's default constraints: the Services,
//! ReplicationControllers, ReplicaSets and StatefulSets of the cluster, kept as their selectors
//! only (the rest of each object is dropped on arrival), and upstream's DefaultSelector built
//! from them: the labels every Service selecting the pod selects, plus the selector of the
//! ReplicationController, ReplicaSet or StatefulSet that controls it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

type Labels = BTreeMap<String, String>;
/// (namespace, name)
type Key = (String, String);

#[derive(Default)]
pub struct Selectors {
    /// Per namespace, each Service's `spec.selector` (None: a Service without one).
    services: HashMap<String, HashMap<String, Option<Labels>>>,
    replication_controllers: HashMap<Key, Labels>,
    replica_sets: HashMap<Key, LabelSelector>,
    stateful_sets: HashMap<Key, LabelSelector>,
}

impl Selectors {
    /// The selector the pod's default constraints count with; None when nothing selects the
    /// pod (it then gets no default constraints).
    pub fn default_selector(&self, pod: &Pod) -> Option<LabelSelector> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let mut match_labels = Labels::new();
        // Services that select the pod agree with its labels, so merging their selectors is safe.
        for selector in self
            .services
            .get(&namespace)
            .into_iter()
            .flat_map(|s| s.values())
            .flatten()
        {
            if selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                match_labels.extend(selector.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        let mut selector = LabelSelector::default();
        if let Some(owner) = pod.owner_references().iter().find(|o| o.controller == Some(true)) {
            let key = (namespace.clone(), owner.name.clone());
            match (owner.api_version.as_str(), owner.kind.as_str()) {
                ("v1", "ReplicationController") => {
                    if let Some(rc) = self.replication_controllers.get(&key) {
                        match_labels.extend(rc.clone());
                    }
                }
                ("apps/v1", "ReplicaSet") => selector = self.replica_sets.get(&key).cloned().unwrap_or_default(),
                ("apps/v1", "StatefulSet") => selector = self.stateful_sets.get(&key).cloned().unwrap_or_default(),
                _ => {}
            }
        }
        let mut all_labels = selector.match_labels.take().unwrap_or_default();
        all_labels.extend(match_labels);
        if all_labels.is_empty() && selector.match_expressions.as_ref().is_none_or(|e| e.is_empty()) {
            return None;
        }
        selector.match_labels = Some(all_labels);
        Some(selector)
    }
}

/// A kind whose objects select pods: how its selector is kept.
trait Selecting: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static {
    /// Keeps the object's selector, or forgets it (`object` None: deleted).
    fn store(selectors: &mut Selectors, key: Key, object: Option<Self>);
    /// Forgets every object of the kind (before a fresh listing replaces them).
    fn clear(selectors: &mut Selectors);
}

impl Selecting for Service {
    fn store(selectors: &mut Selectors, (namespace, name): Key, object: Option<Service>) {
        let by_name = selectors.services.entry(namespace).or_default();
        match object {
            Some(svc) => {
                by_name.insert(name, svc.spec.and_then(|spec| spec.selector));
            }
            None => {
                by_name.remove(&name);
            }
        }
    }

    fn clear(selectors: &mut Selectors) {
        selectors.services.clear();
    }
}

impl Selecting for ReplicationController {
    fn store(selectors: &mut Selectors, key: Key, object: Option<ReplicationController>) {
        match object.and_then(|rc| rc.spec).and_then(|spec| spec.selector) {
            Some(selector) => selectors.replication_controllers.insert(key, selector),
            None => selectors.replication_controllers.remove(&key),
        };
    }

    fn clear(selectors: &mut Selectors) {
        selectors.replication_controllers.clear();
    }
}

impl Selecting for ReplicaSet {
    fn store(selectors: &mut Selectors, key: Key, object: Option<ReplicaSet>) {
        match object.and_then(|rs| rs.spec) {
            Some(spec) => selectors.replica_sets.insert(key, spec.selector),
            None => selectors.replica_sets.remove(&key),
        };
    }

    fn clear(selectors: &mut Selectors) {
        selectors.replica_sets.clear();
    }
}

impl Selecting for StatefulSet {
    fn store(selectors: &mut Selectors, key: Key, object: Option<StatefulSet>) {
        match object.and_then(|ss| ss.spec) {
            Some(spec) => selectors.stateful_sets.insert(key, spec.selector),
            None => selectors.stateful_sets.remove(&key),
        };
    }

    fn clear(selectors: &mut Selectors) {
        selectors.stateful_sets.clear();
    }
}

/// Watches the four kinds into `selectors`; `synced` is bumped once per kind, when it has been
/// listed for the first time.
pub fn watch(
    client: &kube::Client,
    selectors: &Arc<Mutex<Selectors>>,
    synced: &tokio::sync::watch::Sender<u8>,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(watch_kind::<Service>(
            client.clone(),
            Arc::clone(selectors),
            synced.clone(),
        )),
        tokio::spawn(watch_kind::<ReplicationController>(
            client.clone(),
            Arc::clone(selectors),
            synced.clone(),
        )),
        tokio::spawn(watch_kind::<ReplicaSet>(
            client.clone(),
            Arc::clone(selectors),
            synced.clone(),
        )),
        tokio::spawn(watch_kind::<StatefulSet>(
            client.clone(),
            Arc::clone(selectors),
            synced.clone(),
        )),
    ]
}

fn key_of<K: Resource>(object: &K) -> Key {
    (
        object.meta().namespace.clone().unwrap_or_default(),
        object.meta().name.clone().unwrap_or_default(),
    )
}

async fn watch_kind<K: Selecting>(
    client: kube::Client,
    selectors: Arc<Mutex<Selectors>>,
    synced: tokio::sync::watch::Sender<u8>,
) {
    let api: Api<K> = Api::all(client);
    let mut listing: Vec<K> = Vec::new();
    let mut first_sync = true;
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(object)) => listing.push(object),
            Ok(Event::InitDone) => {
                let mut selectors = selectors.lock().expect("selectors lock");
                K::clear(&mut selectors);
                for object in listing.drain(..) {
                    K::store(&mut selectors, key_of(&object), Some(object));
                }
                drop(selectors);
                if first_sync {
                    first_sync = false;
                    synced.send_modify(|n| *n += 1);
                }
            }
            Ok(Event::Apply(object)) => {
                K::store(
                    &mut selectors.lock().expect("selectors lock"),
                    key_of(&object),
                    Some(object),
                );
            }
            Ok(Event::Delete(object)) => {
                K::store(&mut selectors.lock().expect("selectors lock"), key_of(&object), None);
            }
            Err(e) => tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object<K: DeserializeOwned>(value: serde_json::Value) -> K {
        serde_json::from_value(value).unwrap()
    }

    fn pod(labels: serde_json::Value, owner: Option<(&str, &str, &str)>) -> Pod {
        let owners: Vec<_> = owner
            .into_iter()
            .map(|(api_version, kind, name)| json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": "u", "controller": true}))
            .collect();
        object(json!({"metadata": {"name": "p", "namespace": "web", "labels": labels, "ownerReferences": owners}}))
    }

    #[test]
    fn services_and_controllers_that_select_the_pod_make_its_selector() {
        let mut s = Selectors::default();
        let svc = |ns: &str, name: &str, selector: serde_json::Value| -> Service {
            object(json!({"metadata": {"name": name, "namespace": ns}, "spec": {"selector": selector}}))
        };
        Service::store(
            &mut s,
            ("web".into(), "front".into()),
            Some(svc("web", "front", json!({"app": "web"}))),
        );
        Service::store(
            &mut s,
            ("web".into(), "tier".into()),
            Some(svc("web", "tier", json!({"tier": "fe"}))),
        );
        Service::store(
            &mut s,
            ("web".into(), "other".into()),
            Some(svc("web", "other", json!({"app": "db"}))),
        );
        Service::store(
            &mut s,
            ("web".into(), "headless".into()),
            Some(object(json!({"metadata": {"name": "headless"}}))),
        );
        Service::store(
            &mut s,
            ("elsewhere".into(), "front".into()),
            Some(svc("elsewhere", "front", json!({"x": "y"}))),
        );
        let rs: ReplicaSet = object(
            json!({"metadata": {"name": "web-1", "namespace": "web"}, "spec": {"selector": {
            "matchLabels": {"pod-template-hash": "1"}, "matchExpressions": [{"key": "app", "operator": "Exists"}]}}}),
        );
        ReplicaSet::store(&mut s, ("web".into(), "web-1".into()), Some(rs));

        let labels = json!({"app": "web", "tier": "fe", "pod-template-hash": "1"});
        let only_services = s.default_selector(&pod(labels.clone(), None)).unwrap();
        assert_eq!(
            only_services.match_labels.unwrap(),
            Labels::from([("app".into(), "web".into()), ("tier".into(), "fe".into())])
        );
        let owned = s
            .default_selector(&pod(labels.clone(), Some(("apps/v1", "ReplicaSet", "web-1"))))
            .unwrap();
        assert_eq!(owned.match_labels.unwrap().len(), 3);
        assert_eq!(owned.match_expressions.unwrap().len(), 1);
        // Nothing selects it: no default constraints.
        assert_eq!(s.default_selector(&pod(json!({"app": "batch"}), None)), None);
        Service::store(&mut s, ("web".into(), "front".into()), None);
        Service::store(&mut s, ("web".into(), "tier".into()), None);
        assert_eq!(s.default_selector(&pod(labels, None)), None);
    }
}
