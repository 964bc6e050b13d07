//! The digest cache: tag → digest with a TTL, a negative TTL for not-found, stale-if-error, and
//! a bound on entries.
//!
//! Entries are keyed by the credential used, so one namespace never gets a digest that only
//! another namespace's pull secret could see.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex},
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

/// Sharded maps behind short mutexes. Expiry is checked on read (an entry past its life is a
/// miss and is dropped); when a shard is full, expired entries go first, then an arbitrary batch.
/// Chosen over moka for memory: moka's eviction queues and per-entry timer wheel cost 300–400
/// bytes per entry, this about 250 in all (see README, Performance).
pub struct DigestCache {
    shards: Box<[Mutex<HashMap<Key, Entry>>]>,
    hasher: RandomState,
    per_shard: usize,
    ttl: Duration,
    /// How long a digest is kept: the larger of the TTL and stale-if-error.
    positive_life: Duration,
    negative_life: Duration,
}

/// Enough shards that two cores never wait on each other for long.
const SHARDS: usize = 16;

impl DigestCache {
    pub fn new(config: &config::Cache) -> Self {
        // Never more than maxEntries in all: fewer shards for tiny bounds.
        let max = config.max_entries.max(1) as usize;
        let shards = max.min(SHARDS);
        DigestCache {
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            per_shard: max / shards,
            ttl: config.ttl,
            positive_life: config.ttl.max(config.stale_if_error),
            negative_life: config.negative_ttl,
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<HashMap<Key, Entry>> {
        &self.shards[self.hasher.hash_one(key) as usize % self.shards.len()]
    }

    fn life(&self, value: &Value) -> Duration {
        match value {
            Value::Digest(_) => self.positive_life,
            Value::NotFound(_) => self.negative_life,
        }
    }

    pub fn lookup(&self, key: &Key) -> Lookup {
        let mut shard = self.shard(key).lock().unwrap();
        let Some(entry) = shard.get(key) else { return Lookup::Miss };
        let age = entry.fetched.elapsed();
        if age >= self.life(&entry.value) {
            shard.remove(key);
            return Lookup::Miss;
        }
        match &entry.value {
            Value::Digest(digest) if age < self.ttl => Lookup::Fresh(digest.clone()),
            Value::Digest(digest) => Lookup::Stale(digest.clone(), age),
            Value::NotFound(error) => Lookup::Negative(error.clone()),
        }
    }

    pub fn insert(&self, key: Key, value: Value) {
        let mut shard = self.shard(&key).lock().unwrap();
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, e| e.fetched.elapsed() < self.life(&e.value));
            if shard.len() >= self.per_shard {
                // Free a batch, not one: otherwise every insert into a shard full of live
                // entries would scan the whole shard again.
                let batch = (self.per_shard / 64).max(1);
                let victims: Vec<Key> = shard.keys().take(batch).cloned().collect();
                for victim in victims {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(key, Entry { value, fetched: Instant::now() });
    }

    pub fn entry_count(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().unwrap().len() as u64).sum()
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
