//! Deterministic OCI image layouts built in Rust (no docker daemon).
//!
//! Layers are gzip-compressed tars with fixed metadata (mtime 0, uid/gid 0, mode 0644), so the
//! same files always give the same blob digest. An [`Image`] turns into a config blob and a
//! manifest; an [`Index`] bundles several images (one per platform). [`write_layout`] writes an
//! OCI image layout directory that `skopeo copy oci:DIR:TAG ...` can read.
//!
//! A base and the apps built on it share a prefix of layers: see [`Image::on`] and [`family`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Every manifest media type a registry client should accept.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Which family of media types the manifests use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// OCI image manifest / OCI image index (what `skopeo` keeps from an OCI layout).
    #[default]
    Oci,
    /// Docker schema 2 manifest / manifest list (what Docker Hub mostly serves).
    Docker,
}

impl Format {
    fn manifest(self) -> &'static str {
        match self {
            Format::Oci => OCI_MANIFEST,
            Format::Docker => DOCKER_MANIFEST,
        }
    }
    fn index(self) -> &'static str {
        match self {
            Format::Oci => OCI_INDEX,
            Format::Docker => DOCKER_LIST,
        }
    }
    fn config(self) -> &'static str {
        match self {
            Format::Oci => OCI_CONFIG,
            Format::Docker => DOCKER_CONFIG,
        }
    }
    fn layer(self) -> &'static str {
        match self {
            Format::Oci => OCI_LAYER_GZIP,
            Format::Docker => DOCKER_LAYER_GZIP,
        }
    }
}

/// One gzip-compressed tar layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// The compressed blob as pushed to the registry.
    pub blob: Vec<u8>,
    /// `sha256:` of `blob` (the layer digest in manifests).
    pub digest: String,
    /// `sha256:` of the uncompressed tar (the diff ID in the config).
    pub diff_id: String,
}

impl Layer {
    /// Compressed size in bytes (the `size` in the manifest, the blob's Content-Length).
    pub fn size(&self) -> u64 {
        self.blob.len() as u64
    }
}

/// A deterministic layer holding `files` (path, contents). Parent directories get entries too.
pub fn layer(files: &[(&str, &[u8])]) -> Layer {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    let mut dirs: Vec<String> = Vec::new();
    for (path, contents) in files {
        let path = path.trim_start_matches('/');
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            prefix.push_str(part);
            prefix.push('/');
            if !dirs.contains(&prefix) {
                dirs.push(prefix.clone());
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                h.set_size(0);
                builder.append_data(&mut h, &prefix, std::io::empty()).expect("tar dir entry");
            }
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(contents.len() as u64);
        builder.append_data(&mut h, path, *contents).expect("tar file entry");
    }
    let tar = builder.into_inner().expect("finish tar");
    let diff_id = sha256_digest(&tar);
    let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&tar).expect("gzip");
    let blob = gz.finish().expect("gzip finish");
    Layer { digest: sha256_digest(&blob), diff_id, blob }
}

/// A deterministic layer with one file of `size` incompressible pseudo-random bytes derived from
/// `seed`, so that its compressed size is about `size` (useful for byte accounting).
pub fn random_layer(seed: &str, size: usize) -> Layer {
    let mut state: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        state ^= u64::from(b);
        state = state.wrapping_mul(0x0100_0000_01b3);
    }
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        data.extend_from_slice(&v.to_le_bytes());
    }
    data.truncate(size);
    let name = format!("data/{}.bin", seed.replace('/', "_"));
    layer(&[(name.as_str(), &data)])
}

/// One single-platform image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub layers: Vec<Layer>,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
    /// Config labels (`config.Labels`).
    pub labels: BTreeMap<String, String>,
    /// (os, architecture); default ("linux", "amd64").
    pub platform: (String, String),
    pub format: Format,
}

impl Image {
    pub fn new(layers: Vec<Layer>) -> Self {
        Image {
            layers,
            annotations: BTreeMap::new(),
            labels: BTreeMap::new(),
            platform: ("linux".into(), "amd64".into()),
            format: Format::Oci,
        }
    }

    /// An image built on `base`: the base's layers, then `extra`. Same platform and format as
    /// the base; annotations and labels start empty.
    pub fn on(base: &Image, extra: Vec<Layer>) -> Self {
        let mut layers = base.layers.clone();
        layers.extend(extra);
        Image {
            layers,
            annotations: BTreeMap::new(),
            labels: BTreeMap::new(),
            platform: base.platform.clone(),
            format: base.format,
        }
    }

