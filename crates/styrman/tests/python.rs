//! The official Python client against a running `styrman server` (its smoke script is in
//! `tests/python/`; `scripts/test` installs the client from PyPI).

use styrman_testkit::Cluster;

#[test]
fn the_python_client_works() {
    let c = Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_smoke.py");
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
    for check in [
        "namespaces",
        "configmap",
        "deployment",
        "watch",
        "service",
        "errors",
        "delete",
    ] {
        assert!(
            stdout.lines().any(|l| l == format!("{check} ok")),
            "{check} did not run:\n{stdout}"
        );
    }
}
