//! A small blocking WebSocket client (RFC 6455) for the end-to-end tests: the upgrade
//! handshake (checked `Sec-WebSocket-Accept`), masked client frames, and a strict reader of
//! server frames (unmasked, no reserved bits, minimal 7/16/64-bit lengths, valid close
//! payloads; fragmented messages reassembled).
//!
//! Deliberately independent of `pinion-net`'s codec, so the server is checked by another
//! implementation. SHA-1 and base64 are written out here because the test crate has no
//! dependencies for them. Every read has a deadline, so a test never hangs on a silent server.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::Reply;

/// How long [`Ws::read`] waits for a frame before failing the test.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// RFC 6455 §1.3: appended to the key before hashing it into `Sec-WebSocket-Accept`.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A message or control frame from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    /// The close code (`None` for an empty close payload) and reason.
    Close(Option<u16>, String),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

/// What waiting for the next frame produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Frame(Frame),
    /// Nothing complete arrived in time.
    Timeout,
    /// The server closed the TCP connection (end of stream or reset).
    Eof,
}

/// One WebSocket client connection.
pub struct Ws {
    stream: TcpStream,
    /// Received bytes not yet decoded.
    buffer: Vec<u8>,
    /// A fragmented message being reassembled: its opcode and the payload so far.
    partial: Option<(u8, Vec<u8>)>,
}

impl Ws {
    /// Opens a WebSocket at `path` offering `protocols` (the raw `Sec-WebSocket-Protocol`
    /// value, e.g. `"rivet,rivet_encoding.json"`; `None` for no such field) and asserts the
    /// server switched protocols.
    pub fn connect(addr: SocketAddr, path: &str, protocols: Option<&str>) -> (Reply, Ws) {
        let (reply, ws) = Ws::open(addr, path, protocols, &[]);
        assert_eq!(
            reply.status,
            101,
            "upgrade of {path} refused: {} {:?}",
            reply.text(),
            reply.headers
        );
        (reply, ws)
    }

    /// Sends the upgrade request for `path` immediately followed by `extra` (e.g. masked
    /// frames) in one write, then reads the response head (and a body, if it is not a 101).
    /// A 101 is checked: `upgrade`, `connection` and the accept key.
    pub fn open(
        addr: SocketAddr,
        path: &str,
        protocols: Option<&str>,
        extra: &[u8],
    ) -> (Reply, Ws) {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        let mut ws = Ws {
            stream,
            buffer: Vec::new(),
            partial: None,
        };
        let key = base64(&random_bytes::<16>());
        let mut bytes = upgrade_request(path, &key, protocols);
        bytes.extend_from_slice(extra);
        ws.write_raw(&bytes);
        let reply = ws.read_head();
        if reply.status == 101 {
            assert_eq!(
                reply
                    .header("upgrade")
                    .map(str::to_ascii_lowercase)
                    .as_deref(),
                Some("websocket"),
                "{reply:?}"
            );
            assert!(
                reply
                    .header("connection")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")),
                "{reply:?}"
            );
            assert_eq!(
                reply.header("sec-websocket-accept"),
                Some(accept_for(&key).as_str()),
                "{reply:?}"
            );
        }
        (reply, ws)
    }

