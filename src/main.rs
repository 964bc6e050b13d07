//! The `layerlink` command line.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use layerlink::{
    Config, Engine, Error, admission::Edges, reference::Reference, registry::auth::Keychain, server::Server,
};

#[derive(Parser)]
#[command(name = "layerlink", version, about = "Pins Kubernetes pod images to registry digests")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the admission webhook (HTTPS /mutate, /audit, /validate; HTTP /healthz, /readyz, /metrics).
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print each image pinned to its digest; exit 1 if any cannot be resolved.
    Resolve {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Write a CA and a serving certificate (ca.crt, tls.crt, tls.key); print the base64 caBundle.
    Certs {
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// DNS names or IP addresses for the certificate.
        #[arg(long = "dns", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        names: Vec<String>,
        /// Also write the Secret and set the webhook configuration's caBundle (kubeconfig).
        #[arg(long)]
        apply: bool,
        #[arg(long, default_value = "layerlink-system")]
        namespace: String,
        #[arg(long, default_value = "layerlink-tls")]
        secret: String,
        #[arg(long, default_value = "layerlink")]
        webhook: String,
    },
    /// Pin images in multi-document YAML (Pods and workloads) and print it.
    Mutate(layerlink::manifests::MutateArgs),
    /// List running pods and workloads with unpinned images (read-only, uses the kubeconfig).
    Audit(layerlink::cluster::audit::AuditArgs),
    /// Layer-sharing report: layers, shared prefixes, suggested bases.
    Layers(layerlink::prepull::layers::LayersArgs),
    /// Render the pre-puller DaemonSet for the configured bases.
    Prepuller(layerlink::prepull::daemonset::PrepullerArgs),
    #[command(flatten)]
    Install(layerlink::install::Verb),
}

fn main() -> ExitCode {
    layerlink::install_crypto_provider();
    let cli: Cli = layerlink::install::parse_cli();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("layerlink: {e}");
            ExitCode::from(2)
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, Error> {
    match path {
        Some(p) => Config::load(p),
        None => Config::parse(""),
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Serve { config } => {
            let _logs = init_json_logs();
            let engine = Arc::new(Engine::new(Config::load(&config)?)?);
            Server { engine, edges: cluster_edges().await }.run().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Resolve { config, images } => {
            init_text_logs();
            let engine = Engine::new(load_config(config.as_ref())?)?;
            let keychain = Arc::new(Keychain::default());
            let deadline = layerlink::engine::Deadline::after(engine.config.resolve.request_timeout);
            let mut failed = false;
            for image in images {
                let reference = match Reference::parse(&image) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("{image}: {e}");
                        failed = true;
                        continue;
                    }
                };
                if reference.is_pinned() {
                    println!("{image}");
                    continue;
                }
                match engine.resolver.resolve(&reference, &keychain, deadline).await {
                    Ok(resolved) => println!(
                        "{}",
                        layerlink::reference::pin(&image, &reference, &resolved.digest, engine.config.resolve.keep_tag)
                    ),
                    Err(e) => {
                        eprintln!("{image}: {e}");
                        failed = true;
                    }
                }
            }
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Certs { out, names, apply, namespace, secret, webhook } => {
            let bundle = layerlink::certs::generate(&names)?;
            layerlink::certs::write(&bundle, &out)?;
            eprintln!("wrote {0}/ca.crt, {0}/tls.crt, {0}/tls.key for {1}", out.display(), names.join(", "));
            if apply {
                let client = kube::Client::try_default().await.map_err(|e| Error::Kube(e.to_string()))?;
                let target = layerlink::certs::ApplyTarget { namespace, secret, webhook };
                for done in layerlink::certs::apply(client, &bundle, &target).await? {
                    eprintln!("applied {done}");
                }
            }
            println!("{}", bundle.ca_bundle());
            Ok(ExitCode::SUCCESS)
        }
        Command::Mutate(args) => {
            init_text_logs();
            layerlink::manifests::mutate(args).await
        }
        Command::Audit(args) => {
            init_text_logs();
            layerlink::cluster::audit::run(args).await
        }
        Command::Layers(args) => {
            init_text_logs();
            layerlink::prepull::layers::run(args).await
        }
        Command::Prepuller(args) => {
            init_text_logs();
            layerlink::prepull::daemonset::run(args).await
        }
        Command::Install(verb) => {
            init_text_logs();
            layerlink::install::run(verb).await
        }
    }
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
        .with_env_filter(env_filter())
        .init();
    guard
}

fn init_text_logs() {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(env_filter_default("error")).init();
}

fn env_filter() -> tracing_subscriber::EnvFilter {
    env_filter_default("info")
}

fn env_filter_default(level: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("LAYERLINK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level))
}
