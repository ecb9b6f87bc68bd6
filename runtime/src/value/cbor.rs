//! A decode-only CBOR reader for the manager API's `input` field.
//!
//! The client always sends actor input as base64 of `cbor-x` output, whatever
//! its encoding (spec §3.2). Only decoding is needed, and `cbor-x`'s quirks
//! (16-bit length headers on 1-key maps, integers beyond 32 bits as float64,
//! `undefined`) are easiest to accept in a small reader of our own. It is
//! bounded for hostile input: nesting stops at [`CBOR_DEPTH_MAX`], declared
//! lengths are checked against the bytes actually present before anything is
//! allocated, and every item consumes at least one byte, so the work and the
//! memory stay linear in the input's length (which the caller bounds).

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::de::BASE64_STANDARD;
use super::ser::write_f64;
use super::{CBOR_DEPTH_MAX, Error, Map, Value};

/// The URL-safe alphabet, which the 2.3 client uses for `rvt-input`; accepted
/// too since the two alphabets cannot be confused.
const BASE64_URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes the manager API's `input` field: standard padded base64 (URL-safe
/// or unpadded is tolerated) of one CBOR item as written by `cbor-x`.
///
/// Maps become objects (keys must be strings, or numbers/booleans/null, which
/// are stringified as JS would), byte strings become `Bytes`, `undefined` and
/// `null` become `Null`, bignum tags 2/3 become `BigInt` when they fit in
/// `i128` (else an error), and other tags yield the tagged item. Integral
/// floats in `i64` range become `Int`, since JS has one number type and
/// `cbor-x` writes integers above 32 bits as float64.
pub fn decode_base64_cbor(s: &str) -> Result<Value, Error> {
    let s = s.trim();
    let engine = if s.contains(['-', '_']) {
        &BASE64_URL
    } else {
        &BASE64_STANDARD
    };
    let bytes = engine
        .decode(s)
        .map_err(|e| Error::new(format_args!("invalid base64 in input: {e}")))?;
    decode_cbor(&bytes)
}

/// Decodes exactly one CBOR item from `bytes`, with the rules of
/// [`decode_base64_cbor`]; trailing bytes are an error.
pub fn decode_cbor(bytes: &[u8]) -> Result<Value, Error> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let value = r.item(0)?;
    if r.pos != bytes.len() {
        return Err(Error::new(format_args!(
            "invalid CBOR: {} trailing bytes after the item",
            bytes.len() - r.pos
        )));
    }
    Ok(value)
}

const BREAK: u8 = 0xff;

/// Major types, from the top three bits of an item's first byte.
const MAJOR_UINT: u8 = 0;
const MAJOR_NEGINT: u8 = 1;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const MAJOR_TAG: u8 = 6;
const MAJOR_SIMPLE: u8 = 7;

