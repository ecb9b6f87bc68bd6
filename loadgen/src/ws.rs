//! The client half of WebSocket (RFC 6455), sans IO: the upgrade request, the check of the
//! server's `101` answer, masked frame writing and an incremental reader of (unmasked) server
//! frames that reassembles fragmented messages.
//!
//! Like [`crate::http`], this is deliberately independent of `pinion-net`'s codec (which has a
//! client role too): a load generator that shared the server's frame code would hide the
//! server's framing bugs instead of finding them. It is strict where a server could be wrong
//! (masked server frames, non-minimal lengths, reserved bits, bad UTF-8, wrong accept key) and
//! reports each violation as a [`FrameError`] or [`HandshakeError`].
//!
//! Nothing here refers to the rest of the crate, so `tests/ws_protocol.rs` includes the file
//! as it is.

use std::fmt;
use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

/// RFC 6455 §1.3: appended to the key before hashing it into `Sec-WebSocket-Accept`.
pub(crate) const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The longest `101` head accepted.
pub(crate) const HANDSHAKE_HEAD_BYTES_MAX: usize = 16 * 1024;
/// Largest frame payload, and largest reassembled message, accepted from a server.
pub(crate) const MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The close code loadgen sends.
pub(crate) const CLOSE_NORMAL: u16 = 1000;

/// `Sec-WebSocket-Key` for 16 random bytes (base64, 24 characters).
pub(crate) fn key_from(random: [u8; 16]) -> String {
    BASE64.encode(random)
}

/// The `Sec-WebSocket-Accept` a server must answer to `key`: base64 of SHA-1(key + GUID).
pub(crate) fn accept_for(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// The `GET` that opens a WebSocket at `target` (path and query), offering `protocols` (the
/// `Sec-WebSocket-Protocol` value, comma-separated, in order; empty for none). `headers` are
/// added as given. No extension is offered.
pub(crate) fn upgrade_request(
    target: &str,
    host: &str,
    key: &str,
    protocols: &str,
    headers: &[(String, String)],
) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    out.push_str("GET ");
    out.push_str(target);
    out.push_str(" HTTP/1.1\r\nhost: ");
    out.push_str(host);
    out.push_str("\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\n");
    out.push_str("sec-websocket-key: ");
    out.push_str(key);
    out.push_str("\r\n");
    if !protocols.is_empty() {
        out.push_str("sec-websocket-protocol: ");
        out.push_str(protocols);
        out.push_str("\r\n");
    }
    for (name, value) in headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Why the server's answer to the upgrade is not a valid WebSocket handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    /// The head is over [`HANDSHAKE_HEAD_BYTES_MAX`].
    HeadTooLarge,
    /// Not `HTTP/1.1 SSS ...`, or a header line without a colon.
    Malformed,
    /// An HTTP status other than 101 (the upgrade was refused).
    Status(u16),
    /// `Upgrade: websocket` is missing.
    NoUpgrade,
    /// `Connection: Upgrade` is missing.
    NoConnectionUpgrade,
    /// `Sec-WebSocket-Accept` is missing or does not match the key.
    BadAccept,
    /// The selected subprotocol (if any) is not the one required.
    Protocol(Option<String>),
    /// The server selected an extension, though none was offered.
    Extension(String),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::HeadTooLarge => write!(
                f,
                "the handshake response head exceeds {HANDSHAKE_HEAD_BYTES_MAX} bytes"
            ),
            HandshakeError::Malformed => f.write_str("malformed handshake response"),
            HandshakeError::Status(status) => {
                write!(f, "upgrade refused with HTTP {status} (expected 101)")
            }
            HandshakeError::NoUpgrade => f.write_str("101 without `upgrade: websocket`"),
            HandshakeError::NoConnectionUpgrade => f.write_str("101 without `connection: upgrade`"),
            HandshakeError::BadAccept => {
                f.write_str("101 with a missing or wrong sec-websocket-accept")
            }
            HandshakeError::Protocol(None) => f.write_str("101 selects no subprotocol"),
            HandshakeError::Protocol(Some(protocol)) => {
                write!(f, "101 selects subprotocol `{protocol}`")
            }
            HandshakeError::Extension(extension) => write!(
                f,
                "101 selects extension `{extension}`, though none was offered"
            ),
        }
    }
}

