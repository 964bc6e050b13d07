//! A real OCI registry (Debian's `docker-registry`, CNCF distribution 2.8) on a loopback port.
//!
//! Each [`Registry`] owns a temp dir with its config, storage, certificates and log, and the
//! one `docker-registry` child process it started; Drop kills exactly that process.
//! Images are pushed with `skopeo copy` from OCI layouts built by [`super::oci`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::oci::{self, Index, Pushed, Top};
use super::token::TokenServer;

/// How clients authenticate to the registry.
pub enum Auth {
    /// Anonymous pull and push.
    None,
    /// HTTP Basic against an htpasswd file (bcrypt) holding this one user.
    Htpasswd { user: String, password: String },
    /// Bearer tokens from this token server (distribution `auth.token`). Pushes use the token
    /// server's configured user.
    Token(TokenServer),
}

pub struct RegistryOptions {
    pub auth: Auth,
    /// Serve HTTPS with a certificate for 127.0.0.1 and localhost, signed by a fresh CA
    /// (see [`Registry::ca_file`]).
    pub tls: bool,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions { auth: Auth::None, tls: false }
    }
}

pub struct Registry {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    tls: bool,
    auth: Auth,
    child: Option<Child>,
}

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const START_TIMEOUT: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// A CA and a server certificate for 127.0.0.1 / ::1 / localhost, written as PEM files in `dir`:
/// `ca.crt`, `tls.crt`, `tls.key`. Returns the paths (ca, cert, key).
pub fn write_test_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SanType,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.distinguished_name.push(DnType::CommonName, "layerlink test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
    params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params.subject_alt_names.push(SanType::IpAddress("::1".parse().unwrap()));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).expect("server cert");

    let ca = dir.join("ca.crt");
    let crt = dir.join("tls.crt");
    let k = dir.join("tls.key");
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (ca, crt, k)
}

impl Registry {
    /// Plain HTTP, anonymous, on a free loopback port.
    pub fn start() -> Registry {
        Registry::start_with(RegistryOptions::default())
    }

    pub fn start_with(opts: RegistryOptions) -> Registry {
        let dir = tempfile::Builder::new().prefix("layerlink-registry-").tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("storage")).unwrap();
        let mut reg =
            Registry { addr: SocketAddr::from(([127, 0, 0, 1], 0)), tls: opts.tls, auth: opts.auth, child: None, dir };
        if reg.tls {
            let certs = reg.dir.path().join("certs");
            std::fs::create_dir_all(&certs).unwrap();
            let (ca, _, _) = write_test_certs(&certs);
            // skopeo's --dest-cert-dir takes *.key as a client key: give it the CA alone.
            let ca_dir = reg.dir.path().join("ca");
            std::fs::create_dir_all(&ca_dir).unwrap();
            std::fs::copy(ca, ca_dir.join("ca.crt")).unwrap();
        }
        match &reg.auth {
            Auth::None => {}
            Auth::Htpasswd { user, password } => {
                // Cost 4 (the minimum) keeps the registry's bcrypt checks fast.
                let hash = bcrypt::hash(password, 4).expect("bcrypt");
                std::fs::write(reg.dir.path().join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
            }
            Auth::Token(ts) => {
                std::fs::write(reg.dir.path().join("token-ca.pem"), ts.root_cert_pem()).unwrap();
            }
        }
        // A free port can be taken between our probe and the registry's bind: retry.
        let mut last_err = String::new();
        for _ in 0..5 {
            reg.addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            match reg.spawn() {
                Ok(()) => return reg,
                Err(e) => last_err = e,
            }
        }
        panic!("docker-registry did not start: {last_err}\nlog:\n{}", reg.log());
    }

