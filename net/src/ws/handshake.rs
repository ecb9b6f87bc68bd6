//! The opening handshake (RFC 6455 §4.2): validating an upgrade request and writing the 101.
//!
//! The handshake is an ordinary HTTP/1.1 request, already parsed by [`crate::http::parse_head`],
//! so this module only reads a [`Request`]: [`validate_upgrade`] checks the fields RFC 6455
//! §4.2.1 requires and names the first one that is wrong with a [`HandshakeError`] (which says
//! how to answer), [`offered_protocols`] lists the subprotocols the client offers without
//! allocating, and [`write_accept`] appends the `101 Switching Protocols` response to the
//! connection's output buffer. Choosing a subprotocol, checking `Origin` and authenticating are
//! the application's business.
//!
//! # Strictness (deliberate, documented choices)
//!
//! * The method must be `GET` and the version HTTP/1.1 (400 otherwise).
//! * `Upgrade` must list `websocket` and `Connection` must list `upgrade`, both as
//!   comma-separated, case-insensitive token lists over any number of fields (400 otherwise):
//!   browsers send `Connection: keep-alive, Upgrade`.
//! * `Sec-WebSocket-Version` must be one field whose value is exactly `13`; missing, repeated
//!   or any other value is answered 426 with `Sec-WebSocket-Version: 13`, so the client learns
//!   what we speak (RFC 6455 §4.2.2).
//! * `Sec-WebSocket-Key` must be one field holding canonical padded base64 of exactly 16 bytes
//!   (24 characters); anything else is a 400.
//! * `Sec-WebSocket-Protocol` elements that are not tokens are skipped, since they could never
//!   be selected. `Sec-WebSocket-Extensions` is ignored: declining every extension (notably
//!   `permessage-deflate`) is done by not echoing it.
//! * `Host` is not checked here (it is the HTTP layer's concern, and routing's), nor `Origin`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

use crate::http::{Header, Method, Request};

/// The GUID RFC 6455 §1.3 appends to the client's key before hashing.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version this codec speaks (RFC 6455).
pub const WEBSOCKET_VERSION: &str = "13";

/// Length of a `Sec-WebSocket-Accept` value: base64 of a 20-byte SHA-1 digest.
pub const ACCEPT_KEY_LEN: usize = 28;

/// Length of a valid `Sec-WebSocket-Key`: padded base64 of 16 bytes.
const KEY_BASE64_LEN: usize = 24;

/// Why a request is not a valid WebSocket upgrade. [`HandshakeError::status`] and
/// [`HandshakeError::headers`] give the answer; the connection can stay an HTTP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The method is not `GET`: 400.
    Method,
    /// The request is HTTP/1.0: 400.
    HttpVersion,
    /// No `Upgrade` field lists `websocket`: 400. (An endpoint that only speaks WebSocket may
    /// prefer 426 for plain requests; that is the caller's choice.)
    Upgrade,
    /// No `Connection` field lists `upgrade`: 400.
    Connection,
    /// `Sec-WebSocket-Version` is missing, repeated or not `13`: 426 with
    /// `Sec-WebSocket-Version: 13`.
    Version,
    /// `Sec-WebSocket-Key` is missing, repeated, or not base64 of 16 bytes: 400.
    Key,
}

impl HandshakeError {
    /// The response status for this error.
    pub fn status(self) -> u16 {
        match self {
            HandshakeError::Version => 426,
            HandshakeError::Method
            | HandshakeError::HttpVersion
            | HandshakeError::Upgrade
            | HandshakeError::Connection
            | HandshakeError::Key => 400,
        }
    }

    /// Headers the response must carry, ready for [`crate::http::Response::send`]. For a
    /// version mismatch: the version we speak (RFC 6455 §4.2.2), and the `Upgrade` field that a
    /// 426 must carry (RFC 9110 §15.5.22) with the `Connection` option that goes with it (§7.8).
    pub fn headers(self) -> &'static [(&'static str, &'static [u8])] {
        match self {
            HandshakeError::Version => &[
                ("sec-websocket-version", b"13"),
                ("upgrade", b"websocket"),
                ("connection", b"upgrade"),
            ],
            HandshakeError::Method
            | HandshakeError::HttpVersion
            | HandshakeError::Upgrade
            | HandshakeError::Connection
            | HandshakeError::Key => &[],
        }
    }

    /// A short description, for logs and the body of the error response.
    pub fn reason(self) -> &'static str {
        match self {
            HandshakeError::Method => "WebSocket upgrade requires GET",
            HandshakeError::HttpVersion => "WebSocket upgrade requires HTTP/1.1",
            HandshakeError::Upgrade => "Upgrade does not list websocket",
            HandshakeError::Connection => "Connection does not list upgrade",
            HandshakeError::Version => "unsupported Sec-WebSocket-Version",
            HandshakeError::Key => "invalid Sec-WebSocket-Key",
        }
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for HandshakeError {}

/// A valid upgrade request: what the 101 response needs from it.
#[derive(Clone, Copy, Debug)]
pub struct Upgrade<'a> {
    key: &'a [u8],
    headers: &'a [Header<'a>],
}

impl<'a> Upgrade<'a> {
    /// The client's `Sec-WebSocket-Key`, as sent (24 base64 characters).
    pub fn key(&self) -> &'a [u8] {
        self.key
    }

    /// The `Sec-WebSocket-Accept` value for this request.
    pub fn accept_key(&self) -> [u8; ACCEPT_KEY_LEN] {
        accept_key(self.key)
    }

    /// The subprotocols the client offers, in its order of preference.
    pub fn protocols(&self) -> Protocols<'a> {
        Protocols {
            headers: self.headers.iter(),
            rest: b"",
        }
    }
}

