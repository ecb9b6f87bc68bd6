//! One executor (thread) of the load: its connections and a watchdog.
//!
//! Each connection is one task that pipelines requests on a keep-alive connection and matches
//! responses to them in order. How requests are paced is [`Pacing`]: a closed loop writes
//! `pipeline` requests, reads as many responses, records them and starts over (with
//! `--pipeline 1` exactly one request is in flight); an open loop sends at fixed intended times
//! and measures latency from them (see [`OpenLoop`]). Nothing on that path allocates (buffers
//! are reused) and the closed loop takes no timer: per-request timeouts are enforced by one
//! watchdog task per executor that scans the connections every tick and shuts down the socket
//! of any that waited too long (the pending read then ends and the loop counts a timeout). The
//! end of the run is a single timer raced against all connections: in-flight requests at the
//! deadline are abandoned, like wrk does, so the run never outlives its duration by more than a
//! tick. The counting, the watchdog and the deadline are [`Tally`]'s, shared with
//! [`crate::wsload`]; the connections run on any [`Socket`]: glommio's, or (`--busy-poll`, one
//! connection per thread) a busy-polled one.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use glommio::timer::Timer;
use hdrhistogram::Histogram;

use crate::http::{ResponseReader, Step};
use crate::keys::{KeyDist, Picker};
use crate::socket::Socket;

/// Bytes read from a socket at a time; also the most a connection keeps between reads.
const READ_BUFFER_BYTES: usize = 64 * 1024;
const _: () = assert!(crate::http::HEAD_BYTES_MAX < READ_BUFFER_BYTES);
/// Pause after a failed connect, so a dead server is not hammered in a tight loop.
pub(crate) const CONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// Slowest watchdog tick (timeouts fire up to one tick late).
pub(crate) const WATCHDOG_TICK_MAX: Duration = Duration::from_millis(100);
/// Latencies are recorded in nanoseconds up to one hour, 3 significant digits.
pub(crate) const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

/// Why a request failed. `Ord` gives the report a stable order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ErrorKind {
    Status(u16),
    ConnectRefused,
    ConnectTimeout,
    Connect,
    Timeout,
    /// The peer closed the connection before the response was complete.
    Closed,
    /// Connection reset or broken pipe.
    Reset,
    Io,
    Parse,
    /// WebSocket: the upgrade was refused with this HTTP status.
    HandshakeStatus(u16),
    /// WebSocket: an invalid `101`, no `Init`, or the connection rejected before `Init`.
    Handshake,
    /// WebSocket: a frame or message that breaks RFC 6455 or the RivetKit protocol (an id
    /// that was never sent, an undecodable message, …).
    Protocol,
    /// WebSocket: the server answered the action with an `Error` frame.
    ActionError,
}

impl ErrorKind {
    /// Stable name used in the text report and in the JSON summary.
    pub(crate) fn name(self) -> String {
        match self {
            ErrorKind::Status(status) => format!("status_{status}"),
            ErrorKind::ConnectRefused => "connect_refused".into(),
            ErrorKind::ConnectTimeout => "connect_timeout".into(),
            ErrorKind::Connect => "connect".into(),
            ErrorKind::Timeout => "timeout".into(),
            ErrorKind::Closed => "closed".into(),
            ErrorKind::Reset => "reset".into(),
            ErrorKind::Io => "io".into(),
            ErrorKind::Parse => "parse".into(),
            ErrorKind::HandshakeStatus(status) => format!("handshake_status_{status}"),
            ErrorKind::Handshake => "handshake".into(),
            ErrorKind::Protocol => "protocol".into(),
            ErrorKind::ActionError => "action_error".into(),
        }
    }

    /// Connect failures (and failed WebSocket handshakes) happen before a request exists, so
    /// they are not counted as requests.
    pub(crate) fn is_connect(self) -> bool {
        matches!(
            self,
            ErrorKind::ConnectRefused
                | ErrorKind::ConnectTimeout
                | ErrorKind::Connect
                | ErrorKind::HandshakeStatus(_)
                | ErrorKind::Handshake
        )
    }

    /// A failed connect.
    pub(crate) fn of_connect(error: &io::Error) -> ErrorKind {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
            io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
            _ => ErrorKind::Connect,
        }
    }

    pub(crate) fn of_io(error: &io::Error) -> ErrorKind {
        match error.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => ErrorKind::Reset,
            io::ErrorKind::UnexpectedEof => ErrorKind::Closed,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Io,
        }
    }
}

/// The global `--requests` budget, shared by all executors.
#[derive(Debug)]
pub(crate) struct Tickets {
    pub(crate) limit: u64,
    pub(crate) issued: AtomicU64,
}

