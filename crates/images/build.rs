//! Builds `pause.c` into a static executable, embedded in the binary as the pod sandbox
//! image's only file (no node ever needs a registry to start a pod).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=pause.c");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("pause");
    let compiler = cc::Build::new().get_compiler();
    let status = Command::new(compiler.path())
        .args(["-static", "-Os", "-s", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg("pause.c")
        .status()
        .expect("the C compiler runs");
    assert!(
        status.success(),
        "building the static pause binary failed (it needs the C library's static archive, libc6-dev)"
    );
}
