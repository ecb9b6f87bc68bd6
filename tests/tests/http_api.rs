//! The RivetKit HTTP protocol end to end, over real sockets, with 1 and 2 shards.

use std::collections::BTreeSet;
use std::thread;

use pinion_runtime::{ActorId, Config};
use pinion_tests::{Conn, Rivet, start, start_with, test_config};
use serde_json::json;

/// Runs `test` against a fresh server with one shard and again with two.
fn on_1_and_2_shards(test: impl Fn(std::net::SocketAddr, usize)) {
    for shards in [1, 2] {
        let server = start(shards);
        test(server.local_addr(), shards);
        server.stop().unwrap();
    }
}

/// `threads` connections each call `increment(1)` on actor `id` `calls` times; returns every
/// value the calls returned.
fn increment_from_threads(
    addr: std::net::SocketAddr,
    id: &str,
    threads: usize,
    calls: usize,
) -> BTreeSet<i64> {
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    let mut rivet = Rivet::connect(addr);
                    (0..calls)
                        .map(|_| rivet.call(id, "increment", json!([1])).as_i64().unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}

#[test]
fn metadata_and_health() {
    on_1_and_2_shards(|addr, _| {
        let mut conn = Conn::open(addr);
        let reply = conn.get("/metadata?namespace=default");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let names = reply.json()["actorNames"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>();
        assert!(
            names.contains(&"counter".to_string()) && names.contains(&"profile".to_string()),
            "{names:?}"
        );
        assert_eq!(conn.get("/health").json()["status"], "ok");
        let missing = conn.get("/nope");
        assert_eq!(missing.status, 404);
    });
}

#[test]
fn get_or_create_is_idempotent_and_keys_are_distinct() {
    on_1_and_2_shards(|addr, _| {
        let mut rivet = Rivet::connect(addr);
        let body = json!({"name": "counter", "key": "a/b\\/c/\\0", "runner_name_selector": "default", "crash_policy": "sleep"});
        let first = rivet.conn.request(
            "PUT",
            "/actors?namespace=default",
            &[],
            body.to_string().as_bytes(),
        );
        assert_eq!(first.status, 200);
        assert_eq!(first.json()["created"], true);
        let actor = &first.json()["actor"];
        assert_eq!(actor["name"], "counter");
        assert_eq!(actor["key"], "a/b\\/c/\\0");
        let second = rivet.conn.request(
            "PUT",
            "/actors?namespace=default",
            &[],
            body.to_string().as_bytes(),
        );
        assert_eq!(second.json()["created"], false);
        assert_eq!(second.json()["actor"]["actor_id"], actor["actor_id"]);

        // The actor sees its key parts, unescaped.
        let id = actor["actor_id"].as_str().unwrap();
        let me = rivet.call(id, "whoAmI", json!([]));
        assert_eq!(
            me,
            json!({"name": "counter", "key": ["a", "b/c", ""], "actorId": id})
        );

        let other = rivet.get_or_create("counter", "a/b");
        assert_ne!(other, id);
        let empty_key = rivet.get_or_create("counter", "/");
        assert_eq!(
            rivet.call(&empty_key, "whoAmI", json!([]))["key"],
            json!([])
        );
    });
}

#[test]
fn create_get_and_lookup() {
    on_1_and_2_shards(|addr, shards| {
        let mut rivet = Rivet::connect(addr);
        // Ann's input: {"name":"Ann"} as cbor-x writes it.
        let create = json!({"name": "profile", "key": "p1", "input": "uQABZG5hbWVjQW5u"});
        let created = rivet
            .conn
            .request("POST", "/actors", &[], create.to_string().as_bytes());
        assert_eq!(created.status, 200, "{}", created.text());
        let id = created.json()["actor"]["actor_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(rivet.call(&id, "getName", json!([])), "Ann");

        let duplicate = rivet
            .conn
            .request("POST", "/actors", &[], create.to_string().as_bytes());
        assert_eq!(duplicate.status, 400);
        assert_eq!(duplicate.json()["group"], "actor");
        assert_eq!(duplicate.json()["code"], "duplicate_key");
        assert_eq!(duplicate.header("content-type"), Some("application/json"));

        let found = rivet
            .conn
            .get("/actors?name=profile&key=p1&namespace=default");
        assert_eq!(found.json()["actors"][0]["actor_id"], id.as_str());
        let missing = rivet
            .conn
            .get("/actors?name=profile&key=nobody&namespace=default");
        assert_eq!(missing.json(), json!({"actors": []}));
        // `get` must not create.
        let still_missing = rivet.conn.get("/actors?name=profile&key=nobody");
        assert_eq!(still_missing.json(), json!({"actors": []}));

        // Lookup by ids, spread over every shard, with unknown ids skipped.
        let ids: Vec<String> = (0..8)
            .map(|i| rivet.get_or_create("counter", &format!("lookup-{i}")))
            .collect();
        let owners: BTreeSet<usize> = ids
            .iter()
            .map(|id| ActorId::parse(id).unwrap().shard(shards))
            .collect();
        assert_eq!(owners.len(), shards, "the ids should cover every shard");
        let query = format!(
            "/actors?actor_ids={},0000000000000000,zz&namespace=default",
            ids.join(",")
        );
        let listed = rivet.conn.get(&query).json();
        let listed: Vec<&str> = listed["actors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["actor_id"].as_str().unwrap())
            .collect();
        assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());

        // getOrCreate with input uses it only at creation.
        let with_input = json!({"name": "profile", "key": "p2", "input": "uQABZG5hbWVjQW5u"});
        let first = rivet
            .conn
            .request("PUT", "/actors", &[], with_input.to_string().as_bytes())
            .json();
        let p2 = first["actor"]["actor_id"].as_str().unwrap().to_string();
        let bob = json!({"name": "profile", "key": "p2", "input": "uQABZG5hbWVjQm9i"});
        assert_eq!(
            rivet
                .conn
                .request("PUT", "/actors", &[], bob.to_string().as_bytes())
                .json()["created"],
            false
        );
        assert_eq!(rivet.call(&p2, "getName", json!([])), "Ann");
        // No input: "unnamed".
        let plain = rivet.get_or_create("profile", "p3");
        assert_eq!(rivet.call(&plain, "getName", json!([])), "unnamed");
    });
}

#[test]
fn actions_and_errors() {
    on_1_and_2_shards(|addr, _| {
        let mut rivet = Rivet::connect(addr);
        let counter = rivet.get_or_create("counter", "actions");
        assert_eq!(rivet.call(&counter, "increment", json!([])), 1);
        assert_eq!(rivet.call(&counter, "increment", json!([5])), 6);
        assert_eq!(rivet.call(&counter, "getCount", json!([])), 6);

        let values = json!(["ünïcödé 😀 \"q\" \\ \u{1}", {"nested": [1, 2.5, -3, null, true]}, ["$$notAType", 1], ["$Uint8Array", "AQI="],
            ["$ArrayBuffer", "CQgH"], "x".repeat(60_000)]);
        assert_eq!(rivet.call(&counter, "echo", values.clone()), values);

        let profile = rivet.get_or_create("profile", "errors");
        let short = rivet.action(&profile, "setName", json!(["x"]));
        assert_eq!(short.status, 400);
        assert_eq!(
            short.json(),
            json!({"group": "user", "code": "name_too_short", "message": "Name too short", "metadata": {"minLength": 3, "actual": 1}})
        );
        assert_eq!(rivet.call(&profile, "setName", json!(["Zoë"])), "Zoë");

        let boom = rivet.action(&profile, "boom", json!([]));
        assert_eq!(boom.status, 500);
        assert_eq!(
            boom.json(),
            json!({"group": "internal", "code": "internal_error", "message": "Internal error. Read the server logs for more details.", "metadata": {}})
        );
        assert!(!boom.text().contains("secret"));
        // The shard keeps serving.
        assert_eq!(rivet.call(&profile, "getName", json!([])), "Zoë");

        let unknown = rivet.action(&profile, "doesNotExist", json!([]));
        assert_eq!(unknown.status, 400);
        assert_eq!(unknown.json()["group"], "action");
        assert_eq!(unknown.json()["code"], "not_found");

        let no_actor = rivet.action("0123456789abcdef", "increment", json!([]));
        assert_eq!(no_actor.status, 404);
        assert_eq!(no_actor.json()["code"], "not_found");

        let bad_args = rivet.action(&counter, "increment", json!(["five"]));
        assert_eq!(bad_args.status, 400);
        assert_eq!(bad_args.json()["group"], "request");

        let path = format!("/gateway/{counter}/action/increment");
        let encoding = rivet.conn.request(
            "POST",
            &path,
            &[("x-rivet-encoding", "bare")],
            b"{\"args\":[]}",
        );
        assert_eq!(
            (encoding.status, encoding.json()["code"].clone()),
            (400, json!("invalid"))
        );
        assert_eq!(encoding.json()["group"], "encoding");
        let params = rivet.conn.request(
            "POST",
            &path,
            &[("x-rivet-conn-params", "{nope")],
            b"{\"args\":[]}",
        );
        assert_eq!(params.json()["group"], "params");
        let too_long = rivet.conn.request(
            "POST",
            &path,
            &[],
            format!("{{\"args\":[\"{}\"]}}", "y".repeat(70_000)).as_bytes(),
        );
        assert_eq!(too_long.json()["code"], "incoming_too_long");
        let not_json = rivet.conn.request("POST", &path, &[], b"{\"args\":");
        assert_eq!(not_json.status, 400);
        // None of that changed the count.
        assert_eq!(rivet.call(&counter, "getCount", json!([])), 6);
    });
}

#[test]
fn concurrent_increments_over_many_connections_are_exact() {
    on_1_and_2_shards(|addr, _| {
        let id = Rivet::connect(addr).get_or_create("counter", "concurrent");
        assert_eq!(
            increment_from_threads(addr, &id, 20, 10),
            (1..=200).collect::<BTreeSet<_>>()
        );
        assert_eq!(Rivet::connect(addr).call(&id, "getCount", json!([])), 200);
    });
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    on_1_and_2_shards(|addr, _| {
        let mut rivet = Rivet::connect(addr);
        let ids: Vec<String> = (0..6)
            .map(|i| rivet.get_or_create("counter", &format!("pipe-{i}")))
            .collect();
        let mut batch = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let body = format!("{{\"args\":[{}]}}", i + 1);
            batch.extend_from_slice(
                format!("POST /gateway/{id}/action/increment HTTP/1.1\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes(),
            );
        }
        rivet.conn.write(&batch);
        for i in 0..ids.len() {
            let reply = rivet.conn.read_reply().unwrap();
            assert_eq!(reply.json()["output"], json!(i + 1));
        }
    });
}

#[test]
fn bad_http_gets_an_error_and_the_shard_keeps_serving() {
    on_1_and_2_shards(|addr, _| {
        for garbage in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
            b"\x00\xff\xfe\r\n\r\n",
        ] {
            let mut conn = Conn::open(addr);
            conn.write(garbage);
            let reply = conn.read_reply().expect("an error response");
            assert_eq!(reply.status, 400, "{garbage:?}");
            assert!(conn.is_closed());
        }
        let mut conn = Conn::open(addr);
        conn.write(format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20_000)).as_bytes());
        assert_eq!(conn.read_reply().unwrap().status, 414);
        let mut rivet = Rivet::connect(addr);
        let id = rivet.get_or_create("counter", "after-garbage");
        assert_eq!(rivet.call(&id, "increment", json!([])), 1);
    });
}