/// Checks the server's answer to an upgrade sent with a key whose accept value is
/// `expected_accept`. `Ok(None)` while the head is incomplete; `Ok(Some(len))` once a valid `101`
/// head of `len` bytes is at the start of `buf` (frames may follow it in `buf`). The selected
/// subprotocol must be `protocol` (`None`: the server must select none).
pub(crate) fn check_handshake(
    buf: &[u8],
    expected_accept: &str,
    protocol: Option<&str>,
) -> Result<Option<usize>, HandshakeError> {
    let Some(head_len) = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
    else {
        if buf.len() > HANDSHAKE_HEAD_BYTES_MAX {
            return Err(HandshakeError::HeadTooLarge);
        }
        return Ok(None);
    };
    if head_len > HANDSHAKE_HEAD_BYTES_MAX {
        return Err(HandshakeError::HeadTooLarge);
    }
    let head = std::str::from_utf8(&buf[..head_len - 4]).map_err(|_| HandshakeError::Malformed)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .filter(|code| code.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or(HandshakeError::Malformed)?;
    if status != 101 {
        return Err(HandshakeError::Status(status));
    }
    let mut upgrade = false;
    let mut connection = false;
    let mut accept_ok = false;
    let mut selected: Option<String> = None;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(HandshakeError::Malformed)?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= value
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept_ok = value == expected_accept;
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            selected = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") && !value.is_empty() {
            return Err(HandshakeError::Extension(value.to_string()));
        }
    }
    if !upgrade {
        return Err(HandshakeError::NoUpgrade);
    }
    if !connection {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    if !accept_ok {
        return Err(HandshakeError::BadAccept);
    }
    if selected.as_deref() != protocol {
        return Err(HandshakeError::Protocol(selected));
    }
    Ok(Some(head_len))
}

/// Frame opcodes (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// Appends one final frame carrying `payload`, masked with `mask` as every client frame must be
/// (RFC 6455 §5.3), with the minimal length encoding.
pub(crate) fn write_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode.bits());
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Appends a close frame with `code` and `reason` (cut to fit a control frame).
pub(crate) fn write_close(out: &mut Vec<u8>, code: u16, reason: &str, mask: [u8; 4]) {
    let mut payload = [0u8; 125];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    let mut reason_len = reason.len().min(123);
    while !reason.is_char_boundary(reason_len) {
        reason_len -= 1;
    }
    payload[2..2 + reason_len].copy_from_slice(&reason.as_bytes()[..reason_len]);
    write_frame(out, Opcode::Close, &payload[..2 + reason_len], mask);
}

/// XORs `bytes` with the repeating `mask` (masking and unmasking are the same operation).
pub(crate) fn apply_mask(bytes: &mut [u8], mask: [u8; 4]) {
    for (byte, m) in bytes.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

/// A violation of RFC 6455 by the server's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    ReservedBits,
    UnknownOpcode(u8),
    /// A server frame with the mask bit set (RFC 6455 §5.1: the client must fail).
    Masked,
    FragmentedControl,
    ControlTooLong,
    NonMinimalLength,
    /// The most significant bit of a 64-bit length is set.
    LengthMsb,
    /// A frame or a reassembled message over [`MESSAGE_BYTES_MAX`].
    TooLarge,
    /// A continuation frame with no message to continue.
    UnexpectedContinuation,
    /// A new data frame while a fragmented message is unfinished.
    ExpectedContinuation,
    InvalidUtf8,
    /// A close payload of one byte, an invalid close code, or a reason that is not UTF-8.
    BadClose,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::ReservedBits => f.write_str("frame with a reserved bit set"),
            FrameError::UnknownOpcode(bits) => write!(f, "frame with unknown opcode {bits:#x}"),
            FrameError::Masked => f.write_str("masked frame from the server"),
            FrameError::FragmentedControl => f.write_str("fragmented control frame"),
            FrameError::ControlTooLong => f.write_str("control frame payload over 125 bytes"),
            FrameError::NonMinimalLength => f.write_str("frame length not minimally encoded"),
            FrameError::LengthMsb => f.write_str("64-bit frame length with the top bit set"),
            FrameError::TooLarge => {
                write!(f, "frame or message over {MESSAGE_BYTES_MAX} bytes")
            }
            FrameError::UnexpectedContinuation => f.write_str("continuation frame out of place"),
            FrameError::ExpectedContinuation => {
                f.write_str("new data frame inside a fragmented message")
            }
            FrameError::InvalidUtf8 => f.write_str("text message is not valid UTF-8"),
            FrameError::BadClose => f.write_str("malformed close frame"),
        }
    }
}

/// A frame's header: what [`parse_frame_head`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHead {
    pub(crate) fin: bool,
    pub(crate) opcode: Opcode,
    pub(crate) header_len: usize,
    pub(crate) payload_len: usize,
}

impl FrameHead {
    pub(crate) fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Parses the header of a server frame at the start of `buf`; `Ok(None)` until it is complete.
pub(crate) fn parse_frame_head(buf: &[u8]) -> Result<Option<FrameHead>, FrameError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(FrameError::UnknownOpcode(b0 & 0x0F))?;
    let fin = b0 & 0x80 != 0;
    if opcode.is_control() && !fin {
        return Err(FrameError::FragmentedControl);
    }
    let Some(&b1) = buf.get(1) else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() && len7 > 125 {
        return Err(FrameError::ControlTooLong);
    }
    let (payload_len, header_len) = match len7 {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            let len = u16::from_be_bytes([bytes[0], bytes[1]]);
            if len < 126 {
                return Err(FrameError::NonMinimalLength);
            }
            (u64::from(len), 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
            if len >> 63 != 0 {
                return Err(FrameError::LengthMsb);
            }
            if len <= u64::from(u16::MAX) {
                return Err(FrameError::NonMinimalLength);
            }
            (len, 10)
        }
        len => (u64::from(len), 2),
    };
    let payload_len = usize::try_from(payload_len)
        .ok()
        .filter(|&len| len <= MESSAGE_BYTES_MAX)
        .ok_or(FrameError::TooLarge)?;
    Ok(Some(FrameHead {
        fin,
        opcode,
        header_len,
        payload_len,
    }))
}

