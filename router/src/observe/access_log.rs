//! The access log: one JSON line per sampled request, written off the request path.
//!
//! A sampled request carries an [`Entry`] in its context; what the proxy learns on the way
//! (the tenant, the endpoint, when the upstream answered, a retry or failover) is noted in it,
//! and when the response is finished or dropped its completion hands the entry over with the
//! status, bytes and duration. Handing over is a `try_send` on a bounded channel to a writer
//! thread, which formats and writes the lines, flushes whenever it has caught up, and then
//! sleeps for `WRITER_PAUSE` rather than wait on the channel: a sender never has to wake it
//! (a wake-up a line cost more than the line). A full channel drops the line and counts it: a
//! slow disk never holds up a request.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, StatusCode};
use serde::Serialize;

use crate::config::{AccessLogConfig, LogDestination, TargetConfig};
use crate::observe::metrics::{Families, Labels, single};

/// How long the writer sleeps once it has caught up: how late a line may reach the file.
const WRITER_PAUSE: Duration = Duration::from_millis(10);

/// What a sampled request noted on its way, until its response completes.
#[derive(Debug)]
pub struct Entry {
    at: SystemTime,
    request_id: HeaderValue,
    method: Method,
    /// The path only: a query string may hold what should not reach a log.
    path: Box<str>,
    pub tenant: Option<Box<str>>,
    /// The endpoint of the last try, named by the config that sent it (a reload may change
    /// the endpoints while the request is in flight).
    pub endpoint: Option<Arc<str>>,
    /// From the request's start to the upstream's response head.
    pub upstream: Option<Duration>,
    pub failover: bool,
    pub retried: bool,
}

impl Entry {
    pub fn new(parts: &http::request::Parts, request_id: HeaderValue) -> Self {
        Entry {
            at: SystemTime::now(),
            request_id,
            method: parts.method.clone(),
            path: parts.uri.path().into(),
            tenant: None,
            endpoint: None,
            upstream: None,
            failover: false,
            retried: false,
        }
    }
}

/// An entry with its outcome, on its way to the writer.
struct Line {
    entry: Box<Entry>,
    labels: Labels,
    status: StatusCode,
    bytes: u64,
    duration: Duration,
}

#[derive(Serialize)]
struct Json<'a> {
    time: String,
    request_id: &'a str,
    method: &'a str,
    path: &'a str,
    tenant: Option<&'a str>,
    route: &'a str,
    target: &'a str,
    endpoint: Option<&'a str>,
    status: u16,
    bytes: u64,
    duration_ms: f64,
    upstream_ms: Option<f64>,
    failover: bool,
    retry: bool,
}

/// The access log's sampling, channel and counters; the writer thread holds the other end.
#[derive(Debug)]
pub struct AccessLog {
    sample_percent: u32,
    /// `None` once dropping: the writer then writes what is left and ends.
    tx: Option<SyncSender<Line>>,
    writer: Option<std::thread::JoinHandle<()>>,
    written: Arc<AtomicU64>,
    dropped: AtomicU64,
}

/// Names for the labels a line shows: routes and targets as [`Labels`] index them (each list
/// ends with `none`). A config reload keeps both (it refuses a change to either).
struct Names {
    routes: Vec<String>,
    targets: Vec<String>,
}

impl AccessLog {
    /// Opens the destination and starts the writer thread.
    pub fn start(
        config: &AccessLogConfig,
        routes: &[String],
        targets: &[TargetConfig],
    ) -> std::io::Result<Arc<Self>> {
        let out: Box<dyn std::io::Write + Send> = match &config.destination {
            LogDestination::Stdout => Box::new(std::io::stdout()),
            LogDestination::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let names = Names {
            routes: routes.iter().cloned().chain(["none".into()]).collect(),
            targets: (targets.iter().map(|t| t.name.clone()))
                .chain(["none".into()])
                .collect(),
        };
        let (tx, rx) = sync_channel(config.buffer_lines);
        let written = Arc::new(AtomicU64::new(0));
        let count = written.clone();
        let writer = std::thread::Builder::new()
            .name("switchyard-access-log".into())
            .spawn(move || write_lines(rx, out, &names, &count))?;
        Ok(Arc::new(AccessLog {
            sample_percent: config.sample_percent,
            tx: Some(tx),
            writer: Some(writer),
            written,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Whether this request is logged.
    #[inline]
    pub fn sampled(&self) -> bool {
        self.sample_percent >= 100
            || (self.sample_percent > 0 && rand::random_range(0..100u32) < self.sample_percent)
    }

    /// Hands a finished request's line to the writer, or drops and counts it.
    pub fn finish(
        &self,
        entry: Box<Entry>,
        labels: Labels,
        status: StatusCode,
        bytes: u64,
        duration: Duration,
    ) {
        let line = Line {
            entry,
            labels,
            status,
            bytes,
            duration,
        };
        let sent = self.tx.as_ref().map(|tx| tx.try_send(line));
        if let Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None = sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The last lines reach the file before the router exits: the writer drains the channel,
/// flushes and ends once no one can send.
impl Drop for AccessLog {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn write_lines(
    rx: Receiver<Line>,
    out: Box<dyn std::io::Write + Send>,
    names: &Names,
    written: &AtomicU64,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut text = Vec::with_capacity(512);
    loop {
        let line = match rx.try_recv() {
            Ok(line) => line,
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                let _ = out.flush();
                std::thread::sleep(WRITER_PAUSE);
                continue;
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
        };
        text.clear();
        let e = &line.entry;
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let json = Json {
            time: humantime::format_rfc3339_millis(e.at).to_string(),
            request_id: e.request_id.to_str().unwrap_or("-"),
            method: e.method.as_str(),
            path: &e.path,
            tenant: e.tenant.as_deref(),
            route: names.routes.get(line.labels.route).map_or("none", |s| s),
            target: names.targets.get(line.labels.target).map_or("none", |s| s),
            endpoint: e.endpoint.as_deref(),
            status: line.status.as_u16(),
            bytes: line.bytes,
            duration_ms: ms(line.duration),
            upstream_ms: e.upstream.map(ms),
            failover: e.failover,
            retry: e.retried,
        };
        if serde_json::to_writer(&mut text, &json).is_ok() {
            text.push(b'\n');
            if out.write_all(&text).is_ok() {
                written.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let _ = out.flush();
}

impl Families for AccessLog {
    fn collect(&self, out: &mut Vec<prometheus::proto::MetricFamily>) {
        let (written, dropped) = (&self.written, &self.dropped);
        single(
            out,
            (
                "switchyard_access_log_lines_total",
                "counter",
                "Access log lines written.",
            ),
            written.load(Ordering::Relaxed) as f64,
        );
        single(
            out,
            (
                "switchyard_access_log_dropped_total",
                "counter",
                "Access log lines dropped because the writer was behind (its buffer was full).",
            ),
            dropped.load(Ordering::Relaxed) as f64,
        );
    }
}
