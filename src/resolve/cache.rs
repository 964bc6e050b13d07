//! The digest cache: tag → digest with a TTL, a negative TTL for not-found, stale-if-error, and
//! a bound on entries.
//!
//! Entries are keyed by the credential used, so one namespace never gets a digest that only
//! another namespace's pull secret could see.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

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

/// Sharded maps behind short mutexes (parking_lot's: a panic while one is held poisons nothing). Expiry is checked on read (an entry past its life is a
/// miss and is dropped), and an insert sweeps its shard of entries past their life when the last
/// sweep is older than `sweep_every`, so entries never read again (a missing tag asked for once)
/// do not stay until the shard fills. When a shard is full, expired entries go first, then an
/// arbitrary batch. Chosen over moka for memory: moka's eviction queues and per-entry timer wheel
/// cost 300–400 bytes per entry, this about 250 in all (see README, Performance).
pub struct DigestCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
    ttl: Duration,
    /// How long a digest is kept: the larger of the TTL and stale-if-error.
    positive_life: Duration,
    negative_life: Duration,
    sweep_every: Duration,
}

struct Shard {
    entries: HashMap<Key, Entry>,
    swept: Instant,
}

/// Enough shards that two cores never wait on each other for long.
const SHARDS: usize = 16;
/// The longest a shard goes between sweeps (shorter when an entry's life is shorter).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl DigestCache {
    pub fn new(config: &config::Cache) -> Self {
        // Never more than maxEntries in all: fewer shards for tiny bounds.
        let max = config.max_entries.max(1) as usize;
        let shards = max.min(SHARDS);
        let positive_life = config.ttl.max(config.stale_if_error);
        DigestCache {
            shards: (0..shards).map(|_| Mutex::new(Shard { entries: HashMap::new(), swept: Instant::now() })).collect(),
            hasher: RandomState::new(),
            per_shard: max / shards,
            ttl: config.ttl,
            positive_life,
            negative_life: config.negative_ttl,
            sweep_every: SWEEP_EVERY.min(positive_life).min(config.negative_ttl),
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        &self.shards[self.hasher.hash_one(key) as usize % self.shards.len()]
    }

    fn life(&self, value: &Value) -> Duration {
        match value {
            Value::Digest(_) => self.positive_life,
            Value::NotFound(_) => self.negative_life,
        }
    }

    pub fn lookup(&self, key: &Key) -> Lookup {
        let mut shard = self.shard(key).lock();
        let Some(entry) = shard.entries.get(key) else { return Lookup::Miss };
        let age = entry.fetched.elapsed();
        if age >= self.life(&entry.value) {
            shard.entries.remove(key);
            return Lookup::Miss;
        }
        match &entry.value {
            Value::Digest(digest) if age < self.ttl => Lookup::Fresh(digest.clone()),
            Value::Digest(digest) => Lookup::Stale(digest.clone(), age),
            Value::NotFound(error) => Lookup::Negative(error.clone()),
        }
    }

    pub fn insert(&self, key: Key, value: Value) {
        let mut shard = self.shard(&key).lock();
        let now = Instant::now();
        let full = shard.entries.len() >= self.per_shard && !shard.entries.contains_key(&key);
        if full || now.duration_since(shard.swept) >= self.sweep_every {
            shard.entries.retain(|_, e| now.duration_since(e.fetched) < self.life(&e.value));
            shard.swept = now;
        }
        if shard.entries.len() >= self.per_shard && !shard.entries.contains_key(&key) {
            // Free a batch, not one: otherwise every insert into a shard full of live entries
            // would scan the whole shard again.
            let batch = (self.per_shard / 64).max(1);
            let victims: Vec<Key> = shard.entries.keys().take(batch).cloned().collect();
            for victim in victims {
                shard.entries.remove(&victim);
            }
        }
        shard.entries.insert(key, Entry { value, fetched: now });
    }

    pub fn entry_count(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().entries.len() as u64).sum()
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
    fn entries_never_read_again_are_swept_after_their_life() {
        let c = DigestCache::new(&config::Cache {
            ttl: Duration::from_secs(600),
            negative_ttl: Duration::from_millis(50),
            stale_if_error: Duration::from_secs(600),
            max_entries: 100_000,
        });
        let missing = Arc::new(Error::NotFound { registry: "r".into(), what: "r/a".into(), message: "gone".into() });
        for i in 0..500 {
            c.insert(key(&format!("missing{i}"), 0), Value::NotFound(missing.clone()));
        }
        assert_eq!(c.entry_count(), 500);
        std::thread::sleep(Duration::from_millis(80));
        // Inserts touch every shard; none of the missing tags is ever looked up again.
        for i in 0..1000 {
            c.insert(key(&format!("live{i}"), 0), Value::Digest("sha256:1".into()));
        }
        assert_eq!(c.entry_count(), 1000, "the dead negative entries were swept");
    }

    #[test]
    fn a_panic_while_a_shard_is_locked_breaks_no_later_lookup() {
        let c = Arc::new(cache(10_000, 10_000, 10_000));
        c.insert(key("a", 0), Value::Digest("sha256:1".into()));
        let held = c.clone();
        let panicked = std::thread::spawn(move || {
            let _shard = held.shard(&key("a", 0)).lock();
            panic!("a lookup panics while it holds the shard");
        })
        .join();
        assert!(panicked.is_err());
        assert!(matches!(c.lookup(&key("a", 0)), Lookup::Fresh(d) if &*d == "sha256:1"));
        c.insert(key("b", 0), Value::Digest("sha256:2".into()));
        assert_eq!(c.entry_count(), 2);
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
