//! A pod's spec as CRI requests, as the kubelet's kuberuntime manager writes them: the sandbox
//! (metadata, hostname, namespaces, host ports, log directory, the labels that tie runtime
//! objects to the pod) and each container (command and args over the image's, working
//! directory, environment, mounts, resources as cgroup settings, security context).

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, ResourceRequirements};
use kube::ResourceExt;

/// Labels on every runtime object of a pod, as the kubelet sets them.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// The directory of a pod's container logs: `<namespace>_<name>_<uid>` (the kubelet's
/// /var/log/pods layout).
pub fn log_directory(logs_root: &std::path::Path, pod: &Pod) -> std::path::PathBuf {
    logs_root.join(format!(
        "{}_{}_{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.uid().unwrap_or_default()
    ))
}

fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    HashMap::from([
        (POD_UID.to_string(), pod.uid().unwrap_or_default()),
        (POD_NAME.to_string(), pod.name_any()),
        (POD_NAMESPACE.to_string(), pod.namespace().unwrap_or_default()),
    ])
}

/// The namespaces of the pod's sandbox: the host's network, PID and IPC namespaces when the
/// pod asks for them; one PID namespace for all containers with `shareProcessNamespace`.
fn namespaces(pod: &Pod) -> cri::NamespaceOption {
    let spec = pod.spec.clone().unwrap_or_default();
    let mode = |on_host: Option<bool>| {
        if on_host.unwrap_or(false) {
            cri::NamespaceMode::Node as i32
        } else {
            cri::NamespaceMode::Pod as i32
        }
    };
    cri::NamespaceOption {
        network: mode(spec.host_network),
        pid: if spec.host_pid.unwrap_or(false) {
            cri::NamespaceMode::Node as i32
        } else if spec.share_process_namespace.unwrap_or(false) {
            cri::NamespaceMode::Pod as i32
        } else {
            cri::NamespaceMode::Container as i32
        },
        ipc: mode(spec.host_ipc),
        ..Default::default()
    }
}

pub fn sandbox_config(pod: &Pod, logs_root: &std::path::Path, attempt: u32) -> cri::PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = p.host_port.filter(|hp| *hp > 0)?;
            Some(cri::PortMapping {
                protocol: match p.protocol.as_deref() {
                    Some("UDP") => cri::Protocol::Udp as i32,
                    Some("SCTP") => cri::Protocol::Sctp as i32,
                    _ => cri::Protocol::Tcp as i32,
                },
                container_port: p.container_port,
                host_port,
                host_ip: p.host_ip.clone().unwrap_or_default(),
            })
        })
        .collect();
    let security = spec.security_context.clone().unwrap_or_default();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            namespace: pod.namespace().unwrap_or_default(),
            attempt,
        }),
        // On the host's network the pod has the host's UTS namespace too: no name of its own.
        hostname: if host_network {
            String::new()
        } else {
            spec.hostname.clone().unwrap_or_else(|| pod.name_any())
        },
        log_directory: log_directory(logs_root, pod).to_string_lossy().into_owned(),
        port_mappings,
        labels: pod_labels(pod),
        annotations: pod.annotations().clone().into_iter().collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces(pod)),
                run_as_user: security.run_as_user.map(|value| cri::Int64Value { value }),
                run_as_group: security.run_as_group.map(|value| cri::Int64Value { value }),
                supplemental_groups: security.supplemental_groups.clone().unwrap_or_default(),
                ..Default::default()
            }),
            sysctls: security
                .sysctls
                .iter()
                .flatten()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The container's CRI configuration; `env` and `mounts` worked out by the caller (they need
/// the API and the pod's volumes).
pub fn container_config(
    pod: &Pod,
    container: &Container,
    attempt: u32,
    env: Vec<(String, String)>,
    mounts: Vec<cri::Mount>,
) -> Result<cri::ContainerConfig, String> {
    let pod_security = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let mut labels = pod_labels(pod);
    labels.insert(CONTAINER_NAME.to_string(), container.name.clone());
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: container.name.clone(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: container.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: container.command.clone().unwrap_or_default(),
        args: container.args.clone().unwrap_or_default(),
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: env
            .into_iter()
            .map(|(key, value)| cri::KeyValue { key, value })
            .collect(),
        mounts,
        labels,
        log_path: format!("{}/{attempt}.log", container.name),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(resources(container.resources.as_ref())),
            security_context: Some(security_context(container, &pod_security, namespaces(pod))?),
        }),
        ..Default::default()
    })
}

