//! Registry authentication: docker config credentials matched the way the kubelet matches them,
//! `WWW-Authenticate` challenges (bounded), and bearer tokens (bounded, lifetimes clamped) that
//! the client caches per (realm, service, scope, credential).
//!
//! Credential helpers (`credsStore`, `credHelpers`) are never executed: a tenant's secret must not
//! make the webhook run a program.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasher, Hash},
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde::Deserialize;

use super::wire;

/// Username and password (or identity token) for one registry.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}, <redacted>)", self.username)
    }
}

impl Credential {
    /// An opaque per-process identity, so caches keyed by it never mix credentials and never
    /// hold the secret itself.
    pub fn id(&self) -> u64 {
        static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
        KEY.get_or_init(Default::default).hash_one(self) | 1 // 0 is anonymous
    }

    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// Credentials matched to registries, most specific key first.
#[derive(Clone, Debug, Default)]
pub struct Keychain {
    entries: Vec<(KeyPattern, Credential)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct KeyPattern {
    host: String,
    port: Option<String>,
    path: String,
}

/// A parsed docker config: the usable credentials and what was ignored, for warnings.
#[derive(Debug, Default)]
pub struct ParsedConfig {
    pub keychain: Keychain,
    pub warnings: Vec<String>,
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<serde_json::Value>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: Option<serde_json::Value>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

impl Keychain {
    /// Parses `.dockerconfigjson` (`{"auths": …}`) or legacy `.dockercfg` (the map itself).
    pub fn parse(bytes: &[u8]) -> Result<ParsedConfig, String> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let mut warnings = Vec::new();
        let entries: BTreeMap<String, AuthEntry> = if value.get("auths").is_some() {
            let config: DockerConfigJson =
                serde_json::from_value(value).map_err(|e| format!("invalid docker config: {e}"))?;
            if config.creds_store.is_some() || config.cred_helpers.is_some() {
                warnings.push("credsStore/credHelpers ignored: credential helpers are never executed".into());
            }
            config.auths
        } else {
            let mut map = BTreeMap::new();
            for (key, entry) in value.as_object().ok_or("docker config must be a JSON object")? {
                match serde_json::from_value::<AuthEntry>(entry.clone()) {
                    Ok(entry) => {
                        map.insert(key.clone(), entry);
                    }
                    Err(_) if matches!(key.as_str(), "credsStore" | "credHelpers") => {
                        warnings.push("credsStore/credHelpers ignored: credential helpers are never executed".into())
                    }
                    Err(e) => warnings.push(format!("entry {key:?} ignored: {e}")),
                }
            }
            map
        };
        let mut keychain = Keychain::default();
        for (key, entry) in entries {
            match entry.credential() {
                Ok(Some(credential)) => keychain.entries.push((KeyPattern::parse(&key), credential)),
                Ok(None) => {}
                Err(e) => warnings.push(format!("entry {key:?} ignored: {e}")),
            }
        }
        keychain.sort();
        Ok(ParsedConfig { keychain, warnings })
    }

    /// Adds another keychain's entries (pull secrets in pod order, then the service account's).
    pub fn extend(&mut self, other: Keychain) {
        self.entries.extend(other.entries);
        self.sort();
    }

    fn sort(&mut self) {
        // Most specific first, stable so earlier secrets win ties as with the kubelet.
        self.entries.sort_by_key(|(p, _)| std::cmp::Reverse(p.host.len() + p.path.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credential for `registry` (as in the reference, `docker.io` for Docker Hub) and
    /// `repository`, if any key matches.
    pub fn lookup(&self, registry: &str, repository: &str) -> Option<&Credential> {
        let (host, port) = split_host_port(registry);
        self.entries.iter().find(|(p, _)| p.matches(host, port, repository)).map(|(_, c)| c)
    }
}

impl AuthEntry {
    fn credential(&self) -> Result<Option<Credential>, String> {
        if let Some(auth) = self.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| "`auth` is not base64".to_string())?;
            let decoded = String::from_utf8(decoded).map_err(|_| "`auth` is not UTF-8".to_string())?;
            let (username, password) = decoded.split_once(':').ok_or("`auth` is not user:password")?;
            return Ok(Some(Credential { username: username.into(), password: password.into() }));
        }
        if let Some(token) = &self.identity_token {
            return Ok(Some(Credential { username: "<token>".into(), password: token.clone() }));
        }
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => Ok(Some(Credential { username: u.clone(), password: p.clone() })),
            _ => Ok(None),
        }
    }
}

const DOCKER_HUB_KEYS: &[&str] = &["index.docker.io", "docker.io", "registry-1.docker.io", "registry.hub.docker.com"];

impl KeyPattern {
    /// `https://index.docker.io/v1/`, `registry:5000/team`, `*.example.com` …
    fn parse(key: &str) -> Self {
        let key = key.trim();
        let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
        let (host_port, path) = key.split_once('/').unwrap_or((key, ""));
        let (host, port) = split_host_port(host_port);
        let mut path = path.trim_matches('/').to_string();
        let mut host = host.to_ascii_lowercase();
        if DOCKER_HUB_KEYS.contains(&host.as_str()) {
            host = crate::reference::DOCKER_HUB.to_string();
            // `/v1/` and `/v2/` name the API, not a repository prefix.
            if matches!(path.as_str(), "v1" | "v2") {
                path.clear();
            }
        }
        KeyPattern { host, port: port.map(str::to_string), path }
    }

