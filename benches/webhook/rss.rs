//! `cache-rss`: RSS of layerlink's `DigestCache` holding 100k distinct digests, measured in a
//! fresh process (the bench runs this mode as a child) from /proc/self/status.
//!
//! `cache-rss hashmap` stores the same keys and entries in a plain `std::collections::HashMap`
//! instead, as a yardstick for the cache's own overhead. `cache-rss moka-ttl`, `compact` and
//! `compact-ttl` are experiments for what could shrink it: moka with one cache-wide TTL instead
//! of a per-entry `Expiry`; a 128-bit key hash and a binary digest instead of strings; both.
//!
//! Prints one line: `entries=N rss_before_kib=A rss_after_kib=B hwm_kib=H payload_bytes=P
//! lookup_ns=L`.

use std::time::{Duration, Instant};

use layerlink::resolve::cache::{DigestCache, Entry, Key, Lookup, Value};
use sha2::{Digest, Sha256};

pub const ENTRIES: usize = 100_000;

/// `registry.example.com/team-N/app-N:v1.2.N`, as `Reference`'s Display writes a cache key.
fn name(i: usize) -> String {
    format!("registry.example.com/team-{}/app-{}:v1.2.{}", i % 250, i, i % 1000)
}

fn digest(i: usize) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(i.to_le_bytes())))
}

pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.trim_start_matches(':').trim().strip_suffix(" kB")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

pub fn main(args: &[String]) {
    match args.first().map(String::as_str) {
        Some("hashmap") => return hashmap(),
        Some(variant @ ("moka-ttl" | "compact" | "compact-ttl")) => return experiment(variant),
        _ => {}
    }
    // The shipped defaults (examples/config.yaml): ttl 10m, staleIfError 24h, maxEntries 100000.
    let config = layerlink::Config::parse("cache: { maxEntries: 100000 }").expect("config");
    let before = status_kib("VmRSS");
    let cache = DigestCache::new(&config.cache);
    let mut payload = 0usize;
    for i in 0..ENTRIES {
        let (name, digest) = (name(i), digest(i));
        payload += name.len() + digest.len();
        cache.insert(Key { name: name.into(), credential: 0 }, Value::Digest(digest.into()));
    }
    let entries = cache.entry_count();
    let after = status_kib("VmRSS");
    let hwm = status_kib("VmHWM");
    // Lookup cost on the full cache (keys built outside the timed loop).
    let keys: Vec<Key> = (0..ENTRIES).step_by(7).map(|i| Key { name: name(i).into(), credential: 0 }).collect();
    let started = Instant::now();
    let mut hits = 0usize;
    for key in &keys {
        if matches!(cache.lookup(key), Lookup::Fresh(_)) {
            hits += 1;
        }
    }
    let per_lookup = started.elapsed().checked_div(keys.len() as u32).unwrap_or(Duration::ZERO);
    println!(
        "entries={entries} rss_before_kib={before} rss_after_kib={after} hwm_kib={hwm} payload_bytes={payload} lookup_ns={} hits={hits}/{}",
        per_lookup.as_nanos(),
        keys.len()
    );
}

fn hashmap() {
    let before = status_kib("VmRSS");
    let mut map = std::collections::HashMap::new();
    let mut payload = 0usize;
    for i in 0..ENTRIES {
        let (name, digest) = (name(i), digest(i));
        payload += name.len() + digest.len();
        let entry = Entry { value: Value::Digest(digest.into()), fetched: Instant::now() };
        map.insert(Key { name: name.into(), credential: 0 }, entry);
    }
    let after = status_kib("VmRSS");
    let hwm = status_kib("VmHWM");
    println!(
        "entries={} rss_before_kib={before} rss_after_kib={after} hwm_kib={hwm} payload_bytes={payload}",
        map.len()
    );
}

struct CompactExpiry;

impl moka::Expiry<u128, ([u8; 32], Instant)> for CompactExpiry {
    fn expire_after_create(&self, _: &u128, _: &([u8; 32], Instant), _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(24 * 3600))
    }
}

/// Memory of cache layouts layerlink could use (not what it uses now).
fn experiment(variant: &str) {
    let day = Duration::from_secs(24 * 3600);
    let before = status_kib("VmRSS");
    let key_hash = |name: &str| u128::from_le_bytes(Sha256::digest(name.as_bytes())[..16].try_into().unwrap());
    let binary = |i: usize| -> [u8; 32] { Sha256::digest(i.to_le_bytes()).into() };
    let entries = match variant {
        "moka-ttl" => {
            let cache = moka::sync::Cache::builder().max_capacity(100_000).time_to_live(day).build();
            for i in 0..ENTRIES {
                let entry = Entry { value: Value::Digest(digest(i).into()), fetched: Instant::now() };
                cache.insert(Key { name: name(i).into(), credential: 0 }, entry);
            }
            cache.run_pending_tasks();
            cache.entry_count()
        }
        "compact" => {
            let cache = moka::sync::Cache::builder().max_capacity(100_000).expire_after(CompactExpiry).build();
            for i in 0..ENTRIES {
                cache.insert(key_hash(&name(i)), (binary(i), Instant::now()));
            }
            cache.run_pending_tasks();
            cache.entry_count()
        }
        _ => {
            let cache = moka::sync::Cache::builder().max_capacity(100_000).time_to_live(day).build();
            for i in 0..ENTRIES {
                cache.insert(key_hash(&name(i)), (binary(i), Instant::now()));
            }
            cache.run_pending_tasks();
            cache.entry_count()
        }
    };
    let after = status_kib("VmRSS");
    println!("entries={entries} rss_before_kib={before} rss_after_kib={after} payload_bytes=0");
}
