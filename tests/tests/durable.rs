//! Durable actors end to end: state across clean restarts and `kill -9`, torn log tails, sleep
//! and wake, destroy, schedules across restarts, hook order, the output gate, re-sharding.
//!
//! Crash and restart tests run the demo server as a child process (`demo-server`, this package's
//! copy of `pinion-demo`) on a data directory under the system temp dir, and kill it for real.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use pinion_runtime::pinion_storage::{
    ActorEntry, ActorRecord, ScheduleEntry, Seq, Stats, Store, StoreFuture,
};
use pinion_runtime::{
    ActionCtx, ActionResult, Actions, Actor, ActorId, ActorInfo, ActorOptions, Config, Persist,
    PersistError, Registry, Server, Value, sys,
};
use pinion_tests::ws::Ws;
use pinion_tests::{
    Conn, Rivet, TempDir, connections_on_every_shard, start_with, still_open, test_config,
};
use serde_json::{Value as Json, json};

/// The demo server as a child process.
struct DemoProcess {
    child: Child,
    addr: SocketAddr,
    stderr: PathBuf,
}

impl DemoProcess {
    /// Starts it on a free port; waits for its "listening" line.
    fn start(data_dir: &Path, shards: usize, extra: &[&str]) -> DemoProcess {
        match DemoProcess::try_start(data_dir, shards, extra) {
            Ok(process) => process,
            Err(output) => panic!("the server did not start: {output}"),
        }
    }

