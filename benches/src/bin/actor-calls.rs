//! Actor-to-actor call latency: a same-shard call beside a cross-shard one, idle and under load,
//! and a fan-out of many calls over both shards, measured inside the calling action (so the
//! numbers are the hops themselves, not the HTTP request that starts the measurement).
//!
//! ```sh
//! cargo run --release -p pinion-benches --bin actor-calls -- --calls 20000 --load-connections 16
//! ```
//!
//! It starts a 2-shard server in-process (one shard per CPU of the affinity mask), registers a
//! `pinger` actor, and asks a pinger on shard 0 to time `--calls` sequential `ping` calls to a
//! pinger on shard 0 (same shard: no message) and to one on shard 1 (one message each way);
//! "same-owned" is the same-shard call made with `call_owned`, whose arguments and output are
//! moved instead of encoded as JSON.
//! "idle" makes the calls back to back; "idle-1ms" makes a tenth as many, 1 ms apart, so both
//! shards have gone quiet before each one (the message then wakes the callee through the
//! executor's reactor instead of finding its mailbox task hot; see `Shard::run_mailbox`).
//! "busy-io" and "busy-cpu" repeat that while every shard runs actor work flat out (a `burn`
//! action making same-shard calls; between batches "io" waits a moment like a request handler
//! waiting for its socket, "cpu" only yields, so some task is always runnable), so the messages
//! wait behind real work but nothing else competes for the cores; "http-load" while
//! `--load-connections` threads call `counter.increment` on actors of both shards over HTTP as fast as they can, which on a 2-core machine means the load threads
//! share the cores with the shards (the OS scheduler then dominates; the output says so);
//! "http-rate" with the same connections sending `--load-rate` requests per second in all,
//! sleeping between requests, so the cores are busy but not oversubscribed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use pinion_runtime::{
    ActionResult, Actions, Actor, ActorId, ActorInfo, Config, Server, Value, join_all, key, sys,
};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// Sequential calls timed per measurement.
    #[arg(long, default_value_t = 20_000)]
    calls: u32,
    /// Calls in the fan-out measurement (spread over both shards).
    #[arg(long, default_value_t = 1_000)]
    fanout: usize,
    /// Fan-out rounds.
    #[arg(long, default_value_t = 20)]
    fanout_rounds: usize,
    /// HTTP connections calling counter.increment during the "under load" measurements.
    #[arg(long, default_value_t = 16)]
    load_connections: usize,
    /// Total requests per second of the "http-rate" measurement (the load threads pace
    /// themselves); 0 skips it.
    #[arg(long, default_value_t = 20_000)]
    load_rate: u64,
    /// Shards (the measurement needs 2).
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// `Config::spin_before_park` in microseconds (the server's default when absent).
    #[arg(long)]
    spin_us: Option<u64>,
}

struct Pinger;

#[derive(Serialize)]
struct Percentiles {
    n: u64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Percentiles {
        n: h.len(),
        p50_us: us(0.5),
        p90_us: us(0.9),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: h.max() as f64 / 1000.0,
    }
}

impl Actor for Pinger {
    const NAME: &'static str = "pinger";
    type State = ();
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<()> {
        Ok(())
    }

