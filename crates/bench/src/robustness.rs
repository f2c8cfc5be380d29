//! Slow and abusive clients against a `styrman apiserver` (release build): idle watches,
//! watches whose clients stop reading, thousands of open connections, and request bodies sent
//! a byte at a time. Throughout, a well-behaved client's GET latency and the server's RSS are
//! measured; at the end every pod created during the run must be there.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::api::{self, HttpsClient};

#[derive(clap::Args)]
pub struct Options {
    /// Idle watches held open
    #[arg(long, default_value_t = 1000)]
    idle_watches: usize,
    /// Watches whose clients never read
    #[arg(long, default_value_t = 50)]
    stalled_watches: usize,
    /// Pods created while the stalled watches are open
    #[arg(long, default_value_t = 5000)]
    pods: usize,
    /// Idle TLS connections held open
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Clients sending a request body one byte at a time
    #[arg(long, default_value_t = 100)]
    slow_bodies: usize,
    /// The styrman binary (default: target/release/styrman)
    #[arg(long)]
    styrman: Option<PathBuf>,
    /// Where the server keeps its data (use a real disk)
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let parent = options.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)?;
    let styrman = options
        .styrman
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/release/styrman"));
    let server = api::start(&styrman, &parent).await?;
    let client = api::client(server.data.path())?;
    let tls = Tls::new(server.data.path())?;
    let port: u16 = server.base.rsplit(':').next().unwrap().parse()?;
    let pid = server.child.id();
    let mut created = 0;
    api::create_pods(&client, &server.base, 8, 1, 0).await?;
    created += 1;
    println!("Robustness: styrman apiserver under slow and abusive clients (probe: GET of one pod, 8 clients, 2 s)\n");
    println!("{:<44} {:>9} {:>9} {:>9}", "phase", "p50 ms", "p99 ms", "RSS MiB");
    let phase = |name: &str, latencies: &[Duration]| -> anyhow::Result<()> {
        println!(
            "{:<44} {:>9.2} {:>9.2} {:>9}",
            name,
            api::percentile(latencies, 0.5).as_secs_f64() * 1e3,
            api::percentile(latencies, 0.99).as_secs_f64() * 1e3,
            api::rss_kib(pid)? / 1024
        );
        Ok(())
    };
    phase("baseline", &probe(&client, &server.base).await?)?;

    // Idle watches, each on its own connection.
    let mut idle = Vec::new();
    for _ in 0..options.idle_watches {
        let mut stream = tls.connect(port).await?;
        send_head(
            &mut stream,
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=1",
            None,
        )
        .await?;
        expect_status(&mut stream, 200).await?;
        idle.push(stream);
    }
    phase(
        &format!("{} idle watches", options.idle_watches),
        &probe(&client, &server.base).await?,
    )?;

    // Watches that never read while pods are created: they must not hold the server's memory.
    let mut stalled = Vec::new();
    for _ in 0..options.stalled_watches {
        let mut stream = tls.connect(port).await?;
        send_head(&mut stream, "GET", "/api/v1/namespaces/default/pods?watch=1", None).await?;
        stalled.push(stream);
    }
    let rss_before = api::rss_kib(pid)?;
    let (creates, elapsed) = api::create_pods(&client, &server.base, 32, options.pods, 1).await?;
    created += options.pods;
    let rss_after = api::rss_kib(pid)?;
    phase(
        &format!(
            "{} stalled watches, {} pods created",
            options.stalled_watches, options.pods
        ),
        &probe(&client, &server.base).await?,
    )?;
    let event_bytes = api::pod(1).len() as u64 + 400;
    println!(
        "    creates meanwhile: {:.0}/s, p99 {:.1} ms; RSS grew {} MiB (unbounded buffering would be ~{} MiB)",
        creates.len() as f64 / elapsed.as_secs_f64(),
        api::percentile(&creates, 0.99).as_secs_f64() * 1e3,
        rss_after.saturating_sub(rss_before) / 1024,
        options.stalled_watches as u64 * options.pods as u64 * event_bytes / (1024 * 1024)
    );
    drop(stalled);
    drop(idle);

    // Many idle connections, TLS handshake done, no request.
    let started = Instant::now();
    let mut open = Vec::with_capacity(options.connections);
    let mut refused = 0;
    for _ in 0..options.connections {
        match tls.connect(port).await {
            Ok(s) => open.push(s),
            Err(_) => refused += 1,
        }
    }
    let rss_open = api::rss_kib(pid)?;
    phase(
        &format!("{} open connections", open.len()),
        &probe(&client, &server.base).await?,
    )?;
    println!(
        "    opened in {:.1} s ({refused} refused); {:.1} KiB RSS per connection",
        started.elapsed().as_secs_f64(),
        rss_open.saturating_sub(rss_after) as f64 / open.len().max(1) as f64
    );
    drop(open);

    // Bodies sent one byte at a time, 20 ms apart.
    let mut slow = Vec::new();
    for i in 0..options.slow_bodies {
        let tls = tls.clone();
        slow.push(tokio::spawn(async move {
            let body = format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"slow-{i}"}},"data":{{"a":"b"}}}}"#
            );
            let mut stream = tls.connect(port).await?;
            send_head(
                &mut stream,
                "POST",
                "/api/v1/namespaces/default/configmaps",
                Some(body.len()),
            )
            .await?;
            for byte in body.as_bytes() {
                stream.write_all(std::slice::from_ref(byte)).await?;
                stream.flush().await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            read_status(&mut stream).await
        }));
    }
    let during_slow = probe(&client, &server.base).await?;
    phase(&format!("{} slow bodies being sent", options.slow_bodies), &during_slow)?;
    let mut statuses = std::collections::BTreeMap::new();
    for s in slow {
        *statuses.entry(s.await??).or_insert(0) += 1;
    }
    println!("    slow bodies answered: {statuses:?}");

    // Nothing lost.
    let body = api::request_body(
        &client,
        "GET",
        &format!("{}/api/v1/namespaces/default/pods", server.base),
    )
    .await?;
    let list: serde_json::Value = serde_json::from_slice(&body)?;
    let stored = list["items"].as_array().map_or(0, Vec::len);
    if stored != created {
        bail!("{created} pods were created but {stored} are stored");
    }
    println!("\nsummary: {created} pods created, {stored} stored; the probe kept being served in every phase");
    Ok(())
}