    pub fn with_annotation(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }

    pub fn with_label(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    pub fn platform(mut self, os: impl Into<String>, arch: impl Into<String>) -> Self {
        self.platform = (os.into(), arch.into());
        self
    }

    /// Use Docker schema 2 media types instead of OCI ones.
    pub fn docker(mut self) -> Self {
        self.format = Format::Docker;
        self
    }

    /// The config blob.
    pub fn config_json(&self) -> Vec<u8> {
        let mut config = json!({ "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] });
        if !self.labels.is_empty() {
            config["Labels"] = json!(self.labels);
        }
        let v = json!({
            "architecture": self.platform.1,
            "os": self.platform.0,
            "config": config,
            "rootfs": {
                "type": "layers",
                "diff_ids": self.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
        });
        serde_json::to_vec(&v).expect("config json")
    }

    pub fn config_digest(&self) -> String {
        sha256_digest(&self.config_json())
    }

    /// The manifest bytes.
    pub fn manifest_json(&self) -> Vec<u8> {
        let config = self.config_json();
        let mut v = json!({
            "schemaVersion": 2,
            "mediaType": self.format.manifest(),
            "config": {
                "mediaType": self.format.config(),
                "digest": sha256_digest(&config),
                "size": config.len(),
            },
            "layers": self.layers.iter().map(|l| json!({
                "mediaType": self.format.layer(),
                "digest": l.digest,
                "size": l.size(),
            })).collect::<Vec<_>>(),
        });
        if !self.annotations.is_empty() {
            v["annotations"] = json!(self.annotations);
        }
        serde_json::to_vec(&v).expect("manifest json")
    }

    /// Digest of the manifest, as the registry will report it after a push.
    pub fn digest(&self) -> String {
        sha256_digest(&self.manifest_json())
    }

    /// (digest, compressed size) of each layer, bottom first.
    pub fn layer_sizes(&self) -> Vec<(String, u64)> {
        self.layers.iter().map(|l| (l.digest.clone(), l.size())).collect()
    }

    /// Every blob this image needs: config then layers.
    fn blobs(&self) -> Vec<Vec<u8>> {
        let mut out = vec![self.config_json()];
        out.extend(self.layers.iter().map(|l| l.blob.clone()));
        out
    }

    fn platform_manifest(&self) -> PlatformManifest {
        PlatformManifest {
            os: self.platform.0.clone(),
            arch: self.platform.1.clone(),
            digest: self.digest(),
            config_digest: self.config_digest(),
            layers: self.layer_sizes(),
        }
    }
}

/// A multi-platform image index (OCI) or manifest list (Docker, if the images are Docker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    pub images: Vec<Image>,
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    pub fn new(images: Vec<Image>) -> Self {
        Index { images, annotations: BTreeMap::new() }
    }

    pub fn with_annotation(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }

    fn format(&self) -> Format {
        self.images.first().map(|i| i.format).unwrap_or_default()
    }

    pub fn media_type(&self) -> &'static str {
        self.format().index()
    }

    pub fn index_json(&self) -> Vec<u8> {
        let mut v = json!({
            "schemaVersion": 2,
            "mediaType": self.media_type(),
            "manifests": self.images.iter().map(|i| {
                let m = i.manifest_json();
                json!({
                    "mediaType": i.format.manifest(),
                    "digest": sha256_digest(&m),
                    "size": m.len(),
                    "platform": { "os": i.platform.0, "architecture": i.platform.1 },
                })
            }).collect::<Vec<_>>(),
        });
        if !self.annotations.is_empty() {
            v["annotations"] = json!(self.annotations);
        }
        serde_json::to_vec(&v).expect("index json")
    }

    pub fn digest(&self) -> String {
        sha256_digest(&self.index_json())
    }
}

/// Per-platform entry of a pushed index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformManifest {
    pub os: String,
    pub arch: String,
    /// Digest of this platform's manifest.
    pub digest: String,
    pub config_digest: String,
    /// (digest, compressed size) of each layer, bottom first.
    pub layers: Vec<(String, u64)>,
}

/// What a push produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// Digest of the top manifest (image) or index, as the registry reports it.
    pub digest: String,
    /// Media type of the top manifest or index.
    pub media_type: String,
    /// For an index: one entry per platform, in index order. For an image: its own single entry.
    pub manifests: Vec<PlatformManifest>,
    /// For an image: (digest, compressed size) of each layer, bottom first. For an index: the
    /// layers of the first platform (each platform's are in `manifests`).
    pub layers: Vec<(String, u64)>,
}

