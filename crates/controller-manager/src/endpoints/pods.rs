//! What the endpoints and endpointslice controllers both ask of pods and Services: which pods
//! a Service selects, which of them belong in its endpoints, their addresses and ports, and
//! which Services a pod change concerns.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use styrman_runtime::WorkQueue;

use crate::informer::{Cache, Change};

pub use crate::informer::key;

pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// The Service's selector, if it selects pods. An empty selector counts as none: upstream
/// stores Services as protobuf, where an empty map reads back as no map, and leaves such
/// Services' endpoints to their users.
pub fn selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    service.spec.as_ref()?.selector.as_ref().filter(|s| !s.is_empty())
}

pub fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Whether the controllers make endpoints for this Service: it selects pods and is not an
/// ExternalName alias (which has no endpoints of its own).
pub fn wants_endpoints(service: &Service) -> bool {
    let external = service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName");
    !external && selector(service).is_some()
}

fn cluster_ip(service: &Service) -> &str {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or("")
}

pub fn is_headless(service: &Service) -> bool {
    cluster_ip(service) == "None"
}

/// Upstream's IsServiceIPSet: a Service with a virtual IP, which is what the `headless`
/// label on its endpoints is the absence of.
pub fn has_cluster_ip(service: &Service) -> bool {
    let ip = cluster_ip(service);
    !ip.is_empty() && ip != "None"
}

pub fn is_ipv6(ip: &str) -> bool {
    matches!(ip.parse::<IpAddr>(), Ok(IpAddr::V6(_)))
}

/// The pod's IPs; `podIPs`, or `podIP` from a writer that set only that (the API server
/// keeps the two in step for Go clients).
pub fn pod_ips(pod: &Pod) -> Vec<&str> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let ips: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .filter(|ip| !ip.is_empty())
        .collect();
    if !ips.is_empty() {
        return ips;
    }
    status
        .pod_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
        .into_iter()
        .collect()
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// When the pod last became ready or unready: the change its endpoints reflect.
pub fn ready_transition(pod: &Pod) -> Option<jiff::Timestamp> {
    ready_condition(pod)?.last_transition_time.as_ref().map(|t| t.0)
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Upstream's ShouldPodBeInEndpoints: finished pods and pods without an IP never are; pods
/// being deleted only when the caller keeps terminating endpoints.
pub fn belongs_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    !is_terminal(pod) && !pod_ips(pod).is_empty() && (include_terminating || !is_terminating(pod))
}

/// A pod gets a DNS hostname in a Service's endpoints when it names one and says the
/// Service is its subdomain.
pub fn hostname_for(pod: &Pod, service: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same_namespace = pod.metadata.namespace == service.metadata.namespace;
    (same_namespace && spec.subdomain.as_deref() == service.metadata.name.as_deref()).then(|| hostname.to_string())
}

pub fn protocol(p: Option<&String>) -> &str {
    p.map_or("TCP", String::as_str)
}

/// The pod port a Service port sends to: a number as is, a name looked up among the pod's
/// container ports (and its sidecars') with the same protocol. Pods of one Service may name
/// different numbers, so this is per pod.
pub fn target_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_ref() == Some(name) && protocol(p.protocol.as_ref()) == protocol(port.protocol.as_ref())
                })
                .map(|p| p.container_port)
        }
    }
}

/// What of a pod its endpoints are made from. Two versions that agree on it (and on labels)
/// need no sync: most pod updates (status details, annotations) change none of it.
fn endpoint_view(pod: &Pod) -> impl PartialEq + '_ {
    let spec = pod.spec.as_ref();
    (
        pod.metadata.deletion_timestamp.is_some(),
        is_ready(pod),
        ready_transition(pod),
        is_terminal(pod),
        pod_ips(pod),
        spec.and_then(|s| s.node_name.as_deref()),
        spec.and_then(|s| s.hostname.as_deref()),
        spec.and_then(|s| s.subdomain.as_deref()),
    )
}

/// The keys of the Services a pod change concerns: those in its namespace whose selector
/// matches its old or its new labels.
pub fn services_for_pod_change(services: &Cache<Service>, old: Option<&Pod>, new: Option<&Pod>) -> Vec<String> {
    if let (Some(old), Some(new)) = (old, new) {
        let same_labels = old.metadata.labels == new.metadata.labels;
        if same_labels && endpoint_view(old) == endpoint_view(new) {
            return Vec::new();
        }
    }
    let Some(namespace) = new.or(old).and_then(|p| p.metadata.namespace.as_deref()) else {
        return Vec::new();
    };
    services
        .list(namespace)
        .iter()
        .filter(|service| {
            selector(service).is_some_and(|s| old.is_some_and(|p| selects(s, p)) || new.is_some_and(|p| selects(s, p)))
        })
        .filter_map(|service| service.metadata.name.as_deref().map(|name| key(namespace, name)))
        .collect()
}

