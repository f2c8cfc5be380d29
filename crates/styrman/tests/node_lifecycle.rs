//! Node IPAM and node lifecycle against a running `styrman server` with hollow nodes, through
//! the real kubectl: every node gets its own podCIDR (and one waits, saying so, when the range
//! is full), a node whose kubelet dies turns Unknown and is tainted unreachable, its pods are
//! evicted as their tolerations say, and the node recovers when its kubelet comes back; when
//! every node goes silent at once, nothing is evicted.

use std::time::Duration;

use serde_json::Value;
use styrman_testkit::{Cluster, eventually, json};

/// Short enough for a test, long enough that hollow nodes (which renew their Lease every 10 s)
/// never look silent while they run, even on a busy machine.
const GRACE: &str = "--node-monitor-grace-period=20s";
/// Four /24s: exactly the four nodes the test starts with.
const CLUSTER_CIDR: &str = "--cluster-cidr=10.100.0.0/22";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn node(c: &Cluster, name: &str) -> Value {
    json(&c.kubectl_ok(&["get", "node", name, "-o", "json"]))
}

fn pod(c: &Cluster, name: &str) -> Option<Value> {
    let out = c.kubectl(&["get", "pod", name, "-o", "json"]);
    out.status
        .success()
        .then(|| json(&String::from_utf8_lossy(&out.stdout)))
}

fn condition(object: &Value, type_: &str) -> Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .cloned()
        .unwrap_or(Value::Null)
}

fn ready(c: &Cluster, name: &str) -> String {
    condition(&node(c, name), "Ready")["status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The node's taints as `key:Effect`.
fn taints(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| format!("{}:{}", t["key"].as_str().unwrap(), t["effect"].as_str().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

fn pod_cidr(c: &Cluster, name: &str) -> String {
    node(c, name)["spec"]["podCIDR"].as_str().unwrap_or("").to_string()
}

fn deleting(c: &Cluster, name: &str) -> bool {
    pod(c, name).is_none_or(|p| p["metadata"]["deletionTimestamp"].is_string())
}

/// The messages of events about `object` with this reason (any namespace).
fn events(c: &Cluster, object: &str, reason: &str) -> Vec<String> {
    let list = json(&c.kubectl_ok(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        &format!("involvedObject.name={object},reason={reason}"),
        "-o",
        "json",
    ]));
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Seconds since the epoch of an RFC 3339 UTC time as the API writes it (`...T..:..:..Z`).
fn epoch_seconds(text: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| text[r].parse::<i64>().unwrap_or_else(|_| panic!("not a time: {text}"));
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// Whether `cidr` is a /24 inside 10.100.0.0/22.
fn in_cluster_cidr(cidr: &str) -> bool {
    let Some(third) = cidr.strip_prefix("10.100.").and_then(|r| r.strip_suffix(".0/24")) else {
        return false;
    };
    third.parse::<u8>().is_ok_and(|t| t < 4)
}

fn pinned_pod(name: &str, node: &str, tolerations: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  containers: [{{name: app, image: nginx}}]
  tolerations: [{tolerations}]
"
    )
}

const REPLICA_SET: &str = "apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
      tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 0}]
";

/// The ReplicaSet's pods as (node, being deleted).
fn replicas(c: &Cluster) -> Vec<(String, bool)> {
    let list = json(&c.kubectl_ok(&["get", "pods", "-l", "app=web", "-o", "json"]));
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                p["metadata"]["deletionTimestamp"].is_string(),
            )
        })
        .collect()
}

fn running(c: &Cluster, name: &str) -> bool {
    pod(c, name).is_some_and(|p| p["status"]["phase"] == "Running")
}

