//! The command line: one file per verb, each with its arguments (`Args`) and `run`, which
//! calls the library and prints. The library itself never prints and does not know clap.

mod audit;
mod certs;
mod install;
mod layers;
mod mutate;
mod prepuller;
mod resolve;
mod serve;

use std::{path::Path, process::ExitCode};

use clap::{Parser, Subcommand};
use layerlink::{Config, Error};

#[derive(Parser)]
#[command(name = "layerlink", version, about = "Pins Kubernetes pod images to registry digests")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the admission webhook (HTTPS /mutate, /audit, /validate; HTTP /healthz, /readyz, /metrics).
    Serve(serve::Args),
    /// Print each image pinned to its digest; exit 1 if any cannot be resolved.
    Resolve(resolve::Args),
    /// Write a CA and a serving certificate (ca.crt, tls.crt, tls.key); print the base64 caBundle.
    Certs(certs::Args),
    /// Pin images in multi-document YAML (Pods and workloads) and print it.
    Mutate(mutate::Args),
    /// List running pods and workloads with unpinned images (read-only, uses the kubeconfig).
    Audit(audit::Args),
    /// Layer-sharing report: layers, shared prefixes, suggested bases.
    Layers(layers::Args),
    /// Render the pre-puller DaemonSet for the configured bases.
    Prepuller(prepuller::Args),
    /// Render every object layerlink needs (or apply it with --apply), from manifests built in.
    Install(install::InstallArgs),
    /// Remove what `layerlink install` made: webhook configurations first, then the rest.
    Uninstall(install::UninstallArgs),
}

impl Cli {
    /// Runs the verb. A failure prints `layerlink: REASON` on stderr and exits 2; a verb that
    /// ran but found problems (unresolved images) chooses its own exit code.
    pub async fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Resolve(args) => resolve::run(args).await,
            Command::Certs(args) => certs::run(args).await,
            Command::Mutate(args) => mutate::run(args).await,
            Command::Audit(args) => audit::run(args).await,
            Command::Layers(args) => layers::run(args).await,
            Command::Prepuller(args) => prepuller::run(args).await,
            Command::Install(args) => {
                init_text_logs();
                install::install(args).await
            }
            Command::Uninstall(args) => {
                init_text_logs();
                install::uninstall(args).await
            }
        };
        result.unwrap_or_else(|e| {
            eprintln!("layerlink: {}", one_line(&e));
            ExitCode::from(2)
        })
    }
}

/// How a report is printed: aligned columns, or JSON for scripts.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

/// The config at `path`, or the defaults without one.
fn load_config(path: Option<&Path>) -> Result<Config, Error> {
    match path {
        Some(p) => Config::load(p),
        None => Config::parse(""),
    }
}

/// Plain-text logs on stderr for the one-shot commands. They print their own reasons, so by
/// default nothing else is logged; `LAYERLINK_LOG=debug` shows layerlink's own steps. Colour
/// only on a terminal.
fn init_text_logs() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(env_filter("off"))
        .init();
}

/// The log filter: `LAYERLINK_LOG` when set, else `default` (a list of directives). A bare
/// level (`LAYERLINK_LOG=debug`) applies to layerlink only, with libraries (rustls, hyper, kube,
/// …) at `warn`, so asking for detail does not flood the log with their internals; a directive
/// list (`info,hyper=debug`) is used as written.
fn env_filter(default: &str) -> tracing_subscriber::EnvFilter {
    let wanted = std::env::var("LAYERLINK_LOG").unwrap_or_default();
    tracing_subscriber::EnvFilter::try_new(filter_directives(&wanted, default))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
}

fn filter_directives(wanted: &str, default: &str) -> String {
    match wanted.trim() {
        "" => default.to_string(),
        list if list.contains(['=', ',']) => list.to_string(),
        level => format!("warn,layerlink={level}"),
    }
}

/// How cluster verbs reach the API server, as kubectl's flags.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long)]
    context: Option<String>,
}

impl KubeArgs {
    /// A client for the cluster, checked with one request (`cluster::connect`).
    async fn client(&self) -> Result<kube::Client, Error> {
        let target =
            layerlink::cluster::connect::Target { kubeconfig: self.kubeconfig.clone(), context: self.context.clone() };
        layerlink::cluster::connect::connect(&target).await
    }
}

