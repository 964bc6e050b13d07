//! Image reference grammar (distribution's `reference` package) and Docker Hub normalisation.
//!
//! `nginx` is `docker.io/library/nginx:latest`, and Docker Hub is served by `index.docker.io`.
//! We keep the text the user wrote so a pin only appends to it (`nginx:1.25@sha256:…`).

use std::fmt;

/// Registry name users write for Docker Hub.
pub const DOCKER_HUB: &str = "docker.io";
/// Host that serves the Docker Hub registry API.
pub const DOCKER_HUB_API: &str = "index.docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed, normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry as named (normalised: `docker.io` for Docker Hub), with port if any.
    pub registry: String,
    /// Repository path inside the registry (`library/nginx`).
    pub repository: String,
    /// Tag, if one was written.
    pub tag: Option<String>,
    /// Digest (`sha256:…`), if one was written.
    pub digest: Option<String>,
}

/// Why a reference does not parse. The message is shown to users verbatim.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ParseError {
    pub reference: String,
    pub reason: &'static str,
}

impl Reference {
    /// Parses `host[:port]/path[:tag][@digest]` and normalises Docker Hub names.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let fail = |reason| ParseError { reference: input.to_string(), reason };
        if input.is_empty() {
            return Err(fail("empty reference"));
        }
        if input.trim() != input {
            return Err(fail("leading or trailing whitespace"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest).map_err(fail)?;
                (rest, Some(digest.to_string()))
            }
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/', so a registry port is not a tag.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                let tag = &rest[at + 1..];
                validate_tag(tag).map_err(fail)?;
                (&rest[..at], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(fail("missing repository name"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(fail("repository name longer than 255 characters"));
        }
        let (registry, path) = split_domain(name);
        if let Some(registry) = registry {
            validate_domain(registry).map_err(fail)?;
        }
        for component in path.split('/') {
            validate_path_component(component).map_err(fail)?;
        }
        let (registry, repository) = match registry {
            None | Some(DOCKER_HUB) | Some(DOCKER_HUB_API) => {
                let repository = if path.contains('/') { path.to_string() } else { format!("library/{path}") };
                (DOCKER_HUB.to_string(), repository)
            }
            Some(host) => (host.to_string(), path.to_string()),
        };
        // Distribution checks the length of the normalised name (`docker.io/library/…`).
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(fail("repository name longer than 255 characters"));
        }
        Ok(Reference { registry, repository, tag, digest })
    }

    /// The tag to resolve: the written tag, else `latest`.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// The host that serves this registry's API (`index.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB { DOCKER_HUB_API } else { &self.registry }
    }

    /// Whether a digest is already part of the reference.
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some()
    }

    /// `registry/repository`, the name globs in the config match against.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    /// The fully qualified form: `docker.io/library/nginx:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        } else if self.digest.is_none() {
            write!(f, ":latest")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The pinned form of what the user wrote: their text, `:latest` if no tag was written and the tag
/// is kept, then `@digest`. With `keep_tag` false the tag is dropped (`name@digest`).
pub fn pin(original: &str, reference: &Reference, digest: &str, keep_tag: bool) -> String {
    let name_only = match &reference.tag {
        Some(tag) => &original[..original.len() - tag.len() - 1],
        None => original,
    };
    if keep_tag {
        format!("{name_only}:{}@{digest}", reference.tag_or_latest())
    } else {
        format!("{name_only}@{digest}")
    }
}

