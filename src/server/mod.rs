//! `layerlink serve`: HTTPS admission endpoints on one port, health and metrics on another,
//! graceful shutdown that drains in-flight reviews.
//!
//! Both ports are bound before anything is served: a port that cannot be bound ends `serve` with
//! an error naming the address, so a process is never up without its admission listener.

pub mod listener;
pub mod routes;
pub mod tls;

use std::{sync::Arc, time::Duration};

use crate::{Engine, Error, admission::Edges};

/// Time between failing readiness and closing the listener on SIGTERM.
const DRAIN_DELAY: Duration = Duration::from_secs(5);

pub struct Server {
    pub engine: Arc<Engine>,
    pub edges: Edges,
}

impl Server {
    /// Serves until SIGTERM or Ctrl-C; then fails readiness, keeps serving 5s, stops accepting and
    /// lets in-flight reviews finish (up to 20s more), within the pod's 30s grace period.
    pub async fn run(self) -> Result<(), Error> {
        let config = self.engine.config.clone();
        let tls = tls::load(&config.tls.cert_file, &config.tls.key_file).await?;
        let https_listener = listener::bind(config.listen.https).await?;
        let http_listener = listener::bind(config.listen.http).await?;
        tokio::spawn(tls::watch(
            tls.clone(),
            config.tls.cert_file.clone(),
            config.tls.key_file.clone(),
            config.tls.reload_interval,
            self.engine.metrics.clone(),
        ));
        let state = routes::State { engine: self.engine.clone(), edges: self.edges.clone(), ready: Default::default() };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let https = listener::serve(
            https_listener,
            Some(tls),
            routes::admission(state.clone()),
            listener::Limits::admission(&config.listen, routes::MAX_BODY),
            stopped.clone(),
        );
        let http = listener::serve(
            http_listener,
            None,
            routes::health(state.clone()),
            listener::Limits::health(&config.listen),
            stopped,
        );
        tracing::info!(https = %config.listen.https, http = %config.listen.http, "serving");
        state.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        let signal_state = state.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            // Fail readiness first and keep serving while the endpoint is removed from the
            // Service (the API server may still pick this pod for a few seconds), then stop
            // accepting and let in-flight reviews finish.
            tracing::info!("shutting down: not ready, draining in {}s", DRAIN_DELAY.as_secs());
            signal_state.ready.store(false, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(DRAIN_DELAY).await;
            let _ = stop.send(true);
        });
        tokio::join!(https, http);
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
