//! The scheduler and hollow nodes against a running `styrman server`, through the real kubectl:
//! placement by resources, node selectors and taints, what users read when a pod cannot be
//! placed, and pods for another scheduler left alone.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use styrman_testkit::{Cluster, eventually, json};

/// How long the scheduler and hollow nodes get to do what a test waits for.
const TIMEOUT: Duration = Duration::from_secs(30);

fn pod(name: &str, cpu: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers: [{{name: app, image: nginx, resources: {{requests: {{cpu: {cpu}}}}}}}]
{extra_spec}"
    )
}

fn get_pod(c: &Cluster, name: &str) -> Value {
    json(&c.kubectl_ok(&["get", "pod", name, "-o", "json"]))
}

fn node_of(c: &Cluster, name: &str) -> String {
    get_pod(c, name)["spec"]["nodeName"].as_str().unwrap_or("").to_string()
}

fn running(c: &Cluster, name: &str) -> bool {
    get_pod(c, name)["status"]["phase"] == "Running"
}

/// The notes of the pod's events with this reason.
fn events(c: &Cluster, pod: &str, reason: &str) -> Vec<String> {
    let list = json(&c.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod},reason={reason}"),
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

#[test]
fn pods_are_placed_by_resources_selectors_and_taints() {
    let c = Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).expect("start styrman server");
    let _nodes = c.hollow_nodes(&["--count=3", "--cpu=2", "--memory=4Gi"]);
    eventually("three nodes are Ready", TIMEOUT, || {
        c.kubectl_ok(&["get", "nodes", "--no-headers"])
            .matches(" Ready ")
            .count()
            == 3
    });
    let leases = c.kubectl_ok(&["get", "leases", "-n", "kube-node-lease", "-o", "name"]);
    assert_eq!(leases.lines().count(), 3, "{leases}");

    // Each node fits one 1500m pod: three of them spread over the three nodes.
    for name in ["a", "b", "c"] {
        c.apply(&pod(name, "1500m", ""));
    }
    eventually("the pods run", TIMEOUT, || {
        ["a", "b", "c"].iter().all(|p| running(&c, p))
    });
    let mut nodes: Vec<String> = ["a", "b", "c"].iter().map(|p| node_of(&c, p)).collect();
    nodes.sort();
    assert_eq!(nodes, ["hollow-0", "hollow-1", "hollow-2"]);
    let scheduled = events(&c, "a", "Scheduled");
    assert_eq!(
        scheduled,
        [format!("Successfully assigned default/a to {}", node_of(&c, "a"))]
    );
    let a = get_pod(&c, "a");
    assert!(
        a["status"]["podIP"].as_str().is_some_and(|ip| ip.starts_with("10.64.")),
        "{a}"
    );

    // A fourth does not fit anywhere: users read why.
    c.apply(&pod("d", "1500m", ""));
    eventually("d is reported unschedulable", TIMEOUT, || {
        !events(&c, "d", "FailedScheduling").is_empty()
    });
    assert_eq!(
        events(&c, "d", "FailedScheduling")[0],
        "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
    let d = get_pod(&c, "d");
    let condition = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap()
        .clone();
    assert_eq!(
        (condition["status"].as_str(), condition["reason"].as_str()),
        (Some("False"), Some("Unschedulable"))
    );
    // Room is made: the pending pod is placed where it was made.
    let freed = node_of(&c, "b");
    c.kubectl_ok(&["delete", "pod", "b"]);
    eventually("d is placed once there is room", TIMEOUT, || running(&c, "d"));
    assert_eq!(node_of(&c, "d"), freed);

    // Node selectors: amd64 matches every hollow node, x86 none.
    c.apply(&pod("amd64", "10m", "  nodeSelector: {kubernetes.io/arch: amd64}"));
    c.apply(&pod("x86", "10m", "  nodeSelector: {kubernetes.io/arch: x86}"));
    eventually("the amd64 pod runs", TIMEOUT, || running(&c, "amd64"));
    eventually("the x86 pod is reported", TIMEOUT, || {
        !events(&c, "x86", "FailedScheduling").is_empty()
    });
    assert!(
        events(&c, "x86", "FailedScheduling")[0]
            .starts_with("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."),
        "{:?}",
        events(&c, "x86", "FailedScheduling")
    );

    // Taints: a tainted pool only takes pods that tolerate it.
    let _gpu = c.hollow_nodes(&[
        "--count=1",
        "--prefix=gpu-",
        "--labels=pool=gpu",
        "--taints=gpu=yes:NoSchedule",
    ]);
    eventually("the gpu node is Ready", TIMEOUT, || {
        c.kubectl_ok(&["get", "nodes", "--no-headers"])
            .matches(" Ready ")
            .count()
            == 4
    });
    c.apply(&pod("intolerant", "10m", "  nodeSelector: {pool: gpu}"));
    c.apply(&pod(
        "tolerant",
        "10m",
        "  nodeSelector: {pool: gpu}\n  tolerations: [{key: gpu, operator: Equal, value: 'yes', effect: NoSchedule}]",
    ));
    eventually("the tolerant pod runs on the gpu node", TIMEOUT, || {
        running(&c, "tolerant")
    });
    assert_eq!(node_of(&c, "tolerant"), "gpu-0");
    eventually("the intolerant pod is reported", TIMEOUT, || {
        !events(&c, "intolerant", "FailedScheduling").is_empty()
    });
    let message = &events(&c, "intolerant", "FailedScheduling")[0];
    assert!(
        message.starts_with(
            "0/4 nodes are available: 1 node(s) had untolerated taint {gpu: yes}, 3 node(s) didn't match Pod's node affinity/selector."
        ),
        "{message}"
    );

    // A gated pod waits, saying so, until its gates are removed.
    c.apply(&pod("gated", "10m", "  schedulingGates: [{name: example.com/wait}]"));
    eventually("the gated pod says why it waits", TIMEOUT, || {
        get_pod(&c, "gated")["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "SchedulingGated"))
    });
    assert_eq!(node_of(&c, "gated"), "");
    c.kubectl_ok(&[
        "patch",
        "pod",
        "gated",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/schedulingGates"}]"#,
    ]);
    eventually("the ungated pod runs", TIMEOUT, || running(&c, "gated"));

    // A pod for another scheduler is left alone.
    c.apply(&pod("elsewhere", "10m", "  schedulerName: my-scheduler"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(node_of(&c, "elsewhere"), "");
    assert!(events(&c, "elsewhere", "FailedScheduling").is_empty());
    let lease = json(&c.kubectl_ok(&["get", "lease", "-n", "kube-system", "kube-scheduler", "-o", "json"]));
    assert!(lease["spec"]["holderIdentity"].as_str().is_some_and(|h| !h.is_empty()));
}

#[test]
fn spread_over_zones_and_anti_affinity_between_replicas() {
    let c = Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).expect("start styrman server");
    let _a = c.hollow_nodes(&["--count=2", "--prefix=a-", "--labels=topology.kubernetes.io/zone=a"]);
    let _b = c.hollow_nodes(&["--count=2", "--prefix=b-", "--labels=topology.kubernetes.io/zone=b"]);
    eventually("four nodes are Ready", TIMEOUT, || {
        c.kubectl_ok(&["get", "nodes", "--no-headers"])
            .matches(" Ready ")
            .count()
            == 4
    });
    let spread = "  topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule,
     labelSelector: {matchLabels: {app: web}}}";
    for i in 0..4 {
        c.apply(
            &pod(&format!("web-{i}"), "10m", spread)
                .replace("metadata: {name:", "metadata: {labels: {app: web}, name:"),
        );
        // One at a time: each placement is counted before the next is decided.
        eventually("the pod runs", TIMEOUT, || running(&c, &format!("web-{i}")));
    }
    let zones: Vec<String> = (0..4)
        .map(|i| node_of(&c, &format!("web-{i}"))[..1].to_string())
        .collect();
    assert_eq!(zones.iter().filter(|z| *z == "a").count(), 2, "{zones:?}");

    let apart = "  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - {labelSelector: {matchLabels: {app: solo}}, topologyKey: kubernetes.io/hostname}";
    for i in 0..5 {
        c.apply(
            &pod(&format!("solo-{i}"), "10m", apart)
                .replace("metadata: {name:", "metadata: {labels: {app: solo}, name:"),
        );
    }
    eventually("four solo pods run", TIMEOUT, || {
        (0..5).filter(|i| running(&c, &format!("solo-{i}"))).count() == 4
    });
    let mut hosts: Vec<String> = (0..5)
        .map(|i| node_of(&c, &format!("solo-{i}")))
        .filter(|n| !n.is_empty())
        .collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 4, "one per node: {hosts:?}");
    let pending = (0..5)
        .map(|i| format!("solo-{i}"))
        .find(|p| node_of(&c, p).is_empty())
        .unwrap();
    eventually("the fifth is reported", TIMEOUT, || {
        !events(&c, &pending, "FailedScheduling").is_empty()
    });
    let message = &events(&c, &pending, "FailedScheduling")[0];
    assert!(
        message.starts_with("0/4 nodes are available: 4 node(s) didn't match pod anti-affinity rules."),
        "{message}"
    );
}

#[test]
fn a_higher_priority_pod_preempts_lower_priority_ones() {
    let c = Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).expect("start styrman server");
    let _nodes = c.hollow_nodes(&["--count=2", "--cpu=2", "--memory=4Gi"]);
    eventually("two nodes are Ready", TIMEOUT, || {
        c.kubectl_ok(&["get", "nodes", "--no-headers"])
            .matches(" Ready ")
            .count()
            == 2
    });
    c.apply("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n");
    c.apply("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: low}\nvalue: 10\n");
    let classes = c.kubectl_ok(&["get", "priorityclasses", "-o", "name"]);
    assert!(
        classes.contains("system-cluster-critical") && classes.contains("system-node-critical"),
        "{classes}"
    );
    // Priority admission: the class sets the number; an unknown class is refused.
    let err = c.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod("nameless", "10m", "  priorityClassName: nope"),
    );
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(err.contains("no PriorityClass with name nope was found"), "{err}");

    for i in 0..2 {
        c.apply(&pod(&format!("filler-{i}"), "1500m", "  priorityClassName: low"));
    }
    eventually("the fillers run", TIMEOUT, || {
        (0..2).all(|i| running(&c, &format!("filler-{i}")))
    });
    assert_eq!(get_pod(&c, "filler-0")["spec"]["priority"], 10);
    c.apply(&pod("urgent", "1500m", "  priorityClassName: high"));
    eventually("the urgent pod runs", TIMEOUT, || running(&c, "urgent"));
    let victim = (0..2)
        .map(|i| format!("filler-{i}"))
        .find(|f| !c.kubectl(&["get", "pod", f]).status.success());
    let victim = victim.expect("one filler was preempted");
    assert!(
        c.kubectl(&[
            "get",
            "pod",
            &format!("filler-{}", if victim.ends_with('0') { 1 } else { 0 })
        ])
        .status
        .success(),
        "only one victim"
    );
    let preempted = events(&c, &victim, "Preempted");
    assert_eq!(preempted.len(), 1, "{preempted:?}");
    assert!(preempted[0].starts_with("Preempted by pod "), "{preempted:?}");
}

