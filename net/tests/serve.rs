//! Tests of `serve` over real sockets on 127.0.0.1: a glommio `LocalExecutor` on its own thread
//! runs an accept loop (one task per connection) and the tests talk to it with blocking std
//! sockets, so every assertion is on the exact bytes a client receives.

mod common;

use common::Resp;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use pinion_net::http::{Limits, Method, Request, Response};
use pinion_net::listener::reuseport_glommio_listener;
use pinion_net::server::{Handler, serve};

/// The handler the tests talk to; the path selects the behaviour.
struct TestHandler;

impl Handler for TestHandler {
    async fn handle(&self, req: &Request<'_>, body: &mut [u8], res: &mut Response<'_>) {
        match req.path {
            "/echo" => res.send(200, &[("content-type", b"application/octet-stream")], body),
            "/upper" => {
                // The body is mutable in place (what simd-json needs).
                body.make_ascii_uppercase();
                res.send(200, &[], body);
            }
            "/info" => {
                let info = format!(
                    "{} {:?} path={} query={} v=1.{} ka={} body={} host={}",
                    req.method_str,
                    req.method,
                    req.path,
                    req.query,
                    req.minor_version,
                    req.keep_alive(),
                    body.len(),
                    String::from_utf8_lossy(req.header("host").unwrap_or(b"-")),
                );
                res.send(200, &[("content-type", b"text/plain")], info.as_bytes());
            }
            "/slow" => {
                glommio::timer::sleep(Duration::from_millis(30)).await;
                res.send(200, &[], b"slow");
            }
            "/close" => {
                res.close_after();
                res.send(200, &[], b"bye");
            }
            "/big" => res.send_with(200, &[], |out| {
                out.extend((0..100_000u32).map(|i| b'a' + (i % 26) as u8));
            }),
            "/nosend" => {}
            _ => res.send(404, &[], b"not found"),
        }
    }
}

