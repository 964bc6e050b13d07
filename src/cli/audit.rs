//! `layerlink audit`: running pods and workloads with unpinned images, as a table or JSON
//! (see `layerlink::cluster::audit`). Read-only.

use std::{path::PathBuf, process::ExitCode};

use layerlink::{
    Engine, Error,
    cluster::audit::{audit_objects, list_objects, render_json, render_table, summary},
};

use super::Output;

#[derive(clap::Args)]
pub struct Args {
    /// The config file `serve` reads (registries, credentials, exclusions); defaults apply without it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Only this namespace (default: every namespace).
    #[arg(long, short)]
    namespace: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    kube: super::KubeArgs,
    /// Objects per list request (the API server's `limit`; later pages follow `continue`).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    page_size: u32,
}

pub async fn run(args: Args) -> Result<ExitCode, Error> {
    super::init_text_logs();
    let engine = Engine::new(super::load_config(args.config.as_deref())?)?;
    let client = args.kube.client().await?;
    let (objects, skipped) = list_objects(&client, args.namespace.as_deref(), args.page_size).await?;
    for note in &skipped {
        eprintln!("layerlink: {note}");
    }
    let rows = audit_objects(&engine, &objects).await;
    match args.output {
        Output::Table if rows.is_empty() => {}
        Output::Table => print!("{}", render_table(&rows)),
        Output::Json => println!("{}", render_json(&rows)),
    }
    eprintln!("layerlink: {}", summary(&rows, objects.len()));
    Ok(ExitCode::SUCCESS)
}
