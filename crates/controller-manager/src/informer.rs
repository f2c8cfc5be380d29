//! An informer as client-go has them: a watch of one kind kept as an in-memory cache indexed by
//! namespace, and handlers told of every change with the object's previous state, so a
//! controller can enqueue both the old and the new owner of an object that moved, or the
//! Services a pod's old and new labels select.
//!
//! kube-rs' reflector keeps a store but hands out only the new object and answers only "get by
//! name" and "everything"; these controllers need the old object too, and ask "everything in
//! this namespace" on each sync.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use futures::future::BoxFuture;
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// The work-queue key of a cached object: `namespace/name` (`/name` when cluster-scoped).
pub fn key_of<K: Resource>(object: &K) -> String {
    key(
        object.meta().namespace.as_deref().unwrap_or(""),
        object.meta().name.as_deref().unwrap_or(""),
    )
}

pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// An object's labels (none: an empty map), as selectors read them.
pub fn labels_of<K: Resource>(object: &K) -> &BTreeMap<String, String> {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    object.meta().labels.as_ref().unwrap_or(&NONE)
}

/// One change the cache went through.
pub enum Change<'a, K> {
    /// Created (`old` is None) or modified.
    Applied {
        old: Option<&'a Arc<K>>,
        new: &'a Arc<K>,
    },
    Deleted(&'a Arc<K>),
}

type Handler<K> = Box<dyn Fn(Change<'_, K>) + Send + Sync>;
type RelistHandler = Box<dyn Fn() + Send + Sync>;

/// namespace ("" for cluster-scoped objects) → name → object.
type Objects<K> = HashMap<String, BTreeMap<String, Arc<K>>>;

/// The objects of one kind, by namespace and name.
pub struct Cache<K> {
    objects: RwLock<Objects<K>>,
    synced: watch::Sender<bool>,
}

impl<K> Cache<K> {
    fn new() -> Cache<K> {
        Cache {
            objects: RwLock::new(HashMap::new()),
            synced: watch::Sender::new(false),
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let objects = self.objects.read().expect("informer cache lock");
        objects.get(namespace).and_then(|m| m.get(name)).cloned()
    }

    /// Every object in `namespace`, in name order.
    pub fn list(&self, namespace: &str) -> Vec<Arc<K>> {
        let objects = self.objects.read().expect("informer cache lock");
        objects
            .get(namespace)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every object in every namespace.
    pub fn all(&self) -> Vec<Arc<K>> {
        let objects = self.objects.read().expect("informer cache lock");
        objects.values().flat_map(|m| m.values().cloned()).collect()
    }

    /// Waits until the first full list has been loaded.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.subscribe();
        let _ = synced.wait_for(|s| *s).await;
    }
}

#[cfg(test)]
impl<K: Resource> Cache<K> {
    /// A synced cache holding `objects`, for tests of code that reads one.
    pub fn holding(objects: impl IntoIterator<Item = K>) -> Arc<Cache<K>> {
        let mut feed = Feed::new();
        feed.apply(Event::Init);
        objects.into_iter().for_each(|o| feed.apply(Event::InitApply(o)));
        feed.apply(Event::InitDone);
        feed.cache
    }
}

/// A handle on one shared watch: every controller that asks [`Informers`] for the same kind
/// and selectors gets a clone of the same handle, registers its handlers on it and reads its
/// cache; the watch itself runs once.
#[derive(Clone)]
pub struct Informer<K> {
    api: Api<K>,
    config: watcher::Config,
    feed: Arc<Mutex<Feed<K>>>,
    cache: Arc<Cache<K>>,
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    fn new(api: Api<K>, config: watcher::Config) -> Informer<K> {
        let feed = Feed::new();
        Informer {
            api,
            config,
            cache: Arc::clone(&feed.cache),
            feed: Arc::new(Mutex::new(feed)),
        }
    }

    pub fn cache(&self) -> Arc<Cache<K>> {
        Arc::clone(&self.cache)
    }

    /// Calls `handler` for every change, after the cache holds it. Handlers run on the watch
    /// task: they should only enqueue keys. Register before [`Informers::run`] starts.
    pub fn on_change(&self, handler: impl Fn(Change<'_, K>) + Send + Sync + 'static) {
        self.feed
            .lock()
            .expect("informer feed lock")
            .handlers
            .push(Box::new(handler));
    }

    /// Calls `handler` each time a (re)list has replaced the cache's contents, before the
    /// changes it brought are handed to the `on_change` handlers: from then on the cache is as
    /// new as the API server was at the list, whatever events were missed before it.
    pub fn on_relist(&self, handler: impl Fn() + Send + Sync + 'static) {
        self.feed
            .lock()
            .expect("informer feed lock")
            .relist_handlers
            .push(Box::new(handler));
    }

    /// Watches until the watch stream ends (it retries with backoff, so only on shutdown).
    async fn run(self) -> anyhow::Result<()> {
        let mut events = watcher::watcher(self.api.clone(), self.config.clone())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => self.feed.lock().expect("informer feed lock").apply(event),
                Err(e) => tracing::warn!(error = %e, kind = %K::kind(&Default::default()), "watch failed; retrying"),
            }
        }
        anyhow::bail!("the watch of {} ended", K::plural(&Default::default()))
    }
}

/// The informers of one controller-manager process, shared by its controllers as client-go's
/// SharedInformerFactory shares them: one watch and one cache per kind and selectors, however
/// many controllers read it (pods alone are read by five).
pub struct Informers {
    client: kube::Client,
    entries: Vec<SharedEntry>,
}

struct SharedEntry {
    kind: TypeId,
    selectors: String,
    informer: Box<dyn Any + Send>,
    run: Option<BoxFuture<'static, anyhow::Result<()>>>,
}

impl Informers {
    pub fn new(client: kube::Client) -> Informers {
        Informers {
            client,
            entries: Vec::new(),
        }
    }

    /// The cluster-wide informer of `K` with `config`'s selectors, made on first use.
    pub fn get<K>(&mut self, config: watcher::Config) -> Informer<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let selectors = format!("{:?}|{:?}", config.label_selector, config.field_selector);
        let kind = TypeId::of::<K>();
        if let Some(entry) = self.entries.iter().find(|e| e.kind == kind && e.selectors == selectors) {
            return entry
                .informer
                .downcast_ref::<Informer<K>>()
                .expect("entries are keyed by type")
                .clone();
        }
        let informer = Informer::new(Api::all(self.client.clone()), config);
        self.entries.push(SharedEntry {
            kind,
            selectors,
            informer: Box::new(informer.clone()),
            run: Some(Box::pin(informer.clone().run())),
        });
        informer
    }

    /// Runs every informer handed out; ends when one ends (never, short of shutdown).
    pub async fn run(mut self) -> anyhow::Result<()> {
        let watches: Vec<_> = self.entries.iter_mut().filter_map(|e| e.run.take()).collect();
        if watches.is_empty() {
            return futures::future::pending().await;
        }
        futures::future::select_all(watches).await.0
    }
}

