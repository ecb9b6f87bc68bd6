//! One executor (thread) of the load: its connections, each a closed loop, and a watchdog.
//!
//! Every connection writes `pipeline` copies of the request at once, reads as many responses,
//! records them and starts over; with `--pipeline 1` exactly one request is in flight. Nothing
//! on that path allocates or takes a timer: per-request timeouts are enforced by one watchdog
//! task per executor that scans the connections every tick and shuts down the socket of any
//! that waited too long (the pending read then ends and the loop counts a timeout). The end of
//! the run is a single timer raced against all connections: in-flight requests at the deadline
//! are abandoned, like wrk does, so the run never outlives its duration by more than a tick.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::sleep;
use hdrhistogram::Histogram;

use crate::http::{ResponseReader, Step};

/// Bytes read from a socket at a time; also the most a connection keeps between reads.
const READ_BUFFER_BYTES: usize = 64 * 1024;
const _: () = assert!(crate::http::HEAD_BYTES_MAX < READ_BUFFER_BYTES);
/// Pause after a failed connect, so a dead server is not hammered in a tight loop.
const CONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// Slowest watchdog tick (timeouts fire up to one tick late).
const WATCHDOG_TICK_MAX: Duration = Duration::from_millis(100);
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
        }
    }

    /// Connect failures happen before a request exists, so they are not counted as requests.
    pub(crate) fn is_connect(self) -> bool {
        matches!(
            self,
            ErrorKind::ConnectRefused | ErrorKind::ConnectTimeout | ErrorKind::Connect
        )
    }

    fn of_io(error: &io::Error) -> ErrorKind {
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
    fn claim(&self, wanted: u64) -> u64 {
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
}

/// Everything one executor needs; built on the main thread.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) addr: SocketAddr,
    /// One request's bytes.
    pub(crate) request: Arc<[u8]>,
    pub(crate) head_request: bool,
    pub(crate) connections: usize,
    pub(crate) pipeline: usize,
    /// Requests issued before this instant are warmup: neither recorded nor ticketed.
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
    /// The deadline, or when the last connection finished if that came first.
    pub(crate) end: Instant,
}

/// Per-connection state the watchdog can see.
#[derive(Debug)]
struct Slot {
    /// The connection's socket, or -1 when there is none.
    fd: Cell<RawFd>,
    /// When the batch in flight was written, if one is.
    busy_since: Cell<Option<Instant>>,
    /// Set by the watchdog when it shut the socket down.
    timed_out: Cell<bool>,
}

struct Shard {
    plan: Plan,
    /// `plan.request` repeated `plan.pipeline` times.
    batch: Vec<u8>,
    slots: Vec<Slot>,
    requests: Cell<u64>,
    ok: Cell<u64>,
    error_count: Cell<u64>,
    connects: Cell<u64>,
    errors: RefCell<BTreeMap<ErrorKind, u64>>,
    histogram: RefCell<Histogram<u64>>,
}

impl Shard {
    fn count_error(&self, kind: ErrorKind, n: u64) {
        if !kind.is_connect() {
            self.requests.set(self.requests.get() + n);
        }
        self.error_count.set(self.error_count.get() + n);
        *self.errors.borrow_mut().entry(kind).or_default() += n;
    }

    fn count_response(&self, status: u16, latency: Duration) {
        if (200..300).contains(&status) {
            self.requests.set(self.requests.get() + 1);
            self.ok.set(self.ok.get() + 1);
            let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
            self.histogram.borrow_mut().saturating_record(nanos);
        } else {
            self.count_error(ErrorKind::Status(status), 1);
        }
    }

    fn publish_progress(&self) {
        self.plan
            .progress
            .requests
            .store(self.requests.get(), Ordering::Relaxed);
        self.plan
            .progress
            .errors
            .store(self.error_count.get(), Ordering::Relaxed);
    }
}

/// Runs the executor's share of the load to the end and reports it.
pub(crate) async fn run(plan: Plan) -> ShardReport {
    let mut batch = Vec::with_capacity(plan.request.len() * plan.pipeline);
    for _ in 0..plan.pipeline {
        batch.extend_from_slice(&plan.request);
    }
    let histogram = Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
        .expect("static histogram bounds are valid");
    let shard = Rc::new(Shard {
        slots: (0..plan.connections)
            .map(|_| Slot {
                fd: Cell::new(-1),
                busy_since: Cell::new(None),
                timed_out: Cell::new(false),
            })
            .collect(),
        plan,
        batch,
        requests: Cell::new(0),
        ok: Cell::new(0),
        error_count: Cell::new(0),
        connects: Cell::new(0),
        errors: RefCell::new(BTreeMap::new()),
        histogram: RefCell::new(histogram),
    });
    let tasks: Vec<_> = (0..shard.plan.connections)
        .map(|index| glommio::spawn_local(connection_loop(shard.clone(), index)))
        .collect();
    let watchdog = glommio::spawn_local(watchdog(shard.clone()));
    let all_done = async {
        for task in tasks {
            task.await;
        }
        false
    };
    let deadline = shard.plan.deadline;
    let stop = async {
        sleep(deadline.saturating_duration_since(Instant::now())).await;
        true
    };
    // Dropping the losing future cancels the connection tasks still running.
    let stopped_at_deadline = futures_lite::future::or(all_done, stop).await;
    drop(watchdog);
    let end = if stopped_at_deadline {
        deadline
    } else {
        Instant::now().min(deadline)
    };
    shard.publish_progress();
    ShardReport {
        requests: shard.requests.get(),
        ok: shard.ok.get(),
        errors: shard.errors.borrow().clone(),
        histogram: shard.histogram.borrow().clone(),
        connects: shard.connects.get(),
        end,
    }
}

