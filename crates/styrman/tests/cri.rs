//! The node agent's CRI client against a real containerd with runc: a pod sandbox from the
//! project's own pause image, a busybox container from `scripts/images`, its exit code and its
//! log in the CRI log format, then the pod stopped and removed, with nothing left running; and
//! a node registered with what the machine and the runtime report.

use std::time::Duration;

use k8s_cri::v1 as cri;
use styrman_kubelet::cri::Runtime;
use styrman_testkit::{Containerd, build_images, eventually};

fn sandbox_config(logs: &std::path::Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "echo".into(),
            uid: "0b5e1c2e-uid".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        // The node's UTS namespace goes with its network: no hostname of the pod's own.
        hostname: String::new(),
        log_directory: logs.to_string_lossy().into_owned(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                // The node's network: no CNI is configured in this test.
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A containerd holding `scripts/images`' busybox and pause images where CRI finds them; with
/// a pod CIDR, in a network namespace of its own with that pod network.
fn containerd_with_images(pod_cidr: Option<&str>) -> Containerd {
    let images = tempfile::tempdir().unwrap();
    build_images(env!("CARGO_BIN_EXE_styrman").as_ref(), images.path());
    let containerd = match pod_cidr {
        Some(cidr) => Containerd::start_with_pod_network(cidr).unwrap(),
        None => Containerd::start().unwrap(),
    };
    for archive in ["busybox.tar", "pause.tar"] {
        let out = containerd.ctr_cri(&["images", "import", images.path().join(archive).to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    containerd
}

#[test]
fn a_pod_runs_through_cri_on_containerd() {
    let containerd = containerd_with_images(None);
    let logs = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let socket = containerd.socket();
        let rt = Runtime::connect(socket.to_str().unwrap()).await.unwrap();
        let version = rt.version().await.unwrap();
        assert!(version.starts_with("containerd://"), "{version}");

        let listed = rt
            .images
            .clone()
            .list_images(cri::ListImagesRequest::default())
            .await
            .unwrap();
        let tags: Vec<String> = listed
            .into_inner()
            .images
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .collect();
        assert!(
            tags.contains(&"docker.io/library/busybox:latest".to_string()),
            "{tags:?}"
        );

        let config = sandbox_config(logs.path());
        let sandbox = run_pod(&rt, &config, &containerd).await;
        let (exit_code, log) = run_in_pod(&rt, &sandbox, &config, "say", "echo hi; exit 3").await;
        assert_eq!(exit_code, 3, "the container did not exit with its code");
        // CRI's log format: "<RFC 3339 time> stdout F hi", in the sandbox's log directory.
        assert!(logs.path().join("say/0.log").exists());
        let line = log.lines().next().unwrap_or_default();
        let fields: Vec<&str> = line.splitn(4, ' ').collect();
        assert_eq!(&fields[1..], ["stdout", "F", "hi"], "{log}");

        remove_pod(&rt, &sandbox).await;
        let left = rt
            .runtime
            .clone()
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items;
        assert!(left.is_empty(), "{left:?}");
    });
    // Nothing of the pod is left running.
    eventually("no task left", Duration::from_secs(5), || {
        containerd.ctr_cri(&["task", "ls", "-q"]).stdout.is_empty()
    });
}

#[test]
fn a_node_registers_with_what_the_machine_and_its_runtime_report() {
    let containerd = containerd_with_images(None);
    let cluster = styrman_testkit::Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).unwrap();
    let state = tempfile::tempdir().unwrap();
    let config = styrman_kubelet::machine::NodeConfig {
        name: "node-under-test".into(),
        node_ip: Some("127.0.0.1".parse().unwrap()),
        labels: [("node-role.kubernetes.io/control-plane".to_string(), String::new())].into(),
        taints: vec![],
        max_pods: 110,
        root_dir: state.path().to_path_buf(),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let rt = Runtime::connect(containerd.socket().to_str().unwrap()).await.unwrap();
        let facts = styrman_kubelet::machine::node_facts(&config, &rt.version().await.unwrap()).unwrap();
        let client = styrman_runtime::connect(&cluster.kubeconfig(), "kubelet/v1.33.0 (linux/amd64) styrman")
            .await
            .unwrap();
        let registration = styrman_kubelet::node_status::NodeRegistration::new(facts);
        let existed = registration
            .register(&client, rt.node_images().await.unwrap())
            .await
            .unwrap();
        assert!(!existed);
        // A restarted agent finds its Node and posts its status over it.
        assert!(
            registration
                .register(&client, rt.node_images().await.unwrap())
                .await
                .unwrap()
        );
    });

    let node = styrman_testkit::json(&cluster.kubectl_ok(&["get", "node", "node-under-test", "-o", "json"]));
    let info = &node["status"]["nodeInfo"];
    assert!(
        info["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("containerd://1."),
        "{info}"
    );
    assert_eq!(info["kubeletVersion"], "v1.33.0");
    let cpus = std::thread::available_parallelism().unwrap().get().to_string();
    assert_eq!(node["status"]["capacity"]["cpu"], cpus.as_str());
    let names: Vec<&str> = node["status"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["names"].as_array().unwrap().iter().filter_map(|n| n.as_str()))
        .collect();
    for image in ["docker.io/library/busybox:latest", "registry.k8s.io/pause:3.10"] {
        assert!(names.contains(&image), "{names:?}");
    }
    let ready = cluster.kubectl_ok(&["get", "node", "node-under-test", "--no-headers"]);
    assert!(
        ready
            .split_whitespace()
            .take(3)
            .eq(["node-under-test", "Ready", "control-plane"]),
        "{ready}"
    );
    let lease = cluster.kubectl_ok(&[
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        "node-under-test",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(lease, "node-under-test");
}

/// Runs a pod sandbox; its id (containerd's log in the failure).
async fn run_pod(rt: &Runtime, config: &cri::PodSandboxConfig, containerd: &Containerd) -> String {
    rt.runtime
        .clone()
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", containerd.log()))
        .into_inner()
        .pod_sandbox_id
}

/// Stops a pod sandbox (its containers with it) and removes it, as the kubelet does.
async fn remove_pod(rt: &Runtime, sandbox: &str) {
    let mut service = rt.runtime.clone();
    service
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: sandbox.to_string(),
        })
        .await
        .unwrap();
    service
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox.to_string(),
        })
        .await
        .unwrap();
}

