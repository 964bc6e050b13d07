//! `make bench`: layerlink against the floor (the smallest axum + rustls webhook), warm-cache
//! throughput and latency, the cold path against a real registry, and the cache's memory.
//!
//! One process runs everything and prints one table on stdout (progress goes to stderr):
//!
//! 1. a real `docker-registry` with bearer-token auth (anonymous pull) behind a counting proxy,
//!    with images pushed by `skopeo` (tests/support);
//! 2. the floor server (this executable re-run as `floor-server`; "floor" parses the review
//!    whole, "floor uid-only" decodes only the uid, see floor.rs) and the real
//!    `target/release/layerlink serve`, each pinned with `taskset -c 0`, while this process (the
//!    load generator, a current-thread tokio runtime) pins itself to core 1;
//! 3. for each server: a warm-up, a closed loop (64 connections, max throughput), an open loop
//!    at a fixed rate with coordinated omission corrected (see load.rs); the servers take turns
//!    in short rounds, so background load on the machine falls on all of them alike;
//! 4. the cold path: a fresh layerlink, 1,000 connections, 1,000 reviews of one uncached tag
//!    released at once; manifest and token requests counted at the proxy and the token server;
//! 5. memory: this executable re-run as `cache-rss` (100k distinct digests in `DigestCache`).
//!
//! Settings (environment): BENCH_SECS (10: per server and loop type, split into BENCH_ROUNDS (5)
//! interleaved rounds), BENCH_WARMUP_SECS (2), BENCH_CONNS (64),
//! BENCH_RATE (2000), BENCH_OPEN_CONNS (16), BENCH_COLD (1000), BENCH_LOG_WARN (1: also run
//! layerlink with LAYERLINK_LOG=warn to show what per-review logging costs), BENCH_KEEP (0: keep
//! the temp dir with server logs), BENCH_HOLD_SECS (0: after the runs, keep the warm layerlink
//! serving this long, for attaching a profiler; its pid and address are printed), BENCH_PERF (a
//! directory: `perf record` each server during the closed loop into DIR/<label>.perf.data; see
//! perf-breakdown.py beside this file for a per-review cost breakdown).
//!
//! Extra modes (not part of the table): `cargo bench --bench webhook -- cache-rss [hashmap |
//! moka-ttl | compact | compact-ttl]` (cache memory layouts, see rss.rs) and `-- parse-cost`
//! (decode cost of the review, see parse.rs).
//!
//! Measurement only: nothing here fails on a number.

#[path = "../../tests/support/mod.rs"]
mod support;

mod floor;
mod load;
mod parse;
mod rss;

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine as _;
use bytes::Bytes;
use layerlink::admission::fixtures;
use serde_json::Value;
use support::{Auth, Registry, RegistryOptions, TokenOptions, TokenServer, oci::Image, proxy::Proxy};

const LAYERLINK: &str = env!("CARGO_BIN_EXE_layerlink");
const PATH: &str = "/mutate?timeout=10s";
const FLOOR: &str = "floor";
const FLOOR_UID: &str = "floor uid-only";
const LAYERLINK_COL: &str = "layerlink";
const LAYERLINK_WARN_COL: &str = "layerlink log=warn";

