//! The scheduler benchmark: kube-scheduler's scheduler_perf workloads end to end through the
//! API server, with hollow nodes as the cluster. A real `styrman server` (API server,
//! scheduler, controller manager) and one `styrman hollow-nodes` process; pods are created over
//! HTTPS by concurrent clients and a watch sees each one bound.
//!
//! Reported as scheduler_perf does: throughput as the average of 1-second samples of bound
//! pods over the measured phase, create-to-bound latency percentiles, and the scheduler's CPU
//! time and RSS. Anchor: upstream's CI gate for SchedulingBasic is 270 pods/s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::Full;

use crate::api::{self, HttpsClient};

#[derive(clap::Args)]
pub struct Options {
    /// Hollow nodes
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Pods created (and scheduled) before measuring
    #[arg(long, default_value_t = 1000)]
    initial_pods: usize,
    /// Pods measured
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent clients creating pods
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// The styrman binary (default: target/release/styrman)
    #[arg(long)]
    styrman: Option<PathBuf>,
}

struct Hollow(Child);

impl Drop for Hollow {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// scheduler_perf's pod-default.yaml: a pause container asking for 100m CPU and 500Mi.
fn pod(i: usize) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"pod-{i}","namespace":"bench"}},"spec":{{"containers":[{{"name":"pause","image":"registry.k8s.io/pause:3.10","ports":[{{"containerPort":80}}],"resources":{{"requests":{{"cpu":"100m","memory":"500Mi"}},"limits":{{"cpu":"100m","memory":"500Mi"}}}}}}]}}}}"#
    )
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let styrman = options.styrman.clone().unwrap_or_else(|| PathBuf::from("target/release/styrman"));
    // On this thread (the one block_on runs on): the server dies with the thread that started
    // it, and a blocking-pool thread does not live as long as the benchmark.
    let cluster = tokio::task::block_in_place(|| styrman_testkit::Cluster::start(&styrman))
        .context("cannot start styrman server")?;
    let client = api::client(cluster.data_dir())?;
    let base = format!("https://127.0.0.1:{}", cluster.port());
    println!(
        "Scheduler benchmark: styrman server + {} hollow nodes (4 CPU, 32Gi, 110 pods each), {} clients creating pods",
        options.nodes, options.clients
    );

    let started = Instant::now();
    let mut command = Command::new(&styrman);
    styrman_testkit::die_with_parent(&mut command);
    let _hollow = Hollow(
        command
            .arg("hollow-nodes")
            .arg(format!("--kubeconfig={}", cluster.kubeconfig().display()))
            .arg(format!("--count={}", options.nodes))
            .args(["--cpu=4", "--memory=32Gi", "--pods=110"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()?,
    );
    loop {
        let body = api::request_body(&client, "GET", &format!("{base}/api/v1/nodes")).await?;
        let list: serde_json::Value = serde_json::from_slice(&body)?;
        if list["items"].as_array().map_or(0, Vec::len) >= options.nodes {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the hollow nodes did not register within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("{} nodes registered in {:.1} s", options.nodes, started.elapsed().as_secs_f64());
    api::request(
        &client,
        "POST",
        &format!("{base}/api/v1/namespaces"),
        Some(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bench"}}"#.into()),
    )
    .await?;

    let scheduler = cluster.component_pid("scheduler").context("no scheduler process")?;
    // Initial pods, scheduled before measuring.
    let bound = watch_bindings(&client, &base).await?;
    create(&client, &base, options.clients, 0, options.initial_pods, &Arc::new(Mutex::new(HashMap::new()))).await?;
    wait_bound(&bound, options.initial_pods, Duration::from_secs(600)).await?;

    // Measured pods.
    let cpu_before = cpu_seconds(scheduler)?;
    let created_at = Arc::new(Mutex::new(HashMap::new()));
    let measure_start = Instant::now();
    let creating = tokio::spawn({
        let (client, base, created_at) = (client.clone(), base.clone(), Arc::clone(&created_at));
        let (clients, first, count) = (options.clients, options.initial_pods, options.pods);
        async move { create(&client, &base, clients, first, count, &created_at).await }
    });
    let mut samples = Vec::new();
    let mut last = bound_count(&bound);
    let total = options.initial_pods + options.pods;
    let deadline = Instant::now() + Duration::from_secs(900);
    while last < total {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = bound_count(&bound);
        samples.push((now - last) as f64);
        last = now;
        if Instant::now() > deadline {
            bail!("only {} of {} measured pods were bound within 15 minutes", now - options.initial_pods, options.pods);
        }
    }
    creating.await??;
    let elapsed = measure_start.elapsed();
    let cpu = cpu_seconds(scheduler)? - cpu_before;
    let rss = api::rss_kib(scheduler)?;
    // The last sample is partial; scheduler_perf averages the full ones.
    if samples.len() > 1 {
        samples.pop();
    }
    let throughput = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
    let latencies: Vec<Duration> = {
        let created = created_at.lock().unwrap();
        let bound = bound.lock().unwrap();
        created
            .iter()
            .filter_map(|(name, at): (&String, &Instant)| bound.get(name).map(|b| b.saturating_duration_since(*at)))
            .collect()
    };
    println!(
        "\nSchedulingBasic ({} nodes, {} initial pods, {} measured): {:.0} pods/s (average of {} 1-s samples; {:.1} s in all)",
        options.nodes,
        options.initial_pods,
        options.pods,
        throughput,
        samples.len(),
        elapsed.as_secs_f64()
    );
    println!(
        "create-to-bound latency p50 {:.0} ms, p99 {:.0} ms; scheduler CPU {:.1} s ({:.2} cores), RSS {} MiB",
        api::percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        api::percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        cpu,
        cpu / elapsed.as_secs_f64(),
        rss / 1024
    );
    println!(
        "\nsummary: SchedulingBasic {:.0} pods/s [{} >=2000; upstream CI gate 270]; NodeAffinity, PodAntiAffinity, TopologySpreading, Preemption: not yet measured",
        throughput,
        if throughput >= 2000.0 { "met" } else { "NOT met" }
    );
    drop(cluster);
    Ok(())
}

/// Creates pods `first..first+count` over `clients` concurrent clients, noting when each was sent.
async fn create(
    client: &HttpsClient,
    base: &str,
    clients: usize,
    first: usize,
    count: usize,
    created_at: &Arc<Mutex<HashMap<String, Instant>>>,
) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, uri, next, created_at) = (
            client.clone(),
            format!("{base}/api/v1/namespaces/bench/pods"),
            Arc::clone(&next),
            Arc::clone(created_at),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(());
                }
                created_at.lock().unwrap().insert(format!("pod-{}", first + i), Instant::now());
                api::request(&client, "POST", &uri, Some(pod(first + i))).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

type Bound = Arc<Mutex<HashMap<String, Instant>>>;

/// Watches the bench namespace's pods; notes when each is first seen bound to a node.
async fn watch_bindings(client: &HttpsClient, base: &str) -> anyhow::Result<Bound> {
    let bound: Bound = Default::default();
    let uri = format!("{base}/api/v1/namespaces/bench/pods?watch=1&allowWatchBookmarks=false");
    let response = client.request(http::Request::get(uri).body(Full::new(Bytes::new()))?).await?;
    let mut body = http_body_util::BodyExt::into_data_stream(response.into_body());
    let seen = Arc::clone(&bound);
    tokio::spawn(async move {
        let mut pending = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let Ok(event) = serde_json::from_slice::<serde_json::Value>(&line) else { continue };
                let object = &event["object"];
                if object["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty())
                    && let Some(name) = object["metadata"]["name"].as_str()
                {
                    seen.lock().unwrap().entry(name.to_string()).or_insert_with(Instant::now);
                }
            }
        }
    });
    Ok(bound)
}

fn bound_count(bound: &Bound) -> usize {
    bound.lock().unwrap().len()
}

async fn wait_bound(bound: &Bound, count: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while bound.lock().unwrap().len() < count {
        if Instant::now() > deadline {
            bail!("only {} of {count} pods were bound in time", bound.lock().unwrap().len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// User plus system CPU time of a process, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').context("bad stat")?.1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}
