//! The incremental, zero-copy HTTP/1.1 request-head parser.
//!
//! The parser is a pure function of the bytes received so far: it either finds a complete, valid
//! head ([`Progress::Complete`]), needs more bytes ([`Progress::Partial`]), or rejects the input
//! with an [`Error`] that maps to exactly one response status. It keeps no state between calls so
//! the connection loop can call it again after every read; the loop amortises that (see
//! `server.rs`), and [`find_head_end`] lets it skip parsing until the head is complete.
//!
//! Everything in a [`Request`] borrows from the caller's buffer; header slots live in a
//! caller-owned `Vec` that is reused across requests, so parsing allocates nothing once that
//! `Vec` has grown to the connection's header count.
//!
//! # Strictness (deliberate, documented choices)
//!
//! * Lines end with CRLF only. A bare LF anywhere in the head is a 400: accepting it is how
//!   request-smuggling differentials between a proxy and a server start, and every real client
//!   sends CRLF. Empty lines (CRLF only) before the request line are skipped, as RFC 9112 §2.2
//!   recommends for clients that send an extra CRLF after a body.
//! * Exactly one SP separates method, target and version (no "multiple spaces" leniency).
//! * The request-target must be visible ASCII (0x21..=0x7E). It must be in origin-form (start
//!   with `/`), or be exactly `*` for `OPTIONS`. The absolute-form and the authority-form are
//!   rejected with 400: this server is an origin server behind nothing that needs them, and
//!   non-ASCII bytes would have to be percent-encoded by any conforming client anyway.
//! * Only `HTTP/1.0` and `HTTP/1.1` are accepted. Any other `HTTP/<digit>.<digit>` gets 505
//!   HTTP Version Not Supported; anything else in the version slot is a 400.
//! * Field names are tokens and must be followed immediately by `:` (whitespace before the
//!   colon is a 400, RFC 9112 §5.1). Field values may contain HTAB, SP, visible ASCII and
//!   obs-text (0x80..=0xFF); NUL, DEL, other controls and lone CR are a 400. Leading and
//!   trailing SP/HTAB around a value are trimmed. Obsolete line folding (a line starting with SP
//!   or HTAB) is a 400.
//! * Body framing follows RFC 9112 §6: `Transfer-Encoding` together with `Content-Length` is a
//!   400; `Transfer-Encoding` in an HTTP/1.0 request is a 400; a transfer-coding list whose final
//!   coding is not `chunked`, or that applies `chunked` twice, is a 400; an empty list element
//!   is a 400; any coding besides a single `chunked` (e.g.
//!   `gzip, chunked`) is a 501 because we do not implement it. `Content-Length` must be one or
//!   more ASCII digits; repeated `Content-Length` fields must all carry the same value; a
//!   comma-separated list (`5, 5`) is rejected with 400 rather than collapsed.

use std::fmt;

/// Size limits for one request. Every size the parser, the chunked decoder and the connection
/// loop track has a named maximum here (or a named constant next to the code that uses it), so
/// no peer can make a connection hold unbounded memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line, counted with its terminating CRLF. Exceeding it is answered with
    /// 414 URI Too Long, since the target is almost always what makes a request line long.
    pub request_line_max: usize,
    /// Most header fields in one head. Exceeding it is answered with 431.
    pub header_count_max: usize,
    /// Longest head (leading empty lines, request line, all header lines and the final empty
    /// line). Exceeding it is answered with 431. The chunked trailer section is bounded by the
    /// same number.
    pub header_bytes_max: usize,
    /// Largest body after chunked decoding. Exceeding it is answered with 413 Content Too Large,
    /// as early as the announced length (Content-Length or a chunk size) reveals it.
    pub body_bytes_max: usize,
}

impl Default for Limits {
    /// Defaults sized for RPC-style traffic: 8 KiB request line, 64 headers, a 16 KiB head and a
    /// 1 MiB body, in line with what common servers accept.
    fn default() -> Self {
        Limits {
            request_line_max: 8 * 1024,
            header_count_max: 64,
            header_bytes_max: 16 * 1024,
            body_bytes_max: 1024 * 1024,
        }
    }
}

