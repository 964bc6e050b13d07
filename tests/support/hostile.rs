//! A hostile registry: HTTP/1.1 spoken by hand over a std `TcpListener`, for what a polite HTTP
//! library would not send (endless chunked bodies, huge headers, lies in headers and bodies).
//! Each request is handed to the test's handler with its connection; the handler writes whatever
//! bytes it likes. Counts connections, bytes sent, and connections the client hung up on.
//!
//! Runs on its own threads (one per connection), so it works from `#[test]` and
//! `#[tokio::test]`; stops on Drop.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The most an endless body sends before the server gives up (a client that reads it all).
pub const ENDLESS_CAP: u64 = 256 << 20;

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// One accepted connection, as the handler writes to it.
pub struct Conn {
    stream: TcpStream,
    sent: Arc<AtomicU64>,
}

impl Conn {
    /// Raw bytes, counted.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.sent.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        Ok(())
    }

    /// A complete answer with `Content-Length` (no body bytes for HEAD, as HTTP says).
    pub fn respond(&mut self, req: &Request, status: u16, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        let mut head = format!("HTTP/1.1 {status} Hostile\r\nContent-Length: {}\r\n", body.len());
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        self.write(head.as_bytes())?;
        if !req.is_head() {
            self.write(body)?;
        }
        Ok(())
    }

    /// A chunked body that never ends (until [`ENDLESS_CAP`] bytes, or the client hangs up, which
    /// is the `Err`).
    pub fn endless(&mut self, status: u16, headers: &[(&str, &str)]) -> io::Result<()> {
        let mut head = format!("HTTP/1.1 {status} Hostile\r\nTransfer-Encoding: chunked\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        self.write(head.as_bytes())?;
        let mut chunk = b"10000\r\n".to_vec();
        chunk.extend(std::iter::repeat_n(b'{', 0x10000));
        chunk.extend_from_slice(b"\r\n");
        let start = self.sent.load(Ordering::SeqCst);
        while self.sent.load(Ordering::SeqCst) - start < ENDLESS_CAP {
            self.write(&chunk)?;
        }
        self.write(b"0\r\n\r\n")
    }
}

type Handler = dyn Fn(&Request, &mut Conn) -> io::Result<()> + Send + Sync;

#[derive(Default)]
struct Counters {
    connections: AtomicUsize,
    sent: Arc<AtomicU64>,
    hung_up: AtomicUsize,
    requests: Mutex<Vec<Request>>,
}

pub struct Hostile {
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hostile {
    pub fn start(handler: impl Fn(&Request, &mut Conn) -> io::Result<()> + Send + Sync + 'static) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (c, s) = (counters.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        c.connections.fetch_add(1, Ordering::SeqCst);
                        let (c, s, handler) = (c.clone(), s.clone(), handler.clone());
                        std::thread::spawn(move || serve(stream, &c, &s, &*handler));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Hostile { addr, counters, stop, thread: Some(thread) }
    }

    /// "127.0.0.1:PORT"
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Bytes written to clients so far.
    pub fn bytes_sent(&self) -> u64 {
        self.counters.sent.load(Ordering::SeqCst)
    }

    /// Connections on which a write failed because the client had closed it.
    pub fn hung_up(&self) -> usize {
        self.counters.hung_up.load(Ordering::SeqCst)
    }

    /// `hung_up()` once it reaches `n`, or as it is after 10 s.
    pub fn wait_hung_up(&self, n: usize) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.hung_up() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.hung_up()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.counters.requests.lock().unwrap().clone()
    }

    /// Requests with this method ("" for any) whose path contains `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| (method.is_empty() || r.method == method) && r.path.contains(path_contains))
            .count()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Requests on one connection until it closes, the handler fails, or the server stops.
fn serve(stream: TcpStream, counters: &Counters, stop: &AtomicBool, handler: &Handler) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reader = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut conn = Conn { stream, sent: counters.sent.clone() };
    let mut buffer = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let Some(request) = read_head(&mut reader, &mut buffer, stop) else { return };
        counters.requests.lock().unwrap().push(request.clone());
        if let Err(e) = handler(&request, &mut conn) {
            if matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) {
                counters.hung_up.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
    }
}

/// The next request head (the client sends no bodies), or None when the connection is done.
fn read_head(reader: &mut TcpStream, buffer: &mut Vec<u8>, stop: &AtomicBool) -> Option<Request> {
    let mut byte = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            buffer.drain(..end + 4);
            let mut lines = head.split("\r\n");
            let mut first = lines.next()?.split(' ');
            let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .collect();
            return Some(Request { method, path, headers });
        }
        if buffer.len() > 64 << 10 || stop.load(Ordering::SeqCst) {
            return None;
        }
        match reader.read(&mut byte) {
            Ok(0) => return None,
            Ok(n) => buffer.extend_from_slice(&byte[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
    }
}