/// What kind of message [`Reader::next`] completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageKind {
    /// A text message (valid UTF-8).
    Text,
    Binary,
    Ping,
    Pong,
    Close,
}

/// Where a completed message's payload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Payload {
    /// In the buffer given to [`Reader::next`], at this range.
    InBuffer(Range<usize>),
    /// In the reader's reassembly buffer: [`Reader::assembled`].
    Assembled,
}

/// One step of [`Reader::next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// The buffer does not hold a whole frame; when its header was read, `frame_len` is the size
    /// the whole frame needs (the buffer must be able to hold it).
    NeedMore { frame_len: Option<usize> },
    /// A non-final fragment was consumed into the reassembly buffer; call again.
    Fragment { consumed: usize },
    /// A complete message ends `consumed` bytes into the buffer.
    Message {
        consumed: usize,
        kind: MessageKind,
        payload: Payload,
    },
}

/// Turns server frames into messages: data messages (reassembled when fragmented, text checked
/// for UTF-8) and control frames (which may come between fragments).
#[derive(Debug, Default)]
pub(crate) struct Reader {
    /// The fragments so far of an unfinished data message.
    fragments: Vec<u8>,
    /// The opcode of the unfinished message, if one is.
    fragmented: Option<Opcode>,
    /// The last call completed a message in `fragments`; it is cleared on the next call.
    assembled: bool,
}

impl Reader {
    pub(crate) fn new() -> Reader {
        Reader::default()
    }

    /// The payload of the message the last [`Reader::next`] completed with
    /// [`Payload::Assembled`].
    pub(crate) fn assembled(&self) -> &[u8] {
        &self.fragments
    }

    /// Reads the next frame at the start of `buf`.
    pub(crate) fn next(&mut self, buf: &[u8]) -> Result<Next, FrameError> {
        if self.assembled {
            self.assembled = false;
            self.fragments.clear();
        }
        let Some(head) = parse_frame_head(buf)? else {
            return Ok(Next::NeedMore { frame_len: None });
        };
        let frame_len = head.frame_len();
        if buf.len() < frame_len {
            return Ok(Next::NeedMore {
                frame_len: Some(frame_len),
            });
        }
        let range = head.header_len..frame_len;
        let payload = &buf[range.clone()];
        let kind = match head.opcode {
            Opcode::Ping => MessageKind::Ping,
            Opcode::Pong => MessageKind::Pong,
            Opcode::Close => {
                close_parts(payload)?;
                MessageKind::Close
            }
            Opcode::Text | Opcode::Binary => {
                if self.fragmented.is_some() {
                    return Err(FrameError::ExpectedContinuation);
                }
                if !head.fin {
                    self.fragmented = Some(head.opcode);
                    self.fragments.extend_from_slice(payload);
                    return Ok(Next::Fragment {
                        consumed: frame_len,
                    });
                }
                if head.opcode == Opcode::Text {
                    std::str::from_utf8(payload).map_err(|_| FrameError::InvalidUtf8)?;
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                }
            }
            Opcode::Continuation => {
                let Some(opcode) = self.fragmented else {
                    return Err(FrameError::UnexpectedContinuation);
                };
                if self.fragments.len() + payload.len() > MESSAGE_BYTES_MAX {
                    return Err(FrameError::TooLarge);
                }
                self.fragments.extend_from_slice(payload);
                if !head.fin {
                    return Ok(Next::Fragment {
                        consumed: frame_len,
                    });
                }
                self.fragmented = None;
                self.assembled = true;
                let kind = if opcode == Opcode::Text {
                    std::str::from_utf8(&self.fragments).map_err(|_| FrameError::InvalidUtf8)?;
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                return Ok(Next::Message {
                    consumed: frame_len,
                    kind,
                    payload: Payload::Assembled,
                });
            }
        };
        Ok(Next::Message {
            consumed: frame_len,
            kind,
            payload: Payload::InBuffer(range),
        })
    }
}

/// The status code and reason of a close payload; `None` when it is empty (no status).
pub(crate) fn close_parts(payload: &[u8]) -> Result<Option<(u16, &str)>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::BadClose),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::BadClose)?;
            if valid {
                Ok(Some((code, reason)))
            } else {
                Err(FrameError::BadClose)
            }
        }
    }
}
