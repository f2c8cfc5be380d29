//! A pod's volumes on the node, as the kubelet's volume manager sets them up before the
//! containers start: directories under the pod's own directory
//! (`pods/<uid>/volumes/<plugin>/<name>`, the kubelet's layout) for `emptyDir` and for the
//! files of `configMap`, `secret`, `downwardAPI` and `projected` volumes (written again on
//! every sync, so a changed ConfigMap shows in running pods), a tmpfs for an `emptyDir` of
//! medium `Memory` (sized by its `sizeLimit`, else the pod's memory limit, as upstream sizes
//! memory-backed volumes), the host's path for `hostPath` and for a `persistentVolumeClaim`
//! bound to a `hostPath` or `local` PersistentVolume; then each container's `volumeMounts`
//! (with `subPath` and `readOnly`) as CRI mounts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret, Volume};
use kube::ResourceExt;
use kube::api::Api;

/// A volume that cannot be set up: the pod waits, with a `FailedMount` event saying why.
#[derive(Debug)]
pub struct MountError(pub String);

/// Sets up every volume of `pod` under `pod_dir`; the host path of each, by volume name.
pub async fn set_up(
    client: &kube::Client,
    tokens: &TokenCache,
    pod: &Pod,
    pod_dir: &Path,
    pod_ip: &str,
    node_ip: &str,
) -> Result<HashMap<String, PathBuf>, MountError> {
    let mut paths = HashMap::new();
    let namespace = pod.namespace().unwrap_or_default();
    for volume in pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        let failed = |why: String| MountError(format!("MountVolume.SetUp failed for volume {:?} : {why}", volume.name));
        let path = match plan(volume) {
            Plan::HostPath(path, kind) => {
                host_path(&path, kind.as_deref()).map_err(failed)?;
                PathBuf::from(path)
            }
            Plan::Claim(claim) => {
                let path = claimed_path(client, &namespace, &claim).await.map_err(failed)?;
                host_path(&path, None).map_err(failed)?;
                PathBuf::from(path)
            }
            Plan::Memory(size_limit) => {
                let dir = pod_dir.join("volumes").join(EMPTY_DIR).join(&volume.name);
                std::fs::create_dir_all(&dir).map_err(|e| failed(e.to_string()))?;
                let size = size_limit.or_else(|| {
                    let spec = pod.spec.as_ref()?;
                    crate::cgroups::pod_resources(spec, super::qos::qos_class(spec)).memory_limit
                });
                mount_tmpfs(&dir, size).map_err(failed)?;
                dir
            }
            Plan::Directory(plugin) => {
                let dir = pod_dir.join("volumes").join(plugin).join(&volume.name);
                std::fs::create_dir_all(&dir).map_err(|e| failed(e.to_string()))?;
                if plugin != EMPTY_DIR {
                    let files = files(client, tokens, &namespace, pod, volume, pod_ip, node_ip)
                        .await
                        .map_err(failed)?;
                    write_files(&dir, &files).map_err(|e| failed(e.to_string()))?;
                }
                dir
            }
            Plan::Unsupported(kind) => return Err(failed(format!("volume type {kind} is not supported by this node"))),
        };
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}

const EMPTY_DIR: &str = "kubernetes.io~empty-dir";

enum Plan {
    HostPath(String, Option<String>),
    /// A claim's name: the path of the volume bound to it.
    Claim(String),
    /// An `emptyDir` in memory, of at most this many bytes.
    Memory(Option<u64>),
    Directory(&'static str),
    Unsupported(&'static str),
}

fn plan(volume: &Volume) -> Plan {
    if let Some(h) = &volume.host_path {
        Plan::HostPath(h.path.clone(), h.type_.clone())
    } else if let Some(e) = &volume.empty_dir {
        if e.medium.as_deref() == Some("Memory") {
            let limit = e
                .size_limit
                .as_ref()
                .and_then(|q| styrman_runtime::quantity::value(&q.0));
            Plan::Memory(limit.and_then(|b| u64::try_from(b).ok()))
        } else {
            Plan::Directory(EMPTY_DIR)
        }
    } else if volume.config_map.is_some() {
        Plan::Directory("kubernetes.io~configmap")
    } else if volume.secret.is_some() {
        Plan::Directory("kubernetes.io~secret")
    } else if volume.downward_api.is_some() {
        Plan::Directory("kubernetes.io~downward-api")
    } else if volume.projected.is_some() {
        Plan::Directory("kubernetes.io~projected")
    } else if let Some(claim) = &volume.persistent_volume_claim {
        Plan::Claim(claim.claim_name.clone())
    } else {
        Plan::Unsupported("(this one)")
    }
}

/// The host path of the volume bound to claim `name`: a `hostPath` or `local` PersistentVolume.
/// A claim is bound when it names its volume and the volume's `claimRef` names it back (what
/// the PV controller checks before it sets the claim's phase to Bound).
async fn claimed_path(client: &kube::Client, namespace: &str, name: &str) -> Result<String, String> {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let claim = claims
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolumeclaim \"{name}\" not found"))?;
    let unbound = || format!("PVC {namespace}/{name} is not bound");
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|v| !v.is_empty())
        .ok_or_else(unbound)?;
    let volume = Api::<PersistentVolume>::all(client.clone())
        .get_opt(&volume_name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolume \"{volume_name}\" not found"))?;
    let spec = volume.spec.unwrap_or_default();
    let names_claim = spec.claim_ref.as_ref().is_some_and(|r| {
        r.name.as_deref() == Some(name)
            && r.namespace.as_deref() == Some(namespace)
            && r.uid
                .as_ref()
                .is_none_or(|uid| Some(uid) == claim.metadata.uid.as_ref())
    });
    if !names_claim {
        return Err(unbound());
    }
    if let Some(h) = spec.host_path {
        Ok(h.path)
    } else if let Some(l) = spec.local {
        Ok(l.path)
    } else {
        Err(format!(
            "persistentvolume \"{volume_name}\" is of a type this node cannot mount (hostPath and local are)"
        ))
    }
}