    /// Starts it; on failure, what it printed.
    fn try_start(data_dir: &Path, shards: usize, extra: &[&str]) -> Result<DemoProcess, String> {
        let stderr = data_dir.with_file_name(format!(
            "{}.{}.log",
            data_dir.file_name().unwrap().to_string_lossy(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut child = Command::new(env!("CARGO_BIN_EXE_demo-server"))
            .args(["--listen", "127.0.0.1:0", "--shards", &shards.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--spin-us", "0"])
            .args(extra)
            .env("PINION_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn demo-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("pinion-demo listening on http://") {
                    let addr = rest.split_whitespace().next().unwrap().to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => Ok(DemoProcess {
                child,
                addr: addr.parse().unwrap(),
                stderr,
            }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                let log = std::fs::read_to_string(&stderr).unwrap_or_default();
                let _ = std::fs::remove_file(&stderr);
                Err(format!("{status}: {log}"))
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// `kill -9`: no chance to save anything.
    fn kill9(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let log = self.log();
        let _ = std::fs::remove_file(&self.stderr);
        log
    }

    /// SIGTERM and wait: a clean stop (every changed actor is saved).
    fn stop(mut self) -> String {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "clean stop failed: {status}: {}",
                    self.log()
                );
                break;
            }
            assert!(Instant::now() < deadline, "the server did not stop");
            thread::sleep(Duration::from_millis(10));
        }
        let log = self.log();
        let _ = std::fs::remove_file(&self.stderr);
        log
    }
}

fn call(rivet: &mut Rivet, id: &str, action: &str, args: Json) -> Json {
    rivet.call(id, action, args)
}

/// Calls `action` until `done(output)`, at most `within`.
fn poll(
    rivet: &mut Rivet,
    id: &str,
    action: &str,
    within: Duration,
    done: impl Fn(&Json) -> bool,
) -> Json {
    let deadline = Instant::now() + within;
    loop {
        let output = call(rivet, id, action, json!([]));
        if done(&output) || Instant::now() >= deadline {
            return output;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A small deterministic generator for the crash test's timings.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// What one writer of the crash test saw.
#[derive(Default, Clone, Copy)]
struct Seen {
    /// The highest count the server acknowledged as durable.
    acked: i64,
    /// Increments sent (acknowledged or not).
    sent: i64,
}

/// Increments `(actor, action)` in a loop until `stop`, recording acknowledgements.
fn writer(addr: SocketAddr, id: String, action: &'static str, stop: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    let Ok(stream) = std::net::TcpStream::connect(addr) else {
        return seen;
    };
    drop(stream);
    let mut conn = Conn::open(addr);
    let path = format!("/gateway/{id}/action/{action}");
    while !stop.load(Ordering::Relaxed) {
        seen.sent += 1;
        match conn.try_request(
            "POST",
            &path,
            &[("content-type", "application/json")],
            br#"{"args":[1]}"#,
        ) {
            Ok(reply) if reply.status == 200 => {
                let count = reply.json()["output"].as_i64().unwrap();
                assert!(
                    count > seen.acked,
                    "counts must increase: {count} after {}",
                    seen.acked
                );
                seen.acked = count;
            }
            Ok(reply) => panic!("{action} failed: {} {}", reply.status, reply.text()),
            Err(_) => break,
        }
    }
    seen
}

/// Appends a torn record (a header that promises more bytes than follow, bad checksum) to the
/// newest segment of shard 0: what a crash in the middle of a write leaves.
fn tear_tail(data_dir: &Path, shards: usize) {
    let dir = data_dir.join(format!("shard-0-of-{shards}"));
    let newest = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max()
        .expect("a segment");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    let len = file.metadata().unwrap().len();
    let pad = (8 - len % 8) % 8;
    let mut torn = vec![0u8; pad as usize];
    torn.extend_from_slice(&0xdead_beef_u32.to_le_bytes()); // checksum
    torn.extend_from_slice(b"PNRC");
    torn.extend_from_slice(&1u16.to_le_bytes());
    torn.extend_from_slice(&3u16.to_le_bytes()); // State
    torn.extend_from_slice(&4096u32.to_le_bytes()); // promises 4 KiB
    torn.extend_from_slice(&u64::MAX.to_le_bytes());
    torn.extend_from_slice(&[0x5a; 100]);
    file.write_all(&torn).unwrap();
    file.sync_all().unwrap();
}

/// The crash test: writers increment durable counters (`durableCounter.increment`, whose reply
/// waits for the disk, and `counter.incrementSaved`, which awaits `save_state`) while the server
/// is killed with SIGKILL at a random moment; after each restart every acknowledged count must be
/// there (and nothing beyond what was sent). Every third cycle also leaves a torn record at the
/// end of the log, which recovery must cut off.
#[test]
fn kill_9_during_sustained_writes_loses_no_acknowledged_write() {
    const CYCLES: usize = 8;
    const SHARDS: usize = 2;
    let dir = TempDir::new("crash");
    let keys: Vec<(String, &'static str, &'static str)> = (0..6)
        .map(|i| (format!("d-{i}"), "durableCounter", "increment"))
        .chain((0..4).map(|i| (format!("s-{i}"), "counter", "incrementSaved")))
        .collect();
    let mut expected: BTreeMap<String, Seen> = BTreeMap::new();
    let mut rng = Lcg(0x5eed);
    for cycle in 0..CYCLES {
        let server = DemoProcess::start(&dir.0, SHARDS, &[]);
        let addr = server.addr;
        let mut rivet = Rivet::connect(addr);
        let ids: Vec<String> = keys
            .iter()
            .map(|(key, name, _)| rivet.get_or_create(name, key))
            .collect();
        // After the restart: every acknowledged write is there, nothing that was never sent.
        for ((key, name, _), id) in keys.iter().zip(&ids) {
            let count = call(&mut rivet, id, "getCount", json!([]))
                .as_i64()
                .unwrap();
            let seen = expected.get(key).copied().unwrap_or_default();
            assert!(
                count >= seen.acked && count <= seen.sent,
                "cycle {cycle}: {name} {key} has {count}, acknowledged {}, sent {}",
                seen.acked,
                seen.sent
            );
            // Continue from what survived.
            expected.insert(
                key.clone(),
                Seen {
                    acked: count,
                    sent: count,
                },
            );
        }
        drop(rivet);
        let stop = AtomicBool::new(false);
        let results: Vec<Seen> = thread::scope(|scope| {
            let workers: Vec<_> = keys
                .iter()
                .zip(&ids)
                .map(|((_, _, action), id)| {
                    let stop = &stop;
                    let id = id.clone();
                    scope.spawn(move || writer(addr, id, action, stop))
                })
                .collect();
            thread::sleep(Duration::from_millis(150 + rng.below(350)));
            let log = server.kill9();
            assert!(!log.contains("panicked"), "{log}");
            stop.store(true, Ordering::Relaxed);
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut total = 0;
        for ((key, _, _), seen) in keys.iter().zip(results) {
            let before = expected[key];
            total += seen.acked.max(before.acked) - before.acked;
            expected.insert(
                key.clone(),
                Seen {
                    acked: seen.acked.max(before.acked),
                    sent: before.sent + seen.sent,
                },
            );
        }
        assert!(total > 0, "cycle {cycle}: no write was acknowledged");
        if cycle % 3 == 2 {
            tear_tail(&dir.0, SHARDS);
        }
    }
    // The last check, and the torn tail's warning.
    let server = DemoProcess::start(&dir.0, SHARDS, &[]);
    let mut rivet = Rivet::connect(server.addr);
    for (key, name, _) in &keys {
        let id = rivet.get_or_create(name, key);
        let count = call(&mut rivet, &id, "getCount", json!([]))
            .as_i64()
            .unwrap();
        let seen = expected[key];
        assert!(count >= seen.acked && count <= seen.sent, "{key}: {count}");
    }
    drop(rivet);
    let log = server.stop();
    assert!(!log.contains("ERROR"), "{log}");
}

/// A torn record at the end of the log is cut off at start (with a warning) and everything
/// before it is read back.
#[test]
fn a_torn_log_tail_is_recovered() {
    let dir = TempDir::new("torn");
    let server = DemoProcess::start(&dir.0, 1, &[]);
    let mut rivet = Rivet::connect(server.addr);
    let id = rivet.get_or_create("durableCounter", "torn");
    for i in 1..=20 {
        assert_eq!(call(&mut rivet, &id, "increment", json!([1])), json!(i));
    }
    drop(rivet);
    server.kill9();
    tear_tail(&dir.0, 1);
    let server = DemoProcess::start(&dir.0, 1, &[]);
    let mut rivet = Rivet::connect(server.addr);
    let id = rivet.get_or_create("durableCounter", "torn");
    assert_eq!(call(&mut rivet, &id, "getCount", json!([])), json!(20));
    assert_eq!(call(&mut rivet, &id, "increment", json!([1])), json!(21));
    drop(rivet);
    let log = server.stop();
    assert!(log.contains("torn"), "no torn-tail warning: {log}");
    // And the log it wrote after the cut is sound too.
    let server = DemoProcess::start(&dir.0, 1, &[]);
    let mut rivet = Rivet::connect(server.addr);
    let id = rivet.get_or_create("durableCounter", "torn");
    assert_eq!(call(&mut rivet, &id, "getCount", json!([])), json!(21));
    drop(rivet);
    server.stop();
}

/// A clean stop saves every changed actor (even with a long save interval); a schedule set before
/// the restart fires after it; a destroyed actor stays destroyed.
#[test]
fn clean_restart_keeps_state_schedules_and_destroys() {
    let dir = TempDir::new("restart");
    let server = DemoProcess::start(&dir.0, 2, &["--save-interval-ms", "600000"]);
    let mut rivet = Rivet::connect(server.addr);
    let counter = rivet.get_or_create("counter", "kept");
    for _ in 0..5 {
        call(&mut rivet, &counter, "increment", json!([2]));
    }
    let reminder = rivet.get_or_create("reminder", "later");
    assert_eq!(
        call(
            &mut rivet,
            &reminder,
            "setReminder",
            json!(["after restart", 1500])
        ),
        json!(true)
    );
    let pending = call(&mut rivet, &reminder, "pending", json!([]));
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    let doomed = rivet.get_or_create("lifecycle", "doomed");
    assert_eq!(
        call(&mut rivet, &doomed, "destroyMe", json!([])),
        json!(true)
    );
    drop(rivet);
    let log = server.stop();
    assert!(!log.contains("ERROR"), "{log}");

    let server = DemoProcess::start(&dir.0, 2, &[]);
    let mut rivet = Rivet::connect(server.addr);
    let counter = rivet.get_or_create("counter", "kept");
    assert_eq!(call(&mut rivet, &counter, "getCount", json!([])), json!(10));
    let reminder = rivet.get_or_create("reminder", "later");
    let sent = poll(
        &mut rivet,
        &reminder,
        "sent",
        Duration::from_secs(10),
        |sent| sent == &json!(["after restart"]),
    );
    assert_eq!(sent, json!(["after restart"]));
    assert_eq!(call(&mut rivet, &reminder, "pending", json!([])), json!([]));
    let found = rivet
        .conn
        .get("/actors?name=lifecycle&key=doomed&namespace=default");
    assert_eq!(found.json(), json!({"actors": []}));
    drop(rivet);
    server.stop();
}

/// `--shards` changed between runs: the server refuses to start (nothing orphaned), and
/// `--reshard` moves every actor to the new layout.
#[test]
fn a_shard_count_change_is_refused_until_resharded() {
    let dir = TempDir::new("reshard");
    let server = DemoProcess::start(&dir.0, 1, &[]);
    let mut rivet = Rivet::connect(server.addr);
    for i in 0..20 {
        let id = rivet.get_or_create("counter", &format!("r-{i}"));
        call(&mut rivet, &id, "increment", json!([i]));
    }
    drop(rivet);
    server.stop();

    let refused = DemoProcess::try_start(&dir.0, 2, &[])
        .err()
        .expect("refused");
    assert!(refused.contains("re-shard"), "{refused}");

    let server = DemoProcess::start(&dir.0, 2, &["--reshard"]);
    let mut rivet = Rivet::connect(server.addr);
    for i in 0..20 {
        let id = rivet.get_or_create("counter", &format!("r-{i}"));
        assert_eq!(call(&mut rivet, &id, "getCount", json!([])), json!(i));
    }
    drop(rivet);
    server.stop();
}

fn config(shards: usize, data_dir: Option<&Path>, sleep_ms: u64) -> Config {
    Config {
        shards: Some(shards),
        data_dir: data_dir.map(Path::to_path_buf),
        sleep_timeout: Duration::from_millis(sleep_ms),
        ..test_config()
    }
}

/// Runs `test` in-process with memory storage and with the log, on 1 and 2 shards.
fn on_each_store(sleep_ms: u64, test: impl Fn(SocketAddr)) {
    for shards in [1, 2] {
        let server = start_with(config(shards, None, sleep_ms));
        test(server.local_addr());
        server.stop().unwrap();
        let dir = TempDir::new("store");
        let server = start_with(config(shards, Some(&dir.0), sleep_ms));
        test(server.local_addr());
        server.stop().unwrap();
    }
}

#[test]
fn sleep_and_wake_keep_state_and_rebuild_vars() {
    on_each_store(300, |addr| {
        let mut rivet = Rivet::connect(addr);
        let id = rivet.get_or_create("sleeper", "s");
        assert_eq!(
            call(&mut rivet, &id, "bump", json!([])),
            json!({"state": 1, "vars": 1})
        );
        assert_eq!(
            call(&mut rivet, &id, "bump", json!([])),
            json!({"state": 2, "vars": 2})
        );
        assert_eq!(
            call(&mut rivet, &id, "read", json!([])),
            json!({"state": 2, "vars": 2, "wakes": 1})
        );
        // c.sleep(): the next call wakes it, state kept, vars rebuilt, on_wake ran again.
        assert_eq!(call(&mut rivet, &id, "sleepNow", json!([])), json!(true));
        let woke = poll(&mut rivet, &id, "read", Duration::from_secs(5), |r| {
            r["wakes"] == 2
        });
        assert_eq!(woke, json!({"state": 2, "vars": 0, "wakes": 2}));
        assert_eq!(
            call(&mut rivet, &id, "bump", json!([])),
            json!({"state": 3, "vars": 1})
        );
        // Idle for longer than the sleep timeout: asleep, then woken by the next call.
        thread::sleep(Duration::from_millis(900));
        assert_eq!(
            call(&mut rivet, &id, "read", json!([])),
            json!({"state": 3, "vars": 0, "wakes": 3})
        );
    });
}

#[test]
fn an_actor_with_an_open_connection_does_not_sleep() {
    on_each_store(200, |addr| {
        let mut rivet = Rivet::connect(addr);
        let id = rivet.get_or_create("sleeper", "connected");
        call(&mut rivet, &id, "bump", json!([]));
        let (_, mut ws) = Ws::connect(
            addr,
            &format!("/gateway/{id}/connect"),
            Some("rivet,rivet_encoding.json"),
        );
        let init = ws.read_json();
        assert_eq!(init["body"]["tag"], "Init", "{init}");
        thread::sleep(Duration::from_millis(700));
        assert_eq!(
            call(&mut rivet, &id, "read", json!([])),
            json!({"state": 1, "vars": 1, "wakes": 1}),
            "slept while connected"
        );
        ws.send_close(1000, "");
        thread::sleep(Duration::from_millis(700));
        assert_eq!(
            call(&mut rivet, &id, "read", json!([])),
            json!({"state": 1, "vars": 0, "wakes": 2}),
            "did not sleep once the connection closed"
        );
    });
}

#[test]
fn destroy_frees_the_key() {
    on_each_store(30_000, |addr| {
        let mut rivet = Rivet::connect(addr);
        let id = rivet.get_or_create("lifecycle", "gone");
        assert_eq!(
            call(&mut rivet, &id, "events", json!([])),
            json!(["onCreate", "onWake", "onConnect"])
        );
        assert_eq!(call(&mut rivet, &id, "destroyMe", json!([])), json!(true));
        // Destruction follows the reply; calls meanwhile wait for it, then find nothing.
        let reply = rivet.action(&id, "events", json!([]));
        assert_eq!(reply.status, 404, "{}", reply.text());
        assert_eq!(reply.json()["code"], "not_found");
        let found = rivet
            .conn
            .get("/actors?name=lifecycle&key=gone&namespace=default");
        assert_eq!(found.json(), json!({"actors": []}));
        let lookup = rivet.conn.get(&format!("/actors?actor_ids={id}"));
        assert_eq!(lookup.json(), json!({"actors": []}));
        // getOrCreate makes a fresh actor: on_create runs again, the state is new.
        let again = rivet.get_or_create("lifecycle", "gone");
        assert_eq!(
            call(&mut rivet, &again, "events", json!([])),
            json!(["onCreate", "onWake", "onConnect"])
        );
    });
}

#[test]
fn schedules_fire_in_order_and_can_be_listed_and_cancelled() {
    on_each_store(30_000, |addr| {
        let mut rivet = Rivet::connect(addr);
        let id = rivet.get_or_create("reminder", "r");
        call(&mut rivet, &id, "setReminder", json!(["second", 250]));
        call(&mut rivet, &id, "setReminder", json!(["first", 50]));
        let far = call(
            &mut rivet,
            &id,
            "remindAt",
            json!(["never", 4_102_444_800_000u64]),
        );
        let pending = call(&mut rivet, &id, "pending", json!([]));
        let ids: Vec<&str> = pending
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 3, "{pending}");
        assert_eq!(
            ids[2],
            far.as_str().unwrap(),
            "listed by due time: {pending}"
        );
        let sent = poll(&mut rivet, &id, "sent", Duration::from_secs(5), |s| {
            s.as_array().unwrap().len() == 2
        });
        assert_eq!(sent, json!(["first", "second"]));
        assert_eq!(call(&mut rivet, &id, "cancel", json!([far])), json!(true));
        assert_eq!(call(&mut rivet, &id, "cancel", json!([far])), json!(false));
        assert_eq!(call(&mut rivet, &id, "pending", json!([])), json!([]));
    });
}

/// A schedule wakes a sleeping actor, and its event reaches a connection subscribed later.
#[test]
fn a_schedule_wakes_a_sleeping_actor() {
    let dir = TempDir::new("wake-schedule");
    let server = start_with(config(1, Some(&dir.0), 100));
    let mut rivet = Rivet::connect(server.local_addr());
    let id = rivet.get_or_create("reminder", "sleepy");
    call(&mut rivet, &id, "setReminder", json!(["wake up", 600]));
    // Asleep well before the schedule is due (sleep timeout 100 ms).
    let sent = poll(&mut rivet, &id, "sent", Duration::from_secs(5), |s| {
        s == &json!(["wake up"])
    });
    assert_eq!(sent, json!(["wake up"]));
    drop(rivet);
    server.stop().unwrap();
}

/// The output gate over a connection: the event and the reply both arrive, event first.
#[test]
fn durable_before_reply_over_a_connection() {
    let dir = TempDir::new("gate");
    let server = start_with(config(2, Some(&dir.0), 30_000));
    let addr = server.local_addr();
    let mut rivet = Rivet::connect(addr);
    let id = rivet.get_or_create("durableCounter", "ws");
    let (_, mut ws) = Ws::connect(
        addr,
        &format!("/gateway/{id}/connect"),
        Some("rivet,rivet_encoding.json"),
    );
    assert_eq!(ws.read_json()["body"]["tag"], "Init");
    ws.send_text(
        &json!({"body": {"tag": "SubscriptionRequest", "val": {"eventName": "count", "subscribe": true}}})
            .to_string(),
    );
    for i in 0..3u64 {
        ws.send_text(
            &json!({"body": {"tag": "ActionRequest", "val": {"id": ["$BigInt", i.to_string()], "name": "increment", "args": [5]}}})
                .to_string(),
        );
        let event = ws.read_json();
        assert_eq!(
            event,
            json!({"body": {"tag": "Event", "val": {"name": "count", "args": [5 * (i + 1)]}}})
        );
        let reply = ws.read_json();
        assert_eq!(
            reply,
            json!({"body": {"tag": "ActionResponse", "val": {"id": ["$BigInt", i.to_string()], "output": 5 * (i + 1)}}})
        );
    }
    drop(rivet);
    server.stop().unwrap();
}

// ---- Hook order, with an actor of the test's own ----

static HOOKS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn hook(name: &str, key: &[String]) {
    HOOKS
        .lock()
        .unwrap()
        .push(format!("{}:{name}", key.join("/")));
}

fn hooks_of(key: &str) -> Vec<String> {
    let prefix = format!("{key}:");
    HOOKS
        .lock()
        .unwrap()
        .iter()
        .filter_map(|h| h.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

struct Hooked;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct HookedState {
    n: i64,
}

impl Actor for Hooked {
    const NAME: &'static str = "hooked";
    type State = HookedState;
    type Vars = ();
    type ConnState = ();
    const OBSERVES_STATE: bool = true;
    const OPTIONS: ActorOptions = ActorOptions {
        sleep_timeout: Some(Duration::from_secs(3600)),
        ..ActorOptions::DEFAULT
    };

    fn create_state(info: &ActorInfo, _: Option<Value>) -> ActionResult<HookedState> {
        hook("create_state", info.key());
        Ok(HookedState { n: 0 })
    }
    fn create_vars(info: &ActorInfo, _: &HookedState) {
        hook("create_vars", info.key());
    }
    fn on_create(c: &mut ActionCtx<'_, Self>) -> ActionResult<()> {
        hook("on_create", c.key());
        Ok(())
    }
    fn on_wake(c: &mut ActionCtx<'_, Self>) -> ActionResult<()> {
        hook("on_wake", c.key());
        Ok(())
    }
    fn on_sleep(c: &mut ActionCtx<'_, Self>) {
        hook("on_sleep", c.key());
    }
    fn on_destroy(c: &mut ActionCtx<'_, Self>) {
        hook("on_destroy", c.key());
    }
    fn on_state_change(c: &mut ActionCtx<'_, Self>) {
        let line = format!("on_state_change({})", c.state.n);
        hook(&line, c.key());
    }
    fn actions(actions: &mut Actions<Self>) {
        actions
            .action("add", |c, (n,): (i64,)| {
                c.state.n += n;
                Ok(c.state.n)
            })
            .action("get", |c, ()| Ok(c.state.n))
            .action("sleep", |c, ()| {
                c.sleep();
                Ok(())
            })
            .action("destroy", |c, ()| {
                c.destroy();
                Ok(())
            });
    }
}

#[test]
fn hooks_run_in_order_across_sleep_wake_and_destroy() {
    let dir = TempDir::new("hooks");
    let server = Server::start(
        Registry::new().register::<Hooked>(),
        config(2, Some(&dir.0), 30_000),
    )
    .unwrap();
    let mut rivet = Rivet::connect(server.local_addr());
    let id = rivet.get_or_create("hooked", "h");
    assert_eq!(
        hooks_of("h"),
        ["create_state", "create_vars", "on_create", "on_wake"]
    );
    assert_eq!(call(&mut rivet, &id, "add", json!([2])), json!(2));
    assert_eq!(call(&mut rivet, &id, "get", json!([])), json!(2));
    assert_eq!(call(&mut rivet, &id, "add", json!([0])), json!(2));
    assert_eq!(call(&mut rivet, &id, "add", json!([3])), json!(5));
    call(&mut rivet, &id, "sleep", json!([]));
    thread::sleep(Duration::from_millis(200));
    assert_eq!(call(&mut rivet, &id, "get", json!([])), json!(5));
    call(&mut rivet, &id, "destroy", json!([]));
    let reply = rivet.action(&id, "get", json!([]));
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert_eq!(
        hooks_of("h"),
        [
            "create_state",
            "create_vars",
            "on_create",
            "on_wake",
            // Only changes count: get and add(0) leave the snapshot as it was.
            "on_state_change(2)",
            "on_state_change(5)",
            "on_sleep",
            "create_vars",
            "on_wake",
            "on_destroy",
        ]
    );
    drop(rivet);
    server.stop().unwrap();
}

// ---- Sleeping with connections open, when the type allows it ----

struct Drowsy;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct DrowsyState {
    starts: i64,
}

impl Actor for Drowsy {
    const NAME: &'static str = "drowsy";
    type State = DrowsyState;
    type Vars = ();
    type ConnState = ();
    const OPTIONS: ActorOptions = ActorOptions {
        sleep_timeout: Some(Duration::from_millis(200)),
        sleep_with_conns: true,
        ..ActorOptions::DEFAULT
    };

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<DrowsyState> {
        Ok(DrowsyState { starts: 0 })
    }
    fn create_vars(_: &ActorInfo, _: &DrowsyState) {}
    fn on_wake(c: &mut ActionCtx<'_, Self>) -> ActionResult<()> {
        c.state.starts += 1;
        Ok(())
    }
    fn actions(actions: &mut Actions<Self>) {
        actions.action("starts", |c, ()| Ok(c.state.starts));
    }
}

/// `sleep_with_conns`: an idle actor sleeps although a connection is open; the connection is
/// closed with 1000 and no reason, as the reference does (the client reconnects, which wakes it).
#[test]
fn sleep_with_conns_closes_the_connections() {
    let dir = TempDir::new("drowsy");
    let server = Server::start(
        Registry::new().register::<Drowsy>(),
        config(2, Some(&dir.0), 30_000),
    )
    .unwrap();
    let addr = server.local_addr();
    let mut rivet = Rivet::connect(addr);
    let id = rivet.get_or_create("drowsy", "d");
    assert_eq!(call(&mut rivet, &id, "starts", json!([])), json!(1));
    let (_, mut ws) = Ws::connect(
        addr,
        &format!("/gateway/{id}/connect"),
        Some("rivet,rivet_encoding.json"),
    );
    assert_eq!(ws.read_json()["body"]["tag"], "Init");
    let (code, reason) = ws.expect_close();
    assert_eq!((code, reason.as_str()), (Some(1000), ""));
    assert_eq!(call(&mut rivet, &id, "starts", json!([])), json!(2));
    drop(rivet);
    server.stop().unwrap();
}

/// `c.sleep()` from an action over a connection: the action is answered, then the connection is
/// closed with 1000 (the client reconnects), and every change made before is kept.
#[test]
fn sleep_requested_over_a_connection_answers_and_keeps_state() {
    on_each_store(30_000, |addr| {
        let mut rivet = Rivet::connect(addr);
        let id = rivet.get_or_create("sleeper", "ws-sleep");
        let (_, mut ws) = Ws::connect(
            addr,
            &format!("/gateway/{id}/connect"),
            Some("rivet,rivet_encoding.json"),
        );
        assert_eq!(ws.read_json()["body"]["tag"], "Init");
        for (i, action) in ["bump", "bump", "sleepNow"].iter().enumerate() {
            ws.send_text(
                &json!({"body": {"tag": "ActionRequest", "val": {"id": ["$BigInt", i.to_string()], "name": action, "args": []}}})
                    .to_string(),
            );
        }
        let outputs: Vec<Json> = (0..3)
            .map(|_| ws.read_json()["body"]["val"]["output"].clone())
            .collect();
        assert_eq!(
            outputs,
            [
                json!({"state": 1, "vars": 1}),
                json!({"state": 2, "vars": 2}),
                json!(true)
            ]
        );
        let (code, _) = ws.expect_close();
        assert_eq!(code, Some(1000));
        assert_eq!(
            call(&mut rivet, &id, "read", json!([])),
            json!({"state": 2, "vars": 0, "wakes": 2})
        );
    });
}

// ---- The output gate while saves wait for the store ----

/// Set: [`HeldSaves`] holds every state save of [`HELD_ACTOR`] back (in call order) until it is
/// cleared, as a store under admission back-pressure does.
static HOLD_SAVES: AtomicBool = AtomicBool::new(false);
/// The actor whose saves [`HOLD_SAVES`] holds (tests of this binary run at once, each on its
/// own actor).
static HELD_ACTOR: AtomicU64 = AtomicU64::new(0);
/// [`HeldSaves`] fails every state save of this actor (0: none) with an I/O error.
static FAILING_ACTOR: AtomicU64 = AtomicU64::new(0);
/// What the injected I/O error says: it must never reach a client.
const INJECTED_ERROR: &str = "injected: /var/lib/secret/segment-7 is on fire";
/// Saves [`HeldSaves`] has held back so far.
static SAVES_HELD: AtomicUsize = AtomicUsize::new(0);
/// [`HeldSaves`] holds every `durable` wait (a flush at stop, say) of the store that holds this
/// actor (0: none) until it is cleared: that shard then stays in its stop's last step.
static HOLD_FLUSH_OF: AtomicU64 = AtomicU64::new(0);
/// `durable` waits [`HOLD_FLUSH_OF`] has held so far.
static FLUSHES_HELD: AtomicUsize = AtomicUsize::new(0);
/// `racer.bump` calls that have changed the state so far.
static BUMPS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The first `racer.bump` of a pair, waiting for the second (on the shard's thread).
    static PAIR_WAITER: std::cell::RefCell<Option<std::task::Waker>> =
        const { std::cell::RefCell::new(None) };
}

/// A store that holds state saves back while [`HOLD_SAVES`] is set, then passes them on in
/// call order, and fails those of [`FAILING_ACTOR`]; everything else goes straight through.
struct HeldSaves {
    inner: Rc<dyn Store>,
    issued: Cell<u64>,
    served: Cell<u64>,
}

impl HeldSaves {
    fn wrap(inner: Rc<dyn Store>) -> Rc<dyn Store> {
        Rc::new(HeldSaves {
            inner,
            issued: Cell::new(0),
            served: Cell::new(0),
        })
    }
}

impl Store for HeldSaves {
    fn load_directory(&mut self) -> Vec<ActorRecord> {
        Rc::get_mut(&mut self.inner)
            .map(|store| store.load_directory())
            .unwrap_or_default()
    }
    fn actor(&self, id: u64) -> Option<ActorEntry> {
        self.inner.actor(id)
    }
    fn for_each_actor(&self, f: &mut dyn FnMut(u64, &ActorEntry)) {
        self.inner.for_each_actor(f)
    }
    fn read_actor(&self, id: u64) -> StoreFuture<'_, io::Result<Option<ActorRecord>>> {
        self.inner.read_actor(id)
    }
    fn put_actor<'a>(&'a self, record: &'a ActorRecord) -> StoreFuture<'a, io::Result<Seq>> {
        self.inner.put_actor(record)
    }
    fn read_state(&self, id: u64) -> StoreFuture<'_, io::Result<Option<Vec<u8>>>> {
        self.inner.read_state(id)
    }
    fn save_state<'a>(&'a self, id: u64, snapshot: &'a [u8]) -> StoreFuture<'a, io::Result<Seq>> {
        if FAILING_ACTOR.load(Ordering::SeqCst) == id {
            return StoreFuture::ready(Err(io::Error::other(INJECTED_ERROR)));
        }
        let ticket = self.issued.get();
        let hold = HOLD_SAVES.load(Ordering::SeqCst) && HELD_ACTOR.load(Ordering::SeqCst) == id;
        if !hold && self.served.get() == ticket {
            return self.inner.save_state(id, snapshot);
        }
        self.issued.set(ticket + 1);
        SAVES_HELD.fetch_add(1, Ordering::SeqCst);
        StoreFuture::boxed(async move {
            while HOLD_SAVES.load(Ordering::SeqCst) || self.served.get() != ticket {
                sys::sleep(Duration::from_millis(1)).await;
            }
            // The inner store takes the write in order when it is called, before any await.
            let saved = self.inner.save_state(id, snapshot);
            self.served.set(ticket + 1);
            saved.await
        })
    }
    fn delete_state(&self, id: u64) -> StoreFuture<'_, io::Result<Seq>> {
        self.inner.delete_state(id)
    }
    fn put_schedule<'a>(
        &'a self,
        actor: u64,
        schedule: u64,
        due_ms: u64,
        payload: &'a [u8],
    ) -> StoreFuture<'a, io::Result<Seq>> {
        self.inner.put_schedule(actor, schedule, due_ms, payload)
    }
    fn delete_schedule(&self, actor: u64, schedule: u64) -> StoreFuture<'_, io::Result<Seq>> {
        self.inner.delete_schedule(actor, schedule)
    }
    fn due_schedules(&self, now_ms: u64, limit: usize) -> Vec<ScheduleEntry> {
        self.inner.due_schedules(now_ms, limit)
    }
    fn next_due_ms(&self) -> Option<u64> {
        self.inner.next_due_ms()
    }
    fn schedules_of(&self, actor: u64) -> Vec<ScheduleEntry> {
        self.inner.schedules_of(actor)
    }
    fn schedule(&self, actor: u64, schedule: u64) -> Option<ScheduleEntry> {
        self.inner.schedule(actor, schedule)
    }
    fn read_schedule(
        &self,
        actor: u64,
        schedule: u64,
    ) -> StoreFuture<'_, io::Result<Option<Vec<u8>>>> {
        self.inner.read_schedule(actor, schedule)
    }
    fn put_meta<'a>(
        &'a self,
        actor: u64,
        key: &'a [u8],
        value: &'a [u8],
    ) -> StoreFuture<'a, io::Result<Seq>> {
        self.inner.put_meta(actor, key, value)
    }
    fn delete_meta<'a>(&'a self, actor: u64, key: &'a [u8]) -> StoreFuture<'a, io::Result<Seq>> {
        self.inner.delete_meta(actor, key)
    }
    fn meta_keys(&self, actor: u64) -> Vec<Vec<u8>> {
        self.inner.meta_keys(actor)
    }
    fn read_meta<'a>(
        &'a self,
        actor: u64,
        key: &'a [u8],
    ) -> StoreFuture<'a, io::Result<Option<Vec<u8>>>> {
        self.inner.read_meta(actor, key)
    }
    fn durable(&self, seq: Seq) -> StoreFuture<'_, io::Result<()>> {
        let held = |store: &HeldSaves| {
            let actor = HOLD_FLUSH_OF.load(Ordering::SeqCst);
            actor != 0 && store.inner.actor(actor).is_some()
        };
        if !held(self) {
            return self.inner.durable(seq);
        }
        FLUSHES_HELD.fetch_add(1, Ordering::SeqCst);
        StoreFuture::boxed(async move {
            while held(self) {
                sys::sleep(Duration::from_millis(1)).await;
            }
            self.inner.durable(seq).await
        })
    }
    fn last_seq(&self) -> Seq {
        self.inner.last_seq()
    }
    fn durable_seq(&self) -> Seq {
        self.inner.durable_seq()
    }
    fn stats(&self) -> Option<Stats> {
        self.inner.stats()
    }
    fn close(&self) -> StoreFuture<'_, io::Result<()>> {
        self.inner.close()
    }
}