#[test]
fn nodes_get_pod_cidrs_and_dead_nodes_are_tainted_and_drained() {
    let c = Cluster::start_with(env!("CARGO_BIN_EXE_styrman").as_ref(), &[GRACE, CLUSTER_CIDR])
        .expect("start styrman server");
    let many = c.hollow_nodes(&["--count=3", "--prefix=many-"]);
    let lone = c.hollow_nodes(&["--count=1", "--prefix=lone-"]);
    let names = ["many-0", "many-1", "many-2", "lone-0"];
    eventually("four nodes are Ready", Duration::from_secs(30), || {
        c.kubectl_ok(&["get", "nodes", "--no-headers"])
            .matches(" Ready ")
            .count()
            == 4
    });

    // IPAM: each node a distinct /24 of the cluster CIDR, in podCIDR and podCIDRs alike.
    eventually("every node has a podCIDR", Duration::from_secs(30), || {
        names.iter().all(|n| !pod_cidr(&c, n).is_empty())
    });
    let mut cidrs: Vec<String> = Vec::new();
    for name in names {
        let n = node(&c, name);
        let cidr = n["spec"]["podCIDR"].as_str().unwrap().to_string();
        assert!(in_cluster_cidr(&cidr), "{name}: {cidr}");
        assert_eq!(n["spec"]["podCIDRs"], serde_json::json!([cidr]), "{name}");
        cidrs.push(cidr);
    }
    let mut distinct = cidrs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "{cidrs:?}");

    // The range is full: a fifth node waits and says why; a deleted node's subnet goes to it.
    let extra = c.hollow_nodes(&["--count=1", "--prefix=extra-"]);
    eventually(
        "the fifth node is told no CIDR is left",
        Duration::from_secs(30),
        || !events(&c, "extra-0", "CIDRNotAvailable").is_empty(),
    );
    assert_eq!(
        events(&c, "extra-0", "CIDRNotAvailable")[0],
        "Node extra-0 status is now: CIDRNotAvailable"
    );
    assert_eq!(pod_cidr(&c, "extra-0"), "");
    let freed = pod_cidr(&c, "many-2");
    c.kubectl_ok(&["delete", "node", "many-2"]);
    eventually("the fifth node gets the freed subnet", Duration::from_secs(30), || {
        pod_cidr(&c, "extra-0") == freed
    });

    // Pods on the lone node: one tolerating unreachability for no time at all (a pod saying
    // nothing gets five minutes from DefaultTolerationSeconds admission), one for 10 s, one
    // forever; and one elsewhere that nothing should touch.
    let lone_cidr = pod_cidr(&c, "lone-0");
    c.apply(&pinned_pod(
        "plain",
        "lone-0",
        &format!("{{key: {UNREACHABLE}, operator: Exists, effect: NoExecute, tolerationSeconds: 0}}"),
    ));
    c.apply(&pinned_pod(
        "brief",
        "lone-0",
        &format!("{{key: {UNREACHABLE}, operator: Exists, effect: NoExecute, tolerationSeconds: 10}}"),
    ));
    c.apply(&pinned_pod(
        "forever",
        "lone-0",
        &format!("{{key: {UNREACHABLE}, operator: Exists, effect: NoExecute}}"),
    ));
    c.apply(&pinned_pod("elsewhere", "many-0", ""));
    eventually("the pods run", Duration::from_secs(30), || {
        ["plain", "brief", "forever", "elsewhere"]
            .iter()
            .all(|p| running(&c, p))
    });
    let defaulted: Vec<(String, i64)> = pod(&c, "elsewhere").unwrap()["spec"]["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_string(),
                t["tolerationSeconds"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        defaulted,
        [
            ("node.kubernetes.io/not-ready".to_string(), 300),
            (UNREACHABLE.to_string(), 300)
        ],
        "admission gives a pod five minutes"
    );
    // A ReplicaSet's pod, placed on the lone node by cordoning the others meanwhile.
    let others = ["many-0", "many-1", "extra-0"];
    for name in others {
        c.kubectl_ok(&["cordon", name]);
    }
    c.apply(REPLICA_SET);
    eventually("the replica runs on the lone node", Duration::from_secs(30), || {
        replicas(&c)
            .iter()
            .any(|(node, deleting)| node == "lone-0" && !deleting)
    });
    for name in others {
        c.kubectl_ok(&["uncordon", name]);
    }

    // The lone node's kubelet dies.
    drop(lone);
    eventually("the dead node turns Unknown", Duration::from_secs(60), || {
        ready(&c, "lone-0") == "Unknown"
    });
    let dead = node(&c, "lone-0");
    let ready_condition = condition(&dead, "Ready");
    assert_eq!(ready_condition["reason"], "NodeStatusUnknown", "{ready_condition}");
    assert_eq!(ready_condition["message"], "Kubelet stopped posting node status.");
    for type_ in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(condition(&dead, type_)["status"], "Unknown", "{type_}");
    }
    eventually("the dead node is tainted unreachable", Duration::from_secs(30), || {
        let t = taints(&node(&c, "lone-0"));
        t.contains(&format!("{UNREACHABLE}:NoExecute")) && t.contains(&format!("{UNREACHABLE}:NoSchedule"))
    });
    assert_eq!(
        events(&c, "lone-0", "NodeNotReady"),
        ["Node lone-0 status is now: NodeNotReady"],
        "the node's status change is announced once"
    );

    // The pod that tolerates nothing goes at once, saying so; the others are marked not Ready.
    eventually("the intolerant pod is evicted", Duration::from_secs(30), || {
        deleting(&c, "plain")
    });
    assert_eq!(
        events(&c, "plain", "TaintManagerEviction"),
        ["Marking for deletion Pod default/plain"]
    );
    eventually(
        "the forever-tolerating pod is marked not Ready",
        Duration::from_secs(30),
        || pod(&c, "forever").is_some_and(|p| condition(&p, "Ready")["status"] == "False"),
    );

    // The briefly tolerating pod goes 10 s after the taint was added, not before.
    eventually("the briefly tolerating pod is evicted", Duration::from_secs(40), || {
        deleting(&c, "brief")
    });
    let tainted_at = node(&c, "lone-0")["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == UNREACHABLE && t["effect"] == "NoExecute")
        .map(|t| epoch_seconds(t["timeAdded"].as_str().expect("the taint has timeAdded")))
        .unwrap();
    let brief = pod(&c, "brief").expect("a pod on a dead node stays Terminating");
    let deleted_at = epoch_seconds(brief["metadata"]["deletionTimestamp"].as_str().unwrap());
    assert!(
        deleted_at - tainted_at >= 9,
        "evicted {} s after the taint, before its 10 s toleration",
        deleted_at - tainted_at
    );
    assert_eq!(
        condition(&brief, "DisruptionTarget")["reason"],
        "DeletionByTaintManager"
    );

    // The ReplicaSet's evicted pod is replaced on a live node.
    eventually(
        "the replica is replaced on a live node",
        Duration::from_secs(30),
        || {
            let r = replicas(&c);
            r.iter().any(|(node, deleting)| node == "lone-0" && *deleting)
                && r.iter()
                    .any(|(node, deleting)| others.contains(&node.as_str()) && !deleting)
        },
    );

    // The forever-tolerating pod stays; the pod elsewhere and the live nodes are untouched
    // (the cordon's unschedulable taints gone with the cordon).
    std::thread::sleep(Duration::from_secs(3));
    assert!(!deleting(&c, "forever"));
    assert!(!deleting(&c, "elsewhere"));
    for name in ["many-0", "many-1", "extra-0"] {
        assert_eq!(ready(&c, name), "True", "{name}");
        assert_eq!(taints(&node(&c, name)), Vec::<String>::new(), "{name}");
    }

    // The kubelet comes back: the node is Ready again, untainted, with the same podCIDR, and
    // the evicted pods' deletion completes.
    let lone = c.hollow_nodes(&["--count=1", "--prefix=lone-"]);
    eventually("the node recovers", Duration::from_secs(30), || {
        let n = node(&c, "lone-0");
        condition(&n, "Ready")["status"] == "True" && taints(&n).is_empty()
    });
    assert_eq!(pod_cidr(&c, "lone-0"), lone_cidr);
    eventually("the evicted pods are gone", Duration::from_secs(30), || {
        pod(&c, "plain").is_none() && pod(&c, "brief").is_none()
    });
    assert!(!deleting(&c, "forever"));

    // Every kubelet dies: more likely the control plane is cut off than every node dead, so
    // the NoExecute taints come off (the first nodes to go silent may have had them a moment).
    drop((many, extra, lone));
    let live = ["many-0", "many-1", "extra-0", "lone-0"];
    eventually("every node turns Unknown", Duration::from_secs(60), || {
        live.iter().all(|n| ready(&c, n) == "Unknown")
    });
    eventually("no node keeps a NoExecute taint", Duration::from_secs(30), || {
        live.iter().all(|n| {
            let t = taints(&node(&c, n));
            !t.iter().any(|t| t.ends_with(":NoExecute")) && t.contains(&format!("{UNREACHABLE}:NoSchedule"))
        })
    });
    assert!(!deleting(&c, "forever"));
}
