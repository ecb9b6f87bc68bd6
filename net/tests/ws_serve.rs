//! WebSocket through `serve_with` over real sockets on 127.0.0.1, once with glommio's
//! `TcpStream` and once with our io_uring driver: every test body runs against both servers.
//!
//! Each server is a glommio `LocalExecutor` on its own thread running an accept loop (one task
//! per connection, as `runtime/src/server.rs` does), with a short HTTP read timeout so the test
//! of idle WebSockets can see that it is switched off after the upgrade. The tests talk to it
//! with blocking std sockets and a tiny WebSocket client built on the codec (masked frames out,
//! `Role::Client` parsing in; `common/ws_client.rs`), so every assertion is on the exact frames
//! a client receives.

mod common;

use common::ws_client::{Client, Frame, KEY, upgrade_request};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use pinion_net::http::{Limits, Request, Response};
use pinion_net::listener::reuseport_glommio_listener;
use pinion_net::server::{
    Accepted, CLOSE_OUTBOUND_FULL, Handler, SendError, WsClose, WsLimits, WsMessage, WsSender,
    WsSession, encode_text_frame, serve_with,
};
use pinion_net::uring::Driver;
use pinion_net::ws::{Opcode, Protocols};

/// The outbound bound of the test servers: room for the 1 MiB echo, small enough to overflow.
const OUTBOUND_BYTES_MAX: usize = 2 * 1024 * 1024;

/// The HTTP read timeout set on every accepted stream (as the runtime does).
const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Every `on_close`, as (session id, code); the id is the upgrade request's query string.
static CLOSES: Mutex<Vec<(String, Option<u16>)>> = Mutex::new(Vec::new());

thread_local! {
    /// Senders subscribed to a topic, per server thread (for the broadcast test).
    static TOPICS: RefCell<HashMap<String, Vec<WsSender>>> = RefCell::new(HashMap::new());
}

/// Serves `/ws...` as WebSocket (except `/ws/refuse`, whose `upgrade` says no) and answers
/// every HTTP request with its method and path.
struct TestHandler;

impl Handler for TestHandler {
    async fn handle(&self, req: &Request<'_>, _body: &mut [u8], res: &mut Response<'_>) {
        let text = format!("http {} {}", req.method_str, req.path);
        res.send(200, &[("content-type", b"text/plain")], text.as_bytes());
    }

    fn wants_upgrade(&self, req: &Request<'_>) -> bool {
        req.path.starts_with("/ws")
    }

    async fn upgrade(&self, req: &Request<'_>, mut protocols: Protocols<'_>) -> Option<Accepted> {
        if req.path == "/ws/refuse" {
            return None;
        }
        // RivetKit's rule: `rivet` when offered, else no subprotocol.
        let protocol = protocols.find(|&p| p == "rivet").map(String::from);
        Some(Accepted::new(
            protocol,
            Box::new(Echo {
                id: req.query.to_string(),
                sender: None,
            }),
        ))
    }
}

/// Echoes text as text and binary as binary, pushes `welcome` on open, and obeys a few
/// commands (see `on_message`).
struct Echo {
    id: String,
    sender: Option<WsSender>,
}

impl WsSession for Echo {
    fn on_open(&mut self, sender: WsSender) {
        sender.send_text("welcome").unwrap();
        self.sender = Some(sender);
    }

