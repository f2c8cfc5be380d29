//! Resource amounts as the scheduler adds them up: CPU in millicores, memory and everything else
//! in whole units, and a pod's request as kube-scheduler computes it (the larger of the sum of
//! its containers and its largest init container, plus its overhead).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use styrman_runtime::quantity;

/// What a container without requests counts as when scores spread load (upstream's
/// non-zero defaults: 100m CPU, 200 MiB memory).
pub const DEFAULT_MILLI_CPU: i128 = 100;
pub const DEFAULT_MEMORY: i128 = 200 << 20;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i128,
    pub memory: i128,
    pub ephemeral_storage: i128,
    /// Extended resources (`example.com/gpu`, `hugepages-2Mi`, ...).
    pub scalar: BTreeMap<String, i128>,
}

impl Resources {
    fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            match name.as_str() {
                "cpu" => r.milli_cpu = quantity::milli_value(&q.0).unwrap_or(0),
                "memory" => r.memory = quantity::value(&q.0).unwrap_or(0),
                "ephemeral-storage" => r.ephemeral_storage = quantity::value(&q.0).unwrap_or(0),
                "pods" => {}
                other => {
                    r.scalar.insert(other.to_string(), quantity::value(&q.0).unwrap_or(0));
                }
            }
        }
        r
    }

    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    fn max(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

/// A node's allocatable resources and how many pods it takes.
pub fn allocatable(node: &Node) -> (Resources, i128) {
    let list = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
    let pods = list
        .and_then(|l| l.get("pods"))
        .and_then(|q| quantity::value(&q.0))
        .unwrap_or(110);
    (Resources::from_list(list), pods)
}

/// A pod's requests (exact) and its requests with the non-zero defaults (for scoring).
pub fn pod_requests(pod: &Pod) -> (Resources, Resources) {
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let init = spec.and_then(|s| s.init_containers.as_deref()).unwrap_or_default();
    let (mut exact, mut non_zero) = (Resources::default(), Resources::default());
    for c in containers {
        let (e, n) = container_requests(c);
        exact.add(&e);
        non_zero.add(&n);
    }
    // Init containers run one at a time before the others (restartable ones, sidecars, keep
    // running and add up with the rest).
    let mut sidecars = (Resources::default(), Resources::default());
    for c in init {
        let (e, n) = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.0.add(&e);
            sidecars.1.add(&n);
            continue;
        }
        let mut e_total = e.clone();
        e_total.add(&sidecars.0);
        let mut n_total = n.clone();
        n_total.add(&sidecars.1);
        exact.max(&e_total);
        non_zero.max(&n_total);
    }
    exact.add(&sidecars.0);
    non_zero.add(&sidecars.1);
    if let Some(overhead) = spec.and_then(|s| s.overhead.as_ref()) {
        let o = Resources::from_list(Some(overhead));
        exact.add(&o);
        non_zero.add(&o);
    }
    (exact, non_zero)
}

fn container_requests(c: &Container) -> (Resources, Resources) {
    let resources = c.resources.as_ref();
    // Requests default to limits when only limits are set.
    let mut list = resources.and_then(|r| r.limits.clone()).unwrap_or_default();
    list.extend(resources.and_then(|r| r.requests.clone()).unwrap_or_default());
    let exact = Resources::from_list(Some(&list));
    let mut non_zero = exact.clone();
    if !list.contains_key("cpu") {
        non_zero.milli_cpu = DEFAULT_MILLI_CPU;
    }
    if !list.contains_key("memory") {
        non_zero.memory = DEFAULT_MEMORY;
    }
    (exact, non_zero)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_pod_requests_the_larger_of_its_containers_and_its_init_containers() {
        let p = pod(serde_json::json!({"spec": {
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}],
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "250m"}}}
            ],
            "overhead": {"cpu": "10m"}
        }}));
        let (exact, non_zero) = pod_requests(&p);
        assert_eq!(exact.milli_cpu, 2010);
        assert_eq!(exact.memory, 2 << 30);
        // b has no memory request: scoring counts the default.
        assert_eq!(non_zero.memory, (2 << 30) + DEFAULT_MEMORY);
    }
}