/// The request method. The common methods get their own variant so routing can `match` without
/// comparing strings; anything else is [`Method::Other`] and the exact text is in
/// [`Request::method_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: the response carries headers (including `content-length`) but no body.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `OPTIONS`: the only method that may use the `*` request-target.
    Options,
    /// `PATCH`.
    Patch,
    /// Any other (syntactically valid, case-sensitive) method token.
    Other,
}

impl Method {
    /// Maps a method token to its variant. Methods are case-sensitive (RFC 9110 §9.1), so
    /// `get` is [`Method::Other`].
    pub fn from_token(token: &[u8]) -> Method {
        match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

/// One header field, borrowed from the read buffer. The name is kept exactly as sent (compare
/// it with `eq_ignore_ascii_case`); the value has its surrounding whitespace trimmed and is
/// bytes, because HTTP allows obs-text that need not be UTF-8.
#[derive(Clone, Copy, Debug)]
pub struct Header<'a> {
    /// The field name as sent (a token, so always ASCII).
    pub name: &'a str,
    /// The field value without leading or trailing SP/HTAB.
    pub value: &'a [u8],
}

impl Header<'static> {
    /// An empty header, handy for initialising fixed-size storage.
    pub const EMPTY: Header<'static> = Header {
        name: "",
        value: b"",
    };
}

/// A parsed request head. Everything borrows from the connection's read buffer (zero-copy).
#[derive(Debug)]
pub struct Request<'a> {
    /// The method as an enum for cheap matching.
    pub method: Method,
    /// The method exactly as sent, for [`Method::Other`] and for logging.
    pub method_str: &'a str,
    /// The request-target exactly as sent (origin-form, or `*` for `OPTIONS`), e.g. `/a/b?x=1`.
    pub target: &'a str,
    /// The target up to (not including) the first `?`; not percent-decoded.
    pub path: &'a str,
    /// The target after the first `?`, without it; empty when there is no query.
    pub query: &'a str,
    /// The minor HTTP version: `HTTP/1.0` gives 0, `HTTP/1.1` gives 1.
    pub minor_version: u8,
    /// The header fields in the order they were sent.
    pub headers: &'a [Header<'a>],
}

impl<'a> Request<'a> {
    /// Returns the value of the first header whose name matches `name` ASCII
    /// case-insensitively, because field names are case-insensitive (RFC 9110 §5.1).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        let headers: &'a [Header<'a>] = self.headers;
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// Tells whether the connection may stay open after this request: HTTP/1.1 defaults to
    /// keep-alive unless a `Connection` field lists `close`; HTTP/1.0 closes unless a
    /// `Connection` field lists `keep-alive`. `close` wins when both appear.
    pub fn keep_alive(&self) -> bool {
        let mut close = false;
        let mut keep_alive = false;
        for h in self.headers {
            if !h.name.eq_ignore_ascii_case("connection") {
                continue;
            }
            for option in h.value.split(|&b| b == b',') {
                let option = trim_ows(option);
                if option.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
        if close {
            false
        } else if self.minor_version >= 1 {
            true
        } else {
            keep_alive
        }
    }
}

/// How the body of a request is delimited, decided from its head (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body: neither `Content-Length` nor `Transfer-Encoding` was sent.
    None,
    /// Exactly this many bytes follow the head (already checked against `body_bytes_max`).
    Length(usize),
    /// A chunked body follows; decode it with [`super::ChunkedDecoder`].
    Chunked,
}

/// A complete, valid request head together with what the connection loop needs to read the body.
#[derive(Debug)]
pub struct Head<'a> {
    /// The parsed request line and header fields.
    pub request: Request<'a>,
    /// Bytes the head occupies in the buffer, including leading empty lines and the final CRLF;
    /// the body (if any) starts at this offset.
    pub len: usize,
    /// How the body is framed.
    pub body: BodyKind,
    /// Whether the client sent `Expect: 100-continue` on an HTTP/1.1 request, so it may wait
    /// for an interim `100 Continue` before sending the body. HTTP/1.0 requests never set
    /// it, as RFC 9110 §10.1.1 requires.
    pub expect_continue: bool,
}

/// The outcome of parsing input that has not been rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress<T> {
    /// The input is a valid prefix; more bytes are needed.
    Partial,
    /// The input holds a complete item.
    Complete(T),
}

