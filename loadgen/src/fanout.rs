//! `loadgen fanout`: broadcast fan-out latency.
//!
//! M subscriber connection WebSockets to one actor, spread over the executors, each subscribed
//! to one event; a trigger connection (on the main thread, blocking, not subscribed) calls an
//! action once per round, and every subscriber's `Event` frame is timed from the moment the
//! trigger's `ActionRequest` was written.
//!
//! Rounds run in lockstep, so attributing an event to its round needs no cooperation from the
//! actor: the main thread publishes the round's send time and then opens the round (`open_round`,
//! release); a subscriber that reads the event loads the open round (acquire), so it sees the send
//! time, and counts the event for that round, once. Events while no round is open, or a second
//! one in a round, are `unexpected`. Every subscriber must see the same `args` in a round (a hash
//! of the raw JSON is compared). The main thread closes the round once the trigger's response
//! and all M deliveries are in (or at the timeout), pauses, and opens the next.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::sync::Semaphore;
use glommio::timer::sleep;
use hdrhistogram::Histogram;

use crate::cli::FanoutArgs;
use crate::keys::SplitMix64;
use crate::report::{self, CpuTime};
use crate::rivet::{self, json_string};
use crate::rivetconn::{self, ActionTemplate, ToClient};
use crate::shard::{LATENCY_NS_MAX, nanos};
use crate::url::{Url, join_path};
use crate::ws::{self, MessageKind, Opcode};
use crate::wsconn::{self, ActionOutcome, BlockingWs, WsConn, WsEndpoint};
use crate::wsload::mask_seed;

/// Warm-up rounds tried beyond `--warmup-rounds` until one reaches every subscriber.
const WARMUP_EXTRA_ATTEMPTS: usize = 10;
/// Pause before a subscriber tries to connect again.
const SETUP_BACKOFF: Duration = Duration::from_millis(100);
/// How often the executors look for the stop signal.
const STOP_POLL: Duration = Duration::from_millis(10);
/// How often the main thread looks at a round's delivery count.
const ROUND_POLL: Duration = Duration::from_micros(200);
/// How often the main thread looks at the setup progress.
const SETUP_POLL: Duration = Duration::from_millis(10);
/// How long the executors get to hand in their reports once told to stop.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What the main thread and the subscriber executors share.
struct Shared {
    /// Times are nanoseconds since this instant.
    origin: Instant,
    /// Index + 1 of the round open now; 0 between rounds.
    open_round: AtomicUsize,
    rounds: Vec<RoundSlot>,
    /// Subscribers connected, with `Init`, that sent their `SubscriptionRequest`.
    subscribed: AtomicUsize,
    /// Subscribers that gave up connecting (at --setup-timeout).
    setup_failed: AtomicUsize,
    /// Subscribers whose connection ended after they subscribed.
    disconnected: AtomicUsize,
    /// Matching events outside an open round, or a second one in a round.
    unexpected: AtomicU64,
    stop: AtomicBool,
    first_failure: Mutex<Option<String>>,
}

