//! The seam: every source of nondeterminism the runtime uses goes through this module.
//!
//! Clock, timers, task spawning and randomness are reached only through the functions here; the
//! cross-shard transport is [`crate::mailbox`] and the storage backend is the
//! [`pinion_storage::Store`] a shard is built with. A deterministic simulator (many shards driven on
//! one thread, TigerBeetle/FoundationDB style) replaces exactly these three places and nothing else.
//! Code elsewhere in the runtime must not call `std::time`, `glommio::spawn_local`,
//! `glommio::timer` or an RNG directly; `grep` for them outside this file is a review check.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Monotonic time, for deadlines and latency.
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock time in milliseconds since the Unix epoch, for the timestamps the protocol reports
/// (`create_ts`) and stores.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs `future` as an independent task on the current shard. The task is detached: it runs to
/// completion, or until [`cancel_spawned`] at the shard's end, and its output is dropped.
pub fn spawn(future: impl Future<Output = ()> + 'static) {
    let index = SPAWNED.with(|spawned| spawned.borrow_mut().reserve());
    // The task cannot end before its handle is stored: it only runs once this returns.
    let handle = glommio::spawn_local(async move {
        let _ended = Ended(index);
        future.await
    })
    .detach();
    SPAWNED.with(|spawned| {
        if let Some(slot) = spawned.borrow_mut().handles.get_mut(index) {
            *slot = Some(handle);
        }
    });
}

/// Cancels every task [`spawn`] started on this thread that has not ended, and lets the
/// executor drop them: for the end of a shard. A glommio executor that stops leaves its pending
/// tasks unfinished and never drops them, so whatever they hold (the shard itself, with its
/// actors and its store's index) would stay in memory until the process exits.
pub async fn cancel_spawned() {
    let handles: Vec<_> = SPAWNED.with(|spawned| {
        let mut spawned = spawned.borrow_mut();
        spawned.finished.clear();
        spawned
            .handles
            .iter_mut()
            .filter_map(Option::take)
            .collect()
    });
    for handle in &handles {
        handle.cancel();
    }
    // A cancelled task's future is dropped when the executor next runs the task; the sleep
    // also gives the reactor a pass, which closes the files those drops left to it.
    futures_lite::future::yield_now().await;
    sleep(Duration::from_millis(1)).await;
    drop(handles);
}

/// Which tasks [`spawn`] started on this thread and have not ended.
#[derive(Default)]
struct Spawned {
    /// Their handles; a slot is `None` from `reserve` until `spawn` stores the handle.
    handles: Slab<Option<glommio::task::JoinHandle<()>>>,
    /// Handles of tasks that ended, dropped at the next `reserve` rather than by the ending
    /// task itself (whose own handle that would be).
    finished: Vec<glommio::task::JoinHandle<()>>,
}

impl Spawned {
    fn reserve(&mut self) -> usize {
        self.finished.clear();
        self.handles.insert(None)
    }
}

/// Values in numbered slots that are given back and reused (no allocation once grown): the
/// runtime's per-shard registries (spawned tasks, open sockets).
pub(crate) struct Slab<T> {
    slots: Vec<Option<T>>,
    /// The empty slots, all of them (so the count of values is derived, not kept).
    free: Vec<usize>,
}

impl<T> Default for Slab<T> {
    fn default() -> Slab<T> {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    /// Stores `value`; returns its slot.
    pub(crate) fn insert(&mut self, value: T) -> usize {
        match self.free.pop() {
            Some(index) => {
                self.slots[index] = Some(value);
                index
            }
            None => {
                self.slots.push(Some(value));
                self.slots.len() - 1
            }
        }
    }

    /// Takes the value out of slot `index` and gives the slot back.
    pub(crate) fn remove(&mut self, index: usize) -> Option<T> {
        let value = self.slots.get_mut(index)?.take()?;
        self.free.push(index);
        Some(value)
    }

    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.slots.get_mut(index)?.as_mut()
    }

    /// How many values it holds.
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().flatten()
    }
}

thread_local! {
    static SPAWNED: RefCell<Spawned> = RefCell::new(Spawned::default());
}

/// Gives a spawned task's slot back when the task ends (completes, or is dropped cancelled).
struct Ended(usize);

impl Drop for Ended {
    fn drop(&mut self) {
        // `try_with`: a task dropped while the thread's locals are being destroyed.
        let _ = SPAWNED.try_with(|spawned| {
            let mut spawned = spawned.borrow_mut();
            if let Some(Some(handle)) = spawned.handles.remove(self.0) {
                spawned.finished.push(handle);
            }
        });
    }
}

