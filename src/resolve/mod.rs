//! Resolution: unique references → digests, in parallel, inside a deadline, through the cache.
//!
//! Each registry lookup runs as its own task, shared by every review that wants the same key
//! (single-flight). A review that gives up at its deadline does not cancel the lookup: the late
//! answer still fills the cache for the next pod. What keeps those lookups bounded:
//!
//! - **in number**: at most [`MAX_LOOKUPS_IN_FLIGHT`] run at once in the process, and a review
//!   starts at most as many as its [`Allowance`]; a lookup that cannot start fails at once with
//!   a reason (`Busy`, `OverLimit`) and follows `resolve.onError` like any failure;
//! - **in time**: a lookup is abandoned after [`Resolver::lookup_limit`] (twice the
//!   request timeout), however its registry behaves;
//! - **in failure**: a lookup task that panics answers its waiters with an internal error and
//!   leaves the in-flight map on unwind (a drop guard), so the next review looks the image up
//!   afresh; the map and the cache use locks that a panic cannot poison.
//!
//! [`Resolver::health`] says when the resolver cannot serve: a lookup task still running past
//! twice its limit has stopped yielding (a worker thread is blocked), since every lookup that
//! yields is cancelled at its limit. `/readyz` fails with that reason.

pub mod cache;

/// When a review must have its answers, and the budget that set it (for messages).
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    pub at: Instant,
    pub budget: Duration,
}

impl Deadline {
    pub fn after(budget: Duration) -> Self {
        Deadline { at: Instant::now() + budget, budget }
    }
}

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use self::cache::{DigestCache, Key, Lookup, Value};
use crate::{
    Config, Error,
    metrics::Metrics,
    reference::Reference,
    registry::{Registries, auth::Keychain},
};

/// Registry lookups running at once in the process, whoever waits for them. Enough for every
/// image of a few dozen new pods at once; a review full of new tags cannot hold the registries
/// beyond it.
pub const MAX_LOOKUPS_IN_FLIGHT: usize = 512;

type Answer = Result<Arc<str>, Arc<Error>>;
type SharedAnswer = Shared<BoxFuture<'static, Answer>>;

/// A digest for a reference, and why it is stale if it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub digest: Arc<str>,
    /// Set when the registry failed and a cached digest past its TTL was used.
    pub stale: Option<String>,
}

/// How many registry lookups one caller (a review) may still start. Joining a lookup already
/// running, and cache hits, take nothing from it.
pub struct Allowance {
    left: AtomicUsize,
    limit: usize,
}

impl Allowance {
    pub fn new(limit: usize) -> Self {
        Allowance { left: AtomicUsize::new(limit), limit }
    }

    pub fn unlimited() -> Self {
        Allowance::new(usize::MAX)
    }

