//! The `pinion-demo` binary as a user runs it: readiness line, serving, clean stop on signals,
//! clear errors for bad flags.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spawn(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pinion-demo"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pinion-demo starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("pinion-demo listening on http://127.0.0.1:"),
        "readiness line: {line:?}"
    );
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    (child, url)
}

fn get(url: &str, path: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nconnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn stop_with(child: &mut Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit after {signal}: {status:?}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pinion-demo did not stop within 10 s of {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serves_then_stops_cleanly_on_sigterm_and_sigint() {
    for (signal, shards) in [("-TERM", "2"), ("-INT", "1")] {
        let (mut child, url) = spawn(&["--listen", "127.0.0.1:0", "--shards", shards]);
        assert!(url.contains("127.0.0.1:"));
        let response = get(&url, "/metadata");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("\"counter\""));
        stop_with(&mut child, signal);
    }
}

#[test]
fn base_path_flag() {
    let (mut child, url) = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--base-path",
        "/api/rivet",
    ]);
    assert!(get(&url, "/api/rivet/metadata").starts_with("HTTP/1.1 200"));
    assert!(get(&url, "/metadata").starts_with("HTTP/1.1 404"));
    stop_with(&mut child, "-TERM");
}

#[test]
fn bad_flags_fail_with_a_clear_message() {
    for (args, expected) in [
        (
            &["--shards", "0", "--listen", "127.0.0.1:0"][..],
            "at least 1",
        ),
        (
            &["--base-path", "api", "--listen", "127.0.0.1:0"][..],
            "base path",
        ),
        (&["--listen", "not-an-address"][..], "invalid"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_pinion-demo"))
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
