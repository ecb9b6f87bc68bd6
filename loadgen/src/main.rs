//! `loadgen`: closed- or open-loop HTTP/1.1 load over keep-alive connections, and RivetKit
//! connection-WebSocket load, on glommio executors.
//!
//! The main thread parses the command line, resolves the target (for `action` and `ws`, the
//! actor ids via `PUT /actors`), starts one glommio executor per `--threads` on its own thread,
//! prints the progress line while they run and the report once they are done. All HTTP
//! measuring happens in [`shard`]; the HTTP client is the small codec in [`http`]; which actor a
//! request goes to is [`keys`]. `ws` runs [`wsload`] on the executors instead, over the client
//! WebSocket codec in [`ws`], the RivetKit messages in [`rivetconn`] and the connection opening
//! in [`wsconn`]; `fanout` is [`fanout`]. With `--busy-poll` the same connection loops run on
//! one busy-polling thread per connection instead of glommio executors (see [`socket`]).

mod cli;
mod fanout;
mod http;
mod keys;
mod limits;
mod plot;
mod report;
mod rivet;
mod rivetconn;
mod shard;
mod socket;
mod url;
mod ws;
mod wsconn;
mod wsload;

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use crate::cli::{ActionArgs, ActorArgs, Cli, Command, LoadArgs, RawArgs, WsArgs};
use crate::keys::KeyDist;
use crate::report::{CpuTime, KeysInfo, RunInfo, Summary, WsInfo};
use crate::rivetconn::ActionTemplate;
use crate::shard::{OpenLoop, Pacing, Plan, Progress, Requests, ShardReport, Templates, Tickets};
use crate::socket::{BusySocket, Socket};
use crate::url::Url;
use crate::wsconn::WsEndpoint;
use crate::wsload::{WsExtras, WsPlan, WsReport};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long the main thread waits past the deadline for executors to hand in their reports.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Memory glommio registers for file IO, which loadgen does not do (glommio's minimum).
const EXECUTOR_IO_MEMORY_BYTES: usize = 64 * 1024;

fn main() -> ExitCode {
    let cli = Cli::parse_checked();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("loadgen: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Most connections resolving actors in parallel before the load.
const RESOLVE_WORKERS_MAX: usize = 16;

/// What the connections send, and where.
struct Target {
    addr: SocketAddr,
    requests: Requests,
    method: String,
    url: String,
    /// The actor, when there is exactly one.
    actor_id: Option<String>,
    keys: Option<KeysInfo>,
}

/// `--spin-us`, read by every executor this process starts.
static SPIN_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn run(cli: Cli) -> Result<(), String> {
    SPIN_US.store(cli.spin_us, std::sync::atomic::Ordering::Relaxed);
    match cli.command {
        Command::Action(args) => {
            validate_load(&args.load)?;
            let target = action_target(&args)?;
            run_http("action", target, &args.load, args.pipeline)
        }
        Command::Raw(args) => {
            validate_load(&args.load)?;
            let target = raw_target(&args)?;
            run_http("raw", target, &args.load, args.pipeline)
        }
        Command::Ws(args) => run_ws(&args),
        Command::Fanout(args) => fanout::run(&args),
        Command::Plot(args) => plot::run(&args),
    }
}

fn run_http(
    mode: &'static str,
    target: Target,
    load: &LoadArgs,
    pipeline: u32,
) -> Result<(), String> {
    let info = RunInfo {
        mode,
        method: target.method.clone(),
        url: target.url.clone(),
        connections: load.connections,
        threads: load.executors(),
        busy_poll: load.busy_poll,
        pipeline,
        duration_limit: load.duration,
        requests_limit: load.requests,
        warmup: load.warmup,
        actor_id: target.actor_id.clone(),
        open: load.rate.map(|rate| (rate, load.max_in_flight)),
        keys: target.keys.clone(),
        ws: None,
    };
    let clock = Clock::start(load);
    let executors = spawn_executors(target, load, pipeline, &clock)?;
    let reports = collect(executors, load, &clock)?;
    let (cpu, wall) = clock.spent();
    let summary = Summary::merge(reports, clock.measure_start, cpu, wall);
    finish(&info, &summary, load)
}

/// Writes the results and prints the report and its warnings.
fn finish(info: &RunInfo, summary: &Summary, load: &LoadArgs) -> Result<(), String> {
    if let Some(path) = &load.json {
        std::fs::write(path, report::json(info, summary))
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    if let Some(path) = &load.hgrm {
        std::fs::write(path, report::hgrm(&summary.histogram))
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    if let Some(path) = &load.plot {
        std::fs::write(path, report::plot(info, summary))
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    if !load.quiet {
        print!("{}", report::text(info, summary));
        if summary.ok == 0 {
            if info.ws.is_some() {
                eprintln!("loadgen: warning: no ActionResponse was measured");
            } else {
                eprintln!("loadgen: warning: no successful (2xx) response was measured");
            }
        }
        if let Some(limit) = load.requests.filter(|&limit| summary.requests < limit) {
            eprintln!(
                "loadgen: warning: --duration ended the run after {} of {limit} requests",
                summary.requests
            );
        }
    }
    Ok(())
}

/// `loadgen ws`: resolve, open connection WebSockets, load the action over them.
fn run_ws(args: &WsArgs) -> Result<(), String> {
    let load = &args.load;
    validate_load(load)?;
    let needed =
        u64::from(load.connections) + limits::OVERHEAD_FDS_PER_THREAD * u64::from(load.executors());
    if let Some((from, to)) =
        limits::ensure_open_files(needed, &format!("--connections {}", load.connections))?
        && !load.quiet
    {
        eprintln!("loadgen: raised the open-file limit (RLIMIT_NOFILE) from {from} to {to}");
    }
    let target = &args.target;
    let resolution = resolve_actors(target, load.timeout, load.quiet)?;
    let endpoint = &resolution.endpoint;
    let connect_path =
        |actor_id: &str| url::join_path(&endpoint.path, &format!("/gateway/{actor_id}/connect"));
    let ws_endpoint = WsEndpoint {
        addr: resolution.addr,
        host: endpoint.authority.clone(),
        targets: resolution
            .resolved
            .iter()
            .map(|actor| connect_path(&rivet::encode_uri_component(&actor.actor_id)))
            .collect(),
        actor_ids: resolution
            .resolved
            .iter()
            .map(|actor| actor.actor_id.clone())
            .collect(),
        protocols: WsEndpoint::protocols(target.conn_params.as_deref()),
        headers: target.headers.clone(),
    };
    let (url, actor_id) = match resolution.resolved.as_slice() {
        [only] => (
            endpoint.display(&connect_path(&rivet::encode_uri_component(&only.actor_id))),
            Some(only.actor_id.clone()),
        ),
        _ => (endpoint.display(&connect_path("*")), None),
    };
    let action = ActionTemplate::new(&rivet::json_string(&target.action), &resolution.call_args);
    let info = RunInfo {
        mode: "ws",
        method: "WS".into(),
        url,
        connections: load.connections,
        threads: load.executors(),
        busy_poll: load.busy_poll,
        pipeline: args.in_flight,
        duration_limit: load.duration,
        requests_limit: load.requests,
        warmup: load.warmup,
        actor_id,
        open: load.rate.map(|rate| (rate, load.max_in_flight)),
        keys: Some(resolution.keys_info(target, false)),
        ws: Some(WsInfo {
            action: target.action.clone(),
            args: resolution.call_args.clone(),
            in_flight: args.in_flight,
        }),
    };
    let clock = Clock::start(load);
    let shared = Shared::new(load, &clock);
    let template = WsPlan {
        endpoint: Arc::new(ws_endpoint),
        action: Arc::new(action),
        key_dist: target.key_dist,
        seed: target.seed,
        pacing: shared.pacing(load, args.in_flight),
        connections: 0,
        first_connection: 0,
        measure_start: clock.measure_start,
        deadline: clock.deadline,
        timeout: load.timeout,
        connect_timeout: load.connect_timeout,
        tickets: shared.tickets.clone(),
        progress: Arc::new(Progress::default()),
    };
    let executors = spawn_shares(&shared, |first_connection, connections, progress| WsPlan {
        connections,
        first_connection,
        progress,
        ..template.clone()
    })?;
    let reports: Vec<WsReport> = collect(executors, load, &clock)?;
    let (cpu, wall) = clock.spent();
    let mut extras = WsExtras::new();
    let mut bases = Vec::with_capacity(reports.len());
    for report in reports {
        bases.push(report.base);
        extras.add(report.extras);
    }
    let mut summary = Summary::merge(bases, clock.measure_start, cpu, wall);
    summary.ws = Some(extras);
    finish(&info, &summary, load)
}

/// The times of a run.
struct Clock {
    cpu_start: CpuTime,
    wall_start: Instant,
    measure_start: Instant,
    deadline: Instant,
}

impl Clock {
    fn start(load: &LoadArgs) -> Clock {
        let wall_start = Instant::now();
        let measure_start = wall_start + load.warmup;
        Clock {
            cpu_start: CpuTime::now(),
            wall_start,
            measure_start,
            deadline: measure_start + load.duration,
        }
    }

    /// CPU and wall time since the start.
    fn spent(&self) -> (CpuTime, Duration) {
        (
            CpuTime::now().since(self.cpu_start),
            self.wall_start.elapsed(),
        )
    }
}

/// What every executor of an `action`, `raw` or `ws` run shares.
struct Shared {
    threads: usize,
    busy_poll: bool,
    connections: usize,
    tickets: Option<Arc<Tickets>>,
    origin: Instant,
}

impl Shared {
    fn new(load: &LoadArgs, clock: &Clock) -> Shared {
        Shared {
            threads: load.executors() as usize,
            busy_poll: load.busy_poll,
            connections: load.connections as usize,
            tickets: load.requests.map(|limit| {
                Arc::new(Tickets {
                    limit,
                    issued: AtomicU64::new(0),
                })
            }),
            origin: clock.wall_start,
        }
    }

    fn pacing(&self, load: &LoadArgs, pipeline: u32) -> Pacing {
        match load.rate {
            None => Pacing::Closed {
                pipeline: pipeline as usize,
            },
            Some(rate) => Pacing::Open(OpenLoop {
                origin: self.origin,
                rate,
                connections: self.connections as u64,
                max_in_flight: load.max_in_flight as usize,
            }),
        }
    }

    /// Each executor's (first connection, number of connections).
    fn shares(&self) -> impl Iterator<Item = (usize, usize)> + use<> {
        let (threads, connections) = (self.threads, self.connections);
        let mut first = 0;
        (0..threads).map(move |index| {
            let share = connections / threads + usize::from(index < connections % threads);
            let this = (first, share);
            first += share;
            this
        })
    }
}

fn validate_load(load: &LoadArgs) -> Result<(), String> {
    if load.duration.is_zero() {
        return Err("--duration must be greater than zero".into());
    }
    if load.timeout.is_zero() || load.connect_timeout.is_zero() {
        return Err("--timeout and --connect-timeout must be greater than zero".into());
    }
    if load.threads > load.connections {
        return Err(format!(
            "--threads ({}) must not exceed --connections ({})",
            load.threads, load.connections
        ));
    }
    Ok(())
}

/// The actors of an `action` or `ws` run, resolved.
struct Resolution {
    endpoint: Url,
    addr: SocketAddr,
    /// Serialised key strings, in rank order.
    keys: Vec<String>,
    resolved: Vec<rivet::Resolved>,
    /// The action's arguments (a JSON array), trimmed.
    call_args: String,
    manager_headers: Vec<(String, String)>,
    namespace: String,
    actor: String,
}

impl Resolution {
    fn manager(&self, timeout: Duration) -> rivet::Manager<'_> {
        rivet::Manager {
            endpoint: &self.endpoint,
            addr: self.addr,
            namespace: &self.namespace,
            actor: &self.actor,
            headers: &self.manager_headers,
            timeout,
        }
    }

    fn keys_info(&self, target: &ActorArgs, resolve_each: bool) -> KeysInfo {
        KeysInfo {
            count: self.keys.len() as u64,
            first: self.keys.first().cloned().unwrap_or_default(),
            last: self.keys.last().cloned().unwrap_or_default(),
            dist: target.key_dist,
            seed: target.seed,
            resolve_each,
        }
    }
}

/// Checks the target options and resolves the actors (PUT /actors, in parallel).
fn resolve_actors(
    target: &ActorArgs,
    timeout: Duration,
    quiet: bool,
) -> Result<Resolution, String> {
    let endpoint = Url::parse(&target.endpoint)?;
    if endpoint.query.is_some() {
        return Err(format!(
            "--endpoint `{}` must not have a query",
            target.endpoint
        ));
    }
    let call_args = target.args.trim();
    if !(call_args.starts_with('[') && call_args.ends_with(']')) {
        return Err(format!(
            "--args must be a JSON array, like '[1]', not `{}`",
            target.args
        ));
    }
    let keys = action_keys(target)?;
    let addr = endpoint.socket_addr()?;
    let mut resolution = Resolution {
        endpoint,
        addr,
        keys,
        resolved: Vec::new(),
        call_args: call_args.to_string(),
        manager_headers: target.headers.clone(),
        namespace: target.namespace.clone(),
        actor: target.actor.clone(),
    };
    let keys = &resolution.keys;
    let manager = resolution.manager(timeout);
    let show_progress = keys.len() > 1 && !quiet && std::io::stderr().is_terminal();
    let workers = keys.len().min(RESOLVE_WORKERS_MAX);
    let resolved = manager.resolve_all(keys, workers, |done| {
        if show_progress {
            eprint!("\r\x1b[2Kloadgen: resolving actors {done}/{}", keys.len());
            let _ = std::io::stderr().flush();
        }
    });
    if show_progress {
        eprint!("\r\x1b[2K");
    }
    let resolved = resolved?;
    if !quiet {
        describe_resolved(target, keys, &resolved);
    }
    resolution.resolved = resolved;
    Ok(resolution)
}

fn action_target(args: &ActionArgs) -> Result<Target, String> {
    let target = &args.target;
    let resolution = resolve_actors(target, args.load.timeout, args.load.quiet)?;
    let endpoint = &resolution.endpoint;
    let keys = &resolution.keys;
    let resolved = &resolution.resolved;
    let call_args = resolution.call_args.as_str();
    let addr = resolution.addr;
    let manager = resolution.manager(args.load.timeout);
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("x-rivet-encoding".to_string(), "json".to_string()),
    ];
    if let Some(params) = &target.conn_params {
        headers.push(("x-rivet-conn-params".to_string(), params.clone()));
    }
    headers.extend(target.headers.iter().cloned());
    let body = format!(r#"{{"args":{call_args}}}"#);
    let action_path = |actor_id: &str| {
        url::join_path(
            &endpoint.path,
            &format!(
                "/gateway/{actor_id}/action/{}",
                rivet::encode_uri_component(&target.action)
            ),
        )
    };
    let mut calls = Templates::default();
    for actor in resolved {
        let path = action_path(&rivet::encode_uri_component(&actor.actor_id));
        calls.push(&http::build_request(
            "POST",
            &path,
            &endpoint.authority,
            &headers,
            body.as_bytes(),
        ));
    }
    let resolves = args.resolve_each.then(|| {
        let mut resolves = Templates::default();
        for key in keys {
            resolves.push(&manager.put_request(key));
        }
        resolves
    });
    let (url, actor_id) = match resolved.as_slice() {
        [only] => (
            endpoint.display(&action_path(&rivet::encode_uri_component(&only.actor_id))),
            Some(only.actor_id.clone()),
        ),
        _ => (endpoint.display(&action_path("*")), None),
    };
    Ok(Target {
        addr,
        requests: Requests {
            calls,
            resolves,
            head_request: false,
            key_dist: target.key_dist,
            seed: target.seed,
        },
        method: "POST".into(),
        url,
        actor_id,
        keys: Some(resolution.keys_info(target, args.resolve_each)),
    })
}

/// The serialised key strings of the actors to load, in rank order.
fn action_keys(args: &ActorArgs) -> Result<Vec<String>, String> {
    match args.key_dist {
        KeyDist::Hot => {
            if args.keys > 1 {
                return Err(format!(
                    "--keys {} needs --key-dist uniform or zipf (hot loads one actor)",
                    args.keys
                ));
            }
            let parts = match &args.key {
                Some(key) => vec![key.clone()],
                None => args.key_part.clone(),
            };
            Ok(vec![rivet::serialize_key(&parts)])
        }
        KeyDist::Uniform | KeyDist::Zipf(_) => {
            if !args.key_part.is_empty() {
                return Err(format!(
                    "--key-part cannot be combined with --key-dist {}; use --key PREFIX",
                    args.key_dist
                ));
            }
            let prefix = args.key.as_deref().unwrap_or("key");
            Ok((0..args.keys)
                .map(|index| rivet::serialize_key(&[format!("{prefix}-{index}")]))
                .collect())
        }
    }
}

/// The line (on stderr) that says which actors the load goes to.
fn describe_resolved(args: &ActorArgs, keys: &[String], resolved: &[rivet::Resolved]) {
    if let ([key], [only]) = (keys, resolved) {
        let created = match only.created {
            Some(true) => " (created)",
            Some(false) => " (existing)",
            None => "",
        };
        eprintln!(
            "loadgen: actor {} key {key:?} is {}{created}",
            args.actor, only.actor_id
        );
        return;
    }
    let created = resolved
        .iter()
        .filter(|actor| actor.created == Some(true))
        .count();
    let distinct: std::collections::HashSet<&str> = resolved
        .iter()
        .map(|actor| actor.actor_id.as_str())
        .collect();
    eprintln!(
        "loadgen: resolved {} actors of {}, keys {:?}..{:?} ({created} created, {} distinct ids)",
        resolved.len(),
        args.actor,
        keys.first().map(String::as_str).unwrap_or_default(),
        keys.last().map(String::as_str).unwrap_or_default(),
        distinct.len()
    );
}

fn raw_target(args: &RawArgs) -> Result<Target, String> {
    let url = Url::parse(&args.url)?;
    let addr = url.socket_addr()?;
    // Fail fast, with one clear message, when nothing listens there.
    drop(rivet::connect_blocking(addr, args.load.connect_timeout)?);
    let target = url.target();
    let body = args.body.as_deref().unwrap_or_default().as_bytes();
    let mut calls = Templates::default();
    calls.push(&http::build_request(
        &args.method,
        &target,
        &url.authority,
        &args.headers,
        body,
    ));
    Ok(Target {
        addr,
        requests: Requests {
            calls,
            resolves: None,
            head_request: args.method == "HEAD",
            key_dist: KeyDist::Hot,
            seed: 0,
        },
        method: args.method.clone(),
        url: url.display(&target),
        actor_id: None,
        keys: None,
    })
}

type Executors<R> = (
    mpsc::Receiver<Result<R, String>>,
    Vec<Arc<Progress>>,
    Vec<std::thread::JoinHandle<()>>,
);

/// Waits for every executor's report (printing the progress line on a terminal meanwhile) and
/// joins their threads.
fn collect<R>(executors: Executors<R>, load: &LoadArgs, clock: &Clock) -> Result<Vec<R>, String> {
    let (receiver, progress, handles) = executors;
    let show_progress = !load.quiet && std::io::stderr().is_terminal();
    if show_progress {
        for counters in &progress {
            counters.wants_p99.store(true, Ordering::Relaxed);
        }
    }
    let mut reports = Vec::with_capacity(handles.len());
    let mut line = ProgressLine {
        last_at: clock.wall_start,
        last_requests: 0,
    };
    let give_up_at = clock.deadline + STOP_GRACE;
    while reports.len() < handles.len() {
        let now = Instant::now();
        if now >= give_up_at {
            return Err(format!(
                "an executor did not stop within {STOP_GRACE:?} of the deadline"
            ));
        }
        match receiver.recv_timeout(Duration::from_secs(1).min(give_up_at - now)) {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(message)) => return Err(message),
            Err(mpsc::RecvTimeoutError::Timeout) if show_progress => {
                line.print(&progress, clock.wall_start, clock.measure_start);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("an executor thread failed (panicked) before reporting".into());
            }
        }
    }
    if show_progress {
        eprint!("\r\x1b[2K");
    }
    for handle in handles {
        let _ = handle.join();
    }
    Ok(reports)
}

/// Starts thread `loadgen-{index}`, which sends what `body` returns on `sender`.
fn spawn_thread<R: Send + 'static>(
    index: usize,
    sender: mpsc::Sender<Result<R, String>>,
    body: impl FnOnce() -> Result<R, String> + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name(format!("loadgen-{index}"))
        .spawn(move || {
            let _ = sender.send(body());
        })
        .map_err(|error| format!("cannot start a thread: {error}"))
}

/// Starts a glommio executor on its own thread; it runs the future `task` makes there and
/// sends the result (or why it could not start) on `sender`.
pub(crate) fn spawn_executor<R, F, Fut>(
    index: usize,
    sender: mpsc::Sender<Result<R, String>>,
    task: F,
) -> Result<std::thread::JoinHandle<()>, String>
where
    R: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    spawn_thread(index, sender, move || {
        let mut builder = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("loadgen-{index}"))
            .io_memory(EXECUTOR_IO_MEMORY_BYTES);
        let spin = SPIN_US.load(std::sync::atomic::Ordering::Relaxed);
        if spin > 0 {
            builder = builder.spin_before_park(std::time::Duration::from_micros(spin));
        }
        match builder.make() {
            Ok(executor) => Ok(executor.run(task())),
            Err(error) => Err(format!("cannot start a glommio executor: {error}")),
        }
    })
}

/// One executor's share of an `action`, `raw` or `ws` load, runnable on either kind of socket.
trait Share: Send + 'static {
    type Report: Send + 'static;
    fn run<S: Socket>(self) -> impl Future<Output = Self::Report>;
}

