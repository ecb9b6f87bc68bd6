//! Runs the built `loadgen` binary against tiny HTTP servers started inside the test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How a test server answers every request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reply {
    /// `200` with a content-length body.
    Ok,
    /// `200` with a chunked body (extension and trailer included).
    Chunked,
    /// `500` with a content-length body.
    Status500,
    /// `200` with `connection: close`, then closes.
    Close,
    /// A RivetKit manager + gateway: `PUT /actors` and the action.
    Rivet,
    /// Reads requests and never answers.
    Silent,
    /// `200` like `Ok`, each request answered only after this pause.
    Delayed(Duration),
    /// `200` like `Ok`, but the answer to the request with this number (1-based, counted over
    /// all connections) waits `pause` first, once.
    StallAt { request: u64, pause: Duration },
    /// A RivetKit manager + gateway with one actor per key: `PUT /actors` answers the actor id
    /// `id-<key>`, and the gateway accepts actions for any `id-…` actor.
    RivetKeys,
}

#[derive(Clone, Debug)]
struct Request {
    /// Which accepted connection it came on (0, 1, … in accept order).
    connection: u64,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Server {
    port: u16,
    requests: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    fn start(reply: Reply) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (requests.clone(), seen.clone());
        std::thread::spawn(move || {
            for (connection, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let (count, log) = (count.clone(), log.clone());
                std::thread::spawn(move || serve(stream, connection as u64, reply, &count, &log));
            }
        });
        Server {
            port,
            requests,
            seen,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

/// Answers every complete request in the buffer (so pipelined requests work), in order.
fn serve(
    mut stream: TcpStream,
    connection: u64,
    reply: Reply,
    count: &AtomicU64,
    log: &Mutex<Vec<Request>>,
) {
    stream.set_nodelay(true).unwrap();
    let mut pending = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let read = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        pending.extend_from_slice(&chunk[..read]);
        let mut out = Vec::new();
        let mut close = false;
        while let Some((mut request, used)) = parse_request(&pending) {
            pending.drain(..used);
            request.connection = connection;
            let number = count.fetch_add(1, Ordering::SeqCst) + 1;
            match reply {
                Reply::Delayed(pause) => std::thread::sleep(pause),
                Reply::StallAt {
                    request: stalled,
                    pause,
                } if number == stalled => {
                    std::thread::sleep(pause);
                }
                _ => {}
            }
            let answer = respond(reply, &request);
            log.lock().unwrap().push(request);
            if let Some(answer) = answer {
                out.extend_from_slice(&answer);
            }
            if reply == Reply::Close {
                close = true;
                break;
            }
        }
        if !out.is_empty() && stream.write_all(&out).is_err() {
            return;
        }
        if close {
            return;
        }
    }
}

fn parse_request(buf: &[u8]) -> Option<(Request, usize)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end - 4]).unwrap();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap().split(' ');
    let method = request_line.next().unwrap().to_string();
    let target = request_line.next().unwrap().to_string();
    assert_eq!(request_line.next(), Some("HTTP/1.1"));
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_string(), value.trim().to_string())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    if buf.len() < head_end + length {
        return None;
    }
    let body = String::from_utf8(buf[head_end..head_end + length].to_vec()).unwrap();
    Some((
        Request {
            connection: 0,
            method,
            target,
            headers,
            body,
        },
        head_end + length,
    ))
}

