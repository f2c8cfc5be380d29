//! A node's own object and heartbeat, as the kubelet's node status manager and node lease
//! controller do them: register the Node (labels, taints, capacity, allocatable, addresses,
//! conditions, nodeInfo, images), post its status again over the stored one, and renew its
//! Lease in `kube-node-lease` (owned by the Node, so it goes with it). Shared by the kubelet
//! and the hollow nodes, which differ only in the [`NodeFacts`] they report: the kubelet reads
//! them from the machine and the runtime, a hollow node makes them up (kubemark's hollow node
//! is the real kubelet with a fake runtime, likewise).

use std::collections::BTreeMap;
use std::sync::Mutex;

use anyhow::Context;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};

/// The lease duration kubelets announce (`--node-lease-duration-seconds`).
pub const LEASE_SECONDS: i32 = 40;
/// The kubelet's port, announced in `status.daemonEndpoints`.
pub const KUBELET_PORT: i32 = 10250;

/// What a node reports about itself.
#[derive(Clone, Debug, Default)]
pub struct NodeFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub capacity: BTreeMap<String, Quantity>,
    pub allocatable: BTreeMap<String, Quantity>,
    pub addresses: Vec<NodeAddress>,
    pub node_info: NodeSystemInfo,
}

/// The labels every kubelet sets on its Node: hostname, OS and architecture (and their
/// deprecated beta names), then the `--node-labels`.
pub fn default_labels(name: &str, arch: &str, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch.to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), arch.to_string()),
    ]);
    labels.extend(extra.clone());
    labels
}

/// `key[=value]:Effect`, as `kubectl taint` and `--register-with-taints` write taints.
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

/// One node's registration and heartbeat.
pub struct NodeRegistration {
    facts: NodeFacts,
    /// The Lease as last written, so a renewal is one write.
    lease: Mutex<Option<Lease>>,
}

impl NodeRegistration {
    pub fn new(facts: NodeFacts) -> NodeRegistration {
        NodeRegistration {
            facts,
            lease: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.facts.name
    }

    /// The node's InternalIP, as registered.
    pub fn internal_ip(&self) -> String {
        self.facts
            .addresses
            .iter()
            .find(|a| a.type_ == "InternalIP")
            .map(|a| a.address.clone())
            .unwrap_or_default()
    }

    /// The Node as this node reports it, holding `images`.
    pub fn object(&self, images: Vec<ContainerImage>) -> Node {
        self.object_with(images, None)
    }

    /// The same, NotReady with `runtime_error` as the reason when the runtime is down (the
    /// kubelet's runtime health check).
    pub fn object_with(&self, images: Vec<ContainerImage>, runtime_error: Option<&str>) -> Node {
        let heartbeat = now();
        let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(heartbeat.clone()),
            last_transition_time: Some(heartbeat.clone()),
        };
        let facts = &self.facts;
        Node {
            metadata: ObjectMeta {
                name: Some(facts.name.clone()),
                labels: Some(facts.labels.clone()),
                annotations: Some(BTreeMap::from([(
                    "node.alpha.kubernetes.io/ttl".to_string(),
                    "0".to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: (!facts.taints.is_empty()).then(|| facts.taints.clone()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                capacity: Some(facts.capacity.clone()),
                allocatable: Some(facts.allocatable.clone()),
                addresses: Some(facts.addresses.clone()),
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
                    match runtime_error {
                        None => condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
                        Some(error) => condition("Ready", "False", "KubeletNotReady", error),
                    },
                ]),
                images: Some(images),
                daemon_endpoints: Some(NodeDaemonEndpoints {
                    kubelet_endpoint: Some(DaemonEndpoint { port: KUBELET_PORT }),
                }),
                node_info: Some(facts.node_info.clone()),
                ..Default::default()
            }),
        }
    }

    /// Creates the Node; true when it already existed (a restarted agent), in which case its
    /// status is posted over the stored one instead.
    pub async fn register(&self, client: &kube::Client, images: Vec<ContainerImage>) -> anyhow::Result<bool> {
        let nodes: Api<Node> = Api::all(client.clone());
        let existed = match nodes.create(&PostParams::default(), &self.object(images.clone())).await {
            Ok(_) => false,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.post_status(client, images).await?;
                true
            }
            Err(e) => return Err(e).with_context(|| format!("registering node {}", self.facts.name)),
        };
        self.renew_lease(client).await?;
        Ok(existed)
    }

    /// Posts the node's status (conditions, capacity, addresses, images) over the stored one:
    /// a merge patch without a resource version, so a concurrent write (the IPAM controller
    /// setting the pod CIDR, say) neither fails it nor is undone by it.
    pub async fn post_status(&self, client: &kube::Client, images: Vec<ContainerImage>) -> anyhow::Result<()> {
        self.post_status_with(client, images, None).await
    }

    /// The same, NotReady while `runtime_error` says the runtime is down.
    pub async fn post_status_with(
        &self,
        client: &kube::Client,
        images: Vec<ContainerImage>,
        runtime_error: Option<&str>,
    ) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(client.clone());
        let status = serde_json::json!({"status": self.object_with(images, runtime_error).status});
        nodes
            .patch_status(&self.facts.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("posting the status of node {}", self.facts.name))?;
        Ok(())
    }

    /// Renews the node's Lease, creating it (owned by the Node) the first time.
    pub async fn renew_lease(&self, client: &kube::Client) -> anyhow::Result<()> {
        let name = &self.facts.name;
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
        let held = self.lease.lock().expect("lease lock").clone();
        let mut lease = match held {
            Some(l) => l,
            None => match leases.get_opt(name).await? {
                Some(l) => l,
                None => {
                    let node = Api::<Node>::all(client.clone()).get(name).await?;
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some("kube-node-lease".into()),
                            owner_references: Some(vec![OwnerReference {
                                api_version: "v1".into(),
                                kind: "Node".into(),
                                name: name.clone(),
                                uid: node.metadata.uid.unwrap_or_default(),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        },
                        spec: Some(LeaseSpec {
                            holder_identity: Some(name.clone()),
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
        match leases.replace(name, &PostParams::default(), &lease).await {
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

    #[test]
    fn the_node_object_carries_its_facts() {
        let facts = NodeFacts {
            name: "n1".into(),
            labels: default_labels("n1", "amd64", &BTreeMap::from([("zone".to_string(), "a".to_string())])),
            taints: vec![parse_taint("k=v:NoSchedule").unwrap()],
            capacity: BTreeMap::from([("cpu".to_string(), Quantity("2".into()))]),
            allocatable: BTreeMap::from([("cpu".to_string(), Quantity("1900m".into()))]),
            ..Default::default()
        };
        let node = NodeRegistration::new(facts).object(vec![]);
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["zone"], "a");
        let status = node.status.unwrap();
        assert_eq!(status.allocatable.unwrap()["cpu"].0, "1900m");
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(node.spec.unwrap().taints.unwrap()[0].key, "k");
    }
}
