//! Requests the API server answers by asking the pod's node, as upstream's pod REST storage
//! does: `pods/log` (streamed back) and the connect subresources `pods/exec`, `pods/attach`
//! and `pods/portforward` (upgraded and proxied; see below). Each finds the pod and its
//! container (the only one, or the one named; 400 with upstream's messages otherwise), then
//! its node's kubelet (InternalIP and the port in `status.daemonEndpoints`). The kubelet's
//! serving certificate must come from the cluster CA; the API server presents its own client
//! certificate (`kube-apiserver-kubelet-client`).
//!
//! Streams are proxied byte for byte (apimachinery's upgrade-aware proxy), so a client speaks
//! whatever its node's runtime speaks: SPDY/3.1 and WebSocket `v4.channel.k8s.io` (the
//! Python client, kube-rs). Upstream 1.33 also ends WebSocket `v5.channel.k8s.io` itself and
//! translates it to SPDY, and tunnels kubectl's SPDY-in-WebSocket port-forward; neither is
//! done here yet, so such a request gets a 400 at once, on which kubectl falls back to SPDY
//! as it does against any server without them.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

use crate::kinds;
use crate::pki::Pki;
use crate::registry::Registry;
use crate::status::{ApiError, ApiResult};

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The API server's client for kubelets.
#[derive(Clone)]
pub struct KubeletClient {
    client: HttpsClient,
    /// For connections that switch protocols: HTTP/1.1 only, as upgrades need.
    upgrade_tls: tokio_rustls::TlsConnector,
}

impl KubeletClient {
    pub fn new(pki: &Pki) -> anyhow::Result<KubeletClient> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let chain =
            CertificateDer::pem_slice_iter(pki.kubelet_client.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(pki.kubelet_client.key_pem.as_bytes())?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        let mut upgrade_tls = tls.clone();
        upgrade_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(KubeletClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            upgrade_tls: tokio_rustls::TlsConnector::from(Arc::new(upgrade_tls)),
        })
    }
}

/// The options of `pods/log` the kubelet takes, passed on as they came.
const LOG_OPTIONS: &[&str] = &[
    "follow",
    "previous",
    "timestamps",
    "tailLines",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
];

/// `GET pods/<name>/log`: the container's log from its node, streamed.
pub async fn pod_log(
    registry: &Registry,
    kubelet: &KubeletClient,
    namespace: &str,
    name: &str,
    query: &crate::request::Query,
) -> ApiResult<tokio::sync::mpsc::Receiver<Bytes>> {
    let pods = kinds::find("", "v1", "pods").ok_or_else(ApiError::route_not_found)?;
    let pod = registry.object(pods, Some(namespace), name).await?;
    let container = container_name(&pod, query.get("container"))?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        )));
    }
    if let Some(waiting) = waiting_reason(&pod, &container)
        && query.get("previous") != Some("true")
    {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {waiting}"
        )));
    }
    let node = NodeKubelet::of(registry, node_name).await?;
    let passed = {
        let mut passed = form_urlencoded::Serializer::new(String::new());
        for option in LOG_OPTIONS {
            if let Some(value) = query.get(option) {
                passed.append_pair(option, value);
            }
        }
        passed.finish()
    };
    let uri = node.url(&format!("/containerLogs/{namespace}/{name}/{container}?{passed}"));
    let request = http::Request::get(&uri)
        .body(Empty::new())
        .map_err(ApiError::internal)?;
    let response = kubelet
        .client
        .request(request)
        .await
        .map_err(|e| ApiError::internal(format!("Get \"{uri}\": {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = String::from_utf8_lossy(&body).trim().to_string();
        return Err(match status.as_u16() {
            400 | 404 => ApiError::bad_request(message),
            _ => ApiError::internal(message),
        });
    }
    // Forwarded frame by frame (a followed log has no end); a broken connection ends it.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let mut body = response.into_body();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data()
                && tx.send(data).await.is_err()
            {
                return;
            }
        }
    });
    Ok(rx)
}

