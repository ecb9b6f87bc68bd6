//! Message assembly (RFC 6455 §5.4): fragments in, whole messages out, with UTF-8 checks.
//!
//! [`Assembler::decode`] parses the next frame from the connection's read buffer and returns
//! what the application sees: a complete text or binary message, a control frame, or nothing yet
//! (a non-final fragment was absorbed). The rules it adds to the frame parser's:
//!
//! * A continuation frame needs an open fragmented message, and a text or binary frame needs
//!   none: 1002 otherwise. Control frames may come between fragments and are returned at once,
//!   leaving the open message as it was.
//! * [`Limits::message_bytes_max`] is checked against the bytes assembled so far plus the next
//!   frame's announced length as soon as that frame's header is complete, before its payload
//!   arrives: 1009.
//! * Text must be UTF-8: 1007. A fragmented text message is checked fragment by fragment as it
//!   arrives, carrying an incomplete code point over to the next fragment, so a bad byte fails
//!   the connection when its fragment arrives rather than when the message ends. A code point
//!   split across fragments is valid; one left incomplete by the final fragment is not. (Within
//!   one frame the check runs when the frame is complete, since the payload is unmasked then;
//!   [`Limits::frame_payload_bytes_max`] bounds how late that can be.)
//!
//! # Zero-copy where it counts
//!
//! An unfragmented message (what nearly every client sends) is handed out as a mutable slice of
//! the read buffer, unmasked in place, without a copy. Fragments are copied into the
//! assembler's own buffer, bounded by `message_bytes_max`, and the whole message is handed out
//! from there; after a message larger than [`ASSEMBLY_RETAIN_BYTES_MAX`] that buffer's memory is
//! released, so one big message does not pin memory for the connection's lifetime.
//!
//! When the header comes with both a frame-level violation and a sequencing one, the frame-level
//! error (in byte order) is reported. After any error the assembler's state is unspecified but
//! safe: the caller must fail the connection, not keep decoding.

use std::ops::Deref;

use super::frame::{CloseFrame, Opcode, complete_frame, parse_close_payload, parse_header};
use super::{Error, Limits, Progress, Role};

/// After a fragmented message, an assembly buffer whose capacity grew beyond this is released
/// (the next fragmented message allocates afresh).
pub const ASSEMBLY_RETAIN_BYTES_MAX: usize = 256 * 1024;

/// The payload of a complete text message: valid UTF-8 (checked), borrowed mutably from the read
/// buffer or the assembler so in-place parsers can work on it.
#[derive(Debug, PartialEq, Eq)]
pub struct Text<'a>(&'a mut str);

impl<'a> Text<'a> {
    /// The text.
    pub fn as_str(&self) -> &str {
        self.0
    }

    /// The text, mutably, for as long as the buffer is borrowed.
    pub fn into_str(self) -> &'a mut str {
        self.0
    }

    /// The text's bytes, mutably (what `simd_json::from_slice` wants). Giving up the `str`
    /// view makes this safe: the bytes need not stay UTF-8 afterwards.
    pub fn into_bytes_mut(self) -> &'a mut [u8] {
        // SAFETY: `str::as_bytes_mut` requires the bytes to be valid UTF-8 again before the
        // borrow ends *and the underlying str is used*. The only `str` view is the `&mut str`
        // consumed here; the memory behind it is a `[u8]` (the caller's read buffer or the
        // assembler's `Vec<u8>`) that nothing reads as `str` afterwards (the assembler clears
        // its buffer before the next message, and validates anew whatever it reads).
        unsafe { self.0.as_bytes_mut() }
    }
}

impl Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        self.0
    }
}

