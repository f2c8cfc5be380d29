//! The node agent as a user meets it: a control plane and one real node (`styrman kubelet`
//! with its own containerd and runc, in a network namespace of its own), driven with the real
//! kubectl. Pods run to completion and their logs read back; a crash-looping container backs
//! off; an image no registry has fails to pull without harming other pods; a pod whose
//! ConfigMap is missing waits with FailedMount until it appears; a Deployment's pods serve,
//! survive the agent's kill -9 without a container duplicated, and go on delete (on a node that
//! joined with the server's token; a wrong token is refused), run static pods with mirror
//! pods, outlive a killed containerd and go NotReady while it hangs; exec, cp, debug,
//! attach and port-forward reach containers (kubectl and the Python client); `styrman cleanup`
//! leaves nothing of a killed node behind; stats and resource metrics read through nodes/proxy; probes gate readiness (and so a Service's
//! endpoints) and restart unhealthy containers; lifecycle hooks run; active deadlines fail pods;
//! pods get QoS cgroups with their limits, and a container over its memory limit is OOMKilled.

use std::time::Duration;

use styrman_testkit::{Cluster, Node, build_images, eventually, json};

const START: Duration = Duration::from_secs(60);

fn node_cluster() -> (Cluster, Node, tempfile::TempDir) {
    start_node_cluster(false)
}

