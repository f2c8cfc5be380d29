//! Container logs as `kubectl logs` reads them through the kubelet (`/containerLogs`): the
//! runtime's log file in the CRI format (`<RFC 3339 time> <stream> <P|F> <text>`, P marking a
//! line the runtime split) turned back into what the container wrote, with upstream's options:
//! `timestamps`, `tailLines`, `sinceSeconds`/`sinceTime`, `limitBytes`, `previous`, and
//! `follow`, which keeps reading until the container exits.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use k8s_cri::v1 as cri;

use crate::cri::Runtime;
use crate::pods::labels;

/// `kubectl logs`' options, as the query carries them.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub since: Option<jiff::Timestamp>,
    pub limit_bytes: Option<usize>,
}

impl Options {
    pub fn from_query(query: &HashMap<String, String>) -> Result<Options, String> {
        let flag = |k: &str| query.get(k).is_some_and(|v| v == "true" || v == "1");
        let number = |k: &str| -> Result<Option<i64>, String> {
            query
                .get(k)
                .map(|v| v.parse::<i64>().map_err(|_| format!("{k}: {v:?} is not a number")))
                .transpose()
        };
        let since = match (number("sinceSeconds")?, query.get("sinceTime")) {
            (Some(s), _) => Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(s)),
            (None, Some(t)) => Some(
                t.parse()
                    .map_err(|_| format!("sinceTime: {t:?} is not an RFC 3339 time"))?,
            ),
            (None, None) => None,
        };
        Ok(Options {
            follow: flag("follow"),
            previous: flag("previous"),
            timestamps: flag("timestamps"),
            tail_lines: number("tailLines")?.map(|n| n.max(0) as usize),
            since,
            limit_bytes: number("limitBytes")?.map(|n| n.max(0) as usize),
        })
    }
}

/// Why logs cannot be served: the HTTP code and message.
pub type LogError = (u16, String);

/// The log file and id of `container` of pod `namespace/pod` (its previous instance when
/// asked).
pub async fn locate(
    runtime: &Runtime,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<(PathBuf, String), LogError> {
    let filter = HashMap::from([
        (labels::POD_NAMESPACE.to_string(), namespace.to_string()),
        (labels::POD_NAME.to_string(), pod.to_string()),
        (labels::CONTAINER_NAME.to_string(), container.to_string()),
    ]);
    let mut listed = runtime
        .runtime
        .clone()
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: filter,
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| (500, e.message().to_string()))?
        .into_inner()
        .containers;
    listed.sort_by_key(|c| std::cmp::Reverse((c.metadata.as_ref().map(|m| m.attempt), c.created_at)));
    let chosen = if previous { listed.get(1) } else { listed.first() };
    let Some(chosen) = chosen else {
        let message = if previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        } else {
            format!("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating")
        };
        return Err((400, message));
    };
    let status = runtime
        .runtime
        .clone()
        .container_status(cri::ContainerStatusRequest {
            container_id: chosen.id.clone(),
            verbose: false,
        })
        .await
        .map_err(|e| (500, e.message().to_string()))?
        .into_inner()
        .status
        .ok_or((500, "the runtime has no status for the container".to_string()))?;
    Ok((PathBuf::from(status.log_path), chosen.id.clone()))
}

/// One line of a CRI log file.
struct Line<'a> {
    time: &'a str,
    partial: bool,
    text: &'a str,
}

fn parse(line: &str) -> Option<Line<'_>> {
    let mut fields = line.splitn(4, ' ');
    let time = fields.next()?;
    let _stream = fields.next()?;
    let tag = fields.next()?;
    let text = fields.next().unwrap_or("");
    Some(Line {
        time,
        partial: tag.starts_with('P'),
        text,
    })
}

/// What a line gives the reader.
fn render(line: &Line<'_>, options: &Options) -> Option<String> {
    if let Some(since) = options.since
        && line.time.parse::<jiff::Timestamp>().is_ok_and(|t| t < since)
    {
        return None;
    }
    let mut out = String::new();
    if options.timestamps {
        out.push_str(line.time);
        out.push(' ');
    }
    out.push_str(line.text);
    if !line.partial {
        out.push('\n');
    }
    Some(out)
}

/// Streams the log at `path` into `tx` by `options`; following, until container `id` has
/// exited and everything it wrote was sent.
pub async fn stream(
    runtime: Runtime,
    path: PathBuf,
    id: String,
    options: Options,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    let file = std::fs::File::open(&path)?;
    let mut reader = std::io::BufReader::new(file);
    let mut budget = options.limit_bytes.unwrap_or(usize::MAX);
    let send = |text: String, budget: &mut usize| -> Option<Bytes> {
        if *budget == 0 {
            return None;
        }
        let mut bytes = text.into_bytes();
        bytes.truncate(*budget);
        *budget -= bytes.len();
        Some(Bytes::from(bytes))
    };
    // What is there now (the last tailLines lines of it).
    let mut existing = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        if !line.ends_with('\n') {
            // Half a line being written: read it again when whole.
            let back = line.len() as i64;
            reader.seek_relative(-back)?;
            break;
        }
        if let Some(parsed) = parse(line.trim_end_matches('\n'))
            && let Some(text) = render(&parsed, &options)
        {
            existing.push(text);
        }
    }
    let skip = options.tail_lines.map_or(0, |n| existing.len().saturating_sub(n));
    for text in existing.into_iter().skip(skip) {
        match send(text, &mut budget) {
            Some(b) => {
                if tx.send(b).await.is_err() {
                    return Ok(());
                }
            }
            None => return Ok(()),
        }
    }
    if !options.follow {
        return Ok(());
    }
    let mut exited_seen = false;
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n > 0 && line.ends_with('\n') {
            if let Some(parsed) = parse(line.trim_end_matches('\n'))
                && let Some(text) = render(&parsed, &options)
            {
                match send(text, &mut budget) {
                    Some(b) => {
                        if tx.send(b).await.is_err() {
                            return Ok(());
                        }
                    }
                    None => return Ok(()),
                }
            }
            continue;
        }
        if n > 0 {
            reader.seek_relative(-(n as i64))?;
        }
        if exited_seen {
            return Ok(());
        }
        if tx.is_closed() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Once the container has exited, one more read takes what it wrote last.
        let state = runtime
            .runtime
            .clone()
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|s| s.into_inner().status)
            .map(|s| s.state);
        if state != Some(cri::ContainerState::ContainerRunning as i32)
            && state != Some(cri::ContainerState::ContainerCreated as i32)
        {
            exited_seen = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines_read_back_as_written() {
        let options = Options::default();
        let full = parse("2026-12-04T10:00:00.123456789Z stdout F hello world").unwrap();
        assert_eq!(render(&full, &options).unwrap(), "hello world\n");
        let partial = parse("2026-12-04T10:00:00.123456789Z stdout P hel").unwrap();
        assert_eq!(render(&partial, &options).unwrap(), "hel");
        let stamped = Options {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            render(&full, &stamped).unwrap(),
            "2026-12-04T10:00:00.123456789Z hello world\n"
        );
        let later = Options {
            since: Some("2026-12-04T11:00:00Z".parse().unwrap()),
            ..Default::default()
        };
        assert!(render(&full, &later).is_none());
    }
}
