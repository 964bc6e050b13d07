//! `layerlink install` and `layerlink uninstall`: the arguments, and the steps in order (config,
//! pre-puller, own image, certificate, then print or apply). What is rendered and how it is
//! applied is the library's `install` module.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use layerlink::{
    Error,
    install::{self, CertSource, Mode, Plan, TLS_SECRET, cluster},
};

#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// Which namespaces are enforced and audited.
    #[arg(long, default_value = "namespaced", value_parser = super::choice(&Mode::ALL, Mode::name, Mode::about))]
    mode: Mode,
    /// Where the serving certificate comes from.
    #[arg(long, default_value = "self-signed",
          value_parser = super::choice(&CertSource::ALL, CertSource::name, CertSource::about))]
    certs: CertSource,
    /// layerlink's config (the ConfigMap); validated first. Default: the built-in one.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The namespace layerlink runs in (a dedicated one).
    #[arg(long, short = 'n', default_value = install::NAMESPACE)]
    namespace: String,
    /// Also the node pre-puller (DaemonSet) for the config's `prepull.bases` (needs --config).
    #[arg(long)]
    prepuller: bool,
    /// Also the ServiceMonitor, PrometheusRule and Grafana dashboard (Prometheus Operator CRDs).
    #[arg(long)]
    monitoring: bool,
    /// For Kubernetes 1.21 to 1.29: the `/validate` webhook instead of the
    /// ValidatingAdmissionPolicy, and no matchConditions.
    #[arg(long = "pre-1.30")]
    pre_1_30: bool,
    /// Also a NetworkPolicy for layerlink's pods.
    #[arg(long)]
    network_policy: bool,
    /// layerlink's own image (default: the release this binary belongs to).
    #[arg(long)]
    image: Option<String>,
    /// Keep the image's tag: do not look its digest up.
    #[arg(long)]
    no_pin: bool,
    /// How long the image's digest lookup may take before the tag is kept.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pin_timeout: Duration,
    /// Apply to the cluster (server-side apply, field manager `layerlink`) instead of printing.
    #[arg(long)]
    apply: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// The cluster, and whether to wait for it (install --apply: until the Deployment is available,
/// before the webhooks are registered; uninstall: until the namespace is gone).
#[derive(clap::Args, Debug)]
struct ClusterArgs {
    /// Wait until done: the Deployment available (install --apply), the namespace gone (uninstall).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    wait: bool,
    /// How long to wait.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    kube: super::KubeArgs,
}

impl ClusterArgs {
    fn wait(&self) -> Option<Duration> {
        self.wait.then_some(self.timeout)
    }
}

#[derive(clap::Args, Debug)]
pub struct UninstallArgs {
    /// The namespace layerlink was installed in.
    #[arg(long, short = 'n', default_value = install::NAMESPACE)]
    namespace: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub async fn install(args: InstallArgs) -> Result<ExitCode, Error> {
    install::check_namespace(&args.namespace)?;
    let (config, config_text) = install::load_config(args.config.as_deref())?;
    let extra = if args.prepuller {
        let Some(path) = &args.config else {
            return Err(Error::Config("--prepuller needs --config (its prepull.bases)".into()));
        };
        let prepuller = layerlink::prepull::daemonset::Options {
            config: path.clone(),
            namespace: args.namespace.clone(),
            priority_class: None,
            tolerate_all: false,
            tolerations: Vec::new(),
            max_unavailable: "10%".into(),
        };
        match layerlink::prepull::daemonset::documents(&prepuller).await? {
            Ok(docs) => docs,
            Err(problems) => {
                for problem in problems {
                    eprintln!("layerlink: {problem}");
                }
                return Ok(ExitCode::FAILURE);
            }
        }
    } else {
        Vec::new()
    };
    let image = args.image.clone().unwrap_or_else(install::default_image);
    let image = if args.no_pin {
        image
    } else {
        install::pin_image(&image, &config, args.pin_timeout).await.unwrap_or_else(|why| {
            eprintln!("layerlink: not pinned: {image} keeps its tag ({why})");
            image
        })
    };
    let plan = Plan {
        mode: args.mode,
        certs: args.certs,
        namespace: args.namespace.clone(),
        config: config_text,
        image,
        pre_1_30: args.pre_1_30,
        monitoring: args.monitoring,
        network_policy: args.network_policy,
        registry_ports: install::registry_ports(&config),
        extra,
    };
    let service = format!("layerlink.{}.svc", args.namespace);
    let names = [service.clone(), format!("{service}.cluster.local")];
    if !args.apply {
        let bundle = match args.certs {
            CertSource::SelfSigned => Some(layerlink::certs::generate(&names)?),
            CertSource::CertManager | CertSource::None => None,
        };
        print!("{}", install::to_yaml(&install::render(&plan, bundle.as_ref()))?);
        return Ok(ExitCode::SUCCESS);
    }
    let client = args.cluster.kube.client().await?;
    let bundle = match args.certs {
        // An upgrade keeps the certificate the cluster already trusts.
        CertSource::SelfSigned => match cluster::existing_bundle(&client, &args.namespace).await? {
            Some(bundle) => {
                eprintln!("keeping the certificate in secret {}/{TLS_SECRET}", args.namespace);
                Some(bundle)
            }
            None => Some(layerlink::certs::generate(&names)?),
        },
        CertSource::CertManager | CertSource::None => None,
    };
    let docs = install::render(&plan, bundle.as_ref());
    cluster::apply(&client, &docs, &args.namespace, args.cluster.wait(), |line| eprintln!("{line}")).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn uninstall(args: UninstallArgs) -> Result<ExitCode, Error> {
    let client = args.cluster.kube.client().await?;
    let removed = cluster::uninstall(&client, &args.namespace, args.cluster.wait(), |line| eprintln!("{line}")).await?;
    if removed == 0 {
        eprintln!("nothing to remove: no object of layerlink's in the cluster");
    }
    Ok(ExitCode::SUCCESS)
}
