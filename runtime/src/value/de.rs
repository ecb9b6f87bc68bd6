//! Tagged JSON decoding (wire -> typed), straight from simd-json's tape.
//!
//! simd-json parses the caller's buffer in place into a flat tape of nodes in
//! document order (strings are unescaped in the buffer and borrowed from it).
//! The serde deserializer below walks that tape with a cursor, so typed targets
//! are built without any intermediate tree, object key order is the document's
//! order (simd-json's `BorrowedValue` objects are hash maps and would lose it),
//! and the `$` tags are undone on the fly.

use std::cell::RefCell;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::value::{BorrowedStrDeserializer, BytesDeserializer, SeqDeserializer};
use serde::de::{
    self, Deserialize, DeserializeOwned, DeserializeSeed, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use simd_json::{Buffers, ErrorType, Node, StaticNode};

use super::{Error, JSON_DEPTH_MAX, Value};

/// Base64 as the client writes it (standard alphabet, padded), tolerating a
/// missing padding because it costs nothing and some encoders omit it.
pub(super) const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Nesting simd-json itself accepts: a value's own limit plus the
/// `{"args":[...]}` envelope. Its parser is iterative, so this bounds the tape's
/// depth before the recursive deserializer ever sees it.
const PARSE_DEPTH_MAX: usize = JSON_DEPTH_MAX + 2;

/// Inputs up to this size reuse the thread's parser buffers; larger ones get
/// fresh buffers so one big request does not pin megabytes per thread forever.
const BUFFER_REUSE_MAX: usize = 64 * 1024;

thread_local! {
    /// simd-json's scratch buffers (structural indexes, padded input copy,
    /// string scratch), kept per thread so small requests parse without
    /// allocating them each time. The tape borrows only the input, not these.
    static BUFFERS: RefCell<Option<Buffers>> = const { RefCell::new(None) };
}

fn json_error(e: &simd_json::Error) -> Error {
    if *e.error() == ErrorType::DepthLimitExceeded {
        Error::new(format_args!(
            "malformed JSON: nested deeper than {JSON_DEPTH_MAX}"
        ))
    } else {
        Error::new(format_args!("malformed JSON: {e}"))
    }
}

fn parse_with<'b>(buf: &'b mut [u8], buffers: &mut Buffers) -> Result<Vec<Node<'b>>, Error> {
    simd_json::Deserializer::from_slice_with_buffers(buf, buffers)
        .map(|d| d.into_tape().0)
        .map_err(|e| json_error(&e))
}

/// Parses `buf` in place into a tape.
fn parse_tape(buf: &mut [u8]) -> Result<Vec<Node<'_>>, Error> {
    if buf.len() > BUFFER_REUSE_MAX {
        return parse_with(
            buf,
            &mut Buffers::with_max_depth(buf.len(), PARSE_DEPTH_MAX),
        );
    }
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => parse_with(
            buf,
            slot.get_or_insert_with(|| Buffers::with_max_depth(BUFFER_REUSE_MAX, PARSE_DEPTH_MAX)),
        ),
        // Only reachable if a parse re-entered itself; never share buffers then.
        Err(_) => parse_with(
            buf,
            &mut Buffers::with_max_depth(buf.len(), PARSE_DEPTH_MAX),
        ),
    })
}

/// Number of tape nodes the value starting at `node` occupies.
fn span(node: &Node<'_>) -> usize {
    match *node {
        Node::Array { count, .. } | Node::Object { count, .. } => count + 1,
        _ => 1,
    }
}

/// The tape of a lone `null`, which absent trailing arguments decode from.
static NULL_TAPE: [Node<'static>; 1] = [Node::Static(StaticNode::Null)];

/// The parsed `{"args":[...]}` body of an action call.
///
/// It owns simd-json's tape, which borrows strings from the request buffer, and
/// decodes each argument on demand, so an action taking `(u32, String)` never
/// materializes a [`Value`].
#[derive(Debug)]
pub struct ArgList<'a> {
    tape: Vec<Node<'a>>,
    /// Tape index of each argument's first node.
    args: Vec<usize>,
}

