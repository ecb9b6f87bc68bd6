//! `loadgen`: closed-loop HTTP/1.1 load over keep-alive connections on glommio executors.
//!
//! The main thread parses the command line, resolves the target (for `action`, the actor id via
//! `PUT /actors`), starts one glommio executor per `--threads` on its own thread, prints the
//! progress line while they run and the report once they are done. All measuring happens in
//! [`shard`]; the HTTP client is the small codec in [`http`].

mod cli;
mod http;
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
use crate::report::{CpuTime, RunInfo, Summary};
use crate::shard::{Plan, Progress, ShardReport, Tickets};
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

/// The request every connection sends, and where.
struct Target {
    addr: SocketAddr,
    request: Vec<u8>,
    method: String,
    url: String,
    actor_id: Option<String>,
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
    };
    let (reports, measure_start, cpu, wall) = drive(&target, &load)?;
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
    let addr = endpoint.socket_addr()?;
    let parts = match &args.key {
        Some(key) => vec![key.clone()],
        None => args.key_part.clone(),
    };
    let key = rivet::serialize_key(&parts);
    let resolved = rivet::resolve(&rivet::Resolve {
        endpoint: &endpoint,
        addr,
        namespace: &args.namespace,
        actor: &args.actor,
        key: &key,
        headers: &args.headers,
        timeout: args.load.timeout,
    })?;
    if !args.load.quiet {
        let created = match resolved.created {
            Some(true) => " (created)",
            Some(false) => " (existing)",
            None => "",
        };
        eprintln!(
            "loadgen: actor {} key {key:?} is {}{created}",
            args.actor, resolved.actor_id
        );
    }
    let path = url::join_path(
        &endpoint.path,
        &format!(
            "/gateway/{}/action/{}",
            rivet::encode_uri_component(&resolved.actor_id),
            rivet::encode_uri_component(&args.action)
        ),
    );
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("x-rivet-encoding".to_string(), "json".to_string()),
    ];
    if let Some(params) = &args.conn_params {
        headers.push(("x-rivet-conn-params".to_string(), params.clone()));
    }
    headers.extend(args.headers.iter().cloned());
    let body = format!(r#"{{"args":{call_args}}}"#);
    Ok(Target {
        addr,
        request: http::build_request(
            "POST",
            &path,
            &endpoint.authority,
            &headers,
            body.as_bytes(),
        ),
        method: "POST".into(),
        url: endpoint.display(&path),
        actor_id: Some(resolved.actor_id),
    })
}

fn raw_target(args: &RawArgs) -> Result<Target, String> {
    let url = Url::parse(&args.url)?;
    let addr = url.socket_addr()?;
    // Fail fast, with one clear message, when nothing listens there.
    drop(rivet::connect_blocking(addr, args.load.connect_timeout)?);
    let target = url.target();
    let body = args.body.as_deref().unwrap_or_default().as_bytes();
    Ok(Target {
        addr,
        request: http::build_request(&args.method, &target, &url.authority, &args.headers, body),
        method: args.method.clone(),
        url: url.display(&target),
        actor_id: None,
    })
}

/// Runs the executors to the end. Returns their reports, the start of measuring, and the CPU
/// and wall time the whole load took.
fn drive(
    target: &Target,
    load: &LoadArgs,
) -> Result<(Vec<ShardReport>, Instant, CpuTime, Duration), String> {
    let cpu_start = CpuTime::now();
    let wall_start = Instant::now();
    let measure_start = wall_start + load.warmup;
    let deadline = measure_start + load.duration;
    let (receiver, progress, handles) = spawn_executors(target, load, measure_start, deadline)?;
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
    target: &Target,
    load: &LoadArgs,
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
    let request: Arc<[u8]> = target.request.clone().into();
    let (sender, receiver) = mpsc::channel();
    let mut progress = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    for index in 0..threads {
        let plan = Plan {
            addr: target.addr,
            request: request.clone(),
            head_request: target.method == "HEAD",
            connections: connections / threads + usize::from(index < connections % threads),
            pipeline: load.pipeline as usize,
            measure_start,
            deadline,
            timeout: load.timeout,
            connect_timeout: load.connect_timeout,
            tickets: tickets.clone(),
            progress: Arc::new(Progress::default()),
        };
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
