//! The handlers probes and lifecycle hooks share, as upstream's probers and hook runner run
//! them: `exec` (CRI ExecSync: exit code 0), `httpGet` (a status from 200 to 399;
//! `User-Agent: kube-probe/1.33`; HTTPS without verifying the certificate), `tcpSocket` (a
//! connection), `grpc` (`grpc.health.v1.Health/Check` answers SERVING), and the hooks' `sleep`.
//! A failure is the text upstream puts in its events.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, LifecycleHandler, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::Shared;

/// Runs a lifecycle hook (postStart or preStop) of container `id`: the event message of its
/// failure.
pub async fn hook(
    shared: &Shared,
    pod: &Pod,
    container: &Container,
    id: &str,
    handler: &LifecycleHandler,
    pod_ip: &str,
) -> Result<(), String> {
    let who = format!(
        "for Container \"{}\" in Pod \"{}_{}({})\"",
        container.name,
        pod.name_any(),
        pod.namespace().unwrap_or_default(),
        pod.uid().unwrap_or_default()
    );
    if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        return self::exec(shared, id, command.clone(), 0)
            .await
            .map_err(|e| format!("Exec lifecycle hook ({command:?}) {who} failed - error: {e}"));
    }
    if let Some(get) = &handler.http_get {
        let port = port_number(&get.port, container)?;
        return http_get(get, get.host.as_deref().unwrap_or(pod_ip), port)
            .await
            .map_err(|e| {
                format!(
                    "HTTP lifecycle hook ({}) {who} failed - error: {e}",
                    get.path.as_deref().unwrap_or("")
                )
            });
    }
    if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
        return Ok(());
    }
    Err(format!(
        "Cannot run handler: a lifecycle hook {who} has no exec, httpGet or sleep action"
    ))
}

/// A port as a probe names it: a number, or the name of one of the container's ports.
pub fn port_number(port: &IntOrString, container: &Container) -> Result<u16, String> {
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

pub async fn exec(shared: &Shared, id: &str, cmd: Vec<String>, timeout: i64) -> Result<(), String> {
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

pub async fn http_get(get: &HTTPGetAction, host: &str, port: u16) -> Result<(), String> {
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

pub async fn grpc(host: &str, port: u16, service: String) -> Result<(), String> {
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
    use k8s_openapi::api::core::v1::ContainerPort;

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
        assert_eq!(http_get(&get, "127.0.0.1", port).await, Ok(()));
        get.path = Some("/other".into());
        assert_eq!(
            http_get(&get, "127.0.0.1", port).await,
            Err("HTTP probe failed with statuscode: 503".into())
        );
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = http_get(&get, "127.0.0.1", closed_port).await.unwrap_err();
        assert!(
            refused.contains("connection refused") || refused.contains("Connection refused"),
            "{refused}"
        );
    }
}
