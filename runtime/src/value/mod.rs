//! User values as RivetKit 2.0.33 clients send them, and their wire encodings.
//!
//! RivetKit's JSON encoding is ordinary JSON plus a "compat" tagging convention
//! (protocol spec §3.1) so that JS `BigInt`s and byte arrays survive the trip:
//! a JSON array of exactly two elements whose first element is a string starting
//! with `$` is a tag (`["$BigInt","123"]`, `["$Uint8Array","<base64>"]`,
//! `["$ArrayBuffer","<base64>"]`), and a user array that merely looks like one is
//! escaped by doubling the `$` (`["$x",2]` travels as `["$$x",2]`). This module
//! applies that convention recursively in both directions, so actor code only
//! sees plain Rust data:
//!
//! * [`parse_action_body`] / [`parse_args_array`] parse a request body in place
//!   with simd-json and hand out an [`ArgList`] whose arguments deserialize
//!   straight from simd-json's tape into typed targets (no intermediate tree,
//!   borrowed strings) or into a dynamic [`Value`]; [`parse_tagged`] does the
//!   same for a whole document such as a connection frame.
//! * [`write_tagged`] serializes any `serde::Serialize` as tagged JSON, and
//!   [`write_json_str`] writes one escaped JSON string literal for hand-built
//!   envelopes.
//! * [`decode_base64_cbor`] decodes the manager API's `input` field, which the
//!   client always sends as base64 of `cbor-x` output whatever the encoding
//!   (spec §3.2); [`decode_cbor`] takes the raw bytes.
//! * [`from_value`] / [`to_value`] convert between [`Value`] and typed data.
//!
//! Number conventions, because JS has a single number type: integers decode to
//! `i64` (or `u64` above `i64::MAX`), everything else to `f64`; integral floats
//! are written the way JS prints them (`2.0` -> `2`), so the client sees the same
//! number either way. Hostile input is bounded by [`JSON_DEPTH_MAX`] and
//! [`CBOR_DEPTH_MAX`], and no decoder allocates a declared length up front.

mod cbor;
mod convert;
mod de;
mod dynamic;
mod error;
mod ser;

#[cfg(test)]
mod tests;

/// The newtype-struct name under which [`Value::ArrayBuffer`] travels through serde: the
/// tagged encoder writes it as `["$ArrayBuffer", …]` and the decoders hand `$ArrayBuffer` to
/// visitors as a newtype around the bytes, so that a JS `ArrayBuffer` comes back as one.
pub(crate) const ARRAY_BUFFER: &str = "$pinion::ArrayBuffer";

pub use cbor::{decode_base64_cbor, decode_cbor};
pub use convert::{from_value, to_value};
pub use de::{
    ArgList, ToServer, parse_action_body, parse_args_array, parse_tagged, parse_to_server,
};
pub use dynamic::{Map, Value};
pub use error::Error;
pub use ser::{write_args, write_json_str, write_tagged};

/// Deepest container nesting accepted inside one JSON value (an argument, or a
/// bare value), so that recursive decoding of hostile input can never exhaust
/// the stack. The `{"args":[...]}` envelope does not count against it.
pub const JSON_DEPTH_MAX: usize = 128;

/// Deepest nesting of arrays, maps and tags accepted in CBOR input, for the
/// same reason as [`JSON_DEPTH_MAX`].
pub const CBOR_DEPTH_MAX: usize = 128;
