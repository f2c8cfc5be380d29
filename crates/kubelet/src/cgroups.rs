//! Pod cgroups under the QoS classes, as the kubelet's cgroup manager lays them out with the
//! cgroupfs driver: `<root>/kubepods/pod<uid>` (Guaranteed), `<root>/kubepods/burstable/
//! pod<uid>` and `<root>/kubepods/besteffort/pod<uid>`, in every cgroup hierarchy. The runtime
//! puts the pod's containers beneath (the sandbox's cgroup parent); the kubelet sets the
//! pod-level limits in the cpu and memory hierarchies as upstream's pod container manager does
//! (shares from the summed CPU requests, 2 for BestEffort; a CFS quota and a memory limit when
//! every container has one), and removes the pod cgroup once the pod is gone. `--cgroup-root`
//! moves the tree (the tests give each node its own).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, PodSpec};

/// The cgroup v1 and v2 hierarchies mounted on this machine: their mount points, read once
/// (stats and every pod's set-up and removal ask; the mounts do not move while a node runs).
pub fn hierarchies() -> &'static [PathBuf] {
    static HIERARCHIES: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    HIERARCHIES.get_or_init(read_hierarchies)
}

fn read_hierarchies() -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fstype = after.split_whitespace().next()?;
            matches!(fstype, "cgroup" | "cgroup2")
                .then(|| before.split(' ').nth(4).map(PathBuf::from))
                .flatten()
        })
        .collect();
    mounts.sort();
    mounts.dedup();
    mounts
}

/// The hierarchy of one controller (`cpu`, `memory`): the v1 mount that lists it.
fn controller(name: &str) -> Option<PathBuf> {
    hierarchies()
        .iter()
        .find(|m| {
            m.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.split(',').any(|c| c == name))
        })
        .cloned()
}

/// The cgroup path (relative to a hierarchy's root) of the pod `uid` of QoS class `qos`.
pub fn pod_cgroup(root: &str, qos: &str, uid: &str) -> String {
    let kubepods = Path::new("/").join(root.trim_start_matches('/')).join("kubepods");
    let parent = match qos {
        "Guaranteed" => kubepods,
        "Burstable" => kubepods.join("burstable"),
        _ => kubepods.join("besteffort"),
    };
    parent.join(format!("pod{uid}")).to_string_lossy().into_owned()
}

/// The pod-level settings of upstream's `ResourceConfigForPod`.
#[derive(Debug, PartialEq)]
pub struct PodResources {
    pub cpu_shares: u64,
    /// CFS quota in microseconds per 100 ms period, when every container has a CPU limit.
    pub cpu_quota: Option<i64>,
    /// Bytes, when every container has a memory limit.
    pub memory_limit: Option<u64>,
}

pub fn pod_resources(spec: &PodSpec, qos: &str) -> PodResources {
    let quantity = |c: &Container, which: &str, key: &str| {
        let map = c.resources.as_ref().and_then(|r| match which {
            "requests" => r.requests.as_ref(),
            _ => r.limits.as_ref(),
        });
        map.and_then(|m| m.get(key)).map(|q| q.0.clone())
    };
    let milli = |c: &Container, which: &str| {
        quantity(c, which, "cpu")
            .and_then(|q| styrman_runtime::quantity::milli_value(&q))
            .and_then(|m| u64::try_from(m).ok())
    };
    let bytes = |c: &Container| {
        quantity(c, "limits", "memory")
            .and_then(|q| styrman_runtime::quantity::value(&q))
            .and_then(|b| u64::try_from(b).ok())
    };
    // A pod needs the larger of its app containers together and any one init container.
    let total = |each: &dyn Fn(&Container) -> Option<u64>| -> Option<u64> {
        let apps: Option<u64> = spec.containers.iter().map(each).sum();
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .map(each)
            .collect::<Option<Vec<u64>>>();
        Some(apps?.max(init?.into_iter().max().unwrap_or(0)))
    };
    let requested: u64 = spec
        .containers
        .iter()
        .map(|c| milli(c, "requests").or_else(|| milli(c, "limits")).unwrap_or(0))
        .sum();
    let cpu_shares = if qos == "BestEffort" {
        2
    } else {
        (requested * 1024 / 1000).max(2)
    };
    PodResources {
        cpu_shares,
        cpu_quota: total(&|c| milli(c, "limits")).map(|m| (m as i64 * 100).max(1000)),
        memory_limit: total(&bytes),
    }
}

