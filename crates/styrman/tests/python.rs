//! The official Python client against a running `styrman server` (its smoke script is in
//! `tests/python/`; `scripts/test` installs the client from PyPI).

use styrman_testkit::Cluster;

/// Runs `tests/python/<script>` against a new cluster; its stdout.
fn run_script(script: &str) -> String {
    let c = Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).unwrap();
    let script = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(c.kubeconfig())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python client failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.log()
    );
    stdout.into_owned()
}

/// Each of `checks` printed its `<check> ok` line.
fn assert_ran(stdout: &str, checks: &[&str]) {
    for check in checks {
        assert!(
            stdout.lines().any(|l| l == format!("{check} ok")),
            "{check} did not run:\n{stdout}"
        );
    }
}

#[test]
fn the_python_client_works() {
    let stdout = run_script("client_smoke.py");
    assert_ran(
        &stdout,
        &[
            "namespaces",
            "configmap",
            "deployment",
            "watch",
            "service",
            "errors",
            "delete",
        ],
    );
}

#[test]
fn the_python_client_drives_workloads() {
    let stdout = run_script("workloads.py");
    assert_ran(
        &stdout,
        &["configmaps", "deployments", "services", "jobs", "watch", "delete"],
    );
}

#[test]
fn every_kind_carries_the_fields_kubernetes_always_serializes() {
    let stdout = run_script("required_fields.py");
    let checked: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("checked "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // Every stored kind the server serves (40 today); fewer means kinds went unchecked.
    assert!(checked >= 40, "only {checked} kinds checked:\n{stdout}");
    assert_ran(
        &stdout,
        &[
            "daemonsets",
            "replicationcontrollers",
            "deployments",
            "jobs",
            "horizontalpodautoscalers",
        ],
    );
}

#[test]
fn writes_without_preconditions_never_conflict_and_preconditions_do() {
    let stdout = run_script("conflicts.py");
    assert_ran(&stdout, &["unconditional", "preconditions"]);
}
