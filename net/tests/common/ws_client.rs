//! A tiny blocking WebSocket client for the tests: HTTP first, then WebSocket frames built and
//! parsed with the crate's codec (masked frames out, `Role::Client` parsing in), so every
//! assertion is on the exact frames a client receives.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use pinion_net::ws::{self, Opcode, Progress, Role};

use super::Resp;

/// One frame as the client received it.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: Opcode,
    pub payload: Vec<u8>,
}

/// A blocking client: HTTP first, then WebSocket frames; keeps unread bytes between reads.
pub struct Client {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    masks: u32,
}

/// The handshake key of RFC 6455 §1.3 and its accept value.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub fn upgrade_request(target: &str, protocols: Option<&str>) -> String {
    let protocols = protocols
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {target} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{protocols}\r\n"
    )
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            masks: 0x1234_5678,
        }
    }

    /// Connects, upgrades `target`, checks the 101 and reads the pushed `welcome`.
    pub fn open(addr: SocketAddr, target: &str, protocols: Option<&str>) -> (Client, Resp) {
        let mut c = Client::connect(addr);
        c.send(upgrade_request(target, protocols).as_bytes());
        let resp = c.response();
        assert_eq!(resp.status, 101, "{resp:?}");
        assert_eq!(resp.header("sec-websocket-accept"), Some(ACCEPT));
        assert_eq!(
            resp.header("upgrade").map(str::to_ascii_lowercase),
            Some("websocket".into())
        );
        assert_eq!(c.text(), "welcome");
        (c, resp)
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn next_mask(&mut self) -> [u8; 4] {
        self.masks = self
            .masks
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        self.masks.to_be_bytes()
    }

    /// One masked frame, as a client must send.
    pub fn encode(&mut self, fin: bool, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mask = self.next_mask();
        ws::write_frame_masked(&mut out, fin, opcode, payload, mask);
        out
    }

    pub fn send_frame(&mut self, fin: bool, opcode: Opcode, payload: &[u8]) {
        let frame = self.encode(fin, opcode, payload);
        self.send(&frame);
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(true, Opcode::Text, text.as_bytes());
    }

    pub fn send_close(&mut self, code: u16, reason: &str) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        self.send_frame(true, Opcode::Close, &payload);
    }

    /// Reads more bytes; returns false at EOF (a reset counts as EOF).
    pub fn read_more(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n > 0
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read failed (timeout = hang): {e}"),
        }
    }

    pub fn response(&mut self) -> Resp {
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            assert!(self.read_more(), "EOF inside a response head");
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).unwrap();
        self.buf.drain(..head_end);
        let mut resp = Resp::from_head(&head);
        let len = resp.content_length();
        while self.buf.len() < len {
            assert!(self.read_more(), "EOF inside a body");
        }
        resp.body = self.buf.drain(..len).collect();
        resp
    }

    /// Reads one frame (server frames are unmasked; the codec checks that).
    pub fn frame(&mut self) -> Frame {
        let limits = ws::Limits {
            frame_payload_bytes_max: 16 << 20,
            message_bytes_max: 16 << 20,
        };
        loop {
            match ws::parse_frame(&mut self.buf, &limits, Role::Client) {
                Ok(Progress::Complete(frame)) => {
                    let parsed = Frame {
                        fin: frame.fin,
                        opcode: frame.opcode,
                        payload: frame.payload.to_vec(),
                    };
                    let len = frame.len;
                    self.buf.drain(..len);
                    return parsed;
                }
                Ok(Progress::Partial) => assert!(self.read_more(), "EOF inside a frame"),
                Err(error) => panic!("server sent an invalid frame: {error}"),
            }
        }
    }

    pub fn text(&mut self) -> String {
        let frame = self.frame();
        assert!(frame.fin);
        assert_eq!(frame.opcode, Opcode::Text, "{frame:?}");
        String::from_utf8(frame.payload).unwrap()
    }

    pub fn binary(&mut self) -> Vec<u8> {
        let frame = self.frame();
        assert!(frame.fin);
        assert_eq!(frame.opcode, Opcode::Binary);
        frame.payload
    }

    /// Expects a close frame with `code`; returns its reason.
    pub fn expect_close(&mut self, code: u16) -> String {
        let frame = self.frame();
        assert_eq!(frame.opcode, Opcode::Close, "{frame:?}");
        let close = ws::parse_close_payload(&frame.payload)
            .unwrap()
            .expect("a close code");
        assert_eq!(close.code, code, "reason {:?}", close.reason);
        close.reason.to_string()
    }

    /// Asserts the server closed the connection with nothing more to say.
    pub fn expect_eof(&mut self) {
        assert!(
            !self.read_more() && self.buf.is_empty(),
            "expected EOF, got {:?}",
            self.buf
        );
    }
}
