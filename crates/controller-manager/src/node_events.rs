//! core/v1 Events as client-go's legacy recorder writes them for the node controllers
//! (`kubectl describe node` and `kubectl get events` show them). Recording is best effort: a
//! lost event must never stop a controller.

use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::ResourceExt;

/// Writes events under one source component (upstream's `EventSource.Component`).
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    component: &'static str,
    host: String,
}

impl Recorder {
    pub fn new(client: kube::Client, component: &'static str) -> Recorder {
        Recorder {
            client,
            component,
            host: styrman_runtime::hostname(),
        }
    }

    /// Upstream's RecordNodeStatusChange: "Node X status is now: S", reason S. Node events
    /// live in `default`, since a Node has no namespace.
    pub async fn node_status_change(&self, node: &Node, status: &str) {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: node.metadata.name.clone(),
            uid: node.metadata.uid.clone(),
            ..Default::default()
        };
        let message = format!("Node {} status is now: {status}", node.name_any());
        self.record("default", reference, "Normal", status, &message).await;
    }

    pub async fn pod(&self, pod: &Pod, type_: &str, reason: &str, message: &str) {
        let namespace = pod.namespace().unwrap_or_default();
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: Some(namespace.clone()),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            ..Default::default()
        };
        self.record(&namespace, reference, type_, reason, message).await;
    }

    async fn record(&self, namespace: &str, involved: ObjectReference, type_: &str, reason: &str, message: &str) {
        let now = jiff::Timestamp::now();
        let seconds = Time(now.round(jiff::Unit::Second).unwrap_or(now));
        let event = Event {
            metadata: ObjectMeta {
                // client-go's naming: the object's name and the time in hex nanoseconds.
                name: Some(format!("{}.{:x}", involved.name.as_deref().unwrap_or(""), now.as_nanosecond())),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            involved_object: involved,
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(type_.into()),
            count: Some(1),
            first_timestamp: Some(seconds.clone()),
            last_timestamp: Some(seconds),
            source: Some(EventSource {
                component: Some(self.component.into()),
                host: (!self.host.is_empty()).then(|| self.host.clone()),
            }),
            reporting_component: Some(self.component.into()),
            reporting_instance: Some(self.host.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(reason, error = %e, "cannot record an event");
        }
    }
}
