//! HTTPS serving: a TLS accept loop that authenticates client certificates, HTTP/1.1 and
//! HTTP/2 on each connection, and the dispatch of each request to discovery, health, or the
//! registry.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::discovery::{self, Format};
use crate::kinds;
use crate::patch;
use crate::pki::Pki;
use crate::registry::{Call, Registry, Reply, Shape};
use crate::request::{self, Query, ResourceRequest, Route, Verb};
use crate::status::{ApiError, ApiResult};
use crate::table::IncludeObject;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Bodies larger than this are refused with 413, as kube-apiserver refuses them.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    fn anonymous() -> User {
        User {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }
}

pub struct Server {
    registry: Registry,
    kubelets: crate::node_proxy::KubeletClient,
    join: crate::join::Join,
    openapi: crate::openapi::OpenApi,
    /// `host:port` clients reach us at, for legacy discovery.
    address: String,
}

pub fn tls_config(pki: &Pki) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    // Client certificates are optional at the TLS layer: requests without one are anonymous,
    // and what anonymous users may do is decided per request.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let chain = CertificateDer::pem_slice_iter(pki.serving.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving.key_pem.as_bytes())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The user a verified client certificate names: common name and organisations.
fn user_from_certificates(certs: Option<&[CertificateDer<'_>]>) -> User {
    let Some(leaf) = certs.and_then(|c| c.first()) else {
        return User::anonymous();
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
        return User::anonymous();
    };
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    groups.push("system:authenticated".into());
    User { name, groups }
}

impl Server {
    pub fn new(
        registry: Registry,
        address: String,
        kubelets: crate::node_proxy::KubeletClient,
        join: crate::join::Join,
    ) -> Server {
        Server {
            registry,
            kubelets,
            join,
            openapi: crate::openapi::OpenApi::build(),
            address,
        }
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: rustls::ServerConfig) -> anyhow::Result<()> {
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let server = self.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                };
                let user = Arc::new(user_from_certificates(tls.get_ref().1.peer_certificates()));
                let service = hyper::service::service_fn(move |request| {
                    let (server, user) = (server.clone(), user.clone());
                    async move { Ok::<_, Infallible>(server.handle(request, &user, peer).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    }

    async fn handle(&self, request: Request<Incoming>, user: &User, peer: SocketAddr) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let response = match self.route(request, user).await {
            Ok(response) => response,
            Err(e) => error_response(&e),
        };
        tracing::debug!(%peer, user = %user.name, %method, %path, status = response.status().as_u16(), "request");
        response
    }

    async fn route(&self, request: Request<Incoming>, user: &User) -> ApiResult<Response<Body>> {
        // The body is read before anything can fail: answering while the client is still
        // sending makes HTTP/2 reset the stream, and the client never sees the Status.
        let (parts, body) = request.into_parts();
        let body = read_body(body).await?;
        let request = Request::from_parts(parts, body);
        if crate::join::Join::serves(request.uri().path()) {
            return self.join(&request, user);
        }
        let query = Query::parse(request.uri().query());
        let route = request::route(request.method(), request.uri().path(), &query);
        let public = matches!(route, Route::Version | Route::Health(..));
        if user.is_anonymous() && !public {
            return Err(ApiError::unauthorized());
        }
        let accept = header_str(&request, header::ACCEPT).to_string();
        match route {
            Route::Version => Ok(json_response(200, &discovery::version())),
            Route::Health(endpoint, check) => {
                let (code, text) =
                    crate::health::answer(&endpoint, check.as_deref(), &query, self.registry.store()).await;
                Ok(bytes_response(code, "text/plain; charset=utf-8", text.into_bytes()))
            }
            Route::DiscoveryRoot { core } => {
                let format = Format::from_accept(&accept);
                let doc = discovery::root(core, format, &self.address);
                let mut response = json_response(200, &doc);
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
                Ok(response)
            }
            Route::DiscoveryGroup { group } => discovery::group(&group)
                .map(|d| json_response(200, &d))
                .ok_or_else(ApiError::route_not_found),
            Route::DiscoveryGroupVersion { group, version } => discovery::resource_list(&group, &version)
                .map(|d| json_response(200, &d))
                .ok_or_else(ApiError::route_not_found),
            Route::OpenApi(path) => self.openapi(&path),
            Route::MethodNotAllowed => Err(ApiError::method_not_allowed()),
            Route::NotFound => Err(ApiError::route_not_found()),
            Route::Resource(resource) => self.resource(request, resource, &query, &accept, user).await,
        }
    }

    /// A joining node's requests (`join.rs`): the CA bundle, its credentials.
    fn join(&self, request: &Request<Bytes>, user: &User) -> ApiResult<Response<Body>> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, crate::join::CA_PATH) => Ok(bytes_response(
                200,
                "text/plain; charset=utf-8",
                self.join.ca_pem().as_bytes().to_vec(),
            )),
            (&Method::POST, crate::join::CREDENTIALS_PATH) => {
                let bearer = header_str(request, header::AUTHORIZATION)
                    .strip_prefix("Bearer ")
                    .map(str::trim);
                let issued = self.join.credentials(request.body(), bearer, user)?;
                let issued = serde_json::to_value(issued).map_err(ApiError::internal)?;
                Ok(json_response(200, &issued))
            }
            _ => Err(ApiError::method_not_allowed()),
        }
    }

    fn openapi(&self, path: &str) -> ApiResult<Response<Body>> {
        if path == "v3" || path == "v3/" {
            return Ok(json_response(200, &self.openapi.index()));
        }
        let document = path.strip_prefix("v3/").and_then(|gv| self.openapi.document(gv));
        let document = document.ok_or_else(ApiError::route_not_found)?;
        let mut response = bytes_response(200, "application/json", document.body.clone());
        // Clients cache by URL, and the URL carries the content's hash.
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, immutable"));
        Ok(response)
    }

    async fn resource(
        &self,
        request: Request<Bytes>,
        resource: ResourceRequest,
        query: &Query,
        accept: &str,
        user: &User,
    ) -> ApiResult<Response<Body>> {
        let kind = kinds::find(&resource.group, &resource.version, &resource.resource)
            .ok_or_else(ApiError::route_not_found)?;
        let verb = match resource.verb {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        };
        if resource.subresource.is_none() && !kind.takes(verb) {
            return Err(ApiError::method_not_allowed());
        }
        if kind.is_review() {
            let content_type = header_str(&request, header::CONTENT_TYPE).to_string();
            let body = decode_object(&content_type, request.body())?;
            let namespace = resource.namespace.as_deref().filter(|_| kind.namespaced);
            let answered = crate::reviews::answer(kind, body, user, namespace)?;
            return Ok(json_response(201, &answered));
        }
        if let Some(sub) = &resource.subresource
            && kind.subresource(sub).is_none()
        {
            return Err(ApiError::route_not_found());
        }
        if kind.plural == "pods" && kind.group.is_empty() && resource.subresource.as_deref() == Some("log") {
            let (Some(namespace), Some(name)) = (resource.namespace.as_deref(), resource.name.as_deref()) else {
                return Err(ApiError::route_not_found());
            };
            if resource.verb != Verb::Get {
                return Err(ApiError::method_not_allowed());
            }
            let rx = crate::node_proxy::pod_log(&self.registry, &self.kubelets, namespace, name, query).await?;
            let stream = tokio_stream_from(rx).map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
            let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return Ok(response);
        }
        if kind.plural == "pods"
            && kind.group.is_empty()
            && let Some(connect @ ("exec" | "attach" | "portforward")) = resource.subresource.as_deref()
        {
            let (Some(namespace), Some(name)) = (resource.namespace.as_deref(), resource.name.as_deref()) else {
                return Err(ApiError::route_not_found());
            };
            if !matches!(resource.verb, Verb::Get | Verb::Create) {
                return Err(ApiError::method_not_allowed());
            }
            let mut request = request;
            let answer =
                crate::node_proxy::pod_connect(&self.registry, &self.kubelets, namespace, name, connect, &mut request)
                    .await?;
            return Ok(answer.map(|body| Full::new(body).boxed_unsync()));
        }
        if kind.plural == "nodes" && kind.group.is_empty() && resource.subresource.as_deref() == Some("proxy") {
            let name = resource.name.as_deref().unwrap_or("");
            let prefix = format!("/api/v1/nodes/{name}/proxy");
            let path = request.uri().path().strip_prefix(&prefix).unwrap_or("");
            let path = if path.is_empty() { "/" } else { path };
            if !request.body().is_empty() {
                return Err(ApiError::bad_request("request bodies are not passed on to nodes"));
            }
            let answer = crate::node_proxy::node_request(
                &self.registry,
                &self.kubelets,
                name,
                request.method().clone(),
                path,
                request.uri().query(),
            )
            .await?;
            return Ok(answer.map(|body| Full::new(body).boxed_unsync()));
        }
        let shape = negotiate(accept, query)?;
        let manager = query
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| {
                header_str(&request, header::USER_AGENT)
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .to_string()
            });
        let content_type = header_str(&request, header::CONTENT_TYPE).to_string();
        let body = request.into_body();
        let call = Call {
            kind,
            request: &resource,
            query,
            shape,
            manager,
            warnings: Default::default(),
        };
        let reply = match resource.verb {
            Verb::Get => self.registry.get(&call).await?,
            Verb::List => self.registry.list(&call).await?,
            Verb::Watch => self.registry.watch(&call).await?,
            Verb::Create => {
                self.registry
                    .create(&call, decode_object(&content_type, &body)?)
                    .await?
            }
            Verb::Update => {
                self.registry
                    .update(&call, decode_object(&content_type, &body)?)
                    .await?
            }
            Verb::Patch => {
                let patch_type = content_type.split(';').next().unwrap_or("").trim();
                if !patch::ACCEPTED.contains(&patch_type) {
                    return Err(ApiError::unsupported_media_type(patch_type, patch::ACCEPTED));
                }
                if patch_type == patch::APPLY_PATCH {
                    self.registry.apply(&call, &body).await?
                } else {
                    self.registry.patch(&call, patch_type, &body).await?
                }
            }
            Verb::Delete => self.registry.delete(&call, delete_options(&body)?).await?,
            Verb::DeleteCollection => self.registry.delete_collection(&call, delete_options(&body)?).await?,
        };
        let mut response = match reply {
            Reply::Json(code, value) => json_response(code, &value),
            Reply::Bytes(code, bytes) => bytes_response(code, "application/json", bytes),
            Reply::Stream(rx) => {
                let stream = tokio_stream_from(rx).map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
                let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
                response
            }
        };
        for warning in call.warnings.lock().expect("warnings lock").iter() {
            let text = format!("299 - \"{}\"", warning.replace('\\', "\\\\").replace('"', "\\\""));
            if let Ok(value) = HeaderValue::from_str(&text) {
                response.headers_mut().append("Warning", value);
            }
        }
        Ok(response)
    }
}