/// With `join`, the node joins as users join machines: `styrman agent` with the server's token.
fn start_node_cluster(join: bool) -> (Cluster, Node, tempfile::TempDir) {
    let styrman = env!("CARGO_BIN_EXE_styrman").as_ref();
    let images = tempfile::tempdir().unwrap();
    build_images(styrman, images.path());
    let cluster = Cluster::start_for_nodes(styrman).unwrap();
    let node = if join {
        Node::join(&cluster, styrman, "node-1", images.path()).unwrap()
    } else {
        Node::start(&cluster, styrman, "node-1", images.path()).unwrap()
    };
    eventually("the node is Ready", START, || {
        let out = cluster.kubectl(&["get", "node", "node-1", "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.split_whitespace().nth(1) == Some("Ready") {
            Ok(())
        } else {
            Err(format!("{text}{}", tail(&node.log())))
        }
    });
    (cluster, node, images)
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// kubectl's STATUS column for pod `name`.
fn status(cluster: &Cluster, name: &str) -> String {
    let out = cluster.kubectl(&["get", "pod", name, "--no-headers"]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap_or("")
        .to_string()
}

fn wait_status(cluster: &Cluster, node: &Node, name: &str, want: &str) {
    eventually(&format!("pod {name} is {want}"), START, || {
        let seen = status(cluster, name);
        if seen == want {
            Ok(())
        } else {
            Err(format!("{seen}\n{}", tail(&node.log())))
        }
    });
}

fn reasons(cluster: &Cluster, pod: &str) -> Vec<String> {
    let events = json(&cluster.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "json",
    ]));
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn pods_run_their_logs_read_back_and_failures_show_as_upstream_shows_them() {
    let (c, node, images) = node_cluster();

    // The acceptance line: a pod that prints and ends.
    c.kubectl_ok(&["run", "t", "--image=busybox", "--restart=Never", "--", "echo", "hi"]);
    wait_status(&c, &node, "t", "Completed");
    assert_eq!(c.kubectl_ok(&["logs", "t"]), "hi\n");
    let pod = json(&c.kubectl_ok(&["get", "pod", "t", "-o", "json"]));
    assert_eq!(pod["status"]["phase"], "Succeeded");
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        (terminated["exitCode"].as_i64(), terminated["reason"].as_str()),
        (Some(0), Some("Completed"))
    );
    assert!(pod["status"]["podIP"].as_str().unwrap().starts_with("10.244."), "{pod}");
    assert_eq!(pod["status"]["hostIP"], node.ip.as_str());
    let seen = reasons(&c, "t");
    for reason in ["Scheduled", "Pulling", "PulledLocalCopy", "Created", "Started"] {
        assert!(seen.iter().any(|r| r == reason), "{reason} not in {seen:?}");
    }

    // Environment from the pod's fields and a ConfigMap that appears later, as a volume.
    c.apply(
        "apiVersion: v1
kind: Pod
metadata: {name: reader, labels: {app: reader}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'echo \"$POD_NAME on $NODE: $(cat /config/greeting)\"']
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    volumeMounts: [{name: config, mountPath: /config}]
  volumes:
  - {name: config, configMap: {name: greetings}}
",
    );
    eventually("FailedMount for the missing ConfigMap", START, || {
        let seen = reasons(&c, "reader");
        if seen.iter().any(|r| r == "FailedMount") {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    assert_eq!(status(&c, "reader"), "ContainerCreating");
    c.kubectl_ok(&["create", "configmap", "greetings", "--from-literal=greeting=hello"]);
    wait_status(&c, &node, "reader", "Completed");
    assert_eq!(c.kubectl_ok(&["logs", "reader"]), "reader on node-1: hello\n");

    // A claim bound to a hostPath volume, and an emptyDir in memory sized by its sizeLimit
    // (a tmpfs, unmounted when the pod goes).
    let pv_dir = node.dir().join("pv");
    std::fs::create_dir_all(&pv_dir).unwrap();
    std::fs::write(pv_dir.join("hello"), "from-host\n").unwrap();
    c.apply(&format!(
        "apiVersion: v1
kind: PersistentVolume
metadata: {{name: data-pv}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  hostPath: {{path: {}}}
  claimRef: {{namespace: default, name: data}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
  volumeName: data-pv
---
apiVersion: v1
kind: Pod
metadata: {{name: volumes}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'cat /data/hello; grep \" /mem \" /proc/mounts | cut -d\" \" -f3; df -k /mem | tail -1 | awk \"{{print \\$2}}\"; echo from-pod > /data/out; cat /tok/token; echo']
    volumeMounts: [{{name: data, mountPath: /data}}, {{name: mem, mountPath: /mem}}, {{name: tok, mountPath: /tok}}]
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: data}}}}
  - {{name: mem, emptyDir: {{medium: Memory, sizeLimit: 16Mi}}}}
  - name: tok
    projected:
      sources: [{{serviceAccountToken: {{path: token, audience: vault, expirationSeconds: 600}}}}]
",
        pv_dir.display()
    ));
    wait_status(&c, &node, "volumes", "Completed");
    let logs = c.kubectl_ok(&["logs", "volumes"]);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines[..3], ["from-host", "tmpfs", "16384"], "{logs}");
    // The projected token: a JWT from TokenRequest, for its audience, bound to the pod.
    let decoded = std::process::Command::new("python3")
        .args([
            "-c",
            "import base64, sys; p = sys.argv[1].split('.')[1]; print(base64.urlsafe_b64decode(p + '=' * (-len(p) % 4)).decode())",
            lines[3],
        ])
        .output()
        .unwrap();
    let claims = json(&String::from_utf8_lossy(&decoded.stdout));
    assert_eq!(claims["sub"], "system:serviceaccount:default:default", "{claims}");
    assert_eq!(claims["aud"][0], "vault", "{claims}");
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], "volumes", "{claims}");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 600);
    // TokenRequest as kubectl create token uses it, and its bad input.
    assert_eq!(
        c.kubectl_ok(&["create", "token", "default"]).trim().split('.').count(),
        3
    );
    let short = c.kubectl_err(&["create", "token", "default", "--duration=1m"]);
    assert!(short.contains("less than 10 minutes"), "{short}");
    let missing = c.kubectl_err(&["create", "token", "nobody"]);
    assert!(missing.contains("serviceaccounts \"nobody\" not found"), "{missing}");
    assert_eq!(std::fs::read_to_string(pv_dir.join("out")).unwrap(), "from-pod\n");
    let pods_dir = node.dir().join("agent").join("pods");
    let mounted_below = |dir: &std::path::Path| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| {
                l.split(' ')
                    .nth(4)
                    .is_some_and(|p| p.starts_with(&*dir.to_string_lossy()))
            })
            .count()
    };
    assert_eq!(mounted_below(&pods_dir), 1, "the memory emptyDir is a mount");
    c.kubectl_ok(&["delete", "pod", "volumes"]);
    eventually("the tmpfs is unmounted with its pod", START, || {
        match mounted_below(&pods_dir) {
            0 => Ok(()),
            n => Err(format!("{n} mounts left")),
        }
    });

    // A container that keeps failing backs off, and says how it ended.
    c.kubectl_ok(&[
        "run",
        "crash",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "echo dying; exit 3",
    ]);
    wait_status(&c, &node, "crash", "CrashLoopBackOff");
    let pod = json(&c.kubectl_ok(&["get", "pod", "crash", "-o", "json"]));
    let container = &pod["status"]["containerStatuses"][0];
    assert!(container["restartCount"].as_i64().unwrap() >= 1, "{container}");
    assert_eq!(container["lastState"]["terminated"]["exitCode"], 3, "{container}");
    assert!(
        container["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .starts_with("back-off 10s restarting failed container=crash"),
        "{container}"
    );
    assert_eq!(c.kubectl_ok(&["logs", "crash"]), "dying\n");

    // A command the image does not have: RunContainerError with the runtime's message (a
    // moment: the next sync finds the container in back-off), then CrashLoopBackOff.
    c.kubectl_ok(&[
        "run",
        "nocommand",
        "--image=busybox",
        "--command",
        "--",
        "/no/such/binary",
    ]);
    wait_status(&c, &node, "nocommand", "CrashLoopBackOff");
    let pod = json(&c.kubectl_ok(&["get", "pod", "nocommand", "-o", "json"]));
    let last = &pod["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(
        (last["exitCode"].as_i64(), last["reason"].as_str()),
        (Some(128), Some("StartError")),
        "{pod}"
    );
    let events = json(&c.kubectl_ok(&[
        "get",
        "events",
        "--field-selector=involvedObject.name=nocommand,reason=Failed",
        "-o",
        "json",
    ]));
    let messages: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("Error: ") && m.contains("/no/such/binary")),
        "{messages:?}"
    );

    // An image no registry can give: ErrImagePull, then ImagePullBackOff, others unharmed.
    c.kubectl_ok(&["run", "missing", "--image=docker.io/library/not-there:1.0"]);
    eventually("the pull fails", START, || {
        let seen = status(&c, "missing");
        if seen == "ErrImagePull" || seen == "ImagePullBackOff" {
            Ok(())
        } else {
            Err(seen)
        }
    });
    wait_status(&c, &node, "missing", "ImagePullBackOff");
    let logs = c.kubectl(&["logs", "missing"]);
    // The reason alternates between the two as pulls are retried.
    assert!(
        String::from_utf8_lossy(&logs.stderr).contains("is waiting to start: ImagePullBackOff")
            || String::from_utf8_lossy(&logs.stderr).contains("is waiting to start: ErrImagePull"),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    c.kubectl_ok(&["run", "after", "--image=busybox", "--restart=Never", "--", "true"]);
    wait_status(&c, &node, "after", "Completed");

    node_images_are_listed_removed_and_imported(&node, images.path());
}