/// Creates the pod's cgroup in the cpu and memory hierarchies with its limits (the runtime
/// creates the rest when it starts the sandbox).
pub fn set_up(path: &str, resources: &PodResources) -> std::io::Result<()> {
    let relative = path.trim_start_matches('/');
    if let Some(cpu) = controller("cpu") {
        let dir = cpu.join(relative);
        std::fs::create_dir_all(&dir)?;
        let besteffort = dir.parent().filter(|p| p.ends_with("besteffort"));
        if let Some(besteffort) = besteffort {
            std::fs::write(besteffort.join("cpu.shares"), "2")?;
        }
        std::fs::write(dir.join("cpu.shares"), resources.cpu_shares.to_string())?;
        if let Some(quota) = resources.cpu_quota {
            std::fs::write(dir.join("cpu.cfs_period_us"), "100000")?;
            std::fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
        }
    }
    if let Some(memory) = controller("memory") {
        let dir = memory.join(relative);
        std::fs::create_dir_all(&dir)?;
        if let Some(limit) = resources.memory_limit {
            std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string())?;
        }
    }
    Ok(())
}

/// Removes the cgroup at `path` and everything below it from every hierarchy, deepest
/// first; a cgroup that still holds processes stays (rmdir refuses it). How many went.
pub fn remove_tree(path: &str) -> usize {
    let relative = path.trim_start_matches('/');
    let mut removed = 0;
    for hierarchy in hierarchies().iter() {
        let top = hierarchy.join(relative);
        if relative.is_empty() || !top.is_dir() {
            continue;
        }
        let mut dirs = Vec::new();
        let mut todo = vec![top];
        while let Some(dir) = todo.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(entry.path());
                }
            }
            dirs.push(dir);
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            if std::fs::remove_dir(&dir).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// The `kubepods` tree under `root`.
pub fn kubepods(root: &str) -> String {
    Path::new("/")
        .join(root.trim_start_matches('/'))
        .join("kubepods")
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect(),
            )
        };
        Container {
            resources: Some(ResourceRequirements {
                requests: map(requests),
                limits: map(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pods_sit_under_their_qos_class() {
        assert_eq!(pod_cgroup("/", "Guaranteed", "u1"), "/kubepods/podu1");
        assert_eq!(pod_cgroup("/", "Burstable", "u1"), "/kubepods/burstable/podu1");
        assert_eq!(
            pod_cgroup("/test-3", "BestEffort", "u1"),
            "/test-3/kubepods/besteffort/podu1"
        );
    }

    #[test]
    fn pod_limits_sum_the_containers_and_need_every_container_limited() {
        let guaranteed = PodSpec {
            containers: vec![
                container(&[], &[("cpu", "500m"), ("memory", "64Mi")]),
                container(&[], &[("cpu", "250m"), ("memory", "32Mi")]),
            ],
            ..Default::default()
        };
        assert_eq!(
            pod_resources(&guaranteed, "Guaranteed"),
            PodResources {
                cpu_shares: 768,
                cpu_quota: Some(75_000),
                memory_limit: Some(96 * 1024 * 1024)
            }
        );
        let burstable = PodSpec {
            containers: vec![
                container(&[("cpu", "100m")], &[("memory", "64Mi")]),
                container(&[], &[]),
            ],
            ..Default::default()
        };
        assert_eq!(
            pod_resources(&burstable, "Burstable"),
            PodResources {
                cpu_shares: 102,
                cpu_quota: None,
                memory_limit: None
            }
        );
        let besteffort = PodSpec {
            containers: vec![container(&[], &[])],
            ..Default::default()
        };
        assert_eq!(pod_resources(&besteffort, "BestEffort").cpu_shares, 2);
    }
}
