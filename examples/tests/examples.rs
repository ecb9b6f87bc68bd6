//! Runs every example binary end to end (server, self-driving client, stop) with 2 shards, and
//! checks its exit status and the lines that carry its results.

use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `binary` with `args` (plus `--shards 2`); returns its stdout after checking it exited 0.
fn run(binary: &str, args: &[&str]) -> String {
    let started = Instant::now();
    let output = Command::new(binary)
        .args(["--shards", "2"])
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {binary}: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{binary} exited with {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    // A run takes about a second. A cross-shard call whose wake-up is lost waits for the next
    // timer of its shard (the 30 s WebSocket heartbeat), which this catches.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{binary} took {:?} (a stalled cross-shard call?)\n{stdout}",
        started.elapsed()
    );
    stdout
}

/// Asserts that `stdout` has a line equal to `line` once trimmed.
fn has_line(stdout: &str, line: &str) {
    assert!(
        stdout.lines().any(|l| l.trim() == line),
        "no line {line:?} in:\n{stdout}"
    );
}

/// Asserts that `stdout` has a line starting with `prefix` once trimmed.
fn has_line_starting(stdout: &str, prefix: &str) {
    assert!(
        stdout.lines().any(|l| l.trim().starts_with(prefix)),
        "no line starting with {prefix:?} in:\n{stdout}"
    );
}

#[test]
fn chat_index() {
    let out = run(env!("CARGO_BIN_EXE_chat-index"), &[]);
    assert!(
        out.lines().any(
            |l| l.starts_with("chat-index listening on http://127.0.0.1:")
                && l.ends_with("(shards: 2)")
        ),
        "no listening line in:\n{out}"
    );
    for room in ["general", "random", "help"] {
        has_line_starting(&out, &format!("createRoom({room:?}): actor "));
    }
    has_line_starting(
        &out,
        "createRoom(\"general\") again: user/room_exists (400)",
    );
    has_line(&out, "post to general: carol: \"morning!\" -> message #3");
    has_line(&out, "rooms: 3");
    has_line(&out, "general: 3 messages, last \"carol: morning!\"");
    has_line(&out, "random: 2 messages, last \"alice: no\"");
    has_line(
        &out,
        "help: 1 message, last \"dave: how do I make a room?\"",
    );
    has_line(&out, "messages: 6");
    has_line(&out, "chat-index: server stopped");
}

#[test]
fn fan_out() {
    let out = run(env!("CARGO_BIN_EXE_fan-out"), &[]);
    has_line_starting(&out, "workers per shard: shard 0: ");
    for phase in [
        "cold       fanOut",
        "warm       fanOut",
        "sequential sequential",
    ] {
        has_line_starting(&out, &format!("{phase}: sum 333328333350000 | calls "));
    }
    has_line(&out, "sum: 333328333350000 (expected 333328333350000)");
    has_line(&out, "parts computed: 96 (32 workers x 3 runs)");
    has_line(&out, "fan-out: server stopped");

    // Other sizes, no delay; one worker is the degenerate fan-out.
    let out = run(
        env!("CARGO_BIN_EXE_fan-out"),
        &["--workers", "1", "--up-to", "10", "--delay-ms", "0"],
    );
    has_line(&out, "sum: 285 (expected 285)");
    has_line(&out, "parts computed: 3 (1 workers x 3 runs)");
    let out = run(
        env!("CARGO_BIN_EXE_fan-out"),
        &["--workers", "200", "--up-to", "1000", "--delay-ms", "1"],
    );
    has_line(&out, "sum: 332833500 (expected 332833500)");
    has_line(&out, "parts computed: 600 (200 workers x 3 runs)");
}

#[test]
fn sharding() {
    let out = run(env!("CARGO_BIN_EXE_sharding"), &[]);
    for hour in ["2026-11-27T13", "2026-11-27T14", "2026-11-27T15"] {
        // 600 events over 3 hours: 200 each; the line also says which shard.
        assert!(
            out.lines().any(|l| l
                .trim()
                .starts_with(&format!("metrics [{hour:?}] on shard "))
                && l.trim().ends_with(": 200 events")),
            "no metrics line for {hour} in:\n{out}"
        );
    }
    has_line(
        &out,
        "dashboard.hourly(2026-11-27T12..2026-11-27T17): 5 hours, 3 with events",
    );
    has_line(&out, "2026-11-27T12: count 0, sum 0, min None, max None");
    has_line(&out, "events: 600 (expected 600)");
    has_line_starting(&out, "event value sum: ");
    has_line_starting(&out, "increments per shard: shard 0: ");
    has_line(&out, "total: 1000 (expected 1000)");
    has_line(&out, "sharding: server stopped");
    let counter_lines = out
        .lines()
        .filter(|l| l.trim().starts_with("counter [\"page-views\", \"shard-"))
        .count();
    assert_eq!(counter_lines, 8, "{out}");
}

#[test]
fn bad_flags_fail() {
    for (binary, args) in [
        (env!("CARGO_BIN_EXE_fan-out"), &["--no-such-flag"][..]),
        (env!("CARGO_BIN_EXE_fan-out"), &["--workers", "0"][..]),
        (env!("CARGO_BIN_EXE_sharding"), &["--counter-keys", "0"][..]),
    ] {
        let output = Command::new(binary).args(args).output().unwrap();
        assert!(!output.status.success(), "{binary} {args:?} succeeded");
    }
}
