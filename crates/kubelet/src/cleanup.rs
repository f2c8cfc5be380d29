//! `styrman cleanup --data-dir D`: what k3s-killall.sh does for a k3s node, for a node whose
//! state is under `D`. Every process naming `D` (the server or agent, their containerd, the
//! pods' shims) is killed with everything it started (the containers: a shim is their
//! reaper); then every mount below `D` goes (pod volumes, container root filesystems, pod
//! network namespaces, all under `D/agent`), then the pods' cgroups (the `kubepods` tree
//! under the agent's `--cgroup-root`), then the pod network's host side (the
//! `styrman0` bridge and the CNI plugins' NAT chains of this network), then the runtime's
//! state (containerd's state directory, runc's, the IPAM leases). Images, container
//! metadata, the control plane's data and credentials stay: a restarted node starts again
//! from its API objects, as after a reboot.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::agent::Layout;

/// What a clean-up removed.
#[derive(Debug, Default)]
pub struct Report {
    pub processes: usize,
    pub mounts: usize,
    pub bridge: bool,
    pub nat_rules: usize,
    pub cgroups: usize,
    pub state_dirs: Vec<PathBuf>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "processes killed: {}", self.processes)?;
        writeln!(f, "mounts removed: {}", self.mounts)?;
        let bridge = if self.bridge { "removed" } else { "absent" };
        writeln!(f, "bridge {}: {bridge}", crate::cni::BRIDGE)?;
        writeln!(f, "NAT rules of the pod network removed: {}", self.nat_rules)?;
        writeln!(f, "pod cgroups removed: {}", self.cgroups)?;
        for dir in &self.state_dirs {
            writeln!(f, "removed {}", dir.display())?;
        }
        Ok(())
    }
}

/// Stops and removes everything the node under `data_dir` runs and mounted.
pub fn cleanup(data_dir: &Path) -> Result<Report> {
    let data_dir = std::path::absolute(data_dir).context("cannot resolve the data directory")?;
    let mut report = Report {
        processes: kill_processes_naming(&data_dir),
        ..Report::default()
    };
    report.mounts = unmount_below(&data_dir);
    report.bridge = remove_bridge();
    report.nat_rules = remove_nat_rules()?;
    let layout = Layout {
        root: data_dir.join("agent"),
    };
    let cgroup_root = std::fs::read_to_string(layout.cgroup_root_file()).unwrap_or_else(|_| "/".into());
    report.cgroups = crate::cgroups::remove_tree(&crate::cgroups::kubepods(cgroup_root.trim()));
    let containerd = layout.containerd();
    for dir in [containerd.dir.join("state"), containerd.runc_root(), layout.cni_ipam()] {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
            report.state_dirs.push(dir);
        }
    }
    Ok(report)
}

struct Process {
    parent: u32,
    cmdline: Vec<u8>,
}

fn processes() -> HashMap<u32, Process> {
    let mut all = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so read after
        // the last `)`.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(parent) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        all.insert(pid, Process { parent, cmdline });
    }
    all
}

/// Whether a command line names `dir` or a path below it (not merely a longer name).
fn names_dir(cmdline: &[u8], dir: &[u8]) -> bool {
    cmdline.windows(dir.len()).enumerate().any(|(at, window)| {
        window == dir && matches!(cmdline.get(at + dir.len()), None | Some(b'/' | b'\0' | b' ' | b'='))
    })
}

