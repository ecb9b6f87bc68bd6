//! `population`: creates, wakes and watches large populations of actors on a Pinion (or any
//! RivetKit 2.0 protocol) server, over plain blocking HTTP/1.1 keep-alive connections. It is the
//! client side of `benches/durable/durable.sh` (wake-from-disk latency, recovery time and
//! memory per sleeping actor), usable on its own:
//!
//! ```sh
//! # 20000 sleeper actors s-0..s-19999 (8 connections), `bump` once on each, ids kept in key order
//! population create --endpoint http://127.0.0.1:6420 --actor sleeper --prefix s --count 20000 \
//!     --workers 8 --action bump --ids ids.txt
//!
//! # `read` once on every id, one request at a time: latency percentiles in µs (and as JSON)
//! population touch --endpoint http://127.0.0.1:6420 --ids ids.txt --action read --json touch.json
//!
//! # 10000 ids spread evenly over the file, visited in a shuffled (seeded) order
//! population touch --endpoint http://127.0.0.1:6420 --ids ids.txt --action getCount --sample 10000
//!
//! # the resident set size of a process, in bytes (VmRSS of /proc/PID/status; --field VmHWM: peak)
//! population rss --pid 1234
//!
//! # poll GET /metadata until it answers 200; prints the milliseconds it took (from --since-ns,
//! # a Unix time in nanoseconds such as `date +%s%N` taken when the server was spawned)
//! population wait-ready --endpoint http://127.0.0.1:6420 --timeout-ms 60000 --since-ns "$t0"
//! ```
//!
//! Every worker thread owns one keep-alive connection (TCP_NODELAY) and sends one request at a
//! time. `create` and `touch` print their progress to stderr once a second and their results to
//! stdout; a run with failed requests exits with status 1 (after `--max-errors` failures the
//! workers stop early). Latency runs from writing a request to reading the whole response, so it
//! includes this client's own wake-up on the response (one thread blocked in `read`).

use std::fs;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Parser)]
#[command(about = "Creates, wakes and watches populations of actors (durability benchmarks).")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates actors PREFIX-0 .. PREFIX-(COUNT-1) with PUT /actors (and calls --action on each).
    Create(CreateArgs),
    /// Calls an action once on every actor id of a file and reports the latency distribution.
    Touch(TouchArgs),
    /// Prints the resident set size (VmRSS, or another field) of a process in bytes.
    Rss(RssArgs),
    /// Polls GET /metadata until it answers 200 and prints the elapsed milliseconds.
    WaitReady(WaitReadyArgs),
}

#[derive(Args)]
struct Connection {
    /// Server URL, with the base path if any (http://host:port[/base]).
    #[arg(long, default_value = "http://127.0.0.1:6420")]
    endpoint: String,
    /// Timeout of each connect, write and read, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
}

#[derive(Args)]
struct CreateArgs {
    #[command(flatten)]
    conn: Connection,
    /// Actor type (e.g. counter, sleeper).
    #[arg(long)]
    actor: String,
    /// Key prefix: the keys are PREFIX-0 .. PREFIX-(COUNT-1).
    #[arg(long)]
    prefix: String,
    /// Number of actors.
    #[arg(long)]
    count: u64,
    /// Worker threads, one connection each.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Action called once on each actor right after it is resolved.
    #[arg(long)]
    action: Option<String>,
    /// The action's arguments, a JSON array.
    #[arg(long, default_value = "[]")]
    args: String,
    /// File to write the actor ids to, one per line in key order.
    #[arg(long)]
    ids: Option<PathBuf>,
    /// Stop after this many failed requests.
    #[arg(long, default_value_t = 100)]
    max_errors: u64,
}

#[derive(Args)]
struct TouchArgs {
    #[command(flatten)]
    conn: Connection,
    /// File of actor ids, one per line (as written by `create --ids`).
    #[arg(long)]
    ids: PathBuf,
    /// Action to call on each actor.
    #[arg(long)]
    action: String,
    /// The action's arguments, a JSON array.
    #[arg(long, default_value = "[]")]
    args: String,
    /// Worker threads, one connection each (each sends one request at a time).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Only the first N ids of the file.
    #[arg(long, conflicts_with = "sample")]
    limit: Option<usize>,
    /// N ids spread evenly over the file, visited in a shuffled order (see --seed).
    #[arg(long)]
    sample: Option<usize>,
    /// Seed of the --sample order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Count the successful responses whose body contains TEXT (e.g. `"vars":0` to check that
    /// sleeper actors were woken from disk: their ephemeral vars start over).
    #[arg(long, value_name = "TEXT")]
    count_matching: Option<String>,
    /// File to write the JSON summary to.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Stop after this many failed requests.
    #[arg(long, default_value_t = 100)]
    max_errors: u64,
    /// Wait for each response by polling the socket (non-blocking reads in a loop) instead of
    /// sleeping in `read`: the client's own wake-up, tens of microseconds on a VM, then stays
    /// out of the latencies. Each worker keeps a CPU busy.
    #[arg(long)]
    spin: bool,
}

