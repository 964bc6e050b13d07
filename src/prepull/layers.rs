//! `layerlink layers IMAGE...`: a layer-sharing report.
//!
//! For each image, its layers (digest, compressed size) for the platform; for each pair, the
//! shared layer prefix (what a node stores once for both); with `--suggest-bases`, the longest
//! common layer prefixes among the images (candidate bases) with the images sharing each and the
//! bytes a node holding all of them saves ((n-1) × prefix bytes); and a summary: bytes without
//! sharing (every image's layers summed), with sharing (each distinct layer once), savings.
//! The computation is [`analyze`], a pure function.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use serde::Serialize;

use super::detect::{self, Layer};
use crate::{
    Error,
    config::Platform,
    reference::Reference,
    registry::auth::Keychain,
    resolve::{Deadline, Resolver},
};

/// One image's layers, the input of [`analyze`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageInfo {
    /// As given on the command line.
    pub image: String,
    /// The digest looked up (an index digest for a multi-arch image).
    pub digest: String,
    /// The platform manifest's digest.
    pub manifest_digest: String,
    pub layers: Vec<Layer>,
    /// Sum of the layer sizes.
    pub bytes: u64,
}

impl ImageInfo {
    pub fn new(image: String, digest: String, manifest_digest: String, layers: Vec<Layer>) -> Self {
        let bytes = layers.iter().map(|l| l.size).sum();
        ImageInfo { image, digest, manifest_digest, layers, bytes }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pair {
    pub a: String,
    pub b: String,
    pub shared_layers: usize,
    pub shared_bytes: u64,
}

/// A common layer prefix that more than one image is built on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// The prefix's layer digests, bottom first.
    pub layers: Vec<String>,
    pub bytes: u64,
    /// The images built on it, in input order.
    pub images: Vec<String>,
    /// What a node holding all of them saves: (images − 1) × bytes.
    pub saved_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Every image's layers summed, as if nothing were shared.
    pub bytes_without_sharing: u64,
    /// Each distinct layer once, as a node's content store holds them.
    pub bytes_with_sharing: u64,
    pub saved_bytes: u64,
    pub savings_percent: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub platform: String,
    pub images: Vec<ImageInfo>,
    pub pairs: Vec<Pair>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggested_bases: Option<Vec<Candidate>>,
    pub summary: Summary,
    /// Images that could not be read, with the reason.
    pub errors: BTreeMap<String, String>,
}

/// Number and bytes of the layers `a` and `b` share from the bottom.
pub fn shared_prefix(a: &[Layer], b: &[Layer]) -> (usize, u64) {
    let shared: Vec<&Layer> = a.iter().zip(b).take_while(|(x, y)| x.digest == y.digest).map(|(x, _)| x).collect();
    (shared.len(), shared.iter().map(|l| l.size).sum())
}

/// The longest common layer prefixes: every prefix shared by at least two images that cannot be
/// extended without losing one of them. Largest savings first.
pub fn suggest_bases(images: &[ImageInfo]) -> Vec<Candidate> {
    struct Node {
        children: HashMap<String, usize>,
        images: Vec<usize>,
        layers: Vec<String>,
        bytes: u64,
    }
    let mut nodes =
        vec![Node { children: HashMap::new(), images: (0..images.len()).collect(), layers: vec![], bytes: 0 }];
    for (i, image) in images.iter().enumerate() {
        let mut at = 0;
        for layer in &image.layers {
            let next = match nodes[at].children.get(&layer.digest) {
                Some(&n) => n,
                None => {
                    let mut prefix = nodes[at].layers.clone();
                    prefix.push(layer.digest.clone());
                    let bytes = nodes[at].bytes + layer.size;
                    nodes.push(Node { children: HashMap::new(), images: vec![], layers: prefix, bytes });
                    let n = nodes.len() - 1;
                    nodes[at].children.insert(layer.digest.clone(), n);
                    n
                }
            };
            nodes[next].images.push(i);
            at = next;
        }
    }
    let mut candidates: Vec<Candidate> = nodes
        .iter()
        .filter(|n| !n.layers.is_empty() && n.images.len() >= 2)
        .filter(|n| n.children.values().all(|&c| nodes[c].images.len() < n.images.len()))
        .map(|n| Candidate {
            layers: n.layers.clone(),
            bytes: n.bytes,
            images: n.images.iter().map(|&i| images[i].image.clone()).collect(),
            saved_bytes: (n.images.len() as u64 - 1) * n.bytes,
        })
        .collect();
    candidates.sort_by(|a, b| {
        b.saved_bytes.cmp(&a.saved_bytes).then(b.layers.len().cmp(&a.layers.len())).then(a.images.cmp(&b.images))
    });
    candidates
}

/// The whole report for images already read.
pub fn analyze(platform: &str, images: Vec<ImageInfo>, suggest: bool, errors: BTreeMap<String, String>) -> Report {
    let mut pairs = Vec::new();
    for (i, a) in images.iter().enumerate() {
        for b in &images[i + 1..] {
            let (shared_layers, shared_bytes) = shared_prefix(&a.layers, &b.layers);
            pairs.push(Pair { a: a.image.clone(), b: b.image.clone(), shared_layers, shared_bytes });
        }
    }
    let without: u64 = images.iter().map(|i| i.bytes).sum();
    let mut seen = BTreeSet::new();
    let with: u64 =
        images.iter().flat_map(|i| &i.layers).filter(|l| seen.insert(l.digest.as_str())).map(|l| l.size).sum();
    let saved = without - with;
    let summary = Summary {
        bytes_without_sharing: without,
        bytes_with_sharing: with,
        saved_bytes: saved,
        savings_percent: if without == 0 { 0.0 } else { (saved as f64 * 1000.0 / without as f64).round() / 10.0 },
    };
    let suggested_bases = suggest.then(|| suggest_bases(&images));
    Report { platform: platform.to_string(), images, pairs, suggested_bases, summary, errors }
}

/// One image's layers for `platform`: its tag resolved by `deadline` (a digest is used as
/// written), then its manifest (the platform's, for an index) read.
pub async fn image_info(
    resolver: &Arc<Resolver>,
    image: &str,
    platform: &Platform,
    keychain: &Arc<Keychain>,
    deadline: Deadline,
) -> Result<ImageInfo, Error> {
    let reference = Reference::parse(image)?;
    let digest = match &reference.digest {
        Some(d) => d.clone(),
        None => {
            resolver.resolve(&reference, keychain, deadline).await.map_err(Arc::unwrap_or_clone)?.digest.to_string()
        }
    };
    let registries = resolver.registries();
    let layers = detect::fetch_layers(registries, &reference, &digest, platform, keychain).await?;
    Ok(ImageInfo::new(image.to_string(), layers.digest, layers.manifest_digest, layers.layers))
}

/// `linux/arm64` → Platform.
pub fn parse_platform(text: &str) -> Result<Platform, Error> {
    match text.split('/').collect::<Vec<_>>()[..] {
        [os, architecture] if !os.is_empty() && !architecture.is_empty() => {
            Ok(Platform { os: os.into(), architecture: architecture.into() })
        }
        _ => Err(Error::Config(format!("--platform must be os/architecture (linux/amd64), got {text:?}"))),
    }
}

/// `1.5 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn short(digest: &str) -> &str {
    let cut = "sha256:".len() + 12;
    if digest.len() > cut { &digest[..cut] } else { digest }
}

