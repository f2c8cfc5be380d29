//! One pod brought in line with its spec, as the kubelet's `SyncPod` does it: volumes, then a
//! ready sandbox (a new one when the old died), then init containers one at a time in order
//! (sidecars, restartPolicy Always, keep running beside the rest), then the app containers;
//! exited containers restart by the pod's restartPolicy after a back-off (10 s doubling to
//! 5 min, forgotten once a container ran 10 min); images are pulled by imagePullPolicy. Then
//! the pod's status is posted when it changed. A pod being deleted has its containers stopped
//! within its grace period and its sandbox removed, then its object deleted; one gone from the
//! API is stopped and removed at once.

use std::collections::HashMap;

use futures::FutureExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};

use super::status::{self, Observed};
use super::{Shared, handlers, probes, spec, volumes};

/// What a worker remembers about one pod between syncs.
#[derive(Default)]
pub struct PodMemory {
    /// A reason a container is waiting for (ErrImagePull, RunContainerError, ...), by name.
    waiting: HashMap<String, (String, String)>,
    /// Restart back-off by container name; image pull back-off by `image:<reference>`.
    backoff: HashMap<String, Duration>,
    /// When each back-off ends (restart: from the container's finish; pulls: from the failure).
    backoff_until: HashMap<String, SystemTime>,
    /// The status last posted.
    pub(super) posted: Option<Value>,
    /// The pod reached Succeeded or Failed: nothing restarts any more.
    terminal: bool,
    start_time: Option<String>,
    /// Why the kubelet failed the pod itself (activeDeadlineSeconds): reason and message.
    failed: Option<(String, String)>,
    /// When this kubelet first synced the pod, and whether its start was measured (a pod
    /// already running then, adopted after a restart, is not).
    first_seen: Option<std::time::Instant>,
    start_measured: bool,
}

const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long before exiting restarts without back-off.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// The least time containers get to stop (the kubelet's minimum grace period).
const MIN_GRACE: i64 = 2;

pub async fn sync(shared: &Arc<Shared>, uid: &str) -> anyhow::Result<()> {
    // Until the watch's first list is in, a pod missing from the cache may still exist: its
    // containers are adopted, not judged. Read before the cache, which is full once it is set.
    let synced = shared.synced.load(std::sync::atomic::Ordering::SeqCst);
    let pod = shared.pods.lock().expect("pods lock").get(uid).cloned();
    let (sandboxes, containers) = observe(shared, uid).await?;
    let Some(pod) = pod else {
        if !synced {
            return Ok(());
        }
        if !sandboxes.is_empty() || !containers.is_empty() {
            tracing::info!(%uid, "stopping the containers of a pod gone from the API");
            kill(shared, None, &sandboxes, &containers, MIN_GRACE).await?;
            remove_pod_dir(shared, uid);
        }
        shared.memory.lock().expect("memory lock").remove(uid);
        return Ok(());
    };
    if pod.metadata.deletion_timestamp.is_some() {
        let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30).max(MIN_GRACE);
        kill(shared, Some(&pod), &sandboxes, &containers, grace).await?;
        remove_pod_dir(shared, uid);
        shared.memory.lock().expect("memory lock").remove(uid);
        let api: Api<Pod> = Api::namespaced(shared.settings.client.clone(), &pod.namespace().unwrap_or_default());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        return match api.delete(&pod.name_any(), &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e).context("deleting the stopped pod"),
        };
    }
    if super::static_pods::is_static(&pod) {
        super::static_pods::ensure_mirror(shared, &pod).await;
    }
    let stored_phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    let terminal = matches!(stored_phase.as_str(), "Succeeded" | "Failed")
        || shared
            .memory
            .lock()
            .expect("memory lock")
            .get(uid)
            .is_some_and(|m| m.terminal);
    if terminal {
        // Nothing restarts; whatever still runs (sidecars) stops, the sandbox with it.
        if sandboxes
            .iter()
            .any(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
        {
            stop(shared, Some(&pod), &sandboxes, &containers, MIN_GRACE).await?;
        }
        return Ok(());
    }
    run(shared, &pod, uid, sandboxes, containers).await
}

/// The runtime's sandboxes and containers of pod `uid`, with each container's full status.
async fn observe(shared: &Shared, uid: &str) -> anyhow::Result<(Vec<cri::PodSandbox>, Vec<Observed>)> {
    let mut runtime = shared.settings.runtime.runtime.clone();
    let labels = HashMap::from([(spec::POD_UID.to_string(), uid.to_string())]);
    let sandboxes = runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: labels.clone(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .items;
    let listed = runtime
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: labels,
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .containers;
    let mut containers = Vec::new();
    for c in listed {
        let status = match runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: c.id.clone(),
                verbose: false,
            })
            .await
        {
            Ok(s) => s.into_inner().status,
            // Removed since the list.
            Err(_) => continue,
        };
        let Some(status) = status else { continue };
        containers.push(Observed {
            id: c.id,
            name: c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
            attempt: c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
            status,
        });
    }
    Ok((sandboxes, containers))
}

