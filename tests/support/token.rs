//! A small bearer-token server for distribution's `auth.token` mode (the Docker token protocol).
//!
//! Tokens are ES256 JWTs signed with a fresh P-256 key; the JWT header carries the signing
//! certificate in `x5c`, and that certificate is issued by a fresh CA whose PEM goes into the
//! registry's `rootcertbundle` ([`TokenServer::root_cert_pem`]). distribution 2.8 verifies the
//! x5c chain against the bundle, then the signature, `iss`, `aud` and `exp`/`nbf`.
//!
//! `GET /token?service=S&scope=repository:NAME:pull,push[&scope=...]`, optionally with Basic
//! auth, answers `{"token","access_token","expires_in","issued_at"}`. The OAuth2 form
//! (`POST /token`, grant_type=password) works too.
//!
//! Granting: the configured user gets every action it asks for; a request without
//! credentials gets only `pull` when `anonymous_pull` is set, else 401; wrong credentials 401.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::json;

use super::proxy::{BackgroundServer, Body, full};

pub struct TokenOptions {
    pub user: String,
    pub password: String,
    /// Anonymous requests get `pull` (and only pull).
    pub anonymous_pull: bool,
    /// Lifetime of issued tokens (`expires_in`, and `exp` = now + this). Note distribution
    /// accepts tokens up to 60 s past `exp` (its leeway).
    pub expires_in: Duration,
    pub service: String,
    pub issuer: String,
}

impl Default for TokenOptions {
    fn default() -> Self {
        TokenOptions {
            user: "tester".into(),
            password: "s3cret-token-pass".into(),
            anonymous_pull: false,
            expires_in: Duration::from_secs(300),
            service: "layerlink-test-registry".into(),
            issuer: "layerlink-test-issuer".into(),
        }
    }
}

/// One request the token server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// Basic-auth user name, if any was sent.
    pub user: Option<String>,
    /// `scope` values asked for.
    pub scopes: Vec<String>,
    /// `service` asked for.
    pub service: Option<String>,
    pub status: u16,
}

struct Signer {
    key: EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
    x5c: Vec<String>,
    issuer: String,
    service: String,
    expires_in: u64,
    jti: AtomicU64,
}

impl Signer {
    fn sign(&self, subject: &str, access: &[(String, String, Vec<String>)]) -> String {
        let now = unix_now();
        let header = json!({ "typ": "JWT", "alg": "ES256", "x5c": self.x5c });
        let claims = json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now.saturating_sub(10),
            "iat": now,
            "jti": format!("layerlink-test-{}", self.jti.fetch_add(1, Ordering::SeqCst)),
            "access": access.iter().map(|(t, n, a)| json!({"type": t, "name": n, "actions": a})).collect::<Vec<_>>(),
        });
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(serde_json::to_vec(&header).unwrap()),
            B64URL.encode(serde_json::to_vec(&claims).unwrap())
        );
        let sig = self.key.sign(&self.rng, signing_input.as_bytes()).expect("ES256 sign");
        format!("{signing_input}.{}", B64URL.encode(sig.as_ref()))
    }
}

struct State {
    signer: Signer,
    user: String,
    password: String,
    anonymous_pull: bool,
    log: Mutex<Vec<TokenRequest>>,
    failure: Mutex<Option<u16>>,
}

pub struct TokenServer {
    state: Arc<State>,
    root_pem: String,
    server: BackgroundServer,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// RFC 3339 UTC timestamp for unix seconds.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem / 60) % 60, rem % 60)
}

