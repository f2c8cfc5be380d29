//! `styrman-bench`: the benchmarks behind `scripts/bench`. Each measures styrman beside its
//! anchor in the same run, on the same machine, with the same workload, and prints both.

mod api;
mod controllers;
mod pods;
mod robustness;
mod scheduler;
mod store;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "styrman-bench",
    about = "styrman's benchmarks (run them through scripts/bench)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The embedded store against a real etcd: durable writes and watch fan-out
    Store(store::Options),
    /// The API server over HTTPS: creates, gets, lists and watches of pods, and memory per pod
    Api(api::Options),
    /// The API server under slow and abusive clients: idle and stalled watches, many
    /// connections, byte-by-byte bodies
    Robustness(robustness::Options),
    /// The scheduler with hollow nodes: scheduler_perf's workloads end to end
    Scheduler(scheduler::Options),
    /// The controller manager with hollow nodes: a large Deployment created, rolled, deleted
    Controllers(controllers::Options),
    /// One real node: pods created at once until Running, beside `ctr run` of the same image
    Pods(pods::Options),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Store(options) => runtime.block_on(store::run(options)),
        Command::Api(options) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            runtime.block_on(api::run(options))
        }
        Command::Scheduler(options) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            runtime.block_on(scheduler::run(options))
        }
        Command::Controllers(options) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            runtime.block_on(controllers::run(options))
        }
        Command::Pods(options) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            runtime.block_on(pods::run(options))
        }
        Command::Robustness(options) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            runtime.block_on(robustness::run(options))
        }
    }
}
