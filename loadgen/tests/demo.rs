//! Runs the built `loadgen` binary, in every mode, against the real Pinion demo actor set
//! served in-process (with one shard and with two, where WebSockets and calls cross shards),
//! and checks what it counted against the actors' state read back over HTTP.
//!
//! Only counts and clean completion are asserted, never timings: every run is bounded by
//! `--requests` (with a generous `--duration` as a safety net) or by a short `--duration`
//! whose outcome is checked only through invariants that hold however fast the machine is.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pinion_runtime::{Config, Server};
use serde_json::{Value, json};

/// Safety net for runs bounded by `--requests`: they end as soon as the count is reached.
const BOUND: &str = "30s";
/// A loadgen process still running after this is killed and the test fails.
const PROCESS_LIMIT: Duration = Duration::from_secs(90);

/// One test at a time: each starts its own server and a loadgen process, and the machine is
/// small and shared; running them side by side would only invite timeouts.
static SERIAL: Mutex<()> = Mutex::new(());

/// A demo server on a free port; stopped (and its shards joined) when dropped.
struct Demo {
    server: Option<Server>,
    addr: SocketAddr,
    shards: usize,
    _serial: MutexGuard<'static, ()>,
}

impl Demo {
    fn start(shards: usize) -> Demo {
        let serial = SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            shards: Some(shards),
            data_dir: None,
            ..Config::default()
        };
        let server =
            Server::start(pinion_demo::registry(), config).expect("the demo server starts");
        let addr = server.local_addr();
        Demo {
            server: Some(server),
            addr,
            shards,
            _serial: serial,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `PUT /actors` getOrCreate with a one-part key, as loadgen sends it; the actor id.
    fn get_or_create(&self, name: &str, key: &str) -> String {
        let body = json!({
            "name": name,
            "key": key,
            "runner_name_selector": "default",
            "crash_policy": "sleep",
        });
        let (status, reply) = http(self.addr, "PUT", "/actors?namespace=default", &body);
        assert_eq!(status, 200, "PUT /actors {name}/{key}: {reply}");
        reply["actor"]["actor_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no actor.actor_id in {reply}"))
            .to_string()
    }

    /// Calls an action over HTTP; it must succeed. Its output.
    fn call(&self, actor_id: &str, action: &str, args: Value) -> Value {
        let path = format!("/gateway/{actor_id}/action/{action}");
        let (status, reply) = http(self.addr, "POST", &path, &json!({ "args": args }));
        assert_eq!(status, 200, "{action}: {reply}");
        reply["output"].clone()
    }

    /// The count of counter `key` (created at 0 if it does not exist yet).
    fn count(&self, key: &str) -> u64 {
        let id = self.get_or_create("counter", key);
        let output = self.call(&id, "getCount", json!([]));
        output
            .as_u64()
            .unwrap_or_else(|| panic!("getCount of {key} returned {output}"))
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let stopped = server.stop();
            if !std::thread::panicking() {
                stopped.expect("the demo server stops cleanly");
            }
        }
    }
}

