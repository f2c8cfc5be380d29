//! The controller benchmark: a Deployment of many replicas on hollow nodes, end to end through
//! the API server, controller manager and scheduler. Three phases, each timed until a watch of
//! the pods shows it done: all replicas Running, a rolling update of all of them, and the
//! Deployment's deletion down to the last pod.
//!
//! Anchor: upstream's controller manager creates about 20 pods/s at its default client rate
//! limits (100/s as scale tests configure it). Goal: 10 000 pods Running in under 20 s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use styrman_testkit::ChildProcess;

use crate::api::{self, HttpsClient};

#[derive(clap::Args)]
pub struct Options {
    /// Hollow nodes
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// The Deployment's replicas
    #[arg(long, default_value_t = 10_000)]
    replicas: usize,
    /// The styrman binary (default: target/release/styrman)
    #[arg(long)]
    styrman: Option<PathBuf>,
}

/// Upstream's controller manager at its default client QPS, and at the QPS scale tests use.
const ANCHOR_DEFAULT: f64 = 20.0;
const ANCHOR_SCALE_TESTS: f64 = 100.0;

/// What the pod watch has seen: per live pod, its image when Running (None until then).
#[derive(Default)]
struct Pods {
    running: HashMap<String, Option<String>>,
}

impl Pods {
    fn running_with(&self, image: &str) -> usize {
        self.running.values().filter(|i| i.as_deref() == Some(image)).count()
    }
}

type Seen = Arc<Mutex<Pods>>;

pub async fn run(options: Options) -> anyhow::Result<()> {
    let styrman = options
        .styrman
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/release/styrman"));
    // On this thread: the server dies with the thread that started it.
    let cluster = tokio::task::block_in_place(|| {
        styrman_testkit::Cluster::start_with(&styrman, &[crate::api::WIDE_CLUSTER_CIDR])
    })
    .context("cannot start styrman server")?;
    let client = api::client(cluster.data_dir())?;
    let base = format!("https://127.0.0.1:{}", cluster.port());
    println!(
        "controllers: styrman server + {} hollow nodes (110 pods each), a Deployment of {} replicas",
        options.nodes, options.replicas
    );
    let started = Instant::now();
    let _hollow = ChildProcess::spawn(
        cluster
            .styrman_command("hollow-nodes")
            .arg(format!("--count={}", options.nodes))
            .env("RUST_LOG", "warn"),
    )?;
    api::wait_for_nodes(&client, &base, options.nodes, started, Duration::from_secs(300)).await?;
    api::create_bench_namespace(&client, &base).await?;
    let seen = watch_pods(&client, &base).await?;
    let manager = cluster
        .component_pid("controller-manager")
        .context("no controller manager")?;
    let apiserver = cluster.component_pid("apiserver").context("no API server")?;
    let n = options.replicas;

    // 1. Create: every replica Running.
    let cpu = Cpu::start(manager, apiserver)?;
    let t = Instant::now();
    api::request(
        &client,
        "POST",
        &format!("{base}/apis/apps/v1/namespaces/bench/deployments"),
        Some(deployment(n, "pause:3.9")),
    )
    .await?;
    let samples = wait(&seen, Duration::from_secs(600), |p| p.running_with("pause:3.9") >= n).await?;
    report("create", n, t.elapsed(), &samples, &cpu)?;

    // 2. Rolling update of every replica to a new image.
    let cpu = Cpu::start(manager, apiserver)?;
    let t = Instant::now();
    let patch = r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"pause:3.10"}]}}}}"#;
    patch_deployment(&client, &base, patch).await?;
    let samples = wait(&seen, Duration::from_secs(900), |p| {
        p.running_with("pause:3.10") >= n && p.running.len() == n
    })
    .await?;
    report("rolling update", n, t.elapsed(), &samples, &cpu)?;

    // 3. Delete: every pod gone.
    let cpu = Cpu::start(manager, apiserver)?;
    let t = Instant::now();
    api::request(
        &client,
        "DELETE",
        &format!("{base}/apis/apps/v1/namespaces/bench/deployments/app"),
        None,
    )
    .await?;
    let samples = wait(&seen, Duration::from_secs(600), |p| p.running.is_empty()).await?;
    report("delete", n, t.elapsed(), &samples, &cpu)?;
    println!(
        "anchor: upstream's controller manager creates ~{ANCHOR_DEFAULT:.0} pods/s at its default client rate limits ({ANCHOR_SCALE_TESTS:.0}/s in scale tests); goal: {n} pods Running in under 20 s"
    );
    Ok(())
}

