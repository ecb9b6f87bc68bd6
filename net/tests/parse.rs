//! Table-driven tests of the request-head parser: valid shapes, every violation with its status,
//! and incremental parsing proven by feeding every prefix of every case.

use pinion_net::http::{BodyKind, Error, Header, Limits, Method, Progress, parse_head};

/// An owned copy of a parsed head, so results can be compared after the buffer is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    method: Method,
    method_str: String,
    target: String,
    path: String,
    query: String,
    minor_version: u8,
    headers: Vec<(String, Vec<u8>)>,
    len: usize,
    body: BodyKind,
    expect_continue: bool,
    keep_alive: bool,
}

fn parse(input: &[u8], limits: &Limits) -> Result<Progress<Parsed>, Error> {
    let mut headers: Vec<Header<'_>> = Vec::new();
    Ok(match parse_head(input, &mut headers, limits)? {
        Progress::Partial => Progress::Partial,
        Progress::Complete(head) => {
            let r = &head.request;
            Progress::Complete(Parsed {
                method: r.method,
                method_str: r.method_str.to_owned(),
                target: r.target.to_owned(),
                path: r.path.to_owned(),
                query: r.query.to_owned(),
                minor_version: r.minor_version,
                headers: r
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), h.value.to_vec()))
                    .collect(),
                len: head.len,
                body: head.body,
                expect_continue: head.expect_continue,
                keep_alive: r.keep_alive(),
            })
        }
    })
}

