use super::*;

/// Feeds `input` in pieces of `step` bytes the way the load loop does (keeping unconsumed bytes)
/// and returns every response with its body.
fn read_all(
    input: &[u8],
    step: usize,
    head_request: bool,
) -> Result<Vec<(Response, Vec<u8>)>, ParseError> {
    let mut reader = ResponseReader::new(head_request);
    let mut pending: Vec<u8> = Vec::new();
    let mut body = Vec::new();
    let mut out = Vec::new();
    for piece in input.chunks(step.max(1)) {
        pending.extend_from_slice(piece);
        loop {
            let (consumed, step) = reader.advance(&pending, &mut body)?;
            pending.drain(..consumed);
            match step {
                Step::Done(response) => out.push((response, std::mem::take(&mut body))),
                Step::NeedMore => break,
            }
        }
    }
    if let Some(response) = reader.finish_at_eof() {
        out.push((response, std::mem::take(&mut body)));
    }
    Ok(out)
}

fn ok(status: u16, keep_alive: bool) -> Response {
    Response { status, keep_alive }
}

#[test]
fn content_length_every_split() {
    let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello";
    for step in 1..=input.len() {
        let got = read_all(input, step, false).unwrap();
        assert_eq!(got, vec![(ok(200, true), b"hello".to_vec())], "step {step}");
    }
}

#[test]
fn pipelined_responses_in_one_buffer() {
    let input = b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\naHTTP/1.1 500 Internal Server Error\r\ncontent-length: 2\r\n\r\nbbHTTP/1.1 204 No Content\r\n\r\n";
    for step in [1, 7, input.len()] {
        let got = read_all(input, step, false).unwrap();
        let statuses: Vec<_> = got.iter().map(|(r, b)| (r.status, b.clone())).collect();
        assert_eq!(
            statuses,
            vec![(200, b"a".to_vec()), (500, b"bb".to_vec()), (204, vec![])]
        );
    }
}

#[test]
fn chunked_with_extensions_and_trailers() {
    let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=v\r\nhello\r\nA\r\n, world!!!\r\n0\r\nx-trailer: 1\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
    for step in 1..=input.len() {
        let got = read_all(input, step, false).unwrap();
        assert_eq!(
            got,
            vec![
                (ok(200, true), b"hello, world!!!".to_vec()),
                (ok(200, true), vec![])
            ],
            "step {step}"
        );
    }
}

#[test]
fn chunked_overrides_content_length() {
    let input = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
    assert_eq!(
        read_all(input, 3, false).unwrap(),
        vec![(ok(200, true), b"hi".to_vec())]
    );
}

#[test]
fn malformed_chunks_are_errors() {
    for input in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhiX\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1234567890abcdef0\r\n",
    ] {
        assert_eq!(read_all(input, input.len(), false), Err(ParseError::Chunk));
    }
}

#[test]
fn interim_responses_are_skipped() {
    let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(
        read_all(input, 5, false).unwrap(),
        vec![(ok(201, true), vec![])]
    );
}

#[test]
fn head_request_has_no_body() {
    let input = b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n";
    assert_eq!(
        read_all(input, 4, true).unwrap(),
        vec![(ok(200, true), vec![])]
    );
}

#[test]
fn keep_alive_rules() {
    let close = b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(
        read_all(close, 64, false).unwrap(),
        vec![(ok(200, false), vec![])]
    );
    let old = b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(
        read_all(old, 64, false).unwrap(),
        vec![(ok(200, false), vec![])]
    );
    let old_ka = b"HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(
        read_all(old_ka, 64, false).unwrap(),
        vec![(ok(200, true), vec![])]
    );
}

#[test]
fn body_until_close() {
    let input = b"HTTP/1.1 200 OK\r\n\r\nstreamed until the end";
    let got = read_all(input, 6, false).unwrap();
    assert_eq!(
        got,
        vec![(ok(200, false), b"streamed until the end".to_vec())]
    );
}

#[test]
fn malformed_heads_are_errors() {
    let cases: [(&[u8], ParseError); 5] = [
        (b"HTTP/2 200 OK\r\n\r\n", ParseError::StatusLine),
        (b"HTTP/1.1 20 OK\r\n\r\n", ParseError::StatusLine),
        (
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            ParseError::Header,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\n",
            ParseError::ContentLength,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            ParseError::ContentLength,
        ),
    ];
    for (input, error) in cases {
        assert_eq!(
            read_all(input, input.len(), false),
            Err(error),
            "{}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn oversized_head_is_an_error() {
    let mut input = b"HTTP/1.1 200 OK\r\n".to_vec();
    while input.len() <= HEAD_BYTES_MAX {
        input.extend_from_slice(b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert_eq!(read_all(&input, 4096, false), Err(ParseError::HeadTooLarge));
}

#[test]
fn request_bytes() {
    let headers = vec![("content-type".to_string(), "application/json".to_string())];
    let got = build_request("POST", "/a/b", "h:1", &headers, b"{}");
    assert_eq!(
        got,
        b"POST /a/b HTTP/1.1\r\nhost: h:1\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
    );
    assert_eq!(
        build_request("GET", "/", "h", &[], b""),
        b"GET / HTTP/1.1\r\nhost: h\r\n\r\n"
    );
    let own_host = vec![("Host".to_string(), "other".to_string())];
    assert_eq!(
        build_request("PUT", "/", "h", &own_host, b""),
        b"PUT / HTTP/1.1\r\nHost: other\r\ncontent-length: 0\r\n\r\n"
    );
}
