//! Actor-to-actor calls over real sockets, with 1 and 2 shards: the coordinator/worker pair,
//! call cycles across shards, errors crossing shards, overload and deadlines.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use pinion_runtime::{
    ActionResult, Actions, Actor, ActorId, ActorInfo, Config, Server, UserError, Value, key, sys,
};
use pinion_tests::{Rivet, test_config};
use serde_json::json;

/// Calls itself through other instances: `bounce(n, path)` appends its key to `path` and, while
/// `n > 0`, calls `bounce(n - 1, path)` on the actor named by the next key in a ring of two, so a
/// chain alternates A → B → A → … (across shards when A and B live on different ones).
struct Ring;

impl Actor for Ring {
    const NAME: &'static str = "ring";
    type State = u32;
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<u32> {
        Ok(0)
    }

    fn create_vars(_: &ActorInfo, _: &u32) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action_async(
                "bounce",
                |c, (n, other, mut path): (u32, String, Vec<String>)| async move {
                    c.state_mut(|calls| *calls += 1);
                    path.push(c.key()[0].clone());
                    if n == 0 {
                        return Ok(path);
                    }
                    let me = c.key()[0].clone();
                    let next = c.client().get_or_create("ring", [other.as_str()]);
                    Ok(next
                        .call::<Vec<String>>("bounce", (n - 1, me, path))
                        .await?)
                },
            )
            .action("calls", |c, ()| Ok(*c.state))
            .action("fail", |_, (code,): (String,)| -> ActionResult<()> {
                Err(UserError::new("The callee refused")
                    .code(code)
                    .metadata(json!({"depth": 1, "why": ["nested"]}))
                    .into())
            })
            .action_async("callFail", |c, (other,): (String,)| async move {
                // The callee's UserError reaches this actor's client unchanged through `?`.
                c.client()
                    .get_or_create("ring", [other.as_str()])
                    .call::<()>("fail", ("from_callee",))
                    .await?;
                Ok(())
            })
            .action_async(
                "inspect",
                |c, (other, action): (String, String)| async move {
                    // A caller can also look at the error instead of propagating it.
                    let result = c
                        .client()
                        .get("ring", [other.as_str()])
                        .call::<Value>(&action, ())
                        .await;
                    Ok(match result {
                        Ok(value) => json!({"ok": value}),
                        Err(error) => json!({"group": error.group, "code": error.code}),
                    })
                },
            )
            .action_async(
                "propagate",
                |c, (other, action): (String, String)| async move {
                    Ok(c.client()
                        .get("ring", [other.as_str()])
                        .call::<Value>(&action, ())
                        .await?)
                },
            )
            .action_async("slow", |_, (ms,): (u64,)| async move {
                sys::sleep(Duration::from_millis(ms)).await;
                Ok(ms)
            })
            .action_async("callSlow", |c, (other, ms): (String, u64)| async move {
                let result = c
                    .client()
                    .get_or_create("ring", [other.as_str()])
                    .call::<u64>("slow", (ms,))
                    .await;
                Ok(match result {
                    Ok(ms) => json!({"ok": ms}),
                    Err(error) => {
                        json!({"group": error.group, "code": error.code, "message": error.message})
                    }
                })
            })
            .action_async("createAndUse", |c, (key,): (String,)| async move {
                let client = c.client();
                let created = client.create("ring", [key.as_str()], None).await?;
                // A failing first call does not make later calls on the handle fail...
                let failed = created.call::<()>("fail", ("first",)).await.unwrap_err();
                let pong = created.call::<String>("ping", ()).await?;
                // ...and a second create of the same key is refused.
                let again = client.create("ring", [key.as_str()], None).await.err();
                // `()` is no arguments at all.
                let echoed = client
                    .get_or_create("counter", ["args"])
                    .call::<Value>("echo", ())
                    .await?;
                Ok(json!({
                    "failed": failed.code,
                    "pong": pong,
                    "again": again.map(|e| e.code),
                    "echoed": echoed,
                }))
            })
            .action("ping", |_, ()| Ok("pong"));
    }
}

/// An argument and output type that counts its encodings and decodings, to tell a typed call
/// (values moved, never encoded) from an encoded one. It is a JSON number on the wire.
#[derive(Debug, PartialEq)]
struct Probe(u64);

static PROBE_ENCODED: AtomicUsize = AtomicUsize::new(0);
static PROBE_DECODED: AtomicUsize = AtomicUsize::new(0);

