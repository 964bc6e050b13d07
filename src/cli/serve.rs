//! `layerlink serve`: the webhook, with JSON logs on stdout.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use layerlink::{
    Config, Engine, Error,
    admission::{Edges, handler::Reporter},
    reports::{
        lease::{self, Leader},
        writer::{Fanout, Writer},
    },
    server::Server,
};

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
    Server { engine: engine.clone(), edges: cluster_edges(&engine).await }.run().await?;
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

/// Pull secrets, audit events and revisions' siblings (sticky pins) when a cluster is reachable (in-cluster or kubeconfig),
/// and the PolicyReport writer when `reports.policyReports` is on;
/// without one the webhook still pins, with `registries[].credentialsFile` credentials only.
async fn cluster_edges(engine: &Arc<Engine>) -> Edges {
    match kube::Client::try_default().await {
        Ok(client) => {
            tracing::info!("kubernetes client ready: pull secrets, audit events and sticky pins enabled");
            let events: Arc<dyn Reporter> = layerlink::cluster::events::AuditEvents::new(client.clone());
            let reporter = match engine.config.reports.policy_reports {
                true => Arc::new(Fanout(vec![events, policy_reports(engine, &client)])),
                false => events,
            };
            Edges {
                credentials: Some(Arc::new(layerlink::cluster::secrets::chain(client.clone()))),
                siblings: Some(layerlink::cluster::siblings::Siblings::new(client)),
                reporter: Some(reporter),
            }
        }
        Err(e) => {
            tracing::info!(error = %e, "no kubernetes client: pull secrets, audit events and sticky pins disabled");
            Edges::default()
        }
    }
}

/// Starts leader election and the report writer; the writer is also the reporter that audit-mode
/// admissions mark their namespace with.
fn policy_reports(engine: &Arc<Engine>, client: &kube::Client) -> Arc<dyn Reporter> {
    let leader = Leader::new(lease::identity());
    let namespace = client.default_namespace().to_string();
    tracing::info!(identity = %leader.identity, namespace, lease = lease::LEASE_NAME, "reports: PolicyReports on");
    tokio::spawn(leader.clone().run(client.clone(), namespace));
    let writer = Writer::new(engine.clone(), client.clone(), leader);
    tokio::spawn(writer.clone().run());
    writer
}

/// JSON lines on stdout, written in batches (see `layerlink::logs`); keep the guard until exit.
fn init_json_logs() -> layerlink::logs::FlushGuard {
    let (writer, guard) = layerlink::logs::batched(std::io::stdout());
    tracing_subscriber::fmt()
        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
        .event_format(layerlink::logs::JsonLines)
        .with_writer(writer)
        .with_env_filter(super::env_filter("warn,layerlink=info"))
        .init();
    guard
}
