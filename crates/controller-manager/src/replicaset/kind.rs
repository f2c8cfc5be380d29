//! The two kinds this controller runs, ReplicaSets and ReplicationControllers, seen through
//! what they share: a selector, a replica count and a pod template. Their status has the
//! same fields, so it is written as JSON.

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub trait Replicated:
    kube::Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The controller's name, as events and `--controllers` give it.
    const CONTROLLER: &'static str;
    /// kube-controller-manager's `--concurrent-*-syncs`.
    const WORKERS: usize;

    fn selector(&self) -> Option<LabelSelector>;
    fn replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn status_json(&self) -> serde_json::Value;
    fn with_status(&self, status: serde_json::Value) -> anyhow::Result<Self>;
}

/// The methods both kinds spell the same way: their specs and statuses have the same fields,
/// under different types.
macro_rules! shared_fields {
    () => {
        fn replicas(&self) -> i32 {
            self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
        }
        fn min_ready_seconds(&self) -> i32 {
            self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
        }
        fn template(&self) -> Option<&PodTemplateSpec> {
            self.spec.as_ref()?.template.as_ref()
        }
        fn status_json(&self) -> serde_json::Value {
            serde_json::to_value(&self.status).unwrap_or_default()
        }
        fn with_status(&self, status: serde_json::Value) -> anyhow::Result<Self> {
            let mut copy = self.clone();
            copy.status = serde_json::from_value(status)?;
            Ok(copy)
        }
    };
}

impl Replicated for ReplicaSet {
    const CONTROLLER: &'static str = "replicaset-controller";
    const WORKERS: usize = 5;

    fn selector(&self) -> Option<LabelSelector> {
        self.spec.as_ref().map(|s| s.selector.clone())
    }
    shared_fields!();
}

impl Replicated for ReplicationController {
    const CONTROLLER: &'static str = "replication-controller";
    const WORKERS: usize = 5;

    /// A nil selector defaults to the template's labels (the API server defaults it; this is
    /// for objects stored before that).
    fn selector(&self) -> Option<LabelSelector> {
        let spec = self.spec.as_ref()?;
        let labels: BTreeMap<String, String> = match &spec.selector {
            Some(selector) if !selector.is_empty() => selector.clone(),
            _ => spec.template.as_ref()?.metadata.as_ref()?.labels.clone()?,
        };
        Some(LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        })
    }
    shared_fields!();
}
