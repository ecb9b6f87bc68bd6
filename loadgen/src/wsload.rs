//! `loadgen ws`: one executor's share of actions over RivetKit connection WebSockets.
//!
//! Each connection is one task: it opens a connection WebSocket ([`wsconn::open`]: upgrade,
//! `101` with `rivet`, `Init`), then sends `ActionRequest` text frames with ids 0, 1, 2, … and
//! matches each `ActionResponse` (or `Error` frame) to its request by id, in whatever order they
//! come. A closed loop keeps `--in-flight` actions outstanding at all times (a new one goes out
//! as soon as one is answered); an open loop sends at the schedule's intended times, as in
//! [`crate::shard`], with at most `--max-in-flight` outstanding. Timeouts, the deadline and the
//! `--requests` budget work as in [`crate::shard`]: a watchdog shuts down the socket of a
//! connection whose oldest action waited too long, and a single timer ends the run.
//!
//! A connection that fails (closed, reset, timed out, a protocol violation) fails every action
//! written to it and is replaced at once (ids from 0 again); a failed connect or handshake is
//! retried after a short pause. In the open loop, actions that fall due while there is no connection are queued (up to the bound)
//! and written once the next connection has its `Init`.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use glommio::timer::Timer;
use hdrhistogram::Histogram;

use crate::keys::{KeyDist, Picker, SplitMix64};
use crate::rivetconn::{self, ActionTemplate, InFlight, ToClient};
use crate::shard::{
    CONNECT_BACKOFF, ErrorKind, LATENCY_NS_MAX, OpenLoop, Pacing, Progress, ShardReport, Slot,
    Tally, Tickets, nanos,
};
use crate::socket::Socket;
use crate::ws::{self, MessageKind, Opcode};
use crate::wsconn::{self, WsConn, WsEndpoint};

/// Everything one executor needs; built on the main thread.
#[derive(Debug, Clone)]
pub(crate) struct WsPlan {
    pub(crate) endpoint: Arc<WsEndpoint>,
    pub(crate) action: Arc<ActionTemplate>,
    /// How each connection picks its actor (index into the endpoint's targets).
    pub(crate) key_dist: KeyDist,
    pub(crate) seed: u64,
    /// `Closed { pipeline }` keeps `pipeline` actions in flight per connection.
    pub(crate) pacing: Pacing,
    pub(crate) connections: usize,
    pub(crate) first_connection: usize,
    pub(crate) measure_start: Instant,
    pub(crate) deadline: Instant,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) tickets: Option<Arc<Tickets>>,
    pub(crate) progress: Arc<Progress>,
}

/// What one executor measured: the common report plus what only WebSockets have.
#[derive(Debug)]
pub(crate) struct WsReport {
    pub(crate) base: ShardReport,
    pub(crate) extras: WsExtras,
}

/// The WebSocket-only results (merged over executors by [`WsExtras::add`]).
#[derive(Debug, Clone)]
pub(crate) struct WsExtras {
    /// `Event` frames received in the measured window (ignored otherwise).
    pub(crate) events: u64,
    /// `Error` frames without an action id (connection-level errors).
    pub(crate) connection_errors: u64,
    /// Connect to `Init`, of every connection opened (ns).
    pub(crate) handshake: Histogram<u64>,
    /// `group/code` of the `Error` frames that answered measured actions.
    pub(crate) error_codes: BTreeMap<String, u64>,
    /// The first failure seen, in words (warmup included).
    pub(crate) first_failure: Option<String>,
}

impl WsExtras {
    pub(crate) fn new() -> WsExtras {
        WsExtras {
            events: 0,
            connection_errors: 0,
            handshake: Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
                .expect("static histogram bounds are valid"),
            error_codes: BTreeMap::new(),
            first_failure: None,
        }
    }

