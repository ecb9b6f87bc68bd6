//! CBOR input as cbor-x writes it, and hostile CBOR.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;

use super::*;

fn cbor(bytes: &[u8]) -> Result<Value, Error> {
    let via_b64 = decode_base64_cbor(&STANDARD.encode(bytes));
    let direct = decode_cbor(bytes);
    // Compared via Debug so that NaN equals NaN.
    assert_eq!(
        format!("{via_b64:?}"),
        format!("{direct:?}"),
        "base64 path agrees with the raw path"
    );
    direct
}

fn obj<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Object(entries.into_iter().collect())
}

#[test]
fn captured_vector_decodes() {
    let v = decode_base64_cbor("uQABZG5hbWVjQW5u").unwrap();
    assert_eq!(v, obj([("name", Value::from("Ann"))]));
    #[derive(Deserialize, Debug, PartialEq)]
    struct Input {
        name: String,
        age: Option<u32>,
    }
    assert_eq!(
        from_value::<Input>(&v).unwrap(),
        Input {
            name: "Ann".into(),
            age: None
        }
    );
}

#[test]
fn float64_encoded_big_integers_become_ints() {
    let v = cbor(&[0xfb, 0x42, 0x70, 0, 0, 0, 0, 0, 0]).unwrap();
    assert_eq!(v, Value::Int(1 << 40));
    assert_eq!(from_value::<u64>(&v).unwrap(), 1 << 40);
    // 2^53 + 2 and -2^60 are exact too.
    let v = cbor(&[0xfb, 0x43, 0x40, 0, 0, 0, 0, 0, 1]).unwrap();
    assert_eq!(v, Value::Int((1 << 53) + 2));
    let v = cbor(&[0xfb, 0xc3, 0xb0, 0, 0, 0, 0, 0, 0]).unwrap();
    assert_eq!(v, Value::Int(-(1 << 60)));
    // 2^64 does not fit i64 and stays a float.
    let v = cbor(&[0xfb, 0x43, 0xf0, 0, 0, 0, 0, 0, 0]).unwrap();
    assert_eq!(v, Value::Float(18446744073709551616.0));
}

#[test]
fn floats_of_every_width() {
    assert_eq!(
        cbor(&[0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]).unwrap(),
        Value::Float(1.5)
    );
    assert_eq!(cbor(&[0xfa, 0x3f, 0xc0, 0, 0]).unwrap(), Value::Float(1.5));
    assert_eq!(cbor(&[0xf9, 0x3e, 0x00]).unwrap(), Value::Float(1.5));
    assert_eq!(cbor(&[0xf9, 0x3c, 0x00]).unwrap(), Value::Int(1));
    assert_eq!(cbor(&[0xf9, 0x7b, 0xff]).unwrap(), Value::Int(65504));
    assert_eq!(
        cbor(&[0xf9, 0x00, 0x01]).unwrap(),
        Value::Float(5.960464477539063e-8)
    );
    assert_eq!(
        cbor(&[0xf9, 0x04, 0x00]).unwrap(),
        Value::Float(6.103515625e-5)
    );
    assert_eq!(
        cbor(&[0xf9, 0x7c, 0x00]).unwrap(),
        Value::Float(f64::INFINITY)
    );
    assert_eq!(
        cbor(&[0xf9, 0xfc, 0x00]).unwrap(),
        Value::Float(f64::NEG_INFINITY)
    );
    assert!(
        cbor(&[0xf9, 0x7e, 0x00])
            .unwrap()
            .as_f64()
            .unwrap()
            .is_nan()
    );
    let neg_zero = cbor(&[0xf9, 0x80, 0x00]).unwrap().as_f64().unwrap();
    assert!(neg_zero == 0.0 && neg_zero.is_sign_negative());
    assert_eq!(
        cbor(&[0xfb, 0xbf, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a]).unwrap(),
        Value::Float(-0.1)
    );
}

