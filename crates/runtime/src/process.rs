//! What every component process needs to know about itself and its lifetime.

/// SIGTERM (what the supervisor sends) or Ctrl-C.
pub async fn shutdown_signal() {
    let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        return futures::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// This machine's host name (empty when unknown): part of leader identities and event sources.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
