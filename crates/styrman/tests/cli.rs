//! The binary as a user runs it.

use std::process::Command;

fn styrman(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_styrman")).args(args).output().unwrap()
}

#[test]
fn help_lists_every_subcommand() {
    let out = styrman(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for sub in [
        "server",
        "apiserver",
        "scheduler",
        "controller-manager",
        "kubelet",
        "proxy",
        "hollow-nodes",
        "version",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "--help lacks {sub}:\n{help}"
        );
    }
}

#[test]
fn version_prints_both_versions() {
    let out = styrman(&["version"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("styrman version: v{}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("Kubernetes API version: v1.33."), "{text}");
}

#[test]
fn a_component_not_built_yet_says_so_and_fails() {
    let out = styrman(&["proxy"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("not in this build"), "{err}");
}

#[test]
fn a_kubelet_without_credentials_says_which_flags_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let out = styrman(&["kubelet", &format!("--data-dir={}", dir.path().display())]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--kubeconfig (or --server-data-dir)"), "{err}");
}

#[test]
fn an_unknown_subcommand_is_a_usage_error() {
    let out = styrman(&["frobnicate"]);
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("frobnicate"));
}