    fn create_vars(_: &ActorInfo, _: &()) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action("ping", |_, ()| Ok(1u8))
            .action_async(
                "measure",
                |c, (other, n, gap_us, owned): (String, u32, u64, bool)| async move {
                    let target = c.client().get_or_create("pinger", [other.as_str()]);
                    // Create the target (and warm the path) before timing.
                    for _ in 0..100 {
                        target.call::<u8>("ping", ()).await?;
                    }
                    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
                    for _ in 0..n {
                        if gap_us > 0 {
                            sys::sleep(Duration::from_micros(gap_us)).await;
                        }
                        let started = sys::now();
                        if owned {
                            target.call_owned::<u8, _>("ping", ()).await?;
                        } else {
                            target.call::<u8>("ping", ()).await?;
                        }
                        let _ = histogram.record(started.elapsed().as_nanos() as u64);
                    }
                    Ok(percentiles(&histogram))
                },
            )
            .action_async(
                "burn",
                |c, (ms, target, io): (u64, String, bool)| async move {
                    // Keeps this shard busy with actor work: batches of same-shard calls. With `io`,
                    // each batch then waits a moment like a request handler waiting for its socket
                    // (the shard's queue empties and it polls its I/O and mailbox); without, it only
                    // yields, so some task is always runnable (CPU-bound work: the shard looks at its
                    // I/O and mailbox only when glommio's preemption timer fires).
                    let target = c.client().get_or_create("pinger", [target.as_str()]);
                    let until = sys::now() + Duration::from_millis(ms);
                    let mut calls = 0u64;
                    while sys::now() < until {
                        for _ in 0..16 {
                            target.call::<u8>("ping", ()).await?;
                        }
                        calls += 16;
                        if io {
                            sys::sleep(Duration::from_micros(1)).await;
                        } else {
                            futures_lite::future::yield_now().await;
                        }
                    }
                    Ok(calls)
                },
            )
            .action_async(
                "fanout",
                |c, (keys, rounds): (Vec<String>, usize)| async move {
                    let client = c.client();
                    let targets: Vec<_> = keys
                        .iter()
                        .map(|k| client.get_or_create("pinger", [k.as_str()]))
                        .collect();
                    join_all(targets.iter().map(|t| t.call::<u8>("ping", ()))).await;
                    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
                    for _ in 0..rounds {
                        let started = sys::now();
                        for result in
                            join_all(targets.iter().map(|t| t.call::<u8>("ping", ()))).await
                        {
                            result?;
                        }
                        let _ = histogram.record(started.elapsed().as_nanos() as u64);
                    }
                    Ok(percentiles(&histogram))
                },
            );
    }
}

fn shard_of(key: &str, shards: usize) -> usize {
    ActorId::derive("pinger", &key::serialize(&[key.to_string()])).shard(shards)
}

fn key_on(shard: usize, shards: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|k| shard_of(k, shards) == shard)
        .expect("some key lands on every shard")
}

/// A minimal blocking HTTP/1.1 client: one request, one JSON response.
struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    fn connect(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Http {
            stream,
            buf: Vec::new(),
        }
    }

    fn request(&mut self, method: &str, path: &str, body: &str) -> String {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).expect("write");
        self.stream.write_all(body.as_bytes()).expect("write");
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().expect("content-length"));
                if self.buf.len() >= end + 4 + len {
                    let body =
                        String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).into_owned();
                    self.buf.drain(..end + 4 + len);
                    return body;
                }
            }
            let mut chunk = [0u8; 16384];
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "server closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn resolve(&mut self, name: &str, key: &str) -> String {
        let body = self.request(
            "PUT",
            "/actors",
            &format!(r#"{{"name":"{name}","key":"{key}"}}"#),
        );
        let at = body.find("\"actor_id\":\"").expect("actor_id") + 12;
        body[at..at + 16].to_string()
    }

    fn call(&mut self, id: &str, action: &str, args: &str) -> String {
        self.request(
            "POST",
            &format!("/gateway/{id}/action/{action}"),
            &format!(r#"{{"args":{args}}}"#),
        )
    }
}