/// The cache and its handlers, fed one watch event at a time.
struct Feed<K> {
    cache: Arc<Cache<K>>,
    handlers: Vec<Handler<K>>,
    relist_handlers: Vec<RelistHandler>,
    /// A relist's objects, gathered until it completes and then swapped in at once, so readers
    /// never see a half-listed world.
    relist: Option<Objects<K>>,
}

impl<K: Resource> Feed<K> {
    fn new() -> Feed<K> {
        Feed {
            cache: Arc::new(Cache::new()),
            handlers: Vec::new(),
            relist_handlers: Vec::new(),
            relist: None,
        }
    }

    fn apply(&mut self, event: Event<K>) {
        // The controllers never read managedFields, and they are a large share of each
        // object's size, which adds up in a cache of 10 000 pods.
        let event = event.modify(|object| object.meta_mut().managed_fields = None);
        match event {
            Event::Init => self.relist = Some(HashMap::new()),
            Event::InitApply(object) => {
                let (namespace, name) = namespace_and_name(&object);
                let relist = self.relist.get_or_insert_with(HashMap::new);
                relist.entry(namespace).or_default().insert(name, Arc::new(object));
            }
            Event::InitDone => {
                let relist = self.relist.take().unwrap_or_default();
                self.replace(relist);
                self.cache.synced.send_replace(true);
            }
            Event::Apply(object) => self.upsert(Arc::new(object)),
            Event::Delete(object) => self.delete(object),
        }
    }

    fn upsert(&self, object: Arc<K>) {
        let (namespace, name) = namespace_and_name(&*object);
        let old = {
            let mut objects = self.cache.objects.write().expect("informer cache lock");
            objects.entry(namespace).or_default().insert(name, Arc::clone(&object))
        };
        for handler in &self.handlers {
            handler(Change::Applied {
                old: old.as_ref(),
                new: &object,
            });
        }
    }

    fn delete(&self, object: K) {
        let (namespace, name) = namespace_and_name(&object);
        let removed = {
            let mut objects = self.cache.objects.write().expect("informer cache lock");
            let in_namespace = objects.get_mut(&namespace);
            let removed = in_namespace.and_then(|m| m.remove(&name));
            if objects.get(&namespace).is_some_and(BTreeMap::is_empty) {
                objects.remove(&namespace);
            }
            removed
        };
        // The final state as the watch reported it, even if the cache never held the object.
        let last = removed.unwrap_or_else(|| Arc::new(object));
        for handler in &self.handlers {
            handler(Change::Deleted(&last));
        }
    }

