//! The kubelet's HTTPS port (10250), where the API server comes for what only the node has:
//! `/containerLogs/<namespace>/<pod>/<container>` (what `pods/log` proxies to), the streams of
//! `pods/exec|attach|portforward` ([`crate::streaming`]), `/stats/summary` and
//! `/metrics/resource` ([`crate::stats`]), `/metrics` ([`crate::metrics`]) and `/healthz`.
//! Only callers with a client certificate from the cluster CA get in, and of those only the API
//! server's own identity (`kube-apiserver-kubelet-client`) or `system:masters` may read logs,
//! the part of upstream's webhook authorization that matters here: nodes and other clients
//! are refused.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::cri::Runtime;

pub struct ServerConfig {
    pub address: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The identity the API server calls kubelets with.
pub const APISERVER_CLIENT: &str = "kube-apiserver-kubelet-client";

pub async fn serve(
    config: ServerConfig,
    runtime: Runtime,
    stats: Arc<crate::stats::Source>,
    metrics: Arc<crate::metrics::Metrics>,
) -> anyhow::Result<()> {
    let tls = tls_config(&config)?;
    let listener = TcpListener::bind(config.address)
        .await
        .with_context(|| format!("cannot listen on {}", config.address))?;
    tracing::info!(address = %config.address, "kubelet serving");
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let runtime = runtime.clone();
        let (stats, metrics) = (Arc::clone(&stats), Arc::clone(&metrics));
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let allowed = allowed(tls.get_ref().1.peer_certificates());
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let (runtime, stats, metrics) = (runtime.clone(), Arc::clone(&stats), Arc::clone(&metrics));
                async move { Ok::<_, Infallible>(handle(request, allowed, runtime, &stats, &metrics).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, error = %e, "kubelet connection ended with an error");
            }
        });
    }
}

fn tls_config(config: &ServerConfig) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&read(&config.client_ca)?) {
        roots.add(cert?)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let chain = CertificateDer::pem_slice_iter(&read(&config.cert)?).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(&read(&config.key)?)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// None: no verified certificate; Some(false): a certificate of someone not allowed.
fn allowed(certs: Option<&[CertificateDer<'_>]>) -> Option<bool> {
    let leaf = certs.and_then(|c| c.first())?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("");
    let masters = subject
        .iter_organization()
        .any(|o| o.as_str().ok() == Some("system:masters"));
    Some(name == APISERVER_CLIENT || masters)
}

fn text(code: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(message.into())).boxed_unsync());
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn handle(
    request: Request<Incoming>,
    allowed: Option<bool>,
    runtime: Runtime,
    stats: &crate::stats::Source,
    metrics: &crate::metrics::Metrics,
) -> Response<Body> {
    let path = request.uri().path().to_string();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    match allowed {
        None => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
        Some(false) => return text(StatusCode::FORBIDDEN, "Forbidden"),
        Some(true) => {}
    }
    let query: HashMap<String, String> = form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["containerLogs", namespace, pod, container] if request.method() == http::Method::GET => {
            container_logs(runtime, namespace, pod, container, &query).await
        }
        ["stats", "summary"] if matches!(*request.method(), http::Method::GET | http::Method::POST) => {
            match stats.summary().await {
                Ok(summary) => {
                    let mut response = text(StatusCode::OK, summary.to_string());
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    response
                }
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("failed to get stats: {e}")),
            }
        }
        ["metrics"] if request.method() == http::Method::GET => {
            let mut response = text(StatusCode::OK, metrics.render(&runtime).await);
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        ["metrics", "resource"] if request.method() == http::Method::GET => match stats.summary().await {
            Ok(summary) => {
                let mut response = text(StatusCode::OK, crate::stats::resource_metrics(&summary));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("failed to get stats: {e}")),
        },
        parts => match crate::streaming::Target::from_path(parts) {
            Some(target) if matches!(*request.method(), http::Method::GET | http::Method::POST) => {
                crate::streaming::serve(target, request, &runtime)
                    .await
                    .map(|body| Full::new(body).boxed_unsync())
            }
            _ => text(StatusCode::NOT_FOUND, "404 page not found"),
        },
    }
}

async fn container_logs(
    runtime: Runtime,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &HashMap<String, String>,
) -> Response<Body> {
    let options = match crate::logs::Options::from_query(query) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let (path, id) = match crate::logs::locate(&runtime, namespace, pod, container, options.previous).await {
        Ok(found) => found,
        Err((code, message)) => {
            return text(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                message,
            );
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        if let Err(e) = crate::logs::stream(runtime, path, id, options, tx).await {
            tracing::debug!(error = %e, "log stream ended");
        }
    });
    let stream = futures::StreamExt::map(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)), |b| {
        Ok::<_, Infallible>(Frame::data(b))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    response
}
