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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use styrman_testkit::ChildProcess;

use crate::api::{self, HttpsClient};

#[derive(clap::Args)]
pub struct Options {
    /// Workloads to run: basic, node-affinity, pod-anti-affinity, topology-spread, preemption
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "basic,node-affinity,pod-anti-affinity,topology-spread,preemption"
    )]
    workloads: Vec<String>,
    /// Override every workload's node count
    #[arg(long)]
    nodes: Option<usize>,
    /// Override every workload's initial pod count
    #[arg(long)]
    initial_pods: Option<usize>,
    /// Override every workload's measured pod count
    #[arg(long)]
    pods: Option<usize>,
    /// Concurrent clients creating pods
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// The styrman binary (default: target/release/styrman)
    #[arg(long)]
    styrman: Option<PathBuf>,
}

/// One scheduler_perf workload: its cluster, its pods, and upstream's CI gate (pods/s).
struct Workload {
    name: &'static str,
    title: &'static str,
    /// Hollow node groups: (name prefix, share of the nodes, labels).
    groups: &'static [(&'static str, usize, &'static str)],
    nodes: usize,
    initial: usize,
    measured: usize,
    gate: f64,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "basic",
        title: "SchedulingBasic",
        groups: &[("node-", 1, "")],
        nodes: 5000,
        initial: 1000,
        measured: 10_000,
        gate: 270.0,
    },
    Workload {
        name: "node-affinity",
        title: "NodeAffinity",
        groups: &[("node-", 1, "topology.kubernetes.io/zone=zone1")],
        nodes: 5000,
        initial: 1000,
        measured: 10_000,
        gate: 220.0,
    },
    Workload {
        name: "pod-anti-affinity",
        title: "PodAntiAffinity",
        groups: &[("node-", 1, "")],
        nodes: 5000,
        initial: 1000,
        measured: 1000,
        gate: 60.0,
    },
    Workload {
        name: "topology-spread",
        title: "TopologySpreading",
        groups: &[
            ("moon1-", 3, "topology.kubernetes.io/zone=moon-1"),
            ("moon2-", 3, "topology.kubernetes.io/zone=moon-2"),
            ("moon3-", 3, "topology.kubernetes.io/zone=moon-3"),
        ],
        nodes: 5000,
        initial: 1000,
        measured: 1000,
        gate: 85.0,
    },
    Workload {
        name: "preemption",
        title: "PreemptionBasic",
        groups: &[("node-", 1, "")],
        nodes: 500,
        initial: 2000,
        measured: 500,
        gate: 18.0,
    },
];

/// scheduler_perf's pod templates: a pause container asking for 100m CPU and 500Mi, with the
/// workload's constraints.
fn pod(workload: &str, i: usize, measured: bool) -> String {
    let resources = |cpu: &str| {
        format!(r#"{{"requests":{{"cpu":"{cpu}","memory":"500Mi"}},"limits":{{"cpu":"{cpu}","memory":"500Mi"}}}}"#)
    };
    let (labels, extra, cpu) = match (workload, measured) {
        ("node-affinity", _) => (
            "{}".to_string(),
            r#","affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"topology.kubernetes.io/zone","operator":"In","values":["zone1","zone2"]}]}]}}}"#.to_string(),
            "100m",
        ),
        ("pod-anti-affinity", _) => (
            r#"{"color":"green"}"#.to_string(),
            r#","affinity":{"podAntiAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":[{"labelSelector":{"matchLabels":{"color":"green"}},"topologyKey":"kubernetes.io/hostname"}]}}"#.to_string(),
            "100m",
        ),
        ("topology-spread", _) => (
            r#"{"color":"blue"}"#.to_string(),
            r#","topologySpreadConstraints":[{"maxSkew":5,"topologyKey":"topology.kubernetes.io/zone","whenUnsatisfiable":"DoNotSchedule","labelSelector":{"matchLabels":{"color":"blue"}}}]"#.to_string(),
            "100m",
        ),
        ("preemption", false) => ("{}".to_string(), r#","priorityClassName":"low""#.to_string(), "900m"),
        ("preemption", true) => ("{}".to_string(), r#","priorityClassName":"high""#.to_string(), "900m"),
        _ => ("{}".to_string(), String::new(), "100m"),
    };
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"pod-{i}","namespace":"bench","labels":{labels}}},"spec":{{"containers":[{{"name":"pause","image":"registry.k8s.io/pause:3.10","ports":[{{"containerPort":80}}],"resources":{}}}]{extra}}}}}"#,
        resources(cpu)
    )
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for name in &options.workloads {
        let w = WORKLOADS
            .iter()
            .find(|w| w.name == name)
            .with_context(|| format!("no workload {name}"))?;
        let workload = Workload {
            nodes: options.nodes.unwrap_or(w.nodes),
            initial: options.initial_pods.unwrap_or(w.initial),
            measured: options.pods.unwrap_or(w.measured),
            ..*w
        };
        let throughput = run_workload(&workload, &options).await?;
        results.push((workload.title, throughput, workload.gate));
    }
    let parts: Vec<String> = results
        .iter()
        .map(|(title, t, gate)| {
            let x = t / gate;
            format!(
                "{title} {t:.0} pods/s ({x:.1}x the {gate:.0} gate) [{}]",
                if x >= 5.0 { "met 5x" } else { "NOT met 5x" }
            )
        })
        .collect();
    println!("\nsummary: {}; SchedulingBasic goal 2000 pods/s", parts.join("; "));
    Ok(())
}

