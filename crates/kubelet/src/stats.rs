//! The kubelet's resource statistics, as its Summary API and resource metrics serve them:
//! `/stats/summary` (node, pods and containers: CPU, memory, filesystems; the shape of
//! `stats/v1alpha1.Summary`) and `/metrics/resource` (the Prometheus text metrics-server
//! reads). Containers come from CRI `ListContainerStats` (cumulative CPU, working set, writable
//! layer); pods from their own cgroups under the QoS tree (cpuacct usage, memory usage less
//! inactive file pages, as cAdvisor computes the working set on cgroup v1); the node from
//! /proc and the agent's filesystem. `usageNanoCores` is the rate since the previous sample
//! of the same object, which the kubelet keeps, as upstream's CRI stats provider does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use k8s_cri::v1 as cri;
use serde_json::{Value, json};

use crate::cri::Runtime;
use crate::pods::labels;

/// What the summary is made from beyond the runtime.
pub struct Source {
    pub runtime: Runtime,
    pub node_name: String,
    /// The agent's directory: its filesystem is the node's (and the images').
    pub root_dir: PathBuf,
    pub cgroup_root: String,
    /// Previous cumulative CPU samples, by object: (time ns, core-ns).
    previous: Mutex<HashMap<String, (i64, u64)>>,
}

/// One sample of an object's CPU and memory.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    time: i64,
    cpu_core_nanos: Option<u64>,
    working_set: Option<u64>,
    memory_usage: Option<u64>,
}

impl Source {
    pub fn new(runtime: Runtime, node_name: String, root_dir: PathBuf, cgroup_root: String) -> Source {
        Source {
            runtime,
            node_name,
            root_dir,
            cgroup_root,
            previous: Mutex::default(),
        }
    }

    /// The rate in nano-cores since the previous sample of `key`.
    fn nano_cores(&self, key: &str, time: i64, core_nanos: u64) -> Option<u64> {
        let before = self
            .previous
            .lock()
            .expect("stats lock")
            .insert(key.to_string(), (time, core_nanos));
        rate(before?, (time, core_nanos))
    }

    fn cpu(&self, key: &str, usage: &Usage) -> Value {
        let Some(total) = usage.cpu_core_nanos else {
            return Value::Null;
        };
        let mut cpu = json!({"time": time(usage.time), "usageCoreNanoSeconds": total});
        if let Some(rate) = self.nano_cores(key, usage.time, total) {
            cpu["usageNanoCores"] = json!(rate);
        }
        cpu
    }

