//! A minimal HTTP/1.1 client codec: request bytes built once, and a sans-IO response reader.
//!
//! This is deliberately independent of `pinion-net`: a load generator that shared the server's
//! codec would hide the server's parser bugs instead of finding them. The reader only extracts
//! what a closed-loop client needs (status, keep-alive, body framing) and never allocates on the
//! hot path; the body is streamed into a [`BodySink`], which is `()` (discard) during load.

use std::fmt;

/// The longest response head (status line + headers) accepted.
pub(crate) const HEAD_BYTES_MAX: usize = 32 * 1024;

/// Builds the bytes of one request. `host` is the `Host` header value; a `content-length` is
/// added when there is a body or the method conventionally carries one, unless `headers`
/// already has one (as it does not, nor `host`, when the caller leaves them out).
pub(crate) fn build_request(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(format!("{method} {target} HTTP/1.1\r\n").as_bytes());
    if !has("host") {
        out.extend_from_slice(format!("host: {host}\r\n").as_bytes());
    }
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    let method_has_body = matches!(method, "POST" | "PUT" | "PATCH");
    if !has("content-length") && (!body.is_empty() || method_has_body) {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A complete response as far as the load loop cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// False when the server announced `connection: close` (or spoke HTTP/1.0 without
    /// keep-alive, or framed the body by closing): the connection must not be reused.
    pub(crate) keep_alive: bool,
}

/// Why a response could not be read. Malformed input is an operating error, not a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    HeadTooLarge,
    StatusLine,
    Header,
    ContentLength,
    Chunk,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ParseError::HeadTooLarge => "response head larger than 32 KiB",
            ParseError::StatusLine => "malformed status line",
            ParseError::Header => "malformed header line",
            ParseError::ContentLength => "invalid content-length",
            ParseError::Chunk => "malformed chunked body",
        };
        f.write_str(text)
    }
}

/// Where body bytes go: nowhere during load, into a `Vec` when the caller wants the body.
pub(crate) trait BodySink {
    fn push(&mut self, bytes: &[u8]);
}

impl BodySink for () {
    #[inline]
    fn push(&mut self, _bytes: &[u8]) {}
}

impl BodySink for Vec<u8> {
    fn push(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Result of feeding bytes to the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Everything given was consumed (or kept for later, see [`ResponseReader::advance`]).
    NeedMore,
    /// One response is complete; the reader is ready for the next one.
    Done(Response),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for `\r\n\r\n`; `scanned` bytes are known not to contain its end.
    Head {
        scanned: usize,
    },
    Fixed {
        remaining: u64,
    },
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { value: u64, digits: u8 },
    Extension { value: u64 },
    SizeLf { value: u64 },
    Data { remaining: u64 },
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerLine,
    EndLf,
}

/// Reads consecutive responses from one connection.
#[derive(Debug)]
pub(crate) struct ResponseReader {
    /// Responses to HEAD have no body whatever their headers say.
    head_request: bool,
    state: State,
    status: u16,
    keep_alive: bool,
}

impl ResponseReader {
    pub(crate) fn new(head_request: bool) -> Self {
        ResponseReader {
            head_request,
            state: State::Head { scanned: 0 },
            status: 0,
            keep_alive: true,
        }
    }

