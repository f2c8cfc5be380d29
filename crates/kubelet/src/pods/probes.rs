//! Liveness, readiness and startup probes as the kubelet's prober manager runs them: one worker
//! per running container and probe kind, first after `initialDelaySeconds` from the
//! container's start, then every `periodSeconds`, each attempt bounded by `timeoutSeconds`;
//! a result changes after `successThreshold` successes or `failureThreshold` failures in a row,
//! and a change queues the pod's sync. Until a startup probe succeeds the other two wait and
//! the container is not `started`; a container with a readiness probe is not ready until it
//! succeeds; a failed liveness or startup probe has the sync kill the container, which then
//! restarts by the pod's restartPolicy. Every failed attempt is an `Unhealthy` event
//! (`<Kind> probe failed: <output>`), as upstream records them.
//!
//! The handlers (exec, httpGet, tcpSocket, grpc) are in [`super::handlers`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use kube::ResourceExt;

use super::status::Observed;
use super::{Shared, handlers};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Startup, Kind::Liveness, Kind::Readiness];

    fn name(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }

    fn of(self, c: &Container) -> Option<&Probe> {
        match self {
            Kind::Liveness => c.liveness_probe.as_ref(),
            Kind::Readiness => c.readiness_probe.as_ref(),
            Kind::Startup => c.startup_probe.as_ref(),
        }
    }
}

/// The probers' results, by runtime container id and kind; absent until a threshold is met.
#[derive(Default)]
pub struct Prober {
    results: Mutex<HashMap<(String, Kind), bool>>,
    workers: Mutex<HashSet<(String, Kind)>>,
}

/// What the probes say of one running container.
#[derive(Debug, PartialEq)]
pub struct Health {
    pub started: bool,
    pub ready: bool,
    /// The probe that failed, when the container must be killed (liveness or startup).
    pub kill_for: Option<Kind>,
}

impl Prober {
    fn result(&self, id: &str, kind: Kind) -> Option<bool> {
        self.results
            .lock()
            .expect("probe results lock")
            .get(&(id.to_string(), kind))
            .copied()
    }

    /// The container's health by its probes' results (a container without probes is started
    /// and ready once running).
    pub fn health(&self, spec: &Container, id: &str) -> Health {
        let result = |kind: Kind| kind.of(spec).map(|_| self.result(id, kind));
        let started = result(Kind::Startup).is_none_or(|r| r == Some(true));
        let ready = started && result(Kind::Readiness).is_none_or(|r| r == Some(true));
        let kill_for = [Kind::Startup, Kind::Liveness]
            .into_iter()
            .find(|kind| result(*kind) == Some(Some(false)));
        Health {
            started,
            ready,
            kill_for,
        }
    }

    /// Forgets a container's results (it was killed for a failed probe: its worker ends).
    pub fn forget(&self, id: &str) {
        self.results
            .lock()
            .expect("probe results lock")
            .retain(|(c, _), _| c != id);
    }
}

/// Starts the workers the pod's running containers need and do not have yet.
pub fn ensure_workers(shared: &Arc<Shared>, pod: &Pod, containers: &[Observed], pod_ip: &str) {
    let spec = pod.spec.clone().unwrap_or_default();
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| (c, true));
    for (c, init) in spec.containers.iter().map(|c| (c, false)).chain(sidecars) {
        let Some(running) = containers
            .iter()
            .filter(|o| o.name == c.name && o.running())
            .max_by_key(|o| o.attempt)
        else {
            continue;
        };
        for kind in Kind::ALL {
            let Some(probe) = kind.of(c) else { continue };
            let key = (running.id.clone(), kind);
            if !shared.prober.workers.lock().expect("probe workers lock").insert(key) {
                continue;
            }
            let worker = Worker {
                shared: Arc::clone(shared),
                uid: pod.uid().unwrap_or_default(),
                pod: pod.clone(),
                container: c.clone(),
                init,
                id: running.id.clone(),
                kind,
                probe: probe.clone(),
                started_at: SystemTime::UNIX_EPOCH + Duration::from_nanos(running.status.started_at.max(0) as u64),
                pod_ip: pod_ip.to_string(),
            };
            tokio::spawn(worker.run());
        }
    }
}

struct Worker {
    shared: Arc<Shared>,
    uid: String,
    pod: Pod,
    container: Container,
    init: bool,
    id: String,
    kind: Kind,
    probe: Probe,
    started_at: SystemTime,
    pod_ip: String,
}

