//! Tests of the in-place chunked decoder: valid bodies (extensions, trailers, leftovers),
//! every violation with its status, and incremental decoding at every split.

use pinion_net::http::{CHUNK_LINE_BYTES_MAX, ChunkedDecoder, Dechunked, Error, Limits};

fn limits(body_bytes_max: usize, header_bytes_max: usize) -> Limits {
    Limits {
        body_bytes_max,
        header_bytes_max,
        ..Limits::default()
    }
}

/// Feeds `raw` to a decoder the way the connection loop does: bytes arrive `step` at a time,
/// are appended after the region the previous call left, and the region is shortened to the
/// length the decoder reports. Returns the body and the bytes after it, or the error, or
/// `Ok(None)` when the input ran out before the body ended.
/// The decoded body and the bytes after it, `None` when the input ended first, or the error.
type Outcome = Result<Option<(Vec<u8>, Vec<u8>)>, Error>;

fn feed(raw: &[u8], step: usize, limits: &Limits) -> Outcome {
    let mut decoder = ChunkedDecoder::new(limits);
    let mut region: Vec<u8> = Vec::new();
    let mut fed = 0;
    while fed < raw.len() {
        let n = step.min(raw.len() - fed);
        region.extend_from_slice(&raw[fed..fed + n]);
        fed += n;
        match decoder.decode(&mut region)? {
            Dechunked::Partial { len } => {
                assert!(len <= region.len());
                region.truncate(len);
                assert!(decoder.decoded_len() <= len);
            }
            Dechunked::Complete { body_len, len } => {
                region.truncate(len);
                let mut rest = region.split_off(body_len);
                rest.extend_from_slice(&raw[fed..]);
                return Ok(Some((region, rest)));
            }
        }
    }
    Ok(None)
}

/// Decodes `raw` with every step size and every two-piece split, asserting all agree.
fn decode_everywhere(raw: &[u8], limits: &Limits) -> Outcome {
    let whole = feed(raw, raw.len().max(1), limits);
    for step in 1..raw.len() {
        assert_eq!(
            feed(raw, step, limits),
            whole,
            "step {step} of {:?}",
            String::from_utf8_lossy(raw)
        );
    }
    for split in 0..=raw.len() {
        let mut decoder = ChunkedDecoder::new(limits);
        let mut region = raw[..split].to_vec();
        let first = decoder.decode(&mut region);
        let result = match first {
            Err(e) => Err(e),
            Ok(Dechunked::Complete { body_len, len }) => {
                region.truncate(len);
                let mut rest = region.split_off(body_len);
                rest.extend_from_slice(&raw[split..]);
                Ok(Some((region, rest)))
            }
            Ok(Dechunked::Partial { len }) => {
                region.truncate(len);
                region.extend_from_slice(&raw[split..]);
                match decoder.decode(&mut region) {
                    Err(e) => Err(e),
                    Ok(Dechunked::Complete { body_len, len }) => {
                        region.truncate(len);
                        let rest = region.split_off(body_len);
                        Ok(Some((region, rest)))
                    }
                    Ok(Dechunked::Partial { .. }) => Ok(None),
                }
            }
        };
        assert_eq!(
            result,
            whole,
            "split {split} of {:?}",
            String::from_utf8_lossy(raw)
        );
    }
    whole
}