/// GETs of one pod by 8 clients for 2 s; their latencies.
async fn probe(client: &HttpsClient, base: &str) -> anyhow::Result<Vec<Duration>> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, uri) = (client.clone(), format!("{base}/api/v1/namespaces/default/pods/bench-0"));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                api::request(&client, "GET", &uri, None).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

/// Raw TLS connections with the admin's client certificate, for HTTP/1.1 by hand.
#[derive(Clone)]
struct Tls {
    connector: TlsConnector,
}

impl Tls {
    fn new(data_dir: &std::path::Path) -> anyhow::Result<Tls> {
        let pki = data_dir.join("pki");
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(pki.join("ca.crt"))? {
            roots.add(cert?)?;
        }
        let chain = CertificateDer::pem_file_iter(pki.join("admin.crt"))?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(pki.join("admin.key"))?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    async fn connect(&self, port: u16) -> anyhow::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let name = ServerName::try_from("127.0.0.1")?.to_owned();
        Ok(self.connector.connect(name, tcp).await?)
    }
}

async fn send_head(
    stream: &mut TlsStream<TcpStream>,
    method: &str,
    path: &str,
    body_length: Option<usize>,
) -> anyhow::Result<()> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n");
    if let Some(n) = body_length {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {n}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads the status line of a response.
async fn read_status(stream: &mut TlsStream<TcpStream>) -> anyhow::Result<u16> {
    let mut buf = vec![0u8; 4096];
    let mut have = 0;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf[have..]))
            .await
            .context("no answer within 60 s")??;
        if n == 0 {
            bail!("the connection closed before a status line");
        }
        have += n;
        if let Some(line_end) = buf[..have].windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..line_end]);
            return line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .with_context(|| format!("not a status line: {line}"));
        }
    }
}

async fn expect_status(stream: &mut TlsStream<TcpStream>, want: u16) -> anyhow::Result<()> {
    let got = read_status(stream).await?;
    if got != want {
        bail!("expected {want}, got {got}");
    }
    Ok(())
}