fn tokio_stream_from(mut rx: tokio::sync::mpsc::Receiver<Bytes>) -> impl futures::Stream<Item = Bytes> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn header_str<B>(request: &Request<B>, name: header::HeaderName) -> &str {
    request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The response shape the Accept header asks for; 406 when nothing in it can be produced.
fn negotiate(accept: &str, query: &Query) -> ApiResult<Shape> {
    if accept.trim().is_empty() {
        return Ok(Shape::Object);
    }
    for entry in accept.split(',') {
        let params: Vec<&str> = entry.split(';').map(str::trim).collect();
        let media = params[0];
        if params.contains(&"as=Table") {
            if media == "application/json"
                && params.contains(&"g=meta.k8s.io")
                && (params.contains(&"v=v1") || params.contains(&"v=v1beta1"))
            {
                let include = match query.get("includeObject") {
                    None | Some("") | Some("Metadata") => IncludeObject::Metadata,
                    Some("None") => IncludeObject::None,
                    Some("Object") => IncludeObject::Object,
                    Some(other) => {
                        return Err(ApiError::bad_request(format!(
                            "invalid value for includeObject: {other:?}"
                        )));
                    }
                };
                return Ok(Shape::Table(include));
            }
            continue;
        }
        if (params.contains(&"as=PartialObjectMetadata") || params.contains(&"as=PartialObjectMetadataList"))
            && media == "application/json"
            && params.contains(&"g=meta.k8s.io")
            && (params.contains(&"v=v1") || params.contains(&"v=v1beta1"))
        {
            return Ok(Shape::Metadata);
        }
        if params.iter().any(|p| p.starts_with("as=")) {
            continue;
        }
        if matches!(media, "application/json" | "*/*" | "application/*" | "application/yaml") {
            return Ok(Shape::Object);
        }
    }
    Err(ApiError::not_acceptable())
}

/// Reads a request body of at most [`MAX_BODY`] bytes. A larger one is read on (and thrown
/// away, up to a bound) before the 413, so the client, still sending, sees the answer instead
/// of a reset connection.
async fn read_body(mut body: Incoming) -> ApiResult<Bytes> {
    let mut collected = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        total += data.len();
        if total <= MAX_BODY {
            collected.extend_from_slice(&data);
        } else if total > 8 * MAX_BODY {
            break;
        }
    }
    if total > MAX_BODY {
        return Err(ApiError::too_large());
    }
    Ok(Bytes::from(collected))
}

