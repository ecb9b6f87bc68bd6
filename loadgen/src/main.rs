//! `loadgen`: closed- or open-loop HTTP/1.1 load over keep-alive connections on glommio
//! executors.
//!
//! The main thread parses the command line, resolves the target (for `action`, the actor ids via
//! `PUT /actors`), starts one glommio executor per `--threads` on its own thread, prints the
//! progress line while they run and the report once they are done. All measuring happens in
//! [`shard`]; the HTTP client is the small codec in [`http`]; which actor a request goes to is
//! [`keys`].

mod cli;
mod http;
mod keys;
mod report;
mod rivet;
mod shard;
mod url;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use clap::Parser;
use glommio::{LocalExecutorBuilder, Placement};

use crate::cli::{ActionArgs, Cli, Command, LoadArgs, RawArgs};
use crate::keys::KeyDist;
use crate::report::{CpuTime, KeysInfo, RunInfo, Summary};
use crate::shard::{OpenLoop, Pacing, Plan, Progress, Requests, ShardReport, Templates, Tickets};
use crate::url::Url;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long the main thread waits past the deadline for executors to hand in their reports.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Memory glommio registers for file IO, which loadgen does not do (glommio's minimum).
const EXECUTOR_IO_MEMORY_BYTES: usize = 64 * 1024;

fn main() -> ExitCode {
    let cli = Cli::parse();
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

fn run(cli: Cli) -> Result<(), String> {
    let (mode, target, load) = match cli.command {
        Command::Action(args) => {
            validate_load(&args.load)?;
            ("action", action_target(&args)?, args.load)
        }
        Command::Raw(args) => {
            validate_load(&args.load)?;
            ("raw", raw_target(&args)?, args.load)
        }
    };
    let info = RunInfo {
        mode,
        method: target.method.clone(),
        url: target.url.clone(),
        connections: load.connections,
        threads: load.threads,
        pipeline: load.pipeline,
        duration_limit: load.duration,
        requests_limit: load.requests,
        warmup: load.warmup,
        actor_id: target.actor_id.clone(),
        open: load.rate.map(|rate| (rate, load.max_in_flight)),
        keys: target.keys.clone(),
    };
    let (reports, measure_start, cpu, wall) = drive(target, &load)?;
    let summary = Summary::merge(reports, measure_start, cpu, wall);
    if let Some(path) = &load.json {
        std::fs::write(path, report::json(&info, &summary))
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    if let Some(path) = &load.hgrm {
        std::fs::write(path, report::hgrm(&summary.histogram))
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    if !load.quiet {
        print!("{}", report::text(&info, &summary));
        if summary.ok == 0 {
            eprintln!("loadgen: warning: no successful (2xx) response was measured");
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

fn action_target(args: &ActionArgs) -> Result<Target, String> {
    let endpoint = Url::parse(&args.endpoint)?;
    if endpoint.query.is_some() {
        return Err(format!(
            "--endpoint `{}` must not have a query",
            args.endpoint
        ));
    }
    let call_args = args.args.trim();
    if !(call_args.starts_with('[') && call_args.ends_with(']')) {
        return Err(format!(
            "--args must be a JSON array, like '[1]', not `{}`",
            args.args
        ));
    }
    let keys = action_keys(args)?;
    let addr = endpoint.socket_addr()?;
    let manager = rivet::Manager {
        endpoint: &endpoint,
        addr,
        namespace: &args.namespace,
        actor: &args.actor,
        headers: &args.headers,
        timeout: args.load.timeout,
    };
    let show_progress = keys.len() > 1 && !args.load.quiet && std::io::stderr().is_terminal();
    let workers = keys.len().min(RESOLVE_WORKERS_MAX);
    let resolved = manager.resolve_all(&keys, workers, |done| {
        if show_progress {
            eprint!("\r\x1b[2Kloadgen: resolving actors {done}/{}", keys.len());
            let _ = std::io::stderr().flush();
        }
    });
    if show_progress {
        eprint!("\r\x1b[2K");
    }
    let resolved = resolved?;
    if !args.load.quiet {
        describe_resolved(args, &keys, &resolved);
    }
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("x-rivet-encoding".to_string(), "json".to_string()),
    ];
    if let Some(params) = &args.conn_params {
        headers.push(("x-rivet-conn-params".to_string(), params.clone()));
    }
    headers.extend(args.headers.iter().cloned());
    let body = format!(r#"{{"args":{call_args}}}"#);
    let action_path = |actor_id: &str| {
        url::join_path(
            &endpoint.path,
            &format!(
                "/gateway/{actor_id}/action/{}",
                rivet::encode_uri_component(&args.action)
            ),
        )
    };
    let mut calls = Templates::default();
    for actor in &resolved {
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
        for key in &keys {
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
            key_dist: args.key_dist,
            seed: args.seed,
        },
        method: "POST".into(),
        url,
        actor_id,
        keys: Some(KeysInfo {
            count: keys.len() as u64,
            first: keys.first().cloned().unwrap_or_default(),
            last: keys.last().cloned().unwrap_or_default(),
            dist: args.key_dist,
            seed: args.seed,
            resolve_each: args.resolve_each,
        }),
    })
}

/// The serialised key strings of the actors to load, in rank order.
fn action_keys(args: &ActionArgs) -> Result<Vec<String>, String> {
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
fn describe_resolved(args: &ActionArgs, keys: &[String], resolved: &[rivet::Resolved]) {
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

/// Runs the executors to the end. Returns their reports, the start of measuring, and the CPU
/// and wall time the whole load took.
fn drive(
    target: Target,
    load: &LoadArgs,
) -> Result<(Vec<ShardReport>, Instant, CpuTime, Duration), String> {
    let cpu_start = CpuTime::now();
    let wall_start = Instant::now();
    let measure_start = wall_start + load.warmup;
    let deadline = measure_start + load.duration;
    let (receiver, progress, handles) =
        spawn_executors(target, load, wall_start, measure_start, deadline)?;
    let show_progress = !load.quiet && std::io::stderr().is_terminal();
    let mut reports = Vec::with_capacity(handles.len());
    let mut line = ProgressLine {
        last_at: wall_start,
        last_requests: 0,
    };
    let give_up_at = deadline + STOP_GRACE;
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
                line.print(&progress, wall_start, measure_start);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("an executor thread failed (panicked) before reporting".into());
            }
        }
    }
    let cpu = CpuTime::now().since(cpu_start);
    let wall = wall_start.elapsed();
    if show_progress {
        eprint!("\r\x1b[2K");
    }
    for handle in handles {
        let _ = handle.join();
    }
    Ok((reports, measure_start, cpu, wall))
}

type Executors = (
    mpsc::Receiver<Result<ShardReport, String>>,
    Vec<Arc<Progress>>,
    Vec<std::thread::JoinHandle<()>>,
);

/// Starts `--threads` glommio executors, each on its own thread with its share of connections.
/// Each sends its report (or why it could not start) on the returned channel.
fn spawn_executors(
    target: Target,
    load: &LoadArgs,
    start: Instant,
    measure_start: Instant,
    deadline: Instant,
) -> Result<Executors, String> {
    let threads = load.threads as usize;
    let connections = load.connections as usize;
    let tickets = load.requests.map(|limit| {
        Arc::new(Tickets {
            limit,
            issued: AtomicU64::new(0),
        })
    });
    let requests = Arc::new(target.requests);
    let pacing = match load.rate {
        None => Pacing::Closed {
            pipeline: load.pipeline as usize,
        },
        Some(rate) => Pacing::Open(OpenLoop {
            origin: start,
            rate,
            connections: connections as u64,
            max_in_flight: load.max_in_flight as usize,
        }),
    };
    let (sender, receiver) = mpsc::channel();
    let mut progress = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    let mut first_connection = 0;
    for index in 0..threads {
        let share = connections / threads + usize::from(index < connections % threads);
        let plan = Plan {
            addr: target.addr,
            requests: requests.clone(),
            pacing: pacing.clone(),
            connections: share,
            first_connection,
            measure_start,
            deadline,
            timeout: load.timeout,
            connect_timeout: load.connect_timeout,
            tickets: tickets.clone(),
            progress: Arc::new(Progress::default()),
        };
        first_connection += share;
        progress.push(plan.progress.clone());
        let sender = sender.clone();
        let handle = std::thread::Builder::new()
            .name(format!("loadgen-{index}"))
            .spawn(move || {
                let executor = LocalExecutorBuilder::new(Placement::Unbound)
                    .name(&format!("loadgen-{index}"))
                    .io_memory(EXECUTOR_IO_MEMORY_BYTES)
                    .make();
                let result = match executor {
                    Ok(executor) => Ok(executor.run(shard::run(plan))),
                    Err(error) => Err(format!("cannot start a glommio executor: {error}")),
                };
                let _ = sender.send(result);
            })
            .map_err(|error| format!("cannot start a thread: {error}"))?;
        handles.push(handle);
    }
    Ok((receiver, progress, handles))
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
        eprint!(
            "\r\x1b[2K[{:>6.1}s {phase}] requests {requests}  errors {errors}  {rate:.0} req/s",
            now.duration_since(wall_start).as_secs_f64()
        );
        let _ = std::io::stderr().flush();
        self.last_at = now;
        self.last_requests = requests;
    }
}
