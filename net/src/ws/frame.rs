//! Frames (RFC 6455 §5): the incremental zero-copy parser and the writers.
//!
//! [`parse_frame`] is a pure function of the bytes received so far, like
//! [`crate::http::parse_head`]: it keeps no state, returns [`Progress::Partial`] until the whole
//! frame is in the buffer, and then unmasks the payload in place and hands it out as a slice of
//! the caller's buffer. Until it returns `Complete` it only reads the buffer, so the caller can
//! call it again after every read; once it returns `Complete` the frame's bytes are unmasked and
//! the caller must consume them (parsing them again would unmask them twice).
//! [`parse_header`] is the same parse stopped after the header, so limits and sequencing rules
//! can be applied before the payload arrives, and so a caller can learn how many bytes the
//! frame needs.
//!
//! Errors are reported at the first violating byte: every prefix of an invalid frame parses as
//! `Partial` or as the same error, so how the bytes were split across reads never matters.
//!
//! # Strictness (deliberate, documented choices)
//!
//! * RSV1-3 must be zero (no extension is negotiated): 1002.
//! * Opcodes 3-7 and 0xB-0xF are reserved: 1002.
//! * The mask bit must match the role: a server requires it, a client forbids it: 1002.
//! * The payload length must use the minimal encoding (RFC 6455 §5.2 says it MUST): a 16-bit
//!   length below 126 or a 64-bit length below 65536 is rejected with 1002 rather than
//!   tolerated, because nothing legitimate sends it and accepting it only widens what a fuzzer
//!   or a smuggling attempt can reach. The most significant bit of a 64-bit length must be 0.
//! * Control frames (close, ping, pong) must have FIN set and at most
//!   [`CONTROL_PAYLOAD_BYTES_MAX`] bytes of payload: 1002, decided from the first two bytes.
//! * A close payload is empty or a 2-byte code followed by a UTF-8 reason. One byte is 1002
//!   (known from the header); a code [`is_valid_close_code`] refuses is 1002; a reason that is
//!   not UTF-8 is 1007.
//! * The payload length is checked against [`Limits::frame_payload_bytes_max`] as soon as the
//!   length field is complete (before the masking key and the payload): 1009.
//!
//! # Writers
//!
//! The writers append one frame to an output `Vec` (the connection loop flushes), always with the
//! minimal length encoding, unmasked as a server must send (a masked variant exists for client
//! roles: tests and load generators). They never produce a frame [`parse_frame`] would reject:
//! a control frame is always final and its payload is cut to [`CONTROL_PAYLOAD_BYTES_MAX`], a
//! close frame carries a sendable code or none, and its reason is cut at a char boundary.

use super::{Error, Limits, Progress, Role};

/// The longest frame header: 2 bytes, a 64-bit extended length and a 4-byte masking key.
pub const FRAME_HEADER_BYTES_MAX: usize = 14;

/// The largest payload of a control frame (close, ping, pong), fixed by RFC 6455 §5.5.
pub const CONTROL_PAYLOAD_BYTES_MAX: usize = 125;

/// The longest close reason: a control payload minus the 2-byte code.
pub const CLOSE_REASON_BYTES_MAX: usize = CONTROL_PAYLOAD_BYTES_MAX - 2;

/// 1000: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// 1001: the endpoint is going away (server shutting down, page navigated away).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// 1002: protocol error.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// 1003: a data type the endpoint cannot accept (e.g. binary where only text is understood).
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
/// 1007: data inconsistent with the message type (invalid UTF-8 in text).
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// 1008: a policy violation (generic, when no other code fits).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// 1009: a frame or message too big to process.
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;
/// 1011: the server met an unexpected condition.
pub const CLOSE_INTERNAL_ERROR: u16 = 1011;