/// GET http://addr/metrics.
fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

#[test]
fn a_second_scheduler_places_its_own_pods_and_serves_metrics() {
    let c = Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).expect("start styrman server");
    let _nodes = c.hollow_nodes(&["--count=1"]);
    let addr = format!("127.0.0.1:{}", styrman_testkit::free_port().unwrap());
    let metrics = format!("--metrics-bind-address={addr}");
    let _second = c.run_styrman(
        "scheduler",
        &["--leader-elect=false", "--scheduler-name=metered", &metrics],
    );
    c.apply(&pod("mine", "10m", "  schedulerName: metered"));
    c.apply(&pod(
        "stuck",
        "10m",
        "  schedulerName: metered\n  nodeSelector: {kubernetes.io/arch: x86}",
    ));
    eventually("the second scheduler places its pod", TIMEOUT, || running(&c, "mine"));
    eventually("its metrics count both attempts", TIMEOUT, || {
        scrape(&addr).is_some_and(|m| {
            m.contains(r#"scheduler_schedule_attempts_total{profile="metered",result="scheduled"} 1"#)
                && m.contains(r#"scheduler_schedule_attempts_total{profile="metered",result="unschedulable"}"#)
                && m.contains(r#"scheduler_pending_pods{queue="unschedulable"} 1"#)
        })
    });
    assert!(events(&c, "stuck", "FailedScheduling")[0].starts_with("0/1 nodes are available"));
}

#[test]
fn a_standby_scheduler_takes_over_when_the_leader_dies() {
    let mut c = Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).expect("start styrman server");
    let _nodes = c.hollow_nodes(&["--count=2"]);
    let holder = |c: &Cluster| {
        let lease = json(&c.kubectl_ok(&["get", "lease", "-n", "kube-system", "kube-scheduler", "-o", "json"]));
        lease["spec"]["holderIdentity"].as_str().unwrap_or("").to_string()
    };
    eventually("the supervised scheduler leads", TIMEOUT, || !holder(&c).is_empty());
    let first = holder(&c);
    // A standby replica of the same scheduler, waiting on the lease.
    let _standby = c.run_styrman("scheduler", &[]);
    c.apply(&pod("before", "10m", ""));
    eventually("the leader places a pod", TIMEOUT, || running(&c, "before"));
    // The leader dies without releasing its lease: another candidate takes over once it expires.
    c.kill_component("scheduler").expect("kill the leading scheduler");
    for i in 0..5 {
        c.apply(&pod(&format!("after-{i}"), "10m", ""));
    }
    eventually("a new leader places the pods", TIMEOUT, || {
        (0..5).all(|i| running(&c, &format!("after-{i}")))
    });
    assert_ne!(holder(&c), first, "the lease changed hands");
    for name in ["before", "after-0", "after-1", "after-2", "after-3", "after-4"] {
        assert_eq!(events(&c, name, "Scheduled").len(), 1, "{name} was bound once");
    }
}

fn ready_nodes(c: &Cluster) -> usize {
    c.kubectl_ok(&["get", "nodes", "--no-headers"])
        .matches(" Ready ")
        .count()
}

/// A pod with labels, an image and extra spec lines.
fn labelled_pod(name: &str, labels: &str, image: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{{labels}}}}}
spec:
  containers: [{{name: app, image: {image}, resources: {{requests: {{cpu: 10m}}}}}}]
{extra_spec}"
    )
}

