//! `layerlink mutate -f FILE|-`: pins the images of Pods and workloads in multi-document YAML
//! and prints the text with only those values changed (see `layerlink::manifests`).

use std::{
    collections::HashSet,
    io::{Read, Write},
    path::PathBuf,
    process::ExitCode,
};

use layerlink::{Engine, Error};

#[derive(clap::Args)]
pub struct Args {
    /// The config file `serve` reads (registries, credentials, exclusions); defaults apply without it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// File to read, or - for standard input.
    #[arg(short = 'f', long = "filename")]
    file: String,
    /// Exit 0 even when some images cannot be pinned (they are still reported on stderr).
    #[arg(long)]
    allow_unresolved: bool,
}

pub async fn run(args: Args) -> Result<ExitCode, Error> {
    super::init_text_logs();
    let engine = Engine::new(super::load_config(args.config.as_deref())?)?;
    let text = read_input(&args.file)?;
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