impl Shared {
    fn note_failure(&self, detail: String) {
        let mut first = self
            .first_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some(detail);
        }
    }

    fn first_failure(&self) -> Option<String> {
        self.first_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One round's shared counters.
#[derive(Default)]
struct RoundSlot {
    /// When the trigger was written (ns since `origin`); published before the round opens.
    sent_ns: AtomicU64,
    /// Measured (not warm-up): deliveries go into the histogram.
    measured: AtomicBool,
    delivered: AtomicUsize,
    /// The slowest delivery so far (ns).
    last_ns: AtomicU64,
    /// Hash of the first delivery's `args` (never 0 once set).
    args_hash: AtomicU64,
    /// Deliveries whose `args` differ from the first's.
    mismatched: AtomicU64,
}

/// One executor's subscribers.
struct SubscriberPlan {
    shared: Arc<Shared>,
    endpoint: Arc<WsEndpoint>,
    /// The `SubscriptionRequest` text.
    subscription: Arc<Vec<u8>>,
    event: Arc<str>,
    subscribers: usize,
    first: usize,
    setup_permits: u64,
    connect_timeout: Duration,
    timeout: Duration,
    setup_deadline: Instant,
}

/// What one executor measured.
struct SubscriberReport {
    delivery: Histogram<u64>,
    handshake: Histogram<u64>,
    connects: u64,
    setup_retries: u64,
    error_frames: u64,
    other_events: u64,
}

struct SubscriberShard {
    plan: SubscriberPlan,
    setup: Semaphore,
    delivery: RefCell<Histogram<u64>>,
    handshake: RefCell<Histogram<u64>>,
    connects: Cell<u64>,
    setup_retries: Cell<u64>,
    error_frames: Cell<u64>,
    other_events: Cell<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static histogram bounds are valid")
}

/// Runs one executor's subscribers until the stop signal.
async fn run_subscribers(plan: SubscriberPlan) -> SubscriberReport {
    let shard = Rc::new(SubscriberShard {
        setup: Semaphore::new(plan.setup_permits),
        plan,
        delivery: RefCell::new(histogram()),
        handshake: RefCell::new(histogram()),
        connects: Cell::new(0),
        setup_retries: Cell::new(0),
        error_frames: Cell::new(0),
        other_events: Cell::new(0),
    });
    let tasks: Vec<_> = (0..shard.plan.subscribers)
        .map(|index| glommio::spawn_local(subscriber(shard.clone(), index)))
        .collect();
    let all_done = async {
        for task in tasks {
            task.await;
        }
    };
    let shared = shard.plan.shared.clone();
    let stop = async {
        while !shared.stop.load(Ordering::Acquire) {
            sleep(STOP_POLL).await;
        }
    };
    // Dropping the losing future cancels the subscriber tasks still running.
    futures_lite::future::or(all_done, stop).await;
    SubscriberReport {
        delivery: shard.delivery.borrow().clone(),
        handshake: shard.handshake.borrow().clone(),
        connects: shard.connects.get(),
        setup_retries: shard.setup_retries.get(),
        error_frames: shard.error_frames.get(),
        other_events: shard.other_events.get(),
    }
}

/// One subscriber: connect and subscribe, then time every matching event.
async fn subscriber(shard: Rc<SubscriberShard>, index: usize) {
    let plan = &shard.plan;
    let shared = &*plan.shared;
    let mut rng = SplitMix64::new(mask_seed((plan.first + index) as u64));
    let Some(mut conn) = subscribe(&shard, &mut rng).await else {
        return;
    };
    let lost = |detail: String| {
        if !shared.stop.load(Ordering::Acquire) {
            shared.disconnected.fetch_add(1, Ordering::AcqRel);
            shared.note_failure(detail);
        }
    };
    let mut last_round: Option<usize> = None;
    let mut out = Vec::new();
    let mut now = Instant::now();
    loop {
        loop {
            let message = match conn.frames.next_message() {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(error) => return lost(format!("invalid frame from the server: {error}")),
            };
            match message.kind {
                MessageKind::Text | MessageKind::Binary => match rivetconn::decode(message.bytes) {
                    Ok(ToClient::Event { name, args }) if name.is(&plan.event) => {
                        deliver(&shard, &mut last_round, now, args);
                    }
                    Ok(ToClient::Event { .. }) => {
                        shard.other_events.set(shard.other_events.get() + 1);
                    }
                    Ok(ToClient::Error {
                        group,
                        code,
                        message: text,
                        ..
                    }) => {
                        shard.error_frames.set(shard.error_frames.get() + 1);
                        shared.note_failure(format!(
                            "a subscriber got an Error frame {}/{}: {}",
                            group.decode(),
                            code.decode(),
                            text.decode()
                        ));
                    }
                    Ok(_) => {}
                    Err(error) => {
                        return lost(format!(
                            "undecodable message ({error}): {}",
                            wsconn::clip(message.bytes)
                        ));
                    }
                },
                MessageKind::Ping => {
                    ws::write_frame(
                        &mut out,
                        Opcode::Pong,
                        message.bytes,
                        wsconn::mask(&mut rng),
                    );
                }
                MessageKind::Pong => {}
                MessageKind::Close => {
                    let why = match ws::close_parts(message.bytes) {
                        Ok(Some((code, reason))) => format!("{code} {reason}"),
                        _ => "no status".to_string(),
                    };
                    return lost(format!(
                        "the server closed a subscriber's WebSocket ({why})"
                    ));
                }
            }
        }
        if !out.is_empty() {
            if let Err(error) = conn.stream.write_all(&out).await {
                return lost(format!("a subscriber's connection failed: {error}"));
            }
            out.clear();
        }
        match conn.stream.read(conn.frames.space()).await {
            Ok(0) => {
                return lost(
                    "the server closed a subscriber's TCP connection without a close frame"
                        .to_string(),
                );
            }
            Ok(read) => conn.frames.filled(read),
            Err(error) => return lost(format!("a subscriber's connection failed: {error}")),
        }
        now = Instant::now();
    }
}

/// Opens the subscriber's connection and sends its `SubscriptionRequest`, retrying until
/// `--setup-timeout`; `None` when it gave up.
async fn subscribe(shard: &SubscriberShard, rng: &mut SplitMix64) -> Option<WsConn> {
    let plan = &shard.plan;
    let shared = &*plan.shared;
    loop {
        let permit = shard.setup.acquire_permit(1).await.ok()?;
        let started = Instant::now();
        let attempt = async {
            let mut conn: WsConn =
                wsconn::open(&plan.endpoint, 0, rng, plan.connect_timeout, plan.timeout)
                    .await
                    .map_err(|failure| failure.detail)?;
            let mut frame = Vec::with_capacity(plan.subscription.len() + 14);
            ws::write_frame(
                &mut frame,
                Opcode::Text,
                &plan.subscription,
                wsconn::mask(rng),
            );
            conn.stream
                .write_all(&frame)
                .await
                .map_err(|error| format!("cannot send the SubscriptionRequest: {error}"))?;
            Ok::<WsConn, String>(conn)
        }
        .await;
        drop(permit);
        match attempt {
            Ok(conn) => {
                shard
                    .handshake
                    .borrow_mut()
                    .saturating_record(nanos(started.elapsed()));
                shard.connects.set(shard.connects.get() + 1);
                shared.subscribed.fetch_add(1, Ordering::AcqRel);
                return Some(conn);
            }
            Err(detail) => {
                if Instant::now() >= plan.setup_deadline || shared.stop.load(Ordering::Acquire) {
                    shared.setup_failed.fetch_add(1, Ordering::AcqRel);
                    shared.note_failure(detail);
                    return None;
                }
                shard.setup_retries.set(shard.setup_retries.get() + 1);
                sleep(SETUP_BACKOFF).await;
            }
        }
    }
}

/// A matching event read at `now`: counts it for the open round.
fn deliver(shard: &SubscriberShard, last_round: &mut Option<usize>, now: Instant, args: &[u8]) {
    let shared = &*shard.plan.shared;
    let Some(round) = shared.open_round.load(Ordering::Acquire).checked_sub(1) else {
        shared.unexpected.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if *last_round == Some(round) {
        shared.unexpected.fetch_add(1, Ordering::Relaxed);
        return;
    }
    *last_round = Some(round);
    let slot = &shared.rounds[round];
    // Published before the round opened (the acquire load above sees it).
    let sent = slot.sent_ns.load(Ordering::Relaxed);
    let at = nanos(now.saturating_duration_since(shared.origin));
    let latency = at.saturating_sub(sent).max(1);
    if slot.measured.load(Ordering::Relaxed) {
        shard.delivery.borrow_mut().saturating_record(latency);
    }
    slot.last_ns.fetch_max(latency, Ordering::Relaxed);
    let hash = args_hash(args);
    if let Err(first) =
        slot.args_hash
            .compare_exchange(0, hash, Ordering::Relaxed, Ordering::Relaxed)
        && first != hash
    {
        slot.mismatched.fetch_add(1, Ordering::Relaxed);
    }
    // Release: the main thread, seeing the count, sees `last_ns` and `mismatched` too.
    slot.delivered.fetch_add(1, Ordering::Release);
}

/// FNV-1a of the raw `args` JSON, never 0.
fn args_hash(args: &[u8]) -> u64 {
    let hash = args.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    hash | 1
}

/// How one round went.
#[derive(Debug, Clone)]
struct Round {
    measured: bool,
    delivered: usize,
    mismatched: u64,
    /// The slowest delivery (ns); with fewer than M deliveries, of those that came.
    last_ns: u64,
    /// Trigger written → its `ActionResponse` (ns).
    trigger_ns: u64,
}

/// The main thread's side: the trigger connection and the rounds.
struct Rounds<'a> {
    shared: &'a Shared,
    trigger: BlockingWs,
    action: ActionTemplate,
    scratch: Vec<u8>,
    next_id: u64,
    next_slot: usize,
    subscribers: usize,
    timeout: Duration,
}

impl Rounds<'_> {
    /// Triggers one round and waits for its response and all deliveries (or the timeout).
    /// Errors are trigger failures.
    fn run(&mut self, measured: bool) -> Result<Round, String> {
        let index = self.next_slot;
        self.next_slot += 1;
        let slot = &self.shared.rounds[index];
        slot.measured.store(measured, Ordering::Relaxed);
        let id = self.next_id;
        self.next_id += 1;
        self.scratch.clear();
        self.action.write(&mut self.scratch, id);
        let sent = Instant::now();
        slot.sent_ns.store(
            nanos(sent.saturating_duration_since(self.shared.origin)),
            Ordering::Relaxed,
        );
        self.shared.open_round.store(index + 1, Ordering::Release);
        let until = sent + self.timeout;
        let answered = self
            .trigger
            .send_text(&self.scratch)
            .and_then(|()| self.trigger.wait_action(id, until));
        let trigger_ns = nanos(sent.elapsed());
        let answered = match answered {
            Ok(ActionOutcome::Ok) => Ok(()),
            Ok(ActionOutcome::Failed(error)) => Err(format!(
                "the trigger action failed with an Error frame: {error}"
            )),
            Err(error) => Err(format!(
                "the trigger got no answer to its action (within --timeout {:?}): {error}",
                self.timeout
            )),
        };
        if let Err(error) = answered {
            self.shared.open_round.store(0, Ordering::Release);
            return Err(error);
        }
        loop {
            let delivered = slot.delivered.load(Ordering::Acquire);
            let lost = self.shared.disconnected.load(Ordering::Acquire);
            if delivered + lost >= self.subscribers || Instant::now() >= until {
                break;
            }
            std::thread::sleep(ROUND_POLL);
        }
        self.shared.open_round.store(0, Ordering::Release);
        Ok(Round {
            measured,
            delivered: slot.delivered.load(Ordering::Acquire),
            mismatched: slot.mismatched.load(Ordering::Relaxed),
            last_ns: slot.last_ns.load(Ordering::Relaxed),
            trigger_ns,
        })
    }
}

