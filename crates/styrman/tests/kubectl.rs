//! The real kubectl against a running `styrman server`: what users see.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::Value;
use styrman_testkit::Cluster;

fn cluster() -> Cluster {
    Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).expect("start styrman server")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-hpa
  labels: {app: nginx-hpa}
spec:
  replicas: 1
  selector:
    matchLabels: {app: nginx-hpa}
  template:
    metadata:
      labels: {app: nginx-hpa}
    spec:
      nodeSelector:
        kubernetes.io/arch: amd64
      containers:
      - name: nginx
        image: nginx
        ports:
        - containerPort: 80
        resources:
          requests: {cpu: 10m, memory: 50Mi}
"#;

#[test]
fn a_new_cluster_has_its_namespaces_and_reports_1_33() {
    let c = cluster();
    let out = c.kubectl_ok(&["get", "namespaces"]);
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"],
        "{out}"
    );
    assert!(
        out.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .eq(["NAME", "STATUS", "AGE"]),
        "{out}"
    );
    assert!(out.contains("Active"));
    let version = json(&c.kubectl_ok(&["version", "-o", "json"]));
    assert_eq!(version["serverVersion"]["minor"], "33");
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.33.0");
    // Pods find the API server through the kubernetes service.
    assert_eq!(
        c.kubectl_ok(&["get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"]),
        "10.96.0.1"
    );
    let endpoints = json(&c.kubectl_ok(&["get", "endpoints", "kubernetes", "-o", "json"]));
    assert_eq!(endpoints["subsets"][0]["ports"][0]["port"], c.port());
    assert!(
        c.kubectl_ok(&["cluster-info"])
            .contains(&format!("is running at https://127.0.0.1:{}", c.port()))
    );
}

