//! `layerlink certs`: a CA and a serving certificate, written to files and optionally applied.

use std::{path::PathBuf, process::ExitCode};

use layerlink::Error;

#[derive(clap::Args)]
pub struct Args {
    /// Directory to write ca.crt, tls.crt and tls.key into.
    #[arg(long, default_value = "certs")]
    out: PathBuf,
    /// DNS names or IP addresses for the certificate (repeatable).
    #[arg(long = "dns", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    names: Vec<String>,
    /// Also write the Secret and set the webhook configuration's caBundle (kubeconfig).
    #[arg(long)]
    apply: bool,
    /// Namespace of the Secret written by --apply.
    #[arg(long, default_value = "layerlink-system")]
    namespace: String,
    /// Name of the kubernetes.io/tls Secret written by --apply.
    #[arg(long, default_value = "layerlink-tls")]
    secret: String,
    /// Name of the webhook configuration(s) whose caBundle --apply sets.
    #[arg(long, default_value = "layerlink")]
    webhook: String,
}

pub async fn run(args: Args) -> Result<ExitCode, Error> {
    let bundle = layerlink::certs::generate(&args.names)?;
    layerlink::certs::write(&bundle, &args.out)?;
    eprintln!("wrote {0}/ca.crt, {0}/tls.crt, {0}/tls.key for {1}", args.out.display(), args.names.join(", "));
    if args.apply {
        let client = kube::Client::try_default().await.map_err(|e| Error::Kube(e.to_string()))?;
        let target =
            layerlink::certs::ApplyTarget { namespace: args.namespace, secret: args.secret, webhook: args.webhook };
        for done in layerlink::certs::apply(client, &bundle, &target).await? {
            eprintln!("applied {done}");
        }
    }
    println!("{}", bundle.ca_bundle());
    Ok(ExitCode::SUCCESS)
}