    fn on_message(&mut self, message: WsMessage<'_>) -> Result<(), WsClose> {
        let sender = self.sender.clone().expect("on_open runs before on_message");
        let text = match message {
            WsMessage::Binary(data) => {
                let _ = sender.send_binary(data);
                return Ok(());
            }
            WsMessage::Text(text) => text,
        };
        if text.starts_with("upper:") {
            // In place, through the bytes (what simd-json does).
            let bytes = text.into_bytes_mut();
            bytes.make_ascii_uppercase();
            let _ = sender.send_binary(bytes);
        } else if &*text == "close-me" {
            return Err(WsClose {
                code: 4000,
                reason: "asked to".into(),
            });
        } else if &*text == "close-later" {
            spawn(async move {
                glommio::timer::sleep(Duration::from_millis(20)).await;
                sender.close(4001, "later").unwrap();
            });
        } else if let Some(topic) = text.strip_prefix("subscribe:") {
            TOPICS.with(|t| {
                t.borrow_mut()
                    .entry(topic.to_string())
                    .or_default()
                    .push(sender.clone())
            });
            let _ = sender.send_text("subscribed");
        } else if let Some(rest) = text.strip_prefix("publish:") {
            let (topic, news) = rest.split_once(':').unwrap();
            // Encoded once, the same bytes queued on every subscriber.
            let frame = encode_text_frame(news);
            TOPICS.with(|t| {
                for subscriber in t.borrow().get(topic).into_iter().flatten() {
                    subscriber.send_frame_bytes(Rc::clone(&frame)).unwrap();
                }
            });
        } else if let Some(rest) = text.strip_prefix("delay:") {
            // An "action": started here, answered later through a clone of the sender.
            let (ms, reply) = rest.split_once(':').unwrap();
            let ms: u64 = ms.parse().unwrap();
            let reply = reply.to_string();
            spawn(async move {
                glommio::timer::sleep(Duration::from_millis(ms)).await;
                let _ = sender.send_text(&reply);
            });
        } else if let Some(n) = text.strip_prefix("ticks:") {
            let n: usize = n.parse().unwrap();
            spawn(async move {
                for i in 0..n {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                    sender.send_text(&format!("tick{i}")).unwrap();
                }
            });
        } else if let Some(n) = text.strip_prefix("flood:") {
            let n: usize = n.parse().unwrap();
            let chunk = vec![b'f'; 64 * 1024];
            let mut result = Ok(());
            for _ in 0..n {
                result = sender.send_binary(&chunk);
                if result.is_err() {
                    break;
                }
            }
            assert_eq!(result, Err(SendError::Overflow));
            assert_eq!(sender.send_text("after"), Err(SendError::Closed));
        } else {
            let _ = sender.send_text(&text);
        }
        Ok(())
    }

    fn on_close(&mut self, code: Option<u16>) {
        if let Some(sender) = &self.sender {
            assert!(!sender.is_open());
            assert_eq!(sender.send_text("x"), Err(SendError::Closed));
        }
        CLOSES.lock().unwrap().push((self.id.clone(), code));
    }
}

fn spawn(task: impl std::future::Future<Output = ()> + 'static) {
    glommio::spawn_local(task).detach();
}

#[derive(Clone, Copy, Debug)]
enum Net {
    Glommio,
    Uring,
}

/// Starts (once per transport) a server thread and returns its address.
fn server(net: Net) -> SocketAddr {
    static GLOMMIO: OnceLock<SocketAddr> = OnceLock::new();
    static URING: OnceLock<SocketAddr> = OnceLock::new();
    let cell = match net {
        Net::Glommio => &GLOMMIO,
        Net::Uring => &URING,
    };
    *cell.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let executor = LocalExecutorBuilder::new(Placement::Unbound)
                .make()
                .expect("glommio executor");
            executor.run(async move {
                let limits = Rc::new(Limits::default());
                let ws_limits = Rc::new(WsLimits {
                    outbound_bytes_max: OUTBOUND_BYTES_MAX,
                    ..WsLimits::default()
                });
                match net {
                    Net::Glommio => {
                        let listener =
                            reuseport_glommio_listener("127.0.0.1:0".parse().unwrap(), 128)
                                .unwrap();
                        tx.send(listener.local_addr().unwrap()).unwrap();
                        loop {
                            let Ok(stream) = listener.accept().await else {
                                continue;
                            };
                            stream.set_nodelay(true).unwrap();
                            stream.set_read_timeout(Some(HTTP_READ_TIMEOUT)).unwrap();
                            let (limits, ws_limits) = (limits.clone(), ws_limits.clone());
                            spawn(async move {
                                let _ = serve_with(stream, &TestHandler, &limits, &ws_limits).await;
                            });
                        }
                    }
                    Net::Uring => {
                        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                        tx.send(listener.local_addr().unwrap()).unwrap();
                        let driver = Driver::new(listener).expect("io_uring driver");
                        let runner = driver.clone();
                        spawn(async move {
                            runner.run().await.expect("driver");
                        });
                        loop {
                            let Ok(mut stream) = driver.accept().await else {
                                continue;
                            };
                            stream.set_nodelay(true).unwrap();
                            stream.set_read_timeout(Some(HTTP_READ_TIMEOUT));
                            let (limits, ws_limits) = (limits.clone(), ws_limits.clone());
                            spawn(async move {
                                let _ = serve_with(stream, &TestHandler, &limits, &ws_limits).await;
                            });
                        }
                    }
                }
            });
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("server thread started")
    })
}