/// Kills the processes naming `dir` and all their descendants, sparing this process and its
/// ancestors (a shell running `styrman cleanup --data-dir D` names D too).
pub fn kill_processes_naming(dir: &Path) -> usize {
    let all = processes();
    let mut spared = HashSet::new();
    let mut pid = std::process::id();
    while pid > 1 && spared.insert(pid) {
        pid = all.get(&pid).map_or(0, |p| p.parent);
    }
    let needle = dir.as_os_str().as_encoded_bytes();
    let mut doomed: HashSet<u32> = all
        .iter()
        .filter(|(pid, p)| !spared.contains(pid) && names_dir(&p.cmdline, needle))
        .map(|(pid, _)| *pid)
        .collect();
    // Descendants, found before anything dies (orphans are re-parented and lose the trail).
    loop {
        let before = doomed.len();
        for (pid, p) in &all {
            if doomed.contains(&p.parent) && !spared.contains(pid) {
                doomed.insert(*pid);
            }
        }
        if doomed.len() == before {
            break;
        }
    }
    for pid in &doomed {
        let _ = styrman_sys::kill(*pid);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && doomed.iter().any(|pid| alive(*pid)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    doomed.len()
}

/// Running or sleeping, not a zombie waiting for its parent.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next()))
        .is_some_and(|state| state != Some('Z') && state.is_some())
}

/// Unmounts (lazily, deepest first) every mount point below `dir`.
pub fn unmount_below(dir: &Path) -> usize {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        // mountinfo escapes spaces and other specials as octal.
        .map(|p| p.replace("\\040", " "))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    let mut unmounted = 0;
    for point in points {
        if Command::new("umount")
            .args(["-l", &point])
            .status()
            .is_ok_and(|s| s.success())
        {
            unmounted += 1;
        }
    }
    unmounted
}

fn remove_bridge() -> bool {
    let exists = Command::new("ip")
        .args(["link", "show", crate::cni::BRIDGE])
        .output()
        .is_ok_and(|o| o.status.success());
    exists
        && Command::new("ip")
            .args(["link", "del", crate::cni::BRIDGE])
            .status()
            .is_ok_and(|s| s.success())
}

/// Removes the NAT rules and chains the CNI plugins (bridge's masquerade, portmap) made for
/// this pod network; the number of rules removed.
fn remove_nat_rules() -> Result<usize> {
    let Ok(saved) = Command::new("iptables-save").args(["-t", "nat"]).output() else {
        return Ok(0); // no iptables here: the plugins could not have made rules either
    };
    let text = String::from_utf8_lossy(&saved.stdout);
    let (kept, removed) = without_network_rules(&text, crate::cni::NETWORK);
    if removed == 0 {
        return Ok(0);
    }
    let mut restore = Command::new("iptables-restore")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("cannot run iptables-restore")?;
    std::io::Write::write_all(&mut restore.stdin.take().expect("piped"), kept.as_bytes())?;
    let status = restore.wait()?;
    anyhow::ensure!(status.success(), "iptables-restore failed ({status})");
    Ok(removed)
}

/// `iptables-save` text without the rules and chains of the CNI network `network`: the
/// plugins mark each rule with the comment `name: "<network>" id: "<container>"` and name
/// per-container chains `CNI-…`; the shared `CNI-HOSTPORT-*` chains stay (empty). Also the
/// number of rules taken out.
fn without_network_rules(saved: &str, network: &str) -> (String, usize) {
    let mark = format!("name: \\\"{network}\\\"");
    let owned_chain = |name: &str| name.starts_with("CNI-") && !name.starts_with("CNI-HOSTPORT-");
    let mut owned: HashSet<&str> = HashSet::new();
    for line in saved.lines().filter(|l| l.starts_with("-A ") && l.contains(&mark)) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(chain) = words.get(1).filter(|c| owned_chain(c)) {
            owned.insert(chain);
        }
        if let Some(target) = words
            .windows(2)
            .find(|w| w[0] == "-j")
            .map(|w| w[1])
            .filter(|t| owned_chain(t))
        {
            owned.insert(target);
        }
    }
    let mut removed = 0;
    let mut kept = String::new();
    for line in saved.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let drop = if line.starts_with("-A ") {
            line.contains(&mark) || words.iter().any(|w| owned.contains(w))
        } else {
            line.strip_prefix(':')
                .and_then(|l| l.split_whitespace().next())
                .is_some_and(|chain| owned.contains(chain))
        };
        if drop {
            removed += usize::from(line.starts_with("-A "));
        } else {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    (kept, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_names_the_directory_not_a_longer_name() {
        assert!(names_dir(b"styrman\0server\0--data-dir\0/tmp/s\0", b"/tmp/s"));
        assert!(names_dir(b"shim\0-address\0/tmp/s/agent/containerd.sock\0", b"/tmp/s"));
        assert!(names_dir(b"styrman\0--data-dir=/tmp/s", b"/tmp/s"));
        assert!(!names_dir(b"styrman\0--data-dir\0/tmp/s2\0", b"/tmp/s"));
    }

    #[test]
    fn only_this_networks_nat_rules_and_chains_go() {
        let saved = r#"# Generated by iptables-save
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-1a2b - [0:0]
:CNI-DN-3c4d - [0:0]
:CNI-9999 - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -s 10.244.0.5/32 -m comment --comment "name: \"styrman-pod-network\" id: \"abc\"" -j CNI-1a2b
-A POSTROUTING -s 10.9.0.5/32 -m comment --comment "name: \"other\" id: \"def\"" -j CNI-9999
-A CNI-1a2b -d 10.244.0.0/24 -m comment --comment "name: \"styrman-pod-network\" id: \"abc\"" -j ACCEPT
-A CNI-1a2b ! -d 224.0.0.0/4 -m comment --comment "name: \"styrman-pod-network\" id: \"abc\"" -j MASQUERADE
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"styrman-pod-network\" id: \"abc\"" -j CNI-DN-3c4d
-A CNI-DN-3c4d -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.244.0.5:80
-A CNI-9999 -j MASQUERADE
COMMIT
"#;
        let (kept, removed) = without_network_rules(saved, "styrman-pod-network");
        assert_eq!(removed, 5, "{kept}");
        assert!(!kept.contains("CNI-1a2b") && !kept.contains("CNI-DN-3c4d"), "{kept}");
        for stays in [
            ":CNI-HOSTPORT-DNAT",
            "-j CNI-HOSTPORT-DNAT",
            ":CNI-9999",
            "-A CNI-9999",
            "COMMIT",
        ] {
            assert!(kept.contains(stays), "{stays} went:\n{kept}");
        }
    }
}
