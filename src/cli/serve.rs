//! `layerlink serve`: the webhook, with JSON logs on stdout.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use layerlink::{Config, Engine, Error, admission::Edges, server::Server};

#[derive(clap::Args)]
pub struct Args {
    /// The config file (YAML; every key is documented in docs/configuration.md).
    #[arg(long, short)]
    config: PathBuf,
}

pub async fn run(args: Args) -> Result<ExitCode, Error> {
    let _logs = init_json_logs();
    let engine = Arc::new(Engine::new(Config::load(&args.config)?)?);
    Server { engine, edges: cluster_edges().await }.run().await?;
    Ok(ExitCode::SUCCESS)
}

/// Pull secrets and audit events when a cluster is reachable (in-cluster or kubeconfig);
/// without one the webhook still pins, with `registries[].credentialsFile` credentials only.
async fn cluster_edges() -> Edges {
    match kube::Client::try_default().await {
        Ok(client) => {
            tracing::info!("kubernetes client ready: pull secrets and audit events enabled");
            Edges {
                credentials: Some(Arc::new(layerlink::cluster::secrets::PullSecrets::new(client.clone()))),
                reporter: Some(layerlink::cluster::events::AuditEvents::new(client)),
            }
        }
        Err(e) => {
            tracing::info!(error = %e, "no kubernetes client: pull secrets and audit events disabled");
            Edges::default()
        }
    }
}

/// JSON lines on stdout, written in batches (see `layerlink::logs`); keep the guard until exit.
fn init_json_logs() -> layerlink::logs::FlushGuard {
    let (writer, guard) = layerlink::logs::batched(std::io::stdout());
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_writer(writer)
        .with_env_filter(super::env_filter("warn,layerlink=info"))
        .init();
    guard
}
