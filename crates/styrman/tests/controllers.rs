//! The controller manager's controllers against a running `styrman server`, driven by the real
//! kubectl: the garbage collector (`delete --cascade=background|orphan|foreground`), the
//! namespace controller and the service account controller.

use std::time::Duration;

use styrman_testkit::{Cluster, eventually, json};

/// How long the controllers get to do what a test waits for.
const TIMEOUT: Duration = Duration::from_secs(20);

fn cluster() -> Cluster {
    Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).expect("start styrman server")
}

fn uid(c: &Cluster, what: &str) -> String {
    c.kubectl_ok(&["get", what, "-o", "jsonpath={.metadata.uid}"])
}

/// Whether `kubectl get ARGS` finds it; `what` may start with `-n=NAMESPACE `.
fn exists(c: &Cluster, what: &str) -> bool {
    let args: Vec<&str> = std::iter::once("get").chain(what.split(' ')).collect();
    c.kubectl(&args).status.success()
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
";

/// The Deployment `web`, a ReplicaSet it controls (which the deployment controller, finding
/// the Deployment's template in it, takes as its current one), and a ConfigMap owned by that
/// ReplicaSet.
fn deployment_with_dependents(c: &Cluster) {
    c.apply(DEPLOYMENT);
    let deployment = uid(c, "deployment/web");
    c.apply(&format!(
        "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-1
  labels: {{app: web}}
  ownerReferences:
  - {{apiVersion: apps/v1, kind: Deployment, name: web, uid: {deployment}, controller: true, blockOwnerDeletion: true}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: nginx}}]}}
"
    ));
    let replicaset = uid(c, "rs/web-1");
    c.apply(&format!(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: web-1-config
  ownerReferences:
  - {{apiVersion: apps/v1, kind: ReplicaSet, name: web-1, uid: {replicaset}, blockOwnerDeletion: true}}
"
    ));
}

#[test]
fn deleting_an_owner_deletes_its_dependents_in_the_background() {
    let c = cluster();
    deployment_with_dependents(&c);
    c.kubectl_ok(&["delete", "deployment", "web"]);
    c.kubectl_ok(&["wait", "--for=delete", "rs/web-1", "cm/web-1-config", "--timeout=20s"]);
}