#[test]
fn base_path_prefixes_every_route() {
    let server = start_with(Config {
        shards: Some(2),
        base_path: "/api/rivet/".into(),
        ..test_config()
    });
    let mut rivet = Rivet::connect(server.local_addr());
    assert_eq!(rivet.conn.get("/api/rivet/metadata").status, 200);
    assert_eq!(rivet.conn.get("/metadata").status, 404);
    let body = json!({"name": "counter", "key": "based"}).to_string();
    let reply = rivet
        .conn
        .request("PUT", "/api/rivet/actors", &[], body.as_bytes());
    let id = reply.json()["actor"]["actor_id"]
        .as_str()
        .unwrap()
        .to_string();
    let call = rivet.conn.request(
        "POST",
        &format!("/api/rivet/gateway/{id}/action/increment"),
        &[],
        b"{\"args\":[2]}",
    );
    assert_eq!(call.json()["output"], 2);
    server.stop().unwrap();
}

#[test]
fn idle_connections_are_closed_after_the_read_timeout() {
    let server = start_with(Config {
        shards: Some(2),
        read_timeout: std::time::Duration::from_millis(500),
        ..test_config()
    });
    let mut idle = Conn::open(server.local_addr());
    assert_eq!(idle.get("/health").status, 200);
    let mut stalled = Conn::open(server.local_addr());
    stalled.write(b"GET /health HTTP/1.1\r\nhost: x"); // never finished
    // Each waits for the server to end it, at most the client's 10 s read timeout.
    assert!(
        idle.is_closed(),
        "an idle keep-alive connection outlived the read timeout"
    );
    assert!(
        stalled.is_closed(),
        "a stalled request outlived the read timeout"
    );
    // Busy connections are not affected (a request every 100 ms, a fifth of the timeout: the
    // margin for a starved test machine).
    let mut busy = Rivet::connect(server.local_addr());
    let id = busy.get_or_create("counter", "timeouts");
    for _ in 0..5 {
        busy.call(&id, "increment", json!([]));
        thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(busy.call(&id, "getCount", json!([])), 5);
    server.stop().unwrap();
}

/// The glommio-socket fallback serves the same protocol (the other tests run on the io_uring
/// driver, the default).
#[test]
fn glommio_socket_fallback_serves_the_protocol() {
    let server = start_with(Config {
        shards: Some(2),
        net_driver: pinion_runtime::NetDriver::Glommio,
        ..test_config()
    });
    let addr = server.local_addr();
    let id = Rivet::connect(addr).get_or_create("counter", "fallback");
    assert_eq!(
        increment_from_threads(addr, &id, 8, 10),
        (1..=80).collect::<BTreeSet<_>>()
    );
    let mut rivet = Rivet::connect(addr);
    let big = json!(["z".repeat(60_000)]);
    assert_eq!(rivet.call(&id, "echo", big.clone()), big);
    let mut conn = Conn::open(addr);
    conn.write(b"GARBAGE\r\n\r\n");
    assert_eq!(conn.read_reply().unwrap().status, 400);
    server.stop().unwrap();
}

/// Many connections at once, more than the driver's receive buffers, each with large bodies in
/// both directions, so buffers are recycled while others are in use.
#[test]
fn many_connections_with_large_bodies() {
    let server = start(2);
    let addr = server.local_addr();
    let id = Rivet::connect(addr).get_or_create("counter", "many");
    let payload = json!(["w".repeat(60_000)]);
    thread::scope(|scope| {
        for _ in 0..96 {
            let (id, payload) = (id.clone(), payload.clone());
            scope.spawn(move || {
                let mut rivet = Rivet::connect(addr);
                for _ in 0..5 {
                    assert_eq!(rivet.call(&id, "echo", payload.clone()), payload);
                }
            });
        }
    });
    server.stop().unwrap();
}

#[test]
fn raw_http_reaches_on_request() {
    on_1_and_2_shards(|addr, _| {
        let mut rivet = Rivet::connect(addr);
        // Several actors, so that with 2 shards some requests are forwarded.
        for i in 0..4 {
            let id = rivet.get_or_create("api", &format!("raw-{i}"));
            let post = rivet.conn.request(
                "POST",
                &format!("/gateway/{id}/request/some/path?x=1"),
                &[
                    ("content-type", "text/plain;charset=UTF-8"),
                    ("x-custom", "1"),
                ],
                b"hello",
            );
            assert_eq!(post.status, 200);
            assert_eq!(post.header("content-type"), Some("application/json"));
            assert_eq!(
                post.json(),
                json!({"count": 1, "method": "POST", "path": "/some/path", "query": "?x=1"})
            );
            let get = rivet.conn.get(&format!("/gateway/{id}/request/"));
            assert_eq!(
                get.json(),
                json!({"count": 1, "method": "GET", "path": "/", "query": ""})
            );
            let bare = rivet.conn.get(&format!("/gateway/{id}/request"));
            assert_eq!(bare.json()["path"], "/");
            assert_eq!(rivet.call(&id, "getCount", json!([])), 1);
        }
        // An actor without on_request.
        let counter = rivet.get_or_create("counter", "no-raw");
        let missing = rivet.conn.get(&format!("/gateway/{counter}/request/x"));
        assert_eq!(missing.status, 404);
        assert_eq!(missing.json()["group"], "handler");
        assert_eq!(missing.json()["code"], "request_not_defined");
    });
}

#[test]
fn on_before_action_response_rewrites_every_output() {
    on_1_and_2_shards(|addr, _| {
        let mut rivet = Rivet::connect(addr);
        for i in 0..3 {
            let id = rivet.get_or_create("transform", &format!("t-{i}"));
            assert_eq!(rivet.call(&id, "value", json!([])), json!({"wrapped": 42}));
            let args = json!(["a", ["$$x", 1], {"k": null}]);
            assert_eq!(
                rivet.call(&id, "echoArgs", args.clone()),
                json!({"wrapped": args})
            );
        }
        // Other actors' outputs are untouched.
        let counter = rivet.get_or_create("counter", "untransformed");
        assert_eq!(rivet.call(&counter, "increment", json!([])), 1);
    });
}

#[test]
fn cors_preflight() {
    let server = start(1);
    let mut conn = Conn::open(server.local_addr());
    let reply = conn.request(
        "OPTIONS",
        "/actors",
        &[
            ("origin", "http://example.test"),
            (
                "access-control-request-headers",
                "x-rivet-encoding, content-type",
            ),
        ],
        b"",
    );
    assert_eq!(reply.status, 204);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("http://example.test")
    );
    assert_eq!(
        reply.header("access-control-allow-headers"),
        Some("x-rivet-encoding, content-type")
    );
    assert_eq!(
        conn.get("/metadata").header("access-control-allow-origin"),
        Some("*")
    );
    server.stop().unwrap();
}

