//! Handing an upgraded WebSocket from the executor that accepted it to another one, over real
//! sockets on 127.0.0.1: `Accepted::handoff` on the source, `Driver::adopt` (or glommio's
//! `TcpStream::from_raw_fd`) and `serve_websocket` on the destination.
//!
//! Four glommio executors, each on its own thread, as shards would be:
//! * two sources, one accepting with our io_uring driver and one with glommio's sockets, whose
//!   handler accepts every upgrade with `Accepted::handoff` and sends the `Detached` over a flume
//!   channel to the destination the path names (`/to/uring`, `/to/glommio`), or drops it
//!   (`/drop`); `?slow` makes `upgrade` wait first, so frames the client sends meanwhile land in
//!   the source transport's own buffers (the io_uring slot's queue);
//! * two destinations, one adopting with its own io_uring driver and one with glommio's
//!   `TcpStream`, each serving with `serve_websocket` and an echo session that answers `where`
//!   with the name of the thread serving it.
//!
//! Every pairing of source and destination is tested. The tests hold one lock, so the
//! descriptor counts of the leak test are not disturbed by the others.

mod common;

use common::ws_client::{Client, upgrade_request};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use pinion_net::http::{Limits, Request, Response};
use pinion_net::listener::reuseport_glommio_listener;
use pinion_net::server::{
    Accepted, Detached, Handler, WsClose, WsLimits, WsMessage, WsSender, WsSession,
    serve_websocket, serve_with,
};
use pinion_net::uring::{Driver, PENDING_BYTES_MAX};
use pinion_net::ws::{Opcode, Protocols};

/// Sessions opened on a destination and not closed yet.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Calls of a handoff closure with `Ok` and with `Err`.
static HANDED: AtomicUsize = AtomicUsize::new(0);
static FAILED: AtomicUsize = AtomicUsize::new(0);
/// Connections adopted on a destination.
static ADOPTED: AtomicUsize = AtomicUsize::new(0);

/// Serialises the tests of this file (see the module docs).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Net {
    Glommio,
    Uring,
}

impl Net {
    fn name(self) -> &'static str {
        match self {
            Net::Glommio => "glommio",
            Net::Uring => "uring",
        }
    }
}

const NETS: [Net; 2] = [Net::Uring, Net::Glommio];

/// Accepts every WebSocket upgrade with a handoff to the destination the path names.
struct Source {
    to_uring: flume::Sender<Detached>,
    to_glommio: flume::Sender<Detached>,
}

impl Handler for Source {
    async fn handle(&self, req: &Request<'_>, _body: &mut [u8], res: &mut Response<'_>) {
        let text = format!("http {}", req.path);
        res.send(200, &[("content-type", b"text/plain")], text.as_bytes());
    }

    fn wants_upgrade(&self, _req: &Request<'_>) -> bool {
        true
    }

    async fn upgrade(&self, req: &Request<'_>, mut protocols: Protocols<'_>) -> Option<Accepted> {
        let to = match req.path {
            "/to/uring" => Some(self.to_uring.clone()),
            "/to/glommio" => Some(self.to_glommio.clone()),
            "/drop" => None,
            _ => return None,
        };
        if req.query == "slow" {
            glommio::timer::sleep(Duration::from_millis(150)).await;
        }
        let protocol = protocols.find(|&p| p == "rivet").map(String::from);
        Some(Accepted::handoff(
            protocol,
            Box::new(move |detached: io::Result<Detached>| match detached {
                Ok(detached) => {
                    HANDED.fetch_add(1, Ordering::SeqCst);
                    if let Some(to) = to {
                        // A closed channel drops the connection, as `/drop` does.
                        let _ = to.send(detached);
                    }
                }
                Err(_) => {
                    FAILED.fetch_add(1, Ordering::SeqCst);
                }
            }),
        ))
    }
}