/// CPU period of CFS quotas (the kubelet's default).
const CPU_PERIOD: i64 = 100_000;
/// The least cpu.shares (the kernel's minimum), what a container without a request gets.
const MIN_SHARES: i64 = 2;

/// Requests and limits as v1 cgroup settings, as the kubelet converts them: shares from the
/// CPU request (the limit when none), a CFS quota from the CPU limit, the memory limit.
pub fn resources(requirements: Option<&ResourceRequirements>) -> cri::LinuxContainerResources {
    let get =
        |map: Option<&std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         key: &str| map.and_then(|m| m.get(key)).map(|q| q.0.clone());
    let requests = requirements.and_then(|r| r.requests.as_ref());
    let limits = requirements.and_then(|r| r.limits.as_ref());
    let cpu_request = get(requests, "cpu")
        .or_else(|| get(limits, "cpu"))
        .and_then(|q| styrman_runtime::quantity::milli_value(&q));
    let cpu_limit = get(limits, "cpu").and_then(|q| styrman_runtime::quantity::milli_value(&q));
    let memory_limit = get(limits, "memory").and_then(|q| styrman_runtime::quantity::value(&q));
    let shares = cpu_request
        .map(|m| (m * 1024 / 1000) as i64)
        .unwrap_or(MIN_SHARES)
        .max(MIN_SHARES);
    cri::LinuxContainerResources {
        cpu_shares: shares,
        cpu_period: if cpu_limit.is_some() { CPU_PERIOD } else { 0 },
        cpu_quota: cpu_limit
            .map(|m| ((m as i64) * CPU_PERIOD / 1000).max(1000))
            .unwrap_or(0),
        memory_limit_in_bytes: memory_limit.map(|v| v as i64).unwrap_or(0),
        ..Default::default()
    }
}

fn security_context(
    container: &Container,
    pod: &PodSecurityContext,
    namespaces: cri::NamespaceOption,
) -> Result<cri::LinuxContainerSecurityContext, String> {
    let own = container.security_context.clone().unwrap_or_default();
    let run_as_user = own.run_as_user.or(pod.run_as_user);
    let run_as_group = own.run_as_group.or(pod.run_as_group);
    let non_root = own.run_as_non_root.or(pod.run_as_non_root).unwrap_or(false);
    if non_root && run_as_user == Some(0) {
        return Err("container's runAsUser breaks non-root policy".into());
    }
    let capabilities = own.capabilities.clone().unwrap_or_default();
    Ok(cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: capabilities.add.unwrap_or_default(),
            drop_capabilities: capabilities.drop.unwrap_or_default(),
            ..Default::default()
        }),
        privileged: own.privileged.unwrap_or(false),
        run_as_user: run_as_user.map(|value| cri::Int64Value { value }),
        run_as_group: run_as_group.map(|value| cri::Int64Value { value }),
        readonly_rootfs: own.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: pod.supplemental_groups.clone().unwrap_or_default(),
        // allowPrivilegeEscalation defaults to true unless the container says false.
        no_new_privs: own.allow_privilege_escalation == Some(false),
        // The sandbox's namespaces, which the container joins.
        namespace_options: Some(namespaces),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn requests_and_limits_become_cgroup_settings() {
        let r = ResourceRequirements {
            requests: Some([("cpu".to_string(), Quantity("250m".into()))].into()),
            limits: Some(
                [
                    ("cpu".to_string(), Quantity("500m".into())),
                    ("memory".to_string(), Quantity("64Mi".into())),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let linux = resources(Some(&r));
        assert_eq!(linux.cpu_shares, 256);
        assert_eq!((linux.cpu_quota, linux.cpu_period), (50_000, 100_000));
        assert_eq!(linux.memory_limit_in_bytes, 64 * 1024 * 1024);
        let none = resources(None);
        assert_eq!((none.cpu_shares, none.cpu_quota, none.memory_limit_in_bytes), (2, 0, 0));
    }
}