/// Parses the command line, with the usage named after how the binary was invoked.
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().bin_name(bin_name(std::env::args_os().next())).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The name to show in usage: `kubectl layerlink` when run as the kubectl plugin
/// `kubectl-layerlink` (kubectl runs plugins by that file name), else `layerlink`.
fn bin_name(argv0: Option<std::ffi::OsString>) -> String {
    let file = argv0.as_deref().map(std::path::Path::new).and_then(|p| p.file_name()).and_then(|f| f.to_str());
    match file {
        Some("kubectl-layerlink") => "kubectl layerlink".into(),
        _ => "layerlink".into(),
    }
}

/// A value parser for one of a library enum's values, by name, with each value's help shown
/// in `--help` (the library does not depend on clap).
fn choice<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
    about: fn(T) -> &'static str,
) -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser as _;
    let values = all.iter().map(move |v| clap::builder::PossibleValue::new(name(*v)).help(about(*v)));
    clap::builder::PossibleValuesParser::new(values)
        .map(move |chosen| *all.iter().find(|v| name(**v) == chosen).expect("one of the possible values"))
}

/// An error and its causes on one line, each said once.
fn one_line(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `layerlink …` command line in a shell block of the README and docs/ parses with
    /// this CLI: the docs show the commands as they are.
    #[test]
    fn the_documented_command_lines_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![root.join("README.md")];
        for entry in std::fs::read_dir(root.join("docs")).unwrap() {
            files.push(entry.unwrap().path());
        }
        let mut checked = 0;
        for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "md")) {
            let text = std::fs::read_to_string(file).unwrap();
            let mut in_shell = false;
            let mut joined = String::new();
            for line in text.lines() {
                if line.starts_with("```") {
                    in_shell = matches!(line.trim_start_matches('`'), "sh" | "bash" | "shell");
                    continue;
                }
                if !in_shell {
                    continue;
                }
                // A line ending in `\` goes on on the next one.
                if let Some(start) = line.strip_suffix('\\') {
                    joined.push_str(start);
                    continue;
                }
                joined.push_str(line);
                let line = std::mem::take(&mut joined);
                for command in documented_commands(&line) {
                    Cli::try_parse_from(&command)
                        .unwrap_or_else(|e| panic!("{}: `{}` does not parse:\n{e}", file.display(), command.join(" ")));
                    checked += 1;
                }
            }
        }
        assert!(checked >= 8, "only {checked} documented command lines found");
    }

    /// The `layerlink` invocations of one shell line, split into words: from `layerlink` to the
    /// next pipe, redirect, `&&` or comment.
    fn documented_commands(line: &str) -> Vec<Vec<String>> {
        let line = line.split(" #").next().unwrap_or("");
        line.split(['|', '>', ';'])
            .flat_map(|part| part.split("&&"))
            .filter_map(|part| {
                let words: Vec<String> = part.split_whitespace().map(|w| w.trim_matches('\'').to_string()).collect();
                (words.first().map(String::as_str) == Some("layerlink")).then_some(words)
            })
            .collect()
    }

    #[test]
    fn plugin_name_from_argv0() {
        assert_eq!(bin_name(Some("/usr/local/bin/kubectl-layerlink".into())), "kubectl layerlink");
        assert_eq!(bin_name(Some("./layerlink".into())), "layerlink");
        assert_eq!(bin_name(None), "layerlink");
    }

    #[test]
    fn install_choices_by_name() {
        let cli = Cli::try_parse_from(["layerlink", "install", "--mode", "audit-only", "--certs", "none"]).unwrap();
        let Command::Install(args) = cli.command else { panic!("not install") };
        let shown = format!("{args:?}");
        assert!(shown.contains("mode: AuditOnly") && shown.contains("certs: None"), "{shown}");
        assert!(Cli::try_parse_from(["layerlink", "install", "--mode", "everywhere"]).is_err());
    }

    #[test]
    fn a_bare_level_applies_to_layerlink_only() {
        assert_eq!(filter_directives("", "warn,layerlink=info"), "warn,layerlink=info");
        assert_eq!(filter_directives("debug", "off"), "warn,layerlink=debug");
        assert_eq!(filter_directives(" info,hyper=debug ", "off"), "info,hyper=debug");
        assert_eq!(filter_directives("", "off"), "off");
    }
}