    fn write_config(&self) -> PathBuf {
        let d = self.dir.path();
        let mut cfg = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n  secret: layerlink-test-secret\n",
            storage = d.join("storage").display(),
            addr = self.addr,
        );
        if self.tls {
            let c = d.join("certs");
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                c.join("tls.crt").display(),
                c.join("tls.key").display()
            ));
        }
        match &self.auth {
            Auth::None => {}
            Auth::Htpasswd { .. } => cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: layerlink-test\n    path: {}\n",
                d.join("htpasswd").display()
            )),
            Auth::Token(ts) => cfg.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                ts.realm(),
                ts.service(),
                ts.issuer(),
                d.join("token-ca.pem").display()
            )),
        }
        let path = d.join("config.yml");
        std::fs::write(&path, cfg).unwrap();
        path
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    fn spawn(&mut self) -> Result<(), String> {
        let config = self.write_config();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let mut child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {REGISTRY_BIN}: {e} (apt-get install docker-registry)"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("docker-registry exited early: {status}"));
            }
            if let Ok(r) = self.request_timeout("GET", "/v2/", &[], Duration::from_secs(1))
                && (r.status == 200 || r.status == 401)
            {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("timed out waiting for GET /v2/".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// "127.0.0.1:PORT"
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// "http://127.0.0.1:PORT" or "https://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// PEM of the CA that signed the registry's certificate, when TLS.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.path().join("ca").join("ca.crt"))
    }

    /// The registry's temp dir (config.yml, storage/, certs/ (server), ca/ (CA only),
    /// registry.log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The token server when `Auth::Token`.
    pub fn token_server(&self) -> Option<&TokenServer> {
        match &self.auth {
            Auth::Token(ts) => Some(ts),
            _ => None,
        }
    }

    /// Credentials that can push and pull (htpasswd user or the token server's user).
    pub fn credentials(&self) -> Option<(String, String)> {
        match &self.auth {
            Auth::None => None,
            Auth::Htpasswd { user, password } => Some((user.clone(), password.clone())),
            Auth::Token(ts) => Some(ts.credentials()),
        }
    }

    /// Everything the registry logged so far (across restarts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kill the registry process (SIGKILL) and wait for it. Storage is kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop (if running) and start again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("docker-registry did not restart: {e}\nlog:\n{}", self.log())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().expect("registry is not running");
        let st = Command::new("kill").arg(sig).arg(pid.to_string()).status().expect("run kill");
        assert!(st.success(), "kill {sig} {pid} failed");
    }

    /// SIGSTOP: connections are still accepted by the kernel but nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
        // The signal is delivered asynchronously: wait until every thread shows as stopped.
        let pid = self.pid().expect("registry is not running");
        let stopped = |task: &std::path::Path| {
            std::fs::read_to_string(task.join("stat"))
                .map(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T')))
                .unwrap_or(true)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>());
            if tasks.is_ok_and(|t| t.iter().all(|t| stopped(t))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGCONT after [`Registry::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn skopeo_copy(&self, all: bool, work: &Path, src: &str, repo: &str, dest_tag: &str) -> String {
        let digestfile = work.join("pushed.digest");
        let mut cmd = Command::new("skopeo");
        cmd.arg("--insecure-policy")
            .arg("copy")
            .arg("--quiet")
            .arg("--preserve-digests")
            .arg("--digestfile")
            .arg(&digestfile);
        if all {
            cmd.arg("--all");
        }
        if self.tls {
            cmd.arg("--dest-tls-verify=true").arg("--dest-cert-dir").arg(self.dir.path().join("ca"));
        } else {
            cmd.arg("--dest-tls-verify=false");
        }
        match self.credentials() {
            Some((u, p)) => {
                cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
            }
            None => {
                cmd.arg("--dest-no-creds");
            }
        }
        cmd.arg(src)
            .arg(format!("docker://{}/{repo}:{dest_tag}", self.host()))
            // Keep skopeo away from the user's auth files and registries.conf mirrors.
            .env("REGISTRY_AUTH_FILE", work.join("auth.json"))
            .stdin(Stdio::null());
        let out = cmd.output().expect("run skopeo (apt-get install skopeo)");
        assert!(
            out.status.success(),
            "skopeo copy to {repo}:{dest_tag} failed: {}\n{}\nregistry log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        std::fs::read_to_string(&digestfile).expect("skopeo digestfile").trim().to_string()
    }

    fn check_pushed(&self, repo: &str, tag: &str, pushed: &Pushed, skopeo_digest: &str) {
        assert_eq!(skopeo_digest, pushed.digest, "skopeo pushed a different manifest than the one built");
        let reported = self.manifest_digest(repo, tag).unwrap_or_else(|| panic!("{repo}:{tag} not found after push"));
        assert_eq!(reported, pushed.digest, "registry reports a different digest than pushed");
    }

    /// Copy `top` into a fresh layout and push it with skopeo: OCI media types from an `oci:`
    /// layout, Docker ones from a `dir:` layout.
    fn push_top(&self, repo: &str, tag: &str, top: Top<'_>, format: oci::Format) -> String {
        let work = tempfile::tempdir_in(self.dir.path()).unwrap();
        let all = matches!(top, Top::Index(_));
        let src = match format {
            oci::Format::Oci => {
                let layout = work.path().join("oci");
                oci::write_layout(&layout, "latest", top);
                format!("oci:{}:latest", layout.display())
            }
            oci::Format::Docker => {
                let layout = work.path().join("dir");
                oci::write_dir(&layout, top);
                format!("dir:{}", layout.display())
            }
        };
        self.skopeo_copy(all, work.path(), &src, repo, tag)
    }

    /// Push one image as `repo:tag` with skopeo. The digest is checked against the registry.
    pub fn push(&self, repo: &str, tag: &str, image: &oci::Image) -> Pushed {
        let d = self.push_top(repo, tag, Top::Image(image), image.format);
        let pushed = Pushed::for_image(image);
        self.check_pushed(repo, tag, &pushed, &d);
        pushed
    }

    /// Push a multi-platform index as `repo:tag` (skopeo copy --all).
    pub fn push_index(&self, repo: &str, tag: &str, index: &Index) -> Pushed {
        let format = index.images.first().map(|i| i.format).unwrap_or_default();
        let d = self.push_top(repo, tag, Top::Index(index), format);
        let pushed = Pushed::for_index(index);
        self.check_pushed(repo, tag, &pushed, &d);
        pushed
    }

    /// The value of an Authorization header that may pull (and push) `repo`, if auth is on.
    pub fn authorization(&self, repo: &str) -> Option<String> {
        match &self.auth {
            Auth::None => None,
            Auth::Htpasswd { user, password } => Some(format!("Basic {}", B64.encode(format!("{user}:{password}")))),
            Auth::Token(ts) => Some(format!("Bearer {}", ts.issue_token(&format!("repository:{repo}:pull,push")))),
        }
    }

    /// A raw request to the registry (no auth added), 10 s timeout.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<HttpResponse> {
        self.request_timeout(method, path, headers, Duration::from_secs(10))
    }

    pub fn request_timeout(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> std::io::Result<HttpResponse> {
        let ca = self.ca_file();
        http_request(self.addr, ca.as_deref(), method, path, headers, timeout)
    }

    /// `HEAD /v2/<repo>/manifests/<reference>` with every manifest media type accepted and auth
    /// when needed: the registry's `Docker-Content-Digest`, or None when not 2xx.
    pub fn manifest_digest(&self, repo: &str, reference: &str) -> Option<String> {
        let auth = self.authorization(repo);
        let mut headers = vec![("Accept", oci::ACCEPT_ALL)];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let r = self
            .request("HEAD", &format!("/v2/{repo}/manifests/{reference}"), &headers)
            .unwrap_or_else(|e| panic!("HEAD manifest {repo}:{reference}: {e}"));
        if !(200..300).contains(&r.status) {
            return None;
        }
        Some(r.header("docker-content-digest").expect("registry sent no Docker-Content-Digest").to_string())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL also ends a SIGSTOPped process.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A response read by [`http_request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn tls_config(ca_pem: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).expect("read CA file") {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

/// A tiny blocking HTTP/1.1 client (one request per connection, `Connection: close`), over TLS
/// verified against `ca_pem` when given. Enough to cross-check a registry or a proxy.
pub fn http_request(
    addr: SocketAddr,
    ca_pem: Option<&Path>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    let tcp = TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut raw = Vec::new();
    let read_res = if let Some(ca) = ca_pem {
        let name = rustls::pki_types::ServerName::from(addr.ip());
        let conn = rustls::ClientConnection::new(tls_config(ca), name).map_err(std::io::Error::other)?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        s.write_all(req.as_bytes())?;
        s.flush()?;
        s.read_to_end(&mut raw)
    } else {
        let mut s = tcp;
        s.write_all(req.as_bytes())?;
        s.read_to_end(&mut raw)
    };
    if let Err(e) = read_res {
        // A peer that closes without close_notify is fine once we have a response.
        if raw.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof {
            return Err(e);
        }
    }
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], head: bool) -> std::io::Result<HttpResponse> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head_text = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status: u16 =
        status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked"));
    if head {
        body.clear();
    } else if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(HttpResponse { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..nl]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}
