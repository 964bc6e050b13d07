//! The floor: the smallest webhook that does what any webhook must do, on the same stack and TLS
//! settings as `layerlink serve` (axum 0.8 + axum-server 0.9 with rustls on ring, TLS 1.3 by
//! default, ALPN http/1.1, the same tokio runtime builder, the same 4 MiB body limit).
//!
//! It reads the body, parses the review, and answers allowed with no patch, echoing the uid and
//! apiVersion with layerlink's own response type. Two decodes (`--decode`):
//!
//! - `whole` (the floor): the review with its object and oldObject decoded whole into
//!   `serde_json::Value`, the request fields as strings. This is what a webhook that parses the
//!   review does (kube-rs's typed `AdmissionReview<DynamicObject>` costs about the same: see
//!   `parse-cost`),
//!   and what layerlink itself did before its read-only decode; it is kept here, apart from layerlink's types,
//!   so the floor does not move when layerlink's decoding changes.
//! - `uid`: only apiVersion, kind and request.uid; everything else is skipped unread. No webhook
//!   that looks at the object can do less; the column shows what layerlink's own work costs.

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
use layerlink::admission::review::Response;
use serde::Deserialize;
use serde_json::Value;

/// The review as a webhook that parses it sees it: every request field layerlink reads, and the
/// objects whole.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // decoded to be paid for, not read
struct WholeReview {
    api_version: String,
    kind: String,
    request: Option<WholeRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct WholeRequest {
    uid: String,
    kind: Gvk,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    operation: String,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    old_object: Option<Value>,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Gvk {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    kind: String,
}

/// The least a webhook can decode and still answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UidReview {
    api_version: String,
    request: Option<UidRequest>,
}

#[derive(Deserialize)]
struct UidRequest {
    uid: String,
}

#[derive(Clone, Copy)]
enum Decode {
    Whole,
    Uid,
}

/// `floor-server --cert FILE --key FILE --listen ADDR --decode whole|uid` (run by the bench
/// under `taskset`).
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
    let decode = match value("--decode").as_str() {
        "whole" => Decode::Whole,
        "uid" => Decode::Uid,
        other => panic!("--decode whole|uid, not {other}"),
    };
    layerlink::install_crypto_provider();
    // The same builder as src/main.rs: one worker per CPU the process may run on.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async move {
        let tls = RustlsConfig::from_config(Arc::new(server_config(&cert, &key)));
        let app = Router::new()
            .route("/mutate", post(move |body| review(decode, body)))
            .layer(DefaultBodyLimit::max(4 * 1024 * 1024));
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

async fn review(decode: Decode, body: Bytes) -> impl IntoResponse {
    let decoded = match decode {
        Decode::Whole => {
            serde_json::from_slice::<WholeReview>(&body).map(|r| (r.api_version, r.request.map(|q| q.uid)))
        }
        Decode::Uid => serde_json::from_slice::<UidReview>(&body).map(|r| (r.api_version, r.request.map(|q| q.uid))),
    };
    match decoded {
        Ok((api_version, uid)) => {
            let answer = Response::allow(uid.as_deref().unwrap_or_default()).into_review(&api_version);
            let json = serde_json::to_vec(&answer).expect("a review always serializes");
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], json)
        }
        Err(e) => (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "text/plain")], e.to_string().into_bytes()),
    }
}