const BODY_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];

/// A create or update body as JSON.
fn decode_object(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/json" | "" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body of the request could not be decoded as JSON: {e}"))),
        "application/yaml" => crate::yaml::to_json(body),
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(body),
        other => Err(ApiError::unsupported_media_type(other, BODY_TYPES)),
    }
}

/// DeleteOptions from a DELETE body (often empty).
fn delete_options(body: &[u8]) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))
}

fn bytes_response(code: u16, content_type: &'static str, bytes: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(bytes)).boxed_unsync());
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    response
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    let mut bytes = serde_json::to_vec(value).expect("JSON values always encode");
    bytes.push(b'\n');
    bytes_response(code, "application/json", bytes)
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    bytes_response(e.code, "application/json", e.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let q = Query::default();
        let kubectl_get = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            negotiate(kubectl_get, &q).unwrap(),
            Shape::Table(IncludeObject::Metadata)
        );
        assert_eq!(
            negotiate("application/vnd.kubernetes.protobuf,application/json", &q).unwrap(),
            Shape::Object
        );
        assert_eq!(negotiate("", &q).unwrap(), Shape::Object);
        assert_eq!(
            negotiate("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1", &q).unwrap(),
            Shape::Metadata
        );
        assert_eq!(
            negotiate("application/json;as=Table;v=v2;g=meta.k8s.io", &q)
                .unwrap_err()
                .code,
            406
        );
        assert_eq!(negotiate("text/html", &q).unwrap_err().code, 406);
    }
}
