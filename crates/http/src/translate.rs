//! The API server's stream translator (upstream's `StreamTranslatorHandler`, 1.30 and later):
//! a client speaking WebSocket `v5.channel.k8s.io` to `exec` or `attach` is answered here, and
//! the backend (the kubelet, and behind it the runtime's stream server) is spoken to in SPDY/3.1
//! with `v4.channel.k8s.io`, which every stream server speaks.
//!
//! WebSocket binary messages carry a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 the error
//! stream (the final `Status`), 4 resize, and v5's 255, the client half-closing a channel
//! (`[255, 0]`: stdin ended). Each maps to one SPDY stream the client end opens (`streamtype`
//! error, stdin, stdout, stderr, resize, as client-go opens them); a half-close becomes a FIN.

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::spdy;

pub const V5: &str = "v5.channel.k8s.io";
const BACKEND_PROTOCOL: &str = "v4.channel.k8s.io";

/// Which streams the call has (the request's stdin, stdout, stderr and tty).
#[derive(Clone, Copy, Debug, Default)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

const ERROR: u32 = 1;
const STDIN: u32 = 3;
const STDOUT: u32 = 5;
const STDERR: u32 = 7;
const RESIZE: u32 = 9;

/// Answers `request`, a WebSocket upgrade offering v5, after asking `target` over `backend`
/// for a SPDY/3.1 upgrade; on the backend's `101` a task translates between the two, and any
/// other answer is relayed.
pub async fn websocket_v5_to_spdy<B, IO>(
    request: &mut Request<B>,
    backend: IO,
    target: &http::Uri,
    streams: Streams,
) -> anyhow::Result<Response<Bytes>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    crate::tunnel::websocket_to_spdy_session(
        request,
        backend,
        target,
        V5,
        BACKEND_PROTOCOL,
        move |websocket, backend| async move {
            if let Err(e) = translate(websocket, backend, streams).await {
                tracing::debug!(error = %e, "a translated stream ended with an error");
            }
        },
    )
    .await
}

/// The WebSocket channel of a SPDY stream the server writes on.
fn channel_of(stream: u32) -> Option<u8> {
    match stream {
        STDOUT => Some(1),
        STDERR => Some(2),
        ERROR => Some(3),
        _ => None,
    }
}

async fn translate<S, IO>(
    websocket: tokio_tungstenite::WebSocketStream<S>,
    backend: IO,
    streams: Streams,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut to_client, mut from_client) = websocket.split();
    let (mut from_backend, mut to_backend) = tokio::io::split(backend);
    let mut writer = spdy::Writer::default();
    let mut out = BytesMut::new();
    // The streams client-go opens, in its order.
    let opened = [
        (ERROR, "error", true),
        (STDIN, "stdin", streams.stdin),
        (STDOUT, "stdout", streams.stdout),
        (STDERR, "stderr", streams.stderr && !streams.tty),
        (RESIZE, "resize", streams.tty),
    ];
    for (id, kind, wanted) in opened {
        if wanted {
            writer.syn_stream(id, &[("streamtype", kind)], &mut out);
        }
    }
    to_backend.write_all(&out).await?;
    // The backend is TLS: what is written waits in its buffer until flushed.
    to_backend.flush().await?;
    let mut received = BytesMut::new();
    let mut buffer = vec![0u8; 32 * 1024];
    let mut client_open = true;
    // Whatever ends the session (the backend closing or failing, a GOAWAY, the client
    // leaving), the client still gets a normal close after everything that came before it.
    let session: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                message = from_client.next(), if client_open => {
                    let mut out = BytesMut::new();
                    match message {
                        Some(Ok(Message::Binary(data))) if !data.is_empty() => match data[0] {
                            0 => spdy::data(STDIN, false, &data[1..], &mut out),
                            4 => spdy::data(RESIZE, false, &data[1..], &mut out),
                            255 if data.get(1) == Some(&0) => spdy::data(STDIN, true, &[], &mut out),
                            _ => {}
                        },
                        // The client went away: so does the session.
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                            client_open = false;
                            return Ok(());
                        }
                        Some(Ok(_)) => {}
                    }
                    if !out.is_empty() {
                        to_backend.write_all(&out).await?;
                        to_backend.flush().await?;
                    }
                }
                read = from_backend.read(&mut buffer) => {
                    let n = read?;
                    if n == 0 {
                        return Ok(());
                    }
                    received.extend_from_slice(&buffer[..n]);
                    let mut out = BytesMut::new();
                    let mut ended = false;
                    while let Some(frame) = spdy::parse(&mut received) {
                        match frame {
                            spdy::Frame::Data { stream, data, .. } => {
                                if data.is_empty() {
                                    continue;
                                }
                                spdy::window_update(stream, data.len() as u32, &mut out);
                                spdy::window_update(0, data.len() as u32, &mut out);
                                if let Some(channel) = channel_of(stream) {
                                    let mut message = Vec::with_capacity(data.len() + 1);
                                    message.push(channel);
                                    message.extend_from_slice(&data);
                                    to_client.send(Message::Binary(message.into())).await?;
                                }
                            }
                            spdy::Frame::Ping(id) => spdy::ping(id, &mut out),
                            spdy::Frame::GoAway => ended = true,
                            spdy::Frame::Reset { .. } | spdy::Frame::Other => {}
                        }
                    }
                    if ended {
                        return Ok(());
                    }
                    // A backend that already closed does not need its windows opened.
                    if !out.is_empty() && (to_backend.write_all(&out).await.is_err() || to_backend.flush().await.is_err()) {
                        return Ok(());
                    }
                }
            }
        }
    }
    .await;
    if client_open {
        let _ = to_client
            .send(Message::Close(Some(crate::tunnel::normal_close())))
            .await;
    }
    let _ = to_backend.shutdown().await;
    session
}
