//! The cost of one cross-shard message: a ping-pong between two glommio executors pinned to
//! CPU 0 (A) and CPU 1 (B) over flume unbounded channels, the transport of the runtime's
//! mailboxes (`runtime/src/mailbox.rs`: one `flume::unbounded` inbox per shard, received with
//! `recv_async`). A sends a `u64`, B echoes it back, A waits for the echo, N times in a row; A
//! times the N round trips itself (criterion's `iter_custom`), so criterion's thread is not in
//! the measured path.
//!
//! Variants (`round_trip/...`), from the floor up:
//!
//! * `busy_try_recv`: both sides are a task spinning on `try_recv` that never awaits, so neither
//!   executor is ever involved in delivery: the floor (flume's queue and the cache-line transfers
//!   between the cores).
//! * `busy_spin_poll`: both sides await with `recv_async`, as the mailbox does, and both
//!   executors are built with `spin_before_park(1 s)`: never parked, they poll for foreign
//!   wake-ups in a loop when idle. This is the runtime's path between two shards that are not
//!   parked: idle ones whose next message comes within `Config::spin_before_park` (100 µs by
//!   default), or busy ones between two runs of their task queues.
//! * `busy_spin_poll_timer`: the same with one timer pending on each executor (an hour away), as a
//!   shard always has some (read timeouts, the WebSocket heartbeat, action deadlines). glommio
//!   processes its timers on every idle poll, and with any timer pending that allocates (its timer
//!   map is split on each pass), so the `idle_per_ms` line of this variant shows what an idle
//!   spinning shard allocates per millisecond.
//! * `receiver_parked`: A spins as above; B parks (sleeps in io_uring) as soon as it is idle, so
//!   every ping has to wake B's core (an eventfd write, then the kernel's wake-up of the idle
//!   vCPU).
//! * `both_parked`: both executors park as soon as idle (`Config::spin_before_park` = 0): every
//!   message, ping and echo, wakes a sleeping core.
//!
//! A task that merely yields in a loop (`yield_now`) is not a way to keep an executor busy here:
//! by glommio 0.9's run loop, a task queue that never empties runs until its preemption timer
//! fires (100 ms by default) and only then are foreign wake-ups looked at, so the hop would
//! measure that timer. The
//! `busy_*` variants keep the receiver unparked without starving its wake-up path.
//!
//! How to read it: `time` is ns per round trip (two hops), `thrpt` is round trips per second
//! from A. Before each variant it prints `idle_per_ms` (what both executors allocate per ms with
//! no message in flight: 0 unless a timer is pending) and `allocations/op` per round trip, counted
//! over both executors (none in `busy_try_recv`; with `recv_async`, flume registers a waiter each
//! time it has to wait and, by its code, glommio re-arms its preemption timers, new io_uring
//! timeout sources, on each pass of its run loop that ran a task).
//!
//! Needs two CPUs (0 and 1). On a shared machine the busy variants compete with whatever else
//! runs on those cores, and the parked ones depend on the hypervisor's wake-up latency.
//!
//! ```sh
//! cargo bench -p pinion-benches --bench cross_shard_hop -- --measurement-time 3 --warm-up-time 1
//! ```

mod common;

use std::hint::spin_loop;
use std::thread;
use std::time::{Duration, Instant};

use common::{Counting, report_allocations};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flume::{Receiver, Sender, TryRecvError};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

#[global_allocator]
static ALLOC: Counting = Counting;

/// How long a "busy" executor polls before it would park: longer than any gap between the
/// measurement batches, so it never parks while a benchmark runs.
const BUSY_SPIN: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
enum Mode {
    BusyTryRecv,
    BusySpinPoll,
    BusySpinPollTimer,
    ReceiverParked,
    BothParked,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::BusyTryRecv => "busy_try_recv",
            Mode::BusySpinPoll => "busy_spin_poll",
            Mode::BusySpinPollTimer => "busy_spin_poll_timer",
            Mode::ReceiverParked => "receiver_parked",
            Mode::BothParked => "both_parked",
        }
    }

    /// Whether the ping-pong tasks spin on `try_recv` instead of awaiting.
    fn spins(self) -> bool {
        matches!(self, Mode::BusyTryRecv)
    }

    /// Whether each executor has a pending timer, as a shard always has (read timeouts, the
    /// WebSocket heartbeat, action deadlines).
    fn timer(self) -> bool {
        matches!(self, Mode::BusySpinPollTimer)
    }

    /// Whether executor A (the sender, `a == true`) or B polls instead of parking when idle.
    fn executor_spins(self, a: bool) -> bool {
        match self {
            Mode::BusyTryRecv | Mode::BusySpinPoll | Mode::BusySpinPollTimer => true,
            Mode::ReceiverParked => a,
            Mode::BothParked => false,
        }
    }
}

