//! `make soak`: the release `layerlink serve` for 10 minutes (SOAK_SECS) at a fixed rate
//! (SOAK_RATE, default 200 req/s) with a mix of reviews, while the real test registry is
//! restarted twice. Prints server errors (must be 0), latency percentiles measured from each
//! request's intended send time (coordinated omission corrected), and the server's RSS at the
//! start and the end.
//!
//! The mix, per 10 requests: 5 cached (a handful of tags, cache TTL 5s so they revalidate all
//! along), 2 uncached (tags that exist but were never asked for), 2 not found (a new missing tag
//! each time: negative entries, bounded), 1 invalid (a garbage body or an invalid reference).
//! "Server error" means anything but HTTP 200 with an AdmissionReview, or a failed connection.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use layerlink::admission::fixtures;
use support::{Registry, oci::Image, oci::layer, webhook::free_port};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("soak: run with `make soak` (cargo bench --bench soak)");
        return;
    }
    layerlink::install_crypto_provider();
    let secs: u64 = env_or("SOAK_SECS", 600);
    let rate: f64 = env_or("SOAK_RATE", 200.0);
    let binary = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/layerlink");
    assert!(std::path::Path::new(binary).exists(), "build it first: cargo build --release --bin layerlink");

    let mut registry = Registry::start();
    let host = registry.host();
    let cached_tags = 8;
    let uncached_tags = 400;
    eprintln!("soak: pushing {} tags", cached_tags + uncached_tags);
    let image = Image::new(vec![layer(&[("id", b"soak")])]);
    for i in 0..cached_tags {
        registry.push("soak/cached", &format!("v{i}"), &image);
    }
    // Tags that exist but are never asked for twice: copying one manifest under many tags.
    let digest = registry.push("soak/uncached", "v0", &image).digest;
    let manifest = registry
        .request("GET", "/v2/soak/uncached/manifests/v0", &[("Accept", "application/vnd.oci.image.manifest.v1+json")])
        .unwrap()
        .body;
    for i in 1..uncached_tags {
        put_manifest(&registry, &format!("v{i}"), &manifest);
    }
    assert_eq!(registry.manifest_digest("soak/uncached", "v1").as_deref(), Some(digest.as_str()));

    let dir = tempfile::tempdir().unwrap();
    support::webhook::make_certs(dir.path());
    let (https, http) = (free_port(), free_port());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {{ https: \"127.0.0.1:{https}\", http: \"127.0.0.1:{http}\" }}\n\
             tls: {{ certFile: {0}/tls.crt, keyFile: {0}/tls.key }}\n\
             registries: [{{ host: \"{host}\", plainHttp: true }}]\n\
             resolve: {{ budget: 1s, connectTimeout: 500ms }}\n\
             cache: {{ ttl: 5s, negativeTtl: 30s, staleIfError: 1h, maxEntries: 100000 }}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut server = Command::new("taskset")
        .args(["-c", "0", binary, "serve", "--config"])
        .arg(&config)
        .env("LAYERLINK_LOG", "warn")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = server.id();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let url = format!("https://127.0.0.1:{https}/mutate?timeout=3s");
    let client = support::webhook::client_trusting(&std::fs::read(dir.path().join("ca.crt")).unwrap());
    runtime.block_on(async {
        for _ in 0..100 {
            if client.get(format!("https://127.0.0.1:{https}/")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    let bodies = Bodies::new(&host);
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let sent = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u64>::with_capacity((secs as f64 * rate) as usize)));
    // Warm the cached tags, then measure the starting RSS.
    runtime.block_on(async {
        for i in 0..cached_tags {
            let _ = client.post(&url).body(bodies.cached(i)).send().await;
        }
    });
    let rss_start = rss_kib(pid);
    eprintln!(
        "soak: {secs}s at {rate} req/s against pid {pid} (RSS {rss_start} KiB); registry restarts at 1/3 and 2/3"
    );

    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (secs as f64 * rate) as u64;
    // A real outage, twice: the registry process is killed and started again (same port and
    // storage) while requests keep arriving. Done beside the load loop, so it never stalls it.
    let outages = std::thread::spawn(move || {
        for at in [secs / 3, 2 * secs / 3] {
            std::thread::sleep((started + Duration::from_secs(at)).saturating_duration_since(Instant::now()));
            registry.stop();
            std::thread::sleep(Duration::from_secs(3));
            registry.restart();
            eprintln!("soak: registry restarted at {:.0}s", started.elapsed().as_secs_f64());
        }
        registry
    });
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for n in 0..total {
            let intended = started + interval.mul_f64(n as f64);
            tokio::time::sleep_until(intended.into()).await;
            let body = bodies.pick(n);
            let (client, url, errors, latencies, sent) =
                (client.clone(), url.clone(), errors.clone(), latencies.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                sent.fetch_add(1, Ordering::Relaxed);
                let result = client.post(&url).body(body).send().await;
                let outcome = match result {
                    Ok(r) if r.status() == 200 => match r.json::<serde_json::Value>().await {
                        Ok(v) if v["kind"] == "AdmissionReview" => None,
                        Ok(v) => Some(format!("not a review: {v}")),
                        Err(e) => Some(format!("body: {e}")),
                    },
                    Ok(r) => Some(format!("HTTP {}", r.status())),
                    Err(e) => Some(format!("request: {e}")),
                };
                latencies.lock().unwrap().push(intended.elapsed().as_micros() as u64);
                if let Some(e) = outcome {
                    errors.lock().unwrap().push(e);
                }
            }));
            if tasks.len() > 4096 {
                tasks.retain(|t| !t.is_finished());
            }
            if n > 0 && n % (rate as u64 * 60) == 0 {
                eprintln!("soak: {:.0}s, RSS {} KiB", started.elapsed().as_secs_f64(), rss_kib(pid));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let elapsed = started.elapsed();
    let _registry = outages.join().unwrap();
    let rss_end = rss_kib(pid);
    let _ = server.kill();
    let _ = server.wait();

    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let pct =
        |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0);
    let errors = errors.lock().unwrap();
    let nproc = String::from_utf8(Command::new("nproc").output().unwrap().stdout).unwrap_or_default();
    println!("soak ({}, {} cores; server pinned to core 0)", chrono_like_date(), nproc.trim());
    println!(
        "  duration            {:.0}s at {rate} req/s, {} requests",
        elapsed.as_secs_f64(),
        sent.load(Ordering::Relaxed)
    );
    println!("  mix                 5 cached : 2 uncached : 2 not found : 1 invalid (per 10)");
    println!("  registry restarts   2 (each down 3s)");
    println!("  server errors       {}", errors.len());
    for e in errors.iter().take(5) {
        println!("    {e}");
    }
    println!(
        "  latency (µs)        p50 {}  p99 {}  p99.9 {}  max {}",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        lat.last().copied().unwrap_or(0)
    );
    println!(
        "  RSS                 start {:.1} MiB, end {:.1} MiB ({:+.1} MiB)",
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        (rss_end as f64 - rss_start as f64) / 1024.0
    );
    if !errors.is_empty() {
        std::process::exit(1);
    }
}

fn chrono_like_date() -> String {
    String::from_utf8(Command::new("date").args(["-u", "+%Y-%m-%d"]).output().unwrap().stdout)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// PUT a manifest under another tag (the registry already holds its blobs).
fn put_manifest(registry: &Registry, tag: &str, manifest: &[u8]) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(registry.addr()).unwrap();
    write!(
        stream,
        "PUT /v2/soak/uncached/manifests/{tag} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        registry.host(),
        manifest.len()
    )
    .unwrap();
    stream.write_all(manifest).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 201"), "PUT manifest {tag}: {response}");
}

struct Bodies {
    template: serde_json::Value,
    host: String,
    missing: AtomicU64,
}

impl Bodies {
    fn new(host: &str) -> Self {
        Bodies {
            template: fixtures::json("pod-create-simple.json"),
            host: host.to_string(),
            missing: AtomicU64::new(0),
        }
    }

    fn with_image(&self, image: String) -> Vec<u8> {
        let mut review = self.template.clone();
        review["request"]["object"]["spec"]["containers"][0]["image"] = image.into();
        serde_json::to_vec(&review).unwrap()
    }

    fn cached(&self, i: u64) -> Vec<u8> {
        self.with_image(format!("{}/soak/cached:v{}", self.host, i % 8))
    }

    fn pick(&self, n: u64) -> Vec<u8> {
        match n % 10 {
            0..=4 => self.cached(n),
            5 | 6 => self.with_image(format!("{}/soak/uncached:v{}", self.host, (n / 10 * 2 + n % 2) % 400)),
            7 | 8 => {
                let m = self.missing.fetch_add(1, Ordering::Relaxed);
                self.with_image(format!("{}/soak/cached:missing-{m}", self.host))
            }
            _ if n % 20 == 9 => b"{\"this is\": \"not a review\"".to_vec(),
            _ => self.with_image("Invalid/Reference:!".into()),
        }
    }
}
