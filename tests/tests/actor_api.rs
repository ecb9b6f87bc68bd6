//! The actor API's promises, checked over real sockets: async actions interleave with other
//! actions of the same actor, panics and errors are masked and the shard keeps serving, typed
//! arguments decode (with optional trailing ones).

use std::time::Duration;

use pinion_runtime::{
    ActionError, ActionResult, Actions, Actor, ActorInfo, Config, Registry, Server, UserError,
    Value, sys,
};
use pinion_tests::{Rivet, test_config};
use serde::Deserialize;
use serde_json::json;

struct Gate;

struct GateState {
    count: i64,
    log: Vec<String>,
}

#[derive(Deserialize)]
struct Point {
    x: i64,
    y: i64,
}

impl Actor for Gate {
    const NAME: &'static str = "gate";
    type State = GateState;
    type Vars = u32;
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<GateState> {
        Ok(GateState {
            count: 0,
            log: Vec::new(),
        })
    }

    fn create_vars(_: &ActorInfo, _: &GateState) -> u32 {
        7
    }

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action_async("slowIncrement", |c, (ms,): (u64,)| async move {
                c.state_mut(|s| s.log.push("slow started".into()));
                sys::sleep(Duration::from_millis(ms)).await;
                Ok(c.state_mut(|s| {
                    s.count += 1;
                    s.log.push("slow finished".into());
                    s.count
                }))
            })
            .action("getCount", |c, ()| {
                c.state.log.push("getCount".into());
                Ok(c.state.count)
            })
            .action("log", |c, ()| Ok(c.state.log.clone()))
            .action("vars", |c, ()| Ok(*c.vars))
            .action("panicSync", |_, ()| -> ActionResult<()> {
                panic!("secret sync panic")
            })
            .action_async("panicAsync", |_, ()| async move {
                sys::sleep(Duration::from_millis(1)).await;
                if true {
                    panic!("secret async panic");
                }
                Ok(())
            })
            .action_async("userErrorAsync", |_, ()| async move {
                sys::sleep(Duration::from_millis(1)).await;
                Err::<(), _>(
                    UserError::new("Async nope")
                        .code("async_nope")
                        .metadata(json!({"n": 1}))
                        .into(),
                )
            })
            .action("internalError", |_, ()| -> ActionResult<()> {
                let parsed: Result<u32, _> = "not a number".parse::<u32>();
                parsed?;
                Err(ActionError::internal("unreachable"))
            })
            .action(
                "typed",
                |_, (point, label, scale): (Point, String, Option<i64>)| {
                    let scale = scale.unwrap_or(1);
                    Ok(json!({"sum": (point.x + point.y) * scale, "label": label}))
                },
            )
            .action("nothing", |_, ()| Ok(()));
    }
}

/// Counts its transformed outputs in its state, and rewrites async, undefined and failing
/// outputs too.
struct Wrapper;

impl Actor for Wrapper {
    const NAME: &'static str = "wrapper";
    type State = i64;
    type Vars = ();
    type ConnState = ();
    const TRANSFORMS_OUTPUT: bool = true;

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<i64> {
        Ok(0)
    }

    fn create_vars(_: &ActorInfo, _: &i64) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action_async("later", |_, (x,): (i64,)| async move {
                sys::sleep(Duration::from_millis(1)).await;
                Ok(x * 2)
            })
            .action("nothing", |_, ()| Ok(()))
            .action("secret", |_, ()| Ok("hide me"));
    }

    fn on_before_action_response(
        c: &mut pinion_runtime::ActionCtx<'_, Self>,
        action: &str,
        args: &[Value],
        output: Option<Value>,
    ) -> ActionResult<Option<Value>> {
        *c.state += 1;
        if action == "secret" {
            return Err(UserError::new("Redacted").code("redacted").into());
        }
        let described =
            json!({"action": action, "args": args.len(), "output": output, "seen": *c.state});
        Ok(Some(pinion_runtime::value::to_value(&described)?))
    }
}

fn start(shards: usize) -> Server {
    let registry = Registry::new().register::<Gate>().register::<Wrapper>();
    Server::start(
        registry,
        Config {
            shards: Some(shards),
            ..test_config()
        },
    )
    .unwrap()
}

