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
}

#[derive(Clone, Debug)]
struct Request {
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
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (count, log) = (count.clone(), log.clone());
                std::thread::spawn(move || serve(stream, reply, &count, &log));
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
fn serve(mut stream: TcpStream, reply: Reply, count: &AtomicU64, log: &Mutex<Vec<Request>>) {
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
        while let Some((request, used)) = parse_request(&pending) {
            pending.drain(..used);
            count.fetch_add(1, Ordering::SeqCst);
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
        Reply::Ok => fixed("200 OK", "hello"),
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
        Reply::Silent => return None,
    })
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
