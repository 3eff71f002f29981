//! [`Meter`]: the hand-off of request events, and the aggregator thread behind it.
//!
//! The proxy calls [`Meter::record`] once per request: a `try_send` into a bounded channel
//! (no lock, no allocation beyond the event, never a wait). When the channel is full the
//! event is dropped and counted (`tollgate_analytics_events_dropped_total`). One thread,
//! `tollgate-analytics`, wakes every [`DRAIN_EVERY`] and takes every queued event. It never
//! blocks on the channel: a receiver waiting in `recv` would make every `try_send` wake it
//! (a futex call on the request path and a context switch per event, measured at about
//! 10 µs of CPU per request); sleeping and draining in batches costs the proxy nothing
//! but the push. It
//!
//! - folds them into per-minute [`Usage`] deltas keyed by [`UsageKey`],
//! - feeds the per-request Prometheus families ([`Metrics::observe`]),
//! - writes the JSON access log line when `--access-log` is on (buffered, flushed whenever
//!   the queue is empty),
//! - every `flush_interval` (1 s by default) hands the deltas to the [`UsageSink`] (the
//!   store adds them to its minute and hour rows in one transaction); a failed write keeps
//!   the deltas for the next try,
//! - every 10 minutes asks the sink to drop rows past their retention.
//!
//! [`Meter::flush`] (used at shutdown) makes the thread take every event queued before it,
//! write the deltas and answer.

use crate::access_log;
use crate::event::Event;
use crate::metrics::{Metrics, ObserveCache};
use crate::rollup::{Usage, UsageKey, UsageRow};
use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError, TrySendError};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Where the aggregator writes rollups (the store).
pub trait UsageSink: Send {
    /// Add these minute deltas to the stored minute rows and to the hour rows holding them
    /// (counts added, sketches merged), all or nothing.
    fn add(&mut self, rows: &[UsageRow]) -> Result<(), String>;
    /// Delete minute rows whose bucket starts before `minutes_before` and hour rows whose
    /// bucket starts before `hours_before` (Unix seconds).
    fn prune(&mut self, minutes_before: i64, hours_before: i64) -> Result<(), String>;
}

/// How the aggregator runs.
#[derive(Debug, Clone)]
pub struct MeterOptions {
    /// Fold events into rollups and metrics (`--analytics on`).
    pub rollups: bool,
    /// Write the JSON access log.
    pub access_log: bool,
    /// Events the queue holds before new ones are dropped.
    pub capacity: usize,
    /// How often deltas are written to the sink.
    pub flush_interval: Duration,
    /// How long minute rows are kept.
    pub minute_retention: Duration,
    /// How long hour rows are kept.
    pub hour_retention: Duration,
}

