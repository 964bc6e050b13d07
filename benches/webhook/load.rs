//! The load generator: keep-alive HTTP/1.1 over TLS (hyper client connections on tokio-rustls,
//! ring), one request in flight per connection, run on a current-thread tokio runtime.
//!
//! - [`closed`]: every connection sends its next request as soon as the previous answer is read.
//! - [`open`]: a fixed rate, wrk2-style: connection `c` of `C` owns the send times
//!   `start + (c + k·C)/rate`. When an answer comes back after the next send time, the next
//!   request goes out at once and its latency counts from its *intended* send time, so a stall
//!   is charged for every request it held back (coordinated omission corrected). When the
//!   connection was idle at the intended time, the latency counts from the actual send, so the
//!   generator's own timer lateness (tokio's timer has 1 ms granularity) is not charged to the
//!   server. The plain "from intended send time" histogram, which includes that timer lateness,
//!   is kept as well.
//! - [`burst`]: N connections opened first, then N requests released at the same instant.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Request, client::conn::http1::SendRequest, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type Hist = Histogram<u64>;

/// Latencies in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn hist() -> Hist {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Where to send and what.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls: Arc<rustls::ClientConfig>,
    /// Path and query, e.g. `/mutate?timeout=10s`.
    pub path: String,
    /// Bodies sent in turn (the same review with distinct uids).
    pub bodies: Arc<Vec<Bytes>>,
}

pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    /// The negotiated TLS version and cipher suite, e.g. "TLSv1_3 TLS13_AES_256_GCM_SHA384".
    pub tls: String,
}

pub async fn connect(target: &Target) -> std::io::Result<Conn> {
    let tcp = TcpStream::connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    let connector = tokio_rustls::TlsConnector::from(target.tls.clone());
    let name = rustls::pki_types::ServerName::IpAddress(target.addr.ip().into());
    let stream = connector.connect(name, tcp).await?;
    let (_, session) = stream.get_ref();
    let tls = format!(
        "{} {} ALPN {}",
        session.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default(),
        session.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default(),
        session.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_else(|| "none".into())
    );
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Conn { sender, tls })
}

impl Conn {
    /// One request; returns (status, body).
    pub async fn send(&mut self, target: &Target, body: Bytes) -> Result<(u16, Bytes), String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let request = Request::post(target.path.as_str())
            .header(header::HOST, target.addr.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let response = self.sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, body))
    }
}

/// Opens `n` connections, at most 64 handshakes at a time.
pub async fn connect_many(target: &Target, n: usize) -> std::io::Result<Vec<Conn>> {
    use futures::StreamExt;
    futures::stream::iter(0..n)
        .map(|_| connect(target))
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

#[derive(Default)]
pub struct Outcome {
    pub ok: u64,
    pub errors: u64,
    /// First few error descriptions.
    pub error_samples: Vec<String>,
    pub elapsed: Duration,
}

impl Outcome {
    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.error_samples.len() < 3 {
            self.error_samples.push(e);
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        self.errors += other.errors;
        for e in other.error_samples {
            if self.error_samples.len() < 3 {
                self.error_samples.push(e);
            }
        }
    }
}

fn check(result: Result<(u16, Bytes), String>, outcome: &mut Outcome) {
    match result {
        Ok((200, _)) => outcome.ok += 1,
        Ok((status, body)) => outcome.error(format!("HTTP {status}: {}", String::from_utf8_lossy(&body))),
        Err(e) => outcome.error(e),
    }
}

pub struct Closed {
    pub outcome: Outcome,
    pub latency: Hist,
}

impl Closed {
    pub fn throughput(&self) -> f64 {
        self.outcome.ok as f64 / self.outcome.elapsed.as_secs_f64()
    }
}

/// Closed loop: `conns` connections, each sending back to back for `duration`.
pub async fn closed(target: &Target, conns: usize, duration: Duration) -> std::io::Result<Closed> {
    let connections = connect_many(target, conns).await?;
    let start = Instant::now();
    let end = start + duration;
    let tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(c, mut conn)| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut outcome = Outcome::default();
                let mut latency = hist();
                let mut i = c;
                while Instant::now() < end {
                    let body = target.bodies[i % target.bodies.len()].clone();
                    i += conns;
                    let sent = Instant::now();
                    let result = conn.send(&target, body).await;
                    latency.saturating_record(sent.elapsed().as_micros() as u64);
                    let failed = result.is_err();
                    check(result, &mut outcome);
                    if failed {
                        match connect(&target).await {
                            Ok(c) => conn = c,
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                }
                (outcome, latency)
            })
        })
        .collect();
    let mut total = Outcome::default();
    let mut latency = hist();
    for task in tasks {
        let (outcome, h) = task.await.expect("closed-loop task");
        total.merge(outcome);
        latency.add(h).expect("same histogram bounds");
    }
    total.elapsed = start.elapsed();
    Ok(Closed { outcome: total, latency })
}