#[test]
fn valid_chunked_bodies_decode_in_place_at_every_split() {
    let cases: &[(&[u8], &[u8], &[u8])] = &[
        (b"5\r\nhello\r\n0\r\n\r\n", b"hello", b""),
        (b"0\r\n\r\n", b"", b""),
        (
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            b"hello world",
            b"",
        ),
        (
            b"A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n",
            b"0123456789abcdefghij",
            b"",
        ),
        (b"000003\r\nabc\r\n000\r\n\r\n", b"abc", b""),
        (b"3;name=value\r\nabc\r\n0;last\r\n\r\n", b"abc", b""),
        (
            b"3 ; name=\"quoted; value\"\r\nabc\r\n0\r\n\r\n",
            b"abc",
            b"",
        ),
        (b"3\t;x\r\nabc\r\n0\r\n\r\n", b"abc", b""),
        (
            b"3\r\nabc\r\n0\r\nExpires: never\r\nX-Trailer: a b\r\n\r\n",
            b"abc",
            b"",
        ),
        (b"2\r\n\r\n\r\n0\r\n\r\n", b"\r\n", b""),
        (b"3\r\n0\r\n\r\n0\r\n\r\n", b"0\r\n", b""),
        // Bytes after the body (a pipelined request) are kept, right after the body.
        (
            b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"abc",
            b"GET / HTTP/1.1\r\n\r\n",
        ),
        (b"0\r\n\r\nXYZ", b"", b"XYZ"),
    ];
    let limits = Limits::default();
    for &(raw, body, rest) in cases {
        let got = decode_everywhere(raw, &limits);
        assert_eq!(
            got,
            Ok(Some((body.to_vec(), rest.to_vec()))),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn incomplete_chunked_bodies_stay_partial() {
    let limits = Limits::default();
    for raw in [
        &b""[..],
        b"5",
        b"5\r",
        b"5\r\nhel",
        b"5\r\nhello",
        b"5\r\nhello\r\n",
        b"5\r\nhello\r\n0\r\n",
        b"5\r\nhello\r\n0\r\nTrailer: x\r\n",
        b"5\r\nhello\r\n0\r\n\r",
    ] {
        assert_eq!(
            decode_everywhere(raw, &limits),
            Ok(None),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn invalid_chunked_bodies_are_rejected() {
    let limits = limits(100, 64);
    let long_ext = [
        &b"1;"[..],
        &vec![b'x'; CHUNK_LINE_BYTES_MAX],
        b"\r\na\r\n0\r\n\r\n",
    ]
    .concat();
    let long_trailer = [&b"0\r\nX: "[..], &[b'v'; 70][..], b"\r\n\r\n"].concat();
    let cases: Vec<(Vec<u8>, Error)> = vec![
        (b"\r\n".to_vec(), Error::BadRequest),
        (b"x\r\n".to_vec(), Error::BadRequest),
        (b";ext\r\n".to_vec(), Error::BadRequest),
        (b" 5\r\nhello\r\n0\r\n\r\n".to_vec(), Error::BadRequest),
        (b"-5\r\n".to_vec(), Error::BadRequest),
        (b"0x5\r\n".to_vec(), Error::BadRequest),
        (b"5\nhello\r\n0\r\n\r\n".to_vec(), Error::BadRequest),
        (b"5\r\rhello".to_vec(), Error::BadRequest),
        (b"5\r\nhelloX\r\n0\r\n\r\n".to_vec(), Error::BadRequest),
        (b"5\r\nhelloX\n0\r\n\r\n".to_vec(), Error::BadRequest),
        (b"5\r\nhello\rX0\r\n\r\n".to_vec(), Error::BadRequest),
        (b"5\r\nhello\r\n0\rX\r\n".to_vec(), Error::BadRequest),
        (b"5\r\nhello\r\n0\r\n\rX".to_vec(), Error::BadRequest),
        (b"5\r\nhello\n0\r\n\r\n".to_vec(), Error::BadRequest),
        (b"5\r\nhello\r\r".to_vec(), Error::BadRequest),
        (
            b"5;a\x00b\r\nhello\r\n0\r\n\r\n".to_vec(),
            Error::BadRequest,
        ),
        (b"5;a\nb\r\nhello\r\n0\r\n\r\n".to_vec(), Error::BadRequest),
        (b"0\r\n\n".to_vec(), Error::BadRequest),
        (b"0\r\nX: a\n\r\n".to_vec(), Error::BadRequest),
        (b"0\r\n X: a\r\n\r\n".to_vec(), Error::BadRequest),
        (b"0\r\nX: a\r\n\tfold\r\n\r\n".to_vec(), Error::BadRequest),
        (b"0\r\nX a\r\n\r\n".to_vec(), Error::BadRequest),
        (b"0\r\nX: a\x00\r\n\r\n".to_vec(), Error::BadRequest),
        (b"0\r\n\r\r".to_vec(), Error::BadRequest),
        (long_ext, Error::BadRequest),
        // Sizes: one chunk over the limit, the running total over the limit, and overflow.
        (b"65\r\n".to_vec(), Error::ContentTooLarge),
        (
            [&b"64\r\n"[..], &[b'a'; 100][..], b"\r\n1\r\n"].concat(),
            Error::ContentTooLarge,
        ),
        (
            b"ffffffffffffffffffffffffffffffff\r\n".to_vec(),
            Error::ContentTooLarge,
        ),
        (long_trailer, Error::HeaderFieldsTooLarge),
    ];
    for (raw, expected) in cases {
        assert_eq!(
            decode_everywhere(&raw, &limits),
            Err(expected),
            "{:?}",
            String::from_utf8_lossy(&raw)
        );
    }
}

#[test]
fn body_limit_is_inclusive() {
    let limits = limits(100, 64);
    let at_max = [
        &b"32\r\n"[..],
        &[b'a'; 50][..],
        b"\r\n32\r\n",
        &[b'b'; 50][..],
        b"\r\n0\r\n\r\n",
    ]
    .concat();
    let got = decode_everywhere(&at_max, &limits).map(|r| r.map(|(body, _)| body.len()));
    assert_eq!(got, Ok(Some(100)));
    // Leading zeros do not count against anything but the line length.
    let zeros =
        [&b"0000000000000000000000000000000000000000000000003\r\nabc\r\n0\r\n\r\n"[..]].concat();
    assert_eq!(
        decode_everywhere(&zeros, &limits),
        Ok(Some((b"abc".to_vec(), Vec::new())))
    );
}

#[test]
fn decoded_body_never_needs_more_room_than_one_pending_line() {
    // 1-byte chunks carry 5 bytes of framing per data byte; after each call the region must
    // hold only the decoded body plus an incomplete line, not the framing already consumed.
    let mut raw = Vec::new();
    for b in b"abcdefghijklmnopqrstuvwxyz" {
        raw.extend_from_slice(b"1\r\n");
        raw.push(*b);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let limits = Limits::default();
    let mut decoder = ChunkedDecoder::new(&limits);
    let mut region = Vec::new();
    for (i, &b) in raw.iter().enumerate() {
        region.push(b);
        match decoder.decode(&mut region) {
            Ok(Dechunked::Partial { len }) => {
                region.truncate(len);
                assert!(region.len() <= decoder.decoded_len() + 5, "byte {i}");
            }
            Ok(Dechunked::Complete { body_len, len }) => {
                assert_eq!(i, raw.len() - 1);
                assert_eq!(len, body_len);
                assert_eq!(&region[..body_len], b"abcdefghijklmnopqrstuvwxyz");
                return;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    panic!("never completed");
}