impl Tickets {
    /// Takes up to `wanted` requests from the budget; 0 when it is spent. The counter never
    /// passes the limit, so [`Tickets::give_back`] is exact.
    pub(crate) fn claim(&self, wanted: u64) -> u64 {
        let mut granted = 0;
        let _ = self
            .issued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |issued| {
                granted = self.limit.saturating_sub(issued).min(wanted);
                (granted > 0).then_some(issued + granted)
            });
        granted
    }

    /// Returns requests that were claimed but never sent (the connect failed).
    fn give_back(&self, count: u64) {
        self.issued.fetch_sub(count, Ordering::Relaxed);
    }
}

/// Counters the watchdog publishes for the progress line.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// Set by the main thread when it shows the progress line: only then does the watchdog
    /// compute `p99_ns` (at most every [`PROGRESS_P99_EVERY`]).
    pub(crate) wants_p99: AtomicBool,
    /// p99 of the measured latencies so far (ns); 0 before the first.
    pub(crate) p99_ns: AtomicU64,
}

/// How often the watchdog recomputes the progress line's p99 (a scan of the histogram).
const PROGRESS_P99_EVERY: Duration = Duration::from_millis(500);

/// Pre-built requests, one per actor, back to back in one buffer.
#[derive(Debug, Default)]
pub(crate) struct Templates {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Templates {
    pub(crate) fn push(&mut self, request: &[u8]) {
        self.bytes.extend_from_slice(request);
        self.ends.push(self.bytes.len());
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn get(&self, index: usize) -> &[u8] {
        let start = index.checked_sub(1).map_or(0, |before| self.ends[before]);
        &self.bytes[start..self.ends[index]]
    }
}

/// What the connections send.
#[derive(Debug)]
pub(crate) struct Requests {
    /// The measured request per actor: one for `raw` and a hot key, `--keys` of them otherwise.
    pub(crate) calls: Templates,
    /// With `--resolve-each`, the `PUT /actors` written (and answered) before each call, per
    /// actor; the pair is one request.
    pub(crate) resolves: Option<Templates>,
    pub(crate) head_request: bool,
    /// How a request picks its actor (index into `calls`).
    pub(crate) key_dist: KeyDist,
    pub(crate) seed: u64,
}

impl Requests {
    /// The bytes `request` is written as: its actor's PUT or call.
    fn bytes(&self, request: &Outstanding) -> &[u8] {
        match (&self.resolves, request.resolving) {
            (Some(resolves), true) => resolves.get(request.actor),
            _ => self.calls.get(request.actor),
        }
    }
}

/// When requests are sent.
#[derive(Debug, Clone)]
pub(crate) enum Pacing {
    /// Each connection writes `pipeline` requests, waits for all the responses, and repeats.
    Closed { pipeline: usize },
    /// Requests go out at fixed intended times, whatever the responses do.
    Open(OpenLoop),
}

/// The open-loop schedule. Request `j` of the whole run (over all connections) is due at
/// `origin + j / rate`; connection `g` of `connections` sends requests `g, g + connections, …`.
#[derive(Debug, Clone)]
pub(crate) struct OpenLoop {
    pub(crate) origin: Instant,
    /// Requests per second over all connections.
    pub(crate) rate: f64,
    /// All connections of the run, over all executors.
    pub(crate) connections: u64,
    /// Most requests outstanding (written or queued, not yet answered) on one connection.
    pub(crate) max_in_flight: usize,
}

impl OpenLoop {
    /// When slot `slot` of connection `connection` is due.
    pub(crate) fn due(&self, connection: u64, slot: u64) -> Instant {
        let request = connection as f64 + slot as f64 * self.connections as f64;
        self.origin + Duration::from_secs_f64(request / self.rate)
    }

    /// The first slot of `connection` due at or after `at`.
    pub(crate) fn first_slot_from(&self, connection: u64, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin).as_secs_f64();
        let slot = ((since * self.rate - connection as f64) / self.connections as f64).ceil();
        let mut slot = if slot > 0.0 { slot as u64 } else { 0 };
        // Float rounding can land one slot off either way.
        while slot > 0 && self.due(connection, slot - 1) >= at {
            slot -= 1;
        }
        while self.due(connection, slot) < at {
            slot += 1;
        }
        slot
    }
}

/// Everything one executor needs; built on the main thread.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) addr: SocketAddr,
    pub(crate) requests: Arc<Requests>,
    pub(crate) pacing: Pacing,
    pub(crate) connections: usize,
    /// Global index of this executor's first connection (for the schedule and key streams).
    pub(crate) first_connection: usize,
    /// Requests issued (closed loop) or due (open loop) before this instant are warmup:
    /// neither recorded nor ticketed.
    pub(crate) measure_start: Instant,
    pub(crate) deadline: Instant,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) tickets: Option<Arc<Tickets>>,
    pub(crate) progress: Arc<Progress>,
}