/// `styrman images ls|rm|import` on the node's own containerd.
fn node_images_are_listed_removed_and_imported(node: &Node, archives: &std::path::Path) {
    let images = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_styrman"))
            .arg("images")
            .args(args)
            .arg(format!("--data-dir={}", node.dir().display()))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let listed = |text: &str, repository: &str| {
        text.lines()
            .any(|l| l.split_whitespace().take(2).collect::<Vec<_>>() == [repository, "latest"])
    };
    let (ok, ls) = images(&["ls"]);
    assert!(ok && ls.starts_with("IMAGE "), "{ls}");
    assert!(
        listed(&ls, "docker.io/library/busybox") && listed(&ls, "docker.io/library/nginx"),
        "{ls}"
    );
    let (ok, out) = images(&["rm", "docker.io/library/nginx:latest"]);
    assert!(ok && out.contains("Deleted: docker.io/library/nginx:latest"), "{out}");
    assert!(!listed(&images(&["ls"]).1, "docker.io/library/nginx"));
    let (ok, out) = images(&["rm", "docker.io/library/nginx:latest"]);
    assert!(!ok && out.contains("no such image"), "{out}");
    let archive = archives.join("nginx.tar");
    let (ok, out) = images(&["import", archive.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(listed(&images(&["ls"]).1, "docker.io/library/nginx"));
}

/// `styrman agent` with a token that is not the server's, or that pins another CA: refused
/// before the node does anything.
fn a_join_with_a_wrong_token_is_refused(c: &Cluster) {
    let token = std::fs::read_to_string(c.data_dir().join("node-token")).unwrap();
    let (pinned, _secret) = token.trim().rsplit_once(':').unwrap();
    let other_ca = format!("K10{}::node:x", "0".repeat(64));
    for (token, expect) in [
        (format!("{pinned}:wrong"), "refused the join token"),
        (other_ca, "does not match the join token's hash"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_styrman"))
            .args([
                "agent",
                &format!("--token={token}"),
                "--node-ip=127.0.0.1",
                "--hostname-override=intruder",
            ])
            .arg(format!("--server=https://127.0.0.1:{}", c.port()))
            .arg(format!("--data-dir={}", dir.path().display()))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expect), "{stderr}");
        assert!(!dir.path().join("agent/pki").exists(), "nothing is issued");
    }
}

#[test]
fn a_deployment_serves_survives_an_agent_kill_and_goes_on_delete() {
    // This node joined with the server's token (styrman agent), as another machine would.
    let (c, mut node, _images) = start_node_cluster(true);
    a_join_with_a_wrong_token_is_refused(&c);
    c.kubectl_ok(&["create", "deployment", "web", "--image=nginx", "--replicas=2"]);
    let running = |c: &Cluster| -> Vec<(String, String, String)> {
        let pods = json(&c.kubectl_ok(&["get", "pods", "-l", "app=web", "-o", "json"]));
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["status"]["containerStatuses"][0]["ready"] == true)
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["status"]["podIP"].as_str().unwrap_or("").to_string(),
                    p["status"]["containerStatuses"][0]["containerID"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect()
    };
    let mut pods = Vec::new();
    eventually("two nginx pods are ready", START, || {
        pods = running(&c);
        if pods.len() == 2 {
            Ok(())
        } else {
            Err(format!("{pods:?}\n{}", tail(&node.log())))
        }
    });
    pods.sort();
    // Another pod reaches nginx over the node's pod network.
    c.kubectl_ok(&[
        "run",
        "probe",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        // nginx may still be starting on a busy machine: a few tries.
        &format!(
            "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://{}/ && exit 0; sleep 1; done; exit 1",
            pods[0].1
        ),
    ]);
    wait_status(&c, &node, "probe", "Completed");
    assert!(c.kubectl_ok(&["logs", "probe"]).contains("Welcome to nginx!"));

    // The agent dies and comes back: the same containers, nothing started twice.
    let tasks_before = {
        let mut t = node.tasks();
        t.sort();
        t
    };
    node.kill_kubelet();
    node.start_kubelet().unwrap();
    eventually("the agent is back and posts status", START, || {
        let log = node.log();
        if log.matches("node registered").count() >= 2 {
            Ok(())
        } else {
            Err(tail(&log))
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    let mut after = running(&c);
    after.sort();
    assert_eq!(after, pods, "the pods' containers changed across the agent's restart");
    let mut tasks_after = node.tasks();
    tasks_after.sort();
    assert_eq!(
        tasks_after,
        tasks_before,
        "{}\n{}",
        tail(&node.log()),
        tail(&node.containerd_log())
    );

    // A rolling update: new pods replace the old, the Deployment completes.
    c.kubectl_ok(&["set", "env", "deployment/web", "ROLLED=yes"]);
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    eventually("two new pods serve, the old ones gone", START, || {
        let rolled = running(&c);
        match rolled.len() == 2 && rolled.iter().all(|p| !pods.contains(p)) {
            true => Ok(()),
            false => Err(format!("{rolled:?} (before: {pods:?})")),
        }
    });

    // Deleting the deployment stops and removes its pods' containers.
    c.kubectl_ok(&["delete", "deployment", "web"]);
    c.kubectl_ok(&["delete", "pod", "probe"]);
    eventually("the pods are gone", START, || {
        let left = c.kubectl_ok(&["get", "pods", "-o", "name"]);
        if left.trim().is_empty() { Ok(()) } else { Err(left) }
    });
    eventually("nothing runs on the node", START, || {
        let tasks = node.tasks();
        if tasks.is_empty() {
            Ok(())
        } else {
            Err(format!("{tasks:?}"))
        }
    });
}

/// What a node does on its own: static pods from files, and containerd dying or hanging
/// under it.
#[test]
fn static_pods_run_and_the_node_outlives_its_containerd() {
    let (c, node, _images) = node_cluster();
    static_pods_run_from_files_and_show_as_mirror_pods(&c, &node);
    a_dying_or_hanging_containerd_makes_the_node_not_ready_until_it_answers(&c, &node);
}

/// The node's containerd killed: the agent starts it again, and what ran keeps running;
/// containerd hanging (stopped): the node goes NotReady, and Ready once it answers again.
fn a_dying_or_hanging_containerd_makes_the_node_not_ready_until_it_answers(c: &Cluster, node: &Node) {
    c.kubectl_ok(&["run", "steady", "--image=busybox", "--", "sleep", "3600"]);
    wait_status(c, node, "steady", "Running");
    let container_id = || {
        let pod = json(&c.kubectl_ok(&["get", "pod", "steady", "-o", "json"]));
        pod["status"]["containerStatuses"][0]["containerID"].clone()
    };
    let before = container_id();
    let config = node.dir().join("agent").join("containerd").join("config.toml");
    let containerd_pid = || {
        let out = std::process::Command::new("pgrep")
            .args(["-f", &format!("^containerd --config {}", config.display())])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().ok()
    };
    let first = containerd_pid().expect("the node's containerd runs");
    std::process::Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .unwrap();
    eventually("the agent starts containerd again", START, || match containerd_pid() {
        Some(pid) if pid != first => Ok(()),
        other => Err(format!("{other:?}")),
    });
    c.kubectl_ok(&[
        "run",
        "after-restart",
        "--image=busybox",
        "--restart=Never",
        "--",
        "true",
    ]);
    wait_status(c, node, "after-restart", "Completed");
    assert_eq!(container_id(), before, "the running container survived containerd");

    let node_ready = || {
        let node = json(&c.kubectl_ok(&["get", "node", "node-1", "-o", "json"]));
        let conditions = node["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let ready = conditions
            .into_iter()
            .find(|c| c["type"] == "Ready")
            .unwrap_or_default();
        (
            ready["status"].as_str().unwrap_or("").to_string(),
            ready["message"].as_str().unwrap_or("").to_string(),
        )
    };
    let hung = containerd_pid().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &hung])
        .status()
        .unwrap();
    eventually(
        "the node is NotReady while containerd hangs",
        START,
        || match node_ready() {
            (status, message) if status == "False" && message.contains("container runtime is down") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    std::process::Command::new("kill")
        .args(["-CONT", &hung])
        .status()
        .unwrap();
    eventually("the node is Ready again", START, || match node_ready() {
        (status, _) if status == "True" => Ok(()),
        other => Err(format!("{other:?}")),
    });
    c.kubectl_ok(&["delete", "pod", "steady", "after-restart", "--wait=false"]);
}

/// A manifest in the node's `agent/pod-manifests` runs without the API server and shows as a
/// mirror pod; deleting the mirror pod does not touch the containers; removing the file does.
fn static_pods_run_from_files_and_show_as_mirror_pods(c: &Cluster, node: &Node) {
    let manifest = node.dir().join("agent").join("pod-manifests").join("static.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1
kind: Pod
metadata: {name: static}
spec:
  containers:
  - {name: main, image: busybox, command: [sh, -c, 'echo static; sleep 3600']}
",
    )
    .unwrap();
    let mirror = |c: &Cluster| -> Option<serde_json::Value> {
        let out = c.kubectl(&["get", "pod", "static-node-1", "-o", "json"]);
        out.status
            .success()
            .then(|| json(&String::from_utf8_lossy(&out.stdout)))
    };
    let mut first = serde_json::Value::Null;
    eventually("the mirror pod shows the static pod running", START, || {
        first = mirror(c).unwrap_or_default();
        match first["status"]["containerStatuses"][0]["state"]["running"].is_object() {
            true => Ok(()),
            false => Err(format!("{first}\n{}", tail(&node.log()))),
        }
    });
    assert!(
        first["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string(),
        "{first}"
    );
    let owner = &first["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str()),
        (Some("Node"), Some("node-1"))
    );
    assert_eq!(c.kubectl_ok(&["logs", "static-node-1"]), "static\n");
    let container_id = first["status"]["containerStatuses"][0]["containerID"].clone();

    // Bounded: kubectl would wait forever for a mirror pod the kubelet never let go.
    c.kubectl_ok(&["delete", "pod", "static-node-1", "--timeout=90s"]);
    eventually("the mirror pod is made again, the container untouched", START, || {
        let again = mirror(c).unwrap_or_default();
        let status = &again["status"]["containerStatuses"][0];
        if again["metadata"]["uid"] != first["metadata"]["uid"] && status["containerID"] == container_id {
            assert_eq!(status["restartCount"], 0, "{again}");
            Ok(())
        } else {
            Err(format!("{again}"))
        }
    });

    std::fs::remove_file(&manifest).unwrap();
    eventually("the static pod stops and its mirror goes", START, || {
        let tasks = node.tasks();
        match (mirror(c), tasks.is_empty()) {
            (None, true) => Ok(()),
            (m, _) => Err(format!("{m:?} {tasks:?}")),
        }
    });
}

/// The text kubectl printed before `needle` appeared on its stdout, read line by line from a
/// child that keeps running (`port-forward`, `attach`); panics after `START`.
fn read_until(child: &mut std::process::Child, needle: &str) -> String {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end even once nobody listens: a closed pipe would kill kubectl with
        // SIGPIPE at its next line ("Handling connection for ...").
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + START;
    while std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(needle) {
                return seen;
            }
        }
    }
    panic!("{needle:?} never came; kubectl printed:\n{seen}");
}

#[test]
fn exec_cp_attach_port_forward_then_a_cleanup_that_leaves_nothing() {
    let (c, mut node, _images) = node_cluster();
    c.kubectl_ok(&["run", "shell", "--image=busybox", "--", "sleep", "3600"]);
    // A host port, so the CNI portmap plugin has NAT rules for the clean-up to remove.
    c.apply(
        "apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: web
    image: nginx
    ports: [{containerPort: 80, hostPort: 8080}]
    readinessProbe: {httpGet: {port: 80}, periodSeconds: 1}
",
    );
    c.kubectl_ok(&[
        "run",
        "ticker",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done",
    ]);
    for pod in ["shell", "web", "ticker"] {
        wait_status(&c, &node, pod, "Running");
    }
    // nginx answers (a BestEffort pod may start slowly on a busy machine).
    c.kubectl_ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);

    // exec: output, exit codes, stdin to its end.
    // kubectl speaks WebSocket v5 first, translated to SPDY for the node: no fallback.
    let out = c.kubectl(&["exec", "-v=6", "shell", "--", "echo", "inside"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "inside\n");
    let logged = String::from_utf8_lossy(&out.stderr);
    let upgrades: Vec<&str> = logged.lines().filter(|l| l.contains("/exec?")).collect();
    assert!(
        upgrades.iter().any(|l| l.contains("verb=\"GET\"") && l.contains("101"))
            && !upgrades.iter().any(|l| l.contains("verb=\"POST\"")),
        "exec fell back from WebSocket v5:\n{logged}"
    );
    let failed = c.kubectl(&["exec", "shell", "--", "sh", "-c", "echo bye; exit 3"]);
    assert_eq!(failed.status.code(), Some(3), "{failed:?}");
    assert_eq!(String::from_utf8_lossy(&failed.stdout), "bye\n");
    let counted = c.kubectl_stdin(&["exec", "-i", "shell", "--", "wc", "-c"], "twelve bytes");
    assert_eq!(String::from_utf8_lossy(&counted.stdout).trim(), "12", "{counted:?}");

    // cp both ways (tar through exec with stdin).
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("note.txt");
    std::fs::write(&local, "copied in and out\n").unwrap();
    c.kubectl_ok(&["cp", local.to_str().unwrap(), "shell:/tmp/note.txt"]);
    assert_eq!(
        c.kubectl_ok(&["exec", "shell", "--", "cat", "/tmp/note.txt"]),
        "copied in and out\n"
    );
    let back = dir.path().join("back.txt");
    c.kubectl_ok(&["cp", "shell:/tmp/note.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in and out\n");

    // Bad input: a container the pod does not have is a 400 with upstream's message.
    let missing = c.kubectl_err(&["exec", "shell", "-c", "nope", "--", "true"]);
    assert!(
        missing.contains("container nope is not valid for pod shell"),
        "{missing}"
    );

    // A terminal: kubectl exec -it under a pseudo-terminal of its own (script).
    let out = std::process::Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "kubectl --kubeconfig {} exec -it shell -- tty",
            c.kubeconfig().display()
        ))
        .arg("/dev/null")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("/dev/pts/"), "{text}");

    // kubectl debug: an ephemeral container in the target container's process namespace.
    c.kubectl_ok(&[
        "debug",
        "shell",
        "--image=busybox",
        "--target=shell",
        "--container=debugger",
        "--profile=general",
        "--",
        "sh",
        "-c",
        "ps -o comm | grep -x sleep && echo sees-the-target",
    ]);
    eventually("the ephemeral container ran", START, || {
        let pod = json(&c.kubectl_ok(&["get", "pod", "shell", "-o", "json"]));
        let status = &pod["status"]["ephemeralContainerStatuses"][0];
        match status["state"]["terminated"]["exitCode"].as_i64() {
            Some(0) => Ok(()),
            _ => Err(format!("{status}\n{}", tail(&node.log()))),
        }
    });
    assert_eq!(
        c.kubectl_ok(&["logs", "shell", "-c", "debugger"]),
        "sleep\nsees-the-target\n"
    );
    let changed = c.kubectl_err(&[
        "patch",
        "pod",
        "shell",
        "--subresource=ephemeralcontainers",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/ephemeralContainers/0/image", "value": "nginx"}]"#,
    ]);
    assert!(changed.contains("may not be changed"), "{changed}");

    // attach: the running container's output as it comes.
    let mut attach = c
        .kubectl_command(&["attach", "ticker"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let seen = read_until(&mut attach, "tick");
    attach.kill().unwrap();
    attach.wait().unwrap();
    assert!(seen.contains("tick "), "{seen}");

    // port-forward: a local port reaches nginx's port 80 inside the pod's network, through
    // the WebSocket tunnel kubectl tries first (-v=6 logs each request and its answer).
    let requests = dir.path().join("port-forward.log");
    let mut forward = c
        .kubectl_command(&["port-forward", "-v=6", "pod/web", ":80"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&requests).unwrap())
        .spawn()
        .unwrap();
    let printed = read_until(&mut forward, "Forwarding from 127.0.0.1:");
    let port: u16 = printed
        .lines()
        .find_map(|l| l.strip_prefix("Forwarding from 127.0.0.1:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {printed:?}"));
    let page = {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n").unwrap();
        let mut page = String::new();
        tcp.read_to_string(&mut page).unwrap();
        page
    };
    forward.kill().unwrap();
    forward.wait().unwrap();
    assert!(page.contains("Welcome to nginx!"), "{page}");
    let logged = std::fs::read_to_string(&requests).unwrap();
    let upgrades: Vec<&str> = logged.lines().filter(|l| l.contains("/portforward")).collect();
    assert!(
        upgrades.iter().any(|l| l.contains("verb=\"GET\"") && l.contains("101"))
            && !upgrades.iter().any(|l| l.contains("verb=\"POST\"")),
        "the tunnel was not used:\n{}",
        upgrades.join("\n")
    );

    // The Python client: WebSocket exec (exit code, stdin) and port-forward.
    let script = format!("{}/tests/python/streams.py", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .args([
            script.as_str(),
            c.kubeconfig().to_str().unwrap(),
            "default",
            "shell",
            "web",
        ])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(&node.log())
    );
    for check in ["exec ok", "stdin-exit ok", "tty ok", "portforward ok"] {
        assert!(stdout.lines().any(|l| l == check), "{check} missing:\n{stdout}");
    }

    // Stats through the API server's nodes/proxy: the summary and the resource metrics
    // metrics-server reads.
    let summary = json(&c.kubectl_ok(&["get", "--raw", "/api/v1/nodes/node-1/proxy/stats/summary"]));
    assert_eq!(summary["node"]["nodeName"], "node-1");
    assert!(
        summary["node"]["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0),
        "{summary}"
    );
    assert!(summary["node"]["fs"]["capacityBytes"].as_u64() > Some(0), "{summary}");
    let shell = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "shell")
        .unwrap_or_else(|| panic!("no shell pod in {summary}"))
        .clone();
    assert_eq!(shell["containers"][0]["name"], "shell", "{shell}");
    assert!(
        shell["containers"][0]["memory"]["workingSetBytes"].as_u64() > Some(0),
        "{shell}"
    );
    assert!(
        shell["containers"][0]["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0),
        "{shell}"
    );
    assert!(
        shell["memory"]["workingSetBytes"].as_u64() > Some(0),
        "the pod cgroup: {shell}"
    );
    let metrics = c.kubectl_ok(&["get", "--raw", "/api/v1/nodes/node-1/proxy/metrics/resource"]);
    for family in [
        "container_cpu_usage_seconds_total{container=\"shell\",namespace=\"default\",pod=\"shell\"}",
        "container_memory_working_set_bytes{container=\"shell\",namespace=\"default\",pod=\"shell\"}",
        "node_cpu_usage_seconds_total ",
        "node_memory_working_set_bytes ",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(family)),
            "{family} missing:\n{metrics}"
        );
    }
    // The kubelet's own metrics: what ran here is counted.
    let metrics = c.kubectl_ok(&["get", "--raw", "/api/v1/nodes/node-1/proxy/metrics"]);
    let value = |name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(name));
        let line = line.unwrap_or_else(|| panic!("{name} missing:\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("kubelet_node_name{node=\"node-1\"}"), 1.0);
    assert!(value("kubelet_running_pods ") >= 1.0, "{metrics}");
    assert!(
        value("kubelet_running_containers{container_state=\"running\"}") >= 1.0,
        "{metrics}"
    );
    assert!(value("kubelet_started_pods_total ") >= 1.0, "{metrics}");
    assert!(
        value("kubelet_started_containers_total{container_type=\"container\"}") >= 1.0,
        "{metrics}"
    );
    assert!(value("kubelet_pod_start_duration_seconds_count ") >= 1.0, "{metrics}");
    assert!(value("process_resident_memory_bytes ") > 1e6, "{metrics}");

    // `styrman cleanup` after the agent's kill -9: no process, mount, bridge, NAT rule or
    // runtime state of the node is left, and the node, restarted, runs its pods again.
    let nat =
        |node: &Node| String::from_utf8_lossy(&node.run_inside("iptables-save", &["-t", "nat"]).stdout).to_string();
    let rules = nat(&node);
    assert!(rules.contains("styrman-pod-network"), "no host-port rules:\n{rules}");
    node.kill_kubelet();
    let styrman = env!("CARGO_BIN_EXE_styrman");
    let dir = node.dir().to_str().unwrap().to_string();
    let cleaned = node.run_inside(styrman, &["cleanup", "--data-dir", &dir]);
    let report = String::from_utf8_lossy(&cleaned.stdout).to_string();
    assert!(
        cleaned.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&cleaned.stderr)
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&dir), "mounts left:\n{report}");
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&dir))
        .collect();
    assert!(left.is_empty(), "processes left: {left:?}\n{report}");
    let rules = nat(&node);
    assert!(!rules.contains("styrman-pod-network"), "{rules}\n{report}");
    assert!(
        !node.run_inside("ip", &["link", "show", "styrman0"]).status.success(),
        "{report}"
    );
    assert!(!node.dir().join("agent/containerd/state").exists(), "{report}");
    assert!(report.contains("bridge styrman0: removed"), "{report}");
    let cgroups_removed: usize = report
        .lines()
        .find_map(|l| l.strip_prefix("pod cgroups removed: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(cgroups_removed > 0, "{report}");

    node.start_kubelet().unwrap();
    eventually("the cleaned node runs its pod again", START, || {
        let out = c.kubectl(&["exec", "shell", "--", "echo", "back"]);
        if String::from_utf8_lossy(&out.stdout) == "back\n" {
            Ok(())
        } else {
            Err(format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                tail(&node.log())
            ))
        }
    });
}

