//! The seam: every source of nondeterminism the runtime uses goes through this module.
//!
//! Clock, timers, task spawning and randomness are reached only through the functions here; the
//! cross-shard transport is [`crate::mailbox`] and the storage backend is the
//! [`pinion_storage::Store`] a shard is built with. A deterministic simulator (many shards driven on
//! one thread, TigerBeetle/FoundationDB style) replaces exactly these three places and nothing else.
//! Code elsewhere in the runtime must not call `std::time`, `glommio::spawn_local`,
//! `glommio::timer` or an RNG directly; `grep` for them outside this file is a review check.

use std::cell::Cell;
use std::future::Future;
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
/// completion (or until the shard stops) and its output is dropped.
pub fn spawn(future: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(future).detach();
}

/// Completes after `duration` on the shard's timer.
pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Runs `future` until it completes or `limit` passes; `None` on timeout (the future is dropped,
/// so it stops at its next await).
pub async fn timeout<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    let deadline = async {
        sleep(limit).await;
        None
    };
    futures_lite::future::or(async { Some(future.await) }, deadline).await
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
