//! Tagged JSON encoding (typed -> wire), written straight into a byte buffer.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::ser::{self, Serialize};

use super::Error;

/// Serializes `v` as tagged JSON, appending to `out`.
///
/// Bytes become `["$Uint8Array","<base64>"]`, `i128`/`u128` become
/// `["$BigInt","<decimal>"]`, and any 2-element array whose first element is a
/// string starting with `$` gets one more `$` so the client does not mistake it
/// for a tag. On error nothing is appended (the partial output is truncated),
/// so the caller can fall back to writing an error body into the same buffer.
pub fn write_tagged<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Result<(), Error> {
    let start = out.len();
    let result = v.serialize(&mut JsonSer {
        out,
        array_buffer: false,
    });
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Serializes an argument list: a tuple or array is the list itself, `()` (or anything else that
/// serializes as `null`) is no arguments, anything else (including a tagged scalar such as
/// `["$BigInt","1"]`, but not an escaped user array `["$$x",…]`) is the one argument of the list.
pub fn write_args<T: Serialize + ?Sized>(out: &mut Vec<u8>, args: &T) -> Result<(), Error> {
    let start = out.len();
    write_tagged(out, args)?;
    let written = &out[start..];
    if written == b"null" {
        out.truncate(start);
        out.extend_from_slice(b"[]");
        return Ok(());
    }
    let is_tag = written.starts_with(b"[\"$") && !written.starts_with(b"[\"$$");
    if !written.starts_with(b"[") || is_tag {
        out.insert(start, b'[');
        out.push(b']');
    }
    Ok(())
}

/// How each byte is written inside a JSON string: 0 verbatim, `u` as `\u00XX`,
/// anything else as a backslash followed by that character.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Appends `s` as a JSON string literal with escaping: quote and backslash are
/// backslash-escaped, `\b \t \n \f \r` use their short forms and other control
/// characters become `\u00XX`. Everything else (including non-ASCII) is copied
/// verbatim as UTF-8, which is what `JSON.stringify` does too.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[run_start..i]);
        run_start = i + 1;
        if esc == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', esc]);
        }
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

/// Appends a finite or non-finite `f64` the way `JSON.stringify` prints it.
///
/// JS has one number type, so an integral float must print as an integer
/// (`2.0` -> `2`); the layout follows `Number.prototype.toString` (`1e21` ->
/// `1e+21`, `1e-7` -> `1e-7`, `0.000001` in full), except that integral values
/// of magnitude 2^63 or more use the exponent form (`1e20` -> `1e+20`, where JS
/// prints `100000000000000000000`) so that every JSON parser, ours included,
/// reads them back as the same double. `-0` prints as `0` and non-finite values
/// as `null`, as `JSON.stringify` does.
pub(super) fn write_f64(out: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        out.extend_from_slice(b"null");
    } else if v == 0.0 {
        out.push(b'0');
    } else {
        let mut buf = ryu::Buffer::new();
        write_js_number(out, buf.format_finite(v));
    }
}

/// Like [`write_f64`], but with the shortest digits that identify the `f32`
/// (`1.1f32` prints as `1.1`, not `1.100000023841858`), which is what a user
/// who wrote an `f32` expects to see.
pub(super) fn write_f32(out: &mut Vec<u8>, v: f32) {
    if !v.is_finite() {
        out.extend_from_slice(b"null");
    } else if v == 0.0 {
        out.push(b'0');
    } else {
        let mut buf = ryu::Buffer::new();
        write_js_number(out, buf.format_finite(v));
    }
}

/// Re-lays ryu's shortest-digits output (`-1.5e-7`, `123.0`, `0.001`) in the
/// layout JS's Number-to-String algorithm (ECMA-262 Number::toString) uses.
fn write_js_number(out: &mut Vec<u8>, repr: &str) {
    let (negative, rest) = match repr.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, repr),
    };
    let (mantissa, exp) = match rest.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (rest, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // value = 0.DIGITS * 10^n
    let mut digits = [0u8; 48];
    let mut k = 0;
    for &d in int_part.as_bytes().iter().chain(frac_part.as_bytes()) {
        if k < digits.len() {
            digits[k] = d;
            k += 1;
        }
    }
    let mut n = int_part.len() as i32 + exp;
    let mut start = 0;
    while start < k && digits[start] == b'0' {
        start += 1;
        n -= 1;
    }
    while k > start && digits[k - 1] == b'0' {
        k -= 1;
    }
    let digits = &digits[start..k];
    if digits.is_empty() {
        out.push(b'0');
        return;
    }
    if negative {
        out.push(b'-');
    }
    let k = digits.len() as i32;
    // JS would print integral values up to 1e21 in full, but an integer literal
    // outside the i64 range is one simd-json (without its `big-int-as-float`
    // feature) and many other parsers reject, so from 2^63 (19 digits) on the
    // exponent form is used; every JSON parser reads it as the same double.
    let integer_fits = n < 19 || (n == 19 && !exceeds_i64(digits));
    if k <= n && n <= 21 && integer_fits {
        out.extend_from_slice(digits);
        out.resize(out.len() + (n - k) as usize, b'0');
    } else if 0 < n && n < k && n <= 21 {
        out.extend_from_slice(&digits[..n as usize]);
        out.push(b'.');
        out.extend_from_slice(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + (-n) as usize, b'0');
        out.extend_from_slice(digits);
    } else {
        out.push(digits[0]);
        if k > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let e = n - 1;
        out.push(b'e');
        out.push(if e < 0 { b'-' } else { b'+' });
        out.extend_from_slice(itoa::Buffer::new().format(e.unsigned_abs()).as_bytes());
    }
}

