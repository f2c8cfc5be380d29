//! Static pods, as the kubelet's file source and mirror pod client make them: every file in
//! `--pod-manifest-path` (not a dotfile) holding a Pod, YAML or JSON, runs on this node
//! without the API server; read again every few seconds, a changed file is a new pod (the old
//! one stops), a removed file stops its pod. Each gets upstream's name `<name>-<node>`,
//! namespace `default` when it names none, a uid hashed from the file, its node and path
//! (also `kubernetes.io/config.hash`), `kubernetes.io/config.source: file`, and a toleration of
//! every NoExecute taint.
//!
//! Its mirror pod is what the API shows: the same pod with `kubernetes.io/config.mirror` (the
//! hash) and the Node as controlling owner, its status the static pod's. A mirror pod deleted
//! by a user is made again (the containers keep running), a stale one (another hash) is
//! replaced, and one whose static pod is gone is deleted. Mirror pods are never run as pods.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use sha2::Digest;

use super::Shared;

pub const SOURCE: &str = "kubernetes.io/config.source";
pub const HASH: &str = "kubernetes.io/config.hash";
pub const MIRROR: &str = "kubernetes.io/config.mirror";
const SEEN: &str = "kubernetes.io/config.seen";

/// How often the manifest directory is read (upstream: 20 s, and inotify).
const POLL: Duration = Duration::from_secs(2);

pub fn is_static(pod: &Pod) -> bool {
    pod.annotations().get(SOURCE).is_some_and(|s| s == "file")
}

pub fn is_mirror(pod: &Pod) -> bool {
    pod.annotations().contains_key(MIRROR)
}

/// The uid of the static pod a mirror pod stands for.
pub fn mirrored_uid(mirror: &Pod) -> Option<&String> {
    mirror.annotations().get(MIRROR)
}

pub fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// Keeps the cache's static pods in line with the files in `dir`.
pub async fn run(shared: Arc<Shared>, dir: PathBuf) {
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the static pod directory");
    }
    // The file's content and what it made, by path: unchanged files are not parsed again, and
    // a bad file is reported once.
    let mut read: HashMap<PathBuf, (Vec<u8>, Option<Pod>)> = HashMap::new();
    loop {
        let wanted = read_manifests(&dir, &shared.settings.node_name, &mut read);
        let (added, removed) = {
            let mut pods = shared.pods.lock().expect("pods lock");
            let removed: Vec<Pod> = pods
                .values()
                .filter(|p| is_static(p) && !wanted.contains_key(&p.uid().unwrap_or_default()))
                .cloned()
                .collect();
            for pod in &removed {
                pods.remove(&pod.uid().unwrap_or_default());
            }
            let added: Vec<String> = wanted.keys().filter(|uid| !pods.contains_key(*uid)).cloned().collect();
            for uid in &added {
                pods.insert(uid.clone(), wanted[uid].clone());
            }
            (added, removed)
        };
        for uid in added {
            tracing::info!(%uid, "static pod added");
            shared.queue.add(uid);
        }
        for pod in removed {
            tracing::info!(pod = %key(&pod), "static pod removed");
            shared.queue.add(pod.uid().unwrap_or_default());
        }
        if shared.synced.load(std::sync::atomic::Ordering::SeqCst) {
            delete_orphaned_mirrors(&shared, &wanted.keys().cloned().collect()).await;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The static pods `dir` describes, by uid.
fn read_manifests(dir: &Path, node: &str, read: &mut HashMap<PathBuf, (Vec<u8>, Option<Pod>)>) -> HashMap<String, Pod> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    files.sort();
    read.retain(|path, _| files.contains(path));
    let mut pods = HashMap::new();
    for path in files {
        let Ok(content) = std::fs::read(&path) else { continue };
        if read.get(&path).is_none_or(|(seen, _)| *seen != content) {
            let pod = match manifest_pod(&path, &content, node) {
                Ok(pod) => Some(pod),
                Err(why) => {
                    tracing::warn!(file = %path.display(), "cannot run this static pod manifest: {why}");
                    None
                }
            };
            read.insert(path.clone(), (content, pod));
        }
        if let Some((_, Some(pod))) = read.get(&path) {
            pods.insert(pod.uid().unwrap_or_default(), pod.clone());
        }
    }
    pods
}

/// The static pod a manifest file makes on `node`, with the defaults upstream's file source
/// gives it.
fn manifest_pod(path: &Path, content: &[u8], node: &str) -> Result<Pod, String> {
    let text = std::str::from_utf8(content).map_err(|e| e.to_string())?;
    let options = serde_saphyr::options! { legacy_octal_numbers: true };
    let mut pod: Pod = serde_saphyr::from_str_with_options(text, options).map_err(|e| e.to_string())?;
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or("the pod has no name")?;
    let spec = pod.spec.as_mut().ok_or("the pod has no spec")?;
    if spec.containers.is_empty() {
        return Err("the pod has no containers".into());
    }
    let mut hasher = sha2::Sha256::new();
    hasher.update(content);
    hasher.update(node.as_bytes());
    hasher.update(path.as_os_str().as_encoded_bytes());
    let uid: String = hasher.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect();
    spec.node_name = Some(node.to_string());
    spec.tolerations.get_or_insert_with(Vec::new).push(Toleration {
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        ..Default::default()
    });
    let meta = &mut pod.metadata;
    meta.name = Some(format!("{name}-{node}"));
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some("default".into());
    }
    meta.uid = Some(uid.clone());
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    annotations.insert(SOURCE.into(), "file".into());
    annotations.insert(HASH.into(), uid);
    annotations.insert(SEEN.into(), jiff::Timestamp::now().to_string());
    pod.status = None;
    Ok(pod)
}

