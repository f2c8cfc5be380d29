//! An informer as client-go has them: a watch of one kind kept as an in-memory cache indexed by
//! namespace, and handlers told of every change with the object's previous state, so a
//! controller can enqueue both the old and the new owner of an object that moved.
//!
//! kube-rs' reflector keeps a store but hands out only the new object; controllers that adopt
//! and release (ReplicaSets, Deployments, Endpoints) need the old one too.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// One change the cache went through.
pub enum Change<'a, K> {
    /// Created (`old` is None) or modified.
    Applied { old: Option<&'a Arc<K>>, new: &'a Arc<K> },
    Deleted(&'a Arc<K>),
}

type Handler<K> = Box<dyn Fn(Change<'_, K>) + Send + Sync>;

/// The objects of one kind, by namespace ("" for cluster-scoped ones) and name.
pub struct Cache<K> {
    objects: RwLock<HashMap<String, BTreeMap<String, Arc<K>>>>,
    synced: watch::Sender<bool>,
}

impl<K> Cache<K> {
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let objects = self.objects.read().expect("informer cache lock");
        objects.get(namespace).and_then(|m| m.get(name)).cloned()
    }

    /// Every object in `namespace`, in name order.
    pub fn list(&self, namespace: &str) -> Vec<Arc<K>> {
        let objects = self.objects.read().expect("informer cache lock");
        objects.get(namespace).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Waits until the first full list has been loaded.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.subscribe();
        let _ = synced.wait_for(|s| *s).await;
    }
}

pub struct Informer<K> {
    api: Api<K>,
    config: watcher::Config,
    cache: Arc<Cache<K>>,
    handlers: Vec<Handler<K>>,
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    pub fn new(api: Api<K>, config: watcher::Config) -> Informer<K> {
        Informer {
            api,
            config,
            cache: Arc::new(Cache {
                objects: RwLock::new(HashMap::new()),
                synced: watch::Sender::new(false),
            }),
            handlers: Vec::new(),
        }
    }

    pub fn cache(&self) -> Arc<Cache<K>> {
        Arc::clone(&self.cache)
    }

    /// Calls `handler` for every change, after the cache holds it. Handlers run on the watch
    /// task: they should only enqueue keys.
    pub fn on_change(&mut self, handler: impl Fn(Change<'_, K>) + Send + Sync + 'static) {
        self.handlers.push(Box::new(handler));
    }

    /// Watches until the watch stream ends (it retries with backoff, so only on shutdown).
    pub async fn run(self) -> anyhow::Result<()> {
        let mut events = watcher::watcher(self.api.clone(), self.config.clone()).default_backoff().boxed();
        // A relist's objects, gathered until it completes, then swapped in at once.
        let mut relist: Option<HashMap<String, BTreeMap<String, Arc<K>>>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => relist = Some(HashMap::new()),
                Ok(Event::InitApply(object)) => {
                    if let Some(relist) = relist.as_mut() {
                        let object = Arc::new(object);
                        relist.entry(namespace_of(&*object)).or_default().insert(object.name_any(), object);
                    }
                }
                Ok(Event::InitDone) => {
                    if let Some(relist) = relist.take() {
                        self.replace(relist);
                    }
                    self.cache.synced.send_replace(true);
                }
                Ok(Event::Apply(object)) => self.apply(Arc::new(object)),
                Ok(Event::Delete(object)) => self.delete(&object),
                Err(e) => tracing::warn!(error = %e, kind = %K::kind(&Default::default()), "watch failed; retrying"),
            }
        }
        anyhow::bail!("the watch of {} ended", K::plural(&Default::default()))
    }

    fn apply(&self, object: Arc<K>) {
        let old = {
            let mut objects = self.cache.objects.write().expect("informer cache lock");
            objects
                .entry(namespace_of(&*object))
                .or_default()
                .insert(object.name_any(), Arc::clone(&object))
        };
        for handler in &self.handlers {
            handler(Change::Applied { old: old.as_ref(), new: &object });
        }
    }

    fn delete(&self, object: &K) {
        let removed = {
            let mut objects = self.cache.objects.write().expect("informer cache lock");
            objects.get_mut(&namespace_of(object)).and_then(|m| m.remove(&object.name_any()))
        };
        // The final state as the watch reported it, even if the cache never held the object.
        let last = removed.unwrap_or_else(|| Arc::new(object.clone()));
        for handler in &self.handlers {
            handler(Change::Deleted(&last));
        }
    }

    /// Swaps in a relist, telling handlers what changed since the cache's last state.
    fn replace(&self, fresh: HashMap<String, BTreeMap<String, Arc<K>>>) {
        let old = std::mem::replace(&mut *self.cache.objects.write().expect("informer cache lock"), fresh.clone());
        for (namespace, objects) in &fresh {
            let before = old.get(namespace);
            for (name, object) in objects {
                let previous = before.and_then(|m| m.get(name));
                let unchanged = previous.is_some_and(|p| p.resource_version() == object.resource_version());
                if !unchanged {
                    for handler in &self.handlers {
                        handler(Change::Applied { old: previous, new: object });
                    }
                }
            }
        }
        for (namespace, objects) in &old {
            for (name, object) in objects {
                if fresh.get(namespace).is_none_or(|m| !m.contains_key(name)) {
                    for handler in &self.handlers {
                        handler(Change::Deleted(object));
                    }
                }
            }
        }
    }
}

fn namespace_of<K: Resource>(object: &K) -> String {
    object.meta().namespace.clone().unwrap_or_default()
}