/// Pushes `welcome` on open, answers `where` with the serving thread's name, echoes the rest.
struct Echo {
    sender: Option<WsSender>,
}

impl Echo {
    fn boxed() -> Box<dyn WsSession> {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Box::new(Echo { sender: None })
    }
}

impl WsSession for Echo {
    fn on_open(&mut self, sender: WsSender) {
        sender.send_text("welcome").unwrap();
        self.sender = Some(sender);
    }

    fn on_message(&mut self, message: WsMessage<'_>) -> Result<(), WsClose> {
        let sender = self.sender.as_ref().expect("on_open runs first");
        let _ = match message {
            WsMessage::Binary(data) => sender.send_binary(data),
            WsMessage::Text(text) if &*text == "where" => {
                sender.send_text(std::thread::current().name().unwrap_or("?"))
            }
            WsMessage::Text(text) => sender.send_text(&text),
        };
        Ok(())
    }

    fn on_close(&mut self, _code: Option<u16>) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

fn spawn(task: impl std::future::Future<Output = ()> + 'static) {
    glommio::spawn_local(task).detach();
}

/// Runs `body` on a new thread named `name` inside a glommio executor.
fn executor<F, Fut>(name: &str, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            LocalExecutorBuilder::new(Placement::Unbound)
                .make()
                .expect("glommio executor")
                .run(body());
        })
        .unwrap();
}

/// The addresses of the two sources, indexed like [`NETS`]; everything starts on first use.
fn sources() -> [SocketAddr; 2] {
    static SOURCES: OnceLock<[SocketAddr; 2]> = OnceLock::new();
    *SOURCES.get_or_init(|| {
        let (to_uring, uring_inbox) = flume::unbounded::<Detached>();
        let (to_glommio, glommio_inbox) = flume::unbounded::<Detached>();

        executor("dest-uring", move || async move {
            // The driver needs a listener; this one never accepts.
            let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let driver = Driver::new(unused).expect("io_uring driver");
            let runner = driver.clone();
            spawn(async move { runner.run().await.expect("driver") });
            let limits = Rc::new(WsLimits::default());
            let mut queue_them = false;
            while let Ok(Detached { fd, received }) = uring_inbox.recv_async().await {
                ADOPTED.fetch_add(1, Ordering::SeqCst);
                // Both ways of passing the received bytes on, in turns: through the adopted
                // stream's queue, or through serve_websocket's read buffer.
                queue_them = !queue_them;
                let (queued, buffered) = if queue_them {
                    (received, Vec::new())
                } else {
                    (Vec::new(), received)
                };
                let stream = driver.adopt(fd, queued).expect("adopt");
                let limits = limits.clone();
                spawn(async move {
                    let _ = serve_websocket(stream, buffered, Echo::boxed(), &limits).await;
                });
            }
        });

        executor("dest-glommio", move || async move {
            let limits = Rc::new(WsLimits::default());
            while let Ok(Detached { fd, received }) = glommio_inbox.recv_async().await {
                ADOPTED.fetch_add(1, Ordering::SeqCst);
                // What the runtime does when io_uring is not available.
                // SAFETY: `into_raw_fd` releases a connected TCP socket that nothing else owns.
                let stream = unsafe { glommio::net::TcpStream::from_raw_fd(fd.into_raw_fd()) };
                let limits = limits.clone();
                spawn(async move {
                    let _ = serve_websocket(stream, received, Echo::boxed(), &limits).await;
                });
            }
        });

        let (tx, rx) = std::sync::mpsc::channel();
        let (uring_tx, glommio_tx) = (tx.clone(), tx);
        let (to_uring_2, to_glommio_2) = (to_uring.clone(), to_glommio.clone());

        executor("src-uring", move || async move {
            let handler = Rc::new(Source {
                to_uring,
                to_glommio,
            });
            let limits = Rc::new(Limits::default());
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            uring_tx
                .send((Net::Uring, listener.local_addr().unwrap()))
                .unwrap();
            let driver = Driver::new(listener).expect("io_uring driver");
            let runner = driver.clone();
            spawn(async move { runner.run().await.expect("driver") });
            loop {
                let Ok(stream) = driver.accept().await else {
                    continue;
                };
                stream.set_nodelay(true).unwrap();
                let (handler, limits) = (handler.clone(), limits.clone());
                spawn(async move {
                    let _ = serve_with(stream, &*handler, &limits, &WsLimits::default()).await;
                });
            }
        });

        executor("src-glommio", move || async move {
            let handler = Rc::new(Source {
                to_uring: to_uring_2,
                to_glommio: to_glommio_2,
            });
            let limits = Rc::new(Limits::default());
            let listener = reuseport_glommio_listener("127.0.0.1:0".parse().unwrap(), 128).unwrap();
            glommio_tx
                .send((Net::Glommio, listener.local_addr().unwrap()))
                .unwrap();
            loop {
                let Ok(stream) = listener.accept().await else {
                    continue;
                };
                stream.set_nodelay(true).unwrap();
                let (handler, limits) = (handler.clone(), limits.clone());
                spawn(async move {
                    let _ = serve_with(stream, &*handler, &limits, &WsLimits::default()).await;
                });
            }
        });

        let mut addrs = [None, None];
        for _ in 0..2 {
            let (net, addr) = rx.recv_timeout(Duration::from_secs(10)).expect("source up");
            addrs[NETS.iter().position(|&n| n == net).unwrap()] = Some(addr);
        }
        addrs.map(Option::unwrap)
    })
}