/// The latest and the one before of each container name in `sandbox`.
fn by_name(containers: &[Observed]) -> HashMap<&str, (Option<&Observed>, Option<&Observed>)> {
    let mut sorted: Vec<&Observed> = containers.iter().collect();
    sorted.sort_by_key(|c| (c.attempt, c.status.created_at));
    let mut out: HashMap<&str, (Option<&Observed>, Option<&Observed>)> = HashMap::new();
    for c in sorted {
        let entry = out.entry(c.name.as_str()).or_default();
        *entry = (Some(c), entry.0);
    }
    out
}

pub(super) fn reference(pod: &Pod, field: Option<String>) -> ObjectReference {
    let mut r = styrman_runtime::reference_to(pod);
    r.field_path = field;
    r
}

pub(super) fn field_path(init: bool, name: &str) -> Option<String> {
    Some(format!(
        "spec.{}{{{name}}}",
        if init { "initContainers" } else { "containers" }
    ))
}

async fn run(
    shared: &Arc<Shared>,
    pod: &Pod,
    uid: &str,
    mut sandboxes: Vec<cri::PodSandbox>,
    mut containers: Vec<Observed>,
) -> anyhow::Result<()> {
    let settings = &shared.settings;
    {
        let mut memory = shared.memory.lock().expect("memory lock");
        let m = memory.entry(uid.to_string()).or_default();
        if m.first_seen.is_none() {
            m.first_seen = Some(std::time::Instant::now());
            m.start_measured = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        }
    }
    let spec_ = pod.spec.clone().unwrap_or_default();
    let restart_policy = spec_.restart_policy.clone().unwrap_or_else(|| "Always".into());
    let mut requeue: Option<Duration> = None;
    let mut later = |d: Duration| requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));

    // activeDeadlineSeconds, counted from the pod's start on this node: past it the pod fails
    // and its containers stop, as the kubelet's active deadline handler does.
    if let Some(deadline) = spec_.active_deadline_seconds {
        let started = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(jiff::Timestamp::now);
        let left = started + jiff::SignedDuration::from_secs(deadline) - jiff::Timestamp::now();
        if left.is_positive() {
            later(Duration::try_from(left).unwrap_or_default());
        } else {
            let message = "Pod was active on the node longer than the specified deadline";
            shared
                .recorder
                .normal(reference(pod, None), "DeadlineExceeded", message.to_string());
            stop(shared, Some(pod), &sandboxes, &containers, grace_period(pod)).await?;
            {
                let mut memory = shared.memory.lock().expect("memory lock");
                let m = memory.entry(uid.to_string()).or_default();
                m.failed = Some(("DeadlineExceeded".into(), message.into()));
                m.terminal = true;
            }
            let (_, containers) = observe(shared, uid).await?;
            post_status(
                shared,
                pod,
                uid,
                Some(Progress {
                    pod_ip: pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).unwrap_or(""),
                    containers: &containers,
                    initialized: true,
                    init_failed: false,
                    restart_policy: &restart_policy,
                }),
                false,
            )
            .await?;
            return Ok(());
        }
    }

    // Volumes first: containers start only with every volume in place.
    let pod_dir = settings.layout.pods().join(uid);
    let volume_paths =
        match volumes::set_up(&settings.client, &shared.tokens, pod, &pod_dir, "", &settings.node_ip).await {
            Ok(paths) => paths,
            Err(volumes::MountError(message)) => {
                shared.recorder.warning(reference(pod, None), "FailedMount", message);
                post_status(shared, pod, uid, None, false).await?;
                shared.queue.add_after(uid.to_string(), Duration::from_secs(2));
                return Ok(());
            }
        };

    // A ready sandbox, or a new one (its containers die with the old); its attempt counts the
    // sandboxes before it.
    let mut sandbox_config = spec::sandbox_config(pod, &settings.layout.pod_logs(), sandboxes.len() as u32);
    let qos = super::qos_class(&spec_);
    let pod_cgroup = crate::cgroups::pod_cgroup(&settings.cgroup_root, qos, uid);
    if let Some(linux) = sandbox_config.linux.as_mut() {
        linux.cgroup_parent = pod_cgroup.clone();
    }
    let ready = sandboxes
        .iter()
        .filter(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
        .max_by_key(|s| s.created_at)
        .map(|s| s.id.clone());
    let sandbox_id = match ready {
        Some(id) => id,
        None => {
            if !sandboxes.is_empty() {
                tracing::info!(pod = %pod.name_any(), states = ?sandboxes.iter().map(|s| s.state).collect::<Vec<_>>(), "the pod's sandbox is not ready; starting a new one");
                kill(shared, Some(pod), &sandboxes, &containers, MIN_GRACE).await?;
            }
            std::fs::create_dir_all(&sandbox_config.log_directory).ok();
            if let Err(e) = crate::cgroups::set_up(&pod_cgroup, &crate::cgroups::pod_resources(&spec_, qos)) {
                tracing::warn!(pod = %pod.name_any(), cgroup = %pod_cgroup, error = %e, "cannot set the pod cgroup's limits");
            }
            match settings
                .runtime
                .runtime
                .clone()
                .run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(sandbox_config.clone()),
                    runtime_handler: String::new(),
                })
                .await
            {
                Ok(r) => {
                    settings.metrics.started_pods.inc();
                    sandboxes.clear();
                    containers.clear();
                    r.into_inner().pod_sandbox_id
                }
                Err(e) => {
                    settings.metrics.started_pods_errors.inc();
                    shared.recorder.warning(
                        reference(pod, None),
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {}", e.message()),
                    );
                    post_status(shared, pod, uid, None, false).await?;
                    shared.queue.add_after(uid.to_string(), Duration::from_secs(5));
                    return Ok(());
                }
            }
        }
    };
    let sandbox = settings
        .runtime
        .runtime
        .clone()
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox_id.clone(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status;
    let pod_ip = if spec_.host_network.unwrap_or(false) {
        settings.node_ip.clone()
    } else {
        sandbox
            .as_ref()
            .and_then(|s| s.network.as_ref())
            .map(|n| n.ip.clone())
            .unwrap_or_default()
    };
    let names = by_name(&containers);
    let ctx = StartContext {
        shared,
        pod,
        uid,
        sandbox_id: &sandbox_id,
        sandbox_config: &sandbox_config,
        pod_ip: &pod_ip,
        volumes: &volume_paths,
    };

    // Init containers, in order.
    let mut initialized = true;
    let mut init_failed = false;
    for c in spec_.init_containers.iter().flatten() {
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        let (latest, _) = names.get(c.name.as_str()).copied().unwrap_or_default();
        match latest {
            Some(l) if l.running() => {
                if sidecar {
                    continue;
                }
                initialized = false;
                break;
            }
            Some(l) if l.exited() && l.exit_code() == 0 && !sidecar => continue,
            Some(l) if l.exited() => {
                if !sidecar && restart_policy == "Never" {
                    init_failed = true;
                    initialized = false;
                    break;
                }
                if let Some(wait) = ctx.restart(c, true, l).await {
                    later(wait);
                }
                initialized = false;
                if !sidecar {
                    break;
                }
            }
            Some(_) => {
                initialized = false;
                break;
            }
            None => {
                if let Some(wait) = ctx.start(c, true, 0).await {
                    later(wait);
                }
                if !sidecar {
                    initialized = false;
                    break;
                }
            }
        }
    }
    // Containers whose liveness or startup probe failed are killed; they restart by the
    // pod's restartPolicy on the next sync.
    let sidecars = spec_
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    for c in spec_.containers.iter().chain(sidecars) {
        let Some(running) = names
            .get(c.name.as_str())
            .and_then(|(latest, _)| *latest)
            .filter(|l| l.running())
        else {
            continue;
        };
        let Some(kind) = shared.prober.health(c, &running.id).kill_for else {
            continue;
        };
        let init = !spec_.containers.iter().any(|a| a.name == c.name);
        let probe = if kind == probes::Kind::Startup {
            "startup"
        } else {
            "liveness"
        };
        shared.recorder.normal(
            reference(pod, field_path(init, &c.name)),
            "Killing",
            format!("Container {} failed {probe} probe, will be restarted", c.name),
        );
        let grace = c
            .liveness_probe
            .as_ref()
            .filter(|_| kind == probes::Kind::Liveness)
            .or(c.startup_probe.as_ref())
            .and_then(|p| p.termination_grace_period_seconds)
            .unwrap_or_else(|| grace_period(pod))
            .max(MIN_GRACE);
        stop_container(shared, pod, Some(c), init, &running.id, grace, &pod_ip)
            .await
            .context("stopping a container that failed its probe")?;
        shared.prober.forget(&running.id);
        later(Duration::ZERO);
    }
    if initialized {
        for c in &spec_.containers {
            let (latest, _) = names.get(c.name.as_str()).copied().unwrap_or_default();
            match latest {
                None => {
                    if let Some(wait) = ctx.start(c, false, 0).await {
                        later(wait);
                    }
                }
                Some(l) if l.exited() => {
                    let again = match restart_policy.as_str() {
                        "Always" => true,
                        "OnFailure" => l.exit_code() != 0,
                        _ => false,
                    };
                    if again && let Some(wait) = ctx.restart(c, false, l).await {
                        later(wait);
                    }
                }
                Some(_) => {}
            }
        }
    }

    // Ephemeral containers (kubectl debug): started once, never restarted, whatever the
    // pod's phase while it runs.
    for c in spec_.ephemeral_containers.iter().flatten() {
        if names.contains_key(c.name.as_str()) {
            continue;
        }
        let target = c
            .target_container_name
            .as_deref()
            .and_then(|t| names.get(t).and_then(|(latest, _)| *latest))
            .filter(|l| l.running())
            .map(|l| l.id.clone());
        if let Some(wait) = ctx
            .start_sharing(&ephemeral_as_container(c), false, 0, target.as_deref())
            .await
        {
            later(wait);
        }
    }

    // The status, from the runtime as it is now; probes for what runs.
    let (_, containers) = observe(shared, uid).await?;
    probes::ensure_workers(shared, pod, &containers, &pod_ip);
    let phase = post_status(
        shared,
        pod,
        uid,
        Some(Progress {
            pod_ip: &pod_ip,
            containers: &containers,
            initialized,
            init_failed,
            restart_policy: &restart_policy,
        }),
        true,
    )
    .await?;
    if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
        if let Some(m) = shared.memory.lock().expect("memory lock").get_mut(uid) {
            m.terminal = true;
        }
        let (sandboxes, containers) = observe(shared, uid).await?;
        stop(shared, Some(pod), &sandboxes, &containers, MIN_GRACE).await?;
    }
    gc_old_containers(shared, &containers).await;
    if let Some(wait) = requeue {
        shared.queue.add_after(uid.to_string(), wait);
    }
    Ok(())
}

