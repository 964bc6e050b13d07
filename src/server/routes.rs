//! HTTP routes: a thin layer that always answers an AdmissionReview (linkerd's shape).

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, RawQuery, State as Extract},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};

use crate::{Engine, admission, policy::Mode};

/// Reviews above this are refused with 413 before they are read (the API server's own limit
/// for an object is 3 MiB, plus the review around it).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Clone)]
pub struct State {
    pub engine: Arc<Engine>,
    pub edges: admission::Edges,
    pub ready: Arc<AtomicBool>,
}

/// The HTTPS router: `/mutate`, `/audit`, `/validate`.
pub fn admission(state: State) -> Router {
    Router::new()
        .route("/mutate", post(|s, q, b| review(s, q, b, Mode::Enforce)))
        .route("/audit", post(|s, q, b| review(s, q, b, Mode::Audit)))
        .route("/validate", post(|s, q, b| review(s, q, b, Mode::Validate)))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The plain HTTP router: `/healthz`, `/readyz`, `/metrics` (OpenMetrics or the Prometheus text
/// format, by the `Accept` header). `/readyz` fails (503, one line saying
/// why) while the server is not serving, and when the resolver cannot serve (see
/// `Resolver::health`).
pub fn health(state: State) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|Extract(s): Extract<State>| async move {
                if !s.ready.load(std::sync::atomic::Ordering::SeqCst) {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: not serving (starting or shutting down)".into(),
                    );
                }
                match s.engine.resolver.health() {
                    Ok(()) => (StatusCode::OK, "ok".to_string()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
                }
            }),
        )
        .route(
            "/metrics",
            get(|Extract(s): Extract<State>, headers: HeaderMap| async move {
                let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
                let format = crate::metrics::Format::negotiate(accept);
                ([(header::CONTENT_TYPE, format.content_type())], s.engine.metrics.encode_as(format))
            }),
        )
        .with_state(state)
}

async fn review(
    Extract(state): Extract<State>,
    RawQuery(query): RawQuery,
    body: Bytes,
    mode: Mode,
) -> impl IntoResponse {
    let api_timeout = query
        .as_deref()
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("timeout=")).and_then(parse_timeout));
    let review = admission::handle(&state.engine, &state.edges, mode, &body, api_timeout).await;
    // Sized for a typical answer (a few pins and warnings) so the buffer rarely regrows.
    let mut json = Vec::with_capacity(2048);
    serde_json::to_writer(&mut json, &review).expect("a review always serializes");
    ([(header::CONTENT_TYPE, "application/json")], json)
}

/// `10s`, `3s`, `1500ms`: what the API server appends as `?timeout=`.
fn parse_timeout(s: &str) -> Option<Duration> {
    humantime::parse_duration(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_server_timeouts() {
        assert_eq!(parse_timeout("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_timeout("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_timeout("x"), None);
    }
}