fn source(net: Net) -> SocketAddr {
    sources()[NETS.iter().position(|&n| n == net).unwrap()]
}

/// Upgrades on `from`'s source with a handoff to `to`'s destination and checks the 101 (with
/// `rivet` selected) and the destination's `welcome`.
fn open(from: Net, to: Net) -> Client {
    let (c, resp) = Client::open(
        source(from),
        &format!("/to/{}", to.name()),
        Some("chat, rivet"),
    );
    assert_eq!(resp.header("sec-websocket-protocol"), Some("rivet"));
    c
}

/// The closing handshake from the client side, then the server's end of stream.
fn close(mut c: Client) {
    c.send_close(1000, "done");
    assert_eq!(c.expect_close(1000), "done", "the reason is echoed");
    c.expect_eof();
}

/// One short conversation on a handed-off connection.
fn converse(from: Net, to: Net, tag: &str) {
    let mut c = open(from, to);
    c.send_text(tag);
    c.send_frame(true, Opcode::Binary, tag.as_bytes());
    assert_eq!(c.text(), tag);
    assert_eq!(c.binary(), tag.as_bytes());
    close(c);
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Waits until `done` holds, failing after 10 s with `what`.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Frames sent in the same write as the upgrade request (read into the source's read buffer),
/// frames sent before the 101 arrived (with `slow`: in the source transport's buffers when it
/// detaches, or still in the kernel) and frames sent after it all reach the destination's
/// session, in order.
fn every_byte_arrives_in_order(from: Net, to: Net, slow: bool) {
    let target = format!("/to/{}{}", to.name(), if slow { "?slow" } else { "" });
    let mut c = Client::connect(source(from));
    let mut bytes = upgrade_request(&target, Some("chat, rivet")).into_bytes();
    for text in ["a0", "a1"] {
        bytes.extend(c.encode(true, Opcode::Text, text.as_bytes()));
    }
    bytes.extend(c.encode(true, Opcode::Binary, &[0, 1, 2, 0xff]));
    c.send(&bytes);
    if slow {
        // The source is still in `upgrade`, so these arrive before it detaches.
        std::thread::sleep(Duration::from_millis(50));
        let mut more = Vec::new();
        for text in ["b0", "b1"] {
            more.extend(c.encode(true, Opcode::Text, text.as_bytes()));
        }
        // A large one, several receive buffers long.
        more.extend(c.encode(true, Opcode::Binary, &[7u8; 20_000]));
        c.send(&more);
    }
    let resp = c.response();
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(resp.header("sec-websocket-protocol"), Some("rivet"));
    assert_eq!(c.text(), "welcome");
    c.send_text("c0");
    c.send_text("where");
    assert_eq!(c.text(), "a0");
    assert_eq!(c.text(), "a1");
    assert_eq!(c.binary(), [0, 1, 2, 0xff]);
    if slow {
        assert_eq!(c.text(), "b0");
        assert_eq!(c.text(), "b1");
        assert_eq!(c.binary(), [7u8; 20_000]);
    }
    assert_eq!(c.text(), "c0");
    assert_eq!(c.text(), format!("dest-{}", to.name()));
    close(c);
}

#[test]
fn frames_around_the_upgrade_reach_the_destination_in_order() {
    let _serial = serial();
    for from in NETS {
        for to in NETS {
            for slow in [false, true] {
                // Twice, so that the io_uring destination takes the received bytes both ways.
                every_byte_arrives_in_order(from, to, slow);
                every_byte_arrives_in_order(from, to, slow);
            }
        }
    }
}

#[test]
fn hundreds_of_handoffs_leak_no_descriptor() {
    let _serial = serial();
    // Warm up every path (executors and drivers allocate some descriptors lazily).
    for from in NETS {
        for to in NETS {
            converse(from, to, "warm-up");
        }
    }
    eventually("the warm-up sessions to close", || {
        LIVE.load(Ordering::SeqCst) == 0
    });
    std::thread::sleep(Duration::from_millis(100));
    let baseline = open_descriptors();
    let calls = HANDED.load(Ordering::SeqCst) + FAILED.load(Ordering::SeqCst);
    let (handed, adopted) = (
        HANDED.load(Ordering::SeqCst),
        ADOPTED.load(Ordering::SeqCst),
    );

    // Sequential: slots and descriptors are reused over and over.
    for i in 0..200 {
        converse(NETS[i % 2], NETS[(i / 2) % 2], &format!("seq{i}"));
    }
    // Concurrent: several open at once on every pairing.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut open_now = Vec::new();
                for i in 0..24 {
                    let (from, to) = (NETS[(t + i) % 2], NETS[(t + i / 2) % 2]);
                    let mut c = open(from, to);
                    c.send_text(&format!("t{t}-{i}"));
                    open_now.push(c);
                    if open_now.len() == 3 {
                        for (k, mut c) in open_now.drain(..).enumerate() {
                            let expected = format!("t{t}-{}", i - 2 + k);
                            assert_eq!(c.text(), expected);
                            close(c);
                        }
                    }
                }
                assert!(open_now.is_empty());
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    // Peers that reset the connection while the source is still in `upgrade` (writing the 101
    // then fails) or right after the 101 (the destination sees the reset): the handoff must
    // still be reported exactly once, and nothing may stay open.
    let mut resets = 0;
    for from in NETS {
        for to in NETS {
            for early in [true, false, true, false] {
                let mut c = Client::connect(source(from));
                let target = format!("/to/{}{}", to.name(), if early { "?slow" } else { "" });
                let mut bytes = upgrade_request(&target, Some("rivet")).into_bytes();
                bytes.extend(c.encode(true, Opcode::Text, b"never answered"));
                c.send(&bytes);
                if early {
                    // The source has read the request and sleeps in `upgrade`.
                    std::thread::sleep(Duration::from_millis(50));
                } else {
                    assert_eq!(c.response().status, 101);
                }
                let socket = socket2::SockRef::from(&c.stream);
                socket.set_linger(Some(Duration::ZERO)).unwrap();
                drop(c);
                resets += 1;
            }
        }
    }

    let upgrades = 200 + 8 * 24 + resets;
    eventually("every handoff closure to run", || {
        HANDED.load(Ordering::SeqCst) + FAILED.load(Ordering::SeqCst) >= calls + upgrades
    });
    eventually("every session to close", || {
        LIVE.load(Ordering::SeqCst) == 0
    });
    // Slack for descriptors that are not ours (the test harness, glommio's internals).
    eventually("the descriptor count to return to the baseline", || {
        open_descriptors() <= baseline + 4
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        HANDED.load(Ordering::SeqCst) + FAILED.load(Ordering::SeqCst),
        calls + upgrades,
        "every handoff closure runs exactly once"
    );
    // Every connection handed off was adopted; the early resets failed at the source.
    assert_eq!(
        ADOPTED.load(Ordering::SeqCst) - adopted,
        HANDED.load(Ordering::SeqCst) - handed
    );
    assert!(HANDED.load(Ordering::SeqCst) - handed >= 200 + 8 * 24);
}

#[test]
fn a_dropped_handoff_closes_the_connection_and_the_source_serves_on() {
    let _serial = serial();
    for from in NETS {
        let handed = HANDED.load(Ordering::SeqCst);
        let mut c = Client::connect(source(from));
        c.send(upgrade_request("/drop", Some("rivet")).as_bytes());
        let resp = c.response();
        assert_eq!(resp.status, 101, "{resp:?}");
        // The destination is gone: the connection ends without a frame.
        c.expect_eof();
        assert_eq!(HANDED.load(Ordering::SeqCst), handed + 1);

        // Frames already sent when the connection is dropped make no difference.
        let mut c = Client::connect(source(from));
        let mut bytes = upgrade_request("/drop", None).into_bytes();
        bytes.extend(c.encode(true, Opcode::Text, b"lost"));
        c.send(&bytes);
        assert_eq!(c.response().status, 101);
        c.expect_eof();

        // The source still serves HTTP and handoffs.
        let mut c = Client::connect(source(from));
        c.send(b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.response().body, b"http /plain");
        for to in NETS {
            converse(from, to, "after a drop");
        }
    }
}

/// Runs `body` in a fresh executor with two drivers (as two shards would have) and waits for
/// it; `connect` gets the first driver's listening address.
fn with_two_drivers<F, Fut>(body: F)
where
    F: FnOnce(Driver, Driver, SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    std::thread::spawn(move || {
        LocalExecutorBuilder::new(Placement::Unbound)
            .make()
            .expect("glommio executor")
            .run(async move {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let first = Driver::new(listener).expect("io_uring driver");
                let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let second = Driver::new(unused).expect("io_uring driver");
                for driver in [&first, &second] {
                    let runner = driver.clone();
                    spawn(async move { runner.run().await.expect("driver") });
                }
                body(first, second, addr).await;
            });
    })
    .join()
    .unwrap();
}

/// Reads until `want` bytes arrived.
async fn read_exactly(stream: &mut pinion_net::uring::UringStream, want: usize) -> Vec<u8> {
    let mut got = vec![0; want];
    let mut n = 0;
    while n < want {
        let read = stream.read(&mut got[n..]).await.unwrap();
        assert!(read > 0, "EOF after {n} of {want} bytes");
        n += read;
    }
    got
}

#[test]
fn detach_and_adopt_carry_unread_bytes_between_drivers() {
    let _serial = serial();
    with_two_drivers(|first, second, addr| async move {
        use std::io::{Read, Write};
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut stream = first.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        client.write_all(b"abcdef").unwrap();
        // Read part of it: the rest waits in the slot's queue.
        assert_eq!(read_exactly(&mut stream, 2).await, b"ab");
        glommio::timer::sleep(Duration::from_millis(20)).await;
        let Detached { fd, received } = stream.detach().await.unwrap();
        assert_eq!(received, b"cdef");

        // Sent while the connection belongs to nobody: waits in the kernel.
        client.write_all(b"gh").unwrap();
        // A non-blocking socket is made blocking, like an accepted one.
        let raw = fd.as_raw_fd();
        // SAFETY: F_SETFL on a descriptor `fd` owns.
        let set = unsafe { libc::fcntl(raw, libc::F_SETFL, libc::O_NONBLOCK) };
        assert_eq!(set, 0);
        let mut stream = second.adopt(fd, received).unwrap();
        // SAFETY: F_GETFL on the descriptor the adopted stream now owns.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        assert_eq!(read_exactly(&mut stream, 6).await, b"cdefgh");
        client.write_all(b"ij").unwrap();
        assert_eq!(read_exactly(&mut stream, 2).await, b"ij");
        stream.write_all(b"from the second driver").await.unwrap();
        let mut reply = [0u8; 22];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"from the second driver");

        // And back to the first driver, whose freed slot is reused meanwhile by a new stream.
        let other = std::net::TcpStream::connect(addr).unwrap();
        let mut newcomer = first.accept().await.unwrap();
        let Detached { fd, received } = stream.detach().await.unwrap();
        assert!(received.is_empty());
        let mut stream = first.adopt(fd, received).unwrap();
        client.write_all(b"kl").unwrap();
        assert_eq!(read_exactly(&mut stream, 2).await, b"kl");
        (&other).write_all(b"mn").unwrap();
        assert_eq!(read_exactly(&mut newcomer, 2).await, b"mn");

        // End of stream is not an error: the adopting driver sees it again.
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(stream.read(&mut buf).await.unwrap(), 0);
        let Detached { fd, received } = stream.detach().await.unwrap();
        assert!(received.is_empty());
        let mut stream = second.adopt(fd, received).unwrap();
        assert_eq!(stream.read(&mut buf).await.unwrap(), 0);
        // The socket is still open for writing after all those moves.
        stream.write_all(b"bye").await.unwrap();
        drop(stream);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"bye");
        drop(newcomer);
    });
}

#[test]
fn adopt_refuses_more_than_a_connection_may_hold_unread() {
    let _serial = serial();
    with_two_drivers(|first, second, addr| async move {
        let client = std::net::TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let stream = first.accept().await.unwrap();
        let Detached { fd, .. } = stream.detach().await.unwrap();
        let error = second
            .adopt(fd, vec![0; PENDING_BYTES_MAX + 1])
            .err()
            .expect("too many received bytes");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        // The connection was closed with the refusal.
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut &client, &mut buf).unwrap(), 0);
    });
}