/// Why a request was rejected. Each variant maps to one response status via [`Error::status`];
/// after any of them the connection is closed, because the framing can no longer be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Malformed syntax or contradictory framing: 400 Bad Request.
    BadRequest,
    /// The request line exceeds `request_line_max`: 414 URI Too Long.
    UriTooLong,
    /// Too many header fields, or the head (or the chunked trailer section) exceeds
    /// `header_bytes_max`: 431 Request Header Fields Too Large.
    HeaderFieldsTooLarge,
    /// The body exceeds `body_bytes_max`: 413 Content Too Large.
    ContentTooLarge,
    /// A transfer-coding other than a lone `chunked`: 501 Not Implemented.
    NotImplemented,
    /// A well-formed `HTTP/x.y` version other than 1.0 and 1.1: 505 HTTP Version Not Supported.
    VersionNotSupported,
}

impl Error {
    /// The response status that reports this error to the client.
    pub fn status(self) -> u16 {
        match self {
            Error::BadRequest => 400,
            Error::UriTooLong => 414,
            Error::HeaderFieldsTooLarge => 431,
            Error::ContentTooLarge => 413,
            Error::NotImplemented => 501,
            Error::VersionNotSupported => 505,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Error::BadRequest => "malformed request",
            Error::UriTooLong => "request line too long",
            Error::HeaderFieldsTooLarge => "request head too large or too many header fields",
            Error::ContentTooLarge => "request body too large",
            Error::NotImplemented => "transfer-coding not implemented",
            Error::VersionNotSupported => "HTTP version not supported",
        };
        f.write_str(text)
    }
}

impl std::error::Error for Error {}

/// Builds a 256-entry membership table at compile time, so the hot scanning loops are one load
/// and one branch per byte.
const fn byte_table(ranges: &[(u8, u8)]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut r = 0;
    while r < ranges.len() {
        let (lo, hi) = ranges[r];
        let mut b = lo as usize;
        while b <= hi as usize {
            table[b] = true;
            b += 1;
        }
        r += 1;
    }
    table
}

/// `tchar` from RFC 9110 §5.6.2: the bytes allowed in methods and field names.
static TOKEN: [bool; 256] = byte_table(&[
    (b'0', b'9'),
    (b'A', b'Z'),
    (b'a', b'z'),
    (b'!', b'!'),
    (b'#', b'\''),
    (b'*', b'+'),
    (b'-', b'.'),
    (b'^', b'`'),
    (b'|', b'|'),
    (b'~', b'~'),
]);

/// Bytes allowed in the request-target: visible ASCII.
static TARGET: [bool; 256] = byte_table(&[(0x21, 0x7e)]);

/// Bytes allowed inside a field value: HTAB, SP, visible ASCII and obs-text.
static VALUE: [bool; 256] = byte_table(&[(b'\t', b'\t'), (0x20, 0x7e), (0x80, 0xff)]);

/// Returns `true` for the bytes allowed in a token (methods, field names).
pub(crate) fn is_token(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

/// Returns `true` for the bytes allowed in a field value (and chunk extensions, trailers).
pub(crate) fn is_value_byte(b: u8) -> bool {
    VALUE[usize::from(b)]
}

/// Removes leading and trailing SP/HTAB (optional whitespace, RFC 9110 §5.6.3).
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Why scanning stopped before producing a result.
enum Stop {
    /// The input ended before the item did.
    Partial,
    /// The input is invalid.
    Error(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Error(e)
    }
}

/// A read-only cursor over the input with an upper bound that stands for the active size limit.
/// Asking for a byte at or past the bound is the limit error even if that byte has not arrived,
/// because any continuation would exceed the limit; asking for a byte that has not arrived yet
/// (within the bound) is [`Stop::Partial`]. This gives "first violation in byte order"
/// semantics: a prefix of the input yields `Partial` or the same error as the whole input.
struct Cursor<'b> {
    buf: &'b [u8],
    bound: usize,
    bound_error: Error,
}

impl<'b> Cursor<'b> {
    /// Returns the byte at `i`, or why it cannot.
    #[inline]
    fn byte(&self, i: usize) -> Result<u8, Stop> {
        if i >= self.bound {
            return Err(Stop::Error(self.bound_error));
        }
        match self.buf.get(i) {
            Some(&b) => Ok(b),
            None => Err(Stop::Partial),
        }
    }

