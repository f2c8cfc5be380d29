//! ImageLocality: prefer nodes that already hold the pod's images, by their size, scaled down
//! by how many nodes hold them (an image everywhere gives no node an edge, and following
//! images alone would pile pods onto a few nodes).
//!
//! Nodes report their images in `status.images`, each under several names (tags and
//! digests). Upstream compares names after only appending `:latest` to untagged ones, so `nginx`
//! in a pod never meets the `docker.io/library/nginx:latest` a containerd node reports (a
//! limitation its own source notes). Here both sides are brought to the fully qualified form
//! first, which agrees with upstream whenever the two already spelt a name alike.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use styrman_runtime::canonical_image_name;

use crate::cache::NodeInfo;

const MB: i64 = 1024 * 1024;
/// Below this an image is cheap to pull anywhere (upstream's bounds, the 90th percentile of
/// Docker Hub's compressed images).
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;
const MAX_NODE_SCORE: i64 = 100;

/// A node's images: every canonical name it reports, with the image's size.
pub fn node_images(node: &Node) -> HashMap<String, i64> {
    let mut images = HashMap::new();
    for image in node
        .status
        .as_ref()
        .and_then(|s| s.images.as_deref())
        .unwrap_or_default()
    {
        for name in image.names.iter().flatten() {
            images.insert(canonical_image_name(name), image.size_bytes.unwrap_or(0));
        }
    }
    images
}

/// The canonical names of the pod's images, one per container (init containers included),
/// computed once per scheduling attempt rather than once per node.
pub fn pod_images(pod: &Pod) -> Vec<String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .map(|c| canonical_image_name(c.image.as_deref().unwrap_or("")))
        .collect()
}

/// The node's score for a pod with these images ([`pod_images`]), 0..=100. `holders` counts,
/// per image name, the nodes that have it; `total_nodes` is every node in the cluster.
pub fn score(images: &[String], node: &NodeInfo, holders: &HashMap<String, usize>, total_nodes: usize) -> i64 {
    if node.images.is_empty() || total_nodes == 0 {
        return priority(0, images.len());
    }
    let sum: i64 = images
        .iter()
        .filter_map(|name| {
            let size = *node.images.get(name)?;
            Some(scaled(size, holders.get(name).copied().unwrap_or(1), total_nodes))
        })
        .sum();
    priority(sum, images.len())
}

/// An image's size, scaled by the share of nodes that have it.
fn scaled(size: i64, holders: usize, total_nodes: usize) -> i64 {
    (size as f64 * (holders as f64 / total_nodes as f64)) as i64
}

/// The summed scaled sizes, clamped to [23 MB, 1000 MB × containers], as 0..=100.
fn priority(sum: i64, containers: usize) -> i64 {
    let max = MAX_CONTAINER_THRESHOLD * (containers.max(1) as i64);
    let sum = sum.clamp(MIN_THRESHOLD, max);
    MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node_with(images: serde_json::Value) -> NodeInfo {
        let mut cache = crate::cache::Cache::default();
        cache.set_node(
            serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {"images": images,
                "allocatable": {"cpu": "1", "memory": "1Gi"}}}))
            .unwrap(),
        );
        cache.nodes.remove("n").unwrap()
    }

    fn pod(images: &[&str]) -> Vec<String> {
        let containers: Vec<_> = images
            .iter()
            .enumerate()
            .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
            .collect();
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": containers}})).unwrap();
        pod_images(&pod)
    }

    #[test]
    fn bigger_and_more_local_images_score_higher() {
        let node = node_with(json!([
            {"names": ["docker.io/library/big@sha256:1", "docker.io/library/big:latest"], "sizeBytes": 500 * MB},
            {"names": ["docker.io/library/tiny:1"], "sizeBytes": 10 * MB}
        ]));
        let holders = HashMap::from([
            ("docker.io/library/big:latest".to_string(), 1),
            ("docker.io/library/tiny:1".to_string(), 1),
        ]);
        // One node of one holds the 500 MB image: (500 − 23) × 100 / (1000 − 23).
        assert_eq!(score(&pod(&["big"]), &node, &holders, 1), 48);
        // Held by 1 of 4 nodes: 125 MB counts. (125 − 23) × 100 / 977 = 10.
        assert_eq!(score(&pod(&["big"]), &node, &holders, 4), 10);
        // Two containers double the ceiling: (500 − 23) × 100 / (2000 − 23) = 24.
        assert_eq!(score(&pod(&["big", "absent"]), &node, &holders, 1), 24);
        // Under the 23 MB floor, or absent: nothing.
        assert_eq!(score(&pod(&["tiny:1"]), &node, &holders, 1), 0);
        assert_eq!(score(&pod(&["absent"]), &node, &holders, 1), 0);
        // Never more than 100.
        let huge = node_with(json!([{"names": ["docker.io/library/huge:latest"], "sizeBytes": 5000 * MB}]));
        assert_eq!(score(&pod(&["huge"]), &huge, &HashMap::new(), 1), 100);
    }
}