/// Waits for the `on_close` of session `id` and checks it was called exactly once.
fn closed_with(id: &str) -> Option<u16> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<Option<u16>> = CLOSES
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, code)| *code)
            .collect();
        if let Some(&code) = found.first() {
            std::thread::sleep(Duration::from_millis(50));
            let count = CLOSES
                .lock()
                .unwrap()
                .iter()
                .filter(|(i, _)| i == id)
                .count();
            assert_eq!(count, 1, "on_close must run exactly once for {id}");
            return code;
        }
        assert!(Instant::now() < deadline, "on_close never ran for {id}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Checks that the server still serves WebSockets.
fn still_serves(addr: SocketAddr) {
    let (mut c, _) = Client::open(addr, "/ws", None);
    c.send_text("still here");
    assert_eq!(c.text(), "still here");
}

// ---- The test bodies, each run against both transports (see the bottom of the file). ----

fn subprotocol_rivet_is_selected_when_offered(addr: SocketAddr, _: &str) {
    let (_, resp) = Client::open(addr, "/ws", Some("foo, rivet, bar"));
    assert_eq!(resp.header("sec-websocket-protocol"), Some("rivet"));
    // Offered in a second field, last.
    let mut c = Client::connect(addr);
    let request = upgrade_request("/ws", Some("x"))
        .replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: y, rivet\r\n\r\n");
    c.send(request.as_bytes());
    let resp = c.response();
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("sec-websocket-protocol"), Some("rivet"));
}

fn no_subprotocol_unless_rivet_is_offered(addr: SocketAddr, _: &str) {
    let (_, resp) = Client::open(addr, "/ws", None);
    assert_eq!(resp.header("sec-websocket-protocol"), None);
    let (_, resp) = Client::open(addr, "/ws", Some("chat, superchat"));
    assert_eq!(resp.header("sec-websocket-protocol"), None);
}

fn text_and_binary_are_echoed(addr: SocketAddr, _: &str) {
    let (mut c, _) = Client::open(addr, "/ws", None);
    c.send_text("hello");
    assert_eq!(c.text(), "hello");
    c.send_frame(true, Opcode::Binary, &[0, 1, 2, 0xff]);
    assert_eq!(c.binary(), [0, 1, 2, 0xff]);
    c.send_text("");
    assert_eq!(c.text(), "");
    c.send_text("upper:mutable in place");
    assert_eq!(c.binary(), b"UPPER:MUTABLE IN PLACE");
}

fn fragmented_text_is_reassembled_around_a_ping(addr: SocketAddr, _: &str) {
    let (mut c, _) = Client::open(addr, "/ws", None);
    let word = "Hello, wörld".as_bytes();
    // The 'ö' (two bytes) is split across the second and third fragments.
    let split = word.iter().position(|&b| b == 0xC3).unwrap() + 1;
    c.send_frame(false, Opcode::Text, &word[..3]);
    c.send_frame(true, Opcode::Ping, b"mid");
    c.send_frame(false, Opcode::Continuation, &word[3..split]);
    c.send_frame(true, Opcode::Continuation, &word[split..]);
    let pong = c.frame();
    assert_eq!(
        pong,
        Frame {
            fin: true,
            opcode: Opcode::Pong,
            payload: b"mid".to_vec()
        }
    );
    assert_eq!(c.text(), "Hello, wörld");
}

fn one_mib_binary_is_echoed(addr: SocketAddr, _: &str) {
    let (mut c, _) = Client::open(addr, "/ws", None);
    let data: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    c.send_frame(true, Opcode::Binary, &data);
    assert!(c.binary() == data, "1 MiB echo differs");
    // And a 1 MiB message in fragments.
    for (i, part) in data.chunks(300 * 1024).enumerate() {
        let opcode = if i == 0 {
            Opcode::Binary
        } else {
            Opcode::Continuation
        };
        let last = (i + 1) * 300 * 1024 >= data.len();
        c.send_frame(last, opcode, part);
    }
    assert!(c.binary() == data, "fragmented 1 MiB echo differs");
}

