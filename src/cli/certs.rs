//! `layerlink certs`: a CA and a serving certificate, written to files and optionally applied.

use std::{path::PathBuf, process::ExitCode};

use layerlink::Error;

#[derive(clap::Args)]
pub struct Args {
    /// Directory to write ca.crt, tls.crt and tls.key into.
    #[arg(long, default_value = "certs")]
    out: PathBuf,
    /// DNS names or IP addresses for the certificate (repeatable). Without --apply the default
    /// is localhost and 127.0.0.1 (a local `layerlink serve`); with --apply they are required:
    /// the Service's names, e.g. layerlink.layerlink-system.svc.
    #[arg(long = "dns")]
    names: Vec<String>,
    /// Also write the Secret and set the webhook configuration's caBundle in the cluster.
    #[arg(long)]
    apply: bool,
    #[command(flatten)]
    kube: super::KubeArgs,
    /// Namespace of the Secret written by --apply.
    #[arg(long, short, default_value = "layerlink-system")]
    namespace: String,
    /// Name of the kubernetes.io/tls Secret written by --apply.
    #[arg(long, default_value = "layerlink-tls")]
    secret: String,
    /// Name of the webhook configuration(s) whose caBundle --apply sets.
    #[arg(long, default_value = "layerlink")]
    webhook: String,
}

pub async fn run(mut args: Args) -> Result<ExitCode, Error> {
    if args.names.is_empty() {
        if args.apply {
            // A certificate for localhost in a cluster would fail every webhook call.
            return Err(Error::Config(format!(
                "--apply needs --dns with the names the API server calls, e.g. --dns layerlink.{0}.svc \
                 --dns layerlink.{0}.svc.cluster.local",
                args.namespace
            )));
        }
        args.names = vec!["localhost".into(), "127.0.0.1".into()];
    }
    let bundle = layerlink::certs::generate(&args.names)?;
    layerlink::certs::write(&bundle, &args.out)?;
    eprintln!("wrote {0}/ca.crt, {0}/tls.crt, {0}/tls.key for {1}", args.out.display(), args.names.join(", "));
    if args.apply {
        let client = args.kube.client().await?;
        let target =
            layerlink::certs::ApplyTarget { namespace: args.namespace, secret: args.secret, webhook: args.webhook };
        for done in layerlink::certs::apply(client, &bundle, &target).await? {
            eprintln!("applied {done}");
        }
    }
    println!("{}", bundle.ca_bundle());
    Ok(ExitCode::SUCCESS)
}