fn complete(input: &[u8], limits: &Limits) -> Parsed {
    match parse(input, limits) {
        Ok(Progress::Complete(p)) => p,
        other => panic!(
            "expected a complete head for {:?}, got {other:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

/// Every proper prefix of a valid head must be `Partial`: the parser may never reject, or
/// claim completeness, before it has seen the whole head.
fn assert_prefixes_partial(input: &[u8], head_len: usize, limits: &Limits) {
    for k in 0..head_len {
        assert_eq!(
            parse(&input[..k], limits),
            Ok(Progress::Partial),
            "prefix {k} of {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

/// Every prefix of an invalid input must be `Partial` or the same error as the whole input:
/// errors are reported at the first violating byte, however the input was split.
fn assert_prefixes_consistent(input: &[u8], expected: Error, limits: &Limits) {
    for k in 0..=input.len() {
        match parse(&input[..k], limits) {
            Ok(Progress::Partial) => {}
            Err(e) if e == expected => {}
            other => panic!(
                "prefix {k} of {:?}: expected Partial or {expected:?}, got {other:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }
}

struct Valid {
    input: &'static [u8],
    method: Method,
    method_str: &'static str,
    target: &'static str,
    path: &'static str,
    query: &'static str,
    minor: u8,
    headers: &'static [(&'static str, &'static [u8])],
    body: BodyKind,
    keep_alive: bool,
    expect_continue: bool,
}

const GET: Valid = Valid {
    input: b"GET / HTTP/1.1\r\n\r\n",
    method: Method::Get,
    method_str: "GET",
    target: "/",
    path: "/",
    query: "",
    minor: 1,
    headers: &[],
    body: BodyKind::None,
    keep_alive: true,
    expect_continue: false,
};

fn valid_cases() -> Vec<Valid> {
    vec![
        GET,
        Valid {
            input: b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\n\r\n",
            target: "/a/b?x=1&y=2",
            path: "/a/b",
            query: "x=1&y=2",
            headers: &[("Host", b"example.com")],
            ..GET
        },
        Valid {
            input: b"GET /a?b?c HTTP/1.1\r\n\r\n",
            target: "/a?b?c",
            path: "/a",
            query: "b?c",
            ..GET
        },
        Valid {
            input: b"GET /? HTTP/1.1\r\n\r\n",
            target: "/?",
            path: "/",
            query: "",
            ..GET
        },
        Valid {
            input: b"GET /%20x/~y!$&'()*+,;=:@-._ HTTP/1.1\r\n\r\n",
            target: "/%20x/~y!$&'()*+,;=:@-._",
            path: "/%20x/~y!$&'()*+,;=:@-._",
            ..GET
        },
        Valid {
            input: b"GET /old HTTP/1.0\r\n\r\n",
            target: "/old",
            path: "/old",
            minor: 0,
            keep_alive: false,
            ..GET
        },
        Valid {
            input: b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
            minor: 0,
            headers: &[("Connection", b"Keep-Alive")],
            keep_alive: true,
            ..GET
        },
        Valid {
            input: b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            headers: &[("Connection", b"close")],
            keep_alive: false,
            ..GET
        },
        Valid {
            input: b"GET / HTTP/1.1\r\nconnection: Upgrade, CLOSE\r\n\r\n",
            headers: &[("connection", b"Upgrade, CLOSE")],
            keep_alive: false,
            ..GET
        },
        Valid {
            input: b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
            minor: 0,
            headers: &[("Connection", b"keep-alive"), ("Connection", b"close")],
            keep_alive: false,
            ..GET
        },
        Valid {
            input: b"HEAD /h HTTP/1.1\r\n\r\n",
            method: Method::Head,
            method_str: "HEAD",
            target: "/h",
            path: "/h",
            ..GET
        },
        Valid {
            input: b"PUT /p HTTP/1.1\r\n\r\n",
            method: Method::Put,
            method_str: "PUT",
            target: "/p",
            path: "/p",
            ..GET
        },
        Valid {
            input: b"DELETE /d HTTP/1.1\r\n\r\n",
            method: Method::Delete,
            method_str: "DELETE",
            target: "/d",
            path: "/d",
            ..GET
        },
        Valid {
            input: b"PATCH /p HTTP/1.1\r\n\r\n",
            method: Method::Patch,
            method_str: "PATCH",
            target: "/p",
            path: "/p",
            ..GET
        },
        Valid {
            input: b"OPTIONS * HTTP/1.1\r\n\r\n",
            method: Method::Options,
            method_str: "OPTIONS",
            target: "*",
            path: "*",
            ..GET
        },
        Valid {
            input: b"OPTIONS /o HTTP/1.1\r\n\r\n",
            method: Method::Options,
            method_str: "OPTIONS",
            target: "/o",
            path: "/o",
            ..GET
        },
        Valid {
            input: b"PROPFIND /dav HTTP/1.1\r\n\r\n",
            method: Method::Other,
            method_str: "PROPFIND",
            target: "/dav",
            path: "/dav",
            ..GET
        },
        Valid {
            // Methods are case-sensitive: lowercase `get` is some other method.
            input: b"get / HTTP/1.1\r\n\r\n",
            method: Method::Other,
            method_str: "get",
            ..GET
        },
        Valid {
            input: b"X-M!#$%&'*+-.^_`|~9 / HTTP/1.1\r\n\r\n",
            method: Method::Other,
            method_str: "X-M!#$%&'*+-.^_`|~9",
            ..GET
        },
        Valid {
            input: b"GET / HTTP/1.1\r\nX-A:   spaced  value \t \r\nX-B:\r\nX-C: \t\r\nX-D:tight\r\n\r\n",
            headers: &[
                ("X-A", b"spaced  value"),
                ("X-B", b""),
                ("X-C", b""),
                ("X-D", b"tight"),
            ],
            ..GET
        },
        Valid {
            input: b"GET / HTTP/1.1\r\nX-Utf8: caf\xc3\xa9 \xff\r\nX-Q: \"a:b\" (c) [d] {e}\r\n\r\n",
            headers: &[("X-Utf8", b"caf\xc3\xa9 \xff"), ("X-Q", b"\"a:b\" (c) [d] {e}")],
            ..GET
        },
        Valid {
            input: b"\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            ..GET
        },
        Valid {
            input: b"POST /gateway/abc/action/increment HTTP/1.1\r\nHost: localhost:6420\r\nContent-Type: application/json\r\nContent-Length: 13\r\nAccept: */*\r\nUser-Agent: test/1.0\r\nX-RivetKit-Encoding: json\r\n\r\n",
            method: Method::Post,
            method_str: "POST",
            target: "/gateway/abc/action/increment",
            path: "/gateway/abc/action/increment",
            headers: &[
                ("Host", b"localhost:6420"),
                ("Content-Type", b"application/json"),
                ("Content-Length", b"13"),
                ("Accept", b"*/*"),
                ("User-Agent", b"test/1.0"),
                ("X-RivetKit-Encoding", b"json"),
            ],
            body: BodyKind::Length(13),
            ..GET
        },
        Valid {
            input: b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            method: Method::Post,
            method_str: "POST",
            headers: &[("Content-Length", b"0")],
            body: BodyKind::None,
            ..GET
        },
        Valid {
            input: b"POST / HTTP/1.1\r\nContent-Length:  7 \r\ncontent-length: 7\r\n\r\n",
            method: Method::Post,
            method_str: "POST",
            headers: &[("Content-Length", b"7"), ("content-length", b"7")],
            body: BodyKind::Length(7),
            ..GET
        },
        Valid {
            input: b"POST / HTTP/1.1\r\nContent-Length: 0007\r\n\r\n",
            method: Method::Post,
            method_str: "POST",
            headers: &[("Content-Length", b"0007")],
            body: BodyKind::Length(7),
            ..GET
        },
        Valid {
            input: b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            method: Method::Post,
            method_str: "POST",
            headers: &[("Transfer-Encoding", b"chunked")],
            body: BodyKind::Chunked,
            ..GET
        },
        Valid {
            input: b"POST / HTTP/1.1\r\ntransfer-encoding:  CHUNKED\r\n\r\n",
            method: Method::Post,
            method_str: "POST",
            headers: &[("transfer-encoding", b"CHUNKED")],
            body: BodyKind::Chunked,
            ..GET
        },
        Valid {
            input: b"PUT /u HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
            method: Method::Put,
            method_str: "PUT",
            target: "/u",
            path: "/u",
            headers: &[("Content-Length", b"3"), ("Expect", b"100-continue")],
            body: BodyKind::Length(3),
            expect_continue: true,
            ..GET
        },
        Valid {
            // RFC 9110 §10.1.1: a 1.0 client cannot expect 100-continue.
            input: b"PUT /u HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n",
            method: Method::Put,
            method_str: "PUT",
            target: "/u",
            path: "/u",
            minor: 0,
            headers: &[("Content-Length", b"3"), ("Expect", b"100-Continue")],
            body: BodyKind::Length(3),
            keep_alive: false,
            expect_continue: false,
            ..GET
        },
    ]
}

#[test]
fn valid_heads_parse_completely_and_incrementally() {
    let limits = Limits::default();
    for case in valid_cases() {
        let p = complete(case.input, &limits);
        let what = String::from_utf8_lossy(case.input);
        assert_eq!(p.method, case.method, "{what}");
        assert_eq!(p.method_str, case.method_str, "{what}");
        assert_eq!(p.target, case.target, "{what}");
        assert_eq!(p.path, case.path, "{what}");
        assert_eq!(p.query, case.query, "{what}");
        assert_eq!(p.minor_version, case.minor, "{what}");
        let expected: Vec<(String, Vec<u8>)> = case
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect();
        assert_eq!(p.headers, expected, "{what}");
        assert_eq!(p.len, case.input.len(), "{what}");
        assert_eq!(p.body, case.body, "{what}");
        assert_eq!(p.keep_alive, case.keep_alive, "{what}");
        assert_eq!(p.expect_continue, case.expect_continue, "{what}");

        assert_prefixes_partial(case.input, case.input.len(), &limits);

        // Bytes after the head (a body, a pipelined request, garbage) are not examined.
        for suffix in [&b"hello"[..], b"GET / HTTP/1.1\r\n\r\n", b"\x00\xff\r\n"] {
            let mut longer = case.input.to_vec();
            longer.extend_from_slice(suffix);
            assert_eq!(complete(&longer, &limits), p, "{what} + suffix");
        }
    }
}

#[test]
fn header_lookup_is_case_insensitive_and_returns_the_first_match() {
    let input = b"GET / HTTP/1.1\r\nX-Dup: one\r\nHOST: h\r\nx-dup: two\r\n\r\n";
    let mut headers = Vec::new();
    let Ok(Progress::Complete(head)) = parse_head(input, &mut headers, &Limits::default()) else {
        panic!("valid head rejected");
    };
    assert_eq!(head.request.header("x-dup"), Some(&b"one"[..]));
    assert_eq!(head.request.header("X-DUP"), Some(&b"one"[..]));
    assert_eq!(head.request.header("host"), Some(&b"h"[..]));
    assert_eq!(head.request.header("missing"), None);
    assert_eq!(head.request.headers.len(), 3);
}

#[test]
fn header_storage_is_cleared_and_reused() {
    let limits = Limits::default();
    let mut headers = Vec::with_capacity(8);
    let first = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    let second = b"GET / HTTP/1.1\r\nD: 4\r\n\r\n";
    let ptr = headers.as_ptr();
    assert!(matches!(
        parse_head(first, &mut headers, &limits),
        Ok(Progress::Complete(ref h)) if h.request.headers.len() == 3
    ));
    let Ok(Progress::Complete(head)) = parse_head(second, &mut headers, &limits) else {
        panic!("valid head rejected");
    };
    assert_eq!(head.request.headers.len(), 1);
    assert_eq!(head.request.headers[0].name, "D");
    assert_eq!(headers.as_ptr(), ptr, "no reallocation within capacity");
}

#[test]
fn invalid_heads_are_rejected_with_the_right_status() {
    use Error::*;
    let cases: &[(&[u8], Error)] = &[
        // Request line syntax.
        (b" GET / HTTP/1.1\r\n\r\n", BadRequest),
        (b"GET  / HTTP/1.1\r\n\r\n", BadRequest),
        (b"GET /  HTTP/1.1\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1 \r\n\r\n", BadRequest),
        (b"GET\t/ HTTP/1.1\r\n\r\n", BadRequest),
        (b"G(T / HTTP/1.1\r\n\r\n", BadRequest),
        (b"G\x00T / HTTP/1.1\r\n\r\n", BadRequest),
        (b"GET\r\n\r\n", BadRequest),
        (b"GET /\r\n\r\n", BadRequest),
        (b"GET / \r\n\r\n", BadRequest),
        (b"\r\r\nGET / HTTP/1.1\r\n\r\n", BadRequest),
        (b"\nGET / HTTP/1.1\r\n\r\n", BadRequest),
        // Bare LF line endings (we accept CRLF only).
        (b"GET / HTTP/1.1\n\n", BadRequest),
        (b"GET / HTTP/1.1\r\nHost: a\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\n", BadRequest),
        (b"GET / HTTP/1.1\r\r\n\r\n", BadRequest),
        // Request-target.
        (b"GET http://example.com/ HTTP/1.1\r\n\r\n", BadRequest),
        (b"CONNECT example.com:443 HTTP/1.1\r\n\r\n", BadRequest),
        (b"GET * HTTP/1.1\r\n\r\n", BadRequest),
        (b"OPTIONS ** HTTP/1.1\r\n\r\n", BadRequest),
        (b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", BadRequest),
        (b"GET /a\x7f HTTP/1.1\r\n\r\n", BadRequest),
        (b"GET /a\x00b HTTP/1.1\r\n\r\n", BadRequest),
        (b"GET /a\rb HTTP/1.1\r\n\r\n", BadRequest),
        // Version.
        (b"GET / HTTP/2.0\r\n\r\n", VersionNotSupported),
        (b"GET / HTTP/1.2\r\n\r\n", VersionNotSupported),
        (b"GET / HTTP/0.9\r\n\r\n", VersionNotSupported),
        (b"GET / HTTP/3.1\r\n\r\n", VersionNotSupported),
        (b"GET / HTTP/1\r\n\r\n", BadRequest),
        (b"GET / HTTP/11\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.10\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.x\r\n\r\n", BadRequest),
        (b"GET / http/1.1\r\n\r\n", BadRequest),
        (b"GET / HTTX/1.1\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1x\r\n\r\n", BadRequest),
        // Header fields.
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\n: a\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nHost a\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nHo\xc3\xa9st: a\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nX: a\nb\r\n\r\n", BadRequest),
        // Obsolete line folding.
        (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", BadRequest),
        // Content-Length.
        (b"POST / HTTP/1.1\r\nContent-Length: 5a\r\n\r\n", BadRequest),
        (b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", BadRequest),
        (b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", BadRequest),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n",
            BadRequest,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 5 5\r\n\r\n",
            BadRequest,
        ),
        (b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", BadRequest),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            BadRequest,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            BadRequest,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            BadRequest,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n",
            ContentTooLarge,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
            ContentTooLarge,
        ),
        // Transfer-Encoding.
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            BadRequest,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            BadRequest,
        ),
        (
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            BadRequest,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            BadRequest,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            BadRequest,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            BadRequest,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            BadRequest,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked,\r\n\r\n",
            BadRequest,
        ),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n", BadRequest),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            BadRequest,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            NotImplemented,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            NotImplemented,
        ),
    ];
    let limits = Limits::default();
    for &(input, expected) in cases {
        assert_eq!(
            parse(input, &limits),
            Err(expected),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert_prefixes_consistent(input, expected, &limits);
    }
}

#[test]
fn error_statuses() {
    assert_eq!(Error::BadRequest.status(), 400);
    assert_eq!(Error::UriTooLong.status(), 414);
    assert_eq!(Error::HeaderFieldsTooLarge.status(), 431);
    assert_eq!(Error::ContentTooLarge.status(), 413);
    assert_eq!(Error::NotImplemented.status(), 501);
    assert_eq!(Error::VersionNotSupported.status(), 505);
}

fn small_limits() -> Limits {
    Limits {
        request_line_max: 32,
        header_count_max: 3,
        header_bytes_max: 128,
        body_bytes_max: 100,
    }
}

/// Builds `GET /xxx… HTTP/1.1\r\n` whose length, CRLF included, is exactly `len`.
fn request_line(len: usize) -> Vec<u8> {
    let fixed = "GET / HTTP/1.1\r\n".len();
    let mut line = b"GET /".to_vec();
    line.extend(std::iter::repeat_n(b'x', len - fixed));
    line.extend_from_slice(b" HTTP/1.1\r\n");
    assert_eq!(line.len(), len);
    line
}

#[test]
fn request_line_limit_is_inclusive_and_answered_with_414() {
    let limits = small_limits();
    let mut at_max = request_line(32);
    at_max.extend_from_slice(b"\r\n");
    assert_eq!(complete(&at_max, &limits).len, 34);

    let mut over = request_line(33);
    over.extend_from_slice(b"\r\n");
    assert_eq!(parse(&over, &limits), Err(Error::UriTooLong));
    assert_prefixes_consistent(&over, Error::UriTooLong, &limits);
    // Known as soon as the limit is passed, before the line ends.
    assert_eq!(parse(&over[..32], &limits), Err(Error::UriTooLong));
    assert_eq!(parse(&over[..31], &limits), Ok(Progress::Partial));

    // Leading empty lines do not count towards the request line.
    let mut led = b"\r\n\r\n".to_vec();
    led.extend_from_slice(&at_max);
    assert_eq!(complete(&led, &limits).len, 38);

    // A long method or a long version-looking tail counts too.
    let long_method = [&[b'M'; 40][..], b" / HTTP/1.1\r\n\r\n"].concat();
    assert_eq!(parse(&long_method, &limits), Err(Error::UriTooLong));
}

#[test]
fn head_size_limit_is_inclusive_and_answered_with_431() {
    let limits = small_limits();
    // 16 (request line) + header line + 2 (final CRLF) == 128 exactly.
    let value_len = 128 - 16 - 2 - "X: \r\n".len();
    let mut at_max = b"GET / HTTP/1.1\r\nX: ".to_vec();
    at_max.extend(std::iter::repeat_n(b'v', value_len));
    at_max.extend_from_slice(b"\r\n\r\n");
    assert_eq!(at_max.len(), 128);
    assert_eq!(complete(&at_max, &limits).len, 128);

    let mut over = b"GET / HTTP/1.1\r\nX: ".to_vec();
    over.extend(std::iter::repeat_n(b'v', value_len + 1));
    over.extend_from_slice(b"\r\n\r\n");
    assert_eq!(parse(&over, &limits), Err(Error::HeaderFieldsTooLarge));
    assert_prefixes_consistent(&over, Error::HeaderFieldsTooLarge, &limits);

    // Endless leading empty lines hit the head limit.
    let crlfs = b"\r\n".repeat(100);
    assert_eq!(parse(&crlfs, &limits), Err(Error::HeaderFieldsTooLarge));

    // When the head limit is below the request-line limit, a long request line is a 431.
    let tight = Limits {
        request_line_max: 64,
        header_bytes_max: 40,
        ..small_limits()
    };
    let mut line = request_line(50);
    line.extend_from_slice(b"\r\n");
    assert_eq!(parse(&line, &tight), Err(Error::HeaderFieldsTooLarge));
}

#[test]
fn header_count_limit_is_inclusive_and_answered_with_431() {
    let limits = small_limits();
    let at_max = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(complete(at_max, &limits).headers.len(), 3);
    let over = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    assert_eq!(parse(over, &limits), Err(Error::HeaderFieldsTooLarge));
    assert_prefixes_consistent(over, Error::HeaderFieldsTooLarge, &limits);

    // The default allows 64 and rejects 65.
    let defaults = Limits::default();
    let many = |n: usize| {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..n {
            head.extend_from_slice(format!("X-Header-{i}: value {i}\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        head
    };
    let sixty_four = many(64);
    let p = complete(&sixty_four, &defaults);
    assert_eq!(p.headers.len(), 64);
    assert_eq!(
        p.headers[63],
        ("X-Header-63".to_string(), b"value 63".to_vec())
    );
    assert_prefixes_partial(&sixty_four, sixty_four.len(), &defaults);
    assert_eq!(
        parse(&many(65), &defaults),
        Err(Error::HeaderFieldsTooLarge)
    );
}

#[test]
fn body_limit_applies_to_content_length() {
    let limits = small_limits();
    let at_max = b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n";
    assert_eq!(complete(at_max, &limits).body, BodyKind::Length(100));
    let over = b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n";
    assert_eq!(parse(over, &limits), Err(Error::ContentTooLarge));
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap exhaustive-ish sweep: every single-byte mutation of a realistic head, under both
    // default and tiny limits, must produce Partial, Complete or an Error without panicking, and
    // a Complete head must lie within the input.
    let base = b"POST /a?b=c HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nX: y z\r\n\r\nabc";
    let limit_sets = [
        Limits::default(),
        small_limits(),
        Limits {
            request_line_max: 0,
            header_count_max: 0,
            header_bytes_max: 0,
            body_bytes_max: 0,
        },
    ];
    for limits in &limit_sets {
        for i in 0..base.len() {
            for b in 0..=255u8 {
                let mut input = base.to_vec();
                input[i] = b;
                let mut headers = Vec::new();
                if let Ok(Progress::Complete(head)) = parse_head(&input, &mut headers, limits) {
                    assert!(head.len <= input.len());
                }
            }
        }
    }
}
