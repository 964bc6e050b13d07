//! Sticky pins in a review: a controller's new pod gets the digests its revision's siblings run.
//!
//! On a Pod CREATE (enforce and audit; a dry run reads but remembers nothing) the handler asks
//! the siblings source for what the pod's revision keeps, within a small part of the review's
//! budget: a lookup that fails or is slow is counted and the pod resolves as it would without
//! sticky pins. Kept sites are pinned with the kept digest; the rest go through the engine, and
//! what it chose is remembered for the revision. A kept digest that differs from what the tag
//! now points at (as far as the digest cache knows; never a registry request on this path) is
//! said in a warning, a log line and `layerlink_pins_behind`, and a background lookup refreshes
//! the cache so the next pod knows. The pure decisions are in `crate::pins`.

use std::{collections::HashSet, sync::Arc, time::Instant};

use super::review::AdmissionRequest;
use crate::{
    Engine, Error,
    engine::{Deadline, Pin, Plan},
    metrics::{ResultLabels, SourceLabels},
    pins::{self, Behind, Kept, Revision},
    policy::Mode,
    reference::{self, Reference},
    registry::auth::Keychain,
    resolve::cache::{Key, Lookup},
    sites::{Shape, Site},
};

/// Where a revision's kept digests come from: the API server (`cluster::siblings`) in `serve`.
#[async_trait::async_trait]
pub trait SiblingSource: Send + Sync {
    /// What the revision's admitted pods keep.
    async fn kept(&self, revision: &Revision) -> Result<Arc<Kept>, Error>;
    /// Records what this replica chose for the revision's new pod.
    async fn remember(&self, revision: &Revision, chosen: &Kept);
}

/// Whether a review takes the sticky path: a Pod's creation in enforce or audit mode.
pub fn applies(sticky: bool, mode: Mode, operation: &str, shape: Shape) -> bool {
    sticky && mode != Mode::Validate && operation == "CREATE" && shape == Shape::Pod
}

/// The sticky state of one review, from the lookup to the answer.
pub struct Sticky {
    pub revision: Revision,
    kept: Arc<Kept>,
    /// Sites pinned by a kept digest, with the digest.
    pinned: Vec<(Site, Arc<str>)>,
    /// Names the digest cache answered fresh before planning (their source is `cache`).
    fresh: HashSet<Arc<str>>,
}

impl Sticky {
    /// Looks the revision up within a part of what is left of the budget, and counts the result.
    pub async fn lookup(engine: &Engine, source: &dyn SiblingSource, revision: Revision, deadline: Deadline) -> Self {
        let budget = pins::lookup_budget(deadline.at.saturating_duration_since(Instant::now()));
        let outcome = tokio::time::timeout(budget, source.kept(&revision)).await;
        let (kept, result) = match outcome {
            Ok(Ok(kept)) => {
                let result = if kept.is_empty() { "empty" } else { "found" };
                (kept, result)
            }
            Ok(Err(error)) => {
                tracing::warn!(owner = %revision.owner(), %error, "sibling lookup failed; resolving as usual");
                (Arc::default(), "error")
            }
            Err(_) => {
                tracing::warn!(owner = %revision.owner(), budget_ms = budget.as_millis() as u64, "sibling lookup too slow; resolving as usual");
                (Arc::default(), "timeout")
            }
        };
        engine.metrics.sibling_lookups.get_or_create(&ResultLabels { result }).inc();
        Sticky { revision, kept, pinned: Vec::new(), fresh: HashSet::new() }
    }

    /// Takes the sites a kept digest pins out of `sites` (an excluded or unparsable image stays
    /// with the engine, which says why), and notes which of the rest the cache answers now.
    pub fn split(&mut self, engine: &Engine, sites: Vec<Site>, keychain: &Keychain) -> Vec<Site> {
        let (kept, mut rest) = self.kept.pin_sites(sites);
        for (site, digest) in kept {
            match Reference::parse(&site.image) {
                Ok(r) if !engine.is_excluded(&site.image, &r) => self.pinned.push((site, digest)),
                _ => rest.push(site),
            }
        }
        for site in &rest {
            if let Ok(r) = Reference::parse(&site.image)
                && !r.is_pinned()
                && let (key, Lookup::Fresh(_)) = cache_lookup(engine, &r, keychain)
            {
                self.fresh.insert(key.name);
            }
        }
        rest
    }