/// What one executor measured.
#[derive(Debug)]
pub(crate) struct ShardReport {
    /// Finished requests: responses of any status plus requests that failed on the wire.
    pub(crate) requests: u64,
    /// 2xx responses; their latencies are in `histogram`.
    pub(crate) ok: u64,
    pub(crate) errors: BTreeMap<ErrorKind, u64>,
    pub(crate) histogram: Histogram<u64>,
    pub(crate) connects: u64,
    /// Measured requests handed to a connection (written, or queued behind earlier bytes).
    pub(crate) sent: u64,
    /// Open loop: measured requests held back by `--max-in-flight` (see the help).
    pub(crate) late: u64,
    /// Open loop: how long after its intended time each measured request was sent (ns).
    pub(crate) send_lag: Histogram<u64>,
    /// The deadline, or when the last connection finished if that came first.
    pub(crate) end: Instant,
}

/// Per-connection state the watchdog can see.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The connection's socket, or -1 when there is none.
    pub(crate) fd: Cell<RawFd>,
    /// When the oldest unanswered request was written, if one is.
    pub(crate) busy_since: Cell<Option<Instant>>,
    /// Set by the watchdog when it shut the socket down.
    pub(crate) timed_out: Cell<bool>,
}

/// What one executor's connections count, and their slots: the part of an executor that the
/// `action`/`raw` loads and the `ws` load have alike. [`Tally::run`] runs the connections with
/// the watchdog and the deadline, and reports.
#[derive(Debug)]
pub(crate) struct Tally {
    pub(crate) slots: Vec<Slot>,
    timeout: Duration,
    deadline: Instant,
    progress: Arc<Progress>,
    requests: Cell<u64>,
    ok: Cell<u64>,
    error_count: Cell<u64>,
    connects: Cell<u64>,
    sent: Cell<u64>,
    late: Cell<u64>,
    errors: RefCell<BTreeMap<ErrorKind, u64>>,
    histogram: RefCell<Histogram<u64>>,
    send_lag: RefCell<Histogram<u64>>,
    /// When the progress p99 was last computed.
    p99_at: Cell<Option<Instant>>,
}

pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Tally {
    /// A tally for `connections` connections (shared with the watchdog, hence the `Rc`).
    pub(crate) fn new(
        connections: usize,
        timeout: Duration,
        deadline: Instant,
        progress: &Arc<Progress>,
    ) -> Rc<Tally> {
        let histogram = Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
            .expect("static histogram bounds are valid");
        Rc::new(Tally {
            slots: (0..connections)
                .map(|_| Slot {
                    fd: Cell::new(-1),
                    busy_since: Cell::new(None),
                    timed_out: Cell::new(false),
                })
                .collect(),
            timeout,
            deadline,
            progress: progress.clone(),
            requests: Cell::new(0),
            ok: Cell::new(0),
            error_count: Cell::new(0),
            connects: Cell::new(0),
            sent: Cell::new(0),
            late: Cell::new(0),
            errors: RefCell::new(BTreeMap::new()),
            send_lag: RefCell::new(histogram.clone()),
            histogram: RefCell::new(histogram),
            p99_at: Cell::new(None),
        })
    }

    pub(crate) fn count_error(&self, kind: ErrorKind, n: u64) {
        if !kind.is_connect() {
            self.requests.set(self.requests.get() + n);
        }
        self.error_count.set(self.error_count.get() + n);
        *self.errors.borrow_mut().entry(kind).or_default() += n;
    }

    pub(crate) fn count_ok(&self, latency: Duration) {
        self.requests.set(self.requests.get() + 1);
        self.ok.set(self.ok.get() + 1);
        self.histogram
            .borrow_mut()
            .saturating_record(nanos(latency));
    }

    pub(crate) fn count_connect(&self) {
        self.connects.set(self.connects.get() + 1);
    }

    /// A measured request handed to a connection. Open loop: `late` when `--max-in-flight`
    /// held it back, and `lag` after its intended time.
    pub(crate) fn count_sent(&self, pacing: &Pacing, late: bool, lag: Duration) {
        self.sent.set(self.sent.get() + 1);
        if matches!(pacing, Pacing::Open(_)) {
            self.late.set(self.late.get() + u64::from(late));
            self.send_lag.borrow_mut().saturating_record(nanos(lag));
        }
    }

    fn publish_progress(&self) {
        let progress = &self.progress;
        progress
            .requests
            .store(self.requests.get(), Ordering::Relaxed);
        progress
            .errors
            .store(self.error_count.get(), Ordering::Relaxed);
        if progress.wants_p99.load(Ordering::Relaxed) {
            let now = Instant::now();
            if self
                .p99_at
                .get()
                .is_none_or(|at| now.duration_since(at) >= PROGRESS_P99_EVERY)
            {
                self.p99_at.set(Some(now));
                let histogram = self.histogram.borrow();
                if !histogram.is_empty() {
                    progress
                        .p99_ns
                        .store(histogram.value_at_quantile(0.99), Ordering::Relaxed);
                }
            }
        }
    }

    /// Runs the connection tasks and the watchdog until every task has ended or the deadline
    /// has passed (dropping the tasks then abandons what they have in flight), and reports.
    pub(crate) async fn run<S: Socket>(
        self: Rc<Tally>,
        tasks: impl Iterator<Item = impl Future<Output = ()> + 'static>,
    ) -> ShardReport {
        let tasks: Vec<_> = tasks.map(S::spawn).collect();
        let watchdog = S::spawn(watchdog::<S>(self.clone()));
        let all_done = async {
            for task in tasks {
                task.await;
            }
            false
        };
        let stop = async {
            // The watchdog never ends; it is awaited so that it also runs where a task only
            // runs while awaited (busy polling).
            let left = self.deadline.saturating_duration_since(Instant::now());
            futures_lite::future::or(watchdog, S::sleep(left)).await;
            true
        };
        let end = if futures_lite::future::or(all_done, stop).await {
            self.deadline
        } else {
            Instant::now().min(self.deadline)
        };
        self.publish_progress();
        ShardReport {
            requests: self.requests.get(),
            ok: self.ok.get(),
            errors: self.errors.borrow().clone(),
            histogram: self.histogram.borrow().clone(),
            connects: self.connects.get(),
            sent: self.sent.get(),
            late: self.late.get(),
            send_lag: self.send_lag.borrow().clone(),
            end,
        }
    }
}

