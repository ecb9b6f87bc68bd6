//! HTTP/1.1: an incremental zero-copy request parser ([`parse_head`]), an in-place chunked body
//! decoder ([`ChunkedDecoder`]) and a response writer ([`Response`]).
//!
//! The pieces are independent of sockets so they can be tested and benchmarked byte-by-byte;
//! [`crate::server::serve`] glues them to a glommio connection.

mod chunked;
mod parse;
mod response;

pub use chunked::{CHUNK_LINE_BYTES_MAX, ChunkedDecoder, Dechunked};
pub use parse::{
    BodyKind, Error, Head, Header, Limits, Method, Progress, Request, find_head_end, parse_head,
};
pub use response::{CONTINUE_RESPONSE, Response, reason_phrase};

/// Empties a header `Vec` and hands its allocation back with a new borrow lifetime.
///
/// The connection loop parses every request into the same `Vec<Header>`, but each request's
/// headers borrow a different state of the read buffer, so the `Vec`'s type changes lifetime
/// from one request to the next. The `Vec` is emptied and re-collected through a mapping iterator
/// that yields nothing (the closure never runs); the standard library's in-place collection reuses the allocation (same element
/// type layout), so no allocation happens on the hot path and no `unsafe` is needed.
pub fn recycle_headers<'x, 'y>(mut headers: Vec<Header<'x>>) -> Vec<Header<'y>> {
    headers.clear();
    headers
        .into_iter()
        .map(|_| -> Header<'y> { Header::EMPTY })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycle_headers_keeps_the_allocation() {
        let buf = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n".to_vec();
        let mut headers: Vec<Header<'_>> = Vec::with_capacity(16);
        let ptr = headers.as_ptr() as usize;
        assert!(matches!(
            parse_head(&buf, &mut headers, &Limits::default()),
            Ok(Progress::Complete(_))
        ));
        let stored: Vec<Header<'static>> = recycle_headers(headers);
        assert!(stored.is_empty());
        assert_eq!(stored.capacity(), 16);
        assert_eq!(
            stored.as_ptr() as usize,
            ptr,
            "in-place collect must reuse the buffer"
        );
        drop(buf);
        let again: Vec<Header<'_>> = recycle_headers(stored);
        assert_eq!(again.as_ptr() as usize, ptr);
    }

    #[test]
    fn find_head_end_agrees_with_the_parser() {
        let cases: &[(&[u8], Option<usize>)] = &[
            (b"", None),
            (b"GET / HTTP/1.1\r\n", None),
            (b"GET / HTTP/1.1\r\n\r", None),
            (b"GET / HTTP/1.1\r\n\r\n", Some(18)),
            (b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", Some(18)),
            (b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody", Some(24)),
            (b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", Some(22)),
            (b"\r\n\r\n", None),
            (b"\r\n\r\n\r", None),
            (b"GET / HTTP/1.1\n\n", None),
        ];
        for &(input, expected) in cases {
            assert_eq!(
                find_head_end(input, 0),
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            // Resuming from any position a previous, unsuccessful scan could have reached (up
            // to the start of the terminating CRLF CRLF) gives the same answer.
            let last_from = expected.map_or(input.len(), |end| end - 4);
            for from in 0..=last_from {
                assert_eq!(find_head_end(input, from), expected);
            }
            if let Some(end) = expected {
                let mut headers = Vec::new();
                match parse_head(input, &mut headers, &Limits::default()) {
                    Ok(Progress::Complete(head)) => assert_eq!(head.len, end),
                    other => panic!("{other:?}"),
                }
            }
        }
    }
}
