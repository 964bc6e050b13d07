//! The resolution engine shared by every front end: sites → resolve → plan, and the plan as a
//! JSON Patch. The webhook, `layerlink mutate` and `layerlink audit` all call `Engine::plan`.
//!
//! One object (one review) is bounded: at most [`MAX_IMAGES`] image fields are pinned and at most
//! [`MAX_LOOKUPS`] registry lookups started for it; what is over is reported as a problem that
//! says so, never dropped silently.

use std::{collections::HashMap, sync::Arc, time::Duration};

use globset::GlobSet;

use crate::{
    Config, Error,
    metrics::Metrics,
    prepull::Prepull,
    reference::{self, Reference},
    registry::auth::Keychain,
    resolve::{Allowance, Resolved, Resolver},
    sites::Site,
};

/// Image fields of one object that are pinned; the rest get one problem that counts them. A pod
/// has a few dozen containers at most.
pub const MAX_IMAGES: usize = 256;
/// Registry lookups one object may start (cache hits and lookups already running are free).
pub const MAX_LOOKUPS: usize = 64;

pub use crate::{
    plan::{Pin, Plan, Problem},
    resolve::Deadline,
};

pub struct Engine {
    pub config: Arc<Config>,
    pub resolver: Arc<Resolver>,
    pub metrics: Arc<Metrics>,
    /// Shared-base detection and injection; its caches live for the life of the engine.
    pub prepull: Prepull,
    excluded_images: GlobSet,
}

impl Engine {
    pub fn new(config: Config) -> Result<Self, Error> {
        let metrics = Arc::new(Metrics::new(&config));
        let excluded_images = crate::config::glob_set(&config.exclude.images)
            .map_err(|e| Error::Config(format!("exclude.images: {e}")))?;
        let resolver = Resolver::new(&config, metrics.clone())?;
        let prepull = Prepull::new(&config, resolver.clone());
        Ok(Engine { config: Arc::new(config), resolver, metrics, prepull, excluded_images })
    }

    /// Deadline for a review: the config budget, capped by the API server's timeout less a margin.
    pub fn deadline(&self, api_timeout: Option<Duration>) -> Deadline {
        let budget = match api_timeout {
            Some(t) => self.config.resolve.budget.min(t.saturating_sub(self.config.resolve.margin)),
            None => self.config.resolve.budget,
        };
        Deadline::after(budget)
    }

    /// Resolves every unpinned, non-excluded image of `sites` by `deadline`.
    pub async fn plan(&self, sites: Vec<Site>, keychain: &Arc<Keychain>, deadline: Deadline) -> Plan {
        let mut plan = Plan::default();
        // Each site with its reference and fully qualified name, computed once: the name is the
        // cache key and what exclusion globs match.
        let mut wanted: Vec<(Site, Reference, Arc<str>)> = Vec::new();
        for site in sites {
            match Reference::parse(&site.image) {
                Err(e) => plan.problems.push(Problem { site, reason: e.to_string(), cause: "invalid_reference" }),
                Ok(r) if r.is_pinned() => plan.already_pinned += 1,
                Ok(r) => {
                    let name: Arc<str> = r.to_string().into();
                    if self.is_excluded_name(&site.image, &name) {
                        plan.excluded += 1;
                    } else {
                        wanted.push((site, r, name));
                    }
                }
            }
        }
        if wanted.len() > MAX_IMAGES {
            let over = wanted.split_off(MAX_IMAGES);
            let reason = Error::OverLimit(format!(
                "this object has {} images to pin, more than the {MAX_IMAGES} one review pins; this one and {} after it \
                 are left as written",
                MAX_IMAGES + over.len(),
                over.len() - 1
            ));
            let site = over.into_iter().next().expect("over the limit").0;
            plan.problems.push(Problem { site, reason: reason.to_string(), cause: reason.metric_label() });
        }
        let allowance = Allowance::new(MAX_LOOKUPS);
        let mut unique: Vec<(&Reference, &Arc<str>)> = wanted.iter().map(|(_, r, n)| (r, n)).collect();
        unique.sort_unstable_by(|a, b| a.1.cmp(b.1));
        unique.dedup_by(|a, b| a.1 == b.1);
        let lookups =
            unique.iter().map(|(r, n)| self.resolver.resolve_named(r, Arc::clone(n), keychain, deadline, &allowance));
        let results: HashMap<&str, Result<Resolved, Arc<Error>>> =
            unique.iter().map(|(_, n)| &***n).zip(futures::future::join_all(lookups).await).collect();
        for (site, reference, name) in &wanted {
            match &results[&**name] {
                Ok(resolved) => plan.pins.push(Pin {
                    pinned: reference::pin(&site.image, reference, &resolved.digest, self.config.resolve.keep_tag),
                    digest: resolved.digest.clone(),
                    stale: resolved.stale.clone(),
                    site: site.clone(),
                }),
                Err(error) => plan.problems.push(Problem {
                    site: site.clone(),
                    reason: error.to_string(),
                    cause: error.metric_label(),
                }),
            }
        }
        plan
    }

    /// Whether `exclude.images` matches the image as written or fully qualified.
    pub fn is_excluded(&self, written: &str, reference: &Reference) -> bool {
        !self.excluded_images.is_empty() && self.is_excluded_name(written, &reference.to_string())
    }

    fn is_excluded_name(&self, written: &str, name: &str) -> bool {
        !self.excluded_images.is_empty()
            && (self.excluded_images.is_match(written) || self.excluded_images.is_match(name))
    }
}