#[test]
fn apply_twice_merges_strategically() {
    let c = cluster();
    assert!(c.apply(DEPLOYMENT).contains("deployment.apps/nginx-hpa created"));
    let created = json(&c.kubectl_ok(&["get", "deployment", "nginx-hpa", "-o", "json"]));
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(created["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));

    // Change the image and add an env var: the container keeps its ports and resources.
    let changed = DEPLOYMENT.replace(
        "image: nginx",
        "image: nginx:1.27\n        env:\n        - {name: MODE, value: fast}",
    );
    assert!(c.apply(&changed).contains("deployment.apps/nginx-hpa configured"));
    let live = json(&c.kubectl_ok(&["get", "deployment", "nginx-hpa", "-o", "json"]));
    let container = &live["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.27");
    assert_eq!(container["env"][0]["name"], "MODE");
    assert_eq!(container["ports"][0]["containerPort"], 80);
    assert_eq!(container["resources"]["requests"]["cpu"], "10m");
    assert_eq!(
        live["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/arch"],
        "amd64"
    );
    assert_eq!(live["metadata"]["generation"], 2, "a spec change bumps the generation");
    assert!(
        live["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > created["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .unwrap()
    );

    // Applying the same file again changes nothing.
    assert!(c.apply(&changed).contains("unchanged"));
    let again = json(&c.kubectl_ok(&["get", "deployment", "nginx-hpa", "-o", "json"]));
    assert_eq!(
        again["metadata"]["resourceVersion"],
        live["metadata"]["resourceVersion"]
    );

    // Table output has kubectl's columns.
    let table = c.kubectl_ok(&["get", "deploy", "-o", "wide"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert!(
        table.contains("nginx:1.27") && table.contains("app=nginx-hpa"),
        "{table}"
    );
}

#[test]
fn output_formats_labels_annotations_and_patches() {
    let c = cluster();
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: \"0644\"\n");
    assert_eq!(
        c.kubectl_ok(&["get", "cm", "settings", "-o", "name"]).trim(),
        "configmap/settings"
    );
    assert_eq!(
        c.kubectl_ok(&["get", "cm", "settings", "-o", "jsonpath={.data.mode}"]),
        "0644"
    );
    assert!(
        c.kubectl_ok(&["get", "cm", "settings", "-o", "yaml"])
            .contains("mode: \"0644\"")
    );

    c.kubectl_ok(&["label", "cm", "settings", "tier=backend"]);
    c.kubectl_ok(&["annotate", "cm", "settings", "owner=ops"]);
    let labelled = c.kubectl_ok(&["get", "cm", "-l", "tier=backend", "-o", "name"]);
    assert_eq!(labelled.trim(), "configmap/settings");
    assert!(
        c.kubectl_ok(&["get", "cm", "-l", "tier notin (backend)", "-o", "name"])
            .trim()
            .is_empty()
    );
    assert_eq!(
        c.kubectl_ok(&["get", "cm", "--field-selector", "metadata.name=settings", "-o", "name"])
            .trim(),
        "configmap/settings"
    );

    c.kubectl_ok(&["patch", "cm", "settings", "--type=merge", "-p", r#"{"data":{"a":"1"}}"#]);
    c.kubectl_ok(&[
        "patch",
        "cm",
        "settings",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/data/b","value":"2"}]"#,
    ]);
    c.kubectl_ok(&["patch", "cm", "settings", "-p", r#"{"data":{"c":"3"}}"#]);
    let data = json(&c.kubectl_ok(&["get", "cm", "settings", "-o", "jsonpath={.data}"]));
    assert_eq!(data, serde_json::json!({"mode": "0644", "a": "1", "b": "2", "c": "3"}));
    let meta = json(&c.kubectl_ok(&["get", "cm", "settings", "-o", "jsonpath={.metadata}"]));
    assert_eq!(meta["labels"]["tier"], "backend");
    assert_eq!(meta["annotations"]["owner"], "ops");

    c.kubectl_ok(&["label", "cm", "settings", "tier-"]);
    assert!(
        c.kubectl_ok(&["get", "cm", "-l", "tier", "-o", "name"])
            .trim()
            .is_empty()
    );
}

#[test]
fn errors_read_as_kubernetes_errors() {
    let c = cluster();
    let err = c.kubectl_err(&["get", "deployment", "nope"]);
    assert!(
        err.contains(r#"Error from server (NotFound): deployments.apps "nope" not found"#),
        "{err}"
    );

    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: twice\n";
    assert!(c.kubectl_stdin(&["create", "-f", "-"], cm).status.success());
    let again = c.kubectl_stdin(&["create", "-f", "-"], cm);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains(r#"Error from server (AlreadyExists)"#) && err.contains(r#"configmaps "twice" already exists"#),
        "{err}"
    );

    let bad = c.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_Valid\n",
    );
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains(r#"ConfigMap "Not_Valid" is invalid: metadata.name: Invalid value"#),
        "{err}"
    );

    let missing_ns = c.kubectl_stdin(&["create", "-n", "nowhere", "-f", "-"], cm);
    let err = String::from_utf8_lossy(&missing_ns.stderr);
    assert!(err.contains(r#"namespaces "nowhere" not found"#), "{err}");

    let err = c.kubectl_err(&["get", "pods", "-l", "a b"]);
    assert!(err.contains("unable to parse requirement"), "{err}");
    let err = c.kubectl_err(&["get", "cm", "--field-selector", "spec.nodeName=x"]);
    assert!(err.contains("field label not supported: spec.nodeName"), "{err}");

    let err = c.kubectl_err(&["delete", "namespace", "kube-system"]);
    assert!(err.contains("this namespace may not be deleted"), "{err}");
}

#[test]
fn requests_without_credentials_are_unauthorized() {
    let c = cluster();
    let anonymous = c.data_dir().join("anonymous.kubeconfig");
    std::fs::write(
        &anonymous,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    insecure-skip-tls-verify: true\n    server: https://127.0.0.1:{}\n  name: c\ncontexts:\n- context:\n    cluster: c\n    user: nobody\n  name: c\ncurrent-context: c\nusers:\n- name: nobody\n  user:\n    token: not-a-valid-token\n",
            c.port()
        ),
    )
    .unwrap();
    let anon = |args: &[&str]| c.kubectl_command(args).env("KUBECONFIG", &anonymous).output().unwrap();
    let out = anon(&["get", "namespaces"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "error: You must be logged in to the server (the server has asked for the client to provide credentials)"
        ),
        "{err}"
    );
    // Health and version stay open.
    assert_eq!(
        String::from_utf8(anon(&["get", "--raw", "/readyz"]).stdout).unwrap(),
        "ok"
    );
    assert!(anon(&["get", "--raw", "/version"]).status.success());
}

#[test]
fn watches_see_changes() {
    let c = cluster();
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\ndata:\n  v: \"1\"\n");
    let mut watch = c
        .kubectl_command(&[
            "get",
            "cm",
            "watched",
            "-w",
            "--output-watch-events",
            "-o",
            "jsonpath={.type} {.object.data.v}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ADDED 1");
    c.kubectl_ok(&["patch", "cm", "watched", "--type=merge", "-p", r#"{"data":{"v":"2"}}"#]);
    assert_eq!(lines.next().unwrap().unwrap(), "MODIFIED 2");
    c.kubectl_ok(&["delete", "cm", "watched"]);
    assert_eq!(lines.next().unwrap().unwrap(), "DELETED 2");
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn delete_and_wait() {
    let c = cluster();
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: short-lived\n");
    let out = c.kubectl_ok(&["delete", "cm", "short-lived"]);
    assert_eq!(out.trim(), r#"configmap "short-lived" deleted"#);
    c.kubectl_ok(&["wait", "--for=delete", "cm/short-lived", "--timeout=10s"]);
    let err = c.kubectl_err(&["get", "cm", "short-lived"]);
    assert!(err.contains("NotFound"), "{err}");
}

#[test]
fn discovery_api_resources_and_get_all() {
    let c = cluster();
    let resources = c.kubectl_ok(&["api-resources", "-o", "name"]);
    for name in [
        "pods",
        "deployments.apps",
        "leases.coordination.k8s.io",
        "clusterroles.rbac.authorization.k8s.io",
    ] {
        assert!(
            resources.lines().any(|l| l == name),
            "api-resources lacks {name}:\n{resources}"
        );
    }
    let short = c.kubectl_ok(&["api-resources"]);
    assert!(
        short
            .lines()
            .any(|l| l.starts_with("deployments") && l.contains("deploy") && l.contains("apps/v1")),
        "{short}"
    );
    c.apply(DEPLOYMENT);
    let all = c.kubectl_ok(&["get", "all"]);
    assert!(all.contains("deployment.apps/nginx-hpa"), "{all}");
    let versions = c.kubectl_ok(&["api-versions"]);
    assert!(
        versions.lines().any(|l| l == "apps/v1") && versions.lines().any(|l| l == "v1"),
        "{versions}"
    );
}

#[test]
fn cluster_roles_round_trip() {
    let c = cluster();
    let role = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: secret-reader
rules:
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "watch", "list"]
"#;
    assert!(
        c.apply(role)
            .contains("clusterrole.rbac.authorization.k8s.io/secret-reader created")
    );
    let live = json(&c.kubectl_ok(&["get", "clusterrole", "secret-reader", "-o", "json"]));
    assert_eq!(live["rules"][0]["resources"], serde_json::json!(["secrets"]));
    assert_eq!(live["rules"][0]["verbs"], serde_json::json!(["get", "watch", "list"]));
    assert!(
        live["metadata"].get("namespace").is_none(),
        "cluster-scoped objects have no namespace"
    );
}

#[test]
fn paginated_lists_are_consistent() {
    let c = cluster();
    for i in 0..7 {
        c.apply(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: page-{i}\n"
        ));
    }
    let out = c.kubectl_ok(&["get", "cm", "--chunk-size=2", "-o", "name"]);
    let names: Vec<&str> = out.lines().collect();
    assert_eq!(names.len(), 7, "{out}");
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted by name: {out}");
}

const NODEPORT_SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: nginx-hpa
spec:
  type: NodePort
  selector: {app: nginx-hpa}
  ports:
  - port: 80
    nodePort: 30001
"#;

#[test]
fn services_get_addresses_and_clear_conflicts() {
    let c = cluster();
    assert!(c.apply(NODEPORT_SERVICE).contains("service/nginx-hpa created"));
    let svc = json(&c.kubectl_ok(&["get", "svc", "nginx-hpa", "-o", "json"]));
    let ip = svc["spec"]["clusterIP"].as_str().unwrap();
    assert!(ip.starts_with("10.96."), "{ip}");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30001);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80, "targetPort defaults to port");
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
    let table = c.kubectl_ok(&["get", "svc", "nginx-hpa"]);
    assert!(table.contains("80:30001/TCP") && table.contains("NodePort"), "{table}");

    // Another service asking for the same node port is refused, naming the field.
    let clash = NODEPORT_SERVICE.replace("name: nginx-hpa\nspec", "name: other\nspec");
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &clash);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.ports[0].nodePort: Invalid value: 30001: provided port is already allocated"),
        "{err}"
    );

    // A plain ClusterIP service gets a different address and no node port.
    c.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: plain\nspec:\n  ports:\n  - port: 8080\n");
    let plain = json(&c.kubectl_ok(&["get", "svc", "plain", "-o", "json"]));
    assert_ne!(plain["spec"]["clusterIP"], svc["spec"]["clusterIP"]);
    assert!(plain["spec"]["ports"][0].get("nodePort").is_none());

    // Re-applying keeps the addresses.
    assert!(c.apply(NODEPORT_SERVICE).contains("unchanged"));
}

#[test]
fn scale_and_defaults() {
    let c = cluster();
    c.apply(DEPLOYMENT);
    let d = json(&c.kubectl_ok(&["get", "deploy", "nginx-hpa", "-o", "json"]));
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(
        pod["containers"][0]["imagePullPolicy"], "Always",
        "an untagged image is pulled always"
    );

    assert!(
        c.kubectl_ok(&["scale", "deploy", "nginx-hpa", "--replicas=4"])
            .contains("scaled")
    );
    assert_eq!(
        c.kubectl_ok(&["get", "deploy", "nginx-hpa", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );
    let scale = json(&c.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/nginx-hpa/scale",
    ]));
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 4);
    assert_eq!(scale["status"]["selector"], "app=nginx-hpa");
    // A stale resource version on the Scale is a conflict.
    let err = c.kubectl_err(&["scale", "deploy", "nginx-hpa", "--replicas=2", "--resource-version=1"]);
    assert!(err.contains("Expected resource version to be 1"), "{err}");
}

#[test]
fn imperative_generators_send_protobuf() {
    let c = cluster();
    assert!(
        c.kubectl_ok(&[
            "create",
            "deployment",
            "web2",
            "--image=nginx:1.27",
            "--replicas=2",
            "--port=80"
        ])
        .contains("created")
    );
    c.kubectl_ok(&["create", "namespace", "team-a"]);
    c.kubectl_ok(&["create", "configmap", "c1", "--from-literal=a=b"]);
    c.kubectl_ok(&["create", "secret", "generic", "s1", "--from-literal=a=b"]);
    c.kubectl_ok(&["create", "service", "nodeport", "np", "--tcp=80:8080"]);
    c.kubectl_ok(&["create", "clusterrole", "node-reader", "--verb=get", "--resource=nodes"]);

    let d = json(&c.kubectl_ok(&["get", "deploy", "web2", "-o", "json"]));
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web2");
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (container["name"].as_str(), container["image"].as_str()),
        (Some("nginx"), Some("nginx:1.27"))
    );
    assert_eq!(container["ports"][0]["containerPort"], 80);
    assert_eq!(d["metadata"]["generation"], 1);
    assert!(
        d["metadata"]["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    assert_eq!(
        c.kubectl_ok(&["get", "ns", "team-a", "-o", "jsonpath={.status.phase}"]),
        "Active"
    );
    assert_eq!(c.kubectl_ok(&["get", "cm", "c1", "-o", "jsonpath={.data.a}"]), "b");
    assert_eq!(
        c.kubectl_ok(&["get", "secret", "s1", "-o", "jsonpath={.data.a}"]),
        "Yg=="
    );
    assert_eq!(
        c.kubectl_ok(&["get", "secret", "s1", "-o", "jsonpath={.type}"]),
        "Opaque"
    );
    let svc = json(&c.kubectl_ok(&["get", "svc", "np", "-o", "json"]));
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert!(
        svc["spec"]["ports"][0]["nodePort"]
            .as_i64()
            .is_some_and(|p| (30000..=32767).contains(&p))
    );
    let role = json(&c.kubectl_ok(&["get", "clusterrole", "node-reader", "-o", "json"]));
    assert_eq!(role["rules"][0]["resources"], serde_json::json!(["nodes"]));
}

#[test]
fn explain_reads_the_openapi_schemas() {
    let c = cluster();
    let out = c.kubectl_ok(&["explain", "deployment.spec.strategy"]);
    assert!(
        out.contains("KIND:       Deployment") && out.contains("GROUP:      apps"),
        "{out}"
    );
    assert!(
        out.contains("rollingUpdate") && out.contains("Type of deployment"),
        "{out}"
    );
    let out = c.kubectl_ok(&["explain", "pod.spec.containers.ports"]);
    assert!(
        out.contains("containerPort") && out.contains("<integer> -required-"),
        "{out}"
    );
}

#[test]
fn unknown_fields_are_refused_when_strict_and_dropped_with_a_warning_otherwise() {
    let c = cluster();
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: odd\nbogusField: 1\ndata:\n  a: b\n";
    let strict = c.kubectl_stdin(&["create", "-f", "-"], manifest);
    let err = String::from_utf8_lossy(&strict.stderr);
    assert!(
        err.contains(r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "bogusField""#),
        "{err}"
    );
    let warned = c.kubectl_stdin(&["create", "--validate=warn", "-f", "-"], manifest);
    assert!(warned.status.success());
    assert!(String::from_utf8_lossy(&warned.stderr).contains(r#"Warning: unknown field "bogusField""#));
    let stored = json(&c.kubectl_ok(&["get", "cm", "odd", "-o", "json"]));
    assert!(stored.get("bogusField").is_none(), "unknown fields are not stored");
    assert_eq!(stored["data"]["a"], "b");
}

#[test]
fn managed_fields_record_who_set_what() {
    let c = cluster();
    c.apply(DEPLOYMENT);
    c.kubectl_ok(&["scale", "deploy", "nginx-hpa", "--replicas=3"]);
    c.kubectl_ok(&["label", "deploy", "nginx-hpa", "team=web"]);
    let d = json(&c.kubectl_ok(&["get", "deploy", "nginx-hpa", "-o", "json", "--show-managed-fields"]));
    let entries = d["metadata"]["managedFields"].as_array().expect("managedFields");
    let entry = |manager: &str| {
        entries
            .iter()
            .find(|e| e["manager"] == manager)
            .unwrap_or_else(|| panic!("no {manager}: {entries:?}"))
    };
    let applied = entry("kubectl-client-side-apply");
    assert_eq!(applied["operation"], "Update");
    assert_eq!(applied["fieldsType"], "FieldsV1");
    assert!(
        applied["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"]["f:image"]
            .is_object()
    );
    assert!(
        applied["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
        "scale took replicas over"
    );
    let scaled = entry("kubectl");
    assert_eq!(scaled["subresource"], "scale");
    assert!(scaled["fieldsV1"]["f:spec"]["f:replicas"].is_object());
    assert!(entry("kubectl-label")["fieldsV1"]["f:metadata"]["f:labels"]["f:team"].is_object());
    // kubectl hides them by default, as it does against Kubernetes.
    assert!(
        !c.kubectl_ok(&["get", "deploy", "nginx-hpa", "-o", "yaml"])
            .contains("managedFields")
    );
}

#[test]
fn streaming_lists_end_their_initial_events_with_a_bookmark() {
    let c = cluster();
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: first\n");
    let out = c.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1",
    ]);
    let events: Vec<Value> = out.lines().map(json).collect();
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "first");
    let bookmark = &events[1];
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(
        bookmark["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert!(
        bookmark["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 0
    );

    let err = c.kubectl_err(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true",
    ]);
    assert!(err.contains("sendInitialEvents is forbidden"), "{err}");
}

#[test]
fn compacted_history_gives_410_to_old_watches() {
    let c = Cluster::start_with(
        env!("CARGO_BIN_EXE_styrman").as_ref(),
        &["--etcd-compaction-interval=1s"],
    )
    .unwrap();
    for i in 0..3 {
        c.apply(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{i}\n"));
    }
    // Compaction runs every second, to the revision of a second before: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = c.kubectl_ok(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=1&timeoutSeconds=1",
        ]);
        if let Some(line) = out.lines().next()
            && json(line)["type"] == "ERROR"
        {
            let status = &json(line)["object"];
            assert_eq!(
                (status["code"].as_i64(), status["reason"].as_str()),
                (Some(410), Some("Expired")),
                "{status}"
            );
            assert!(
                status["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("too old resource version: 1"),
                "{status}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no compaction happened:\n{}",
            c.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// curl with the admin's client certificate, for requests kubectl cannot make.
fn curl(c: &Cluster, args: &[&str]) -> (u16, String) {
    let pki = c.data_dir().join("pki");
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"))
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert!(
        !body.is_empty(),
        "curl {args:?}: no body (code {code}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code.parse().unwrap(), body.to_string())
}

#[test]
fn bad_requests_get_their_status() {
    let c = cluster();
    let base = format!("https://127.0.0.1:{}", c.port());
    let pods = format!("{base}/api/v1/namespaces/default/pods");
    let status =
        |body: &str| serde_json::from_str::<Value>(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));

    let (code, body) = curl(
        &c,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            "{not json",
            &pods,
        ],
    );
    assert_eq!(
        (code, status(&body)["reason"].as_str()),
        (400, Some("BadRequest")),
        "{body}"
    );

    let (code, body) = curl(
        &c,
        &["-X", "POST", "-H", "Content-Type: text/plain", "--data", "x", &pods],
    );
    assert_eq!(
        (code, status(&body)["reason"].as_str()),
        (415, Some("UnsupportedMediaType")),
        "{body}"
    );

    let big = c.data_dir().join("big.json");
    std::fs::write(&big, format!("{{\"kind\":\"ConfigMap\",\"apiVersion\":\"v1\",\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"a\":\"{}\"}}}}", "x".repeat(3 * 1024 * 1024 + 10))).unwrap();
    let (code, body) = curl(
        &c,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", big.display()),
            &format!("{base}/api/v1/namespaces/default/configmaps"),
        ],
    );
    assert_eq!(
        (code, status(&body)["reason"].as_str()),
        (413, Some("RequestEntityTooLarge")),
        "{body}"
    );
    assert!(
        c.kubectl_err(&["get", "cm", "big"]).contains("NotFound"),
        "nothing half-written"
    );

    let (code, body) = curl(
        &c,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            "{}",
            &format!("{pods}/somepod"),
        ],
    );
    assert_eq!(
        (code, status(&body)["reason"].as_str()),
        (405, Some("MethodNotAllowed")),
        "{body}"
    );

    let (code, body) = curl(
        &c,
        &[
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/apply-patch+cbor",
            "--data",
            "{}",
            &format!("{pods}/somepod"),
        ],
    );
    assert_eq!(code, 415, "{body}");

    let (code, body) = curl(&c, &[&format!("{base}/apis/nosuch.example.com/v1/widgets")]);
    assert_eq!(code, 404, "{body}");
    assert_eq!(
        status(&body)["message"],
        "the server could not find the requested resource"
    );

    let (code, body) = curl(&c, &[&format!("{pods}?resourceVersionMatch=Exact")]);
    assert_eq!(
        (code, status(&body)["reason"].as_str()),
        (422, Some("Invalid")),
        "{body}"
    );
    let (code, body) = curl(&c, &[&format!("{pods}?continue=garbage")]);
    assert_eq!(code, 400, "{body}");
    let (code, body) = curl(
        &c,
        &[
            &format!("{pods}?fieldValidation=Sometimes"),
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p"}}"#,
        ],
    );
    assert_eq!(
        (code, status(&body)["reason"].as_str()),
        (422, Some("Invalid")),
        "{body}"
    );

    // The server is still serving.
    c.kubectl_ok(&["get", "namespaces"]);
}

#[test]
fn pods_are_bound_once() {
    let c = cluster();
    c.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: busybox\n");
    let binding = c.data_dir().join("binding.json");
    std::fs::write(
        &binding,
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"kind":"Node","name":"node-1"}}"#,
    )
    .unwrap();
    let path = "/api/v1/namespaces/default/pods/p/binding";
    c.kubectl_ok(&["create", "--raw", path, "-f", &binding.display().to_string()]);
    let pod = json(&c.kubectl_ok(&["get", "pod", "p", "-o", "json"]));
    assert_eq!(pod["spec"]["nodeName"], "node-1");
    assert!(
        pod["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "PodScheduled" && c["status"] == "True")
    );
    let err = c.kubectl_err(&["create", "--raw", path, "-f", &binding.display().to_string()]);
    assert!(err.contains("is already assigned to node"), "{err}");
}

#[test]
fn edit_with_an_editor_and_all_namespaces() {
    let c = cluster();
    c.apply(DEPLOYMENT);
    c.kubectl_ok(&["create", "namespace", "other"]);
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: elsewhere\n  namespace: other\n");
    let out = c
        .kubectl_command(&["edit", "deploy", "nginx-hpa"])
        .env("KUBE_EDITOR", "sed -i s/replicas:\\ 1/replicas:\\ 5/")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deployment.apps/nginx-hpa edited"),
        "{out:?}"
    );
    assert_eq!(
        c.kubectl_ok(&["get", "deploy", "nginx-hpa", "-o", "jsonpath={.spec.replicas}"]),
        "5"
    );

    let all = c.kubectl_ok(&["get", "cm", "-A"]);
    let header: Vec<&str> = all.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAMESPACE", "NAME", "DATA", "AGE"]);
    assert!(
        all.lines().any(|l| l.starts_with("other") && l.contains("elsewhere")),
        "{all}"
    );
}

#[test]
fn raw_watches_replay_changes_after_a_resource_version() {
    let c = cluster();
    let list = json(&c.kubectl_ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps"]));
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: w\ndata:\n  v: \"1\"\n");
    c.kubectl_ok(&["patch", "cm", "w", "--type=merge", "-p", r#"{"data":{"v":"2"}}"#]);
    c.kubectl_ok(&["delete", "cm", "w"]);
    // A watch from before the changes replays them all, then ends at its timeout.
    let out = c.kubectl_ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=1"),
    ]);
    let events: Vec<Value> = out.lines().map(json).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"], "{out}");
    assert_eq!(events[1]["object"]["data"]["v"], "2");
    let rvs: Vec<i64> = events
        .iter()
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        rvs.windows(2).all(|w| w[0] < w[1]) && rvs[0] > rv.parse().unwrap(),
        "{rvs:?}"
    );
    assert_eq!(events[2]["object"]["metadata"]["name"], "w");
}

#[test]
fn autoscale_speaks_v1_and_reads_back_as_v2() {
    let c = cluster();
    c.apply(DEPLOYMENT);
    // kubectl autoscale sends an autoscaling/v1 object, in protobuf.
    c.kubectl_ok(&[
        "autoscale",
        "deployment",
        "nginx-hpa",
        "--min=2",
        "--max=5",
        "--cpu-percent=80",
    ]);
    let v2 = json(&c.kubectl_ok(&["get", "hpa", "nginx-hpa", "-o", "json"]));
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 80);
    assert_eq!(
        (v2["spec"]["minReplicas"].as_i64(), v2["spec"]["maxReplicas"].as_i64()),
        (Some(2), Some(5))
    );
    let v1 = json(&c.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/nginx-hpa",
    ]));
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 80);
    assert!(v1["spec"].get("metrics").is_none());
    let list = json(&c.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers",
    ]));
    assert_eq!(list["items"][0]["spec"]["targetCPUUtilizationPercentage"], 80);
    // Discovery prefers v2.
    assert!(
        c.kubectl_ok(&["api-resources", "--api-group=autoscaling"])
            .contains("autoscaling/v2")
    );
}