/// Parses an action call body `{"args":[...]}` in place.
///
/// A missing or `null` `args` means no arguments and other top-level keys are
/// ignored; anything but an object at the top, or an `args` that is not an
/// array, is an error. The args array itself follows the tagging rules, so
/// `echo("$x", 2)` arrives as `{"args":["$$x",2]}` and yields the arguments
/// `"$x"` and `2`.
///
/// simd-json unescapes strings inside `buf`, so afterwards `buf` no longer holds
/// the original body; the returned list borrows it.
impl ArgList<'_> {
    /// No arguments (a typed call's, whose values travel beside the list).
    pub(crate) fn empty() -> ArgList<'static> {
        ArgList {
            tape: Vec::new(),
            args: Vec::new(),
        }
    }
}

pub fn parse_action_body(buf: &mut [u8]) -> Result<ArgList<'_>, Error> {
    let tape = parse_tape(buf)?;
    let Some(&Node::Object { len, .. }) = tape.first() else {
        return Err(Error::new("action body must be a JSON object"));
    };
    let mut args_at = None;
    let mut idx = 1;
    for _ in 0..len {
        let value_at = idx + 1;
        if let Some(Node::String("args")) = tape.get(idx) {
            // A repeated key: the last one wins, as with JSON.parse.
            args_at = Some(value_at);
        }
        idx = value_at + tape.get(value_at).map_or(1, span);
    }
    match args_at {
        None => Ok(ArgList {
            tape,
            args: Vec::new(),
        }),
        Some(at) => ArgList::new(tape, at),
    }
}

/// Parses a bare JSON array of arguments in place, for arguments that arrive
/// outside an action body (for example an args array cut out of a connection
/// frame). `null` means no arguments, as in [`parse_action_body`], and `buf`
/// is overwritten the same way.
pub fn parse_args_array(buf: &mut [u8]) -> Result<ArgList<'_>, Error> {
    let tape = parse_tape(buf)?;
    ArgList::new(tape, 0)
}

/// Parses one whole tagged JSON document in place into `T` (for example a
/// connection frame or the conn-params header), undoing the tags like
/// [`ArgList::decode`]. Nesting is limited to [`JSON_DEPTH_MAX`] from the root.
pub fn parse_tagged<T: DeserializeOwned>(buf: &mut [u8]) -> Result<T, Error> {
    let tape = parse_tape(buf)?;
    T::deserialize(&mut TapeDe::new(&tape, 0))
}

impl<'a> ArgList<'a> {
    /// Indexes the arguments of the args array at tape index `at`.
    fn new(mut tape: Vec<Node<'a>>, at: usize) -> Result<Self, Error> {
        let len = match tape.get(at) {
            Some(Node::Static(StaticNode::Null)) => {
                return Ok(ArgList {
                    tape,
                    args: Vec::new(),
                });
            }
            Some(&Node::Array { len, .. }) => len,
            _ => return Err(Error::new("`args` must be an array")),
        };
        if len == 2
            && let Some(&Node::String(first)) = tape.get(at + 1)
            && let Some(unescaped) = first.strip_prefix('$')
        {
            // Newer clients write an undefined `args` as this tag.
            if first == "$Undefined" {
                return Ok(ArgList {
                    tape,
                    args: Vec::new(),
                });
            }
            // The client escapes the args array like any user array; a
            // real tag here would mean `args` was not an array at all.
            if !unescaped.starts_with('$') {
                return Err(Error::new("`args` must be an array"));
            }
            tape[at + 1] = Node::String(unescaped);
        }
        let mut args = Vec::with_capacity(len);
        let mut idx = at + 1;
        for _ in 0..len {
            args.push(idx);
            idx += tape.get(idx).map_or(1, span);
        }
        Ok(ArgList { tape, args })
    }

    /// The number of arguments the client sent.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// Whether the client sent no arguments.
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// Decodes argument `i` into `T`, undoing the tagging. An absent argument
    /// (`i >= len`) decodes as if it were JSON `null`, so `Option<T>` parameters
    /// act as optional trailing arguments like JS default parameters. Errors
    /// name the argument.
    pub fn decode<T: DeserializeOwned>(&self, i: usize) -> Result<T, Error> {
        self.decode_borrowed(i)
    }