impl Worker {
    async fn run(self) {
        let seconds = |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(1) as u64);
        let period = seconds(self.probe.period_seconds, 10);
        let timeout = seconds(self.probe.timeout_seconds, 1);
        let success_threshold = self.probe.success_threshold.unwrap_or(1).max(1);
        let failure_threshold = self.probe.failure_threshold.unwrap_or(3).max(1);
        let initial = Duration::from_secs(self.probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        if let Ok(wait) = (self.started_at + initial).duration_since(SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
        let (mut successes, mut failures) = (0, 0);
        while self.still_running().await {
            let prober = &self.shared.prober;
            let waiting_for_startup = self.kind != Kind::Startup
                && Kind::Startup.of(&self.container).is_some()
                && prober.result(&self.id, Kind::Startup) != Some(true);
            let settled = match self.kind {
                // A startup probe stops once it succeeded; a failed liveness or startup probe
                // waits for the kill.
                Kind::Startup => prober.result(&self.id, Kind::Startup).is_some(),
                Kind::Liveness => prober.result(&self.id, Kind::Liveness) == Some(false),
                Kind::Readiness => false,
            };
            if !waiting_for_startup && !settled {
                match tokio::time::timeout(timeout, self.attempt()).await {
                    Ok(Ok(())) => {
                        successes += 1;
                        failures = 0;
                    }
                    outcome => {
                        let output = match outcome {
                            Ok(Err(output)) => output,
                            _ => format!("timeout: probe did not answer within {}s", timeout.as_secs()),
                        };
                        successes = 0;
                        failures += 1;
                        self.shared.recorder.warning(
                            super::sync::reference(&self.pod, super::sync::field_path(self.init, &self.container.name)),
                            "Unhealthy",
                            format!("{} probe failed: {}", self.kind.name(), output.trim_end()),
                        );
                    }
                }
                let verdict = if successes >= success_threshold {
                    Some(true)
                } else if failures >= failure_threshold {
                    Some(false)
                } else {
                    None
                };
                if let Some(verdict) = verdict {
                    let key = (self.id.clone(), self.kind);
                    let changed =
                        prober.results.lock().expect("probe results lock").insert(key, verdict) != Some(verdict);
                    if changed {
                        self.shared.queue.add(self.uid.clone());
                    }
                }
            }
            tokio::time::sleep(period).await;
        }
        let key = (self.id.clone(), self.kind);
        self.shared
            .prober
            .results
            .lock()
            .expect("probe results lock")
            .remove(&key);
        self.shared
            .prober
            .workers
            .lock()
            .expect("probe workers lock")
            .remove(&key);
    }

    /// The pod is still bound here and the container still runs.
    async fn still_running(&self) -> bool {
        if !self.shared.pods.lock().expect("pods lock").contains_key(&self.uid) {
            return false;
        }
        let status = self
            .shared
            .settings
            .runtime
            .runtime
            .clone()
            .container_status(cri::ContainerStatusRequest {
                container_id: self.id.clone(),
                verbose: false,
            })
            .await;
        status.is_ok_and(|s| {
            s.into_inner()
                .status
                .is_some_and(|s| s.state == cri::ContainerState::ContainerRunning as i32)
        })
    }

    /// One attempt of the probe's handler: the output of a failure.
    async fn attempt(&self) -> Result<(), String> {
        let probe = &self.probe;
        if let Some(exec) = &probe.exec {
            let timeout = i64::from(probe.timeout_seconds.unwrap_or(1).max(1));
            return handlers::exec(
                &self.shared,
                &self.id,
                exec.command.clone().unwrap_or_default(),
                timeout,
            )
            .await;
        }
        if let Some(get) = &probe.http_get {
            let port = handlers::port_number(&get.port, &self.container)?;
            return handlers::http_get(get, get.host.as_deref().unwrap_or(&self.pod_ip), port).await;
        }
        if let Some(tcp) = &probe.tcp_socket {
            let port = handlers::port_number(&tcp.port, &self.container)?;
            let host = tcp.host.as_deref().unwrap_or(&self.pod_ip);
            return tokio::net::TcpStream::connect((host, port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"));
        }
        if let Some(grpc) = &probe.grpc {
            let port = u16::try_from(grpc.port).map_err(|_| format!("invalid port {}", grpc.port))?;
            return handlers::grpc(&self.pod_ip, port, grpc.service.clone().unwrap_or_default()).await;
        }
        Err("no probe handler".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ExecAction;

    fn container() -> Container {
        Container {
            name: "app".into(),
            ..Default::default()
        }
    }

    #[test]
    fn health_follows_the_results_of_the_probes_a_container_has() {
        let prober = Prober::default();
        let probe = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            ..Default::default()
        };
        let plain = container();
        assert_eq!(
            prober.health(&plain, "c1"),
            Health {
                started: true,
                ready: true,
                kill_for: None
            }
        );
        let probed = Container {
            readiness_probe: Some(probe.clone()),
            liveness_probe: Some(probe.clone()),
            startup_probe: Some(probe),
            ..container()
        };
        // Nothing known yet: not started, not ready, nothing to kill.
        assert_eq!(
            prober.health(&probed, "c1"),
            Health {
                started: false,
                ready: false,
                kill_for: None
            }
        );
        let set = |kind, ok| {
            prober.results.lock().unwrap().insert(("c1".to_string(), kind), ok);
        };
        set(Kind::Startup, true);
        assert_eq!(
            prober.health(&probed, "c1"),
            Health {
                started: true,
                ready: false,
                kill_for: None
            }
        );
        set(Kind::Readiness, true);
        assert_eq!(
            prober.health(&probed, "c1"),
            Health {
                started: true,
                ready: true,
                kill_for: None
            }
        );
        set(Kind::Liveness, false);
        assert_eq!(prober.health(&probed, "c1").kill_for, Some(Kind::Liveness));
        prober.forget("c1");
        assert!(!prober.health(&probed, "c1").started);
    }
}