/// Starts (once per limits flavour) a server thread and returns its address.
fn server(small: bool) -> SocketAddr {
    static DEFAULT: OnceLock<SocketAddr> = OnceLock::new();
    static SMALL: OnceLock<SocketAddr> = OnceLock::new();
    let cell = if small { &SMALL } else { &DEFAULT };
    *cell.get_or_init(|| {
        let limits = if small {
            small_limits()
        } else {
            Limits::default()
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let executor = LocalExecutorBuilder::new(Placement::Unbound)
                .make()
                .expect("glommio executor");
            executor.run(async move {
                let listener =
                    reuseport_glommio_listener("127.0.0.1:0".parse().unwrap(), 128).unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let limits = Rc::new(limits);
                loop {
                    let Ok(stream) = listener.accept().await else {
                        continue;
                    };
                    let limits = Rc::clone(&limits);
                    glommio::spawn_local(async move {
                        let _ = serve(stream, &TestHandler, &limits).await;
                    })
                    .detach();
                }
            });
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("server thread started")
    })
}

fn small_limits() -> Limits {
    Limits {
        request_line_max: 64,
        header_count_max: 4,
        header_bytes_max: 256,
        body_bytes_max: 64,
    }
}

/// A blocking test client that keeps unread bytes between responses.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads more bytes; returns false at EOF.
    fn read_more(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).expect("read (timeout = hang)");
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Reads exactly `n` raw bytes.
    fn raw(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.read_more(), "EOF before {n} bytes");
        }
        self.buf.drain(..n).collect()
    }

    fn response(&mut self) -> Resp {
        self.response_to(false)
    }

    /// Reads one response; `head_request` means no body follows despite content-length.
    fn response_to(&mut self, head_request: bool) -> Resp {
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            assert!(
                self.read_more(),
                "EOF inside a response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).unwrap();
        assert!(head.starts_with("HTTP/1.1 "), "{head}");
        self.buf.drain(..head_end);
        let mut resp = Resp::from_head(&head);
        if !head_request {
            resp.body = self.raw(resp.content_length());
        }
        resp
    }

    /// Asserts the server closed the connection with nothing more to say.
    fn expect_eof(&mut self) {
        assert!(
            !self.read_more() && self.buf.is_empty(),
            "expected EOF, got {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let mut c = Client::connect(server(false));
    for i in 0..5 {
        c.send(format!("GET /info?i={i} HTTP/1.1\r\nHost: h{i}\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!(r.status, 200);
        assert_eq!(
            String::from_utf8(r.body.clone()).unwrap(),
            format!("GET Get path=/info query=i={i} v=1.1 ka=true body=0 host=h{i}")
        );
        assert!(!r.closes());
        let body = format!("payload {i}");
        c.send(&post("/echo", body.as_bytes()));
        let r = c.response();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body.as_bytes());
    }
    c.send(b"GET /nowhere HTTP/1.1\r\n\r\n");
    assert_eq!(c.response().status, 404);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut c = Client::connect(server(false));
    let mut batch = Vec::new();
    batch.extend_from_slice(b"GET /slow HTTP/1.1\r\n\r\n");
    batch.extend_from_slice(&post("/echo", b"second"));
    batch.extend_from_slice(b"GET /info?third HTTP/1.1\r\n\r\n");
    batch.extend_from_slice(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nfou\r\n2;x=y\r\nrt\r\n0\r\nT: v\r\n\r\n");
    batch.extend_from_slice(b"HEAD /echo HTTP/1.1\r\n\r\n");
    batch.extend_from_slice(b"GET /last HTTP/1.1\r\n\r\n");
    c.send(&batch);
    let r = c.response();
    assert_eq!((r.status, &r.body[..]), (200, &b"slow"[..]));
    let r = c.response();
    assert_eq!((r.status, &r.body[..]), (200, &b"second"[..]));
    let r = c.response();
    assert!(
        r.body.starts_with(b"GET Get path=/info query=third"),
        "{r:?}"
    );
    let r = c.response();
    assert_eq!((r.status, &r.body[..]), (200, &b"fourt"[..]));
    let r = c.response_to(true);
    assert_eq!((r.status, r.header("content-length")), (200, Some("0")));
    let r = c.response();
    assert_eq!(r.status, 404);
}

#[test]
fn many_pipelined_requests_in_one_write() {
    let mut c = Client::connect(server(false));
    let mut batch = Vec::new();
    for i in 0..300 {
        batch.extend_from_slice(&post("/echo", format!("#{i}").as_bytes()));
    }
    // Large responses in the middle force early flushes.
    batch.extend_from_slice(b"GET /big HTTP/1.1\r\n\r\nGET /big HTTP/1.1\r\n\r\n");
    batch.extend_from_slice(&post("/echo", b"end"));
    c.send(&batch);
    for i in 0..300 {
        let r = c.response();
        assert_eq!(r.body, format!("#{i}").as_bytes());
    }
    for _ in 0..2 {
        let r = c.response();
        assert_eq!(r.body.len(), 100_000);
        assert!(r.body.starts_with(b"abcdefghijklmnopqrstuvwxyzabc"));
    }
    assert_eq!(c.response().body, b"end");
}

#[test]
fn bodies_and_heads_split_across_reads() {
    let mut c = Client::connect(server(false));
    let req = post("/echo", b"split body arrives in pieces");
    for piece in req.chunks(7) {
        c.send(piece);
        std::thread::sleep(Duration::from_millis(2));
    }
    let r = c.response();
    assert_eq!(r.body, b"split body arrives in pieces");

    // A larger body than the initial read buffer, in two writes.
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let req = post("/echo", &body);
    c.send(&req[..1000]);
    std::thread::sleep(Duration::from_millis(10));
    c.send(&req[1000..]);
    assert_eq!(c.response().body, body);
}

#[test]
fn chunked_body_is_echoed_after_in_place_decoding() {
    let mut c = Client::connect(server(false));
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    std::thread::sleep(Duration::from_millis(5));
    for piece in [
        &b"5;ext=1\r\nhel"[..],
        b"lo\r\n",
        b"1\r\n \r\nA\r\n",
        b"0123456789\r",
        b"\n0\r\nTrailer-A: 1\r\n",
        b"\r\nGET /info HTTP/1.1\r\n\r\n",
    ] {
        c.send(piece);
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello 0123456789");
    // The pipelined request after the chunked body is intact.
    let r = c.response();
    assert!(r.body.starts_with(b"GET Get path=/info"), "{r:?}");

    // In-place mutation of a chunked body.
    c.send(b"POST /upper HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n");
    assert_eq!(c.response().body, b"ABCDEF");
}

#[test]
fn expect_100_continue() {
    let mut c = Client::connect(server(false));
    c.send(b"PUT /echo HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(c.raw(25), b"HTTP/1.1 100 Continue\r\n\r\n");
    c.send(b"hello");
    let r = c.response();
    assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));

    // Chunked bodies get the interim response too.
    c.send(b"PUT /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(c.raw(25), b"HTTP/1.1 100 Continue\r\n\r\n");
    c.send(b"2\r\nok\r\n0\r\n\r\n");
    assert_eq!(c.response().body, b"ok");

    // A body that already arrived needs no interim response.
    let mut req =
        b"PUT /echo HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n".to_vec();
    req.extend_from_slice(b"abc");
    c.send(&req);
    let r = c.response();
    assert_eq!((r.status, &r.body[..]), (200, &b"abc"[..]));

    // No body, no interim response.
    c.send(b"GET /echo HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body.len()), (200, 0));

    // A body over the limit gets 413 instead of 100, and the connection closes.
    c.send(b"PUT /echo HTTP/1.1\r\nContent-Length: 2000000\r\nExpect: 100-continue\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 413);
    assert!(r.closes());
    c.expect_eof();
}

#[test]
fn handler_without_response_gets_500_and_the_connection_survives() {
    let mut c = Client::connect(server(false));
    c.send(b"GET /nosend HTTP/1.1\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 500);
    assert!(!r.closes());
    c.send(b"GET /echo HTTP/1.1\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn connection_close_is_honoured() {
    // Requested by the client.
    let mut c = Client::connect(server(false));
    c.send(b"GET /echo HTTP/1.1\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(r.closes());
    c.expect_eof();

    // Requested by the handler.
    let mut c = Client::connect(server(false));
    c.send(b"GET /close HTTP/1.1\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, &r.body[..]), (200, &b"bye"[..]));
    assert!(r.closes());
    c.expect_eof();

    // HTTP/1.0 without keep-alive closes; with keep-alive it stays open.
    let mut c = Client::connect(server(false));
    c.send(b"GET /info HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert!(
        r.body
            .starts_with(b"GET Get path=/info query= v=1.0 ka=true")
    );
    c.send(b"GET /info HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert!(r.closes());
    c.expect_eof();
}

#[test]
fn head_request_has_no_body() {
    let mut c = Client::connect(server(false));
    c.send(b"HEAD /big HTTP/1.1\r\n\r\nGET /echo HTTP/1.1\r\n\r\n");
    let r = c.response_to(true);
    assert_eq!(
        (r.status, r.header("content-length")),
        (200, Some("100000"))
    );
    // The next response follows immediately: no body bytes were sent for HEAD.
    let r = c.response();
    assert_eq!((r.status, r.body.len()), (200, 0));
}

/// Sends `request` on a fresh connection and checks the error response and the close.
fn assert_rejected(small: bool, request: &[u8], status: u16) {
    let mut c = Client::connect(server(small));
    c.send(request);
    let r = c.response();
    assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(request));
    assert!(r.closes(), "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    c.expect_eof();
    // The server keeps accepting and serving new connections after a bad one.
    let mut next = Client::connect(server(small));
    next.send(b"GET /echo HTTP/1.1\r\n\r\n");
    assert_eq!(next.response().status, 200);
}

#[test]
fn protocol_errors_are_answered_and_the_connection_closed() {
    assert_rejected(false, b"GET / HTTP/1.1\nHost: x\n\n", 400);
    assert_rejected(false, b"GET http://x/ HTTP/1.1\r\n\r\n", 400);
    assert_rejected(false, b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400);
    assert_rejected(false, b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400);
    assert_rejected(
        false,
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        400,
    );
    assert_rejected(
        false,
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    );
    assert_rejected(
        false,
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    );
    assert_rejected(false, b"GET / HTTP/2.0\r\n\r\n", 505);
    assert_rejected(
        false,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        501,
    );
    // Binary garbage (e.g. a TLS ClientHello) is rejected at once, without waiting for a head.
    assert_rejected(false, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400);
}

#[test]
fn limit_violations_are_answered_with_their_status() {
    let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100));
    assert_rejected(true, long_target.as_bytes(), 414);
    let many = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n";
    assert_rejected(true, many, 431);
    let big_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(300));
    assert_rejected(true, big_head.as_bytes(), 431);
    assert_rejected(
        true,
        b"POST /echo HTTP/1.1\r\nContent-Length: 65\r\n\r\n",
        413,
    );
    // The body was partly sent already: still 413, and the close is clean (no reset).
    let mut req = b"POST /echo HTTP/1.1\r\nContent-Length: 1000\r\n\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'x', 1000));
    assert_rejected(true, &req, 413);
    // Chunked bodies are limited after decoding.
    let chunked = b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n01234567890123456789012345678901\r\n21\r\n";
    assert_rejected(true, chunked, 413);
    // At the limit is fine.
    let mut c = Client::connect(server(true));
    let body = [b'y'; 64];
    c.send(&post("/echo", &body));
    assert_eq!(c.response().body, body);
}

#[test]
fn responses_before_an_error_are_still_delivered_in_order() {
    let mut c = Client::connect(server(false));
    c.send(b"GET /info HTTP/1.1\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGARBAGE / HTTP/9.9\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert_eq!(c.response().body, b"ok");
    let r = c.response();
    assert_eq!(r.status, 505);
    assert!(r.closes());
    c.expect_eof();
}

#[test]
fn peer_closing_mid_request_is_harmless() {
    let addr = server(false);
    for partial in [
        &b"GET /echo HTTP/1.1\r\nHost"[..],
        b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ] {
        let mut c = Client::connect(addr);
        c.send(partial);
        c.stream.shutdown(Shutdown::Write).unwrap();
        c.expect_eof();
    }
    // A complete request followed by a half-close is still answered.
    let mut c = Client::connect(addr);
    c.send(b"GET /echo HTTP/1.1\r\n\r\n");
    c.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(c.response().status, 200);
    c.expect_eof();
    let mut c = Client::connect(addr);
    c.send(b"GET /echo HTTP/1.1\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn methods_map_to_variants() {
    let mut c = Client::connect(server(false));
    for (m, v) in [
        ("DELETE", Method::Delete),
        ("PATCH", Method::Patch),
        ("BREW", Method::Other),
    ] {
        c.send(format!("{m} /info HTTP/1.1\r\n\r\n").as_bytes());
        let body = String::from_utf8(c.response().body).unwrap();
        assert!(body.starts_with(&format!("{m} {v:?} ")), "{body}");
    }
}

#[test]
fn mutated_traffic_never_takes_the_server_down() {
    // Deterministic xorshift so failures reproduce.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let bases: [&[u8]; 4] = [
        b"GET /info?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;e\r\nabc\r\n0\r\nT: 1\r\n\r\n",
        b"PUT /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    ];
    for small in [false, true] {
        let addr = server(small);
        for _ in 0..100 {
            let mut input = Vec::new();
            for _ in 0..1 + next() % 3 {
                input.extend_from_slice(bases[(next() % 4) as usize]);
            }
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % input.len();
                match next() % 3 {
                    0 => input[at] = next() as u8,
                    1 => input.insert(at, b"\r\n :\x00"[(next() % 5) as usize]),
                    _ => {
                        input.remove(at);
                    }
                }
            }
            let mut c = Client::connect(addr);
            c.send(&input);
            c.stream.shutdown(Shutdown::Write).unwrap();
            // Whatever came back must be well-formed responses, and the server must close.
            while c.read_more() {}
            let text = String::from_utf8_lossy(&c.buf).into_owned();
            if !c.buf.is_empty() {
                assert!(text.starts_with("HTTP/1.1 "), "{text:?} for {input:?}");
            }
        }
        // Still serving.
        let mut c = Client::connect(addr);
        c.send(b"GET /echo HTTP/1.1\r\n\r\n");
        assert_eq!(c.response().status, 200);
    }
}
