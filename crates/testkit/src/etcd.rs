use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::free_port;

/// A real single-member etcd cluster on loopback, with its data in a temporary directory. The
/// `etcd` binary comes from Debian's `etcd-server` package (`scripts/test` installs it); set
/// `STYRMAN_ETCD` to use another one. Killed and removed when dropped.
pub struct EtcdServer {
    child: Child,
    client_url: String,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl EtcdServer {
    /// Starts etcd with its data under the system temporary directory.
    pub fn start() -> anyhow::Result<EtcdServer> {
        Self::start_in(&std::env::temp_dir())
    }

    /// Starts etcd with its data in a new directory inside `parent` (pick a real disk there when
    /// measuring durable writes). Retries with other ports if one was taken meanwhile.
    pub fn start_in(parent: &Path) -> anyhow::Result<EtcdServer> {
        let mut last_error = None;
        for _ in 0..3 {
            match Self::try_start(parent) {
                Ok(server) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap())
    }

    /// Starts etcd serving clients on a given port (for tests that need to know it beforehand).
    pub fn start_at(parent: &Path, client_port: u16) -> anyhow::Result<EtcdServer> {
        Self::try_start_on(parent, client_port)
    }

    fn try_start(parent: &Path) -> anyhow::Result<EtcdServer> {
        Self::try_start_on(parent, free_port()?)
    }

    fn try_start_on(parent: &Path, client_port: u16) -> anyhow::Result<EtcdServer> {
        let binary = std::env::var("STYRMAN_ETCD").unwrap_or_else(|_| "etcd".to_string());
        let dir = tempfile::Builder::new().prefix("styrman-etcd-").tempdir_in(parent)?;
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{}", free_port()?);
        let log = dir.path().join("etcd.log");
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(&binary);
        crate::die_with_parent(&mut command);
        let child = command
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot run {binary:?}: install Debian's etcd-server (scripts/test does)"))?;
        let mut server = EtcdServer {
            child,
            client_url,
            _dir: dir,
            log,
        };
        server.wait_healthy(Duration::from_secs(20))?;
        Ok(server)
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.client_url
    }

    /// What etcd has logged so far (for test failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let addr = self.client_url.trim_start_matches("http://").to_string();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("etcd exited ({status}) before becoming healthy:\n{}", self.log());
            }
            if http_get(&addr, "/health").is_ok_and(|body| body.contains("\"health\":\"true\"")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("etcd did not become healthy within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.0 GET, enough for a health probe without an HTTP client dependency.
fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}
