//! RivetKit's `$`-tagged JSON as the runtime reads and writes it (`pinion_runtime::value`), per
//! action call: the request body, the typed arguments, the output, and a connection frame.
//!
//! * `parse_action_body/{small,1k}`: parsing an action body in place with simd-json into an
//!   `ArgList` (the tape and the argument index). `small` is `{"args":[5]}`; `1k` is a ~1 KiB
//!   args array with strings, integers, floats, a bool and nested objects and arrays.
//! * `decode/{small,1k}`: turning a parsed `ArgList` into the action's typed arguments with
//!   `FromArgs` (a tuple, one `ArgList::decode` per argument), as `Actions::action` does:
//!   `(i64,)` and `(String, i64, Vec<Post>, Vec<f64>, bool)`. `decode/1k_value` decodes the same
//!   arguments into dynamic `Value`s instead (`ArgList::rest`, what variadic actions get).
//! * `parse+decode/{small,1k}`: both, i.e. the argument cost of one action call.
//! * `write_tagged/{int,1k_object}`: encoding an action's output into a reused buffer: an `i64`,
//!   and a struct whose JSON is ~1 KiB.
//! * `parse_to_server/action_request`: parsing one RivetKit connection frame
//!   `{"body":{"tag":"ActionRequest","val":{"id":["$BigInt","7"],"name":"increment","args":[5]}}}`,
//!   and `parse_to_server+decode` with its `(i64,)` arguments.
//!
//! How to read it: `time` is ns per operation; parse benchmarks also give `thrpt` in input bytes
//! per second. Each parse first copies the original body into a reused buffer (simd-json
//! unescapes in place, so the input must be restored), which is included and costs a few ns.
//! Before each benchmark it prints `allocations/op` and bytes requested per op (after one warm
//! call, so simd-json's per-thread scratch buffers already exist, as in a running shard).
//!
//! ```sh
//! cargo bench -p pinion-benches --bench json_values -- --measurement-time 3 --warm-up-time 1
//! ```

mod common;

use std::hint::black_box;

use common::{Counting, report_allocations};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pinion_runtime::value::{ArgList, ToServer, parse_action_body, parse_to_server, write_tagged};
use pinion_runtime::{FromArgs, Rest};
use serde::{Deserialize, Serialize};

#[global_allocator]
static ALLOC: Counting = Counting;

/// The most common action body: one small integer.
const SMALL_BODY: &[u8] = br#"{"args":[5]}"#;

/// A RivetKit connection frame calling `increment(5)`.
const ACTION_REQUEST: &[u8] =
    br#"{"body":{"tag":"ActionRequest","val":{"id":["$BigInt","7"],"name":"increment","args":[5]}}}"#;

/// A chat post, the nested object of the 1 KiB arguments.
#[derive(Serialize, Deserialize)]
struct Post {
    author: String,
    text: String,
    ts: i64,
    tags: Vec<String>,
    reply: Option<Quote>,
}

#[derive(Serialize, Deserialize)]
struct Quote {
    to: u64,
    quote: String,
}

/// The typed arguments of the 1 KiB body.
type BigArgs = (String, i64, Vec<Post>, Vec<f64>, bool);

/// The 1 KiB output object: the same data as a struct (a JSON object).
#[derive(Serialize)]
struct Snapshot {
    room: String,
    seq: i64,
    posts: Vec<Post>,
    scores: Vec<f64>,
    open: bool,
}

fn posts() -> Vec<Post> {
    (0..6)
        .map(|i| Post {
            author: format!("user-{i:02}"),
            text: format!("message {i}: the quick brown fox jumps over the lazy dog, twice"),
            ts: 1_732_752_000_000 + i * 1_337,
            tags: vec!["chat".into(), format!("t{i}")],
            reply: (i % 2 == 1).then(|| Quote {
                to: (i - 1) as u64,
                quote: "the quick brown fox".into(),
            }),
        })
        .collect()
}

fn scores() -> Vec<f64> {
    (0..8).map(|i| i as f64 * 1.25 + 0.5).collect()
}

/// `{"args":[...]}` of about 1 KiB, written by the runtime's own encoder.
fn big_body() -> Vec<u8> {
    let args: BigArgs = ("room-7f3a9c2e".into(), 42, posts(), scores(), true);
    let mut body = b"{\"args\":".to_vec();
    pinion_runtime::value::write_args(&mut body, &args).expect("serializable");
    body.push(b'}');
    assert!(
        (900..=1200).contains(&body.len()),
        "the 1k body is {} bytes",
        body.len()
    );
    body
}

/// Restores `input` into `buf` and parses it as an action body.
fn parse<'b>(buf: &'b mut Vec<u8>, input: &[u8]) -> ArgList<'b> {
    buf.clear();
    buf.extend_from_slice(input);
    parse_action_body(buf).expect("valid body")
}

fn parse_frame<'b>(buf: &'b mut Vec<u8>) -> ToServer<'b> {
    buf.clear();
    buf.extend_from_slice(ACTION_REQUEST);
    parse_to_server(buf).expect("valid frame")
}

