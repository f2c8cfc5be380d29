//! The kubelet's streaming endpoints as upstream's kubelet server (1.33) serves them, on GET
//! and POST: `/exec/{ns}/{pod}[/{uid}]/{container}?command=…`, `/attach/…` and
//! `/portForward/{ns}/{pod}[/{uid}]`. The stream options come from the query (`input`,
//! `output`, `error`, `tty`, each set only by `1`; with a tty, stderr is dropped, since the
//! runtime refuses both); the runtime is asked (CRI Exec, Attach, PortForward) for a one-use
//! URL on its stream server, and the request is proxied there unchanged, as the 1.33 kubelet
//! always does: the protocols (SPDY/3.1, WebSocket `v4.channel.k8s.io`) are the runtime's.

use std::collections::HashMap;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use k8s_cri::v1 as cri;

use crate::cri::Runtime;
use crate::pods::labels;

/// What a streaming request is for.
pub enum Target<'a> {
    Exec {
        namespace: &'a str,
        pod: &'a str,
        container: &'a str,
    },
    Attach {
        namespace: &'a str,
        pod: &'a str,
        container: &'a str,
    },
    PortForward {
        namespace: &'a str,
        pod: &'a str,
    },
}

impl<'a> Target<'a> {
    /// The target a path names (its parts after the leading `/`), if it is a streaming one.
    pub fn from_path(parts: &[&'a str]) -> Option<Target<'a>> {
        Some(match parts {
            ["exec", namespace, pod, container] | ["exec", namespace, pod, _, container] => Target::Exec {
                namespace,
                pod,
                container,
            },
            ["attach", namespace, pod, container] | ["attach", namespace, pod, _, container] => Target::Attach {
                namespace,
                pod,
                container,
            },
            ["portForward", namespace, pod] | ["portForward", namespace, pod, _] => {
                Target::PortForward { namespace, pod }
            }
            _ => return None,
        })
    }
}

/// A refusal, as a `metav1.Status` the API server relays to the client.
type Refusal = (StatusCode, String);

/// `exec`'s and `attach`'s stream flags, as upstream's `NewOptions` reads them.
#[derive(Debug, PartialEq)]
struct Streams {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl Streams {
    fn from_query(query: &HashMap<String, Vec<String>>) -> Result<Streams, Refusal> {
        let set = |k: &str| query.get(k).and_then(|v| v.first()).is_some_and(|v| v == "1");
        let tty = set("tty");
        let streams = Streams {
            stdin: set("input"),
            stdout: set("output"),
            stderr: set("error") && !tty,
            tty,
        };
        if !streams.stdin && !streams.stdout && !streams.stderr {
            return Err((
                StatusCode::BAD_REQUEST,
                "you must specify at least 1 of stdin, stdout, stderr".into(),
            ));
        }
        Ok(streams)
    }
}

/// The ports a WebSocket port-forward asks for (`port`, repeated or comma-separated).
fn ports(query: &HashMap<String, Vec<String>>) -> Result<Vec<i32>, Refusal> {
    let mut ports = Vec::new();
    for text in query.get("port").into_iter().flatten().flat_map(|v| v.split(',')) {
        let port: u16 = text.trim().parse().map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("unable to parse {text:?} as a port: {e}"),
            )
        })?;
        if port == 0 {
            return Err((StatusCode::BAD_REQUEST, format!("port {text:?} must be > 0")));
        }
        ports.push(i32::from(port));
    }
    Ok(ports)
}

/// Serves a streaming request: asks the runtime for its stream URL and proxies there.
pub async fn serve<B>(target: Target<'_>, mut request: Request<B>, runtime: &Runtime) -> Response<Bytes> {
    let url = match stream_url(&target, &request, runtime).await {
        Ok(url) => url,
        Err((code, message)) => return status(code, &message),
    };
    let Ok(uri) = url.parse::<http::Uri>() else {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the runtime's stream URL {url:?} is not a URL"),
        );
    };
    let Some(authority) = uri.authority() else {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the runtime's stream URL {url:?} has no host"),
        );
    };
    let connection = match tokio::net::TcpStream::connect(authority.as_str()).await {
        Ok(c) => c,
        Err(e) => {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot reach the runtime's stream server at {authority}: {e}"),
            );
        }
    };
    match styrman_http::upgrade::forward(&mut request, connection, &uri).await {
        Ok(answer) => answer,
        Err(e) => status(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("streaming to the runtime failed: {e}"),
        ),
    }
}

