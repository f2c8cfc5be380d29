//! Upgrade-aware proxying, as apimachinery's `UpgradeAwareHandler` does it for the API
//! server's `pods/exec|attach|portforward` and the kubelet's streaming endpoints: the client's
//! request (its method and headers: `Upgrade`, `Connection`, `Sec-WebSocket-*`,
//! `X-Stream-Protocol-Version`) is sent to the backend over a connection the caller opened;
//! a `101 Switching Protocols` is relayed and the two connections are spliced byte for byte;
//! any other answer is relayed as it came. Nothing above HTTP (WebSocket, SPDY) is read here,
//! so whatever protocol the client and the backend agree on passes through unchanged.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Whether the request asks to switch protocols (`Connection: Upgrade` and an `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && headers.contains_key(header::UPGRADE)
}

/// The protocols a WebSocket client offers (`Sec-WebSocket-Protocol`, comma-separated, in
/// the client's order of preference); empty for other requests.
pub fn websocket_protocols(headers: &HeaderMap) -> Vec<String> {
    let websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !websocket {
        return Vec::new();
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Headers that describe one hop, not the message: not copied onto a relayed answer whose
/// body is re-framed here.
const HOP_BY_HOP: &[header::HeaderName] = &[
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::UPGRADE,
];

/// Sends `request` (an upgrade request; its body is not read) to `target` over `backend`,
/// a connection already open to the target's host. On `101` the answer to give the client
/// is returned and a task splices the client's connection to the backend's once both have
/// switched; any other answer is returned whole, body included, for the client to see why.
pub async fn forward<B, IO>(
    request: &mut Request<B>,
    backend: IO,
    target: &http::Uri,
) -> anyhow::Result<Response<Bytes>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client_upgrade = hyper::upgrade::on(&mut *request);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(backend)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "upgrade backend connection ended with an error");
        }
    });
    let path = target.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut outgoing = Request::builder()
        .method(request.method().clone())
        .uri(path)
        .body(Empty::<Bytes>::new())?;
    for (name, value) in request.headers() {
        // The client's credentials are for this hop; the backend authenticates this caller.
        if name != header::HOST && name != header::AUTHORIZATION && name != header::CONTENT_LENGTH {
            outgoing.headers_mut().append(name.clone(), value.clone());
        }
    }
    if let Some(authority) = target.authority() {
        outgoing
            .headers_mut()
            .insert(header::HOST, HeaderValue::from_str(authority.as_str())?);
    }
    let answer = sender.send_request(outgoing).await?;
    let status = answer.status();
    let headers = answer.headers().clone();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let backend_upgrade = hyper::upgrade::on(answer);
        tokio::spawn(async move {
            let (client, backend) = match tokio::join!(client_upgrade, backend_upgrade) {
                (Ok(client), Ok(backend)) => (client, backend),
                (client, backend) => {
                    tracing::debug!(
                        client = client.is_ok(),
                        backend = backend.is_ok(),
                        "an upgrade did not happen"
                    );
                    return;
                }
            };
            let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                tracing::debug!(error = %e, "spliced stream ended with an error");
            }
        });
        let mut switched = Response::new(Bytes::new());
        *switched.status_mut() = status;
        *switched.headers_mut() = headers;
        return Ok(switched);
    }
    relay(answer).await
}

/// A backend's answer that did not switch protocols, for the client to see why: status,
/// headers (less the hop-by-hop ones) and the whole body.
pub(crate) async fn relay(answer: Response<hyper::body::Incoming>) -> anyhow::Result<Response<Bytes>> {
    let (parts, body) = answer.into_parts();
    let mut relayed = Response::new(body.collect().await?.to_bytes());
    *relayed.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(name) {
            relayed.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(relayed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A backend that switches to an echo protocol when asked for `echo`, and refuses
    /// anything else with 403 and a reason.
    async fn echo_backend() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|mut request: Request<Incoming>| async move {
                        let wanted = request.headers().get(header::UPGRADE).cloned();
                        if wanted.as_ref().and_then(|v| v.to_str().ok()) != Some("echo") {
                            let mut refused = Response::new(Full::new(Bytes::from("no such protocol")));
                            *refused.status_mut() = StatusCode::FORBIDDEN;
                            return Ok::<_, std::convert::Infallible>(refused);
                        }
                        let path = request.uri().path().to_string();
                        let upgrade = hyper::upgrade::on(&mut request);
                        tokio::spawn(async move {
                            let mut io = TokioIo::new(upgrade.await.unwrap());
                            io.write_all(path.as_bytes()).await.unwrap();
                            let mut buf = [0u8; 64];
                            loop {
                                let n = io.read(&mut buf).await.unwrap();
                                if n == 0 {
                                    return;
                                }
                                io.write_all(&buf[..n]).await.unwrap();
                            }
                        });
                        let mut switched = Response::new(Full::new(Bytes::new()));
                        *switched.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                        switched
                            .headers_mut()
                            .insert(header::UPGRADE, HeaderValue::from_static("echo"));
                        switched
                            .headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                        Ok(switched)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        address
    }

    /// A proxy in front of `backend` that sends every request to `/backend<path>`.
    async fn proxy(backend: std::net::SocketAddr) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| async move {
                        let target: http::Uri = format!("http://{backend}/backend{}", request.uri().path())
                            .parse()
                            .unwrap();
                        let connection = TcpStream::connect(backend).await.unwrap();
                        let answer = forward(&mut request, connection, &target).await.unwrap();
                        Ok::<_, std::convert::Infallible>(answer.map(Full::new))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        address
    }

    async fn send(address: std::net::SocketAddr, upgrade: &str) -> TcpStream {
        let mut tcp = TcpStream::connect(address).await.unwrap();
        let request = format!(
            "POST /x HTTP/1.1\r\nHost: proxy\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\nContent-Length: 0\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        tcp
    }

    async fn read_head(tcp: &mut TcpStream) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "connection closed in the head");
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    #[tokio::test]
    async fn a_switch_is_relayed_and_bytes_flow_both_ways() {
        let proxy = proxy(echo_backend().await).await;
        let mut tcp = send(proxy, "echo").await;
        let head = read_head(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.to_ascii_lowercase().contains("upgrade: echo"), "{head}");
        let mut greeting = [0u8; 10];
        tcp.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"/backend/x", "the backend saw the target path");
        tcp.write_all(b"ping").await.unwrap();
        let mut echoed = [0u8; 4];
        tcp.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"ping");
    }

    #[tokio::test]
    async fn a_refusal_is_relayed_with_its_body() {
        let proxy = proxy(echo_backend().await).await;
        let mut tcp = send(proxy, "other").await;
        let head = read_head(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        let mut body = [0u8; 16];
        tcp.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"no such protocol");
    }

    #[test]
    fn upgrade_and_websocket_protocols_are_read_from_headers() {
        let mut headers = HeaderMap::new();
        assert!(!is_upgrade(&headers));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&headers));
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
        );
        assert_eq!(
            websocket_protocols(&headers),
            ["v5.channel.k8s.io", "v4.channel.k8s.io"]
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert!(websocket_protocols(&headers).is_empty());
    }
}
