//! The node benchmark: pods created at once on one real node (`styrman kubelet` with its
//! containerd and runc, in a network namespace of its own), each timed from its create request
//! to the watch showing it Running with its container ready; beside the floor measured in the
//! same run on the same containerd: `ctr run` of the same image and command, started all at
//! once (containerd + runc alone: no sandbox, no pod network, no API). Also the agent's RSS
//! idle and per pod.
//!
//! Anchors: upstream's pod startup SLO (p99 ≤ 5 s), the kubelet's default `--max-pods` 110,
//! containerd + runc ≈ 140-180 ms per container on this kind of machine. Goals: p99 < 1 s at
//! 100 pods, ≥ 25 pods/s, agent idle ≤ 32 MiB RSS, per-pod cost ≤ 1.5× the floor's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use styrman_testkit::{Cluster, Node};

use crate::api::{self, HttpsClient};

#[derive(clap::Args)]
pub struct Options {
    /// Pods per round, one round each (the pods of a round are deleted before the next)
    #[arg(long, value_delimiter = ',', default_value = "100,300")]
    pods: Vec<usize>,
    /// Containers the floor starts with `ctr run`
    #[arg(long, default_value_t = 100)]
    floor: usize,
    /// The styrman binary (default: target/release/styrman)
    #[arg(long)]
    styrman: Option<PathBuf>,
}

const IMAGE: &str = "docker.io/library/busybox:latest";
const GOAL_P99: Duration = Duration::from_secs(1);
const GOAL_RATE: f64 = 25.0;
const GOAL_IDLE_MIB: f64 = 32.0;
const GOAL_COST_RATIO: f64 = 1.5;

/// When each pod of the round was asked for and when it was seen running.
#[derive(Default)]
struct Round {
    created: HashMap<String, Instant>,
    running: HashMap<String, Instant>,
    gone: usize,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let styrman = options
        .styrman
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/release/styrman"));
    // scripts/images runs from elsewhere.
    let styrman = std::path::absolute(styrman)?;
    let images = tempfile::tempdir()?;
    let most = options.pods.iter().copied().max().unwrap_or(0);
    // On this thread: the server and the node die with the thread that started them.
    let (cluster, node) = tokio::task::block_in_place(|| -> anyhow::Result<(Cluster, Node)> {
        styrman_testkit::build_images(&styrman, images.path());
        // A /22 per node: the default /24 holds 253 pod addresses, fewer than the largest round.
        let cluster = Cluster::start_for_nodes_with(&styrman, &["--node-cidr-mask-size=22"])?;
        let max_pods = format!("--max-pods={}", most + 10);
        let node = Node::start_with(&cluster, &styrman, "bench-node", images.path(), &[&max_pods])?;
        Ok((cluster, node))
    })?;
    let client = api::client(cluster.data_dir())?;
    let base = format!("https://127.0.0.1:{}", cluster.port());
    wait_ready(&client, &base).await?;
    api::create_bench_namespace(&client, &base).await?;
    let round: Arc<Mutex<Round>> = Default::default();
    watch_pods(&client, &base, Arc::clone(&round)).await?;
    let kubelet = node.kubelet_pid().context("the agent is not running")?;
    println!("pods: styrman server + one real node (containerd + runc); busybox `sleep`");

    // Warm-up: the image's layers unpacked, the pod network up.
    run_round(&client, &base, &round, &node, 1, "warm").await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = rss_mib(kubelet)?;
    println!("agent RSS idle: {idle:.1} MiB");

    let floor = floor(&node, options.floor).await?;
    println!(
        "floor: {} containers by `ctr run` at once in {:.2} s: {:.0} ms per container, {:.1} containers/s",
        options.floor,
        floor.as_secs_f64(),
        floor.as_secs_f64() * 1000.0 / options.floor as f64,
        options.floor as f64 / floor.as_secs_f64()
    );
    let floor_cost = floor.as_secs_f64() / options.floor as f64;

    let mut verdicts = Vec::new();
    for &n in &options.pods {
        let (latencies, wall, rss) =
            run_round_measured(&client, &base, &round, &node, n, &format!("r{n}"), kubelet).await?;
        let p = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1];
        let rate = n as f64 / wall.as_secs_f64();
        let cost = wall.as_secs_f64() / n as f64;
        println!(
            "{n} pods: create→Running p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {:.1} pods/s; {:.0} ms per pod = {:.2}× the floor; agent RSS {:.1} MiB (+{:.0} KiB per pod)",
            ms(p(0.50)),
            ms(p(0.99)),
            ms(p(1.0)),
            rate,
            cost * 1000.0,
            cost / floor_cost,
            rss,
            (rss - idle).max(0.0) * 1024.0 / n as f64,
        );
        if n == 100 {
            verdicts.push(format!(
                "p99 at 100 pods {:.0} ms (goal < {} ms)",
                ms(p(0.99)),
                GOAL_P99.as_millis()
            ));
        }
        verdicts.push(format!("{rate:.1} pods/s at {n} (goal ≥ {GOAL_RATE})"));
        verdicts.push(format!(
            "{:.2}× floor at {n} (goal ≤ {GOAL_COST_RATIO})",
            cost / floor_cost
        ));
    }
    verdicts.push(format!("idle {idle:.1} MiB (goal ≤ {GOAL_IDLE_MIB})"));
    println!(
        "anchor: upstream's SLO p99 ≤ 5 s, default --max-pods 110, containerd+runc ≈ 140-180 ms per container here"
    );
    println!("summary: {}", verdicts.join("; "));
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn wait_ready(client: &HttpsClient, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let body = api::request_body(client, "GET", &format!("{base}/api/v1/nodes/bench-node")).await;
        if let Ok(body) = body {
            let node: serde_json::Value = serde_json::from_slice(&body)?;
            let ready = node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            if ready && node["spec"]["podCIDR"].is_string() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the node did not become Ready");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn watch_pods(client: &HttpsClient, base: &str, round: Arc<Mutex<Round>>) -> anyhow::Result<()> {
    api::watch_events(
        client,
        &format!("{base}/api/v1/namespaces/bench/pods?watch=1"),
        move |event| {
            let object = &event["object"];
            let Some(name) = object["metadata"]["name"].as_str() else {
                return;
            };
            let mut round = round.lock().unwrap();
            if event["type"] == "DELETED" {
                round.gone += 1;
                return;
            }
            let ready =
                object["status"]["phase"] == "Running" && object["status"]["containerStatuses"][0]["ready"] == true;
            if ready && !round.running.contains_key(name) {
                round.running.insert(name.to_string(), Instant::now());
            }
        },
    )
    .await
}

fn pod(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "main",
                "image": IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
            }],
        },
    })
    .to_string()
}

