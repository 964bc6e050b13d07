//! A running `layerlink serve` (the real binary) with generated certificates, and a TLS client
//! that verifies it against the generated CA.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::Value;

pub struct Webhook {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub config_path: PathBuf,
    /// Extra environment for the `layerlink serve` process.
    env: Vec<(String, String)>,
}

/// A free loopback port (bound then released; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `layerlink certs` into `dir`.
pub fn make_certs(dir: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_layerlink"))
        .args(["certs", "--out"])
        .arg(dir)
        .args(["--dns", "127.0.0.1", "--dns", "localhost"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "layerlink certs failed");
}

impl Webhook {
    /// Starts the server with `extra` YAML appended to a config that sets listen and tls.
    pub fn start(extra: &str) -> Webhook {
        Webhook::start_with(extra, &[], None)
    }

    /// Like [`Webhook::start`], with extra environment for the process (e.g. `KUBECONFIG`, so
    /// the server reads pull secrets from a cluster) and, when `certs` is given, the `ca.crt`,
    /// `tls.crt` and `tls.key` from that directory instead of freshly generated ones.
    pub fn start_with(extra: &str, env: &[(&str, &str)], certs: Option<&Path>) -> Webhook {
        Webhook::start_full("", extra, env, certs)
    }

    /// Like [`Webhook::start`], with `listen` settings (`headerTimeout: 1s, maxConnections: 4`)
    /// added to the `listen:` section beside the addresses.
    pub fn start_listening(listen: &str, extra: &str) -> Webhook {
        Webhook::start_full(listen, extra, &[], None)
    }

    fn start_full(listen: &str, extra: &str, env: &[(&str, &str)], certs: Option<&Path>) -> Webhook {
        let dir = tempfile::tempdir().unwrap();
        match certs {
            Some(from) => {
                for file in ["ca.crt", "tls.crt", "tls.key"] {
                    std::fs::copy(from.join(file), dir.path().join(file))
                        .unwrap_or_else(|e| panic!("copy {}: {e}", from.join(file).display()));
                }
            }
            None => make_certs(dir.path()),
        }
        let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let listen = if listen.is_empty() { String::new() } else { format!(", {listen}") };
        let config = format!(
            "listen: {{ https: \"{https}\", http: \"{http}\"{listen} }}\ntls: {{ certFile: {0}/tls.crt, keyFile: {0}/tls.key, reloadInterval: 200ms }}\n{extra}\n",
            dir.path().display()
        );
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut webhook = Webhook { child: None, dir, https, http, config_path, env };
        webhook.spawn();
        webhook
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_layerlink"))
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env("LAYERLINK_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(self.https).is_ok() && std::net::TcpStream::connect(self.http).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("layerlink serve exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("layerlink serve did not listen: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The log once `seen` holds for it (log lines are written in batches, see src/logs.rs), or
    /// as it is after 5 s.
    pub fn log_when(&self, seen: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if seen(&log) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("ca.crt")).unwrap()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and starts it again with the same config, addresses and certificates:
    /// a new process, so its in-memory cache starts empty. The earlier process's log is kept as
    /// `server.log.before-restart`.
    pub fn restart(&mut self) {
        self.stop();
        let log = self.dir.path().join("server.log");
        let _ = std::fs::rename(&log, log.with_extension("log.before-restart"));
        self.spawn();
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits up to `timeout` for the process to exit; its exit status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// A client that trusts only the generated CA.
    pub fn client(&self) -> reqwest::Client {
        client_trusting(&self.ca_pem())
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.https)
    }

    /// POSTs a review and returns (HTTP status, body JSON or Null).
    pub async fn post(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let response = self.client().post(self.url(path)).body(body).send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn review(&self, path: &str, review: &Value) -> Value {
        let (status, body) = self.post(path, serde_json::to_vec(review).unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["kind"], "AdmissionReview");
        assert_eq!(body["response"]["uid"], review["request"]["uid"], "uid echoed");
        body["response"].clone()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http)).await.unwrap().text().await.unwrap()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn client_trusting(ca_pem: &[u8]) -> reqwest::Client {
    layerlink::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder().use_preconfigured_tls(tls).timeout(Duration::from_secs(30)).build().unwrap()
}

/// The decoded JSON Patch of a response (empty when there is none).
pub fn patch_of(response: &Value) -> json_patch::Patch {
    match response["patch"].as_str() {
        None => json_patch::Patch(vec![]),
        Some(b64) => {
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }
    }
}

/// `review` with its object replaced by `object` (a reinvocation on our own output).
pub fn with_object(review: &Value, object: Value) -> Value {
    let mut next = review.clone();
    next["request"]["object"] = object;
    next["request"]["uid"] = Value::String(format!("{}-again", review["request"]["uid"].as_str().unwrap()));
    next
}