/// Queues the Service a Service change concerns: itself.
pub fn queue_service(queue: &WorkQueue<String>, change: Change<'_, Service>) {
    let service = match change {
        Change::Applied { new, .. } => new,
        Change::Deleted(old) => old,
    };
    if let (Some(namespace), Some(name)) = (&service.metadata.namespace, &service.metadata.name) {
        queue.add(key(namespace, name));
    }
}

/// Queues the Services a pod change concerns.
pub fn queue_services_for_pod_change(queue: &WorkQueue<String>, services: &Cache<Service>, change: Change<'_, Pod>) {
    let keys = match change {
        Change::Applied { old, new } => services_for_pod_change(services, old.map(|o| &**o), Some(new)),
        Change::Deleted(old) => services_for_pod_change(services, Some(old), None),
    };
    keys.into_iter().for_each(|key| queue.add(key));
}

/// The Service's pods, from the cache.
pub fn selected_pods(pods: &Cache<Pod>, service: &Service) -> Vec<std::sync::Arc<Pod>> {
    let (Some(namespace), Some(selector)) = (service.metadata.namespace.as_deref(), selector(service)) else {
        return Vec::new();
    };
    let mut selected: Vec<_> = pods
        .list(namespace)
        .into_iter()
        .filter(|p| selects(selector, p))
        .collect();
    // A stable order keeps what the controllers write stable.
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    selected
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// A running pod in `default` with `ip`, ready or not, whose container names `ports`.
    pub fn pod(name: &str, ip: &str, ready: bool, ports: &[(&str, i32)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                containers: vec![Container {
                    name: "app".into(),
                    ports: Some(
                        ports
                            .iter()
                            .map(|(name, n)| ContainerPort {
                                name: Some(name.to_string()),
                                container_port: *n,
                                protocol: Some("TCP".into()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                pod_ips: Some(vec![PodIP { ip: ip.into() }]),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    /// A Service `web` in `default` selecting app=web with these (name, port, targetPort).
    pub fn service(ports: &[(&str, i32, IntOrString)]) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some("web".into()),
                uid: Some("uid-web".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                cluster_ip: Some("10.96.0.10".into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(name, port, target)| ServicePort {
                            name: (!name.is_empty()).then(|| name.to_string()),
                            port: *port,
                            target_port: Some(target.clone()),
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn named_target_ports_resolve_per_pod() {
        let svc = service(&[("http", 80, IntOrString::String("web".into()))]);
        let port = &svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(
            target_port(&pod("a", "10.0.0.1", true, &[("web", 8080)]), port),
            Some(8080)
        );
        assert_eq!(
            target_port(&pod("b", "10.0.0.2", true, &[("web", 9090)]), port),
            Some(9090)
        );
        assert_eq!(target_port(&pod("c", "10.0.0.3", true, &[("other", 1)]), port), None);
        let numeric = ServicePort {
            port: 80,
            target_port: Some(IntOrString::Int(8081)),
            ..Default::default()
        };
        assert_eq!(target_port(&pod("c", "10.0.0.3", true, &[]), &numeric), Some(8081));
    }

    #[test]
    fn which_pods_belong_in_endpoints() {
        let mut p = pod("a", "10.0.0.1", false, &[]);
        assert!(belongs_in_endpoints(&p, false));
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        ));
        assert!(!belongs_in_endpoints(&p, false));
        assert!(belongs_in_endpoints(&p, true));
        let mut done = pod("b", "10.0.0.2", false, &[]);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!belongs_in_endpoints(&done, true));
        let mut no_ip = pod("c", "", false, &[]);
        no_ip.status.as_mut().unwrap().pod_ips = None;
        assert!(!belongs_in_endpoints(&no_ip, true));
    }

    #[test]
    fn a_pod_change_concerns_services_matching_old_or_new_labels() {
        let services = Cache::holding([service(&[])]);
        let old = pod("a", "10.0.0.1", true, &[]);
        let mut relabelled = old.clone();
        relabelled.metadata.labels = Some([("app".to_string(), "other".to_string())].into());
        assert_eq!(
            services_for_pod_change(&services, Some(&old), Some(&relabelled)),
            ["default/web"]
        );
        assert_eq!(
            services_for_pod_change(&services, None, Some(&relabelled)),
            Vec::<String>::new()
        );
        // An update that changes nothing endpoints show wakes no Service.
        let mut annotated = old.clone();
        annotated.metadata.annotations = Some([("x".to_string(), "y".to_string())].into());
        assert!(services_for_pod_change(&services, Some(&old), Some(&annotated)).is_empty());
        let unready = pod("a", "10.0.0.1", false, &[]);
        assert_eq!(
            services_for_pod_change(&services, Some(&old), Some(&unready)),
            ["default/web"]
        );
    }
}