struct StartContext<'a> {
    shared: &'a Shared,
    pod: &'a Pod,
    uid: &'a str,
    sandbox_id: &'a str,
    sandbox_config: &'a cri::PodSandboxConfig,
    pod_ip: &'a str,
    volumes: &'a HashMap<String, std::path::PathBuf>,
}

impl StartContext<'_> {
    fn remember(&self, f: impl FnOnce(&mut PodMemory)) {
        let mut memory = self.shared.memory.lock().expect("memory lock");
        f(memory.entry(self.uid.to_string()).or_default());
    }

    fn set_waiting(&self, name: &str, reason: &str, message: String) {
        self.remember(|m| {
            m.waiting.insert(name.to_string(), (reason.to_string(), message));
        });
    }

    /// Restarts exited container `last` unless it is in back-off; how long until the back-off
    /// ends when it is.
    async fn restart(&self, c: &Container, init: bool, last: &Observed) -> Option<Duration> {
        let finished = SystemTime::UNIX_EPOCH + Duration::from_nanos(last.status.finished_at.max(0) as u64);
        // A container that failed to start never ran (startedAt 0): no time to forget its
        // back-off over.
        let ran = match last.status.started_at {
            0 => Duration::ZERO,
            started => Duration::from_nanos((last.status.finished_at - started).max(0) as u64),
        };
        let key = c.name.clone();
        let delay = {
            let mut memory = self.shared.memory.lock().expect("memory lock");
            let m = memory.entry(self.uid.to_string()).or_default();
            if ran >= BACKOFF_RESET {
                m.backoff.remove(&key);
            }
            m.backoff.get(&key).copied().unwrap_or_default()
        };
        let until = finished + delay;
        if let Ok(left) = until.duration_since(SystemTime::now())
            && !left.is_zero()
        {
            let pod = self.pod;
            self.set_waiting(
                &c.name,
                "CrashLoopBackOff",
                format!(
                    "back-off {} restarting failed container={} pod={}_{}({})",
                    humantime::format_duration(Duration::from_secs(delay.as_secs())),
                    c.name,
                    pod.name_any(),
                    pod.namespace().unwrap_or_default(),
                    self.uid
                ),
            );
            self.shared.recorder.warning(
                reference(pod, field_path(init, &c.name)),
                "BackOff",
                format!(
                    "Back-off restarting failed container {} in pod {}_{}({})",
                    c.name,
                    pod.name_any(),
                    pod.namespace().unwrap_or_default(),
                    self.uid
                ),
            );
            return Some(left);
        }
        self.remember(|m| {
            let next = if delay.is_zero() {
                FIRST_BACKOFF
            } else {
                (delay * 2).min(MAX_BACKOFF)
            };
            m.backoff.insert(key.clone(), next);
        });
        self.start(c, init, last.attempt + 1).await
    }

    /// Pulls the image as the policy says, creates and starts the container; a wait after
    /// which to try again when something failed.
    async fn start(&self, c: &Container, init: bool, attempt: u32) -> Option<Duration> {
        self.start_sharing(c, init, attempt, None).await
    }

    /// [`Self::start`] with the process namespace of container `target` (an ephemeral
    /// container's `targetContainerName`).
    async fn start_sharing(&self, c: &Container, init: bool, attempt: u32, target: Option<&str>) -> Option<Duration> {
        let shared = self.shared;
        let settings = &shared.settings;
        let at = || reference(self.pod, field_path(init, &c.name));
        if let Err((reason, message, wait)) = self.ensure_image(c, init).await {
            self.set_waiting(&c.name, &reason, message);
            return Some(wait);
        }
        let env = match super::env::environment(&settings.client, self.pod, c, self.pod_ip, &settings.node_ip).await {
            Ok(env) => env,
            Err(message) => {
                shared.recorder.warning(at(), "Failed", format!("Error: {message}"));
                self.set_waiting(&c.name, "CreateContainerConfigError", message);
                return Some(Duration::from_secs(2));
            }
        };
        let config = volumes::mounts(c, self.volumes)
            .and_then(|mounts| spec::container_config(self.pod, c, attempt, env, mounts));
        let config = match config {
            Ok(config) => config,
            Err(message) => {
                shared.recorder.warning(at(), "Failed", format!("Error: {message}"));
                self.set_waiting(&c.name, "CreateContainerConfigError", message);
                return Some(Duration::from_secs(2));
            }
        };
        let mut config = config;
        if let Some(target) = target
            && let Some(namespaces) = config
                .linux
                .as_mut()
                .and_then(|l| l.security_context.as_mut())
                .and_then(|s| s.namespace_options.as_mut())
        {
            namespaces.pid = cri::NamespaceMode::Target as i32;
            namespaces.target_id = target.to_string();
        }
        let mut runtime = settings.runtime.runtime.clone();
        let created = runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: self.sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(self.sandbox_config.clone()),
            })
            .await;
        let id = match created {
            Ok(r) => r.into_inner().container_id,
            Err(e) => {
                let message = e.message().to_string();
                shared.recorder.warning(at(), "Failed", format!("Error: {message}"));
                settings.metrics.container_failed(init, "CreateContainerError");
                self.set_waiting(&c.name, "CreateContainerError", message);
                return Some(Duration::from_secs(2));
            }
        };
        shared
            .recorder
            .normal(at(), "Created", format!("Created container: {}", c.name));
        match runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
        {
            Ok(_) => {
                settings.metrics.container_started(init);
                shared
                    .recorder
                    .normal(at(), "Started", format!("Started container {}", c.name));
                self.remember(|m| {
                    m.waiting.remove(&c.name);
                });
                // postStart runs before the pod's status moves on, as the kubelet's sync
                // waits for it; a failure kills the container, which restarts by policy.
                let post_start = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref());
                if let Some(handler) = post_start
                    && let Err(message) = handlers::hook(shared, self.pod, c, &id, handler, self.pod_ip).await
                {
                    shared.recorder.warning(at(), "FailedPostStartHook", message);
                    let grace = grace_period(self.pod);
                    if let Err(e) = runtime
                        .stop_container(cri::StopContainerRequest {
                            container_id: id,
                            timeout: grace,
                        })
                        .await
                    {
                        tracing::warn!(error = %e.message(), "stopping a container whose postStart hook failed");
                    }
                    return Some(Duration::ZERO);
                }
                None
            }
            Err(e) => {
                let message = e.message().to_string();
                shared.recorder.warning(at(), "Failed", format!("Error: {message}"));
                settings.metrics.container_failed(init, "RunContainerError");
                self.set_waiting(&c.name, "RunContainerError", message);
                self.remember(|m| {
                    m.backoff.entry(c.name.clone()).or_insert(FIRST_BACKOFF);
                });
                Some(FIRST_BACKOFF)
            }
        }
    }

    /// The image on the node, as imagePullPolicy wants it; on failure the waiting reason, its
    /// message and when to try again.
    async fn ensure_image(&self, c: &Container, init: bool) -> Result<(), (String, String, Duration)> {
        let shared = self.shared;
        let runtime = &shared.settings.runtime;
        let image = c.image.clone().unwrap_or_default();
        let at = || reference(self.pod, field_path(init, &c.name));
        let policy = c
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| default_pull_policy(&image).into());
        let present = runtime.has_image(&image).await.unwrap_or(false);
        match policy.as_str() {
            "Never" if present => return Ok(()),
            "Never" => {
                let message = format!("Container image \"{image}\" is not present with pull policy of Never");
                shared.recorder.warning(at(), "ErrImageNeverPull", message.clone());
                return Err(("ErrImageNeverPull".into(), message, Duration::from_secs(10)));
            }
            "IfNotPresent" if present => {
                shared.recorder.normal(
                    at(),
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                );
                return Ok(());
            }
            _ => {}
        }
        let key = format!("image:{image}");
        let until = {
            let memory = shared.memory.lock().expect("memory lock");
            memory.get(self.uid).and_then(|m| m.backoff_until.get(&key).copied())
        };
        if let Some(until) = until
            && let Ok(left) = until.duration_since(SystemTime::now())
        {
            let message = format!("Back-off pulling image \"{image}\"");
            shared.recorder.normal(at(), "BackOff", message.clone());
            return Err(("ImagePullBackOff".into(), message, left));
        }
        shared
            .recorder
            .normal(at(), "Pulling", format!("Pulling image \"{image}\""));
        let started = std::time::Instant::now();
        match runtime.pull(&image).await {
            Ok(_) => {
                shared.recorder.normal(
                    at(),
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        started.elapsed().as_secs_f64()
                    ),
                );
                self.remember(|m| {
                    m.backoff.remove(&key);
                    m.backoff_until.remove(&key);
                });
                Ok(())
            }
            Err(e) if present && shared.settings.airgap && registry_unreachable(e.message()) => {
                shared.recorder.warning(
                    at(),
                    "PulledLocalCopy",
                    format!(
                        "Failed to pull image \"{image}\" (no registry can be reached); running the copy on this node (--airgap): {}",
                        e.message()
                    ),
                );
                Ok(())
            }
            Err(e) => {
                let message = format!("Failed to pull image \"{image}\": {}", e.message());
                shared.recorder.warning(at(), "Failed", message.clone());
                shared.recorder.warning(at(), "Failed", "Error: ErrImagePull".into());
                let mut wait = FIRST_BACKOFF;
                self.remember(|m| {
                    let delay = m.backoff.get(&key).map_or(FIRST_BACKOFF, |d| (*d * 2).min(MAX_BACKOFF));
                    m.backoff.insert(key.clone(), delay);
                    m.backoff_until.insert(key.clone(), SystemTime::now() + delay);
                    wait = delay;
                });
                Err(("ErrImagePull".into(), message, wait))
            }
        }
    }
}

