//! What the registry client accepts from a registry's wire: the limits on every value, and pure
//! parsers for what is read from a response (digests, `Retry-After`, error bodies, media types,
//! manifests). A registry is not trusted: any value out of bounds is refused or clamped here,
//! and nothing free-form it says is passed on to a tenant.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde_json::Value;

/// A manifest or index body (containerd's limit).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// A token server's answer.
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 1 << 20;
/// An error body: read this much for its error codes, then stop reading and drop the connection.
pub const MAX_ERROR_BYTES: usize = 64 << 10;
/// A bearer token (it travels in a request header; real ones are a few KiB).
pub const MAX_TOKEN_LEN: usize = 16 << 10;
/// A `WWW-Authenticate` header.
pub const MAX_CHALLENGE_LEN: usize = 4 << 10;
/// A `Location` header.
pub const MAX_LOCATION_LEN: usize = 4 << 10;
/// A `Content-Type` header.
pub const MAX_MEDIA_TYPE_LEN: usize = 256;
/// Redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;
/// `Retry-After` is clamped to this range; without one (or an unreadable one), the default.
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// A token's `expires_in` is clamped to this range; without one, the default (the spec's).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Characters of a host name or cause shown in an error.
const MAX_SHOWN: usize = 255;

/// Distribution's error codes (its `errcode` and `v2` packages): the only words of an error
/// body that are passed on.
const ERROR_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DENIED",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "MANIFEST_UNVERIFIED",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "PAGINATION_NUMBER_INVALID",
    "RANGE_INVALID",
    "SIZE_INVALID",
    "TAG_INVALID",
    "TOOMANYREQUESTS",
    "UNAUTHORIZED",
    "UNAVAILABLE",
    "UNKNOWN",
    "UNSUPPORTED",
];

/// Text safe to show anywhere: control characters escaped, at most 255 characters.
pub fn clean(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_SHOWN {
            out.push('…');
            break;
        }
        if c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The start of a body for the operator's log: at most 200 bytes, escaped.
pub fn excerpt(body: &[u8]) -> String {
    let head = &body[..body.len().min(200)];
    let text: String = String::from_utf8_lossy(head).chars().flat_map(char::escape_default).collect();
    if body.len() > head.len() { format!("{text}…") } else { text }
}

/// A `Docker-Content-Digest` value: `sha256:` and 64 hex digits (lower-cased). Anything else is
/// refused: a digest that is not exactly a sha256 digest is never stored.
pub fn parse_digest(value: &str) -> Result<String, &'static str> {
    let hex = value.trim().strip_prefix("sha256:").ok_or("not a sha256 digest")?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("a sha256 digest is 64 hex digits");
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// A descriptor's digest (OCI grammar: `algorithm:encoded`, sha256 and sha512 checked for length).
pub fn is_digest(value: &str) -> bool {
    let Some((algorithm, encoded)) = value.split_once(':') else { return false };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm
            .split(['+', '.', '_', '-'])
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    let lower_hex =
        |n: usize| encoded.len() == n && encoded.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let encoded_ok = match algorithm {
        "sha256" => lower_hex(64),
        "sha512" => lower_hex(128),
        _ => {
            !encoded.is_empty()
                && encoded.len() <= 1024
                && encoded.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
        }
    };
    algorithm_ok && algorithm.len() <= 64 && encoded_ok
}

/// A tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`) or a sha256 digest: what may follow
/// `/manifests/` in a URL we build.
pub fn is_tag_or_digest(value: &str) -> bool {
    if value.starts_with("sha256:") {
        return is_digest(value);
    }
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// How long a `Retry-After` (seconds or an HTTP date) closes a registry, clamped to
/// [`MIN_RETRY_AFTER`, `MAX_RETRY_AFTER`]; [`DEFAULT_RETRY_AFTER`] if it cannot be read.
pub fn retry_after(value: &str, now: SystemTime) -> Duration {
    let value = value.trim();
    let wait = if value.len() > 64 {
        None
    } else if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is still "a very long time".
        Some(value.parse::<u64>().map_or(Duration::MAX, Duration::from_secs))
    } else {
        httpdate::parse_http_date(value).ok().map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
    };
    wait.map_or(DEFAULT_RETRY_AFTER, |w| w.clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER))
}