/// What a container printed, without CRI's time, stream and tag fields.
fn messages(log: &str) -> String {
    log.lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `script` in a busybox container of `sandbox` to its end: its exit code and its log as
/// the runtime wrote it (CRI's format).
async fn run_in_pod(
    rt: &Runtime,
    sandbox: &str,
    config: &cri::PodSandboxConfig,
    name: &str,
    script: &str,
) -> (i32, String) {
    let mut service = rt.runtime.clone();
    let container = service
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.to_string(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: "docker.io/library/busybox:latest".into(),
                    ..Default::default()
                }),
                command: vec!["sh".into(), "-c".into(), script.into()],
                log_path: format!("{name}/0.log"),
                linux: Some(cri::LinuxContainerConfig::default()),
                ..Default::default()
            }),
            sandbox_config: Some(config.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    service
        .start_container(cri::StartContainerRequest {
            container_id: container.clone(),
        })
        .await
        .unwrap();
    for _ in 0..100 {
        let status = service
            .container_status(cri::ContainerStatusRequest {
                container_id: container.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        if status.state == cri::ContainerState::ContainerExited as i32 {
            let log = std::fs::read_to_string(&status.log_path).unwrap_or_default();
            return (status.exit_code, log);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} did not finish");
}

#[test]
fn pods_get_addresses_from_the_node_pod_cidr_and_reach_each_other() {
    let containerd = containerd_with_images(Some("10.244.7.0/24"));
    let logs = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let rt = Runtime::connect(containerd.socket().to_str().unwrap()).await.unwrap();
        let mut service = rt.runtime.clone();
        let mut pods = Vec::new();
        for name in ["first", "second"] {
            let dir = logs.path().join(name);
            let mut config = sandbox_config(&dir);
            config.hostname = name.into();
            if let Some(meta) = config.metadata.as_mut() {
                meta.name = name.into();
                meta.uid = format!("uid-{name}");
            }
            // The pod's own network namespace, set up by CNI.
            config.linux = Some(cri::LinuxPodSandboxConfig::default());
            let id = run_pod(&rt, &config, &containerd).await;
            let status = service
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: id.clone(),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap();
            let ip = status.network.unwrap().ip;
            assert!(ip.starts_with("10.244.7."), "{name}: {ip}");
            pods.push((id, config, ip));
        }
        assert_ne!(pods[0].2, pods[1].2);
        // Each pod sees its own address on eth0 and its own host name.
        let (_, log) = run_in_pod(&rt, &pods[0].0, &pods[0].1, "addr", "hostname; ip -4 -o addr show eth0").await;
        let seen = messages(&log);
        assert!(seen.starts_with("first"), "{seen}");
        assert!(seen.contains(&format!("inet {}/24", pods[0].2)), "{seen}");
        // The first pod reaches the second over the node's bridge.
        let (_, log) = run_in_pod(
            &rt,
            &pods[0].0,
            &pods[0].1,
            "ping",
            &format!("ping -c 1 -W 3 {} && echo reached", pods[1].2),
        )
        .await;
        let ping = messages(&log);
        assert!(ping.lines().any(|l| l == "reached"), "{ping}");
        for (id, _, _) in &pods {
            remove_pod(&rt, id).await;
        }
    });
}
