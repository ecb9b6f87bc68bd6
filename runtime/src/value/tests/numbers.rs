//! Numbers: integer ranges, JS-style float printing, and what comes back.

use super::*;

#[test]
fn integer_extremes_round_trip() {
    for (json, value) in [
        ("0", Value::Int(0)),
        ("-1", Value::Int(-1)),
        ("9223372036854775807", Value::Int(i64::MAX)),
        ("-9223372036854775808", Value::Int(i64::MIN)),
        ("9223372036854775808", Value::UInt(1 << 63)),
        ("18446744073709551615", Value::UInt(u64::MAX)),
    ] {
        assert_eq!(dec::<Value>(json).unwrap(), value, "{json}");
        assert_eq!(enc(&value), json);
    }
    assert_eq!(dec::<i64>("-9223372036854775808").unwrap(), i64::MIN);
    assert_eq!(dec::<u64>("18446744073709551615").unwrap(), u64::MAX);
    assert!(dec::<i64>("18446744073709551615").is_err());
    assert!(dec::<u32>("-1").is_err());
    assert_eq!(enc(&u64::MAX), "18446744073709551615");
    assert_eq!(enc(&i8::MIN), "-128");
}

#[test]
fn floats_round_trip_exactly() {
    for f in [
        0.1,
        -1.5,
        1e300,
        -1e-300,
        5e-324,
        f64::MAX,
        f64::MIN_POSITIVE,
        1.0 / 3.0,
        123456.789,
        1e21,
        1.5e-7,
        9007199254740993.0,
        1e20,
        -3e19,
        (1u64 << 63) as f64,
    ] {
        let json = enc(&f);
        let back: f64 = dec(&json).unwrap();
        assert_eq!(back.to_bits(), f.to_bits(), "{f} printed as {json}");
        let v: Value = dec(&json).unwrap();
        assert_eq!(v.as_f64(), Some(f), "{json}");
    }
}

#[test]
fn floats_print_like_js() {
    for (f, js) in [
        (2.0, "2"),
        (-2.0, "-2"),
        (0.0, "0"),
        (-0.0, "0"),
        (0.1, "0.1"),
        (1.5, "1.5"),
        (100.0, "100"),
        (123456.789, "123456.789"),
        (1e-6, "0.000001"),
        (1.5e-6, "0.0000015"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (1e21, "1e+21"),
        (1.2345e25, "1.2345e+25"),
        (1e300, "1e+300"),
        (5e-324, "5e-324"),
        (f64::MAX, "1.7976931348623157e+308"),
        (9007199254740992.0, "9007199254740992"),
        (1e18, "1000000000000000000"),
        (-1e18, "-1000000000000000000"),
        (9.2e18, "9200000000000000000"),
        // Integral values from 2^63 on use the exponent form (JS prints them in full).
        (1e19, "1e+19"),
        (1e20, "1e+20"),
        (36893488147419103000.0, "3.6893488147419103e+19"),
        (f64::NAN, "null"),
        (f64::INFINITY, "null"),
        (f64::NEG_INFINITY, "null"),
    ] {
        assert_eq!(enc(&f), js, "{f:e}");
    }
    assert_eq!(enc(&1.1f32), "1.1");
    assert_eq!(enc(&f32::MAX), "3.4028235e+38");
    assert_eq!(enc(&f32::NAN), "null");
}

#[test]
fn negative_zero_and_integral_floats_come_back_as_js_numbers() {
    let v: Value = dec("-0").unwrap();
    assert_eq!(v.as_f64(), Some(0.0));
    let f: f64 = dec("-0.0").unwrap();
    assert!(f == 0.0 && f.is_sign_negative());
    assert_eq!(enc(&Value::Float(-0.0)), "0");
    assert_eq!(dec::<Value>("2.0").unwrap(), Value::Float(2.0));
    // JS has one number type: Float(2.0) echoes as 2, which decodes as Int(2).
    assert_eq!(reencode("2.0"), "2");
    assert_eq!(dec::<Value>("2").unwrap(), Value::Int(2));
    assert_eq!(dec::<f64>("2").unwrap(), 2.0);
    assert_eq!(dec::<f32>("1.5").unwrap(), 1.5);
    assert_eq!(dec::<Value>("1e2").unwrap(), Value::Float(100.0));
}

#[test]
fn js_integer_literal_beyond_u64_parses_as_float() {
    // JSON.stringify(2 ** 65) is "36893488147419103000"; with simd-json's
    // `big-int-as-float` feature it parses as the same double instead of failing.
    assert_eq!(
        dec::<Value>("36893488147419103000").unwrap(),
        Value::Float(36893488147419103000.0)
    );
    assert_eq!(
        dec::<Value>("-36893488147419103000").unwrap(),
        Value::Float(-36893488147419103000.0)
    );
}
