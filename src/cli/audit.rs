//! `layerlink audit`: running pods and workloads with unpinned images, as a table, JSON, or the
//! PolicyReports `serve` would write (see `layerlink::cluster::audit`, `layerlink::reports`).
//! Read-only.

use std::{path::PathBuf, process::ExitCode};

use layerlink::{
    Engine, Error,
    cluster::audit::{audit_objects, list_objects, render_json, render_table, summary},
    reports::{self, Collector},
};

/// How the findings are printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    /// Aligned columns, one row per unpinned image.
    Table,
    /// The rows as a JSON array.
    Json,
    /// One `wgpolicyk8s.io/v1alpha2` PolicyReport per namespace (YAML), as `serve` writes them.
    Policyreport,
}

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
    if args.output == Output::Policyreport {
        return print_reports(&engine, &objects, args.namespace).await;
    }
    let rows = audit_objects(&engine, &objects).await;
    match args.output {
        Output::Table if rows.is_empty() => {}
        Output::Table => print!("{}", render_table(&rows)),
        Output::Json | Output::Policyreport => println!("{}", render_json(&rows)),
    }
    eprintln!("layerlink: {}", summary(&rows, objects.len()));
    Ok(ExitCode::SUCCESS)
}

/// The PolicyReports of the listed pods, one per namespace that has any (and one for
/// `namespace` when given, empty if it has none), as YAML.
async fn print_reports(
    engine: &Engine,
    objects: &[(&str, serde_json::Value)],
    namespace: Option<String>,
) -> Result<ExitCode, Error> {
    let mut collector = Collector::default();
    for (kind, object) in objects {
        collector.add(&engine.config, kind, object);
    }
    let workloads = reports::scan::plan(engine, collector.finish()).await;
    let built = reports::build(&workloads, &namespace.into_iter().collect::<Vec<_>>(), reports::now());
    print!("{}", layerlink::prepull::daemonset::to_yaml(&built)?);
    eprintln!("layerlink: {} report(s) on {} workload(s)", built.len(), workloads.len());
    Ok(ExitCode::SUCCESS)
}