    /// Feeds the unconsumed bytes `buf` and returns how many were consumed. While the head is
    /// incomplete nothing is consumed: the caller must offer the same bytes again, extended.
    /// After `Step::Done`, bytes past the response are left for the next call.
    pub(crate) fn advance<S: BodySink>(
        &mut self,
        buf: &[u8],
        sink: &mut S,
    ) -> Result<(usize, Step), ParseError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Head { scanned } => {
                    let Some(end) = find_head_end(&buf[pos..], scanned) else {
                        if buf.len() - pos > HEAD_BYTES_MAX {
                            return Err(ParseError::HeadTooLarge);
                        }
                        self.state = State::Head {
                            scanned: buf.len() - pos,
                        };
                        return Ok((pos, Step::NeedMore));
                    };
                    let head = parse_head(&buf[pos..pos + end])?;
                    pos += end;
                    self.state = State::Head { scanned: 0 };
                    if (100..200).contains(&head.status) && head.status != 101 {
                        continue; // Interim response (100 Continue, 103 Early Hints).
                    }
                    self.status = head.status;
                    self.keep_alive = head.keep_alive;
                    let no_body = self.head_request
                        || matches!(head.status, 101 | 204 | 304)
                        || (100..200).contains(&head.status);
                    if head.status == 101 {
                        self.keep_alive = false;
                    }
                    if no_body {
                        return Ok((pos, Step::Done(self.response())));
                    }
                    self.state = match (head.chunked, head.content_length) {
                        (true, _) => State::Chunked(Chunk::Size {
                            value: 0,
                            digits: 0,
                        }),
                        (false, Some(0)) => return Ok((pos, Step::Done(self.response()))),
                        (false, Some(length)) => State::Fixed { remaining: length },
                        (false, None) => {
                            self.keep_alive = false;
                            State::UntilClose
                        }
                    };
                }
                State::Fixed { remaining } => {
                    let available = (buf.len() - pos) as u64;
                    let take = remaining.min(available) as usize;
                    sink.push(&buf[pos..pos + take]);
                    pos += take;
                    let remaining = remaining - take as u64;
                    if remaining == 0 {
                        self.state = State::Head { scanned: 0 };
                        return Ok((pos, Step::Done(self.response())));
                    }
                    self.state = State::Fixed { remaining };
                    return Ok((pos, Step::NeedMore));
                }
                State::Chunked(chunk) => {
                    let (used, next) = advance_chunked(chunk, &buf[pos..], sink)?;
                    pos += used;
                    match next {
                        Some(chunk) => {
                            self.state = State::Chunked(chunk);
                            return Ok((pos, Step::NeedMore));
                        }
                        None => {
                            self.state = State::Head { scanned: 0 };
                            return Ok((pos, Step::Done(self.response())));
                        }
                    }
                }
                State::UntilClose => {
                    sink.push(&buf[pos..]);
                    return Ok((buf.len(), Step::NeedMore));
                }
            }
        }
    }

    /// The peer closed the connection. Returns the response if its body was framed by the close.
    pub(crate) fn finish_at_eof(&mut self) -> Option<Response> {
        if self.state == State::UntilClose {
            self.state = State::Head { scanned: 0 };
            return Some(self.response());
        }
        None
    }

    fn response(&self) -> Response {
        Response {
            status: self.status,
            keep_alive: self.keep_alive,
        }
    }
}