/// Whether `code` may appear in a close frame on the wire.
///
/// Accepted: 1000-1003 and 1007-1011 (RFC 6455 §7.4.1), 1012-1014 (registered with IANA since:
/// service restart, try again later, bad gateway), 3000-3999 (registered by libraries and
/// frameworks) and 4000-4999 (private use). Refused: below 1000 (unused), 1004 (reserved),
/// 1005, 1006 and 1015 (reserved for reporting locally that no code was received, that the
/// connection dropped, and a TLS failure; never sent), the unassigned 1016-2999, and 5000 and up
/// (outside every range RFC 6455 defines).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A frame's opcode (RFC 6455 §5.2); the reserved values have no variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// 0x0: a later fragment of a text or binary message.
    Continuation,
    /// 0x1: the first (or only) frame of a text message.
    Text,
    /// 0x2: the first (or only) frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl Opcode {
    /// Maps the 4 opcode bits to an opcode, or `None` for a reserved value.
    pub fn from_bits(bits: u8) -> Option<Opcode> {
        match bits {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }

    /// The 4 opcode bits.
    pub fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (close, ping, pong): final, short, and allowed between
    /// the fragments of a message.
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A valid frame header (everything before the payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the last frame of its message.
    pub fin: bool,
    /// The opcode.
    pub opcode: Opcode,
    /// The masking key, present exactly when the role requires it.
    pub mask: Option<[u8; 4]>,
    /// Bytes the header occupies (2 to [`FRAME_HEADER_BYTES_MAX`]).
    pub header_len: usize,
    /// The payload length, already checked against [`Limits::frame_payload_bytes_max`].
    pub payload_len: usize,
}

impl FrameHeader {
    /// Bytes the whole frame occupies: the buffer must hold this many for [`parse_frame`] to
    /// complete. (The parser guarantees the sum does not overflow.)
    pub fn frame_len(&self) -> usize {
        self.header_len.saturating_add(self.payload_len)
    }
}

/// A complete, valid frame whose payload is unmasked in place in the caller's buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// FIN: this is the last frame of its message.
    pub fin: bool,
    /// The opcode.
    pub opcode: Opcode,
    /// The unmasked payload, a mutable slice of the caller's buffer (so text can be parsed in
    /// place, e.g. by simd-json). For a close frame it has been validated with
    /// [`parse_close_payload`].
    pub payload: &'a mut [u8],
    /// Bytes the frame occupied at the start of the buffer (header and payload): consume them.
    pub len: usize,
}

/// A close frame's status: the code and the (possibly empty) UTF-8 reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// The close code; always one [`is_valid_close_code`] accepts.
    pub code: u16,
    /// The reason, at most [`CLOSE_REASON_BYTES_MAX`] bytes when it came from a frame.
    pub reason: &'a str,
}

/// Parses a frame header from the start of `buf`.
///
/// Returns [`Progress::Partial`] when `buf` is a valid prefix of a header, the [`FrameHeader`]
/// once the header is complete (the payload need not have arrived), or the [`Error`] of the
/// first violation in byte order (see the module docs for the rules). Never panics.
pub fn parse_header(
    buf: &[u8],
    limits: &Limits,
    role: Role,
) -> Result<Progress<FrameHeader>, Error> {
    let Some(&b0) = buf.first() else {
        return Ok(Progress::Partial);
    };
    if b0 & 0x70 != 0 {
        return Err(Error::ReservedBits);
    }
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(Error::UnknownOpcode)?;
    let fin = b0 & 0x80 != 0;
    if opcode.is_control() && !fin {
        return Err(Error::FragmentedControl);
    }

    let Some(&b1) = buf.get(1) else {
        return Ok(Progress::Partial);
    };
    let masked = b1 & 0x80 != 0;
    match (role, masked) {
        (Role::Server, false) => return Err(Error::Unmasked),
        (Role::Client, true) => return Err(Error::Masked),
        _ => {}
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if usize::from(len7) > CONTROL_PAYLOAD_BYTES_MAX {
            return Err(Error::ControlTooLong);
        }
        if opcode == Opcode::Close && len7 == 1 {
            return Err(Error::CloseOneByte);
        }
    }

    let (payload_len, mut pos) = match len7 {
        126 => {
            let Some(&[hi, lo]) = buf.get(2..4) else {
                return Ok(Progress::Partial);
            };
            let n = u16::from_be_bytes([hi, lo]);
            if n < 126 {
                return Err(Error::NonMinimalLength);
            }
            (u64::from(n), 4)
        }
        127 => {
            let Some(&first) = buf.get(2) else {
                return Ok(Progress::Partial);
            };
            if first & 0x80 != 0 {
                return Err(Error::LengthMsb);
            }
            let Some(bytes) = buf.get(2..).and_then(|rest| rest.first_chunk::<8>()) else {
                return Ok(Progress::Partial);
            };
            let n = u64::from_be_bytes(*bytes);
            if n <= u64::from(u16::MAX) {
                return Err(Error::NonMinimalLength);
            }
            (n, 10)
        }
        n => (u64::from(n), 2),
    };
    let payload_len = usize::try_from(payload_len)
        .ok()
        .filter(|&n| n <= limits.frame_payload_bytes_max)
        .ok_or(Error::FrameTooLarge)?;

    let mask = if masked {
        let Some(key) = buf.get(pos..).and_then(|rest| rest.first_chunk::<4>()) else {
            return Ok(Progress::Partial);
        };
        pos += 4;
        Some(*key)
    } else {
        None
    };
    // Only reachable with a limit near usize::MAX; reported as the limit it effectively is.
    if pos.checked_add(payload_len).is_none() {
        return Err(Error::FrameTooLarge);
    }
    Ok(Progress::Complete(FrameHeader {
        fin,
        opcode,
        mask,
        header_len: pos,
        payload_len,
    }))
}

