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
    if engine.config.prepull.enabled {
        tokio::spawn(check_prepull_images(engine.clone()));
    }
    Server { engine, edges: cluster_edges().await }.run().await?;
    Ok(ExitCode::SUCCESS)
}

/// Pins the pre-pull tools image and bases once at start-up, so an operator sees in the log at
/// once, not pod by pod, that pre-pull cannot work (an unreachable or misspelt image).
async fn check_prepull_images(engine: Arc<Engine>) {
    let keychain = Arc::default();
    let deadline = layerlink::engine::Deadline::after(engine.config.resolve.request_timeout);
    for (image, result) in engine.prepull.check(&keychain, deadline).await {
        match result {
            Ok(pinned) => tracing::info!(image, pinned, "pre-pull image pinned"),
            Err(problem) => {
                tracing::warn!(image, problem, "pre-pull image cannot be pinned: pods get no pre-pull until it can")
            }
        }
    }
}

/// Pull secrets, audit events and revisions' siblings (sticky pins) when a cluster is reachable (in-cluster or kubeconfig);
/// without one the webhook still pins, with `registries[].credentialsFile` credentials only.
async fn cluster_edges() -> Edges {
    match kube::Client::try_default().await {
        Ok(client) => {
            tracing::info!("kubernetes client ready: pull secrets, audit events and sticky pins enabled");
            Edges {
                credentials: Some(Arc::new(layerlink::cluster::secrets::chain(client.clone()))),
                siblings: Some(layerlink::cluster::siblings::Siblings::new(client.clone())),
                reporter: Some(layerlink::cluster::events::AuditEvents::new(client)),
            }
        }
        Err(e) => {
            tracing::info!(error = %e, "no kubernetes client: pull secrets, audit events and sticky pins disabled");
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
