//! `Reference::parse` on arbitrary input never panics, and what it accepts round-trips:
//! the fully qualified Display re-parses to the same reference (with the implied `:latest`),
//! and the pinned form of what was written parses as pinned to the same repository.
#![no_main]

use layerlink::reference::{self, Reference};
use libfuzzer_sys::fuzz_target;

const DIGEST: &str = "sha256:780e5567a24c09145d62bd290074dcc5b685893671d1ed7c721de20335e57e75";

fuzz_target!(|data: &[u8]| {
    match std::str::from_utf8(data) {
        Ok(text) => check(text),
        Err(_) => check(&String::from_utf8_lossy(data)),
    }
});

fn check(text: &str) {
    let Ok(parsed) = Reference::parse(text) else { return };
    let shown = parsed.to_string();
    let again =
        Reference::parse(&shown).unwrap_or_else(|e| panic!("{text:?} parses but its Display {shown:?} does not: {e}"));
    let mut expected = parsed.clone();
    if expected.tag.is_none() && expected.digest.is_none() {
        expected.tag = Some("latest".into());
    }
    assert_eq!(again, expected, "{text:?} → {shown:?} re-parses to another reference");
    assert_eq!(again.to_string(), shown, "Display is not a fixed point for {text:?}");

    if parsed.is_pinned() {
        return;
    }
    for keep_tag in [true, false] {
        let pinned = reference::pin(text, &parsed, DIGEST, keep_tag);
        let p = Reference::parse(&pinned)
            .unwrap_or_else(|e| panic!("pin({text:?}, keep_tag={keep_tag}) = {pinned:?} does not parse: {e}"));
        assert!(p.is_pinned(), "{pinned:?}");
        assert_eq!(p.digest.as_deref(), Some(DIGEST), "{pinned:?}");
        assert_eq!((&p.registry, &p.repository), (&parsed.registry, &parsed.repository), "{pinned:?}");
        let tag = if keep_tag { Some(parsed.tag_or_latest()) } else { None };
        assert_eq!(p.tag.as_deref(), tag, "{pinned:?}");
    }
}
