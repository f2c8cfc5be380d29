//! A kube client from a kubeconfig file, the way every styrman component connects.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// How long to wait for a kubeconfig that is not written yet (the API server writes the
/// components' kubeconfigs on its first start, which may still be under way).
const KUBECONFIG_WAIT: Duration = Duration::from_secs(60);

/// A client for the cluster `kubeconfig` points at. `user_agent` names the component in the
/// API server's logs and in the managedFields of what it writes (as `kube-controller-manager`
/// does upstream).
pub async fn connect(kubeconfig: &Path, user_agent: &str) -> anyhow::Result<kube::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig_text = wait_for_file(kubeconfig, KUBECONFIG_WAIT).await?;
    let parsed = Kubeconfig::from_yaml(&kubeconfig_text)
        .with_context(|| format!("cannot read the kubeconfig {}", kubeconfig.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("cannot use the kubeconfig {}", kubeconfig.display()))?;
    config.headers.push((
        http::header::USER_AGENT,
        user_agent
            .parse()
            .context("the user agent is not a valid header value")?,
    ));
    kube::Client::try_from(config).context("cannot make an API client")
}

async fn wait_for_file(path: &Path, timeout: Duration) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut logged = false;
    loop {
        match tokio::fs::read_to_string(path).await {
            Ok(text) => return Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tokio::time::Instant::now() < deadline => {
                if !logged {
                    tracing::info!(path = %path.display(), "waiting for the kubeconfig");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read the kubeconfig {}", path.display())),
        }
    }
}
