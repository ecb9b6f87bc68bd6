//! `Value` and `Map` API, and `to_value` / `from_value`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Mode {
    Fast,
    Slow(u32),
    Pair(i8, i8),
    Custom { level: u8 },
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Config {
    name: String,
    limit: Option<u64>,
    big: i128,
    #[serde(with = "bytes")]
    key: Vec<u8>,
    raw: Vec<u8>,
    modes: Vec<Mode>,
    extra: BTreeMap<String, Value>,
}

/// Serializes a `Vec<u8>` with `serialize_bytes`, as `serde_bytes` would, so
/// that it becomes a `Uint8Array` on the wire.
mod bytes {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

fn sample() -> Config {
    Config {
        name: "n".into(),
        limit: Some(u64::MAX),
        big: 5,
        key: vec![9, 8],
        raw: vec![1],
        modes: vec![
            Mode::Fast,
            Mode::Slow(3),
            Mode::Pair(-1, 1),
            Mode::Custom { level: 2 },
        ],
        extra: BTreeMap::from([("k".to_owned(), Value::from("$v"))]),
    }
}

#[test]
fn to_value_maps_types_like_the_wire() {
    let v = to_value(&sample()).unwrap();
    let m = v.as_object().unwrap();
    assert_eq!(
        m.keys().collect::<Vec<_>>(),
        ["name", "limit", "big", "key", "raw", "modes", "extra"]
    );
    assert_eq!(m.get("limit"), Some(&Value::UInt(u64::MAX)));
    assert_eq!(m.get("big"), Some(&Value::BigInt(5)));
    assert_eq!(m.get("key"), Some(&Value::Bytes(vec![9, 8])));
    assert_eq!(m.get("raw"), Some(&Value::Array(vec![Value::Int(1)])));
    assert_eq!(
        m.get("modes").unwrap().as_array().unwrap()[1],
        Value::Object(Map::from_iter([("Slow", 3)]))
    );
    // The same JSON either way.
    assert_eq!(enc(&v), enc(&sample()));
}

#[test]
fn from_value_round_trips_typed_data() {
    let v = to_value(&sample()).unwrap();
    assert_eq!(from_value::<Config>(&v).unwrap(), sample());
    // And through the wire.
    let wire: Value = dec(&enc(&sample())).unwrap();
    assert_eq!(wire, v);
    assert_eq!(from_value::<Config>(&wire).unwrap(), sample());
}

#[test]
fn from_value_narrows_and_widens() {
    assert_eq!(from_value::<i64>(&Value::BigInt(-4)).unwrap(), -4);
    assert_eq!(
        from_value::<u64>(&Value::BigInt(u64::MAX.into())).unwrap(),
        u64::MAX
    );
    assert!(from_value::<u8>(&Value::BigInt(256)).is_err());
    assert_eq!(from_value::<i128>(&Value::Int(3)).unwrap(), 3);
    assert_eq!(from_value::<f64>(&Value::Int(3)).unwrap(), 3.0);
    assert_eq!(from_value::<f64>(&Value::BigInt(3)).unwrap(), 3.0);
    assert_eq!(
        from_value::<Vec<u8>>(&Value::Bytes(vec![1, 2])).unwrap(),
        [1, 2]
    );
    assert_eq!(from_value::<Option<u8>>(&Value::Null).unwrap(), None);
    assert!(from_value::<String>(&Value::Int(1)).is_err());
    assert!(from_value::<Mode>(&Value::Int(1)).is_err());
}

#[test]
fn to_value_edge_cases() {
    assert_eq!(to_value(&()).unwrap(), Value::Null);
    assert!(to_value(&u128::MAX).unwrap_err().message().contains("u128"));
    assert_eq!(to_value(&'x').unwrap(), Value::from("x"));
    assert_eq!(
        to_value(&f32::NAN).unwrap().as_f64().map(f64::is_nan),
        Some(true)
    );
    assert_eq!(
        to_value(&BTreeMap::from([(2u8, true)])).unwrap(),
        Value::Object(Map::from_iter([("2", true)]))
    );
    assert!(to_value(&BTreeMap::from([((1, 2), 3)])).is_err());
    assert_eq!(to_value(&Value::from("x")).unwrap(), Value::from("x"));
}

#[test]
fn map_insert_replace_keeps_position() {
    let mut m = Map::new();
    assert!(m.is_empty());
    assert_eq!(m.insert("b", 1), None);
    assert_eq!(m.insert("a", 2), None);
    assert_eq!(m.insert("b", "x"), Some(Value::Int(1)));
    assert_eq!(
        m.iter().collect::<Vec<_>>(),
        [("b", &Value::from("x")), ("a", &Value::Int(2)),]
    );
    assert_eq!(m.len(), 2);
    assert!(m.contains_key("a"));
    assert_eq!(m.remove("b"), Some(Value::from("x")));
    assert_eq!(m.remove("b"), None);
    m.extend([("c", 3), ("a", 4)]);
    assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "c"]);
    assert_eq!(m.get("a"), Some(&Value::Int(4)));
    *m.get_mut("c").unwrap() = Value::Null;
    assert_eq!(
        m.values().collect::<Vec<_>>(),
        [&Value::Int(4), &Value::Null]
    );
    let collected: Map = [("x", 1), ("y", 2), ("x", 3)].into_iter().collect();
    assert_eq!(collected.keys().collect::<Vec<_>>(), ["x", "y"]);
    assert_eq!(collected.get("x"), Some(&Value::Int(3)));
    let owned: Vec<(String, Value)> = collected.into_iter().collect();
    assert_eq!(owned.len(), 2);
}

