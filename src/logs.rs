//! Log output for `serve`: one JSON object per line ([`JsonLines`]), written to a shared buffer
//! that a background thread writes to stdout in batches, so a review never waits on a `write(2)`
//! of its log line.
//!
//! Lists and maps are logged as JSON arrays and objects, not as text: a field given as
//! `field = ?logs::json(&value)` (anything `Serialize`) is written as that JSON value, so `jq`
//! reads `.problems[].reason` directly. The fields of the spans an event is in (the review's
//! `uid`) are on its line too, so a registry lookup started by a review carries the review's uid.
//!
//! Measured in `make bench` (docs/performance.md): one line per review written straight to stdout cost about
//! 5 µs of kernel time per review; buffered, a batch costs one write per flush interval. The
//! buffer is bounded: when the output cannot keep up, writers wait (as they would on a blocking
//! stdout) rather than drop lines or grow without limit.

use std::{
    io::Write,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::Duration,
};

/// How long a line may wait in the buffer before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Above this many buffered bytes the flusher is woken at once, and writers wait while the
/// buffer is over four times this.
const BATCH_BYTES: usize = 256 * 1024;

struct Shared {
    state: Mutex<State>,
    /// Signalled when the buffer passes `BATCH_BYTES`, and on close.
    wake_flusher: Condvar,
    /// Signalled after each write, for writers waiting on a full buffer.
    drained: Condvar,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    closed: bool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves only bytes behind: keep logging.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A `tracing_subscriber` writer: cheap to clone, one per event.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Writes what is left and stops the flusher when dropped (at the end of `main`).
pub struct FlushGuard {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

/// A writer to `out` and the guard that must live until the process ends.
pub fn batched(out: impl Write + Send + 'static) -> (BatchWriter, FlushGuard) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { pending: Vec::with_capacity(BATCH_BYTES), closed: false }),
        wake_flusher: Condvar::new(),
        drained: Condvar::new(),
    });
    let flusher = {
        let shared = shared.clone();
        std::thread::Builder::new().name("log-flusher".into()).spawn(move || flush_loop(&shared, out))
    }
    .expect("spawn the log flusher thread");
    (BatchWriter { shared: shared.clone() }, FlushGuard { shared, flusher: Some(flusher) })
}

fn flush_loop(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    loop {
        let closed = {
            let mut state = lock(&shared.state);
            if !state.closed && state.pending.len() < BATCH_BYTES {
                state =
                    shared.wake_flusher.wait_timeout(state, FLUSH_INTERVAL).unwrap_or_else(PoisonError::into_inner).0;
            }
            std::mem::swap(&mut state.pending, &mut batch);
            state.closed
        };
        shared.drained.notify_all();
        if !batch.is_empty() {
            // Nowhere to report a failed log write; the next batch tries again.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
        }
        if closed && lock(&shared.state).pending.is_empty() {
            return;
        }
    }
}

impl Write for BatchWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut state = lock(&self.shared.state);
        while state.pending.len() > 4 * BATCH_BYTES && !state.closed {
            state = self.shared.drained.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        let was_below = state.pending.len() < BATCH_BYTES;
        state.pending.extend_from_slice(buf);
        if was_below && state.pending.len() >= BATCH_BYTES {
            self.shared.wake_flusher.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake_flusher.notify_one();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}

/// Marks the `Debug` text of a [`Json`] field: no other `Debug` or `Display` text that
/// layerlink logs starts with this control character (strings' `Debug` starts with a quote).
const JSON_MARK: char = '\u{1e}';

/// A field value written as JSON by [`JsonLines`] (see [`json`]).
pub struct Json(serde_json::Value);

/// `value` as a log field that [`JsonLines`] writes as a JSON array or object:
/// `tracing::info!(problems = ?logs::json(&problems), "review")`.
pub fn json(value: &impl serde::Serialize) -> Json {
    Json(serde_json::to_value(value).unwrap_or(serde_json::Value::Null))
}

impl std::fmt::Debug for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{JSON_MARK}{}", self.0)
    }
}

