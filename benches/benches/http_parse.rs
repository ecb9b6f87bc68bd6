//! Criterion benchmark of the HTTP request-head parser on a typical RivetKit action request,
//! reported as throughput in bytes so it can be compared with other parsers and across changes.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pinion_net::http::{BodyKind, Limits, Progress, find_head_end, parse_head};

/// What a RivetKit client sends to invoke an action: a POST to the gateway with ~6 headers and a
/// small JSON body.
const ACTION_REQUEST: &[u8] =
    b"POST /gateway/7f3a9c2e-51b4-4d0c-9e61-0b8f2d4a6c13/action/increment HTTP/1.1\r\n\
Host: 127.0.0.1:6420\r\n\
User-Agent: rivetkit-client/2.0.0\r\n\
Accept: application/json\r\n\
Content-Type: application/json\r\n\
X-RivetKit-Encoding: json\r\n\
Content-Length: 15\r\n\
\r\n\
{\"args\":[1,2]}\n";

fn parse_action(c: &mut Criterion) {
    let limits = Limits::default();
    let mut headers = Vec::with_capacity(limits.header_count_max);
    let mut group = c.benchmark_group("http_parse");
    group.throughput(Throughput::Bytes(ACTION_REQUEST.len() as u64));

    group.bench_function("parse_head/action_request", |b| {
        b.iter(|| {
            let input = black_box(ACTION_REQUEST);
            match parse_head(input, &mut headers, &limits) {
                Ok(Progress::Complete(head)) => {
                    debug_assert_eq!(head.body, BodyKind::Length(15));
                    black_box(head.len)
                }
                _ => unreachable!("the benchmark request is valid"),
            }
        })
    });

    // What the connection loop does per request: locate the end of the head, then parse it.
    group.bench_function("find_head_end+parse_head/action_request", |b| {
        b.iter(|| {
            let input = black_box(ACTION_REQUEST);
            let end = find_head_end(input, 0).unwrap_or(input.len());
            match parse_head(&input[..end], &mut headers, &limits) {
                Ok(Progress::Complete(head)) => black_box(head.request.headers.len()),
                _ => unreachable!("the benchmark request is valid"),
            }
        })
    });
    // Reference: the same head parsed by httparse (which does not interpret framing).
    group.bench_function("httparse_reference/action_request", |b| {
        b.iter(|| {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut slots);
            match req.parse(black_box(ACTION_REQUEST)) {
                Ok(httparse::Status::Complete(len)) => black_box(len),
                _ => unreachable!("the benchmark request is valid"),
            }
        })
    });
    group.finish();
}

criterion_group!(benches, parse_action);
criterion_main!(benches);