/// Completes after `duration` on the shard's timer.
pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Runs `future` until it completes or `limit` passes; `None` on timeout (the future is dropped,
/// so it stops at its next await).
///
/// Every action of every request runs under one of these, so it costs no timer of its own: the
/// deadline goes into this thread's [`Deadlines`] table (a slot taken and given back, no
/// allocation once the table has grown), and one sweeper task per thread sleeps until the
/// earliest deadline in it. A glommio timer per call (registered in, and removed from, the
/// reactor's B-tree) cost about 0.5 µs per asynchronous action at 35k actions/s.
pub async fn timeout<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    let Some(deadline) = now().checked_add(limit) else {
        return Some(future.await);
    };
    let entry = Deadline::register(deadline);
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(value) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(value));
        }
        if entry.expired(cx) {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

thread_local! {
    /// The pending [`timeout`]s of this thread: a slab of deadlines and one sweeper task, running
    /// only while the slab holds one.
    static DEADLINES: RefCell<Deadlines> = RefCell::default();
}

#[derive(Default)]
struct Deadlines {
    slots: Vec<Slot>,
    free: Vec<usize>,
    live: usize,
    /// When the sweeper wakes next; `None` while no sweeper runs.
    wake_at: Option<Instant>,
    /// The sleeping sweeper, woken early when a deadline earlier than `wake_at` arrives.
    sweeper: Option<Waker>,
    /// The executor the sweeper runs on. An executor that stops leaves its tasks unfinished, so
    /// a later executor on the same thread starts its own sweeper.
    sweeper_executor: usize,
}

struct Slot {
    deadline: Instant,
    waker: Option<Waker>,
    expired: bool,
    live: bool,
}

/// One [`timeout`]'s slot; dropping it gives the slot back.
struct Deadline {
    slot: usize,
}

impl Deadline {
    fn register(deadline: Instant) -> Deadline {
        DEADLINES.with(|deadlines| {
            let mut inner = deadlines.borrow_mut();
            let entry = Slot {
                deadline,
                waker: None,
                expired: false,
                live: true,
            };
            let slot = match inner.free.pop() {
                Some(slot) => {
                    inner.slots[slot] = entry;
                    slot
                }
                None => {
                    inner.slots.push(entry);
                    inner.slots.len() - 1
                }
            };
            inner.live += 1;
            let mut start = false;
            let mut early = None;
            let executor = glommio::executor().id();
            match inner.wake_at {
                Some(at) if inner.sweeper_executor == executor => {
                    if deadline < at {
                        inner.wake_at = Some(deadline);
                        early = inner.sweeper.take();
                    }
                }
                _ => {
                    inner.wake_at = Some(deadline);
                    inner.sweeper_executor = executor;
                    inner.sweeper = None;
                    start = true;
                }
            }
            drop(inner);
            if start {
                spawn(sweep());
            }
            if let Some(sweeper) = early {
                sweeper.wake();
            }
            Deadline { slot }
        })
    }

    /// Whether the deadline passed; if not, `cx` is woken when it does.
    fn expired(&self, cx: &mut Context<'_>) -> bool {
        DEADLINES.with(|deadlines| {
            let mut inner = deadlines.borrow_mut();
            let slot = &mut inner.slots[self.slot];
            if slot.expired {
                return true;
            }
            match &slot.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => slot.waker = Some(cx.waker().clone()),
            }
            false
        })
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        // `try_with`: a task dropped while the thread's locals are torn down has nothing to free.
        let _ = DEADLINES.try_with(|deadlines| {
            let mut inner = deadlines.borrow_mut();
            let slot = &mut inner.slots[self.slot];
            slot.live = false;
            slot.waker = None;
            inner.free.push(self.slot);
            inner.live -= 1;
        });
    }
}

