//! Pure logic of `loadgen ws` / `loadgen fanout`: the client WebSocket codec (`src/ws.rs`) and
//! the RivetKit connection messages and response matching (`src/rivetconn.rs`), included as they
//! are (neither refers to the rest of the crate). No sockets, no server.

#[allow(dead_code)]
#[path = "../src/ws.rs"]
mod ws;

#[allow(dead_code)]
#[path = "../src/rivetconn.rs"]
mod rivetconn;

use rivetconn::{ActionTemplate, DecodeError, InFlight, ToClient, decode};
use serde_json::{Value, json};
use ws::{FrameError, HandshakeError, MessageKind, Next, Opcode, Payload, Reader};

// ---------------------------------------------------------------- handshake

#[test]
fn accept_key_of_rfc_6455_example() {
    // RFC 6455 §1.3.
    assert_eq!(
        ws::accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert_eq!(ws::key_from([0; 16]), "AAAAAAAAAAAAAAAAAAAAAA==");
    assert_eq!(ws::key_from([7; 16]).len(), 24);
}

#[test]
fn upgrade_request_offers_rivet_subprotocols() {
    let request = ws::upgrade_request(
        "/api/gateway/abc/connect",
        "127.0.0.1:6420",
        "dGhlIHNhbXBsZSBub25jZQ==",
        "rivet, rivet_encoding.json",
        &[("x-extra".to_string(), "1".to_string())],
    );
    let text = String::from_utf8(request).unwrap();
    assert!(
        text.starts_with("GET /api/gateway/abc/connect HTTP/1.1\r\n"),
        "{text}"
    );
    for line in [
        "host: 127.0.0.1:6420\r\n",
        "upgrade: websocket\r\n",
        "connection: Upgrade\r\n",
        "sec-websocket-version: 13\r\n",
        "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        "sec-websocket-protocol: rivet, rivet_encoding.json\r\n",
        "x-extra: 1\r\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in {text}");
    }
    assert!(text.ends_with("\r\n\r\n"));
    assert!(!text.contains("extensions"), "no extension is offered");
    let no_protocols = ws::upgrade_request("/", "h", "k", "", &[]);
    assert!(
        !String::from_utf8(no_protocols)
            .unwrap()
            .contains("protocol")
    );
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn answer(lines: &[&str]) -> Vec<u8> {
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

fn good_101() -> Vec<u8> {
    answer(&[
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        &format!("Sec-WebSocket-Accept: {ACCEPT}"),
        "Sec-WebSocket-Protocol: rivet",
    ])
}

#[test]
fn valid_101_is_accepted_with_frames_behind_it() {
    assert_eq!(ws::accept_for(KEY), ACCEPT);
    let head = good_101();
    let mut buf = head.clone();
    buf.extend_from_slice(b"\x81\x02hi");
    assert_eq!(
        ws::check_handshake(&buf, ACCEPT, Some("rivet")),
        Ok(Some(head.len()))
    );
    // Incomplete heads wait for more, at every cut.
    for cut in 0..head.len() {
        assert_eq!(
            ws::check_handshake(&head[..cut], ACCEPT, Some("rivet")),
            Ok(None),
            "cut {cut}"
        );
    }
    // Header names and tokens are case-insensitive; connection may list several tokens.
    let relaxed = answer(&[
        "HTTP/1.1 101 Switching Protocols",
        "upgrade: WebSocket",
        "connection: keep-alive, upgrade",
        &format!("sec-websocket-accept: {ACCEPT}"),
        "sec-websocket-protocol: rivet",
        "sec-websocket-extensions: ",
    ]);
    assert!(matches!(
        ws::check_handshake(&relaxed, ACCEPT, Some("rivet")),
        Ok(Some(_))
    ));
}

#[test]
fn invalid_101s_are_rejected() {
    let check = |lines: &[&str]| ws::check_handshake(&answer(lines), ACCEPT, Some("rivet"));
    let accept = format!("Sec-WebSocket-Accept: {ACCEPT}");
    assert_eq!(
        check(&["HTTP/1.1 404 Not Found", "content-length: 0"]),
        Err(HandshakeError::Status(404))
    );
    assert_eq!(
        check(&["HTTP/1.1 200 OK"]),
        Err(HandshakeError::Status(200))
    );
    assert_eq!(check(&["garbage"]), Err(HandshakeError::Malformed));
    assert_eq!(
        check(&[
            "HTTP/1.1 101 Switching Protocols",
            "Connection: Upgrade",
            &accept,
            "Sec-WebSocket-Protocol: rivet"
        ]),
        Err(HandshakeError::NoUpgrade)
    );
    assert_eq!(
        check(&[
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            &accept,
            "Sec-WebSocket-Protocol: rivet"
        ]),
        Err(HandshakeError::NoConnectionUpgrade)
    );
    assert_eq!(
        check(&[
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "Sec-WebSocket-Protocol: rivet"
        ]),
        Err(HandshakeError::BadAccept)
    );
    // The server must select `rivet` (§8.1: the official client aborts otherwise).
    assert_eq!(
        check(&[
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            &accept
        ]),
        Err(HandshakeError::Protocol(None))
    );
    assert_eq!(
        check(&[
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            &accept,
            "Sec-WebSocket-Protocol: rivet_encoding.json"
        ]),
        Err(HandshakeError::Protocol(Some("rivet_encoding.json".into())))
    );
    assert_eq!(
        check(&[
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            &accept,
            "Sec-WebSocket-Protocol: rivet",
            "Sec-WebSocket-Extensions: permessage-deflate"
        ]),
        Err(HandshakeError::Extension("permessage-deflate".into()))
    );
    let huge = vec![b'a'; ws::HANDSHAKE_HEAD_BYTES_MAX + 1];
    assert_eq!(
        ws::check_handshake(&huge, ACCEPT, Some("rivet")),
        Err(HandshakeError::HeadTooLarge)
    );
}

// ---------------------------------------------------------------- frames written

/// Decodes one masked client frame: (fin, opcode bits, unmasked payload, frame length).
fn unmask_client_frame(frame: &[u8]) -> (bool, u8, Vec<u8>, usize) {
    let fin = frame[0] & 0x80 != 0;
    let opcode = frame[0] & 0x0F;
    assert_eq!(frame[0] & 0x70, 0, "no reserved bit");
    assert_eq!(frame[1] & 0x80, 0x80, "client frames are masked");
    let (len, mut at) = match frame[1] & 0x7F {
        126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
        127 => (
            u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
            10,
        ),
        len => (len as usize, 2),
    };
    let mask: [u8; 4] = frame[at..at + 4].try_into().unwrap();
    at += 4;
    let payload = frame[at..at + len]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    (fin, opcode, payload, at + len)
}

#[test]
fn client_frames_are_masked_with_minimal_lengths() {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    for (len, header_len) in [
        (0usize, 6usize),
        (5, 6),
        (125, 6),
        (126, 8),
        (65_535, 8),
        (65_536, 14),
    ] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut out = vec![0xEE]; // bytes already in the buffer stay
        ws::write_frame(&mut out, Opcode::Text, &payload, mask);
        assert_eq!(out[0], 0xEE);
        let frame = &out[1..];
        assert_eq!(frame.len(), header_len + len, "len {len}");
        let (fin, opcode, unmasked, total) = unmask_client_frame(frame);
        assert!(fin);
        assert_eq!(opcode, 0x1);
        assert_eq!(unmasked, payload, "len {len}");
        assert_eq!(total, frame.len());
        assert_eq!(&frame[header_len - 4..header_len], &mask);
    }
    // RFC 6455 §5.7: a masked "Hello".
    let mut out = Vec::new();
    ws::write_frame(&mut out, Opcode::Text, b"Hello", mask);
    assert_eq!(
        out,
        [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
        ]
    );
}

#[test]
fn close_frames_carry_code_and_a_cut_reason() {
    let mut out = Vec::new();
    ws::write_close(&mut out, 1000, "bye", [1, 2, 3, 4]);
    let (fin, opcode, payload, _) = unmask_client_frame(&out);
    assert!(fin);
    assert_eq!(opcode, 0x8);
    assert_eq!(payload, b"\x03\xe8bye");
    let mut out = Vec::new();
    ws::write_close(&mut out, 1000, &"é".repeat(100), [0; 4]);
    let (_, _, payload, _) = unmask_client_frame(&out);
    assert!(payload.len() <= 125);
    assert!(
        std::str::from_utf8(&payload[2..]).is_ok(),
        "cut on a char boundary"
    );
}

// ---------------------------------------------------------------- frames read

/// An unmasked server frame.
fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if len <= 65_535 {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// Runs the reader over `buf` to the end: the messages (kind, payload) and the error, if any.
fn read_all(buf: &[u8]) -> (Vec<(MessageKind, Vec<u8>)>, Option<FrameError>) {
    let mut reader = Reader::new();
    let mut at = 0;
    let mut messages = Vec::new();
    loop {
        match reader.next(&buf[at..]) {
            Ok(Next::NeedMore { .. }) => return (messages, None),
            Ok(Next::Fragment { consumed }) => at += consumed,
            Ok(Next::Message {
                consumed,
                kind,
                payload,
            }) => {
                let bytes = match payload {
                    Payload::InBuffer(range) => buf[at + range.start..at + range.end].to_vec(),
                    Payload::Assembled => reader.assembled().to_vec(),
                };
                messages.push((kind, bytes));
                at += consumed;
            }
            Err(error) => return (messages, Some(error)),
        }
    }
}

#[test]
fn server_frames_are_read_in_place_and_byte_by_byte() {
    let big = vec![b'x'; 70_000];
    let mut buf = server_frame(true, 0x1, b"{\"a\":1}");
    buf.extend(server_frame(true, 0x2, &[0, 1, 2]));
    buf.extend(server_frame(true, 0x9, b"ping"));
    buf.extend(server_frame(true, 0xA, b""));
    buf.extend(server_frame(true, 0x1, &big[..300]));
    buf.extend(server_frame(true, 0x1, &big));
    buf.extend(server_frame(true, 0x8, b"\x03\xe8done"));
    let (messages, error) = read_all(&buf);
    assert_eq!(error, None);
    let kinds: Vec<MessageKind> = messages.iter().map(|(kind, _)| *kind).collect();
    assert_eq!(
        kinds,
        [
            MessageKind::Text,
            MessageKind::Binary,
            MessageKind::Ping,
            MessageKind::Pong,
            MessageKind::Text,
            MessageKind::Text,
            MessageKind::Close
        ]
    );
    assert_eq!(messages[0].1, b"{\"a\":1}");
    assert_eq!(messages[4].1.len(), 300);
    assert_eq!(messages[5].1.len(), 70_000);
    assert_eq!(ws::close_parts(&messages[6].1), Ok(Some((1000, "done"))));
    // Every prefix of a frame asks for more, and says how big the frame is once it can.
    let frame = server_frame(true, 0x1, &big[..300]);
    let mut reader = Reader::new();
    for cut in 0..frame.len() {
        match reader.next(&frame[..cut]).unwrap() {
            Next::NeedMore { frame_len } => {
                if cut >= 4 {
                    assert_eq!(frame_len, Some(frame.len()), "cut {cut}");
                }
            }
            other => panic!("cut {cut}: {other:?}"),
        }
    }
}

#[test]
fn fragmented_messages_are_reassembled_around_control_frames() {
    let mut buf = server_frame(false, 0x1, b"{\"body\":");
    buf.extend(server_frame(true, 0x9, b"p")); // a ping between fragments
    buf.extend(server_frame(false, 0x0, b"{\"tag\":\"Init\""));
    buf.extend(server_frame(true, 0x0, b"}}"));
    buf.extend(server_frame(true, 0x1, b"next"));
    let (messages, error) = read_all(&buf);
    assert_eq!(error, None);
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[0], (MessageKind::Ping, b"p".to_vec()));
    assert_eq!(
        messages[1],
        (MessageKind::Text, b"{\"body\":{\"tag\":\"Init\"}}".to_vec())
    );
    assert_eq!(messages[2], (MessageKind::Text, b"next".to_vec()));
    // UTF-8 is checked on the whole message: a character may span fragments.
    let euro = "€".as_bytes();
    let mut buf = server_frame(false, 0x1, &euro[..1]);
    buf.extend(server_frame(true, 0x0, &euro[1..]));
    let (messages, error) = read_all(&buf);
    assert_eq!(error, None);
    assert_eq!(messages, [(MessageKind::Text, euro.to_vec())]);
}

#[test]
fn protocol_violations_by_the_server_are_errors() {
    let error_of = |buf: &[u8]| read_all(buf).1;
    // Masked server frame.
    assert_eq!(
        error_of(&[0x81, 0x82, 1, 2, 3, 4, 5, 6]),
        Some(FrameError::Masked)
    );
    assert_eq!(error_of(&[0xC1, 0x00]), Some(FrameError::ReservedBits));
    assert_eq!(error_of(&[0x83, 0x00]), Some(FrameError::UnknownOpcode(3)));
    assert_eq!(error_of(&[0x09, 0x00]), Some(FrameError::FragmentedControl));
    assert_eq!(
        error_of(&[0x89, 126, 0, 126]),
        Some(FrameError::ControlTooLong)
    );
    assert_eq!(
        error_of(&[0x81, 126, 0, 125]),
        Some(FrameError::NonMinimalLength)
    );
    assert_eq!(
        error_of(&[0x81, 127, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]),
        Some(FrameError::NonMinimalLength)
    );
    assert_eq!(
        error_of(&[0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
        Some(FrameError::LengthMsb)
    );
    assert_eq!(
        error_of(&[0x81, 127, 0, 0, 0, 0, 0x10, 0, 0, 0]),
        Some(FrameError::TooLarge)
    );
    assert_eq!(
        error_of(&server_frame(true, 0x0, b"x")),
        Some(FrameError::UnexpectedContinuation)
    );
    let mut interleaved = server_frame(false, 0x1, b"a");
    interleaved.extend(server_frame(true, 0x1, b"b"));
    assert_eq!(
        error_of(&interleaved),
        Some(FrameError::ExpectedContinuation)
    );
    assert_eq!(
        error_of(&server_frame(true, 0x1, &[0xff, 0xfe])),
        Some(FrameError::InvalidUtf8)
    );
    assert_eq!(
        error_of(&server_frame(true, 0x8, &[3])),
        Some(FrameError::BadClose)
    );
    assert_eq!(
        error_of(&server_frame(true, 0x8, &[0x03, 0xED])), // 1005 must not be sent
        Some(FrameError::BadClose)
    );
    assert_eq!(ws::close_parts(b""), Ok(None));
    assert_eq!(ws::close_parts(b"\x0f\xa0x"), Ok(Some((4000, "x"))));
}

// ---------------------------------------------------------------- RivetKit messages

#[test]
fn action_requests_have_bigint_ids_and_the_given_args() {
    let template = ActionTemplate::new("\"increment\"", "[1, {\"a\": [\"$$x\", 2]}]");
    for id in [0u64, 7, 10, 1_234_567_890_123, u64::MAX] {
        let mut out = b"keep".to_vec();
        template.write(&mut out, id);
        assert_eq!(&out[..4], b"keep");
        let value: Value = serde_json::from_slice(&out[4..]).unwrap();
        assert_eq!(
            value,
            json!({"body": {"tag": "ActionRequest", "val": {
                "id": ["$BigInt", id.to_string()],
                "name": "increment",
                "args": [1, {"a": ["$$x", 2]}],
            }}})
        );
    }
    let mut out = Vec::new();
    template.write(&mut out, 0);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"body":{"tag":"ActionRequest","val":{"id":["$BigInt","0"],"name":"increment","args":[1, {"a": ["$$x", 2]}]}}}"#
    );
}

#[test]
fn subscription_requests() {
    let value: Value =
        serde_json::from_str(&rivetconn::subscription_request("\"count\"", true)).unwrap();
    assert_eq!(
        value,
        json!({"body": {"tag": "SubscriptionRequest", "val": {"eventName": "count", "subscribe": true}}})
    );
    let value: Value =
        serde_json::from_str(&rivetconn::subscription_request("\"a\\\"b\"", false)).unwrap();
    assert_eq!(value["body"]["val"]["eventName"], "a\"b");
    assert_eq!(value["body"]["val"]["subscribe"], false);
}

#[test]
fn decodes_the_captured_frames() {
    // Protocol §8.2, verbatim.
    match decode(br#"{"body":{"tag":"Init","val":{"actorId":"21cef42033c7fa8b","connectionId":"6dde34c3-7f87-49c5-afac-7f2b51fc2fd3"}}}"#).unwrap() {
        ToClient::Init { actor_id, connection_id } => {
            assert!(actor_id.is("21cef42033c7fa8b"));
            assert_eq!(connection_id.decode(), "6dde34c3-7f87-49c5-afac-7f2b51fc2fd3");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        decode(br#"{"body":{"tag":"ActionResponse","val":{"id":["$BigInt","1"],"output":"alice: hi"}}}"#),
        Ok(ToClient::ActionResponse { id: 1 })
    );
    // `output` omitted when the action returned undefined.
    assert_eq!(
        decode(br#"{"body":{"tag":"ActionResponse","val":{"id":["$BigInt","0"]}}}"#),
        Ok(ToClient::ActionResponse { id: 0 })
    );
    match decode(br#"{"body":{"tag":"Event","val":{"name":"message","args":["alice: hi"]}}}"#)
        .unwrap()
    {
        ToClient::Event { name, args } => {
            assert!(name.is("message"));
            assert_eq!(args, br#"["alice: hi"]"#);
        }
        other => panic!("{other:?}"),
    }
    match decode(br#"{"body":{"tag":"Error","val":{"group":"user","code":"name_too_short","message":"Name too short","metadata":{"minLength":3,"actual":1},"actionId":["$BigInt","1"]}}}"#).unwrap() {
        ToClient::Error { action_id, group, code, message } => {
            assert_eq!(action_id, Some(1));
            assert!(group.is("user"));
            assert!(code.is("name_too_short"));
            assert_eq!(message.decode(), "Name too short");
        }
        other => panic!("{other:?}"),
    }
    // Connection-level errors: actionId null, or absent.
    for frame in [
        &br#"{"body":{"tag":"Error","val":{"group":"g","code":"c","message":"m","actionId":null}}}"#[..],
        br#"{"body":{"tag":"Error","val":{"group":"g","code":"c","message":"m"}}}"#,
    ] {
        assert!(matches!(decode(frame), Ok(ToClient::Error { action_id: None, .. })));
    }
}

#[test]
fn decoding_accepts_any_field_order_whitespace_escapes_and_tricky_outputs() {
    let frame = br#"  { "other" : [1, 2.5e-3, -0, true, null, {"x": "}"}],
        "body" : { "val" : { "output" : {"id": ["$BigInt","99"], "s": "\"]}\\"},
                              "id" : [ "$BigInt" , "42" ] },
                   "tag" : "Action\u0052esponse" } }  "#;
    assert_eq!(decode(frame), Ok(ToClient::ActionResponse { id: 42 }));
    match decode(
        br#"{"body":{"val":{"args":[["$$x",2],{"n":[]}],"name":"c\u006funt"},"tag":"Event"}}"#,
    )
    .unwrap()
    {
        ToClient::Event { name, args } => {
            assert!(name.is("count"));
            assert_eq!(name.decode(), "count");
            assert_eq!(args, br#"[["$$x",2],{"n":[]}]"#);
        }
        other => panic!("{other:?}"),
    }
    // Escapes decode, surrogate pairs included.
    match decode(br#"{"body":{"tag":"Event","val":{"name":"a\"b\\c\ud83d\ude00\n","args":[]}}}"#)
        .unwrap()
    {
        ToClient::Event { name, .. } => assert_eq!(name.decode(), "a\"b\\c😀\n"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn decoding_rejects_what_the_official_client_rejects() {
    let shape = |frame: &[u8]| matches!(decode(frame), Err(DecodeError::Shape(_)));
    let syntax = |frame: &[u8]| matches!(decode(frame), Err(DecodeError::Syntax { .. }));
    // Ids must be BigInts (§3.1: a plain number makes the client throw).
    assert!(shape(
        br#"{"body":{"tag":"ActionResponse","val":{"id":0}}}"#
    ));
    assert!(shape(
        br#"{"body":{"tag":"ActionResponse","val":{"id":["$BigInt",0]}}}"#
    ));
    assert!(shape(
        br#"{"body":{"tag":"ActionResponse","val":{"id":["$Big","0"]}}}"#
    ));
    assert!(shape(
        br#"{"body":{"tag":"ActionResponse","val":{"id":["$BigInt","-1"]}}}"#
    ));
    assert!(shape(
        br#"{"body":{"tag":"ActionResponse","val":{"id":["$BigInt","18446744073709551616"]}}}"#
    ));
    assert!(shape(
        br#"{"body":{"tag":"ActionResponse","val":{"output":1}}}"#
    ));
    assert!(shape(
        br#"{"body":{"tag":"Event","val":{"name":"x","args":1}}}"#
    ));
    assert!(shape(br#"{"body":{"tag":"Init","val":{"actorId":"a"}}}"#));
    assert!(shape(br#"{"tag":"Init"}"#));
    assert!(shape(br#"{"body":{"val":{}}}"#));
    assert_eq!(
        decode(br#"{"body":{"tag":"Ping","val":{}}}"#),
        Err(DecodeError::UnknownTag("Ping".into()))
    );
    // Not JSON.
    for frame in [
        &b""[..],
        b"{",
        b"{\"body\":}",
        b"{\"body\":{\"tag\":\"Init\",\"val\":{}}} x",
        b"{\"body\":01}",
        b"{\"body\":\"a\x01\"}",
        b"{\"body\":\"\\x\"}",
        b"{\"body\":[1,]}",
        b"{\"body\":tru}",
        b"[]",
    ] {
        assert!(
            syntax(frame),
            "{:?} → {:?}",
            String::from_utf8_lossy(frame),
            decode(frame)
        );
    }
    // Deep nesting is refused, not a stack overflow.
    let deep = format!(
        "{{\"body\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(syntax(deep.as_bytes()));
}

// ---------------------------------------------------------------- matching responses

#[test]
fn in_flight_matches_responses_by_id_in_any_order() {
    let mut in_flight = InFlight::new();
    assert!(in_flight.is_empty());
    for n in 0..5u64 {
        assert_eq!(in_flight.next_id(), n);
        assert_eq!(in_flight.push(n * 10), n);
    }
    assert_eq!(in_flight.len(), 5);
    assert_eq!(in_flight.oldest(), Some(&0));
    assert_eq!(in_flight.take(3), Some(30));
    assert_eq!(in_flight.take(3), None, "answered twice");
    assert_eq!(in_flight.take(99), None, "never sent");
    assert_eq!(in_flight.oldest(), Some(&0));
    assert_eq!(in_flight.take(0), Some(0));
    assert_eq!(in_flight.oldest(), Some(&10));
    assert_eq!(in_flight.take(0), None, "below the window");
    assert_eq!(in_flight.take(1), Some(10));
    assert_eq!(in_flight.take(2), Some(20));
    // 3 was answered already: the window moves past it.
    assert_eq!(in_flight.oldest(), Some(&40));
    assert_eq!(in_flight.len(), 1);
    assert_eq!(in_flight.push(50), 5, "ids keep increasing");
    let left: Vec<u64> = in_flight.reset().collect();
    assert_eq!(left, [40, 50], "oldest first");
    assert!(in_flight.is_empty());
    assert_eq!(in_flight.oldest(), None);
    assert_eq!(in_flight.push(60), 0, "a new connection starts at id 0");
}

#[test]
fn requests_round_trip_through_a_server_answering_out_of_order() {
    // A toy server: parses our ActionRequests, answers them in reverse order, one as an Error.
    let template = ActionTemplate::new("\"echo\"", "[\"x\"]");
    let mut in_flight = InFlight::new();
    let mut wire = Vec::new();
    for n in 0..10u32 {
        let id = in_flight.push(n);
        let mut frame = Vec::new();
        template.write(&mut frame, id);
        wire.push(frame);
    }
    let mut answered = Vec::new();
    let mut failed = Vec::new();
    for request in wire.iter().rev() {
        let value: Value = serde_json::from_slice(request).unwrap();
        let id = value["body"]["val"]["id"].clone();
        let response = if id[1] == "4" {
            json!({"body": {"tag": "Error", "val": {"group": "user", "code": "nope", "message": "no", "actionId": id}}})
        } else {
            json!({"body": {"tag": "ActionResponse", "val": {"id": id, "output": value["body"]["val"]["args"]}}})
        };
        let bytes = serde_json::to_vec(&response).unwrap();
        match decode(&bytes).unwrap() {
            ToClient::ActionResponse { id } => answered.push(in_flight.take(id).unwrap()),
            ToClient::Error {
                action_id: Some(id),
                code,
                ..
            } => {
                assert!(code.is("nope"));
                failed.push(in_flight.take(id).unwrap());
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(answered, [9, 8, 7, 6, 5, 3, 2, 1, 0]);
    assert_eq!(failed, [4]);
    assert!(in_flight.is_empty());
}