/// A `tracing_subscriber` event format: `timestamp`, `level`, `message`, the event's fields, the
/// fields of the spans it is in, and `target`, as one JSON object per line. Use with
/// `fmt_fields(JsonFields::new())` so span fields are kept as JSON.
pub struct JsonLines;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing_subscriber::fmt::{FormattedFields, time::FormatTime};
        let mut timestamp = String::new();
        tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut tracing_subscriber::fmt::format::Writer::new(&mut timestamp))?;
        let mut line = serde_json::Map::new();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), event.metadata().level().as_str().into());
        for span in ctx.event_scope().into_iter().flat_map(|scope| scope.from_root()) {
            let extensions = span.extensions();
            let Some(fields) = extensions.get::<FormattedFields<N>>() else { continue };
            if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(fields) {
                line.extend(fields);
            }
        }
        event.record(&mut Fields(&mut line));
        line.insert("target".into(), event.metadata().target().into());
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

/// Records an event's fields into a JSON object: numbers and booleans as themselves, [`Json`]
/// fields as their JSON value, everything else as text.
struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        let value = match text.strip_prefix(JSON_MARK).map(serde_json::from_str) {
            Some(Ok(json)) => json,
            _ => text.into(),
        };
        self.0.insert(field.name().into(), value);
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A `Write` whose bytes and write calls the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.0.extend_from_slice(buf);
            s.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_in_order_in_batches_and_all_flushed_on_drop() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        w.write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(guard);
        let (bytes, writes) = sink.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text.lines().count(), 20_000);
        for t in 0..4 {
            let seen: Vec<usize> =
                text.lines().filter_map(|l| l.strip_prefix(&format!("{t} "))).map(|i| i.parse().unwrap()).collect();
            assert_eq!(seen, (0..5000).collect::<Vec<_>>(), "thread {t}'s lines in order, none lost");
        }
        assert!(writes < 20_000 / 10, "{writes} writes for 20000 lines: not batched");
    }

    #[test]
    fn a_quiet_line_is_written_within_the_flush_interval() {
        let sink = Sink::default();
        let (mut writer, _guard) = batched(sink.clone());
        writer.write_all(b"one line\n").unwrap();
        let started = Instant::now();
        while sink.0.lock().unwrap().0.is_empty() {
            assert!(started.elapsed() < Duration::from_secs(5), "line never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.0.lock().unwrap().0, b"one line\n");
    }

    #[test]
    fn writers_wait_when_the_output_is_stuck() {
        // An output that blocks until released: the buffer fills to its bound and writers wait.
        let release = Arc::new((Mutex::new(false), Condvar::new()));
        struct Stuck(Arc<(Mutex<bool>, Condvar)>, Sink);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let (m, c) = &*self.0;
                let _open = c.wait_while(m.lock().unwrap(), |open| !*open).unwrap();
                self.1.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let (writer, guard) = batched(Stuck(release.clone(), sink.clone()));
        let line = vec![b'x'; 1023].into_iter().chain([b'\n']).collect::<Vec<u8>>();
        let total = 16 * BATCH_BYTES / line.len();
        let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let producer = {
            let (mut w, written, line) = (writer.clone(), written.clone(), line.clone());
            std::thread::spawn(move || {
                for _ in 0..total {
                    w.write_all(&line).unwrap();
                    written.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let before_release = written.load(std::sync::atomic::Ordering::SeqCst);
        // One batch is held by the stuck write and one is pending, each at most the bound plus a line.
        assert!(before_release < total, "the writer never waited: {before_release} of {total}");
        let bound = 2 * (4 * BATCH_BYTES + line.len());
        assert!(before_release * line.len() <= bound, "buffered past the bound: {before_release} lines");
        *release.0.lock().unwrap() = true;
        release.1.notify_all();
        producer.join().unwrap();
        drop(guard);
        assert_eq!(sink.0.lock().unwrap().0.len(), total * line.len());
    }
}
