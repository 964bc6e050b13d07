//! The listeners: accept loops that protect the process from their clients.
//!
//! Every connection is HTTP/1.1 only (the TLS config offers only `http/1.1` by ALPN, and an
//! HTTP/2 preface is answered `505` and closed), and lives in one of three phases, each with its
//! own bound:
//!
//! - **idle** (after the handshake, between requests): closed after `idleTimeout`;
//! - **head** (from the first byte of a request, and the TLS handshake, until its headers are
//!   in): closed after `headerTimeout`; headers larger than [`MAX_HEAD`] get `431`;
//! - **busy** (a request being read and answered): its body must arrive within `bodyTimeout`
//!   (`408` and close otherwise); the answer is bounded by the review's own budget.
//!
//! At most `maxConnections` connections are open; more are closed as soon as they are accepted.
//! Bodies are read into memory only against a process-wide budget of bytes ([`BODY_BUDGET`]),
//! reserved as they arrive and held until the answer is written, so stalled or slow bodies cannot
//! grow memory past it however many connections send them: a request that finds the budget spent
//! waits (inside its body timeout) for bytes to be released.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    http::{Request, Response, StatusCode, header},
};
use axum_server::tls_rustls::RustlsConfig;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, OwnedSemaphorePermit, Semaphore, watch},
};
use tower::ServiceExt;

use crate::{Error, config};

/// Largest request head (request line and headers) read; more is answered `431`.
pub const MAX_HEAD: usize = 16 * 1024;
/// Bytes of request bodies held in memory at once, over every connection of a listener.
pub const BODY_BUDGET: usize = 32 * 1024 * 1024;
/// Time given to open connections to finish once the listener stops accepting.
pub const DRAIN: Duration = Duration::from_secs(20);

/// What one listener allows its clients.
#[derive(Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Largest body of one request; larger ones are refused with `413` before they are read.
    pub max_body: usize,
    /// The listener's budget of buffered body bytes.
    pub body_budget: usize,
}

impl Limits {
    /// The HTTPS admission listener.
    pub fn admission(listen: &config::Listen, max_body: usize) -> Self {
        Limits {
            header_timeout: listen.header_timeout,
            body_timeout: listen.body_timeout,
            idle_timeout: listen.idle_timeout,
            max_connections: listen.max_connections,
            max_body,
            body_budget: BODY_BUDGET,
        }
    }

    /// The plain HTTP listener (health and metrics): the same timeouts, few connections, no
    /// real bodies, and a budget of its own so it never competes with admission.
    pub fn health(listen: &config::Listen) -> Self {
        Limits {
            max_connections: HEALTH_CONNECTIONS,
            max_body: HEALTH_BODY,
            body_budget: HEALTH_CONNECTIONS * HEALTH_BODY,
            ..Limits::admission(listen, HEALTH_BODY)
        }
    }
}

/// Probes and scrapes need a handful of connections; a few hundred leave room for many scrapers.
const HEALTH_CONNECTIONS: usize = 256;
/// The health routes take no body.
const HEALTH_BODY: usize = 8 * 1024;

/// Binds `address`, or an error that names it.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(address).await.map_err(|e| Error::Listen { address, message: e.to_string() })
}

/// Serves `router` on `listener` (over TLS when `tls` is set) until `shutdown` turns true, then
/// stops accepting and gives open connections [`DRAIN`] to finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<RustlsConfig>,
    router: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let budget = Arc::new(Semaphore::new(limits.body_budget));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, limit = limits.max_connections, "connection refused: too many open");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            router: router.clone(),
            limits: limits.clone(),
            budget: budget.clone(),
            shutdown: shutdown.clone(),
            _slot: slot,
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(tls) => connection.serve_tls(stream, tls).await,
                None => connection.serve(stream, Activity::new(Phase::Idle)).await,
            }
        });
    }
    drop(listener);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, slots.acquire_many(all)).await.is_err() {
        tracing::warn!("connections still open after {}s; closing them", DRAIN.as_secs());
    }
}

