//! A real HTTP/1.1 reverse proxy in front of a (plain HTTP) registry, for counting requests and
//! injecting faults a real registry cannot show on demand; and a bare TCP [`Listener`] that only
//! counts connections.
//!
//! Both run on their own thread (the proxy with its own tokio runtime), so they work from plain
//! `#[test]` and from `#[tokio::test]`, and stop on Drop.

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

pub type Body = BoxBody<Bytes, hyper::Error>;

/// The service error that makes hyper close a connection without answering.
#[derive(Debug)]
struct ClosedByTest;

impl std::fmt::Display for ClosedByTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed by the test server")
    }
}

impl std::error::Error for ClosedByTest {}

/// A full body from bytes.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// An HTTP/1.1 server on 127.0.0.1:0 running `handler` on a dedicated thread and tokio
/// runtime. A handler that returns `None` makes the connection close with no response. Dropping it stops the runtime, which closes every connection and pending request.
pub struct BackgroundServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundServer {
    pub fn start<H, F>(handler: H) -> BackgroundServer
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Option<Response<Body>>> + Send + 'static,
    {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let conns = connections.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handler = Arc::new(handler);
        let thread = std::thread::Builder::new()
            .name(format!("test-server-{addr}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let accept = async {
                        loop {
                            let Ok((stream, _)) = listener.accept().await else {
                                continue;
                            };
                            conns.fetch_add(1, Ordering::SeqCst);
                            let handler = handler.clone();
                            tokio::spawn(async move {
                                let svc = service_fn(move |req| {
                                    let fut = handler(req);
                                    async move { fut.await.ok_or(ClosedByTest) }
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            });
                        }
                    };
                    tokio::select! {
                        _ = rx => {}
                        _ = accept => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .expect("spawn server thread");
        BackgroundServer { addr, connections, shutdown: Some(tx), thread: Some(thread) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn reset_connections(&self) {
        self.connections.store(0, Ordering::SeqCst);
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the proxy does to a request instead of (or before) forwarding it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward untouched.
    #[default]
    None,
    /// Answer with this status (and `Retry-After` seconds if given) and a distribution-style
    /// JSON error body, without forwarding.
    Status { code: u16, retry_after: Option<u64> },
    /// Read the request, never answer (until the fault is cleared the request stays pending;
    /// the connection closes when the proxy is dropped).
    Hang,
    /// Wait, then forward.
    Delay(Duration),
    /// Close the connection without any response.
    Close,
    /// Forward, but remove `Docker-Content-Digest` from the response.
    StripDigest,
}

#[derive(Default)]
struct Rule {
    fault: Fault,
    /// Only requests whose path+query contains this.
    path_contains: Option<String>,
    /// Only this many more requests; then the rule reverts to `Fault::None`.
    remaining: Option<usize>,
}

#[derive(Default)]
struct State {
    rule: Mutex<Rule>,
    requests: Mutex<Vec<(String, String, Option<String>)>>,
    /// Requests being handled now, and the most seen at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Counts a request as in flight until dropped (when its answer is ready or it is abandoned).
struct InFlight(Arc<State>);

impl InFlight {
    fn new(state: Arc<State>) -> InFlight {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl State {
    fn take_fault(&self, path: &str) -> Fault {
        let mut rule = self.rule.lock().unwrap();
        if rule.fault == Fault::None {
            return Fault::None;
        }
        if let Some(p) = &rule.path_contains
            && !path.contains(p.as_str())
        {
            return Fault::None;
        }
        let fault = rule.fault.clone();
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                *rule = Rule::default();
            }
        }
        fault
    }
}

/// A reverse proxy to `upstream` (plain HTTP). It keeps the client's Host header, so URLs the
/// registry builds (upload Locations) point back at the proxy.
pub struct Proxy {
    state: Arc<State>,
    server: BackgroundServer,
    upstream: SocketAddr,
}

fn status_response(code: u16, retry_after: Option<u64>) -> Response<Body> {
    let status = StatusCode::from_u16(code).expect("valid status code");
    let error_code = match code {
        401 => "UNAUTHORIZED",
        403 => "DENIED",
        404 => "MANIFEST_UNKNOWN",
        429 => "TOOMANYREQUESTS",
        _ => "UNAVAILABLE",
    };
    let body = format!(r#"{{"errors":[{{"code":"{error_code}","message":"injected by test proxy","detail":null}}]}}"#);
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .header("docker-distribution-api-version", "registry/2.0");
    if let Some(s) = retry_after {
        b = b.header("retry-after", s.to_string());
    }
    b.body(full(body)).unwrap()
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let state = Arc::new(State::default());
        let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build_http();
        let st = state.clone();
        let server = BackgroundServer::start(move |mut req: Request<Incoming>| {
            let st = st.clone();
            let client = client.clone();
            async move {
                let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
                let auth =
                    req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
                st.requests.lock().unwrap().push((req.method().to_string(), path.clone(), auth));
                let _in_flight = InFlight::new(st.clone());
                let fault = st.take_fault(&path);
                match fault {
                    Fault::Status { code, retry_after } => {
                        return Some(status_response(code, retry_after));
                    }
                    Fault::Hang => std::future::pending::<()>().await,
                    Fault::Delay(d) => tokio::time::sleep(d).await,
                    // No response: the service errors and hyper drops the connection.
                    Fault::Close => return None,
                    Fault::None | Fault::StripDigest => {}
                }
                *req.uri_mut() = format!("http://{upstream}{path}").parse().unwrap();
                req.headers_mut().remove(hyper::header::CONNECTION);
                match client.request(req).await {
                    Ok(resp) => {
                        let (mut parts, body) = resp.into_parts();
                        if fault == Fault::StripDigest {
                            parts.headers.remove("docker-content-digest");
                        }
                        Some(Response::from_parts(parts, body.boxed()))
                    }
                    Err(e) => Some(
                        Response::builder()
                            .status(StatusCode::BAD_GATEWAY)
                            .body(full(format!("test proxy: upstream error: {e}")))
                            .unwrap(),
                    ),
                }
            }
        });
        Proxy { state, server, upstream }
    }

    /// "127.0.0.1:PORT"
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Apply `f` to every request from now on.
    pub fn set_fault(&self, f: Fault) {
        *self.state.rule.lock().unwrap() = Rule { fault: f, ..Rule::default() };
    }

    /// Apply `f` to the next `n` requests, then forward normally again.
    pub fn set_fault_times(&self, f: Fault, n: usize) {
        *self.state.rule.lock().unwrap() = Rule { fault: f, path_contains: None, remaining: (n > 0).then_some(n) };
        if n == 0 {
            self.set_fault(Fault::None);
        }
    }

    /// Apply `f` only to requests whose path+query contains `path_contains`.
    pub fn set_fault_on(&self, path_contains: &str, f: Fault) {
        *self.state.rule.lock().unwrap() =
            Rule { fault: f, path_contains: Some(path_contains.to_string()), remaining: None };
    }

    /// Requests seen (including faulted ones) with this method (case-insensitive; "" for any)
    /// whose path+query contains `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| (method.is_empty() || m.eq_ignore_ascii_case(method)) && p.contains(path_contains))
            .count()
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.server.connections()
    }

    /// The most requests the proxy was handling at one time.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Forget requests and connections seen so far (the fault stays).
    pub fn reset_counts(&self) {
        self.state.requests.lock().unwrap().clear();
        self.state.max_in_flight.store(0, Ordering::SeqCst);
        self.server.reset_connections();
    }

    /// (method, path+query, Authorization header) of every request so far, in order.
    pub fn requests(&self) -> Vec<(String, String, Option<String>)> {
        self.state.requests.lock().unwrap().clone()
    }
}

/// Accepts TCP connections on 127.0.0.1:0, counts them and closes them at once. Nothing else:
/// an address that must never be contacted (SSRF tests expect zero connections).
pub struct Listener {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    pub fn start() -> Listener {
        let l = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (connections.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((stream, _)) => {
                        c.fetch_add(1, Ordering::SeqCst);
                        drop(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Listener { addr, connections, stop, thread: Some(thread) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