/// One HTTP/1.1 request on a fresh connection with a JSON body; the status and the JSON body
/// of the response (which must have a content-length).
fn http(addr: SocketAddr, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let mut stream = TcpStream::connect(addr).expect("connect to the demo server");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-rivet-encoding: json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).expect("read the response head");
        assert!(
            n > 0,
            "closed before the response head: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let length: usize = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length in {head:?}"));
    while received.len() < head_end + length {
        let n = stream.read(&mut chunk).expect("read the response body");
        assert!(n > 0, "closed mid-body: {head:?}");
        received.extend_from_slice(&chunk[..n]);
    }
    let body = &received[head_end..head_end + length];
    let json = serde_json::from_slice(body).unwrap_or_else(|error| {
        panic!(
            "{method} {path}: body is not JSON ({error}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    (status, json)
}

/// A finished loadgen process.
struct Run {
    status: ExitStatus,
    /// The `--json` summary.
    json: Value,
    stderr: String,
    args: Vec<String>,
}

impl Run {
    fn field(&self, name: &str) -> &Value {
        &self.json[name]
    }

    fn u64(&self, name: &str) -> u64 {
        self.json[name].as_u64().unwrap_or_else(|| {
            panic!(
                "`{name}` is not a count in the summary of {:?}: {}",
                self.args, self.json
            )
        })
    }

    /// The run completed (exit status 0).
    fn assert_success(&self) -> &Run {
        assert!(
            self.status.success(),
            "loadgen {:?} exited with {}: {}\nsummary: {}",
            self.args,
            self.status,
            self.stderr,
            self.json
        );
        self
    }

    /// Exactly `n` requests, all ok, none failed; the latency histogram has every one.
    fn assert_all_ok(&self, n: u64) -> &Run {
        self.assert_success();
        let context = format!("{:?}: {}", self.args, self.json);
        assert_eq!(self.u64("errors"), 0, "{context}");
        assert_eq!(self.field("errors_by_kind"), &json!({}), "{context}");
        assert_eq!(self.u64("requests"), n, "{context}");
        assert_eq!(self.u64("ok"), n, "{context}");
        assert_eq!(self.u64("sent"), n, "{context}");
        assert_eq!(self.json["latency_us"]["count"], json!(n), "{context}");
        self
    }
}

static RUNS: AtomicU64 = AtomicU64::new(0);

fn temp_path(name: &str) -> PathBuf {
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("loadgen-demo-{}-{run}-{name}", std::process::id()))
}

/// Runs `loadgen <args> --json <tmp> --quiet` to its end (killed after [`PROCESS_LIMIT`]).
fn loadgen(args: &[&str]) -> Run {
    let json_path = temp_path("summary.json");
    let stderr_path = temp_path("stderr.txt");
    let mut all: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    all.extend([
        "--json".into(),
        json_path.to_str().unwrap().into(),
        "--quiet".into(),
    ]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(&all)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .expect("loadgen starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > PROCESS_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("loadgen {all:?} still running after {PROCESS_LIMIT:?}: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr_path);
    let text = std::fs::read_to_string(&json_path).unwrap_or_else(|error| {
        panic!("loadgen {all:?} ({status}) wrote no summary ({error}): {stderr}")
    });
    let _ = std::fs::remove_file(&json_path);
    let json: Value = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("the summary is not JSON ({error}): {text}"));
    Run {
        status,
        json,
        stderr,
        args: all,
    }
}

/// `loadgen action` on counter `key`'s increment(1) with 4 connections, plus `extra`.
fn action(demo: &Demo, key: &str, extra: &[&str]) -> Run {
    let endpoint = demo.endpoint();
    let mut args = vec![
        "action",
        "--endpoint",
        &endpoint,
        "--actor",
        "counter",
        "--key",
        key,
        "--action",
        "increment",
        "--args",
        "[1]",
        "--connections",
        "4",
    ];
    args.extend_from_slice(extra);
    loadgen(&args)
}

/// `loadgen ws` on counter `key`'s increment(1), plus `extra`.
fn ws(demo: &Demo, key: &str, extra: &[&str]) -> Run {
    let endpoint = demo.endpoint();
    let mut args = vec![
        "ws",
        "--endpoint",
        &endpoint,
        "--actor",
        "counter",
        "--key",
        key,
        "--action",
        "increment",
        "--args",
        "[1]",
    ];
    args.extend_from_slice(extra);
    loadgen(&args)
}

/// Closed loop over HTTP on one counter: every request counted once, and the counter saw
/// exactly as many increments.
#[test]
fn action_hot_key_counts_every_increment() {
    for shards in [1, 2] {
        let demo = Demo::start(shards);
        let run = action(&demo, "hot", &["--requests", "2000", "--duration", BOUND]);
        run.assert_all_ok(2000);
        assert_eq!(run.field("mode"), "action");
        assert_eq!(run.field("loop"), "closed");
        assert_eq!(run.field("keys"), 1);
        assert_eq!(run.field("resolve_each"), false);
        assert_eq!(
            run.field("actor_id").as_str(),
            Some(demo.get_or_create("counter", "hot").as_str()),
            "loadgen resolved another actor than getOrCreate(counter, hot)"
        );
        assert_eq!(demo.count("hot"), 2000, "{} shard(s)", demo.shards);

        // Pipelined: 4 requests written back to back per connection.
        let run = action(
            &demo,
            "piped",
            &["--requests", "1000", "--pipeline", "4", "--duration", BOUND],
        );
        run.assert_all_ok(1000);
        assert_eq!(run.field("pipeline"), 4);
        assert_eq!(demo.count("piped"), 1000, "{} shard(s)", demo.shards);
    }
}

/// `--keys 5` spreads the load over counters PREFIX-0..PREFIX-4, resolved up front; the five
/// counts add up to the requests loadgen counted.
#[test]
fn action_spread_over_keys_sums_to_the_requests() {
    for shards in [1, 2] {
        let demo = Demo::start(shards);
        for (prefix, dist) in [("uniform", "uniform"), ("zipf", "zipf:1.1")] {
            let run = action(
                &demo,
                prefix,
                &[
                    "--keys",
                    "5",
                    "--key-dist",
                    dist,
                    "--seed",
                    "7",
                    "--requests",
                    "1000",
                    "--duration",
                    BOUND,
                ],
            );
            run.assert_all_ok(1000);
            assert_eq!(run.field("keys"), 5);
            assert_eq!(run.field("key_dist").as_str(), Some(dist));
            assert_eq!(run.field("actor_id"), &Value::Null);
            let counts: Vec<u64> = (0..5)
                .map(|index| demo.count(&format!("{prefix}-{index}")))
                .collect();
            assert_eq!(
                counts.iter().sum::<u64>(),
                1000,
                "{dist} on {shards} shard(s): {counts:?}"
            );
            if dist == "uniform" {
                // P(a key never drawn in 1000 uniform draws) = 0.8^1000: this cannot flake.
                assert!(counts.iter().all(|&count| count > 0), "{counts:?}");
            }
            assert_eq!(demo.count(&format!("{prefix}-5")), 0, "only 5 keys");
        }
    }
}

/// `--resolve-each`: a PUT /actors before every action; the pair is one request.
#[test]
fn action_resolve_each_counts_pairs() {
    for shards in [1, 2] {
        let demo = Demo::start(shards);
        let run = action(
            &demo,
            "stateless",
            &["--resolve-each", "--requests", "500", "--duration", BOUND],
        );
        run.assert_all_ok(500);
        assert_eq!(run.field("resolve_each"), true);
        assert_eq!(demo.count("stateless"), 500, "{shards} shard(s)");
    }
}

/// Open loop over HTTP. With `--requests` exactly that many go out and are answered; with
/// only `--duration`, how many depends on the machine, so only the bookkeeping is checked.
#[test]
fn action_open_loop() {
    for shards in [1, 2] {
        let demo = Demo::start(shards);
        let run = action(
            &demo,
            "open-n",
            &["--rate", "500", "--requests", "300", "--duration", BOUND],
        );
        run.assert_all_ok(300);
        assert_eq!(run.field("loop"), "open");
        assert_eq!(run.field("pipeline"), &Value::Null);
        assert_eq!(demo.count("open-n"), 300, "{shards} shard(s)");

        let run = action(&demo, "open-d", &["--rate", "500", "--duration", "1s"]);
        run.assert_success();
        let context = format!("{shards} shard(s): {}", run.json);
        assert_eq!(run.field("loop"), "open", "{context}");
        assert_eq!(run.u64("errors"), 0, "{context}");
        let (ok, requests, sent) = (run.u64("ok"), run.u64("requests"), run.u64("sent"));
        assert!(ok > 0, "{context}");
        assert_eq!(requests, ok, "{context}");
        // Requests still in flight at the deadline are sent but abandoned (and may or may not
        // have reached the actor); none is counted twice or out of nowhere.
        assert!(ok <= sent, "{context}");
        let count = demo.count("open-d");
        assert!(
            (ok..=sent).contains(&count),
            "count {count} outside ok..=sent, {context}"
        );
    }
}

/// `raw` on the server's health route.
#[test]
fn raw_health() {
    for shards in [1, 2] {
        let demo = Demo::start(shards);
        let url = format!("{}/health", demo.endpoint());
        for pipeline in ["1", "4"] {
            let run = loadgen(&[
                "raw",
                "--url",
                &url,
                "--connections",
                "4",
                "--pipeline",
                pipeline,
                "--requests",
                "2000",
                "--duration",
                BOUND,
            ]);
            run.assert_all_ok(2000);
            assert_eq!(run.field("mode"), "raw");
            assert_eq!(run.field("method"), "GET");
        }
        let run = loadgen(&[
            "raw",
            "--url",
            &url,
            "--connections",
            "2",
            "--rate",
            "400",
            "--requests",
            "200",
            "--duration",
            BOUND,
        ]);
        run.assert_all_ok(200);
        assert_eq!(run.field("loop"), "open");
    }
}

/// Actions over connection WebSockets, several in flight per connection; with two shards most
/// connections land on the shard that does not own the actor and are moved to it.
#[test]
fn ws_counts_every_action() {
    for shards in [1, 2] {
        let demo = Demo::start(shards);
        let threads = shards.to_string();
        let run = ws(
            &demo,
            "ws",
            &[
                "--connections",
                "4",
                "--in-flight",
                "4",
                "--threads",
                &threads,
                "--requests",
                "1000",
                "--duration",
                BOUND,
            ],
        );
        run.assert_all_ok(1000);
        assert_eq!(run.field("mode"), "ws");
        let extras = &run.json["ws"];
        assert_eq!(extras["in_flight"], 4, "{}", run.json);
        assert_eq!(extras["connection_errors"], 0, "{}", run.json);
        assert_eq!(extras["action_errors"], json!({}), "{}", run.json);
        assert_eq!(extras["first_failure"], Value::Null, "{}", run.json);
        // Exactly 4 connections, none lost.
        assert_eq!(run.u64("connections_opened"), 4, "{}", run.json);
        assert_eq!(demo.count("ws"), 1000, "{shards} shard(s)");

        // Open loop.
        let run = ws(
            &demo,
            "ws-open",
            &[
                "--connections",
                "2",
                "--rate",
                "500",
                "--requests",
                "300",
                "--duration",
                BOUND,
            ],
        );
        run.assert_all_ok(300);
        assert_eq!(run.field("loop"), "open");
        assert_eq!(demo.count("ws-open"), 300, "{shards} shard(s)");

        // Connections spread over three actors.
        let run = ws(
            &demo,
            "ws-keys",
            &[
                "--connections",
                "6",
                "--in-flight",
                "2",
                "--keys",
                "3",
                "--key-dist",
                "uniform",
                "--requests",
                "600",
                "--duration",
                BOUND,
            ],
        );
        run.assert_all_ok(600);
        let total: u64 = (0..3).map(|i| demo.count(&format!("ws-keys-{i}"))).sum();
        assert_eq!(total, 600, "{shards} shard(s)");
    }
}

/// Connection params reach the actor (`chatRoom.whoAmI` answers the userId), and a connection
/// its `onBeforeConnect` refuses fails the handshake: no request is ever made.
#[test]
fn ws_conn_params_and_rejected_handshakes() {
    for shards in [1, 2] {
        let demo = Demo::start(shards);
        let endpoint = demo.endpoint();
        let chat = |params: &str, limit: &[&str]| {
            let mut args = vec![
                "ws",
                "--endpoint",
                &endpoint,
                "--actor",
                "chatRoom",
                "--key",
                "room",
                "--action",
                "whoAmI",
                "--connections",
                "2",
                "--conn-params",
                params,
            ];
            args.extend_from_slice(limit);
            loadgen(&args)
        };

        let run = chat(
            r#"{"userId":"x","token":"good"}"#,
            &["--requests", "200", "--duration", BOUND],
        );
        run.assert_all_ok(200);

        let run = chat(r#"{"userId":"x","token":"bad"}"#, &["--duration", "1s"]);
        run.assert_success();
        let context = format!("{shards} shard(s): {}", run.json);
        assert_eq!(run.u64("ok"), 0, "{context}");
        assert_eq!(run.u64("requests"), 0, "{context}");
        assert_eq!(run.u64("sent"), 0, "{context}");
        let by_kind = run.field("errors_by_kind").as_object().unwrap();
        assert_eq!(
            by_kind.keys().collect::<Vec<_>>(),
            ["handshake"],
            "only handshake errors, {context}"
        );
        let handshakes = by_kind["handshake"].as_u64().unwrap();
        assert!(handshakes > 0, "{context}");
        assert_eq!(run.u64("errors"), handshakes, "{context}");
        let failure = run.json["ws"]["first_failure"].as_str().unwrap_or_default();
        assert!(failure.contains("forbidden"), "first_failure: {context}");
    }
}

/// Broadcast fan-out: every subscriber gets every round's event; the counter was incremented
/// once per round, warm-up rounds included.
#[test]
fn fanout_delivers_every_event() {
    for shards in [1, 2] {
        let demo = Demo::start(shards);
        let endpoint = demo.endpoint();
        let run = loadgen(&[
            "fanout",
            "--endpoint",
            &endpoint,
            "--actor",
            "counter",
            "--key",
            "fan",
            "--subscribers",
            "50",
            "--rounds",
            "5",
            "--interval",
            "10ms",
        ]);
        run.assert_success();
        let context = format!("{shards} shard(s): {}", run.json);
        assert_eq!(run.field("mode"), "fanout", "{context}");
        assert_eq!(run.u64("subscribers"), 50, "{context}");
        assert_eq!(run.u64("rounds_run"), 5, "{context}");
        assert_eq!(run.u64("expected_deliveries"), 250, "{context}");
        assert_eq!(run.u64("deliveries"), 250, "{context}");
        for field in [
            "missing",
            "mismatched",
            "unexpected",
            "subscribers_lost",
            "error_frames",
        ] {
            assert_eq!(run.u64(field), 0, "{field}, {context}");
        }
        assert_eq!(run.field("failure"), &Value::Null, "{context}");
        let rounds = run.field("rounds_detail").as_array().unwrap();
        assert_eq!(rounds.len(), 5, "{context}");
        assert!(
            rounds.iter().all(|round| round["delivered"] == 50),
            "{context}"
        );
        // Warm-up rounds increment the counter too.
        let warmups = run.u64("warmup_rounds");
        assert!(warmups >= 1, "{context}");
        assert_eq!(demo.count("fan"), 5 + warmups, "{context}");
    }
}