fn main() {
    let args = Args::parse();
    assert!(
        args.shards >= 2,
        "the cross-shard measurement needs 2 shards"
    );
    let registry = pinion_demo::registry().register::<Pinger>();
    let server = Server::start(
        registry,
        Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            shards: Some(args.shards),
            spin_before_park: args
                .spin_us
                .map_or(Config::default().spin_before_park, Duration::from_micros),
            ..Config::default()
        },
    )
    .expect("server starts");
    let addr = server.local_addr();
    let shards = args.shards;
    let caller = key_on(0, shards, "caller");
    let same = key_on(0, shards, "same");
    let other = key_on(1, shards, "other");
    let mut http = Http::connect(addr);
    let caller_id = http.resolve("pinger", &caller);
    let measure_spaced = |label: &str, http: &mut Http, calls: u32, gap_us: u64| {
        for (kind, target, owned) in [
            ("same-shard", &same, false),
            ("same-owned", &same, true),
            ("cross-shard", &other, false),
        ] {
            let out = http.call(
                &caller_id,
                "measure",
                &format!(r#"["{target}",{calls},{gap_us},{owned}]"#),
            );
            println!("{label:<11} {kind:<12} {out}");
        }
    };
    let measure = |label: &str, http: &mut Http| measure_spaced(label, http, args.calls, 0);
    println!("server: {shards} shards in-process; calls timed inside the calling action");
    measure("idle", &mut http);
    // Calls far apart: both shards have gone quiet (parked, or spinning in glommio) before each
    // call, so the message wakes the callee through the executor, and the reply the caller.
    measure_spaced("idle-1ms", &mut http, args.calls / 10, 1000);

    // Busy shards: every shard runs actor work (same-shard calls) flat out meanwhile, so a
    // message to it waits behind that work; nothing else competes for the cores.
    for (label, io) in [("busy-io", true), ("busy-cpu", false)] {
        let burners: Vec<_> = (0..shards)
            .map(|shard| {
                let key = key_on(shard, shards, &format!("burner-{label}"));
                let target = key_on(shard, shards, &format!("burn-target-{label}"));
                thread::spawn(move || {
                    let mut http = Http::connect(addr);
                    let id = http.resolve("pinger", &key);
                    http.call(&id, "burn", &format!(r#"[3000,"{target}",{io}]"#))
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(100));
        measure(label, &mut http);
        for burner in burners {
            let out = burner.join().expect("burner");
            println!("{label}: a burner made {out} same-shard calls in 3 s");
        }
    }

    // Under load: HTTP increments on counters of both shards from other threads, flat out
    // ("http-load": the load threads always want the CPU, so on a small machine the shards wait
    // for the OS scheduler) and at a fixed total rate ("http-rate": they sleep between requests).
    let conns = args.load_connections;
    let mut loads = vec![("http-load", 0u64)];
    if args.load_rate > 0 {
        loads.push(("http-rate", args.load_rate));
    }
    for (label, rate) in loads {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        // Each connection's own schedule: its share of the total rate.
        let interval = (rate > 0).then(|| Duration::from_secs_f64(conns as f64 / rate as f64));
        let load: Vec<_> = (0..conns)
            .map(|i| {
                let (stop, done) = (stop.clone(), done.clone());
                thread::spawn(move || {
                    let mut http = Http::connect(addr);
                    let id = http.resolve("counter", &format!("load-{i}"));
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(interval) = interval {
                            next += interval;
                            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                                thread::sleep(wait);
                            }
                        }
                        http.call(&id, "increment", "[1]");
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(300));
        let before = done.load(Ordering::Relaxed);
        let started = Instant::now();
        measure(label, &mut http);
        let served =
            (done.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for thread in load {
            let _ = thread.join();
        }
        println!(
            "{label}: {conns} HTTP connections ran {served:.0} counter.increment/s meanwhile (load threads share the machine's cores with the shards{})",
            if rate > 0 {
                format!("; offered {rate}/s")
            } else {
                String::new()
            }
        );
    }

    let keys: Vec<String> = (0..args.fanout).map(|i| format!("\"fan-{i}\"")).collect();
    let spread = (0..args.fanout)
        .filter(|i| shard_of(&format!("fan-{i}"), shards) == 0)
        .count();
    let out = http.call(
        &caller_id,
        "fanout",
        &format!("[[{}],{}]", keys.join(","), args.fanout_rounds),
    );
    println!(
        "fan-out     {} calls ({} on shard 0, {} elsewhere), time to the last reply per round: {out}",
        args.fanout,
        spread,
        args.fanout - spread
    );
    server.stop().expect("server stops");
}