/// A clean stop while requests keep arriving: the `Stop` message is then often taken by a
/// request's own look at the mailbox rather than by the parked mailbox task, which must still
/// wake and end the shard. (It did not: the shard kept serving and `stop` never returned.)
#[test]
fn a_server_stops_while_requests_keep_arriving() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    for round in 0..12 {
        let server = start(1);
        let addr = server.local_addr();
        let id = Rivet::connect(addr).get_or_create("counter", "stop");
        let running = Arc::new(AtomicBool::new(true));
        let served = Arc::new(AtomicU64::new(0));
        let connected = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::new();
        for _ in 0..4 {
            let (running, served, id) = (running.clone(), served.clone(), id.clone());
            let connected = connected.clone();
            clients.push(thread::spawn(move || {
                let body = br#"{"args":[1]}"#;
                let path = format!("/gateway/{id}/action/increment");
                let mut conn = Conn::open(addr);
                connected.fetch_add(1, Ordering::Relaxed);
                while running.load(Ordering::Relaxed) {
                    match conn.try_request("POST", &path, &[], body) {
                        Ok(reply) if reply.status == 200 => served.fetch_add(1, Ordering::Relaxed),
                        Err(error)
                            if matches!(
                                error.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) =>
                        {
                            panic!("the stopped server left a connection open: {error}")
                        }
                        // Stopping: the listener closes, connections end.
                        _ => break,
                    };
                }
            }));
        }
        // Every client connected (a stop refuses later ones) and the load is on.
        while connected.load(Ordering::Relaxed) < 4 || served.load(Ordering::Relaxed) < 50 {
            thread::sleep(Duration::from_millis(1));
        }
        let (done, stopped) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let _ = done.send(server.stop());
        });
        let result = stopped.recv_timeout(Duration::from_secs(20));
        running.store(false, Ordering::Relaxed);
        match result {
            Ok(stopped) => stopped.unwrap(),
            Err(_) => panic!("round {round}: the server did not stop within 20 s under load"),
        }
        // The stop ended every connection, so each client saw its end (a client left waiting
        // would panic at its 10 s read timeout instead).
        for client in clients {
            client.join().unwrap();
        }
    }
}