/// Busy-waits for the next message on `rx` without ever yielding to the executor.
fn spin_recv(rx: &Receiver<u64>) -> Option<u64> {
    loop {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(TryRecvError::Empty) => spin_loop(),
            Err(TryRecvError::Disconnected) => return None,
        }
    }
}

/// The two executors of one variant, driven from criterion's thread.
struct Pair {
    /// Ask A for N round trips…
    commands: Sender<u64>,
    /// …and receive the time they took.
    results: Receiver<Duration>,
    executors: Vec<ExecutorJoinHandle<()>>,
}

impl Pair {
    fn start(mode: Mode) -> Pair {
        let (commands, commands_rx) = flume::unbounded::<u64>();
        let (results_tx, results) = flume::unbounded::<Duration>();
        let (to_b, from_a) = flume::unbounded::<u64>();
        let (to_a, from_b) = flume::unbounded::<u64>();
        let builder = |cpu: usize, name: &str, spins: bool| {
            let builder = LocalExecutorBuilder::new(Placement::Fixed(cpu)).name(name);
            if spins {
                builder.spin_before_park(BUSY_SPIN)
            } else {
                builder
            }
        };
        let spin = mode.spins();
        let timer = mode.timer();
        let pending_timer = move || {
            if timer {
                glommio::spawn_local(glommio::timer::sleep(Duration::from_secs(3600))).detach();
            }
        };
        let b = builder(1, "hop-b", mode.executor_spins(false))
            .spawn(move || async move {
                pending_timer();
                if spin {
                    while let Some(v) = spin_recv(&from_a) {
                        let _ = to_a.send(v);
                    }
                } else {
                    while let Ok(v) = from_a.recv_async().await {
                        let _ = to_a.send(v);
                    }
                }
            })
            .expect("executor B starts on CPU 1");
        let a = builder(0, "hop-a", mode.executor_spins(true))
            .spawn(move || async move {
                pending_timer();
                while let Ok(n) = commands_rx.recv_async().await {
                    let started = Instant::now();
                    for i in 0..n {
                        to_b.send(i).expect("B is running");
                        let echoed = if spin {
                            spin_recv(&from_b)
                        } else {
                            from_b.recv_async().await.ok()
                        };
                        debug_assert_eq!(echoed, Some(i));
                    }
                    let _ = results_tx.send(started.elapsed());
                }
                // Dropping `to_b` ends B.
            })
            .expect("executor A starts on CPU 0");
        Pair {
            commands,
            results,
            executors: vec![a, b],
        }
    }

    /// Runs `n` round trips and returns the time A measured for them.
    fn run(&self, n: u64) -> Duration {
        self.commands.send(n).expect("A is running");
        self.results.recv().expect("A answers")
    }

    fn stop(self) {
        drop(self.commands);
        for executor in self.executors {
            executor.join().expect("executor ends cleanly");
        }
    }
}

fn cross_shard_hop(c: &mut Criterion) {
    let mut group = c.benchmark_group("cross_shard_hop");
    group.throughput(Throughput::Elements(1));
    for mode in [
        Mode::BusyTryRecv,
        Mode::BusySpinPoll,
        Mode::BusySpinPollTimer,
        Mode::ReceiverParked,
        Mode::BothParked,
    ] {
        let mut pair = None;
        group.bench_function(format!("round_trip/{}", mode.name()), |b| {
            let pair = pair.get_or_insert_with(|| {
                let pair = Pair::start(mode);
                pair.run(1_000);
                // What the two executors allocate with no message in flight, per ms: the
                // baseline to tell per-message allocations from those of idle polling.
                report_allocations(
                    &format!("cross_shard_hop/idle_per_ms/{}", mode.name()),
                    1,
                    100,
                    || thread::sleep(Duration::from_millis(100)),
                );
                report_allocations(
                    &format!("cross_shard_hop/round_trip/{}", mode.name()),
                    10,
                    1_000,
                    || pair.run(1_000),
                );
                pair
            });
            b.iter_custom(|iters| pair.run(iters))
        });
        if let Some(pair) = pair {
            pair.stop();
        }
    }
    group.finish();
}

criterion_group!(benches, cross_shard_hop);
criterion_main!(benches);