    /// Like [`ArgList::decode`], but `T` may borrow strings from the request
    /// buffer (`&str`, `Cow<str>`), which avoids copying them.
    pub fn decode_borrowed<T: Deserialize<'a>>(&self, i: usize) -> Result<T, Error> {
        match self.args.get(i) {
            Some(&at) => {
                let mut de = TapeDe::new(&self.tape, at);
                T::deserialize(&mut de).map_err(|e| Error::new(format_args!("argument {i}: {e}")))
            }
            None => {
                let mut de = TapeDe::new(&NULL_TAPE, 0);
                T::deserialize(&mut de)
                    .map_err(|_| Error::new(format_args!("missing argument {i}")))
            }
        }
    }

    /// All arguments from `from` on, as Values (for variadic actions like
    /// `echo(...args)`); empty if `from >= len`.
    pub fn rest(&self, from: usize) -> Result<Vec<Value>, Error> {
        (from..self.len()).map(|i| self.decode(i)).collect()
    }
}

/// A `$`-tagged 2-array recognized at an array header.
enum Tag<'de> {
    /// Not a tag: a plain array.
    None,
    /// `["$BigInt","<decimal>"]`.
    BigInt(&'de str),
    /// `["$Uint8Array","<b64>"]`.
    Bytes(&'de str),
    /// `["$ArrayBuffer","<b64>"]`.
    ArrayBuffer(&'de str),
    /// `["$Undefined",…]` from newer clients; accepted as null.
    Undefined,
    /// `["$$x",v]`: the user array `["$x",v]`, carrying the unescaped string.
    Escaped(&'de str),
}

/// serde deserializer over one value of a tape, with a cursor and a depth budget.
struct TapeDe<'t, 'de> {
    tape: &'t [Node<'de>],
    idx: usize,
    /// How many more arrays/objects may be entered.
    depth_left: usize,
}

fn eof() -> Error {
    Error::new("malformed JSON: unexpected end of value")
}

fn too_deep() -> Error {
    Error::new(format_args!("JSON nested deeper than {JSON_DEPTH_MAX}"))
}

fn bad_bigint(s: &str) -> Error {
    Error::new(format_args!("invalid or out-of-range $BigInt {s:?}"))
}

/// Parses the decimal text of a `$BigInt` tag.
fn parse_bigint(s: &str) -> Result<i128, Error> {
    s.parse::<i128>().map_err(|_| bad_bigint(s))
}

fn decode_b64(s: &str) -> Result<Vec<u8>, Error> {
    BASE64_STANDARD
        .decode(s)
        .map_err(|e| Error::new(format_args!("invalid base64 in byte array: {e}")))
}

impl<'t, 'de> TapeDe<'t, 'de> {
    fn new(tape: &'t [Node<'de>], idx: usize) -> Self {
        TapeDe {
            tape,
            idx,
            depth_left: JSON_DEPTH_MAX,
        }
    }

    fn peek(&self) -> Result<Node<'de>, Error> {
        self.tape.get(self.idx).copied().ok_or_else(eof)
    }

    fn next(&mut self) -> Result<Node<'de>, Error> {
        let node = self.peek()?;
        self.idx += 1;
        Ok(node)
    }

    /// Classifies the array whose header is at `self.idx - 1` (already consumed)
    /// and has `len` elements; for tags, consumes the rest of the array except
    /// the second element of an escaped array.
    fn tag(&mut self, len: usize) -> Result<Tag<'de>, Error> {
        if len != 2 {
            return Ok(Tag::None);
        }
        let Some(&Node::String(name)) = self.tape.get(self.idx) else {
            return Ok(Tag::None);
        };
        if !name.starts_with('$') {
            return Ok(Tag::None);
        }
        if name.starts_with("$$") {
            self.idx += 1;
            return Ok(Tag::Escaped(&name[1..]));
        }
        let payload = self.tape.get(self.idx + 1).copied();
        let tag = match (name, payload) {
            ("$BigInt", Some(Node::String(s))) => Tag::BigInt(s),
            ("$Uint8Array", Some(Node::String(s))) => Tag::Bytes(s),
            ("$ArrayBuffer", Some(Node::String(s))) => Tag::ArrayBuffer(s),
            ("$Undefined", Some(node)) => {
                self.idx += 1 + span(&node);
                return Ok(Tag::Undefined);
            }
            ("$BigInt" | "$Uint8Array" | "$ArrayBuffer", _) => {
                return Err(Error::new(format_args!(
                    "malformed {name} tag: the payload must be a string"
                )));
            }
            _ => {
                return Err(Error::new(format_args!(
                    "unknown JSON encoding type {name:?}"
                )));
            }
        };
        self.idx += 2;
        Ok(tag)
    }

    /// If the next value is a `$BigInt`, consumes it and returns its value.
    fn take_bigint(&mut self) -> Result<Option<i128>, Error> {
        let Node::Array { len: 2, .. } = self.peek()? else {
            return Ok(None);
        };
        match self.tape.get(self.idx + 1) {
            Some(Node::String("$BigInt")) => {}
            _ => return Ok(None),
        }
        self.idx += 1;
        match self.tag(2)? {
            Tag::BigInt(s) => parse_bigint(s).map(Some),
            _ => Err(Error::new(
                "malformed $BigInt tag: the payload must be a string",
            )),
        }
    }

    /// If the next value is a bytes tag, consumes it and returns the bytes.
    fn take_bytes(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let Node::Array { len: 2, .. } = self.peek()? else {
            return Ok(None);
        };
        match self.tape.get(self.idx + 1) {
            Some(Node::String("$Uint8Array" | "$ArrayBuffer")) => {}
            _ => return Ok(None),
        }
        self.idx += 1;
        match self.tag(2)? {
            Tag::Bytes(s) | Tag::ArrayBuffer(s) => decode_b64(s).map(Some),
            _ => Err(Error::new(
                "malformed byte array tag: the payload must be a string",
            )),
        }
    }

    fn enter(&mut self) -> Result<(), Error> {
        if self.depth_left == 0 {
            return Err(too_deep());
        }
        self.depth_left -= 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth_left += 1;
    }

    fn visit_array<V: Visitor<'de>>(
        &mut self,
        len: usize,
        escaped_first: Option<&'de str>,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.enter()?;
        let mut seq = Seq {
            left: len - usize::from(escaped_first.is_some()),
            escaped_first,
            de: self,
        };
        let value = visitor.visit_seq(&mut seq)?;
        if seq.left > 0 || seq.escaped_first.is_some() {
            return Err(Error::new(format_args!(
                "array of {len} elements is longer than expected"
            )));
        }
        self.leave();
        Ok(value)
    }

    fn visit_object<V: Visitor<'de>>(&mut self, len: usize, visitor: V) -> Result<V::Value, Error> {
        self.enter()?;
        let mut map = Obj {
            left: len,
            de: self,
        };
        let value = visitor.visit_map(&mut map)?;
        if map.left > 0 {
            return Err(Error::new(format_args!(
                "object of {len} entries was not fully read"
            )));
        }
        self.leave();
        Ok(value)
    }

    fn visit_int<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Error> {
        match self.take_bigint()? {
            // Narrow so that serde's i64/u64/.. visitors, which have no
            // visit_i128, accept a BigInt that fits.
            Some(v) => match (i64::try_from(v), u64::try_from(v)) {
                (Ok(i), _) => visitor.visit_i64(i),
                (_, Ok(u)) => visitor.visit_u64(u),
                _ => visitor.visit_i128(v),
            },
            None => de::Deserializer::deserialize_any(self, visitor),
        }
    }
}