struct Shard {
    plan: Plan,
    tally: Rc<Tally>,
}

/// Runs the executor's share of the load to the end and reports it.
pub(crate) async fn run<S: Socket>(plan: Plan) -> ShardReport {
    let tally = Tally::new(
        plan.connections,
        plan.timeout,
        plan.deadline,
        &plan.progress,
    );
    let shard = Rc::new(Shard { plan, tally });
    let tasks = (0..shard.plan.connections).map(|index| connection_loop::<S>(shard.clone(), index));
    shard.tally.clone().run::<S>(tasks).await
}

/// A request awaiting its response, or still to be written.
#[derive(Debug, Clone, Copy)]
struct Outstanding {
    /// Where latency is measured from: the intended send time (open loop) or the moment the
    /// request was handed to the connection (closed loop).
    origin: Instant,
    /// When it was handed to the current connection; `None` while there is no connection.
    sent: Option<Instant>,
    actor: usize,
    /// The `PUT /actors` half of a `--resolve-each` pair; the call follows its response.
    resolving: bool,
    measuring: bool,
    /// Held back by `--max-in-flight`.
    late: bool,
    /// Already counted in `sent` (a request re-sent after a reconnect counts once).
    counted: bool,
}

/// One connection's state; see [`connection_loop`].
struct Lane<'a, S> {
    shard: &'a Shard,
    slot: &'a Slot,
    picker: Picker,
    connection: Option<Connection<S>>,
    /// Bytes handed to the connection; `out[written..]` is not written yet.
    out: Vec<u8>,
    written: usize,
    /// Requests in the order their responses will come (written ones first).
    wire: VecDeque<Outstanding>,
    buffer: Vec<u8>,
    /// Open loop only (so glommio only): the timer for the next due request.
    timer: Option<Timer>,
}

/// What woke a connection up.
enum Event {
    Wrote(io::Result<usize>),
    Read(io::Result<usize>),
    Due,
}

/// One connection: a closed loop, or its part of the open-loop schedule.
///
/// Every wait is a single poll of "write what is pending, read what arrived, or wake at the next
/// due time"; glommio's sockets are readiness-based, so a poll that loses the race loses no data.
/// Requests are appended to one output buffer (pipelined) and matched to responses in order.
async fn connection_loop<S: Socket>(shard: Rc<Shard>, index: usize) {
    let plan = &shard.plan;
    let global = (plan.first_connection + index) as u64;
    let mut lane = Lane::<S> {
        shard: &shard,
        slot: &shard.tally.slots[index],
        picker: Picker::new(
            plan.requests.key_dist,
            plan.requests.calls.len(),
            plan.requests.seed,
            global,
        ),
        connection: None,
        out: Vec::with_capacity(4096),
        written: 0,
        wire: VecDeque::new(),
        buffer: vec![0u8; READ_BUFFER_BYTES],
        timer: None,
    };
    match &plan.pacing {
        Pacing::Closed { pipeline } => lane.closed_loop(*pipeline).await,
        Pacing::Open(open) => lane.open_loop(open, global).await,
    }
    lane.slot.fd.set(-1);
}