    /// `/stats/summary`.
    pub async fn summary(&self) -> anyhow::Result<Value> {
        let node = node_usage();
        let fs = filesystem(&self.root_dir);
        let running = self.runtime.running_containers(HashMap::new()).await?;
        let stats = self
            .runtime
            .runtime
            .clone()
            .list_container_stats(cri::ListContainerStatsRequest { filter: None })
            .await?
            .into_inner()
            .stats;
        let by_id: HashMap<&str, &cri::ContainerStats> = stats
            .iter()
            .filter_map(|s| Some((s.attributes.as_ref()?.id.as_str(), s)))
            .collect();
        let sandboxes = self.runtime.ready_sandboxes(HashMap::new()).await?;
        let mut pods = Vec::new();
        for sandbox in &sandboxes {
            let label = |k: &str| sandbox.labels.get(k).cloned().unwrap_or_default();
            let (name, namespace, uid) = (
                label(labels::POD_NAME),
                label(labels::POD_NAMESPACE),
                label(labels::POD_UID),
            );
            let mut containers = Vec::new();
            for c in running.iter().filter(|c| c.pod_sandbox_id == sandbox.id) {
                let Some(s) = by_id.get(c.id.as_str()) else { continue };
                let name = c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
                let usage = Usage {
                    time: s.cpu.as_ref().map_or(0, |c| c.timestamp),
                    cpu_core_nanos: s
                        .cpu
                        .as_ref()
                        .and_then(|c| c.usage_core_nano_seconds.as_ref())
                        .map(|v| v.value),
                    working_set: s
                        .memory
                        .as_ref()
                        .and_then(|m| m.working_set_bytes.as_ref())
                        .map(|v| v.value),
                    memory_usage: s.memory.as_ref().and_then(|m| m.usage_bytes.as_ref()).map(|v| v.value),
                };
                let mut container = json!({
                    "name": name,
                    "startTime": time(c.created_at),
                    "cpu": self.cpu(&format!("container/{}", c.id), &usage),
                    "memory": memory(&usage),
                });
                if let Some(used) = s.writable_layer.as_ref().and_then(|w| w.used_bytes.as_ref()) {
                    let mut rootfs = fs.clone();
                    rootfs["usedBytes"] = json!(used.value);
                    container["rootfs"] = rootfs;
                }
                containers.push(strip_nulls(container));
            }
            let pod_cgroup = ["Guaranteed", "Burstable", "BestEffort"]
                .iter()
                .map(|qos| crate::cgroups::pod_cgroup(&self.cgroup_root, qos, &uid))
                .find_map(|path| cgroup_usage(&path));
            let mut pod = json!({
                "podRef": {"name": name, "namespace": namespace, "uid": uid},
                "startTime": time(sandbox.created_at),
                "containers": containers,
            });
            if let Some(usage) = pod_cgroup {
                pod["cpu"] = self.cpu(&format!("pod/{uid}"), &usage);
                pod["memory"] = memory(&usage);
            }
            pods.push(strip_nulls(pod));
        }
        let mut node_json = json!({
            "nodeName": self.node_name,
            "cpu": self.cpu("node", &node),
            "memory": memory(&node),
            "fs": fs,
            "runtime": {"imageFs": fs, "containerFs": fs},
        });
        if let Some(boot) = boot_time() {
            node_json["startTime"] = json!(time(boot));
        }
        Ok(json!({"node": strip_nulls(node_json), "pods": pods}))
    }
}

/// Nano-cores between two samples (time ns, cumulative core-ns); none when time did not
/// advance or the counter went back (a restarted container).
fn rate((t0, c0): (i64, u64), (t1, c1): (i64, u64)) -> Option<u64> {
    let dt = t1.checked_sub(t0).filter(|d| *d > 0)?;
    let dc = c1.checked_sub(c0)?;
    u64::try_from(u128::from(dc) * 1_000_000_000 / dt as u128).ok()
}

/// `metav1.Time`: RFC 3339 in seconds.
fn time(nanos: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(nanos))
        .map(|t| {
            t.round(jiff::Unit::Second)
                .unwrap_or(t)
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        })
        .unwrap_or_default()
}

fn memory(usage: &Usage) -> Value {
    if usage.working_set.is_none() && usage.memory_usage.is_none() {
        return Value::Null;
    }
    strip_nulls(json!({
        "time": time(usage.time),
        "workingSetBytes": usage.working_set,
        "usageBytes": usage.memory_usage,
    }))
}

fn strip_nulls(mut value: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        object.retain(|_, v| !v.is_null());
    }
    value
}

fn now_nanos() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// The node: CPU from /proc/stat (all but idle and iowait), memory from /proc/meminfo
/// (working set = used less inactive file pages, as the root cgroup's would be).
fn node_usage() -> Usage {
    // USER_HZ is 100 on Linux: a jiffy in /proc/stat is 10 ms.
    let cpu = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let busy: u64 = fields
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
            .map(|(_, v)| v)
            .sum();
        Some(busy * 10_000_000)
    });
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|v| v * 1024)
    };
    let used = kib("MemTotal").zip(kib("MemFree")).map(|(t, f)| t.saturating_sub(f));
    Usage {
        time: now_nanos(),
        cpu_core_nanos: cpu,
        working_set: used.zip(kib("Inactive(file)")).map(|(u, i)| u.saturating_sub(i)),
        memory_usage: used,
    }
}