fn truncated() -> Error {
    Error::new("invalid CBOR: truncated input")
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8, Error> {
        let b = *self.buf.get(self.pos).ok_or_else(truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn peek(&self) -> Result<u8, Error> {
        self.buf.get(self.pos).copied().ok_or_else(truncated)
    }

    /// Takes `len` bytes, refusing lengths the input cannot contain before
    /// anything is allocated for them.
    fn take(&mut self, len: u64) -> Result<&'a [u8], Error> {
        let len = usize::try_from(len).map_err(|_| truncated())?;
        if len > self.remaining() {
            return Err(truncated());
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    fn uint_be(&mut self, n: u64) -> Result<u64, Error> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// Reads an item head: major type, additional info, and the argument
    /// (`None` for the indefinite-length marker 31). Any argument width is
    /// accepted, minimal or not.
    fn head(&mut self) -> Result<(u8, u8, Option<u64>), Error> {
        let b = self.byte()?;
        let (major, info) = (b >> 5, b & 0x1f);
        let arg = match info {
            0..=23 => Some(u64::from(info)),
            24 => Some(self.uint_be(1)?),
            25 => Some(self.uint_be(2)?),
            26 => Some(self.uint_be(4)?),
            27 => Some(self.uint_be(8)?),
            31 => None,
            _ => {
                return Err(Error::new(format_args!(
                    "invalid CBOR: reserved additional info {info}"
                )));
            }
        };
        Ok((major, info, arg))
    }

    /// A definite length, or an error for the indefinite marker where it is not allowed.
    fn definite(arg: Option<u64>) -> Result<u64, Error> {
        arg.ok_or_else(|| Error::new("invalid CBOR: unexpected indefinite length"))
    }

    fn item(&mut self, depth: usize) -> Result<Value, Error> {
        let (major, info, arg) = self.head()?;
        match major {
            MAJOR_UINT => Ok(Value::from(Self::definite(arg)?)),
            MAJOR_NEGINT => {
                let v = -1 - i128::from(Self::definite(arg)?);
                Ok(i64::try_from(v).map_or(Value::BigInt(v), Value::Int))
            }
            MAJOR_BYTES => Ok(Value::Bytes(self.string_bytes(MAJOR_BYTES, arg)?)),
            MAJOR_TEXT => {
                let bytes = self.string_bytes(MAJOR_TEXT, arg)?;
                String::from_utf8(bytes)
                    .map(Value::String)
                    .map_err(|_| Error::new("invalid CBOR: text string is not UTF-8"))
            }
            MAJOR_ARRAY => {
                let depth = Self::enter(depth)?;
                let mut items = Vec::with_capacity(self.capacity(arg, 1));
                match arg {
                    Some(len) => {
                        for _ in 0..len {
                            items.push(self.item(depth)?);
                        }
                    }
                    None => {
                        while self.peek()? != BREAK {
                            items.push(self.item(depth)?);
                        }
                        self.pos += 1;
                    }
                }
                Ok(Value::Array(items))
            }
            MAJOR_MAP => {
                let depth = Self::enter(depth)?;
                let mut entries = Vec::with_capacity(self.capacity(arg, 2));
                match arg {
                    Some(len) => {
                        for _ in 0..len {
                            entries.push(self.entry(depth)?);
                        }
                    }
                    None => {
                        while self.peek()? != BREAK {
                            entries.push(self.entry(depth)?);
                        }
                        self.pos += 1;
                    }
                }
                Ok(Value::Object(Map::from_entries(entries)))
            }
            MAJOR_TAG => {
                let tag = Self::definite(arg)?;
                let inner = self.item(Self::enter(depth)?)?;
                match tag {
                    2 | 3 => bignum(tag == 3, inner),
                    _ => Ok(inner),
                }
            }
            MAJOR_SIMPLE => match (info, arg) {
                (20, _) => Ok(Value::Bool(false)),
                (21, _) => Ok(Value::Bool(true)),
                (22 | 23, _) => Ok(Value::Null),
                (25, Some(bits)) => Ok(float(half_to_f64(bits as u16))),
                (26, Some(bits)) => Ok(float(f64::from(f32::from_bits(bits as u32)))),
                (27, Some(bits)) => Ok(float(f64::from_bits(bits))),
                (31, _) => Err(Error::new("invalid CBOR: unexpected break")),
                _ => Err(Error::new(format_args!(
                    "unsupported CBOR simple value {}",
                    arg.unwrap_or(0)
                ))),
            },
            _ => Err(Error::new("invalid CBOR: unknown major type")),
        }
    }

    /// Checks the nesting budget before opening a container or tag.
    fn enter(depth: usize) -> Result<usize, Error> {
        if depth >= CBOR_DEPTH_MAX {
            return Err(Error::new(format_args!(
                "CBOR nested deeper than {CBOR_DEPTH_MAX}"
            )));
        }
        Ok(depth + 1)
    }

    /// A capacity to reserve for a container: its declared length, but never
    /// more items than the remaining bytes could hold (each takes at least
    /// `bytes_per_item`), so a forged huge length allocates nothing extra.
    fn capacity(&self, arg: Option<u64>, bytes_per_item: usize) -> usize {
        let most = self.remaining() / bytes_per_item;
        arg.map_or(0, |len| {
            usize::try_from(len).unwrap_or(usize::MAX).min(most)
        })
    }

    fn entry(&mut self, depth: usize) -> Result<(String, Value), Error> {
        let key = key_string(self.item(depth)?)?;
        let value = self.item(depth)?;
        Ok((key, value))
    }

    /// The content of a byte or text string, joining the chunks of an
    /// indefinite-length one (each chunk must be a definite string of the same
    /// major type, per RFC 8949 §3.2.3).
    fn string_bytes(&mut self, major: u8, arg: Option<u64>) -> Result<Vec<u8>, Error> {
        if let Some(len) = arg {
            return Ok(self.take(len)?.to_vec());
        }
        let mut out = Vec::new();
        loop {
            if self.peek()? == BREAK {
                self.pos += 1;
                return Ok(out);
            }
            match self.head()? {
                (m, _, Some(len)) if m == major => {
                    let chunk = self.take(len)?;
                    if major == MAJOR_TEXT && std::str::from_utf8(chunk).is_err() {
                        return Err(Error::new("invalid CBOR: text chunk is not UTF-8"));
                    }
                    out.extend_from_slice(chunk);
                }
                _ => return Err(Error::new("invalid CBOR: bad chunk in indefinite string")),
            }
        }
    }
}

/// A float as JS would hold it: integral values in `i64` range become `Int`
/// (except `-0`, which only a float can hold).
fn float(f: f64) -> Value {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f.fract() == 0.0 && (-TWO_63..TWO_63).contains(&f) && !(f == 0.0 && f.is_sign_negative()) {
        Value::Int(f as i64)
    } else {
        Value::Float(f)
    }
}

/// IEEE 754 half precision to `f64`.
fn half_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1f);
    let mant = f64::from(bits & 0x3ff);
    let magnitude = match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1024.0 + mant) * 2f64.powi(exp - 25),
    };
    sign * magnitude
}