async fn run_workload(workload: &Workload, options: &Options) -> anyhow::Result<f64> {
    let styrman = options
        .styrman
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/release/styrman"));
    // On this thread (the one block_on runs on): the server dies with the thread that started
    // it, and a blocking-pool thread does not live as long as the benchmark.
    let cluster = tokio::task::block_in_place(|| {
        styrman_testkit::Cluster::start_with(&styrman, &[crate::api::WIDE_CLUSTER_CIDR])
    })
    .context("cannot start styrman server")?;
    let client = api::client(cluster.data_dir())?;
    let base = format!("https://127.0.0.1:{}", cluster.port());
    println!(
        "\n{}: styrman server + {} hollow nodes (4 CPU, 32Gi, 110 pods each), {} initial and {} measured pods, {} clients",
        workload.title, workload.nodes, workload.initial, workload.measured, options.clients
    );

    let started = Instant::now();
    let shares: usize = workload.groups.iter().map(|g| g.1).sum();
    let mut hollows = Vec::new();
    let mut placed = 0;
    for (i, (prefix, share, labels)) in workload.groups.iter().enumerate() {
        let count = if i + 1 == workload.groups.len() {
            workload.nodes - placed
        } else {
            workload.nodes * share / shares
        };
        placed += count;
        let mut command = cluster.styrman_command("hollow-nodes");
        command
            .arg(format!("--count={count}"))
            .arg(format!("--prefix={prefix}"))
            .args(["--cpu=4", "--memory=32Gi", "--pods=110"]);
        if !labels.is_empty() {
            command.arg(format!("--labels={labels}"));
        }
        hollows.push(ChildProcess::spawn(command.env("RUST_LOG", "warn"))?);
    }
    api::wait_for_nodes(&client, &base, workload.nodes, started, Duration::from_secs(600)).await?;
    for (class, value) in [("low", 10), ("high", 1000)] {
        api::request(
            &client,
            "POST",
            &format!("{base}/apis/scheduling.k8s.io/v1/priorityclasses"),
            Some(format!(
                r#"{{"apiVersion":"scheduling.k8s.io/v1","kind":"PriorityClass","metadata":{{"name":"{class}"}},"value":{value}}}"#
            )),
        )
        .await?;
    }
    api::create_bench_namespace(&client, &base).await?;

    let scheduler = cluster.component_pid("scheduler").context("no scheduler process")?;
    // Initial pods, scheduled before measuring.
    let bound = watch_bindings(&client, &base).await?;
    let initial = Batch {
        workload: workload.name,
        first: 0,
        count: workload.initial,
        measured: false,
    };
    create(
        &client,
        &base,
        options.clients,
        &initial,
        &Arc::new(Mutex::new(HashMap::new())),
    )
    .await?;
    wait_bound(&bound, workload.initial, Duration::from_secs(600)).await?;

    // Measured pods.
    let cpu_before = api::cpu_seconds(scheduler)?;
    let created_at = Arc::new(Mutex::new(HashMap::new()));
    let measure_start = Instant::now();
    let creating = tokio::spawn({
        let (client, base, created_at) = (client.clone(), base.clone(), Arc::clone(&created_at));
        let clients = options.clients;
        let batch = Batch {
            workload: workload.name,
            first: workload.initial,
            count: workload.measured,
            measured: true,
        };
        async move { create(&client, &base, clients, &batch, &created_at).await }
    });
    let mut samples = Vec::new();
    let mut last = bound_count(&bound).max(workload.initial);
    let total = workload.initial + workload.measured;
    let deadline = Instant::now() + Duration::from_secs(900);
    while last < total {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = bound_count(&bound);
        samples.push((now - last) as f64);
        last = now;
        if Instant::now() > deadline {
            bail!(
                "only {} of {} measured pods were bound within 15 minutes",
                now - workload.initial,
                workload.measured
            );
        }
    }
    creating.await??;
    let elapsed = measure_start.elapsed();
    let cpu = api::cpu_seconds(scheduler)? - cpu_before;
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
        "{}: {:.0} pods/s (average of {} 1-s samples; {:.1} s in all); create-to-bound p50 {:.0} ms, p99 {:.0} ms; scheduler CPU {:.1} s ({:.2} cores), RSS {} MiB; upstream gate {:.0}",
        workload.title,
        throughput,
        samples.len(),
        elapsed.as_secs_f64(),
        api::percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        api::percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        cpu,
        cpu / elapsed.as_secs_f64(),
        rss / 1024,
        workload.gate
    );
    drop(hollows);
    drop(cluster);
    Ok(throughput)
}

/// Pods `first..first+count` of a workload.
#[derive(Clone, Copy)]
struct Batch {
    workload: &'static str,
    first: usize,
    count: usize,
    measured: bool,
}

/// Creates a batch over `clients` concurrent clients, noting when each pod was sent.
async fn create(
    client: &HttpsClient,
    base: &str,
    clients: usize,
    batch: &Batch,
    created_at: &Arc<Mutex<HashMap<String, Instant>>>,
) -> anyhow::Result<()> {
    let Batch {
        workload,
        first,
        count,
        measured,
    } = *batch;
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
                created_at
                    .lock()
                    .unwrap()
                    .insert(format!("pod-{}", first + i), Instant::now());
                api::request(&client, "POST", &uri, Some(pod(workload, first + i, measured))).await?;
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
    let seen = Arc::clone(&bound);
    api::watch_events(client, &uri, move |event| {
        let object = &event["object"];
        if object["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty())
            && let Some(name) = object["metadata"]["name"].as_str()
        {
            seen.lock()
                .unwrap()
                .entry(name.to_string())
                .or_insert_with(Instant::now);
        }
    })
    .await?;
    Ok(bound)
}

fn bound_count(bound: &Bound) -> usize {
    bound.lock().unwrap().len()
}

async fn wait_bound(bound: &Bound, count: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while bound.lock().unwrap().len() < count {
        if Instant::now() > deadline {
            bail!(
                "only {} of {count} pods were bound in time",
                bound.lock().unwrap().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