fn ping_gets_pong(addr: SocketAddr, _: &str) {
    let (mut c, _) = Client::open(addr, "/ws", None);
    for payload in [&b""[..], b"abc", &[7u8; 125]] {
        c.send_frame(true, Opcode::Ping, payload);
        let pong = c.frame();
        assert_eq!(pong.opcode, Opcode::Pong);
        assert_eq!(pong.payload, payload);
    }
}

fn client_close_is_echoed_then_eof(addr: SocketAddr, tag: &str) {
    let id = format!("{tag}-client-close");
    let (mut c, _) = Client::open(addr, &format!("/ws?{id}"), None);
    c.send_text("before");
    assert_eq!(c.text(), "before");
    c.send_close(1000, "bye");
    assert_eq!(c.expect_close(1000), "bye", "the reason is echoed too");
    c.expect_eof();
    assert_eq!(closed_with(&id), Some(1000));

    // A close without status is echoed without status.
    let id = format!("{tag}-client-close-empty");
    let (mut c, _) = Client::open(addr, &format!("/ws?{id}"), None);
    c.send_frame(true, Opcode::Close, &[]);
    let frame = c.frame();
    assert_eq!(frame.opcode, Opcode::Close);
    assert!(frame.payload.is_empty());
    c.expect_eof();
    assert_eq!(closed_with(&id), None);
}

fn protocol_violations_close_with_their_codes(addr: SocketAddr, tag: &str) {
    // Unmasked client frame: 1002.
    let id = format!("{tag}-unmasked");
    let (mut c, _) = Client::open(addr, &format!("/ws?{id}"), None);
    c.send(&[0x81, 0x02, b'h', b'i']);
    c.expect_close(1002);
    c.expect_eof();
    assert_eq!(closed_with(&id), Some(1002));
    still_serves(addr);

    // Invalid UTF-8 in text: 1007.
    let id = format!("{tag}-utf8");
    let (mut c, _) = Client::open(addr, &format!("/ws?{id}"), None);
    c.send_frame(true, Opcode::Text, &[b'a', 0xff, 0xfe]);
    c.expect_close(1007);
    c.expect_eof();
    assert_eq!(closed_with(&id), Some(1007));
    still_serves(addr);

    // A frame over the 1 MiB limit, refused from its header: 1009.
    let id = format!("{tag}-oversize");
    let (mut c, _) = Client::open(addr, &format!("/ws?{id}"), None);
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1024 * 1024 + 1u64).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    c.send(&header);
    c.expect_close(1009);
    c.expect_eof();
    assert_eq!(closed_with(&id), Some(1009));
    still_serves(addr);
}

fn session_close_reaches_the_client(addr: SocketAddr, tag: &str) {
    // Err(WsClose) from on_message.
    let id = format!("{tag}-close-me");
    let (mut c, _) = Client::open(addr, &format!("/ws?{id}"), None);
    c.send_text("close-me");
    assert_eq!(c.expect_close(4000), "asked to");
    c.send_close(4000, "");
    c.expect_eof();
    assert_eq!(closed_with(&id), Some(4000));

    // WsSender::close from another task, after the queued reply.
    let id = format!("{tag}-close-later");
    let (mut c, _) = Client::open(addr, &format!("/ws?{id}"), None);
    c.send_text("close-later");
    c.send_text("echo first");
    assert_eq!(c.text(), "echo first");
    assert_eq!(c.expect_close(4001), "later");
    c.send_close(4001, "");
    c.expect_eof();
    assert_eq!(closed_with(&id), Some(4001));
}

fn hundred_back_to_back_messages_are_echoed_in_order(addr: SocketAddr, _: &str) {
    let (mut c, _) = Client::open(addr, "/ws", None);
    let mut burst = Vec::new();
    for i in 0..100 {
        let frame = c.encode(true, Opcode::Text, format!("m{i}").as_bytes());
        burst.extend_from_slice(&frame);
    }
    c.send(&burst);
    for i in 0..100 {
        assert_eq!(c.text(), format!("m{i}"));
    }
}

