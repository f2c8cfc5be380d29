//! The store benchmark: the embedded store and a real etcd, same workload, same disk, one run.
//!
//! Write runs: W writers each create new keys with a fixed-size value as fast as their
//! acknowledgements come back (every write durable), for a fixed time. Fan-out run: many
//! watchers of one prefix while the writers run; it reports how soon after the last write every
//! watcher has seen every event.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use styrman_store::{Store, StoreConfig, etcd::EtcdStore};
use styrman_testkit::EtcdServer;

#[derive(clap::Args)]
pub struct Options {
    /// Seconds each write run lasts
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrent writers, one run each
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    writers: Vec<usize>,
    /// Bytes per value
    #[arg(long, default_value_t = 2048)]
    value_bytes: usize,
    /// Watchers in the fan-out run (0 skips it)
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Writers during the fan-out run
    #[arg(long, default_value_t = 64)]
    fanout_writers: usize,
    /// Also run the etcd anchor (turn off only while experimenting: the figures mean little alone)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    etcd: bool,
    /// Where both stores keep their data (use a real disk, not tmpfs)
    #[arg(long)]
    dir: Option<PathBuf>,
}

struct WriteRun {
    writers: usize,
    writes: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl WriteRun {
    fn rate(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64()
    }
}

struct FanOut {
    writes_per_sec: f64,
    /// From the last acknowledged write until every watcher had every event.
    drain: Option<Duration>,
    /// Events delivered to all watchers together, per second, start to finish.
    delivered_per_sec: f64,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let parent = options.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)?;
    let value = Bytes::from(json_like_value(options.value_bytes));
    println!(
        "store benchmark: {}-byte values, every write durable, {} s per run, data under {}",
        options.value_bytes,
        options.seconds,
        parent.display()
    );
    let etcd_version = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "etcd (version unknown)".into());
    println!("anchor: {etcd_version}, single member on loopback, default (fsync) settings\n");
    println!(
        "{:<9} {:>7} {:>11} {:>9} {:>9}",
        "backend", "writers", "writes/s", "p50 ms", "p99 ms"
    );

    // Embedded.
    let embedded_dir = tempfile::Builder::new()
        .prefix("styrman-bench-store-")
        .tempdir_in(&parent)?;
    let embedded: Store = styrman_store::open(&StoreConfig::Embedded {
        data_dir: embedded_dir.path().into(),
    })
    .await
    .context("open the embedded store")?;
    let mut embedded_runs = Vec::new();
    for (i, &writers) in options.writers.iter().enumerate() {
        let run = write_run(
            std::slice::from_ref(&embedded),
            writers,
            &value,
            options.seconds,
            &format!("e{i}-{writers}"),
        )
        .await?;
        print_run("embedded", &run);
        embedded_runs.push(run);
    }

    // etcd: one connection per 16 writers, as a client pool would use.
    let etcd = match options.etcd {
        true => Some(EtcdServer::start_in(&parent).context("start etcd (install Debian's etcd-server)")?),
        false => None,
    };
    let mut etcd_runs = Vec::new();
    for (i, &writers) in options.writers.iter().enumerate().filter(|_| etcd.is_some()) {
        let etcd = etcd.as_ref().unwrap();
        let connections = writers.div_ceil(16).max(1);
        let mut stores: Vec<Store> = Vec::new();
        for _ in 0..connections {
            stores.push(Arc::new(EtcdStore::connect(&[etcd.url().to_string()]).await?));
        }
        let run = write_run(&stores, writers, &value, options.seconds, &format!("t{i}-{writers}")).await?;
        print_run("etcd", &run);
        etcd_runs.push(run);
    }

    let mut fanouts = Vec::new();
    if options.watchers > 0 {
        println!(
            "\nwatch fan-out: {} watchers of one prefix, {} writers for {} s",
            options.watchers, options.fanout_writers, options.seconds
        );
        println!(
            "{:<9} {:>11} {:>22} {:>18}",
            "backend", "writes/s", "all caught up after", "events/s delivered"
        );
        let embedded_fanout = fan_out(
            std::slice::from_ref(&embedded),
            options.watchers,
            options.fanout_writers,
            &value,
            options.seconds,
        )
        .await?;
        print_fanout("embedded", &embedded_fanout);
        if let Some(etcd) = &etcd {
            let etcd_store: Store = Arc::new(EtcdStore::connect(&[etcd.url().to_string()]).await?);
            let etcd_fanout = fan_out(
                &[etcd_store],
                options.watchers,
                options.fanout_writers,
                &value,
                options.seconds,
            )
            .await?;
            print_fanout("etcd", &etcd_fanout);
        }
        fanouts.push(embedded_fanout);
    }

    summarise(&options, &embedded_runs, &etcd_runs, fanouts.first());
    Ok(())
}

