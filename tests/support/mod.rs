//! Shared test harness: a real OCI registry (`docker-registry`, distribution 2.8) on loopback,
//! images pushed with `skopeo`, a counting/fault-injecting HTTP proxy, a TCP listener that only
//! counts connections, a bearer-token server, and a hostile registry speaking raw HTTP. Include with `mod support;`.
//!
//! Everything is synchronous to use, works from `#[test]` and `#[tokio::test]`, and cleans up on
//! Drop (killing only the processes it started).
#![allow(dead_code, unused_imports)]

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