/// Creates the pods one after the other, each bound before the next is made, and returns
/// their nodes.
fn place_one_by_one(c: &Cluster, pods: &[(String, String)]) -> Vec<String> {
    pods.iter()
        .map(|(name, manifest)| {
            c.apply(manifest);
            eventually(&format!("{name} is bound"), TIMEOUT, || !node_of(c, name).is_empty());
            node_of(c, name)
        })
        .collect()
}

fn distinct(nodes: &[String]) -> usize {
    nodes.iter().collect::<std::collections::HashSet<_>>().len()
}

/// The reportingComponent of the pod's Scheduled event.
fn scheduled_by(c: &Cluster, pod: &str) -> String {
    let list = json(&c.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod},reason=Scheduled"),
        "-o",
        "json",
    ]));
    list["items"][0]["reportingComponent"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn most_allocated_packs_where_least_allocated_spreads() {
    let c = Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).expect("start styrman server");
    // Images too small for ImageLocality to care (below its 23 MB floor): only resources count.
    let node_args = ["--count=3", "--cpu=4", "--memory=8Gi", "--image-size=1Mi"];
    let _pack = c.hollow_nodes(&[&node_args[..], &["--prefix=pack-", "--labels=pool=pack"]].concat());
    let _spread = c.hollow_nodes(&[&node_args[..], &["--prefix=spread-", "--labels=pool=spread"]].concat());
    eventually("six nodes are Ready", TIMEOUT, || ready_nodes(&c) == 6);
    // One process, two profiles: the same pods packed by one and spread by the other.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("scheduler.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection: {leaderElect: false}
profiles:
- schedulerName: packer
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: MostAllocated, resources: [{name: cpu, weight: 1}, {name: memory, weight: 1}]}}
- schedulerName: spreader
",
    )
    .unwrap();
    let _second = c.run_styrman("scheduler", &[&format!("--config={}", config.display())]);
    let pod = |name: &str, scheduler: &str, pool: &str| {
        let manifest = format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  schedulerName: {scheduler}
  nodeSelector: {{pool: {pool}}}
  containers: [{{name: app, image: nginx, resources: {{requests: {{cpu: 500m, memory: 1Gi}}}}}}]
"
        );
        (name.to_string(), manifest)
    };
    let packed = place_one_by_one(
        &c,
        &(0..4)
            .map(|i| pod(&format!("packed-{i}"), "packer", "pack"))
            .collect::<Vec<_>>(),
    );
    assert_eq!(distinct(&packed), 1, "MostAllocated fills one node first: {packed:?}");
    let spread = place_one_by_one(
        &c,
        &(0..3)
            .map(|i| pod(&format!("spread-{i}"), "spreader", "spread"))
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        distinct(&spread),
        3,
        "LeastAllocated takes the emptiest node: {spread:?}"
    );
    assert_eq!(scheduled_by(&c, "packed-0"), "packer");
    assert_eq!(scheduled_by(&c, "spread-0"), "spreader");
}

