//! Differential test against `httparse` (a dev-dependency used only as an oracle).
//!
//! Thousands of deterministic pseudo-random requests, valid and mutated, are fed to both
//! parsers. Where both accept, they must agree on method, target, version, header names and
//! values, and head length. We must never accept what `httparse` rejects. Where `httparse`
//! accepts and we do not, the input must fall into one of our documented, intentional
//! strictness choices:
//!
//! * bare-LF line endings (we require CRLF; `httparse` accepts LF),
//! * a request-target that is not origin-form (or `*` for OPTIONS), or that contains non-ASCII
//!   bytes (`httparse` accepts any visible byte including obs-text),
//! * body framing we reject (`Content-Length`/`Transfer-Encoding` values and combinations,
//!   which `httparse` does not interpret at all).

mod common;

use common::Rng;
use pinion_net::http::{Error, Header, Limits, Progress, parse_head};

const TCHARS: &[u8] =
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const PATH_CHARS: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@%/";
const INTERESTING: &[u8] = b"\r\n \t:/?*\x00\x7f\x80\xff\x01\x0bH1.;,\"";

fn token(rng: &mut Rng, max: usize) -> Vec<u8> {
    let len = 1 + rng.below(max);
    (0..len).map(|_| *rng.pick(TCHARS)).collect()
}

fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.chance(5) {
        out.extend_from_slice(b"\r\n");
    }
    let methods: &[&[u8]] = &[
        b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH",
    ];
    let method = if rng.chance(80) {
        rng.pick(methods).to_vec()
    } else {
        token(rng, 10)
    };
    out.extend_from_slice(&method);
    out.push(b' ');
    if method == b"OPTIONS" && rng.chance(30) {
        out.push(b'*');
    } else {
        out.push(b'/');
        for _ in 0..rng.below(30) {
            out.push(*rng.pick(PATH_CHARS));
        }
        if rng.chance(40) {
            out.push(b'?');
            for _ in 0..rng.below(30) {
                out.push(*rng.pick(PATH_CHARS));
                if rng.chance(5) {
                    out.push(b'?');
                }
            }
        }
    }
    out.extend_from_slice(if rng.chance(80) {
        b" HTTP/1.1\r\n"
    } else {
        b" HTTP/1.0\r\n"
    });
    let mut has_length = false;
    for _ in 0..rng.below(12) {
        match rng.below(10) {
            0 => out.extend_from_slice(b"Host: example.com:8080"),
            1 => out.extend_from_slice(b"Content-Type: application/json"),
            2 if !has_length => {
                has_length = true;
                out.extend_from_slice(b"Content-Length: ");
                out.extend_from_slice(rng.below(5000).to_string().as_bytes());
            }
            2 | 3 => {
                let connection: &[u8] = if rng.chance(50) {
                    b"Connection: close"
                } else {
                    b"Connection: keep-alive"
                };
                out.extend_from_slice(connection);
            }
            _ => {
                out.extend_from_slice(&token(rng, 16));
                out.push(b':');
                for _ in 0..rng.below(3) {
                    out.push(*rng.pick(b" \t"));
                }
                for _ in 0..rng.below(40) {
                    let b = match rng.below(20) {
                        0 => b'\t',
                        1 => 0x80 + rng.below(128) as u8,
                        _ => 0x20 + rng.below(95) as u8,
                    };
                    out.push(b);
                }
                for _ in 0..rng.below(3) {
                    out.push(*rng.pick(b" \t"));
                }
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        if input.is_empty() {
            return;
        }
        let at = rng.below(input.len());
        match rng.below(7) {
            0 => input[at] = rng.next() as u8,
            1 => input[at] = *rng.pick(INTERESTING),
            2 => input.insert(at, *rng.pick(INTERESTING)),
            3 => {
                input.remove(at);
            }
            4 => input.truncate(at),
            5 => {
                // Turn one CRLF into a bare LF.
                if let Some(p) = input.windows(2).skip(at).position(|w| w == b"\r\n") {
                    input.remove(at + p);
                }
            }
            _ => {
                let end = (at + 1 + rng.below(8)).min(input.len());
                let dup = input[at..end].to_vec();
                input.splice(at..at, dup);
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    minor: u8,
    headers: Vec<(String, Vec<u8>)>,
    len: usize,
}

fn ours(input: &[u8], limits: &Limits) -> Result<Option<Seen>, Error> {
    let mut headers: Vec<Header<'_>> = Vec::new();
    Ok(match parse_head(input, &mut headers, limits)? {
        Progress::Partial => None,
        Progress::Complete(h) => Some(Seen {
            method: h.request.method_str.to_owned(),
            target: h.request.target.to_owned(),
            minor: h.request.minor_version,
            headers: h
                .request
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
            len: h.len,
        }),
    })
}

fn theirs(input: &[u8]) -> Result<Option<Seen>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    Ok(match req.parse(input)? {
        httparse::Status::Partial => None,
        httparse::Status::Complete(len) => Some(Seen {
            method: req.method.unwrap_or_default().to_owned(),
            target: req.path.unwrap_or_default().to_owned(),
            minor: req.version.unwrap_or(9),
            headers: req
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
            len,
        }),
    })
}

/// Whether `input`, which `httparse` accepted (as `seen`, if complete), is something we reject
/// on purpose (see the module docs).
fn documented_stricter(input: &[u8], seen: Option<&Seen>) -> bool {
    let head = match seen {
        Some(s) => &input[..s.len],
        None => input,
    };
    let bare_lf = head
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'));
    if bare_lf {
        return true;
    }
    match seen {
        Some(s) => {
            let origin = s.target.starts_with('/') || (s.target == "*" && s.method == "OPTIONS");
            let framing = s.headers.iter().any(|(n, _)| {
                n.eq_ignore_ascii_case("content-length")
                    || n.eq_ignore_ascii_case("transfer-encoding")
            });
            !origin || !s.target.is_ascii() || framing
        }
        // A partial head that httparse still accepts as a prefix: the same reasons apply to
        // the request line seen so far.
        None => {
            let start = head
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(head.len());
            let head = &head[start..];
            let line_end = head.iter().position(|&b| b == b'\r').unwrap_or(head.len());
            let line = &head[..line_end];
            let mut parts = line.splitn(3, |&b| b == b' ');
            let _method = parts.next();
            match parts.next() {
                Some(target) => {
                    !target.is_ascii()
                        || !(target.starts_with(b"/") || target == b"*" || target.is_empty())
                        || (target == b"*" && !line.starts_with(b"OPTIONS "))
                }
                None => false,
            }
        }
    }
}

#[test]
fn agrees_with_httparse_on_generated_requests() {
    let limits = Limits {
        request_line_max: 1 << 20,
        header_count_max: 64,
        header_bytes_max: 1 << 20,
        body_bytes_max: 1 << 20,
    };
    let mut rng = Rng(0x5EED_0000_4104);
    let cases = 30_000;
    let (mut both_complete, mut stricter, mut both_rejected, mut both_partial) = (0, 0, 0, 0);
    let mut valid_unmutated = 0;
    for case in 0..cases {
        let mut input = generate(&mut rng);
        let mutated = rng.chance(60);
        if mutated {
            mutate(&mut rng, &mut input);
        }
        let ours = ours(&input, &limits);
        let theirs = theirs(&input);
        let what = || format!("case {case}: {:?}", String::from_utf8_lossy(&input));

        if !mutated {
            valid_unmutated += 1;
            // Everything the generator makes unmutated is valid for both.
            assert!(matches!(ours, Ok(Some(_))), "{}: {ours:?}", what());
            // Prove incrementality on a sample: every proper prefix is Partial.
            if case % 50 == 0 {
                for k in 0..input.len() {
                    assert!(
                        matches!(self::ours(&input[..k], &limits), Ok(None)),
                        "{} prefix {k}",
                        what()
                    );
                }
            }
        }

        match (&ours, &theirs) {
            (Ok(Some(a)), Ok(Some(b))) => {
                assert_eq!(a, b, "{}", what());
                both_complete += 1;
            }
            (Ok(None), Ok(None)) => both_partial += 1,
            (Err(_), Err(_)) => both_rejected += 1,
            // We must never be more lenient than httparse.
            (Ok(Some(_)), _) => panic!("we accept what httparse does not: {} ({theirs:?})", what()),
            (Ok(None), Ok(Some(_))) => panic!("we wait for more than httparse: {}", what()),
            // We never see a valid prefix where httparse already sees an error: our errors are
            // reported at the first bad byte, as early as httparse's.
            (Ok(None), Err(e)) => panic!("we wait where httparse rejects ({e:?}): {}", what()),
            (Err(e), Ok(seen)) => {
                assert!(
                    documented_stricter(&input, seen.as_ref()),
                    "undocumented strictness ({e:?}): {}",
                    what()
                );
                stricter += 1;
            }
        }
    }
    println!(
        "{cases} cases: {both_complete} both complete, {both_partial} both partial, \
         {both_rejected} both rejected, {stricter} intentionally stricter; \
         {valid_unmutated} unmutated"
    );
    assert!(
        both_complete > cases / 3,
        "too few comparable cases: {both_complete}"
    );
    assert!(
        stricter > 0 && both_rejected > 0,
        "mutations should exercise the error paths"
    );
}

#[test]
fn documented_differences_are_real() {
    // Each of these is accepted by httparse and rejected by us, on purpose.
    let limits = Limits::default();
    for input in [
        &b"GET / HTTP/1.1\nHost: a\n\n"[..],
        b"GET http://example.com/ HTTP/1.1\r\n\r\n",
        b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
        b"GET * HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert!(
            matches!(theirs(input), Ok(Some(_))),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert!(
            ours(input, &limits).is_err(),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}
