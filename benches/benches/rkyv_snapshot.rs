//! rkyv 0.8 snapshots of representative actor states: what persisting and reloading an actor's
//! state costs if it is archived with rkyv (the durable store writes state snapshots as opaque
//! bytes; this is the cost of producing and reading such bytes).
//!
//! States: `counter` is `{count: i64}`; `chat` is `{messages: Vec<String>}` with 100 messages of
//! 40 bytes each.
//!
//! * `to_bytes/*`: `rkyv::to_bytes` into a fresh `AlignedVec` (the high-level API: arena from the
//!   thread's pool, output buffer grown as it goes).
//! * `to_bytes_in/*`: `rkyv::api::high::to_bytes_in` into a cleared, reused `AlignedVec`, as a
//!   store that keeps its write buffer would.
//! * `access/*`: `rkyv::access` (validates the whole archive with bytecheck, then hands out a
//!   reference into the bytes, no copy), plus reading one field.
//! * `access_unchecked/*`: the same without validation, the zero-copy floor (for bytes the
//!   process wrote itself).
//! * `from_bytes/*`: `rkyv::from_bytes`: validate and deserialize back into an owned state.
//!
//! How to read it: `time` is ns per snapshot; `thrpt` is snapshot bytes per second. Before each
//! benchmark it prints the snapshot size and `allocations/op`.
//!
//! ```sh
//! cargo bench -p pinion-benches --bench rkyv_snapshot -- --measurement-time 3 --warm-up-time 1
//! ```

mod common;

use std::hint::black_box;

use common::{Counting, report_allocations};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rkyv::rancor::Error;
use rkyv::util::AlignedVec;

#[global_allocator]
static ALLOC: Counting = Counting;

/// The counter actor's state.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
struct Counter {
    count: i64,
}

/// A chat room's state: its recent messages.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
struct Chat {
    messages: Vec<String>,
}

const CHAT_MESSAGES: usize = 100;
const MESSAGE_BYTES: usize = 40;

fn chat() -> Chat {
    Chat {
        messages: (0..CHAT_MESSAGES)
            .map(|i| {
                let mut m = format!("msg {i:03}: hello from the chat room ");
                while m.len() < MESSAGE_BYTES {
                    m.push('.');
                }
                m.truncate(MESSAGE_BYTES);
                m
            })
            .collect(),
    }
}

fn counter_benches(c: &mut Criterion) {
    let state = Counter {
        count: 1_732_752_000,
    };
    let bytes = rkyv::to_bytes::<Error>(&state).expect("serializes");
    assert_eq!(
        rkyv::from_bytes::<Counter, Error>(&bytes).expect("valid"),
        state
    );
    println!("rkyv_snapshot/counter: snapshot {} bytes", bytes.len());

    let mut group = c.benchmark_group("rkyv_snapshot");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    let mut first = true;
    group.bench_function("to_bytes/counter", |b| {
        if std::mem::take(&mut first) {
            report_allocations("rkyv_snapshot/to_bytes/counter", 10_000, 1, || {
                rkyv::to_bytes::<Error>(&state).expect("serializes")
            });
        }
        b.iter(|| rkyv::to_bytes::<Error>(black_box(&state)).expect("serializes"))
    });
    let mut buf: AlignedVec = AlignedVec::new();
    let mut first = true;
    let mut reuse = move |state: &Counter| {
        let mut out = std::mem::take(&mut buf);
        out.clear();
        buf = rkyv::api::high::to_bytes_in::<_, Error>(state, out).expect("serializes");
        buf.len()
    };
    group.bench_function("to_bytes_in/counter", |b| {
        if std::mem::take(&mut first) {
            report_allocations("rkyv_snapshot/to_bytes_in/counter", 10_000, 1, || {
                reuse(&state)
            });
        }
        b.iter(|| reuse(black_box(&state)))
    });
    let mut first = true;
    group.bench_function("access/counter", |b| {
        if std::mem::take(&mut first) {
            report_allocations("rkyv_snapshot/access/counter", 10_000, 1, || {
                rkyv::access::<ArchivedCounter, Error>(&bytes)
                    .expect("valid")
                    .count
                    .to_native()
            });
        }
        b.iter(|| {
            rkyv::access::<ArchivedCounter, Error>(black_box(&bytes))
                .expect("valid")
                .count
                .to_native()
        })
    });
    group.bench_function("access_unchecked/counter", |b| {
        b.iter(|| {
            // SAFETY: `bytes` is `rkyv::to_bytes` of a `Counter`, validated by `from_bytes` above.
            let archived = unsafe { rkyv::access_unchecked::<ArchivedCounter>(black_box(&bytes)) };
            archived.count.to_native()
        })
    });
    let mut first = true;
    group.bench_function("from_bytes/counter", |b| {
        if std::mem::take(&mut first) {
            report_allocations("rkyv_snapshot/from_bytes/counter", 10_000, 1, || {
                rkyv::from_bytes::<Counter, Error>(&bytes).expect("valid")
            });
        }
        b.iter(|| rkyv::from_bytes::<Counter, Error>(black_box(&bytes)).expect("valid"))
    });
    group.finish();
}