    /// Adds the kept pins to the engine's plan (in site order), counts every pin by source,
    /// remembers what the engine chose, and returns the warnings for pins behind their tags.
    pub async fn finish(
        self,
        engine: &Engine,
        source: &dyn SiblingSource,
        request: &AdmissionRequest,
        mode: Mode,
        plan: &mut Plan,
        keychain: &Arc<Keychain>,
    ) -> Vec<String> {
        let count = |source: &'static str| engine.metrics.pins.get_or_create(&SourceLabels { source }).inc();
        let mut chosen = Kept::default();
        for pin in &plan.pins {
            let name = Reference::parse(&pin.site.image).map(|r| r.to_string()).unwrap_or_default();
            count(pins::source(pin.stale.is_some(), self.fresh.contains(name.as_str())));
            chosen.keep(&pin.site.container, &pin.site.image, &pin.digest);
        }
        let mut behind = Vec::new();
        for (site, digest) in self.pinned {
            count("sibling");
            let Ok(r) = Reference::parse(&site.image) else { continue };
            if let Some(b) = check_tag(engine, &r, &site, &digest, keychain) {
                behind.push(b);
            }
            let pinned = reference::pin(&site.image, &r, &digest, engine.config.resolve.keep_tag);
            plan.pins.push(Pin { site, pinned, digest, stale: None });
        }
        sort_by_site(plan);
        if mode == Mode::Enforce && !request.is_dry_run() {
            source.remember(&self.revision, &chosen).await;
        }
        if !behind.is_empty() {
            engine.metrics.pins_behind.inc_by(behind.len() as u64);
        }
        let owner = self.revision.owner();
        let kept = plan.pins.iter().filter(|p| p.stale.is_none()).count();
        tracing::info!(
            uid = %request.uid,
            object = %request.object_ref(),
            owner = %owner,
            revision_pins = kept,
            behind = %behind.iter().map(|b| b.log()).collect::<Vec<_>>().join(", "),
            "sticky pins"
        );
        behind.iter().map(|b| b.warning(&owner)).collect()
    }
}

/// Compares a kept digest with what the cache says the tag is now; when the cache has nothing
/// fresh, refreshes it in the background (the next pod knows; this one is not delayed).
fn check_tag(engine: &Engine, r: &Reference, site: &Site, kept: &str, keychain: &Arc<Keychain>) -> Option<Behind> {
    let (_, lookup) = cache_lookup(engine, r, keychain);
    let now = match lookup {
        Lookup::Fresh(now) => Some(now),
        Lookup::Stale(now, _) => {
            revalidate(engine, r, keychain);
            Some(now)
        }
        Lookup::Miss => {
            revalidate(engine, r, keychain);
            None
        }
        Lookup::Negative(_) => None,
    };
    pins::behind(&site.container, &site.image, kept, now.as_deref())
}

fn cache_lookup(engine: &Engine, r: &Reference, keychain: &Keychain) -> (Key, Lookup) {
    let key = Key { name: r.to_string().into(), credential: engine.resolver.registries().credential_id(r, keychain) };
    let lookup = engine.resolver.cache().lookup(&key);
    (key, lookup)
}

fn revalidate(engine: &Engine, r: &Reference, keychain: &Arc<Keychain>) {
    let (resolver, r, keychain) = (engine.resolver.clone(), r.clone(), keychain.clone());
    let deadline = Deadline::after(engine.config.resolve.request_timeout);
    tokio::spawn(async move {
        let _ = resolver.resolve(&r, &keychain, deadline).await;
    });
}

/// Pins in the order their sites appear in the pod (a kept pin was appended last).
fn sort_by_site(plan: &mut Plan) {
    plan.pins.sort_by_key(|p| site_order(&p.site.pointer));
}

/// (`initContainers` before `containers` before others, index) from a site's JSON pointer.
fn site_order(pointer: &str) -> (u8, usize, String) {
    let mut parts = pointer.rsplit('/');
    let _field = parts.next();
    let index = parts.next().and_then(|i| i.parse().ok()).unwrap_or(usize::MAX);
    let list = parts.next().unwrap_or("");
    let rank = match list {
        "initContainers" => 0,
        "containers" => 1,
        _ => 2,
    };
    (rank, index, pointer.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pods_creation_outside_validate_is_sticky() {
        assert!(applies(true, Mode::Enforce, "CREATE", Shape::Pod));
        assert!(applies(true, Mode::Audit, "CREATE", Shape::Pod));
        assert!(!applies(false, Mode::Enforce, "CREATE", Shape::Pod));
        assert!(!applies(true, Mode::Validate, "CREATE", Shape::Pod));
        assert!(!applies(true, Mode::Enforce, "UPDATE", Shape::Pod));
        assert!(!applies(true, Mode::Enforce, "CREATE", Shape::EphemeralContainers));
    }

    #[test]
    fn sites_sort_by_list_then_index() {
        let mut pointers = ["/spec/containers/10/image", "/spec/containers/2/image", "/spec/initContainers/0/image"];
        pointers.sort_by_key(|p| site_order(p));
        assert_eq!(pointers, ["/spec/initContainers/0/image", "/spec/containers/2/image", "/spec/containers/10/image"]);
    }
}