    /// Returns the index of the first byte at or after `from` that is not in `table`, or the
    /// end of the readable range; the caller then asks for that byte with [`Cursor::byte`] to
    /// learn whether the input ended, hit the limit, or holds a delimiter.
    #[inline]
    fn scan(&self, from: usize, table: &[bool; 256]) -> usize {
        let end = self.buf.len().min(self.bound);
        match self.buf.get(from..end) {
            Some(run) => run
                .iter()
                .position(|&b| !table[usize::from(b)])
                .map_or(end, |p| from + p),
            None => from,
        }
    }

    /// Like [`Cursor::scan`], but first skips whole 8-byte words that `word_ok` proves to be
    /// in `table`, falling back to the table for the word that holds the stop byte. Targets
    /// and field values are the long runs in a head, and this makes them several times cheaper
    /// without `unsafe` or SIMD intrinsics.
    #[inline]
    fn scan_words(&self, from: usize, table: &[bool; 256], word_ok: fn(u64) -> bool) -> usize {
        let end = self.buf.len().min(self.bound);
        let mut i = from;
        loop {
            while let Some(word) = self
                .buf
                .get(i..end)
                .and_then(|rest| rest.first_chunk::<8>())
            {
                if !word_ok(u64::from_le_bytes(*word)) {
                    break;
                }
                i += 8;
            }
            let stop = end.min(i.saturating_add(8));
            match self.buf.get(i..stop) {
                Some(run) => match run.iter().position(|&b| !table[usize::from(b)]) {
                    Some(p) => return i + p,
                    None if stop >= end => return end,
                    None => i = stop,
                },
                None => return i,
            }
        }
    }

    /// Consumes the exact bytes `expected` starting at `at`, returning the index after them.
    fn expect(&self, at: usize, expected: &[u8]) -> Result<usize, Stop> {
        for (k, &e) in expected.iter().enumerate() {
            if self.byte(at + k)? != e {
                return Err(Stop::Error(Error::BadRequest));
            }
        }
        Ok(at + expected.len())
    }

    /// Consumes a CRLF at `at`, returning the index after it.
    fn crlf(&self, at: usize) -> Result<usize, Stop> {
        self.expect(at, b"\r\n")
    }
}

/// Converts a slice that the scanner has already restricted to ASCII (methods, targets, field
/// names) into `&str`.
///
/// `std::str::from_utf8` was a fifth of the parse time in the benchmark (an out-of-line call
/// per field name), so this checks `is_ascii` (inlined, a word at a time) instead. The check
/// is local, so soundness does not depend on the scanner's tables; the failure branch cannot be
/// taken but is mapped to 400 rather than a panic.
#[inline]
fn ascii_str(bytes: &[u8]) -> Result<&str, Stop> {
    if !bytes.is_ascii() {
        return Err(Stop::Error(Error::BadRequest));
    }
    // SAFETY: every byte was just checked to be ASCII (< 0x80), and any sequence of ASCII bytes
    // is valid UTF-8.
    Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// Finds the end of the head in `buf` (the index just past the CRLF CRLF that ends it), starting
/// the search at `from` so a caller that re-scans after every read does linear total work
/// (pass the previous buffer length minus 3, or 0). Leading empty lines are skipped the way
/// [`parse_head`] skips them. This is only a fast pre-check: because the parser treats every CR
/// as a line end (or rejects it), the first CRLF CRLF after the leading empty lines is the end of
/// the head whenever the head is valid, and [`parse_head`] must still validate it.
pub fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut lead = 0;
    while buf.get(lead..lead + 2) == Some(b"\r\n") {
        lead += 2;
    }
    // The LF that ends the CRLF CRLF window starting at `from` or later.
    let mut i = from.max(lead).saturating_add(3);
    loop {
        let lf = i + find_lf(buf.get(i..)?)?;
        if buf.get(lf - 3..lf) == Some(b"\r\n\r") {
            return Some(lf + 1);
        }
        i = lf + 1;
    }
}

/// Finds the first LF in `buf`, a word at a time.
fn find_lf(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(word) = buf.get(i..).and_then(|rest| rest.first_chunk::<8>()) {
        if has_byte(u64::from_le_bytes(*word), b'\n') {
            break;
        }
        i += 8;
    }
    buf.get(i..)?
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| i + p)
}

