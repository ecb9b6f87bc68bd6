//! RivetKit 2.0.33 connection messages in the JSON encoding (protocol §8), sans IO: the client's
//! `ActionRequest` and `SubscriptionRequest` frames, a decoder of the server's `ToClient` frames
//! (`Init`, `ActionResponse`, `Error`, `Event`) and [`InFlight`], which matches responses to
//! requests by id.
//!
//! The decoder is a small allocation-free JSON scanner, not a JSON library: it walks the frame
//! once, checks that it is well-formed JSON, accepts the fields in any order, and hands back the
//! few pieces loadgen needs (ids, names, the raw `args` of events) as slices of the frame.
//! Message ids are BigInts on the wire (`["$BigInt","<n>"]`, §3.1); anything else where an id
//! belongs is an error, as it is for the official client.
//!
//! Nothing here refers to the rest of the crate, so `tests/ws_protocol.rs` includes the file
//! as it is.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;

/// How deep the scanner follows nested arrays and objects.
const JSON_DEPTH_MAX: usize = 128;

/// The bytes of one `ActionRequest`, built once: only the id changes between requests.
#[derive(Debug, Clone)]
pub(crate) struct ActionTemplate {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
}

impl ActionTemplate {
    /// `name_json` is the action name as a JSON string literal (quotes included); `args_json`
    /// the arguments as a JSON array, sent as they are.
    pub(crate) fn new(name_json: &str, args_json: &str) -> ActionTemplate {
        ActionTemplate {
            prefix: br#"{"body":{"tag":"ActionRequest","val":{"id":["$BigInt",""#.to_vec(),
            suffix: format!(r#""],"name":{name_json},"args":{args_json}}}}}}}"#).into_bytes(),
        }
    }

    /// Appends the request with id `id`.
    pub(crate) fn write(&self, out: &mut Vec<u8>, id: u64) {
        out.extend_from_slice(&self.prefix);
        write_decimal(out, id);
        out.extend_from_slice(&self.suffix);
    }
}

fn write_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A `SubscriptionRequest` for the event named by `event_json` (a JSON string literal).
pub(crate) fn subscription_request(event_json: &str, subscribe: bool) -> String {
    format!(
        r#"{{"body":{{"tag":"SubscriptionRequest","val":{{"eventName":{event_json},"subscribe":{subscribe}}}}}}}"#
    )
}

/// A JSON string as written in the frame (without the quotes, escapes not decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Str<'a> {
    raw: &'a [u8],
}

impl<'a> Str<'a> {
    /// Whether the decoded string is `text`.
    pub(crate) fn is(&self, text: &str) -> bool {
        if self.raw.contains(&b'\\') {
            self.decode() == text
        } else {
            self.raw == text.as_bytes()
        }
    }

    /// The decoded string (the scanner already checked the escapes; a lone surrogate becomes
    /// U+FFFD).
    pub(crate) fn decode(&self) -> String {
        if !self.raw.contains(&b'\\') {
            return String::from_utf8_lossy(self.raw).into_owned();
        }
        let mut out = String::with_capacity(self.raw.len());
        let mut bytes = self.raw;
        while let Some(at) = bytes.iter().position(|&b| b == b'\\') {
            out.push_str(&String::from_utf8_lossy(&bytes[..at]));
            let escape = bytes[at + 1];
            bytes = &bytes[at + 2..];
            match escape {
                b'n' => out.push('\n'),
                b't' => out.push('\t'),
                b'r' => out.push('\r'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'u' => {
                    let high = hex4(bytes);
                    bytes = &bytes[4..];
                    let low = (0xD800..0xDC00).contains(&high)
                        && bytes.starts_with(b"\\u")
                        && (0xDC00..0xE000).contains(&hex4(&bytes[2..]));
                    let code = if low {
                        let low = hex4(&bytes[2..]);
                        bytes = &bytes[6..];
                        0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        high
                    };
                    out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                }
                other => out.push(char::from(other)),
            }
        }
        out.push_str(&String::from_utf8_lossy(bytes));
        out
    }
}

/// Four hex digits (checked by the scanner) as a number.
fn hex4(bytes: &[u8]) -> u32 {
    bytes[..4].iter().fold(0, |acc, &b| {
        acc * 16 + char::from(b).to_digit(16).unwrap_or(0)
    })
}

/// A frame from the server, as far as loadgen cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToClient<'a> {
    Init {
        actor_id: Str<'a>,
        connection_id: Str<'a>,
    },
    /// The answer to the action with this id (its output is skipped).
    ActionResponse { id: u64 },
    /// An error for the action `action_id`, or for the connection (`None`: `"actionId":null` or
    /// no `actionId`).
    Error {
        action_id: Option<u64>,
        group: Str<'a>,
        code: Str<'a>,
        message: Str<'a>,
    },
    /// A broadcast or `conn.send`: the event name and its `args` array as raw JSON.
    Event { name: Str<'a>, args: &'a [u8] },
}

