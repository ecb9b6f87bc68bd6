//! In-place, incremental decoding of `Transfer-Encoding: chunked` bodies (RFC 9112 §7.1).
//!
//! The decoder works directly on the connection's read buffer: decoded data is moved left over
//! the chunk framing it replaces, so the handler receives one contiguous `&mut [u8]` without a
//! second buffer or a copy into a `Vec`. It keeps its state between calls, so every byte is
//! examined once no matter how the body is split across reads, and after every call the
//! not-yet-decodable bytes are moved to sit right after the decoded ones, so the buffer never
//! holds more framing overhead than one partial chunk-size or trailer line plus one read.
//!
//! Strictness: chunk sizes are hex digits (leading zeros allowed), capped so the running total
//! can never exceed `body_bytes_max` (413) or overflow; chunk extensions are skipped but must
//! consist of field-value bytes and fit, with the size, in [`CHUNK_LINE_BYTES_MAX`] (else 400);
//! trailer fields are validated as `token ":" value` lines, bounded by `header_bytes_max` (431),
//! and discarded; every line ends with CRLF (a bare LF is a 400).

use super::parse::{Error, Limits, is_token, is_value_byte};

/// Longest chunk-size line, counting hex digits, extensions and the CRLF. Real clients send
/// a few hex digits and no extensions; the cap stops a peer from streaming an endless
/// extension that never produces body bytes.
pub const CHUNK_LINE_BYTES_MAX: usize = 1024;

/// Where the decoder is in the chunked grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex chunk size; `digits` tells whether at least one digit was seen.
    Size { value: usize, digits: bool },
    /// Skipping BWS and chunk extensions up to the CR that ends the size line.
    Extension { value: usize },
    /// Saw the CR ending the size line; expecting LF.
    SizeLf { value: usize },
    /// Copying chunk data; this many bytes of the chunk are still to come.
    Data { remaining: usize },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer field line or of the final empty line.
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value.
    TrailerValue,
    /// Saw the CR ending a trailer field line; expecting LF.
    TrailerLf,
    /// Saw the CR of the final empty line; expecting LF.
    EndLf,
    /// The whole chunked body, including trailers, has been consumed.
    Done,
}

/// The result of one [`ChunkedDecoder::decode`] call that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dechunked {
    /// More input is needed. The region passed in now holds `len` meaningful bytes: the decoded
    /// body so far followed by undecoded input, so the caller shortens its buffer to `len` and
    /// appends the next read there.
    Partial {
        /// The new length of the body region.
        len: usize,
    },
    /// The body is complete: `body_len` decoded bytes start the region, and the bytes after the
    /// chunked body (for example a pipelined request) follow immediately, up to `len`.
    Complete {
        /// Length of the decoded body.
        body_len: usize,
        /// The new length of the region (decoded body plus whatever followed the body).
        len: usize,
    },
}

/// An incremental in-place decoder for one chunked body.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes at the start of the region that are already decoded body.
    decoded: usize,
    /// Bytes of the current chunk-size line so far.
    line_bytes: usize,
    /// Bytes of the trailer section so far.
    trailer_bytes: usize,
    body_bytes_max: usize,
    trailer_bytes_max: usize,
}