fn hundred_concurrent_actions_answer_in_any_order(addr: SocketAddr, _: &str) {
    let (mut c, _) = Client::open(addr, "/ws", None);
    // The slow one first: replies come back in completion order, not request order.
    c.send_text("delay:80:slow");
    c.send_text("delay:0:fast");
    assert_eq!(c.text(), "fast");
    assert_eq!(c.text(), "slow");

    let mut burst = Vec::new();
    let mut expected = BTreeSet::new();
    for i in 0..100 {
        let ms = (i * 37) % 50;
        let frame = c.encode(true, Opcode::Text, format!("delay:{ms}:r{i}").as_bytes());
        burst.extend_from_slice(&frame);
        expected.insert(format!("r{i}"));
    }
    c.send(&burst);
    let got: BTreeSet<String> = (0..100).map(|_| c.text()).collect();
    assert_eq!(got, expected);
}

fn shared_frame_reaches_two_connections(addr: SocketAddr, tag: &str) {
    let topic = format!("{tag}-news");
    let (mut a, _) = Client::open(addr, "/ws", None);
    let (mut b, _) = Client::open(addr, "/ws", None);
    a.send_text(&format!("subscribe:{topic}"));
    assert_eq!(a.text(), "subscribed");
    b.send_text(&format!("subscribe:{topic}"));
    assert_eq!(b.text(), "subscribed");
    a.send_text(&format!("publish:{topic}:extra extra"));
    assert_eq!(a.text(), "extra extra");
    assert_eq!(b.text(), "extra extra");
    // Both still work normally afterwards.
    b.send_text("ok");
    assert_eq!(b.text(), "ok");
}

fn outbound_overflow_closes_with_1008(addr: SocketAddr, tag: &str) {
    let id = format!("{tag}-flood");
    let (mut c, _) = Client::open(addr, &format!("/ws?{id}"), None);
    // 40 x 64 KiB > 2 MiB, all queued synchronously: the overflow drops the queue.
    c.send_text("flood:40");
    assert_eq!(c.expect_close(CLOSE_OUTBOUND_FULL), "outbound queue full");
    c.send_close(CLOSE_OUTBOUND_FULL, "");
    c.expect_eof();
    assert_eq!(closed_with(&id), Some(CLOSE_OUTBOUND_FULL));
    still_serves(addr);
}

fn pushes_interleave_with_a_dribbled_frame(addr: SocketAddr, _: &str) {
    // The session pushes 20 ticks (one per 5 ms) while the client sends one frame a byte at a
    // time: outbound wake-ups keep interrupting reads that have half a frame buffered.
    let (mut c, _) = Client::open(addr, "/ws", None);
    c.send_text("ticks:20");
    let frame = c.encode(true, Opcode::Text, b"dribbled message intact");
    for byte in &frame {
        c.send(std::slice::from_ref(byte));
        std::thread::sleep(Duration::from_millis(3));
    }
    let mut ticks = 0;
    let mut echoed = false;
    while ticks < 20 || !echoed {
        let text = c.text();
        if text == "dribbled message intact" {
            assert!(!echoed);
            echoed = true;
        } else {
            assert_eq!(text, format!("tick{ticks}"));
            ticks += 1;
        }
    }
}

fn frames_sent_with_the_handshake_are_not_lost(addr: SocketAddr, _: &str) {
    let mut c = Client::connect(addr);
    // A pipelined plain request, the upgrade and two frames, all in one write.
    let mut bytes = b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
    bytes.extend_from_slice(upgrade_request("/ws", Some("rivet")).as_bytes());
    let first = c.encode(true, Opcode::Text, b"early");
    let second = c.encode(true, Opcode::Binary, b"bird");
    bytes.extend_from_slice(&first);
    bytes.extend_from_slice(&second);
    c.send(&bytes);
    let plain = c.response();
    assert_eq!(plain.status, 200);
    assert_eq!(plain.body, b"http GET /plain");
    let resp = c.response();
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("sec-websocket-protocol"), Some("rivet"));
    assert_eq!(c.text(), "welcome");
    assert_eq!(c.text(), "early");
    assert_eq!(c.binary(), b"bird");
}

