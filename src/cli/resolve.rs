//! `layerlink resolve IMAGE...`: each image pinned, one per line.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use layerlink::{Engine, Error, registry::auth::Keychain};

#[derive(clap::Args)]
pub struct Args {
    /// The config file `serve` reads (registries, credentials, cache); defaults apply without it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Images to pin (an image that already has a digest is printed as it is).
    #[arg(required = true)]
    images: Vec<String>,
}

pub async fn run(args: Args) -> Result<ExitCode, Error> {
    super::init_text_logs();
    let engine = Engine::new(super::load_config(args.config.as_deref())?)?;
    let keychain = Arc::new(Keychain::default());
    let deadline = layerlink::engine::Deadline::after(engine.config.resolve.request_timeout);
    let mut failed = false;
    for image in args.images {
        match engine.resolver.pin(&image, &keychain, deadline).await {
            Ok(pinned) => println!("{pinned}"),
            Err(e) => {
                eprintln!("{image}: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