#[test]
fn orphaned_dependents_stay_without_the_reference() {
    let c = cluster();
    deployment_with_dependents(&c);
    // kubectl waits for the Deployment to go, which needs the collector to orphan first.
    let out = c.kubectl_ok(&["delete", "deployment", "web", "--cascade=orphan", "--timeout=20s"]);
    assert!(out.contains(r#"deployment.apps "web" deleted"#), "{out}");
    let rs = json(&c.kubectl_ok(&["get", "rs", "web-1", "-o", "json"]));
    assert!(rs["metadata"].get("ownerReferences").is_none(), "{rs}");
    assert!(rs["metadata"].get("deletionTimestamp").is_none(), "{rs}");
    // The ReplicaSet's own dependent is untouched.
    let cm = json(&c.kubectl_ok(&["get", "cm", "web-1-config", "-o", "json"]));
    assert_eq!(cm["metadata"]["ownerReferences"][0]["name"], "web-1");
}

#[test]
fn a_foreground_deletion_waits_for_blocking_dependents() {
    let c = cluster();
    c.kubectl_ok(&["create", "configmap", "owner"]);
    let owner = uid(&c, "cm/owner");
    // The dependent holds a finalizer of its own, so it lingers while being deleted.
    c.apply(&format!(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: blocking
  finalizers: [example.com/hold]
  ownerReferences:
  - {{apiVersion: v1, kind: ConfigMap, name: owner, uid: {owner}, blockOwnerDeletion: true}}
"
    ));
    c.kubectl_ok(&["delete", "cm", "owner", "--cascade=foreground", "--wait=false"]);
    eventually("the collector deletes the blocking dependent", TIMEOUT, || {
        let dependent = json(&c.kubectl_ok(&["get", "cm", "blocking", "-o", "json"]));
        dependent["metadata"].get("deletionTimestamp").is_some()
    });
    let waiting = json(&c.kubectl_ok(&["get", "cm", "owner", "-o", "json"]));
    assert!(waiting["metadata"]["deletionTimestamp"].is_string(), "{waiting}");
    assert_eq!(
        waiting["metadata"]["finalizers"],
        serde_json::json!(["foregroundDeletion"])
    );
    c.kubectl_ok(&[
        "patch",
        "cm",
        "blocking",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    c.kubectl_ok(&["wait", "--for=delete", "cm/owner", "cm/blocking", "--timeout=20s"]);
}

#[test]
fn dangling_references_are_collected() {
    let c = cluster();
    c.kubectl_ok(&["create", "configmap", "real-owner"]);
    let real = uid(&c, "cm/real-owner");
    let missing = "0b7a4b6c-1c1e-4c53-9a8e-000000000000";
    c.apply(&format!(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: orphan-from-birth
  ownerReferences:
  - {{apiVersion: v1, kind: ConfigMap, name: never-existed, uid: {missing}}}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: half-owned
  ownerReferences:
  - {{apiVersion: v1, kind: ConfigMap, name: never-existed, uid: {missing}}}
  - {{apiVersion: v1, kind: ConfigMap, name: real-owner, uid: {real}}}
"
    ));
    c.kubectl_ok(&["wait", "--for=delete", "cm/orphan-from-birth", "--timeout=20s"]);
    eventually("the dangling reference is dropped", TIMEOUT, || {
        let cm = json(&c.kubectl_ok(&["get", "cm", "half-owned", "-o", "json"]));
        cm["metadata"]["ownerReferences"].as_array().map(Vec::len) == Some(1)
    });
    assert!(exists(&c, "cm/half-owned"));
    let lease = json(&c.kubectl_ok(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "kube-controller-manager",
        "-o",
        "json",
    ]));
    assert!(
        lease["spec"]["holderIdentity"].as_str().is_some_and(|h| !h.is_empty()),
        "{lease}"
    );
}

#[test]
fn deleting_a_namespace_deletes_its_content_then_the_namespace() {
    let c = cluster();
    c.kubectl_ok(&["create", "namespace", "team"]);
    c.kubectl_ok(&["-n", "team", "create", "deployment", "web", "--image=nginx"]);
    c.kubectl_ok(&["-n", "team", "create", "service", "clusterip", "web", "--tcp=80:80"]);
    c.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, namespace: team, finalizers: [example.com/hold]}\n",
    );
    c.kubectl_ok(&["delete", "namespace", "team", "--wait=false"]);
    eventually("the namespace reports the finalizer holding it", TIMEOUT, || {
        let ns = json(&c.kubectl_ok(&["get", "namespace", "team", "-o", "json"]));
        ns["status"]["conditions"].as_array().into_iter().flatten().any(|cond| {
            cond["type"] == "NamespaceFinalizersRemaining"
                && cond["status"] == "True"
                && cond["message"]
                    == "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
        })
    });
    assert_eq!(
        c.kubectl_ok(&["get", "namespace", "team", "-o", "jsonpath={.status.phase}"]),
        "Terminating"
    );
    assert!(!exists(&c, "-n=team deployment/web"));
    let listed = c.kubectl_ok(&["-n", "team", "get", "deployments,services", "-o", "name"]);
    assert_eq!(listed.trim(), "", "everything without a finalizer is gone");
    let refused = c.kubectl_err(&["-n", "team", "create", "configmap", "late"]);
    assert!(refused.contains("because it is being terminated"), "{refused}");
    c.kubectl_ok(&[
        "-n",
        "team",
        "patch",
        "cm",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    c.kubectl_ok(&["wait", "--for=delete", "namespace/team", "--timeout=20s"]);
}

#[test]
fn every_namespace_gets_a_default_service_account() {
    let c = cluster();
    c.kubectl_ok(&["create", "namespace", "apps"]);
    eventually("the default service account exists", TIMEOUT, || {
        exists(&c, "-n=apps serviceaccount/default")
    });
    let first = c.kubectl_ok(&["-n", "apps", "get", "sa", "default", "-o", "jsonpath={.metadata.uid}"]);
    c.kubectl_ok(&["-n", "apps", "delete", "sa", "default"]);
    eventually("the default service account is made again", TIMEOUT, || {
        let out = c.kubectl(&["-n", "apps", "get", "sa", "default", "-o", "jsonpath={.metadata.uid}"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout) != first
    });
    for system in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        eventually("system namespaces have one too", TIMEOUT, || {
            exists(&c, &format!("-n={system} serviceaccount/default"))
        });
    }
}