impl<S: Socket> Lane<'_, S> {
    async fn closed_loop(&mut self, pipeline: usize) {
        let plan = &self.shard.plan;
        // Requests claimed for the next batch: (count, measuring, from the ticket budget).
        let mut reserved: Option<(usize, bool, bool)> = None;
        loop {
            let now = Instant::now();
            if now >= plan.deadline {
                break;
            }
            if self.wire.is_empty() && reserved.is_none() {
                // Claim before connecting, so no connection is opened once the budget is spent.
                let measuring = now >= plan.measure_start;
                let tickets = plan.tickets.as_deref().filter(|_| measuring);
                let count =
                    tickets.map_or(pipeline, |tickets| tickets.claim(pipeline as u64) as usize);
                if count == 0 {
                    break;
                }
                reserved = Some((count, measuring, tickets.is_some()));
            }
            if self.connection.is_none()
                && let Err(kind) = self.connect().await
            {
                if let Some((count, measuring, ticketed)) = reserved.take() {
                    if ticketed {
                        let tickets = plan.tickets.as_deref().expect("ticketed");
                        tickets.give_back(count as u64);
                    }
                    if measuring {
                        self.shard.tally.count_error(kind, 1);
                    }
                } else if Instant::now() >= plan.measure_start {
                    self.shard.tally.count_error(kind, 1);
                }
                S::sleep(CONNECT_BACKOFF).await;
                continue;
            }
            if let Some((count, measuring, _)) = reserved.take() {
                let now = Instant::now();
                for _ in 0..count {
                    self.queue(now, measuring, false, now);
                }
            }
            self.step(None).await;
        }
    }

    async fn open_loop(&mut self, open: &OpenLoop, global: u64) {
        let plan = &self.shard.plan;
        let mut next_slot: Option<u64> = None;
        let mut finished = false;
        // The --requests budget ended the schedule (rather than the deadline).
        let mut spent = false;
        // The bound was hit while a request was due; cleared once the schedule is caught up.
        let mut held = false;
        loop {
            let now = Instant::now();
            let mut next_due = None;
            if let Some(slot) = next_slot.as_mut() {
                while !finished {
                    let due = open.due(global, *slot);
                    if due >= plan.deadline {
                        finished = true;
                    } else if due > now {
                        held = false;
                        next_due = Some(due);
                    } else if self.wire.len() >= open.max_in_flight {
                        held = true;
                    } else {
                        let measuring = due >= plan.measure_start;
                        let tickets = plan.tickets.as_deref().filter(|_| measuring);
                        if tickets.is_some_and(|tickets| tickets.claim(1) == 0) {
                            finished = true;
                            spent = true;
                            break;
                        }
                        self.queue(due, measuring, held, now);
                        *slot += 1;
                        continue;
                    }
                    break;
                }
            }
            if finished && self.wire.is_empty() {
                if !spent {
                    // The measured window is the schedule's: it ends at the deadline, not with
                    // the last response.
                    S::sleep(plan.deadline.saturating_duration_since(Instant::now())).await;
                }
                break;
            }
            if self.connection.is_none() {
                if let Err(kind) = self.connect().await {
                    if Instant::now() >= plan.measure_start {
                        self.shard.tally.count_error(kind, 1);
                    }
                    // The schedule goes on: what falls due meanwhile is queued (up to the
                    // bound) and written once a connection is up.
                    S::sleep(CONNECT_BACKOFF).await;
                    continue;
                }
                if next_slot.is_none() {
                    // The schedule starts at the first connection; earlier slots are setup.
                    next_slot = Some(open.first_slot_from(global, Instant::now()));
                    continue;
                }
            }
            self.step(next_due).await;
        }
    }

    /// Connects and hands over what was queued while there was no connection.
    async fn connect(&mut self) -> Result<(), ErrorKind> {
        let stream = connect::<S>(&self.shard.plan).await?;
        self.slot.fd.set(stream.as_raw_fd());
        self.shard.tally.count_connect();
        self.connection = Some(Connection::new(
            stream,
            self.shard.plan.requests.head_request,
        ));
        let now = Instant::now();
        for index in 0..self.wire.len() {
            let mut request = self.wire[index];
            self.hand_over(&mut request, now);
            self.wire[index] = request;
        }
        self.update_busy();
        Ok(())
    }

    /// Adds a request for the next actor; written at once when connected.
    fn queue(&mut self, origin: Instant, measuring: bool, late: bool, now: Instant) {
        let mut request = Outstanding {
            origin,
            sent: None,
            actor: self.picker.pick(),
            resolving: self.shard.plan.requests.resolves.is_some(),
            measuring,
            late,
            counted: false,
        };
        if self.connection.is_some() {
            self.hand_over(&mut request, now);
        }
        self.wire.push_back(request);
    }

    /// Appends a request's bytes to the connection's output and counts it as sent.
    fn hand_over(&mut self, request: &mut Outstanding, now: Instant) {
        self.out
            .extend_from_slice(self.shard.plan.requests.bytes(request));
        request.sent = Some(now);
        if !request.counted {
            request.counted = true;
            if request.measuring {
                let lag = now.saturating_duration_since(request.origin);
                let shard = self.shard;
                shard
                    .tally
                    .count_sent(&shard.plan.pacing, request.late, lag);
            }
        }
    }

    fn update_busy(&self) {
        let busy = match self.connection {
            Some(_) => self.wire.front().and_then(|request| request.sent),
            None => None,
        };
        self.slot.busy_since.set(busy);
    }

    /// Waits for one event (until `due` at the latest, if given) and handles it.
    async fn step(&mut self, due: Option<Instant>) {
        self.update_busy();
        let Some(connection) = self.connection.as_mut() else {
            // Nothing to read or write: just wait for the schedule.
            if let Some(due) = due {
                S::sleep(due.saturating_duration_since(Instant::now())).await;
            }
            return;
        };
        if let Some(due) = due {
            let wait = due.saturating_duration_since(Instant::now());
            match self.timer.as_mut() {
                Some(timer) => timer.reset(wait),
                None => self.timer = Some(Timer::new(wait)),
            }
        }
        let mut timer = due.and(self.timer.as_mut());
        let pending = &self.out[self.written..];
        let read_into = &mut self.buffer[connection.end..];
        let stream = &mut connection.stream;
        let event = poll_fn(|cx| {
            if !pending.is_empty()
                && let Poll::Ready(result) = Pin::new(&mut *stream).poll_write(cx, pending)
            {
                return Poll::Ready(Event::Wrote(result));
            }
            if let Poll::Ready(result) = Pin::new(&mut *stream).poll_read(cx, read_into) {
                return Poll::Ready(Event::Read(result));
            }
            if let Some(timer) = timer.as_mut()
                && Pin::new(&mut **timer).poll(cx).is_ready()
            {
                return Poll::Ready(Event::Due);
            }
            Poll::Pending
        })
        .await;
        let now = Instant::now();
        match event {
            Event::Wrote(Ok(0)) => self.close(ErrorKind::Closed, now),
            Event::Wrote(Ok(count)) => {
                self.written += count;
                if self.written == self.out.len() {
                    self.out.clear();
                    self.written = 0;
                }
            }
            Event::Wrote(Err(error)) | Event::Read(Err(error)) => {
                self.close(ErrorKind::of_io(&error), now);
            }
            Event::Read(Ok(0)) => {
                let connection = self.connection.as_mut().expect("connected");
                match connection.reader.finish_at_eof() {
                    Some(response) => {
                        self.answer(response.status, now);
                        self.close(ErrorKind::Closed, now);
                    }
                    None => self.close(ErrorKind::Closed, now),
                }
            }
            Event::Read(Ok(count)) => {
                self.connection.as_mut().expect("connected").end += count;
                self.read_responses(now);
            }
            Event::Due => {}
        }
        self.update_busy();
    }

    /// Handles every complete response in the buffer.
    fn read_responses(&mut self, now: Instant) {
        loop {
            let connection = self.connection.as_mut().expect("connected");
            let step = connection
                .reader
                .advance(&self.buffer[connection.start..connection.end], &mut ());
            let response = match step {
                Err(_) => return self.close(ErrorKind::Parse, now),
                Ok((consumed, step)) => {
                    connection.start += consumed;
                    match step {
                        Step::Done(response) => response,
                        Step::NeedMore => break,
                    }
                }
            };
            if self
                .wire
                .front()
                .is_none_or(|request| request.sent.is_none())
            {
                // A response to nothing we sent.
                return self.close(ErrorKind::Parse, now);
            }
            self.answer(response.status, now);
            if !response.keep_alive {
                // The server closes after this response; what was written after it is lost.
                return self.close(ErrorKind::Closed, now);
            }
        }
        // Keep unconsumed bytes (an incomplete head) at the front and read more after them.
        let connection = self.connection.as_mut().expect("connected");
        self.buffer.copy_within(connection.start..connection.end, 0);
        connection.end -= connection.start;
        connection.start = 0;
        // The reader rejects heads over HEAD_BYTES_MAX, so there is always room to read.
        debug_assert!(connection.end < self.buffer.len());
    }

    /// The response to the oldest outstanding request arrived.
    fn answer(&mut self, status: u16, now: Instant) {
        let Some(mut request) = self.wire.pop_front() else {
            return;
        };
        if request.resolving && (200..300).contains(&status) {
            // The PUT of a --resolve-each pair: now the call, on the same connection.
            request.resolving = false;
            let bytes = self.shard.plan.requests.calls.get(request.actor);
            self.out.extend_from_slice(bytes);
            request.sent = Some(now);
            self.wire.push_back(request);
            return;
        }
        if request.measuring && now < self.shard.plan.deadline {
            let tally = &self.shard.tally;
            if (200..300).contains(&status) {
                tally.count_ok(now - request.origin);
            } else {
                tally.count_error(ErrorKind::Status(status), 1);
            }
        }
    }

    /// Ends the connection. Requests written (even partly) to it fail with `kind` (or with
    /// `Timeout` if the watchdog ended it); requests not written at all are kept for the next one.
    fn close(&mut self, kind: ErrorKind, now: Instant) {
        let kind = if self.slot.timed_out.replace(false) {
            ErrorKind::Timeout
        } else {
            kind
        };
        // Requests whose bytes all lie in `out[written..]` never reached the socket.
        let mut unwritten_bytes = self.out.len() - self.written;
        let mut keep = 0;
        for request in self.wire.iter().rev() {
            let length = self.shard.plan.requests.bytes(request).len();
            if request.sent.is_none() || length > unwritten_bytes {
                break;
            }
            unwritten_bytes -= length;
            keep += 1;
        }
        let failed = self.wire.len() - keep;
        let counted = now < self.shard.plan.deadline;
        for request in self.wire.drain(..failed) {
            if request.measuring && counted {
                self.shard.tally.count_error(kind, 1);
            }
        }
        for request in &mut self.wire {
            request.sent = None;
        }
        self.out.clear();
        self.written = 0;
        // Forget the fd before the socket closes, so the watchdog never touches a reused one.
        self.slot.fd.set(-1);
        self.connection = None;
        self.slot.busy_since.set(None);
    }
}