/// Behind the output gate; `bump` changes the state, then waits until the other `bump` of its
/// pair has changed it too, so that both reach the gate together and whichever saves first
/// writes both changes.
struct Racer;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct RacerState {
    n: i64,
}

impl Actor for Racer {
    const NAME: &'static str = "racer";
    type State = RacerState;
    type Vars = ();
    type ConnState = ();
    const OPTIONS: ActorOptions = ActorOptions {
        durable_before_reply: true,
        sleep_timeout: Some(Duration::from_secs(3600)),
        ..ActorOptions::DEFAULT
    };

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<RacerState> {
        Ok(RacerState { n: 0 })
    }
    fn create_vars(_: &ActorInfo, _: &RacerState) {}
    fn actions(actions: &mut Actions<Self>) {
        actions
            .action_async("bump", |c, ()| async move {
                let n = c.state_mut(|s| {
                    s.n += 1;
                    s.n
                });
                if BUMPS.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                    // The first of the pair waits for the second.
                    let mut waiting = false;
                    std::future::poll_fn(|cx| {
                        if std::mem::replace(&mut waiting, true) {
                            return Poll::Ready(());
                        }
                        PAIR_WAITER.with(|w| *w.borrow_mut() = Some(cx.waker().clone()));
                        Poll::Pending
                    })
                    .await;
                } else {
                    // The second wakes it and lets it finish first: both replies then wait
                    // at the output gate, and whichever saves first holds both changes.
                    if let Some(waker) = PAIR_WAITER.with(|w| w.borrow_mut().take()) {
                        waker.wake();
                    }
                    let mut yielded = false;
                    std::future::poll_fn(|cx| {
                        if std::mem::replace(&mut yielded, true) {
                            return Poll::Ready(());
                        }
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    })
                    .await;
                }
                Ok(n)
            })
            .action("set", |c, (n,): (i64,)| {
                c.state.n = n;
                Ok(n)
            })
            .action_async("setSaved", |c, (n,): (i64,)| async move {
                c.state_mut(|s| s.n = n);
                c.save_state().await?;
                Ok(n)
            })
            .action("get", |c, ()| Ok(c.state.n));
    }
}