/// Why a frame is not a `ToClient` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Not well-formed JSON: what was expected, at which byte.
    Syntax { expected: &'static str, at: usize },
    /// Well-formed, but not the message shape: what is missing or wrong.
    Shape(&'static str),
    /// A `body.tag` the 2.0.33 protocol does not have.
    UnknownTag(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Syntax { expected, at } => {
                write!(f, "invalid JSON: expected {expected} at byte {at}")
            }
            DecodeError::Shape(what) => write!(f, "unexpected message shape: {what}"),
            DecodeError::UnknownTag(tag) => write!(f, "unknown message tag `{tag}`"),
        }
    }
}

/// Decodes one server frame (the payload of a text or binary WebSocket message).
pub(crate) fn decode(payload: &[u8]) -> Result<ToClient<'_>, DecodeError> {
    let mut cursor = Cursor::new(payload);
    let mut body = None;
    cursor.object(|key, cursor| {
        let value = cursor.value()?;
        if key.is("body") {
            body = Some(value);
        }
        Ok(())
    })?;
    cursor.end()?;
    let body = body.ok_or(DecodeError::Shape("no `body`"))?;
    let mut tag = None;
    let mut val = None;
    Cursor::at(payload, body.start).object(|key, cursor| {
        if key.is("tag") {
            tag = Some(cursor.string()?);
        } else if key.is("val") {
            val = Some(cursor.value()?);
        } else {
            cursor.value()?;
        }
        Ok(())
    })?;
    let tag = tag.ok_or(DecodeError::Shape("no string `body.tag`"))?;
    let val = val.ok_or(DecodeError::Shape("no `body.val`"))?;
    let mut val = Cursor::at(payload, val.start);
    if tag.is("ActionResponse") {
        let mut id = None;
        val.object(|key, cursor| {
            if key.is("id") {
                id = Some(cursor.bigint()?);
            } else {
                cursor.value()?;
            }
            Ok(())
        })?;
        let id = id.ok_or(DecodeError::Shape("ActionResponse without `id`"))?;
        Ok(ToClient::ActionResponse { id })
    } else if tag.is("Event") {
        let mut name = None;
        let mut args = None;
        val.object(|key, cursor| {
            if key.is("name") {
                name = Some(cursor.string()?);
            } else if key.is("args") {
                if cursor.peek() != Some(b'[') {
                    return Err(DecodeError::Shape("Event `args` is not an array"));
                }
                args = Some(cursor.value()?);
            } else {
                cursor.value()?;
            }
            Ok(())
        })?;
        let name = name.ok_or(DecodeError::Shape("Event without a string `name`"))?;
        let args = args.ok_or(DecodeError::Shape("Event without `args`"))?;
        Ok(ToClient::Event {
            name,
            args: &payload[args],
        })
    } else if tag.is("Error") {
        let mut action_id = None;
        let mut group = None;
        let mut code = None;
        let mut message = None;
        val.object(|key, cursor| {
            if key.is("actionId") {
                action_id = if cursor.peek() == Some(b'n') {
                    cursor.value()?;
                    None
                } else {
                    Some(cursor.bigint()?)
                };
            } else if key.is("group") {
                group = Some(cursor.string()?);
            } else if key.is("code") {
                code = Some(cursor.string()?);
            } else if key.is("message") {
                message = Some(cursor.string()?);
            } else {
                cursor.value()?;
            }
            Ok(())
        })?;
        Ok(ToClient::Error {
            action_id,
            group: group.ok_or(DecodeError::Shape("Error without a string `group`"))?,
            code: code.ok_or(DecodeError::Shape("Error without a string `code`"))?,
            message: message.unwrap_or(Str { raw: b"" }),
        })
    } else if tag.is("Init") {
        let mut actor_id = None;
        let mut connection_id = None;
        val.object(|key, cursor| {
            if key.is("actorId") {
                actor_id = Some(cursor.string()?);
            } else if key.is("connectionId") {
                connection_id = Some(cursor.string()?);
            } else {
                cursor.value()?;
            }
            Ok(())
        })?;
        Ok(ToClient::Init {
            actor_id: actor_id.ok_or(DecodeError::Shape("Init without a string `actorId`"))?,
            connection_id: connection_id
                .ok_or(DecodeError::Shape("Init without a string `connectionId`"))?,
        })
    } else {
        Err(DecodeError::UnknownTag(tag.decode()))
    }
}

