//! The HTTPS listener under hostile clients, driven by raw TLS clients (tokio-rustls) against the
//! real `layerlink serve`: half-sent headers, stalled bodies, idle keep-alive connections, more
//! connections than the cap, an HTTP/2 preface, many stalled bodies at once (memory), and a port
//! that is already taken at startup.

mod support;

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use layerlink::admission::fixtures;
use support::webhook::{Webhook, free_port, make_certs};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream, rustls};

/// Generous upper bound for "the server closed it": far above every timeout the tests configure.
const CLOSES_WITHIN: Duration = Duration::from_secs(15);

fn connector(webhook: &Webhook, alpn: &[&str]) -> TlsConnector {
    layerlink::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &webhook.ca_pem()[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to the webhook offering `alpn`.
async fn tls(webhook: &Webhook, alpn: &[&str]) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(webhook.https).await?;
    let name = rustls::pki_types::ServerName::IpAddress(webhook.https.ip().into());
    connector(webhook, alpn).connect(name, tcp).await
}

/// Reads until the server closes the connection; what it sent before, or `None` if it was still
/// open after `within`.
async fn read_until_closed<S: AsyncReadExt + Unpin>(stream: &mut S, within: Duration) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// One keep-alive request on `stream` and the response head and body (read by Content-Length).
async fn exchange<S: AsyncReadExt + AsyncWriteExt + Unpin>(stream: &mut S, body: &[u8]) -> String {
    let head = format!(
        "POST /mutate?timeout=10s HTTP/1.1\r\nHost: layerlink\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(CLOSES_WITHIN, stream.read(&mut buf)).await.expect("an answer").unwrap();
        assert!(n > 0, "closed before answering: {}", String::from_utf8_lossy(&response));
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .expect("a Content-Length");
            if response.len() >= end + 4 + length {
                return text.into_owned();
            }
        }
    }
}

fn review_body() -> Vec<u8> {
    serde_json::to_vec(&fixtures::json("pod-create-simple.json")).unwrap()
}