/// Everything the main thread learned.
struct Outcome {
    setup: Duration,
    rounds: Vec<Round>,
    warmups: usize,
    /// Why the run stopped early, if it did.
    failure: Option<String>,
}

pub(crate) fn run(args: &FanoutArgs) -> Result<(), String> {
    if args.timeout.is_zero() || args.connect_timeout.is_zero() || args.setup_timeout.is_zero() {
        return Err(
            "--timeout, --connect-timeout and --setup-timeout must be greater than zero".into(),
        );
    }
    if args.threads > args.subscribers {
        return Err(format!(
            "--threads ({}) must not exceed --subscribers ({})",
            args.threads, args.subscribers
        ));
    }
    let call_args = args.args.trim();
    if !(call_args.starts_with('[') && call_args.ends_with(']')) {
        return Err(format!(
            "--args must be a JSON array, like '[1]', not `{}`",
            args.args
        ));
    }
    let subscribers = args.subscribers as usize;
    let threads = args.threads as usize;
    let needed =
        subscribers as u64 + 1 + crate::limits::OVERHEAD_FDS_PER_THREAD * u64::from(args.threads);
    if let Some((from, to)) =
        crate::limits::ensure_open_files(needed, &format!("--subscribers {}", args.subscribers))?
        && !args.quiet
    {
        eprintln!("loadgen: raised the open-file limit (RLIMIT_NOFILE) from {from} to {to}");
    }
    let cpu_start = CpuTime::now();
    let wall_start = Instant::now();

    let endpoint = Url::parse(&args.endpoint)?;
    if endpoint.query.is_some() {
        return Err(format!(
            "--endpoint `{}` must not have a query",
            args.endpoint
        ));
    }
    let addr = endpoint.socket_addr()?;
    let parts = match &args.key {
        Some(key) => vec![key.clone()],
        None => args.key_part.clone(),
    };
    let key = rivet::serialize_key(&parts);
    let manager = rivet::Manager {
        endpoint: &endpoint,
        addr,
        namespace: &args.namespace,
        actor: &args.actor,
        headers: &args.headers,
        timeout: args.timeout,
    };
    let actor = manager.resolve(&mut rivet::BlockingClient::new(addr, args.timeout), &key)?;
    let actor_id = actor.actor_id.clone();
    if !args.quiet {
        let created = match actor.created {
            Some(true) => " (created)",
            Some(false) => " (existing)",
            None => "",
        };
        eprintln!(
            "loadgen: actor {} key {key:?} is {actor_id}{created}",
            args.actor
        );
    }
    let connect_path = join_path(
        &endpoint.path,
        &format!(
            "/gateway/{}/connect",
            rivet::encode_uri_component(&actor_id)
        ),
    );
    let url = endpoint.display(&connect_path);
    let ws_endpoint = Arc::new(WsEndpoint {
        addr,
        host: endpoint.authority.clone(),
        targets: vec![connect_path],
        actor_ids: vec![actor_id.clone()],
        protocols: WsEndpoint::protocols(args.conn_params.as_deref()),
        headers: args.headers.clone(),
    });

    // The trigger first: if connections do not work at all, one clear error.
    let trigger = BlockingWs::open(
        &ws_endpoint,
        SplitMix64::new(mask_seed(u64::MAX)),
        args.connect_timeout,
        args.timeout,
    )
    .map_err(|error| format!("cannot open the trigger's connection WebSocket to {url}: {error}"))?;

    let slots = args.warmup_rounds as usize + WARMUP_EXTRA_ATTEMPTS + args.rounds as usize;
    let shared = Arc::new(Shared {
        origin: wall_start,
        open_round: AtomicUsize::new(0),
        rounds: (0..slots).map(|_| RoundSlot::default()).collect(),
        subscribed: AtomicUsize::new(0),
        setup_failed: AtomicUsize::new(0),
        disconnected: AtomicUsize::new(0),
        unexpected: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        first_failure: Mutex::new(None),
    });
    let setup_started = Instant::now();
    let setup_deadline = setup_started + args.setup_timeout;
    let subscription =
        Arc::new(rivetconn::subscription_request(&json_string(&args.event), true).into_bytes());
    let event: Arc<str> = Arc::from(args.event.as_str());
    let setup_permits = u64::from(args.setup_concurrency.div_ceil(args.threads)).max(1);
    let (sender, receiver) = mpsc::channel();
    let mut handles = Vec::with_capacity(threads);
    let mut first = 0;
    for index in 0..threads {
        let share = subscribers / threads + usize::from(index < subscribers % threads);
        let plan = SubscriberPlan {
            shared: shared.clone(),
            endpoint: ws_endpoint.clone(),
            subscription: subscription.clone(),
            event: event.clone(),
            subscribers: share,
            first,
            setup_permits,
            connect_timeout: args.connect_timeout,
            timeout: args.timeout,
            setup_deadline,
        };
        first += share;
        match crate::spawn_executor(index, sender.clone(), move || run_subscribers(plan)) {
            Ok(handle) => handles.push(handle),
            Err(error) => {
                shared.stop.store(true, Ordering::Release);
                return Err(error);
            }
        }
    }
    drop(sender);

    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    let mut reports = Vec::with_capacity(threads);
    let outcome = coordinate(
        args,
        &shared,
        trigger,
        &receiver,
        &mut reports,
        setup_started,
        setup_deadline,
        show_progress,
    );
    shared.stop.store(true, Ordering::Release);
    let give_up_at = Instant::now() + STOP_GRACE;
    while reports.len() < handles.len() {
        let left = give_up_at.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(message)) => return Err(message),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "a subscriber executor did not stop within {STOP_GRACE:?}"
                ));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("an executor thread failed (panicked) before reporting".into());
            }
        }
    }
    for handle in handles {
        let _ = handle.join();
    }
    if show_progress {
        eprint!("\r\x1b[2K");
    }
    let outcome = outcome?;
    let cpu = CpuTime::now().since(cpu_start);
    let wall = wall_start.elapsed();

    let mut totals = SubscriberReport {
        delivery: histogram(),
        handshake: histogram(),
        connects: 0,
        setup_retries: 0,
        error_frames: 0,
        other_events: 0,
    };
    for report in reports {
        totals
            .delivery
            .add(&report.delivery)
            .expect("histograms share their bounds");
        totals
            .handshake
            .add(&report.handshake)
            .expect("histograms share their bounds");
        totals.connects += report.connects;
        totals.setup_retries += report.setup_retries;
        totals.error_frames += report.error_frames;
        totals.other_events += report.other_events;
    }
    let mut last = histogram();
    let mut trigger = histogram();
    let measured: Vec<&Round> = outcome
        .rounds
        .iter()
        .filter(|round| round.measured)
        .collect();
    for round in &measured {
        trigger.saturating_record(round.trigger_ns.max(1));
        if round.delivered >= subscribers {
            last.saturating_record(round.last_ns.max(1));
        }
    }
    let delivered: u64 = measured.iter().map(|round| round.delivered as u64).sum();
    let expected = measured.len() as u64 * subscribers as u64;
    let results = Results {
        url,
        actor_id,
        subscribers,
        rounds_run: measured.len(),
        warmups: outcome.warmups,
        expected,
        delivered,
        missing: expected.saturating_sub(delivered),
        mismatched: measured.iter().map(|round| round.mismatched).sum(),
        unexpected: shared.unexpected.load(Ordering::Relaxed),
        disconnected: shared.disconnected.load(Ordering::Relaxed) as u64,
        setup: outcome.setup,
        totals,
        last,
        trigger,
        measured: measured.into_iter().cloned().collect(),
        cpu,
        wall,
        failure: outcome.failure.clone(),
        first_failure: shared.first_failure(),
    };
    if let Some(path) = &args.json {
        std::fs::write(path, results.json(args))
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    if let Some(path) = &args.hgrm {
        std::fs::write(path, report::hgrm(&results.totals.delivery))
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    if let Some(path) = &args.hgrm_last {
        std::fs::write(path, report::hgrm(&results.last))
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    if !args.quiet {
        print!("{}", results.text(args));
        if results.unexpected > 0 {
            eprintln!(
                "loadgen: warning: {} unexpected `{}` events (outside a round, or twice in one): \
                 is something else triggering the actor? A round may then have timed another \
                 trigger's event.",
                results.unexpected, args.event
            );
        }
    }
    if let Some(failure) = outcome.failure {
        return Err(failure);
    }
    if results.missing > 0 || results.mismatched > 0 || results.disconnected > 0 {
        return Err(format!(
            "{} deliveries missing, {} with mismatched args, {} subscribers lost their connection",
            results.missing, results.mismatched, results.disconnected
        ));
    }
    Ok(())
}

/// Waits for the setup, runs the warm-up and measured rounds. An `Err` is a failure before any
/// measured round (nothing to report); a failure during the measured rounds ends them and is
/// returned in [`Outcome::failure`].
#[allow(clippy::too_many_arguments)]
fn coordinate(
    args: &FanoutArgs,
    shared: &Shared,
    trigger: BlockingWs,
    receiver: &mpsc::Receiver<Result<SubscriberReport, String>>,
    reports: &mut Vec<SubscriberReport>,
    setup_started: Instant,
    setup_deadline: Instant,
    show_progress: bool,
) -> Result<Outcome, String> {
    let subscribers = args.subscribers as usize;
    // A connect attempt started just before the setup deadline may take this much longer.
    let give_up_at = setup_deadline + args.connect_timeout + args.timeout + Duration::from_secs(1);
    let mut shown_at = Instant::now();
    loop {
        let subscribed = shared.subscribed.load(Ordering::Acquire);
        let failed = shared.setup_failed.load(Ordering::Acquire);
        if subscribed + failed >= subscribers {
            break;
        }
        match receiver.try_recv() {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(message)) => return Err(message),
            Err(_) => {}
        }
        if Instant::now() >= give_up_at {
            return Err(format!(
                "only {subscribed} of {subscribers} subscribers connected and subscribed \
                 within --setup-timeout {:?}",
                args.setup_timeout
            ));
        }
        if show_progress && shown_at.elapsed() >= Duration::from_millis(250) {
            eprint!(
                "\r\x1b[2K[{:>6.1}s setup] subscribed {subscribed}/{subscribers}",
                setup_started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
            shown_at = Instant::now();
        }
        std::thread::sleep(SETUP_POLL);
    }
    let setup = setup_started.elapsed();
    let failed = shared.setup_failed.load(Ordering::Acquire);
    if failed > 0 {
        return Err(format!(
            "{failed} of {subscribers} subscribers could not connect and subscribe within \
             --setup-timeout {:?}; first failure: {}",
            args.setup_timeout,
            shared.first_failure().unwrap_or_default()
        ));
    }
    let lost = |shared: &Shared| {
        let lost = shared.disconnected.load(Ordering::Acquire);
        (lost > 0).then(|| {
            format!(
                "{lost} subscribers lost their connection: {}",
                shared.first_failure().unwrap_or_default()
            )
        })
    };
    if let Some(error) = lost(shared) {
        return Err(error);
    }
    let mut rounds = Rounds {
        shared,
        trigger,
        action: ActionTemplate::new(&json_string(&args.action), args.args.trim()),
        scratch: Vec::with_capacity(256),
        next_id: 0,
        next_slot: 0,
        subscribers,
        timeout: args.timeout,
    };
    let warmup_rounds = args.warmup_rounds as usize;
    let mut warmups = 0;
    loop {
        if show_progress {
            eprint!(
                "\r\x1b[2K[{:>6.1}s warmup] round {}",
                setup_started.elapsed().as_secs_f64(),
                warmups + 1
            );
            let _ = std::io::stderr().flush();
        }
        let round = rounds.run(false)?;
        warmups += 1;
        if let Some(error) = lost(shared) {
            return Err(error);
        }
        let complete = round.delivered >= subscribers;
        if warmups >= warmup_rounds && complete {
            break;
        }
        if warmups >= warmup_rounds + WARMUP_EXTRA_ATTEMPTS {
            return Err(format!(
                "the subscriptions are not all in effect: after {warmups} warm-up rounds, the \
                 last reached only {} of {subscribers} subscribers within --timeout {:?}",
                round.delivered, args.timeout
            ));
        }
        std::thread::sleep(args.interval);
    }
    let mut measured = Vec::with_capacity(args.rounds as usize);
    let mut failure = None;
    for number in 1..=args.rounds {
        std::thread::sleep(args.interval);
        if show_progress {
            eprint!(
                "\r\x1b[2K[{:>6.1}s rounds] round {number}/{}",
                setup_started.elapsed().as_secs_f64(),
                args.rounds
            );
            let _ = std::io::stderr().flush();
        }
        match rounds.run(true) {
            Ok(round) => {
                let delivered = round.delivered;
                measured.push(round);
                if delivered < subscribers {
                    failure = Some(match lost(shared) {
                        Some(error) => format!("round {number}: {error}"),
                        None => format!(
                            "round {number} reached only {delivered} of {subscribers} \
                             subscribers within --timeout {:?}",
                            args.timeout
                        ),
                    });
                    break;
                }
            }
            Err(error) => {
                failure = Some(format!("round {number}: {error}"));
                break;
            }
        }
    }
    rounds.trigger.close();
    Ok(Outcome {
        setup,
        rounds: measured,
        warmups,
        failure,
    })
}

/// The numbers of a run, for the reports.
struct Results {
    url: String,
    actor_id: String,
    subscribers: usize,
    rounds_run: usize,
    warmups: usize,
    expected: u64,
    delivered: u64,
    missing: u64,
    mismatched: u64,
    unexpected: u64,
    disconnected: u64,
    setup: Duration,
    totals: SubscriberReport,
    /// Per complete measured round: the last delivery.
    last: Histogram<u64>,
    /// Per measured round: the trigger's action latency.
    trigger: Histogram<u64>,
    measured: Vec<Round>,
    cpu: CpuTime,
    wall: Duration,
    failure: Option<String>,
    first_failure: Option<String>,
}

impl Results {
    fn cpu_percent(&self) -> f64 {
        let wall = self.wall.as_secs_f64();
        let cpu = (self.cpu.user + self.cpu.system).as_secs_f64();
        if wall > 0.0 { 100.0 * cpu / wall } else { 0.0 }
    }

    /// The human-readable report, in the style of the other modes.
    fn text(&self, args: &FanoutArgs) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "target:      WS {}", self.url);
        let _ = writeln!(out, "actor:       {}", self.actor_id);
        let _ = writeln!(
            out,
            "fanout:      {} subscribers of {:?} on {} thread(s), trigger {} {}",
            self.subscribers,
            args.event,
            args.threads,
            args.action,
            args.args.trim()
        );
        let _ = writeln!(
            out,
            "rounds:      {} of {} run after {} warm-up, interval {}, timeout {}",
            self.rounds_run,
            args.rounds,
            self.warmups,
            report::seconds(args.interval),
            report::seconds(args.timeout)
        );
        let _ = writeln!(
            out,
            "setup:       {} subscribed in {:.3} s ({} connections opened, {} retries)",
            self.subscribers,
            self.setup.as_secs_f64(),
            self.totals.connects,
            self.totals.setup_retries
        );
        let _ = writeln!(
            out,
            "deliveries:  {} of {} ({} missing, {} mismatched, {} unexpected, {} subscribers lost)",
            self.delivered,
            self.expected,
            self.missing,
            self.mismatched,
            self.unexpected,
            self.disconnected
        );
        let _ = writeln!(
            out,
            "delivery_us: {}",
            report::percentile_line(&self.totals.delivery)
        );
        let _ = writeln!(out, "last_us:     {}", report::percentile_line(&self.last));
        let _ = writeln!(
            out,
            "trigger_us:  {}",
            report::percentile_line(&self.trigger)
        );
        let _ = writeln!(
            out,
            "handshake_us: {}",
            report::percentile_line(&self.totals.handshake)
        );
        if self.totals.other_events > 0 || self.totals.error_frames > 0 {
            let _ = writeln!(
                out,
                "other:       {} other events, {} Error frames at subscribers",
                self.totals.other_events, self.totals.error_frames
            );
        }
        let _ = writeln!(
            out,
            "cpu:         user={:.3} s sys={:.3} s util={:.1} % of one core over {:.3} s wall",
            self.cpu.user.as_secs_f64(),
            self.cpu.system.as_secs_f64(),
            self.cpu_percent(),
            self.wall.as_secs_f64()
        );
        if let Some(failure) = &self.failure {
            let _ = writeln!(out, "failure:     {failure}");
        }
        if let Some(first) = self
            .first_failure
            .as_ref()
            .filter(|_| self.failure.is_some())
        {
            let _ = writeln!(out, "first_failure: {first}");
        }
        out
    }

    /// The JSON summary. Latencies in microseconds, times in seconds.
    fn json(&self, args: &FanoutArgs) -> String {
        let number = |value: f64| format!("{value:.3}");
        let optional =
            |value: Option<&String>| value.map_or_else(|| "null".into(), |v| json_string(v));
        let mut rounds = String::new();
        for (index, round) in self.measured.iter().enumerate() {
            let separator = if index == 0 { "" } else { "," };
            let complete = round.delivered >= self.subscribers;
            let _ = write!(
                rounds,
                "{separator}\n    {{\"delivered\": {}, \"last_us\": {}, \"trigger_us\": {}, \"mismatched\": {}}}",
                round.delivered,
                if complete {
                    number(round.last_ns as f64 / 1000.0)
                } else {
                    "null".to_string()
                },
                number(round.trigger_ns as f64 / 1000.0),
                round.mismatched
            );
        }
        format!(
            r#"{{
  "mode": "fanout",
  "url": {url},
  "actor_id": {actor_id},
  "subscribers": {subscribers},
  "threads": {threads},
  "event": {event},
  "action": {action},
  "args": {call_args},
  "rounds": {rounds_limit},
  "rounds_run": {rounds_run},
  "warmup_rounds": {warmups},
  "interval_s": {interval},
  "timeout_s": {timeout},
  "expected_deliveries": {expected},
  "deliveries": {delivered},
  "missing": {missing},
  "mismatched": {mismatched},
  "unexpected": {unexpected},
  "subscribers_lost": {disconnected},
  "other_events": {other_events},
  "error_frames": {error_frames},
  "setup_s": {setup},
  "setup_retries": {retries},
  "connections_opened": {connects},
  "delivery_us": {delivery},
  "last_delivery_us": {last},
  "trigger_us": {trigger},
  "handshake_us": {handshake},
  "rounds_detail": [{rounds}
  ],
  "cpu": {{"user_s": {user}, "sys_s": {sys}, "wall_s": {wall}, "util_percent": {util}}},
  "failure": {failure},
  "first_failure": {first_failure}
}}
"#,
            url = json_string(&self.url),
            actor_id = json_string(&self.actor_id),
            subscribers = self.subscribers,
            threads = args.threads,
            event = json_string(&args.event),
            action = json_string(&args.action),
            call_args = json_string(args.args.trim()),
            rounds_limit = args.rounds,
            rounds_run = self.rounds_run,
            warmups = self.warmups,
            interval = number(args.interval.as_secs_f64()),
            timeout = number(args.timeout.as_secs_f64()),
            expected = self.expected,
            delivered = self.delivered,
            missing = self.missing,
            mismatched = self.mismatched,
            unexpected = self.unexpected,
            disconnected = self.disconnected,
            other_events = self.totals.other_events,
            error_frames = self.totals.error_frames,
            setup = number(self.setup.as_secs_f64()),
            retries = self.totals.setup_retries,
            connects = self.totals.connects,
            delivery = report::percentile_json(&self.totals.delivery),
            last = report::percentile_json(&self.last),
            trigger = report::percentile_json(&self.trigger),
            handshake = report::percentile_json(&self.totals.handshake),
            user = number(self.cpu.user.as_secs_f64()),
            sys = number(self.cpu.system.as_secs_f64()),
            wall = number(self.wall.as_secs_f64()),
            util = number(self.cpu_percent()),
            failure = optional(self.failure.as_ref()),
            first_failure = optional(self.first_failure.as_ref()),
        )
    }
}
