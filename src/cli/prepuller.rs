//! `layerlink prepuller`: renders the node pre-puller DaemonSet for the configured bases, every
//! image pinned by digest (see `layerlink::prepull::daemonset`).

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use layerlink::{
    Config, Engine, Error,
    prepull::{
        FoundBase, configured_bases,
        daemonset::{Priority, Render, render, to_yaml, tolerations},
    },
    reference::{self, Reference},
    registry::auth::Keychain,
};

#[derive(clap::Args)]
pub struct Args {
    /// The config file `serve` reads (`prepull.bases`, `prepull.toolsImage`, registries).
    #[arg(long, short)]
    config: PathBuf,
    /// Namespace of the DaemonSet.
    #[arg(long, default_value = "layerlink-system")]
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
    let config = Config::load(&args.config)?;
    let tolerations = tolerations(args.tolerate_all, &args.tolerations)?;
    if config.prepull.bases.is_empty() {
        return Err(Error::Config(format!("{}: prepull.bases is empty: nothing to pre-pull", args.config.display())));
    }
    let Some(tools) = config.prepull.tools_image.clone() else {
        return Err(Error::Config(format!(
            "{}: prepull.toolsImage is not set (the pre-puller runs layerlink-noop from it)",
            args.config.display()
        )));
    };
    let strategy = config.prepull.strategy;
    let bases = configured_bases(&config);
    let engine = Engine::new(config)?;
    let keychain = Arc::new(Keychain::default());
    let pin = |written: String| {
        let engine = &engine;
        let keychain = &keychain;
        async move {
            let reference = Reference::parse(&written)?;
            if reference.is_pinned() {
                return Ok(written);
            }
            let deadline = layerlink::engine::Deadline::after(engine.config.resolve.request_timeout);
            let resolved = engine
                .resolver
                .resolve(&reference, keychain, deadline)
                .await
                .map_err(|e| layerlink::registry::clone_error(&e))?;
            Ok::<_, Error>(reference::pin(&written, &reference, &resolved.digest, engine.config.resolve.keep_tag))
        }
    };
    let pinned_bases = futures::future::join_all(bases.iter().map(|b| pin(b.image.clone())));
    let (pinned_bases, pinned_tools) = futures::join!(pinned_bases, pin(tools.clone()));
    let mut failed = false;
    let mut found = Vec::new();
    for (base, pinned) in bases.iter().zip(pinned_bases) {
        match pinned {
            Ok(image) => found.push(FoundBase { short: base.short.clone(), image }),
            Err(e) => {
                eprintln!("layerlink: base {}: {e}", base.image);
                failed = true;
            }
        }
    }
    let tools_image = match pinned_tools {
        Ok(image) => image,
        Err(e) => {
            eprintln!("layerlink: tools image {tools}: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if failed {
        // A partial DaemonSet would silently stop warming a base: render nothing.
        return Ok(ExitCode::FAILURE);
    }
    let priority = match args.priority_class {
        Some(name) => Priority::Existing(name),
        None => Priority::Render,
    };
    let docs = render(&Render {
        namespace: args.namespace,
        bases: found,
        tools_image,
        strategy,
        priority,
        tolerations,
        max_unavailable: args.max_unavailable,
    });
    print!("{}", to_yaml(&docs)?);
    Ok(ExitCode::SUCCESS)
}
