//! Table-driven tests of the WebSocket opening handshake: the RFC 6455 §1.3 example, every
//! validation rule with its status, subprotocol parsing, the 101 response, and random keys and
//! header values that must never panic.

mod common;

use common::Rng;
use pinion_net::http::{Header, Limits, Progress, Request, Response, parse_head};
use pinion_net::ws::{
    ACCEPT_KEY_LEN, HandshakeError, WEBSOCKET_GUID, accept_key, offered_protocols,
    validate_upgrade, write_accept,
};

/// Parses `raw` (a request head) and runs `f` on the request.
fn with_request<T>(raw: &[u8], f: impl FnOnce(&Request<'_>) -> T) -> T {
    let mut headers: Vec<Header<'_>> = Vec::new();
    match parse_head(raw, &mut headers, &Limits::default()) {
        Ok(Progress::Complete(head)) => f(&head.request),
        other => panic!("test request must parse: {other:?}"),
    }
}

/// A valid upgrade request with `extra` header lines (each ending in CRLF) added.
fn upgrade_request(extra: &str) -> Vec<u8> {
    format!(
        "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// A request built from a request line and header lines (each ending in CRLF).
fn request(line: &str, headers: &str) -> Vec<u8> {
    format!("{line}\r\n{headers}\r\n").into_bytes()
}

const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
const VERSION: &str = "Sec-WebSocket-Version: 13\r\n";
const UPGRADE: &str = "Upgrade: websocket\r\n";
const CONNECTION: &str = "Connection: Upgrade\r\n";

#[test]
fn rfc_6455_accept_key_example() {
    assert_eq!(WEBSOCKET_GUID, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    assert_eq!(
        &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    // Other pairs: Wikipedia's example, and base64 of the bytes 1..=16 (computed independently
    // with Python's hashlib and base64).
    let cases: &[(&[u8], &[u8; ACCEPT_KEY_LEN])] = &[
        (b"x3JJHMbDL1EzLkh9GBhXDw==", b"HSmrc0sMlYUkAGmm5OPpG2HaGWk="),
        (b"AQIDBAUGBwgJCgsMDQ4PEA==", b"C/0nmHhBztSRGR1CwL6Tf4ZjwpY="),
    ];
    for &(key, accept) in cases {
        assert_eq!(&accept_key(key), accept, "{}", String::from_utf8_lossy(key));
    }
}

#[test]
fn rfc_6455_opening_handshake_example() {
    let raw = b"GET /chat HTTP/1.1\r\n\
        Host: server.example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";
    let out = with_request(raw, |req| {
        let upgrade = validate_upgrade(req).expect("the RFC's example is valid");
        assert_eq!(upgrade.key(), b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(
            upgrade.protocols().collect::<Vec<_>>(),
            ["chat", "superchat"]
        );
        let mut out = b"earlier response|".to_vec();
        write_accept(&mut out, &upgrade, Some("chat"));
        out
    });
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "earlier response|HTTP/1.1 101 Switching Protocols\r\n\
         upgrade: websocket\r\n\
         connection: Upgrade\r\n\
         sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
         sec-websocket-protocol: chat\r\n\
         \r\n"
    );
    // The 101 parses as a valid response for a strict client parser.
    let out = with_request(raw, |req| {
        let mut out = Vec::new();
        write_accept(&mut out, &validate_upgrade(req).unwrap(), None);
        out
    });
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut res = httparse::Response::new(&mut headers);
    assert_eq!(res.parse(&out), Ok(httparse::Status::Complete(out.len())));
    assert_eq!(res.code, Some(101));
    assert!(
        res.headers
            .iter()
            .all(|h| !h.name.eq_ignore_ascii_case("sec-websocket-protocol"))
    );
}

#[test]
fn validation_rules_table() {
    use HandshakeError as E;
    let ok = Ok(());
    // (what, request, expected)
    let cases: Vec<(&str, Vec<u8>, Result<(), HandshakeError>)> = vec![
        ("the RFC's request", upgrade_request(""), ok),
        (
            "minimal request (no Host, no Origin)",
            request(
                "GET / HTTP/1.1",
                &format!("{UPGRADE}{CONNECTION}{KEY}{VERSION}"),
            ),
            ok,
        ),
        (
            "names and tokens in any case",
            request(
                "GET / HTTP/1.1",
                "UPGRADE: WebSocket\r\nconnection: UPGRADE\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nSEC-WEBSOCKET-VERSION: 13\r\n",
            ),
            ok,
        ),
        (
            "browser Connection list",
            request(
                "GET / HTTP/1.1",
                &format!("{UPGRADE}Connection: keep-alive, Upgrade\r\n{KEY}{VERSION}"),
            ),
            ok,
        ),
        (
            "Upgrade list and several fields",
            request(
                "GET / HTTP/1.1",
                &format!(
                    "Upgrade: h2c\r\nUpgrade: foo/2 ,websocket\r\nConnection: close\r\nConnection: upgrade\r\n{KEY}{VERSION}"
                ),
            ),
            ok,
        ),
        (
            "extensions are ignored",
            upgrade_request("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
            ok,
        ),
        // Method and HTTP version.
        (
            "POST",
            request(
                "POST / HTTP/1.1",
                &format!("{UPGRADE}{CONNECTION}{KEY}{VERSION}"),
            ),
            Err(E::Method),
        ),
        (
            "lowercase get",
            request(
                "get / HTTP/1.1",
                &format!("{UPGRADE}{CONNECTION}{KEY}{VERSION}"),
            ),
            Err(E::Method),
        ),
        (
            "HEAD",
            request(
                "HEAD / HTTP/1.1",
                &format!("{UPGRADE}{CONNECTION}{KEY}{VERSION}"),
            ),
            Err(E::Method),
        ),
        (
            "HTTP/1.0",
            request(
                "GET / HTTP/1.0",
                &format!("{UPGRADE}{CONNECTION}{KEY}{VERSION}"),
            ),
            Err(E::HttpVersion),
        ),
        (
            "first violation wins",
            request("POST / HTTP/1.0", ""),
            Err(E::Method),
        ),
        // Upgrade.
        (
            "no Upgrade",
            request("GET / HTTP/1.1", &format!("{CONNECTION}{KEY}{VERSION}")),
            Err(E::Upgrade),
        ),
        (
            "Upgrade: h2c",
            request(
                "GET / HTTP/1.1",
                &format!("Upgrade: h2c\r\n{CONNECTION}{KEY}{VERSION}"),
            ),
            Err(E::Upgrade),
        ),
        (
            "Upgrade: websocket/13",
            request(
                "GET / HTTP/1.1",
                &format!("Upgrade: websocket/13\r\n{CONNECTION}{KEY}{VERSION}"),
            ),
            Err(E::Upgrade),
        ),
        (
            "Upgrade: websockets",
            request(
                "GET / HTTP/1.1",
                &format!("Upgrade: websockets\r\n{CONNECTION}{KEY}{VERSION}"),
            ),
            Err(E::Upgrade),
        ),
        (
            "empty Upgrade",
            request(
                "GET / HTTP/1.1",
                &format!("Upgrade:\r\n{CONNECTION}{KEY}{VERSION}"),
            ),
            Err(E::Upgrade),
        ),
        (
            "websocket in another field",
            request(
                "GET / HTTP/1.1",
                &format!("X-Upgrade: websocket\r\n{CONNECTION}{KEY}{VERSION}"),
            ),
            Err(E::Upgrade),
        ),
        // Connection.
        (
            "no Connection",
            request("GET / HTTP/1.1", &format!("{UPGRADE}{KEY}{VERSION}")),
            Err(E::Connection),
        ),
        (
            "Connection: keep-alive",
            request(
                "GET / HTTP/1.1",
                &format!("{UPGRADE}Connection: keep-alive\r\n{KEY}{VERSION}"),
            ),
            Err(E::Connection),
        ),
        (
            "Connection: upgraded",
            request(
                "GET / HTTP/1.1",
                &format!("{UPGRADE}Connection: upgraded\r\n{KEY}{VERSION}"),
            ),
            Err(E::Connection),
        ),
        (
            "Connection: up grade",
            request(
                "GET / HTTP/1.1",
                &format!("{UPGRADE}Connection: up grade\r\n{KEY}{VERSION}"),
            ),
            Err(E::Connection),
        ),
        // Sec-WebSocket-Version.
        (
            "no version",
            request("GET / HTTP/1.1", &format!("{UPGRADE}{CONNECTION}{KEY}")),
            Err(E::Version),
        ),
        (
            "version 8",
            request(
                "GET / HTTP/1.1",
                &format!("{UPGRADE}{CONNECTION}{KEY}Sec-WebSocket-Version: 8\r\n"),
            ),
            Err(E::Version),
        ),
        (
            "version 013",
            request(
                "GET / HTTP/1.1",
                &format!("{UPGRADE}{CONNECTION}{KEY}Sec-WebSocket-Version: 013\r\n"),
            ),
            Err(E::Version),
        ),
        (
            "version list",
            request(
                "GET / HTTP/1.1",
                &format!("{UPGRADE}{CONNECTION}{KEY}Sec-WebSocket-Version: 13, 8\r\n"),
            ),
            Err(E::Version),
        ),
        (
            "version twice",
            request(
                "GET / HTTP/1.1",
                &format!("{UPGRADE}{CONNECTION}{KEY}{VERSION}{VERSION}"),
            ),
            Err(E::Version),
        ),
        (
            "empty version",
            request(
                "GET / HTTP/1.1",
                &format!("{UPGRADE}{CONNECTION}{KEY}Sec-WebSocket-Version:\r\n"),
            ),
            Err(E::Version),
        ),
        // Sec-WebSocket-Key.
        (
            "no key",
            request("GET / HTTP/1.1", &format!("{UPGRADE}{CONNECTION}{VERSION}")),
            Err(E::Key),
        ),
        (
            "key twice",
            request(
                "GET / HTTP/1.1",
                &format!("{UPGRADE}{CONNECTION}{KEY}{KEY}{VERSION}"),
            ),
            Err(E::Key),
        ),
        (
            "empty key",
            request(
                "GET / HTTP/1.1",
                &format!("{UPGRADE}{CONNECTION}Sec-WebSocket-Key:\r\n{VERSION}"),
            ),
            Err(E::Key),
        ),
        (
            "key of 15 bytes",
            request(
                "GET / HTTP/1.1",
                &format!(
                    "{UPGRADE}{CONNECTION}Sec-WebSocket-Key: MTIzNDU2Nzg5MDEyMzQ1\r\n{VERSION}"
                ),
            ),
            Err(E::Key),
        ),
        (
            "key of 17 bytes",
            request(
                "GET / HTTP/1.1",
                &format!(
                    "{UPGRADE}{CONNECTION}Sec-WebSocket-Key: MTIzNDU2Nzg5MDEyMzQ1Njc=\r\n{VERSION}"
                ),
            ),
            Err(E::Key),
        ),
        (
            "key of 18 bytes",
            request(
                "GET / HTTP/1.1",
                &format!(
                    "{UPGRADE}{CONNECTION}Sec-WebSocket-Key: MTIzNDU2Nzg5MDEyMzQ1Njc4\r\n{VERSION}"
                ),
            ),
            Err(E::Key),
        ),
        (
            "key without padding",
            request(
                "GET / HTTP/1.1",
                &format!(
                    "{UPGRADE}{CONNECTION}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n{VERSION}"
                ),
            ),
            Err(E::Key),
        ),
        (
            "key with non-zero trailing bits",
            request(
                "GET / HTTP/1.1",
                &format!(
                    "{UPGRADE}{CONNECTION}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n{VERSION}"
                ),
            ),
            Err(E::Key),
        ),
        (
            "key in the URL-safe alphabet",
            request(
                "GET / HTTP/1.1",
                &format!(
                    "{UPGRADE}{CONNECTION}Sec-WebSocket-Key: ___________________w==\r\n{VERSION}"
                ),
            ),
            Err(E::Key),
        ),
        (
            "key with a space inside",
            request(
                "GET / HTTP/1.1",
                &format!(
                    "{UPGRADE}{CONNECTION}Sec-WebSocket-Key: dGhlIHNhbXBsZSB ub25jZQ=\r\n{VERSION}"
                ),
            ),
            Err(E::Key),
        ),
        (
            "key of non-ASCII bytes",
            request(
                "GET / HTTP/1.1",
                &format!("{UPGRADE}{CONNECTION}Sec-WebSocket-Key: ÿÿÿÿÿÿÿÿÿÿÿÿ\r\n{VERSION}"),
            ),
            Err(E::Key),
        ),
        (
            "key in the standard alphabet with + and /",
            request(
                "GET / HTTP/1.1",
                &format!(
                    "{UPGRADE}{CONNECTION}Sec-WebSocket-Key: ++++////++++////++++/w==\r\n{VERSION}"
                ),
            ),
            ok,
        ),
    ];
    for (what, raw, expected) in cases {
        let got = with_request(&raw, |req| validate_upgrade(req).map(|_| ()));
        assert_eq!(got, expected, "{what}");
    }
}

#[test]
fn errors_map_to_statuses_and_headers() {
    use HandshakeError as E;
    // (error, status, headers)
    type Headers = &'static [(&'static str, &'static [u8])];
    let cases: &[(E, u16, Headers)] = &[
        (E::Method, 400, &[]),
        (E::HttpVersion, 400, &[]),
        (E::Upgrade, 400, &[]),
        (E::Connection, 400, &[]),
        (E::Key, 400, &[]),
        (
            E::Version,
            426,
            &[
                ("sec-websocket-version", b"13"),
                ("upgrade", b"websocket"),
                ("connection", b"upgrade"),
            ],
        ),
    ];
    for &(error, status, headers) in cases {
        assert_eq!(error.status(), status, "{error:?}");
        assert_eq!(error.headers(), headers, "{error:?}");
        assert!(!error.to_string().is_empty());
        // The answer goes out through the ordinary response writer, unchanged.
        let mut out = Vec::new();
        Response::detached(&mut out, false).send(
            status,
            error.headers(),
            error.reason().as_bytes(),
        );
        let text = String::from_utf8(out).unwrap();
        for (name, value) in headers {
            let line = format!("{name}: {}\r\n", std::str::from_utf8(value).unwrap());
            assert!(text.contains(&line), "{error:?}: {text}");
        }
    }
}

#[test]
fn subprotocols_table() {
    // (Sec-WebSocket-Protocol lines, offered protocols in order)
    let cases: &[(&str, &[&str])] = &[
        ("", &[]),
        ("Sec-WebSocket-Protocol: chat\r\n", &["chat"]),
        (
            "Sec-WebSocket-Protocol: chat, superchat\r\n",
            &["chat", "superchat"],
        ),
        (
            "Sec-WebSocket-Protocol: chat,superchat\r\n",
            &["chat", "superchat"],
        ),
        (
            "Sec-WebSocket-Protocol:  chat\t,\t, superchat ,\r\n",
            &["chat", "superchat"],
        ),
        ("Sec-WebSocket-Protocol: ,,,\r\n", &[]),
        ("Sec-WebSocket-Protocol:\r\n", &[]),
        (
            "Sec-WebSocket-Protocol: a\r\nX-Other: b\r\nsec-websocket-protocol: c, d\r\n",
            &["a", "c", "d"],
        ),
        (
            "Sec-WebSocket-Protocol:\r\nSec-WebSocket-Protocol: z\r\n",
            &["z"],
        ),
        ("Sec-WebSocket-Protocol: Chat\r\n", &["Chat"]),
        (
            "Sec-WebSocket-Protocol: rivetkit.v1+json, v2.x_y~z!#$%&'*^`|\r\n",
            &["rivetkit.v1+json", "v2.x_y~z!#$%&'*^`|"],
        ),
        // Elements that are not tokens are skipped.
        ("Sec-WebSocket-Protocol: a b, c\r\n", &["c"]),
        (
            "Sec-WebSocket-Protocol: a;q=1, \"quoted\", d/1, e\r\n",
            &["e"],
        ),
        ("Sec-WebSocket-Protocol: caf\u{e9}, ok\r\n", &["ok"]),
        ("X-Sec-WebSocket-Protocol: a\r\n", &[]),
    ];
    for &(lines, expected) in cases {
        let raw = upgrade_request(lines);
        with_request(&raw, |req| {
            let offered: Vec<&str> = offered_protocols(req).collect();
            assert_eq!(offered, expected, "{lines:?}");
            let upgrade = validate_upgrade(req).unwrap();
            assert_eq!(upgrade.protocols().collect::<Vec<_>>(), expected);
        });
    }
}

#[test]
fn write_accept_selects_only_offered_protocols() {
    // (offered lines, selected, the protocol line expected in the 101)
    let cases: &[(&str, Option<&str>, Option<&str>)] = &[
        ("", None, None),
        ("", Some("chat"), None),
        ("Sec-WebSocket-Protocol: chat, superchat\r\n", None, None),
        (
            "Sec-WebSocket-Protocol: chat, superchat\r\n",
            Some("superchat"),
            Some("superchat"),
        ),
        (
            "Sec-WebSocket-Protocol: chat, superchat\r\n",
            Some("Chat"),
            None,
        ),
        (
            "Sec-WebSocket-Protocol: chat, superchat\r\n",
            Some("other"),
            None,
        ),
        (
            "Sec-WebSocket-Protocol: chat, superchat\r\n",
            Some("chat\r\nx: y"),
            None,
        ),
        (
            "Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b\r\n",
            Some("b"),
            Some("b"),
        ),
    ];
    for &(lines, selected, expected) in cases {
        let raw = upgrade_request(lines);
        let out = with_request(&raw, |req| {
            let mut out = Vec::new();
            write_accept(&mut out, &validate_upgrade(req).unwrap(), selected);
            out
        });
        let text = String::from_utf8(out).unwrap();
        let mut expected_text = String::from(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n",
        );
        if let Some(p) = expected {
            expected_text.push_str(&format!("sec-websocket-protocol: {p}\r\n"));
        }
        expected_text.push_str("\r\n");
        assert_eq!(text, expected_text, "{lines:?} {selected:?}");
    }
}

#[test]
fn fuzz_header_values_never_panic() {
    let mut rng = Rng(7);
    // Bytes allowed in a field value (so the HTTP parser accepts the request), biased towards
    // the ones that matter here.
    let alphabet: Vec<u8> = b"abcXYZ019+/=,; \t\"-_.~"
        .iter()
        .copied()
        .chain(0x21..=0x7e)
        .chain([0x80, 0xC3, 0xA9, 0xFF])
        .collect();
    let names = [
        "Upgrade",
        "Connection",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Protocol",
    ];
    let mut valid = 0;
    for _ in 0..5_000 {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for name in names {
            for _ in 0..rng.below(3) {
                raw.extend_from_slice(name.as_bytes());
                raw.extend_from_slice(b": ");
                let len = rng.below(30);
                // Start and end with a visible byte so trimming does not change the length.
                raw.extend((0..len).map(|_| alphabet[rng.below(alphabet.len())]));
                raw.extend_from_slice(b"\r\n");
            }
        }
        if rng.below(2) == 0 {
            raw.extend_from_slice(format!("{UPGRADE}{CONNECTION}{KEY}{VERSION}").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let mut headers: Vec<Header<'_>> = Vec::new();
        let Ok(Progress::Complete(head)) = parse_head(&raw, &mut headers, &Limits::default())
        else {
            continue;
        };
        let req = &head.request;
        let offered: Vec<&str> = offered_protocols(req).collect();
        for p in &offered {
            assert!(
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_graphic() && !b",;\"/".contains(&b))
            );
        }
        if let Ok(upgrade) = validate_upgrade(req) {
            valid += 1;
            assert_eq!(upgrade.key().len(), 24);
            let mut out = Vec::new();
            write_accept(&mut out, &upgrade, offered.first().copied());
            let mut parsed = [httparse::EMPTY_HEADER; 8];
            let mut res = httparse::Response::new(&mut parsed);
            assert_eq!(res.parse(&out), Ok(httparse::Status::Complete(out.len())));
        }
    }
    assert!(valid > 100, "only {valid} valid upgrades");
}
