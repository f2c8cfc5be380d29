//! Server-side apply with the real kubectl (`apply --server-side`): field ownership per
//! manager, conflicts and `--force-conflicts`, fields dropped from a configuration, lists merged
//! by key, and the upgrade of a client-side-applied object.

use serde_json::Value;
use styrman_testkit::Cluster;

fn cluster() -> Cluster {
    Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).expect("start styrman server")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `kubectl apply --server-side` of `manifest` with extra flags; stdout on success.
fn ssa(c: &Cluster, manifest: &str, flags: &[&str]) -> Result<String, String> {
    let mut args = vec!["apply", "--server-side", "-f", "-"];
    args.extend_from_slice(flags);
    let out = c.kubectl_stdin(&args, manifest);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn deployment(name: &str, replicas: u32, containers: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
{containers}"
    )
}

const WEB: &str = "      - name: web
        image: nginx
        ports: [{containerPort: 80}]
        env: [{name: MODE, value: debug}]
";

fn get(c: &Cluster, what: &str) -> Value {
    json(&c.kubectl_ok(&["get", what, "-o", "json", "--show-managed-fields"]))
}

/// (manager, operation) of each managed-fields entry, sorted (the server orders entries by
/// operation and time, and times have a resolution of seconds).
/// Who manages what, but for the deployment controller (its status and revision annotation).
fn managers(object: &Value) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["manager"] != "kube-controller-manager")
        .map(|e| {
            (
                e["manager"].as_str().unwrap().to_string(),
                e["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    all.sort();
    all
}

fn pair(m: &str, op: &str) -> (String, String) {
    (m.to_string(), op.to_string())
}

#[test]
fn managers_share_fields_conflict_and_force() {
    let c = cluster();
    let out = ssa(&c, &deployment("web", 2, WEB), &[]).unwrap();
    assert_eq!(out.trim(), "deployment.apps/web serverside-applied");
    let d = get(&c, "deployment/web");
    assert_eq!(managers(&d), [pair("kubectl", "Apply")]);
    let entries = d["metadata"]["managedFields"].as_array().unwrap();
    let fields = &entries.iter().find(|e| e["manager"] == "kubectl").unwrap()["fieldsV1"];
    assert!(fields["f:spec"]["f:replicas"].is_object(), "{fields}");
    assert!(
        fields["f:metadata"].get("f:name").is_none(),
        "names are not owned: {fields}"
    );

    // Another manager applying the same value co-owns it.
    let replicas_only = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 2}\n";
    ssa(&c, replicas_only, &["--field-manager=autoscaler"]).unwrap();
    assert_eq!(
        managers(&get(&c, "deployment/web")),
        [pair("autoscaler", "Apply"), pair("kubectl", "Apply")]
    );

    // A different value is a conflict, reported with the manager and the field.
    let five = replicas_only.replace("replicas: 2", "replicas: 5");
    let err = ssa(&c, &five, &["--field-manager=autoscaler"]).unwrap_err();
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas"#),
        "{err}"
    );
    assert_eq!(
        c.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "2"
    );

    // Forcing takes the field over.
    ssa(&c, &five, &["--field-manager=autoscaler", "--force-conflicts"]).unwrap();
    let d = get(&c, "deployment/web");
    assert_eq!(d["spec"]["replicas"], 5);
    let kubectl_entry = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kubectl")
        .unwrap();
    assert!(
        kubectl_entry["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
        "{kubectl_entry}"
    );

    // An imperative change by an updater conflicts with the applier too.
    c.kubectl_ok(&["scale", "deployment", "web", "--replicas=3"]);
    let err = ssa(&c, &five, &["--field-manager=autoscaler"]).unwrap_err();
    assert!(
        err.contains(r#"conflict with "kubectl""#) && err.contains("using apps/v1: .spec.replicas"),
        "{err}"
    );
}

#[test]
fn fields_dropped_from_the_configuration_go_and_lists_merge_by_key() {
    let c = cluster();
    ssa(&c, &deployment("web", 1, WEB), &[]).unwrap();
    // A second manager adds a sidecar container and an env var to the first container.
    let sidecar = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
      - name: web
        env: [{name: SIDECAR_URL, value: http://localhost:9000}]
        ports: [{containerPort: 9090, name: metrics}]
      - name: log
        image: busybox
        ports: [{containerPort: 9000}]
";
    ssa(&c, sidecar, &["--field-manager=injector"]).unwrap();
    // The first manager drops its env var.
    ssa(
        &c,
        &deployment(
            "web",
            1,
            &WEB.replace("        env: [{name: MODE, value: debug}]\n", ""),
        ),
        &[],
    )
    .unwrap();
    let d = get(&c, "deployment/web");
    let containers = d["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    let names: Vec<&str> = containers.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["web", "log"], "{d}");
    let env: Vec<&str> = containers[0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(env, ["SIDECAR_URL"], "MODE was dropped, the injector's var stays");
    let ports: Vec<i64> = containers[0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [80, 9090], "ports merge by containerPort and protocol");
    assert_eq!(containers[0]["ports"][0]["protocol"], "TCP");
}

#[test]
fn client_side_apply_upgrades_to_server_side() {
    let c = cluster();
    let manifest = deployment("csa", 1, WEB);
    c.apply(&manifest);
    assert_eq!(
        managers(&get(&c, "deployment/csa")),
        [pair("kubectl-client-side-apply", "Update")]
    );
    let out = c.kubectl_stdin(&["apply", "--server-side", "-f", "-", "-v=6"], &manifest);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let patches = log
        .lines()
        .filter(|l| l.contains(r#"verb="PATCH""#) && l.contains("200 OK"))
        .count();
    assert_eq!(
        patches, 4,
        "apply, last-applied, managed fields migration, apply again:\n{log}"
    );
    assert_eq!(
        managers(&get(&c, "deployment/csa")),
        [pair("kubectl", "Apply"), pair("kubectl-last-applied", "Apply")]
    );
    // From now on the image belongs to the server-side applier: changing it is no conflict.
    ssa(&c, &manifest.replace("image: nginx", "image: nginx:1.27"), &[]).unwrap();
    assert_eq!(
        c.kubectl_ok(&[
            "get",
            "deploy",
            "csa",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "nginx:1.27"
    );
}

#[test]
fn apply_works_for_every_common_kind_and_on_status() {
    let c = cluster();
    let manifests = "apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: '1'}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: once, image: busybox, command: [true]}]
";
    let out = ssa(&c, manifests, &[]).unwrap();
    assert_eq!(out.matches("serverside-applied").count(), 3, "{out}");
    // Applying the same again changes nothing, not even the resource version.
    let before = c.kubectl_ok(&["get", "cm", "settings", "-o", "jsonpath={.metadata.resourceVersion}"]);
    ssa(&c, manifests, &[]).unwrap();
    assert_eq!(
        c.kubectl_ok(&["get", "cm", "settings", "-o", "jsonpath={.metadata.resourceVersion}"]),
        before
    );
    // A Service port's protocol is part of its key and defaults to TCP.
    let svc = get(&c, "service/web");
    assert!(
        svc["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:ports"]["k:{\"port\":80,\"protocol\":\"TCP\"}"]
            .is_object(),
        "{svc}"
    );
    // Status is applied through its subresource, by its own manager.
    let status = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: once}\nstatus: {active: 1}\n";
    ssa(&c, status, &["--subresource=status", "--field-manager=job-controller"]).unwrap();
    let job = get(&c, "job/once");
    assert_eq!(job["status"]["active"], 1);
    let entry = job["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "job-controller")
        .unwrap()
        .clone();
    assert_eq!(entry["subresource"], "status");
    assert!(entry["fieldsV1"]["f:status"]["f:active"].is_object(), "{entry}");
}