/// What the application gets from the connection: a whole data message or a control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A complete text message.
    Text(Text<'a>),
    /// A complete binary message, mutable for in-place parsing.
    Binary(&'a mut [u8]),
    /// A ping; answer it with a pong carrying the same payload ([`super::write_pong`]).
    Ping(&'a [u8]),
    /// A pong (an answer to our ping, or unsolicited as a heartbeat).
    Pong(&'a [u8]),
    /// A close frame: `None` when it carried no status. Answer with a close frame (echoing the
    /// code is usual) and stop sending; then close the TCP connection.
    Close(Option<CloseFrame<'a>>),
}

/// One frame consumed by [`Assembler::decode`].
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Bytes the frame occupied at the start of the buffer: consume them, whether or not a
    /// message came out. (When the message borrows the buffer, consume after using it.)
    pub len: usize,
    /// The message this frame completed, or `None` for a non-final fragment.
    pub message: Option<Message<'a>>,
}

/// The kind of a fragmented message being assembled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
}

/// Reassembles the messages of one connection (see the module docs). One per connection; it
/// holds the open fragmented message between calls.
#[derive(Debug)]
pub struct Assembler {
    limits: Limits,
    role: Role,
    /// The fragmented message being assembled, if any.
    open: Option<Kind>,
    /// The fragments so far (only for fragmented messages).
    buf: Vec<u8>,
    /// For text: `buf[..utf8_valid]` is known to be whole, valid code points; the rest is at
    /// most an incomplete code point awaiting the next fragment.
    utf8_valid: usize,
    /// A message was handed out of `buf`; clear it before reading on.
    delivered: bool,
}

impl Assembler {
    /// Creates the assembler for a connection where this endpoint has `role` (a server reads
    /// masked frames).
    pub fn new(limits: &Limits, role: Role) -> Assembler {
        Assembler {
            limits: *limits,
            role,
            open: None,
            buf: Vec::new(),
            utf8_valid: 0,
            delivered: false,
        }
    }

    /// Whether a fragmented message is open (its first frame arrived, its final one not yet).
    pub fn in_message(&self) -> bool {
        self.open.is_some()
    }

    /// Bytes of the open fragmented message assembled so far.
    pub fn assembled_len(&self) -> usize {
        if self.open.is_some() {
            self.buf.len()
        } else {
            0
        }
    }

    /// Parses the frame at the start of `buf` and feeds it to the message being assembled.
    ///
    /// Returns [`Progress::Partial`] (with `buf` untouched) while the frame is incomplete, then
    /// [`Decoded`]: how many bytes to consume and the message, if the frame completed one.
    /// Limits and sequencing are checked as soon as the frame header is complete. Errors are
    /// final: fail the connection with [`Error::code`]. Never panics.
    pub fn decode<'a>(&'a mut self, buf: &'a mut [u8]) -> Result<Progress<Decoded<'a>>, Error> {
        if self.delivered {
            self.delivered = false;
            self.buf.clear();
            self.utf8_valid = 0;
            if self.buf.capacity() > ASSEMBLY_RETAIN_BYTES_MAX {
                self.buf = Vec::new();
            }
        }
        let header = match parse_header(buf, &self.limits, self.role)? {
            Progress::Partial => return Ok(Progress::Partial),
            Progress::Complete(header) => header,
        };
        let max = self.limits.message_bytes_max;
        match (header.opcode, self.open) {
            (Opcode::Continuation, None) => return Err(Error::UnexpectedContinuation),
            (Opcode::Continuation, Some(_)) => {
                if header.payload_len > max.saturating_sub(self.buf.len()) {
                    return Err(Error::MessageTooLarge);
                }
            }
            (Opcode::Text | Opcode::Binary, Some(_)) => return Err(Error::InterleavedMessage),
            (Opcode::Text | Opcode::Binary, None) => {
                if header.payload_len > max {
                    return Err(Error::MessageTooLarge);
                }
            }
            (Opcode::Close | Opcode::Ping | Opcode::Pong, _) => {}
        }
        let frame = match complete_frame(buf, header)? {
            Progress::Partial => return Ok(Progress::Partial),
            Progress::Complete(frame) => frame,
        };
        let len = frame.len;
        let message = match frame.opcode {
            Opcode::Close => Some(Message::Close(parse_close_payload(frame.payload)?)),
            Opcode::Ping => Some(Message::Ping(frame.payload)),
            Opcode::Pong => Some(Message::Pong(frame.payload)),
            // An unfragmented message: handed out in place.
            Opcode::Text if frame.fin => Some(Message::Text(Text(
                std::str::from_utf8_mut(frame.payload).map_err(|_| Error::InvalidUtf8)?,
            ))),
            Opcode::Binary if frame.fin => Some(Message::Binary(frame.payload)),
            Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                if frame.opcode == Opcode::Text {
                    self.open = Some(Kind::Text);
                } else if frame.opcode == Opcode::Binary {
                    self.open = Some(Kind::Binary);
                }
                self.append(frame.payload, frame.fin)?;
                if frame.fin { self.finish()? } else { None }
            }
        };
        Ok(Progress::Complete(Decoded { len, message }))
    }

    /// Adds a fragment to the open message, checking text as far as it can be checked.
    fn append(&mut self, fragment: &[u8], fin: bool) -> Result<(), Error> {
        self.buf.extend_from_slice(fragment);
        if self.open != Some(Kind::Text) {
            return Ok(());
        }
        let unchecked = self.buf.get(self.utf8_valid..).unwrap_or_default();
        match std::str::from_utf8(unchecked) {
            Ok(_) => self.utf8_valid = self.buf.len(),
            // The tail is a valid prefix of a code point: it may complete in the next fragment
            // (`error_len` is `None` only for such a prefix, and only at the very end).
            Err(e) if e.error_len().is_none() && !fin => self.utf8_valid += e.valid_up_to(),
            Err(_) => return Err(Error::InvalidUtf8),
        }
        Ok(())
    }

    /// Hands out the assembled message after its final fragment.
    fn finish(&mut self) -> Result<Option<Message<'_>>, Error> {
        let kind = self.open.take();
        self.delivered = true;
        Ok(match kind {
            Some(Kind::Text) => {
                // Already checked fragment by fragment; converting checks once more, which is
                // cheap next to the copy and keeps this free of `unsafe`.
                let text =
                    std::str::from_utf8_mut(&mut self.buf).map_err(|_| Error::InvalidUtf8)?;
                Some(Message::Text(Text(text)))
            }
            Some(Kind::Binary) => Some(Message::Binary(&mut self.buf)),
            // `decode` opens a message before the first append; unreachable, answered safely.
            None => None,
        })
    }
}
