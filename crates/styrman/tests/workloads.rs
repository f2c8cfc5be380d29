//! The workload controllers (ReplicaSet, ReplicationController, Deployment) against a running
//! `styrman server` with hollow nodes, driven by the real kubectl: pods made and replaced,
//! scaling, rolling and Recreate rollouts watched pod by pod, `kubectl rollout
//! status|history|undo|pause|resume|restart`, propagation policies, and a standby controller
//! manager taking over.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;
use styrman_testkit::{ChildProcess, Cluster, eventually, json};

/// How long the controllers, scheduler and hollow nodes get to do what a test waits for.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A cluster with three hollow nodes.
fn cluster() -> (Cluster, ChildProcess) {
    let c = Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).expect("start styrman server");
    let nodes = c.hollow_nodes(&["--count=3"]);
    (c, nodes)
}

fn get(c: &Cluster, what: &[&str]) -> Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json"]);
    json(&c.kubectl_ok(&args))
}

/// The pods with `selector` that are not being deleted.
fn live_pods(c: &Cluster, selector: &str) -> Vec<Value> {
    get(c, &["pods", "-l", selector])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

fn running_pods(c: &Cluster, selector: &str) -> Vec<Value> {
    live_pods(c, selector)
        .into_iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .collect()
}

fn images(pods: &[Value]) -> Vec<String> {
    pods.iter()
        .map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap().to_string())
        .collect()
}

fn rollout_status(c: &Cluster, what: &str) -> String {
    c.kubectl_ok(&["rollout", "status", what, "--timeout=60s"])
}

/// `kubectl get pods --watch` in JSON, read on a thread; [`PodWatch::events`] ends it.
struct PodWatch {
    child: Child,
    reader: std::thread::JoinHandle<String>,
}

impl PodWatch {
    fn start(c: &Cluster, selector: &str) -> PodWatch {
        let mut child = c
            .kubectl_command(&[
                "get",
                "pods",
                "-l",
                selector,
                "--watch",
                "--output-watch-events",
                "-o",
                "json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl get --watch runs");
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        // The watch is open once kubectl has listed: give it a moment to.
        std::thread::sleep(Duration::from_secs(1));
        PodWatch { child, reader }
    }

    /// The events seen so far, in order: (type, pod).
    fn events(mut self) -> Vec<(String, Value)> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = self.reader.join().unwrap();
        serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .filter_map(Result::ok)
            .map(|e| (e["type"].as_str().unwrap_or("").to_string(), e["object"].clone()))
            .collect()
    }
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Replays a pod watch: after each event, (live pods, ready live pods, live pods per
/// pod-template-hash), where live means not being deleted.
fn replay(events: &[(String, Value)]) -> Vec<(usize, usize, BTreeMap<String, usize>)> {
    let mut pods: HashMap<String, Value> = HashMap::new();
    let mut states = Vec::new();
    for (kind, pod) in events {
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        if kind == "DELETED" {
            pods.remove(&name);
        } else {
            pods.insert(name, pod.clone());
        }
        let live: Vec<&Value> = pods
            .values()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let mut per_hash = BTreeMap::new();
        for p in &live {
            let hash = p["metadata"]["labels"]["pod-template-hash"]
                .as_str()
                .unwrap_or("")
                .to_string();
            *per_hash.entry(hash).or_default() += 1;
        }
        states.push((live.len(), live.iter().filter(|p| is_ready(p)).count(), per_hash));
    }
    states
}

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: 'nginx:1.25'}]}
";