/// Mounts a tmpfs of at most `size` bytes on `dir`, unless one is there from an earlier sync.
fn mount_tmpfs(dir: &Path, size: Option<u64>) -> Result<(), String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let point = dir.to_string_lossy().replace(' ', "\\040");
    if mountinfo.lines().any(|l| l.split(' ').nth(4) == Some(point.as_str())) {
        return Ok(());
    }
    let options = match size {
        Some(bytes) => format!("mode=0777,size={bytes}"),
        None => "mode=0777".to_string(),
    };
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("mount tmpfs: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// hostPath's `type` checks (and creations), as upstream's hostPath plugin does them.
fn host_path(path: &str, kind: Option<&str>) -> Result<(), String> {
    let p = Path::new(path);
    let meta = std::fs::metadata(p);
    match kind.unwrap_or("") {
        "" => Ok(()),
        "DirectoryOrCreate" => std::fs::create_dir_all(p).map_err(|e| e.to_string()),
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                std::fs::File::create(p).map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        "Directory" if meta.as_ref().is_ok_and(|m| m.is_dir()) => Ok(()),
        "Directory" => Err(format!("hostPath type check failed: {path} is not a directory")),
        "File" if meta.as_ref().is_ok_and(|m| m.is_file()) => Ok(()),
        "File" => Err(format!("hostPath type check failed: {path} is not a file")),
        "Socket" | "CharDevice" | "BlockDevice" if meta.is_ok() => Ok(()),
        other => Err(format!("hostPath type check failed: {path} is not a {other}")),
    }
}

/// A file of a volume: path inside the volume, content, mode.
type File = (String, Vec<u8>, i32);

async fn files(
    client: &kube::Client,
    tokens: &TokenCache,
    namespace: &str,
    pod: &Pod,
    volume: &Volume,
    pod_ip: &str,
    node_ip: &str,
) -> Result<Vec<File>, String> {
    let mut out = Vec::new();
    if let Some(c) = &volume.config_map {
        let data = config_map(client, namespace, &c.name).await?;
        select(
            &mut out,
            data,
            c.items.as_deref(),
            c.default_mode,
            c.optional,
            "configmap",
            &c.name,
        )?;
    } else if let Some(s) = &volume.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = secret(client, namespace, &name).await?;
        select(
            &mut out,
            data,
            s.items.as_deref(),
            s.default_mode,
            s.optional,
            "secret",
            &name,
        )?;
    } else if let Some(d) = &volume.downward_api {
        downward(&mut out, pod, d.items.as_deref(), d.default_mode, pod_ip, node_ip)?;
    } else if let Some(p) = &volume.projected {
        for source in p.sources.iter().flatten() {
            if let Some(c) = &source.config_map {
                let data = config_map(client, namespace, &c.name).await?;
                select(
                    &mut out,
                    data,
                    c.items.as_deref(),
                    p.default_mode,
                    c.optional,
                    "configmap",
                    &c.name,
                )?;
            }
            if let Some(s) = &source.secret {
                let data = secret(client, namespace, &s.name).await?;
                select(
                    &mut out,
                    data,
                    s.items.as_deref(),
                    p.default_mode,
                    s.optional,
                    "secret",
                    &s.name,
                )?;
            }
            if let Some(d) = &source.downward_api {
                downward(&mut out, pod, d.items.as_deref(), p.default_mode, pod_ip, node_ip)?;
            }
            if let Some(t) = &source.service_account_token {
                let token = tokens.token(client, pod, t).await?;
                out.push((t.path.clone(), token.into_bytes(), p.default_mode.unwrap_or(0o644)));
            }
        }
    }
    Ok(out)
}

/// The service account tokens of projected volumes, by pod uid and projection: asked for
/// with TokenRequest (bound to the pod) and asked for again once 80% of their life has passed
/// or after 24 hours, as the kubelet's token manager does.
#[derive(Default)]
pub struct TokenCache {
    tokens: std::sync::Mutex<HashMap<TokenKey, CachedToken>>,
}

/// A pod's uid and a projection of it: path, audience, expiration.
type TokenKey = (String, String, Option<String>, i64);

struct CachedToken {
    token: String,
    refresh_at: std::time::SystemTime,
}