/// `0x01` in every byte of a word.
const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
/// `0x80` in every byte of a word.
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether any byte of `word` is below `n` (exact for `n <= 0x80`; bytes with the high bit set
/// never count as below).
#[inline]
fn has_less(word: u64, n: u8) -> bool {
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS != 0
}

/// Whether any byte of `word` equals `b`.
#[inline]
fn has_byte(word: u64, b: u8) -> bool {
    has_less(word ^ (ONES * u64::from(b)), 1)
}

/// Whether all eight bytes are request-target bytes (visible ASCII).
fn target_word(word: u64) -> bool {
    word & HIGHS == 0 && !has_less(word, 0x21) && !has_byte(word, 0x7f)
}

/// Whether all eight bytes are field-value bytes other than HTAB (which the table handles).
fn value_word(word: u64) -> bool {
    !has_less(word, 0x20) && !has_byte(word, 0x7f)
}

/// Parses a request head from the start of `buf`.
///
/// `headers` is cleared and receives the header fields; it is a `Vec` so its allocation can be
/// reused for every request on a connection (see [`super::recycle_headers`]) while the number of
/// fields is bounded by `limits.header_count_max`, not by a compile-time array size.
///
/// Returns [`Progress::Partial`] when `buf` is a valid prefix of a head, the complete [`Head`]
/// when the head is complete (bytes after it are not examined), or the [`Error`] of the first
/// violation in byte order. It never panics, whatever `buf` holds.
pub fn parse_head<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut Vec<Header<'b>>,
    limits: &Limits,
) -> Result<Progress<Head<'h>>, Error>
where
    'b: 'h,
{
    headers.clear();
    match parse_inner(buf, headers, limits) {
        Ok(parts) => {
            let framing = body_framing(headers, parts.minor_version, limits)?;
            let headers: &'h [Header<'b>] = headers;
            Ok(Progress::Complete(Head {
                request: Request {
                    method: parts.method,
                    method_str: parts.method_str,
                    target: parts.target,
                    path: parts.path,
                    query: parts.query,
                    minor_version: parts.minor_version,
                    headers,
                },
                len: parts.len,
                body: framing.body,
                expect_continue: framing.expect_continue,
            }))
        }
        Err(Stop::Partial) => Ok(Progress::Partial),
        Err(Stop::Error(e)) => Err(e),
    }
}

/// The request-line parts of a complete head, before the headers are borrowed into a `Request`.
struct Parts<'b> {
    method: Method,
    method_str: &'b str,
    target: &'b str,
    path: &'b str,
    query: &'b str,
    minor_version: u8,
    len: usize,
}

