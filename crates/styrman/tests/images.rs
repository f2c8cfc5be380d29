//! Images without a registry: `scripts/images` builds busybox, nginx and the pause image from
//! Debian packages with `styrman images pack|pause`, and a real containerd (with runc) imports
//! and runs them.

use std::time::Duration;

use styrman_testkit::{Containerd, build_images, eventually};

#[test]
fn images_built_from_debian_packages_run_on_containerd() {
    let out = tempfile::tempdir().unwrap();
    build_images(env!("CARGO_BIN_EXE_styrman").as_ref(), out.path());
    let containerd = Containerd::start().unwrap();
    for archive in ["busybox.tar", "nginx.tar", "pause.tar"] {
        containerd.ctr_ok(&["images", "import", out.path().join(archive).to_str().unwrap()]);
    }
    let images = containerd.ctr_ok(&["images", "ls", "-q"]);
    for name in [
        "docker.io/library/busybox:latest",
        "docker.io/library/nginx:latest",
        "registry.k8s.io/pause:3.10",
    ] {
        assert!(images.lines().any(|l| l == name), "{name} not imported:\n{images}");
    }

    // busybox runs a command and prints what it says.
    let said = containerd.ctr_ok(&["run", "--rm", "docker.io/library/busybox:latest", "echo", "echo", "hi"]);
    assert_eq!(said.trim(), "hi");

    // nginx serves its default page on port 80 (in the container's own network namespace).
    containerd.ctr_ok(&["run", "-d", "docker.io/library/nginx:latest", "web"]);
    let mut probe = 0;
    eventually("nginx serves its page", Duration::from_secs(20), || {
        probe += 1;
        let out = containerd.ctr(&[
            "task",
            "exec",
            "--exec-id",
            &format!("probe-{probe}"),
            "web",
            "wget",
            "-qO-",
            "http://127.0.0.1/",
        ]);
        let page = String::from_utf8_lossy(&out.stdout).into_owned();
        match page.contains("<h1>Welcome to nginx!</h1>") {
            true => Ok(()),
            false => Err(format!("{page}{}", String::from_utf8_lossy(&out.stderr))),
        }
    });

    // pause holds its sandbox until it is asked to stop, then stops at once.
    containerd.ctr_ok(&["run", "-d", "registry.k8s.io/pause:3.10", "sandbox"]);
    std::thread::sleep(Duration::from_millis(300));
    let status = |id: &str| {
        containerd
            .ctr_ok(&["task", "ls"])
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
            .unwrap_or_default()
    };
    assert_eq!(status("sandbox"), "RUNNING");
    containerd.ctr_ok(&["task", "kill", "--signal", "SIGTERM", "sandbox"]);
    eventually("pause stops on SIGTERM", Duration::from_secs(5), || {
        let now = status("sandbox");
        (now == "STOPPED").then_some(()).ok_or(now)
    });
}
