//! RivetKit connections (`/gateway/{id}/connect`, RIVETKIT_PROTOCOL.md §8) and raw WebSockets
//! (`/gateway/{id}/websocket/…`, §10) end to end, over real sockets, with the test crate's own
//! WebSocket client. Frames are compared as whole JSON values, so a missing or extra field
//! fails as surely as a wrong value.
//!
//! The tests named `two_shards_*` need WebSockets to move from the accepting shard to the
//! owning one (`Accepted::handoff`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use pinion_runtime::{Config, NetDriver};
use pinion_tests::ws::{
    self, Frame, Next, OP_BINARY, OP_CONTINUATION, OP_TEXT, Ws, client_frame, encode_uri_component,
    text_frame,
};
use pinion_tests::{Rivet, start_with, test_config};
use serde_json::{Value, json};

/// What the official client offers for a JSON connection without params.
const JSON_PROTOCOLS: &str = "rivet,rivet_encoding.json";

/// The fixed message of every masked internal error.
const INTERNAL_MESSAGE: &str = "Internal error. Read the server logs for more details.";

/// How long a test waits to be sure that nothing arrives.
const QUIET: Duration = Duration::from_millis(200);

/// Runs `test` against a fresh server with `shards` shards on each network driver (their
/// WebSocket transports and, with two shards, their adoption of moved sockets differ).
fn on_each_driver(shards: usize, test: impl Fn(SocketAddr)) {
    for net_driver in [NetDriver::Uring, NetDriver::Glommio] {
        eprintln!("--- {shards} shard(s), {net_driver:?} driver");
        let server = start_with(Config {
            shards: Some(shards),
            net_driver,
            ..test_config()
        });
        test(server.local_addr());
        server.stop().unwrap();
    }
}

fn connect_path(id: &str) -> String {
    format!("/gateway/{id}/connect")
}

fn big(id: u64) -> Value {
    json!(["$BigInt", id.to_string()])
}

fn action_request(id: u64, name: &str, args: &Value) -> String {
    json!({"body": {"tag": "ActionRequest", "val": {"id": big(id), "name": name, "args": args}}})
        .to_string()
}

fn subscription_request(event: &str, subscribe: bool) -> String {
    json!({"body": {"tag": "SubscriptionRequest", "val": {"eventName": event, "subscribe": subscribe}}})
        .to_string()
}

fn response(id: u64, output: Value) -> Value {
    json!({"body": {"tag": "ActionResponse", "val": {"id": big(id), "output": output}}})
}

fn event(name: &str, args: Value) -> Value {
    json!({"body": {"tag": "Event", "val": {"name": name, "args": args}}})
}

/// An `Error` frame for action `id`; `metadata` `None` means the field must be absent.
fn error_frame(id: u64, group: &str, code: &str, message: &str, metadata: Option<Value>) -> Value {
    let mut val = json!({"group": group, "code": code, "message": message, "actionId": big(id)});
    if let Some(metadata) = metadata {
        val["metadata"] = metadata;
    }
    json!({"body": {"tag": "Error", "val": val}})
}

/// A lowercase version-4 UUID (`xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`).
fn is_uuid_v4(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        && groups[2].starts_with('4')
        && groups[3].starts_with(['8', '9', 'a', 'b'])
}

/// Checks an `Init` frame for `actor_id`; returns its connection id.
fn assert_init(frame: &Value, actor_id: &str) -> String {
    let connection_id = frame["body"]["val"]["connectionId"]
        .as_str()
        .unwrap_or_else(|| panic!("not an Init frame: {frame}"))
        .to_string();
    assert_eq!(
        *frame,
        json!({"body": {"tag": "Init", "val": {"actorId": actor_id, "connectionId": connection_id}}})
    );
    assert!(is_uuid_v4(&connection_id), "{connection_id}");
    connection_id
}

/// A RivetKit connection (what `handle.connect()` opens), JSON encoding.
struct RivetWs {
    ws: Ws,
    next_id: u64,
    connection_id: String,
}

impl RivetWs {
    /// Connects to actor `actor_id` offering `rivet, rivet_encoding.json` (and the params, if
    /// any, as the official client does) and reads `Init`.
    fn open(addr: SocketAddr, actor_id: &str, params: Option<&Value>) -> RivetWs {
        let protocols = match params {
            Some(params) => format!(
                "{JSON_PROTOCOLS},rivet_conn_params.{}",
                encode_uri_component(&params.to_string())
            ),
            None => JSON_PROTOCOLS.to_string(),
        };
        let (reply, mut ws) = Ws::connect(addr, &connect_path(actor_id), Some(&protocols));
        assert_eq!(reply.header("sec-websocket-protocol"), Some("rivet"));
        let connection_id = assert_init(&ws.read_json(), actor_id);
        RivetWs {
            ws,
            next_id: 0,
            connection_id,
        }
    }

    /// Sends an `ActionRequest` with the next id; returns the id.
    fn send_action(&mut self, name: &str, args: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.ws.send_text(&action_request(id, name, &args));
        id
    }

    /// Sends an action and returns the next frame (its response or error, when no event is
    /// expected first).
    fn call(&mut self, name: &str, args: Value) -> Value {
        self.send_action(name, args);
        self.ws.read_json()
    }