    fn take(&self) -> bool {
        self.left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

/// A running lookup: its shared answer, and when and where it started (for [`Resolver::health`]).
struct Running {
    answer: SharedAnswer,
    started: Instant,
    registry: String,
}

/// What starting a lookup gave.
enum Flight {
    /// Answered without a lookup: the cache (filled since the caller looked), or a refusal to start.
    Answered(Answer),
    Running(SharedAnswer),
}

pub struct Resolver {
    registries: Arc<Registries>,
    cache: DigestCache,
    inflight: Mutex<HashMap<Key, Running>>,
    slots: Arc<Semaphore>,
    lookup_limit: Duration,
    keep_tag: bool,
    metrics: Arc<Metrics>,
}

impl Resolver {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<Self>, Error> {
        Ok(Arc::new(Resolver {
            registries: Arc::new(Registries::new(config, metrics.clone())?),
            cache: DigestCache::new(&config.cache),
            inflight: Mutex::default(),
            slots: Arc::new(Semaphore::new(MAX_LOOKUPS_IN_FLIGHT)),
            lookup_limit: config.resolve.request_timeout.saturating_mul(2),
            keep_tag: config.resolve.keep_tag,
            metrics,
        }))
    }

    pub fn registries(&self) -> &Arc<Registries> {
        &self.registries
    }

    pub fn cache(&self) -> &DigestCache {
        &self.cache
    }

    /// How long one lookup may run before it is abandoned: twice the request timeout, room for
    /// a token fetch and the manifest request after it.
    pub fn lookup_limit(&self) -> Duration {
        self.lookup_limit
    }

    /// The digest of `reference`'s tag, answered by `deadline` (from cache, registry, or stale).
    pub async fn resolve(
        self: &Arc<Self>,
        reference: &Reference,
        keychain: &Arc<Keychain>,
        deadline: Deadline,
    ) -> Result<Resolved, Arc<Error>> {
        self.resolve_named(reference, reference.to_string().into(), keychain, deadline, &Allowance::unlimited()).await
    }

    /// One image as written, pinned to its digest (the tag kept as `resolve.keepTag` says); an
    /// image already pinned comes back as written. For the one-shot front ends (`resolve`,
    /// `install`, the pre-puller); the webhook pins through the engine.
    pub async fn pin(
        self: &Arc<Self>,
        written: &str,
        keychain: &Arc<Keychain>,
        deadline: Deadline,
    ) -> Result<String, Error> {
        let reference = Reference::parse(written)?;
        if reference.is_pinned() {
            return Ok(written.to_string());
        }
        let resolved = self.resolve(&reference, keychain, deadline).await.map_err(Arc::unwrap_or_clone)?;
        Ok(crate::reference::pin(written, &reference, &resolved.digest, self.keep_tag))
    }

    /// `resolve` with the reference's fully qualified name already computed (the cache key),
    /// starting a registry lookup only if `allowance` has one left.
    pub async fn resolve_named(
        self: &Arc<Self>,
        reference: &Reference,
        name: Arc<str>,
        keychain: &Arc<Keychain>,
        deadline: Deadline,
        allowance: &Allowance,
    ) -> Result<Resolved, Arc<Error>> {
        let key = Key { name, credential: self.registries.credential_id(reference, keychain) };
        let stale = match self.cache.lookup(&key) {
            Lookup::Fresh(digest) => {
                self.metrics.cache("hit");
                return Ok(Resolved { digest, stale: None });
            }
            Lookup::Negative(error) => {
                self.metrics.cache("negative");
                return Err(error);
            }
            Lookup::Stale(digest, age) => {
                self.metrics.cache("stale");
                Some((digest, age))
            }
            Lookup::Miss => {
                self.metrics.cache("miss");
                None
            }
        };
        let outcome = match self.flight(key, reference, keychain, allowance) {
            Flight::Answered(answer) => answer,
            Flight::Running(flight) => match tokio::time::timeout_at(deadline.at.into(), flight).await {
                Ok(result) => result,
                Err(_) => Err(Arc::new(Error::Timeout {
                    registry: reference.registry.clone(),
                    after_ms: deadline.budget.as_millis(),
                })),
            },
        };
        match (outcome, stale) {
            (Ok(digest), _) => Ok(Resolved { digest, stale: None }),
            (Err(error), Some((digest, age))) if error.is_transient() => {
                self.metrics.count_stale(&reference.registry);
                Ok(Resolved { digest, stale: Some(format!("cached {} ago; {error}", human(age))) })
            }
            (Err(error), _) => Err(error),
        }
    }

    /// The shared lookup for `key`: joined if one is running, else started (if the allowance and
    /// the process-wide bound let it), unless the cache answers now.
    fn flight(
        self: &Arc<Self>,
        key: Key,
        reference: &Reference,
        keychain: &Arc<Keychain>,
        allowance: &Allowance,
    ) -> Flight {
        let mut inflight = self.inflight.lock();
        if let Some(running) = inflight.get(&key) {
            return Flight::Running(running.answer.clone());
        }
        // A lookup that finished since the caller looked has filled the cache before leaving
        // `inflight`: under this lock, the cache is the last word.
        match self.cache.lookup(&key) {
            Lookup::Fresh(digest) => return Flight::Answered(Ok(digest)),
            Lookup::Negative(error) => return Flight::Answered(Err(error)),
            Lookup::Stale(..) | Lookup::Miss => {}
        }
        if !allowance.take() {
            let message = format!(
                "more than {} images of this object need a registry lookup; one review starts at most {0}",
                allowance.limit
            );
            return Flight::Answered(Err(Arc::new(Error::OverLimit(message))));
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return Flight::Answered(Err(Arc::new(Error::Busy { limit: MAX_LOOKUPS_IN_FLIGHT })));
        };
        // The answer comes over a channel, so the entry is in the map before the task exists
        // and the task can leave it (on drop) without this lock held.
        let (send, receive) = tokio::sync::oneshot::channel::<Answer>();
        let image = reference.to_string();
        let answer = async move {
            receive.await.unwrap_or_else(|_| {
                Err(Arc::new(Error::Internal(format!("the lookup of {image} ended without an answer; see the log"))))
            })
        }
        .boxed()
        .shared();
        let running = Running { answer: answer.clone(), started: Instant::now(), registry: reference.registry.clone() };
        inflight.insert(key.clone(), running);
        drop(inflight);
        let leave = LeaveOnDrop { resolver: self.clone(), key, image: reference.to_string(), left: false };
        let (reference, keychain) = (reference.clone(), keychain.clone());
        tokio::spawn(async move {
            let (_slot, leave) = (slot, leave);
            let this = &leave.resolver;
            let lookup = this.registries.digest(&reference, &keychain);
            let result = match tokio::time::timeout(this.lookup_limit, lookup).await {
                Ok(result) => result,
                Err(_) => Err(Error::Timeout {
                    registry: reference.registry.clone(),
                    after_ms: this.lookup_limit.as_millis(),
                }),
            };
            match &result {
                Ok(answer) => {
                    tracing::info!(image = %reference, digest = %answer.digest, answered_by = %answer.answered_by, "resolved");
                    this.cache.insert(leave.key.clone(), Value::Digest(answer.digest.as_str().into()));
                }
                Err(error) => tracing::warn!(image = %reference, %error, "lookup failed"),
            }
            let result = result.map(|a| Arc::<str>::from(a.digest)).map_err(Arc::new);
            if let Err(error) = &result
                && matches!(**error, Error::NotFound { .. })
            {
                this.cache.insert(leave.key.clone(), Value::NotFound(error.clone()));
            }
            // Out of the map after the cache insert (a concurrent lookup finds one or the other)
            // and before the answer (a waiter that asks again at once does not join this one).
            // On a panic `leave` does it while unwinding, so the next review looks the image up
            // afresh, and the waiters get an internal error (the channel closes unanswered).
            leave.now();
            let _ = send.send(result);
        });
        Flight::Running(answer)
    }

    /// `Err` with a one-line reason when the resolver cannot serve: a lookup still running past
    /// twice its limit. Every lookup that yields is cancelled at its limit, so one still there
    /// holds a worker thread (a blocking call or a busy loop) and will not answer anyone.
    pub fn health(&self) -> Result<(), String> {
        let wedged_after = self.lookup_limit.saturating_mul(2);
        let inflight = self.inflight.lock();
        let wedged: Vec<&Running> = inflight.values().filter(|r| r.started.elapsed() > wedged_after).collect();
        let Some(oldest) = wedged.iter().max_by_key(|r| r.started.elapsed()) else { return Ok(()) };
        Err(format!(
            "resolver: {} registry lookup(s) stuck past {} (oldest {} at {}, limit {})",
            wedged.len(),
            human(wedged_after),
            human(oldest.started.elapsed()),
            oldest.registry,
            human(self.lookup_limit)
        ))
    }

    /// Lookups running now.
    pub fn lookups_in_flight(&self) -> usize {
        self.inflight.lock().len()
    }
}

/// Removes a lookup from the in-flight map when its task ends, however it ends.
struct LeaveOnDrop {
    resolver: Arc<Resolver>,
    key: Key,
    image: String,
    left: bool,
}

impl LeaveOnDrop {
    fn now(mut self) {
        self.resolver.inflight.lock().remove(&self.key);
        self.left = true;
    }
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        if self.left {
            return;
        }
        if std::thread::panicking() {
            tracing::error!(image = %self.image, "registry lookup panicked; its reviews get an internal error");
        }
        self.resolver.inflight.lock().remove(&self.key);
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver() -> Arc<Resolver> {
        crate::install_crypto_provider();
        Resolver::new(&Config::default(), Arc::new(crate::metrics::Metrics::new(&Config::default()))).unwrap()
    }

    /// The race: a review finds the cache empty, another review's lookup then finishes (fills the
    /// cache, leaves the in-flight map), and only then does the first review ask for a flight.
    /// It must take the cached answer, not start a second registry lookup.
    #[tokio::test]
    async fn a_lookup_that_finished_after_the_cache_check_is_not_repeated() {
        let resolver = resolver();
        // Loopback is not a configured registry: a lookup started here would be refused.
        let reference = Reference::parse("127.0.0.1:9/team/app:v1").unwrap();
        let key = Key { name: reference.to_string().into(), credential: 0 };
        assert!(matches!(resolver.cache.lookup(&key), Lookup::Miss));
        resolver.cache.insert(key.clone(), Value::Digest("sha256:finished".into()));
        match resolver.flight(key, &reference, &Arc::default(), &Allowance::unlimited()) {
            Flight::Answered(Ok(digest)) => assert_eq!(&*digest, "sha256:finished"),
            Flight::Answered(Err(e)) => panic!("answered with an error: {e}"),
            Flight::Running(_) => panic!("a second registry lookup was started"),
        }
        assert_eq!(resolver.lookups_in_flight(), 0);
    }

    #[tokio::test]
    async fn an_allowance_spent_starts_no_lookup_and_says_why() {
        let resolver = resolver();
        let allowance = Allowance::new(1);
        let deadline = Deadline::after(Duration::from_secs(5));
        let first = Reference::parse("127.0.0.1:9/team/a:v1").unwrap();
        let second = Reference::parse("127.0.0.1:9/team/b:v1").unwrap();
        let keychain = Arc::default();
        let err = resolver.resolve_named(&first, first.to_string().into(), &keychain, deadline, &allowance).await;
        assert!(matches!(*err.unwrap_err(), Error::Refused { .. }), "the first lookup was made");
        let err = resolver.resolve_named(&second, second.to_string().into(), &keychain, deadline, &allowance).await;
        let err = err.unwrap_err();
        assert!(matches!(*err, Error::OverLimit(_)), "{err}");
        assert!(err.to_string().contains("more than 1 images"), "{err}");
    }
}