/// Whether the 19-digit integer `digits` followed by zeros is 2^63 or more.
fn exceeds_i64(digits: &[u8]) -> bool {
    const I64_MAX_PLUS_1: &[u8; 19] = b"9223372036854775808";
    let mut padded = [b'0'; 19];
    padded[..digits.len().min(19)].copy_from_slice(&digits[..digits.len().min(19)]);
    padded >= *I64_MAX_PLUS_1
}

/// Appends `["$BigInt","<decimal>"]`.
fn write_bigint(out: &mut Vec<u8>, decimal: &str) {
    out.extend_from_slice(b"[\"$BigInt\",\"");
    out.extend_from_slice(decimal.as_bytes());
    out.extend_from_slice(b"\"]");
}

/// Appends `["<tag>","<standard padded base64>"]`, encoding in place.
fn write_bytes(out: &mut Vec<u8>, tag: &str, bytes: &[u8]) {
    out.extend_from_slice(b"[\"");
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(b"\",\"");
    let start = out.len();
    let n = base64::encoded_len(bytes.len(), true).unwrap_or(0);
    out.resize(start + n, 0);
    let written = STANDARD.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
    out.extend_from_slice(b"\"]");
}

/// The serde serializer behind [`write_tagged`].
struct JsonSer<'a> {
    out: &'a mut Vec<u8>,
    /// Set while serializing the inside of a [`super::ARRAY_BUFFER`] newtype: its bytes are
    /// written with the `$ArrayBuffer` tag.
    array_buffer: bool,
}

/// State of an open JSON array or object.
///
/// For arrays it remembers where the first element started if that element
/// came out as a string beginning with `$`: only once the array is closed is
/// it known whether it has exactly two elements and needs the escape `$`.
struct Compound<'s, 'a> {
    ser: &'s mut JsonSer<'a>,
    count: usize,
    dollar_at: Option<usize>,
    /// Extra closing bytes after the array or object (`}` for enum variants).
    suffix: &'static [u8],
}