/// Tags 2 (positive) and 3 (negative, `-1 - n`) bignums.
fn bignum(negative: bool, inner: Value) -> Result<Value, Error> {
    let Value::Bytes(bytes) = inner else {
        return Err(Error::new(
            "invalid CBOR: bignum content is not a byte string",
        ));
    };
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let digits = &bytes[start..];
    if digits.len() > 16 {
        return Err(Error::new("CBOR bignum out of range (larger than i128)"));
    }
    let n = digits
        .iter()
        .fold(0u128, |acc, &b| (acc << 8) | u128::from(b));
    let n =
        i128::try_from(n).map_err(|_| Error::new("CBOR bignum out of range (larger than i128)"))?;
    Ok(Value::BigInt(if negative { -1 - n } else { n }))
}

/// Object keys are strings; other scalar keys (possible with JS `Map`s) are
/// stringified the way JS's `String(key)` would.
fn key_string(key: Value) -> Result<String, Error> {
    match key {
        Value::String(s) => Ok(s),
        Value::Int(i) => Ok(i.to_string()),
        Value::UInt(u) => Ok(u.to_string()),
        Value::BigInt(b) => Ok(b.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok("null".to_owned()),
        Value::Float(f) if f.is_nan() => Ok("NaN".to_owned()),
        Value::Float(f) if f.is_infinite() => {
            Ok(if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned())
        }
        Value::Float(f) => {
            let mut out = Vec::new();
            write_f64(&mut out, f);
            String::from_utf8(out).map_err(|_| Error::new("unprintable float key"))
        }
        _ => Err(Error::new(
            "unsupported CBOR map key (not a string or number)",
        )),
    }
}
