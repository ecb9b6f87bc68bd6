//! Deterministic fuzz-ish loops: random and mutated inputs must never panic,
//! and random Values must survive encode -> decode unchanged.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::*;

/// xorshift64*: tiny, deterministic, good enough to shake the decoders.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Runs everything a request body can reach, so a panic anywhere shows up.
fn exercise_json(buf: &[u8]) {
    let mut copy = buf.to_vec();
    if let Ok(args) = parse_action_body(&mut copy) {
        for i in 0..=args.len() {
            let _ = args.decode::<Value>(i);
            let _ = args.decode::<(i64, String)>(i);
            let _ = args.decode::<Vec<u8>>(i);
            let _ = args.decode::<Option<u64>>(i);
        }
        if let Ok(values) = args.rest(0) {
            let mut out = Vec::new();
            write_tagged(&mut out, &values).expect("decoded values always encode");
        }
    }
    let mut copy = buf.to_vec();
    if let Ok(args) = parse_args_array(&mut copy) {
        let _ = args.rest(0);
    }
}

const JSON_SEEDS: &[&str] = &[
    r#"{"args":[["$$notAType",1],["$Uint8Array","AQI="]]}"#,
    r#"{"args":[["$BigInt","-123"],{"a":[1,2.5,null,true]},"s\u00e9\n"]}"#,
    r#"{"args":["$$x",["$ArrayBuffer","/w=="]]}"#,
    r#"{"args":[[[[[{"k":["$$y",{"z":-0}]}]]]]]}"#,
];

/// Bytes that matter to the JSON grammar and the tags.
const JSON_ALPHABET: &[u8] = b"[]{}\",:$\\01-.eE tnulrfasBigIt8AQI=";

#[test]
fn random_bytes_never_panic_the_json_path() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        exercise_json(&rng.bytes(64));
    }
    for _ in 0..3000 {
        let len = rng.below(48);
        let soup: Vec<u8> = (0..len).map(|_| *rng.pick(JSON_ALPHABET)).collect();
        exercise_json(&soup);
        let mut wrapped = br#"{"args":["#.to_vec();
        wrapped.extend(&soup);
        wrapped.extend(b"]}");
        exercise_json(&wrapped);
    }
}

#[test]
fn mutated_bodies_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..4000 {
        let mut buf = rng.pick(JSON_SEEDS).as_bytes().to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(buf.len());
            match rng.below(3) {
                0 => buf[at] = *rng.pick(JSON_ALPHABET),
                1 => {
                    buf.remove(at);
                }
                _ => buf.insert(at, *rng.pick(JSON_ALPHABET)),
            }
        }
        exercise_json(&buf);
    }
}

fn exercise_cbor(bytes: &[u8]) {
    if let Ok(v) = decode_cbor(bytes) {
        let mut out = Vec::new();
        write_tagged(&mut out, &v).expect("decoded values always encode");
    }
    let _ = decode_base64_cbor(&STANDARD.encode(bytes));
}

#[test]
fn random_bytes_never_panic_the_cbor_path() {
    let mut rng = Rng(7);
    for _ in 0..5000 {
        exercise_cbor(&rng.bytes(48));
    }
    // Random base64-ish text, including invalid characters.
    for _ in 0..2000 {
        let len = rng.below(40);
        let text: String = (0..len)
            .map(|_| *rng.pick(b"ABCDuQZ+/-_=09 !"))
            .map(char::from)
            .collect();
        let _ = decode_base64_cbor(&text);
    }
}

#[test]
fn mutated_cbor_never_panics() {
    let seeds: &[&[u8]] = &[
        &[
            0xb9, 0x00, 0x01, 0x64, b'n', b'a', b'm', b'e', 0x63, b'A', b'n', b'n',
        ],
        &[
            0x9f, 0x19, 0x01, 0x00, 0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0x5f, 0x41, 0x01, 0xff,
            0xff,
        ],
        &[
            0xa2, 0x61, b'a', 0xc2, 0x42, 0x01, 0x00, 0x01, 0xf9, 0x3e, 0x00,
        ],
        &[
            0x83, 0x81, 0x81, 0xf7, 0x7f, 0x61, b'x', 0xff, 0xd9, 0x01, 0x03, 0xa0,
        ],
    ];
    let mut rng = Rng(0xdead_beef);
    for _ in 0..5000 {
        let mut buf = rng.pick(seeds).to_vec();
        for _ in 0..=rng.below(3) {
            let at = rng.below(buf.len());
            match rng.below(3) {
                0 => buf[at] = rng.next() as u8,
                1 => {
                    buf.remove(at);
                }
                _ => buf.insert(at, rng.next() as u8),
            }
            if buf.is_empty() {
                break;
            }
        }
        exercise_cbor(&buf);
    }
}

/// A random Value that survives the wire unchanged: floats are non-integral
/// (an integral float comes back as `Int`, by JS's one-number-type rule).
fn random_value(rng: &mut Rng, depth: usize) -> Value {
    let kinds = if depth == 0 { 8 } else { 10 };
    match rng.below(kinds) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 1),
        2 => Value::Int(rng.next() as i64 >> rng.below(64)),
        3 => Value::UInt(u64::MAX - (rng.next() >> 2)),
        4 => {
            let f = f64::from_bits(rng.next());
            if f.is_finite() && f.fract() != 0.0 {
                Value::Float(f)
            } else {
                Value::Float(rng.below(1000) as f64 + 0.25)
            }
        }
        5 => Value::BigInt((((rng.next() as i128) << 64) | rng.next() as i128) >> rng.below(127)),
        6 => Value::String(random_string(rng)),
        7 => Value::Bytes(rng.bytes(12)),
        8 => {
            let len = rng.below(4);
            let mut items: Vec<Value> = (0..len).map(|_| random_value(rng, depth - 1)).collect();
            if len == 2 && rng.below(2) == 0 {
                items[0] = Value::String(format!("${}", random_string(rng)));
            }
            Value::Array(items)
        }
        _ => {
            let len = rng.below(4);
            let mut map = Map::new();
            for _ in 0..len {
                map.insert(random_string(rng), random_value(rng, depth - 1));
            }
            Value::Object(map)
        }
    }
}

fn random_string(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "$", "$$", "a", "\"", "\\", "\n", "\u{1}", "é", "😀", "中", " ", "/",
    ];
    (0..rng.below(5)).map(|_| *rng.pick(PIECES)).collect()
}

#[test]
fn random_values_round_trip_through_the_wire() {
    let mut rng = Rng(2024);
    for _ in 0..2000 {
        let value = random_value(&mut rng, 4);
        let json = enc(&value);
        let back: Value = dec(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(back, value, "{json}");
        assert_eq!(enc(&back), json);
        assert_eq!(from_value::<Value>(&value).unwrap(), value);
        assert_eq!(to_value(&value).unwrap(), value);
    }
}
