//! The RivetKit 2.0.33 pieces `loadgen action` needs: the key string (protocol §4), actor
//! resolution with `PUT /actors` (§5.2) and the stateless action request (§7).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::http::{self, ResponseReader, Step};
use crate::url::{Url, join_path};

/// Serialises key parts into the manager API's single key string: `[]` is `/`, otherwise the
/// parts joined with `/`, each with `\` → `\\`, `/` → `\/`, and an empty part written `\0`.
pub(crate) fn serialize_key(parts: &[String]) -> String {
    if parts.is_empty() {
        return "/".to_string();
    }
    let mut out = String::new();
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            out.push('/');
        }
        if part.is_empty() {
            out.push_str("\\0");
        }
        for c in part.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '/' => out.push_str("\\/"),
                c => out.push(c),
            }
        }
    }
    out
}

/// A JSON string literal (with quotes) for `text`.
pub(crate) fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// JavaScript's `encodeURIComponent`, which the client applies to names in paths.
pub(crate) fn encode_uri_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Finds `"actor_id": "<id>"` in a response body. Enough for `{"actor":{"actor_id":…},…}`,
/// whose only `actor_id` key is the one we want; escapes in the id are decoded.
pub(crate) fn extract_actor_id(body: &str) -> Option<String> {
    let mut rest = body;
    while let Some(at) = rest.find("\"actor_id\"") {
        rest = &rest[at + "\"actor_id\"".len()..];
        let Some(after_colon) = rest.trim_start().strip_prefix(':') else {
            continue;
        };
        let Some(value) = after_colon.trim_start().strip_prefix('"') else {
            continue;
        };
        return parse_json_string_body(value);
    }
    None
}

/// Decodes a JSON string whose opening quote was already consumed.
fn parse_json_string_body(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = text.chars();
    loop {
        match chars.next()? {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
}

/// What `loadgen action` needs to resolve an actor.
pub(crate) struct Resolve<'a> {
    pub(crate) endpoint: &'a Url,
    pub(crate) addr: SocketAddr,
    pub(crate) namespace: &'a str,
    pub(crate) actor: &'a str,
    pub(crate) key: &'a str,
    pub(crate) headers: &'a [(String, String)],
    pub(crate) timeout: Duration,
}

/// The resolved actor.
pub(crate) struct Resolved {
    pub(crate) actor_id: String,
    pub(crate) created: Option<bool>,
}

/// `PUT {base}/actors?namespace=…` (getOrCreate) over a blocking socket; returns the actor id.
pub(crate) fn resolve(request: &Resolve<'_>) -> Result<Resolved, String> {
    let target = format!(
        "{}?namespace={}",
        join_path(&request.endpoint.path, "/actors"),
        encode_uri_component(request.namespace)
    );
    let body = format!(
        r#"{{"name":{},"key":{},"runner_name_selector":"default","crash_policy":"sleep"}}"#,
        json_string(request.actor),
        json_string(request.key)
    );
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    headers.extend(request.headers.iter().cloned());
    headers.push(("connection".to_string(), "close".to_string()));
    let bytes = http::build_request(
        "PUT",
        &target,
        &request.endpoint.authority,
        &headers,
        body.as_bytes(),
    );
    let where_ = request.endpoint.display(&target);
    let (status, response_body) = exchange_blocking(request.addr, &bytes, request.timeout)
        .map_err(|error| format!("PUT {where_}: {error}"))?;
    let response_body = String::from_utf8_lossy(&response_body);
    if !(200..300).contains(&status) {
        return Err(format!(
            "PUT {where_} answered HTTP {status}: {}",
            clip(&response_body)
        ));
    }
    let actor_id = extract_actor_id(&response_body)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            format!(
                "PUT {where_}: no actor.actor_id in {}",
                clip(&response_body)
            )
        })?;
    let created = if response_body.contains("\"created\":true") {
        Some(true)
    } else if response_body.contains("\"created\":false") {
        Some(false)
    } else {
        None
    };
    Ok(Resolved { actor_id, created })
}

fn clip(text: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 500;
    match text.char_indices().nth(SHOWN_CHARS_MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Connects to `addr` with a bounded wait; the message names the address and the cause.
pub(crate) fn connect_blocking(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    TcpStream::connect_timeout(&addr, timeout)
        .map_err(|error| format!("cannot connect to {addr}: {error}"))
}

/// One request on a fresh connection; returns the status and body of the response.
fn exchange_blocking(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let mut stream = connect_blocking(addr, timeout)?;
    let io = |error: std::io::Error| match error.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("no response within {timeout:?}")
        }
        _ => error.to_string(),
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    stream.write_all(request).map_err(io)?;
    let mut reader = ResponseReader::new(false);
    let mut body = Vec::new();
    let mut pending = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let read = stream.read(&mut chunk).map_err(io)?;
        if read == 0 {
            return match reader.finish_at_eof() {
                Some(response) => Ok((response.status, body)),
                None => Err("connection closed before a complete response".to_string()),
            };
        }
        pending.extend_from_slice(&chunk[..read]);
        let (consumed, step) = reader
            .advance(&pending, &mut body)
            .map_err(|error| error.to_string())?;
        pending.drain(..consumed);
        if let Step::Done(response) = step {
            return Ok((response.status, body));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parts: &[&str]) -> String {
        serialize_key(&parts.iter().map(|p| p.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn key_strings() {
        assert_eq!(key(&[]), "/");
        assert_eq!(key(&["bench"]), "bench");
        assert_eq!(key(&["json", "a/b"]), "json/a\\/b");
        assert_eq!(key(&["a\\b", "c"]), "a\\\\b/c");
        assert_eq!(key(&[""]), "\\0");
        assert_eq!(key(&["x", "", "y"]), "x/\\0/y");
        assert_eq!(key(&["/"]), "\\/");
    }

    #[test]
    fn key_in_json_body() {
        // Protocol §4: ["json","a/b"] → "key":"json/a\\/b" in the JSON body.
        assert_eq!(json_string(&key(&["json", "a/b"])), r#""json/a\\/b""#);
        assert_eq!(json_string("q\"\n\u{1}"), r#""q\"\n\u0001""#);
    }

    #[test]
    fn uri_components() {
        assert_eq!(encode_uri_component("increment"), "increment");
        assert_eq!(encode_uri_component("a b/c?é"), "a%20b%2Fc%3F%C3%A9");
        assert_eq!(encode_uri_component("x-_.!~*'()"), "x-_.!~*'()");
    }

    #[test]
    fn actor_ids() {
        let body = r#"{"actor":{"actor_id":"66ff166d83535a98","name":"counter"},"created":true}"#;
        assert_eq!(extract_actor_id(body).as_deref(), Some("66ff166d83535a98"));
        assert_eq!(
            extract_actor_id(r#"{"actor": {"actor_id" : "a\"b\u0041"}}"#).as_deref(),
            Some("a\"bA")
        );
        assert_eq!(
            extract_actor_id(r#"{"actor_id":1,"x":{"actor_id":"z"}}"#).as_deref(),
            Some("z")
        );
        assert_eq!(
            extract_actor_id(r#"{"group":"actor","code":"not_found"}"#),
            None
        );
    }
}
