//! Requests the API server answers by asking the pod's node, as upstream's pod REST storage
//! does for `pods/log`: find the pod and its container (the only one, or the one named; 400
//! with upstream's messages otherwise), find its node's kubelet (InternalIP and the port in
//! `status.daemonEndpoints`), and stream the kubelet's answer back. The kubelet's serving
//! certificate must come from the cluster CA; the API server presents its own client
//! certificate (`kube-apiserver-kubelet-client`).

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
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(KubeletClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
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
        .unwrap_or(10250);
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    let passed = {
        let mut passed = form_urlencoded::Serializer::new(String::new());
        for option in LOG_OPTIONS {
            if let Some(value) = query.get(option) {
                passed.append_pair(option, value);
            }
        }
        passed.finish()
    };
    let uri = format!("https://{host}:{port}/containerLogs/{namespace}/{name}/{container}?{passed}");
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
    let statuses = ["containerStatuses", "initContainerStatuses"]
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