#[test]
fn a_deployment_runs_scales_and_rolls_out() {
    let (c, _nodes) = cluster();
    c.apply(WEB);
    assert!(rollout_status(&c, "deployment/web").contains("successfully rolled out"));
    assert_eq!(running_pods(&c, "app=web").len(), 3);
    let d = get(&c, &["deployment", "web"]);
    assert_eq!(d["status"]["availableReplicas"], 3, "{d}");
    assert_eq!(d["status"]["updatedReplicas"], 3);
    assert_eq!(d["status"]["observedGeneration"], d["metadata"]["generation"]);
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");
    let conditions = d["status"]["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Available" && c["status"] == "True"),
        "{conditions:?}"
    );
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable")
    );
    // Every pod belongs to the one ReplicaSet, which belongs to the Deployment.
    let sets = get(&c, &["rs", "-l", "app=web"]);
    assert_eq!(sets["items"].as_array().unwrap().len(), 1);
    let rs = &sets["items"][0];
    assert_eq!(rs["metadata"]["ownerReferences"][0]["uid"], d["metadata"]["uid"]);
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));

    c.kubectl_ok(&["scale", "deployment/web", "--replicas=10"]);
    eventually("10 pods run", TIMEOUT, || running_pods(&c, "app=web").len() == 10);
    rollout_status(&c, "deployment/web");
    c.kubectl_ok(&["scale", "deployment/web", "--replicas=3"]);
    eventually("3 pods are left", TIMEOUT, || live_pods(&c, "app=web").len() == 3);

    // A new image rolls out one surge pod at a time, never below 3 ready.
    let watch = PodWatch::start(&c, "app=web");
    c.kubectl_ok(&["set", "image", "deployment/web", "web=nginx:1.26"]);
    rollout_status(&c, "deployment/web");
    eventually("only new pods are left", TIMEOUT, || {
        let pods = live_pods(&c, "app=web");
        pods.len() == 3 && images(&pods).iter().all(|i| i == "nginx:1.26")
    });
    std::thread::sleep(Duration::from_millis(500));
    let states = replay(&watch.events());
    assert!(states.len() > 6, "the watch saw the rollout: {states:?}");
    let initial_ready = states
        .iter()
        .position(|s| s.1 == 3)
        .expect("the watch starts with 3 ready pods");
    for (live, ready, per_hash) in &states[initial_ready..] {
        assert!(
            *live <= 4,
            "never more than replicas + maxSurge pods: {live} {per_hash:?}"
        );
        assert!(
            *ready >= 3,
            "never fewer than replicas - maxUnavailable ready: {ready} {per_hash:?}"
        );
    }
    assert!(
        states.iter().any(|s| s.2.len() == 2),
        "old and new pods ran side by side"
    );
    let d = get(&c, &["deployment", "web"]);
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "2");

    let history = c.kubectl_ok(&["rollout", "history", "deployment/web"]);
    assert!(
        history.lines().any(|l| l.starts_with("1 ")) && history.lines().any(|l| l.starts_with("2 ")),
        "{history}"
    );

    // Undo brings revision 1's template back, as revision 3.
    c.kubectl_ok(&["rollout", "undo", "deployment/web"]);
    rollout_status(&c, "deployment/web");
    eventually("the old image is back", TIMEOUT, || {
        let pods = live_pods(&c, "app=web");
        pods.len() == 3 && images(&pods).iter().all(|i| i == "nginx:1.25")
    });
    let d = get(&c, &["deployment", "web"]);
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3");
    assert_eq!(
        get(&c, &["rs", "-l", "app=web"])["items"].as_array().unwrap().len(),
        2,
        "undo reuses the old ReplicaSet"
    );

    // A paused Deployment takes template changes without rolling them out.
    c.kubectl_ok(&["rollout", "pause", "deployment/web"]);
    c.kubectl_ok(&["set", "image", "deployment/web", "web=nginx:1.27"]);
    eventually("the controller saw the paused change", TIMEOUT, || {
        let d = get(&c, &["deployment", "web"]);
        d["status"]["observedGeneration"] == d["metadata"]["generation"]
            && d["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["reason"] == "DeploymentPaused")
    });
    assert_eq!(
        get(&c, &["rs", "-l", "app=web"])["items"].as_array().unwrap().len(),
        2,
        "no new ReplicaSet while paused"
    );
    assert!(images(&live_pods(&c, "app=web")).iter().all(|i| i == "nginx:1.25"));
    c.kubectl_ok(&["rollout", "resume", "deployment/web"]);
    rollout_status(&c, "deployment/web");
    eventually("the paused change rolled out", TIMEOUT, || {
        images(&live_pods(&c, "app=web")).iter().all(|i| i == "nginx:1.27")
    });

    // A restart replaces every pod with the same image.
    let before: Vec<String> = live_pods(&c, "app=web")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().into())
        .collect();
    c.kubectl_ok(&["rollout", "restart", "deployment/web"]);
    rollout_status(&c, "deployment/web");
    eventually("every pod was replaced", TIMEOUT, || {
        let pods = live_pods(&c, "app=web");
        pods.len() == 3
            && pods
                .iter()
                .all(|p| !before.contains(&p["metadata"]["name"].as_str().unwrap().to_string()))
    });
    let events = c.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Deployment,reason=ScalingReplicaSet",
    ]);
    assert!(events.contains("Scaled up replica set web-"), "{events}");
}