#[test]
fn detach_waits_for_a_send_in_flight() {
    let _serial = serial();
    with_two_drivers(|first, second, addr| async move {
        use std::io::Read;
        const BIG: usize = 32 * 1024 * 1024;
        let client = std::net::TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut stream = first.accept().await.unwrap();
        let big: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
        // Far more than the socket buffers hold while the client does not read: the send is
        // still in flight when the write is abandoned.
        let abandoned =
            futures_lite::future::or(async { Some(stream.write_all(&big).await) }, async {
                glommio::timer::sleep(Duration::from_millis(50)).await;
                None
            })
            .await;
        assert!(abandoned.is_none(), "32 MiB fit in the socket buffers");
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let mut all = Vec::new();
            (&client).read_to_end(&mut all).unwrap();
            all
        });
        // Only returns once the whole send went out; then the new owner's bytes follow it.
        let Detached { fd, received } = stream.detach().await.unwrap();
        let mut stream = second.adopt(fd, received).unwrap();
        stream.write_all(b"END").await.unwrap();
        stream.shutdown_write().unwrap();
        while !reader.is_finished() {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        let all = reader.join().unwrap();
        assert_eq!(all.len(), BIG + 3);
        assert!(all[..BIG] == big[..], "the abandoned send arrived intact");
        assert_eq!(&all[BIG..], b"END");
    });
}