async fn stream_url<B>(target: &Target<'_>, request: &Request<B>, runtime: &Runtime) -> Result<String, Refusal> {
    let mut query: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()).into_owned() {
        query.entry(k).or_default().push(v);
    }
    let internal = |e: tonic::Status| (StatusCode::INTERNAL_SERVER_ERROR, e.message().to_string());
    let mut client = runtime.runtime.clone();
    match *target {
        Target::Exec {
            namespace,
            pod,
            container,
        } => {
            let streams = Streams::from_query(&query)?;
            let command = query.remove("command").unwrap_or_default();
            if command.is_empty() {
                return Err((StatusCode::BAD_REQUEST, "you must specify a command".into()));
            }
            let container_id = running_container(runtime, namespace, pod, container).await?;
            let exec = cri::ExecRequest {
                container_id,
                cmd: command,
                tty: streams.tty,
                stdin: streams.stdin,
                stdout: streams.stdout,
                stderr: streams.stderr,
            };
            Ok(client.exec(exec).await.map_err(internal)?.into_inner().url)
        }
        Target::Attach {
            namespace,
            pod,
            container,
        } => {
            let streams = Streams::from_query(&query)?;
            let container_id = running_container(runtime, namespace, pod, container).await?;
            let attach = cri::AttachRequest {
                container_id,
                tty: streams.tty,
                stdin: streams.stdin,
                stdout: streams.stdout,
                stderr: streams.stderr,
            };
            Ok(client.attach(attach).await.map_err(internal)?.into_inner().url)
        }
        Target::PortForward { namespace, pod } => {
            let websocket = request
                .headers()
                .get(http::header::UPGRADE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
            let port = ports(&query)?;
            if websocket && port.is_empty() {
                return Err((StatusCode::BAD_REQUEST, "query parameter \"port\" is required".into()));
            }
            let pod_sandbox_id = ready_sandbox(runtime, namespace, pod).await?;
            let forward = cri::PortForwardRequest { pod_sandbox_id, port };
            Ok(client.port_forward(forward).await.map_err(internal)?.into_inner().url)
        }
    }
}

fn pod_labels(namespace: &str, pod: &str) -> HashMap<String, String> {
    HashMap::from([
        (labels::POD_NAMESPACE.to_string(), namespace.to_string()),
        (labels::POD_NAME.to_string(), pod.to_string()),
    ])
}

/// The id of the pod's running container of that name (the newest, should there be two).
async fn running_container(runtime: &Runtime, namespace: &str, pod: &str, container: &str) -> Result<String, Refusal> {
    let mut selector = pod_labels(namespace, pod);
    selector.insert(labels::CONTAINER_NAME.to_string(), container.to_string());
    let listed = runtime
        .running_containers(selector)
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.message().to_string()))?;
    listed
        .into_iter()
        .max_by_key(|c| c.created_at)
        .map(|c| c.id)
        .ok_or_else(|| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("container not found ({container:?})"),
            )
        })
}

/// The id of the pod's ready sandbox, whose network namespace a port-forward dials in.
async fn ready_sandbox(runtime: &Runtime, namespace: &str, pod: &str) -> Result<String, Refusal> {
    let listed = runtime
        .ready_sandboxes(pod_labels(namespace, pod))
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.message().to_string()))?;
    listed
        .into_iter()
        .max_by_key(|s| s.created_at)
        .map(|s| s.id)
        .ok_or_else(|| (StatusCode::NOT_FOUND, "pod does not exist".to_string()))
}

/// A failure as the kubelet writes one (`metav1.Status` JSON), which clients show as the
/// reason an upgrade failed.
pub fn status(code: StatusCode, message: &str) -> Response<Bytes> {
    let reason = match code {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::NOT_FOUND => "NotFound",
        _ => "InternalError",
    };
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
        let mut query: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in pairs {
            query.entry(k.to_string()).or_default().push(v.to_string());
        }
        query
    }

    #[test]
    fn stream_flags_are_set_by_1_only_and_a_tty_drops_stderr() {
        let streams = Streams::from_query(&query(&[
            ("input", "1"),
            ("output", "true"),
            ("error", "1"),
            ("tty", "1"),
        ]));
        assert_eq!(
            streams.unwrap(),
            Streams {
                stdin: true,
                stdout: false,
                stderr: false,
                tty: true
            }
        );
        let none = Streams::from_query(&query(&[("tty", "1"), ("error", "1")]));
        assert_eq!(none.unwrap_err().0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn ports_come_repeated_or_comma_separated_and_must_be_real() {
        assert_eq!(
            ports(&query(&[("port", "80,443"), ("port", "8080")])).unwrap(),
            [80, 443, 8080]
        );
        assert!(ports(&query(&[("port", "0")])).unwrap_err().1.contains("must be > 0"));
        assert!(
            ports(&query(&[("port", "http")]))
                .unwrap_err()
                .1
                .contains("unable to parse")
        );
    }

    #[test]
    fn paths_name_targets_with_or_without_the_pod_uid() {
        assert!(matches!(
            Target::from_path(&["exec", "ns", "p", "uid", "c"]),
            Some(Target::Exec { container: "c", .. })
        ));
        assert!(matches!(
            Target::from_path(&["portForward", "ns", "p"]),
            Some(Target::PortForward { pod: "p", .. })
        ));
        assert!(Target::from_path(&["portforward", "ns", "p"]).is_none());
    }
}