#[test]
fn value_accessors_and_conversions() {
    let v = Value::Object(Map::from_iter([
        ("s", Value::from("str")),
        ("i", Value::from(-3i32)),
        ("u", Value::from(u64::MAX)),
        ("small_u", Value::from(7u64)),
        ("f", Value::from(1.5)),
        ("b", Value::from(true)),
        ("n", Value::from(None::<i32>)),
        ("big", Value::from(9i128)),
        ("bytes", Value::from(vec![1u8])),
        ("arr", Value::from(vec![Value::from(1)])),
    ]));
    assert_eq!(v.get("s").and_then(Value::as_str), Some("str"));
    assert_eq!(v.get("i").and_then(Value::as_i64), Some(-3));
    assert_eq!(v.get("i").and_then(Value::as_u64), None);
    assert_eq!(v.get("u").and_then(Value::as_u64), Some(u64::MAX));
    assert_eq!(v.get("u").and_then(Value::as_i64), None);
    assert_eq!(v.get("small_u"), Some(&Value::Int(7)));
    assert_eq!(v.get("f").and_then(Value::as_f64), Some(1.5));
    assert_eq!(v.get("f").and_then(Value::as_i64), None);
    assert_eq!(v.get("b").and_then(Value::as_bool), Some(true));
    assert!(v.get("n").is_some_and(Value::is_null));
    assert_eq!(v.get("big").and_then(Value::as_i64), Some(9));
    assert_eq!(v.get("bytes").and_then(Value::as_bytes), Some(&[1u8][..]));
    assert_eq!(
        v.get("arr").and_then(Value::as_array).map(<[Value]>::len),
        Some(1)
    );
    assert_eq!(v.get("missing"), None);
    assert_eq!(Value::from("x").get("s"), None);
    let collected: Value = (1..=3).collect();
    assert_eq!(enc(&collected), "[1,2,3]");
}

#[test]
fn error_type_is_usable() {
    let e = Error::new("boom");
    assert_eq!(e.to_string(), "boom");
    assert_eq!(e.message(), "boom");
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(e.clone());
    assert_eq!(boxed.to_string(), "boom");
    assert_eq!(<Error as serde::de::Error>::custom("x"), Error::new("x"));
    assert_eq!(<Error as serde::ser::Error>::custom("y").message(), "y");
}
