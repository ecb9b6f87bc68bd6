//! The response writer: appends one HTTP/1.1 response to the connection's output buffer.
//!
//! Responses are only appended; the connection loop decides when to flush, so several pipelined
//! responses leave in one `write` syscall. Every response carries `content-length` (no chunked
//! responses), because bodies here are produced in memory and a length lets clients keep the
//! connection alive without extra framing.

use super::parse::{Method, Request, is_token, is_value_byte};

/// Returns the reason phrase for `status`, or `"Unknown"` for codes without one. The phrase is
/// informational only (RFC 9112 §4) but clients and humans reading traces expect the usual text.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The interim response written before reading a body the client held back with
/// `Expect: 100-continue`.
pub const CONTINUE_RESPONSE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Writes one response into the connection's output buffer (appends; the server loop flushes).
///
/// The first `send`/`send_with` wins; later calls are ignored, so a handler cannot corrupt the
/// stream by answering twice. Header names must be tokens and values must not contain CR, LF or
/// other controls besides HTAB: an invalid pair is dropped (and logged) instead of written,
/// because writing it could split the response. Handlers must not pass `content-length` or
/// `transfer-encoding` (the writer frames the body itself) and should use
/// [`Response::close_after`] rather than a `connection` header; a `connection: close` pair is
/// nevertheless honoured as a close request.
#[derive(Debug)]
pub struct Response<'o> {
    out: &'o mut Vec<u8>,
    head_only: bool,
    minor_version: u8,
    close: bool,
    sent: bool,
}

impl<'o> Response<'o> {
    /// Creates a writer for the response to `req`: bodies are suppressed for `HEAD`, the
    /// connection is marked to close when the request does not allow keep-alive, and HTTP/1.0
    /// keep-alive responses say `connection: keep-alive` because 1.0 clients close otherwise.
    pub fn for_request(out: &'o mut Vec<u8>, req: &Request<'_>) -> Response<'o> {
        Response {
            out,
            head_only: req.method == Method::Head,
            minor_version: req.minor_version,
            close: !req.keep_alive(),
            sent: false,
        }
    }

    /// Creates a writer for a response that is not tied to a parsed request (error responses):
    /// HTTP/1.1 semantics, a body, and the connection marked to close when `close` is set.
    pub fn detached(out: &'o mut Vec<u8>, close: bool) -> Response<'o> {
        Response {
            out,
            head_only: false,
            minor_version: 1,
            close,
            sent: false,
        }
    }

    /// Status line + given headers + `content-length` + body. Adds `connection: close` when the
    /// connection will close. `headers` are (name, value) pairs written verbatim (after the
    /// validation described on [`Response`]).
    pub fn send(&mut self, status: u16, headers: &[(&str, &[u8])], body: &[u8]) {
        if self.sent {
            tracing::debug!(status, "response already sent; ignoring a second send");
            return;
        }
        let status = self.write_head(status, headers, body.len());
        if has_body(status) && !self.head_only {
            self.out.extend_from_slice(body);
        }
    }

    /// Same as [`Response::send`], but the body is produced by `write_body` appending to the
    /// buffer. The body is written first, then the head is appended behind it and the two are
    /// rotated into place, so the only copy of the body besides its creation is that one move
    /// (no intermediate `Vec`). For `HEAD`, 1xx, 204 and 304 responses the produced bytes are
    /// measured (for `HEAD`) and then discarded.
    pub fn send_with(
        &mut self,
        status: u16,
        headers: &[(&str, &[u8])],
        write_body: impl FnOnce(&mut Vec<u8>),
    ) {
        if self.sent {
            tracing::debug!(status, "response already sent; ignoring a second send_with");
            return;
        }
        let start = self.out.len();
        write_body(self.out);
        // A closure that truncated the buffer would otherwise make the subtraction underflow.
        let body_len = self.out.len().saturating_sub(start);
        let status = clamp_status(status);
        let keep_body = has_body(status) && !self.head_only;
        let body_start = self.out.len().min(start);
        if !keep_body {
            self.out.truncate(body_start);
        }
        let head_start = self.out.len();
        self.write_head(status, headers, body_len);
        if keep_body {
            // out[body_start..head_start] is the body, out[head_start..] the head: swap them.
            self.out[body_start..].rotate_left(head_start - body_start);
        }
    }

    /// Asks the server loop to close the connection after this response. Called before
    /// `send`, the response also carries `connection: close`; called after, the connection is
    /// still closed once the response is flushed.
    pub fn close_after(&mut self) {
        self.close = true;
    }

    /// Whether a response has been written.
    pub fn is_sent(&self) -> bool {
        self.sent
    }

    /// Whether the connection will be closed after this response.
    pub fn will_close(&self) -> bool {
        self.close
    }

    /// Appends the status line and headers for a body of `body_len` bytes and marks the
    /// response sent; returns the status actually written.
    fn write_head(&mut self, status: u16, headers: &[(&str, &[u8])], body_len: usize) -> u16 {
        let status = clamp_status(status);
        for &(name, value) in headers {
            if name.eq_ignore_ascii_case("connection")
                && value
                    .split(|&b| b == b',')
                    .any(|o| super::parse::trim_ows(o).eq_ignore_ascii_case(b"close"))
            {
                self.close = true;
            }
        }
        let out = &mut *self.out;
        let mut code = itoa::Buffer::new();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(code.format(status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason_phrase(status).as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut wrote_connection = false;
        for &(name, value) in headers {
            if !valid_header(name, value) {
                tracing::warn!(name, "dropping an invalid response header");
                continue;
            }
            wrote_connection |= name.eq_ignore_ascii_case("connection");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        // RFC 9110 §8.6: no content-length in 1xx and 204; for 304 it would describe the
        // representation, which this writer does not know.
        if has_body(status) {
            let mut len = itoa::Buffer::new();
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(len.format(body_len).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !wrote_connection {
            if self.close {
                out.extend_from_slice(b"connection: close\r\n");
            } else if self.minor_version == 0 {
                out.extend_from_slice(b"connection: keep-alive\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
        self.sent = true;
        status
    }
}

/// Replaces status codes that cannot be written as three digits by 500, because a malformed
/// status line would break the client's parser and the whole connection with it.
fn clamp_status(status: u16) -> u16 {
    if (100..=999).contains(&status) {
        status
    } else {
        500
    }
}

/// Whether a response with `status` carries a body (and `content-length`).
fn has_body(status: u16) -> bool {
    !matches!(status, 100..=199 | 204 | 304)
}

/// Whether a handler-supplied header can be written without corrupting the response.
fn valid_header(name: &str, value: &[u8]) -> bool {
    !name.is_empty() && name.bytes().all(is_token) && value.iter().all(|&b| is_value_byte(b))
}