/// `nodes/<name>/proxy/<path>`: the request passed on to the node's kubelet as it came
/// (method, path, query; no body), its answer returned whole.
pub async fn node_request(
    registry: &Registry,
    kubelet: &KubeletClient,
    node_name: &str,
    method: http::Method,
    path: &str,
    query: Option<&str>,
) -> ApiResult<http::Response<Bytes>> {
    let node = NodeKubelet::of(registry, node_name).await?;
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    let uri = node.url(&format!("{path}{query}"));
    let request = http::Request::builder()
        .method(method)
        .uri(&uri)
        .body(Empty::new())
        .map_err(ApiError::internal)?;
    let response = kubelet
        .client
        .request(request)
        .await
        .map_err(|e| ApiError::unavailable(format!("error trying to reach service: {e}")))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| ApiError::internal(format!("reading {uri}: {e}")))?
        .to_bytes();
    let mut answer = http::Response::new(body);
    *answer.status_mut() = parts.status;
    if let Some(content_type) = parts.headers.get(http::header::CONTENT_TYPE) {
        answer
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, content_type.clone());
    }
    Ok(answer)
}

/// Where a node's kubelet listens.
struct NodeKubelet {
    address: String,
    port: u16,
}

impl NodeKubelet {
    async fn of(registry: &Registry, node_name: &str) -> ApiResult<NodeKubelet> {
        let nodes = kinds::find("", "v1", "nodes").ok_or_else(ApiError::route_not_found)?;
        let node = registry.object(nodes, None, node_name).await?;
        let address = node["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .ok_or_else(|| ApiError::internal(format!("node {node_name} has no InternalIP")))?;
        let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(10250);
        Ok(NodeKubelet {
            address: address.to_string(),
            port,
        })
    }

    /// The kubelet's HTTPS URL for `path_and_query` (IPv6 addresses in brackets).
    fn url(&self, path_and_query: &str) -> String {
        let host = if self.address.contains(':') {
            format!("[{}]", self.address)
        } else {
            self.address.clone()
        };
        format!("https://{host}:{}{path_and_query}", self.port)
    }
}

/// The WebSocket subprotocols a node's runtime (containerd's stream server) speaks, so the
/// ones a byte proxy can carry.
const CARRIED_WEBSOCKET_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// `pods/<name>/exec|attach|portforward` (GET or POST): the upgrade request forwarded to the
/// kubelet and, once both ends switch protocols, the connections spliced.
pub async fn pod_connect<B>(
    registry: &Registry,
    kubelet: &KubeletClient,
    namespace: &str,
    name: &str,
    subresource: &str,
    request: &mut http::Request<B>,
) -> ApiResult<http::Response<Bytes>> {
    if !styrman_http::upgrade::is_upgrade(request.headers()) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let offered = styrman_http::upgrade::websocket_protocols(request.headers());
    // kubectl's port-forward: SPDY in WebSocket messages, unwrapped here for the kubelet.
    let tunnel = subresource == "portforward" && offered.iter().any(|p| p == styrman_http::tunnel::PORT_FORWARD_TUNNEL);
    // WebSocket v5 (kubectl, kube-rs) for exec and attach: translated here to SPDY.
    let translated = subresource != "portforward" && offered.iter().any(|p| p == styrman_http::translate::V5);
    if !tunnel
        && !translated
        && !offered.is_empty()
        && !offered
            .iter()
            .any(|p| CARRIED_WEBSOCKET_PROTOCOLS.contains(&p.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "none of the offered WebSocket protocols [{}] is served; served: [{}], or SPDY/3.1",
            offered.join(", "),
            CARRIED_WEBSOCKET_PROTOCOLS.join(", ")
        )));
    }
    let pods = kinds::find("", "v1", "pods").ok_or_else(ApiError::route_not_found)?;
    let pod = registry.object(pods, Some(namespace), name).await?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let values = |key: &'static str| pairs.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str());
    let mut streams = styrman_http::translate::Streams::default();
    let path = if subresource == "portforward" {
        let ports: Vec<&str> = values("ports").collect();
        let mut path = format!("/portForward/{namespace}/{name}");
        if !ports.is_empty() {
            path.push_str("?port=");
            path.push_str(&form_urlencoded::byte_serialize(ports.join(",").as_bytes()).collect::<String>());
        }
        path
    } else {
        let container = container_name(&pod, values("container").next())?;
        let phase = pod["status"]["phase"].as_str().unwrap_or("");
        if phase == "Succeeded" || phase == "Failed" {
            return Err(ApiError::bad_request(format!(
                "cannot {subresource} into a container in a completed pod; current phase is {phase}"
            )));
        }
        let mut passed = form_urlencoded::Serializer::new(String::new());
        if subresource == "exec" {
            for command in values("command") {
                passed.append_pair("command", command);
            }
        }
        // apimachinery's booleans: present and neither `0` nor `false` is true.
        let set = |key: &'static str| {
            values(key)
                .next()
                .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
        };
        for (option, kubelet_name) in [
            ("stdin", "input"),
            ("stdout", "output"),
            ("stderr", "error"),
            ("tty", "tty"),
        ] {
            if set(option) {
                passed.append_pair(kubelet_name, "1");
            }
        }
        streams = styrman_http::translate::Streams {
            stdin: set("stdin"),
            stdout: set("stdout"),
            stderr: set("stderr"),
            tty: set("tty"),
        };
        format!("/{subresource}/{namespace}/{name}/{container}?{}", passed.finish())
    };
    let node = NodeKubelet::of(registry, node_name).await?;
    let target: http::Uri = node.url(&path).parse().map_err(ApiError::internal)?;
    let dial_error = |e: &dyn std::fmt::Display| ApiError::internal(format!("error dialing backend: {e}"));
    let tcp = tokio::net::TcpStream::connect((node.address.as_str(), node.port))
        .await
        .map_err(|e| dial_error(&e))?;
    let server_name = rustls_pki_types::ServerName::try_from(node.address.clone()).map_err(|e| dial_error(&e))?;
    let tls = kubelet
        .upgrade_tls
        .connect(server_name, tcp)
        .await
        .map_err(|e| dial_error(&e))?;
    let answer = if tunnel {
        styrman_http::tunnel::websocket_to_spdy(
            request,
            tls,
            &target,
            styrman_http::tunnel::PORT_FORWARD_TUNNEL,
            "portforward.k8s.io",
        )
        .await
    } else if translated {
        styrman_http::translate::websocket_v5_to_spdy(request, tls, &target, streams).await
    } else {
        styrman_http::upgrade::forward(request, tls, &target).await
    };
    answer.map_err(|e| dial_error(&e))
}

/// The container a log request is for: the one named, or the pod's only one.
fn container_name(pod: &Value, requested: Option<&str>) -> ApiResult<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let names = |field: &str| -> Vec<String> {
        pod["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    let (containers, init, ephemeral) = (
        names("containers"),
        names("initContainers"),
        names("ephemeralContainers"),
    );
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if containers.iter().chain(&init).chain(&ephemeral).any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(" or one of the init containers: [{}]", init.join(" ")));
            }
            Err(ApiError::bad_request(message))
        }
    }
}

/// The reason a container is waiting, when it has never run (nothing to read yet).
fn waiting_reason(pod: &Value, container: &str) -> Option<String> {
    let statuses = [
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
    ]
    .iter()
    .flat_map(|f| pod["status"][f].as_array().cloned().unwrap_or_default());
    for s in statuses {
        if s["name"] == container {
            let never_ran = s["lastState"].get("terminated").is_none();
            return s["state"]["waiting"]["reason"]
                .as_str()
                .filter(|_| never_ran)
                .map(str::to_string);
        }
    }
    Some("ContainerCreating".to_string())
}