struct Connection<S> {
    stream: S,
    reader: ResponseReader,
    /// Unconsumed bytes are `buffer[start..end]`.
    start: usize,
    end: usize,
}

impl<S> Connection<S> {
    fn new(stream: S, head_request: bool) -> Connection<S> {
        Connection {
            stream,
            reader: ResponseReader::new(head_request),
            start: 0,
            end: 0,
        }
    }
}

async fn connect<S: Socket>(plan: &Plan) -> Result<S, ErrorKind> {
    S::connect(plan.addr, plan.connect_timeout)
        .await
        .map_err(|error| ErrorKind::of_connect(&error))
}

/// Enforces the per-request timeout and publishes the progress counters.
async fn watchdog<S: Socket>(tally: Rc<Tally>) {
    let tick = (tally.timeout / 10).clamp(Duration::from_millis(1), WATCHDOG_TICK_MAX);
    loop {
        S::sleep(tick).await;
        tally.publish_progress();
        let now = Instant::now();
        for slot in &tally.slots {
            let expired = slot
                .busy_since
                .get()
                .is_some_and(|since| now - since >= tally.timeout);
            let fd = slot.fd.get();
            if expired && fd >= 0 && !slot.timed_out.get() {
                slot.timed_out.set(true);
                // SAFETY: `fd` is the open socket of a live connection: the connection loop runs
                // on this thread and sets the slot to -1 before it drops (closes) the stream, so
                // the descriptor cannot have been closed or reused. `shutdown` does not close it;
                // it only makes the pending read or write return.
                unsafe {
                    libc::shutdown(fd, libc::SHUT_RDWR);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(rate: f64, connections: u64) -> OpenLoop {
        OpenLoop {
            origin: Instant::now(),
            rate,
            connections,
            max_in_flight: 1,
        }
    }

    #[test]
    fn open_loop_slots_interleave_evenly() {
        let open = schedule(1000.0, 4);
        let ms = |n: u64| Duration::from_millis(n);
        // Request j of the run is due at j ms; connection g sends j = g, g + 4, g + 8, …
        assert_eq!(open.due(0, 0) - open.origin, ms(0));
        assert_eq!(open.due(1, 0) - open.origin, ms(1));
        assert_eq!(open.due(3, 0) - open.origin, ms(3));
        assert_eq!(open.due(0, 1) - open.origin, ms(4));
        assert_eq!(open.due(2, 250) - open.origin, ms(1002));
        let mut all: Vec<Duration> = (0..4)
            .flat_map(|g| (0..100).map(move |k| (g, k)))
            .map(|(g, k)| open.due(g, k) - open.origin)
            .collect();
        all.sort();
        assert!(all.windows(2).all(|w| w[1] - w[0] == ms(1)));
    }

    #[test]
    fn first_slot_is_the_first_not_yet_due() {
        let open = schedule(3.0, 7); // awkward numbers for float rounding
        for g in 0..7 {
            for offset_ms in [0u64, 1, 333, 2333, 2334, 10_000, 123_457] {
                let at = open.origin + Duration::from_millis(offset_ms);
                let slot = open.first_slot_from(g, at);
                assert!(open.due(g, slot) >= at, "g={g} at={offset_ms}");
                assert!(
                    slot == 0 || open.due(g, slot - 1) < at,
                    "g={g} at={offset_ms}"
                );
            }
            // Exactly on a due time: that slot is still sent.
            let at = open.due(g, 5);
            assert_eq!(open.first_slot_from(g, at), 5);
        }
    }

    #[test]
    fn tally_counts_and_ends_with_its_tasks_or_the_deadline() {
        use crate::socket::{BusySocket, block_on};
        let progress = Arc::new(Progress::default());
        let deadline = Instant::now() + Duration::from_secs(60);
        let tally = Tally::new(1, Duration::from_secs(1), deadline, &progress);
        let counting = tally.clone();
        let task = async move {
            counting.count_ok(Duration::from_micros(20));
            counting.count_error(ErrorKind::ConnectRefused, 1);
            counting.count_error(ErrorKind::Timeout, 2);
            counting.count_connect();
            counting.count_sent(&Pacing::Closed { pipeline: 1 }, true, Duration::ZERO);
        };
        let report = block_on(tally.run::<BusySocket>(std::iter::once(task)));
        assert!(report.end < deadline, "ends with its last task");
        // A failed connect is an error but not a request.
        assert_eq!((report.requests, report.ok, report.connects), (3, 1, 1));
        assert_eq!(report.errors.values().sum::<u64>(), 3);
        assert_eq!(report.histogram.len(), 1);
        // Closed loop: sent, but neither late nor lagging.
        assert_eq!((report.sent, report.late, report.send_lag.len()), (1, 0, 0));
        assert_eq!(progress.requests.load(Ordering::Relaxed), 3);
        assert_eq!(progress.errors.load(Ordering::Relaxed), 3);

        let deadline = Instant::now() + Duration::from_millis(20);
        let tally = Tally::new(1, Duration::from_secs(1), deadline, &progress);
        let open = Pacing::Open(schedule(1.0, 1));
        tally.count_sent(&open, true, Duration::from_millis(1));
        let forever = std::future::pending::<()>();
        let report = block_on(tally.run::<BusySocket>(std::iter::once(forever)));
        assert_eq!(
            report.end, deadline,
            "a task still running is cut at the deadline"
        );
        assert_eq!((report.sent, report.late, report.send_lag.len()), (1, 1, 1));
    }

    #[test]
    fn watchdog_ends_a_wait_past_the_timeout_when_busy_polling() {
        use std::os::fd::AsRawFd;

        use futures_lite::AsyncReadExt;

        use crate::socket::{BusySocket, Socket, block_on};
        // A peer that never answers (the connection waits in the backlog).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let progress = Arc::new(Progress::default());
        let tally = Tally::new(1, Duration::from_millis(20), deadline, &progress);
        let waiting = tally.clone();
        let task = async move {
            let mut socket = BusySocket::connect(addr, Duration::from_secs(5))
                .await
                .unwrap();
            let slot = &waiting.slots[0];
            slot.fd.set(socket.as_raw_fd());
            slot.busy_since.set(Some(Instant::now()));
            let read = socket.read(&mut [0u8; 1]).await;
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
            assert!(slot.timed_out.get());
            slot.fd.set(-1);
        };
        let report = block_on(tally.run::<BusySocket>(std::iter::once(task)));
        assert!(report.end < deadline);
    }

    #[test]
    fn templates_keep_requests_apart() {
        let mut templates = Templates::default();
        templates.push(b"GET /a HTTP/1.1\r\n\r\n");
        templates.push(b"");
        templates.push(b"GET /bb HTTP/1.1\r\n\r\n");
        assert_eq!(templates.len(), 3);
        assert_eq!(templates.get(0), b"GET /a HTTP/1.1\r\n\r\n");
        assert_eq!(templates.get(1), b"");
        assert_eq!(templates.get(2), b"GET /bb HTTP/1.1\r\n\r\n");
    }
}