#[test]
fn probes_hooks_deadlines_and_resources_act_on_containers() {
    let (c, node, _images) = node_cluster();
    c.apply(
        "apiVersion: v1
kind: Service
metadata: {name: probed}
spec:
  selector: {app: probed}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: good, labels: {app: probed}}
spec:
  containers:
  - name: web
    image: nginx
    ports: [{name: http, containerPort: 80}]
    startupProbe: {tcpSocket: {port: 80}, periodSeconds: 1}
    readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: bad, labels: {app: probed}}
spec:
  containers:
  - name: web
    image: nginx
    readinessProbe: {httpGet: {path: /missing, port: 80}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: live}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'touch /tmp/alive; exec sleep 3600']
    livenessProbe: {exec: {command: [cat, /tmp/alive]}, periodSeconds: 1, failureThreshold: 2}
",
    );
    let ip = |name: &str| -> String {
        json(&c.kubectl_ok(&["get", "pod", name, "-o", "json"]))["status"]["podIP"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let ready_column = |name: &str| -> String {
        let out = c.kubectl_ok(&["get", "pod", name, "--no-headers"]);
        out.split_whitespace().nth(1).unwrap_or("").to_string()
    };
    eventually("good is ready, bad runs unready", START, || {
        let (good, bad) = (ready_column("good"), ready_column("bad"));
        if good == "1/1" && bad == "0/1" && status(&c, "bad") == "Running" {
            Ok(())
        } else {
            Err(format!("good {good}, bad {bad}\n{}", tail(&node.log())))
        }
    });
    // Still unready a while later: the probe keeps failing, it did not just start late.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ready_column("bad"), "0/1");
    let pod = json(&c.kubectl_ok(&["get", "pod", "good", "-o", "json"]));
    assert_eq!(pod["status"]["containerStatuses"][0]["started"], true, "{pod}");
    let events = c.kubectl_ok(&["get", "events", "--field-selector", "involvedObject.name=bad"]);
    assert!(
        events.contains("Readiness probe failed: HTTP probe failed with statuscode: 404"),
        "{events}"
    );

    // The Service's endpoints: the ready pod serves, the unready one waits aside.
    let (good_ip, bad_ip) = (ip("good"), ip("bad"));
    eventually("endpoints split by readiness", START, || {
        let endpoints = json(&c.kubectl_ok(&["get", "endpoints", "probed", "-o", "json"]));
        let subset = &endpoints["subsets"][0];
        let ips = |field: &str| -> Vec<String> {
            subset[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["ip"].as_str().map(str::to_string))
                .collect()
        };
        if ips("addresses") == [good_ip.clone()] && ips("notReadyAddresses") == [bad_ip.clone()] {
            Ok(())
        } else {
            Err(endpoints.to_string())
        }
    });
    let slices = json(&c.kubectl_ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=probed",
        "-o",
        "json",
    ]));
    let ready_of = |address: &str| -> Option<bool> {
        slices["items"]
            .as_array()?
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .find(|e| e["addresses"][0] == address)
            .and_then(|e| e["conditions"]["ready"].as_bool())
    };
    assert_eq!(
        (ready_of(&good_ip), ready_of(&bad_ip)),
        (Some(true), Some(false)),
        "{slices}"
    );

    // Liveness: once its file is gone the container is killed and started again.
    wait_status(&c, &node, "live", "Running");
    c.kubectl_ok(&["exec", "live", "--", "rm", "/tmp/alive"]);
    eventually("the unhealthy container restarted", START, || {
        let pod = json(&c.kubectl_ok(&["get", "pod", "live", "-o", "json"]));
        let s = &pod["status"]["containerStatuses"][0];
        if s["restartCount"].as_i64() >= Some(1) && s["state"]["running"].is_object() {
            Ok(())
        } else {
            Err(format!("{s}\n{}", tail(&node.log())))
        }
    });
    let events = c.kubectl_ok(&["get", "events", "--field-selector", "involvedObject.name=live"]);
    assert!(events.contains("Liveness probe failed"), "{events}");
    assert!(
        events.contains("Container main failed liveness probe, will be restarted"),
        "{events}"
    );
    // Back to health: the restarted container made its file again and stays up.
    std::thread::sleep(Duration::from_secs(4));
    let pod = json(&c.kubectl_ok(&["get", "pod", "live", "-o", "json"]));
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 1, "{pod}");

    // Lifecycle hooks: postStart runs in the container before it counts as started, preStop
    // before it stops (seen in a host directory after the pod is gone); a failing postStart
    // kills the container. And activeDeadlineSeconds fails a pod that runs too long.
    let host_dir = tempfile::tempdir().unwrap();
    c.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  terminationGracePeriodSeconds: 5
  volumes: [{{name: out, hostPath: {{path: {dir}}}}}]
  containers:
  - name: main
    image: busybox
    command: [sleep, '3600']
    volumeMounts: [{{name: out, mountPath: /out}}]
    lifecycle:
      postStart: {{exec: {{command: [sh, -c, 'echo started > /tmp/poststart']}}}}
      preStop: {{exec: {{command: [sh, -c, 'echo stopping > /out/prestop']}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: badhook}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: busybox
    command: [sleep, '3600']
    lifecycle:
      postStart: {{exec: {{command: ['false']}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: deadline}}
spec:
  activeDeadlineSeconds: 5
  terminationGracePeriodSeconds: 2
  containers:
  - {{name: main, image: busybox, command: [sleep, '3600']}}
",
        dir = host_dir.path().display()
    ));
    wait_status(&c, &node, "hooked", "Running");
    assert_eq!(
        c.kubectl_ok(&["exec", "hooked", "--", "cat", "/tmp/poststart"]),
        "started\n"
    );
    c.kubectl_ok(&["delete", "pod", "hooked"]);
    assert_eq!(
        std::fs::read_to_string(host_dir.path().join("prestop")).unwrap_or_default(),
        "stopping\n"
    );
    eventually("a failing postStart hook kills its container", START, || {
        let seen = reasons(&c, "badhook");
        let pod = json(&c.kubectl_ok(&["get", "pod", "badhook", "-o", "json"]));
        let restarts = pod["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0);
        if seen.iter().any(|r| r == "FailedPostStartHook") && restarts >= 1 {
            Ok(())
        } else {
            Err(format!("{seen:?} restarts {restarts}"))
        }
    });
    eventually("the pod past its deadline failed", START, || {
        let pod = json(&c.kubectl_ok(&["get", "pod", "deadline", "-o", "json"]));
        let status = &pod["status"];
        if status["phase"] == "Failed" && status["reason"] == "DeadlineExceeded" {
            Ok(())
        } else {
            Err(status.to_string())
        }
    });
    let pod = json(&c.kubectl_ok(&["get", "pod", "deadline", "-o", "json"]));
    assert_eq!(
        pod["status"]["message"],
        "Pod was active on the node longer than the specified deadline"
    );
    assert!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"].is_object(),
        "{pod}"
    );

    // Resources: a pod's containers sit in its cgroup under its QoS class, with the pod's
    // limits; one over its memory limit is OOMKilled; the cgroup goes with the pod.
    c.apply(
        "apiVersion: v1
kind: Pod
metadata: {name: burst}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: busybox
    command: [sleep, '3600']
    resources: {requests: {cpu: 100m}, limits: {memory: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'x=0123456789; while :; do x=\"$x$x\"; done']
    resources: {limits: {memory: 32Mi, cpu: 500m}}
",
    );
    wait_status(&c, &node, "burst", "Running");
    let uid = json(&c.kubectl_ok(&["get", "pod", "burst", "-o", "json"]))["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let cgroups = c.kubectl_ok(&["exec", "burst", "--", "cat", "/proc/self/cgroup"]);
    let memory_path = cgroups
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .unwrap_or_else(|| panic!("no memory cgroup in {cgroups}"));
    let marker = format!("/kubepods/burstable/pod{uid}/");
    let pod_dir = memory_path
        .find(&marker)
        .map(|at| format!("/sys/fs/cgroup/memory{}", &memory_path[..at + marker.len() - 1]))
        .unwrap_or_else(|| panic!("{memory_path} is not under {marker}"));
    assert_eq!(
        std::fs::read_to_string(format!("{pod_dir}/memory.limit_in_bytes"))
            .unwrap()
            .trim(),
        (64 * 1024 * 1024).to_string()
    );
    let cpu_dir = pod_dir.replace("/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu");
    assert_eq!(
        std::fs::read_to_string(format!("{cpu_dir}/cpu.shares")).unwrap().trim(),
        "102"
    );
    eventually("the hog is OOMKilled", START, || {
        let pod = json(&c.kubectl_ok(&["get", "pod", "hog", "-o", "json"]));
        let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
        if terminated["reason"] == "OOMKilled" && terminated["exitCode"] == 137 {
            Ok(())
        } else {
            Err(format!("{}\n{}", pod["status"], tail(&node.log())))
        }
    });
    assert_eq!(status(&c, "hog"), "OOMKilled");
    c.kubectl_ok(&["delete", "pod", "burst"]);
    eventually("the pod's cgroup is gone with it", START, || {
        if std::path::Path::new(&pod_dir).exists() || std::path::Path::new(&cpu_dir).exists() {
            Err(format!("{pod_dir} or {cpu_dir} remains"))
        } else {
            Ok(())
        }
    });
}