/// A token's lifetime from its `expires_in` (any JSON), clamped to [1 s, `MAX_TOKEN_LIFETIME`].
pub fn token_lifetime(expires_in: Option<&Value>) -> Duration {
    let secs = match expires_in {
        None | Some(Value::Null) => return DEFAULT_TOKEN_LIFETIME,
        Some(v) => v.as_u64().or_else(|| v.as_f64().map(|f| if f.is_finite() && f > 1.0 { f as u64 } else { 1 })),
    };
    secs.map_or(DEFAULT_TOKEN_LIFETIME, |s| Duration::from_secs(s).clamp(Duration::from_secs(1), MAX_TOKEN_LIFETIME))
}

/// The distribution error codes of an error body, from the closed set, each once, at most four.
pub fn error_codes(body: &[u8]) -> Vec<&'static str> {
    let Ok(value) = serde_json::from_slice::<Value>(body) else { return Vec::new() };
    let mut codes = Vec::new();
    let entries = value.get("errors").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    for entry in entries.iter().take(16) {
        let known = entry.get("code").and_then(Value::as_str).and_then(|c| ERROR_CODES.iter().find(|k| **k == c));
        if let Some(code) = known
            && !codes.contains(code)
            && codes.len() < 4
        {
            codes.push(*code);
        }
    }
    codes
}

/// `404 Not Found` and the error codes, if any: all a tenant is told of a registry's answer.
pub fn describe(status: StatusCode, codes: &[&str]) -> String {
    let status = match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    };
    if codes.is_empty() { status } else { format!("{status}: {}", codes.join(", ")) }
}

/// A `Content-Type` value if it is a plausible media type (bounded, no odd characters).
pub fn media_type(value: &[u8]) -> Option<String> {
    let ok = value.len() <= MAX_MEDIA_TYPE_LEN && value.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
    ok.then(|| String::from_utf8_lossy(value).into_owned())
}

