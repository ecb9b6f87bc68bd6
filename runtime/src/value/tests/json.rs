//! Tagged JSON: tags, escapes, strings, nesting, shapes and errors.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Serialize)]
struct Output<'a> {
    output: &'a Value,
}

fn s(v: &str) -> Value {
    Value::from(v)
}

#[test]
fn captured_http_echo_round_trips_byte_for_byte() {
    let body = r#"{"args":[["$$notAType",1],["$Uint8Array","AQI="]]}"#;
    let args = body_args(body).unwrap();
    assert_eq!(
        args,
        vec![
            Value::Array(vec![s("$notAType"), Value::Int(1)]),
            Value::Bytes(vec![1, 2]),
        ]
    );
    let out = Value::Array(args);
    assert_eq!(
        enc(&Output { output: &out }),
        r#"{"output":[["$$notAType",1],["$Uint8Array","AQI="]]}"#
    );
}

#[test]
fn captured_ws_echo_round_trips() {
    let args = body_args(r#"{"args":[["$$x",2]]}"#).unwrap();
    assert_eq!(args, vec![Value::Array(vec![s("$x"), Value::Int(2)])]);
    assert_eq!(enc(&args[0]), r#"["$$x",2]"#);
    assert_eq!(enc(&Value::Array(args)), r#"[["$$x",2]]"#);
}

#[test]
fn escaped_args_array_itself_is_unescaped() {
    // echo("$x", 2): the client escapes the args array like any user array.
    let args = body_args(r#"{"args":["$$x",2]}"#).unwrap();
    assert_eq!(args, vec![s("$x"), Value::Int(2)]);
    assert_eq!(enc(&Value::Array(args)), r#"["$$x",2]"#);

    let mut buf = br#"["$$x",2]"#.to_vec();
    let list = parse_args_array(&mut buf).unwrap();
    assert_eq!(list.decode::<String>(0).unwrap(), "$x");
    assert_eq!(list.decode::<i32>(1).unwrap(), 2);
}

#[test]
fn args_array_that_is_a_real_tag_is_an_error() {
    assert!(body_args(r#"{"args":["$BigInt","5"]}"#).is_err());
    assert!(body_args(r#"{"args":["$notAType",1]}"#).is_err());
}

#[test]
fn dollar_arrays_nested_round_trip() {
    let json = r#"[["$$a",["$$b",["$BigInt","7"]]],{"k":["$$c",null]}]"#;
    let v: Value = dec(json).unwrap();
    assert_eq!(
        v,
        Value::Array(vec![
            Value::Array(vec![s("$a"), Value::Array(vec![s("$b"), Value::BigInt(7)]),]),
            Value::Object(Map::from_iter([(
                "k",
                Value::Array(vec![s("$c"), Value::Null])
            )])),
        ])
    );
    assert_eq!(enc(&v), json);
}

#[test]
fn multiple_dollars_strip_exactly_one() {
    let v: Value = dec(r#"["$$$x",1]"#).unwrap();
    assert_eq!(v, Value::Array(vec![s("$$x"), Value::Int(1)]));
    assert_eq!(enc(&v), r#"["$$$x",1]"#);
    let v: Value = dec(r#"["$$",1]"#).unwrap();
    assert_eq!(v, Value::Array(vec![s("$"), Value::Int(1)]));
    assert_eq!(enc(&v), r#"["$$",1]"#);
}

#[test]
fn two_arrays_whose_first_element_is_not_a_string_are_plain() {
    for json in [
        r#"[1,"$x"]"#,
        r#"[["$$x",1],2]"#,
        r#"[null,"$BigInt"]"#,
        r#"[{"$x":1},2]"#,
        r#"["x$",1]"#,
        r#"["",1]"#,
    ] {
        assert_eq!(reencode(json), json);
    }
    let v: Value = dec(r#"[1,"$x"]"#).unwrap();
    assert_eq!(v, Value::Array(vec![Value::Int(1), s("$x")]));
}

#[test]
fn arrays_of_other_lengths_starting_with_dollar_are_not_tags() {
    for json in [
        r#"["$x",1,2]"#,
        r#"["$BigInt","1","2"]"#,
        r#"["$x"]"#,
        r#"["$Uint8Array"]"#,
        "[]",
    ] {
        assert_eq!(reencode(json), json);
    }
    let v: Value = dec(r#"["$x",1,2]"#).unwrap();
    assert_eq!(v.as_array().unwrap()[0], s("$x"));
}

#[test]
fn typed_tuples_and_vectors_are_escaped_too() {
    assert_eq!(enc(&("$x", 2)), r#"["$$x",2]"#);
    assert_eq!(enc(&vec!["$a", "$b"]), r#"["$$a","$b"]"#);
    assert_eq!(enc(&vec!["$a", "$b", "$c"]), r#"["$a","$b","$c"]"#);
    assert_eq!(enc(&('$', 'x')), r#"["$$","x"]"#);
    // Known sizes lie sometimes (iterators): the escape is decided at the end.
    let it: Vec<&str> = vec!["$q", "z"];
    assert_eq!(enc(&it), r#"["$$q","z"]"#);
    let t: (String, i32) = dec(r#"["$$x",2]"#).unwrap();
    assert_eq!(t, ("$x".to_owned(), 2));
    let v: Vec<String> = dec(r#"["$$a","$b"]"#).unwrap();
    assert_eq!(v, ["$a", "$b"]);
}

#[test]
fn unknown_or_malformed_tags_are_errors() {
    for json in [
        r#"["$notAType",1]"#,
        r#"["$bigint","1"]"#,
        r#"["$",1]"#,
        r#"["$BigInt",5]"#,
        r#"["$BigInt","12a"]"#,
        r#"["$BigInt",""]"#,
        r#"["$Uint8Array",null]"#,
        r#"["$Uint8Array","!!!!"]"#,
        r#"["$ArrayBuffer","A"]"#,
        r#"{"a":[["$nope",1]]}"#,
    ] {
        assert!(dec::<Value>(json).is_err(), "{json} should fail");
    }
    let e = dec::<Value>(r#"["$notAType",1]"#).unwrap_err();
    assert!(e.message().contains("$notAType"), "{e}");
}

#[test]
fn undefined_tag_from_newer_clients_is_null() {
    assert_eq!(dec::<Value>(r#"["$Undefined",0]"#).unwrap(), Value::Null);
    assert_eq!(dec::<Option<i32>>(r#"["$Undefined",0]"#).unwrap(), None);
    assert_eq!(body_args(r#"{"args":["$Undefined",0]}"#).unwrap(), vec![]);
    assert_eq!(
        body_args(r#"{"args":[["$Undefined",0],1]}"#).unwrap(),
        vec![Value::Null, Value::Int(1)]
    );
}

#[test]
fn bytes_round_trip_at_every_padding() {
    for len in 0..=7u8 {
        let bytes: Vec<u8> = (0..len)
            .map(|i| i.wrapping_mul(77).wrapping_add(250))
            .collect();
        let json = enc(&Value::Bytes(bytes.clone()));
        assert!(json.starts_with(r#"["$Uint8Array",""#), "{json}");
        assert_eq!(dec::<Value>(&json).unwrap(), Value::Bytes(bytes.clone()));
        assert_eq!(dec::<Vec<u8>>(&json).unwrap(), bytes);
    }
    assert_eq!(enc(&Value::Bytes(vec![1, 2])), r#"["$Uint8Array","AQI="]"#);
    assert_eq!(enc(&Value::Bytes(vec![])), r#"["$Uint8Array",""]"#);
}

#[test]
fn array_buffer_round_trips_as_array_buffer() {
    let v: Value = dec(r#"["$ArrayBuffer","/wA="]"#).unwrap();
    assert_eq!(v, Value::ArrayBuffer(vec![0xff, 0]));
    assert_eq!(enc(&v), r#"["$ArrayBuffer","/wA="]"#);
    assert_eq!(v.as_bytes(), Some(&[0xff, 0][..]));
    // Nested, and through the dynamic conversions.
    let nested: Value = dec(r#"{"b":[["$ArrayBuffer","AQI="],["$Uint8Array","AQI="]]}"#).unwrap();
    assert_eq!(
        enc(&nested),
        r#"{"b":[["$ArrayBuffer","AQI="],["$Uint8Array","AQI="]]}"#
    );
    assert_eq!(to_value(&nested).unwrap(), nested);
    assert_eq!(from_value::<Value>(&nested).unwrap(), nested);
    // Typed byte targets take either tag.
    assert_eq!(
        dec::<Vec<u8>>(r#"["$ArrayBuffer","AQI="]"#).unwrap(),
        vec![1, 2]
    );
    assert_eq!(
        from_value::<Vec<u8>>(&Value::ArrayBuffer(vec![1, 2])).unwrap(),
        vec![1, 2]
    );
    // Unpadded base64 is tolerated.
    assert_eq!(
        dec::<Value>(r#"["$Uint8Array","AQI"]"#).unwrap(),
        Value::Bytes(vec![1, 2])
    );
}

#[test]
fn bytes_into_fixed_arrays_and_byte_bufs() {
    let a: [u8; 2] = dec(r#"["$Uint8Array","AQI="]"#).unwrap();
    assert_eq!(a, [1, 2]);
    assert!(dec::<[u8; 3]>(r#"["$Uint8Array","AQI="]"#).is_err());
    // A plain JSON array of numbers still works for Vec<u8>.
    assert_eq!(dec::<Vec<u8>>("[1,2,3]").unwrap(), vec![1, 2, 3]);
}

#[test]
fn bigint_decodes_into_every_integer_type_that_fits() {
    assert_eq!(
        dec::<Value>(r#"["$BigInt","123"]"#).unwrap(),
        Value::BigInt(123)
    );
    assert_eq!(dec::<i64>(r#"["$BigInt","5"]"#).unwrap(), 5);
    assert_eq!(dec::<i64>(r#"["$BigInt","-5"]"#).unwrap(), -5);
    assert_eq!(dec::<u8>(r#"["$BigInt","255"]"#).unwrap(), 255);
    assert!(dec::<u8>(r#"["$BigInt","256"]"#).is_err());
    assert!(dec::<u64>(r#"["$BigInt","-1"]"#).is_err());
    assert_eq!(
        dec::<u64>(&format!(r#"["$BigInt","{}"]"#, u64::MAX)).unwrap(),
        u64::MAX
    );
    assert!(dec::<i64>(&format!(r#"["$BigInt","{}"]"#, u64::MAX)).is_err());
    assert_eq!(
        dec::<i128>(&format!(r#"["$BigInt","{}"]"#, i128::MIN)).unwrap(),
        i128::MIN
    );
    assert_eq!(
        dec::<i128>(&format!(r#"["$BigInt","{}"]"#, i128::MAX)).unwrap(),
        i128::MAX
    );
    assert_eq!(
        dec::<u128>(&format!(r#"["$BigInt","{}"]"#, u128::MAX)).unwrap(),
        u128::MAX
    );
    assert_eq!(dec::<f64>(r#"["$BigInt","5"]"#).unwrap(), 5.0);
    assert_eq!(dec::<Option<i32>>(r#"["$BigInt","7"]"#).unwrap(), Some(7));
    // Beyond i128 a Value cannot hold it; beyond u128 nothing can.
    assert!(dec::<Value>(&format!(r#"["$BigInt","{}"]"#, u128::MAX)).is_err());
    assert!(dec::<u128>(r#"["$BigInt","340282366920938463463374607431768211456"]"#).is_err());
    // Plain numbers into i128 still work.
    assert_eq!(dec::<i128>("-3").unwrap(), -3);
}

#[test]
fn bigint_encodes_tagged() {
    assert_eq!(enc(&Value::BigInt(123)), r#"["$BigInt","123"]"#);
    assert_eq!(enc(&-5i128), r#"["$BigInt","-5"]"#);
    assert_eq!(enc(&u128::MAX), format!(r#"["$BigInt","{}"]"#, u128::MAX));
    assert_eq!(
        reencode(r#"["$BigInt","-170141183460469231731687303715884105728"]"#),
        r#"["$BigInt","-170141183460469231731687303715884105728"]"#
    );
}

#[test]
fn unicode_and_escapes_round_trip() {
    let cases = [
        "plain",
        "emoji 😀🎉👩‍👩‍👧",
        "中文 日本語 한국어",
        "quote \" backslash \\ slash /",
        "\u{0}\u{1}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{1f} \u{7f}",
        "\u{2028}\u{2029}\u{feff}",
        "",
    ];
    for text in cases {
        let json = enc(text);
        let back: String = dec(&json).unwrap();
        assert_eq!(back, text);
        let v: Value = dec(&json).unwrap();
        assert_eq!(enc(&v), json);
    }
    assert_eq!(enc("a\"b\\c\n\r\t\u{8}\u{c}"), r#""a\"b\\c\n\r\t\b\f""#);
    assert_eq!(enc("\u{0}\u{1}\u{1f}"), r#""\u0000\u0001\u001f""#);
    assert_eq!(enc("\u{7f}é😀"), "\"\u{7f}é😀\"");
}

#[test]
fn json_escapes_from_the_client_are_decoded() {
    let v: String = dec(r#""\ud83d\ude00 \u00e9 \/ \u4e2d \"x\"""#).unwrap();
    assert_eq!(v, "😀 é / 中 \"x\"");
}

#[test]
fn lone_surrogate_escape_is_rejected_without_panic() {
    // JSON.stringify writes lone surrogates as escapes; Rust strings cannot hold them.
    assert!(dec::<Value>(r#""\ud800""#).is_err());
}

#[test]
fn write_json_str_appends() {
    let mut out = b"x=".to_vec();
    write_json_str(&mut out, "a\u{1}b");
    assert_eq!(out, b"x=\"a\\u0001b\"");
}

#[test]
fn large_string_round_trips() {
    let unit = "abc\"\\\n😀中\u{1}";
    let mut text = String::new();
    while text.len() < 1 << 20 {
        text.push_str(unit);
    }
    let body = format!(r#"{{"args":[{}]}}"#, enc(text.as_str()));
    let mut buf = body.into_bytes();
    let args = parse_action_body(&mut buf).unwrap();
    let back: String = args.decode(0).unwrap();
    assert_eq!(back, text);
    let v: Value = args.decode(0).unwrap();
    assert_eq!(v.as_str().map(str::len), Some(text.len()));
    assert_eq!(enc(&v), enc(text.as_str()));
}

#[test]
fn object_key_order_is_preserved() {
    let json = r#"{"z":1,"a":2,"m":{"y":true,"b":null},"0":3,"10":4,"2":5}"#;
    let v: Value = dec(json).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["z", "a", "m", "0", "10", "2"]);
    assert_eq!(enc(&v), json);
}

#[test]
fn repeated_keys_keep_first_position_and_last_value() {
    let v: Value = dec(r#"{"a":1,"b":2,"a":3}"#).unwrap();
    assert_eq!(enc(&v), r#"{"a":3,"b":2}"#);
    // The hashed path for large objects behaves the same.
    let mut json = String::from("{");
    for i in 0..40 {
        json.push_str(&format!(r#""k{}":{},"#, i % 20, i));
    }
    json.push_str(r#""last":0}"#);
    let v: Value = dec(&json).unwrap();
    let m = v.as_object().unwrap();
    assert_eq!(m.len(), 21);
    assert_eq!(m.keys().next(), Some("k0"));
    assert_eq!(m.get("k0"), Some(&Value::Int(20)));
    assert_eq!(m.get("k19"), Some(&Value::Int(39)));
    assert_eq!(m.keys().last(), Some("last"));
}

/// `[[...[0]...]]` with `depth` arrays.
fn nested_arrays(depth: usize) -> String {
    format!("{}0{}", "[".repeat(depth), "]".repeat(depth))
}

fn nested_objects(depth: usize) -> String {
    format!("{}0{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
}

#[test]
fn nesting_up_to_the_limit_is_accepted() {
    for json in [
        nested_arrays(JSON_DEPTH_MAX),
        nested_objects(JSON_DEPTH_MAX),
    ] {
        let body = format!(r#"{{"args":[{json}]}}"#);
        let args = body_args(&body).unwrap();
        let mut depth = 0;
        let mut v = &args[0];
        loop {
            match v {
                Value::Array(a) => v = &a[0],
                Value::Object(m) => v = m.get("a").unwrap(),
                _ => break,
            }
            depth += 1;
        }
        assert_eq!(depth, JSON_DEPTH_MAX);
        assert_eq!(enc(&args[0]), json);
        assert_eq!(reencode(&json), json);
    }
}

#[test]
fn nesting_beyond_the_limit_is_an_error() {
    for json in [
        nested_arrays(JSON_DEPTH_MAX + 1),
        nested_objects(JSON_DEPTH_MAX + 1),
        nested_arrays(JSON_DEPTH_MAX + 3),
    ] {
        let e = body_args(&format!(r#"{{"args":[{json}]}}"#)).unwrap_err();
        assert!(e.message().contains("deeper"), "{e}");
        assert!(dec::<Value>(&json).is_err());
    }
}

#[test]
fn depth_bombs_fail_without_overflowing_the_stack() {
    for depth in [10_000, 1_000_000] {
        let json = format!(r#"{{"args":[{}]}}"#, "[".repeat(depth));
        assert!(body_args(&json).is_err());
        let json = format!(r#"{{"args":[{}]}}"#, nested_arrays(depth));
        assert!(body_args(&json).is_err());
    }
    let json = nested_objects(100_000);
    assert!(dec::<Value>(&json).is_err());
}

#[test]
fn typed_targets_are_depth_limited_too() {
    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    enum Tree {
        Leaf(i32),
        Node(Vec<Tree>),
    }
    let mut json = String::from(r#"{"Leaf":1}"#);
    for _ in 0..JSON_DEPTH_MAX {
        json = format!(r#"{{"Node":[{json}]}}"#);
    }
    assert!(dec::<Tree>(&json).is_err());
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Point {
    x: i32,
    y: i32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Shape {
    Empty,
    Dot(Point),
    Line(Point, Point),
    Circle { center: Point, radius: f64 },
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Meters(f64);

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Unit;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Everything {
    name: String,
    tags: Vec<String>,
    blob: Vec<u8>,
    big: i128,
    pair: (String, u8),
    maybe: Option<Box<Everything>>,
    shape: Shape,
    length: Meters,
    unit: Unit,
    counts: BTreeMap<u32, u64>,
}

#[test]
fn typed_struct_round_trips() {
    let value = Everything {
        name: "ünï".into(),
        tags: vec!["$a".into(), "b".into()],
        blob: vec![0, 1, 255],
        big: -(1 << 100),
        pair: ("$p".into(), 9),
        maybe: None,
        shape: Shape::Circle {
            center: Point { x: 1, y: -2 },
            radius: 0.5,
        },
        length: Meters(2.0),
        unit: Unit,
        counts: BTreeMap::from([(3, 4), (10, u64::MAX)]),
    };
    let json = enc(&value);
    assert_eq!(
        json,
        concat!(
            r#"{"name":"ünï","tags":["$$a","b"],"blob":[0,1,255],"#,
            r#""big":["$BigInt","-1267650600228229401496703205376"],"pair":["$$p",9],"#,
            r#""maybe":null,"shape":{"Circle":{"center":{"x":1,"y":-2},"radius":0.5}},"#,
            r#""length":2,"unit":null,"counts":{"3":4,"10":18446744073709551615}}"#
        )
    );
    assert_eq!(dec::<Everything>(&json).unwrap(), value);
}

#[test]
fn enums_are_externally_tagged() {
    assert_eq!(enc(&Shape::Empty), r#""Empty""#);
    assert_eq!(
        enc(&Shape::Dot(Point { x: 1, y: 2 })),
        r#"{"Dot":{"x":1,"y":2}}"#
    );
    assert_eq!(
        enc(&Shape::Line(Point { x: 1, y: 2 }, Point { x: 3, y: 4 })),
        r#"{"Line":[{"x":1,"y":2},{"x":3,"y":4}]}"#
    );
    for shape in [
        Shape::Empty,
        Shape::Dot(Point { x: 1, y: 2 }),
        Shape::Line(Point { x: 1, y: 2 }, Point { x: 3, y: 4 }),
    ] {
        assert_eq!(dec::<Shape>(&enc(&shape)).unwrap(), shape);
    }
    assert!(dec::<Shape>(r#"{"Dot":{"x":1,"y":2},"Empty":null}"#).is_err());
    assert!(dec::<Shape>("5").is_err());
    assert!(dec::<Shape>(r#""Nope""#).is_err());
}

#[test]
fn optional_trailing_args_act_like_js_defaults() {
    let mut buf = br#"{"args":[1,"two"]}"#.to_vec();
    let args = parse_action_body(&mut buf).unwrap();
    assert_eq!(args.len(), 2);
    assert_eq!(args.decode::<i64>(0).unwrap(), 1);
    assert_eq!(
        args.decode::<Option<String>>(1).unwrap().as_deref(),
        Some("two")
    );
    assert_eq!(args.decode::<Option<String>>(2).unwrap(), None);
    assert_eq!(args.decode::<Option<Point>>(9).unwrap(), None);
    assert_eq!(args.decode::<Value>(2).unwrap(), Value::Null);
    assert_eq!(args.decode::<()>(3).unwrap(), ());
    let e = args.decode::<i64>(2).unwrap_err();
    assert_eq!(e.message(), "missing argument 2");
    let e = args.decode::<i64>(1).unwrap_err();
    assert!(e.message().starts_with("argument 1:"), "{e}");
    assert_eq!(args.rest(1).unwrap(), vec![Value::from("two")]);
    assert!(args.rest(2).unwrap().is_empty());
    assert!(args.rest(7).unwrap().is_empty());
}

#[test]
fn struct_and_tuple_arguments() {
    let mut buf = br#"{"args":[{"y":2,"extra":[[[{"deep":1}]]],"x":1},[1,"a",null]]}"#.to_vec();
    let args = parse_action_body(&mut buf).unwrap();
    assert_eq!(args.decode::<Point>(0).unwrap(), Point { x: 1, y: 2 });
    let t: (u8, String, Option<bool>) = args.decode(1).unwrap();
    assert_eq!(t, (1, "a".into(), None));
    assert!(args.decode::<(u8, String)>(1).is_err(), "too many elements");
    assert!(
        args.decode::<(u8, String, bool, bool)>(1).is_err(),
        "too few"
    );
    let m: HashMap<String, Value> = args.decode(0).unwrap();
    assert_eq!(m.len(), 3);
}

#[test]
fn borrowed_strings_are_zero_copy() {
    let mut buf = br#"{"args":["plain","esc\"aped"]}"#.to_vec();
    let range = buf.as_ptr_range();
    let args = parse_action_body(&mut buf).unwrap();
    let a: &str = args.decode_borrowed(0).unwrap();
    assert_eq!(a, "plain");
    assert!(
        range.contains(&a.as_ptr()),
        "borrowed from the request buffer"
    );
    let b: &str = args.decode_borrowed(1).unwrap();
    assert_eq!(b, "esc\"aped");
}

#[test]
fn body_shapes() {
    assert_eq!(body_args("{}").unwrap(), vec![]);
    assert_eq!(body_args(r#"{"args":null}"#).unwrap(), vec![]);
    assert_eq!(body_args(r#"{"args":[]}"#).unwrap(), vec![]);
    assert_eq!(
        body_args(r#"{"x":[1,{"args":[9]}],"args":[1],"y":2}"#).unwrap(),
        vec![Value::Int(1)]
    );
    assert_eq!(
        body_args(r#"{"args":[1],"args":[2,3]}"#).unwrap(),
        vec![Value::Int(2), Value::Int(3)]
    );
    for bad in [
        "[1,2]",
        r#""args""#,
        "5",
        "null",
        r#"{"args":5}"#,
        r#"{"args":"x"}"#,
        r#"{"args":{"0":1}}"#,
    ] {
        assert!(body_args(bad).is_err(), "{bad} should be rejected");
    }
    let mut buf = b"null".to_vec();
    assert!(parse_args_array(&mut buf).unwrap().is_empty());
    let mut buf = br#"{"a":1}"#.to_vec();
    assert!(parse_args_array(&mut buf).is_err());
}

#[test]
fn malformed_json_is_an_error() {
    for bad in [
        "",
        " ",
        "{",
        r#"{"args":[1,}"#,
        r#"{"args":[1]"#,
        r#"{"args":[1]}}"#,
        r#"{"args":[nul]}"#,
        r#"{"args":[01]}"#,
        r#"{"args":["unterminated]}"#,
        r#"{"args":[1] "x"}"#,
        r#"{args:[1]}"#,
        "{\"args\":[\"\u{1}\"]}",
        r#"{"args":[1e]}"#,
    ] {
        let e = body_args(bad).unwrap_err();
        assert!(!e.message().is_empty(), "{bad}");
    }
    let mut buf = vec![b'"', 0xff, b'"'];
    assert!(parse_args_array(&mut buf).is_err(), "invalid UTF-8");
}

#[test]
fn parse_tagged_decodes_whole_documents() {
    #[derive(Deserialize, Debug, PartialEq)]
    struct Frame {
        id: u64,
        name: String,
        args: Vec<Value>,
    }
    let mut buf = br#"{"id":["$BigInt","7"],"name":"inc","args":[["$$x",1]]}"#.to_vec();
    let f: Frame = parse_tagged(&mut buf).unwrap();
    assert_eq!(
        f,
        Frame {
            id: 7,
            name: "inc".into(),
            args: vec![Value::Array(vec![s("$x"), Value::Int(1)])],
        }
    );
}

#[test]
fn map_keys_must_be_strings_or_integers() {
    assert_eq!(
        enc(&BTreeMap::from([(1i32, 2), (-3, 4)])),
        r#"{"-3":4,"1":2}"#
    );
    assert_eq!(enc(&BTreeMap::from([('c', 1)])), r#"{"c":1}"#);
    assert_eq!(enc(&BTreeMap::from([(true, 1)])), r#"{"true":1}"#);
    let mut out = b"keep".to_vec();
    let bad = vec![(vec![1], 2)]
        .into_iter()
        .collect::<BTreeMap<Vec<i32>, i32>>();
    assert!(write_tagged(&mut out, &bad).is_err());
    assert_eq!(out, b"keep", "nothing appended on error");
    let m: HashMap<i64, String> = dec(r#"{"-1":"a","2":"b"}"#).unwrap();
    assert_eq!(m[&-1], "a");
    assert!(dec::<HashMap<i64, String>>(r#"{"x":"a"}"#).is_err());
}

#[test]
fn unit_and_none_encode_as_null() {
    assert_eq!(enc(&()), "null");
    assert_eq!(enc(&None::<i32>), "null");
    assert_eq!(enc(&Some(3)), "3");
    assert_eq!(enc(&Unit), "null");
    assert_eq!(enc(&Meters(1.5)), "1.5");
    assert_eq!(enc(&Value::Null), "null");
    assert_eq!(enc(&Value::Object(Map::new())), "{}");
    assert_eq!(enc(&Value::Array(vec![])), "[]");
}

/// The limits exist to protect the stack, so check that the deepest accepted
/// values go through every recursive path on a small thread stack (1 MiB, half
/// of Rust's default; a debug build needs about 384 KiB at the time of writing).
#[test]
fn deepest_values_fit_a_small_stack() {
    let handle = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(|| {
            let json = nested_objects(JSON_DEPTH_MAX);
            let args = body_args(&format!(r#"{{"args":[{json}]}}"#)).unwrap();
            assert_eq!(enc(&args[0]), json);
            let back = to_value(&args).unwrap();
            assert_eq!(from_value::<Vec<Value>>(&back).unwrap(), args);
            let mut cbor = vec![0x81u8; CBOR_DEPTH_MAX];
            cbor.push(0);
            assert!(decode_cbor(&cbor).is_ok());
            let mut bomb = vec![0x81u8; 100_000];
            bomb.push(0);
            assert!(decode_cbor(&bomb).is_err());
            assert!(body_args(&format!(r#"{{"args":[{}]}}"#, nested_arrays(100_000))).is_err());
        })
        .unwrap();
    handle.join().unwrap();
}