struct Settings {
    secs: u64,
    rounds: u32,
    warmup_secs: u64,
    conns: usize,
    rate: f64,
    open_conns: usize,
    cold: usize,
    log_warn_variant: bool,
    keep: bool,
    hold_secs: u64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Settings {
    fn from_env() -> Self {
        Settings {
            secs: env_or("BENCH_SECS", 10),
            rounds: env_or("BENCH_ROUNDS", 5),
            warmup_secs: env_or("BENCH_WARMUP_SECS", 2),
            conns: env_or("BENCH_CONNS", 64),
            rate: env_or("BENCH_RATE", 2000.0),
            open_conns: env_or("BENCH_OPEN_CONNS", 16),
            cold: env_or("BENCH_COLD", 1000),
            log_warn_variant: env_or("BENCH_LOG_WARN", 1) != 0,
            keep: env_or("BENCH_KEEP", 0) != 0,
            hold_secs: env_or("BENCH_HOLD_SECS", 0),
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this target without it, and
    // must not start a benchmark (it would take minutes, in a debug build).
    let bench = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    match args.first().map(String::as_str) {
        Some("floor-server") => floor::main(&args[1..]),
        Some("cache-rss") => rss::main(&args[1..]),
        Some("parse-cost") => parse::main(),
        None if bench => run(Settings::from_env()),
        _ => eprintln!("benches/webhook: a benchmark; run it with `make bench` (cargo bench --bench webhook)"),
    }
}

fn note(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// utime + stime of a process, in clock ticks (all its threads).
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix(" kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A server child process pinned to core 0 (when the machine has 2+ cores).
struct Server {
    child: Child,
    https: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn spawn(mut command: Command, https: SocketAddr, log: PathBuf) -> Server {
        let file = std::fs::File::create(&log).expect("server log");
        command.stdout(file.try_clone().unwrap()).stderr(file).stdin(Stdio::null());
        let mut child = command.spawn().expect("spawn server");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(https).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("server exited with {status}: {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "server did not listen on {https}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, https, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) -> u64 {
        let log_bytes = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let _ = self.child.kill();
        let _ = self.child.wait();
        log_bytes
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pinned(pin: bool, core: u32, program: &str) -> Command {
    if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", &core.to_string(), program]);
        c
    } else {
        Command::new(program)
    }
}

fn free_addr() -> SocketAddr {
    format!("127.0.0.1:{}", support::webhook::free_port()).parse().unwrap()
}

/// One column of the table: a running server and what was measured against it.
struct Column {
    label: String,
    server: Server,
    target: load::Target,
    closed: Vec<load::Closed>,
    open: Vec<load::Open>,
    /// Server and generator CPU seconds, and wall seconds, over the closed-loop segments.
    server_cpu_secs: f64,
    generator_cpu_secs: f64,
    closed_wall_secs: f64,
    server_rss_kib: u64,
    log_bytes_per_review: f64,
    perf: Option<Child>,
}

impl Column {
    fn new(label: &str, server: Server, target: load::Target) -> Column {
        Column {
            label: label.to_string(),
            server,
            target,
            closed: Vec::new(),
            open: Vec::new(),
            server_cpu_secs: 0.0,
            generator_cpu_secs: 0.0,
            closed_wall_secs: 0.0,
            server_rss_kib: 0,
            log_bytes_per_review: 0.0,
            perf: None,
        }
    }

    fn closed_ok(&self) -> u64 {
        self.closed.iter().map(|c| c.outcome.ok).sum()
    }

    fn closed_elapsed(&self) -> f64 {
        self.closed.iter().map(|c| c.outcome.elapsed.as_secs_f64()).sum()
    }

    fn throughput(&self) -> f64 {
        self.closed_ok() as f64 / self.closed_elapsed().max(1e-9)
    }

    /// Throughput of each round, for the spread.
    fn rounds(&self) -> String {
        self.closed.iter().map(|c| format!("{:.0}", c.throughput())).collect::<Vec<_>>().join("/")
    }

    fn closed_latency(&self) -> load::Hist {
        let mut h = load::hist();
        for c in &self.closed {
            h.add(&c.latency).expect("same bounds");
        }
        h
    }

    fn open_hist(&self, pick: impl Fn(&load::Open) -> &load::Hist) -> load::Hist {
        let mut h = load::hist();
        for o in &self.open {
            h.add(pick(o)).expect("same bounds");
        }
        h
    }

    fn errors(&self) -> (u64, Vec<String>) {
        let outcomes = self.closed.iter().map(|c| &c.outcome).chain(self.open.iter().map(|o| &o.outcome));
        let mut samples = Vec::new();
        let mut n = 0;
        for o in outcomes {
            n += o.errors;
            samples.extend(o.error_samples.iter().cloned());
        }
        samples.truncate(3);
        (n, samples)
    }
}

struct Bench {
    settings: Settings,
    pin: bool,
    clk_tck: f64,
    tls: Arc<rustls::ClientConfig>,
}

impl Bench {
    fn target(&self, addr: SocketAddr, bodies: &Arc<Vec<Bytes>>) -> load::Target {
        load::Target { addr, tls: self.tls.clone(), path: PATH.into(), bodies: bodies.clone() }
    }

    /// A target whose address is set once the server runs.
    fn target_for(&self, bodies: &Arc<Vec<Bytes>>) -> load::Target {
        self.target(SocketAddr::from(([127, 0, 0, 1], 0)), bodies)
    }

    fn segment(&self) -> Duration {
        Duration::from_secs_f64(self.settings.secs as f64 / self.settings.rounds.max(1) as f64)
    }

    fn closed_segment(&self, rt: &tokio::runtime::Runtime, column: &mut Column) {
        let me = std::process::id().to_string();
        let server_pid = column.server.pid().to_string();
        let (server_before, me_before, started) = (cpu_ticks(&server_pid), cpu_ticks(&me), Instant::now());
        let closed = rt.block_on(load::closed(&column.target, self.settings.conns, self.segment())).expect("closed");
        column.closed_wall_secs += started.elapsed().as_secs_f64();
        column.server_cpu_secs += (cpu_ticks(&server_pid) - server_before) as f64 / self.clk_tck;
        column.generator_cpu_secs += (cpu_ticks(&me) - me_before) as f64 / self.clk_tck;
        note(format!("  {}: {:.0} req/s", column.label, closed.throughput()));
        column.closed.push(closed);
    }

    fn open_segment(&self, rt: &tokio::runtime::Runtime, column: &mut Column) {
        let s = &self.settings;
        let open = rt.block_on(load::open(&column.target, s.open_conns, s.rate, self.segment())).expect("open");
        note(format!(
            "  {}: p50 {} p99 {}",
            column.label,
            ms(open.corrected.value_at_quantile(0.5)),
            ms(open.corrected.value_at_quantile(0.99))
        ));
        column.open.push(open);
    }

    /// `hosts`: the registry and its token server, listed (both are on loopback).
    fn layerlink(&self, dir: &Path, name: &str, hosts: &[String], log_level: &str) -> Server {
        let (https, http) = (free_addr(), free_addr());
        let registries: Vec<String> = hosts.iter().map(|h| format!("{{ host: \"{h}\", plainHttp: true }}")).collect();
        let config = format!(
            "# examples/config.yaml with bench addresses and the bench registry\n\
             listen: {{ https: \"{https}\", http: \"{http}\" }}\n\
             tls: {{ certFile: {d}/tls.crt, keyFile: {d}/tls.key }}\n\
             resolve: {{ budget: 2s, keepTag: true, onError: allow }}\n\
             cache: {{ ttl: 10m, negativeTtl: 30s, staleIfError: 24h, maxEntries: 100000 }}\n\
             registries: [{registries}]\n\
             exclude: {{ images: [\"registry.k8s.io/pause*\"], namespaces: [\"kube-system\"] }}\n",
            d = dir.display(),
            registries = registries.join(", ")
        );
        let config_path = dir.join(format!("{name}.yaml"));
        std::fs::write(&config_path, config).unwrap();
        let mut command = pinned(self.pin, 0, LAYERLINK);
        command.args(["serve", "--config"]).arg(&config_path).env("LAYERLINK_LOG", log_level);
        Server::spawn(command, https, dir.join(format!("{name}.log")))
    }

    /// The floor server; `decode` is `whole` or `uid` (see floor.rs).
    fn floor(&self, dir: &Path, decode: &str) -> Server {
        let https = free_addr();
        let exe = std::env::current_exe().expect("current exe");
        let mut command = pinned(self.pin, 0, exe.to_str().expect("utf-8 path"));
        command
            .arg("floor-server")
            .arg("--cert")
            .arg(dir.join("tls.crt"))
            .arg("--key")
            .arg(dir.join("tls.key"))
            .arg("--listen")
            .arg(https.to_string())
            .args(["--decode", decode]);
        Server::spawn(command, https, dir.join(format!("floor-{decode}.log")))
    }

    /// Sends `body` once and returns the decoded response review plus the TLS description.
    fn once(&self, rt: &tokio::runtime::Runtime, addr: SocketAddr, body: &Bytes) -> (Value, String) {
        let target = self.target(addr, &Arc::new(vec![body.clone()]));
        rt.block_on(async {
            let mut conn = load::connect(&target).await.expect("connect");
            let (status, answer) = conn.send(&target, body.clone()).await.expect("request");
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
            (serde_json::from_slice(&answer).expect("JSON answer"), conn.tls.clone())
        })
    }
}

fn client_tls(ca_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(cert.expect("CA PEM")).expect("CA");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // What kube-apiserver offers.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn image(seed: &str) -> Image {
    support::oci::Image::new(vec![
        support::layer(&[("etc/os-release", b"ID=bench\n")]),
        support::layer(&[("app/id", seed.as_bytes())]),
    ])
}

/// The review with `n` distinct uids (same length as the original), compact as the API server
/// sends it (Go's encoder ends with a newline).
fn bodies(review: &Value, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            let mut r = review.clone();
            r["request"]["uid"] = Value::String(format!("{:08x}-be0c-4a11-8000-{:012x}", i, i));
            let mut bytes = serde_json::to_vec(&r).unwrap();
            bytes.push(b'\n');
            Bytes::from(bytes)
        })
        .collect()
}

fn patch_ops(response: &Value) -> Vec<Value> {
    match response["patch"].as_str() {
        None => vec![],
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64 patch");
            serde_json::from_slice(&bytes).expect("JSON patch")
        }
    }
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

fn run(settings: Settings) {
    let wall = Instant::now();
    layerlink::install_crypto_provider();
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let date = sh("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]);
    let commit = {
        let c = sh("git", &["rev-parse", "--short", "HEAD"]);
        let dirty = !sh("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
        if dirty { format!("{c} (+ uncommitted changes)") } else { c }
    };
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_default();
    let load_start = loadavg();
    // Generator on core 1, servers on core 0: pin before any thread or child exists, so every
    // thread of this process (and the registry, proxy and token server it starts) inherits it.
    let pin = nproc >= 2
        && Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let clk_tck: f64 = sh("getconf", &["CLK_TCK"]).parse().unwrap_or(100.0);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");

    // Registry: distribution 2.8, bearer tokens from our token server (anonymous pull), behind a
    // counting proxy that layerlink talks to.
    note("starting docker-registry (token auth) and pushing images with skopeo");
    let token = TokenServer::start_with(TokenOptions { anonymous_pull: true, ..TokenOptions::default() });
    let registry = Registry::start_with(RegistryOptions { auth: Auth::Token(token), tls: false });
    let proxy = Proxy::start(registry.addr());
    let host = proxy.host();
    let listed = [host.clone(), registry.token_server().expect("token auth").addr().to_string()];
    let warm_images =
        [("library/busybox", "1.36"), ("library/redis", "7.2"), ("org/app", "v1.2.3"), ("team/app", "1.0")];
    let digests: Vec<String> =
        warm_images.iter().map(|(repo, tag)| registry.push(repo, tag, &image(repo)).digest).collect();
    let cold_digest = registry.push("bench/cold", "v1", &image("bench/cold")).digest;

    // The review: pod-create-multi (real, from kube-apiserver 1.20) with its 4 unpinned images
    // moved to the registry; alpine@sha256 stays pinned as captured.
    let review = fixtures::with_images("pod-create-multi.json", |old| match old {
        "busybox:1.36" => format!("{host}/library/busybox:1.36"),
        "redis" => format!("{host}/library/redis:7.2"),
        "ghcr.io/org/app:v1.2.3" => format!("{host}/org/app:v1.2.3"),
        o if o.starts_with("registry.local:5000/team/app:1.0@") => format!("{host}/team/app:1.0"),
        pinned => pinned.to_string(),
    });
    let warm_bodies = Arc::new(bodies(&review, 1024));
    let body_len = warm_bodies[0].len();
    let image_fields = review.to_string().matches("\"image\":").count();
    let cold_review = fixtures::with_images("pod-create-simple.json", |_| format!("{host}/bench/cold:v1"));
    let cold_bodies = Arc::new(bodies(&cold_review, settings.cold.max(1)));

    let dir = tempfile::Builder::new().prefix("layerlink-bench-").tempdir().expect("tempdir");
    support::webhook::make_certs(dir.path());
    let ca_pem = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let bench = Bench { tls: client_tls(&ca_pem), settings, pin, clk_tck };
    let s = &bench.settings;

    // The servers, all started up front (idle ones cost nothing) so the runs can interleave.
    note("starting the floors and layerlink (warm cache), each pinned to core 0");
    let uid0 = serde_json::from_slice::<Value>(&warm_bodies[0]).unwrap()["request"]["uid"].clone();
    let mut columns = Vec::new();
    let mut tls_desc = String::new();
    for (label, decode) in [(FLOOR, "whole"), (FLOOR_UID, "uid")] {
        let floor = bench.floor(dir.path(), decode);
        let (answer, tls) = bench.once(&rt, floor.https, &warm_bodies[0]);
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        assert!(answer["response"].get("patch").is_none(), "{answer}");
        assert_eq!(answer["response"]["uid"], uid0, "floor echoes the uid");
        tls_desc = tls;
        columns.push(Column::new(label, floor, bench.target_for(&warm_bodies)));
    }
    let mut levels = vec![(LAYERLINK_COL, "info")];
    if s.log_warn_variant {
        levels.push((LAYERLINK_WARN_COL, "warn"));
    }
    for (label, level) in levels {
        let server = bench.layerlink(dir.path(), &label.replace([' ', '='], "-"), &listed, level);
        // One review fills the cache.
        let (answer, _) = bench.once(&rt, server.https, &warm_bodies[0]);
        let response = &answer["response"];
        assert_eq!(response["allowed"], true, "{answer}");
        assert_eq!(response["uid"], uid0, "layerlink echoes the uid");
        let ops = patch_ops(response);
        assert_eq!(ops.len(), 4, "4 images pinned: {answer}");
        for digest in &digests {
            assert!(
                ops.iter().any(|op| op["value"].as_str().is_some_and(|v| v.ends_with(digest.as_str()))),
                "{digest} in {ops:?}"
            );
        }
        columns.push(Column::new(label, server, bench.target_for(&warm_bodies)));
    }
    for column in &mut columns {
        column.target.addr = column.server.https;
    }
    note(format!("warm-up: {} s closed loop each", s.warmup_secs));
    for column in &columns {
        rt.block_on(load::closed(&column.target, s.conns, Duration::from_secs(s.warmup_secs))).expect("warm-up");
    }
    let registry_before = proxy.count("", "/v2/");

    // Closed loop, interleaved: round r runs every server for secs/rounds.
    if let Ok(perf_dir) = std::env::var("BENCH_PERF") {
        for column in &mut columns {
            let out = Path::new(&perf_dir).join(format!("{}.perf.data", column.label.replace([' ', '='], "-")));
            column.perf = Some(
                Command::new("perf")
                    .args(["record", "-F", "499", "--call-graph", "dwarf,32768", "-o"])
                    .arg(out)
                    .args(["-p", &column.server.pid().to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("perf record"),
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for round in 1..=s.rounds {
        note(format!("closed loop, {} connections, round {round}/{}", s.conns, s.rounds));
        for column in &mut columns {
            bench.closed_segment(&rt, column);
        }
    }
    for column in &mut columns {
        if let Some(mut perf) = column.perf.take() {
            let _ = Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
            let _ = perf.wait();
            note(format!("perf: {} answered {} reviews in the closed loop", column.label, column.closed_ok()));
        }
    }
    for round in 1..=s.rounds {
        note(format!("open loop, {} req/s over {} connections, round {round}/{}", s.rate, s.open_conns, s.rounds));
        for column in &mut columns {
            bench.open_segment(&rt, column);
        }
    }
    let registry_during_runs = proxy.count("", "/v2/") - registry_before;
    if s.hold_secs > 0 {
        let ll = &columns.iter().find(|c| c.label == LAYERLINK_COL).expect("layerlink column").server;
        note(format!("holding layerlink pid {} on {} for {} s (BENCH_HOLD_SECS)", ll.pid(), ll.https, s.hold_secs));
        std::thread::sleep(Duration::from_secs(s.hold_secs));
    }
    for column in &mut columns {
        column.server_rss_kib = rss_kib(column.server.pid());
        let log = column.server.log.clone();
        let log_bytes = column.server.stop();
        // Per logged review (warm-up included): the log's size over its "review" lines.
        let lines = std::fs::read_to_string(&log)
            .map(|t| t.lines().filter(|l| l.contains("\"message\":\"review\"")).count())
            .unwrap_or(0);
        column.log_bytes_per_review = if lines > 0 { log_bytes as f64 / lines as f64 } else { 0.0 };
    }

    // Cold path: a fresh layerlink, one uncached tag, N reviews at once.
    note(format!("cold path: fresh layerlink, {} concurrent reviews of one uncached tag", s.cold));
    let mut server = bench.layerlink(dir.path(), "layerlink-cold", &listed, "info");
    proxy.reset_counts();
    let token_server = registry.token_server().expect("token auth");
    token_server.reset_counts();
    let target = bench.target(server.https, &cold_bodies);
    let burst = rt.block_on(load::burst(&target, s.cold)).expect("burst");
    let pinned_ok = burst
        .bodies
        .iter()
        .filter(|b| {
            serde_json::from_slice::<Value>(b)
                .map(|v| {
                    patch_ops(&v["response"])
                        .iter()
                        .any(|op| op["value"].as_str().is_some_and(|s| s.ends_with(cold_digest.as_str())))
                })
                .unwrap_or(false)
        })
        .count();
    let requests = proxy.requests();
    let manifests: Vec<_> = requests.iter().filter(|(_, p, _)| p.contains("/manifests/")).collect();
    let manifest_heads = manifests.iter().filter(|(m, _, _)| m == "HEAD").count();
    let manifest_gets = manifests.iter().filter(|(m, _, _)| m == "GET").count();
    let manifest_unauth = manifests.iter().filter(|(_, _, a)| a.is_none()).count();
    let other_registry = requests.len() - manifests.len();
    let token_requests = token_server.requests();
    server.stop();

    // Memory of the digest cache, in fresh processes.
    note("memory: DigestCache with 100k entries");
    let exe = std::env::current_exe().unwrap();
    let measure = |extra: &[&str]| -> String {
        let out = Command::new(&exe).arg("cache-rss").args(extra).output().expect("cache-rss");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let field = |line: &str, name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let per_entry_of = |line: &str| {
        (field(line, "rss_after_kib") - field(line, "rss_before_kib")) * 1024.0 / field(line, "entries").max(1.0)
    };
    let rss_line = measure(&[]);
    let map_line = measure(&["hashmap"]);
    let entries = field(&rss_line, "entries");
    let rss_delta_kib = field(&rss_line, "rss_after_kib") - field(&rss_line, "rss_before_kib");
    let per_entry = per_entry_of(&rss_line);
    let per_100k_mib = per_entry * 100_000.0 / (1024.0 * 1024.0);
    let map_per_entry = per_entry_of(&map_line);
    let payload_per_entry = field(&rss_line, "payload_bytes") / rss::ENTRIES as f64;

    // The table.
    let mut t = String::new();
    let w = &mut t;
    let _ = writeln!(w, "\n== layerlink bench ==");
    let _ = writeln!(
        w,
        "date {date} · commit {commit} · nproc {nproc} ({cpu_model}) · load avg {load_start} at start, {} at end",
        loadavg()
    );
    let _ = writeln!(
        w,
        "pinning: {}",
        if pin {
            "each server `taskset -c 0` (so 1 tokio worker), load generator `taskset -c 1` (current-thread runtime; \
             registry, proxy and token server also on core 1, idle in warm runs)"
                .to_string()
        } else {
            format!("none (nproc {nproc}): servers and generator share the cores")
        }
    );
    let _ = writeln!(
        w,
        "review: pod-create-multi.json (kube-apiserver 1.20), {body_len} bytes compact, {image_fields} image fields: 4 \
         unpinned (test registry, token auth), 1 already pinned; POST {PATH}; {tls_desc}; keep-alive HTTP/1.1"
    );
    let _ = writeln!(
        w,
        "floor: axum 0.8 + axum-server 0.9 + rustls/ring, same TLS config as src/server/tls.rs; parses the review \
         (request fields as strings, object and oldObject whole as serde_json::Value), answers allowed, no patch; \
         \"{FLOOR_UID}\": the same server decoding only apiVersion and request.uid (skips the object unread)"
    );
    let _ = writeln!(
        w,
        "layerlink: {LAYERLINK} serve, examples/config.yaml settings, JSON logs to a file, warm cache; \
         \"log=warn\" is the same with LAYERLINK_LOG=warn (no per-review log line)"
    );
    let _ = writeln!(
        w,
        "method: servers interleaved in {} rounds of {:.1} s per loop type (so background load hits all alike); \
         registry requests during the timed runs: {registry_during_runs}",
        s.rounds,
        bench.segment().as_secs_f64()
    );
    let _ = writeln!(w);
    let cols: Vec<&Column> = columns.iter().collect();
    let col = |label: &str| *cols.iter().find(|c| c.label == label).expect("column");
    let floor_c = col(FLOOR);
    // Ratio columns: (header, numerator, denominator).
    let mut ratios = vec![("ll/floor", col(LAYERLINK_COL), floor_c)];
    if s.log_warn_variant {
        ratios.push(("ll(warn)/floor", col(LAYERLINK_WARN_COL), floor_c));
    }
    ratios.push(("ll/uid-only", col(LAYERLINK_COL), col(FLOOR_UID)));
    let mut header = format!("{:<44}", "");
    for c in &cols {
        let _ = write!(header, "{:>20}", c.label);
    }
    for (name, _, _) in &ratios {
        let _ = write!(header, "{name:>16}");
    }
    let _ = writeln!(w, "{header}");
    let row = |w: &mut String, name: &str, f: &dyn Fn(&Column) -> f64, fmt: &dyn Fn(f64) -> String, ratio: bool| {
        let mut line = format!("{name:<44}");
        for c in &cols {
            let _ = write!(line, "{:>20}", fmt(f(c)));
        }
        if ratio {
            for (_, num, den) in &ratios {
                let (a, b) = (f(num), f(den));
                let _ = write!(line, "{:>16}", if b > 0.0 { format!("{:.2}", a / b) } else { "-".into() });
            }
        }
        let _ = writeln!(w, "{line}");
    };
    let num = |v: f64| format!("{v:.0}");
    let msf = |v: f64| format!("{:.3} ms", v / 1000.0);
    let pct = |v: f64| format!("{:.0}%", v * 100.0);
    let q = |h: &load::Hist, p: f64| h.value_at_quantile(p) as f64;
    row(w, &format!("closed loop, {} conns, {} s: req/s", s.conns, s.secs), &|c| c.throughput(), &num, true);
    let _ = writeln!(
        w,
        "  req/s per round: {}",
        cols.iter().map(|c| format!("{} {}", c.label, c.rounds())).collect::<Vec<_>>().join(" · ")
    );
    row(w, "  mean latency", &|c| c.closed_latency().mean(), &msf, true);
    row(w, "  server CPU (of one core)", &|c| c.server_cpu_secs / c.closed_wall_secs.max(1e-9), &pct, false);
    row(
        w,
        "  server CPU per review (µs)",
        &|c| c.server_cpu_secs * 1e6 / c.closed_ok().max(1) as f64,
        &|v| format!("{v:.1}"),
        true,
    );
    row(w, "  generator CPU (of one core)", &|c| c.generator_cpu_secs / c.closed_wall_secs.max(1e-9), &pct, false);
    let corrected = |c: &Column| c.open_hist(|o| &o.corrected);
    row(
        w,
        &format!("open loop, {} req/s, {} conns, {} s: p50", s.rate, s.open_conns, s.secs),
        &|c| q(&corrected(c), 0.5),
        &msf,
        true,
    );
    row(w, "  p99", &|c| q(&corrected(c), 0.99), &msf, true);
    row(w, "  p99.9", &|c| q(&corrected(c), 0.999), &msf, true);
    row(w, "  max", &|c| corrected(c).max() as f64, &msf, true);
    row(
        w,
        "  achieved req/s",
        &|c| {
            let ok: u64 = c.open.iter().map(|o| o.outcome.ok).sum();
            ok as f64 / c.open.iter().map(|o| o.outcome.elapsed.as_secs_f64()).sum::<f64>().max(1e-9)
        },
        &num,
        false,
    );
    row(
        w,
        "  sends behind schedule (CO corrected)",
        &|c| c.open.iter().map(|o| o.late_sends).sum::<u64>() as f64,
        &num,
        false,
    );
    row(w, "  p99 from intended time incl. timer slop", &|c| q(&c.open_hist(|o| &o.from_intended), 0.99), &msf, true);
    row(w, "  p99 service time (send → answer)", &|c| q(&c.open_hist(|o| &o.service), 0.99), &msf, true);
    row(w, "errors (closed + open)", &|c| c.errors().0 as f64, &num, false);
    row(w, "server RSS after the runs (MiB)", &|c| c.server_rss_kib as f64 / 1024.0, &|v| format!("{v:.1}"), false);
    row(w, "log bytes per review", &|c| c.log_bytes_per_review, &num, false);
    for c in &cols {
        for e in c.errors().1 {
            let _ = writeln!(w, "  error sample ({}): {e}", c.label);
        }
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "cold path ({} reviews of one uncached tag at once, fresh layerlink, token-auth registry): manifest requests: \
         {} ({} HEAD, {} GET; {} without a token = the auth challenge), token requests: {}, other registry requests: \
         {}; p50 {} / p99 {} / max {}; pinned {}/{}, errors {}",
        s.cold,
        manifests.len(),
        manifest_heads,
        manifest_gets,
        manifest_unauth,
        token_requests,
        other_registry,
        ms(burst.latency.value_at_quantile(0.5)),
        ms(burst.latency.value_at_quantile(0.99)),
        ms(burst.latency.max()),
        pinned_ok,
        s.cold,
        burst.outcome.errors
    );
    for e in &burst.outcome.error_samples {
        let _ = writeln!(w, "  error sample (cold): {e}");
    }
    let _ = writeln!(
        w,
        "memory (DigestCache, {:.0} distinct entries, ttl 10m / staleIfError 24h / maxEntries 100000): RSS +{:.1} MiB \
         → {:.1} MiB per 100k, {:.0} bytes per entry (key + digest strings: {:.0} bytes; the same entries in a std \
         HashMap: {:.0} bytes per entry); lookup {} ns",
        entries,
        rss_delta_kib / 1024.0,
        per_100k_mib,
        per_entry,
        payload_per_entry,
        map_per_entry,
        field(&rss_line, "lookup_ns")
    );
    let ll = col(LAYERLINK_COL);
    let tput = ll.throughput() / floor_c.throughput();
    let tput_uid = ll.throughput() / col(FLOOR_UID).throughput();
    let cpu_ratio = (floor_c.server_cpu_secs / floor_c.closed_ok().max(1) as f64)
        / (ll.server_cpu_secs / ll.closed_ok().max(1) as f64);
    let p99 = q(&corrected(ll), 0.99) / 1000.0;
    let met = |ok: bool| if ok { "MET" } else { "NOT MET" };
    let _ = writeln!(
        w,
        "goals: throughput ≥ 0.9× floor: {tput:.2}× {} (by server CPU per review: {cpu_ratio:.2}×; against \
         \"{FLOOR_UID}\", which skips the object: {tput_uid:.2}×); p99 ≤ 2 ms at {} req/s: {p99:.3} ms {}; \
         RSS ≤ 32 MiB per 100k: {per_100k_mib:.1} MiB {}",
        met(tput >= 0.9),
        s.rate,
        met(p99 <= 2.0),
        met(per_100k_mib <= 32.0)
    );
    let _ = writeln!(
        w,
        "(bench wall time {:.0} s; numbers are noisy when other work runs on the machine: see load avg)",
        wall.elapsed().as_secs_f64()
    );
    print!("{t}");
    if s.keep {
        let kept = dir.keep();
        note(format!("kept {}", kept.display()));
    }
    drop(proxy);
    drop(registry);
}