#[test]
fn a_bad_scheduler_configuration_ends_the_process_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("scheduler.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: ratio
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: RequestedToCapacityRatio, requestedToCapacityRatio: {shape: [{utilization: 0, score: 20}]}}}
",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_styrman"))
        .args([
            "scheduler",
            "--kubeconfig=/nonexistent",
            &format!("--config={}", config.display()),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid KubeSchedulerConfiguration")
            && stderr
                .contains("requestedToCapacityRatio.shape[0].score: Invalid value: 20: not in valid range [0, 10]"),
        "{stderr}"
    );
}

#[test]
fn image_locality_prefers_the_node_that_has_the_image() {
    let c = Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).expect("start styrman server");
    let _cached = c.hollow_nodes(&[
        "--count=1",
        "--prefix=cached-",
        "--images=registry.example.com/big:v1:900Mi",
    ]);
    let _plain = c.hollow_nodes(&["--count=3", "--prefix=plain-", "--image-size=900Mi"]);
    eventually("four nodes are Ready", TIMEOUT, || ready_nodes(&c) == 4);
    let cached = json(&c.kubectl_ok(&["get", "node", "cached-0", "-o", "json"]));
    assert_eq!(
        cached["status"]["images"][0]["names"][1], "registry.example.com/big:v1",
        "{}",
        cached["status"]
    );
    assert_eq!(cached["status"]["images"][0]["sizeBytes"], 900 * 1024 * 1024);

    let big: Vec<(String, String)> = (0..3)
        .map(|i| {
            (
                format!("big-{i}"),
                labelled_pod(&format!("big-{i}"), "app: big", "registry.example.com/big:v1", ""),
            )
        })
        .collect();
    assert_eq!(place_one_by_one(&c, &big), ["cached-0", "cached-0", "cached-0"]);

    // A node that ran a pod holds its image afterwards, as a kubelet reports it.
    c.apply(&labelled_pod("first", "app: fresh", "fresh", "  nodeName: plain-1"));
    eventually("plain-1 reports the image it pulled", TIMEOUT, || {
        let node = json(&c.kubectl_ok(&["get", "node", "plain-1", "-o", "json"]));
        node["status"]["images"]
            .as_array()
            .is_some_and(|images| images.iter().any(|i| i["names"][1] == "docker.io/library/fresh:latest"))
    });
    let fresh: Vec<(String, String)> = (0..2)
        .map(|i| {
            (
                format!("fresh-{i}"),
                labelled_pod(&format!("fresh-{i}"), "app: fresh", "fresh", ""),
            )
        })
        .collect();
    assert_eq!(place_one_by_one(&c, &fresh), ["plain-1", "plain-1"]);
}

