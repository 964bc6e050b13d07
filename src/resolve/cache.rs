//! The digest cache: tag → digest with a TTL, a negative TTL for not-found, stale-if-error, and
//! a bound on entries (moka, TinyLFU eviction).
//!
//! Entries are keyed by the credential used, so one namespace never gets a digest that only
//! another namespace's pull secret could see.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{Error, config};

/// `registry/repository:tag` plus the credential identity (0 = anonymous).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub name: Arc<str>,
    pub credential: u64,
}

#[derive(Clone, Debug)]
pub enum Value {
    Digest(Arc<str>),
    /// The registry said the tag or repository does not exist; the error says which.
    NotFound(Arc<Error>),
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub value: Value,
    pub fetched: Instant,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Fresh(Arc<str>),
    Negative(Arc<Error>),
    /// Past its TTL but within stale-if-error: revalidate, and serve it if that fails.
    Stale(Arc<str>, Duration),
    Miss,
}

pub struct DigestCache {
    entries: moka::sync::Cache<Key, Entry>,
    ttl: Duration,
}

impl DigestCache {
    pub fn new(config: &config::Cache) -> Self {
        let expiry = EntryExpiry { positive: config.ttl.max(config.stale_if_error), negative: config.negative_ttl };
        let entries = moka::sync::Cache::builder().max_capacity(config.max_entries).expire_after(expiry).build();
        DigestCache { entries, ttl: config.ttl }
    }

    pub fn lookup(&self, key: &Key) -> Lookup {
        let Some(entry) = self.entries.get(key) else { return Lookup::Miss };
        let age = entry.fetched.elapsed();
        match entry.value {
            Value::Digest(digest) if age < self.ttl => Lookup::Fresh(digest),
            Value::Digest(digest) => Lookup::Stale(digest, age),
            Value::NotFound(message) => Lookup::Negative(message),
        }
    }

    pub fn insert(&self, key: Key, value: Value) {
        self.entries.insert(key, Entry { value, fetched: Instant::now() });
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

struct EntryExpiry {
    positive: Duration,
    negative: Duration,
}

impl moka::Expiry<Key, Entry> for EntryExpiry {
    fn expire_after_create(&self, _key: &Key, entry: &Entry, _now: Instant) -> Option<Duration> {
        Some(match entry.value {
            Value::Digest(_) => self.positive,
            Value::NotFound(_) => self.negative,
        })
    }

    fn expire_after_update(&self, key: &Key, entry: &Entry, now: Instant, _left: Option<Duration>) -> Option<Duration> {
        self.expire_after_create(key, entry, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ttl_ms: u64, stale_ms: u64, negative_ms: u64) -> DigestCache {
        DigestCache::new(&config::Cache {
            ttl: Duration::from_millis(ttl_ms),
            negative_ttl: Duration::from_millis(negative_ms),
            stale_if_error: Duration::from_millis(stale_ms),
            max_entries: 100,
        })
    }

    fn key(name: &str, credential: u64) -> Key {
        Key { name: name.into(), credential }
    }

    #[test]
    fn fresh_then_stale_then_gone() {
        let c = cache(50, 300, 50);
        c.insert(key("a", 0), Value::Digest("sha256:1".into()));
        assert!(matches!(c.lookup(&key("a", 0)), Lookup::Fresh(d) if &*d == "sha256:1"));
        std::thread::sleep(Duration::from_millis(80));
        assert!(matches!(c.lookup(&key("a", 0)), Lookup::Stale(d, _) if &*d == "sha256:1"));
        std::thread::sleep(Duration::from_millis(300));
        assert!(matches!(c.lookup(&key("a", 0)), Lookup::Miss));
    }

    #[test]
    fn negative_entries_expire_on_their_own_ttl() {
        let c = cache(10_000, 10_000, 50);
        let missing = Error::NotFound { registry: "r".into(), what: "r/a:1".into(), message: "no such tag".into() };
        c.insert(key("a", 0), Value::NotFound(Arc::new(missing)));
        assert!(matches!(c.lookup(&key("a", 0)), Lookup::Negative(e) if e.to_string().contains("no such tag")));
        std::thread::sleep(Duration::from_millis(80));
        assert!(matches!(c.lookup(&key("a", 0)), Lookup::Miss));
    }

    #[test]
    fn credentials_do_not_share_entries() {
        let c = cache(10_000, 10_000, 10_000);
        c.insert(key("a", 7), Value::Digest("sha256:1".into()));
        assert!(matches!(c.lookup(&key("a", 0)), Lookup::Miss));
        assert!(matches!(c.lookup(&key("a", 8)), Lookup::Miss));
    }

    #[test]
    fn bounded() {
        let c = cache(10_000, 10_000, 10_000);
        for i in 0..1000 {
            c.insert(key(&format!("img{i}"), 0), Value::Digest("sha256:1".into()));
        }
        assert!(c.entry_count() <= 100, "{}", c.entry_count());
    }
}