    /// Swaps in a relist, telling handlers what changed since the cache's last state: objects
    /// that went while the watch was down are reported as deletions.
    fn replace(&self, fresh: Objects<K>) {
        // Handlers may read this cache, so they run after its lock is released; the changes
        // are gathered first (as `Arc`s, without copying the objects).
        let (applied, deleted) = {
            let mut objects = self.cache.objects.write().expect("informer cache lock");
            let before = std::mem::replace(&mut *objects, fresh);
            let mut applied = Vec::new();
            for (namespace, now) in objects.iter() {
                let then = before.get(namespace);
                for (name, new) in now {
                    let old = then.and_then(|m| m.get(name));
                    if !old.is_some_and(|old| same_version(&**old, &**new)) {
                        applied.push((old.cloned(), Arc::clone(new)));
                    }
                }
            }
            let mut deleted = Vec::new();
            for (namespace, then) in before {
                let now = objects.get(&namespace);
                deleted.extend(
                    then.into_iter()
                        .filter(|(name, _)| now.is_none_or(|m| !m.contains_key(name)))
                        .map(|(_, old)| old),
                );
            }
            (applied, deleted)
        };
        for handler in &self.relist_handlers {
            handler();
        }
        for (old, new) in &applied {
            for handler in &self.handlers {
                handler(Change::Applied { old: old.as_ref(), new });
            }
        }
        for old in &deleted {
            for handler in &self.handlers {
                handler(Change::Deleted(old));
            }
        }
    }
}

fn namespace_and_name<K: Resource>(object: &K) -> (String, String) {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Whether `a` and `b` are the same version of the same object (a name reused by a new object
/// is a change even if the resourceVersion happened to match).
fn same_version<K: Resource>(a: &K, b: &K) -> bool {
    let (a, b) = (a.meta(), b.meta());
    a.uid == b.uid && a.resource_version.is_some() && a.resource_version == b.resource_version
}

#[cfg(test)]
mod tests {
    use super::*;

    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
    use kube::ResourceExt;

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

    /// A feed whose handlers write each change they see into the returned log.
    fn recording_feed() -> (Feed<Pod>, Arc<Mutex<Vec<String>>>) {
        let mut feed = Feed::<Pod>::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        feed.handlers.push(Box::new({
            let log = Arc::clone(&log);
            move |change| {
                let line = match change {
                    Change::Applied { old, new } => format!(
                        "applied {} old={:?} new={}",
                        new.name_any(),
                        old.and_then(|o| o.resource_version()),
                        new.resource_version().unwrap_or_default()
                    ),
                    Change::Deleted(old) => format!("deleted {}", old.name_any()),
                };
                log.lock().unwrap().push(line);
            }
        }));
        feed.relist_handlers.push(Box::new({
            let log = Arc::clone(&log);
            move || log.lock().unwrap().push("relisted".into())
        }));
        (feed, log)
    }

    fn take(log: &Mutex<Vec<String>>) -> Vec<String> {
        std::mem::take(&mut *log.lock().unwrap())
    }

    #[test]
    fn a_relist_reports_what_changed_and_what_went() {
        let (mut feed, log) = recording_feed();
        feed.apply(Event::Init);
        feed.apply(Event::InitApply(pod("a", "kept", "1")));
        feed.apply(Event::InitApply(pod("a", "changed", "1")));
        feed.apply(Event::InitApply(pod("b", "gone", "1")));
        assert!(!*feed.cache.synced.borrow());
        feed.apply(Event::InitDone);
        assert!(*feed.cache.synced.borrow());
        assert_eq!(take(&log).len(), 4, "the relist and its three objects");
        assert_eq!(feed.cache.list("a").len(), 2);

        feed.apply(Event::Init);
        feed.apply(Event::InitApply(pod("a", "kept", "1")));
        feed.apply(Event::InitApply(pod("a", "changed", "2")));
        // Until the list completes, readers see the old world.
        assert!(feed.cache.get("b", "gone").is_some());
        feed.apply(Event::InitDone);
        let seen = take(&log);
        assert_eq!(seen[0], "relisted", "the relist is announced before its changes");
        let mut changes = seen[1..].to_vec();
        changes.sort();
        assert_eq!(changes, ["applied changed old=Some(\"1\") new=2", "deleted gone"]);
        assert!(feed.cache.get("b", "gone").is_none());
        assert_eq!(feed.cache.all().len(), 2);
    }

    #[test]
    fn an_update_hands_back_the_previous_version() {
        let (mut feed, log) = recording_feed();
        feed.apply(Event::Apply(pod("a", "p", "1")));
        feed.apply(Event::Apply(pod("a", "p", "2")));
        assert_eq!(
            take(&log),
            ["applied p old=None new=1", "applied p old=Some(\"1\") new=2"]
        );
        feed.apply(Event::Delete(pod("a", "p", "3")));
        assert_eq!(take(&log), ["deleted p"]);
        assert!(feed.cache.list("a").is_empty());
        assert!(
            feed.cache.objects.read().unwrap().is_empty(),
            "an emptied namespace is dropped"
        );
    }

    #[test]
    fn cached_objects_have_no_managed_fields() {
        let (mut feed, _) = recording_feed();
        let mut p = pod("a", "p", "1");
        p.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        feed.apply(Event::Apply(p));
        assert!(feed.cache.get("a", "p").unwrap().metadata.managed_fields.is_none());
    }
}