    fn matches(&self, host: &str, port: Option<&str>, repository: &str) -> bool {
        if self.port.as_deref() != port {
            return false;
        }
        let key_parts: Vec<&str> = self.host.split('.').collect();
        let host_parts: Vec<&str> = host.split('.').collect();
        if key_parts.len() != host_parts.len()
            || !key_parts.iter().zip(&host_parts).all(|(k, h)| glob_part(k, &h.to_ascii_lowercase()))
        {
            return false;
        }
        self.path.is_empty() || repository == self.path || repository.starts_with(&format!("{}/", self.path))
    }
}

/// One DNS label against a pattern label where `*` matches any run of bytes. Linear: a key
/// comes from a tenant's secret, so backtracking on many stars must not be exponential.
fn glob_part(pattern: &str, label: &str) -> bool {
    let (p, l) = (pattern.as_bytes(), label.as_bytes());
    let (mut pi, mut li) = (0, 0);
    // The last star seen, and the label position it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while li < l.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, li));
            pi += 1;
        } else if pi < p.len() && p[pi] == l[li] {
            pi += 1;
            li += 1;
        } else if let Some((star_pi, star_li)) = star {
            pi = star_pi + 1;
            li = star_li + 1;
            star = Some((star_pi, star_li + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|b| *b == b'*')
}

fn split_host_port(host_port: &str) -> (&str, Option<&str>) {
    if host_port.starts_with('[') {
        return match host_port.split_once("]:") {
            Some((h, p)) => (&host_port[..h.len() + 1], Some(p)),
            None => (host_port, None),
        };
    }
    match host_port.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (host_port, None),
    }
}

/// A parsed `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String> },
}

impl Challenge {
    pub fn parse(header: &str) -> Option<Self> {
        if header.len() > wire::MAX_CHALLENGE_LEN {
            return None;
        }
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => {
                let params = parse_params(params);
                Some(Challenge::Bearer { realm: params.get("realm")?.clone(), service: params.get("service").cloned() })
            }
            _ => None,
        }
    }
}

/// `key="value", key2=value2` (quoted strings may hold commas).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else { break };
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        out.insert(key, value.to_string());
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// A bearer token and when to stop using it.
#[derive(Clone, Debug)]
pub struct Token {
    pub value: Arc<str>,
    /// Refresh before this instant (ahead of the real expiry, so no request races it).
    pub refresh_at: Instant,
}

/// A token server's answer (distribution's token spec, and OAuth2's `access_token`).
#[derive(Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    /// Seconds; any JSON is accepted and clamped (see [`wire::token_lifetime`]).
    #[serde(default)]
    pub expires_in: Option<serde_json::Value>,
}

