//! `Keychain::parse` on arbitrary bytes (a tenant's pull secret), then `lookup` with arbitrary
//! and with realistic registry/repository pairs: never panics.
//!
//! Input: `CONFIG \0 HOST \0 REPOSITORY \0 HOST \0 REPOSITORY …` — everything before the first NUL
//! is the docker config; the pairs after it are extra lookups (seeds are plain config files).
#![no_main]

use layerlink::{reference::Reference, registry::auth::Keychain};
use libfuzzer_sys::fuzz_target;

/// Lookups every parsed keychain answers, as references name them.
const REFERENCES: &[&str] = &[
    "nginx",
    "docker.io/myorg/worker:3.2.1",
    "index.docker.io/library/nginx:1",
    "ghcr.io/org/app:v1.2.3",
    "registry.local:5000/team/app:1.0",
    "127.0.0.1:5000/a/b/c",
    "[::1]:5000/app:v1",
    "localhost/app",
    "a.b.example.com/x",
    "quay.io/prometheus/node-exporter:v1.7.0",
];

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0);
    let config = parts.next().unwrap_or_default();
    let Ok(parsed) = Keychain::parse(config) else { return };
    let keychain = parsed.keychain;
    for text in REFERENCES {
        let r = Reference::parse(text).expect("valid reference");
        let _ = keychain.lookup(&r.registry, &r.repository);
    }
    let rest: Vec<&[u8]> = parts.collect();
    for pair in rest.chunks(2) {
        let host = String::from_utf8_lossy(pair[0]);
        let repository = pair.get(1).map(|r| String::from_utf8_lossy(r)).unwrap_or_default();
        let _ = keychain.lookup(&host, &repository);
        // The same text as an image reference, the way the registry client asks.
        if let Ok(r) = Reference::parse(&format!("{host}/{repository}")) {
            let _ = keychain.lookup(&r.registry, &r.repository);
        }
    }
    let mut extended = keychain.clone();
    extended.extend(keychain);
});