/// Checks that `req` is a valid WebSocket opening handshake (see the module docs for the rules)
/// and returns what the response needs, or the first violation in the order the rules are
/// listed there.
pub fn validate_upgrade<'a>(req: &Request<'a>) -> Result<Upgrade<'a>, HandshakeError> {
    if req.method != Method::Get {
        return Err(HandshakeError::Method);
    }
    if req.minor_version < 1 {
        return Err(HandshakeError::HttpVersion);
    }
    let headers: &'a [Header<'a>] = req.headers;
    if !lists_token(headers, "upgrade", b"websocket") {
        return Err(HandshakeError::Upgrade);
    }
    if !lists_token(headers, "connection", b"upgrade") {
        return Err(HandshakeError::Connection);
    }
    match single(headers, "sec-websocket-version") {
        Some(version) if version == WEBSOCKET_VERSION.as_bytes() => {}
        _ => return Err(HandshakeError::Version),
    }
    let key = single(headers, "sec-websocket-key").ok_or(HandshakeError::Key)?;
    if !valid_key(key) {
        return Err(HandshakeError::Key);
    }
    Ok(Upgrade { key, headers })
}

/// Computes `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` as sent: base64 of the SHA-1 of the
/// key followed by [`WEBSOCKET_GUID`] (RFC 6455 §4.2.2). Returned by value, as ASCII bytes, so
/// writing it allocates nothing.
pub fn accept_key(key: &[u8]) -> [u8; ACCEPT_KEY_LEN] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID.as_bytes());
    let digest = sha.finalize();
    let mut accept = [0u8; ACCEPT_KEY_LEN];
    // 20 bytes always encode to exactly 28 characters, so this cannot fail.
    if let Err(error) = STANDARD.encode_slice(digest, &mut accept) {
        tracing::error!(%error, "encoding Sec-WebSocket-Accept failed");
    }
    accept
}

/// The subprotocols offered in `req`'s `Sec-WebSocket-Protocol` fields (comma-separated lists,
/// possibly in several fields), in order, without allocating. Empty elements and elements that
/// are not tokens are skipped.
pub fn offered_protocols<'a>(req: &Request<'a>) -> Protocols<'a> {
    Protocols {
        headers: req.headers.iter(),
        rest: b"",
    }
}

/// Iterator over offered subprotocols; see [`offered_protocols`].
#[derive(Clone, Debug)]
pub struct Protocols<'a> {
    /// The header fields not yet looked at.
    headers: std::slice::Iter<'a, Header<'a>>,
    /// The unread part of the current `Sec-WebSocket-Protocol` value.
    rest: &'a [u8],
}

impl<'a> Iterator for Protocols<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            if self.rest.is_empty() {
                let header = self
                    .headers
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"))?;
                self.rest = header.value;
                continue;
            }
            let (element, rest) = match self.rest.iter().position(|&b| b == b',') {
                Some(comma) => (&self.rest[..comma], &self.rest[comma + 1..]),
                None => (self.rest, &b""[..]),
            };
            self.rest = rest;
            let element = trim_ows(element);
            if element.is_empty() || !element.iter().all(|&b| is_tchar(b)) {
                continue;
            }
            if let Ok(protocol) = std::str::from_utf8(element) {
                return Some(protocol);
            }
        }
    }
}

/// Appends the `101 Switching Protocols` response accepting `upgrade` to `out`.
///
/// `protocol` is the selected subprotocol: it must be one the client offered, since RFC 6455
/// §4.2.2 forbids answering with any other; a protocol the client did not offer (including any
/// protocol when it offered none) is dropped, and logged, and the response selects none. No
/// extension is accepted. After this response the connection speaks WebSocket frames.
pub fn write_accept(out: &mut Vec<u8>, upgrade: &Upgrade<'_>, protocol: Option<&str>) {
    let protocol = protocol.filter(|&selected| {
        let offered = upgrade.protocols().any(|p| p == selected);
        if !offered {
            tracing::warn!(
                selected,
                "subprotocol not offered by the client; selecting none"
            );
        }
        offered
    });
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          upgrade: websocket\r\n\
          connection: Upgrade\r\n\
          sec-websocket-accept: ",
    );
    out.extend_from_slice(&upgrade.accept_key());
    out.extend_from_slice(b"\r\n");
    if let Some(protocol) = protocol {
        out.extend_from_slice(b"sec-websocket-protocol: ");
        out.extend_from_slice(protocol.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether any field called `name` lists `token` (ASCII case-insensitively) in its
/// comma-separated value.
fn lists_token(headers: &[Header<'_>], name: &str, token: &[u8]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|element| trim_ows(element).eq_ignore_ascii_case(token))
}

/// The value of the only field called `name`, or `None` when there is none or more than one.
fn single<'a>(headers: &'a [Header<'a>], name: &str) -> Option<&'a [u8]> {
    let mut matching = headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
    let first = matching.next()?;
    match matching.next() {
        Some(_) => None,
        None => Some(first.value),
    }
}

/// Whether `key` is canonical padded base64 of exactly 16 bytes.
fn valid_key(key: &[u8]) -> bool {
    if key.len() != KEY_BASE64_LEN {
        return false;
    }
    // The decoder wants room for its estimate (18 bytes for 24 characters).
    let mut decoded = [0u8; 18];
    matches!(STANDARD.decode_slice(key, &mut decoded), Ok(16))
}

/// Removes leading and trailing SP/HTAB.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `tchar` (RFC 9110 §5.6.2): subprotocol names are tokens (RFC 6455 §4.1).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