fn chat_benches(c: &mut Criterion) {
    let state = chat();
    let bytes = rkyv::to_bytes::<Error>(&state).expect("serializes");
    assert_eq!(
        rkyv::from_bytes::<Chat, Error>(&bytes).expect("valid"),
        state
    );
    println!(
        "rkyv_snapshot/chat: {CHAT_MESSAGES} messages of {MESSAGE_BYTES} B = {} B of text, snapshot {} bytes",
        CHAT_MESSAGES * MESSAGE_BYTES,
        bytes.len()
    );

    let mut group = c.benchmark_group("rkyv_snapshot");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    let mut first = true;
    group.bench_function("to_bytes/chat", |b| {
        if std::mem::take(&mut first) {
            report_allocations("rkyv_snapshot/to_bytes/chat", 1_000, 1, || {
                rkyv::to_bytes::<Error>(&state).expect("serializes")
            });
        }
        b.iter(|| rkyv::to_bytes::<Error>(black_box(&state)).expect("serializes"))
    });
    let mut buf: AlignedVec = AlignedVec::new();
    let mut first = true;
    let mut reuse = move |state: &Chat| {
        let mut out = std::mem::take(&mut buf);
        out.clear();
        buf = rkyv::api::high::to_bytes_in::<_, Error>(state, out).expect("serializes");
        buf.len()
    };
    group.bench_function("to_bytes_in/chat", |b| {
        if std::mem::take(&mut first) {
            report_allocations("rkyv_snapshot/to_bytes_in/chat", 1_000, 1, || reuse(&state));
        }
        b.iter(|| reuse(black_box(&state)))
    });
    let len_sum =
        |archived: &ArchivedChat| -> usize { archived.messages.iter().map(|m| m.len()).sum() };
    let mut first = true;
    group.bench_function("access/chat", |b| {
        if std::mem::take(&mut first) {
            report_allocations("rkyv_snapshot/access/chat", 1_000, 1, || {
                rkyv::access::<ArchivedChat, Error>(&bytes)
                    .expect("valid")
                    .messages
                    .len()
            });
        }
        b.iter(|| {
            rkyv::access::<ArchivedChat, Error>(black_box(&bytes))
                .expect("valid")
                .messages
                .len()
        })
    });
    group.bench_function("access_unchecked/chat", |b| {
        b.iter(|| {
            // SAFETY: `bytes` is `rkyv::to_bytes` of a `Chat`, validated by `from_bytes` above.
            let archived = unsafe { rkyv::access_unchecked::<ArchivedChat>(black_box(&bytes)) };
            archived.messages.len()
        })
    });
    // Reading every message through the archive (no copy): what serving the history costs.
    group.bench_function("access_unchecked+read_all/chat", |b| {
        b.iter(|| {
            // SAFETY: as above.
            let archived = unsafe { rkyv::access_unchecked::<ArchivedChat>(black_box(&bytes)) };
            len_sum(archived)
        })
    });
    let mut first = true;
    group.bench_function("from_bytes/chat", |b| {
        if std::mem::take(&mut first) {
            report_allocations("rkyv_snapshot/from_bytes/chat", 1_000, 1, || {
                rkyv::from_bytes::<Chat, Error>(&bytes).expect("valid")
            });
        }
        b.iter(|| rkyv::from_bytes::<Chat, Error>(black_box(&bytes)).expect("valid"))
    });
    group.finish();
}

criterion_group!(benches, counter_benches, chat_benches);
criterion_main!(benches);