pub struct Open {
    pub outcome: Outcome,
    /// Coordinated omission corrected, without the generator's own timer lateness.
    pub corrected: Hist,
    /// From each request's intended send time, always (includes the generator's timer lateness).
    pub from_intended: Hist,
    /// Service time alone: from the actual send to the end of the answer (not corrected).
    pub service: Hist,
    /// Requests sent after their connection fell behind schedule.
    pub late_sends: u64,
}

/// Open loop at `rate` requests/s over `conns` connections for `duration`.
pub async fn open(target: &Target, conns: usize, rate: f64, duration: Duration) -> std::io::Result<Open> {
    let connections = connect_many(target, conns).await?;
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let end = start + duration;
    let interval = Duration::from_secs_f64(conns as f64 / rate);
    let tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(c, mut conn)| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut outcome = Outcome::default();
                let (mut corrected, mut from_intended, mut service) = (hist(), hist(), hist());
                let mut late_sends = 0u64;
                let mut intended = start + Duration::from_secs_f64(c as f64 / rate);
                let mut i = c;
                while intended < end {
                    let idle = tokio::time::Instant::now() < intended;
                    if idle {
                        tokio::time::sleep_until(intended).await;
                    } else {
                        late_sends += 1;
                    }
                    let body = target.bodies[i % target.bodies.len()].clone();
                    i += conns;
                    let actual = tokio::time::Instant::now();
                    let result = conn.send(&target, body).await;
                    let done = tokio::time::Instant::now();
                    let us = |d: Duration| d.as_micros() as u64;
                    from_intended.saturating_record(us(done - intended));
                    service.saturating_record(us(done - actual));
                    corrected.saturating_record(us(if idle { done - actual } else { done - intended }));
                    let failed = result.is_err();
                    check(result, &mut outcome);
                    if failed && let Ok(c) = connect(&target).await {
                        conn = c;
                    }
                    intended += interval;
                }
                (outcome, corrected, from_intended, service, late_sends)
            })
        })
        .collect();
    let mut total = Outcome::default();
    let (mut corrected, mut from_intended, mut service) = (hist(), hist(), hist());
    let mut late_sends = 0;
    for task in tasks {
        let (outcome, c, f, s, l) = task.await.expect("open-loop task");
        total.merge(outcome);
        corrected.add(c).expect("same bounds");
        from_intended.add(f).expect("same bounds");
        service.add(s).expect("same bounds");
        late_sends += l;
    }
    total.elapsed = start.elapsed();
    Ok(Open { outcome: total, corrected, from_intended, service, late_sends })
}

pub struct Burst {
    pub outcome: Outcome,
    pub latency: Hist,
    /// Every response body (for checking).
    pub bodies: Vec<Bytes>,
}

/// `n` connections, then `n` requests released at once (one per connection).
pub async fn burst(target: &Target, n: usize) -> std::io::Result<Burst> {
    let connections = connect_many(target, n).await?;
    let start = Instant::now();
    let requests = connections.into_iter().enumerate().map(|(i, mut conn)| {
        let target = target.clone();
        async move {
            let body = target.bodies[i % target.bodies.len()].clone();
            let result = conn.send(&target, body).await;
            (start.elapsed(), result)
        }
    });
    let results = futures::future::join_all(requests).await;
    let mut outcome = Outcome::default();
    let mut latency = hist();
    let mut bodies = Vec::new();
    for (elapsed, result) in results {
        latency.saturating_record(elapsed.as_micros() as u64);
        if let Ok((_, body)) = &result {
            bodies.push(body.clone());
        }
        check(result, &mut outcome);
    }
    outcome.elapsed = start.elapsed();
    Ok(Burst { outcome, latency, bodies })
}
