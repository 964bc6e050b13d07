//! `make image` without a container engine: the OCI layout from hack/image.sh, pushed to a real
//! registry, runs as 65532, carries both binaries, and `layerlink` runs from the image's own
//! root filesystem (every shared library it needs is in the layer).

mod support;

use std::{io::Read, process::Command};

use support::Registry;

fn blob(registry: &Registry, digest: &str) -> Vec<u8> {
    let response = registry.request("GET", &format!("/v2/layerlink/blobs/{digest}"), &[]).unwrap();
    assert_eq!(response.status, 200, "blob {digest}");
    response.body
}

#[test]
fn make_image_pushes_a_nonroot_image_with_both_binaries() {
    let registry = Registry::start();
    // The test binaries carry debug info; a stripped copy keeps the layer small and quick to zip.
    let bins = tempfile::tempdir().unwrap();
    let stripped = bins.path().join("layerlink");
    let strip = Command::new("strip").arg("-o").arg(&stripped).arg(env!("CARGO_BIN_EXE_layerlink")).status().unwrap();
    assert!(strip.success());
    let output = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/image.sh"))
        .env("LAYERLINK_BIN", &stripped)
        .env("NOOP_BIN", env!("CARGO_BIN_EXE_layerlink-noop"))
        .env("REGISTRY", registry.host())
        .env("TAG", "test")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let digest = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert_eq!(registry.manifest_digest("layerlink", "test").as_deref(), Some(digest.as_str()));

    let manifest: serde_json::Value = serde_json::from_slice(&blob_manifest(&registry)).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&blob(&registry, manifest["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/usr/local/bin/layerlink"]));

    let layer = blob(&registry, manifest["layers"][0]["digest"].as_str().unwrap());
    let root = tempfile::tempdir().unwrap();
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&layer[..]).read_to_end(&mut tar).unwrap();
    tar::Archive::new(&tar[..]).unpack(root.path()).unwrap();
    for binary in ["usr/local/bin/layerlink", "usr/local/bin/layerlink-noop"] {
        let meta = std::fs::metadata(root.path().join(binary)).unwrap_or_else(|e| panic!("{binary}: {e}"));
        assert!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0, "{binary} executable");
    }
    assert!(std::fs::read_to_string(root.path().join("etc/passwd")).unwrap().contains(":65532:65532:"));
    assert!(root.path().join("etc/ssl/certs/ca-certificates.crt").exists());
    // The image's own filesystem is enough to run layerlink (tests run as root, as CI does).
    let run = Command::new("chroot").arg(root.path()).args(["/usr/local/bin/layerlink", "--version"]).output().unwrap();
    assert!(run.status.success(), "layerlink does not run in its image: {}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).starts_with("layerlink "));
}

fn blob_manifest(registry: &Registry) -> Vec<u8> {
    let accept = ("Accept", "application/vnd.oci.image.manifest.v1+json");
    let response = registry.request("GET", "/v2/layerlink/manifests/test", &[accept]).unwrap();
    assert_eq!(response.status, 200);
    response.body
}
