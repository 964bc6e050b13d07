//! TLS from cert/key files, reloaded when they change on disk (cert-manager and kubelet secret
//! updates swap them). A reload only affects new handshakes: in-flight connections keep theirs.

use std::{path::PathBuf, sync::Arc, time::SystemTime};

use axum_server::tls_rustls::RustlsConfig;

use crate::{
    Error,
    metrics::{Metrics, ResultLabels},
};

/// Loads the serving config with HTTP/1.1 ALPN (the API server offers only http/1.1) and h2.
pub async fn load(cert: &PathBuf, key: &PathBuf) -> Result<RustlsConfig, Error> {
    let config = server_config(cert, key)?;
    Ok(RustlsConfig::from_config(Arc::new(config)))
}

fn server_config(cert: &PathBuf, key: &PathBuf) -> Result<rustls::ServerConfig, Error> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| Error::Tls(format!("{}: {e}", p.display())));
    let certs: Vec<_> = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("{}: no PEM certificate", cert.display())));
    }
    let key_der = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| Error::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| Error::Tls(format!("{}: no PEM private key", key.display())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| Error::Tls(format!("{} / {}: {e}", cert.display(), key.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Polls the files and swaps the config when either changes. A broken pair (a half-written
/// rotation) keeps the old certificate and is retried on the next tick.
pub async fn watch(
    config: RustlsConfig,
    cert: PathBuf,
    key: PathBuf,
    every: std::time::Duration,
    metrics: Arc<Metrics>,
) {
    let stamp = |p: &PathBuf| -> Option<(SystemTime, u64)> {
        let meta = std::fs::metadata(p).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    let mut last = (stamp(&cert), stamp(&key));
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        let now = (stamp(&cert), stamp(&key));
        if now == last {
            continue;
        }
        match server_config(&cert, &key) {
            Ok(new) => {
                config.reload_from_config(Arc::new(new));
                last = now;
                metrics.tls_reloads.get_or_create(&ResultLabels { result: "ok" }).inc();
                tracing::info!(cert = %cert.display(), "serving certificate reloaded");
            }
            Err(e) => {
                metrics.tls_reloads.get_or_create(&ResultLabels { result: "error" }).inc();
                tracing::warn!(error = %e, "serving certificate not reloaded; keeping the old one");
            }
        }
    }
}
