//! Shared test harness: a real OCI registry (`docker-registry`, distribution 2.8) on loopback,
//! images pushed with `skopeo`, a counting/fault-injecting HTTP proxy, a TCP listener that only
//! counts connections, a bearer-token server, and a hostile registry speaking raw HTTP. Include with `mod support;`.
//!
//! Everything is synchronous to use, works from `#[test]` and `#[tokio::test]`, and cleans up on
//! Drop (killing only the processes it started).
#![allow(dead_code, unused_imports)]

pub mod cli;
pub mod hostile;
pub mod oci;
pub mod proxy;
pub mod registry;
pub mod token;
pub mod webhook;

pub use hostile::Hostile;
pub use oci::{Image, Index, Layer, Pushed, layer};
pub use proxy::{Fault, Listener, Proxy};
pub use registry::{Auth, Registry, RegistryOptions};
pub use token::{TokenOptions, TokenServer};

/// A small two-layer test image whose content (so digest) depends on `seed`.
pub fn image(seed: &str) -> Image {
    Image::new(vec![layer(&[("etc/os-release", b"ID=test\n")]), layer(&[("app/id", seed.as_bytes())])])
}

/// An engine for the config text, with the crypto provider installed.
pub fn engine(yaml: &str) -> layerlink::Engine {
    layerlink::install_crypto_provider();
    layerlink::Engine::new(layerlink::Config::parse(yaml).unwrap()).unwrap()
}