/// The shape every manifest or index must have before anyone reads it: a JSON object whose
/// descriptors (`config`, `layers[]`, `manifests[]`) carry well-formed digests and sizes.
pub fn check_manifest(body: &[u8]) -> Result<(), &'static str> {
    let value: Value = serde_json::from_slice(body).map_err(|_| "the manifest is not JSON")?;
    let object = value.as_object().ok_or("the manifest is not a JSON object")?;
    let check = |descriptor: &Value| -> Result<(), &'static str> {
        let digest = descriptor.get("digest").and_then(Value::as_str).ok_or("a descriptor has no digest")?;
        if !is_digest(digest) {
            return Err("a descriptor has a malformed digest");
        }
        match descriptor.get("size") {
            None => Ok(()),
            Some(size) if size.is_u64() => Ok(()),
            Some(_) => Err("a descriptor has a size that is not a non-negative integer"),
        }
    };
    if let Some(config) = object.get("config") {
        check(config)?;
    }
    for key in ["layers", "manifests"] {
        if let Some(list) = object.get(key) {
            list.as_array().ok_or("layers or manifests is not a list")?.iter().try_for_each(check)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let hex = "a".repeat(64);
        assert_eq!(parse_digest(&format!("sha256:{hex}")).unwrap(), format!("sha256:{hex}"));
        assert_eq!(parse_digest(&format!(" sha256:{} ", "A".repeat(64))).unwrap(), format!("sha256:{hex}"));
        for bad in [
            format!("sha256:{hex}a"),
            format!("sha256:{}", &hex[1..]),
            format!("sha512:{hex}{hex}"),
            "sha256:".into(),
            format!("sha256:{}g", &hex[1..]),
        ] {
            assert!(parse_digest(&bad).is_err(), "{bad}");
        }
        assert!(is_digest(&format!("sha256:{hex}")));
        assert!(is_digest(&format!("sha512:{hex}{hex}")));
        assert!(is_digest("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8"));
        assert!(!is_digest(&format!("sha256:{hex}0")));
        assert!(!is_digest(&format!("sha256:{}", "A".repeat(64))));
        assert!(!is_digest("sha256"));
        assert!(!is_digest(":abc"));
        assert!(!is_digest("x:../../etc"));
        assert!(is_tag_or_digest("v1.2.3") && is_tag_or_digest("_x") && is_tag_or_digest(&format!("sha256:{hex}")));
        assert!(
            !is_tag_or_digest("../x")
                && !is_tag_or_digest("a?b")
                && !is_tag_or_digest("")
                && !is_tag_or_digest(&"a".repeat(129))
        );
        assert!(!is_tag_or_digest(&format!("sha512:{hex}{hex}")));
    }

    #[test]
    fn retry_after_is_clamped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after("30", now), Duration::from_secs(30));
        assert_eq!(retry_after("0", now), MIN_RETRY_AFTER);
        assert_eq!(retry_after("18446744073709551615", now), MAX_RETRY_AFTER);
        assert_eq!(retry_after("99999999999999999999999999", now), MAX_RETRY_AFTER);
        assert_eq!(retry_after("-5", now), DEFAULT_RETRY_AFTER);
        assert_eq!(retry_after("soon", now), DEFAULT_RETRY_AFTER);
        assert_eq!(retry_after(&"9".repeat(100), now), DEFAULT_RETRY_AFTER);
        let in_two_minutes = httpdate::fmt_http_date(now + Duration::from_secs(120));
        assert_eq!(retry_after(&in_two_minutes, now), Duration::from_secs(120));
        assert_eq!(retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now), MAX_RETRY_AFTER);
        assert_eq!(retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now), MIN_RETRY_AFTER);
    }

    #[test]
    fn token_lifetimes_are_clamped() {
        let life = |json: &str| token_lifetime(Some(&serde_json::from_str(json).unwrap()));
        assert_eq!(token_lifetime(None), DEFAULT_TOKEN_LIFETIME);
        assert_eq!(life("300"), Duration::from_secs(300));
        assert_eq!(life("18446744073709551615"), MAX_TOKEN_LIFETIME);
        assert_eq!(life("1e300"), MAX_TOKEN_LIFETIME);
        assert_eq!(life("0"), Duration::from_secs(1));
        assert_eq!(life("-7"), Duration::from_secs(1));
        assert_eq!(life("\"300\""), DEFAULT_TOKEN_LIFETIME);
        assert_eq!(life("null"), DEFAULT_TOKEN_LIFETIME);
    }

    #[test]
    fn only_known_error_codes_are_kept() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"secret \u001b[31m text","detail":{"Tag":"x"}},
            {"code":"NAME_UNKNOWN"},{"code":"MANIFEST_UNKNOWN"},{"code":"EVIL\nCODE"},{"code":7}]}"#;
        assert_eq!(error_codes(body), vec!["MANIFEST_UNKNOWN", "NAME_UNKNOWN"]);
        assert!(error_codes(b"plain text").is_empty());
        assert!(error_codes(b"").is_empty());
        assert_eq!(describe(StatusCode::NOT_FOUND, &["NAME_UNKNOWN"]), "404 Not Found: NAME_UNKNOWN");
        assert_eq!(describe(StatusCode::from_u16(599).unwrap(), &[]), "599");
    }

    #[test]
    fn text_is_cleaned_and_bounded() {
        assert_eq!(clean("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(clean(&"x".repeat(1000)).chars().count(), 256);
        assert_eq!(excerpt(b"ok\r\n"), "ok\\r\\n");
        assert!(excerpt(&[b'a'; 1000]).len() < 210);
        assert_eq!(media_type(b"application/json; charset=utf-8").as_deref(), Some("application/json; charset=utf-8"));
        assert_eq!(media_type(&[b'a'; 257]), None);
        assert_eq!(media_type(b"a\x1bb"), None);
    }

    #[test]
    fn manifests_are_checked_for_shape() {
        let hex = "b".repeat(64);
        let good = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"sha256:{hex}","size":1}},"layers":[{{"digest":"sha256:{hex}","size":2}}]}}"#
        );
        assert_eq!(check_manifest(good.as_bytes()), Ok(()));
        let index = format!(r#"{{"manifests":[{{"digest":"sha256:{hex}","platform":{{"os":"linux"}}}}]}}"#);
        assert_eq!(check_manifest(index.as_bytes()), Ok(()));
        assert!(check_manifest(br#"{"manifests":[{"digest":"sha256:../../x"}]}"#).is_err());
        assert!(check_manifest(format!(r#"{{"layers":[{{"digest":"sha256:{hex}","size":-1}}]}}"#).as_bytes()).is_err());
        assert!(check_manifest(br#"{"layers":{}}"#).is_err());
        assert!(check_manifest(b"[]").is_err());
        assert!(check_manifest(b"\xff").is_err());
    }
}