impl Share for Plan {
    type Report = ShardReport;
    fn run<S: Socket>(self) -> impl Future<Output = ShardReport> {
        shard::run::<S>(self)
    }
}

impl Share for WsPlan {
    type Report = WsReport;
    fn run<S: Socket>(self) -> impl Future<Output = WsReport> {
        wsload::run::<S>(self)
    }
}

/// Starts a thread per share of the connections ([`Shared::shares`]), each running the plan
/// `plan_for(first_connection, connections, progress)` makes: on a glommio executor, or with
/// `--busy-poll` (one connection per thread) in a loop that busy-polls its socket.
fn spawn_shares<P: Share>(
    shared: &Shared,
    plan_for: impl Fn(usize, usize, Arc<Progress>) -> P,
) -> Result<Executors<P::Report>, String> {
    let (sender, receiver) = mpsc::channel();
    let mut progress = Vec::with_capacity(shared.threads);
    let mut handles = Vec::with_capacity(shared.threads);
    for (index, (first_connection, share)) in shared.shares().enumerate() {
        let counters = Arc::new(Progress::default());
        progress.push(counters.clone());
        let plan = plan_for(first_connection, share, counters);
        let sender = sender.clone();
        handles.push(if shared.busy_poll {
            spawn_thread(index, sender, move || {
                Ok(socket::block_on(plan.run::<BusySocket>()))
            })
        } else {
            spawn_executor(index, sender, move || plan.run::<glommio::net::TcpStream>())
        }?);
    }
    Ok((receiver, progress, handles))
}