async fn run_round(
    client: &HttpsClient,
    base: &str,
    round: &Arc<Mutex<Round>>,
    node: &Node,
    n: usize,
    prefix: &str,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    *round.lock().unwrap() = Round::default();
    let uri = format!("{base}/api/v1/namespaces/bench/pods");
    let t = Instant::now();
    let creates = (0..n).map(|i| {
        let (client, uri, round) = (client.clone(), uri.clone(), Arc::clone(round));
        let name = format!("{prefix}-{i}");
        async move {
            round.lock().unwrap().created.insert(name.clone(), Instant::now());
            api::request(&client, "POST", &uri, Some(pod(&name))).await
        }
    });
    for result in futures::future::join_all(creates).await {
        result?;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while round.lock().unwrap().running.len() < n {
        if Instant::now() > deadline {
            bail!(
                "{} of {n} pods Running after 10 minutes",
                round.lock().unwrap().running.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut latencies, wall) = {
        let round = round.lock().unwrap();
        let last = round.running.values().max().copied().unwrap_or(t);
        let latencies: Vec<Duration> = round
            .running
            .iter()
            .map(|(name, at)| at.duration_since(round.created[name]))
            .collect();
        (latencies, last.duration_since(t))
    };
    latencies.sort();
    delete_all(client, base, round, node, n).await?;
    Ok((latencies, wall))
}

/// A round with the agent's RSS read while its pods run.
async fn run_round_measured(
    client: &HttpsClient,
    base: &str,
    round: &Arc<Mutex<Round>>,
    node: &Node,
    n: usize,
    prefix: &str,
    kubelet: u32,
) -> anyhow::Result<(Vec<Duration>, Duration, f64)> {
    let rss = Arc::new(Mutex::new(0.0f64));
    let sampler = {
        let rss = Arc::clone(&rss);
        let round = Arc::clone(round);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let all_running = {
                    let r = round.lock().unwrap();
                    !r.created.is_empty() && r.running.len() >= r.created.len()
                };
                if all_running {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    *rss.lock().unwrap() = rss_mib(kubelet).unwrap_or(0.0);
                    return;
                }
            }
        })
    };
    let (latencies, wall) = run_round(client, base, round, node, n, prefix).await?;
    sampler.abort();
    let rss = *rss.lock().unwrap();
    Ok((latencies, wall, rss))
}

async fn delete_all(
    client: &HttpsClient,
    base: &str,
    round: &Arc<Mutex<Round>>,
    node: &Node,
    n: usize,
) -> anyhow::Result<()> {
    // The RSS sampler reads once all run; give it its moment before the pods go.
    tokio::time::sleep(Duration::from_secs(3)).await;
    api::request(
        client,
        "DELETE",
        &format!("{base}/api/v1/namespaces/bench/pods"),
        Some(r#"{"gracePeriodSeconds":0}"#.into()),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while round.lock().unwrap().gone < n || !tokio::task::block_in_place(|| node.tasks()).is_empty() {
        if Instant::now() > deadline {
            bail!("the pods were not gone 10 minutes after their deletion");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// `count` containers of the same image and command started at once with `ctr run` on the
/// node's containerd, then removed: how long the starts took.
async fn floor(node: &Node, count: usize) -> anyhow::Result<Duration> {
    let socket = node.dir().join("agent/containerd/containerd.sock");
    let ctr = |socket: &Path, args: &[&str]| {
        let mut command = tokio::process::Command::new("ctr");
        command
            .arg("--address")
            .arg(socket)
            .args(["--namespace", "k8s.io"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        command
    };
    let t = Instant::now();
    let starts = (0..count).map(|i| {
        let id = format!("floor-{i}");
        let mut command = ctr(&socket, &["run", "-d", IMAGE, &id, "sleep", "3600"]);
        async move { command.output().await }
    });
    for out in futures::future::join_all(starts).await {
        let out = out?;
        if !out.status.success() {
            bail!("ctr run failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let took = t.elapsed();
    for i in 0..count {
        let id = format!("floor-{i}");
        ctr(&socket, &["task", "kill", "--signal", "SIGKILL", &id])
            .output()
            .await?;
    }
    for i in 0..count {
        let id = format!("floor-{i}");
        for _ in 0..50 {
            if ctr(&socket, &["task", "rm", &id]).output().await?.status.success() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ctr(&socket, &["container", "rm", &id]).output().await?;
    }
    Ok(took)
}

fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kib / 1024.0)
}