#[test]
fn events_are_served_in_both_groups() {
    let c = cluster();
    let event = r#"{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"pod-scheduled","namespace":"default"},
        "eventTime":"2026-01-01T00:00:00.000000Z","reportingController":"styrman-scheduler","reportingInstance":"s-1",
        "action":"Binding","reason":"Scheduled","regarding":{"kind":"Pod","namespace":"default","name":"web-1"},
        "note":"Successfully assigned default/web-1 to node-1","type":"Normal"}"#;
    let file = c.data_dir().join("event.json");
    std::fs::write(&file, event).unwrap();
    c.kubectl_ok(&[
        "create",
        "--raw",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        "-f",
        &file.display().to_string(),
    ]);
    // Core v1 readers see the same event with their field names, and can select on them.
    let core = json(&c.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web-1",
        "-o",
        "json",
    ]));
    let item = &core["items"][0];
    assert_eq!(item["apiVersion"], "v1");
    assert_eq!(item["involvedObject"]["name"], "web-1");
    assert_eq!(item["message"], "Successfully assigned default/web-1 to node-1");
    assert_eq!(item["reportingComponent"], "styrman-scheduler");
    let back = json(&c.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/events.k8s.io/v1/namespaces/default/events/pod-scheduled",
    ]));
    assert_eq!(back["regarding"]["name"], "web-1");
    assert_eq!(back["note"], "Successfully assigned default/web-1 to node-1");
}

