//! A whole action dispatch in one process, through the runtime's public API (its dispatch
//! internals are crate-private). A `pinion_runtime::Server` runs with one shard (pinned to CPU 0)
//! and a trivial actor, `bench`, whose `increment(n)` adds `n` to an `i64` state and returns it.
//!
//! * `http_round_trip/blocking` — **HTTP round trip over loopback, server on its own core**:
//!   one keep-alive `POST /gateway/{id}/action/increment` with `{"args":[1]}` and its
//!   `{"output":N}` response, from a minimal blocking client (write the request, read until the
//!   whole response is in) on criterion's thread, pinned to CPU 1. Includes both kernels'
//!   loopback TCP paths and the client's own wake-up from a blocking `read`.
//! * `http_round_trip/busy_poll_client` — the same, with the client spinning on a non-blocking
//!   socket instead of sleeping in `read`, which removes the client's wake-up latency (on a VM,
//!   much of the blocking number) and leaves the server's side and the loopback transfer.
//! * `actor_call/same_shard` — the **dispatch without sockets**: an action of one `bench` actor
//!   calls `increment(1)` on another `bench` actor of the same shard through
//!   `ctx.client().get_or_create(..).call(..)`, the public actor-to-actor API, which on the owning
//!   shard runs the call directly, without a message: encoding the arguments into an
//!   `{"args":[...]}` body, resolving the target in the shard's directory, parsing the body,
//!   decoding the typed arguments, running the action under its ephemeral connection, encoding
//!   the output and decoding it for the caller, with the call's deadline timer. Timed inside the
//!   calling action (`iter_custom`: one HTTP request starts a batch of N calls and returns
//!   the elapsed time), so neither HTTP nor the client is in the measured path.
//! * `actor_call/same_shard_owned` — the same call through `call_owned`: the `(i64,)` arguments
//!   and the `i64` output are moved, not encoded and decoded.
//! * `actor_call/read_durable_16k` — the `actor_call/same_shard` path to `ledger.size`, a call
//!   that only reads a `durable_before_reply` actor with a 16 KiB state (memory store: durable at
//!   once). Its output gate has nothing to save: the cost of noticing that (no snapshot).
//!
//! The server uses the default `Config` (our io_uring socket driver, `spin_before_park` 100 µs,
//! so a shard that gets the next request within 100 µs has not parked).
//!
//! How to read it: `time` is ns per round trip or call, `thrpt` is round trips (calls) per second
//! on one connection (one calling actor). Before each benchmark it prints `allocations/op`,
//! counted over the whole process. For the HTTP round trips that is the server's allocations (the
//! client is allocation-free by construction), including what the shard allocates while it spins
//! between requests: glommio allocates on every idle poll while any timer is pending (see
//! `cross_shard_hop`'s `busy_spin_poll_timer`), and the connection's read timeout is one. So the
//! slower the client, the higher the count; the busy-poll client's figure is the closer one to the
//! per-request cost. For the actor calls it includes the one HTTP request that starts each batch of
//! 10,000 calls (< 0.01 per call).
//!
//! Needs two CPUs (0 for the shard, 1 for the client).
//!
//! ```sh
//! cargo bench -p pinion-benches --bench dispatch -- --measurement-time 3 --warm-up-time 1
//! ```

mod common;

use std::hint::spin_loop;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{Counting, report_allocations};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pinion_runtime::{ActionResult, Actions, Actor, ActorInfo, Config, Server, Value, sys};

#[global_allocator]
static ALLOC: Counting = Counting;

/// The trivial actor: an `i64` counter.
struct Bench;

impl Actor for Bench {
    const NAME: &'static str = "bench";
    type State = i64;
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<i64> {
        Ok(0)
    }

    fn create_vars(_: &ActorInfo, _: &i64) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action("increment", |c, (n,): (i64,)| {
                *c.state += n;
                Ok(*c.state)
            })
            .action_async(
                "call_local",
                |c, (key, n, owned): (String, u64, bool)| async move {
                    let target = c.client().get_or_create("bench", [key.as_str()]);
                    // Creates the target before the clock starts.
                    target.call::<i64>("increment", (1,)).await?;
                    let started = sys::now();
                    for _ in 0..n {
                        if owned {
                            target.call_owned::<i64, _>("increment", (1i64,)).await?;
                        } else {
                            target.call::<i64>("increment", (1,)).await?;
                        }
                    }
                    Ok(started.elapsed().as_nanos() as u64)
                },
            )
            .action_async("read_ledger", |c, (key, n): (String, u64)| async move {
                let target = c.client().get_or_create("ledger", [key.as_str()]);
                target.call::<i64>("size", ()).await?;
                let started = sys::now();
                for _ in 0..n {
                    target.call::<i64>("size", ()).await?;
                }
                Ok(started.elapsed().as_nanos() as u64)
            });
    }
}

/// A `durable_before_reply` actor with a 16 KiB state (2,048 `u64`s), for the cost of a call that
/// only reads it: the output gate must not snapshot a state the call did not change.
struct Ledger;

impl Actor for Ledger {
    const NAME: &'static str = "ledger";
    type State = Vec<u64>;
    type Vars = ();
    type ConnState = ();
    const OPTIONS: pinion_runtime::ActorOptions = pinion_runtime::ActorOptions {
        durable_before_reply: true,
        ..pinion_runtime::ActorOptions::DEFAULT
    };

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<Vec<u64>> {
        Ok((0..2_048).collect())
    }

    fn create_vars(_: &ActorInfo, _: &Vec<u64>) {}

    fn actions(actions: &mut Actions<Self>) {
        actions.action("size", |c, ()| Ok(c.state.len() as i64));
    }
}