/// Always for `:latest` or no tag, IfNotPresent otherwise (the API server's defaulting, for
/// pods that reached us without it).
fn default_pull_policy(image: &str) -> &'static str {
    let canonical = styrman_runtime::canonical_image_name(image);
    if !canonical.contains('@') && canonical.ends_with(":latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

/// Whether a pull failed because no registry could be reached at all (as opposed to a
/// registry answering that the image does not exist).
fn registry_unreachable(message: &str) -> bool {
    [
        "dial tcp",
        "no such host",
        "connection refused",
        "i/o timeout",
        "network is unreachable",
        "server misbehaving",
        "TLS handshake timeout",
        "Temporary failure in name resolution",
        "no route to host",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// What the containers did this sync, for the status.
struct Progress<'a> {
    pod_ip: &'a str,
    containers: &'a [Observed],
    initialized: bool,
    init_failed: bool,
    restart_policy: &'a str,
}

/// Posts the pod's status when it differs from what was posted last; the phase posted.
/// Without `progress` (no sandbox yet) every container is waiting.
async fn post_status(
    shared: &Shared,
    pod: &Pod,
    uid: &str,
    progress: Option<Progress<'_>>,
    sandbox_ready: bool,
) -> anyhow::Result<Option<String>> {
    let spec_ = pod.spec.clone().unwrap_or_default();
    let settings = &shared.settings;
    let (waiting, start_time, failed) = {
        let mut memory = shared.memory.lock().expect("memory lock");
        let m = memory.entry(uid.to_string()).or_default();
        let start_time = m
            .start_time
            .get_or_insert_with(|| {
                pod.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| t.0.to_string())
                    .unwrap_or_else(status::now)
            })
            .clone();
        (m.waiting.clone(), start_time, m.failed.clone())
    };
    let empty = Vec::new();
    let observed = progress.as_ref().map_or(&empty[..], |p| p.containers);
    let names = by_name(observed);
    let statuses = |list: &[Container], init: bool| -> Vec<Value> {
        list.iter()
            .map(|c| {
                let (latest, previous) = names.get(c.name.as_str()).copied().unwrap_or_default();
                let mut reason = waiting.get(&c.name);
                let pod_initializing = ("PodInitializing".to_string(), String::new());
                if reason.is_none() && latest.is_none() && !init && progress.as_ref().is_some_and(|p| !p.initialized) {
                    reason = Some(&pod_initializing);
                }
                let health = latest.map(|l| shared.prober.health(c, &l.id));
                status::container_status(c, latest, previous, reason, health.as_ref())
            })
            .collect()
    };
    let init_statuses = statuses(spec_.init_containers.as_deref().unwrap_or_default(), true);
    let app_statuses = statuses(&spec_.containers, false);
    let ephemeral: Vec<Container> = spec_
        .ephemeral_containers
        .iter()
        .flatten()
        .map(ephemeral_as_container)
        .collect();
    let ephemeral_statuses = statuses(&ephemeral, false);
    let restart_policy = spec_.restart_policy.clone().unwrap_or_else(|| "Always".into());
    let (initialized, init_failed) = progress.as_ref().map_or(
        (spec_.init_containers.as_ref().is_none_or(|i| i.is_empty()), false),
        |p| (p.initialized, p.init_failed),
    );
    let phase = match &failed {
        Some(_) => "Failed",
        None => status::phase(
            progress.as_ref().map_or(restart_policy.as_str(), |p| p.restart_policy),
            initialized,
            init_failed,
            &app_statuses,
        ),
    };
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let unready: Vec<&str> = app_statuses
        .iter()
        .filter(|s| s["ready"] != true)
        .filter_map(|s| s["name"].as_str())
        .collect();
    let incomplete: Vec<&str> = spec_
        .init_containers
        .iter()
        .flatten()
        .zip(&init_statuses)
        .filter(|(c, s)| {
            let sidecar = c.restart_policy.as_deref() == Some("Always");
            if sidecar {
                s["started"] != true
            } else {
                s["state"]["terminated"]["exitCode"] != 0
            }
        })
        .map(|(c, _)| c.name.as_str())
        .collect();
    let list = |names: &[&str]| format!("[{}]", names.join(" "));
    let ready = unready.is_empty() && !terminal;
    let (ready_reason, ready_message) = if terminal {
        (Some("PodCompleted"), None)
    } else if ready {
        (None, None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!("containers with unready status: {}", list(&unready))),
        )
    };
    let initialized_condition = if incomplete.is_empty() || initialized {
        status::condition(pod, "Initialized", true, terminal.then_some("PodCompleted"), None)
    } else {
        status::condition(
            pod,
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!("containers with incomplete status: {}", list(&incomplete))),
        )
    };
    let mut conditions = vec![
        status::condition(pod, "PodReadyToStartContainers", sandbox_ready && !terminal, None, None),
        initialized_condition,
        status::condition(pod, "Ready", ready, ready_reason, ready_message.clone()),
        status::condition(pod, "ContainersReady", ready, ready_reason, ready_message),
    ];
    if let Some(scheduled) = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
    {
        conditions.push(serde_json::to_value(scheduled)?);
    }
    let pod_ip = progress.as_ref().map(|p| p.pod_ip).unwrap_or_default();
    let mut body = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": settings.node_ip,
        "hostIPs": [{"ip": settings.node_ip}],
        "startTime": start_time,
        "containerStatuses": app_statuses,
        "qosClass": super::qos_class(&spec_),
    });
    if let Some((reason, message)) = failed {
        body["reason"] = json!(reason);
        body["message"] = json!(message);
    }
    if !pod_ip.is_empty() {
        body["podIP"] = json!(pod_ip);
        body["podIPs"] = json!([{"ip": pod_ip}]);
    }
    if !init_statuses.is_empty() {
        body["initContainerStatuses"] = Value::Array(init_statuses);
    }
    if !ephemeral_statuses.is_empty() {
        body["ephemeralContainerStatuses"] = Value::Array(ephemeral_statuses);
    }
    let unchanged = {
        let memory = shared.memory.lock().expect("memory lock");
        memory
            .get(uid)
            .and_then(|m| m.posted.as_ref())
            .is_some_and(|p| same_but_times(p, &body))
    };
    if unchanged {
        return Ok(Some(phase.to_string()));
    }
    let api: Api<Pod> = Api::namespaced(settings.client.clone(), &pod.namespace().unwrap_or_default());
    match api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": body})),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
        Err(e) => return Err(e).context("posting the pod status"),
    }
    if let Some(m) = shared.memory.lock().expect("memory lock").get_mut(uid) {
        m.posted = Some(body);
        if phase == "Running" && !m.start_measured {
            m.start_measured = true;
            if let Some(seen) = m.first_seen {
                settings.metrics.pod_started(seen.elapsed());
            }
        }
    }
    Ok(Some(phase.to_string()))
}