#[derive(Args)]
struct RssArgs {
    /// Process id.
    #[arg(long)]
    pid: u32,
    /// The /proc/PID/status field, in kB there: VmRSS (resident now), VmHWM (peak resident).
    #[arg(long, default_value = "VmRSS")]
    field: String,
}

#[derive(Args)]
struct WaitReadyArgs {
    /// Server URL, with the base path if any (http://host:port[/base]).
    #[arg(long, default_value = "http://127.0.0.1:6420")]
    endpoint: String,
    /// Give up (exit status 1) after this many milliseconds.
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
    /// Milliseconds between attempts.
    #[arg(long, default_value_t = 2)]
    interval_ms: u64,
    /// Measure from this Unix time in nanoseconds (e.g. `date +%s%N` when the server was
    /// spawned) instead of from this command's start.
    #[arg(long)]
    since_ns: Option<u128>,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Create(args) => create(args),
        Command::Touch(args) => touch(args),
        Command::Rss(args) => rss(args.pid, &args.field).map(|bytes| println!("{bytes}")),
        Command::WaitReady(args) => wait_ready(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("population: {message}");
            ExitCode::FAILURE
        }
    }
}

// --- HTTP/1.1 client ---------------------------------------------------------------------------

/// Where requests go: the address to connect to, the Host header and the base path.
struct Endpoint {
    addr: SocketAddr,
    host: String,
    /// Prefix of every path, without a trailing slash ("" for none).
    base: String,
    timeout: Duration,
}

impl Endpoint {
    fn parse(url: &str, timeout: Duration) -> Result<Endpoint, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// endpoints are supported"))?;
        let (authority, base) = rest.split_once('/').unwrap_or((rest, ""));
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        let base = base.trim_end_matches('/');
        Ok(Endpoint {
            addr,
            host: authority.to_string(),
            base: if base.is_empty() {
                String::new()
            } else {
                format!("/{base}")
            },
            timeout: timeout.max(Duration::from_millis(1)),
        })
    }
}

/// A response: its status and body.
struct Response {
    status: u16,
    body: Vec<u8>,
}

impl Response {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive connection, opened on first use and again after a failure.
struct Client {
    endpoint: Arc<Endpoint>,
    stream: Option<TcpStream>,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
    /// The request being written (reused).
    out: Vec<u8>,
    /// Poll a non-blocking socket instead of blocking in `read` (`touch --spin`).
    spin: bool,
}

impl Client {
    fn new(endpoint: Arc<Endpoint>) -> Client {
        Client {
            endpoint,
            stream: None,
            buf: Vec::with_capacity(4096),
            out: Vec::with_capacity(512),
            spin: false,
        }
    }

    fn spinning(endpoint: Arc<Endpoint>) -> Client {
        Client {
            spin: true,
            ..Client::new(endpoint)
        }
    }

    /// One read; with `spin`, polls the non-blocking socket until it has bytes (or the
    /// endpoint's timeout passes).
    fn read_some(
        stream: &mut TcpStream,
        chunk: &mut [u8],
        spin: bool,
        timeout: Duration,
    ) -> io::Result<usize> {
        if !spin {
            return stream.read(chunk);
        }
        let started = Instant::now();
        loop {
            match stream.read(chunk) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if started.elapsed() > timeout {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    std::hint::spin_loop();
                }
                result => return result,
            }
        }
    }

    /// Sends a request and reads its response. A reused connection that the server closed
    /// before answering (an idle keep-alive connection it dropped) is replaced and the request
    /// sent again, once; any other failure closes the connection and is returned.
    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<Response> {
        let reused = self.stream.is_some();
        match self.try_request(method, path, body) {
            Err(Failure::Io { error, answered }) => {
                self.stream = None;
                if reused && !answered && is_closed(&error) {
                    return self.try_request(method, path, body).map_err(|f| {
                        self.stream = None;
                        f.into_error()
                    });
                }
                Err(error)
            }
            result => result.map_err(Failure::into_error),
        }
    }