/// The human-readable form of a report.
pub fn table(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let bytes = |b: u64| format!("{} ({b})", human(b));
    let _ = writeln!(out, "PLATFORM {}", report.platform);
    for image in &report.images {
        let _ = writeln!(
            out,
            "\nIMAGE {}  {}  {} layers  {}",
            image.image,
            short(&image.digest),
            image.layers.len(),
            bytes(image.bytes)
        );
        for (i, layer) in image.layers.iter().enumerate() {
            let _ = writeln!(out, "  {:>3}  {}  {}", i + 1, layer.digest, bytes(layer.size));
        }
    }
    if !report.pairs.is_empty() {
        let _ = writeln!(out, "\nSHARED PREFIX (pairs)");
        let width = report.pairs.iter().map(|p| p.a.len() + p.b.len() + 3).max().unwrap_or(0);
        for p in &report.pairs {
            let name = format!("{} ↔ {}", p.a, p.b);
            let _ = writeln!(out, "  {name:<width$}  {:>3} layers  {}", p.shared_layers, bytes(p.shared_bytes));
        }
    }
    if let Some(candidates) = &report.suggested_bases {
        let _ = writeln!(out, "\nSUGGESTED BASES (longest common layer prefixes)");
        if candidates.is_empty() {
            let _ = writeln!(out, "  none: no two images share a bottom layer");
        }
        for (i, c) in candidates.iter().enumerate() {
            let top = c.layers.last().map_or("", |d| short(d));
            let _ = writeln!(
                out,
                "  {}. {} layers up to {top}  {}  shared by {} images, saves {} per node",
                i + 1,
                c.layers.len(),
                bytes(c.bytes),
                c.images.len(),
                bytes(c.saved_bytes)
            );
            for image in &c.images {
                let _ = writeln!(out, "       {image}");
            }
        }
    }
    let s = &report.summary;
    let _ = writeln!(out, "\nSUMMARY");
    let _ = writeln!(out, "  without sharing  {}", bytes(s.bytes_without_sharing));
    let _ = writeln!(out, "  with sharing     {}", bytes(s.bytes_with_sharing));
    let _ = writeln!(out, "  saved            {}  {:.1}%", bytes(s.saved_bytes), s.savings_percent);
    for (image, error) in &report.errors {
        let _ = writeln!(out, "\nERROR {image}: {error}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, layers: &[(&str, u64)]) -> ImageInfo {
        let layers = layers.iter().map(|(d, s)| Layer { digest: d.to_string(), size: *s }).collect();
        ImageInfo::new(name.into(), format!("sha256:{name}"), format!("sha256:{name}"), layers)
    }

    fn family() -> Vec<ImageInfo> {
        vec![
            image("base", &[("os", 100), ("rt", 50)]),
            image("app-a", &[("os", 100), ("rt", 50), ("a", 7)]),
            image("app-b", &[("os", 100), ("rt", 50), ("b", 9)]),
            image("tool", &[("os", 100), ("t", 30)]),
            image("other", &[("x", 40)]),
        ]
    }

    #[test]
    fn pairs_share_their_common_prefix() {
        let report = analyze("linux/amd64", family(), false, BTreeMap::new());
        let pair = |a: &str, b: &str| report.pairs.iter().find(|p| p.a == a && p.b == b).unwrap().clone();
        assert_eq!(report.pairs.len(), 10);
        assert_eq!((pair("app-a", "app-b").shared_layers, pair("app-a", "app-b").shared_bytes), (2, 150));
        assert_eq!((pair("base", "app-a").shared_layers, pair("base", "app-a").shared_bytes), (2, 150));
        assert_eq!((pair("app-a", "tool").shared_layers, pair("app-a", "tool").shared_bytes), (1, 100));
        assert_eq!((pair("app-b", "other").shared_layers, pair("app-b", "other").shared_bytes), (0, 0));
        assert_eq!(report.suggested_bases, None);
    }

    #[test]
    fn a_layer_shared_out_of_place_is_not_a_shared_prefix() {
        let (n, bytes) = shared_prefix(
            &[Layer { digest: "x".into(), size: 1 }, Layer { digest: "y".into(), size: 2 }],
            &[Layer { digest: "y".into(), size: 2 }],
        );
        assert_eq!((n, bytes), (0, 0));
    }

    #[test]
    fn suggested_bases_are_the_longest_common_prefixes() {
        let candidates = suggest_bases(&family());
        let got: Vec<(Vec<&str>, u64, Vec<&str>, u64)> = candidates
            .iter()
            .map(|c| {
                (
                    c.layers.iter().map(String::as_str).collect(),
                    c.bytes,
                    c.images.iter().map(String::as_str).collect(),
                    c.saved_bytes,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                // base, app-a, app-b share os+rt: (3 − 1) × 150 saved.
                (vec!["os", "rt"], 150, vec!["base", "app-a", "app-b"], 300),
                // os alone is shared by four (tool too): (4 − 1) × 100; a tie, the longer prefix first.
                (vec!["os"], 100, vec!["base", "app-a", "app-b", "tool"], 300),
            ]
        );
        // Identical images are one candidate covering all their layers.
        let twins = vec![image("a", &[("l", 10)]), image("b", &[("l", 10)])];
        let c = suggest_bases(&twins);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].bytes, c[0].saved_bytes), (10, 10));
        assert!(suggest_bases(&[image("a", &[("x", 1)]), image("b", &[("y", 1)])]).is_empty());
    }

    #[test]
    fn summary_counts_each_distinct_layer_once() {
        let report = analyze("linux/amd64", family(), true, BTreeMap::new());
        let s = &report.summary;
        assert_eq!(s.bytes_without_sharing, 150 + 157 + 159 + 130 + 40);
        assert_eq!(s.bytes_with_sharing, 100 + 50 + 7 + 9 + 30 + 40);
        assert_eq!(s.saved_bytes, 636 - 236);
        assert_eq!(s.savings_percent, 62.9);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["summary"]["bytesWithSharing"], 236);
        assert_eq!(json["suggestedBases"][0]["savedBytes"], 300);
        assert_eq!(json["pairs"][0]["sharedBytes"], 150);
        let text = table(&report);
        assert!(text.contains("app-a ↔ app-b"), "{text}");
        assert!(text.contains("62.9%"), "{text}");
        let empty = analyze("linux/amd64", vec![], true, BTreeMap::new());
        assert_eq!(empty.summary.savings_percent, 0.0);
    }

    #[test]
    fn platforms_and_sizes() {
        assert_eq!(parse_platform("linux/arm64").unwrap().architecture, "arm64");
        assert!(parse_platform("linux").is_err());
        assert!(parse_platform("linux/arm64/v8").is_err());
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 * 1024 * 1024), "3.0 MiB");
    }
}