macro_rules! int_hints {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.visit_int(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &mut TapeDe<'_, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.next()? {
            Node::String(s) => visitor.visit_borrowed_str(s),
            Node::Static(StaticNode::Null) => visitor.visit_unit(),
            Node::Static(StaticNode::Bool(b)) => visitor.visit_bool(b),
            Node::Static(StaticNode::I64(i)) => visitor.visit_i64(i),
            Node::Static(StaticNode::U64(u)) => visitor.visit_u64(u),
            Node::Static(StaticNode::F64(f)) => visitor.visit_f64(f),
            Node::Array { len, .. } => match self.tag(len)? {
                Tag::None => self.visit_array(len, None, visitor),
                Tag::BigInt(s) => match (s.parse::<i128>(), s.parse::<u128>()) {
                    (Ok(v), _) => visitor.visit_i128(v),
                    (_, Ok(v)) => visitor.visit_u128(v),
                    _ => Err(bad_bigint(s)),
                },
                Tag::Bytes(s) => visitor.visit_byte_buf(decode_b64(s)?),
                Tag::ArrayBuffer(s) => {
                    let bytes = decode_b64(s)?;
                    visitor.visit_newtype_struct(BytesDeserializer::<Error>::new(&bytes))
                }
                Tag::Undefined => visitor.visit_unit(),
                Tag::Escaped(first) => self.visit_array(len, Some(first), visitor),
            },
            Node::Object { len, .. } => self.visit_object(len, visitor),
        }
    }

    int_hints!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.take_bigint()? {
            // Like JS `Number(big)`: may round.
            Some(v) => visitor.visit_f64(v as f64),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.peek()? {
            Node::Static(StaticNode::Null) => {
                self.idx += 1;
                visitor.visit_none()
            }
            node @ Node::Array { len: 2, .. }
                if self.tape.get(self.idx + 1) == Some(&Node::String("$Undefined")) =>
            {
                self.idx += span(&node);
                visitor.visit_none()
            }
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    /// Sequences also accept a bytes tag, as a sequence of `u8`, so that a plain
    /// `Vec<u8>` or `[u8; N]` parameter takes a `Uint8Array`.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.take_bytes()? {
            Some(bytes) => {
                let mut seq = SeqDeserializer::<_, Error>::new(bytes.into_iter());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.next()? {
            Node::String(s) => visitor.visit_enum(BorrowedStrDeserializer::<Error>::new(s)),
            Node::Object { len: 1, .. } => {
                self.enter()?;
                let value = visitor.visit_enum(Variant { de: &mut *self })?;
                self.leave();
                Ok(value)
            }
            _ => Err(Error::new(
                "expected an enum: a string or an object with one key",
            )),
        }
    }

    /// Skips the whole value without looking inside, so unknown struct fields
    /// cost nothing and are not depth-checked needlessly.
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let node = self.peek()?;
        self.idx += span(&node);
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i128 u128 char str string bytes byte_buf unit unit_struct
        tuple_struct map struct identifier
    }
}

