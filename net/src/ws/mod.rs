//! WebSocket (RFC 6455): the opening handshake ([`validate_upgrade`], [`write_accept`]), an
//! incremental zero-copy frame parser ([`parse_frame`]), message reassembly with UTF-8 checks
//! ([`Assembler`]) and frame writers ([`write_text`] and friends).
//!
//! Like [`crate::http`], the pieces are pure functions of bytes (or small state machines), with
//! no socket in sight, so every frame shape and every violation can be tested byte by byte and
//! the connection loop that drives them ([`crate::server`]'s WebSocket mode) stays thin.
//!
//! # Error model
//!
//! Every violation of the protocol by the peer is an [`Error`] whose [`Error::code`] is the
//! close code to fail the connection with (RFC 6455 §7.1.7): 1002 for protocol errors, 1007 for
//! invalid UTF-8, 1009 for a frame or message over a [`Limits`] bound. Errors are final: the
//! caller writes a close frame with that code ([`write_close`]) and stops reading frames.
//! No input makes any function here panic.
//!
//! # Extensions
//!
//! No extension is negotiated (`permessage-deflate` is declined by not echoing it, which RFC 6455
//! §9.1 allows), so the three RSV bits must be zero on every frame.

mod frame;
mod handshake;
mod message;

use std::fmt;

pub use crate::http::Progress;
pub use frame::{
    CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_INVALID_PAYLOAD, CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NORMAL, CLOSE_POLICY_VIOLATION, CLOSE_PROTOCOL_ERROR, CLOSE_REASON_BYTES_MAX,
    CLOSE_UNSUPPORTED_DATA, CONTROL_PAYLOAD_BYTES_MAX, CloseFrame, FRAME_HEADER_BYTES_MAX, Frame,
    FrameHeader, Opcode, is_valid_close_code, parse_close_payload, parse_frame, parse_header,
    write_binary, write_close, write_frame, write_frame_masked, write_ping, write_pong, write_text,
};
pub use handshake::{
    ACCEPT_KEY_LEN, HandshakeError, Protocols, Upgrade, WEBSOCKET_GUID, WEBSOCKET_VERSION,
    accept_key, offered_protocols, validate_upgrade, write_accept,
};
pub use message::{ASSEMBLY_RETAIN_BYTES_MAX, Assembler, Decoded, Message, Text};

/// Size limits for one WebSocket connection. Both are checked from a frame's header, before its
/// payload is read, so a peer cannot make the connection buffer more than announced-and-allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of one frame. The read buffer must hold a whole frame (the payload is
    /// unmasked and handed out in place), so this bounds it: at most
    /// [`FRAME_HEADER_BYTES_MAX`] + this many bytes. Exceeding it fails with 1009.
    pub frame_payload_bytes_max: usize,
    /// Largest message, summed over its fragments. A fragmented message is copied into the
    /// [`Assembler`]'s buffer, so this bounds that buffer. Exceeding it fails with 1009.
    pub message_bytes_max: usize,
}

impl Default for Limits {
    /// 1 MiB frames and 4 MiB messages: the HTTP body limit for a single frame, and room for a
    /// few fragments of it, generous for RPC and event traffic.
    fn default() -> Self {
        Limits {
            frame_payload_bytes_max: 1024 * 1024,
            message_bytes_max: 4 * 1024 * 1024,
        }
    }
}

/// Which end of the connection this endpoint is; it decides which frames must be masked
/// (RFC 6455 §5.1: every client-to-server frame is masked, no server-to-client frame is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We are the server: frames we read must be masked, frames we write are not.
    Server,
    /// We are a client (tests, load generators): frames we read must not be masked.
    Client,
}

/// Why the peer's frames were rejected. Each variant maps to one close code via [`Error::code`]
/// and a short reason via [`Error::reason`] that fits a close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// RSV1, RSV2 or RSV3 is set, but no extension was negotiated: 1002.
    ReservedBits,
    /// An opcode RFC 6455 reserves (3-7, 0xB-0xF): 1002.
    UnknownOpcode,
    /// A frame from the client without a mask (we are the server): 1002.
    Unmasked,
    /// A frame from the server with a mask (we are the client): 1002.
    Masked,
    /// The payload length uses a longer encoding than needed (16 bits for < 126, 64 bits for
    /// < 65536), which RFC 6455 §5.2 forbids: 1002.
    NonMinimalLength,
    /// The most significant bit of a 64-bit payload length is set: 1002.
    LengthMsb,
    /// A close, ping or pong frame without FIN: 1002.
    FragmentedControl,
    /// A close, ping or pong payload longer than [`CONTROL_PAYLOAD_BYTES_MAX`]: 1002.
    ControlTooLong,
    /// A close payload of exactly one byte (a code needs two): 1002.
    CloseOneByte,
    /// A close code that may not be sent on the wire (see [`is_valid_close_code`]): 1002.
    InvalidCloseCode,
    /// A close reason that is not valid UTF-8: 1007.
    InvalidCloseReason,
    /// A continuation frame while no fragmented message is open: 1002.
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is still open: 1002.
    InterleavedMessage,
    /// A text message that is not valid UTF-8: 1007.
    InvalidUtf8,
    /// A frame payload over [`Limits::frame_payload_bytes_max`]: 1009.
    FrameTooLarge,
    /// A message over [`Limits::message_bytes_max`]: 1009.
    MessageTooLarge,
}

impl Error {
    /// The close code to fail the connection with (RFC 6455 §7.4.1).
    pub fn code(self) -> u16 {
        match self {
            Error::InvalidCloseReason | Error::InvalidUtf8 => CLOSE_INVALID_PAYLOAD,
            Error::FrameTooLarge | Error::MessageTooLarge => CLOSE_MESSAGE_TOO_BIG,
            Error::ReservedBits
            | Error::UnknownOpcode
            | Error::Unmasked
            | Error::Masked
            | Error::NonMinimalLength
            | Error::LengthMsb
            | Error::FragmentedControl
            | Error::ControlTooLong
            | Error::CloseOneByte
            | Error::InvalidCloseCode
            | Error::UnexpectedContinuation
            | Error::InterleavedMessage => CLOSE_PROTOCOL_ERROR,
        }
    }

    /// A short, fixed reason for the close frame (ASCII, well under
    /// [`CLOSE_REASON_BYTES_MAX`]); it names the rule, never echoes peer data.
    pub fn reason(self) -> &'static str {
        match self {
            Error::ReservedBits => "reserved bits set",
            Error::UnknownOpcode => "unknown opcode",
            Error::Unmasked => "client frame not masked",
            Error::Masked => "server frame masked",
            Error::NonMinimalLength => "non-minimal payload length",
            Error::LengthMsb => "payload length MSB set",
            Error::FragmentedControl => "fragmented control frame",
            Error::ControlTooLong => "control frame payload too long",
            Error::CloseOneByte => "close payload of one byte",
            Error::InvalidCloseCode => "invalid close code",
            Error::InvalidCloseReason => "close reason not UTF-8",
            Error::UnexpectedContinuation => "continuation without a message",
            Error::InterleavedMessage => "new message inside a fragmented one",
            Error::InvalidUtf8 => "text not UTF-8",
            Error::FrameTooLarge => "frame too large",
            Error::MessageTooLarge => "message too large",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.code())
    }
}

impl std::error::Error for Error {}