    fn try_request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Response, Failure> {
        let endpoint = &self.endpoint;
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect_timeout(&endpoint.addr, endpoint.timeout)
                    .map_err(Failure::unanswered)?;
                stream.set_nodelay(true).map_err(Failure::unanswered)?;
                stream
                    .set_read_timeout(Some(endpoint.timeout))
                    .map_err(Failure::unanswered)?;
                stream
                    .set_write_timeout(Some(endpoint.timeout))
                    .map_err(Failure::unanswered)?;
                // A request is far smaller than the socket's send buffer, so `write_all` on
                // a non-blocking socket does not see `WouldBlock`.
                stream
                    .set_nonblocking(self.spin)
                    .map_err(Failure::unanswered)?;
                self.buf.clear();
                self.stream.insert(stream)
            }
        };
        self.out.clear();
        let _ = write!(
            self.out,
            "{method} {}{path} HTTP/1.1\r\nhost: {}\r\n",
            endpoint.base, endpoint.host
        );
        if !body.is_empty() || method != "GET" {
            let _ = write!(
                self.out,
                "content-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            );
        }
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(body);
        stream.write_all(&self.out).map_err(Failure::unanswered)?;

        // The head, then the body (content-length; no chunked encoding, no pipelining).
        let mut chunk = [0u8; 16 * 1024];
        let head_end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let n = Client::read_some(stream, &mut chunk, self.spin, endpoint.timeout).map_err(
                |error| Failure::Io {
                    error,
                    answered: !self.buf.is_empty(),
                },
            )?;
            if n == 0 {
                return Err(Failure::Io {
                    error: io::ErrorKind::UnexpectedEof.into(),
                    answered: !self.buf.is_empty(),
                });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = Head::parse(&self.buf[..head_end]).map_err(Failure::Protocol)?;
        while self.buf.len() < head_end + head.content_length {
            let n = Client::read_some(stream, &mut chunk, self.spin, endpoint.timeout)
                .map_err(Failure::answered)?;
            if n == 0 {
                return Err(Failure::answered(io::ErrorKind::UnexpectedEof.into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = self.buf[head_end..head_end + head.content_length].to_vec();
        self.buf.drain(..head_end + head.content_length);
        if head.close {
            self.stream = None;
        }
        Ok(Response {
            status: head.status,
            body,
        })
    }
}

/// Why a request failed: I/O (and whether any of the response had arrived), or a response
/// this client cannot read.
enum Failure {
    Io { error: io::Error, answered: bool },
    Protocol(String),
}

impl Failure {
    fn unanswered(error: io::Error) -> Failure {
        Failure::Io {
            error,
            answered: false,
        }
    }

    fn answered(error: io::Error) -> Failure {
        Failure::Io {
            error,
            answered: true,
        }
    }

    fn into_error(self) -> io::Error {
        match self {
            Failure::Io { error, .. } => error,
            Failure::Protocol(message) => io::Error::new(io::ErrorKind::InvalidData, message),
        }
    }
}

fn is_closed(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// The parts of a response head this client uses.
struct Head {
    status: u16,
    content_length: usize,
    close: bool,
}

impl Head {
    fn parse(bytes: &[u8]) -> Result<Head, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "response head is not UTF-8")?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let mut head = Head {
            status,
            content_length: 0,
            close: status_line.starts_with("HTTP/1.0"),
        };
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                head.content_length = value
                    .parse()
                    .map_err(|_| format!("bad content-length {value:?}"))?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(format!("unsupported transfer-encoding {value:?}"));
            } else if name.eq_ignore_ascii_case("connection") {
                head.close = value.eq_ignore_ascii_case("close");
            }
        }
        Ok(head)
    }
}

// --- shared bookkeeping ---------------------------------------------------------------------------

/// Counters shared by the workers and the progress thread.
#[derive(Default)]
struct Progress {
    done: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
    first_error: Mutex<Option<String>>,
}

impl Progress {
    fn fail(&self, what: String, max_errors: u64) {
        let errors = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            eprintln!("population: first error: {what}");
            *first = Some(what);
        }
        if errors >= max_errors {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Prints `label: done/total (…%), rate now, rate overall, errors` to stderr once a second
    /// until `finished` is set.
    fn report_every_second(
        self: &Arc<Self>,
        label: &'static str,
        total: u64,
        finished: Arc<AtomicBool>,
    ) -> thread::JoinHandle<()> {
        let progress = self.clone();
        thread::spawn(move || {
            let started = Instant::now();
            let mut last = (started, 0u64);
            loop {
                // Sleep a second in small steps, so the end is not delayed.
                let due = last.0 + Duration::from_secs(1);
                while Instant::now() < due {
                    if finished.load(Ordering::Relaxed) {
                        return;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                let now = Instant::now();
                let done = progress.done.load(Ordering::Relaxed);
                let recent = (done - last.1) as f64 / (now - last.0).as_secs_f64();
                let overall = done as f64 / (now - started).as_secs_f64();
                eprintln!(
                    "{label}: {done}/{total} ({:.1} %), {recent:.0}/s now, {overall:.0}/s overall, {} errors",
                    100.0 * done as f64 / total.max(1) as f64,
                    progress.errors.load(Ordering::Relaxed)
                );
                last = (now, done);
            }
        })
    }
}

/// Checks that `args` is a JSON array and returns the action request body `{"args": ...}`.
fn action_body(args: &str) -> Result<Vec<u8>, String> {
    match serde_json::from_str::<serde_json::Value>(args) {
        Ok(serde_json::Value::Array(_)) => Ok(format!("{{\"args\":{args}}}").into_bytes()),
        _ => Err(format!("--args must be a JSON array, not {args:?}")),
    }
}

fn action_path(id: &str, action: &str) -> String {
    format!("/gateway/{id}/action/{action}")
}

// --- create -------------------------------------------------------------------------------------

fn create(args: CreateArgs) -> Result<(), String> {
    let endpoint = Arc::new(Endpoint::parse(
        &args.conn.endpoint,
        Duration::from_millis(args.conn.timeout_ms),
    )?);
    let action_body = action_body(&args.args)?;
    let workers = args.workers.max(1);
    let progress = Arc::new(Progress::default());
    let next = Arc::new(AtomicU64::new(0));
    let newly_created = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let reporter = progress.report_every_second("create", args.count, finished.clone());
    let started = Instant::now();
    let args = Arc::new(args);
    let action_body = Arc::new(action_body);

    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (endpoint, progress, next, newly_created, args, action_body) = (
                endpoint.clone(),
                progress.clone(),
                next.clone(),
                newly_created.clone(),
                args.clone(),
                action_body.clone(),
            );
            thread::spawn(move || {
                let mut client = Client::new(endpoint);
                let mut ids = Vec::new();
                while !progress.stop.load(Ordering::Relaxed) {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= args.count {
                        break;
                    }
                    let key = format!("{}-{index}", args.prefix);
                    match create_one(&mut client, &args, &key, &action_body) {
                        Ok((id, created)) => {
                            if created {
                                newly_created.fetch_add(1, Ordering::Relaxed);
                            }
                            ids.push((index, id));
                            progress.done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => progress.fail(format!("{key}: {error}"), args.max_errors),
                    }
                }
                ids
            })
        })
        .collect();
    let mut ids: Vec<Option<String>> = vec![None; args.count as usize];
    for handle in handles {
        for (index, id) in handle.join().map_err(|_| "a worker panicked")? {
            ids[index as usize] = Some(id);
        }
    }
    let elapsed = started.elapsed();
    finished.store(true, Ordering::Relaxed);
    let _ = reporter.join();

    let done = progress.done.load(Ordering::Relaxed);
    let errors = progress.errors.load(Ordering::Relaxed);
    println!(
        "create: {done} {} actors resolved ({} newly created{}) in {:.2} s: {:.0} actors/s, {workers} workers, {errors} errors",
        args.actor,
        newly_created.load(Ordering::Relaxed),
        args.action
            .as_deref()
            .map_or(String::new(), |a| format!(", {a} called on each")),
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64(),
    );
    if let Some(path) = &args.ids {
        let file = fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut out = BufWriter::new(file);
        for id in ids.iter().flatten() {
            writeln!(out, "{id}").map_err(|e| format!("{}: {e}", path.display()))?;
        }
        out.flush()
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if errors > 0 || done < args.count {
        let first = progress.first_error.lock().map_or(None, |e| e.clone());
        return Err(format!(
            "{errors} requests failed, {} of {} actors missing (first error: {})",
            args.count - done,
            args.count,
            first.unwrap_or_default()
        ));
    }
    Ok(())
}

/// Resolves (creates) one actor and calls the action on it: its id and whether it was new.
fn create_one(
    client: &mut Client,
    args: &CreateArgs,
    key: &str,
    action_body: &[u8],
) -> Result<(String, bool), String> {
    let body = serde_json::json!({ "name": args.actor, "key": key }).to_string();
    let response = client
        .request("PUT", "/actors", body.as_bytes())
        .map_err(|e| format!("PUT /actors: {e}"))?;
    if !response.ok() {
        return Err(format!(
            "PUT /actors: status {}: {}",
            response.status,
            response.text()
        ));
    }
    let parsed: serde_json::Value = serde_json::from_slice(&response.body)
        .map_err(|e| format!("PUT /actors: {e}: {}", response.text()))?;
    let id = parsed["actor"]["actor_id"]
        .as_str()
        .ok_or_else(|| format!("PUT /actors: no actor.actor_id in {}", response.text()))?
        .to_string();
    let created = parsed["created"].as_bool().unwrap_or(false);
    if let Some(action) = &args.action {
        let path = action_path(&id, action);
        let response = client
            .request("POST", &path, action_body)
            .map_err(|e| format!("POST {path}: {e}"))?;
        if !response.ok() {
            return Err(format!(
                "POST {path}: status {}: {}",
                response.status,
                response.text()
            ));
        }
    }
    Ok((id, created))
}

// --- touch --------------------------------------------------------------------------------------

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
}

#[derive(Serialize)]
struct TouchSummary {
    action: String,
    workers: usize,
    count: u64,
    ok: u64,
    errors: u64,
    duration_s: f64,
    throughput_rps: f64,
    /// Responses that contained --count-matching's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    matching: Option<u64>,
    latency_us: Latency,
}

fn touch(args: TouchArgs) -> Result<(), String> {
    let endpoint = Arc::new(Endpoint::parse(
        &args.conn.endpoint,
        Duration::from_millis(args.conn.timeout_ms),
    )?);
    let body = Arc::new(action_body(&args.args)?);
    let file = fs::File::open(&args.ids).map_err(|e| format!("{}: {e}", args.ids.display()))?;
    let mut ids = Vec::new();
    for line in io::BufReader::new(file).lines() {
        let line = line.map_err(|e| format!("{}: {e}", args.ids.display()))?;
        let line = line.trim();
        if !line.is_empty() {
            ids.push(line.to_string());
        }
    }
    if let Some(limit) = args.limit {
        ids.truncate(limit);
    }
    if let Some(n) = args.sample {
        ids = sample(&ids, n, args.seed);
    }
    if ids.is_empty() {
        return Err(format!("no ids to touch in {}", args.ids.display()));
    }
    let ids = Arc::new(ids);
    let total = ids.len() as u64;
    let workers = args.workers.max(1);
    let progress = Arc::new(Progress::default());
    let next = Arc::new(AtomicUsize::new(0));
    let matching = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let reporter = progress.report_every_second("touch", total, finished.clone());
    let started = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (endpoint, body, ids, progress, next, matching) = (
                endpoint.clone(),
                body.clone(),
                ids.clone(),
                progress.clone(),
                next.clone(),
                matching.clone(),
            );
            let action = args.action.clone();
            let pattern = args.count_matching.clone().unwrap_or_default().into_bytes();
            let max_errors = args.max_errors;
            let spin = args.spin;
            thread::spawn(move || {
                let mut client = if spin {
                    Client::spinning(endpoint)
                } else {
                    Client::new(endpoint)
                };
                let mut histogram = Histogram::<u64>::new(3).expect("histogram");
                while !progress.stop.load(Ordering::Relaxed) {
                    let Some(id) = ids.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    let path = action_path(id, &action);
                    let sent = Instant::now();
                    match client.request("POST", &path, &body) {
                        Ok(response) if response.ok() => {
                            let _ = histogram.record(sent.elapsed().as_nanos() as u64);
                            progress.done.fetch_add(1, Ordering::Relaxed);
                            if !pattern.is_empty()
                                && response.body.windows(pattern.len()).any(|w| w == pattern)
                            {
                                matching.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(response) => progress.fail(
                            format!(
                                "POST {path}: status {}: {}",
                                response.status,
                                response.text()
                            ),
                            max_errors,
                        ),
                        Err(error) => progress.fail(format!("POST {path}: {error}"), max_errors),
                    }
                }
                histogram
            })
        })
        .collect();
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    for handle in handles {
        let worker = handle.join().map_err(|_| "a worker panicked")?;
        histogram
            .add(&worker)
            .map_err(|e| format!("histogram: {e}"))?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    finished.store(true, Ordering::Relaxed);
    let _ = reporter.join();

    let us = |nanos: u64| nanos as f64 / 1000.0;
    let at = |q: f64| us(histogram.value_at_quantile(q));
    let ok = progress.done.load(Ordering::Relaxed);
    let errors = progress.errors.load(Ordering::Relaxed);
    let summary = TouchSummary {
        action: args.action.clone(),
        workers,
        count: ok + errors,
        ok,
        errors,
        duration_s: elapsed,
        throughput_rps: (ok + errors) as f64 / elapsed,
        matching: args
            .count_matching
            .is_some()
            .then(|| matching.load(Ordering::Relaxed)),
        latency_us: Latency {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: us(histogram.max()),
            mean: histogram.mean() / 1000.0,
        },
    };
    let l = &summary.latency_us;
    println!(
        "touch {}: {} requests ({} errors) in {:.2} s ({:.0}/s), {workers} worker(s)",
        summary.action, summary.count, errors, elapsed, summary.throughput_rps
    );
    println!(
        "latency_us: p50={:.1} p90={:.1} p99={:.1} p99.9={:.1} max={:.1} (n={})",
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max,
        histogram.len()
    );
    if let (Some(text), Some(n)) = (&args.count_matching, summary.matching) {
        println!("{n} of {ok} responses contain {text}");
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
        fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if errors > 0 || ok < total {
        let first = progress.first_error.lock().map_or(None, |e| e.clone());
        return Err(format!(
            "{errors} requests failed, {} ids not touched (first error: {})",
            total - ok,
            first.unwrap_or_default()
        ));
    }
    Ok(())
}

/// `n` ids spread evenly over `ids` (all of them if there are fewer), in an order shuffled by
/// `seed` (so that consecutive requests do not follow the creation order).
fn sample(ids: &[String], n: usize, seed: u64) -> Vec<String> {
    let n = n.min(ids.len());
    let mut picked: Vec<String> = (0..n).map(|i| ids[i * ids.len() / n].clone()).collect();
    // Fisher-Yates with splitmix64.
    let mut state = seed;
    let mut random = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..picked.len()).rev() {
        let j = (random() % (i as u64 + 1)) as usize;
        picked.swap(i, j);
    }
    picked
}

// --- rss, wait-ready ----------------------------------------------------------------------------

/// Field `field` (VmRSS, VmHWM, ...: a size in kB) of /proc/`pid`/status, in bytes.
fn rss(pid: u32, field: &str) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .ok_or_else(|| format!("{path}: no {field} line"))?;
    let kib: u64 = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|_| format!("{path}: bad {field} {line:?}"))?;
    Ok(kib * 1024)
}

fn wait_ready(args: WaitReadyArgs) -> Result<(), String> {
    // Each attempt is bounded by a second (or the time left), the whole wait by --timeout-ms.
    let endpoint = Arc::new(Endpoint::parse(
        &args.endpoint,
        Duration::from_millis(args.timeout_ms.min(1000)),
    )?);
    let unix_ns = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    };
    let origin_ns = args.since_ns.unwrap_or_else(unix_ns);
    let deadline = Instant::now() + Duration::from_millis(args.timeout_ms);
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        // A fresh connection per attempt: the listener may not exist yet.
        let mut client = Client::new(endpoint.clone());
        let last_error = match client.request("GET", "/metadata", b"") {
            Ok(response) if response.status == 200 => {
                let elapsed_ms = unix_ns().saturating_sub(origin_ns) as f64 / 1e6;
                println!("{elapsed_ms:.1}");
                return Ok(());
            }
            Ok(response) => format!("status {}", response.status),
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "{} not ready after {} ms ({attempts} attempts, last: {last_error})",
                args.endpoint, args.timeout_ms
            ));
        }
        thread::sleep(Duration::from_millis(args.interval_ms));
    }
}
