//! `layerlink prepuller`: renders the node pre-puller DaemonSet for the configured bases, every
//! image pinned by digest (see `layerlink::prepull::daemonset`).

use std::{path::PathBuf, process::ExitCode};

use layerlink::{
    Error,
    prepull::daemonset::{Options, documents, to_yaml},
};

#[derive(clap::Args)]
pub struct Args {
    /// The config file `serve` reads (`prepull.bases`, `prepull.toolsImage`, registries).
    #[arg(long, short)]
    config: PathBuf,
    /// Namespace of the DaemonSet.
    #[arg(long, short, default_value = "layerlink-system")]
    namespace: String,
    /// Use this existing PriorityClass instead of rendering `layerlink-prepull` (value -10).
    #[arg(long)]
    priority_class: Option<String>,
    /// Tolerate every taint (run on control-plane and dedicated nodes too).
    #[arg(long)]
    tolerate_all: bool,
    /// A taint to tolerate: KEY, KEY=VALUE, KEY:EFFECT or KEY=VALUE:EFFECT. Repeatable.
    #[arg(long = "toleration")]
    tolerations: Vec<String>,
    /// How many nodes may re-pull at once during a rollout (a count or a percentage).
    #[arg(long, default_value = "10%")]
    max_unavailable: String,
}

pub async fn run(args: Args) -> Result<ExitCode, Error> {
    super::init_text_logs();
    let options = Options {
        config: args.config,
        namespace: args.namespace,
        priority_class: args.priority_class,
        tolerate_all: args.tolerate_all,
        tolerations: args.tolerations,
        max_unavailable: args.max_unavailable,
    };
    match documents(&options).await? {
        Ok(docs) => {
            print!("{}", to_yaml(&docs)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            for problem in problems {
                eprintln!("layerlink: {problem}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
