//! The images a hollow node "holds", reported in `status.images` as a kubelet reports them:
//! those it was started with (`--images`) and those of every pod it has run, each under its
//! fully qualified tag and a digest, largest first, at most 50 (the kubelet's
//! nodeStatusMaxImages). Sizes are fake but deterministic (`--image-size`, or derived from the
//! name). A node's new images are written by [`report`] in batches, not once per pod, so a
//! scale test's node status writes stay few.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerImage, Node};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use styrman_runtime::canonical_image_name;

use crate::node::HollowNode;

/// How many images a kubelet lists in a node's status.
const MAX_IMAGES: usize = 50;
/// How often new images are written.
const REPORT_EVERY: Duration = Duration::from_millis(500);
/// Node status writes in flight at once.
const CONCURRENCY: usize = 32;
const MIB: i64 = 1024 * 1024;

/// A node's images, by canonical name, with their sizes.
#[derive(Default)]
pub struct NodeImages {
    held: std::sync::Mutex<BTreeMap<String, i64>>,
    /// Images were added since the last report.
    unreported: AtomicBool,
}

impl NodeImages {
    pub fn preloaded(images: &[(String, i64)]) -> NodeImages {
        let held = images
            .iter()
            .map(|(name, size)| (canonical_image_name(name), *size))
            .collect();
        NodeImages {
            held: std::sync::Mutex::new(held),
            unreported: AtomicBool::new(false),
        }
    }

    /// Records that the node pulled `images` (container image references); true when one of
    /// them is new to it.
    pub fn pulled<'a>(&self, images: impl IntoIterator<Item = &'a str>, fixed_size: Option<i64>) -> bool {
        let mut held = self.held.lock().expect("images lock");
        let mut added = false;
        for image in images {
            if let std::collections::btree_map::Entry::Vacant(entry) = held.entry(canonical_image_name(image)) {
                let size = fixed_size.unwrap_or_else(|| fake_size(entry.key()));
                entry.insert(size);
                added = true;
            }
        }
        if added {
            self.unreported.store(true, Ordering::Release);
        }
        added
    }

    /// `status.images` as a kubelet writes it: largest first, at most 50.
    pub fn status(&self) -> Vec<ContainerImage> {
        let held = self.held.lock().expect("images lock");
        let mut images: Vec<(&String, &i64)> = held.iter().collect();
        images.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        images
            .into_iter()
            .take(MAX_IMAGES)
            .map(|(name, size)| ContainerImage {
                names: Some(vec![digest_name(name), name.clone()]),
                size_bytes: Some(*size),
            })
            .collect()
    }

    fn take_unreported(&self) -> bool {
        self.unreported.swap(false, Ordering::AcqRel)
    }

    fn mark_unreported(&self) {
        self.unreported.store(true, Ordering::Release);
    }
}

/// `name:size,...` for `--images`: the size after the last colon (a Kubernetes quantity; a
/// name's own colons are its tag or port).
pub fn parse_images(text: &str) -> anyhow::Result<Vec<(String, i64)>> {
    text.split(',')
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (name, size) = item
                .rsplit_once(':')
                .with_context(|| format!("--images: {item:?} is not name:size"))?;
            anyhow::ensure!(!name.is_empty(), "--images: {item:?} has no image name");
            Ok((
                name.to_string(),
                parse_size(size).with_context(|| format!("--images: {item:?}"))?,
            ))
        })
        .collect()
}

/// An image size as a quantity (`300Mi`, `1G`, `52428800`).
pub fn parse_size(text: &str) -> anyhow::Result<i64> {
    let bytes = styrman_runtime::quantity::value(text).with_context(|| format!("{text:?} is not a size"))?;
    anyhow::ensure!(bytes >= 0, "{text:?} is negative");
    i64::try_from(bytes).with_context(|| format!("{text:?} is too large"))
}

/// FNV-1a: a stable hash (std's hasher may change between Rust releases).
fn fnv(text: &str, seed: u64) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A size between 10 MiB and 500 MiB, always the same for the same name.
fn fake_size(name: &str) -> i64 {
    10 * MIB + (fnv(name, 0) % (490 * MIB as u64)) as i64
}

/// The image's digest reference, `repository@sha256:…`, made up from its name.
fn digest_name(name: &str) -> String {
    let repository = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    };
    let hex: String = (0..4).map(|seed| format!("{:016x}", fnv(name, seed))).collect();
    format!("{repository}@sha256:{hex}")
}

/// Writes the status.images of nodes that pulled new images, every half second.
pub async fn report(client: kube::Client, nodes: Arc<Vec<HollowNode>>) {
    let api: Api<Node> = Api::all(client);
    let mut ticks = tokio::time::interval(REPORT_EVERY);
    loop {
        ticks.tick().await;
        let due: Vec<usize> = (0..nodes.len())
            .filter(|i| nodes[*i].images.take_unreported())
            .collect();
        futures::stream::iter(due)
            .map(|i| {
                let (api, nodes) = (api.clone(), Arc::clone(&nodes));
                async move {
                    let node = &nodes[i];
                    let patch = json!({"status": {"images": node.images.status()}});
                    if let Err(e) = api
                        .patch_status(&node.name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                    {
                        tracing::warn!(node = %node.name, error = %e, "cannot report the node's images; retrying");
                        node.images.mark_unreported();
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<()>>()
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_named_and_sized_as_a_kubelet_reports_them() {
        let images =
            NodeImages::preloaded(&parse_images("registry.example.com:5000/big:v1:900Mi,small:1:20Mi").unwrap());
        assert!(
            !images.pulled(["registry.example.com:5000/big:v1"], None),
            "already held"
        );
        assert!(images.pulled(["nginx", "nginx"], None));
        assert!(images.take_unreported() && !images.take_unreported());
        let status = images.status();
        let names: Vec<&str> = status.iter().map(|i| i.names.as_ref().unwrap()[1].as_str()).collect();
        assert_eq!(
            names,
            [
                "registry.example.com:5000/big:v1",
                "docker.io/library/nginx:latest",
                "docker.io/library/small:1"
            ]
        );
        assert_eq!(status[0].size_bytes, Some(900 * MIB));
        assert!(status[0].names.as_ref().unwrap()[0].starts_with("registry.example.com:5000/big@sha256:"));
        // The made-up size is stable and plausible.
        let size = status[1].size_bytes.unwrap();
        assert_eq!(size, fake_size("docker.io/library/nginx:latest"));
        assert!((10 * MIB..500 * MIB).contains(&size));
        assert!(images.pulled(["redis"], Some(7)));
        assert!(images.status().iter().any(|i| i.size_bytes == Some(7)));
        assert!(parse_images("nosize").is_err());
    }
}