#[test]
fn a_recreate_deployment_stops_old_pods_before_starting_new_ones() {
    let (c, _nodes) = cluster();
    c.apply(&WEB.replace(
        "{type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}",
        "{type: Recreate}",
    ));
    rollout_status(&c, "deployment/web");
    let watch = PodWatch::start(&c, "app=web");
    c.kubectl_ok(&["set", "image", "deployment/web", "web=nginx:1.26"]);
    rollout_status(&c, "deployment/web");
    eventually("3 new pods run", TIMEOUT, || {
        let pods = running_pods(&c, "app=web");
        pods.len() == 3 && images(&pods).iter().all(|i| i == "nginx:1.26")
    });
    std::thread::sleep(Duration::from_millis(500));
    let events = watch.events();
    let first_new = events
        .iter()
        .position(|(_, p)| p["spec"]["containers"][0]["image"] == "nginx:1.26")
        .expect("the watch saw new pods");
    let mut pods: HashMap<String, Value> = HashMap::new();
    for (kind, pod) in &events[..first_new] {
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        if kind == "DELETED" {
            pods.remove(&name);
        } else {
            pods.insert(name, pod.clone());
        }
    }
    assert!(
        pods.is_empty(),
        "old pods were gone before the first new one: {:?}",
        pods.keys()
    );
}

