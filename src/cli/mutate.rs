//! `layerlink mutate [-f FILE|-]`: pins the images of Pods and workloads in multi-document YAML
//! and prints the text with only those values changed (`layerlink::mutate_files`). A KRM
//! `ResourceList` (or `--krm`) makes it a KRM function instead (`layerlink::krm`).

use std::{
    collections::HashSet,
    io::{Read, Write},
    path::PathBuf,
    process::ExitCode,
};

use layerlink::{
    Engine, Error,
    krm::{ResourceList, Severity},
};

#[derive(clap::Args)]
pub struct Args {
    /// The config file `serve` reads (registries, credentials, exclusions); defaults apply without it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// File to read, or - for standard input.
    #[arg(short = 'f', long = "filename", default_value = "-")]
    file: String,
    /// Exit 0 even when some images cannot be pinned (they are still reported on stderr, or as
    /// warnings in a KRM function's results).
    #[arg(long)]
    allow_unresolved: bool,
    /// Run as a KRM function: read a ResourceList, write it back with the images pinned and a
    /// result per problem; exit 1 if a result is an error. Chosen on its own when the input is a
    /// ResourceList.
    #[arg(long)]
    krm: bool,
}

pub async fn run(args: Args) -> Result<ExitCode, Error> {
    super::init_text_logs();
    let text = read_input(&args.file)?;
    if args.krm || layerlink::krm::is_resource_list(&text) {
        return krm_function(&args, &text).await;
    }
    let engine = Engine::new(super::load_config(args.config.as_deref())?)?;
    let (output, problems) = layerlink::mutate_files::mutate_text(&engine, &text).await?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(output.as_bytes())?;
    stdout.flush()?;
    let mut reported = HashSet::new();
    for problem in &problems {
        if reported.insert((&problem.site.image, &problem.reason)) {
            eprintln!("layerlink: not pinned {}: {}", problem.site.image, problem.reason);
        }
    }
    Ok(if problems.is_empty() || args.allow_unresolved { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The KRM function: the ResourceList is written even when the run fails (the specification asks
/// for it; kpt and kustomize show its results); exit 1 when a result is an error or the input is
/// not a ResourceList.
async fn krm_function(args: &Args, text: &str) -> Result<ExitCode, Error> {
    let list = match ResourceList::parse(text) {
        Ok(list) => list,
        Err(e) => {
            eprintln!("layerlink: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let output = match list.function_config().and_then(|f| Ok((f.load(args.config.as_deref())?, f))) {
        Err(why) => list.refused(why),
        Ok((config, function)) => {
            let unresolved =
                if args.allow_unresolved || function.allow_unresolved { Severity::Warning } else { Severity::Error };
            match Engine::new(config) {
                Ok(engine) => list.mutate(&engine, unresolved).await?,
                Err(e) => list.refused(format!("functionConfig: {e}")),
            }
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(output.text.as_bytes())?;
    stdout.flush()?;
    Ok(if output.failed() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn read_input(file: &str) -> Result<String, Error> {
    let invalid = Error::Input;
    let (bytes, name) = if file == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes)?;
        (bytes, "standard input")
    } else {
        let bytes = std::fs::read(file).map_err(|e| invalid(format!("cannot read {file}: {e}")))?;
        (bytes, file)
    };
    String::from_utf8(bytes).map_err(|e| invalid(format!("{name} is not UTF-8: {e}")))
}