/// An ephemeral container as the container it runs as: the same fields, less the target.
fn ephemeral_as_container(c: &k8s_openapi::api::core::v1::EphemeralContainer) -> Container {
    Container {
        name: c.name.clone(),
        image: c.image.clone(),
        image_pull_policy: c.image_pull_policy.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        working_dir: c.working_dir.clone(),
        env: c.env.clone(),
        env_from: c.env_from.clone(),
        volume_mounts: c.volume_mounts.clone(),
        volume_devices: c.volume_devices.clone(),
        security_context: c.security_context.clone(),
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        termination_message_path: c.termination_message_path.clone(),
        termination_message_policy: c.termination_message_policy.clone(),
        ..Default::default()
    }
}

/// Equal apart from condition transition times (which are made anew when unknown).
fn same_but_times(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(cs) = v["conditions"].as_array_mut() {
            for c in cs {
                if let Some(o) = c.as_object_mut() {
                    o.remove("lastTransitionTime");
                }
            }
        }
        v
    };
    strip(a) == strip(b)
}

/// Stops the pod's containers (within `grace` seconds) and its sandboxes, keeping them for
/// their logs and status.
async fn stop(
    shared: &Shared,
    pod: Option<&Pod>,
    sandboxes: &[cri::PodSandbox],
    containers: &[Observed],
    grace: i64,
) -> anyhow::Result<()> {
    let mut runtime = shared.settings.runtime.runtime.clone();
    let running: Vec<&Observed> = containers.iter().filter(|c| c.running()).collect();
    let pod_ip = pod
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    let stops = running.iter().map(|c| {
        let spec_ = pod.and_then(|p| p.spec.as_ref());
        let init = spec_
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|i| i.iter().any(|ic| ic.name == c.name));
        let container = spec_.and_then(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .find(|sc| sc.name == c.name)
        });
        if let Some(pod) = pod {
            shared.recorder.normal(
                reference(pod, field_path(init, &c.name)),
                "Killing",
                format!("Stopping container {}", c.name),
            );
        }
        match pod {
            Some(pod) => stop_container(shared, pod, container, init, &c.id, grace, &pod_ip).boxed(),
            None => {
                let mut runtime = runtime.clone();
                let id = c.id.clone();
                async move {
                    runtime
                        .stop_container(cri::StopContainerRequest {
                            container_id: id,
                            timeout: grace,
                        })
                        .await
                        .map(drop)
                }
                .boxed()
            }
        }
    });
    for result in futures::future::join_all(stops).await {
        if let Err(e) = result
            && e.code() != tonic::Code::NotFound
        {
            return Err(e).context("stopping a container");
        }
    }
    for s in sandboxes {
        if s.state == cri::PodSandboxState::SandboxReady as i32 {
            runtime
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: s.id.clone(),
                })
                .await
                .context("stopping the pod sandbox")?;
        }
    }
    Ok(())
}

