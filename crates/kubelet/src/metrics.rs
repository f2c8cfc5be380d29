//! The kubelet's own Prometheus metrics at `/metrics`, with upstream's names and labels: the
//! node's name, running pods and containers by state (read from the runtime at each scrape,
//! as upstream's collectors read its cache), started pods and containers with their errors,
//! the pod start duration (first seen to Running) and the pod workers' sync duration, and the
//! process's resident memory.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use k8s_cri::v1 as cri;

use crate::cri::Runtime;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    container_state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContainerTypeLabels {
    /// container or init_container.
    pub container_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The waiting reason the error left the container in (RunContainerError, ...).
    pub code: String,
    pub container_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation_type: String,
}

pub struct Metrics {
    registry: Registry,
    running_pods: Gauge,
    running_containers: Family<StateLabels, Gauge>,
    resident_memory: Gauge,
    pub started_pods: Counter,
    pub started_pods_errors: Counter,
    started_containers: Family<ContainerTypeLabels, Counter>,
    started_containers_errors: Family<ErrorLabels, Counter>,
    pod_start_duration: Histogram,
    pod_worker_duration: Family<OperationLabels, Histogram>,
}

fn container_type(init: bool) -> String {
    if init { "init_container" } else { "container" }.to_string()
}

impl Metrics {
    pub fn new(node: &str) -> Metrics {
        let mut registry = Registry::default();
        let node_name = Family::<NodeLabels, Gauge>::default();
        node_name.get_or_create(&NodeLabels { node: node.to_string() }).set(1);
        let metrics = Metrics {
            running_pods: Gauge::default(),
            running_containers: Family::default(),
            resident_memory: Gauge::default(),
            started_pods: Counter::default(),
            started_pods_errors: Counter::default(),
            started_containers: Family::default(),
            started_containers_errors: Family::default(),
            pod_start_duration: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            pod_worker_duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 14))),
            registry: Registry::default(),
        };
        registry.register(
            "kubelet_node_name",
            "The node's name. The count is always 1.",
            node_name,
        );
        registry.register(
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
            metrics.running_pods.clone(),
        );
        registry.register(
            "kubelet_running_containers",
            "Number of containers currently running",
            metrics.running_containers.clone(),
        );
        registry.register(
            "kubelet_started_pods",
            "Cumulative number of pods started",
            metrics.started_pods.clone(),
        );
        registry.register(
            "kubelet_started_pods_errors",
            "Cumulative number of errors when starting pods",
            metrics.started_pods_errors.clone(),
        );
        registry.register(
            "kubelet_started_containers",
            "Cumulative number of containers started",
            metrics.started_containers.clone(),
        );
        registry.register(
            "kubelet_started_containers_errors",
            "Cumulative number of errors when starting containers",
            metrics.started_containers_errors.clone(),
        );
        registry.register(
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            metrics.pod_start_duration.clone(),
        );
        registry.register(
            "kubelet_pod_worker_duration_seconds",
            "Duration in seconds to sync a single pod",
            metrics.pod_worker_duration.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            metrics.resident_memory.clone(),
        );
        Metrics { registry, ..metrics }
    }

    pub fn container_started(&self, init: bool) {
        self.started_containers
            .get_or_create(&ContainerTypeLabels {
                container_type: container_type(init),
            })
            .inc();
    }

    pub fn container_failed(&self, init: bool, code: &str) {
        self.started_containers_errors
            .get_or_create(&ErrorLabels {
                code: code.to_string(),
                container_type: container_type(init),
            })
            .inc();
    }

    pub fn pod_started(&self, after: std::time::Duration) {
        self.pod_start_duration.observe(after.as_secs_f64());
    }

    pub fn synced(&self, took: std::time::Duration) {
        self.pod_worker_duration
            .get_or_create(&OperationLabels {
                operation_type: "sync".into(),
            })
            .observe(took.as_secs_f64());
    }

    /// The text exposition, the gauges read now.
    pub async fn render(&self, runtime: &Runtime) -> String {
        if let Ok(ready) = runtime.ready_sandboxes(Default::default()).await {
            self.running_pods.set(ready.len() as i64);
        }
        if let Ok(listed) = runtime
            .runtime
            .clone()
            .list_containers(cri::ListContainersRequest::default())
            .await
        {
            for state in ["created", "running", "exited", "unknown"] {
                let count = listed
                    .get_ref()
                    .containers
                    .iter()
                    .filter(|c| state_name(c.state) == state)
                    .count();
                self.running_containers
                    .get_or_create(&StateLabels {
                        container_state: state.into(),
                    })
                    .set(count as i64);
            }
        }
        if let Some(bytes) = resident_bytes() {
            self.resident_memory.set(bytes);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

fn state_name(state: i32) -> &'static str {
    match cri::ContainerState::try_from(state) {
        Ok(cri::ContainerState::ContainerCreated) => "created",
        Ok(cri::ContainerState::ContainerRunning) => "running",
        Ok(cri::ContainerState::ContainerExited) => "exited",
        _ => "unknown",
    }
}

/// This process's resident set, from /proc/self/statm (pages).
fn resident_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_with_upstream_names_and_labels() {
        let metrics = Metrics::new("node-1");
        metrics.started_pods.inc();
        metrics.container_started(true);
        metrics.container_failed(false, "RunContainerError");
        metrics.pod_started(std::time::Duration::from_millis(300));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &metrics.registry).unwrap();
        for line in [
            "kubelet_node_name{node=\"node-1\"} 1",
            "kubelet_started_pods_total 1",
            "kubelet_started_containers_total{container_type=\"init_container\"} 1",
            "kubelet_started_containers_errors_total{code=\"RunContainerError\",container_type=\"container\"} 1",
            "kubelet_pod_start_duration_seconds_count 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} not in\n{out}");
        }
    }
}