/// Pod-sized JSON-looking bytes (what the API server will store).
fn json_like_value(size: usize) -> Vec<u8> {
    let mut v = br#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"bench","annotations":{"pad":""#.to_vec();
    while v.len() + 4 < size {
        v.push(b'a' + (v.len() % 26) as u8);
    }
    v.extend_from_slice(br#""}}"#);
    v.truncate(size.max(1));
    v
}

async fn write_run(
    stores: &[Store],
    writers: usize,
    value: &Bytes,
    seconds: f64,
    tag: &str,
) -> anyhow::Result<WriteRun> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = stores[w % stores.len()].clone();
        let value = value.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let key = format!("/registry/pods/bench-{tag}/w{w}-{n}");
                let t = Instant::now();
                store.create(&key, value.clone()).await?;
                latencies.push(t.elapsed());
                n += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(WriteRun {
        writers,
        writes: latencies.len() as u64,
        elapsed,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn fan_out(
    stores: &[Store],
    watchers: usize,
    writers: usize,
    value: &Bytes,
    seconds: f64,
) -> anyhow::Result<FanOut> {
    let prefix = format!(
        "/registry/pods/fanout-{}/",
        std::process::id() ^ stores.len() as u32 ^ writers as u32
    );
    let from = stores[0].current_revision().await?;
    let received = Arc::new(AtomicU64::new(0));
    let mut watch_tasks = Vec::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(u64::MAX);
    let done_at = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    for _ in 0..watchers {
        let mut stream = stores[0].watch(&prefix, from).await?;
        let received = received.clone();
        let mut stop_rx = stop_rx.clone();
        let done_at = done_at.clone();
        watch_tasks.push(tokio::spawn(async move {
            let mut seen = 0u64;
            loop {
                let target = *stop_rx.borrow();
                if seen >= target {
                    received.fetch_add(seen, Ordering::Relaxed);
                    done_at.lock().unwrap().push(Instant::now());
                    return anyhow::Ok(());
                }
                tokio::select! {
                    batch = stream.next_batch() => {
                        let batch = batch.ok_or_else(|| anyhow::anyhow!("watch ended"))??;
                        seen += batch.len() as u64;
                    }
                    _ = stop_rx.changed() => {}
                }
            }
        }));
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let written = Arc::new(AtomicU64::new(0));
    let mut write_tasks = Vec::new();
    for w in 0..writers {
        let store = stores[w % stores.len()].clone();
        let (value, prefix, written) = (value.clone(), prefix.clone(), written.clone());
        write_tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                store.create(&format!("{prefix}w{w}-{n}"), value.clone()).await?;
                written.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            anyhow::Ok(())
        }));
    }
    for task in write_tasks {
        task.await??;
    }
    let last_write = Instant::now();
    let total = written.load(Ordering::Relaxed);
    stop_tx.send(total)?;
    let all = async {
        for task in watch_tasks {
            task.await??;
        }
        anyhow::Ok(())
    };
    let drained = tokio::time::timeout(Duration::from_secs(60), all).await;
    let drain = match drained {
        Ok(result) => {
            result?;
            let latest = done_at.lock().unwrap().iter().copied().max().unwrap_or(last_write);
            Some(latest.saturating_duration_since(last_write))
        }
        Err(_) => None,
    };
    let finished = started.elapsed();
    Ok(FanOut {
        writes_per_sec: total as f64 / last_write.duration_since(started).as_secs_f64(),
        drain,
        delivered_per_sec: received.load(Ordering::Relaxed) as f64 / finished.as_secs_f64(),
    })
}

fn print_run(backend: &str, run: &WriteRun) {
    println!(
        "{:<9} {:>7} {:>11.0} {:>9.2} {:>9.2}",
        backend,
        run.writers,
        run.rate(),
        run.p50.as_secs_f64() * 1e3,
        run.p99.as_secs_f64() * 1e3
    );
}

fn print_fanout(backend: &str, f: &FanOut) {
    let drain = match f.drain {
        Some(d) => format!("{:.0} ms", d.as_secs_f64() * 1e3),
        None => "not within 60 s".to_string(),
    };
    println!(
        "{:<9} {:>11.0} {:>22} {:>18.0}",
        backend, f.writes_per_sec, drain, f.delivered_per_sec
    );
}

fn summarise(options: &Options, embedded: &[WriteRun], etcd: &[WriteRun], fanout: Option<&FanOut>) {
    let top = options.writers.iter().copied().max().unwrap_or(0);
    let pick = |runs: &[WriteRun]| runs.iter().find(|r| r.writers == top).map(|r| (r.rate(), r.p99));
    let (Some((e_rate, e_p99)), Some((t_rate, t_p99))) = (pick(embedded), pick(etcd)) else {
        return;
    };
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let ratio = e_rate / t_rate;
    let mut goals = vec![
        format!(">=2x etcd {}", verdict(ratio >= 2.0)),
        format!("p99 no worse {}", verdict(e_p99 <= t_p99)),
        format!(">=20000 writes/s {}", verdict(e_rate >= 20_000.0)),
    ];
    if let Some(f) = fanout {
        // Keeping up: every watcher has everything within a second of the last write, while
        // the writers still ran at the goal rate.
        let kept_up = f.drain.is_some_and(|d| d <= Duration::from_secs(1)) && f.writes_per_sec >= 20_000.0;
        goals.push(format!(
            "{}-watcher fan-out keeps up {}",
            options.watchers,
            verdict(kept_up)
        ));
    }
    println!(
        "\nsummary: at {top} writers embedded {:.0} writes/s (p99 {:.2} ms) vs etcd {:.0} (p99 {:.2} ms) = {:.1}x; goals: {}",
        e_rate,
        e_p99.as_secs_f64() * 1e3,
        t_rate,
        t_p99.as_secs_f64() * 1e3,
        ratio,
        goals.join(", ")
    );
}