    pub(crate) fn add(&mut self, other: WsExtras) {
        self.events += other.events;
        self.connection_errors += other.connection_errors;
        self.handshake
            .add(&other.handshake)
            .expect("histograms share their bounds");
        for (code, count) in other.error_codes {
            *self.error_codes.entry(code).or_default() += count;
        }
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }
}

struct Shard {
    plan: WsPlan,
    tally: Rc<Tally>,
    extras: RefCell<WsExtras>,
}

impl Shard {
    fn note_failure(&self, detail: impl FnOnce() -> String) {
        let mut extras = self.extras.borrow_mut();
        if extras.first_failure.is_none() {
            extras.first_failure = Some(detail());
        }
    }
}

/// Runs the executor's share of the load to the end and reports it.
pub(crate) async fn run<S: Socket>(plan: WsPlan) -> WsReport {
    let tally = Tally::new(
        plan.connections,
        plan.timeout,
        plan.deadline,
        &plan.progress,
    );
    let shard = Rc::new(Shard {
        plan,
        tally,
        extras: RefCell::new(WsExtras::new()),
    });
    let tasks = (0..shard.plan.connections).map(|index| connection_loop::<S>(shard.clone(), index));
    let base = shard.tally.clone().run::<S>(tasks).await;
    WsReport {
        base,
        extras: shard.extras.borrow().clone(),
    }
}

/// An action awaiting its response, or (open loop, no connection) still to be written.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Where latency is measured from: the intended send time (open loop) or the moment the
    /// action was handed to the connection (closed loop).
    origin: Instant,
    /// When it was written to the connection.
    sent: Option<Instant>,
    measuring: bool,
    /// Held back by `--max-in-flight`.
    late: bool,
}

/// One connection's state; see [`connection_loop`].
struct Lane<'a, S> {
    shard: &'a Shard,
    slot: &'a Slot,
    global: u64,
    picker: Picker,
    rng: SplitMix64,
    conn: Option<WsConn<S>>,
    /// Bytes handed to the connection; `out[written..]` is not written yet.
    out: Vec<u8>,
    written: usize,
    /// One request's JSON text, before it is framed.
    scratch: Vec<u8>,
    /// Actions written to the current connection, by id.
    in_flight: InFlight<Pending>,
    /// Open loop: actions due while there was no connection.
    queued: VecDeque<Pending>,
    /// Open loop only (so glommio only): the timer for the next due action.
    timer: Option<Timer>,
    /// Reused to build `group/code` keys.
    code_key: String,
}

/// What woke a connection up.
enum Event {
    Wrote(io::Result<usize>),
    Read(io::Result<usize>),
    Due,
}

async fn connection_loop<S: Socket>(shard: Rc<Shard>, index: usize) {
    let plan = &shard.plan;
    let global = (plan.first_connection + index) as u64;
    let mut lane = Lane::<S> {
        shard: &shard,
        slot: &shard.tally.slots[index],
        global,
        picker: Picker::new(
            plan.key_dist,
            plan.endpoint.targets.len(),
            plan.seed,
            global,
        ),
        rng: SplitMix64::new(mask_seed(global)),
        conn: None,
        out: Vec::with_capacity(4096),
        written: 0,
        scratch: Vec::with_capacity(256),
        in_flight: InFlight::new(),
        queued: VecDeque::new(),
        timer: None,
        code_key: String::new(),
    };
    match &plan.pacing {
        Pacing::Closed { pipeline } => lane.closed_loop(*pipeline).await,
        Pacing::Open(open) => lane.open_loop(open).await,
    }
    lane.slot.fd.set(-1);
}