impl serde::Serialize for Probe {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        PROBE_ENCODED.fetch_add(1, Ordering::SeqCst);
        serializer.serialize_u64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Probe {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Probe, D::Error> {
        PROBE_DECODED.fetch_add(1, Ordering::SeqCst);
        u64::deserialize(deserializer).map(Probe)
    }
}

fn probe_counts() -> (usize, usize) {
    (
        PROBE_ENCODED.load(Ordering::SeqCst),
        PROBE_DECODED.load(Ordering::SeqCst),
    )
}

/// Calls another `typed` actor with owned arguments (`call_owned`), in the four combinations of
/// matching and mismatching argument and output types.
struct TypedCalls;

impl Actor for TypedCalls {
    const NAME: &'static str = "typed";
    type State = ();
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<()> {
        Ok(())
    }

    fn create_vars(_: &ActorInfo, _: &()) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action("double", |_, (p,): (Probe,)| Ok(Probe(p.0 * 2)))
            .action_async("doubleLater", |_, (p,): (Probe,)| async move {
                sys::sleep(Duration::from_millis(1)).await;
                Ok(Probe(p.0 * 2))
            })
            .action("refuse", |_, (p,): (Probe,)| -> ActionResult<Probe> {
                Err(UserError::new("refused")
                    .code("typed_refusal")
                    .metadata(json!({"n": p.0}))
                    .into())
            })
            .action_async(
                "call",
                |c, (other, action, n, how): (String, String, u64, String)| async move {
                    let target = c.client().get_or_create("typed", [other.as_str()]);
                    let result = match how.as_str() {
                        "typed" => target
                            .call_owned::<Probe, _>(&action, (Probe(n),))
                            .await
                            .map(|p| p.0),
                        "u64-out" => target.call_owned::<u64, _>(&action, (Probe(n),)).await,
                        "u64-in" => target
                            .call_owned::<Probe, _>(&action, (n,))
                            .await
                            .map(|p| p.0),
                        _ => target.call::<u64>(&action, (Probe(n),)).await,
                    };
                    Ok(match result {
                        Ok(n) => json!({"ok": n}),
                        Err(error) => {
                            json!({"group": error.group, "code": error.code, "metadata": error.metadata})
                        }
                    })
                },
            );
    }
}

fn start(shards: usize, config: impl FnOnce(&mut Config)) -> Server {
    let mut cfg = Config {
        shards: Some(shards),
        ..test_config()
    };
    config(&mut cfg);
    let registry = pinion_demo::registry()
        .register::<Ring>()
        .register::<TypedCalls>();
    Server::start(registry, cfg).unwrap()
}

fn shard_of(name: &str, key: &str, shards: usize) -> usize {
    ActorId::derive(name, &key::serialize(&[key.to_string()])).shard(shards)
}

/// Two keys whose `ring` actors live on different shards (of 2).
fn keys_on_both_shards(prefix: &str) -> (String, String) {
    let a = format!("{prefix}-a");
    let b = (0..)
        .map(|i| format!("{prefix}-b{i}"))
        .find(|b| shard_of("ring", b, 2) != shard_of("ring", &a, 2))
        .unwrap();
    (a, b)
}

#[test]
fn coordinator_and_workers_over_both_shards() {
    for shards in [1, 2] {
        let server = start(shards, |_| {});
        let mut rivet = Rivet::connect(server.local_addr());
        let coordinator = rivet.get_or_create("coordinator", &format!("job-{shards}"));
        let tasks: Vec<_> = (0..20)
            .map(|i| json!({"id": format!("task-{shards}-{i}"), "value": i}))
            .collect();
        if shards == 2 {
            let spread: std::collections::BTreeSet<usize> = tasks
                .iter()
                .map(|t| shard_of("worker", t["id"].as_str().unwrap(), 2))
                .collect();
            assert_eq!(spread.len(), 2, "the workers must live on both shards");
        }
        let acks = rivet.call(&coordinator, "startJob", json!([tasks]));
        let acks = acks.as_array().unwrap();
        assert_eq!(acks.len(), 20);
        for (i, ack) in acks.iter().enumerate() {
            let id = format!("task-{shards}-{i}");
            assert_eq!(ack, &json!({"id": id, "worker": [id], "result": i * 2}));
        }
        let results = rivet.call(&coordinator, "results", json!([]));
        assert_eq!(results.as_object().unwrap().len(), 20);
        for i in 0..20 {
            assert_eq!(results[format!("task-{shards}-{i}")], json!(i * 2));
        }
        let worker = rivet.get_or_create("worker", &format!("task-{shards}-7"));
        assert_eq!(rivet.call(&worker, "processedCount", json!([])), json!(1));
        server.stop().unwrap();
    }
}

