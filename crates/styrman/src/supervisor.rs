//! `styrman server`: runs each control-plane component as a child process of this same
//! executable and restarts one that exits, so one crash never takes another down.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// One supervised component: the subcommand and its arguments.
pub struct Component {
    pub name: &'static str,
    pub args: Vec<String>,
}

/// Restart backoff: doubles from 0.5 s up to 10 s while a component keeps dying quickly.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A component that ran this long before exiting is restarted at once.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// How long a component may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub async fn run(components: Vec<Component>) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut running = Vec::new();
    for component in components {
        let exe = exe.clone();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move { keep_running(&exe, component, stop_rx).await });
        running.push((stop_tx, task));
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping the control plane");
    // In reverse order of start: the API server goes last, so the others can still reach it
    // while they stop (a leader releasing its lease).
    for (stop, task) in running.into_iter().rev() {
        stop.send_replace(true);
        let _ = task.await;
    }
    Ok(())
}

async fn keep_running(exe: &std::path::Path, component: Component, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let status = match spawn(exe, &component) {
            Ok(mut child) => tokio::select! {
                status = child.wait() => status,
                _ = stopped(&mut stop) => {
                    // Ask first (a leader releases its lease), kill if it takes too long;
                    // dropping the child handle kills it (kill_on_drop).
                    if let Some(pid) = child.id() {
                        let _ = styrman_sys::terminate(pid);
                    }
                    let _ = tokio::time::timeout(STOP_GRACE, child.wait()).await;
                    return;
                }
            },
            Err(e) => Err(e),
        };
        report(component.name, &status);
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tracing::info!(component = component.name, restart_in = ?backoff, "restarting");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Completes once the supervisor is stopping.
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn spawn(exe: &std::path::Path, component: &Component) -> std::io::Result<Child> {
    tracing::info!(component = component.name, "starting");
    let mut command = std::process::Command::new(exe);
    command.arg(component.name).args(&component.args);
    // A component must not outlive its supervisor, even one that was SIGKILLed: a restarted
    // supervisor would find the ports taken.
    styrman_sys::die_with_parent(&mut command);
    let mut command = Command::from(command);
    command.kill_on_drop(true);
    command.spawn()
}

fn report(name: &str, status: &std::io::Result<ExitStatus>) {
    match status {
        Ok(s) => tracing::warn!(component = name, status = %s, "component exited"),
        Err(e) => tracing::error!(component = name, error = %e, "cannot run component"),
    }
}