/// Parses one frame from the start of `buf`, unmasking its payload in place once it is complete.
///
/// Returns [`Progress::Partial`] (without touching `buf`) until the whole frame has arrived, then
/// the [`Frame`], whose `len` bytes the caller must consume; bytes after the frame are not
/// examined. Errors are final and reported at the first violating byte (see the module docs).
/// Never panics.
pub fn parse_frame<'b>(
    buf: &'b mut [u8],
    limits: &Limits,
    role: Role,
) -> Result<Progress<Frame<'b>>, Error> {
    match parse_header(buf, limits, role)? {
        Progress::Partial => Ok(Progress::Partial),
        Progress::Complete(header) => complete_frame(buf, header),
    }
}

/// The second half of [`parse_frame`], for callers that already hold the header of `buf`.
pub(super) fn complete_frame(
    buf: &mut [u8],
    header: FrameHeader,
) -> Result<Progress<Frame<'_>>, Error> {
    let len = header.frame_len();
    let Some(payload) = buf.get_mut(header.header_len..len) else {
        return Ok(Progress::Partial);
    };
    if let Some(mask) = header.mask {
        apply_mask(payload, mask);
    }
    if header.opcode == Opcode::Close {
        parse_close_payload(payload)?;
    }
    Ok(Progress::Complete(Frame {
        fin: header.fin,
        opcode: header.opcode,
        payload,
        len,
    }))
}

/// Reads an (unmasked) close payload: `None` when it is empty (the peer sent no status, which
/// reports as 1005), else the code and the reason.
///
/// Errors: one byte is [`Error::CloseOneByte`], a code [`is_valid_close_code`] refuses is
/// [`Error::InvalidCloseCode`], a reason that is not UTF-8 is [`Error::InvalidCloseReason`].
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame<'_>>, Error> {
    match payload {
        [] => Ok(None),
        [_] => Err(Error::CloseOneByte),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(Error::InvalidCloseCode);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Error::InvalidCloseReason)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// XORs `payload` with the repeating 4-byte `mask` (masking and unmasking are the same
/// operation), eight bytes at a time; the compiler vectorises the word loop.
fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let word = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let (words, rest) = payload.as_chunks_mut::<8>();
    for w in words {
        *w = (u64::from_ne_bytes(*w) ^ word).to_ne_bytes();
    }
    // Whole words are a multiple of 4 bytes, so the tail starts at mask index 0.
    for (byte, m) in rest.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

/// Appends one unmasked frame (the server role) with the minimal length encoding.
///
/// A control opcode is always written final and with at most [`CONTROL_PAYLOAD_BYTES_MAX`]
/// payload bytes (longer payloads are cut, and logged), so the frame is valid whatever the
/// arguments; a close payload is written as given, so prefer [`write_close`]. To send a
/// fragmented message, write the first frame with `fin == false` and its opcode, then
/// [`Opcode::Continuation`] frames, the last with `fin == true`.
pub fn write_frame(out: &mut Vec<u8>, fin: bool, opcode: Opcode, payload: &[u8]) {
    write_raw(out, fin, opcode, payload, None);
}

