//! Events a controller records about the objects it acts on, as client-go's event recorder
//! writes them: `core/v1` Events named `<object>.<hex time>`, shown by `kubectl describe` and
//! `kubectl get events`. Recording never blocks or fails the caller: an event is best effort.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PostParams};

#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    /// The component, as `source.component` and `reportingController` (e.g. `replicaset-controller`).
    component: String,
    instance: String,
    /// `source.host`, for components that name the machine they run on.
    host: Option<String>,
}

impl Recorder {
    pub fn new(client: kube::Client, component: &str) -> Recorder {
        Recorder {
            client,
            component: component.to_string(),
            instance: crate::hostname(),
            host: None,
        }
    }

    /// Also names this host as the events' `source.host` (`kubectl describe` shows it after the
    /// component).
    pub fn with_host(mut self) -> Recorder {
        self.host = Some(self.instance.clone()).filter(|h| !h.is_empty());
        self
    }

    /// Records a `Normal` event.
    pub fn normal(&self, regarding: ObjectReference, reason: &str, message: String) {
        self.record(regarding, "Normal", reason, message);
    }

    /// Records a `Warning` event.
    pub fn warning(&self, regarding: ObjectReference, reason: &str, message: String) {
        self.record(regarding, "Warning", reason, message);
    }

    /// Cluster-scoped objects (Nodes) have no namespace: their events go to `default`, as
    /// client-go files them.
    fn record(&self, regarding: ObjectReference, type_: &str, reason: &str, message: String) {
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let now = jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or("object"),
                    now.as_nanosecond()
                )),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: regarding,
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(type_.into()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.instance.clone()),
            action: Some(reason.into()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %e, "cannot record an event");
            }
        });
    }
}

/// A reference to `object` for an event's `involvedObject`.
pub fn reference_to<K: kube::Resource<DynamicType = ()>>(object: &K) -> ObjectReference {
    let meta = object.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}