fn respond(reply: Reply, request: &Request) -> Option<Vec<u8>> {
    let fixed = |status: &str, body: &str| {
        format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: keep-alive\r\n\r\n{body}", body.len())
            .into_bytes()
    };
    Some(match reply {
        Reply::Ok | Reply::Delayed(_) | Reply::StallAt { .. } => fixed("200 OK", "hello"),
        Reply::Status500 => fixed("500 Internal Server Error", r#"{"group":"x","code":"y"}"#),
        Reply::Chunked => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n".to_vec(),
        Reply::Close => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_vec(),
        Reply::Rivet if request.method == "PUT" && request.target.ends_with("/actors?namespace=default") => {
            fixed("200 OK", r#"{"actor":{"actor_id":"abc"},"created":true}"#)
        }
        Reply::Rivet if request.method == "POST" && request.target.contains("/gateway/abc/action/") => {
            fixed("200 OK", r#"{"output":1}"#)
        }
        Reply::Rivet => fixed("404 Not Found", r#"{"group":"test","code":"not_found"}"#),
        Reply::RivetKeys if request.method == "PUT" && request.target.ends_with("/actors?namespace=default") => {
            let key = body_key(&request.body);
            fixed("200 OK", &format!(r#"{{"actor":{{"actor_id":"id-{key}"}},"created":true}}"#))
        }
        Reply::RivetKeys if request.method == "POST" && request.target.starts_with("/gateway/id-") => {
            fixed("200 OK", r#"{"output":1}"#)
        }
        Reply::RivetKeys => fixed("404 Not Found", r#"{"group":"test","code":"not_found"}"#),
        Reply::Silent => return None,
    })
}

/// The `key` of a `PUT /actors` body (keys in these tests need no unescaping).
fn body_key(body: &str) -> String {
    let body: Value = serde_json::from_str(body).unwrap();
    body["key"].as_str().unwrap().to_string()
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("loadgen-test-{}-{name}", std::process::id()))
}

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs loadgen with `--json` and returns the parsed summary; the run must succeed.
fn run_json(name: &str, args: &[&str]) -> Value {
    let path = temp_path(&format!("{name}.json"));
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--json", path.to_str().unwrap(), "--quiet"]);
    let output = loadgen(&all);
    assert!(
        output.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stdout.is_empty(),
        "--quiet printed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let _ = std::fs::remove_file(path);
    summary
}

fn raw_2000(name: &str, server: &Server, extra: &[&str]) -> Value {
    let url = server.url("/bench");
    let mut args = vec![
        "raw",
        "--url",
        &url,
        "--requests",
        "2000",
        "--connections",
        "4",
        "--duration",
        "60s",
    ];
    args.extend_from_slice(extra);
    run_json(name, &args)
}

#[test]
fn raw_content_length_exactly_n_requests() {
    let server = Server::start(Reply::Ok);
    let hgrm = temp_path("ok.hgrm");
    let summary = raw_2000("ok", &server, &["--hgrm", hgrm.to_str().unwrap()]);
    // `--requests N` issues exactly N measured requests: none more (tickets), none lost.
    assert_eq!(summary["requests"], 2000);
    assert_eq!(summary["ok"], 2000);
    assert_eq!(summary["errors"], 0);
    assert_eq!(summary["errors_by_kind"], serde_json::json!({}));
    assert_eq!(summary["latency_us"]["count"], 2000);
    assert!(summary["latency_us"]["p50"].as_f64().unwrap() > 0.0);
    assert!(summary["throughput_rps"].as_f64().unwrap() > 0.0);
    assert_eq!(summary["connections_opened"], 4);
    assert_eq!(
        server.count(),
        2000,
        "the server saw a different number of requests"
    );
    let seen = server.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("GET", "/bench")
    );
    assert_eq!(
        seen[0].header("host"),
        Some(format!("127.0.0.1:{}", server.port).as_str())
    );
    let hgrm = std::fs::read_to_string(&hgrm).unwrap();
    assert!(
        hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"),
        "{hgrm}"
    );
    assert!(hgrm.contains("Total count    =         2000]"), "{hgrm}");
}

#[test]
fn raw_chunked_responses_parse() {
    let server = Server::start(Reply::Chunked);
    let summary = raw_2000("chunked", &server, &[]);
    assert_eq!(summary["requests"], 2000);
    assert_eq!(summary["ok"], 2000);
    assert_eq!(summary["errors"], 0);
    // A misparsed chunked body would desynchronise the connection and force reconnects.
    assert_eq!(summary["connections_opened"], 4);
    assert_eq!(server.count(), 2000);
}

#[test]
fn raw_500_counts_every_request_as_an_error() {
    let server = Server::start(Reply::Status500);
    let summary = raw_2000("500", &server, &[]);
    assert_eq!(summary["requests"], 2000);
    assert_eq!(summary["ok"], 0);
    assert_eq!(summary["errors"], 2000);
    assert_eq!(
        summary["errors_by_kind"],
        serde_json::json!({"status_500": 2000})
    );
    assert_eq!(summary["latency_us"]["count"], 0);
}

#[test]
fn raw_pipelined_with_post_body_and_headers() {
    let server = Server::start(Reply::Ok);
    let summary = raw_2000(
        "pipeline",
        &server,
        &[
            "--pipeline",
            "8",
            "--method",
            "post",
            "--body",
            "ping",
            "-H",
            "x-test: 1",
            "--threads",
            "2",
        ],
    );
    assert_eq!(summary["requests"], 2000);
    assert_eq!(summary["ok"], 2000);
    assert_eq!(summary["threads"], 2);
    assert_eq!(server.count(), 2000);
    let seen = server.seen();
    assert!(
        seen.iter()
            .all(|r| r.method == "POST" && r.body == "ping" && r.header("x-test") == Some("1"))
    );
}

#[test]
fn raw_connection_close_reconnects_without_errors() {
    let server = Server::start(Reply::Close);
    let url = server.url("/");
    let summary = run_json(
        "close",
        &[
            "raw",
            "--url",
            &url,
            "--requests",
            "200",
            "--connections",
            "2",
        ],
    );
    assert_eq!(summary["requests"], 200);
    assert_eq!(summary["errors"], 0);
    assert_eq!(summary["connections_opened"], 200);
}

#[test]
fn raw_duration_bounds_the_run() {
    let server = Server::start(Reply::Ok);
    let url = server.url("/");
    let started = Instant::now();
    let summary = run_json(
        "duration",
        &[
            "raw", "--url", &url, "-c", "2", "-d", "300ms", "--warmup", "100ms",
        ],
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(summary["requests"].as_u64().unwrap() > 0);
    assert_eq!(summary["errors"], 0);
    let measured = summary["duration_s"].as_f64().unwrap();
    assert!((0.29..=0.31).contains(&measured), "measured {measured} s");
    // Warmup requests reached the server but not the numbers.
    assert!(server.count() > summary["requests"].as_u64().unwrap());
}

#[test]
fn silent_server_times_out_and_the_run_still_ends() {
    let server = Server::start(Reply::Silent);
    let url = server.url("/");
    let started = Instant::now();
    let summary = run_json(
        "silent",
        &[
            "raw",
            "--url",
            &url,
            "-c",
            "2",
            "-d",
            "1s",
            "--timeout",
            "200ms",
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(summary["ok"], 0);
    let timeouts = summary["errors_by_kind"]["timeout"].as_u64().unwrap();
    assert!(timeouts >= 4, "{summary}");
    assert_eq!(summary["requests"], summary["errors"]);
}

#[test]
fn action_resolves_then_loads_the_gateway() {
    let server = Server::start(Reply::Rivet);
    let endpoint = server.url("");
    let summary = run_json(
        "action",
        &[
            "action",
            "--endpoint",
            &endpoint,
            "--actor",
            "counter",
            "--key",
            "bench",
            "--action",
            "increment",
            "--args",
            "[1]",
            "--requests",
            "500",
            "--connections",
            "3",
        ],
    );
    assert_eq!(summary["requests"], 500);
    assert_eq!(summary["ok"], 500);
    assert_eq!(summary["actor_id"], "abc");
    assert_eq!(
        summary["url"],
        format!(
            "http://127.0.0.1:{}/gateway/abc/action/increment",
            server.port
        )
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 501, "one PUT /actors, then the load");
    let put = &seen[0];
    assert_eq!(
        (put.method.as_str(), put.target.as_str()),
        ("PUT", "/actors?namespace=default")
    );
    assert_eq!(put.header("content-type"), Some("application/json"));
    assert_eq!(
        put.body,
        r#"{"name":"counter","key":"bench","runner_name_selector":"default","crash_policy":"sleep"}"#
    );
    for call in &seen[1..] {
        assert_eq!(
            (call.method.as_str(), call.target.as_str()),
            ("POST", "/gateway/abc/action/increment")
        );
        assert_eq!(call.header("content-type"), Some("application/json"));
        assert_eq!(call.header("x-rivet-encoding"), Some("json"));
        assert_eq!(call.header("content-length"), Some("12"));
        assert_eq!(call.body, r#"{"args":[1]}"#);
    }
}

#[test]
fn action_with_base_path_and_multi_part_key() {
    let server = Server::start(Reply::Rivet);
    let endpoint = server.url("/api/rivet/");
    let summary = run_json(
        "action-base",
        &[
            "action",
            "--endpoint",
            &endpoint,
            "--actor",
            "counter",
            "--key-part",
            "json",
            "--key-part",
            "a/b",
            "--key-part",
            "",
            "--action",
            "get count",
            "--requests",
            "10",
            "--connections",
            "1",
        ],
    );
    assert_eq!(summary["ok"], 10);
    let seen = server.seen();
    assert_eq!(seen[0].target, "/api/rivet/actors?namespace=default");
    assert_eq!(
        seen[0].body,
        r#"{"name":"counter","key":"json/a\\/b/\\0","runner_name_selector":"default","crash_policy":"sleep"}"#
    );
    assert_eq!(seen[1].target, "/api/rivet/gateway/abc/action/get%20count");
    assert_eq!(seen[1].body, r#"{"args":[]}"#);
}

#[test]
fn unreachable_endpoint_is_one_clear_error() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/");
    for args in [
        vec!["raw", "--url", url.as_str(), "-d", "1s"],
        vec![
            "action",
            "--endpoint",
            url.as_str(),
            "--actor",
            "counter",
            "--action",
            "increment",
        ],
    ] {
        let output = loadgen(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("cannot connect to 127.0.0.1"), "{stderr}");
        assert!(stderr.contains("refused"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let output = loadgen(&["raw", "--url", "https://example.com/"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("https is not supported"));
    let output = loadgen(&["raw", "--url", "http://127.0.0.1:1/", "--duration", "10"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "clap rejects a duration without unit"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing unit"));
    let output = loadgen(&["action", "--actor", "c", "--action", "a", "--args", "1"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("JSON array"));
}

fn f64_of(summary: &Value, key: &str) -> f64 {
    summary[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} in {summary}"))
}

fn latency_ms(summary: &Value, key: &str) -> f64 {
    summary["latency_us"][key].as_f64().unwrap() / 1000.0
}

#[test]
fn open_loop_sends_at_the_rate() {
    // 4 connections at 500 req/s each; the server takes 1 ms per request (50 % busy).
    let server = Server::start(Reply::Delayed(Duration::from_millis(1)));
    let url = server.url("/");
    let started = Instant::now();
    let summary = run_json(
        "open-rate",
        &[
            "raw", "--url", &url, "--rate", "2000", "-c", "4", "-d", "1s",
        ],
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(summary["loop"], "open");
    assert_eq!(summary["rate"], 2000.0);
    assert_eq!(summary["max_in_flight"], 64);
    assert_eq!(summary["pipeline"], Value::Null);
    assert_eq!(summary["errors"], 0);
    // Count-based, generous bounds: 1 s at 2000 req/s is 2000 requests.
    let requests = summary["requests"].as_u64().unwrap();
    assert!((1700..=2100).contains(&requests), "{summary}");
    let sent = summary["sent"].as_u64().unwrap();
    assert!((1700..=2100).contains(&sent), "{summary}");
    assert!(sent >= requests);
    let achieved = f64_of(&summary, "achieved_rate");
    assert!((1700.0..=2100.0).contains(&achieved), "{summary}");
    assert_eq!(summary["late_sends"], 0, "{summary}");
    assert!(
        summary["send_lag_us"]["max"].as_f64().is_some(),
        "{summary}"
    );
    assert_eq!(summary["latency_us"]["count"], summary["ok"]);
    // Latency includes the server's 1 ms.
    assert!(latency_ms(&summary, "p50") >= 1.0, "{summary}");
    let measured = f64_of(&summary, "duration_s");
    assert!((0.99..=1.01).contains(&measured), "measured {measured} s");
    // The server saw about as many (a few were in flight at the deadline).
    assert!(server.count() >= requests && server.count() <= sent + 4 * 64);
}

#[test]
fn open_loop_with_requests_limit_and_warmup() {
    let server = Server::start(Reply::Ok);
    let url = server.url("/");
    let summary = run_json(
        "open-limit",
        &[
            "raw",
            "--url",
            &url,
            "--rate",
            "4000",
            "-c",
            "2",
            "--threads",
            "2",
            "-d",
            "20s",
            "--warmup",
            "200ms",
            "--requests",
            "1000",
        ],
    );
    // Exactly N measured requests, then the run ends early (about 1000 / 4000 s).
    assert_eq!(summary["requests"], 1000, "{summary}");
    assert_eq!(summary["sent"], 1000, "{summary}");
    assert_eq!(summary["errors"], 0);
    assert!(f64_of(&summary, "duration_s") < 2.0, "{summary}");
    // Warmup requests (about 800) reached the server but not the numbers.
    assert!(server.count() > 1400, "{}", server.count());
}

#[test]
fn a_stall_shows_in_open_loop_percentiles_not_just_the_max() {
    // One connection; the 300th request (about 150 ms into the run) waits 200 ms.
    let stall = Reply::StallAt {
        request: 300,
        pause: Duration::from_millis(200),
    };
    let open_server = Server::start(stall);
    let url = open_server.url("/");
    let open = run_json(
        "stall-open",
        &[
            "raw", "--url", &url, "--rate", "2000", "-c", "1", "-d", "1s",
        ],
    );
    assert_eq!(open["errors"], 0, "{open}");
    assert!(latency_ms(&open, "max") >= 200.0, "{open}");
    // Every request due during the stall waited for it: ~400 of ~2000 samples, with latencies
    // spread over 0..200 ms, so the 90th percentile is near 100 ms.
    assert!(latency_ms(&open, "p90") >= 50.0, "{open}");
    // The schedule was kept: the requests due during the stall were sent, not skipped.
    let requests = open["requests"].as_u64().unwrap();
    assert!((1700..=2100).contains(&requests), "{open}");
    // About 400 requests fall due during the stall; past the 64th they wait for a place.
    let open_late = open["late_sends"].as_u64().unwrap();
    assert!(open_late >= 200, "{open}");

    // With a tight bound the sends due during the stall are held back, sent late, and counted
    // from their intended times all the same.
    let bounded_server = Server::start(stall);
    let url = bounded_server.url("/");
    let bounded = run_json(
        "stall-bounded",
        &[
            "raw",
            "--url",
            &url,
            "--rate",
            "2000",
            "-c",
            "1",
            "-d",
            "1s",
            "--max-in-flight",
            "8",
        ],
    );
    assert_eq!(bounded["errors"], 0, "{bounded}");
    assert!(latency_ms(&bounded, "max") >= 200.0, "{bounded}");
    assert!(latency_ms(&bounded, "p90") >= 50.0, "{bounded}");
    let late = bounded["late_sends"].as_u64().unwrap();
    assert!(
        late > open_late,
        "{open_late} late with 64, {late} with 8: {bounded}"
    );
    let requests = bounded["requests"].as_u64().unwrap();
    assert!((1700..=2100).contains(&requests), "{bounded}");
    assert!(
        bounded["send_lag_us"]["max"].as_f64().unwrap() >= 150_000.0,
        "{bounded}"
    );

    // Closed loop, one connection: the stalled request shows in the max, but only as one
    // sample among thousands (coordinated omission: nothing was sent during the stall).
    let closed_server = Server::start(stall);
    let url = closed_server.url("/");
    let closed = run_json(
        "stall-closed",
        &["raw", "--url", &url, "-c", "1", "-d", "1s"],
    );
    assert_eq!(closed["loop"], "closed");
    assert_eq!(closed["rate"], Value::Null);
    assert_eq!(closed["late_sends"], Value::Null);
    assert_eq!(closed["errors"], 0, "{closed}");
    assert!(latency_ms(&closed, "max") >= 200.0, "{closed}");
    assert!(closed["requests"].as_u64().unwrap() > 300, "{closed}");
    assert!(latency_ms(&closed, "p90") < 50.0, "{closed}");
}

/// Runs `loadgen action` against a `RivetKeys` server and returns the summary and what the
/// server saw.
fn action_keys(name: &str, extra: &[&str]) -> (Value, Vec<Request>) {
    let server = Server::start(Reply::RivetKeys);
    let endpoint = server.url("");
    let mut args = vec![
        "action",
        "--endpoint",
        &endpoint,
        "--actor",
        "counter",
        "--action",
        "increment",
        "--args",
        "[1]",
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"-d") {
        args.extend(["-d", "30s"]);
    }
    let summary = run_json(name, &args);
    assert_eq!(summary["errors"], 0, "{summary}");
    (summary, server.seen())
}

/// How many action calls each actor got, by actor id.
fn calls_per_actor(seen: &[Request]) -> std::collections::BTreeMap<String, u64> {
    let mut calls = std::collections::BTreeMap::new();
    for request in seen.iter().filter(|r| r.method == "POST") {
        let id = request
            .target
            .strip_prefix("/gateway/")
            .and_then(|rest| rest.strip_suffix("/action/increment"))
            .unwrap_or_else(|| panic!("unexpected target {}", request.target));
        *calls.entry(id.to_string()).or_default() += 1;
    }
    calls
}

fn resolved_keys(seen: &[Request]) -> Vec<String> {
    let mut keys: Vec<String> = seen
        .iter()
        .filter(|r| r.method == "PUT")
        .map(|r| body_key(&r.body))
        .collect();
    keys.sort();
    keys
}

#[test]
fn hot_key_distribution_loads_one_actor() {
    let (summary, seen) = action_keys(
        "keys-hot",
        &["--key", "bench", "--requests", "300", "-c", "3"],
    );
    assert_eq!(summary["ok"], 300);
    assert_eq!(summary["keys"], 1);
    assert_eq!(summary["key_dist"], "hot");
    assert_eq!(summary["resolve_each"], false);
    assert_eq!(summary["actor_id"], "id-bench");
    assert_eq!(resolved_keys(&seen), ["bench"]);
    let calls = calls_per_actor(&seen);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls["id-bench"], 300);
}

#[test]
fn uniform_key_distribution_covers_every_actor() {
    let (summary, seen) = action_keys(
        "keys-uniform",
        &[
            "--key",
            "bench",
            "--keys",
            "8",
            "--key-dist",
            "uniform",
            "--requests",
            "2000",
            "-c",
            "4",
            "--threads",
            "2",
        ],
    );
    assert_eq!(summary["ok"], 2000);
    assert_eq!(summary["keys"], 8);
    assert_eq!(summary["key_dist"], "uniform");
    assert_eq!(summary["actor_id"], Value::Null);
    let expected: Vec<String> = (0..8).map(|i| format!("bench-{i}")).collect();
    assert_eq!(
        resolved_keys(&seen),
        expected,
        "each key resolved exactly once"
    );
    let calls = calls_per_actor(&seen);
    assert_eq!(calls.len(), 8, "{calls:?}");
    // 250 expected each; far looser than the binomial spread (sd ~15).
    assert!(
        calls.values().all(|&c| (150..=350).contains(&c)),
        "{calls:?}"
    );
    assert_eq!(calls.values().sum::<u64>(), 2000);
}

#[test]
fn zipf_key_distribution_favours_the_first_key() {
    let (summary, seen) = action_keys(
        "keys-zipf",
        &[
            "--keys",
            "20",
            "--key-dist",
            "zipf",
            "--requests",
            "4000",
            "-c",
            "2",
            "--seed",
            "11",
        ],
    );
    assert_eq!(summary["ok"], 4000);
    assert_eq!(summary["key_dist"], "zipf:0.99");
    assert_eq!(summary["seed"], 11);
    assert_eq!(resolved_keys(&seen).len(), 20);
    let calls = calls_per_actor(&seen);
    let (hottest, most) = calls.iter().max_by_key(|(_, c)| **c).unwrap();
    assert_eq!(hottest, "id-key-0", "{calls:?}");
    // Rank 1 of 20 at s = 0.99 gets about 28 % (uniform would be 5 %); rank 2 about 14 %.
    assert!(*most > 4000 * 20 / 100, "{calls:?}");
    assert!(calls["id-key-0"] > calls["id-key-1"], "{calls:?}");
    assert!(
        calls["id-key-1"] > calls.get("id-key-19").copied().unwrap_or(0),
        "{calls:?}"
    );
}

#[test]
fn key_options_are_checked() {
    let server = Server::start(Reply::RivetKeys);
    let endpoint = server.url("");
    let base = [
        "action",
        "--endpoint",
        endpoint.as_str(),
        "--actor",
        "counter",
        "--action",
        "increment",
        "-d",
        "1s",
    ];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        loadgen(&args)
    };
    let output = run(&["--keys", "4"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--key-dist uniform or zipf"));
    let output = run(&["--keys", "4", "--key-dist", "uniform", "--key-part", "a"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--key-part"));
    let output = run(&["--key-dist", "zipf:0"]);
    assert_eq!(output.status.code(), Some(2));
    let output = run(&["--max-in-flight", "4"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "--max-in-flight needs --rate"
    );
    let output = run(&["--rate", "100", "--pipeline", "4"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "--pipeline is closed-loop only"
    );
    assert!(server.seen().is_empty(), "nothing was sent for bad options");
}

/// Checks that on every load connection each call follows a `PUT /actors` and goes to the
/// actor that PUT named, in order (with `strict`, PUT and call alternate: nothing pipelined).
/// Returns the number of pairs.
fn check_pairs(seen: &[Request], setup_puts: usize, strict: bool) -> usize {
    let mut by_connection: std::collections::BTreeMap<u64, Vec<&Request>> = Default::default();
    for request in seen {
        by_connection
            .entry(request.connection)
            .or_default()
            .push(request);
    }
    let mut pairs = 0;
    let mut setup = 0;
    for requests in by_connection.values() {
        if requests.iter().all(|r| r.method == "PUT") && requests.len() <= setup_puts {
            setup += requests.len(); // the up-front resolution
            continue;
        }
        let mut unanswered = std::collections::VecDeque::new();
        for request in requests {
            match request.method.as_str() {
                "PUT" => {
                    assert_eq!(request.target, "/actors?namespace=default");
                    if strict {
                        assert!(unanswered.is_empty(), "two PUTs in a row: {requests:?}");
                    }
                    unanswered.push_back(body_key(&request.body));
                }
                "POST" => {
                    let key = unanswered.pop_front().expect("a call without its PUT");
                    assert_eq!(
                        request.target,
                        format!("/gateway/id-{key}/action/increment")
                    );
                    assert_eq!(request.body, r#"{"args":[1]}"#);
                    pairs += 1;
                }
                other => panic!("unexpected method {other}"),
            }
        }
    }
    assert_eq!(setup, setup_puts);
    pairs
}

#[test]
fn resolve_each_sends_put_then_post_pairs() {
    let (summary, seen) = action_keys(
        "resolve-each",
        &[
            "--keys",
            "3",
            "--key-dist",
            "uniform",
            "--resolve-each",
            "--requests",
            "200",
            "-c",
            "2",
        ],
    );
    assert_eq!(summary["resolve_each"], true);
    // A pair is one request and one latency sample.
    assert_eq!(summary["requests"], 200);
    assert_eq!(summary["ok"], 200);
    assert_eq!(summary["latency_us"]["count"], 200);
    assert_eq!(seen.len(), 3 + 2 * 200);
    assert_eq!(check_pairs(&seen, 3, true), 200);
}

#[test]
fn resolve_each_in_open_loop_pipelines_pairs() {
    let (summary, seen) = action_keys(
        "resolve-each-open",
        &[
            "--keys",
            "3",
            "--key-dist",
            "uniform",
            "--resolve-each",
            "--rate",
            "2000",
            "-c",
            "2",
            "-d",
            "500ms",
            "--max-in-flight",
            "4",
        ],
    );
    assert_eq!(summary["loop"], "open");
    let requests = summary["requests"].as_u64().unwrap();
    assert!((800..=1050).contains(&requests), "{summary}");
    let pairs = check_pairs(&seen, 3, false);
    assert!(
        pairs as u64 >= requests,
        "{pairs} pairs for {requests} requests"
    );
}