fn plain_requests_still_work(addr: SocketAddr, _: &str) {
    let mut c = Client::connect(addr);
    // No upgrade headers on a WebSocket path: plain HTTP.
    c.send(b"GET /ws HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, &r.body[..]), (200, &b"http GET /ws"[..]));
    // A valid upgrade where wants_upgrade says no: handle serves it.
    c.send(upgrade_request("/plain", None).as_bytes());
    let r = c.response();
    assert_eq!((r.status, &r.body[..]), (200, &b"http GET /plain"[..]));
    // A valid upgrade that `upgrade` refuses: handle serves it too.
    c.send(upgrade_request("/ws/refuse", None).as_bytes());
    let r = c.response();
    assert_eq!((r.status, &r.body[..]), (200, &b"http GET /ws/refuse"[..]));
    // A broken handshake where wants_upgrade says no is not validated.
    c.send(b"GET /plain HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

fn bad_handshakes_are_answered_400_or_426(addr: SocketAddr, _: &str) {
    let mut c = Client::connect(addr);
    let missing_key =
        upgrade_request("/ws", None).replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), "");
    c.send(missing_key.as_bytes());
    let r = c.response();
    assert_eq!(r.status, 400);
    assert_eq!(r.body, b"invalid Sec-WebSocket-Key");
    // The connection stays an HTTP connection.
    c.send(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().body, b"http GET /after");

    let wrong_version = upgrade_request("/ws", None).replace("Version: 13", "Version: 8");
    c.send(wrong_version.as_bytes());
    let r = c.response();
    assert_eq!(r.status, 426);
    assert_eq!(r.header("sec-websocket-version"), Some("13"));

    let post = upgrade_request("/ws", None).replace("GET", "POST");
    c.send(post.as_bytes());
    assert_eq!(c.response().status, 400);

    let no_connection = upgrade_request("/ws", None).replace("Connection: Upgrade\r\n", "");
    c.send(no_connection.as_bytes());
    assert_eq!(c.response().status, 400);

    c.send(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().body, b"http GET /after");
}

fn idle_websocket_outlives_the_http_read_timeout(addr: SocketAddr, _: &str) {
    let (mut c, _) = Client::open(addr, "/ws", None);
    std::thread::sleep(HTTP_READ_TIMEOUT * 2 + Duration::from_millis(500));
    c.send_text("still alive");
    assert_eq!(c.text(), "still alive");
}

fn vanished_peer_reports_no_code(addr: SocketAddr, tag: &str) {
    let id = format!("{tag}-vanished");
    let (mut c, _) = Client::open(addr, &format!("/ws?{id}"), None);
    // Half a frame, then gone.
    let frame = c.encode(true, Opcode::Text, b"never finished");
    c.send(&frame[..5]);
    drop(c);
    assert_eq!(closed_with(&id), None);
    still_serves(addr);
}

macro_rules! on_both_transports {
    ($($name:ident),* $(,)?) => {
        mod glommio_sockets {
            $(
                #[test]
                fn $name() {
                    super::$name(super::server(super::Net::Glommio), "glommio");
                }
            )*
        }
        mod io_uring_driver {
            $(
                #[test]
                fn $name() {
                    super::$name(super::server(super::Net::Uring), "uring");
                }
            )*
        }
    };
}

on_both_transports!(
    subprotocol_rivet_is_selected_when_offered,
    no_subprotocol_unless_rivet_is_offered,
    text_and_binary_are_echoed,
    fragmented_text_is_reassembled_around_a_ping,
    one_mib_binary_is_echoed,
    ping_gets_pong,
    client_close_is_echoed_then_eof,
    protocol_violations_close_with_their_codes,
    session_close_reaches_the_client,
    hundred_back_to_back_messages_are_echoed_in_order,
    hundred_concurrent_actions_answer_in_any_order,
    shared_frame_reaches_two_connections,
    outbound_overflow_closes_with_1008,
    pushes_interleave_with_a_dribbled_frame,
    frames_sent_with_the_handshake_are_not_lost,
    plain_requests_still_work,
    bad_handshakes_are_answered_400_or_426,
    idle_websocket_outlives_the_http_read_timeout,
    vanished_peer_reports_no_code,
);
