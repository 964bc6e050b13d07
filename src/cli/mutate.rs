//! `layerlink mutate [-f FILE|-]`: pins the images of Pods and workloads in multi-document YAML
//! and prints the text with only those values changed (`layerlink::mutate_files`). A KRM
//! `ResourceList` (or `--krm`) makes it a KRM function instead (`layerlink::krm`).

use std::{
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
    /// Exit 3 when an object of a kind layerlink does not read has `image` fields (they are
    /// listed on stderr either way; declare such kinds in `workloads.kinds`).
    #[arg(long)]
    strict: bool,
    /// Run as a KRM function: read a ResourceList, write it back with the images pinned and a
    /// result per problem; exit 1 if a result is an error. Chosen on its own when the input is a
    /// ResourceList.
    #[arg(long)]
    krm: bool,
}

/// The exit status of `--strict` when objects of unknown kinds have `image` fields.
const EXIT_SKIPPED: u8 = 3;

pub async fn run(args: Args) -> Result<ExitCode, Error> {
    super::init_text_logs();
    let text = read_input(&args.file)?;
    if args.krm || layerlink::krm::is_resource_list(&text) {
        return krm_function(&args, &text).await;
    }
    let engine = Engine::new(super::load_config(args.config.as_deref())?)?;
    let outcome = layerlink::mutate_files::mutate_report(&engine, &text).await?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(outcome.text.as_bytes())?;
    stdout.flush()?;
    let file = if args.file == "-" { "<stdin>" } else { args.file.as_str() };
    for line in report_lines(file, &outcome) {
        eprintln!("{line}");
    }
    Ok(if args.strict && !outcome.skipped.is_empty() {
        ExitCode::from(EXIT_SKIPPED)
    } else if outcome.problems.is_empty() || args.allow_unresolved {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One stderr line per image not pinned and per object not read, each naming the file, line,
/// document and object (`deploy.yaml:12: document 3 (Rollout/web): …`).
fn report_lines(file: &str, outcome: &layerlink::mutate_files::Outcome) -> Vec<String> {
    let at = |l: &layerlink::mutate_files::Location| format!("{file}:{l}");
    let problems = outcome
        .problems
        .iter()
        .map(|p| format!("layerlink: {}: not pinned {}: {}", at(&p.location), p.problem.site.image, p.problem.reason));
    let skipped = outcome.skipped.iter().map(|s| {
        format!(
            "layerlink: {}: skipped: {} {} has {} image field(s) that layerlink does not read (declare the kind in workloads.kinds)",
            at(&s.location),
            s.api_version,
            s.location.kind,
            s.images
        )
    });
    problems.chain(skipped).collect()
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
