//! One hollow node: made-up facts (capacity, addresses, nodeInfo) registered and kept alive by
//! the kubelet's own node status and lease code.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::core::v1::{NodeAddress, NodeSystemInfo, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use styrman_kubelet::node_status::{NodeFacts, NodeRegistration, default_labels};

use crate::Config;
use crate::images::NodeImages;

pub use styrman_kubelet::node_status::parse_taint;

pub struct HollowNode {
    pub name: String,
    pub ip: String,
    index: usize,
    registration: NodeRegistration,
    next_pod_ip: AtomicU32,
    pub images: NodeImages,
}

impl HollowNode {
    pub fn new(config: &Config, index: usize, taints: Vec<Taint>) -> HollowNode {
        let name = format!("{}{index}", config.prefix);
        let ip = format!("10.128.{}.{}", index / 250, index % 250 + 1);
        let capacity = BTreeMap::from([
            ("cpu".to_string(), Quantity(config.cpu.clone())),
            ("memory".to_string(), Quantity(config.memory.clone())),
            ("pods".to_string(), Quantity(config.pods.to_string())),
            ("ephemeral-storage".to_string(), Quantity("100Gi".into())),
        ]);
        let facts = NodeFacts {
            name: name.clone(),
            labels: default_labels(&name, "amd64", &config.labels),
            taints,
            allocatable: capacity.clone(),
            capacity,
            addresses: vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.clone(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.clone(),
                },
            ],
            node_info: NodeSystemInfo {
                architecture: "amd64".into(),
                boot_id: format!("hollow-boot-{index}"),
                container_runtime_version: "hollow://1.0.0".into(),
                kernel_version: "6.1.0-hollow".into(),
                kube_proxy_version: String::new(),
                kubelet_version: "v1.33.0".into(),
                machine_id: format!("hollow-{index}"),
                operating_system: "linux".into(),
                os_image: "styrman hollow node".into(),
                system_uuid: format!("hollow-{index}"),
                ..Default::default()
            },
        };
        HollowNode {
            ip,
            name,
            index,
            registration: NodeRegistration::new(facts),
            next_pod_ip: AtomicU32::new(0),
            images: NodeImages::preloaded(&config.images),
        }
    }

    /// A pod IP from this node's own /24 (10.64.0.0/10 split by node index).
    pub fn pod_ip(&self) -> String {
        let n = self.next_pod_ip.fetch_add(1, Ordering::Relaxed) % 253 + 2;
        format!("10.{}.{}.{n}", 64 + self.index / 256, self.index % 256)
    }

    /// Creates the Node, or brings an existing one's status up to date and its pods Ready
    /// again (a restarted process).
    pub async fn register(&self, client: &kube::Client) -> anyhow::Result<()> {
        if self.registration.register(client, self.images.status()).await? {
            crate::recovery::ready_pods_again(client, &self.name).await?;
        }
        Ok(())
    }

    /// Posts the node's status (conditions, capacity, addresses, images) over the stored one.
    pub async fn post_status(&self, client: &kube::Client) -> anyhow::Result<()> {
        self.registration.post_status(client, self.images.status()).await
    }

    /// Renews the node's Lease, creating it the first time.
    pub async fn renew_lease(&self, client: &kube::Client) -> anyhow::Result<()> {
        self.registration.renew_lease(client).await
    }
}