#[test]
fn existing_pods_affinity_terms_weigh_on_new_pods() {
    let c = Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).expect("start styrman server");
    let _nodes = c.hollow_nodes(&["--count=2"]);
    eventually("two nodes are Ready", TIMEOUT, || ready_nodes(&c) == 2);
    // An existing pod that would rather not share its host with crowd pods.
    c.apply(&labelled_pod(
        "loner",
        "app: loner",
        "nginx",
        "  nodeName: hollow-0
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm: {labelSelector: {matchLabels: {app: crowd}}, topologyKey: kubernetes.io/hostname}",
    ));
    eventually("the loner runs", TIMEOUT, || running(&c, "loner"));
    let crowd: Vec<(String, String)> = (0..6)
        .map(|i| {
            (
                format!("crowd-{i}"),
                labelled_pod(&format!("crowd-{i}"), "app: crowd", "nginx", ""),
            )
        })
        .collect();
    let nodes = place_one_by_one(&c, &crowd);
    assert!(
        nodes.iter().all(|n| n == "hollow-1"),
        "crowd pods keep away from the loner: {nodes:?}"
    );

    // An existing pod that requires followers near it draws them (hardPodAffinityWeight).
    c.apply(&labelled_pod(
        "magnet",
        "app: magnet",
        "nginx",
        "  nodeName: hollow-0
  affinity:
    podAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - {labelSelector: {matchLabels: {app: follower}}, topologyKey: kubernetes.io/hostname}",
    ));
    eventually("the magnet runs", TIMEOUT, || running(&c, "magnet"));
    let followers: Vec<(String, String)> = (0..4)
        .map(|i| {
            (
                format!("follower-{i}"),
                labelled_pod(&format!("follower-{i}"), "app: follower", "nginx", ""),
            )
        })
        .collect();
    let nodes = place_one_by_one(&c, &followers);
    assert!(
        nodes.iter().all(|n| n == "hollow-0"),
        "followers join the magnet: {nodes:?}"
    );
}

#[test]
fn pods_a_service_selects_spread_over_nodes_by_default() {
    let c = Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).expect("start styrman server");
    let _nodes = c.hollow_nodes(&["--count=4"]);
    eventually("four nodes are Ready", TIMEOUT, || ready_nodes(&c) == 4);
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n",
    );
    let web: Vec<(String, String)> = (0..8)
        .map(|i| {
            (
                format!("web-{i}"),
                labelled_pod(&format!("web-{i}"), "app: web", "nginx", ""),
            )
        })
        .collect();
    let nodes = place_one_by_one(&c, &web);
    assert_eq!(distinct(&nodes[..4]), 4, "one per node first: {nodes:?}");
    let mut per_node = std::collections::BTreeMap::<&String, usize>::new();
    for n in &nodes {
        *per_node.entry(n).or_default() += 1;
    }
    assert!(per_node.values().all(|n| *n == 2), "then two per node: {per_node:?}");
}
