//! The WebSocket codec of `pinion_net::ws`: what a shard pays per frame on a RivetKit
//! connection, without the socket.
//!
//! * `parse_frame/{64,4096}`: header parse and in-place unmasking of one masked client text
//!   frame (`ws::parse_frame`, server role) with a 64 B and a 4 KiB payload.
//! * `decode/{64,4096}`: the same frame through `ws::Assembler::decode`, what the connection loop
//!   calls: parse, unmask, sequencing checks and UTF-8 validation, yielding `Message::Text`.
//! * `write_text/{64,4096}`: encoding one server (unmasked) text frame with `ws::write_text`
//!   into a reused output buffer.
//!
//! How to read it: `time` is ns per frame; `thrpt` is payload bytes per second (headers not
//! counted). Before each benchmark it prints `allocations/op` (expected 0: the codec works in the
//! caller's buffers).
//!
//! Parsing unmasks in place, so the input changes with every iteration. Instead of copying a
//! fresh frame in each time (a memcpy that would be timed too), the frame is masked with a key
//! whose bytes are all below 0x80 and the payload is ASCII: unmasking again re-masks, and both the
//! plain and the masked payload are ASCII, hence valid UTF-8, so every iteration does the same
//! work on the same bytes.
//!
//! ```sh
//! cargo bench -p pinion-benches --bench ws_codec -- --measurement-time 3 --warm-up-time 1
//! ```

mod common;

use std::hint::black_box;

use common::{Counting, report_allocations};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pinion_net::ws::{
    Assembler, Limits, Message, Opcode, Progress, Role, parse_frame, write_frame_masked, write_text,
};

#[global_allocator]
static ALLOC: Counting = Counting;

/// Payload sizes: a small RPC frame and a large event.
const SIZES: [usize; 2] = [64, 4096];

/// A masking key whose bytes are < 0x80, so that masked ASCII stays ASCII (see the module docs).
const MASK: [u8; 4] = [0x37, 0x5a, 0x11, 0x6c];

/// `len` bytes of ASCII text shaped like a RivetKit action response.
fn text(len: usize) -> String {
    const UNIT: &str =
        r#"{"body":{"tag":"ActionResponse","val":{"id":["$BigInt","42"],"output":17}}}"#;
    UNIT.chars().cycle().take(len).collect()
}

/// A client frame (masked, final, text) carrying `payload`.
fn client_frame(payload: &str) -> Vec<u8> {
    let mut frame = Vec::new();
    write_frame_masked(&mut frame, true, Opcode::Text, payload.as_bytes(), MASK);
    frame
}

fn parse(buf: &mut [u8], limits: &Limits) -> usize {
    match parse_frame(buf, limits, Role::Server) {
        Ok(Progress::Complete(frame)) => frame.payload.len(),
        _ => unreachable!("the benchmark frame is valid and complete"),
    }
}

fn decode(assembler: &mut Assembler, buf: &mut [u8]) -> usize {
    match assembler.decode(buf) {
        Ok(Progress::Complete(decoded)) => match decoded.message {
            Some(Message::Text(text)) => text.len(),
            _ => unreachable!("the benchmark frame is one text message"),
        },
        _ => unreachable!("the benchmark frame is valid and complete"),
    }
}

fn ws_codec(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("ws_codec");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let payload = text(size);
        let mut frame = client_frame(&payload);

        let mut first = true;
        group.bench_function(BenchmarkId::new("parse_frame", size), |b| {
            if std::mem::take(&mut first) {
                report_allocations(&format!("ws_codec/parse_frame/{size}"), 10_000, 1, || {
                    parse(&mut frame, &limits)
                });
            }
            b.iter(|| parse(black_box(&mut frame), &limits))
        });

        let mut assembler = Assembler::new(&limits, Role::Server);
        let mut first = true;
        group.bench_function(BenchmarkId::new("decode", size), |b| {
            if std::mem::take(&mut first) {
                report_allocations(&format!("ws_codec/decode/{size}"), 10_000, 1, || {
                    decode(&mut assembler, &mut frame)
                });
            }
            b.iter(|| decode(&mut assembler, black_box(&mut frame)))
        });

        let mut out = Vec::with_capacity(size + 16);
        let mut first = true;
        group.bench_function(BenchmarkId::new("write_text", size), |b| {
            if std::mem::take(&mut first) {
                report_allocations(&format!("ws_codec/write_text/{size}"), 10_000, 1, || {
                    out.clear();
                    write_text(&mut out, &payload);
                    out.len()
                });
            }
            b.iter(|| {
                out.clear();
                write_text(&mut out, black_box(&payload));
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, ws_codec);
criterion_main!(benches);
