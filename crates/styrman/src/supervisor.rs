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

pub async fn run(components: Vec<Component>) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut tasks = Vec::new();
    for component in components {
        let exe = exe.clone();
        tasks.push(tokio::spawn(async move { keep_running(&exe, component).await }));
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping the control plane");
    for task in tasks {
        // Aborting drops each child handle, which kills the child (kill_on_drop).
        task.abort();
    }
    Ok(())
}

async fn keep_running(exe: &std::path::Path, component: Component) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let status = match spawn(exe, &component) {
            Ok(mut child) => child.wait().await,
            Err(e) => Err(e),
        };
        report(component.name, &status);
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tracing::info!(component = component.name, restart_in = ?backoff, "restarting");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
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
