//! The floor: the smallest webhook that does what any webhook must do, on the same stack and TLS
//! settings as `layerlink serve` (axum 0.8 + axum-server 0.9 with rustls on ring, TLS 1.3 by
//! default, ALPN http/1.1, the same tokio runtime builder, the same 4 MiB body limit).
//!
//! It reads the body, parses it into layerlink's own `AdmissionReview` (the same struct and so
//! the same serde_json work: the object is decoded into a `serde_json::Value`), and answers
//! allowed with no patch, echoing the uid and apiVersion with layerlink's own response type. What
//! layerlink adds on top (policy, sites, cache lookups, patch, logs, metrics) is what the ratio
//! measures.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::DefaultBodyLimit,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::post,
};
use axum_server::tls_rustls::RustlsConfig;
use layerlink::admission::review::{AdmissionReview, Response};

/// `floor-server --cert FILE --key FILE --listen ADDR` (run by the bench under `taskset`).
pub fn main(args: &[String]) {
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("floor-server needs {name}"))
            .clone()
    };
    let cert = PathBuf::from(value("--cert"));
    let key = PathBuf::from(value("--key"));
    let listen: SocketAddr = value("--listen").parse().expect("--listen ADDR");
    layerlink::install_crypto_provider();
    // The same builder as src/main.rs: one worker per CPU the process may run on.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async move {
        let tls = RustlsConfig::from_config(Arc::new(server_config(&cert, &key)));
        let app = Router::new().route("/mutate", post(review)).layer(DefaultBodyLimit::max(4 * 1024 * 1024));
        axum_server::bind_rustls(listen, tls).serve(app.into_make_service()).await.expect("floor server");
    });
}

/// The same rustls settings as src/server/tls.rs.
fn server_config(cert: &PathBuf, key: &PathBuf) -> rustls::ServerConfig {
    let certs: Vec<_> = rustls_pemfile::certs(&mut std::fs::read(cert).expect("cert").as_slice())
        .collect::<Result<_, _>>()
        .expect("cert PEM");
    let key = rustls_pemfile::private_key(&mut std::fs::read(key).expect("key").as_slice())
        .expect("key PEM")
        .expect("a private key");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("cert and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

async fn review(body: Bytes) -> impl IntoResponse {
    match serde_json::from_slice::<AdmissionReview>(&body) {
        Ok(review) => {
            let uid = review.request.as_ref().map(|r| r.uid.as_str()).unwrap_or_default();
            let answer = Response::allow(uid).into_review(&review.api_version);
            let json = serde_json::to_vec(&answer).expect("a review always serializes");
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], json)
        }
        Err(e) => (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "text/plain")], e.to_string().into_bytes()),
    }
}
