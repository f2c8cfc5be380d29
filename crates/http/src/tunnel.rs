//! A byte stream carried in WebSocket binary messages, as the API server's port-forward
//! tunnel (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31 and later) carries SPDY: the client's
//! WebSocket is ended here, the backend is asked for a classic upgrade (`Upgrade: SPDY/3.1`
//! with the given `X-Stream-Protocol-Version`), and once both have switched each binary
//! message's payload goes to the backend as it came and the backend's bytes come back as
//! binary messages. What the stream holds (SPDY frames) is not read here.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// kubectl's port-forward tunnel: SPDY/3.1 inside WebSocket messages.
pub const PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// Answers `request`, a WebSocket upgrade offering `protocol`, after asking `target` over
/// `backend` to switch to SPDY/3.1 speaking `backend_version`; on the backend's `101` a task
/// carries the stream between the two, and any other answer is relayed.
pub async fn websocket_to_spdy<B, IO>(
    request: &mut Request<B>,
    backend: IO,
    target: &http::Uri,
    protocol: &'static str,
    backend_version: &'static str,
) -> anyhow::Result<Response<Bytes>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    websocket_to_spdy_session(
        request,
        backend,
        target,
        protocol,
        backend_version,
        |websocket, backend| async move {
            carry(websocket, backend).await;
        },
    )
    .await
}

/// The client's WebSocket, ended here with `protocol`.
pub(crate) type ClientSocket = tokio_tungstenite::WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;
/// The backend's connection once it switched to SPDY/3.1.
pub(crate) type BackendStream = TokioIo<hyper::upgrade::Upgraded>;

/// What a WebSocket-to-SPDY bridge shares: the backend asked for a SPDY/3.1 upgrade with
/// `backend_version` (any answer but `101` relayed), then the client's WebSocket accepted with
/// `protocol` and `session` run on both once they switched.
pub(crate) async fn websocket_to_spdy_session<B, IO, F, Fut>(
    request: &mut Request<B>,
    backend: IO,
    target: &http::Uri,
    protocol: &'static str,
    backend_version: &'static str,
    session: F,
) -> anyhow::Result<Response<Bytes>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(ClientSocket, BackendStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        let mut refused = Response::new(Bytes::from_static(b"a WebSocket upgrade needs Sec-WebSocket-Key"));
        *refused.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(refused);
    };
    let client_upgrade = hyper::upgrade::on(&mut *request);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(backend)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "SPDY backend connection ended with an error");
        }
    });
    let path = target.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut outgoing = Request::post(path).body(Empty::<Bytes>::new())?;
    let headers = outgoing.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    headers.insert("X-Stream-Protocol-Version", HeaderValue::from_static(backend_version));
    if let Some(authority) = target.authority() {
        headers.insert(header::HOST, HeaderValue::from_str(authority.as_str())?);
    }
    let answer = sender.send_request(outgoing).await?;
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        return crate::upgrade::relay(answer).await;
    }
    let backend_upgrade = hyper::upgrade::on(answer);
    tokio::spawn(async move {
        let (client, backend) = match tokio::join!(client_upgrade, backend_upgrade) {
            (Ok(client), Ok(backend)) => (client, backend),
            (client, backend) => {
                tracing::debug!(
                    client = client.is_ok(),
                    backend = backend.is_ok(),
                    "a WebSocket bridge did not open"
                );
                return;
            }
        };
        let websocket =
            tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
        session(websocket, TokioIo::new(backend)).await;
    });
    let mut switched = Response::new(Bytes::new());
    *switched.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = switched.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept)?);
    headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    Ok(switched)
}

/// Moves bytes both ways until either side ends.
async fn carry<S, IO>(websocket: tokio_tungstenite::WebSocketStream<S>, backend: IO)
where
    S: AsyncRead + AsyncWrite + Unpin,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut to_client, mut from_client) = websocket.split();
    let (mut from_backend, mut to_backend) = tokio::io::split(backend);
    let upstream = async {
        while let Some(message) = from_client.next().await {
            match message {
                Ok(Message::Binary(data)) => {
                    if to_backend.write_all(&data).await.is_err() || to_backend.flush().await.is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                // Pings are answered by the WebSocket layer; text has no place here.
                Ok(_) => {}
            }
        }
        let _ = to_backend.shutdown().await;
    };
    let downstream = async {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            match from_backend.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_client
                        .send(Message::Binary(Bytes::copy_from_slice(&buffer[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = to_client.send(Message::Close(Some(normal_close()))).await;
    };
    // Either end finishing ends the tunnel: the other side has no one left to talk to.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}

/// A close with status 1000: clients (gorilla's, client-go's) read one without a status as
/// an error.
pub(crate) fn normal_close() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }
}