    /// Reads the HTTP response to the upgrade request; bytes after its head stay buffered.
    fn read_head(&mut self) -> Reply {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = response
                .parse(&self.buffer)
                .expect("a valid HTTP response head")
            {
                let status = response.code.unwrap();
                let headers: Vec<(String, String)> = response
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let length: usize = if status == 101 {
                    0
                } else {
                    headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                        .map_or(0, |(_, v)| v.parse().expect("numeric content-length"))
                };
                if self.buffer.len() >= head_len + length {
                    let body = self.buffer[head_len..head_len + length].to_vec();
                    self.buffer.drain(..head_len + length);
                    return Reply {
                        status,
                        headers,
                        body,
                    };
                }
            }
            match self.fill(deadline) {
                Next::Timeout => panic!(
                    "no complete upgrade response within {READ_TIMEOUT:?}: {:?}",
                    String::from_utf8_lossy(&self.buffer)
                ),
                Next::Eof => panic!(
                    "connection closed before the upgrade response was complete: {:?}",
                    String::from_utf8_lossy(&self.buffer)
                ),
                Next::Frame(_) => {}
            }
        }
    }

    /// Sends raw bytes.
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends one masked frame.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.write_raw(&client_frame(fin, opcode, payload));
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(true, OP_TEXT, text.as_bytes());
    }

    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.send_frame(true, OP_BINARY, bytes);
    }

    pub fn send_ping(&mut self, payload: &[u8]) {
        self.send_frame(true, OP_PING, payload);
    }

    /// Sends a close frame with `code` and `reason`. A write error is ignored: the server may
    /// already have closed the connection.
    pub fn send_close(&mut self, code: u16, reason: &str) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        let _ = self
            .stream
            .write_all(&client_frame(true, OP_CLOSE, &payload));
    }

    /// Ends the TCP connection without a close frame.
    pub fn shutdown(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// The next frame; fails the test if none arrives within [`READ_TIMEOUT`] or the
    /// connection ends.
    pub fn read(&mut self) -> Frame {
        match self.next(READ_TIMEOUT) {
            Next::Frame(frame) => frame,
            other => panic!(
                "expected a frame, got {other:?} (buffered: {:?})",
                String::from_utf8_lossy(&self.buffer)
            ),
        }
    }

    /// The next frame, which must be a text frame.
    pub fn read_text(&mut self) -> String {
        match self.read() {
            Frame::Text(text) => text,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next frame, which must be a text frame holding JSON.
    pub fn read_json(&mut self) -> serde_json::Value {
        let text = self.read_text();
        serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("frame is not JSON ({error}): {text:?}"))
    }

    /// Asserts that nothing arrives for `wait`.
    pub fn expect_silence(&mut self, wait: Duration) {
        match self.next(wait) {
            Next::Timeout => {}
            other => panic!("expected nothing for {wait:?}, got {other:?}"),
        }
    }

    /// Reads the server's close frame, echoes it (as a client completing the closing
    /// handshake does) and waits for the server to end the TCP connection. Returns the close
    /// code and reason.
    pub fn expect_close(&mut self) -> (Option<u16>, String) {
        let (code, reason) = match self.read() {
            Frame::Close(code, reason) => (code, reason),
            other => panic!("expected a close frame, got {other:?}"),
        };
        match code {
            Some(code) => self.send_close(code, ""),
            None => {
                let _ = self.stream.write_all(&client_frame(true, OP_CLOSE, &[]));
            }
        }
        self.expect_eof();
        (code, reason)
    }

    /// Asserts that the server ends the TCP connection (within [`READ_TIMEOUT`]) without
    /// sending anything more.
    pub fn expect_eof(&mut self) {
        match self.next(READ_TIMEOUT) {
            Next::Eof => {}
            other => panic!("expected the connection to end, got {other:?}"),
        }
    }

    /// Waits at most `wait` for the next complete frame (reassembling fragmented messages).
    pub fn next(&mut self, wait: Duration) -> Next {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(frame) = self.decode() {
                return Next::Frame(frame);
            }
            match self.fill(deadline) {
                Next::Frame(_) => {}
                end => {
                    if end == Next::Eof {
                        assert!(
                            self.buffer.is_empty() && self.partial.is_none(),
                            "connection ended inside a frame or message: {:?}",
                            self.buffer
                        );
                    }
                    return end;
                }
            }
        }
    }

    /// Reads once, before `deadline`. `Next::Frame` (with a dummy frame) means bytes arrived.
    fn fill(&mut self, deadline: Instant) -> Next {
        let now = Instant::now();
        if now >= deadline {
            return Next::Timeout;
        }
        self.stream
            .set_read_timeout(Some(deadline - now))
            .expect("set a read timeout");
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Next::Eof,
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Next::Frame(Frame::Ping(Vec::new()))
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Next::Timeout
            }
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                Next::Eof
            }
            Err(error) => panic!("read: {error}"),
        }
    }

    /// Decodes one message or control frame from the buffer, if a complete one is there.
    fn decode(&mut self) -> Option<Frame> {
        loop {
            let (fin, opcode, payload) = self.decode_raw()?;
            match opcode {
                OP_CLOSE => {
                    assert!(fin, "fragmented close frame");
                    return Some(match payload.len() {
                        0 => Frame::Close(None, String::new()),
                        1 => panic!("close frame with a 1-byte payload"),
                        _ => {
                            let code = u16::from_be_bytes([payload[0], payload[1]]);
                            let reason = String::from_utf8(payload[2..].to_vec())
                                .expect("close reason is UTF-8");
                            Frame::Close(Some(code), reason)
                        }
                    });
                }
                OP_PING => {
                    assert!(fin, "fragmented ping");
                    return Some(Frame::Ping(payload));
                }
                OP_PONG => {
                    assert!(fin, "fragmented pong");
                    return Some(Frame::Pong(payload));
                }
                OP_TEXT | OP_BINARY => {
                    assert!(
                        self.partial.is_none(),
                        "new data frame inside a fragmented message"
                    );
                    if fin {
                        return Some(data_frame(opcode, payload));
                    }
                    self.partial = Some((opcode, payload));
                }
                OP_CONTINUATION => {
                    let (first, mut so_far) =
                        self.partial.take().expect("continuation without a start");
                    so_far.extend_from_slice(&payload);
                    if fin {
                        return Some(data_frame(first, so_far));
                    }
                    self.partial = Some((first, so_far));
                }
                other => panic!("reserved opcode {other:#x}"),
            }
        }
    }

    /// One raw frame (fin, opcode, payload) from the buffer, checked as RFC 6455 requires of a
    /// server frame.
    fn decode_raw(&mut self) -> Option<(bool, u8, Vec<u8>)> {
        let b = &self.buffer;
        if b.len() < 2 {
            return None;
        }
        let fin = b[0] & 0x80 != 0;
        assert_eq!(b[0] & 0x70, 0, "reserved bits set: {:#x}", b[0]);
        let opcode = b[0] & 0x0F;
        assert_eq!(b[1] & 0x80, 0, "the server masked a frame");
        let (len, header) = match b[1] & 0x7F {
            126 => {
                if b.len() < 4 {
                    return None;
                }
                let len = u16::from_be_bytes([b[2], b[3]]) as u64;
                assert!(len >= 126, "non-minimal 16-bit length {len}");
                (len, 4)
            }
            127 => {
                if b.len() < 10 {
                    return None;
                }
                let len = u64::from_be_bytes(b[2..10].try_into().unwrap());
                assert!(len > 0xFFFF, "non-minimal 64-bit length {len}");
                assert_eq!(len >> 63, 0, "64-bit length with the high bit set");
                (len, 10)
            }
            short => (u64::from(short), 2),
        };
        if opcode >= 0x8 {
            assert!(len <= 125, "control frame of {len} bytes");
        }
        let len = usize::try_from(len).unwrap();
        if b.len() < header + len {
            return None;
        }
        let payload = b[header..header + len].to_vec();
        self.buffer.drain(..header + len);
        Some((fin, opcode, payload))
    }
}

