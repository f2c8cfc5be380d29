//! The node's images without a registry, as k3s's air-gap images and `crictl images|rmi` give
//! them: archives (OCI or docker) imported into the runtime's `k8s.io` namespace with
//! containerd's own `ctr` (what the agent does at every start for `DATA_DIR/agent/images`),
//! and the images listed and removed through CRI's ImageService.

use std::path::Path;

use anyhow::{Context, Result};
use k8s_cri::v1 as cri;

use crate::cri::Runtime;

/// Imports one archive into the containerd at `socket`; the images it held, as ctr names them.
pub async fn import(socket: &Path, archive: &Path) -> Result<String> {
    let output = tokio::process::Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", "k8s.io", "images", "import", "--no-unpack"])
        .arg(archive)
        .output()
        .await
        .context("cannot run ctr (part of the containerd package)")?;
    anyhow::ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// One row of `styrman images ls`: repository, tag, id (12 hex digits) and size, as
/// `crictl images` prints them.
pub async fn list(runtime: &Runtime) -> Result<Vec<[String; 4]>> {
    let images = runtime
        .images
        .clone()
        .list_images(cri::ListImagesRequest::default())
        .await?
        .into_inner()
        .images;
    let mut rows = Vec::new();
    for image in images {
        let id = image
            .id
            .trim_start_matches("sha256:")
            .chars()
            .take(13)
            .collect::<String>();
        let size = human_size(image.size);
        if image.repo_tags.is_empty() {
            let repository = image
                .repo_digests
                .first()
                .and_then(|d| d.split_once('@'))
                .map_or("<none>", |(r, _)| r);
            rows.push([repository.to_string(), "<none>".into(), id.clone(), size.clone()]);
        }
        for reference in &image.repo_tags {
            let (repository, tag) = split_tag(reference);
            rows.push([repository.to_string(), tag.to_string(), id.clone(), size.clone()]);
        }
    }
    rows.sort();
    Ok(rows)
}

/// Removes an image by reference or id; an error when the runtime has no such image.
pub async fn remove(runtime: &Runtime, image: &str) -> Result<()> {
    anyhow::ensure!(runtime.has_image(image).await?, "no such image {image:?}");
    runtime
        .images
        .clone()
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
        })
        .await
        .with_context(|| format!("cannot remove {image}"))?;
    Ok(())
}

/// `repository:tag`, where the repository may hold a registry's `host:port`.
fn split_tag(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository, tag),
        _ => (reference, "<none>"),
    }
}

/// Bytes in decimal units with three significant digits, as docker's units.HumanSize writes.
fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let rounded = format!("{value:.digits$}");
    let trimmed = if rounded.contains('.') {
        rounded.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        rounded
    };
    format!("{trimmed}{}", units[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_at_the_tag_not_the_port() {
        assert_eq!(
            split_tag("docker.io/library/busybox:latest"),
            ("docker.io/library/busybox", "latest")
        );
        assert_eq!(split_tag("localhost:5000/app"), ("localhost:5000/app", "<none>"));
        assert_eq!(split_tag("localhost:5000/app:1.0"), ("localhost:5000/app", "1.0"));
    }

    #[test]
    fn sizes_read_as_crictl_prints_them() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_234_567), "1.23MB");
        assert_eq!(human_size(45_600_000), "45.6MB");
        assert_eq!(human_size(736_000), "736kB");
    }
}
