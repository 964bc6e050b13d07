//! `layerlink layers IMAGE...`: how much a set of images shares, layer by layer (see
//! `layerlink::prepull::layers`).

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode, sync::Arc};

use layerlink::{
    Engine, Error,
    prepull::{
        detect,
        layers::{analyze, image_info, parse_platform, table},
    },
    registry::auth::Keychain,
};

use super::Output;

#[derive(clap::Args)]
pub struct Args {
    /// The config file `serve` reads (registries, credentials, `prepull.platform`).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Also list the longest common layer prefixes as candidate bases.
    #[arg(long)]
    suggest_bases: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Platform as os/architecture (default: `prepull.platform` of the config, else linux/amd64).
    #[arg(long)]
    platform: Option<String>,
    /// Images to compare (tags are resolved; digests are used as written).
    #[arg(required = true)]
    images: Vec<String>,
}

pub async fn run(args: Args) -> Result<ExitCode, Error> {
    super::init_text_logs();
    let config = super::load_config(args.config.as_deref())?;
    let platform = match &args.platform {
        Some(text) => parse_platform(text)?,
        None => config.prepull.platform.clone(),
    };
    let engine = Engine::new(config)?;
    let keychain = Arc::new(Keychain::default());
    let deadline = layerlink::resolve::Deadline::after(engine.config.resolve.request_timeout);
    let lookups = args.images.iter().map(|image| image_info(&engine.resolver, image, &platform, &keychain, deadline));
    let results = futures::future::join_all(lookups).await;
    let mut images = Vec::new();
    let mut errors = BTreeMap::new();
    for (image, result) in args.images.iter().zip(results) {
        match result {
            Ok(info) => images.push(info),
            Err(e) => {
                eprintln!("{image}: {e}");
                errors.insert(image.clone(), e.to_string());
            }
        }
    }
    let failed = !errors.is_empty();
    let report = analyze(&detect::describe(&platform), images, args.suggest_bases, errors);
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report).expect("the report serializes")),
        Output::Table => print!("{}", table(&report)),
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
