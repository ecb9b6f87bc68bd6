//! Tests of the response writer: exact bytes for the common shapes, HEAD and body-less statuses,
//! connection management headers, `send_with`, and defences against misuse.

use pinion_net::http::{Header, Limits, Progress, Response, parse_head, reason_phrase};

/// Parses `head` and runs `f` with a response writer for it, returning what was written.
fn respond(head: &[u8], f: impl FnOnce(&mut Response<'_>)) -> (String, bool) {
    let mut headers: Vec<Header<'_>> = Vec::new();
    let Ok(Progress::Complete(parsed)) = parse_head(head, &mut headers, &Limits::default()) else {
        panic!("test head must be valid");
    };
    let mut out = b"PREVIOUS".to_vec();
    let close = {
        let mut res = Response::for_request(&mut out, &parsed.request);
        f(&mut res);
        res.will_close()
    };
    assert!(out.starts_with(b"PREVIOUS"), "responses are appended");
    (String::from_utf8(out[8..].to_vec()).unwrap(), close)
}

const GET11: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

#[test]
fn send_writes_status_headers_length_and_body() {
    let (out, close) = respond(GET11, |res| {
        assert!(!res.is_sent());
        res.send(200, &[("content-type", b"application/json")], b"{\"a\":1}");
        assert!(res.is_sent());
    });
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}"
    );
    assert!(!close);
}

#[test]
fn close_is_announced_and_reported() {
    let (out, close) = respond(GET11, |res| {
        res.close_after();
        res.send(404, &[], b"");
    });
    assert_eq!(
        out,
        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    assert!(close);

    let (out, close) = respond(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", |res| {
        res.send(200, &[], b"x");
    });
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx"
    );
    assert!(close);

    // close_after after send still closes, without rewriting what was sent.
    let (out, close) = respond(GET11, |res| {
        res.send(200, &[], b"x");
        res.close_after();
    });
    assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx");
    assert!(close);

    // A handler-supplied `connection: close` is honoured and not duplicated.
    let (out, close) = respond(GET11, |res| res.send(200, &[("Connection", b"close")], b""));
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n"
    );
    assert!(close);
}

#[test]
fn http10_keep_alive_and_close() {
    let (out, close) = respond(b"GET / HTTP/1.0\r\n\r\n", |res| res.send(200, &[], b"a"));
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\na"
    );
    assert!(close);
    let (out, close) = respond(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", |res| {
        res.send(200, &[], b"a")
    });
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: keep-alive\r\n\r\na"
    );
    assert!(!close);
}

#[test]
fn head_requests_get_length_but_no_body() {
    let head = b"HEAD / HTTP/1.1\r\n\r\n";
    let (out, _) = respond(head, |res| res.send(200, &[], b"hello"));
    assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
    let (out, _) = respond(head, |res| {
        res.send_with(200, &[], |buf| buf.extend_from_slice(b"hello world"))
    });
    assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n");
}

#[test]
fn bodyless_statuses_have_no_length_and_no_body() {
    let (out, _) = respond(GET11, |res| res.send(204, &[], b"ignored"));
    assert_eq!(out, "HTTP/1.1 204 No Content\r\n\r\n");
    let (out, _) = respond(GET11, |res| {
        res.send(304, &[("etag", b"\"x\"")], b"ignored")
    });
    assert_eq!(out, "HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n");
    let (out, _) = respond(GET11, |res| {
        res.send_with(204, &[], |b| b.extend_from_slice(b"zz"))
    });
    assert_eq!(out, "HTTP/1.1 204 No Content\r\n\r\n");
}

#[test]
fn send_with_moves_the_body_behind_the_head() {
    let (out, _) = respond(GET11, |res| {
        res.send_with(201, &[("content-type", b"text/plain")], |buf| {
            buf.extend_from_slice(b"generated ");
            buf.extend_from_slice(b"body");
        })
    });
    assert_eq!(
        out,
        "HTTP/1.1 201 Created\r\ncontent-type: text/plain\r\ncontent-length: 14\r\n\r\ngenerated body"
    );
    let (out, _) = respond(GET11, |res| res.send_with(200, &[], |_| {}));
    assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    // A large body (longer than the head) rotates correctly too.
    let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let mut headers = Vec::new();
    let Ok(Progress::Complete(parsed)) = parse_head(GET11, &mut headers, &Limits::default()) else {
        panic!()
    };
    let mut out = Vec::new();
    Response::for_request(&mut out, &parsed.request)
        .send_with(200, &[], |b| b.extend_from_slice(&big));
    let head = b"HTTP/1.1 200 OK\r\ncontent-length: 10000\r\n\r\n";
    assert_eq!(&out[..head.len()], head);
    assert_eq!(&out[head.len()..], &big[..]);
}

#[test]
fn only_the_first_send_counts() {
    let (out, _) = respond(GET11, |res| {
        res.send(200, &[], b"first");
        res.send(500, &[], b"second");
        res.send_with(500, &[], |b| b.extend_from_slice(b"third"));
    });
    assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst");
}

#[test]
fn invalid_handler_headers_are_dropped_not_written() {
    let (out, _) = respond(GET11, |res| {
        res.send(
            200,
            &[
                ("x-ok", b"fine\tvalue"),
                ("x-split", b"a\r\nset-cookie: evil"),
                ("bad name", b"v"),
                ("", b"v"),
                ("x-nul", b"a\x00b"),
            ],
            b"",
        )
    });
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nx-ok: fine\tvalue\r\ncontent-length: 0\r\n\r\n"
    );
}

#[test]
fn unwritable_status_codes_become_500() {
    let (out, _) = respond(GET11, |res| res.send(42, &[], b""));
    assert!(
        out.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
        "{out}"
    );
    let (out, _) = respond(GET11, |res| res.send(1000, &[], b""));
    assert!(out.starts_with("HTTP/1.1 500 "), "{out}");
    let (out, _) = respond(GET11, |res| res.send(599, &[], b""));
    assert!(out.starts_with("HTTP/1.1 599 Unknown\r\n"), "{out}");
}

#[test]
fn reason_phrases() {
    for (code, phrase) in [
        (200, "OK"),
        (201, "Created"),
        (204, "No Content"),
        (400, "Bad Request"),
        (404, "Not Found"),
        (405, "Method Not Allowed"),
        (408, "Request Timeout"),
        (413, "Content Too Large"),
        (414, "URI Too Long"),
        (431, "Request Header Fields Too Large"),
        (500, "Internal Server Error"),
        (501, "Not Implemented"),
        (503, "Service Unavailable"),
        (505, "HTTP Version Not Supported"),
        (299, "Unknown"),
    ] {
        assert_eq!(reason_phrase(code), phrase);
    }
}

#[test]
fn detached_responses_close() {
    let mut out = Vec::new();
    let mut res = Response::detached(&mut out, true);
    res.send(400, &[("content-type", b"text/plain")], b"Bad Request");
    assert!(res.will_close());
    assert_eq!(
        out,
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 11\r\nconnection: close\r\n\r\nBad Request"
    );
}
