//! The dynamic [`Value`] and its insertion-ordered [`Map`].

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A dynamically typed user value as RivetKit clients send it: JSON plus JS
/// `BigInt` and bytes.
///
/// Integers are normalized so that equal numbers compare equal: `Int` holds
/// every integer that fits in `i64` and `UInt` only those above `i64::MAX`.
/// `BigInt` is kept apart from `Int` even for small values because the client
/// distinguishes `5n` from `5`, and an echo must give back what it got.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
// Recursive: the derive's automatic bounds would recurse, so they are omitted on the recursive
// fields and the bounds the containers need are given here instead.
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
#[rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source))]
#[rkyv(bytecheck(bounds(__C: rkyv::validation::ArchiveContext, __C::Error: rkyv::rancor::Source)))]
pub enum Value {
    /// JSON `null` (and JS `undefined`, which has no JSON form).
    Null,
    /// A boolean.
    Bool(bool),
    /// An integral number that fits in `i64`.
    Int(i64),
    /// An integral number above `i64::MAX`.
    UInt(u64),
    /// Any other number; non-finite ones are written as `null`, like JSON.stringify.
    Float(f64),
    /// A JS `BigInt` (`["$BigInt","<decimal>"]` on the wire).
    BigInt(i128),
    /// A string.
    String(String),
    /// A `Uint8Array` (`["$Uint8Array","<base64>"]` on the wire).
    Bytes(Vec<u8>),
    /// An `ArrayBuffer` (`["$ArrayBuffer","<base64>"]`), kept apart from `Bytes` so that it
    /// round-trips as what the client sent.
    ArrayBuffer(Vec<u8>),
    /// An array, already untagged (`["$$x",1]` on the wire is `["$x",1]` here).
    Array(#[rkyv(omit_bounds)] Vec<Value>),
    /// An object, in the order its keys arrived.
    Object(#[rkyv(omit_bounds)] Map),
}

/// String-keyed entries in insertion order, because JS objects keep insertion
/// order and an echoed object must come back in the order it was sent.
///
/// Lookups are linear scans: user objects are small, and a vector keeps
/// iteration and serialization cheap. Decoders build maps through a
/// de-duplicating bulk path, so hostile inputs with many keys stay linear.
#[derive(Clone, Debug, Default, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
// Recursive: the derive's automatic bounds would recurse, so they are omitted on the recursive
// fields and the bounds the containers need are given here instead.
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
#[rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source))]
#[rkyv(bytecheck(bounds(__C: rkyv::validation::ArchiveContext, __C::Error: rkyv::rancor::Source)))]
pub struct Map(#[rkyv(omit_bounds)] Vec<(String, Value)>);

/// Above this many entries, de-duplicating a decoded object uses a hash index
/// instead of pairwise comparison, so that a hostile object cannot cost O(n²).
const DEDUP_LINEAR_MAX: usize = 16;

impl Map {
    /// Creates an empty map.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Creates an empty map that can take `capacity` entries without reallocating.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    /// Builds a map from decoded entries with JS object semantics for repeated
    /// keys (as `JSON.parse` does): the last value wins, at the first key's position.
    pub(super) fn from_entries(mut entries: Vec<(String, Value)>) -> Self {
        if entries.len() <= DEDUP_LINEAR_MAX {
            let mut out: Vec<(String, Value)> = Vec::with_capacity(entries.len());
            for (key, value) in entries {
                match out.iter_mut().find(|(k, _)| *k == key) {
                    Some(slot) => slot.1 = value,
                    None => out.push((key, value)),
                }
            }
            return Self(out);
        }
        // first[i] is the index of the first entry with entry i's key.
        let first: Vec<usize> = {
            let mut seen: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
            entries
                .iter()
                .enumerate()
                .map(|(i, (k, _))| *seen.entry(k.as_str()).or_insert(i))
                .collect()
        };
        if first.iter().enumerate().all(|(i, &f)| i == f) {
            return Self(entries);
        }
        // Move each repeated key's value into its first occurrence; the last wins
        // because later entries overwrite earlier ones.
        for i in 0..entries.len() {
            if first[i] != i {
                let value = std::mem::replace(&mut entries[i].1, Value::Null);
                entries[first[i]].1 = value;
            }
        }
        let mut i = 0;
        entries.retain(|_| {
            let keep = first[i] == i;
            i += 1;
            keep
        });
        Self(entries)
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value under `key` for in-place modification, if any.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value` and returns the previous value. Replacing keeps the
    /// key's position, as assigning to an existing JS property does.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        let key = key.into();
        let value = value.into();
        match self.get_mut(&key) {
            Some(slot) => Some(std::mem::replace(slot, value)),
            None => {
                self.0.push((key, value));
                None
            }
        }
    }

    /// Removes `key`, keeping the order of the remaining entries (like JS `delete`).
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let pos = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(pos).1)
    }

    /// The entries in insertion order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &Value)> + ExactSizeIterator {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The keys in insertion order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// The values in insertion order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Value> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Map {
    /// Collects with the same repeated-key rule as [`Map::insert`]: last value
    /// wins at the first position.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::from_entries(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<K: Into<String>, V: Into<Value>> Extend<(K, V)> for Map {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl IntoIterator for Map {
    type Item = (String, Value);
    type IntoIter = std::vec::IntoIter<(String, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Map {
    type Item = (&'a str, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Value)>,
        fn(&'a (String, Value)) -> (&'a str, &'a Value),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an integer (`Int`, `UInt` or `BigInt`) that fits in
    /// `i64`. Floats are not converted, so a fractional number is never truncated.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            Value::UInt(u) => i64::try_from(u).ok(),
            Value::BigInt(b) => i64::try_from(b).ok(),
            _ => None,
        }
    }

    /// The integer, if this is a non-negative integer that fits in `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Int(i) => u64::try_from(i).ok(),
            Value::UInt(u) => Some(u),
            Value::BigInt(b) => u64::try_from(b).ok(),
            _ => None,
        }
    }

    /// The number as `f64` (as JS `Number(x)` would give it, rounding large
    /// integers), if this is any kind of number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::UInt(u) => Some(u as f64),
            Value::Float(f) => Some(f),
            Value::BigInt(b) => Some(b as f64),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The bytes, if this is a byte array.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) | Value::ArrayBuffer(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The entries, if this is an object.
    pub fn as_object(&self) -> Option<&Map> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    /// Whether this is `Null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The property `key`, if this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object()?.get(key)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

macro_rules! from_signed {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::Int(i64::from(v))
            }
        }
    )*};
}
from_signed!(i8, i16, i32, i64, u8, u16, u32);