/// The pod's termination grace period (30 s unless it says otherwise).
fn grace_period(pod: &Pod) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(MIN_GRACE)
}

/// Stops one container within `grace` seconds, its preStop hook first (which the grace
/// period also bounds, as upstream's kill does: the runtime gets what is left, at least the
/// minimum).
async fn stop_container(
    shared: &Shared,
    pod: &Pod,
    container: Option<&Container>,
    init: bool,
    id: &str,
    grace: i64,
    pod_ip: &str,
) -> Result<(), tonic::Status> {
    let mut grace = grace;
    let pre_stop = container.and_then(|c| c.lifecycle.as_ref()?.pre_stop.as_ref().map(|h| (c, h)));
    if let Some((c, handler)) = pre_stop {
        let started = std::time::Instant::now();
        let ran = tokio::time::timeout(
            Duration::from_secs(grace.max(0) as u64),
            handlers::hook(shared, pod, c, id, handler, pod_ip),
        )
        .await;
        let failure = match ran {
            Ok(Ok(())) => None,
            Ok(Err(message)) => Some(message),
            Err(_) => Some(format!(
                "PreStopHook for container {} did not finish within {grace}s",
                c.name
            )),
        };
        if let Some(message) = failure {
            shared
                .recorder
                .warning(reference(pod, field_path(init, &c.name)), "FailedPreStopHook", message);
        }
        grace = (grace - started.elapsed().as_secs() as i64).max(MIN_GRACE);
    }
    shared
        .settings
        .runtime
        .runtime
        .clone()
        .stop_container(cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout: grace,
        })
        .await
        .map(drop)
}