/// Starts the executors of an `action` or `raw` load.
fn spawn_executors(
    target: Target,
    load: &LoadArgs,
    pipeline: u32,
    clock: &Clock,
) -> Result<Executors<ShardReport>, String> {
    let shared = Shared::new(load, clock);
    let requests = Arc::new(target.requests);
    let pacing = shared.pacing(load, pipeline);
    spawn_shares(&shared, |first_connection, connections, progress| Plan {
        addr: target.addr,
        requests: requests.clone(),
        pacing: pacing.clone(),
        connections,
        first_connection,
        measure_start: clock.measure_start,
        deadline: clock.deadline,
        timeout: load.timeout,
        connect_timeout: load.connect_timeout,
        tickets: shared.tickets.clone(),
        progress,
    })
}

/// The once-a-second progress line on a terminal.
struct ProgressLine {
    last_at: Instant,
    last_requests: u64,
}

impl ProgressLine {
    fn print(&mut self, progress: &[Arc<Progress>], wall_start: Instant, measure_start: Instant) {
        let now = Instant::now();
        let requests: u64 = progress
            .iter()
            .map(|p| p.requests.load(Ordering::Relaxed))
            .sum();
        let errors: u64 = progress
            .iter()
            .map(|p| p.errors.load(Ordering::Relaxed))
            .sum();
        let interval = now.duration_since(self.last_at).as_secs_f64();
        let rate = if interval > 0.0 {
            (requests - self.last_requests.min(requests)) as f64 / interval
        } else {
            0.0
        };
        let phase = if now < measure_start {
            "warmup"
        } else {
            "load"
        };
        // Each executor's running p99; with several, the highest (exact with one).
        let p99_ns = progress
            .iter()
            .map(|p| p.p99_ns.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        let p99 = if p99_ns == 0 {
            "-".to_string()
        } else {
            plot::format_micros(p99_ns as f64 / 1000.0)
        };
        eprint!(
            "\r\x1b[2K[{:>6.1}s {phase}] requests {requests}  errors {errors}  {rate:.0} req/s  p99 {p99}",
            now.duration_since(wall_start).as_secs_f64()
        );
        let _ = std::io::stderr().flush();
        self.last_at = now;
        self.last_requests = requests;
    }
}