/// A position in a JSON text.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, pos: 0 }
    }

    fn at(bytes: &'a [u8], pos: usize) -> Cursor<'a> {
        Cursor { bytes, pos }
    }

    fn error<T>(&self, expected: &'static str) -> Result<T, DecodeError> {
        Err(DecodeError::Syntax {
            expected,
            at: self.pos,
        })
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next non-whitespace byte, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8, expected: &'static str) -> Result<(), DecodeError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            self.error(expected)
        }
    }

    /// Only whitespace is left.
    fn end(&mut self) -> Result<(), DecodeError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => self.error("the end of the message"),
        }
    }

    /// Walks an object, calling `field` with each key and the cursor at its value, which
    /// `field` must consume.
    fn object(
        &mut self,
        mut field: impl FnMut(Str<'a>, &mut Cursor<'a>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        self.eat(b'{', "an object")?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':', "`:`")?;
            field(key, self)?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return self.error("`,` or `}`"),
            }
        }
    }

    /// A string: its raw contents, escapes checked.
    fn string(&mut self) -> Result<Str<'a>, DecodeError> {
        self.eat(b'"', "a string")?;
        let start = self.pos;
        loop {
            match self.bytes.get(self.pos) {
                None => return self.error("the end of a string"),
                Some(b'"') => break,
                Some(b'\\') => {
                    self.pos += 1;
                    match self.bytes.get(self.pos) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 1
                        }
                        Some(b'u') => {
                            let hex = self.bytes.get(self.pos + 1..self.pos + 5);
                            if !hex.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                                return self.error("four hex digits");
                            }
                            self.pos += 5;
                        }
                        _ => return self.error("an escape"),
                    }
                }
                Some(&byte) if byte < 0x20 => return self.error("no control character"),
                Some(_) => self.pos += 1,
            }
        }
        let raw = &self.bytes[start..self.pos];
        self.pos += 1;
        Ok(Str { raw })
    }

    /// Skips any value; returns where it is.
    fn value(&mut self) -> Result<Range<usize>, DecodeError> {
        self.skip_whitespace();
        let start = self.pos;
        self.skip_value(0)?;
        Ok(start..self.pos)
    }

    fn skip_value(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > JSON_DEPTH_MAX {
            return self.error("less nesting");
        }
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{') => self.object(|_, cursor| cursor.skip_value(depth + 1)),
            Some(b'[') => {
                self.pos += 1;
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(());
                        }
                        _ => return self.error("`,` or `]`"),
                    }
                }
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.error("a value"),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), DecodeError> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            self.error("true, false or null")
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<(), DecodeError> {
        let digits = |cursor: &mut Cursor<'_>| {
            let start = cursor.pos;
            while cursor.bytes.get(cursor.pos).is_some_and(u8::is_ascii_digit) {
                cursor.pos += 1;
            }
            cursor.pos - start
        };
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let leading_zero = self.bytes.get(self.pos) == Some(&b'0');
        let count = digits(self);
        if count == 0 || (leading_zero && count > 1) {
            return self.error("a number");
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if digits(self) == 0 {
                return self.error("a fraction");
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return self.error("an exponent");
            }
        }
        Ok(())
    }

    /// `["$BigInt","<decimal>"]` as a `u64`.
    fn bigint(&mut self) -> Result<u64, DecodeError> {
        let shape = DecodeError::Shape("an id that is not [\"$BigInt\",\"<n>\"]");
        if self.peek() != Some(b'[') {
            return Err(shape);
        }
        self.pos += 1;
        if self.peek() != Some(b'"') || !self.string()?.is("$BigInt") {
            return Err(shape);
        }
        self.eat(b',', "`,`")?;
        if self.peek() != Some(b'"') {
            return Err(shape);
        }
        let digits = self.string()?.raw;
        self.eat(b']', "`]`")?;
        if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(shape);
        }
        digits
            .iter()
            .try_fold(0u64, |acc, &d| {
                acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
            .ok_or(shape)
    }
}

/// Requests awaiting their responses on one connection, by id. Ids are handed out in order from
/// 0; responses may come in any order. Lookup is O(1) (a window from the oldest unanswered id).
#[derive(Debug)]
pub(crate) struct InFlight<T> {
    /// The id of `slots[0]`.
    base: u64,
    /// `None` for ids already answered; the front is always `Some` (answered ids at the front
    /// are dropped).
    slots: VecDeque<Option<T>>,
    live: usize,
}

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        InFlight {
            base: 0,
            slots: VecDeque::new(),
            live: 0,
        }
    }
}

impl<T> InFlight<T> {
    pub(crate) fn new() -> InFlight<T> {
        InFlight::default()
    }

    /// Requests not yet answered.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The id the next [`InFlight::push`] returns.
    pub(crate) fn next_id(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    /// Adds a request; returns its id.
    pub(crate) fn push(&mut self, request: T) -> u64 {
        let id = self.next_id();
        self.slots.push_back(Some(request));
        self.live += 1;
        id
    }

    /// Removes and returns the request with `id`; `None` if there is none (never sent, or
    /// answered already).
    pub(crate) fn take(&mut self, id: u64) -> Option<T> {
        let index = usize::try_from(id.checked_sub(self.base)?).ok()?;
        let request = self.slots.get_mut(index)?.take()?;
        self.live -= 1;
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(request)
    }

    /// The oldest unanswered request.
    pub(crate) fn oldest(&self) -> Option<&T> {
        self.slots.front().and_then(Option::as_ref)
    }

    /// Removes every unanswered request, oldest first, and starts the ids at 0 again (for a new
    /// connection).
    pub(crate) fn reset(&mut self) -> impl Iterator<Item = T> + use<T> {
        let slots = std::mem::take(&mut self.slots);
        self.base = 0;
        self.live = 0;
        slots.into_iter().flatten()
    }
}