fn json_values(c: &mut Criterion) {
    let big = big_body();
    let mut group = c.benchmark_group("json_values");

    // Parsing.
    for (name, input) in [("small", SMALL_BODY), ("1k", &big[..])] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        let mut buf = Vec::with_capacity(input.len());
        let mut first = true;
        group.bench_function(format!("parse_action_body/{name}"), |b| {
            if std::mem::take(&mut first) {
                report_allocations(
                    &format!("json_values/parse_action_body/{name} ({} B)", input.len()),
                    10_000,
                    1,
                    || parse(&mut buf, input).len(),
                );
            }
            b.iter(|| parse(&mut buf, black_box(input)).len())
        });
    }
    group.throughput(Throughput::Elements(1));

    // Decoding parsed arguments into typed tuples (and into Values).
    let mut small_buf = SMALL_BODY.to_vec();
    let small_args = parse_action_body(&mut small_buf).expect("valid body");
    let mut big_buf = big.clone();
    let big_args = parse_action_body(&mut big_buf).expect("valid body");
    let mut first = true;
    group.bench_function("decode/small", |b| {
        if std::mem::take(&mut first) {
            report_allocations("json_values/decode/small", 10_000, 1, || {
                <(i64,)>::from_args(&small_args).expect("decodes")
            });
        }
        b.iter(|| <(i64,)>::from_args(black_box(&small_args)).expect("decodes"))
    });
    let mut first = true;
    group.bench_function("decode/1k", |b| {
        if std::mem::take(&mut first) {
            report_allocations("json_values/decode/1k", 10_000, 1, || {
                BigArgs::from_args(&big_args).expect("decodes")
            });
        }
        b.iter(|| BigArgs::from_args(black_box(&big_args)).expect("decodes"))
    });
    let mut first = true;
    group.bench_function("decode/1k_value", |b| {
        if std::mem::take(&mut first) {
            report_allocations("json_values/decode/1k_value", 10_000, 1, || {
                Rest::from_args(&big_args).expect("decodes").0.len()
            });
        }
        b.iter(|| {
            Rest::from_args(black_box(&big_args))
                .expect("decodes")
                .0
                .len()
        })
    });

    // Both: the argument cost of one action call.
    let mut buf = Vec::with_capacity(SMALL_BODY.len());
    let mut first = true;
    group.bench_function("parse+decode/small", |b| {
        if std::mem::take(&mut first) {
            report_allocations("json_values/parse+decode/small", 10_000, 1, || {
                <(i64,)>::from_args(&parse(&mut buf, SMALL_BODY)).expect("decodes")
            });
        }
        b.iter(|| <(i64,)>::from_args(&parse(&mut buf, black_box(SMALL_BODY))).expect("decodes"))
    });
    let mut buf = Vec::with_capacity(big.len());
    let mut first = true;
    group.bench_function("parse+decode/1k", |b| {
        if std::mem::take(&mut first) {
            report_allocations("json_values/parse+decode/1k", 10_000, 1, || {
                BigArgs::from_args(&parse(&mut buf, &big)).expect("decodes")
            });
        }
        b.iter(|| BigArgs::from_args(&parse(&mut buf, black_box(&big))).expect("decodes"))
    });

    // Encoding outputs.
    let mut out = Vec::with_capacity(2048);
    let mut first = true;
    group.bench_function("write_tagged/int", |b| {
        if std::mem::take(&mut first) {
            report_allocations("json_values/write_tagged/int", 10_000, 1, || {
                out.clear();
                write_tagged(&mut out, &1_732_752_000_123i64).expect("serializable");
            });
        }
        b.iter(|| {
            out.clear();
            write_tagged(&mut out, black_box(&1_732_752_000_123i64)).expect("serializable");
            black_box(out.len())
        })
    });
    let snapshot = Snapshot {
        room: "room-7f3a9c2e".into(),
        seq: 42,
        posts: posts(),
        scores: scores(),
        open: true,
    };
    out.clear();
    write_tagged(&mut out, &snapshot).expect("serializable");
    let object_len = out.len();
    group.throughput(Throughput::Bytes(object_len as u64));
    let mut first = true;
    group.bench_function("write_tagged/1k_object", |b| {
        if std::mem::take(&mut first) {
            report_allocations(
                &format!("json_values/write_tagged/1k_object ({object_len} B)"),
                10_000,
                1,
                || {
                    out.clear();
                    write_tagged(&mut out, &snapshot).expect("serializable");
                },
            );
        }
        b.iter(|| {
            out.clear();
            write_tagged(&mut out, black_box(&snapshot)).expect("serializable");
            black_box(out.len())
        })
    });

    // A connection frame.
    group.throughput(Throughput::Bytes(ACTION_REQUEST.len() as u64));
    let mut buf = Vec::with_capacity(ACTION_REQUEST.len());
    let mut first = true;
    group.bench_function("parse_to_server/action_request", |b| {
        if std::mem::take(&mut first) {
            report_allocations(
                "json_values/parse_to_server/action_request",
                10_000,
                1,
                || matches!(parse_frame(&mut buf), ToServer::Action { .. }),
            );
        }
        b.iter(|| match parse_frame(black_box(&mut buf)) {
            ToServer::Action { id, .. } => id,
            ToServer::Subscription { .. } => unreachable!("an ActionRequest"),
        })
    });
    let mut first = true;
    group.bench_function("parse_to_server+decode/action_request", |b| {
        if std::mem::take(&mut first) {
            report_allocations(
                "json_values/parse_to_server+decode/action_request",
                10_000,
                1,
                || match parse_frame(&mut buf) {
                    ToServer::Action { args, .. } => <(i64,)>::from_args(&args).expect("decodes"),
                    ToServer::Subscription { .. } => unreachable!("an ActionRequest"),
                },
            );
        }
        b.iter(|| match parse_frame(black_box(&mut buf)) {
            ToServer::Action { args, .. } => <(i64,)>::from_args(&args).expect("decodes"),
            ToServer::Subscription { .. } => unreachable!("an ActionRequest"),
        })
    });
    group.finish();
}

criterion_group!(benches, json_values);
criterion_main!(benches);