/// Seeds the masking keys of connection `global`: unpredictable enough (RFC 6455 §10.3 is
/// about browsers running untrusted code; a load generator only has to vary them).
pub(crate) fn mask_seed(global: u64) -> u64 {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    clock ^ global.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl<S: Socket> Lane<'_, S> {
    async fn closed_loop(&mut self, in_flight: usize) {
        let plan = &self.shard.plan;
        let budget_spent = |now: Instant| {
            now >= plan.measure_start
                && plan
                    .tickets
                    .as_deref()
                    .is_some_and(|tickets| tickets.issued.load(Ordering::Relaxed) >= tickets.limit)
        };
        let mut spent = false;
        loop {
            let now = Instant::now();
            if now >= plan.deadline {
                break;
            }
            if self.conn.is_none() {
                if spent || budget_spent(now) {
                    break;
                }
                if self.connect().await.is_err() {
                    S::sleep(CONNECT_BACKOFF).await;
                }
                continue;
            }
            while !spent && self.in_flight.len() < in_flight {
                let measuring = now >= plan.measure_start;
                let tickets = plan.tickets.as_deref().filter(|_| measuring);
                if tickets.is_some_and(|tickets| tickets.claim(1) == 0) {
                    spent = true;
                    break;
                }
                self.queue(
                    Pending {
                        origin: now,
                        sent: None,
                        measuring,
                        late: false,
                    },
                    now,
                );
            }
            if spent && self.in_flight.is_empty() {
                break;
            }
            self.step(None).await;
        }
    }

    async fn open_loop(&mut self, open: &OpenLoop) {
        let plan = &self.shard.plan;
        let mut next_slot: Option<u64> = None;
        let mut finished = false;
        // The --requests budget ended the schedule (rather than the deadline).
        let mut spent = false;
        // The bound was hit while an action was due; cleared once the schedule is caught up.
        let mut held = false;
        loop {
            let now = Instant::now();
            let mut next_due = None;
            if let Some(slot) = next_slot.as_mut() {
                while !finished {
                    let due = open.due(self.global, *slot);
                    if due >= plan.deadline {
                        finished = true;
                    } else if due > now {
                        held = false;
                        next_due = Some(due);
                    } else if self.outstanding() >= open.max_in_flight {
                        held = true;
                    } else {
                        let measuring = due >= plan.measure_start;
                        let tickets = plan.tickets.as_deref().filter(|_| measuring);
                        if tickets.is_some_and(|tickets| tickets.claim(1) == 0) {
                            finished = true;
                            spent = true;
                            break;
                        }
                        self.queue(
                            Pending {
                                origin: due,
                                sent: None,
                                measuring,
                                late: held,
                            },
                            now,
                        );
                        *slot += 1;
                        continue;
                    }
                    break;
                }
            }
            if finished && self.outstanding() == 0 {
                if !spent {
                    // The measured window is the schedule's: it ends at the deadline.
                    S::sleep(plan.deadline.saturating_duration_since(Instant::now())).await;
                }
                break;
            }
            if self.conn.is_none() {
                if self.connect().await.is_err() {
                    // The schedule goes on: what falls due meanwhile is queued (up to the
                    // bound) and written once a connection is up.
                    S::sleep(CONNECT_BACKOFF).await;
                } else if next_slot.is_none() {
                    // The schedule starts at the first connection; earlier slots are setup.
                    next_slot = Some(open.first_slot_from(self.global, Instant::now()));
                }
                continue;
            }
            self.step(next_due).await;
        }
    }

    fn outstanding(&self) -> usize {
        self.in_flight.len() + self.queued.len()
    }

    /// Opens a connection (upgrade and `Init`) and writes what was queued meanwhile.
    async fn connect(&mut self) -> Result<(), ()> {
        let shard = self.shard;
        let plan = &shard.plan;
        let actor = self.picker.pick();
        let started = Instant::now();
        let opened = wsconn::open::<S>(
            &plan.endpoint,
            actor,
            &mut self.rng,
            plan.connect_timeout,
            plan.timeout,
        )
        .await;
        let now = Instant::now();
        match opened {
            Ok(conn) => {
                shard
                    .extras
                    .borrow_mut()
                    .handshake
                    .saturating_record(nanos(now - started));
                shard.tally.count_connect();
                self.slot.fd.set(conn.stream.as_raw_fd());
                self.conn = Some(conn);
                while let Some(pending) = self.queued.pop_front() {
                    self.hand_over(pending, now);
                }
                // Frames that came right behind `Init`.
                self.read_messages(now);
                self.update_busy();
                Ok(())
            }
            Err(failure) => {
                shard.note_failure(|| failure.detail);
                if now >= plan.measure_start && now < plan.deadline {
                    shard.tally.count_error(failure.kind, 1);
                }
                Err(())
            }
        }
    }

    /// Adds an action; written at once when connected.
    fn queue(&mut self, pending: Pending, now: Instant) {
        if self.conn.is_some() {
            self.hand_over(pending, now);
        } else {
            self.queued.push_back(pending);
        }
    }

    /// Writes an `ActionRequest` frame with the next id and counts it as sent.
    fn hand_over(&mut self, mut pending: Pending, now: Instant) {
        let shard = self.shard;
        pending.sent = Some(now);
        if pending.measuring {
            let lag = now.saturating_duration_since(pending.origin);
            shard
                .tally
                .count_sent(&shard.plan.pacing, pending.late, lag);
        }
        let id = self.in_flight.push(pending);
        self.scratch.clear();
        shard.plan.action.write(&mut self.scratch, id);
        let mask = wsconn::mask(&mut self.rng);
        ws::write_frame(&mut self.out, Opcode::Text, &self.scratch, mask);
    }

    fn update_busy(&self) {
        let busy = match self.conn {
            Some(_) => self.in_flight.oldest().and_then(|pending| pending.sent),
            None => None,
        };
        self.slot.busy_since.set(busy);
    }

    /// Waits for one event (until `due` at the latest, if given) and handles it.
    async fn step(&mut self, due: Option<Instant>) {
        self.update_busy();
        let Some(conn) = self.conn.as_mut() else {
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
        let read_into = conn.frames.space();
        let stream = &mut conn.stream;
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
            Event::Wrote(Ok(0)) => self.close(ErrorKind::Closed, now, || {
                "the connection accepted no more bytes".to_string()
            }),
            Event::Wrote(Ok(count)) => {
                self.written += count;
                if self.written == self.out.len() {
                    self.out.clear();
                    self.written = 0;
                }
            }
            Event::Wrote(Err(error)) | Event::Read(Err(error)) => {
                self.close(ErrorKind::of_io(&error), now, || {
                    format!("connection failed: {error}")
                });
            }
            Event::Read(Ok(0)) => self.close(ErrorKind::Closed, now, || {
                "the server closed the TCP connection without a close frame".to_string()
            }),
            Event::Read(Ok(count)) => {
                self.conn.as_mut().expect("connected").frames.filled(count);
                self.read_messages(now);
            }
            Event::Due => {}
        }
        self.update_busy();
    }

    /// Handles every complete message in the read buffer.
    fn read_messages(&mut self, now: Instant) {
        let shard = self.shard;
        let plan = &shard.plan;
        let measured_window = now >= plan.measure_start && now < plan.deadline;
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let mut failure: Option<(ErrorKind, String)> = None;
        loop {
            let message = match conn.frames.next_message() {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(error) => {
                    failure = Some((
                        ErrorKind::Protocol,
                        format!("invalid frame from the server: {error}"),
                    ));
                    break;
                }
            };
            match message.kind {
                MessageKind::Text | MessageKind::Binary => {
                    let decoded = match rivetconn::decode(message.bytes) {
                        Ok(decoded) => decoded,
                        Err(error) => {
                            failure = Some((
                                ErrorKind::Protocol,
                                format!(
                                    "undecodable message ({error}): {}",
                                    wsconn::clip(message.bytes)
                                ),
                            ));
                            break;
                        }
                    };
                    match decoded {
                        ToClient::ActionResponse { id } => match self.in_flight.take(id) {
                            Some(pending) => {
                                if pending.measuring && now < plan.deadline {
                                    shard.tally.count_ok(now - pending.origin);
                                }
                            }
                            None => {
                                failure = Some((
                                    ErrorKind::Protocol,
                                    format!("ActionResponse for id {id}, which is not in flight"),
                                ));
                                break;
                            }
                        },
                        ToClient::Error {
                            action_id: Some(id),
                            group,
                            code,
                            message: text,
                        } => match self.in_flight.take(id) {
                            Some(pending) => {
                                shard.note_failure(|| {
                                    format!(
                                        "action error {}/{}: {}",
                                        group.decode(),
                                        code.decode(),
                                        text.decode()
                                    )
                                });
                                if pending.measuring && now < plan.deadline {
                                    shard.tally.count_error(ErrorKind::ActionError, 1);
                                    self.code_key.clear();
                                    self.code_key.push_str(&group.decode());
                                    self.code_key.push('/');
                                    self.code_key.push_str(&code.decode());
                                    let mut extras = shard.extras.borrow_mut();
                                    match extras.error_codes.get_mut(self.code_key.as_str()) {
                                        Some(count) => *count += 1,
                                        None => {
                                            extras.error_codes.insert(self.code_key.clone(), 1);
                                        }
                                    }
                                }
                            }
                            None => {
                                failure = Some((
                                    ErrorKind::Protocol,
                                    format!("Error frame for id {id}, which is not in flight"),
                                ));
                                break;
                            }
                        },
                        ToClient::Error {
                            action_id: None,
                            group,
                            code,
                            message: text,
                        } => {
                            shard.note_failure(|| {
                                format!(
                                    "connection error {}/{}: {}",
                                    group.decode(),
                                    code.decode(),
                                    text.decode()
                                )
                            });
                            if measured_window {
                                shard.extras.borrow_mut().connection_errors += 1;
                            }
                        }
                        ToClient::Event { .. } => {
                            if measured_window {
                                shard.extras.borrow_mut().events += 1;
                            }
                        }
                        ToClient::Init { .. } => {
                            failure =
                                Some((ErrorKind::Protocol, "a second Init frame".to_string()));
                            break;
                        }
                    }
                }
                MessageKind::Ping => {
                    let mask = wsconn::mask(&mut self.rng);
                    ws::write_frame(&mut self.out, Opcode::Pong, message.bytes, mask);
                }
                MessageKind::Pong => {}
                MessageKind::Close => {
                    let why = match ws::close_parts(message.bytes) {
                        Ok(Some((code, reason))) => format!("{code} {reason}"),
                        _ => "no status".to_string(),
                    };
                    failure = Some((
                        ErrorKind::Closed,
                        format!("the server closed the WebSocket ({why})"),
                    ));
                    break;
                }
            }
        }
        if let Some((kind, detail)) = failure {
            self.close(kind, now, || detail);
        }
    }

    /// Ends the connection; every action written to it fails with `kind` (or `Timeout` if the
    /// watchdog ended it).
    fn close(&mut self, kind: ErrorKind, now: Instant, detail: impl FnOnce() -> String) {
        let shard = self.shard;
        let kind = if self.slot.timed_out.replace(false) {
            shard.note_failure(|| {
                format!(
                    "no response within --timeout {:?}; connection closed",
                    shard.plan.timeout
                )
            });
            ErrorKind::Timeout
        } else {
            shard.note_failure(detail);
            kind
        };
        let counted = now < shard.plan.deadline;
        for pending in self.in_flight.reset() {
            if pending.measuring && counted {
                shard.tally.count_error(kind, 1);
            }
        }
        self.out.clear();
        self.written = 0;
        // Forget the fd before the socket closes, so the watchdog never touches a reused one.
        self.slot.fd.set(-1);
        self.conn = None;
        self.slot.busy_since.set(None);
    }
}
