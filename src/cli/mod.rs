//! The command line: one file per verb, each with its arguments (`Args`) and `run`, which
//! calls the library and prints. The library itself never prints and does not know clap.

mod audit;
mod certs;
mod layers;
mod mutate;
mod prepuller;
mod resolve;
mod serve;

use std::{path::Path, process::ExitCode};

use clap::{Parser, Subcommand};
use layerlink::{Config, Error};

#[derive(Parser)]
#[command(name = "layerlink", version, about = "Pins Kubernetes pod images to registry digests")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the admission webhook (HTTPS /mutate, /audit, /validate; HTTP /healthz, /readyz, /metrics).
    Serve(serve::Args),
    /// Print each image pinned to its digest; exit 1 if any cannot be resolved.
    Resolve(resolve::Args),
    /// Write a CA and a serving certificate (ca.crt, tls.crt, tls.key); print the base64 caBundle.
    Certs(certs::Args),
    /// Pin images in multi-document YAML (Pods and workloads) and print it.
    Mutate(mutate::Args),
    /// List running pods and workloads with unpinned images (read-only, uses the kubeconfig).
    Audit(audit::Args),
    /// Layer-sharing report: layers, shared prefixes, suggested bases.
    Layers(layers::Args),
    /// Render the pre-puller DaemonSet for the configured bases.
    Prepuller(prepuller::Args),
}

impl Cli {
    /// Runs the verb. A failure prints `layerlink: REASON` on stderr and exits 2; a verb that
    /// ran but found problems (unresolved images) chooses its own exit code.
    pub async fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Resolve(args) => resolve::run(args).await,
            Command::Certs(args) => certs::run(args).await,
            Command::Mutate(args) => mutate::run(args).await,
            Command::Audit(args) => audit::run(args).await,
            Command::Layers(args) => layers::run(args).await,
            Command::Prepuller(args) => prepuller::run(args).await,
        };
        result.unwrap_or_else(|e| {
            eprintln!("layerlink: {e}");
            ExitCode::from(2)
        })
    }
}

/// The config at `path`, or the defaults without one.
fn load_config(path: Option<&Path>) -> Result<Config, Error> {
    match path {
        Some(p) => Config::load(p),
        None => Config::parse(""),
    }
}

/// Plain-text logs on stderr for the one-shot commands: errors only unless `LAYERLINK_LOG` says more.
fn init_text_logs() {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(env_filter("error")).init();
}

/// `LAYERLINK_LOG` (an `EnvFilter` directive), else `level`.
fn env_filter(level: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("LAYERLINK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level))
}
