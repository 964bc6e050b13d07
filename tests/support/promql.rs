//! Reading names out of the PromQL the shipped alerts and dashboard use. Its own module (not in
//! `support/mod.rs`) so a test that needs only this does not build the registry harness.
#![allow(dead_code)]

use std::collections::BTreeSet;

/// `layerlink_*` metric names in a PromQL expression.
pub fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("layerlink_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        found.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    found
}

/// Label names in a PromQL expression: `by (…)` groupings and `{…}` matchers.
pub fn labels_in(expr: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (open, close) in [("by (", ')'), ("{", '}')] {
        let mut rest = expr;
        while let Some(at) = rest.find(open) {
            let inside = &rest[at + open.len()..];
            let end = inside.find(close).unwrap_or(inside.len());
            for item in inside[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
            rest = &inside[end..];
        }
    }
    found
}