/// A review through a fresh connection (the ordinary client) is still answered.
async fn still_answers(webhook: &Webhook) {
    let (status, body) = webhook.post("/mutate", review_body()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["allowed"], true, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_headers_and_stalled_handshakes_are_disconnected() {
    let webhook = Webhook::start_listening("headerTimeout: 1s, idleTimeout: 1m", "");
    let mut half = tls(&webhook, &["http/1.1"]).await.unwrap();
    half.write_all(b"POST /mutate HTTP/1.1\r\nHost: layerlink\r\nContent-").await.unwrap();
    // A TCP connection that never starts its TLS handshake.
    let mut silent = TcpStream::connect(webhook.https).await.unwrap();
    still_answers(&webhook).await;
    let started = Instant::now();
    let sent = read_until_closed(&mut half, CLOSES_WITHIN).await.expect("half-sent headers were never disconnected");
    eprintln!("half-sent headers closed after {:?}", started.elapsed());
    assert!(String::from_utf8_lossy(&sent).is_empty() || String::from_utf8_lossy(&sent).starts_with("HTTP/1.1 408"));
    assert!(read_until_closed(&mut silent, CLOSES_WITHIN).await.is_some(), "a silent TCP connection stays open");
    still_answers(&webhook).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_gets_408_and_the_connection_is_closed() {
    let webhook = Webhook::start_listening("bodyTimeout: 1s", "");
    let mut stalled = tls(&webhook, &["http/1.1"]).await.unwrap();
    stalled
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: layerlink\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"apiVersion\"")
        .await
        .unwrap();
    still_answers(&webhook).await;
    let sent = read_until_closed(&mut stalled, CLOSES_WITHIN).await.expect("a stalled body was never disconnected");
    let sent = String::from_utf8_lossy(&sent);
    assert!(sent.starts_with("HTTP/1.1 408"), "answer to a stalled body: {sent:?}");
    still_answers(&webhook).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connections_are_closed() {
    // The idle timeout is shorter than the header timeout: closing is its doing.
    let webhook = Webhook::start_listening("idleTimeout: 1s, headerTimeout: 1m", "");
    let mut used = tls(&webhook, &["http/1.1"]).await.unwrap();
    let response = exchange(&mut used, &review_body()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let mut unused = tls(&webhook, &["http/1.1"]).await.unwrap();
    let started = Instant::now();
    assert!(read_until_closed(&mut used, CLOSES_WITHIN).await.is_some(), "an idle keep-alive connection stays open");
    assert!(read_until_closed(&mut unused, CLOSES_WITHIN).await.is_some(), "a connection with no request stays open");
    eprintln!("idle connections closed after {:?}", started.elapsed());
    still_answers(&webhook).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_cap_are_closed_and_the_others_keep_working() {
    let webhook = Webhook::start_listening("maxConnections: 4", "");
    let mut first = tls(&webhook, &["http/1.1"]).await.unwrap();
    assert!(exchange(&mut first, &review_body()).await.starts_with("HTTP/1.1 200"));
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tls(&webhook, &["http/1.1"]).await.unwrap());
    }
    // The fifth connection is closed: its handshake fails, or it reads end of stream at once.
    match tls(&webhook, &["http/1.1"]).await {
        Err(_) => {}
        Ok(mut extra) => {
            let _ = extra.write_all(b"GET /mutate HTTP/1.1\r\nHost: layerlink\r\n\r\n").await;
            let sent =
                read_until_closed(&mut extra, CLOSES_WITHIN).await.expect("a connection over the cap stays open");
            assert!(sent.is_empty(), "a connection over the cap was served: {}", String::from_utf8_lossy(&sent));
        }
    }
    // The connections already open keep working.
    assert!(exchange(&mut first, &review_body()).await.starts_with("HTTP/1.1 200"));
    assert!(exchange(&mut held[0], &review_body()).await.starts_with("HTTP/1.1 200"));
    // One closes: a new connection is served again.
    drop(held.pop());
    let deadline = Instant::now() + CLOSES_WITHIN;
    loop {
        if let Ok(mut again) = tls(&webhook, &["http/1.1"]).await
            && let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), async {
                again
                    .write_all(
                        format!("POST /mutate HTTP/1.1\r\nHost: l\r\nContent-Length: {}\r\n\r\n", review_body().len())
                            .as_bytes(),
                    )
                    .await?;
                again.write_all(&review_body()).await?;
                let mut buf = [0u8; 12];
                again.read_exact(&mut buf).await
            })
            .await
            && n == 12
        {
            break;
        }
        assert!(Instant::now() < deadline, "a freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_is_refused_as_alpn_says() {
    let webhook = Webhook::start("");
    // ALPN offers only http/1.1: a client that wants only h2 gets no connection.
    assert!(tls(&webhook, &["h2"]).await.is_err(), "an h2-only client was accepted");
    // A client offering both is given http/1.1 …
    let mut both = tls(&webhook, &["h2", "http/1.1"]).await.unwrap();
    assert_eq!(both.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    // … and an HTTP/2 preface on it (or with no ALPN at all) is not spoken to as HTTP/2.
    let mut none = tls(&webhook, &[]).await.unwrap();
    for stream in [&mut both, &mut none] {
        stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
        let sent = read_until_closed(stream, CLOSES_WITHIN).await.expect("the connection stays open");
        assert!(
            sent.is_empty() || sent.starts_with(b"HTTP/1.1 "),
            "answered an HTTP/2 preface with something other than HTTP/1.1: {:?}",
            &sent[..sent.len().min(32)]
        );
    }
    still_answers(&webhook).await;
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// 64 clients each send all but the last byte of a 4 MiB body and stall. The timeouts are far
/// longer than the test, so only a bound on buffered bytes can keep the server's memory down.
#[tokio::test(flavor = "multi_thread")]
async fn many_stalled_bodies_stay_within_a_memory_bound() {
    const CLIENTS: usize = 64;
    const BODY: usize = 4 * 1024 * 1024;
    let webhook = Webhook::start_listening("bodyTimeout: 5m, headerTimeout: 5m, idleTimeout: 5m", "");
    still_answers(&webhook).await;
    let before = rss_bytes(webhook.pid());
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut stream = tls(&webhook, &["http/1.1"]).await.unwrap();
        clients.push(tokio::spawn(async move {
            let head = format!("POST /mutate HTTP/1.1\r\nHost: layerlink\r\nContent-Length: {BODY}\r\n\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 0;
            while sent < BODY - 1 {
                let n = chunk.len().min(BODY - 1 - sent);
                if stream.write_all(&chunk[..n]).await.is_err() {
                    break;
                }
                sent += n;
            }
            let _ = stream.flush().await;
            // Hold the connection open, stalled one byte short.
            tokio::time::sleep(Duration::from_secs(600)).await;
            drop(stream);
        }));
    }
    // Sample until the server's memory stops moving (or 60 s), keeping the highest reading.
    let (mut peak, mut last, mut steady) = (before, before, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while steady < 8 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_bytes(webhook.pid());
        peak = peak.max(now);
        steady = if now.abs_diff(last) < 512 * 1024 { steady + 1 } else { 0 };
        last = now;
    }
    let grown = peak.saturating_sub(before);
    eprintln!(
        "{CLIENTS} stalled {} MiB bodies: RSS {} MiB before, peak {} MiB (+{} MiB)",
        BODY >> 20,
        before >> 20,
        peak >> 20,
        grown >> 20
    );
    assert!(
        grown < 96 * 1024 * 1024,
        "RSS grew by {} MiB under {CLIENTS} stalled {} MiB bodies",
        grown >> 20,
        BODY >> 20
    );
    for client in clients {
        client.abort();
    }
}

/// A config whose listeners are `https` and `http`, with fresh certificates, in `dir`.
fn serve_config(dir: &std::path::Path, https: SocketAddr, http: SocketAddr) -> std::path::PathBuf {
    make_certs(dir);
    let path = dir.join("config.yaml");
    let d = dir.display();
    let yaml = format!(
        "listen: {{ https: \"{https}\", http: \"{http}\" }}\ntls: {{ certFile: {d}/tls.crt, keyFile: {d}/tls.key }}\n"
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Runs `layerlink serve` and returns its exit status and stderr, or panics if it is still
/// running after 20 s (killing it first).
fn serve_until_exit(config: &std::path::Path) -> (std::process::ExitStatus, String) {
    let dir = config.parent().unwrap();
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_layerlink"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, std::fs::read_to_string(dir.join("serve.log")).unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("serve kept running with a port taken: {}", std::fs::read_to_string(dir.join("serve.log")).unwrap());
}

#[test]
fn serve_exits_non_zero_naming_the_address_when_a_port_is_taken() {
    for taken_is_https in [true, false] {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap();
        let free: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let (https, http) = if taken_is_https { (busy, free) } else { (free, busy) };
        let dir = tempfile::tempdir().unwrap();
        let (status, stderr) = serve_until_exit(&serve_config(dir.path(), https, http));
        assert!(!status.success(), "exit status {status}: {stderr}");
        assert!(stderr.contains(&busy.to_string()), "the message names {busy}: {stderr}");
        drop(taken);
    }
}