#[test]
fn integers_with_any_header_width() {
    assert_eq!(cbor(&[0x00]).unwrap(), Value::Int(0));
    assert_eq!(cbor(&[0x17]).unwrap(), Value::Int(23));
    assert_eq!(cbor(&[0x18, 0x18]).unwrap(), Value::Int(24));
    assert_eq!(cbor(&[0x19, 0x00, 0x01]).unwrap(), Value::Int(1));
    assert_eq!(
        cbor(&[0x1a, 0x00, 0x01, 0x00, 0x00]).unwrap(),
        Value::Int(65536)
    );
    assert_eq!(
        cbor(&[0x1b, 0, 0, 0, 0, 0, 0, 0, 5]).unwrap(),
        Value::Int(5)
    );
    assert_eq!(
        cbor(&[0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap(),
        Value::UInt(u64::MAX)
    );
    assert_eq!(cbor(&[0x20]).unwrap(), Value::Int(-1));
    assert_eq!(cbor(&[0x38, 0x63]).unwrap(), Value::Int(-100));
    assert_eq!(
        cbor(&[0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap(),
        Value::Int(i64::MIN)
    );
    assert_eq!(
        cbor(&[0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap(),
        Value::BigInt(-(1i128 << 64))
    );
}

#[test]
fn nested_arrays_and_maps_keep_order() {
    // [1, [2, {"b": [true, false, null], "a": "x"}]] with a 16-bit map header.
    let bytes = [
        0x82, 0x01, 0x82, 0x02, 0xb9, 0x00, 0x02, 0x61, b'b', 0x83, 0xf5, 0xf4, 0xf6, 0x61, b'a',
        0x61, b'x',
    ];
    let v = cbor(&bytes).unwrap();
    assert_eq!(
        v,
        Value::Array(vec![
            Value::Int(1),
            Value::Array(vec![
                Value::Int(2),
                obj([
                    (
                        "b",
                        Value::Array(vec![Value::Bool(true), Value::Bool(false), Value::Null])
                    ),
                    ("a", Value::from("x")),
                ]),
            ]),
        ])
    );
    assert_eq!(enc(&v), r#"[1,[2,{"b":[true,false,null],"a":"x"}]]"#);
}

#[test]
fn undefined_is_null() {
    assert_eq!(cbor(&[0xf7]).unwrap(), Value::Null);
    let v = cbor(&[0xa1, 0x61, b'u', 0xf7]).unwrap();
    assert_eq!(v, obj([("u", Value::Null)]));
}

#[test]
fn byte_strings_and_indefinite_items() {
    assert_eq!(cbor(&[0x42, 0x01, 0x02]).unwrap(), Value::Bytes(vec![1, 2]));
    assert_eq!(cbor(&[0x40]).unwrap(), Value::Bytes(vec![]));
    assert_eq!(
        cbor(&[0x5f, 0x41, 0x01, 0x41, 0x02, 0xff]).unwrap(),
        Value::Bytes(vec![1, 2])
    );
    assert_eq!(
        cbor(&[0x7f, 0x61, b'a', 0x62, b'b', b'c', 0xff]).unwrap(),
        Value::from("abc")
    );
    assert_eq!(
        cbor(&[0x9f, 0x01, 0x9f, 0xff, 0xff]).unwrap(),
        Value::Array(vec![Value::Int(1), Value::Array(vec![])])
    );
    assert_eq!(
        cbor(&[0xbf, 0x61, b'k', 0x01, 0xff]).unwrap(),
        obj([("k", Value::Int(1))])
    );
    // A chunk of the wrong type, or a nested indefinite chunk, is invalid.
    assert!(cbor(&[0x5f, 0x61, b'a', 0xff]).is_err());
    assert!(cbor(&[0x5f, 0x5f, 0xff, 0xff]).is_err());
    // Text chunks must each be UTF-8.
    assert!(cbor(&[0x7f, 0x61, 0xc3, 0x61, 0xa9, 0xff]).is_err());
    assert_eq!(
        enc(&cbor(&[0x42, 0x01, 0x02]).unwrap()),
        r#"["$Uint8Array","AQI="]"#
    );
}

#[test]
fn tags() {
    // Bignums.
    assert_eq!(cbor(&[0xc2, 0x42, 0x01, 0x00]).unwrap(), Value::BigInt(256));
    assert_eq!(cbor(&[0xc3, 0x41, 0x00]).unwrap(), Value::BigInt(-1));
    assert_eq!(cbor(&[0xc2, 0x40]).unwrap(), Value::BigInt(0));
    let mut max = vec![0xc2, 0x50, 0x7f];
    max.extend([0xff; 15]);
    assert_eq!(cbor(&max).unwrap(), Value::BigInt(i128::MAX));
    let mut min = vec![0xc3, 0x50, 0x7f];
    min.extend([0xff; 15]);
    assert_eq!(cbor(&min).unwrap(), Value::BigInt(i128::MIN));
    let mut too_big = vec![0xc2, 0x50];
    too_big.extend([0xff; 16]);
    assert!(cbor(&too_big).is_err());
    let mut padded = vec![0xc2, 0x51, 0x00, 0x01];
    padded.extend([0x00; 15]);
    assert_eq!(cbor(&padded).unwrap(), Value::BigInt(1i128 << 120));
    let mut seventeen = vec![0xc2, 0x51, 0x01];
    seventeen.extend([0x00; 16]);
    assert!(cbor(&seventeen).is_err());
    assert!(cbor(&[0xc2, 0x01]).is_err(), "bignum of a non-byte-string");
    assert_eq!(
        enc(&cbor(&[0xc2, 0x42, 0x01, 0x00]).unwrap()),
        r#"["$BigInt","256"]"#
    );
    // Other tags give their content: a date, a 16-bit tag number, a typed array.
    assert_eq!(
        cbor(&[0xc1, 0x1a, 0x5f, 0x5e, 0x10, 0x00]).unwrap(),
        Value::Int(0x5f5e_1000)
    );
    assert_eq!(
        cbor(&[0xd9, 0x01, 0x03, 0xa1, 0x61, b'k', 0x01]).unwrap(),
        obj([("k", Value::Int(1))])
    );
    assert_eq!(
        cbor(&[0xd8, 0x40, 0x42, 0x01, 0x02]).unwrap(),
        Value::Bytes(vec![1, 2])
    );
}

#[test]
fn map_keys_are_stringified_like_js() {
    let v = cbor(&[
        0xa4, 0x01, 0x61, b'a', 0x20, 0xf5, 0xf6, 0x00, 0xf9, 0x3e, 0x00, 0x00,
    ])
    .unwrap();
    assert_eq!(
        v,
        obj([
            ("1", Value::from("a")),
            ("-1", Value::Bool(true)),
            ("null", Value::Int(0)),
            ("1.5", Value::Int(0)),
        ])
    );
    assert!(cbor(&[0xa1, 0x80, 0x00]).is_err(), "array key");
    assert!(cbor(&[0xa1, 0x40, 0x00]).is_err(), "bytes key");
    // Repeated keys: last value, first position.
    let v = cbor(&[0xa3, 0x61, b'a', 0x01, 0x61, b'b', 0x02, 0x61, b'a', 0x03]).unwrap();
    assert_eq!(enc(&v), r#"{"a":3,"b":2}"#);
}

#[test]
fn truncated_input_is_an_error_at_every_cut() {
    let bytes = [
        0xb9, 0x00, 0x02, 0x61, b'a', 0x9f, 0x19, 0x01, 0x00, 0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0,
        0x5f, 0x41, 0x01, 0xff, 0xff, 0x61, b'b', 0xc2, 0x42, 0x01, 0x00,
    ];
    assert!(cbor(&bytes).is_ok());
    for cut in 0..bytes.len() {
        assert!(cbor(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn huge_declared_lengths_do_not_allocate() {
    let huge = [0xff; 8];
    for major in [0x5b, 0x7b, 0x9b, 0xbb] {
        let mut bytes = vec![major];
        bytes.extend(huge);
        bytes.push(0x00);
        assert!(cbor(&bytes).is_err(), "major {major:#x}");
    }
    // 4 GiB text string declared with five bytes of content.
    assert!(cbor(&[0x7a, 0xff, 0xff, 0xff, 0xff, b'a', b'b', b'c', b'd', b'e']).is_err());
}

#[test]
fn depth_bombs_are_errors() {
    for prefix in [0x81u8, 0x9f, 0xc1] {
        let mut bytes = vec![prefix; 100_000];
        bytes.push(0x00);
        let e = cbor(&bytes).unwrap_err();
        assert!(e.message().contains("deeper"), "{e}");
    }
    let mut bomb = Vec::new();
    for _ in 0..10_000 {
        bomb.extend([0xa1, 0x61, b'k']);
    }
    bomb.push(0x00);
    assert!(cbor(&bomb).is_err());
    // Exactly at the limit is fine.
    let mut ok = vec![0x81; CBOR_DEPTH_MAX];
    ok.push(0x00);
    let v = cbor(&ok).unwrap();
    assert_eq!(
        enc(&v),
        format!(
            "{}0{}",
            "[".repeat(CBOR_DEPTH_MAX),
            "]".repeat(CBOR_DEPTH_MAX)
        )
    );
    let mut over = vec![0x81; CBOR_DEPTH_MAX + 1];
    over.push(0x00);
    assert!(cbor(&over).is_err());
}

#[test]
fn malformed_cbor_is_an_error() {
    for bytes in [
        &[][..],
        &[0x1c],
        &[0x1f],
        &[0x3f],
        &[0xdf, 0x00],
        &[0xff],
        &[0xf8, 0x20],
        &[0xe0],
        &[0x61, 0xff],
        &[0x01, 0x02],
        &[0x82, 0x01, 0xff],
        &[0xa1, 0x01],
    ] {
        assert!(cbor(bytes).is_err(), "{bytes:02x?}");
    }
}

#[test]
fn base64_forms() {
    let bytes = [
        0xb9, 0x00, 0x01, 0x64, b'n', b'a', b'm', b'e', 0x63, b'A', b'n', b'n',
    ];
    let expected = decode_cbor(&bytes).unwrap();
    // Unpadded and URL-safe are tolerated, surrounding whitespace too.
    assert_eq!(
        decode_base64_cbor(&URL_SAFE_NO_PAD.encode([0xfb, 0xbf, 0xf0, 0, 0, 0, 0, 0, 0])).unwrap(),
        Value::Int(-1)
    );
    assert_eq!(decode_base64_cbor(" uQABZG5hbWVjQW5u\n").unwrap(), expected);
    for bad in ["", "!!!!", "uQABZG5hbWVjQW5", "uQAB ZG5h", "=uQA"] {
        assert!(decode_base64_cbor(bad).is_err(), "{bad:?}");
    }
}