    /// Calls an action that must succeed; the next frame must be its response. Returns the
    /// output.
    fn call_ok(&mut self, name: &str, args: Value) -> Value {
        let id = self.send_action(name, args);
        // A heartbeat ping may come first (tests with a short `ws_heartbeat`): answer it, as a
        // client does, and read on.
        let frame = loop {
            match self.ws.read() {
                Frame::Ping(payload) => self.ws.send_frame(true, 0xA, &payload),
                Frame::Text(text) => {
                    break serde_json::from_str::<Value>(&text)
                        .unwrap_or_else(|error| panic!("frame is not JSON ({error}): {text:?}"));
                }
                other => panic!("{name}: expected the response, got {other:?}"),
            }
        };
        assert_eq!(
            frame["body"]["tag"], "ActionResponse",
            "{name}: expected the response to id {id}, got {frame}"
        );
        assert_eq!(frame["body"]["val"]["id"], big(id), "{frame}");
        frame["body"]["val"]["output"].clone()
    }

    fn subscribe(&mut self, event: &str, subscribe: bool) {
        self.ws.send_text(&subscription_request(event, subscribe));
    }
}

#[test]
fn accept_key_matches_the_rfc_example() {
    // RFC 6455 §1.3, so the handshake check of every other test is itself checked.
    assert_eq!(
        ws::accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert_eq!(
        encode_uri_component(r#"{"userId":"alice","token":"ok"}"#),
        "%7B%22userId%22%3A%22alice%22%2C%22token%22%3A%22ok%22%7D"
    );
}

#[test]
fn counter_connection_init_actions_and_errors() {
    on_each_driver(1, |addr| {
        let mut http = Rivet::connect(addr);
        let id = http.get_or_create("counter", "rt-basic");

        let (reply, mut ws) = Ws::connect(addr, &connect_path(&id), Some(JSON_PROTOCOLS));
        assert_eq!(reply.header("sec-websocket-protocol"), Some("rivet"));
        let init = ws.read_json();
        let connection_id = assert_init(&init, &id);
        let mut conn = RivetWs {
            ws,
            next_id: 0,
            connection_id,
        };

        assert_eq!(conn.call("increment", json!([5])), response(0, json!(5)));
        assert_eq!(conn.call("getCount", json!([])), response(1, json!(5)));
        // An empty argument list means `amount = 1`.
        assert_eq!(conn.call("increment", json!([])), response(2, json!(6)));
        assert_eq!(
            conn.call("whoAmI", json!([])),
            response(
                3,
                json!({"name": "counter", "key": ["rt-basic"], "actorId": id})
            )
        );

        // Unknown action: an Error frame for that id, and the connection stays open.
        assert_eq!(
            conn.call("nope", json!([])),
            error_frame(
                4,
                "action",
                "not_found",
                "Action 'nope' not found. Validate the action exists on your actor.",
                None
            )
        );
        // Arguments of the wrong type.
        let bad_args = conn.call("increment", json!(["five"]));
        assert_eq!(bad_args["body"]["tag"], "Error", "{bad_args}");
        assert_eq!(bad_args["body"]["val"]["group"], "request", "{bad_args}");
        assert_eq!(bad_args["body"]["val"]["code"], "invalid", "{bad_args}");
        assert_eq!(bad_args["body"]["val"]["actionId"], big(5), "{bad_args}");
        // Ids are echoed whatever their value (the client counts from 0, but any u64 is an id).
        conn.ws
            .send_text(&action_request(u64::MAX, "getCount", &json!([])));
        assert_eq!(conn.ws.read_json(), response(u64::MAX, json!(6)));
        // The state is shared with the stateless HTTP path.
        assert_eq!(http.call(&id, "getCount", json!([])), 6);
        // A user error without metadata has no `metadata` field.
        conn.ws
            .send_text(&action_request(6, "increment", &json!([i64::MAX])));
        assert_eq!(
            conn.ws.read_json(),
            error_frame(6, "user", "overflow", "The count would overflow.", None)
        );
        // Pings are answered with pongs, between messages.
        conn.ws.send_ping(b"are you there");
        assert_eq!(conn.ws.read(), Frame::Pong(b"are you there".to_vec()));
        conn.ws
            .send_text(&action_request(7, "getCount", &json!([])));
        assert_eq!(conn.ws.read_json(), response(7, json!(6)));

        // A user error with metadata, and a masked internal error, on another actor.
        let profile = http.get_or_create("profile", "rt-basic-profile");
        let mut conn = RivetWs::open(addr, &profile, None);
        assert_eq!(
            conn.call("setName", json!(["x"])),
            error_frame(
                0,
                "user",
                "name_too_short",
                "Name too short",
                Some(json!({"minLength": 3, "actual": 1}))
            )
        );
        conn.send_action("boom", json!([]));
        let boom = conn.ws.read_text();
        assert!(!boom.contains("secret"), "{boom}");
        assert_eq!(
            serde_json::from_str::<Value>(&boom).unwrap(),
            error_frame(
                1,
                "internal",
                "internal_error",
                INTERNAL_MESSAGE,
                Some(json!({}))
            )
        );
        // Errors do not close the connection.
        assert_eq!(
            conn.call("setName", json!(["Zoë"])),
            response(2, json!("Zoë"))
        );
        assert_eq!(conn.call("getName", json!([])), response(3, json!("Zoë")));

        // No demo actor has an action returning `undefined` (an ActionResponse without `output`,
        // §8.2), so that case is not covered here.
    });
}

#[test]
fn connection_ids_are_distinct() {
    on_each_driver(1, |addr| {
        let id = Rivet::connect(addr).get_or_create("counter", "rt-conn-ids");
        let a = RivetWs::open(addr, &id, None);
        let b = RivetWs::open(addr, &id, None);
        assert_ne!(a.connection_id, b.connection_id);
    });
}

#[test]
fn events_reach_subscribers_only_and_precede_the_response() {
    on_each_driver(1, |addr| {
        let mut http = Rivet::connect(addr);
        let id = http.get_or_create("counter", "rt-events");
        let mut subscriber = RivetWs::open(addr, &id, None);
        let mut other = RivetWs::open(addr, &id, None);

        // The Event of an increment comes before its ActionResponse.
        subscriber.subscribe("count", true);
        subscriber.send_action("increment", json!([2]));
        assert_eq!(subscriber.ws.read_json(), event("count", json!([2])));
        assert_eq!(subscriber.ws.read_json(), response(0, json!(2)));

        // The connection that did not subscribe got nothing: its next frame is the response to
        // its own call (sent after the event was queued on the same shard).
        assert_eq!(other.call("getCount", json!([])), response(0, json!(2)));

        // An increment by the other connection reaches the subscriber only.
        assert_eq!(other.call("increment", json!([3])), response(1, json!(5)));
        assert_eq!(subscriber.ws.read_json(), event("count", json!([5])));

        // A stateless HTTP increment reaches the subscriber too.
        assert_eq!(http.call(&id, "increment", json!([1])), 6);
        assert_eq!(subscriber.ws.read_json(), event("count", json!([6])));
        assert_eq!(other.call("getCount", json!([])), response(2, json!(6)));

        // Subscribing twice still delivers each event once.
        subscriber.subscribe("count", true);
        assert_eq!(http.call(&id, "increment", json!([1])), 7);
        assert_eq!(subscriber.ws.read_json(), event("count", json!([7])));
        assert_eq!(
            subscriber.call("getCount", json!([])),
            response(1, json!(7))
        );

        // After unsubscribing, no more events: the response to a later call is the next frame.
        subscriber.subscribe("count", false);
        // A round trip on the same connection first: messages of one connection are handled
        // in order, so the unsubscribe is in effect before the HTTP call (another connection,
        // which the server may otherwise serve first).
        assert_eq!(
            subscriber.call("getCount", json!([])),
            response(2, json!(7))
        );
        assert_eq!(http.call(&id, "increment", json!([1])), 8);
        assert_eq!(
            subscriber.call("increment", json!([1])),
            response(3, json!(9))
        );
        assert_eq!(
            subscriber.call("getCount", json!([])),
            response(4, json!(9))
        );
        subscriber.ws.expect_silence(QUIET);
        other.ws.expect_silence(QUIET);

        // Subscribing to an event nobody emits, and unsubscribing from one never subscribed,
        // are harmless.
        subscriber.subscribe("nothing", true);
        subscriber.subscribe("never", false);
        assert_eq!(
            subscriber.call("getCount", json!([])),
            response(5, json!(9))
        );

        // A subscriber that went away is skipped by later broadcasts.
        let mut gone = RivetWs::open(addr, &id, None);
        gone.subscribe("count", true);
        assert_eq!(gone.call("getCount", json!([])), response(0, json!(9)));
        gone.ws.shutdown();
        other.subscribe("count", true);
        assert_eq!(
            other.call("increment", json!([1])),
            event("count", json!([10]))
        );
        assert_eq!(other.ws.read_json(), response(3, json!(10)));
        assert_eq!(http.call(&id, "increment", json!([1])), 11);
        assert_eq!(other.ws.read_json(), event("count", json!([11])));
    });
}

#[test]
fn a_hundred_actions_in_one_write() {
    on_each_driver(1, |addr| {
        let id = Rivet::connect(addr).get_or_create("counter", "rt-burst");
        let mut conn = RivetWs::open(addr, &id, None);
        let burst: Vec<u8> = (0..100u64)
            .flat_map(|i| text_frame(&action_request(i, "increment", &json!([1]))))
            .collect();
        conn.ws.write_raw(&burst);
        let mut outputs = BTreeMap::new();
        for _ in 0..100 {
            let frame = conn.ws.read_json();
            assert_eq!(frame["body"]["tag"], "ActionResponse", "{frame}");
            let id: u64 = frame["body"]["val"]["id"][1]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(frame, response(id, frame["body"]["val"]["output"].clone()));
            assert!(
                outputs
                    .insert(id, frame["body"]["val"]["output"].as_i64().unwrap())
                    .is_none(),
                "id {id} answered twice"
            );
        }
        // Messages are handled in order and increments are atomic: request i saw count i + 1.
        let expected: BTreeMap<u64, i64> = (0..100).map(|i| (i, i as i64 + 1)).collect();
        assert_eq!(outputs, expected);
        conn.ws.expect_silence(QUIET);
    });
}

#[test]
fn chat_room_params_conn_state_and_conn_send() {
    on_each_driver(1, |addr| {
        let mut http = Rivet::connect(addr);
        let room = http.get_or_create("chatRoom", "rt-chat");

        let mut alice = RivetWs::open(
            addr,
            &room,
            Some(&json!({"userId": "alice", "token": "ok"})),
        );
        // Params that need escaping beyond the JSON punctuation.
        let mut bob = RivetWs::open(addr, &room, Some(&json!({"userId": "bob / Zoë & co"})));
        let mut carol = RivetWs::open(addr, &room, None);
        assert_eq!(alice.call_ok("whoAmI", json!([])), "alice");
        assert_eq!(bob.call_ok("whoAmI", json!([])), "bob / Zoë & co");
        assert_eq!(carol.call_ok("whoAmI", json!([])), "anonymous");

        // `conn.send` reaches every other connection, subscribed or not, and not the sender.
        alice.send_action("notifyOthers", json!(["hi"]));
        assert_eq!(alice.ws.read_json(), response(1, json!(2)));
        let note = event("notification", json!([{"from": "alice", "text": "hi"}]));
        assert_eq!(bob.ws.read_json(), note);
        assert_eq!(carol.ws.read_json(), note);
        assert_eq!(alice.call("whoAmI", json!([])), response(2, json!("alice")));

        // A stateless caller is an (ephemeral) connection too: it counts the three realtime ones
        // and is "anonymous".
        assert_eq!(http.call(&room, "notifyOthers", json!(["from http"])), 3);
        let note = event(
            "notification",
            json!([{"from": "anonymous", "text": "from http"}]),
        );
        for conn in [&mut alice, &mut bob, &mut carol] {
            assert_eq!(conn.ws.read_json(), note);
        }

        // Broadcasts reach subscribers only; the sender's event precedes its response.
        bob.subscribe("message", true);
        alice.subscribe("message", true);
        alice.send_action("send", json!(["yo"]));
        assert_eq!(alice.ws.read_json(), event("message", json!(["alice: yo"])));
        assert_eq!(alice.ws.read_json(), response(3, json!("alice: yo")));
        assert_eq!(bob.ws.read_json(), event("message", json!(["alice: yo"])));
        assert_eq!(
            carol.call("history", json!([])),
            response(1, json!(["alice: yo"]))
        );

        // A closed connection is no longer counted.
        carol.ws.send_close(1000, "Disposed");
        match carol.ws.read() {
            Frame::Close(code, _) => assert_eq!(code, Some(1000)),
            other => panic!("expected the close echo, got {other:?}"),
        }
        carol.ws.expect_eof();
        assert_eq!(bob.call_ok("notifyOthers", json!(["bye"])), 1);
        assert_eq!(
            alice.ws.read_json(),
            event(
                "notification",
                json!([{"from": "bob / Zoë & co", "text": "bye"}])
            )
        );
    });
}

#[test]
fn chat_room_rejections_close_with_1011_and_no_init() {
    on_each_driver(1, |addr| {
        let room = Rivet::connect(addr).get_or_create("chatRoom", "rt-chat-reject");
        let rejected = |protocols: String| {
            let (reply, mut ws) = Ws::connect(addr, &connect_path(&room), Some(&protocols));
            assert_eq!(reply.header("sec-websocket-protocol"), Some("rivet"));
            ws.expect_close()
        };
        let params = |json: &str| format!("{JSON_PROTOCOLS},rivet_conn_params.{json}");

        // onBeforeConnect refuses the token: 101, then close 1011 "forbidden" as the first frame.
        let bad_token = encode_uri_component(r#"{"userId":"mallory","token":"bad"}"#);
        assert_eq!(
            rejected(params(&bad_token)),
            (Some(1011), "forbidden".to_string())
        );
        // Params that are not JSON.
        // Params that are not JSON: `params/invalid`.
        assert_eq!(
            rejected(params(&encode_uri_component("{not json"))),
            (Some(1011), "invalid".to_string())
        );
        // Params that do not percent-decode.
        assert_eq!(rejected(params("%zz")), (Some(1011), "invalid".to_string()));

        // The actor keeps serving.
        let mut ok = RivetWs::open(addr, &room, Some(&json!({"userId": "ann", "token": "ok"})));
        assert_eq!(ok.call_ok("whoAmI", json!([])), "ann");
    });
}

#[test]
fn unsupported_encoding_closes_with_1011() {
    on_each_driver(1, |addr| {
        let id = Rivet::connect(addr).get_or_create("counter", "rt-encoding");
        for encoding in ["cbor", "bare"] {
            let (reply, mut ws) = Ws::connect(
                addr,
                &connect_path(&id),
                Some(&format!("rivet,rivet_encoding.{encoding}")),
            );
            assert_eq!(reply.header("sec-websocket-protocol"), Some("rivet"));
            // `encoding/invalid`.
            assert_eq!(
                ws.expect_close(),
                (Some(1011), "invalid".to_string()),
                "{encoding}"
            );
        }
        // No encoding offered: JSON.
        let (reply, mut ws) = Ws::connect(addr, &connect_path(&id), Some("rivet"));
        assert_eq!(reply.header("sec-websocket-protocol"), Some("rivet"));
        assert_init(&ws.read_json(), &id);
        ws.send_text(&action_request(0, "increment", &json!([1])));
        assert_eq!(ws.read_json(), response(0, json!(1)));
    });
}

#[test]
fn no_subprotocol_offered_selects_none() {
    on_each_driver(1, |addr| {
        let mut http = Rivet::connect(addr);
        let id = http.get_or_create("counter", "rt-no-protocol");
        let (reply, mut ws) = Ws::connect(addr, &connect_path(&id), None);
        assert_eq!(reply.header("sec-websocket-protocol"), None, "{reply:?}");
        assert_init(&ws.read_json(), &id);
        ws.send_text(&action_request(0, "increment", &json!([4])));
        assert_eq!(ws.read_json(), response(0, json!(4)));

        // Offered with spaces after the commas, as browsers write the list.
        let (reply, mut ws) =
            Ws::connect(addr, &connect_path(&id), Some("rivet, rivet_encoding.json"));
        assert_eq!(reply.header("sec-websocket-protocol"), Some("rivet"));
        assert_init(&ws.read_json(), &id);

        // Only unknown subprotocols offered: none selected.
        let (reply, mut ws) = Ws::connect(addr, &connect_path(&id), Some("graphql-ws"));
        assert_eq!(reply.header("sec-websocket-protocol"), None, "{reply:?}");
        assert_init(&ws.read_json(), &id);
    });
}

#[test]
fn malformed_messages_close_with_1011_and_the_server_keeps_serving() {
    on_each_driver(1, |addr| {
        let id = Rivet::connect(addr).get_or_create("counter", "rt-malformed");
        let malformed = [
            "not json".to_string(),
            // A plain numeric id instead of a $BigInt (the reference closes too, §8.3).
            r#"{"body":{"tag":"ActionRequest","val":{"id":5,"name":"increment","args":[]}}}"#
                .to_string(),
            r#"{"body":{"tag":"Nope","val":{}}}"#.to_string(),
            r#"{"body":{"tag":"ActionRequest","val":{"name":"increment","args":[]}}}"#.to_string(),
            "{}".to_string(),
        ];
        for message in &malformed {
            let mut conn = RivetWs::open(addr, &id, None);
            // A good action first, so the close is seen to come after its response.
            assert_eq!(conn.call("getCount", json!([])), response(0, json!(0)));
            conn.ws.send_text(message);
            let (code, reason) = conn.ws.expect_close();
            assert_eq!(code, Some(1011), "{message}: {reason}");
        }
        // Text that is not UTF-8 fails the WebSocket itself: 1007.
        let mut conn = RivetWs::open(addr, &id, None);
        conn.ws.send_frame(true, OP_TEXT, b"{\"body\":\xff}");
        let (code, reason) = conn.ws.expect_close();
        assert_eq!(code, Some(1007), "{reason}");
        // A fresh connection works, and the actor's state is intact.
        let mut conn = RivetWs::open(addr, &id, None);
        assert_eq!(conn.call("increment", json!([1])), response(0, json!(1)));
    });
}

#[test]
fn messages_over_the_action_body_limit_close_with_1009() {
    const LIMIT: usize = 64 * 1024;
    on_each_driver(1, |addr| {
        let id = Rivet::connect(addr).get_or_create("counter", "rt-too-big");
        // An `echo` request padded to exactly `len` bytes.
        let request_of_len = |request_id: u64, len: usize| {
            let empty = action_request(request_id, "echo", &json!([""]));
            let text = action_request(request_id, "echo", &json!(["x".repeat(len - empty.len())]));
            assert_eq!(text.len(), len);
            text
        };

        // Exactly at the limit: answered (the response needs a 64-bit length).
        let mut conn = RivetWs::open(addr, &id, None);
        let at_limit = request_of_len(0, LIMIT);
        let padding = "x".repeat(LIMIT - action_request(0, "echo", &json!([""])).len());
        conn.ws.send_text(&at_limit);
        assert_eq!(conn.ws.read_json(), response(0, json!([padding])));

        // One byte more: closed with 1009.
        conn.ws.send_text(&request_of_len(1, LIMIT + 1));
        assert_eq!(
            conn.ws.expect_close(),
            (Some(1009), "incoming_too_long".to_string())
        );

        // The same as a binary message.
        let mut conn = RivetWs::open(addr, &id, None);
        conn.ws.send_binary(request_of_len(0, LIMIT + 1).as_bytes());
        assert_eq!(
            conn.ws.expect_close(),
            (Some(1009), "incoming_too_long".to_string())
        );

        // Too big when reassembled from fragments of acceptable size.
        let mut conn = RivetWs::open(addr, &id, None);
        let text = request_of_len(0, LIMIT + 100);
        let (first, second) = text.as_bytes().split_at(LIMIT / 2);
        conn.ws.send_frame(false, OP_TEXT, first);
        conn.ws.send_frame(true, OP_CONTINUATION, second);
        assert_eq!(
            conn.ws.expect_close(),
            (Some(1009), "incoming_too_long".to_string())
        );

        let mut conn = RivetWs::open(addr, &id, None);
        assert_eq!(conn.call("getCount", json!([])), response(0, json!(0)));
    });
}

#[test]
fn lifecycle_hooks_of_a_connection_closed_cleanly() {
    on_each_driver(1, |addr| {
        let mut http = Rivet::connect(addr);
        let id = http.get_or_create("lifecycle", "rt-life-close");
        let mut conn = RivetWs::open(addr, &id, None);
        assert_eq!(
            conn.call_ok("events", json!([])),
            json!(["onCreate", "onWake", "onConnect"])
        );
        conn.ws.send_close(1000, "Disposed");
        // The server echoes the code (the reference also echoes the reason, §8.7; the RFC only
        // asks for the code).
        match conn.ws.read() {
            Frame::Close(code, _) => assert_eq!(code, Some(1000)),
            other => panic!("expected the close echo, got {other:?}"),
        }
        conn.ws.expect_eof();
        // §12: onCreate, onWake, then per connection onConnect … onDisconnect; the stateless call
        // is an ephemeral connection whose onDisconnect runs after its output is taken.
        assert_eq!(
            http.call(&id, "events", json!([])),
            json!([
                "onCreate",
                "onWake",
                "onConnect",
                "onDisconnect",
                "onConnect"
            ])
        );
    });
}

/// Polls the stateless `events()` of a lifecycle actor until every connection but the calling
/// one has disconnected (bounded); returns the last snapshot.
fn events_once_settled(http: &mut Rivet, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let events = http.call(id, "events", json!([]));
        let count = |name: &str| {
            events
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| *e == name)
                .count()
        };
        if count("onConnect") == count("onDisconnect") + 1 || Instant::now() > deadline {
            return events;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lifecycle_hooks_of_a_dropped_socket() {
    on_each_driver(1, |addr| {
        let mut http = Rivet::connect(addr);
        let id = http.get_or_create("lifecycle", "rt-life-drop");
        let mut conn = RivetWs::open(addr, &id, None);
        assert_eq!(
            conn.call_ok("events", json!([])),
            json!(["onCreate", "onWake", "onConnect"])
        );
        // No close frame: the TCP connection just ends.
        conn.ws.shutdown();
        let events = events_once_settled(&mut http, &id);
        assert_dropped_socket_disconnected(&events);
    });
}

/// After a dropped socket and polls by stateless calls (each with its own ephemeral connection,
/// whose hooks may interleave with the dropped socket's `onDisconnect`): every connection but
/// the current poll's has disconnected.
fn assert_dropped_socket_disconnected(events: &Value) {
    let events: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(
        &events[..3],
        ["onCreate", "onWake", "onConnect"],
        "{events:?}"
    );
    let count = |name: &str| events.iter().filter(|e| **e == name).count();
    assert_eq!(count("onConnect"), count("onDisconnect") + 1, "{events:?}");
    assert_eq!(events.last(), Some(&"onConnect"), "{events:?}");
}

#[test]
fn raw_websocket_echo() {
    on_each_driver(1, |addr| {
        let mut http = Rivet::connect(addr);
        let id = http.get_or_create("echo", "rt-echo");
        let path = format!("/gateway/{id}/websocket/chan?q=1");

        // What `handle.websocket("chan?q=1")` offers: `rivet` is selected.
        let (reply, mut ws) = Ws::connect(addr, &path, Some("rivet,rivet_encoding.bare"));
        assert_eq!(reply.header("sec-websocket-protocol"), Some("rivet"));
        ws.send_text("ping-text");
        assert_eq!(ws.read(), Frame::Text("ping-text".into()));
        let binary = vec![0u8, 1, 2, 0xFF, 0xFE];
        ws.send_binary(&binary);
        assert_eq!(ws.read(), Frame::Binary(binary));
        // 16- and 64-bit lengths both ways.
        let medium = "m".repeat(300);
        ws.send_text(&medium);
        assert_eq!(ws.read(), Frame::Text(medium));
        let large: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        ws.send_binary(&large);
        assert_eq!(ws.read(), Frame::Binary(large));
        // A fragmented message comes back whole; a ping interleaved is answered with a pong.
        ws.send_frame(false, OP_TEXT, b"frag");
        ws.send_ping(b"p1");
        ws.send_frame(true, OP_CONTINUATION, "mentéd".as_bytes());
        assert_eq!(ws.read(), Frame::Pong(b"p1".to_vec()));
        assert_eq!(ws.read(), Frame::Text("fragmentéd".into()));
        ws.send_frame(false, OP_BINARY, &[1, 2]);
        ws.send_frame(true, OP_CONTINUATION, &[3]);
        assert_eq!(ws.read(), Frame::Binary(vec![1, 2, 3]));
        // Empty messages.
        ws.send_text("");
        assert_eq!(ws.read(), Frame::Text(String::new()));
        // Closing: the code is echoed.
        ws.send_close(1000, "bye");
        match ws.read() {
            Frame::Close(code, _) => assert_eq!(code, Some(1000)),
            other => panic!("expected the close echo, got {other:?}"),
        }
        ws.expect_eof();

        // A close without a status is echoed without one.
        let (_, mut ws) = Ws::connect(addr, &path, None);
        ws.send_frame(true, ws::OP_CLOSE, &[]);
        assert_eq!(ws.read(), Frame::Close(None, String::new()));
        ws.expect_eof();

        // A plain WebSocket without subprotocols: none selected, echo works.
        let (reply, mut ws) = Ws::connect(addr, &path, None);
        assert_eq!(reply.header("sec-websocket-protocol"), None, "{reply:?}");
        ws.send_text("plain");
        assert_eq!(ws.read(), Frame::Text("plain".into()));
        // The root path (`/websocket` alone) is served too.
        let (_, mut ws) = Ws::connect(addr, &format!("/gateway/{id}/websocket"), None);
        ws.send_binary(b"root");
        assert_eq!(ws.read(), Frame::Binary(b"root".to_vec()));
        // Bytes sent together with the upgrade request are echoed after the 101.
        let (reply, mut ws) = Ws::open(addr, &path, None, &text_frame("early"));
        assert_eq!(reply.status, 101);
        assert_eq!(ws.read(), Frame::Text("early".into()));

        // An actor without onWebSocket: 101, then 1011.
        let counter = http.get_or_create("counter", "rt-echo-counter");
        let (reply, mut ws) = Ws::connect(
            addr,
            &format!("/gateway/{counter}/websocket/chan"),
            Some("rivet,rivet_encoding.bare"),
        );
        assert_eq!(reply.header("sec-websocket-protocol"), Some("rivet"));
        assert_eq!(
            ws.expect_close(),
            (Some(1011), "websocket_not_defined".to_string())
        );
    });
}

#[test]
fn unknown_actor_is_refused() {
    on_each_driver(1, |addr| {
        // A well-formed id nobody created: no Init, a close with 1011.
        let (reply, mut ws) = Ws::open(
            addr,
            &connect_path("0123456789abcdef"),
            Some(JSON_PROTOCOLS),
            &[],
        );
        assert_eq!(reply.status, 101, "{reply:?}");
        assert_eq!(ws.expect_close(), (Some(1011), "not_found".to_string()));
        // An id that is not an id: an HTTP error, not a WebSocket.
        let (reply, _) = Ws::open(addr, &connect_path("not-an-id"), Some(JSON_PROTOCOLS), &[]);
        assert_eq!(reply.status, 404, "{reply:?}");
        assert_eq!(reply.json()["group"], "actor", "{reply:?}");
        assert_eq!(reply.json()["code"], "not_found", "{reply:?}");
    });
}

#[test]
fn frames_sent_with_the_upgrade_request_are_served() {
    on_each_driver(1, |addr| {
        let id = Rivet::connect(addr).get_or_create("counter", "rt-early");
        let mut early = text_frame(&subscription_request("count", true));
        early.extend(text_frame(&action_request(0, "increment", &json!([7]))));
        let (reply, mut ws) = Ws::open(addr, &connect_path(&id), Some(JSON_PROTOCOLS), &early);
        assert_eq!(reply.status, 101, "{reply:?}");
        assert_eq!(reply.header("sec-websocket-protocol"), Some("rivet"));
        assert_init(&ws.read_json(), &id);
        assert_eq!(ws.read_json(), event("count", json!([7])));
        assert_eq!(ws.read_json(), response(0, json!(7)));
    });
}

#[test]
fn subscriptions_are_bounded_per_connection() {
    const LIMIT: usize = 1024;
    on_each_driver(1, |addr| {
        let id = Rivet::connect(addr).get_or_create("counter", "rt-subscriptions");
        let mut conn = RivetWs::open(addr, &id, None);
        let burst: Vec<u8> = (0..LIMIT)
            .flat_map(|i| text_frame(&subscription_request(&format!("e{i}"), true)))
            .collect();
        conn.ws.write_raw(&burst);
        // At the limit, re-subscribing and unsubscribing are still fine.
        conn.subscribe("e0", true);
        conn.subscribe("e1", false);
        conn.subscribe("e1", true);
        assert_eq!(conn.call("getCount", json!([])), response(0, json!(0)));
        conn.subscribe("one-too-many", true);
        let (code, reason) = conn.ws.expect_close();
        assert_eq!(code, Some(1011), "{reason}");
    });
}

#[test]
fn refused_connections_run_no_connect_hooks() {
    on_each_driver(1, |addr| {
        let mut http = Rivet::connect(addr);
        let id = http.get_or_create("lifecycle", "rt-life-refused");
        for protocols in [
            "rivet,rivet_encoding.cbor".to_string(),
            format!("{JSON_PROTOCOLS},rivet_conn_params.%zz"),
            format!(
                "{JSON_PROTOCOLS},rivet_conn_params.{}",
                encode_uri_component("{nope")
            ),
        ] {
            let (_, mut ws) = Ws::connect(addr, &connect_path(&id), Some(&protocols));
            let (code, reason) = ws.expect_close();
            assert_eq!(code, Some(1011), "{protocols}: {reason}");
        }
        assert_eq!(
            http.call(&id, "events", json!([])),
            json!(["onCreate", "onWake", "onConnect"])
        );
    });
}

/// With two shards, about half of the sockets land on the shard that does not own their actor
/// and must be moved there at upgrade time, with the bytes already received.
#[test]
fn two_shards_connections_reach_their_actor() {
    const ACTORS: usize = 20;
    on_each_driver(2, |addr| {
        let mut http = Rivet::connect(addr);
        let ids: Vec<String> = (0..ACTORS)
            .map(|i| http.get_or_create("counter", &format!("rt-shards-{i}")))
            .collect();
        let mut subscribers = Vec::new();
        let mut others = Vec::new();
        for id in &ids {
            // A subscription and an action in the same write as the upgrade request.
            let mut early = text_frame(&subscription_request("count", true));
            early.extend(text_frame(&action_request(0, "increment", &json!([1]))));
            let (reply, mut ws) = Ws::open(addr, &connect_path(id), Some(JSON_PROTOCOLS), &early);
            assert_eq!(reply.status, 101, "{reply:?}");
            assert_eq!(reply.header("sec-websocket-protocol"), Some("rivet"));
            let connection_id = assert_init(&ws.read_json(), id);
            assert_eq!(ws.read_json(), event("count", json!([1])));
            assert_eq!(ws.read_json(), response(0, json!(1)));
            subscribers.push(RivetWs {
                ws,
                next_id: 1,
                connection_id,
            });
            others.push(RivetWs::open(addr, id, None));
        }
        for (i, id) in ids.iter().enumerate() {
            let subscriber = &mut subscribers[i];
            let other = &mut others[i];
            assert_eq!(other.call("increment", json!([2])), response(0, json!(3)));
            assert_eq!(subscriber.ws.read_json(), event("count", json!([3])));
            assert_eq!(http.call(id, "increment", json!([3])), 6);
            assert_eq!(subscriber.ws.read_json(), event("count", json!([6])));
            assert_eq!(
                subscriber.call("getCount", json!([])),
                response(1, json!(6))
            );
            assert_eq!(other.call("getCount", json!([])), response(1, json!(6)));
            assert_eq!(
                other.call_ok("whoAmI", json!([]))["actorId"],
                json!(id),
                "actor {i}"
            );
        }
        // Closing cleanly works from either shard.
        for conn in subscribers.iter_mut().chain(others.iter_mut()) {
            conn.ws.send_close(1000, "Disposed");
            match conn.ws.read() {
                Frame::Close(code, _) => assert_eq!(code, Some(1000)),
                other => panic!("expected the close echo, got {other:?}"),
            }
            conn.ws.expect_eof();
        }
    });
}

/// Raw WebSockets, rejected connections and dropped sockets after a move to the owning shard.
#[test]
fn two_shards_raw_rejected_and_dropped_sockets() {
    const ACTORS: usize = 10;
    on_each_driver(2, |addr| {
        let mut http = Rivet::connect(addr);
        for i in 0..ACTORS {
            // Raw echo, with a message in the same write as the upgrade request.
            let echo = http.get_or_create("echo", &format!("rt-shards-echo-{i}"));
            let mut early = text_frame(&format!("early-{i}"));
            early.extend(client_frame(true, OP_BINARY, &[i as u8, 0xFF]));
            let (reply, mut ws) = Ws::open(
                addr,
                &format!("/gateway/{echo}/websocket/chan?q=1"),
                Some("rivet,rivet_encoding.bare"),
                &early,
            );
            assert_eq!(reply.status, 101, "{reply:?}");
            assert_eq!(reply.header("sec-websocket-protocol"), Some("rivet"));
            assert_eq!(ws.read(), Frame::Text(format!("early-{i}")));
            assert_eq!(ws.read(), Frame::Binary(vec![i as u8, 0xFF]));
            ws.send_text("later");
            assert_eq!(ws.read(), Frame::Text("later".into()));

            // Rejected by onBeforeConnect on the owning shard.
            let room = http.get_or_create("chatRoom", &format!("rt-shards-chat-{i}"));
            let bad = encode_uri_component(r#"{"token":"bad"}"#);
            let (reply, mut ws) = Ws::connect(
                addr,
                &connect_path(&room),
                Some(&format!("{JSON_PROTOCOLS},rivet_conn_params.{bad}")),
            );
            assert_eq!(reply.header("sec-websocket-protocol"), Some("rivet"));
            assert_eq!(ws.expect_close(), (Some(1011), "forbidden".to_string()));
            // Accepted, with params, and whoAmI sent with the upgrade request.
            let good = encode_uri_component(&format!(r#"{{"userId":"u{i}"}}"#));
            let (reply, mut ws) = Ws::open(
                addr,
                &connect_path(&room),
                Some(&format!("{JSON_PROTOCOLS},rivet_conn_params.{good}")),
                &text_frame(&action_request(0, "whoAmI", &json!([]))),
            );
            assert_eq!(reply.status, 101, "{reply:?}");
            assert_init(&ws.read_json(), &room);
            assert_eq!(ws.read_json(), response(0, json!(format!("u{i}"))));

            // A dropped socket still disconnects on the owning shard.
            let life = http.get_or_create("lifecycle", &format!("rt-shards-life-{i}"));
            let mut conn = RivetWs::open(addr, &life, None);
            assert_eq!(
                conn.call_ok("events", json!([])),
                json!(["onCreate", "onWake", "onConnect"])
            );
            conn.ws.shutdown();
            let events = events_once_settled(&mut http, &life);
            assert_dropped_socket_disconnected(&events);
        }
    });
}

/// The server pings every WebSocket each `ws_heartbeat`; a peer that answers (or sends anything)
/// stays, one that stays silent for a whole interval after a ping is closed with 1011
/// `heartbeat_timeout`, and its connection leaves the actor (onDisconnect runs).
#[test]
fn heartbeat_closes_silent_peers_and_keeps_live_ones() {
    let interval = Duration::from_millis(150);
    for shards in [1, 2] {
        let server = start_with(Config {
            shards: Some(shards),
            ws_heartbeat: Some(interval),
            ..test_config()
        });
        let addr = server.local_addr();
        let mut http = Rivet::connect(addr);
        let id = http.get_or_create("lifecycle", &format!("rt-heartbeat-{shards}"));
        let mut silent = RivetWs::open(addr, &id, None);
        let mut live = RivetWs::open(addr, &id, None);
        // The live peer answers every ping, from the start, and outlives several intervals.
        let live = thread::spawn(move || {
            let until = Instant::now() + interval * 6;
            let mut pings = 0;
            while Instant::now() < until {
                match live.ws.next(interval) {
                    Next::Frame(Frame::Ping(payload)) => {
                        live.ws.send_frame(true, 0xA, &payload);
                        pings += 1;
                    }
                    Next::Frame(other) => panic!("unexpected frame {other:?}"),
                    _ => {}
                }
            }
            (live, pings)
        });
        let raw_id = http.get_or_create("echo", &format!("rt-heartbeat-echo-{shards}"));
        let (_, mut raw_silent) = Ws::connect(addr, &format!("/gateway/{raw_id}/websocket/"), None);

        // The silent peers get a ping, ignore it, and are closed a tick later.
        assert_eq!(silent.ws.read(), Frame::Ping(Vec::new()));
        assert_eq!(raw_silent.read(), Frame::Ping(Vec::new()));
        assert_eq!(
            silent.ws.expect_close(),
            (Some(1011), "heartbeat_timeout".to_string())
        );
        assert_eq!(
            raw_silent.expect_close(),
            (Some(1011), "heartbeat_timeout".to_string())
        );

        let (mut live, pings) = live.join().unwrap();
        assert!(pings >= 3, "only {pings} pings in 6 intervals");
        let events = live.call_ok("events", json!([]));
        let events: Vec<&str> = events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert_eq!(
            events,
            [
                "onCreate",
                "onWake",
                "onConnect",
                "onConnect",
                "onDisconnect"
            ],
            "the silent connection was disconnected, the live one was not"
        );
        server.stop().unwrap();
    }
}