fn data_frame(opcode: u8, payload: Vec<u8>) -> Frame {
    if opcode == OP_TEXT {
        Frame::Text(String::from_utf8(payload).expect("text frame is UTF-8"))
    } else {
        Frame::Binary(payload)
    }
}

/// The upgrade request for `path` with `key`, offering `protocols` if given.
pub fn upgrade_request(path: &str, key: &str, protocols: Option<&str>) -> Vec<u8> {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: {key}\r\n"
    );
    if let Some(protocols) = protocols {
        request.push_str(&format!("sec-websocket-protocol: {protocols}\r\n"));
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// One client frame: masked with a fresh random key, with the minimal length encoding.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(if fin { 0x80 } else { 0 } | opcode);
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = random_bytes::<4>();
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

/// A masked text frame.
pub fn text_frame(text: &str) -> Vec<u8> {
    client_frame(true, OP_TEXT, text.as_bytes())
}

/// The `Sec-WebSocket-Accept` a server must answer to `key`: base64 of SHA-1(key + GUID).
pub fn accept_for(key: &str) -> String {
    base64(&sha1(format!("{key}{WEBSOCKET_GUID}").as_bytes()))
}

/// JavaScript's `encodeURIComponent`: every byte of the UTF-8 form is `%XX`-escaped except
/// `A-Z a-z 0-9 - _ . ! ~ * ' ( )`.
pub fn encode_uri_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `N` pseudo-random bytes (xorshift64*, seeded from the clock and a counter): for masking
/// keys and handshake keys, which need to vary, not to be secret.
fn random_bytes<const N: usize>() -> [u8; N] {
    static COUNTER: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut state = nanos ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    if state == 0 {
        state = 1;
    }
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    out
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3F) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// SHA-1 (FIPS 180-4), for the accept key only.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in message.chunks(64) {
        let mut w = [0u32; 80];
        for (word, bytes) in w.iter_mut().zip(block.chunks(4)) {
            *word = u32::from_be_bytes(bytes.try_into().unwrap());
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, word) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let next = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*word);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = next;
        }
        for (total, part) in h.iter_mut().zip([a, b, c, d, e]) {
            *total = total.wrapping_add(part);
        }
    }
    let mut out = [0u8; 20];
    for (bytes, word) in out.chunks_mut(4).zip(h) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    out
}