#[test]
fn replica_sets_replace_adopt_and_release_pods() {
    let (c, _nodes) = cluster();
    c.apply(
        "apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: cache}
spec:
  replicas: 3
  selector: {matchLabels: {app: cache}}
  template:
    metadata: {labels: {app: cache, tier: backend}}
    spec: {containers: [{name: c, image: redis}]}
",
    );
    eventually("3 pods run", TIMEOUT, || running_pods(&c, "app=cache").len() == 3);
    eventually("the status counts them", TIMEOUT, || {
        let s = &get(&c, &["rs", "cache"])["status"];
        s["replicas"] == 3 && s["readyReplicas"] == 3 && s["availableReplicas"] == 3 && s["fullyLabeledReplicas"] == 3
    });
    let uid = get(&c, &["rs", "cache"])["metadata"]["uid"].clone();

    // A deleted pod is replaced.
    let victim = live_pods(&c, "app=cache")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    c.kubectl_ok(&["delete", "pod", &victim, "--wait=false"]);
    eventually("a replacement runs", TIMEOUT, || {
        let pods = running_pods(&c, "app=cache");
        pods.len() == 3 && pods.iter().all(|p| p["metadata"]["name"] != victim.as_str())
    });

    // A matching orphan is adopted, and the surplus pod deleted.
    c.apply(
        "apiVersion: v1
kind: Pod
metadata: {name: stray, labels: {app: cache}}
spec: {containers: [{name: c, image: redis}]}
",
    );
    eventually("3 pods remain, all the ReplicaSet's", TIMEOUT, || {
        let pods = live_pods(&c, "app=cache");
        pods.len() == 3 && pods.iter().all(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid)
    });

    // A pod relabelled out of the selector is released and replaced.
    let released = live_pods(&c, "app=cache")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    c.kubectl_ok(&["label", "pod", &released, "app=other", "--overwrite"]);
    eventually("the released pod has no owner", TIMEOUT, || {
        get(&c, &["pod", &released])["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty())
    });
    eventually("a replacement runs", TIMEOUT, || {
        running_pods(&c, "app=cache").len() == 3
    });

    let events = c.kubectl_ok(&["describe", "rs", "cache"]);
    assert!(
        events.contains("SuccessfulCreate") && events.contains("Created pod: cache-"),
        "{events}"
    );

    // ReplicationControllers work the same way.
    c.apply(
        "apiVersion: v1
kind: ReplicationController
metadata: {name: legacy}
spec:
  replicas: 2
  selector: {app: legacy}
  template:
    metadata: {labels: {app: legacy}}
    spec: {containers: [{name: c, image: nginx}]}
",
    );
    eventually("2 pods run and the status says so", TIMEOUT, || {
        running_pods(&c, "app=legacy").len() == 2 && get(&c, &["rc", "legacy"])["status"]["readyReplicas"] == 2
    });
    c.kubectl_ok(&["scale", "rc/legacy", "--replicas=1"]);
    eventually("1 pod is left", TIMEOUT, || live_pods(&c, "app=legacy").len() == 1);
}

#[test]
fn deleting_a_deployment_follows_the_propagation_policy() {
    let (c, _nodes) = cluster();
    for (name, cascade) in [("bg", "background"), ("fg", "foreground"), ("orphan", "orphan")] {
        c.apply(
            &WEB.replace("name: web}", &format!("name: {name}}}"))
                .replace("app: web", &format!("app: {name}")),
        );
        rollout_status(&c, &format!("deployment/{name}"));
        c.kubectl_ok(&["delete", "deployment", name, &format!("--cascade={cascade}")]);
        let selector = format!("app={name}");
        if cascade == "orphan" {
            std::thread::sleep(Duration::from_secs(2));
            assert_eq!(running_pods(&c, &selector).len(), 3, "orphaned pods keep running");
            let sets = get(&c, &["rs", "-l", &selector]);
            let rs = &sets["items"][0];
            assert!(
                rs["metadata"]["ownerReferences"]
                    .as_array()
                    .is_none_or(|r| r.is_empty()),
                "{rs}"
            );
            assert_eq!(rs["spec"]["replicas"], 3);
        } else {
            eventually("the ReplicaSet and pods are gone", TIMEOUT, || {
                get(&c, &["rs", "-l", &selector])["items"]
                    .as_array()
                    .unwrap()
                    .is_empty()
                    && live_pods(&c, &selector).is_empty()
            });
        }
    }
}

#[test]
fn a_standby_controller_manager_takes_over_without_duplicating_pods() {
    let mut c = Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).expect("start styrman server");
    let _nodes = c.hollow_nodes(&["--count=3"]);
    let holder = |c: &Cluster| {
        get(c, &["lease", "-n", "kube-system", "kube-controller-manager"])["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    eventually("the supervised controller manager leads", TIMEOUT, || {
        !holder(&c).is_empty()
    });
    let first = holder(&c);
    let _standby = c.run_styrman("controller-manager", &[]);
    c.apply(WEB);
    rollout_status(&c, "deployment/web");
    c.kill_component("controller-manager")
        .expect("kill the leading controller manager");
    c.kubectl_ok(&["scale", "deployment/web", "--replicas=6"]);
    eventually("a new leader scales the deployment", TIMEOUT, || {
        running_pods(&c, "app=web").len() == 6
    });
    assert_ne!(holder(&c), first, "the lease changed hands");
    // Nothing made pods twice: the count stays put.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(live_pods(&c, "app=web").len(), 6);
    assert_eq!(get(&c, &["rs", "-l", "app=web"])["items"].as_array().unwrap().len(), 1);
}

#[test]
fn a_deployment_schedules_by_architecture_or_waits_with_a_reason() {
    let (c, _nodes) = cluster();
    let with_arch = |name: &str, arch: &str| {
        WEB.replace("name: web}", &format!("name: {name}}}"))
            .replace("app: web", &format!("app: {name}"))
            .replace(
                "spec: {containers:",
                &format!("spec: {{nodeSelector: {{kubernetes.io/arch: {arch}}}, containers:"),
            )
    };
    c.apply(&with_arch("amd", "amd64"));
    rollout_status(&c, "deployment/amd");
    assert_eq!(running_pods(&c, "app=amd").len(), 3);
    c.apply(&with_arch("x86", "x86"));
    eventually(
        "the x86 pods are pending with a FailedScheduling event",
        TIMEOUT,
        || {
            let pods = live_pods(&c, "app=x86");
            let events = c.kubectl_ok(&[
                "get",
                "events",
                "--field-selector",
                "reason=FailedScheduling",
                "-o",
                "json",
            ]);
            pods.len() == 3
                && pods
                    .iter()
                    .all(|p| p["status"]["phase"] == "Pending" && p["spec"]["nodeName"].is_null())
                && json(&events)["items"].as_array().unwrap().iter().any(|e| {
                    e["involvedObject"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("x86-"))
                        && e["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("didn't match Pod's node affinity/selector"))
                })
        },
    );
}
