//! Conversions between [`Value`] and typed data through serde.
//!
//! A `Value` is already untagged, so no `$` rules apply here: a
//! `Value::Array(["$x", 1])` is just that array.

use serde::de::value::{BorrowedStrDeserializer, SeqDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess,
    VariantAccess, Visitor,
};
use serde::ser::{self, Serialize};

use super::de::KeyDe;
use super::ser::key_error;
use super::{Error, Map, Value};

/// Converts a [`Value`] into typed data, e.g. an actor's creation input decoded
/// by [`decode_base64_cbor`](super::decode_base64_cbor) into its input struct.
///
/// A `BigInt` that fits is accepted by any integer target (and by floats, with
/// rounding), and `Bytes` are accepted by `Vec<u8>` targets as a sequence.
pub fn from_value<T: DeserializeOwned>(v: &Value) -> Result<T, Error> {
    T::deserialize(v)
}

/// Converts typed data into a [`Value`] with the same mapping the tagged JSON
/// encoder uses: `i128`/`u128` become `BigInt`, bytes `Bytes`, unit and `None`
/// `Null`, enums are externally tagged, and map keys must be strings or
/// integers (stringified).
pub fn to_value<T: Serialize + ?Sized>(v: &T) -> Result<Value, Error> {
    v.serialize(ValueSer)
}

impl<'de> IntoDeserializer<'de, Error> for &'de Value {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for &'de Value {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::UInt(u) => visitor.visit_u64(*u),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::BigInt(b) => visitor.visit_i128(*b),
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Bytes(b) => visitor.visit_borrowed_bytes(b),
            Value::ArrayBuffer(b) => {
                visitor.visit_newtype_struct(serde::de::value::BytesDeserializer::<Error>::new(b))
            }
            Value::Array(a) => {
                let mut seq = SeqDeserializer::<_, Error>::new(a.iter());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Value::Object(m) => {
                let mut map = ObjRef {
                    iter: m.iter(),
                    value: None,
                };
                let value = visitor.visit_map(&mut map)?;
                if map.iter.len() > 0 {
                    return Err(Error::new(format_args!(
                        "object of {} entries was not fully read",
                        m.len()
                    )));
                }
                Ok(value)
            }
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_i64(visitor)
    }

    /// Narrows a fitting `BigInt`, because serde's `i64`/`u64`/... visitors
    /// have no `visit_i128`.
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match *self {
            Value::BigInt(b) => match (i64::try_from(b), u64::try_from(b)) {
                (Ok(i), _) => visitor.visit_i64(i),
                (_, Ok(u)) => visitor.visit_u64(u),
                _ => visitor.visit_i128(b),
            },
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match *self {
            // Like JS `Number(big)`: may round.
            Value::BigInt(b) => visitor.visit_f64(b as f64),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Null => visitor.visit_none(),
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

    /// Bytes also deserialize as a sequence of `u8`, for `Vec<u8>` targets.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Bytes(b) | Value::ArrayBuffer(b) => {
                let mut seq = SeqDeserializer::<_, Error>::new(b.iter().copied());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            _ => self.deserialize_any(visitor),
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
        match self {
            Value::String(s) => visitor.visit_enum(BorrowedStrDeserializer::<Error>::new(s)),
            Value::Object(m) if m.len() == 1 => match m.iter().next() {
                Some((key, content)) => visitor.visit_enum(VariantRef { key, content }),
                None => Err(Error::new("expected an enum")),
            },
            _ => Err(Error::new(
                "expected an enum: a string or an object with one key",
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i128 u128 char str string bytes byte_buf unit unit_struct
        tuple_struct map struct identifier
    }
}

/// Entries of a borrowed object being visited.
struct ObjRef<'de, I> {
    iter: I,
    value: Option<&'de Value>,
}

impl<'de, I: Iterator<Item = (&'de str, &'de Value)>> MapAccess<'de> for ObjRef<'de, I> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(KeyDe(k)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(v) => seed.deserialize(v),
            None => Err(Error::new("object value requested before its key")),
        }
    }
}

/// An externally tagged enum variant held in a one-entry object.
struct VariantRef<'de> {
    key: &'de str,
    content: &'de Value,
}

impl<'de> EnumAccess<'de> for VariantRef<'de> {
    type Error = Error;
    type Variant = &'de Value;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, &'de Value), Error> {
        Ok((seed.deserialize(KeyDe(self.key))?, self.content))
    }
}

