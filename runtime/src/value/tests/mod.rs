//! Tests of the value layer: tagged JSON both ways, CBOR input, conversions,
//! and a deterministic fuzz loop over the decoders.

mod cbor;
mod convert;
mod fuzz;
mod json;
mod numbers;

use super::*;

/// Encodes `v` as tagged JSON text.
fn enc<T: serde::Serialize + ?Sized>(v: &T) -> String {
    let mut out = Vec::new();
    write_tagged(&mut out, v).expect("encodes");
    String::from_utf8(out).expect("encoder writes UTF-8")
}

/// Decodes every argument of an action body as Values.
fn body_args(body: &str) -> Result<Vec<Value>, Error> {
    let mut buf = body.as_bytes().to_vec();
    let args = parse_action_body(&mut buf)?;
    args.rest(0)
}

/// Decodes one tagged JSON value (passed as the single element of an args array).
fn dec<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, Error> {
    let mut buf = format!("[{json}]").into_bytes();
    let args = parse_args_array(&mut buf)?;
    assert_eq!(args.len(), 1, "helper expects one value in {json}");
    args.decode(0)
}

/// Decodes `json` as a Value and encodes it again, as an echo action would.
fn reencode(json: &str) -> String {
    let v: Value = dec(json).unwrap_or_else(|e| panic!("decoding {json}: {e}"));
    enc(&v)
}