impl ChunkedDecoder {
    /// Creates a decoder for one body, bounded by `limits.body_bytes_max` for the decoded data
    /// and by `limits.header_bytes_max` for the trailer section.
    pub fn new(limits: &Limits) -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size {
                value: 0,
                digits: false,
            },
            decoded: 0,
            line_bytes: 0,
            trailer_bytes: 0,
            body_bytes_max: limits.body_bytes_max,
            trailer_bytes_max: limits.header_bytes_max,
        }
    }

    /// Bytes of body decoded so far.
    pub fn decoded_len(&self) -> usize {
        self.decoded
    }

    /// Decodes as much of `region` as possible, in place.
    ///
    /// `region` is the body area of the read buffer: on the first call it is everything received
    /// after the head; on later calls it must start with the `len` bytes the previous call
    /// reported, followed by newly received bytes. Bytes after the end of the chunked body are
    /// never interpreted, only moved. Errors are final: the caller must answer and close.
    pub fn decode(&mut self, region: &mut [u8]) -> Result<Dechunked, Error> {
        // Calls after completion (or with a region shorter than what is decoded) are caller
        // mistakes; answering them without touching the buffer keeps them harmless.
        if self.state == State::Done || region.len() < self.decoded {
            return Ok(Dechunked::Complete {
                body_len: self.decoded,
                len: region.len().max(self.decoded),
            });
        }
        let end = region.len();
        let mut read = self.decoded;
        let mut write = self.decoded;
        while read < end && self.state != State::Done {
            if let State::Data { remaining } = self.state {
                let n = remaining.min(end - read);
                region.copy_within(read..read + n, write);
                read += n;
                write += n;
                self.state = if remaining == n {
                    State::DataCr
                } else {
                    State::Data {
                        remaining: remaining - n,
                    }
                };
                continue;
            }
            let byte = region[read];
            read += 1;
            self.step(byte, write)?;
        }
        region.copy_within(read..end, write);
        self.decoded = write;
        let len = write + (end - read);
        Ok(if self.state == State::Done {
            Dechunked::Complete {
                body_len: write,
                len,
            }
        } else {
            Dechunked::Partial { len }
        })
    }

    /// Advances the state machine by one framing byte; `decoded` is the body length so far.
    fn step(&mut self, b: u8, decoded: usize) -> Result<(), Error> {
        match self.state {
            State::Size { .. } | State::Extension { .. } | State::SizeLf { .. } => {
                self.line_bytes += 1;
                if self.line_bytes > CHUNK_LINE_BYTES_MAX {
                    return Err(Error::BadRequest);
                }
            }
            State::TrailerStart
            | State::TrailerName
            | State::TrailerValue
            | State::TrailerLf
            | State::EndLf => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > self.trailer_bytes_max {
                    return Err(Error::HeaderFieldsTooLarge);
                }
            }
            State::Data { .. } | State::DataCr | State::DataLf | State::Done => {}
        }
        self.state = match (self.state, b) {
            (State::Size { value, .. }, b) if b.is_ascii_hexdigit() => {
                let digit = char::from(b).to_digit(16).ok_or(Error::BadRequest)?;
                let value = value
                    .checked_mul(16)
                    .and_then(|v| v.checked_add(digit as usize))
                    .ok_or(Error::ContentTooLarge)?;
                if value > self.body_bytes_max.saturating_sub(decoded) {
                    return Err(Error::ContentTooLarge);
                }
                State::Size {
                    value,
                    digits: true,
                }
            }
            (State::Size { digits: false, .. }, _) => return Err(Error::BadRequest),
            (State::Size { value, .. }, b'\r') => State::SizeLf { value },
            (State::Size { value, .. }, b';' | b' ' | b'\t') => State::Extension { value },
            (State::Size { .. }, _) => return Err(Error::BadRequest),
            (State::Extension { value }, b'\r') => State::SizeLf { value },
            (State::Extension { value }, b) if is_value_byte(b) => State::Extension { value },
            (State::Extension { .. }, _) => return Err(Error::BadRequest),
            (State::SizeLf { value }, b'\n') => {
                self.line_bytes = 0;
                if value == 0 {
                    State::TrailerStart
                } else {
                    State::Data { remaining: value }
                }
            }
            (State::SizeLf { .. }, _) => return Err(Error::BadRequest),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataCr, _) => return Err(Error::BadRequest),
            (State::DataLf, b'\n') => State::Size {
                value: 0,
                digits: false,
            },
            (State::DataLf, _) => return Err(Error::BadRequest),
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart, b) if is_token(b) => State::TrailerName,
            (State::TrailerStart, _) => return Err(Error::BadRequest),
            (State::TrailerName, b':') => State::TrailerValue,
            (State::TrailerName, b) if is_token(b) => State::TrailerName,
            (State::TrailerName, _) => return Err(Error::BadRequest),
            (State::TrailerValue, b'\r') => State::TrailerLf,
            (State::TrailerValue, b) if is_value_byte(b) => State::TrailerValue,
            (State::TrailerValue, _) => return Err(Error::BadRequest),
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::TrailerLf, _) => return Err(Error::BadRequest),
            (State::EndLf, b'\n') => State::Done,
            (State::EndLf, _) => return Err(Error::BadRequest),
            // `decode` copies data in bulk and stops at `Done`, so these are unreachable; they
            // are answered without panicking all the same.
            (State::Data { .. } | State::Done, _) => return Err(Error::BadRequest),
        };
        Ok(())
    }
}