#[test]
fn on_before_action_response_sees_sync_async_and_undefined_outputs() {
    let server = start(2);
    let mut rivet = Rivet::connect(server.local_addr());
    let id = rivet.get_or_create("wrapper", "w");
    assert_eq!(
        rivet.call(&id, "later", json!([21, "extra"])),
        json!({"action": "later", "args": 2, "output": 42, "seen": 1})
    );
    assert_eq!(
        rivet.call(&id, "nothing", json!([])),
        json!({"action": "nothing", "args": 0, "output": null, "seen": 2})
    );
    let redacted = rivet.action(&id, "secret", json!([]));
    assert_eq!(redacted.status, 400);
    assert_eq!(redacted.json()["code"], "redacted");
    assert!(!redacted.text().contains("hide me"));
    server.stop().unwrap();
}

#[test]
fn async_actions_interleave_with_other_actions() {
    for shards in [1, 2] {
        let server = start(shards);
        let addr = server.local_addr();
        let mut a = Rivet::connect(addr);
        let id = a.get_or_create("gate", "interleave");
        // Start the slow action on connection A, without reading its answer yet.
        a.send_action(&id, "slowIncrement", json!([400]));
        std::thread::sleep(Duration::from_millis(50));
        // Another action of the same actor runs while the slow one awaits.
        let mut b = Rivet::connect(addr);
        assert_eq!(b.call(&id, "getCount", json!([])), 0);
        assert_eq!(a.conn.read_reply().unwrap().json()["output"], 1);
        assert_eq!(
            b.call(&id, "log", json!([])),
            json!(["slow started", "getCount", "slow finished"])
        );
        server.stop().unwrap();
    }
}

#[test]
fn errors_and_panics_are_masked_and_the_shard_keeps_serving() {
    let server = start(2);
    let mut rivet = Rivet::connect(server.local_addr());
    let id = rivet.get_or_create("gate", "errors");
    for action in ["panicSync", "panicAsync", "internalError"] {
        let reply = rivet.action(&id, action, json!([]));
        assert_eq!(reply.status, 500, "{action}");
        assert_eq!(reply.json()["code"], "internal_error");
        assert!(
            !reply.text().contains("secret") && !reply.text().contains("number"),
            "{action} leaked: {}",
            reply.text()
        );
        assert_eq!(
            rivet.call(&id, "getCount", json!([])),
            0,
            "still serving after {action}"
        );
    }
    let user = rivet.action(&id, "userErrorAsync", json!([]));
    assert_eq!(user.status, 400);
    assert_eq!(
        user.json(),
        json!({"group": "user", "code": "async_nope", "message": "Async nope", "metadata": {"n": 1}})
    );
    server.stop().unwrap();
}

#[test]
fn typed_arguments_vars_and_undefined() {
    let server = start(1);
    let mut rivet = Rivet::connect(server.local_addr());
    let id = rivet.get_or_create("gate", "typed");
    assert_eq!(
        rivet.call(&id, "typed", json!([{"x": 2, "y": 3}, "five"])),
        json!({"sum": 5, "label": "five"})
    );
    assert_eq!(
        rivet.call(&id, "typed", json!([{"x": 2, "y": 3}, "ten", 2, "ignored"])),
        json!({"sum": 10, "label": "ten"})
    );
    let missing = rivet.action(&id, "typed", json!([{"x": 2}]));
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json()["group"], "request");
    assert_eq!(rivet.call(&id, "vars", json!([])), 7);
    // `()` is RivetKit's `undefined`: no `output` field at all.
    let nothing = rivet.action(&id, "nothing", json!([]));
    assert_eq!(nothing.status, 200);
    assert_eq!(nothing.json(), json!({}));
    server.stop().unwrap();
}

#[test]
fn a_closed_connection_does_not_disturb_a_running_action() {
    let server = start(2);
    let addr = server.local_addr();
    let mut a = Rivet::connect(addr);
    let id = a.get_or_create("gate", "abandon");
    a.send_action(&id, "slowIncrement", json!([100]));
    drop(a);
    std::thread::sleep(Duration::from_millis(250));
    let mut b = Rivet::connect(addr);
    // The abandoned action still ran to completion (like RivetKit: the client going away does not
    // cancel an action), and its late reply was dropped without harm.
    assert_eq!(b.call(&id, "getCount", json!([])), 1);
    server.stop().unwrap();
}