/// Like [`write_frame`], but masked with `mask`, as a client must send. The payload is copied
/// and masked in `out`; `payload` itself is unchanged.
pub fn write_frame_masked(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: Opcode,
    payload: &[u8],
    mask: [u8; 4],
) {
    write_raw(out, fin, opcode, payload, Some(mask));
}

/// Appends a final, unmasked text frame carrying `text`.
pub fn write_text(out: &mut Vec<u8>, text: &str) {
    write_frame(out, true, Opcode::Text, text.as_bytes());
}

/// Appends a final, unmasked binary frame carrying `data`.
pub fn write_binary(out: &mut Vec<u8>, data: &[u8]) {
    write_frame(out, true, Opcode::Binary, data);
}

/// Appends a ping; a payload over [`CONTROL_PAYLOAD_BYTES_MAX`] bytes is cut (and logged).
pub fn write_ping(out: &mut Vec<u8>, payload: &[u8]) {
    write_frame(out, true, Opcode::Ping, payload);
}

/// Appends a pong, normally echoing a ping's payload; a payload over
/// [`CONTROL_PAYLOAD_BYTES_MAX`] bytes is cut (and logged).
pub fn write_pong(out: &mut Vec<u8>, payload: &[u8]) {
    write_frame(out, true, Opcode::Pong, payload);
}

/// Appends a close frame with `code` and `reason`, the reason cut to
/// [`CLOSE_REASON_BYTES_MAX`] bytes at a char boundary so the frame stays a valid control frame
/// with a valid UTF-8 reason. A code that may not be sent ([`is_valid_close_code`], e.g. 1005 or
/// 1006) is dropped, and logged, and the frame goes out without code or reason, which the peer
/// reads as "no status" rather than as a protocol error of ours.
pub fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    if !is_valid_close_code(code) {
        tracing::warn!(code, "not a sendable close code; closing without a status");
        write_frame(out, true, Opcode::Close, &[]);
        return;
    }
    let mut end = reason.len().min(CLOSE_REASON_BYTES_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; CONTROL_PAYLOAD_BYTES_MAX];
    let [hi, lo] = code.to_be_bytes();
    payload[0] = hi;
    payload[1] = lo;
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    write_frame(out, true, Opcode::Close, &payload[..2 + end]);
}

/// Appends one frame, masked with `mask` when given.
fn write_raw(out: &mut Vec<u8>, fin: bool, opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>) {
    let mut fin = fin;
    let mut payload = payload;
    if opcode.is_control() {
        if !fin {
            tracing::warn!(
                ?opcode,
                "control frames cannot be fragmented; writing it final"
            );
            fin = true;
        }
        if payload.len() > CONTROL_PAYLOAD_BYTES_MAX {
            tracing::warn!(
                ?opcode,
                len = payload.len(),
                "control payload too long; cutting it"
            );
            payload = &payload[..CONTROL_PAYLOAD_BYTES_MAX];
        }
    }
    out.reserve(FRAME_HEADER_BYTES_MAX + payload.len());
    out.push(if fin { 0x80 } else { 0 } | opcode.bits());
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    match u8::try_from(len) {
        Ok(n) if n < 126 => out.push(mask_bit | n),
        _ => match u16::try_from(len) {
            Ok(n) => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Err(_) => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        },
    }
    match mask {
        None => out.extend_from_slice(payload),
        Some(mask) => {
            out.extend_from_slice(&mask);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], mask);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_mask_matches_the_bytewise_definition() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..40 {
            let original: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut fast = original.clone();
            apply_mask(&mut fast, mask);
            let slow: Vec<u8> = original
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow, "len {len}");
            apply_mask(&mut fast, mask);
            assert_eq!(fast, original, "masking twice restores len {len}");
        }
    }

    #[test]
    fn opcode_bits_round_trip() {
        for bits in 0..16u8 {
            if let Some(op) = Opcode::from_bits(bits) {
                assert_eq!(op.bits(), bits);
                assert_eq!(op.is_control(), bits >= 8);
            } else {
                assert!(matches!(bits, 3..=7 | 0xB..=0xF));
            }
        }
    }
}