impl<'s, 'a> Compound<'s, 'a> {
    fn new(ser: &'s mut JsonSer<'a>, open: u8, suffix: &'static [u8]) -> Self {
        ser.out.push(open);
        Compound {
            ser,
            count: 0,
            dollar_at: None,
            suffix,
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        if self.count > 0 {
            self.ser.out.push(b',');
        }
        let pos = self.ser.out.len();
        v.serialize(&mut *self.ser)?;
        if self.count == 0 && self.ser.out.get(pos..pos + 2) == Some(&b"\"$"[..]) {
            self.dollar_at = Some(pos);
        }
        self.count += 1;
        Ok(())
    }

    fn end_array(self) -> Result<(), Error> {
        if self.count == 2
            && let Some(pos) = self.dollar_at
        {
            self.ser.out.insert(pos + 1, b'$');
        }
        self.ser.out.push(b']');
        self.ser.out.extend_from_slice(self.suffix);
        Ok(())
    }

    fn key(&mut self, key: &str) {
        if self.count > 0 {
            self.ser.out.push(b',');
        }
        self.count += 1;
        write_json_str(self.ser.out, key);
        self.ser.out.push(b':');
    }

    fn end_object(self) -> Result<(), Error> {
        self.ser.out.push(b'}');
        self.ser.out.extend_from_slice(self.suffix);
        Ok(())
    }
}

impl<'s, 'a> ser::Serializer for &'s mut JsonSer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'s, 'a>;
    type SerializeTuple = Compound<'s, 'a>;
    type SerializeTupleStruct = Compound<'s, 'a>;
    type SerializeTupleVariant = Compound<'s, 'a>;
    type SerializeMap = Compound<'s, 'a>;
    type SerializeStruct = Compound<'s, 'a>;
    type SerializeStructVariant = Compound<'s, 'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        write_bigint(self.out, itoa::Buffer::new().format(v));
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        write_bigint(self.out, itoa::Buffer::new().format(v));
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        write_f32(self.out, v);
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        write_f64(self.out, v);
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        write_json_str(self.out, v.encode_utf8(&mut [0u8; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_json_str(self.out, v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        let tag = if std::mem::take(&mut self.array_buffer) {
            "$ArrayBuffer"
        } else {
            "$Uint8Array"
        };
        write_bytes(self.out, tag, v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        write_json_str(self.out, variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.array_buffer = name == super::ARRAY_BUFFER;
        let result = value.serialize(&mut *self);
        self.array_buffer = false;
        result
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.out.push(b'{');
        write_json_str(self.out, variant);
        self.out.push(b':');
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'s, 'a>, Error> {
        Ok(Compound::new(self, b'[', b""))
    }

    fn serialize_tuple(self, _len: usize) -> Result<Compound<'s, 'a>, Error> {
        Ok(Compound::new(self, b'[', b""))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'s, 'a>, Error> {
        Ok(Compound::new(self, b'[', b""))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'s, 'a>, Error> {
        self.out.push(b'{');
        write_json_str(self.out, variant);
        self.out.push(b':');
        Ok(Compound::new(self, b'[', b"}"))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'s, 'a>, Error> {
        Ok(Compound::new(self, b'{', b""))
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Compound<'s, 'a>, Error> {
        Ok(Compound::new(self, b'{', b""))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'s, 'a>, Error> {
        self.out.push(b'{');
        write_json_str(self.out, variant);
        self.out.push(b':');
        Ok(Compound::new(self, b'{', b"}"))
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.end_array()
    }
}

impl ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.end_array()
    }
}

impl ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.end_array()
    }
}

impl ser::SerializeTupleVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.end_array()
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        if self.count > 0 {
            self.ser.out.push(b',');
        }
        self.count += 1;
        key.serialize(KeySer {
            out: &mut *self.ser.out,
        })?;
        self.ser.out.push(b':');
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(&mut *self.ser)
    }

    fn end(self) -> Result<(), Error> {
        self.end_object()
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.key(key);
        value.serialize(&mut *self.ser)
    }

    fn end(self) -> Result<(), Error> {
        self.end_object()
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.key(key);
        value.serialize(&mut *self.ser)
    }

    fn end(self) -> Result<(), Error> {
        self.end_object()
    }
}

/// Writes a map key, which JSON requires to be a string: strings and chars as
/// they are, integers and booleans stringified (as serde_json and JS property
/// keys do), anything else is an error.
pub(super) struct KeySer<'a> {
    pub(super) out: &'a mut Vec<u8>,
}

/// The error for map keys that cannot become JSON strings.
pub(super) fn key_error() -> Error {
    Error::new("map key must be a string or an integer")
}

impl KeySer<'_> {
    fn quoted(self, s: &str) -> Result<(), Error> {
        self.out.push(b'"');
        self.out.extend_from_slice(s.as_bytes());
        self.out.push(b'"');
        Ok(())
    }
}

impl ser::Serializer for KeySer<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ser::Impossible<(), Error>;
    type SerializeTuple = ser::Impossible<(), Error>;
    type SerializeTupleStruct = ser::Impossible<(), Error>;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = ser::Impossible<(), Error>;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.quoted(if v { "true" } else { "false" })
    }

    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.quoted(itoa::Buffer::new().format(v))
    }

    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        self.quoted(itoa::Buffer::new().format(v))
    }

    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.quoted(itoa::Buffer::new().format(v))
    }

    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        self.quoted(itoa::Buffer::new().format(v))
    }

    fn serialize_f32(self, _v: f32) -> Result<(), Error> {
        Err(key_error())
    }

    fn serialize_f64(self, _v: f64) -> Result<(), Error> {
        Err(key_error())
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        write_json_str(self.out, v.encode_utf8(&mut [0u8; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_json_str(self.out, v);
        Ok(())
    }

    fn serialize_bytes(self, _v: &[u8]) -> Result<(), Error> {
        Err(key_error())
    }

    fn serialize_none(self) -> Result<(), Error> {
        Err(key_error())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<(), Error> {
        Err(key_error())
    }

    fn serialize_unit(self) -> Result<(), Error> {
        Err(key_error())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        Err(key_error())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        write_json_str(self.out, variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), Error> {
        Err(key_error())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(key_error())
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
        Err(key_error())
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(key_error())
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(key_error())
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(key_error())
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        Err(key_error())
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(key_error())
    }
}