#[test]
fn call_cycles_across_shards_complete() {
    let server = start(2, |_| {});
    let mut rivet = Rivet::connect(server.local_addr());
    let (a, b) = keys_on_both_shards("cycle");
    let id_a = rivet.get_or_create("ring", &a);
    // A → B → A → B → … 11 calls, each awaiting the next: every hop crosses shards, and A and B
    // are re-entered while their earlier calls still await.
    let path = rivet.call(&id_a, "bounce", json!([10, b, []]));
    let expected: Vec<&str> = (0..11)
        .map(|i| if i % 2 == 0 { a.as_str() } else { b.as_str() })
        .collect();
    assert_eq!(path, json!(expected));
    assert_eq!(rivet.call(&id_a, "calls", json!([])), json!(6));
    let id_b = rivet.get_or_create("ring", &b);
    assert_eq!(rivet.call(&id_b, "calls", json!([])), json!(5));
    server.stop().unwrap();
}

#[test]
fn a_callee_user_error_reaches_the_client_across_shards() {
    let server = start(2, |_| {});
    let mut rivet = Rivet::connect(server.local_addr());
    let (a, b) = keys_on_both_shards("errors");
    let id_a = rivet.get_or_create("ring", &a);
    let reply = rivet.action(&id_a, "callFail", json!([b]));
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({
            "group": "user",
            "code": "from_callee",
            "message": "The callee refused",
            "metadata": {"depth": 1, "why": ["nested"]}
        })
    );
    // Not user errors: seen by the caller with their group and code...
    assert_eq!(
        rivet.call(&id_a, "inspect", json!(["no-such-ring", "ping"])),
        json!({"group": "actor", "code": "not_found"})
    );
    assert_eq!(
        rivet.call(&id_a, "inspect", json!([b, "noSuchAction"])),
        json!({"group": "action", "code": "not_found"})
    );
    assert_eq!(
        rivet.call(&id_a, "inspect", json!([b, "ping"])),
        json!({"ok": "pong"})
    );
    // ...and masked for the caller's own client when propagated with `?`.
    for (target, action) in [("no-such-ring", "ping"), (b.as_str(), "noSuchAction")] {
        let reply = rivet.action(&id_a, "propagate", json!([target, action]));
        assert_eq!(reply.status, 500, "{}", reply.text());
        assert_eq!(reply.json()["code"], "internal_error");
        assert!(!reply.text().contains("not_found"), "{}", reply.text());
    }
    server.stop().unwrap();
}

#[test]
fn deadlines_fail_calls_with_a_clear_error() {
    for shards in [1, 2] {
        let server = start(shards, |c| {
            c.limits.action_timeout = Duration::from_millis(200);
        });
        let mut rivet = Rivet::connect(server.local_addr());
        let (a, b) = keys_on_both_shards(&format!("deadline-{shards}"));
        let id_a = rivet.get_or_create("ring", &a);
        // A stateless call past its deadline.
        let started = Instant::now();
        let reply = rivet.action(&id_a, "slow", json!([5_000]));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the deadline cut it"
        );
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json()["group"], "action");
        assert_eq!(reply.json()["code"], "timed_out");
        // Within the deadline it answers.
        assert_eq!(rivet.call(&id_a, "slow", json!([10])), json!(10));
        // An actor-to-actor call past its deadline: the caller sees action/timed_out (its own
        // action then answers before its own deadline because the caller's deadline fired
        // first: both are 200 ms, the callee's started later).
        let result = rivet.call(&id_a, "callSlow", json!([b, 5_000]));
        assert_eq!(result["group"], "action", "{result}");
        assert_eq!(result["code"], "timed_out", "{result}");
        // The actors keep serving.
        assert_eq!(rivet.call(&id_a, "ping", json!([])), json!("pong"));
        server.stop().unwrap();
    }
}

