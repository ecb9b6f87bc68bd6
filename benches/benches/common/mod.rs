//! Shared by the benchmark binaries: a counting global allocator, so that a benchmark can report
//! how many heap allocations one operation makes.
//!
//! Each binary that uses it declares `#[global_allocator] static ALLOC: Counting = Counting;`.
//! Counting is off while criterion times an operation (the allocator then costs one relaxed
//! load over the system allocator), and on only inside [`allocations_per_op`], which runs the
//! operation a fixed number of times on its own and divides. The counters are process-wide, so
//! work the operation causes on other threads (an executor on another core, a server shard) is
//! counted too; nothing else runs meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting allocations (and reallocations, which may move) and the
/// bytes requested while [`allocations_per_op`] measures.
pub struct Counting;

fn record(size: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees are ours; counting touches only atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: `ptr` came from `System` through this allocator, with this layout; the
        // caller upholds `GlobalAlloc::realloc`'s contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Heap allocations (including reallocations) and bytes requested per operation: `op` is called
/// `calls` times, each call doing `ops_per_call` operations (1, or a batch when the operation
/// runs on another thread), after one uncounted warm-up call (which fills thread-local caches and
/// scratch buffers, as a running server has long done).
pub fn allocations_per_op<R>(
    calls: u64,
    ops_per_call: u64,
    mut op: impl FnMut() -> R,
) -> (f64, f64) {
    std::hint::black_box(op());
    ALLOCATIONS.store(0, Ordering::SeqCst);
    BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..calls {
        std::hint::black_box(op());
    }
    COUNTING.store(false, Ordering::SeqCst);
    let n = (calls * ops_per_call) as f64;
    (
        ALLOCATIONS.load(Ordering::SeqCst) as f64 / n,
        BYTES.load(Ordering::SeqCst) as f64 / n,
    )
}

/// Prints one benchmark's allocations per operation (see [`allocations_per_op`]), e.g.
/// `json_values/parse_action_body/small: allocations/op: 2 (96 B/op)`.
pub fn report_allocations<R>(name: &str, calls: u64, ops_per_call: u64, op: impl FnMut() -> R) {
    let (allocations, bytes) = allocations_per_op(calls, ops_per_call, op);
    println!(
        "{name}: allocations/op: {} ({} B/op)",
        fmt(allocations),
        fmt(bytes)
    );
}

/// Whole numbers without decimals, fractions (averages over many calls) with two.
fn fmt(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}
