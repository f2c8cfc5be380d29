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
//! Handlers, as upstream's probers: `exec` (CRI ExecSync: exit code 0), `httpGet` (a status
//! from 200 to 399; `User-Agent: kube-probe/1.33`; HTTPS without verifying the certificate),
//! `tcpSocket` (a connection), `grpc` (`grpc.health.v1.Health/Check` answers SERVING).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::Shared;
use super::status::Observed;

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
            return exec_probe(
                &self.shared,
                &self.id,
                exec.command.clone().unwrap_or_default(),
                timeout,
            )
            .await;
        }
        if let Some(get) = &probe.http_get {
            let port = port_number(&get.port, &self.container)?;
            return http_probe(get, get.host.as_deref().unwrap_or(&self.pod_ip), port).await;
        }
        if let Some(tcp) = &probe.tcp_socket {
            let port = port_number(&tcp.port, &self.container)?;
            let host = tcp.host.as_deref().unwrap_or(&self.pod_ip);
            return tokio::net::TcpStream::connect((host, port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"));
        }
        if let Some(grpc) = &probe.grpc {
            let port = u16::try_from(grpc.port).map_err(|_| format!("invalid port {}", grpc.port))?;
            return grpc_probe(&self.pod_ip, port, grpc.service.clone().unwrap_or_default()).await;
        }
        Err("no probe handler".to_string())
    }
}

/// A port as a probe names it: a number, or the name of one of the container's ports.
fn port_number(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("couldn't find port: {name} in {}", container.name))?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

async fn exec_probe(shared: &Shared, id: &str, cmd: Vec<String>, timeout: i64) -> Result<(), String> {
    let answer = shared
        .settings
        .runtime
        .runtime
        .clone()
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.to_string(),
            cmd,
            timeout,
        })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    if answer.exit_code == 0 {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&answer.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&answer.stderr));
    if output.trim().is_empty() {
        output = format!("command exited with code {}", answer.exit_code);
    }
    Err(output)
}

/// What probes say they are, so servers can tell probes from users.
const USER_AGENT: &str = "kube-probe/1.33";

async fn http_probe(get: &HTTPGetAction, host: &str, port: u16) -> Result<(), String> {
    let https = get.scheme.as_deref() == Some("HTTPS");
    let path = get.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let url = format!("{}://{authority}{path}", if https { "https" } else { "http" });
    let failed = |e: &dyn std::fmt::Display| format!("Get \"{url}\": {e}");
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| failed(&format!("dial tcp {authority}: {e}")))?;
    let mut request = http::Request::get(&path)
        .header(http::header::HOST, &authority)
        .header(http::header::USER_AGENT, USER_AGENT)
        .header(http::header::ACCEPT, "*/*")
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(&e))?;
    for header in get.http_headers.iter().flatten() {
        let name = http::HeaderName::from_bytes(header.name.as_bytes()).map_err(|e| failed(&e))?;
        let value = http::HeaderValue::from_str(&header.value).map_err(|e| failed(&e))?;
        request.headers_mut().insert(name, value);
    }
    let status = if https {
        let tls = insecure_tls()
            .connect(
                rustls_pki_types::ServerName::try_from(host.to_string()).map_err(|e| failed(&e))?,
                tcp,
            )
            .await
            .map_err(|e| failed(&e))?;
        send(TokioIo::new(tls), request).await.map_err(|e| failed(&e))?
    } else {
        send(TokioIo::new(tcp), request).await.map_err(|e| failed(&e))?
    };
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {status}"))
    }
}

async fn send<IO>(io: IO, request: http::Request<Empty<Bytes>>) -> anyhow::Result<u16>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    // Read (a bounded part of) the body, as upstream does, so the server sees a whole exchange.
    let _ = http_body_util::Limited::new(response.into_body(), 10 * 1024)
        .collect()
        .await;
    Ok(status)
}

/// TLS that accepts any certificate: upstream's HTTPS probes skip verification.
fn insecure_tls() -> tokio_rustls::TlsConnector {
    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn grpc_probe(host: &str, port: u16, service: String) -> Result<(), String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let target = if host.contains(':') {
        format!("http://[{host}]:{port}")
    } else {
        format!("http://{host}:{port}")
    };
    let failed = |e: &dyn std::fmt::Display| {
        format!("timeout: failed to connect service \"{host}:{port}\" within the probe's timeout: {e}")
    };
    let channel = tonic::transport::Endpoint::from_shared(target)
        .map_err(|e| failed(&e))?
        .user_agent(USER_AGENT)
        .map_err(|e| failed(&e))?
        .connect()
        .await
        .map_err(|e| failed(&e))?;
    let answer = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest { service })
        .await
        .map_err(|e| format!("rpc error: code = {:?} desc = {}", e.code(), e.message()))?
        .into_inner();
    if answer.status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        let status = ServingStatus::try_from(answer.status).map_or("UNKNOWN", |s| s.as_str_name());
        Err(format!("service unhealthy (responded with \"{status}\")"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, ExecAction};

    fn container() -> Container {
        Container {
            name: "app".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn ports_are_numbers_or_the_containers_port_names() {
        let c = container();
        assert_eq!(port_number(&IntOrString::Int(80), &c), Ok(80));
        assert_eq!(port_number(&IntOrString::String("http".into()), &c), Ok(8080));
        assert_eq!(port_number(&IntOrString::String("8081".into()), &c), Ok(8081));
        assert!(port_number(&IntOrString::String("grpc".into()), &c).is_err());
        assert!(port_number(&IntOrString::Int(0), &c).is_err());
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

    #[tokio::test]
    async fn http_probes_pass_on_2xx_3xx_and_fail_otherwise() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 1024];
                let n = tcp.read(&mut buf).await.unwrap();
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let ok = head.starts_with("GET /healthz ")
                    && head.contains("kube-probe/1.33")
                    && head.contains("x-check: yes");
                let answer = if ok { "200 OK" } else { "503 Service Unavailable" };
                let _ = tcp
                    .write_all(
                        format!("HTTP/1.1 {answer}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
                    )
                    .await;
            }
        });
        let mut get = HTTPGetAction {
            path: Some("/healthz".into()),
            port: IntOrString::Int(i32::from(port)),
            http_headers: Some(vec![k8s_openapi::api::core::v1::HTTPHeader {
                name: "X-Check".into(),
                value: "yes".into(),
            }]),
            ..Default::default()
        };
        assert_eq!(http_probe(&get, "127.0.0.1", port).await, Ok(()));
        get.path = Some("/other".into());
        assert_eq!(
            http_probe(&get, "127.0.0.1", port).await,
            Err("HTTP probe failed with statuscode: 503".into())
        );
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = http_probe(&get, "127.0.0.1", closed_port).await.unwrap_err();
        assert!(
            refused.contains("connection refused") || refused.contains("Connection refused"),
            "{refused}"
        );
    }
}
