//! An informer cache indexed by namespace, shared by the endpoints and endpointslice
//! controllers.
//!
//! kube-rs's reflector store answers "get by name" and "everything", but these controllers ask
//! "every pod in this namespace" on each sync and need the object as it was before a change
//! (a pod whose labels changed leaves the Services that selected it). So the cache keeps
//! objects by namespace and hands every change back with the previous version.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kube::Resource;
use kube::runtime::watcher::Event;

/// What one watch event changed in the cache.
pub enum Change<K> {
    /// Added or modified; `old` is the cached version before, if there was one.
    Upsert { old: Option<Arc<K>>, new: Arc<K> },
    Delete(Arc<K>),
}

pub struct NamespacedCache<K> {
    state: RwLock<State<K>>,
}

struct State<K> {
    /// namespace ("" for cluster-scoped objects) → name → object.
    by_namespace: HashMap<String, HashMap<String, Arc<K>>>,
    /// Objects of a (re-)list in progress; they replace the cache when it completes, so
    /// readers never see a half-listed world.
    relisting: Option<HashMap<String, HashMap<String, Arc<K>>>>,
    synced: bool,
}

fn namespace_and_name<K: Resource>(object: &K) -> (String, String) {
    let meta = object.meta();
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

impl<K: Resource> NamespacedCache<K> {
    pub fn new() -> Arc<Self> {
        Arc::new(NamespacedCache {
            state: RwLock::new(State {
                by_namespace: HashMap::new(),
                relisting: None,
                synced: false,
            }),
        })
    }

    /// Whether the first list has completed.
    pub fn is_synced(&self) -> bool {
        self.state.read().expect("cache lock").synced
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let state = self.state.read().expect("cache lock");
        state.by_namespace.get(namespace)?.get(name).cloned()
    }

    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let state = self.state.read().expect("cache lock");
        state
            .by_namespace
            .get(namespace)
            .map(|objects| objects.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn all(&self) -> Vec<Arc<K>> {
        let state = self.state.read().expect("cache lock");
        state.by_namespace.values().flat_map(|objects| objects.values().cloned()).collect()
    }

    /// Applies one watch event and says what it changed. A completed re-list reports the
    /// objects that went while the watch was down as deletions.
    pub fn apply(&self, event: Event<K>) -> Vec<Change<K>> {
        let mut state = self.state.write().expect("cache lock");
        match event {
            Event::Init => {
                state.relisting = Some(HashMap::new());
                Vec::new()
            }
            Event::InitApply(object) => {
                let (namespace, name) = namespace_and_name(&object);
                state
                    .relisting
                    .get_or_insert_with(HashMap::new)
                    .entry(namespace)
                    .or_default()
                    .insert(name, Arc::new(object));
                Vec::new()
            }
            Event::InitDone => {
                let listed = state.relisting.take().unwrap_or_default();
                let before = std::mem::replace(&mut state.by_namespace, listed);
                state.synced = true;
                let mut changes = Vec::new();
                for (namespace, objects) in &state.by_namespace {
                    let old_objects = before.get(namespace);
                    for (name, new) in objects {
                        let old = old_objects.and_then(|o| o.get(name)).cloned();
                        if old.as_ref().is_some_and(|old| same_version(old.as_ref(), new.as_ref())) {
                            continue;
                        }
                        changes.push(Change::Upsert { old, new: Arc::clone(new) });
                    }
                }
                for (namespace, objects) in before {
                    let now = state.by_namespace.get(&namespace);
                    for (name, old) in objects {
                        if now.is_none_or(|n| !n.contains_key(&name)) {
                            changes.push(Change::Delete(old));
                        }
                    }
                }
                changes
            }
            Event::Apply(object) => {
                let (namespace, name) = namespace_and_name(&object);
                let new = Arc::new(object);
                let old = state
                    .by_namespace
                    .entry(namespace)
                    .or_default()
                    .insert(name, Arc::clone(&new));
                vec![Change::Upsert { old, new }]
            }
            Event::Delete(object) => {
                let (namespace, name) = namespace_and_name(&object);
                let objects = state.by_namespace.get_mut(&namespace);
                let old = objects.and_then(|o| o.remove(&name));
                if state.by_namespace.get(&namespace).is_some_and(HashMap::is_empty) {
                    state.by_namespace.remove(&namespace);
                }
                vec![Change::Delete(old.unwrap_or_else(|| Arc::new(object)))]
            }
        }
    }
}

/// Drops what the controllers never read and which is most of a small object's size.
pub fn without_managed_fields<K: Resource>(event: Event<K>) -> Event<K> {
    event.modify(|object| object.meta_mut().managed_fields = None)
}

fn same_version<K: Resource>(a: &K, b: &K) -> bool {
    let (a, b) = (a.meta(), b.meta());
    a.uid == b.uid && a.resource_version.is_some() && a.resource_version == b.resource_version
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(namespace: &str, name: &str, rv: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_relist_reports_what_changed_and_what_went() {
        let cache = NamespacedCache::new();
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(pod("a", "kept", "1")));
        cache.apply(Event::InitApply(pod("a", "changed", "1")));
        cache.apply(Event::InitApply(pod("b", "gone", "1")));
        assert!(!cache.is_synced());
        assert_eq!(cache.apply(Event::InitDone).len(), 3);
        assert!(cache.is_synced());
        assert_eq!(cache.in_namespace("a").len(), 2);

        cache.apply(Event::Init);
        cache.apply(Event::InitApply(pod("a", "kept", "1")));
        cache.apply(Event::InitApply(pod("a", "changed", "2")));
        // Until the list completes, readers see the old world.
        assert!(cache.get("b", "gone").is_some());
        let changes = cache.apply(Event::InitDone);
        let mut seen: Vec<String> = changes
            .iter()
            .map(|c| match c {
                Change::Upsert { old, new } => format!("upsert {} had-old={}", new.metadata.name.as_deref().unwrap(), old.is_some()),
                Change::Delete(o) => format!("delete {}", o.metadata.name.as_deref().unwrap()),
            })
            .collect();
        seen.sort();
        assert_eq!(seen, ["delete gone", "upsert changed had-old=true"]);
        assert!(cache.get("b", "gone").is_none());
    }

    #[test]
    fn an_update_hands_back_the_previous_version() {
        let cache = NamespacedCache::new();
        cache.apply(Event::Apply(pod("a", "p", "1")));
        let changes = cache.apply(Event::Apply(pod("a", "p", "2")));
        let [Change::Upsert { old: Some(old), new }] = changes.as_slice() else {
            panic!("expected one upsert with the old version");
        };
        assert_eq!(old.metadata.resource_version.as_deref(), Some("1"));
        assert_eq!(new.metadata.resource_version.as_deref(), Some("2"));
        cache.apply(Event::Delete(pod("a", "p", "3")));
        assert!(cache.in_namespace("a").is_empty());
    }
}