/// Runs the chunked-body state machine over `buf`. Returns the bytes consumed and the next state,
/// or `None` once the last chunk and the trailers are through.
fn advance_chunked<S: BodySink>(
    mut chunk: Chunk,
    buf: &[u8],
    sink: &mut S,
) -> Result<(usize, Option<Chunk>), ParseError> {
    let mut pos = 0;
    while pos < buf.len() {
        if let Chunk::Data { remaining } = chunk {
            let take = remaining.min((buf.len() - pos) as u64) as usize;
            sink.push(&buf[pos..pos + take]);
            pos += take;
            let remaining = remaining - take as u64;
            chunk = if remaining == 0 {
                Chunk::DataCr
            } else {
                Chunk::Data { remaining }
            };
            continue;
        }
        let byte = buf[pos];
        pos += 1;
        chunk = match chunk {
            Chunk::Size { value, digits } => match (hex_value(byte), byte) {
                (Some(digit), _) if digits < 15 => Chunk::Size {
                    value: value * 16 + u64::from(digit),
                    digits: digits + 1,
                },
                (None, b';' | b' ' | b'\t') if digits > 0 => Chunk::Extension { value },
                (None, b'\r') if digits > 0 => Chunk::SizeLf { value },
                _ => return Err(ParseError::Chunk),
            },
            Chunk::Extension { value } => match byte {
                b'\r' => Chunk::SizeLf { value },
                b'\n' => return Err(ParseError::Chunk),
                _ => Chunk::Extension { value },
            },
            Chunk::SizeLf { value } => match (byte, value) {
                (b'\n', 0) => Chunk::TrailerLineStart,
                (b'\n', _) => Chunk::Data { remaining: value },
                _ => return Err(ParseError::Chunk),
            },
            Chunk::DataCr if byte == b'\r' => Chunk::DataLf,
            Chunk::DataLf if byte == b'\n' => Chunk::Size {
                value: 0,
                digits: 0,
            },
            Chunk::DataCr | Chunk::DataLf => return Err(ParseError::Chunk),
            Chunk::TrailerLineStart if byte == b'\r' => Chunk::EndLf,
            Chunk::TrailerLineStart | Chunk::TrailerLine => {
                if byte == b'\n' {
                    Chunk::TrailerLineStart
                } else {
                    Chunk::TrailerLine
                }
            }
            Chunk::EndLf if byte == b'\n' => return Ok((pos, None)),
            Chunk::EndLf => return Err(ParseError::Chunk),
            Chunk::Data { .. } => unreachable!("handled above"),
        };
    }
    Ok((pos, Some(chunk)))
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Returns the length of the head including the blank line, if `buf` holds all of it.
/// The first `scanned` bytes were searched before; the search resumes 3 bytes earlier.
fn find_head_end(buf: &[u8], scanned: usize) -> Option<usize> {
    let from = scanned.saturating_sub(3);
    buf.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| from + at + 4)
}

struct Head {
    status: u16,
    keep_alive: bool,
    chunked: bool,
    content_length: Option<u64>,
}

/// Parses a complete head (`head` ends with `\r\n\r\n`).
fn parse_head(head: &[u8]) -> Result<Head, ParseError> {
    let mut lines = head[..head.len() - 4].split(|&b| b == b'\n');
    let status_line = trim_cr(lines.next().ok_or(ParseError::StatusLine)?);
    // "HTTP/1.x SSS[ reason]"
    let (minor, status) = match status_line {
        [
            b'H',
            b'T',
            b'T',
            b'P',
            b'/',
            b'1',
            b'.',
            minor,
            b' ',
            a,
            b,
            c,
            rest @ ..,
        ] if minor.is_ascii_digit()
            && [a, b, c].iter().all(|d| d.is_ascii_digit())
            && (rest.is_empty() || rest[0] == b' ') =>
        {
            let status = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
            (minor - b'0', status)
        }
        _ => return Err(ParseError::StatusLine),
    };
    let mut out = Head {
        status,
        keep_alive: minor >= 1,
        chunked: false,
        content_length: None,
    };
    let mut transfer_encoded = false;
    for line in lines {
        let line = trim_cr(line);
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(ParseError::Header)?;
        let name = &line[..colon];
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            return Err(ParseError::Header);
        }
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_decimal(value).ok_or(ParseError::ContentLength)?;
            if out
                .content_length
                .is_some_and(|previous| previous != length)
            {
                return Err(ParseError::ContentLength);
            }
            out.content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked only if it is the final coding; anything else is framed by the close.
            let last = value
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            out.chunked = last.eq_ignore_ascii_case(b"chunked");
            transfer_encoded = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    out.keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && minor == 0 {
                    out.keep_alive = true;
                }
            }
        }
    }
    if transfer_encoded {
        // Transfer-encoding overrides content-length; a final coding other than chunked is
        // framed by the close (RFC 9112 §6.3).
        out.content_length = None;
        if !out.chunked {
            out.keep_alive = false;
        }
    }
    Ok(out)
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests;