/// Elements of an array being visited.
struct Seq<'s, 't, 'de> {
    de: &'s mut TapeDe<'t, 'de>,
    left: usize,
    /// The unescaped first element of a `["$$x",v]` array, not yet handed out.
    escaped_first: Option<&'de str>,
}

impl<'de> SeqAccess<'de> for Seq<'_, '_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if let Some(first) = self.escaped_first.take() {
            return seed
                .deserialize(BorrowedStrDeserializer::new(first))
                .map(Some);
        }
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left + usize::from(self.escaped_first.is_some()))
    }
}

/// Entries of an object being visited.
struct Obj<'s, 't, 'de> {
    de: &'s mut TapeDe<'t, 'de>,
    left: usize,
}

impl<'de> MapAccess<'de> for Obj<'_, '_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        match self.de.next()? {
            Node::String(key) => seed.deserialize(KeyDe(key)).map(Some),
            _ => Err(Error::new("malformed JSON: object key is not a string")),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// An externally tagged enum variant: `{"Variant": content}`.
struct Variant<'s, 't, 'de> {
    de: &'s mut TapeDe<'t, 'de>,
}

impl<'de> EnumAccess<'de> for Variant<'_, '_, 'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        match self.de.next()? {
            Node::String(key) => Ok((seed.deserialize(KeyDe(key))?, self)),
            _ => Err(Error::new("malformed JSON: object key is not a string")),
        }
    }
}

impl<'de> VariantAccess<'de> for Variant<'_, '_, 'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        <() as Deserialize>::deserialize(&mut *self.de)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(&mut *self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_tuple(&mut *self.de, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(&mut *self.de, visitor)
    }
}

/// An object key. Keys are always strings in JSON; integer (and bool) targets
/// parse them, as serde_json does, so `HashMap<u32, T>` works.
pub(super) struct KeyDe<'de>(pub(super) &'de str);

