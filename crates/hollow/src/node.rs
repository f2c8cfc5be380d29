//! One hollow node: its Node object and its Lease.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, PostParams};

use crate::Config;
use crate::images::NodeImages;

/// The lease duration kubelets announce.
const LEASE_SECONDS: i32 = 40;

pub struct HollowNode {
    pub name: String,
    pub ip: String,
    index: usize,
    labels: BTreeMap<String, String>,
    capacity: BTreeMap<String, Quantity>,
    taints: Vec<Taint>,
    lease: Mutex<Option<Lease>>,
    next_pod_ip: AtomicU32,
    pub images: NodeImages,
}

/// `key[=value]:Effect`, as `kubectl taint` writes taints.
pub fn parse_taint(text: &str) -> anyhow::Result<Taint> {
    let (key_value, effect) = text
        .rsplit_once(':')
        .with_context(|| format!("taint {text:?}: expected key[=value]:Effect"))?;
    anyhow::ensure!(
        matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute"),
        "taint {text:?}: the effect must be NoSchedule, PreferNoSchedule or NoExecute"
    );
    let (key, value) = match key_value.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (key_value, None),
    };
    anyhow::ensure!(!key.is_empty(), "taint {text:?}: the key is empty");
    Ok(Taint {
        key: key.to_string(),
        value,
        effect: effect.to_string(),
        time_added: None,
    })
}

fn now() -> Time {
    Time(
        jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now()),
    )
}

impl HollowNode {
    pub fn new(config: &Config, index: usize, taints: Vec<Taint>) -> HollowNode {
        let name = format!("{}{index}", config.prefix);
        let mut labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), "amd64".to_string()),
            ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
            ("beta.kubernetes.io/arch".to_string(), "amd64".to_string()),
        ]);
        labels.extend(config.labels.clone());
        let capacity = BTreeMap::from([
            ("cpu".to_string(), Quantity(config.cpu.clone())),
            ("memory".to_string(), Quantity(config.memory.clone())),
            ("pods".to_string(), Quantity(config.pods.to_string())),
            ("ephemeral-storage".to_string(), Quantity("100Gi".into())),
        ]);
        HollowNode {
            ip: format!("10.128.{}.{}", index / 250, index % 250 + 1),
            name,
            index,
            labels,
            capacity,
            taints,
            lease: Mutex::new(None),
            next_pod_ip: AtomicU32::new(0),
            images: NodeImages::preloaded(&config.images),
        }
    }

    /// A pod IP from this node's own /24 (10.64.0.0/10 split by node index).
    pub fn pod_ip(&self) -> String {
        let n = self.next_pod_ip.fetch_add(1, Ordering::Relaxed) % 253 + 2;
        format!("10.{}.{}.{n}", 64 + self.index / 256, self.index % 256)
    }

    fn object(&self) -> Node {
        let heartbeat = now();
        let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(heartbeat.clone()),
            last_transition_time: Some(heartbeat.clone()),
        };
        Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(self.labels.clone()),
                annotations: Some(BTreeMap::from([(
                    "node.alpha.kubernetes.io/ttl".to_string(),
                    "0".to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: (!self.taints.is_empty()).then(|| self.taints.clone()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                capacity: Some(self.capacity.clone()),
                allocatable: Some(self.capacity.clone()),
                addresses: Some(vec![
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: self.ip.clone(),
                    },
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: self.name.clone(),
                    },
                ]),
                conditions: Some(vec![
                    condition(
                        "MemoryPressure",
                        "False",
                        "KubeletHasSufficientMemory",
                        "kubelet has sufficient memory available",
                    ),
                    condition(
                        "DiskPressure",
                        "False",
                        "KubeletHasNoDiskPressure",
                        "kubelet has no disk pressure",
                    ),
                    condition(
                        "PIDPressure",
                        "False",
                        "KubeletHasSufficientPID",
                        "kubelet has sufficient PID available",
                    ),
                    condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
                ]),
                images: Some(self.images.status()),
                daemon_endpoints: Some(NodeDaemonEndpoints {
                    kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
                }),
                node_info: Some(NodeSystemInfo {
                    architecture: "amd64".into(),
                    boot_id: format!("hollow-boot-{}", self.index),
                    container_runtime_version: "hollow://1.0.0".into(),
                    kernel_version: "6.1.0-hollow".into(),
                    kube_proxy_version: String::new(),
                    kubelet_version: "v1.33.0".into(),
                    machine_id: format!("hollow-{}", self.index),
                    operating_system: "linux".into(),
                    os_image: "styrman hollow node".into(),
                    system_uuid: format!("hollow-{}", self.index),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    /// Creates the Node, or brings an existing one's status up to date (a restarted process).
    pub async fn register(&self, client: &kube::Client) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(client.clone());
        let node = self.object();
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.post_status(client).await?;
                crate::recovery::ready_pods_again(client, &self.name).await?;
            }
            Err(e) => return Err(e).with_context(|| format!("registering node {}", self.name)),
        }
        self.renew_lease(client).await
    }

    /// Posts the node's status (conditions, capacity, addresses, images) over the stored one.
    pub async fn post_status(&self, client: &kube::Client) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(client.clone());
        let mut existing = nodes.get(&self.name).await?;
        existing.status = self.object().status;
        nodes
            .replace_status(&self.name, &PostParams::default(), &existing)
            .await?;
        Ok(())
    }

    /// Renews the node's Lease, creating it (owned by the Node) the first time.
    pub async fn renew_lease(&self, client: &kube::Client) -> anyhow::Result<()> {
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
        let held = self.lease.lock().expect("lease lock").clone();
        let mut lease = match held {
            Some(l) => l,
            None => match leases.get_opt(&self.name).await? {
                Some(l) => l,
                None => {
                    let node = Api::<Node>::all(client.clone()).get(&self.name).await?;
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(self.name.clone()),
                            namespace: Some("kube-node-lease".into()),
                            owner_references: Some(vec![OwnerReference {
                                api_version: "v1".into(),
                                kind: "Node".into(),
                                name: self.name.clone(),
                                uid: node.metadata.uid.unwrap_or_default(),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        },
                        spec: Some(LeaseSpec {
                            holder_identity: Some(self.name.clone()),
                            lease_duration_seconds: Some(LEASE_SECONDS),
                            renew_time: Some(MicroTime(jiff::Timestamp::now())),
                            ..Default::default()
                        }),
                    };
                    let created = leases.create(&PostParams::default(), &lease).await?;
                    *self.lease.lock().expect("lease lock") = Some(created);
                    return Ok(());
                }
            },
        };
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        }
        match leases.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(renewed) => {
                *self.lease.lock().expect("lease lock") = Some(renewed);
                Ok(())
            }
            Err(e) => {
                // Re-read next time (a conflict, or the lease was deleted).
                *self.lease.lock().expect("lease lock") = None;
                Err(e).context("renewing the lease")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_parse_as_kubectl_writes_them() {
        let t = parse_taint("dedicated=gpu:NoSchedule").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value.as_deref(), t.effect.as_str()),
            ("dedicated", Some("gpu"), "NoSchedule")
        );
        let t = parse_taint("spot:PreferNoSchedule").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value, t.effect.as_str()),
            ("spot", None, "PreferNoSchedule")
        );
        assert!(parse_taint("x:Sometimes").is_err());
        assert!(parse_taint("nothing").is_err());
    }
}