/// A server of [`Racer`] on `dir`, its stores wrapped in [`HeldSaves`].
fn racer_server(dir: &Path, shards: usize) -> Server {
    let config = Config {
        wrap_store: Some(HeldSaves::wrap),
        ..config(shards, Some(dir), 30_000)
    };
    Server::start(Registry::new().register::<Racer>(), config).unwrap()
}

/// Waits until [`HeldSaves`] holds more than `held` saves.
fn wait_for_held_save(held: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while SAVES_HELD.load(Ordering::SeqCst) == held {
        assert!(Instant::now() < deadline, "no save reached the store");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Two calls change the state; the first to save writes both changes, and its write waits for
/// room in the store. The second finds nothing new to write, yet must not reply before that
/// write is durable: its change is in it.
#[test]
fn no_durable_reply_leaves_while_the_write_holding_its_change_waits() {
    let dir = TempDir::new("held-saves");
    let start = |dir: &Path| racer_server(dir, 1);
    let server = start(&dir.0);
    let mut first = Rivet::connect(server.local_addr());
    let mut second = Rivet::connect(server.local_addr());
    let id = first.get_or_create("racer", "r");
    HELD_ACTOR.store(ActorId::parse(&id).unwrap().0, Ordering::SeqCst);
    for pair in 0..3i64 {
        HOLD_SAVES.store(true, Ordering::SeqCst);
        let held = SAVES_HELD.load(Ordering::SeqCst);
        first.send_action(&id, "bump", json!([]));
        second.send_action(&id, "bump", json!([]));
        wait_for_held_save(held);
        // Time for a wrong reply to arrive.
        thread::sleep(Duration::from_millis(200));
        assert!(
            !first.conn.has_data() && !second.conn.has_data(),
            "pair {pair}: a reply left while the write of its change was held back"
        );
        HOLD_SAVES.store(false, Ordering::SeqCst);
        let mut outputs: Vec<i64> = [&mut first, &mut second]
            .into_iter()
            .map(|rivet| {
                let reply = rivet.conn.read_reply().expect("a reply");
                assert_eq!(reply.status, 200, "{}", reply.text());
                reply.json()["output"].as_i64().unwrap()
            })
            .collect();
        outputs.sort();
        assert_eq!(outputs, [2 * pair + 1, 2 * pair + 2]);
    }
    assert_eq!(call(&mut first, &id, "get", json!([])), json!(6));

    // A change back to the bytes last written, while the write of the change before it waits:
    // the same bytes must be written again after it, not skipped.
    HOLD_SAVES.store(true, Ordering::SeqCst);
    let held = SAVES_HELD.load(Ordering::SeqCst);
    first.send_action(&id, "set", json!([7]));
    wait_for_held_save(held);
    second.send_action(&id, "set", json!([6]));
    thread::sleep(Duration::from_millis(200));
    assert!(
        !first.conn.has_data() && !second.conn.has_data(),
        "a reply left while the write of its change was held back"
    );
    HOLD_SAVES.store(false, Ordering::SeqCst);
    for (rivet, n) in [(&mut first, 7), (&mut second, 6)] {
        let reply = rivet.conn.read_reply().expect("a reply");
        assert_eq!(reply.json()["output"], json!(n), "{}", reply.text());
    }
    assert_eq!(call(&mut first, &id, "get", json!([])), json!(6));
    drop((first, second));
    server.stop().unwrap();
    // Every acknowledged change is on disk, the last one last.
    let server = start(&dir.0);
    let mut rivet = Rivet::connect(server.local_addr());
    assert_eq!(call(&mut rivet, &id, "get", json!([])), json!(6));
    drop(rivet);
    server.stop().unwrap();
}

/// A save the store fails: the output gate's reply and `save_state()`'s caller get
/// `internal/internal_error` with none of the I/O error's text, and the actor keeps serving.
#[test]
fn a_failed_save_is_an_internal_error_that_reveals_nothing() {
    let dir = TempDir::new("failed-saves");
    let start = |dir: &Path| racer_server(dir, 2);
    let server = start(&dir.0);
    let mut rivet = Rivet::connect(server.local_addr());
    let id = rivet.get_or_create("racer", "failing");
    assert_eq!(call(&mut rivet, &id, "set", json!([1])), json!(1));
    FAILING_ACTOR.store(ActorId::parse(&id).unwrap().0, Ordering::SeqCst);
    for action in ["set", "setSaved"] {
        let reply = rivet.action(&id, action, json!([2]));
        assert_eq!(reply.status, 500, "{action}: {}", reply.text());
        assert_eq!(
            reply.json(),
            json!({"group": "internal", "code": "internal_error", "message": "Internal error. Read the server logs for more details.", "metadata": {}}),
            "{action}"
        );
        assert!(!reply.text().contains("fire"), "{}", reply.text());
    }
    FAILING_ACTOR.store(0, Ordering::SeqCst);
    assert_eq!(call(&mut rivet, &id, "set", json!([3])), json!(3));
    assert_eq!(call(&mut rivet, &id, "setSaved", json!([4])), json!(4));
    drop(rivet);
    server.stop().unwrap();
    let server = start(&dir.0);
    let mut rivet = Rivet::connect(server.local_addr());
    assert_eq!(call(&mut rivet, &id, "get", json!([])), json!(4));
    drop(rivet);
    server.stop().unwrap();
}

/// A shard that has drained its connections and is saving (here: its final flush held) answers
/// the calls other shards forward to it with "stopping" at once, rather than leaving them
/// unanswered until it ends.
#[test]
fn a_call_to_a_shard_saving_at_its_stop_fails_at_once() {
    let dir = TempDir::new("saving-at-stop");
    let server = racer_server(&dir.0, 2);
    let addr = server.local_addr();
    let mut rivet = Rivet::connect(addr);
    // `held` on one shard (the one kept saving), `draining` on the other.
    let [held, draining] =
        <[String; 2]>::try_from(rivet.actor_per_shard("racer", "saving", 2)).expect("two shards");
    assert_eq!(rivet.call(&held, "set", json!([7])), json!(7));
    let conns = connections_on_every_shard(addr);
    drop(rivet);
    // A WebSocket that does not answer the 1001 close keeps the other shard draining.
    let protocols = Some("rivet,rivet_encoding.json");
    let (_, mut ws) = Ws::connect(addr, &format!("/gateway/{draining}/connect"), protocols);
    assert_eq!(ws.read_json()["body"]["tag"], "Init");

    let flushes = FLUSHES_HELD.load(Ordering::SeqCst);
    HOLD_FLUSH_OF.store(ActorId::parse(&held).unwrap().0, Ordering::SeqCst);
    let stopping = thread::spawn(move || server.stop());
    match ws.read() {
        pinion_tests::ws::Frame::Close(code, _) => assert_eq!(code, Some(1001)),
        other => panic!("expected a close frame, got {other:?}"),
    }
    // The held actor's shard drains (nothing in flight there) and stops in its final flush.
    let deadline = Instant::now() + Duration::from_secs(10);
    while FLUSHES_HELD.load(Ordering::SeqCst) == flushes {
        assert!(
            Instant::now() < deadline,
            "the shard never flushed at its stop"
        );
        thread::sleep(Duration::from_millis(1));
    }
    // Its connections have ended; the draining shard's stay open (at most the 2 s linger of the
    // unanswered close, so the check below is short).
    let mut open = still_open(conns);
    let conn = open
        .first_mut()
        .expect("a connection on the draining shard");
    let reply = conn
        .try_request(
            "POST",
            &format!("/gateway/{held}/action/get"),
            &[],
            b"{\"args\":[]}",
        )
        .expect("an answer, not the end of the connection at the stop grace");
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(reply.json()["message"], "Actor is stopping.");

    HOLD_FLUSH_OF.store(0, Ordering::SeqCst);
    ws.send_close(1001, "");
    ws.expect_eof();
    drop(ws);
    stopping.join().unwrap().unwrap();
    // What was saved before the stop is there after it.
    let server = racer_server(&dir.0, 2);
    let mut rivet = Rivet::connect(server.local_addr());
    assert_eq!(rivet.call(&held, "get", json!([])), json!(7));
    drop(rivet);
    server.stop().unwrap();
}

/// Snapshots taken of [`Watched`] states so far.
static SNAPSHOTS: AtomicUsize = AtomicUsize::new(0);

/// A state whose snapshots are counted (a `Persist` of its own around an rkyv one).
struct WatchedState {
    n: i64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct WatchedArchive {
    n: i64,
}

impl Persist for WatchedState {
    fn save(&self, out: &mut Vec<u8>) -> Result<(), PersistError> {
        SNAPSHOTS.fetch_add(1, Ordering::SeqCst);
        WatchedArchive { n: self.n }.save(out)
    }
    fn load(snapshot: &[u8]) -> Result<Self, PersistError> {
        WatchedArchive::load(snapshot).map(|a| WatchedState { n: a.n })
    }
}

/// Behind the output gate, with counted snapshots.
struct Watched;

impl Actor for Watched {
    const NAME: &'static str = "watched";
    type State = WatchedState;
    type Vars = ();
    type ConnState = ();
    const OPTIONS: ActorOptions = ActorOptions {
        durable_before_reply: true,
        ..ActorOptions::DEFAULT
    };

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<WatchedState> {
        Ok(WatchedState { n: 0 })
    }
    fn create_vars(_: &ActorInfo, _: &WatchedState) {}
    fn actions(actions: &mut Actions<Self>) {
        actions
            .action("set", |c, (n,): (i64,)| {
                c.state.n = n;
                Ok(n)
            })
            .action("get", |c, ()| Ok(c.state.n))
            .action_async("getLater", |c, ()| async move {
                sys::sleep(Duration::from_millis(1)).await;
                Ok(c.state(|s| s.n))
            });
    }
}

/// A call that only reads the state of a `durable_before_reply` actor takes no snapshot and
/// writes nothing (it used to snapshot and hash the state on every call, to find it unchanged);
/// a call that changes it is saved before its reply, as before.
#[test]
fn a_read_only_call_takes_no_snapshot() {
    let dir = TempDir::new("read-only");
    let start = |dir: &Path| {
        let registry = Registry::new().register::<Watched>();
        Server::start(registry, config(1, Some(dir), 30_000)).unwrap()
    };
    let server = start(&dir.0);
    let mut rivet = Rivet::connect(server.local_addr());
    let id = rivet.get_or_create("watched", "reader");
    assert_eq!(rivet.call(&id, "set", json!([5])), json!(5));
    let snapshots = SNAPSHOTS.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(rivet.call(&id, "get", json!([])), json!(5));
        assert_eq!(rivet.call(&id, "getLater", json!([])), json!(5));
    }
    assert_eq!(
        SNAPSHOTS.load(Ordering::SeqCst),
        snapshots,
        "reads took snapshots"
    );
    assert_eq!(rivet.call(&id, "set", json!([6])), json!(6));
    assert_eq!(
        SNAPSHOTS.load(Ordering::SeqCst),
        snapshots + 1,
        "the change was saved once"
    );
    drop(rivet);
    server.stop().unwrap();
    let server = start(&dir.0);
    let mut rivet = Rivet::connect(server.local_addr());
    assert_eq!(rivet.call(&id, "get", json!([])), json!(6));
    drop(rivet);
    server.stop().unwrap();
}