fn deployment(replicas: usize, image: &str) -> String {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"app","namespace":"bench"}},"spec":{{"replicas":{replicas},"selector":{{"matchLabels":{{"app":"bench"}}}},"template":{{"metadata":{{"labels":{{"app":"bench"}}}},"spec":{{"containers":[{{"name":"app","image":"{image}","resources":{{"requests":{{"cpu":"10m","memory":"10Mi"}}}}}}]}}}}}}}}"#
    )
}

async fn patch_deployment(client: &HttpsClient, base: &str, patch: &str) -> anyhow::Result<()> {
    let request = http::Request::builder()
        .method("PATCH")
        .uri(format!("{base}/apis/apps/v1/namespaces/bench/deployments/app"))
        .header("content-type", "application/strategic-merge-patch+json")
        .body(Full::new(Bytes::from(patch.to_string())))?;
    let response = client.request(request).await?;
    anyhow::ensure!(response.status().is_success(), "patch: {}", response.status());
    Ok(())
}

/// Watches the bench namespace's pods, keeping which exist and which run what.
async fn watch_pods(client: &HttpsClient, base: &str) -> anyhow::Result<Seen> {
    let seen: Seen = Default::default();
    let pods = Arc::clone(&seen);
    api::watch_events(
        client,
        &format!("{base}/api/v1/namespaces/bench/pods?watch=1"),
        move |event| {
            let object = &event["object"];
            let Some(name) = object["metadata"]["name"].as_str() else {
                return;
            };
            let mut pods = pods.lock().unwrap();
            if event["type"] == "DELETED" {
                pods.running.remove(name);
                return;
            }
            let running = object["status"]["phase"] == "Running" && object["metadata"]["deletionTimestamp"].is_null();
            let image = running.then(|| {
                object["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            });
            pods.running.insert(name.to_string(), image);
        },
    )
    .await?;
    Ok(seen)
}

/// Waits until `done`, sampling each second how far the count of Running pods moved.
async fn wait(seen: &Seen, timeout: Duration, done: impl Fn(&Pods) -> bool) -> anyhow::Result<Vec<f64>> {
    let deadline = Instant::now() + timeout;
    let running = |p: &Pods| p.running.values().filter(|i| i.is_some()).count() as f64;
    let mut last = running(&seen.lock().unwrap());
    let mut samples = Vec::new();
    let mut tick = Instant::now();
    loop {
        {
            let pods = seen.lock().unwrap();
            if done(&pods) {
                return Ok(samples);
            }
            if tick.elapsed() >= Duration::from_secs(1) {
                let now = running(&pods);
                samples.push((now - last).abs());
                last = now;
                tick = Instant::now();
            }
        }
        if Instant::now() > deadline {
            bail!("not done within {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// CPU time of the controller manager and the API server since a phase started.
struct Cpu {
    manager: (u32, f64),
    apiserver: (u32, f64),
}

impl Cpu {
    fn start(manager: u32, apiserver: u32) -> anyhow::Result<Cpu> {
        Ok(Cpu {
            manager: (manager, api::cpu_seconds(manager)?),
            apiserver: (apiserver, api::cpu_seconds(apiserver)?),
        })
    }

    fn used(&self) -> anyhow::Result<(f64, f64)> {
        Ok((
            api::cpu_seconds(self.manager.0)? - self.manager.1,
            api::cpu_seconds(self.apiserver.0)? - self.apiserver.1,
        ))
    }
}

fn report(phase: &str, n: usize, elapsed: Duration, samples: &[f64], cpu: &Cpu) -> anyhow::Result<()> {
    let (manager, apiserver) = cpu.used()?;
    let peak = samples.iter().copied().fold(0.0, f64::max);
    println!(
        "{phase}: {n} pods in {:.1} s = {:.0} pods/s (peak 1-s sample {peak:.0}); controller manager CPU {manager:.1} s, API server CPU {apiserver:.1} s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
    );
    Ok(())
}