#[test]
fn overload_is_refused_quickly_while_other_actors_answer() {
    let pending_max = 8;
    let server = start(1, |c| {
        c.limits.actor_pending_max = pending_max;
    });
    let addr = server.local_addr();
    let mut rivet = Rivet::connect(addr);
    let hot = rivet.get_or_create("ring", "hot");
    let calm = rivet.get_or_create("ring", "calm");
    // A flood of slow calls on one actor, from 40 connections at once.
    let (done_tx, done_rx) = mpsc::channel();
    for _ in 0..40 {
        let done_tx = done_tx.clone();
        let hot = hot.clone();
        thread::spawn(move || {
            let mut rivet = Rivet::connect(addr);
            let started = Instant::now();
            let reply = rivet.action(&hot, "slow", json!([1_000]));
            let _ = done_tx.send((reply.status, reply.json(), started.elapsed()));
        });
    }
    drop(done_tx);
    // While the flood is on, an unrelated actor of the same shard answers at once.
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    assert_eq!(rivet.call(&calm, "ping", json!([])), json!("pong"));
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "not stuck behind the flood"
    );
    let mut ok = 0;
    let mut refused = 0;
    for (status, body, elapsed) in done_rx {
        match status {
            200 => ok += 1,
            503 => {
                assert_eq!(body["group"], "actor");
                assert_eq!(body["code"], "overloaded");
                assert!(
                    elapsed < Duration::from_millis(900),
                    "refused at once, not queued"
                );
                refused += 1;
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(ok + refused, 40);
    assert_eq!(ok, pending_max, "exactly the bound was admitted");
    server.stop().unwrap();
}

#[test]
fn create_makes_the_actor_at_once() {
    for shards in [1, 2] {
        let server = start(shards, |_| {});
        let mut rivet = Rivet::connect(server.local_addr());
        let id = rivet.get_or_create("ring", "creator");
        assert_eq!(
            rivet.call(&id, "createAndUse", json!([format!("created-{shards}")])),
            json!({"failed": "first", "pong": "pong", "again": "duplicate_key", "echoed": []})
        );
        server.stop().unwrap();
    }
}

#[test]
fn owned_calls_move_values_on_the_same_shard_and_encode_them_elsewhere() {
    let server = start(2, |_| {});
    let mut rivet = Rivet::connect(server.local_addr());
    let caller = "typed-caller";
    let same = (0..)
        .map(|i| format!("typed-same-{i}"))
        .find(|k| shard_of("typed", k, 2) == shard_of("typed", caller, 2))
        .unwrap();
    let other = (0..)
        .map(|i| format!("typed-other-{i}"))
        .find(|k| shard_of("typed", k, 2) != shard_of("typed", caller, 2))
        .unwrap();
    let id = rivet.get_or_create("typed", caller);
    let mut call = |target: &str, action: &str, n: u64, how: &str| {
        let before = probe_counts();
        let reply = rivet.call(&id, "call", json!([target, action, n, how]));
        let after = probe_counts();
        (reply, after.0 - before.0, after.1 - before.1)
    };
    // Warm up: create both targets.
    call(&same, "double", 0, "typed");
    call(&other, "double", 0, "typed");

    // Same shard, exact types: the values are moved, never encoded or decoded, for synchronous
    // and asynchronous actions alike.
    for action in ["double", "doubleLater"] {
        assert_eq!(
            call(&same, action, 21, "typed"),
            (json!({"ok": 42}), 0, 0),
            "{action}"
        );
    }
    // Another shard: the same call, encoded (arguments once, output once, and decoded on
    // each side).
    let (reply, encoded, decoded) = call(&other, "double", 21, "typed");
    assert_eq!(reply, json!({"ok": 42}));
    assert_eq!((encoded, decoded), (2, 2));
    // Same shard, output type differs: the arguments are moved, the output is encoded.
    assert_eq!(
        call(&same, "double", 5, "u64-out"),
        (json!({"ok": 10}), 1, 0)
    );
    // Same shard, argument types differ: encoded and decoded; the output is still moved.
    assert_eq!(
        call(&same, "double", 5, "u64-in"),
        (json!({"ok": 10}), 0, 1)
    );
    // `call` always encodes.
    let (reply, encoded, decoded) = call(&same, "double", 4, "json");
    assert_eq!(reply, json!({"ok": 8}));
    assert_eq!((encoded, decoded), (2, 1));
    // A callee's UserError comes back with its code and metadata on the typed path too.
    assert_eq!(
        call(&same, "refuse", 3, "typed").0,
        json!({"group": "user", "code": "typed_refusal", "metadata": {"n": 3}})
    );
    assert_eq!(
        call(&same, "noSuchAction", 3, "typed").0,
        json!({"group": "action", "code": "not_found", "metadata": null})
    );
    server.stop().unwrap();
}
