//! What the scheduler knows of the cluster: every node, and per node the pods on it and what
//! they request. Fed by the node and pod watches; a pod the scheduler has just bound is
//! "assumed" on its node until the watch shows it there, so the next decisions already count it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::resources::{self, Resources};

/// A host port in use: (protocol, host IP, port).
pub type HostPort = (String, String, i32);

#[derive(Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub allocatable: Resources,
    pub allowed_pods: i128,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub pods: HashMap<String, Arc<Pod>>,
    pub used_ports: HashMap<HostPort, usize>,
    /// The node's images by canonical name, with their sizes (ImageLocality).
    pub images: HashMap<String, i64>,
    /// How many of its pods declare pod affinity or anti-affinity of any kind (nodes with
    /// none can be skipped when scoring existing pods' terms).
    pub pods_with_affinity: usize,
}

impl NodeInfo {
    fn new(node: Arc<Node>) -> NodeInfo {
        let (allocatable, allowed_pods) = resources::allocatable(&node);
        NodeInfo {
            node,
            allocatable,
            allowed_pods,
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            pods: HashMap::new(),
            used_ports: HashMap::new(),
            images: HashMap::new(),
            pods_with_affinity: 0,
        }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    pub(crate) fn add(&mut self, uid: &str, pod: Arc<Pod>) {
        let (exact, non_zero) = resources::pod_requests(&pod);
        self.requested.add(&exact);
        self.non_zero_requested.add(&non_zero);
        for port in host_ports(&pod) {
            *self.used_ports.entry(port).or_default() += 1;
        }
        if crate::topology::has_pod_affinity(&pod) {
            self.pods_with_affinity += 1;
        }
        self.pods.insert(uid.to_string(), pod);
    }

    pub(crate) fn remove(&mut self, uid: &str) {
        let Some(pod) = self.pods.remove(uid) else { return };
        let (exact, non_zero) = resources::pod_requests(&pod);
        self.requested.sub(&exact);
        self.non_zero_requested.sub(&non_zero);
        if crate::topology::has_pod_affinity(&pod) {
            self.pods_with_affinity -= 1;
        }
        for port in host_ports(&pod) {
            if let Some(n) = self.used_ports.get_mut(&port) {
                *n -= 1;
                if *n == 0 {
                    self.used_ports.remove(&port);
                }
            }
        }
    }
}

/// Adds (or, with -1, takes away) a node's images to the count of nodes holding each.
fn count_holders(holders: &mut HashMap<String, usize>, images: &HashMap<String, i64>, delta: isize) {
    for name in images.keys() {
        let n = holders.entry(name.clone()).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            holders.remove(name);
        }
    }
}

/// The host ports a pod's containers ask for.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|p| *p > 0)?;
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let ip = p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into());
            Some((protocol, ip, port))
        })
        .collect()
}

#[derive(Default)]
pub struct Cache {
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Pods on nodes, by uid: the node each is counted on, and the pod.
    placed: HashMap<String, (String, Arc<Pod>)>,
    /// Pods bound by this scheduler that the watch has not shown on their node yet.
    assumed: HashSet<String>,
    /// How many placed pods declare required anti-affinity (when none do, InterPodAffinity
    /// need not look at every pod).
    pub anti_affinity_pods: usize,
    /// Per image name, how many nodes have it (ImageLocality's spread).
    pub image_holders: HashMap<String, usize>,
}

impl Cache {
    pub fn set_node(&mut self, node: Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let node = Arc::new(node);
        let images = crate::image_locality::node_images(&node);
        match self.nodes.get_mut(&name) {
            Some(info) => {
                let (allocatable, allowed) = resources::allocatable(&node);
                info.node = node;
                info.allocatable = allocatable;
                info.allowed_pods = allowed;
                if info.images != images {
                    let old = std::mem::replace(&mut info.images, images);
                    count_holders(&mut self.image_holders, &old, -1);
                    count_holders(&mut self.image_holders, &info.images, 1);
                }
            }
            None => {
                let mut info = NodeInfo::new(node);
                count_holders(&mut self.image_holders, &images, 1);
                info.images = images;
                // Pods seen before their node.
                for (uid, (node_name, pod)) in &self.placed {
                    if *node_name == name {
                        info.add(uid, Arc::clone(pod));
                    }
                }
                self.nodes.insert(name, info);
            }
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.remove(name) {
            count_holders(&mut self.image_holders, &info.images, -1);
        }
    }

    /// Counts `pod` on its node (or stops counting it, once it is finished).
    pub fn set_pod(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else { return };
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let finished = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        self.remove_pod(&uid);
        let (Some(node), false) = (node, finished) else { return };
        let pod = Arc::new(pod);
        if crate::topology::has_required_anti_affinity(&pod) {
            self.anti_affinity_pods += 1;
        }
        if let Some(info) = self.nodes.get_mut(&node) {
            info.add(&uid, Arc::clone(&pod));
        }
        self.placed.insert(uid, (node, pod));
    }

    pub fn remove_pod(&mut self, uid: &str) {
        self.assumed.remove(uid);
        let Some((node, pod)) = self.placed.remove(uid) else {
            return;
        };
        if crate::topology::has_required_anti_affinity(&pod) {
            self.anti_affinity_pods -= 1;
        }
        if let Some(info) = self.nodes.get_mut(&node) {
            info.remove(uid);
        }
    }

    /// Counts `pod` on `node` ahead of the binding showing up in the watch.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        let mut bound = pod.clone();
        if let Some(spec) = bound.spec.as_mut() {
            spec.node_name = Some(node.to_string());
        }
        if let Some(uid) = pod.metadata.uid.clone() {
            self.set_pod(bound);
            self.assumed.insert(uid);
        }
    }

    /// Stops counting a pod whose binding failed.
    pub fn forget(&mut self, uid: &str) {
        if self.assumed.contains(uid) {
            self.remove_pod(uid);
        }
    }

    /// The uids of every pod counted on a node.
    pub fn placed_uids(&self) -> Vec<String> {
        self.placed.keys().cloned().collect()
    }
}