impl TokenResponse {
    /// Parses a token server's body (already bounded by the caller) into a token.
    pub fn parse(body: &[u8], now: Instant) -> Result<Token, &'static str> {
        let response: TokenResponse = serde_json::from_slice(body).map_err(|_| "not a JSON token response")?;
        response.into_token(now)
    }

    pub fn into_token(self, now: Instant) -> Result<Token, &'static str> {
        let non_empty = |t: &String| !t.is_empty();
        let value = self.token.filter(non_empty).or(self.access_token.filter(non_empty)).ok_or("no token")?;
        if value.len() > wire::MAX_TOKEN_LEN {
            return Err("the token is longer than 16 KiB");
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token has characters a header cannot carry");
        }
        // Refresh at 80% of the lifetime, at least 1s ahead.
        let lifetime = wire::token_lifetime(self.expires_in.as_ref());
        let ahead = (lifetime / 5).max(Duration::from_secs(1)).min(lifetime);
        let refresh_at = now.checked_add(lifetime.saturating_sub(ahead)).unwrap_or(now);
        Ok(Token { value: value.into(), refresh_at })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub realm: String,
    pub service: String,
    pub scope: String,
    pub credential: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn dockerconfigjson_and_kubelet_matching() {
        let json = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "registry.internal:5000": {{"username": "u", "password": "p"}},
                "registry.internal:5000/team": {{"auth": "{}"}},
                "*.corp.example": {{"auth": "{}"}}
            }}}}"#,
            b64("hub:hubpw"),
            b64("team:teampw"),
            b64("corp:corppw")
        );
        let parsed = Keychain::parse(json.as_bytes()).unwrap();
        assert!(parsed.warnings.is_empty());
        let k = parsed.keychain;
        assert_eq!(k.lookup("docker.io", "library/nginx").unwrap().username, "hub");
        assert_eq!(k.lookup("registry.internal:5000", "team/app").unwrap().username, "team");
        assert_eq!(k.lookup("registry.internal:5000", "teamx/app").unwrap().username, "u");
        assert_eq!(k.lookup("registry.internal:5000", "other").unwrap().username, "u");
        assert!(k.lookup("registry.internal", "team/app").is_none(), "port must match");
        assert_eq!(k.lookup("eu.corp.example", "x").unwrap().username, "corp");
        assert!(k.lookup("a.eu.corp.example", "x").is_none(), "globs match one label");
        assert!(k.lookup("ghcr.io", "org/app").is_none());
    }

    #[test]
    fn legacy_dockercfg() {
        let json = format!(r#"{{"registry.local:5000": {{"auth": "{}", "email": "x@y"}}}}"#, b64("a:b"));
        let k = Keychain::parse(json.as_bytes()).unwrap().keychain;
        assert_eq!(k.lookup("registry.local:5000", "r").unwrap().password, "b");
    }

    #[test]
    fn credential_helpers_are_ignored_with_a_warning() {
        let json = r#"{"auths": {}, "credsStore": "evil", "credHelpers": {"ghcr.io": "evil"}}"#;
        let parsed = Keychain::parse(json.as_bytes()).unwrap();
        assert!(parsed.keychain.is_empty());
        assert_eq!(parsed.warnings, vec!["credsStore/credHelpers ignored: credential helpers are never executed"]);
    }

    #[test]
    fn bad_entries_are_reported_not_fatal() {
        let json = r#"{"auths": {"a.io": {"auth": "!!!"}, "b.io": {"auth": "Yjpj"}}}"#;
        let parsed = Keychain::parse(json.as_bytes()).unwrap();
        assert_eq!(parsed.warnings.len(), 1);
        assert!(parsed.keychain.lookup("b.io", "x").is_some());
        assert!(Keychain::parse(b"not json").is_err());
    }

    #[test]
    fn credential_ids_differ_and_debug_redacts() {
        let a = Credential { username: "u".into(), password: "p1".into() };
        let b = Credential { username: "u".into(), password: "p2".into() };
        assert_ne!(a.id(), b.id());
        assert_ne!(a.id(), 0);
        assert!(!format!("{a:?}").contains("p1"));
    }

    #[test]
    fn label_globs() {
        for (pattern, label, want) in [
            ("*", "eu", true),
            ("e*", "eu", true),
            ("*u", "eu", true),
            ("e*u", "eu", true),
            ("e*x", "eu", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("**", "", true),
            ("x", "", false),
            ("*.", "\u{c8}", false),
        ] {
            assert_eq!(glob_part(pattern, label), want, "{pattern} ~ {label}");
        }
        // Many stars against a long label answer at once (the old matcher took hours).
        let pattern = "*a".repeat(12) + "*b";
        assert!(!glob_part(&pattern, &"a".repeat(60)));
    }

    #[test]
    fn challenges() {
        assert_eq!(
            Challenge::parse(r#"Bearer realm="https://auth.io/token",service="registry.io",scope="repository:a:pull""#),
            Some(Challenge::Bearer { realm: "https://auth.io/token".into(), service: Some("registry.io".into()) })
        );
        assert_eq!(Challenge::parse(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(Challenge::parse("Bearer service=x"), None);
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    #[test]
    fn tokens_refresh_ahead_of_expiry() {
        let now = Instant::now();
        let t = TokenResponse::parse(br#"{"token":"t","expires_in":300}"#, now).unwrap();
        assert_eq!(t.refresh_at - now, Duration::from_secs(240));
        let t = TokenResponse::parse(br#"{"token":"","access_token":"a"}"#, now).unwrap();
        assert_eq!(&*t.value, "a");
        assert_eq!(t.refresh_at - now, Duration::from_secs(48));
        assert!(TokenResponse::parse(br#"{"expires_in":5}"#, now).is_err());
        assert!(TokenResponse::parse(b"[]", now).is_err());
    }

    #[test]
    fn hostile_token_responses_are_bounded() {
        let now = Instant::now();
        let t = TokenResponse::parse(br#"{"token":"t","expires_in":18446744073709551615}"#, now).unwrap();
        assert_eq!(t.refresh_at - now, wire::MAX_TOKEN_LIFETIME * 4 / 5);
        for expires_in in ["0", "-1", "1e308", "\"x\"", "1.5"] {
            let body = format!(r#"{{"token":"t","expires_in":{expires_in}}}"#);
            let t = TokenResponse::parse(body.as_bytes(), now).unwrap();
            assert!(t.refresh_at >= now && t.refresh_at - now <= wire::MAX_TOKEN_LIFETIME, "{expires_in}");
        }
        let long = format!(r#"{{"token":"{}"}}"#, "a".repeat(wire::MAX_TOKEN_LEN + 1));
        assert!(TokenResponse::parse(long.as_bytes(), now).is_err());
        assert!(TokenResponse::parse(br#"{"token":"a\r\nX-Injected: 1"}"#, now).is_err());
    }

    #[test]
    fn long_challenges_are_refused() {
        let realm = format!("https://auth.io/{}", "a".repeat(wire::MAX_CHALLENGE_LEN));
        assert_eq!(Challenge::parse(&format!("Bearer realm=\"{realm}\"")), None);
    }
}