/// Makes the static pod's mirror pod when there is none, or only a stale or deleted one; a
/// failure (the API server away) is tried again at the next sync.
pub async fn ensure_mirror(shared: &Shared, pod: &Pod) {
    let hash = pod.annotations().get(HASH).cloned().unwrap_or_default();
    let existing = shared.mirrors.lock().expect("mirrors lock").get(&key(pod)).cloned();
    let api: Api<Pod> = Api::namespaced(shared.settings.client.clone(), &pod.namespace().unwrap_or_default());
    if let Some(mirror) = &existing {
        if mirrored_uid(mirror) == Some(&hash) && mirror.metadata.deletion_timestamp.is_none() {
            return;
        }
        delete_mirror(&api, mirror).await;
    }
    let node = match Api::<Node>::all(shared.settings.client.clone())
        .get(&shared.settings.node_name)
        .await
    {
        Ok(node) => node,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read this node for a mirror pod's owner");
            return;
        }
    };
    let mut mirror = pod.clone();
    mirror.status = None;
    let meta = &mut mirror.metadata;
    meta.uid = None;
    meta.resource_version = None;
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(MIRROR.into(), hash.clone());
    meta.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.name_any(),
        uid: node.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    match api.create(&PostParams::default(), &mirror).await {
        Ok(created) => {
            tracing::info!(pod = %key(&created), "mirror pod created");
            shared
                .mirrors
                .lock()
                .expect("mirrors lock")
                .insert(key(&created), created);
            // The new object has no status yet: post it again.
            if let Some(m) = shared.memory.lock().expect("memory lock").get_mut(&hash) {
                m.posted = None;
            }
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => tracing::warn!(pod = %key(pod), error = %e, "cannot create the mirror pod"),
    }
}

async fn delete_mirror(api: &Api<Pod>, mirror: &Pod) {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: mirror.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&mirror.name_any(), &params).await {
        Ok(_) => tracing::info!(pod = %key(mirror), "mirror pod deleted"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => tracing::warn!(pod = %key(mirror), error = %e, "cannot delete the mirror pod"),
    }
}

/// Deletes mirror pods whose static pod is not (or no longer) on this node.
async fn delete_orphaned_mirrors(shared: &Shared, static_uids: &HashSet<String>) {
    let orphans: Vec<Pod> = shared
        .mirrors
        .lock()
        .expect("mirrors lock")
        .values()
        .filter(|m| mirrored_uid(m).is_none_or(|uid| !static_uids.contains(uid)))
        .cloned()
        .collect();
    for mirror in orphans {
        let api: Api<Pod> = Api::namespaced(shared.settings.client.clone(), &mirror.namespace().unwrap_or_default());
        delete_mirror(&api, &mirror).await;
        shared.mirrors.lock().expect("mirrors lock").remove(&key(&mirror));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers: [{name: main, image: nginx}]
";

    #[test]
    fn a_manifest_becomes_a_static_pod_of_the_node() {
        let pod = manifest_pod(Path::new("/m/web.yaml"), MANIFEST.as_bytes(), "node-1").unwrap();
        assert_eq!(key(&pod), "default/web-node-1");
        assert!(is_static(&pod) && !is_mirror(&pod));
        let uid = pod.uid().unwrap();
        assert_eq!(pod.annotations()[HASH], uid);
        assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some("node-1"));
        let again = manifest_pod(Path::new("/m/web.yaml"), MANIFEST.as_bytes(), "node-1").unwrap();
        assert_eq!(again.uid(), Some(uid.clone()), "the same file is the same pod");
        let changed = MANIFEST.replace("nginx", "busybox");
        let other = manifest_pod(Path::new("/m/web.yaml"), changed.as_bytes(), "node-1").unwrap();
        assert_ne!(other.uid(), Some(uid), "a changed file is a new pod");
    }

    #[test]
    fn bad_manifests_are_refused() {
        let path = Path::new("/m/x");
        assert!(manifest_pod(path, b"kind: Pod\napiVersion: v1\nspec: {containers: []}\n", "n").is_err());
        assert!(manifest_pod(path, b"{not yaml", "n").is_err());
        let empty = MANIFEST.replace("[{name: main, image: nginx}]", "[]");
        assert!(manifest_pod(path, empty.as_bytes(), "n").is_err());
    }
}