/// Distribution's rule: the first component is a registry host if it has a '.' or ':', is
/// `localhost`, or has upper-case letters (which a repository path may not).
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn validate_domain(domain: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(v6) = domain.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or("unterminated IPv6 address in registry host")?;
        addr.parse::<std::net::Ipv6Addr>().map_err(|_| "invalid IPv6 address in registry host")?;
        match after {
            "" => return Ok(()),
            _ => ("", after.strip_prefix(':').ok_or("invalid registry host")?),
        }
    } else {
        match domain.rsplit_once(':') {
            Some((host, port)) => (host, port),
            None => (domain, ""),
        }
    };
    if domain.ends_with(':') {
        return Err("empty registry port");
    }
    if !port.is_empty() && (!port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5) {
        return Err("invalid registry port");
    }
    if !domain.starts_with('[') {
        for label in host.split('.') {
            let bytes = label.as_bytes();
            let ok = !bytes.is_empty()
                && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                && bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric();
            if !ok {
                return Err("invalid registry host");
            }
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn validate_path_component(component: &str) -> Result<(), &'static str> {
    let bytes = component.as_bytes();
    if bytes.is_empty() {
        return Err("empty path component in repository name");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.iter().any(|b| b.is_ascii_uppercase()) {
        return Err("repository name must be lowercase");
    }
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err("repository path components must start and end with a letter or digit");
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return Err("invalid character in repository name");
        }
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`
fn validate_tag(tag: &str) -> Result<(), &'static str> {
    let bytes = tag.as_bytes();
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    if bytes.is_empty() {
        return Err("empty tag");
    }
    if bytes.len() > MAX_TAG_LEN {
        return Err("tag longer than 128 characters");
    }
    if !word(&bytes[0]) || !bytes.iter().all(|b| word(b) || *b == b'.' || *b == b'-') {
        return Err("invalid tag");
    }
    Ok(())
}

/// `algorithm:encoded` with an algorithm a pin may use (see [`is_digest`]); anything else is
/// refused with the reason.
fn validate_digest(digest: &str) -> Result<(), &'static str> {
    let (algorithm, encoded) = digest.split_once(':').ok_or("digest must be algorithm:hex")?;
    if is_digest(digest) {
        return Ok(());
    }
    match algorithm {
        "sha256" | "sha512" => Err("invalid digest: wrong length or not lowercase hex"),
        _ if encoded.is_empty() => Err("invalid digest"),
        _ => Err("unsupported digest algorithm: a pin is sha256 or sha512"),
    }
}

/// The digest a pin carries: `sha256:` and 64 lowercase hex digits, or `sha512:` and 128. These
/// are the algorithms the OCI image specification registers and registries serve (sha256 must,
/// sha512 should); a runtime verifies the content it pulls against them. Other algorithms, such
/// as a `sha384` that some runtimes parse but registries do not serve, are not pins.
pub fn is_digest(digest: &str) -> bool {
    match digest.split_once(':') {
        Some(("sha256", hex)) => hex.len() == 64 && is_lower_hex(hex),
        Some(("sha512", hex)) => hex.len() == 128 && is_lower_hex(hex),
        _ => false,
    }
}

/// Whether an image as written is pinned: it ends in `@` and a digest ([`is_digest`]). This is the
/// one definition that the engine, `/validate` and the ValidatingAdmissionPolicy share; the
/// policy writes it as the regular expression [`PINNED_PATTERN`].
pub fn is_pinned(image: &str) -> bool {
    image.rsplit_once('@').is_some_and(|(_, digest)| is_digest(digest))
}

/// [`is_pinned`] as an RE2 pattern for CEL's `matches` (the ValidatingAdmissionPolicy).
pub const PINNED_PATTERN: &str = "@(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$";

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:780e5567a24c09145d62bd290074dcc5b685893671d1ed7c721de20335e57e75";

    fn full(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_hub_normalisation() {
        assert_eq!(full("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(full("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(full("docker.io/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(full("index.docker.io/library/nginx:1"), "docker.io/library/nginx:1");
        assert_eq!(full("myorg/worker:3.2.1"), "docker.io/myorg/worker:3.2.1");
        let r = Reference::parse("nginx").unwrap();
        assert_eq!(r.api_host(), "index.docker.io");
        assert_eq!(r.tag_or_latest(), "latest");
    }

    #[test]
    fn hosts_ports_and_paths() {
        let r = Reference::parse("registry.local:5000/team/app:1.0").unwrap();
        assert_eq!(r.registry, "registry.local:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        let r = Reference::parse("localhost/app").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("localhost", "app"));
        let r = Reference::parse("127.0.0.1:5000/a/b/c").unwrap();
        assert_eq!(r.api_host(), "127.0.0.1:5000");
        let r = Reference::parse("[::1]:5000/app:v1").unwrap();
        assert_eq!(r.registry, "[::1]:5000");
        assert_eq!(full("ghcr.io/org/app:v1.2.3"), "ghcr.io/org/app:v1.2.3");
        assert_eq!(full("a.io/x__y/z-w.v:T_1"), "a.io/x__y/z-w.v:T_1");
    }

    #[test]
    fn digests() {
        let r = Reference::parse(&format!("alpine@{D}")).unwrap();
        assert!(r.is_pinned() && r.tag.is_none());
        assert_eq!(r.to_string(), format!("docker.io/library/alpine@{D}"));
        let r = Reference::parse(&format!("registry.local:5000/team/app:1.0@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.digest.as_deref(), Some(D));
    }

    /// One definition of pinned: the function, the parser and the policy's pattern agree.
    #[test]
    fn pinned_means_a_sha256_or_sha512_digest() {
        let pattern = regex::Regex::new(PINNED_PATTERN).unwrap();
        let sha512 = format!("sha512:{}", "a".repeat(128));
        let cases = [
            (format!("alpine@{D}"), true),
            (format!("ghcr.io/org/app:v1@{sha512}"), true),
            (format!("registry.local:5000/app:1.0@{D}"), true),
            (format!("app@sha384:{}", "a".repeat(96)), false),
            (format!("app@sha256:{}", "A".repeat(64)), false),
            (format!("app@sha256:{}", "a".repeat(63)), false),
            (format!("app@sha512:{}", "a".repeat(64)), false),
            (format!("app@{D}x"), false),
            (format!("app@{D}@x"), false),
            (format!("app:{D}"), false),
            ("app:v1".to_string(), false),
            (format!("app@foo:{}", "a".repeat(64)), false),
        ];
        for (image, pinned) in cases {
            assert_eq!(is_pinned(&image), pinned, "{image}");
            assert_eq!(pattern.is_match(&image), pinned, "pattern: {image}");
            if let Ok(r) = Reference::parse(&image) {
                assert_eq!(r.is_pinned(), pinned, "parsed: {image}");
            }
        }
        let err = Reference::parse(&format!("app@sha384:{}", "a".repeat(96))).unwrap_err();
        assert_eq!(err.reason, "unsupported digest algorithm: a pin is sha256 or sha512");
    }

    #[test]
    fn rejects_with_reason() {
        for (bad, reason) in [
            ("", "empty reference"),
            ("Nginx", "repository name must be lowercase"),
            ("nginx:", "empty tag"),
            ("nginx:-x", "invalid tag"),
            ("nginx@sha256:abc", "invalid digest: wrong length or not lowercase hex"),
            ("nginx@sha256", "digest must be algorithm:hex"),
            ("ghcr.io//app", "empty path component in repository name"),
            ("ghcr.io/app-", "repository path components must start and end with a letter or digit"),
            ("ghcr.io/a!b", "invalid character in repository name"),
            ("-bad.io/app", "invalid registry host"),
            ("host:99999x/app", "invalid registry port"),
            (" nginx", "leading or trailing whitespace"),
            ("a/b:c:d", "invalid character in repository name"),
        ] {
            let err = Reference::parse(bad).expect_err(bad);
            assert_eq!(err.reason, reason, "{bad}");
        }
        assert!(Reference::parse(&"a".repeat(256)).is_err());
        // 250 characters is a valid name as written, but not once it is docker.io/library/….
        let err = Reference::parse(&format!("{}:v1", "a".repeat(250))).unwrap_err();
        assert_eq!(err.reason, "repository name longer than 255 characters");
        assert!(Reference::parse(&format!("{}:v1", "a".repeat(237))).is_ok());
        assert!(Reference::parse(&format!("nginx:{}", "t".repeat(129))).is_err());
    }

    #[test]
    fn pinned_text_keeps_what_the_user_wrote() {
        let r = Reference::parse("nginx:1.25").unwrap();
        assert_eq!(pin("nginx:1.25", &r, D, true), format!("nginx:1.25@{D}"));
        assert_eq!(pin("nginx:1.25", &r, D, false), format!("nginx@{D}"));
        let r = Reference::parse("redis").unwrap();
        assert_eq!(pin("redis", &r, D, true), format!("redis:latest@{D}"));
        let r = Reference::parse("127.0.0.1:5000/app").unwrap();
        assert_eq!(pin("127.0.0.1:5000/app", &r, D, true), format!("127.0.0.1:5000/app:latest@{D}"));
    }
}