/// A cgroup's usage on cgroup v1 (cpuacct.usage; memory.usage_in_bytes less
/// total_inactive_file), when the cgroup exists.
fn cgroup_usage(path: &str) -> Option<Usage> {
    let relative = path.trim_start_matches('/');
    let hierarchies = crate::cgroups::hierarchies();
    let find = |controller: &str, file: &str| {
        hierarchies
            .iter()
            .filter(|h| {
                h.file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| f.split(',').any(|c| c == controller))
            })
            .map(|h| h.join(relative).join(file))
            .find(|p| p.exists())
    };
    let read_u64 = |p: PathBuf| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok();
    let usage = find("memory", "memory.usage_in_bytes").and_then(read_u64);
    let cpu = find("cpuacct", "cpuacct.usage").and_then(read_u64);
    if usage.is_none() && cpu.is_none() {
        return None;
    }
    let inactive = find("memory", "memory.stat")
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|stat| {
            stat.lines()
                .find_map(|l| l.strip_prefix("total_inactive_file "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    Some(Usage {
        time: now_nanos(),
        cpu_core_nanos: cpu,
        working_set: usage.map(|u| u.saturating_sub(inactive)),
        memory_usage: usage,
    })
}

fn filesystem(dir: &std::path::Path) -> Value {
    match styrman_sys::filesystem_space(dir) {
        Ok(space) => json!({
            "time": time(now_nanos()),
            "availableBytes": space.available,
            "capacityBytes": space.total,
            "usedBytes": space.total.saturating_sub(space.available),
        }),
        Err(_) => Value::Null,
    }
}

fn boot_time() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let seconds: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(seconds * 1_000_000_000)
}

/// `/metrics/resource` from a summary: the families metrics-server reads, with the samples'
/// times in milliseconds, as upstream's resource metrics collector writes them.
pub fn resource_metrics(summary: &Value) -> String {
    let millis = |t: &Value| {
        t.as_str()
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_millisecond())
            .unwrap_or(0)
    };
    let seconds = |v: &Value| v.as_u64().map(|n| n as f64 / 1e9);
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<String>| {
        out.push_str(&format!("# HELP {name} [STABLE] {help}\n# TYPE {name} {kind}\n"));
        for sample in samples {
            out.push_str(&sample);
            out.push('\n');
        }
    };
    let node = &summary["node"];
    let pods = summary["pods"].as_array().cloned().unwrap_or_default();
    let containers: Vec<(String, String, Value)> = pods
        .iter()
        .flat_map(|p| {
            let (pod, ns) = (
                p["podRef"]["name"].as_str().unwrap_or("").to_string(),
                p["podRef"]["namespace"].as_str().unwrap_or("").to_string(),
            );
            p["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |c| (pod.clone(), ns.clone(), c))
        })
        .collect();
    let container_labels = |pod: &str, ns: &str, c: &Value| {
        format!(
            "container=\"{}\",namespace=\"{ns}\",pod=\"{pod}\"",
            c["name"].as_str().unwrap_or("")
        )
    };
    family(
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
        containers
            .iter()
            .filter_map(|(pod, ns, c)| {
                let value = seconds(&c["cpu"]["usageCoreNanoSeconds"])?;
                Some(format!(
                    "container_cpu_usage_seconds_total{{{}}} {value} {}",
                    container_labels(pod, ns, c),
                    millis(&c["cpu"]["time"])
                ))
            })
            .collect(),
    );
    family(
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
        containers
            .iter()
            .filter_map(|(pod, ns, c)| {
                let value = c["memory"]["workingSetBytes"].as_u64()?;
                Some(format!(
                    "container_memory_working_set_bytes{{{}}} {value} {}",
                    container_labels(pod, ns, c),
                    millis(&c["memory"]["time"])
                ))
            })
            .collect(),
    );
    family(
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds",
        containers
            .iter()
            .filter_map(|(pod, ns, c)| {
                let start = millis(&c["startTime"]);
                (start > 0).then(|| {
                    format!(
                        "container_start_time_seconds{{{}}} {}",
                        container_labels(pod, ns, c),
                        start / 1000
                    )
                })
            })
            .collect(),
    );
    family(
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
        seconds(&node["cpu"]["usageCoreNanoSeconds"])
            .map(|v| format!("node_cpu_usage_seconds_total {v} {}", millis(&node["cpu"]["time"])))
            .into_iter()
            .collect(),
    );
    family(
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
        node["memory"]["workingSetBytes"]
            .as_u64()
            .map(|v| format!("node_memory_working_set_bytes {v} {}", millis(&node["memory"]["time"])))
            .into_iter()
            .collect(),
    );
    let pod_labels = |p: &Value| {
        format!(
            "namespace=\"{}\",pod=\"{}\"",
            p["podRef"]["namespace"].as_str().unwrap_or(""),
            p["podRef"]["name"].as_str().unwrap_or("")
        )
    };
    family(
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
        pods.iter()
            .filter_map(|p| {
                let value = seconds(&p["cpu"]["usageCoreNanoSeconds"])?;
                Some(format!(
                    "pod_cpu_usage_seconds_total{{{}}} {value} {}",
                    pod_labels(p),
                    millis(&p["cpu"]["time"])
                ))
            })
            .collect(),
    );
    family(
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
        pods.iter()
            .filter_map(|p| {
                let value = p["memory"]["workingSetBytes"].as_u64()?;
                Some(format!(
                    "pod_memory_working_set_bytes{{{}}} {value} {}",
                    pod_labels(p),
                    millis(&p["memory"]["time"])
                ))
            })
            .collect(),
    );
    family(
        "resource_scrape_error",
        "gauge",
        "1 if there was an error while getting container metrics, 0 otherwise",
        vec!["resource_scrape_error 0".to_string()],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_reads_from_proc() {
        let node = node_usage();
        assert!(node.cpu_core_nanos.is_some_and(|c| c > 0));
        assert!(node.working_set.is_some_and(|w| w > 0));
    }

    #[test]
    fn resource_metrics_carry_what_metrics_server_reads() {
        let summary = json!({
            "node": {"cpu": {"time": "2026-12-04T18:00:00Z", "usageCoreNanoSeconds": 2_500_000_000u64},
                     "memory": {"time": "2026-12-04T18:00:00Z", "workingSetBytes": 1024}},
            "pods": [{"podRef": {"name": "web", "namespace": "default", "uid": "u"},
                      "cpu": {"time": "2026-12-04T18:00:00Z", "usageCoreNanoSeconds": 20_000_000u64},
                      "memory": {"time": "2026-12-04T18:00:00Z", "workingSetBytes": 4096},
                      "containers": [{"name": "nginx", "startTime": "2026-12-04T17:59:00Z",
                                      "cpu": {"time": "2026-12-04T18:00:00Z", "usageCoreNanoSeconds": 20_000_000u64},
                                      "memory": {"time": "2026-12-04T18:00:00Z", "workingSetBytes": 2048}}]}]
        });
        let text = resource_metrics(&summary);
        let ms = "2026-12-04T18:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_millisecond();
        for line in [
            format!(
                "container_cpu_usage_seconds_total{{container=\"nginx\",namespace=\"default\",pod=\"web\"}} 0.02 {ms}"
            ),
            format!(
                "container_memory_working_set_bytes{{container=\"nginx\",namespace=\"default\",pod=\"web\"}} 2048 {ms}"
            ),
            format!(
                "container_start_time_seconds{{container=\"nginx\",namespace=\"default\",pod=\"web\"}} {}",
                ms / 1000 - 60
            ),
            format!("node_cpu_usage_seconds_total 2.5 {ms}"),
            format!("node_memory_working_set_bytes 1024 {ms}"),
            format!("pod_memory_working_set_bytes{{namespace=\"default\",pod=\"web\"}} 4096 {ms}"),
            "resource_scrape_error 0".to_string(),
            "# TYPE container_cpu_usage_seconds_total counter".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in:\n{text}");
        }
    }

    #[test]
    fn nano_cores_are_the_rate_since_the_previous_sample() {
        // Half a core over one second.
        assert_eq!(rate((0, 0), (1_000_000_000, 500_000_000)), Some(500_000_000));
        assert_eq!(rate((5, 10), (5, 20)), None, "no time passed");
        assert_eq!(rate((0, 500), (1_000_000_000, 100)), None, "the counter went back");
    }
}