/// The sweeper: sleeps until the earliest deadline, wakes the expired, and ends once no deadline
/// is pending (the next [`timeout`] starts another).
async fn sweep() {
    loop {
        let mut expired = Vec::new();
        let wake_at = DEADLINES.with(|deadlines| {
            let mut inner = deadlines.borrow_mut();
            let now = now();
            let mut earliest: Option<Instant> = None;
            for slot in inner.slots.iter_mut().filter(|s| s.live && !s.expired) {
                if slot.deadline <= now {
                    slot.expired = true;
                    expired.extend(slot.waker.take());
                } else if earliest.is_none_or(|at| slot.deadline < at) {
                    earliest = Some(slot.deadline);
                }
            }
            if inner.live == 0 {
                // Nothing pending: shrink back, so that a burst does not keep its table.
                inner.slots = Vec::new();
                inner.free = Vec::new();
            }
            inner.wake_at = earliest;
            earliest
        });
        for waker in expired {
            waker.wake();
        }
        let Some(at) = wake_at else {
            return;
        };
        let early = std::future::poll_fn(|cx| {
            DEADLINES.with(|deadlines| {
                let mut inner = deadlines.borrow_mut();
                if inner.wake_at.is_some_and(|now_at| now_at < at) {
                    Poll::Ready(())
                } else {
                    inner.sweeper = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
        });
        futures_lite::future::or(sleep(at.saturating_duration_since(now())), early).await;
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // The OS-seeded hasher of std is the cheapest entropy available without another dependency.
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(unix_ms());
    hasher.finish() | 1
}

/// A pseudo-random `u64` from the shard's generator (xorshift64*; not for cryptography).
pub fn random_u64() -> u64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(future: impl Future<Output = T>) -> T {
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("an executor")
            .run(future)
    }

    /// A timeout whose future never completes: it can only expire.
    fn expiry(limit: Duration) -> impl Future<Output = Option<()>> {
        timeout(limit, std::future::pending::<()>())
    }

    fn pending_deadlines() -> usize {
        DEADLINES.with(|deadlines| deadlines.borrow().live)
    }

    #[test]
    fn cancel_spawned_drops_the_pending_tasks_and_what_they_hold() {
        run(async {
            let held = std::rc::Rc::new(());
            for _ in 0..3 {
                let held = held.clone();
                spawn(async move {
                    std::future::pending::<()>().await;
                    drop(held);
                });
            }
            // One that ends by itself gives its slot back, and is not cancelled twice.
            spawn(async {});
            futures_lite::future::yield_now().await;
            assert_eq!(std::rc::Rc::strong_count(&held), 4);
            cancel_spawned().await;
            assert_eq!(std::rc::Rc::strong_count(&held), 1);
            let live = SPAWNED.with(|spawned| spawned.borrow().handles.iter().flatten().count());
            assert_eq!(live, 0);
            // The cancelled tasks gave their slots back.
            assert_eq!(SPAWNED.with(|spawned| spawned.borrow().handles.len()), 0);
            // Spawning still works afterwards.
            let ran = std::rc::Rc::new(Cell::new(false));
            let flag = ran.clone();
            spawn(async move { flag.set(true) });
            sleep(Duration::from_millis(1)).await;
            assert!(ran.get());
        });
    }

    #[test]
    fn a_future_that_finishes_in_time_keeps_its_output_and_gives_its_slot_back() {
        run(async {
            let output = timeout(Duration::from_secs(5), async {
                sleep(Duration::from_millis(5)).await;
                7
            })
            .await;
            assert_eq!(output, Some(7));
            assert_eq!(pending_deadlines(), 0);
        });
    }

    #[test]
    fn a_future_past_its_deadline_is_dropped_no_earlier_than_the_deadline() {
        run(async {
            let started = now();
            let output = expiry(Duration::from_millis(30)).await;
            assert_eq!(output, None);
            assert!(started.elapsed() >= Duration::from_millis(30));
            assert_eq!(pending_deadlines(), 0);
        });
    }

    #[test]
    fn a_shorter_deadline_arriving_later_wakes_the_sleeping_sweeper_early() {
        run(async {
            // The sweeper first sleeps towards the 10 s deadline; the 20 ms one must not wait
            // for it.
            let long = glommio::spawn_local(expiry(Duration::from_secs(10)));
            sleep(Duration::from_millis(5)).await;
            let started = now();
            let short = expiry(Duration::from_millis(20)).await;
            assert_eq!(short, None);
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(20) && waited < Duration::from_secs(5),
                "{waited:?}"
            );
            assert_eq!(pending_deadlines(), 1, "the 10 s timeout is still pending");
            drop(long);
        });
    }

    #[test]
    fn an_executor_that_stopped_with_timeouts_pending_leaves_the_next_one_a_working_sweeper() {
        // Two executors, one after the other, on this thread: the first stops while its sweeper
        // sleeps towards a 10 s deadline.
        run(async {
            let _pending = glommio::spawn_local(expiry(Duration::from_secs(10))).detach();
            sleep(Duration::from_millis(5)).await;
        });
        let result = run(async {
            let short = async { expiry(Duration::from_millis(20)).await };
            let bound = async {
                sleep(Duration::from_secs(3)).await;
                Some(())
            };
            futures_lite::future::or(short, bound).await
        });
        assert_eq!(result, None, "the 20 ms timeout did not fire within 3 s");
    }

    #[test]
    fn many_timeouts_at_once_each_end_their_own_way() {
        run(async {
            let tasks: Vec<_> = (0..200u64)
                .map(|i| {
                    glommio::spawn_local(async move {
                        if i % 2 == 0 {
                            timeout(Duration::from_millis(15), std::future::pending::<u64>()).await
                        } else {
                            timeout(Duration::from_secs(10), async move {
                                sleep(Duration::from_millis(i % 7)).await;
                                i
                            })
                            .await
                        }
                    })
                })
                .collect();
            for (i, task) in tasks.into_iter().enumerate() {
                let expected = if i % 2 == 0 { None } else { Some(i as u64) };
                assert_eq!(task.await, expected, "timeout {i}");
            }
            assert_eq!(pending_deadlines(), 0);
        });
    }
}