#[test]
fn missing_required_fields_are_422_with_causes() {
    let c = cluster();
    let broken = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: broken\nspec:\n  template:\n    spec:\n      containers:\n      - image: nginx\n";
    let out = c.kubectl_stdin(&["create", "-f", "-"], broken);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"The Deployment "broken" is invalid: "#)
            && err.contains("spec.selector: Required value")
            && err.contains("spec.template.spec.containers[0].name: Required value"),
        "{err}"
    );
    assert!(c.kubectl_err(&["get", "deploy", "broken"]).contains("NotFound"));
}

#[test]
fn diff_dry_run_replace_whoami_and_raw() {
    let c = cluster();
    c.apply(DEPLOYMENT);
    let scaled = DEPLOYMENT.replace("replicas: 1", "replicas: 3");
    // diff: exit code 1 and the change, computed by a server-side dry run.
    let out = c.kubectl_stdin(&["diff", "-f", "-"], &scaled);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(
        diff.contains("-  replicas: 1") && diff.contains("+  replicas: 3"),
        "{diff}"
    );
    assert!(
        !diff.contains("resourceVersion"),
        "a dry run keeps the resource version:\n{diff}"
    );
    let out = c.kubectl_stdin(&["diff", "-f", "-"], DEPLOYMENT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "no change, no diff: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let out = c.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &scaled);
    assert!(String::from_utf8_lossy(&out.stdout).contains("configured (server dry run)"));
    assert_eq!(
        c.kubectl_ok(&["get", "deploy", "nginx-hpa", "-o", "jsonpath={.spec.replicas}"]),
        "1"
    );

    let out = c.kubectl_stdin(&["replace", "-f", "-"], &scaled);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        c.kubectl_ok(&["get", "deploy", "nginx-hpa", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );

    let whoami = c.kubectl_ok(&["auth", "whoami"]);
    assert!(
        whoami.contains("kubernetes-admin") && whoami.contains("[system:masters system:authenticated]"),
        "{whoami}"
    );
    assert_eq!(c.kubectl_ok(&["auth", "can-i", "create", "deployments"]).trim(), "yes");
    let err = c.kubectl_err(&["get", "selfsubjectreviews"]);
    assert!(err.contains("MethodNotAllowed"), "{err}");

    let version = json(&c.kubectl_ok(&["get", "--raw", "/version"]));
    assert_eq!(version["minor"], "33");
    let apps = json(&c.kubectl_ok(&["get", "--raw", "/apis/apps/v1"]));
    assert_eq!(apps["groupVersion"], "apps/v1");
    let index = json(&c.kubectl_ok(&["get", "--raw", "/openapi/v3"]));
    let apps_doc = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let doc = json(&c.kubectl_ok(&["get", "--raw", &apps_doc]));
    assert!(doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"].is_object());
}

#[test]
fn component_statuses_health_checks_and_version_say_what_is_true() {
    let c = cluster();
    // The controllers are healthy once their leaders hold their Leases.
    styrman_testkit::eventually("every component Healthy", std::time::Duration::from_secs(30), || {
        let out = c.kubectl(&["get", "componentstatuses"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let healthy = ["controller-manager", "scheduler", "etcd-0"].iter().all(|name| {
            text.lines()
                .any(|l| l.split_whitespace().take(3).eq([*name, "Healthy", "ok"]))
        });
        healthy.then_some(()).ok_or(text)
    });
    let out = c.kubectl(&["get", "cs", "scheduler", "-o", "json"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("v1 ComponentStatus is deprecated in v1.19+"));
    let scheduler = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(scheduler["conditions"][0]["type"], "Healthy");
    let err = c.kubectl_err(&["get", "cs", "nothing"]);
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");
    for (endpoint, last) in [
        ("livez", "livez check passed"),
        ("readyz", "readyz check passed"),
        ("healthz", "healthz check passed"),
    ] {
        let verbose = c.kubectl_ok(&["get", "--raw", &format!("/{endpoint}?verbose")]);
        let lines: Vec<&str> = verbose.lines().collect();
        assert_eq!(lines.first(), Some(&"[+]ping ok"), "{verbose}");
        assert!(lines.contains(&"[+]etcd ok"), "{verbose}");
        assert_eq!(lines.last(), Some(&last), "{verbose}");
        assert_eq!(c.kubectl_ok(&["get", "--raw", &format!("/{endpoint}")]), "ok");
        assert_eq!(c.kubectl_ok(&["get", "--raw", &format!("/{endpoint}/etcd")]), "ok");
    }
    let excluded = c.kubectl_ok(&["get", "--raw", "/readyz?verbose&exclude=etcd"]);
    assert!(excluded.lines().any(|l| l == "[+]etcd excluded: ok"), "{excluded}");
    assert!(
        c.kubectl_err(&["get", "--raw", "/livez/no-such-check"])
            .contains("NotFound")
    );

    let version = json(&c.kubectl_ok(&["get", "--raw", "/version"]));
    assert_eq!(version["compiler"], "rustc");
    assert!(!version["goVersion"].as_str().unwrap().starts_with("go"), "{version}");
}