/// Pins the calling thread to `cpu`.
fn pin_current_thread(cpu: usize) {
    // SAFETY: `cpu_set_t` is a plain bit array for which all zeroes is the empty set; `CPU_SET`
    // writes inside it (`cpu` is below `CPU_SETSIZE`), and `sched_setaffinity` reads
    // `size_of::<cpu_set_t>()` bytes of it for the calling thread (pid 0).
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(result, 0, "cannot pin the client to CPU {cpu}");
}

/// A minimal HTTP/1.1 keep-alive client: writes a request, reads until the whole response (by
/// `Content-Length`) is in, returns its body. No allocation per request.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    filled: usize,
    /// Spin on a non-blocking socket instead of sleeping in `read`.
    busy_poll: bool,
}

/// Where the body of the response at the start of `buf` is, once its head is complete.
fn body_range(buf: &[u8]) -> Option<(usize, usize)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &buf[..head_end];
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "unexpected response: {}",
        String::from_utf8_lossy(head)
    );
    let length = head
        .split(|&b| b == b'\n')
        .find_map(|line| {
            let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
            name.eq_ignore_ascii_case(b"content-length").then(|| {
                value[1..]
                    .iter()
                    .filter(|b| b.is_ascii_digit())
                    .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0'))
            })
        })
        .expect("a Content-Length");
    Some((head_end + 4, length))
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: vec![0; 64 * 1024],
            filled: 0,
            busy_poll: false,
        }
    }

    fn set_busy_poll(&mut self, busy_poll: bool) {
        self.stream
            .set_nonblocking(busy_poll)
            .expect("set_nonblocking");
        self.busy_poll = busy_poll;
    }

    /// Sends `request` (head and body) and returns the response body.
    fn exchange(&mut self, request: &[u8]) -> &[u8] {
        assert_eq!(self.filled, 0, "no response is pending");
        let mut written = 0;
        while written < request.len() {
            match self.stream.write(&request[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => spin_loop(),
                Err(e) => panic!("write: {e}"),
            }
        }
        loop {
            if let Some((start, len)) = body_range(&self.buf[..self.filled])
                && self.filled >= start + len
            {
                assert_eq!(self.filled, start + len, "one response per request");
                self.filled = 0;
                return &self.buf[start..start + len];
            }
            match self.stream.read(&mut self.buf[self.filled..]) {
                Ok(0) => panic!("the server closed the connection"),
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock && self.busy_poll => spin_loop(),
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn post(&mut self, method: &str, path: &str, body: &str) -> String {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        String::from_utf8_lossy(self.exchange(request.as_bytes())).into_owned()
    }

    /// The actor id of `bench` with key `key`, creating it.
    fn resolve(&mut self, key: &str) -> String {
        let body = self.post(
            "PUT",
            "/actors",
            &format!(r#"{{"name":"bench","key":"{key}"}}"#),
        );
        let at = body.find("\"actor_id\":\"").expect("actor_id") + 12;
        body[at..at + 16].to_string()
    }

    /// Calls an action and returns its output as a `u64`.
    fn call_u64(&mut self, id: &str, action: &str, args: &str) -> u64 {
        let body = self.post(
            "POST",
            &format!("/gateway/{id}/action/{action}"),
            &format!(r#"{{"args":{args}}}"#),
        );
        body.strip_prefix("{\"output\":")
            .and_then(|rest| rest.strip_suffix('}'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected output {body}"))
    }
}

fn dispatch(c: &mut Criterion) {
    let server = Server::start(
        pinion_runtime::Registry::new()
            .register::<Bench>()
            .register::<Ledger>(),
        Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            shards: Some(1),
            ..Config::default()
        },
    )
    .expect("server starts");
    // The shard runs on CPU 0 (the first CPU of the affinity mask); the client gets CPU 1.
    pin_current_thread(1);
    let mut client = Client::connect(server.local_addr());
    let counter = client.resolve("http-target");
    let increment = format!(
        "POST /gateway/{counter}/action/increment HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{{\"args\":[1]}}"
    )
    .into_bytes();
    let round_trip = |client: &mut Client| {
        let body = client.exchange(&increment);
        debug_assert!(body.starts_with(b"{\"output\":"));
        body.len()
    };

    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(1));
    for (name, busy_poll) in [("blocking", false), ("busy_poll_client", true)] {
        let mut first = true;
        group.bench_function(format!("http_round_trip/{name}"), |b| {
            client.set_busy_poll(busy_poll);
            if std::mem::take(&mut first) {
                report_allocations(
                    &format!("dispatch/http_round_trip/{name}"),
                    10_000,
                    1,
                    || round_trip(&mut client),
                );
            }
            b.iter(|| round_trip(&mut client))
        });
    }
    client.set_busy_poll(false);

    let caller = client.resolve("caller");
    for (name, owned) in [("same_shard", false), ("same_shard_owned", true)] {
        let mut first = true;
        group.bench_function(format!("actor_call/{name}"), |b| {
            let mut batch = |n: u64| {
                let ns = client.call_u64(
                    &caller,
                    "call_local",
                    &format!(r#"["local-target",{n},{owned}]"#),
                );
                Duration::from_nanos(ns)
            };
            if std::mem::take(&mut first) {
                report_allocations(&format!("dispatch/actor_call/{name}"), 1, 10_000, || {
                    batch(10_000)
                });
            }
            b.iter_custom(batch)
        });
    }
    group.bench_function("actor_call/read_durable_16k", |b| {
        b.iter_custom(|n| {
            let ns = client.call_u64(&caller, "read_ledger", &format!(r#"["ledger",{n}]"#));
            Duration::from_nanos(ns)
        })
    });
    group.finish();
    drop(client);
    server.stop().expect("server stops");
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