struct Connection {
    router: Router,
    limits: Arc<Limits>,
    budget: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
    /// The connection's place under `maxConnections`, given back when it closes.
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    /// The TLS handshake is bounded like a request head.
    async fn serve_tls(self, stream: TcpStream, tls: RustlsConfig) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.get_inner());
        match tokio::time::timeout(self.limits.header_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => self.serve(stream, Activity::new(Phase::Idle)).await,
            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake not done within the header timeout"),
        }
    }

    async fn serve<S>(mut self, stream: S, activity: Arc<Activity>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = {
            let (router, limits, budget, activity) =
                (self.router.clone(), self.limits.clone(), self.budget.clone(), activity.clone());
            hyper::service::service_fn(move |request| {
                let (router, limits, budget, activity) =
                    (router.clone(), limits.clone(), budget.clone(), activity.clone());
                async move {
                    activity.enter(Phase::Busy);
                    let response = answer(request, router, &limits, budget).await;
                    activity.enter(Phase::Idle);
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let io = TokioIo::new(Watched { inner: stream, activity: activity.clone() });
        let connection = hyper::server::conn::http1::Builder::new()
            .max_buf_size(MAX_HEAD)
            .header_read_timeout(None)
            .serve_connection(io, service);
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            let deadline = activity.deadline(&self.limits);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = sleep_until(deadline) => {
                    if activity.deadline(&self.limits).is_some_and(|d| d <= Instant::now()) {
                        tracing::debug!(phase = activity.phase().as_str(), "connection closed: timeout");
                        return;
                    }
                }
                _ = activity.changed.notified() => {}
                _ = self.shutdown.wait_for(|stop| *stop), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Reads the body within its timeout and budget, then runs the router on it.
async fn answer(request: Request<Incoming>, router: Router, limits: &Limits, budget: Arc<Semaphore>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        // Read and drop what the client is still sending (bounded), so it sees the answer
        // rather than a reset.
        tokio::spawn(discard(body, limits.max_body * 2, limits.body_timeout));
        return refusal(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let read = read_body(body, declared.unwrap_or(0) as usize, limits.max_body, budget);
    let (bytes, held) = match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(read)) => read,
        Ok(Err(status)) => return refusal(status, status.canonical_reason().unwrap_or("bad request body")),
        Err(_) => return refusal(StatusCode::REQUEST_TIMEOUT, "request body not received in time"),
    };
    let response = router.oneshot(Request::from_parts(parts, Body::from(bytes))).await;
    // The body's bytes stay reserved until the answer is built: the handler reads from them.
    drop(held);
    match response {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The body, each chunk reserved from `budget` before it is kept.
async fn read_body(
    mut body: Incoming,
    declared: usize,
    max: usize,
    budget: Arc<Semaphore>,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), StatusCode> {
    let mut bytes = Vec::with_capacity(declared.min(max));
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| StatusCode::BAD_REQUEST)?;
        let Ok(data) = frame.into_data() else { continue };
        if bytes.len() + data.len() > max {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
        let n = u32::try_from(data.len()).map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)?;
        if n > 0 {
            let more = budget.clone().acquire_many_owned(n).await.expect("the budget is never closed");
            match held.as_mut() {
                Some(held) => held.merge(more),
                None => held = Some(more),
            }
        }
        bytes.extend_from_slice(&data);
    }
    Ok((Bytes::from(bytes), held))
}

/// Reads and drops up to `limit` bytes of `body` within `within`.
async fn discard(mut body: Incoming, limit: usize, within: Duration) {
    let _ = tokio::time::timeout(within, async {
        let mut seen = 0;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > limit {
                break;
            }
        }
    })
    .await;
}

/// A short plain-text refusal that closes the connection (the request was not fully read).
fn refusal(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    response
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Head,
    Busy,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Head => "head",
            Phase::Busy => "busy",
        }
    }
}

/// Where a connection is, and since when; `changed` wakes its watcher.
struct Activity {
    state: parking_lot::Mutex<(Phase, Instant)>,
    changed: Notify,
}

impl Activity {
    fn new(phase: Phase) -> Arc<Self> {
        Arc::new(Activity { state: parking_lot::Mutex::new((phase, Instant::now())), changed: Notify::new() })
    }

    fn phase(&self) -> Phase {
        self.state.lock().0
    }

    fn enter(&self, phase: Phase) {
        *self.state.lock() = (phase, Instant::now());
        self.changed.notify_one();
    }

    /// Bytes arrived: an idle connection has started a request.
    fn received(&self) {
        let mut state = self.state.lock();
        if state.0 == Phase::Idle {
            *state = (Phase::Head, Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let (phase, since) = *self.state.lock();
        match phase {
            Phase::Idle => Some(since + limits.idle_timeout),
            Phase::Head => Some(since + limits.header_timeout),
            // The body timeout and the review's budget bound a busy connection.
            Phase::Busy => None,
        }
    }
}

/// A stream that tells its connection's [`Activity`] when bytes arrive.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.received();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
