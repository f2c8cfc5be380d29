//! The API benchmark: concurrent HTTPS clients create, get, list and watch pods against a
//! `styrman apiserver` (release build, embedded store on a real disk), as client-go clients do.
//! The anchors are published figures (perf-anchors.md): k0s needs ~100 KB of control-plane
//! memory per pod; the goals are 2 000 creates/s, p99 under 50 ms at 32 clients, a LIST of
//! 10 000 pods under 100 ms and at most 20 KiB RSS per stored pod.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(clap::Args)]
pub struct Options {
    /// Pods to create
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent clients
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds of GETs
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Watchers during the watch run
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// The styrman binary (default: target/release/styrman)
    #[arg(long)]
    styrman: Option<PathBuf>,
    /// Where the server keeps its data (use a real disk)
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Room for a pod CIDR per node of thousands of hollow nodes (the default /16 holds 256 /24s).
pub(crate) const WIDE_CLUSTER_CIDR: &str = "--cluster-cidr=10.0.0.0/8";

pub(crate) type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let parent = options.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)?;
    let styrman = options
        .styrman
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/release/styrman"));
    let mut server = start(&styrman, &parent).await?;
    let client = client(server.data.path())?;
    let pid = server.child.id();
    println!(
        "API benchmark: styrman apiserver (embedded store under {}), {} clients over HTTPS (HTTP/2), {} pods",
        parent.display(),
        options.clients,
        options.pods
    );
    let rss_empty = rss_kib(pid)?;

    // Creates.
    let (creates, elapsed) = create_pods(&client, &server.base, options.clients, options.pods, 0).await?;
    let rss_full = rss_kib(pid)?;
    println!(
        "\n{:<10} {:>10} {:>9} {:>9} {:>9}",
        "verb", "requests", "per s", "p50 ms", "p99 ms"
    );
    report("create", &creates, elapsed);

    // Gets, for a fixed time.
    let deadline = Instant::now() + Duration::from_secs_f64(options.seconds);
    let gets = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..options.clients {
        let (client, base, gets) = (client.clone(), server.base.clone(), gets.clone());
        let pods = options.pods;
        tasks.push(tokio::spawn(async move {
            let mut n = c;
            let mut mine = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                request(
                    &client,
                    "GET",
                    &format!("{base}/api/v1/namespaces/default/pods/bench-{}", n % pods),
                    None,
                )
                .await?;
                mine.push(t.elapsed());
                n = n.wrapping_mul(7919).wrapping_add(13);
            }
            gets.lock().unwrap().extend(mine);
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let gets = std::mem::take(&mut *gets.lock().unwrap());
    report("get", &gets, started.elapsed());

    // Lists of everything, one at a time.
    let mut lists = Vec::new();
    let list_start = Instant::now();
    for _ in 0..5 {
        let t = Instant::now();
        let body = request_body(
            &client,
            "GET",
            &format!("{}/api/v1/namespaces/default/pods", server.base),
        )
        .await?;
        lists.push(t.elapsed());
        let list: serde_json::Value = serde_json::from_slice(&body)?;
        let items = list["items"].as_array().map_or(0, Vec::len);
        if items != options.pods {
            bail!("the list returned {items} pods, expected {}", options.pods);
        }
    }
    report(&format!("list {}", options.pods), &lists, list_start.elapsed());

    // Watches: every watcher must see every new pod.
    let extra = 1000;
    let rv = {
        let body = request_body(
            &client,
            "GET",
            &format!("{}/api/v1/namespaces/default/pods?limit=1", server.base),
        )
        .await?;
        let list: serde_json::Value = serde_json::from_slice(&body)?;
        list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string()
    };
    let mut watchers = Vec::new();
    for _ in 0..options.watchers {
        let uri = format!(
            "{}/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}",
            server.base
        );
        let response = client
            .request(http::Request::get(uri).body(Full::new(Bytes::new()))?)
            .await?;
        let mut body = response.into_body().into_data_stream();
        watchers.push(tokio::spawn(async move {
            let mut lines = 0;
            while lines < extra {
                let Some(chunk) = body.next().await else {
                    bail!("watch ended after {lines} events")
                };
                lines += chunk?.iter().filter(|b| **b == b'\n').count();
            }
            anyhow::Ok(Instant::now())
        }));
    }
    let watch_start = Instant::now();
    let (_, create_elapsed) = create_pods(&client, &server.base, options.clients, extra, 1_000_000).await?;
    let mut last_seen = watch_start;
    for w in watchers {
        last_seen = last_seen.max(w.await??);
    }
    let delivered = options.watchers * extra;
    println!(
        "\nwatch: {} watchers each saw {extra} new pods; creates took {:.0} ms, the last watcher caught up {:.0} ms after the last create ({:.0} events/s delivered)",
        options.watchers,
        create_elapsed.as_secs_f64() * 1e3,
        last_seen
            .saturating_duration_since(watch_start + create_elapsed)
            .as_secs_f64()
            * 1e3,
        delivered as f64 / last_seen.duration_since(watch_start).as_secs_f64()
    );

    let (ready, listed) = restart(&mut server, &styrman, options.pods).await?;
    println!(
        "\nrestart with {} pods stored: /readyz 200 after {:.0} ms, first full LIST after {:.0} ms",
        options.pods + extra,
        ready.as_secs_f64() * 1e3,
        listed.as_secs_f64() * 1e3
    );

    let per_pod = (rss_full.saturating_sub(rss_empty)) as f64 / options.pods as f64;
    println!(
        "\nmemory: apiserver RSS {} MiB empty, {} MiB with {} pods: {:.1} KiB per stored pod (anchor: k0s ~100 KB per pod)",
        rss_empty / 1024,
        rss_full / 1024,
        options.pods,
        per_pod
    );
    let p99 = |v: &[Duration]| percentile(v, 0.99).as_secs_f64() * 1e3;
    let create_rate = creates.len() as f64 / elapsed.as_secs_f64();
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "\nsummary: {:.0} creates/s [{} >=2000], create p99 {:.1} ms and get p99 {:.1} ms [{} <50], LIST of {} pods p50 {:.0} ms [{} <100], {:.1} KiB RSS per pod [{} <=20]",
        create_rate,
        verdict(create_rate >= 2000.0),
        p99(&creates),
        p99(&gets),
        verdict(p99(&creates) < 50.0 && p99(&gets) < 50.0),
        options.pods,
        percentile(&lists, 0.5).as_secs_f64() * 1e3,
        verdict(percentile(&lists, 0.5) < Duration::from_millis(100)),
        per_pod,
        verdict(per_pod <= 20.0)
    );
    Ok(())
}

pub(crate) async fn start(styrman: &Path, parent: &Path) -> anyhow::Result<Server> {
    let data = tempfile::Builder::new()
        .prefix("styrman-bench-api-")
        .tempdir_in(parent)?;
    let port = styrman_testkit::free_port()?;
    let child = spawn(styrman, data.path(), port)?;
    let server = Server {
        child,
        base: format!("https://127.0.0.1:{port}"),
        data,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.data.path().join("admin.kubeconfig").exists()
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    {
        if Instant::now() > deadline {
            bail!("the API server did not come up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(server)
}

fn spawn(styrman: &Path, data_dir: &Path, port: u16) -> anyhow::Result<Child> {
    let mut command = Command::new(styrman);
    styrman_testkit::die_with_parent(&mut command);
    command
        .arg("apiserver")
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {} (build it with cargo build --release)", styrman.display()))
}

/// Kills the server and starts it again on its data; the time until `/readyz` answers 200
/// and until a LIST of the pods returns `pods` items.
async fn restart(server: &mut Server, styrman: &Path, pods: usize) -> anyhow::Result<(Duration, Duration)> {
    let _ = server.child.kill();
    let _ = server.child.wait();
    let port: u16 = server.base.rsplit(':').next().unwrap_or("0").parse()?;
    let started = Instant::now();
    server.child = spawn(styrman, server.data.path(), port)?;
    let client = client(server.data.path())?;
    let deadline = started + Duration::from_secs(300);
    let mut ready = None;
    while ready.is_none() {
        if request_body(&client, "GET", &format!("{}/readyz", server.base))
            .await
            .is_ok()
        {
            ready = Some(started.elapsed());
        } else if Instant::now() > deadline {
            bail!("the API server was not ready within 300 s of a restart");
        } else {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let body = request_body(
        &client,
        "GET",
        &format!("{}/api/v1/namespaces/default/pods", server.base),
    )
    .await?;
    let listed = serde_json::from_slice::<serde_json::Value>(&body)?["items"]
        .as_array()
        .map_or(0, Vec::len);
    if listed < pods {
        bail!("after the restart the list has {listed} pods, expected at least {pods}");
    }
    Ok((ready.unwrap_or_default(), started.elapsed()))
}

pub(crate) fn client(data_dir: &Path) -> anyhow::Result<HttpsClient> {
    let pki = data_dir.join("pki");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.join("ca.crt"))? {
        roots.add(cert?)?;
    }
    let chain = CertificateDer::pem_file_iter(pki.join("admin.crt"))?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(pki.join("admin.key"))?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .build();
    Ok(Client::builder(TokioExecutor::new()).http2_only(true).build(connector))
}

pub(crate) fn pod(i: usize) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"bench-{i}","labels":{{"app":"bench","shard":"s{}"}}}},"spec":{{"containers":[{{"name":"app","image":"registry.local/app:1.0","ports":[{{"containerPort":8080}}],"resources":{{"requests":{{"cpu":"10m","memory":"50Mi"}}}}}}]}}}}"#,
        i % 16
    )
}