/// One connection's closed loop.
async fn connection_loop(shard: Rc<Shard>, index: usize) {
    let plan = &shard.plan;
    let slot = &shard.slots[index];
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    let mut connection: Option<Connection> = None;
    loop {
        let now = Instant::now();
        if now >= plan.deadline {
            break;
        }
        let measuring = now >= plan.measure_start;
        // Claim before connecting, so no connection is opened once the budget is spent.
        let wanted = plan.pipeline as u64;
        let tickets = plan.tickets.as_deref().filter(|_| measuring);
        let count = tickets.map_or(wanted, |tickets| tickets.claim(wanted));
        if count == 0 {
            break;
        }
        if connection.is_none() {
            match connect(plan).await {
                Ok(stream) => {
                    slot.fd.set(stream.as_raw_fd());
                    shard.connects.set(shard.connects.get() + 1);
                    connection = Some(Connection::new(stream, plan.head_request));
                }
                Err(kind) => {
                    if let Some(tickets) = tickets {
                        tickets.give_back(count);
                    }
                    if measuring {
                        shard.count_error(kind, 1);
                    }
                    sleep(CONNECT_BACKOFF).await;
                    continue;
                }
            }
        }
        let conn = connection.as_mut().expect("connected above");
        let outcome = exchange(&shard, slot, conn, &mut buffer, count as usize, measuring).await;
        let keep = match outcome {
            Ok(keep_alive) => keep_alive,
            Err((kind, unanswered)) => {
                let kind = if slot.timed_out.get() {
                    ErrorKind::Timeout
                } else {
                    kind
                };
                if measuring && Instant::now() < plan.deadline {
                    shard.count_error(kind, unanswered);
                }
                false
            }
        };
        slot.busy_since.set(None);
        slot.timed_out.set(false);
        if !keep {
            // Forget the fd before the socket closes, so the watchdog never touches a reused one.
            slot.fd.set(-1);
            connection = None;
        }
    }
    slot.fd.set(-1);
}

struct Connection {
    stream: TcpStream,
    reader: ResponseReader,
    /// Unconsumed bytes are `buffer[start..end]`.
    start: usize,
    end: usize,
}

impl Connection {
    fn new(stream: TcpStream, head_request: bool) -> Connection {
        Connection {
            stream,
            reader: ResponseReader::new(head_request),
            start: 0,
            end: 0,
        }
    }
}

async fn connect(plan: &Plan) -> Result<TcpStream, ErrorKind> {
    let stream = TcpStream::connect_timeout(plan.addr, plan.connect_timeout)
        .await
        .map_err(|error| {
            let error = io::Error::from(error);
            match error.kind() {
                io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
                io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
                _ => ErrorKind::Connect,
            }
        })?;
    stream.set_nodelay(true).map_err(|_| ErrorKind::Connect)?;
    Ok(stream)
}

/// Writes `count` requests and reads their responses. Returns whether the connection may be
/// reused, or the failure and how many of the requests it leaves unanswered.
async fn exchange(
    shard: &Shard,
    slot: &Slot,
    conn: &mut Connection,
    buffer: &mut [u8],
    count: usize,
    measuring: bool,
) -> Result<bool, (ErrorKind, u64)> {
    let plan = &shard.plan;
    let written_at = Instant::now();
    slot.busy_since.set(Some(written_at));
    let bytes = &shard.batch[..plan.request.len() * count];
    conn.stream
        .write_all(bytes)
        .await
        .map_err(|error| (ErrorKind::of_io(&error), count as u64))?;
    let mut keep_alive = true;
    for answered in 0..count {
        let unanswered = (count - answered) as u64;
        let response = loop {
            let (consumed, step) = conn
                .reader
                .advance(&buffer[conn.start..conn.end], &mut ())
                .map_err(|_| (ErrorKind::Parse, unanswered))?;
            conn.start += consumed;
            if let Step::Done(response) = step {
                break response;
            }
            // Keep unconsumed bytes (an incomplete head) at the front and read more after them.
            buffer.copy_within(conn.start..conn.end, 0);
            conn.end -= conn.start;
            conn.start = 0;
            // The reader rejects heads over HEAD_BYTES_MAX, so there is always room to read.
            debug_assert!(conn.end < buffer.len());
            let read = conn
                .stream
                .read(&mut buffer[conn.end..])
                .await
                .map_err(|error| (ErrorKind::of_io(&error), unanswered))?;
            if read == 0 {
                match conn.reader.finish_at_eof() {
                    Some(response) => break response,
                    None => return Err((ErrorKind::Closed, unanswered)),
                }
            }
            conn.end += read;
        };
        let done_at = Instant::now();
        if measuring && done_at < plan.deadline {
            shard.count_response(response.status, done_at - written_at);
        }
        keep_alive &= response.keep_alive;
        if !response.keep_alive && answered + 1 < count {
            // The server closes after this response; the rest of the batch is lost.
            return Err((ErrorKind::Closed, unanswered - 1));
        }
    }
    Ok(keep_alive)
}

/// Enforces the per-request timeout and publishes the progress counters.
async fn watchdog(shard: Rc<Shard>) {
    let tick = (shard.plan.timeout / 10).clamp(Duration::from_millis(1), WATCHDOG_TICK_MAX);
    loop {
        sleep(tick).await;
        shard.publish_progress();
        let now = Instant::now();
        for slot in &shard.slots {
            let expired = slot
                .busy_since
                .get()
                .is_some_and(|since| now - since >= shard.plan.timeout);
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