impl Pushed {
    pub(crate) fn for_image(image: &Image) -> Pushed {
        Pushed {
            digest: image.digest(),
            media_type: image.format.manifest().to_string(),
            manifests: vec![image.platform_manifest()],
            layers: image.layer_sizes(),
        }
    }

    pub(crate) fn for_index(index: &Index) -> Pushed {
        let manifests: Vec<PlatformManifest> = index.images.iter().map(|i| i.platform_manifest()).collect();
        Pushed {
            digest: index.digest(),
            media_type: index.media_type().to_string(),
            layers: manifests.first().map(|m| m.layers.clone()).unwrap_or_default(),
            manifests,
        }
    }

    /// Sum of the compressed layer sizes in `layers`.
    pub fn total_layer_bytes(&self) -> u64 {
        self.layers.iter().map(|(_, s)| s).sum()
    }
}

/// A base image and apps built on it: the base has `base_layers` layers of ~`layer_size`
/// incompressible bytes each; app `i` is the base plus one small layer of its own. Everything is
/// derived from `name`, so two calls with the same arguments give the same digests.
pub fn family(name: &str, base_layers: usize, layer_size: usize, apps: usize) -> (Image, Vec<Image>) {
    let base = Image::new((0..base_layers).map(|i| random_layer(&format!("{name}-base-{i}"), layer_size)).collect());
    let apps = (0..apps)
        .map(|i| {
            let app = format!("{name}-app-{i}");
            Image::on(
                &base,
                vec![layer(&[(format!("app/{app}.txt").as_str(), format!("hello from {app}\n").as_bytes())])],
            )
        })
        .collect();
    (base, apps)
}

/// The top-level manifest or index to write into a layout.
pub enum Top<'a> {
    Image(&'a Image),
    Index(&'a Index),
}

/// Write an OCI image layout at `dir` holding `top` under the ref name `tag`. (skopeo's `oci:`
/// transport only finds OCI media types in index.json; use [`write_dir`] for Docker ones.)
pub fn write_layout(dir: &Path, tag: &str, top: Top<'_>) {
    let blobs_dir = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs_dir).expect("create layout dir");
    let put = |bytes: &[u8]| {
        let d = sha256_digest(bytes);
        let p = blobs_dir.join(d.trim_start_matches("sha256:"));
        if !p.exists() {
            std::fs::write(&p, bytes).expect("write blob");
        }
    };
    let (media_type, top_bytes) = match top {
        Top::Image(image) => {
            for b in image.blobs() {
                put(&b);
            }
            (image.format.manifest(), image.manifest_json())
        }
        Top::Index(index) => {
            for image in &index.images {
                for b in image.blobs() {
                    put(&b);
                }
                put(&image.manifest_json());
            }
            (index.media_type(), index.index_json())
        }
    };
    put(&top_bytes);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write oci-layout");
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": media_type,
            "digest": sha256_digest(&top_bytes),
            "size": top_bytes.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).expect("index.json")).expect("write index.json");
}

/// Write a `skopeo` directory-transport layout (`dir:DIR`) holding `top`. Unlike OCI layouts,
/// this transport carries Docker schema 2 manifests and manifest lists as they are.
pub fn write_dir(dir: &Path, top: Top<'_>) {
    std::fs::create_dir_all(dir).expect("create dir layout");
    let put = |bytes: &[u8]| {
        let d = sha256_digest(bytes);
        std::fs::write(dir.join(d.trim_start_matches("sha256:")), bytes).expect("write blob");
    };
    let top_bytes = match top {
        Top::Image(image) => {
            for b in image.blobs() {
                put(&b);
            }
            image.manifest_json()
        }
        Top::Index(index) => {
            for image in &index.images {
                for b in image.blobs() {
                    put(&b);
                }
                let m = image.manifest_json();
                let d = sha256_digest(&m);
                std::fs::write(dir.join(format!("{}.manifest.json", d.trim_start_matches("sha256:"))), &m)
                    .expect("write instance manifest");
            }
            index.index_json()
        }
    };
    std::fs::write(dir.join("manifest.json"), &top_bytes).expect("write manifest.json");
    std::fs::write(dir.join("version"), "Directory Transport Version: 1.1\n").expect("version");
}

/// Parse a JSON body (manifest, index, config) for assertions.
pub fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}