macro_rules! key_parse {
    ($($method:ident $ty:ty => $visit:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0.parse::<$ty>() {
                Ok(n) => visitor.$visit(n),
                Err(_) => visitor.visit_borrowed_str(self.0),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for KeyDe<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.0)
    }

    key_parse! {
        deserialize_bool bool => visit_bool
        deserialize_i8 i8 => visit_i8
        deserialize_i16 i16 => visit_i16
        deserialize_i32 i32 => visit_i32
        deserialize_i64 i64 => visit_i64
        deserialize_i128 i128 => visit_i128
        deserialize_u8 u8 => visit_u8
        deserialize_u16 u16 => visit_u16
        deserialize_u32 u32 => visit_u32
        deserialize_u64 u64 => visit_u64
        deserialize_u128 u128 => visit_u128
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_enum(BorrowedStrDeserializer::<Error>::new(self.0))
    }

    serde::forward_to_deserialize_any! {
        f32 f64 char str string bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

/// A message a client sends on a RivetKit connection (spec §8.3), parsed in place.
#[derive(Debug)]
pub enum ToServer<'a> {
    /// `ActionRequest`: call action `name` with `args`; the response carries `id`.
    Action {
        id: u64,
        name: &'a str,
        args: ArgList<'a>,
    },
    /// `SubscriptionRequest`: (un)subscribe this connection to broadcasts of `event`.
    Subscription { event: &'a str, subscribe: bool },
}

/// Parses one JSON connection frame `{"body":{"tag":…,"val":{…}}}` in place. The action id
/// must be a `["$BigInt","<n>"]` tag, as the client writes it (the reference refuses plain
/// numbers too). Unknown fields are ignored; unknown tags are errors.
pub fn parse_to_server(buf: &mut [u8]) -> Result<ToServer<'_>, Error> {
    let tape = parse_tape(buf)?;
    let body = field(&tape, 0, "body")?.ok_or_else(|| Error::new("missing `body`"))?;
    let tag = match field(&tape, body, "tag")?.map(|at| tape[at]) {
        Some(Node::String(tag)) => tag,
        _ => return Err(Error::new("`body.tag` must be a string")),
    };
    let val = field(&tape, body, "val")?.ok_or_else(|| Error::new("missing `body.val`"))?;
    match tag {
        "ActionRequest" => {
            let id = match field(&tape, val, "id")? {
                Some(at) => match (tape.get(at), tape.get(at + 1), tape.get(at + 2)) {
                    (
                        Some(Node::Array { len: 2, .. }),
                        Some(Node::String("$BigInt")),
                        Some(Node::String(digits)),
                    ) => digits
                        .parse::<u64>()
                        .map_err(|_| Error::new("`id` is not a valid action id"))?,
                    _ => return Err(Error::new("`id` must be a $BigInt")),
                },
                None => return Err(Error::new("missing `id`")),
            };
            let name = match field(&tape, val, "name")?.map(|at| tape[at]) {
                Some(Node::String(name)) => name,
                _ => return Err(Error::new("`name` must be a string")),
            };
            let args = match field(&tape, val, "args")? {
                Some(at) => ArgList::new(tape, at)?,
                None => ArgList {
                    tape,
                    args: Vec::new(),
                },
            };
            Ok(ToServer::Action { id, name, args })
        }
        "SubscriptionRequest" => {
            let event = match field(&tape, val, "eventName")?.map(|at| tape[at]) {
                Some(Node::String(event)) => event,
                _ => return Err(Error::new("`eventName` must be a string")),
            };
            let subscribe = match field(&tape, val, "subscribe")?.map(|at| tape[at]) {
                Some(Node::Static(StaticNode::Bool(subscribe))) => subscribe,
                _ => return Err(Error::new("`subscribe` must be a boolean")),
            };
            Ok(ToServer::Subscription { event, subscribe })
        }
        _ => Err(Error::new(format_args!("unknown message tag {tag:?}"))),
    }
}

/// The tape index of the value of field `name` in the object at `at` (the last one, as with
/// `JSON.parse`), or `None` if absent. An error if `at` is not an object.
fn field(tape: &[Node<'_>], at: usize, name: &str) -> Result<Option<usize>, Error> {
    let Some(&Node::Object { len, .. }) = tape.get(at) else {
        return Err(Error::new("expected a JSON object"));
    };
    let mut found = None;
    let mut idx = at + 1;
    for _ in 0..len {
        let value_at = idx + 1;
        if let Some(Node::String(key)) = tape.get(idx)
            && *key == name
        {
            found = Some(value_at);
        }
        idx = value_at + tape.get(value_at).map_or(1, span);
    }
    Ok(found)
}