impl From<u64> for Value {
    /// Keeps the `Int`-when-it-fits normalization.
    fn from(v: u64) -> Self {
        match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::UInt(v),
        }
    }
}

impl From<i128> for Value {
    /// An `i128` is a `BigInt`, since that is what it encodes as.
    fn from(v: i128) -> Self {
        Value::BigInt(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Float(f64::from(v))
    }
}

impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::Array(v)
    }
}

impl From<Vec<u8>> for Value {
    /// A byte vector is bytes (a `Uint8Array` for the client), not an array of numbers.
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}

impl From<Map> for Value {
    fn from(v: Map) -> Self {
        Value::Object(v)
    }
}

impl From<()> for Value {
    fn from((): ()) -> Self {
        Value::Null
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl<T: Into<Value>> FromIterator<T> for Value {
    /// Collects into an array.
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Value::Array(iter.into_iter().map(Into::into).collect())
    }
}

impl Serialize for Value {
    /// Maps each variant to the serde call the tagged encoder turns into the
    /// matching wire form (`serialize_i128` for BigInt, `serialize_bytes` for bytes).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::UInt(u) => serializer.serialize_u64(*u),
            Value::Float(f) => serializer.serialize_f64(*f),
            Value::BigInt(b) => serializer.serialize_i128(*b),
            Value::String(s) => serializer.serialize_str(s),
            Value::Bytes(b) => serializer.serialize_bytes(b),
            Value::ArrayBuffer(b) => {
                serializer.serialize_newtype_struct(super::ARRAY_BUFFER, &ByteSlice(b))
            }
            Value::Array(a) => {
                let mut seq = serializer.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Object(m) => {
                let mut map = serializer.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl Serialize for Map {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Builds a [`Value`] from whatever a deserializer reports.
struct ValueVisitor;

/// Caps pre-allocation from untrusted size hints; vectors still grow as needed.
const PREALLOC_MAX: usize = 4096;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    /// Our decoders present `$ArrayBuffer` as a newtype around its bytes.
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Bytes(b) => Value::ArrayBuffer(b),
            other => other,
        })
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::BigInt(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        i128::try_from(v)
            .map(Value::BigInt)
            .map_err(|_| E::custom("BigInt out of range (larger than i128)"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(PREALLOC_MAX));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(PREALLOC_MAX));
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            out.push((k, v));
        }
        Ok(Value::Object(Map::from_entries(out)))
    }
}

impl<'de> Deserialize<'de> for Value {
    /// Accepts whatever the deserializer has; with this module's decoders, tags
    /// arrive already undone (BigInt via `visit_i128`, bytes via `visit_byte_buf`).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

impl<'de> Deserialize<'de> for Map {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Map, D::Error> {
        match Value::deserialize(d)? {
            Value::Object(m) => Ok(m),
            _ => Err(de::Error::custom("expected an object")),
        }
    }
}

/// Serializes borrowed bytes as serde bytes (not as a sequence of numbers).
struct ByteSlice<'a>(&'a [u8]);

impl Serialize for ByteSlice<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}
