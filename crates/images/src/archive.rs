//! An OCI image archive from a directory, as the OCI image-layout specification lays it out:
//! `oci-layout`, `index.json` and content-addressed `blobs/sha256/<hex>` (one gzip layer, the
//! image config, the manifest) in a tar. The index names the image with the annotations
//! containerd's importer reads (`io.containerd.image.name`, `org.opencontainers.image.ref.name`),
//! so `ctr -n k8s.io images import` registers it under its full reference.
//!
//! The archive is reproducible: entries in name order, owner root, times zero, gzip without a
//! timestamp, so the same directory always gives the same digests.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What an image runs, as the image config's `config` says it.
#[derive(Clone, Debug, Default)]
pub struct ImageConfig {
    /// The full reference: `docker.io/library/busybox:latest`.
    pub name: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value`.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `80/tcp`.
    pub exposed_ports: Vec<String>,
}

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Writes the image of `rootfs` run as `config` to `out`; returns the manifest's digest
/// (`sha256:<hex>`).
pub fn write_archive(rootfs: &Path, config: &ImageConfig, out: impl Write) -> Result<String> {
    let tag = tag_of(&config.name)?;
    let layer = layer_tar(rootfs)?;
    let diff_id = digest(&layer);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&layer)?;
    let layer_blob = gz.finish()?;
    let image_config = serde_json::to_vec(&config_json(config, &diff_id))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor(CONFIG_TYPE, &image_config),
        "layers": [descriptor(LAYER_TYPE, &layer_blob)],
    }))?;
    let manifest_digest = digest(&manifest);
    let mut manifest_descriptor = descriptor(MANIFEST_TYPE, &manifest);
    manifest_descriptor["annotations"] = json!({
        "io.containerd.image.name": config.name,
        "org.opencontainers.image.ref.name": tag,
    });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_descriptor],
    }))?;

    let mut archive = tar::Builder::new(out);
    append_file(&mut archive, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append_file(&mut archive, "index.json", &index)?;
    for blob in [&layer_blob, &image_config, &manifest] {
        let hex = digest(blob);
        let hex = hex.trim_start_matches("sha256:");
        append_file(&mut archive, &format!("blobs/sha256/{hex}"), blob)?;
    }
    archive.into_inner()?.flush()?;
    Ok(manifest_digest)
}

/// The tag of a reference (`latest` when it has none); a digest reference is refused, since
/// an archive made here has its own digest.
fn tag_of(name: &str) -> Result<&str> {
    if name.contains('@') {
        bail!("{name}: an image made from a directory cannot be named by digest");
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    Ok(last.split_once(':').map_or("latest", |(_, tag)| tag))
}

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn descriptor(media_type: &str, blob: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": digest(blob), "size": blob.len()})
}

fn config_json(config: &ImageConfig, diff_id: &str) -> Value {
    let mut run = serde_json::Map::new();
    if !config.env.is_empty() {
        run.insert("Env".into(), json!(config.env));
    }
    if !config.entrypoint.is_empty() {
        run.insert("Entrypoint".into(), json!(config.entrypoint));
    }
    if !config.cmd.is_empty() {
        run.insert("Cmd".into(), json!(config.cmd));
    }
    if let Some(dir) = &config.working_dir {
        run.insert("WorkingDir".into(), json!(dir));
    }
    if !config.exposed_ports.is_empty() {
        let ports: serde_json::Map<String, Value> =
            config.exposed_ports.iter().map(|p| (p.clone(), json!({}))).collect();
        run.insert("ExposedPorts".into(), Value::Object(ports));
    }
    json!({
        "architecture": go_arch(),
        "os": "linux",
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "styrman images pack", "comment": "one layer from a directory"}],
    })
}

/// The architecture as OCI (Go) names it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The directory as one uncompressed layer: every entry in name order, owned by root, with
/// its mode, and symbolic links as links.
fn layer_tar(rootfs: &Path) -> Result<Vec<u8>> {
    if !rootfs.is_dir() {
        bail!("{}: not a directory", rootfs.display());
    }
    let mut layer = tar::Builder::new(Vec::new());
    layer.follow_symlinks(false);
    let mut paths = Vec::new();
    walk(rootfs, rootfs, &mut paths)?;
    paths.sort();
    for relative in paths {
        let full = rootfs.join(&relative);
        let meta = std::fs::symlink_metadata(&full).with_context(|| format!("{}", full.display()))?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full)?;
            header.set_size(0);
            layer.append_link(&mut header, &relative, target)?;
        } else if meta.is_dir() {
            header.set_size(0);
            layer.append_data(&mut header, &relative, std::io::empty())?;
        } else if meta.is_file() {
            let file = std::fs::File::open(&full)?;
            layer.append_data(&mut header, &relative, file)?;
        } else {
            bail!("{}: only files, directories and links go into an image", full.display());
        }
    }
    Ok(layer.into_inner()?)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        out.push(path.strip_prefix(root).expect("walked below the root").to_path_buf());
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

/// Appends a regular file with `bytes` under `path` to an archive.
fn append_file<W: Write>(archive: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(bytes.len() as u64);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    archive.append_data(&mut header, path, bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn sample_rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path().join("bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("tool", dir.path().join("bin/alias")).unwrap();
        dir
    }

    fn config() -> ImageConfig {
        ImageConfig {
            name: "docker.io/library/sample:1.0".into(),
            cmd: vec!["/bin/tool".into()],
            ..Default::default()
        }
    }

    /// The archive's files by path.
    fn entries(archive: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut out = std::collections::BTreeMap::new();
        for entry in tar::Archive::new(archive).entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            out.insert(path, bytes);
        }
        out
    }

    #[test]
    fn the_same_directory_gives_the_same_bytes() {
        let root = sample_rootfs();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let first = write_archive(root.path(), &config(), &mut a).unwrap();
        let second = write_archive(root.path(), &config(), &mut b).unwrap();
        assert_eq!(first, second);
        assert_eq!(a, b);
    }

    #[test]
    fn blobs_are_named_by_their_digest_and_the_index_names_the_image() {
        let root = sample_rootfs();
        let mut bytes = Vec::new();
        let manifest_digest = write_archive(root.path(), &config(), &mut bytes).unwrap();
        let files = entries(&bytes);
        for (path, content) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(digest(content), format!("sha256:{hex}"));
            }
        }
        let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let entry = &index["manifests"][0];
        assert_eq!(entry["digest"], manifest_digest);
        assert_eq!(
            entry["annotations"]["io.containerd.image.name"],
            "docker.io/library/sample:1.0"
        );
        assert_eq!(entry["annotations"]["org.opencontainers.image.ref.name"], "1.0");
        let manifest: Value =
            serde_json::from_slice(&files[&format!("blobs/sha256/{}", &manifest_digest[7..])]).unwrap();
        let config_digest = manifest["config"]["digest"].as_str().unwrap();
        let image_config: Value =
            serde_json::from_slice(&files[&format!("blobs/sha256/{}", &config_digest[7..])]).unwrap();
        assert_eq!(image_config["config"]["Cmd"], json!(["/bin/tool"]));

        // The layer holds the tree: modes kept, links as links, owned by root.
        let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
        let gz = &files[&format!("blobs/sha256/{}", &layer_digest[7..])];
        let mut layer = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut layer).unwrap();
        assert_eq!(image_config["rootfs"]["diff_ids"][0], digest(&layer));
        let mut seen = Vec::new();
        for entry in tar::Archive::new(&layer[..]).entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            assert_eq!(header.uid().unwrap(), 0);
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            if path == "bin/tool" {
                assert_eq!(header.mode().unwrap() & 0o777, 0o755);
            }
            if path == "bin/alias" {
                assert_eq!(entry.link_name().unwrap().unwrap().to_str(), Some("tool"));
            }
            seen.push(path);
        }
        assert_eq!(seen, ["bin", "bin/alias", "bin/tool"]);
    }

    #[test]
    fn references_get_their_tag_and_digests_are_refused() {
        assert_eq!(tag_of("docker.io/library/busybox").unwrap(), "latest");
        assert_eq!(tag_of("localhost:5000/app:v2").unwrap(), "v2");
        assert!(tag_of("busybox@sha256:00").is_err());
    }
}