pub(crate) async fn request(client: &HttpsClient, method: &str, uri: &str, body: Option<String>) -> anyhow::Result<()> {
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let response = client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{method} {uri}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

pub(crate) async fn request_body(client: &HttpsClient, method: &str, uri: &str) -> anyhow::Result<Bytes> {
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(Bytes::new()))?;
    let response = client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{method} {uri}: {status}");
    }
    Ok(body)
}

/// Creates `count` pods named from `first` on, over `workers` concurrent clients.
/// Creates the namespace `bench` the benchmarks' objects live in.
pub(crate) async fn create_bench_namespace(client: &HttpsClient, base: &str) -> anyhow::Result<()> {
    request(
        client,
        "POST",
        &format!("{base}/api/v1/namespaces"),
        Some(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bench"}}"#.into()),
    )
    .await
}

/// Waits until `count` nodes have registered, failing once `timeout` has passed since
/// `started`, and says how long they took.
pub(crate) async fn wait_for_nodes(
    client: &HttpsClient,
    base: &str,
    count: usize,
    started: Instant,
    timeout: Duration,
) -> anyhow::Result<()> {
    loop {
        let body = request_body(client, "GET", &format!("{base}/api/v1/nodes")).await?;
        let list: serde_json::Value = serde_json::from_slice(&body)?;
        if list["items"].as_array().map_or(0, Vec::len) >= count {
            break;
        }
        if started.elapsed() > timeout {
            bail!(
                "the hollow nodes did not register within {} minutes",
                timeout.as_secs() / 60
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("{count} nodes registered in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Opens a watch at `uri` and hands each of its events to `on_event`, on a task of its own,
/// until the server ends the stream.
pub(crate) async fn watch_events(
    client: &HttpsClient,
    uri: &str,
    mut on_event: impl FnMut(&serde_json::Value) + Send + 'static,
) -> anyhow::Result<()> {
    let response = client
        .request(http::Request::get(uri).body(Full::new(Bytes::new()))?)
        .await?;
    let mut body = response.into_body().into_data_stream();
    tokio::spawn(async move {
        let mut pending = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if let Ok(event) = serde_json::from_slice::<serde_json::Value>(&line) {
                    on_event(&event);
                }
            }
        }
    });
    Ok(())
}

pub(crate) async fn create_pods(
    client: &HttpsClient,
    base: &str,
    workers: usize,
    count: usize,
    first: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let (client, uri) = (client.clone(), format!("{base}/api/v1/namespaces/default/pods"));
    timed_in_parallel(workers, count, move |i| {
        let (client, uri) = (client.clone(), uri.clone());
        async move { request(&client, "POST", &uri, Some(pod(first + i))).await }
    })
    .await
}

/// Runs `count` operations over `workers` concurrent tasks; returns each one's latency and
/// the total time.
async fn timed_in_parallel<F, Fut>(workers: usize, count: usize, op: F) -> anyhow::Result<(Vec<Duration>, Duration)>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (next, op) = (next.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(latencies);
                }
                let t = Instant::now();
                op(i).await?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all, started.elapsed()))
}

pub(crate) fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(verb: &str, latencies: &[Duration], elapsed: Duration) {
    println!(
        "{:<10} {:>10} {:>9.0} {:>9.2} {:>9.2}",
        verb,
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(latencies, 0.5).as_secs_f64() * 1e3,
        percentile(latencies, 0.99).as_secs_f64() * 1e3
    );
}

pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// User plus system CPU time of a process, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("bad stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}
