//! A process can start and stop servers again and again: a stop releases what the server held.
//! Its own test binary, so that no other test opens or closes descriptors meanwhile.

use pinion_runtime::Config;
use pinion_tests::ws::Ws;
use pinion_tests::{Conn, Rivet, TempDir, start_with, test_config};

/// The process's open descriptors: (eventfds, all others).
fn descriptors() -> (usize, Vec<String>) {
    let mut eventfds = 0;
    let mut others = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(target) = std::fs::read_link(entry.unwrap().path()) else {
            continue; // the directory's own descriptor, closed by now
        };
        let target = target.display().to_string();
        if target == "anon_inode:[eventfd]" {
            eventfds += 1;
        } else {
            others.push(target);
        }
    }
    others.sort();
    (eventfds, others)
}

/// Ten servers in a row (two shards, durable, each serving HTTP and a WebSocket before it
/// stops) leave no socket, ring or file open. Before, each stop left our io_uring driver (its
/// ring, listener and eventfds) and its shards (actors, store) behind: glommio never drops a
/// stopped executor's pending tasks, which held them. glommio 0.9 itself keeps one eventfd per
/// executor it ran (measured with bare executors; DataDog/glommio#448, open), so eventfds may
/// grow by that much.
#[test]
fn stopped_servers_leave_no_descriptors_behind() {
    const SERVERS: usize = 10;
    const SHARDS: usize = 2;
    let dir = TempDir::new("restart");
    let run = |round: usize| {
        let server = start_with(Config {
            shards: Some(SHARDS),
            data_dir: Some(dir.0.clone()),
            ..test_config()
        });
        let addr = server.local_addr();
        let id = Rivet::connect(addr).get_or_create("counter", "restart");
        let mut conn = Conn::open(addr);
        let reply = conn.request(
            "POST",
            &format!("/gateway/{id}/action/increment"),
            &[],
            br#"{"args":[1]}"#,
        );
        assert_eq!(reply.json(), serde_json::json!({"output": round + 1}));
        let (_, mut ws) = Ws::connect(
            addr,
            &format!("/gateway/{id}/connect"),
            Some("rivet,rivet_encoding.json"),
        );
        assert_eq!(ws.read_json()["body"]["tag"], "Init");
        let stopping = std::thread::spawn(move || server.stop());
        assert_eq!(ws.expect_close().0, Some(1001));
        drop(ws); // the stop waits for the client to close its side too
        stopping.join().unwrap().unwrap();
        assert!(conn.ends());
    };
    run(0);
    let (eventfds_before, before) = descriptors();
    for round in 1..=SERVERS {
        run(round);
    }
    let (eventfds_after, after) = descriptors();
    assert_eq!(
        after, before,
        "descriptors left open by {SERVERS} stopped servers"
    );
    assert!(
        eventfds_after <= eventfds_before + SERVERS * SHARDS,
        "eventfds: {eventfds_before} before, {eventfds_after} after"
    );
}