impl TokenCache {
    async fn token(
        &self,
        client: &kube::Client,
        pod: &Pod,
        projection: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
    ) -> Result<String, String> {
        use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let uid = pod.uid().unwrap_or_default();
        let expiration = projection.expiration_seconds.unwrap_or(3600);
        let key = (
            uid.clone(),
            projection.path.clone(),
            projection.audience.clone(),
            expiration,
        );
        let now = std::time::SystemTime::now();
        if let Some(cached) = self.tokens.lock().expect("tokens lock").get(&key)
            && now < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: projection.audience.iter().cloned().collect(),
                expiration_seconds: Some(expiration),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: Some(uid),
                }),
            },
            ..Default::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let issued = api
            .create_token_request(&account, &Default::default(), &request)
            .await
            .map_err(|e| format!("failed to fetch token: {e}"))?;
        let token = issued.status.map(|s| s.token).unwrap_or_default();
        let life = std::time::Duration::from_secs(expiration.max(0) as u64);
        let refresh_at = now + (life * 4 / 5).min(std::time::Duration::from_secs(24 * 3600));
        self.tokens.lock().expect("tokens lock").insert(
            key,
            CachedToken {
                token: token.clone(),
                refresh_at,
            },
        );
        Ok(token)
    }

    /// Forgets the tokens of a pod that is gone.
    pub fn forget(&self, uid: &str) {
        self.tokens
            .lock()
            .expect("tokens lock")
            .retain(|(pod, ..), _| pod != uid);
    }
}

/// The files of downward API items: each a field of the pod.
fn downward(
    out: &mut Vec<File>,
    pod: &Pod,
    items: Option<&[k8s_openapi::api::core::v1::DownwardAPIVolumeFile]>,
    default_mode: Option<i32>,
    pod_ip: &str,
    node_ip: &str,
) -> Result<(), String> {
    for item in items.into_iter().flatten() {
        if let Some(f) = &item.field_ref {
            let value = super::env::field_value(pod, &f.field_path, pod_ip, node_ip)?;
            out.push((
                item.path.clone(),
                value.into_bytes(),
                item.mode.or(default_mode).unwrap_or(0o644),
            ));
        }
    }
    Ok(())
}

async fn config_map(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let found = api.get_opt(name).await.map_err(|e| e.to_string())?;
    Ok(found.map(|c| {
        let mut data: BTreeMap<String, Vec<u8>> = c
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(c.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
        data
    }))
}

async fn secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let found = api.get_opt(name).await.map_err(|e| e.to_string())?;
    Ok(found.map(|s| s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()))
}

/// The files of a ConfigMap or Secret: every key, or the `items` chosen, with their modes.
fn select(
    out: &mut Vec<File>,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: Option<bool>,
    kind: &str,
    name: &str,
) -> Result<(), String> {
    let mode = default_mode.unwrap_or(0o644);
    let Some(data) = data else {
        if optional.unwrap_or(false) {
            return Ok(());
        }
        return Err(format!("{kind} {name:?} not found"));
    };
    match items {
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(v) => out.push((item.path.clone(), v.clone(), item.mode.unwrap_or(mode))),
                    None if optional.unwrap_or(false) => {}
                    None => return Err(format!("configmap references non-existent config key: {}", item.key)),
                }
            }
        }
        None => out.extend(data.into_iter().map(|(k, v)| (k, v, mode))),
    }
    Ok(())
}

/// Writes the files whole (each through a temporary name and a rename, so a reader never sees
/// half a file) and removes files no longer in the volume.
fn write_files(dir: &Path, files: &[File]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut keep = std::collections::HashSet::new();
    for (path, content, mode) in files {
        let relative = Path::new(path);
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            continue;
        }
        let target = dir.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if std::fs::read(&target).ok().as_deref() != Some(content.as_slice()) {
            let partial = target.with_extension("styrman-partial");
            std::fs::write(&partial, content)?;
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(*mode as u32 & 0o7777))?;
            std::fs::rename(&partial, &target)?;
        }
        keep.insert(relative.components().next().map(|c| c.as_os_str().to_owned()));
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        if !keep.contains(&Some(entry.file_name())) {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
        }
    }
    Ok(())
}

/// The container's `volumeMounts` as CRI mounts.
pub fn mounts(container: &Container, volumes: &HashMap<String, PathBuf>) -> Result<Vec<cri::Mount>, String> {
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let Some(source) = volumes.get(&m.name) else {
            return Err(format!(
                "cannot find volume {:?} to mount into container {:?}",
                m.name, container.name
            ));
        };
        let mut host_path = source.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if Path::new(sub).is_absolute() || sub.split('/').any(|p| p == "..") {
                return Err(format!("subPath {sub:?} must be a relative path without '..'"));
            }
            host_path = host_path.join(sub);
            if !host_path.exists() {
                std::fs::create_dir_all(&host_path).map_err(|e| e.to_string())?;
            }
        }
        out.push(cri::Mount {
            container_path: m.mount_path.clone(),
            host_path: host_path.to_string_lossy().into_owned(),
            readonly: m.read_only.unwrap_or(false),
            ..Default::default()
        });
    }
    Ok(out)
}