/// Stops everything of the pod and removes it from the runtime.
async fn kill(
    shared: &Shared,
    pod: Option<&Pod>,
    sandboxes: &[cri::PodSandbox],
    containers: &[Observed],
    grace: i64,
) -> anyhow::Result<()> {
    stop(shared, pod, sandboxes, containers, grace).await?;
    let mut runtime = shared.settings.runtime.runtime.clone();
    for s in sandboxes {
        runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: s.id.clone(),
            })
            .await
            .context("removing the pod sandbox")?;
    }
    Ok(())
}

/// Removes what the node kept for the pod: its directory (volumes) and its cgroup.
fn remove_pod_dir(shared: &Shared, uid: &str) {
    let dir = shared.settings.layout.pods().join(uid);
    shared.tokens.forget(uid);
    // Memory-backed emptyDirs are mounts: unmounted first, or removal stops at them.
    crate::cleanup::unmount_below(&dir);
    let _ = std::fs::remove_dir_all(dir);
    for qos in ["Guaranteed", "Burstable", "BestEffort"] {
        crate::cgroups::remove_tree(&crate::cgroups::pod_cgroup(&shared.settings.cgroup_root, qos, uid));
    }
}

/// Removes exited containers older than the two latest of each name (the kubelet keeps the
/// previous one for `kubectl logs --previous`).
async fn gc_old_containers(shared: &Shared, containers: &[Observed]) {
    let mut by: HashMap<&str, Vec<&Observed>> = HashMap::new();
    for c in containers {
        by.entry(c.name.as_str()).or_default().push(c);
    }
    let mut runtime = shared.settings.runtime.runtime.clone();
    for list in by.values_mut() {
        list.sort_by_key(|c| std::cmp::Reverse(c.attempt));
        for old in list.iter().skip(2).filter(|c| c.exited()) {
            let _ = runtime
                .remove_container(cri::RemoveContainerRequest {
                    container_id: old.id.clone(),
                })
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_and_untagged_images_are_pulled_always() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(default_pull_policy("busybox@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn unreachable_registries_are_told_from_missing_images() {
        assert!(registry_unreachable(
            "failed to resolve reference: dial tcp: lookup registry-1.docker.io: no such host"
        ));
        assert!(!registry_unreachable("docker.io/library/nope:latest: not found"));
    }
}