/// "repository:NAME:pull,push" → (type, name, actions).
fn parse_scope(scope: &str) -> Option<(String, String, Vec<String>)> {
    let (typ, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some((
        typ.to_string(),
        name.to_string(),
        actions.split(',').filter(|a| !a.is_empty()).map(str::to_string).collect(),
    ))
}

fn json_response(status: u16, body: serde_json::Value) -> Response<Body> {
    let mut b = Response::builder().status(status).header("content-type", "application/json");
    if status == 401 {
        b = b.header("www-authenticate", "Basic realm=\"layerlink-test-token\"");
    }
    b.body(full(serde_json::to_vec(&body).unwrap())).unwrap()
}

impl State {
    fn handle(
        &self,
        user_pass: Option<(String, String)>,
        params: Vec<(String, String)>,
    ) -> (u16, serde_json::Value, TokenRequest) {
        let scopes: Vec<String> = params
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
            .filter(|s| !s.is_empty())
            .collect();
        let service = params.iter().find(|(k, _)| k == "service").map(|(_, v)| v.clone());
        let mut rec = TokenRequest {
            user: user_pass.as_ref().map(|(u, _)| u.clone()),
            scopes: scopes.clone(),
            service,
            status: 200,
        };
        if let Some(code) = *self.failure.lock().unwrap() {
            rec.status = code;
            return (code, json!({"details": "injected failure"}), rec);
        }
        let authenticated = match &user_pass {
            Some((u, p)) if *u == self.user && *p == self.password => true,
            Some(_) => {
                rec.status = 401;
                return (401, json!({"details": "incorrect username or password"}), rec);
            }
            None if self.anonymous_pull => false,
            None => {
                rec.status = 401;
                return (401, json!({"details": "authentication required"}), rec);
            }
        };
        let access: Vec<(String, String, Vec<String>)> = scopes
            .iter()
            .filter_map(|s| parse_scope(s))
            .map(|(t, n, actions)| {
                let granted =
                    if authenticated { actions } else { actions.into_iter().filter(|a| a == "pull").collect() };
                (t, n, granted)
            })
            .collect();
        let subject = if authenticated { self.user.as_str() } else { "" };
        let token = self.signer.sign(subject, &access);
        let body = json!({
            "token": token,
            "access_token": token,
            "expires_in": self.signer.expires_in,
            "issued_at": rfc3339(unix_now()),
        });
        (200, body, rec)
    }
}

fn basic_credentials(req: &Request<Incoming>) -> Option<(String, String)> {
    let v = req.headers().get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(B64.decode(rest.trim()).ok()?).ok()?;
    let (u, p) = decoded.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn make_keys() -> (EcdsaKeyPair, Vec<String>, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "layerlink test token CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().expect("signing key");
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "layerlink test token signer");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &issuer).unwrap();

    let ring_key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        key.serialized_der(),
        &ring::rand::SystemRandom::new(),
    )
    .expect("ring accepts rcgen's PKCS#8");
    (ring_key, vec![B64.encode(cert.der())], ca_cert.pem())
}

impl TokenServer {
    /// Default options: user `tester`, no anonymous pull, 300 s tokens.
    pub fn start() -> TokenServer {
        TokenServer::start_with(TokenOptions::default())
    }

    pub fn start_with(opts: TokenOptions) -> TokenServer {
        let (key, x5c, root_pem) = make_keys();
        let state = Arc::new(State {
            signer: Signer {
                key,
                rng: ring::rand::SystemRandom::new(),
                x5c,
                issuer: opts.issuer,
                service: opts.service,
                expires_in: opts.expires_in.as_secs(),
                jti: AtomicU64::new(1),
            },
            user: opts.user,
            password: opts.password,
            anonymous_pull: opts.anonymous_pull,
            log: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
        });
        let st = state.clone();
        let server = BackgroundServer::start(move |req: Request<Incoming>| {
            let st = st.clone();
            async move {
                if req.uri().path() != "/token" {
                    return Some(json_response(404, json!({"details": "not found"})));
                }
                let creds = basic_credentials(&req);
                let mut params: Vec<(String, String)> =
                    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
                let (status, body, rec) = if req.method() == hyper::Method::POST {
                    let bytes = req.into_body().collect().await.ok()?.to_bytes();
                    params.extend(url::form_urlencoded::parse(&bytes).into_owned());
                    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                    let creds = match (get("username"), get("password")) {
                        (Some(u), Some(p)) => Some((u, p)),
                        _ => creds,
                    };
                    let (s, mut b, r) = st.handle(creds, params);
                    if s == 200 {
                        // The OAuth2 answer has no "token" key.
                        b.as_object_mut().unwrap().remove("token");
                    }
                    (s, b, r)
                } else {
                    st.handle(creds, params)
                };
                st.log.lock().unwrap().push(rec);
                Some(json_response(status, body))
            }
        });
        TokenServer { state, root_pem, server }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// "http://127.0.0.1:PORT/token", the registry's `auth.token.realm`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.addr())
    }

    pub fn service(&self) -> &str {
        &self.state.signer.service
    }

    pub fn issuer(&self) -> &str {
        &self.state.signer.issuer
    }

    /// PEM of the CA that issued the signing certificate (the registry's `rootcertbundle`).
    pub fn root_cert_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// (user, password) that is granted every action.
    pub fn credentials(&self) -> (String, String) {
        (self.state.user.clone(), self.state.password.clone())
    }

    /// Token requests answered so far (any status).
    pub fn requests(&self) -> usize {
        self.state.log.lock().unwrap().len()
    }

    /// Every token request so far, in order.
    pub fn request_log(&self) -> Vec<TokenRequest> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn reset_counts(&self) {
        self.state.log.lock().unwrap().clear();
    }

    /// Make every token request fail with this status (None: back to normal).
    pub fn set_failure(&self, status: Option<u16>) {
        *self.state.failure.lock().unwrap() = status;
    }

    /// A token for the configured user granting `scope` (e.g. "repository:app:pull"), made
    /// directly, without an HTTP request (not counted).
    pub fn issue_token(&self, scope: &str) -> String {
        let access: Vec<_> = parse_scope(scope).into_iter().collect();
        self.state.signer.sign(&self.state.user, &access)
    }
}