impl Default for MeterOptions {
    fn default() -> Self {
        MeterOptions {
            rollups: true,
            access_log: false,
            capacity: 65_536,
            flush_interval: Duration::from_secs(1),
            minute_retention: Duration::from_secs(48 * 3600),
            hour_retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

enum Msg {
    Event(Event),
    Flush(Sender<()>),
}

/// The metering hand-off; see the module docs. Off (every `record` a no-op) until
/// [`Meter::start`].
#[derive(Debug)]
pub struct Meter {
    tx: OnceLock<Sender<Msg>>,
    dropped: AtomicU64,
    access_log: AtomicBool,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Event(_) => f.write_str("Event"),
            Msg::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Default for Meter {
    fn default() -> Self {
        Meter::new(Arc::new(Metrics::new()))
    }
}

impl Meter {
    /// A meter (off) feeding `metrics` once started.
    pub fn new(metrics: Arc<Metrics>) -> Meter {
        Meter {
            tx: OnceLock::new(),
            dropped: AtomicU64::new(0),
            access_log: AtomicBool::new(false),
            metrics,
        }
    }

    /// The Prometheus families.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether events are taken (the proxy skips building them otherwise).
    #[inline]
    pub fn is_on(&self) -> bool {
        self.tx.get().is_some()
    }

    /// Whether the access log is on (the proxy fills [`Event::access`] only then).
    #[inline]
    pub fn access_log(&self) -> bool {
        self.access_log.load(Ordering::Relaxed)
    }

    /// Hand one event over without waiting; dropped and counted when the queue is full.
    #[inline]
    pub fn record(&self, event: Event) {
        if let Some(tx) = self.tx.get() {
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                tx.try_send(Msg::Event(event))
            {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.get().map_or(0, |t| t.len())
    }

    /// Start the aggregator thread, writing rollups to `sink` (when `opts.rollups`) and
    /// access log lines to `out` (when `opts.access_log`). A second call is refused.
    pub fn start(
        &self,
        sink: Option<Box<dyn UsageSink>>,
        opts: MeterOptions,
        out: Box<dyn Write + Send>,
    ) -> Result<(), String> {
        if !opts.rollups && !opts.access_log {
            return Ok(());
        }
        let (tx, rx) = bounded(opts.capacity.max(1));
        self.tx
            .set(tx)
            .map_err(|_| "the meter is already started".to_owned())?;
        self.access_log.store(opts.access_log, Ordering::Relaxed);
        let mut agg = Aggregator {
            rx,
            sink,
            metrics: self.metrics.clone(),
            observe: ObserveCache::default(),
            pending: HashMap::default(),
            opts,
            out,
            line: Vec::with_capacity(64 * 1024),
            line_writer: access_log::LineWriter::default(),
        };
        std::thread::Builder::new()
            .name("tollgate-analytics".into())
            .spawn(move || agg.run())
            .map_err(|e| format!("cannot start the analytics thread: {e}"))?;
        Ok(())
    }

    /// Make the aggregator take every event queued so far and write its rollups; waits at
    /// most `timeout`. Returns whether it answered in time (true at once when not started).
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(tx) = self.tx.get() else {
            return true;
        };
        let (ack_tx, ack_rx) = bounded(1);
        let deadline = Instant::now() + timeout;
        if tx.send_timeout(Msg::Flush(ack_tx), timeout).is_err() {
            return false;
        }
        ack_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// How often rows past their retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// How often the aggregator takes the queued events (a 65,536-event queue holds 2.6 M
/// events per second at this pace).
pub const DRAIN_EVERY: Duration = Duration::from_millis(25);

struct Aggregator {
    rx: Receiver<Msg>,
    sink: Option<Box<dyn UsageSink>>,
    metrics: Arc<Metrics>,
    observe: ObserveCache,
    /// foldhash rather than SipHash: one lookup per request on this thread.
    pending: HashMap<UsageKey, Usage, foldhash::fast::RandomState>,
    opts: MeterOptions,
    out: Box<dyn Write + Send>,
    /// Access log lines not yet written.
    line: Vec<u8>,
    line_writer: access_log::LineWriter,
}

impl Aggregator {
    fn run(&mut self) {
        let mut next_flush = Instant::now() + self.opts.flush_interval;
        let mut next_prune = Instant::now() + Duration::from_secs(5);
        loop {
            std::thread::sleep(DRAIN_EVERY);
            loop {
                match self.rx.try_recv() {
                    Ok(Msg::Event(e)) => {
                        self.take(e);
                        if self.line.len() > 60 * 1024 {
                            self.write_access_log();
                        }
                    }
                    Ok(Msg::Flush(ack)) => {
                        self.write_access_log();
                        self.flush();
                        let _ = ack.send(());
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.write_access_log();
                        self.flush();
                        return;
                    }
                }
            }
            self.write_access_log();
            let now = Instant::now();
            if now >= next_flush {
                self.flush();
                next_flush = now + self.opts.flush_interval;
            }
            if now >= next_prune {
                self.prune();
                next_prune = now + PRUNE_EVERY;
            }
        }
    }

    fn take(&mut self, e: Event) {
        if self.opts.access_log {
            self.line_writer.write(&mut self.line, &e);
        }
        if self.opts.rollups {
            self.metrics.observe_cached(&mut self.observe, &e);
            self.pending.entry(UsageKey::of(&e)).or_default().record(&e);
        }
    }

    fn write_access_log(&mut self) {
        if self.line.is_empty() {
            return;
        }
        if let Err(e) = self
            .out
            .write_all(&self.line)
            .and_then(|()| self.out.flush())
        {
            tracing::warn!("writing the access log failed: {e}");
        }
        self.line.clear();
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let Some(sink) = self.sink.as_mut() else {
            self.pending.clear();
            return;
        };
        let rows: Vec<UsageRow> = self
            .pending
            .drain()
            .map(|(key, usage)| UsageRow { key, usage })
            .collect();
        match sink.add(&rows) {
            Ok(()) => self.metrics.analytics_flushes.inc(),
            Err(e) => {
                self.metrics.analytics_flush_errors.inc();
                tracing::error!(
                    rows = rows.len(),
                    "writing analytics rollups failed, will retry: {e}"
                );
                for row in rows {
                    self.pending.entry(row.key).or_default().merge(&row.usage);
                }
            }
        }
    }

    fn prune(&mut self) {
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let minutes_before = now - self.opts.minute_retention.as_secs() as i64;
        let hours_before = now - self.opts.hour_retention.as_secs() as i64;
        if let Err(e) = sink.prune(minutes_before, hours_before) {
            tracing::warn!("pruning analytics rollups failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Outcome;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct MemSink {
        rows: Arc<Mutex<Vec<UsageRow>>>,
        fail: Arc<AtomicBool>,
    }

    impl UsageSink for MemSink {
        fn add(&mut self, rows: &[UsageRow]) -> Result<(), String> {
            if self.fail.load(Ordering::Relaxed) {
                return Err("disk full".into());
            }
            self.rows.lock().unwrap().extend_from_slice(rows);
            Ok(())
        }
        fn prune(&mut self, _: i64, _: i64) -> Result<(), String> {
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<Vec<u8>>>);

    impl Write for Out {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn ev(sub: &str, status: u16) -> Event {
        Event {
            at_ms: 1_700_000_000_000,
            subscription: Some(sub.into()),
            status,
            outcome: crate::classify(status, status == 401, false),
            ..Event::default()
        }
    }

    #[test]
    fn off_until_started_then_counts_and_flushes() {
        let meter = Meter::default();
        meter.record(ev("a", 200));
        assert!(!meter.is_on());
        assert!(meter.flush(Duration::from_secs(1)));
        let sink = MemSink::default();
        let out = Out::default();
        meter
            .start(
                Some(Box::new(sink.clone())),
                MeterOptions {
                    access_log: true,
                    flush_interval: Duration::from_secs(3600),
                    ..MeterOptions::default()
                },
                Box::new(out.clone()),
            )
            .unwrap();
        assert!(meter
            .start(None, MeterOptions::default(), Box::new(Out::default()))
            .is_err());
        for _ in 0..5 {
            meter.record(ev("a", 200));
        }
        meter.record(ev("a", 401));
        meter.record(ev("b", 200));
        assert!(meter.flush(Duration::from_secs(5)));
        let rows = sink.rows.lock().unwrap().clone();
        assert_eq!(rows.len(), 3);
        let a200 = rows
            .iter()
            .find(|r| r.key.subscription.as_deref() == Some("a") && r.key.status == 200)
            .unwrap();
        assert_eq!((a200.usage.calls, a200.usage.success), (5, 5));
        let a401 = rows.iter().find(|r| r.key.status == 401).unwrap();
        assert_eq!(a401.usage.blocked, 1);
        assert_eq!(
            out.0
                .lock()
                .unwrap()
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
            7
        );
        assert!(meter
            .metrics()
            .render()
            .contains("outcome=\"success\",product=\"\",status_class=\"2xx\"} 6"));
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_failed_writes_are_retried() {
        let meter = Meter::default();
        let sink = MemSink::default();
        sink.fail.store(true, Ordering::Relaxed);
        meter
            .start(
                Some(Box::new(sink.clone())),
                MeterOptions {
                    capacity: 4,
                    flush_interval: Duration::from_secs(3600),
                    ..MeterOptions::default()
                },
                Box::new(std::io::sink()),
            )
            .unwrap();
        // Far more than the queue holds, faster than the thread takes them (most likely);
        // whatever got in is counted, whatever did not is dropped: nothing else.
        for _ in 0..10_000 {
            meter.record(ev("a", 200));
        }
        assert!(meter.flush(Duration::from_secs(5)));
        assert!(sink.rows.lock().unwrap().is_empty());
        sink.fail.store(false, Ordering::Relaxed);
        assert!(meter.flush(Duration::from_secs(5)));
        let counted: u64 = sink
            .rows
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.usage.calls)
            .sum();
        assert_eq!(counted + meter.dropped(), 10_000);
        assert!(meter.metrics().analytics_flush_errors.get() >= 1);
        let _ = Outcome::Success;
    }
}
