//! Everything the registry client parses from a registry, on arbitrary bytes: never panics, and
//! what it accepts stays within the client's limits.
//!
//! Input: one selector byte, then the value. Selectors: 0 `WWW-Authenticate`, 1 token JSON,
//! 2 manifest or index (checked, then read as pre-pull detection reads it), 3 error body,
//! 4 `Retry-After`, 5 `Docker-Content-Digest`, 6 `Content-Type`. Seeds: fuzz/seeds/registry
//! (see its README).
#![no_main]

use std::time::{Instant, SystemTime};

use layerlink::{
    config::Platform,
    prepull::detect::pick_platform,
    registry::{
        auth::{Challenge, TokenResponse},
        wire,
    },
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, value)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(value);
    match selector % 7 {
        0 => {
            if let Some(Challenge::Bearer { realm, service }) = Challenge::parse(&text) {
                assert!(realm.len() + service.map_or(0, |s| s.len()) <= wire::MAX_CHALLENGE_LEN);
            }
        }
        1 => {
            let now = Instant::now();
            if let Ok(token) = TokenResponse::parse(value, now) {
                assert!(token.value.len() <= wire::MAX_TOKEN_LEN);
                assert!(token.value.bytes().all(|b| b.is_ascii_graphic()));
                assert!(token.refresh_at.saturating_duration_since(now) <= wire::MAX_TOKEN_LIFETIME);
            }
        }
        2 => {
            if wire::check_manifest(value).is_ok() {
                let json: Value = serde_json::from_slice(value).expect("a checked manifest is JSON");
                if let Some(entries) = json.get("manifests").and_then(Value::as_array)
                    && let Some(digest) = pick_platform(entries, &Platform::default())
                {
                    assert!(wire::is_digest(&digest), "{digest}");
                }
            }
        }
        3 => {
            let codes = wire::error_codes(value);
            assert!(codes.len() <= 4);
            let described = wire::describe(reqwest::StatusCode::NOT_FOUND, &codes);
            assert!(described.bytes().all(|b| b.is_ascii_graphic() || b == b' '), "{described}");
            assert!(wire::excerpt(value).chars().all(|c| !c.is_control()));
        }
        4 => {
            let wait = wire::retry_after(&text, SystemTime::now());
            assert!((wire::MIN_RETRY_AFTER..=wire::MAX_RETRY_AFTER).contains(&wait));
            assert!(Instant::now().checked_add(wait).is_some());
        }
        5 => {
            if let Ok(digest) = wire::parse_digest(&text) {
                assert_eq!(digest.len(), "sha256:".len() + 64);
                assert!(wire::is_digest(&digest), "{digest}");
            }
        }
        _ => {
            if let Some(media_type) = wire::media_type(value) {
                assert!(media_type.len() <= wire::MAX_MEDIA_TYPE_LEN);
            }
            let cleaned = wire::clean(&text);
            assert!(cleaned.chars().count() <= 256 && !cleaned.chars().any(char::is_control));
        }
    }
});