fn parse_inner<'b>(
    buf: &'b [u8],
    headers: &mut Vec<Header<'b>>,
    limits: &Limits,
) -> Result<Parts<'b>, Stop> {
    let mut cur = Cursor {
        buf,
        bound: limits.header_bytes_max,
        bound_error: Error::HeaderFieldsTooLarge,
    };

    // Leading empty lines (bounded by the head limit).
    let mut pos = 0;
    while cur.byte(pos)? == b'\r' {
        pos = cur.crlf(pos)?;
    }

    // The request line is bounded by whichever limit comes first; a tie is reported as 414
    // because the request line is what overflowed.
    let line_start = pos;
    let head_bound = cur.bound;
    let line_bound = line_start.saturating_add(limits.request_line_max);
    if line_bound <= head_bound {
        cur.bound = line_bound;
        cur.bound_error = Error::UriTooLong;
    }

    // method SP
    let method_end = cur.scan(pos, &TOKEN);
    if cur.byte(method_end)? != b' ' || method_end == pos {
        return Err(Error::BadRequest.into());
    }
    let method_bytes = &buf[pos..method_end];
    let method = Method::from_token(method_bytes);
    let method_str = ascii_str(method_bytes)?;

    // request-target SP
    pos = method_end + 1;
    let target_end = cur.scan_words(pos, &TARGET, target_word);
    if cur.byte(target_end)? != b' ' || target_end == pos {
        return Err(Error::BadRequest.into());
    }
    let target = ascii_str(&buf[pos..target_end])?;
    let origin_form = target.starts_with('/');
    let asterisk_form = target == "*" && method == Method::Options;
    if !origin_form && !asterisk_form {
        return Err(Error::BadRequest.into());
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    };

    // HTTP-version CRLF
    pos = cur.expect(target_end + 1, b"HTTP/")?;
    let major = cur.byte(pos)?;
    if !major.is_ascii_digit() {
        return Err(Error::BadRequest.into());
    }
    if cur.byte(pos + 1)? != b'.' {
        return Err(Error::BadRequest.into());
    }
    let minor = cur.byte(pos + 2)?;
    if !minor.is_ascii_digit() {
        return Err(Error::BadRequest.into());
    }
    let minor_version = match (major, minor) {
        (b'1', b'0') => 0,
        (b'1', b'1') => 1,
        _ => return Err(Error::VersionNotSupported.into()),
    };
    pos = cur.crlf(pos + 3)?;

    // Header lines until the empty line, bounded by the head limit.
    cur.bound = head_bound;
    cur.bound_error = Error::HeaderFieldsTooLarge;
    loop {
        if cur.byte(pos)? == b'\r' {
            pos = cur.crlf(pos)?;
            break;
        }
        if headers.len() >= limits.header_count_max {
            return Err(Error::HeaderFieldsTooLarge.into());
        }
        // field-name ":" (a line starting with SP/HTAB, i.e. obs-fold, fails here too)
        let name_end = cur.scan(pos, &TOKEN);
        if cur.byte(name_end)? != b':' || name_end == pos {
            return Err(Error::BadRequest.into());
        }
        let name = ascii_str(&buf[pos..name_end])?;
        // OWS field-value OWS CRLF
        let value_start = name_end + 1;
        let value_end = cur.scan_words(value_start, &VALUE, value_word);
        if cur.byte(value_end)? != b'\r' {
            return Err(Error::BadRequest.into());
        }
        pos = cur.crlf(value_end)?;
        let value = trim_ows(&buf[value_start..value_end]);
        headers.push(Header { name, value });
    }

    Ok(Parts {
        method,
        method_str,
        target,
        path,
        query,
        minor_version,
        len: pos,
    })
}

/// The framing-related facts of a head.
struct Framing {
    body: BodyKind,
    expect_continue: bool,
}

/// Decides how the body is delimited and whether the client expects `100 Continue`, rejecting
/// the ambiguous combinations RFC 9112 §6 lets a server reject (see the module docs).
fn body_framing(
    headers: &[Header<'_>],
    minor_version: u8,
    limits: &Limits,
) -> Result<Framing, Error> {
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut codings = 0usize;
    let mut last_is_chunked = false;
    let mut expect_continue = false;

    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let value = parse_content_length(h.value).ok_or(Error::BadRequest)?;
            if content_length.is_some_and(|previous| previous != value) {
                return Err(Error::BadRequest);
            }
            content_length = Some(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            for coding in h.value.split(|&b| b == b',') {
                let coding = trim_ows(coding);
                if coding.is_empty() {
                    // Empty list elements are legal list syntax but a sign of mangling here.
                    return Err(Error::BadRequest);
                }
                if last_is_chunked {
                    // `chunked` must be the final coding and applied only once (RFC 9112 §6.1).
                    return Err(Error::BadRequest);
                }
                codings += 1;
                last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"expect")
            && h.value.eq_ignore_ascii_case(b"100-continue")
        {
            expect_continue = minor_version >= 1;
        }
    }

    let body = if transfer_encoding {
        if content_length.is_some() || minor_version == 0 || !last_is_chunked {
            return Err(Error::BadRequest);
        }
        if codings != 1 {
            return Err(Error::NotImplemented);
        }
        BodyKind::Chunked
    } else if let Some(length) = content_length {
        match usize::try_from(length) {
            Ok(length) if length <= limits.body_bytes_max => {
                if length == 0 {
                    BodyKind::None
                } else {
                    BodyKind::Length(length)
                }
            }
            _ => return Err(Error::ContentTooLarge),
        }
    } else {
        BodyKind::None
    };
    Ok(Framing {
        body,
        expect_continue,
    })
}

/// Parses `1*DIGIT` into a `u64`, returning `None` for an empty value, any non-digit (including
/// a sign, whitespace inside, or a comma-separated list) or overflow.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}