impl<'de> VariantAccess<'de> for &'de Value {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self {
            Value::Null => Ok(()),
            _ => Err(Error::new("expected null content for a unit variant")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_tuple(self, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}

/// The serializer behind [`to_value`].
struct ValueSer;

/// An array or object under construction; `variant` wraps it as
/// `{"variant": ...}` when it is the content of an enum variant.
struct Building {
    items: Vec<Value>,
    entries: Vec<(String, Value)>,
    pending_key: Option<String>,
    variant: Option<&'static str>,
}

impl Building {
    fn new(variant: Option<&'static str>, capacity: usize) -> Self {
        Building {
            items: Vec::with_capacity(capacity.min(4096)),
            entries: Vec::new(),
            pending_key: None,
            variant,
        }
    }

    fn wrap(variant: Option<&'static str>, value: Value) -> Value {
        match variant {
            Some(name) => Value::Object(Map::from_entries(vec![(name.to_owned(), value)])),
            None => value,
        }
    }

    fn end_array(self) -> Value {
        Self::wrap(self.variant, Value::Array(self.items))
    }

    fn end_object(self) -> Value {
        Self::wrap(self.variant, Value::Object(Map::from_entries(self.entries)))
    }
}

/// Turns a serialized map key into the string JSON needs.
fn key_string(key: Value) -> Result<String, Error> {
    match key {
        Value::String(s) => Ok(s),
        Value::Int(i) => Ok(i.to_string()),
        Value::UInt(u) => Ok(u.to_string()),
        Value::BigInt(b) => Ok(b.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(key_error()),
    }
}

impl ser::Serializer for ValueSer {
    type Ok = Value;
    type Error = Error;
    type SerializeSeq = Building;
    type SerializeTuple = Building;
    type SerializeTupleStruct = Building;
    type SerializeTupleVariant = Building;
    type SerializeMap = Building;
    type SerializeStruct = Building;
    type SerializeStructVariant = Building;

    fn serialize_bool(self, v: bool) -> Result<Value, Error> {
        Ok(Value::Bool(v))
    }

    fn serialize_i8(self, v: i8) -> Result<Value, Error> {
        Ok(Value::Int(v.into()))
    }

    fn serialize_i16(self, v: i16) -> Result<Value, Error> {
        Ok(Value::Int(v.into()))
    }

    fn serialize_i32(self, v: i32) -> Result<Value, Error> {
        Ok(Value::Int(v.into()))
    }

    fn serialize_i64(self, v: i64) -> Result<Value, Error> {
        Ok(Value::Int(v))
    }

    fn serialize_i128(self, v: i128) -> Result<Value, Error> {
        Ok(Value::BigInt(v))
    }

    fn serialize_u8(self, v: u8) -> Result<Value, Error> {
        Ok(Value::Int(v.into()))
    }

    fn serialize_u16(self, v: u16) -> Result<Value, Error> {
        Ok(Value::Int(v.into()))
    }

    fn serialize_u32(self, v: u32) -> Result<Value, Error> {
        Ok(Value::Int(v.into()))
    }

    fn serialize_u64(self, v: u64) -> Result<Value, Error> {
        Ok(Value::from(v))
    }

    fn serialize_u128(self, v: u128) -> Result<Value, Error> {
        i128::try_from(v)
            .map(Value::BigInt)
            .map_err(|_| Error::new("u128 too large for a BigInt value (max i128::MAX)"))
    }

    fn serialize_f32(self, v: f32) -> Result<Value, Error> {
        Ok(Value::Float(v.into()))
    }

    fn serialize_f64(self, v: f64) -> Result<Value, Error> {
        Ok(Value::Float(v))
    }

    fn serialize_char(self, v: char) -> Result<Value, Error> {
        Ok(Value::String(v.to_string()))
    }

    fn serialize_str(self, v: &str) -> Result<Value, Error> {
        Ok(Value::String(v.to_owned()))
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<Value, Error> {
        Ok(Value::Bytes(v.to_vec()))
    }

    fn serialize_none(self) -> Result<Value, Error> {
        Ok(Value::Null)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<Value, Error> {
        Ok(Value::Null)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, Error> {
        Ok(Value::Null)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, Error> {
        Ok(Value::String(variant.to_owned()))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        match (name == super::ARRAY_BUFFER, value.serialize(self)?) {
            (true, Value::Bytes(b)) => Ok(Value::ArrayBuffer(b)),
            (_, other) => Ok(other),
        }
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        Ok(Building::wrap(Some(variant), value.serialize(self)?))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Building, Error> {
        Ok(Building::new(None, len.unwrap_or(0)))
    }

    fn serialize_tuple(self, len: usize) -> Result<Building, Error> {
        Ok(Building::new(None, len))
    }

    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Building, Error> {
        Ok(Building::new(None, len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Building, Error> {
        Ok(Building::new(Some(variant), len))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Building, Error> {
        Ok(Building::new(None, 0))
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Building, Error> {
        Ok(Building::new(None, 0))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Building, Error> {
        Ok(Building::new(Some(variant), 0))
    }
}

impl ser::SerializeSeq for Building {
    type Ok = Value;
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.items.push(value.serialize(ValueSer)?);
        Ok(())
    }

    fn end(self) -> Result<Value, Error> {
        Ok(self.end_array())
    }
}

impl ser::SerializeTuple for Building {
    type Ok = Value;
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<Value, Error> {
        Ok(self.end_array())
    }
}

impl ser::SerializeTupleStruct for Building {
    type Ok = Value;
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<Value, Error> {
        Ok(self.end_array())
    }
}

impl ser::SerializeTupleVariant for Building {
    type Ok = Value;
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<Value, Error> {
        Ok(self.end_array())
    }
}

impl ser::SerializeMap for Building {
    type Ok = Value;
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.pending_key = Some(key_string(key.serialize(ValueSer)?)?);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .pending_key
            .take()
            .ok_or_else(|| Error::new("map value serialized before its key"))?;
        self.entries.push((key, value.serialize(ValueSer)?));
        Ok(())
    }

    fn end(self) -> Result<Value, Error> {
        Ok(self.end_object())
    }
}

impl ser::SerializeStruct for Building {
    type Ok = Value;
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.entries
            .push((key.to_owned(), value.serialize(ValueSer)?));
        Ok(())
    }

    fn end(self) -> Result<Value, Error> {
        Ok(self.end_object())
    }
}

impl ser::SerializeStructVariant for Building {
    type Ok = Value;
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }

    fn end(self) -> Result<Value, Error> {
        Ok(self.end_object())
    }
}
