//! Durable schedules at scale: what a million pending schedules cost a shard.
//!
//! ```sh
//! cargo run --release -p pinion-benches --bin schedules -- --pending 1000000
//! ```
//!
//! Starts a 1-shard server in-process on a fresh `--data-dir` (under `$TMPDIR`, removed at the
//! end) with a `planner` actor type, and:
//!
//! 1. has `--actors` planners schedule `--pending` far-future actions between them
//!    (`schedule().at`, 10 000 per action call), reporting the rate and the process's RSS growth
//!    per pending schedule;
//! 2. with all of them pending, schedules `--probes` near ones (100 ms ahead, one at a time) and
//!    measures how late each fires (its action records the wall clock): whether the timer
//!    structure stays prompt with a million entries in it;
//! 3. stops the server, starts it again on the same directory and reports the recovery time
//!    (start to serving), the schedules it found, and the RSS;
//! 4. lists one planner's schedules and cancels them (`list`/`cancel` at that size).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use pinion_runtime::{
    ActionResult, Actions, Actor, ActorInfo, Config, Registry, Server, Value, sys,
};

#[derive(Parser)]
struct Args {
    /// Far-future schedules to create.
    #[arg(long, default_value_t = 1_000_000)]
    pending: u64,
    /// Actors they are spread over.
    #[arg(long, default_value_t = 100)]
    actors: u64,
    /// Near schedules whose lateness is measured.
    #[arg(long, default_value_t = 50)]
    probes: u32,
}

struct Planner;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Default)]
struct PlannerState {
    /// Lateness (ms) of each probe that fired.
    late_ms: Vec<i64>,
}

/// Far enough that nothing fires during the run (2100-01-01).
const FAR_MS: u64 = 4_102_444_800_000;

impl Actor for Planner {
    const NAME: &'static str = "planner";
    type State = PlannerState;
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<PlannerState> {
        Ok(PlannerState::default())
    }
    fn create_vars(_: &ActorInfo, _: &PlannerState) {}
    fn actions(actions: &mut Actions<Self>) {
        actions
            .action("plan", |c, (n, offset): (u64, u64)| {
                for i in 0..n {
                    c.schedule().at(FAR_MS + offset + i, "never", ())?;
                }
                Ok(n)
            })
            .action("probe", |c, (in_ms,): (u64,)| {
                let due = sys::unix_ms() + in_ms;
                c.schedule().at(due, "fired", (due,))?;
                Ok(())
            })
            .action("fired", |c, (due,): (u64,)| {
                c.state.late_ms.push(sys::unix_ms() as i64 - due as i64);
                Ok(())
            })
            .action("late", |c, ()| Ok(c.state.late_ms.clone()))
            .action("count", |c, ()| Ok(c.schedule().list()?.len()))
            .action("cancelAll", |c, ()| {
                let mut n = 0;
                for s in c.schedule().list()? {
                    n += u32::from(c.schedule().cancel(s.id)?);
                }
                Ok(n)
            })
            .action("never", |_, ()| Ok(()));
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// A minimal keep-alive JSON client.
struct Http {
    stream: TcpStream,
}

impl Http {
    fn connect(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        Http { stream }
    }

    fn request(&mut self, method: &str, path: &str, body: &str) -> serde_json::Value {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).unwrap();
        self.stream.write_all(body.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "closed");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    assert!(head.starts_with("http/1.1 200"), "{head}");
                    return serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap();
                }
            }
        }
    }

    fn actor(&mut self, key: &str) -> String {
        let reply = self.request(
            "PUT",
            "/actors",
            &format!(r#"{{"name":"planner","key":"{key}"}}"#),
        );
        reply["actor"]["actor_id"].as_str().unwrap().to_string()
    }

    fn call(&mut self, id: &str, action: &str, args: &str) -> serde_json::Value {
        self.request(
            "POST",
            &format!("/gateway/{id}/action/{action}"),
            &format!(r#"{{"args":{args}}}"#),
        )["output"]
            .clone()
    }
}

fn start(dir: &Path) -> (Server, Duration) {
    let started = Instant::now();
    let server = Server::start(
        Registry::new().register::<Planner>(),
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            shards: Some(1),
            data_dir: Some(dir.to_path_buf()),
            ..Config::default()
        },
    )
    .unwrap();
    (server, started.elapsed())
}

fn main() {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("pinion-schedules-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rss_before = rss_bytes();
    let (server, _) = start(&dir);
    let mut http = Http::connect(server.local_addr());
    let ids: Vec<String> = (0..args.actors)
        .map(|i| http.actor(&format!("p-{i}")))
        .collect();
    let rss_empty = rss_bytes();
    eprintln!(
        "creating {} pending schedules over {} actors...",
        args.pending, args.actors
    );
    let per_call = 10_000u64;
    let started = Instant::now();
    let mut done = 0u64;
    let mut last_report = Instant::now();
    while done < args.pending {
        let n = per_call.min(args.pending - done);
        let id = &ids[((done / per_call) % args.actors) as usize];
        http.call(id, "plan", &format!("[{n},{done}]"));
        done += n;
        if last_report.elapsed() > Duration::from_secs(1) {
            eprintln!("  {done}/{}", args.pending);
            last_report = Instant::now();
        }
    }
    let create_secs = started.elapsed().as_secs_f64();
    // Let the log's flusher catch up before measuring memory.
    std::thread::sleep(Duration::from_millis(500));
    let rss_full = rss_bytes();
    println!(
        "created {} schedules in {:.2} s ({:.0}/s); RSS {:.1} MB -> {:.1} MB: {:.0} bytes per pending schedule (index, log batch and allocator slack)",
        args.pending,
        create_secs,
        args.pending as f64 / create_secs,
        rss_empty as f64 / 1e6,
        rss_full as f64 / 1e6,
        (rss_full.saturating_sub(rss_empty)) as f64 / args.pending as f64
    );

    // Probes: lateness of a near schedule with all of those pending.
    let probe = http.actor("probe");
    for _ in 0..args.probes {
        http.call(&probe, "probe", "[100]");
        std::thread::sleep(Duration::from_millis(130));
    }
    std::thread::sleep(Duration::from_millis(300));
    let late = http.call(&probe, "late", "[]");
    let mut histogram = Histogram::<u64>::new(3).unwrap();
    for l in late.as_array().unwrap() {
        histogram.record(l.as_i64().unwrap().max(0) as u64).unwrap();
    }
    println!(
        "{} near schedules fired with {} pending: lateness p50 {} ms, p99 {} ms, max {} ms (wall clock, ms resolution)",
        histogram.len(),
        args.pending,
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.max()
    );
    drop(http);
    server.stop().unwrap();

    let (server, took) = start(&dir);
    let mut http = Http::connect(server.local_addr());
    let rss_restarted = rss_bytes();
    let id = http.actor("p-0");
    let listed_at = Instant::now();
    let count = http.call(&id, "count", "[]");
    let list_ms = listed_at.elapsed().as_secs_f64() * 1e3;
    let cancel_at = Instant::now();
    let cancelled = http.call(&id, "cancelAll", "[]");
    let cancel_ms = cancel_at.elapsed().as_secs_f64() * 1e3;
    println!(
        "restart with {} pending: serving after {:.2} s; RSS {:.1} MB (process, before start: {:.1} MB)",
        args.pending,
        took.as_secs_f64(),
        rss_restarted as f64 / 1e6,
        rss_before as f64 / 1e6
    );
    println!(
        "one actor's {count} schedules: listed in {list_ms:.1} ms, {cancelled} cancelled in {cancel_ms:.1} ms (HTTP round trip included)"
    );
    drop(http);
    server.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
