//! The RivetKit 2.0.33 pieces `loadgen action` needs: the key string (protocol §4), actor
//! resolution with `PUT /actors` (§5.2) and the stateless action request (§7).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// Finds `"created": true|false` in a response body.
fn extract_created(body: &str) -> Option<bool> {
    let at = body.find("\"created\"")?;
    let value = body[at + "\"created\"".len()..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    if value.starts_with("true") {
        Some(true)
    } else if value.starts_with("false") {
        Some(false)
    } else {
        None
    }
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

/// The manager API (`PUT /actors`) of one endpoint, for one actor name.
pub(crate) struct Manager<'a> {
    pub(crate) endpoint: &'a Url,
    pub(crate) addr: SocketAddr,
    pub(crate) namespace: &'a str,
    pub(crate) actor: &'a str,
    pub(crate) headers: &'a [(String, String)],
    pub(crate) timeout: Duration,
}

/// The resolved actor.
pub(crate) struct Resolved {
    pub(crate) actor_id: String,
    pub(crate) created: Option<bool>,
}

impl Manager<'_> {
    /// `{base}/actors?namespace=…`.
    pub(crate) fn put_target(&self) -> String {
        format!(
            "{}?namespace={}",
            join_path(&self.endpoint.path, "/actors"),
            encode_uri_component(self.namespace)
        )
    }

    /// The getOrCreate request for `key` (a serialised key string), keep-alive.
    pub(crate) fn put_request(&self, key: &str) -> Vec<u8> {
        let body = format!(
            r#"{{"name":{},"key":{},"runner_name_selector":"default","crash_policy":"sleep"}}"#,
            json_string(self.actor),
            json_string(key)
        );
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        headers.extend(self.headers.iter().cloned());
        http::build_request(
            "PUT",
            &self.put_target(),
            &self.endpoint.authority,
            &headers,
            body.as_bytes(),
        )
    }

    /// `PUT /actors` for `key` over `client`; returns the actor id.
    pub(crate) fn resolve(
        &self,
        client: &mut BlockingClient,
        key: &str,
    ) -> Result<Resolved, String> {
        let where_ = self.endpoint.display(&self.put_target());
        let (status, response_body) = client
            .exchange(&self.put_request(key))
            .map_err(|error| format!("PUT {where_} (key {key:?}): {error}"))?;
        let response_body = String::from_utf8_lossy(&response_body);
        if !(200..300).contains(&status) {
            return Err(format!(
                "PUT {where_} (key {key:?}) answered HTTP {status}: {}",
                clip(&response_body)
            ));
        }
        let actor_id = extract_actor_id(&response_body)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                format!(
                    "PUT {where_} (key {key:?}): no actor.actor_id in {}",
                    clip(&response_body)
                )
            })?;
        let created = extract_created(&response_body);
        Ok(Resolved { actor_id, created })
    }

    /// Resolves every key, in order, over up to `workers` keep-alive connections in parallel.
    /// `progress` is called now and then on this thread with the number resolved so far.
    /// Stops at the first failure and returns it.
    pub(crate) fn resolve_all(
        &self,
        keys: &[String],
        workers: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Resolved>, String> {
        const PROGRESS_EVERY: Duration = Duration::from_millis(200);
        let workers = workers.clamp(1, keys.len().max(1));
        if workers == 1 {
            let mut client = BlockingClient::new(self.addr, self.timeout);
            let mut out = Vec::with_capacity(keys.len());
            let mut shown_at = Instant::now();
            for key in keys {
                out.push(self.resolve(&mut client, key)?);
                if shown_at.elapsed() >= PROGRESS_EVERY {
                    progress(out.len());
                    shown_at = Instant::now();
                }
            }
            progress(out.len());
            return Ok(out);
        }
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut client = BlockingClient::new(self.addr, self.timeout);
                        let mut mine = Vec::new();
                        while !failed.load(Ordering::Relaxed) {
                            let index = next.fetch_add(1, Ordering::Relaxed);
                            let Some(key) = keys.get(index) else { break };
                            match self.resolve(&mut client, key) {
                                Ok(resolved) => mine.push((index, resolved)),
                                Err(error) => {
                                    failed.store(true, Ordering::Relaxed);
                                    return Err((index, error));
                                }
                            }
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(mine)
                    })
                })
                .collect();
            let mut shown_at = Instant::now();
            while !handles.iter().all(|handle| handle.is_finished()) {
                std::thread::sleep(Duration::from_millis(10));
                if shown_at.elapsed() >= PROGRESS_EVERY {
                    progress(done.load(Ordering::Relaxed));
                    shown_at = Instant::now();
                }
            }
            progress(done.load(Ordering::Relaxed));
            handles
                .into_iter()
                .map(|handle| handle.join().expect("a resolver thread panicked"))
                .collect::<Vec<_>>()
        });
        let mut slots: Vec<Option<Resolved>> = (0..keys.len()).map(|_| None).collect();
        let mut first_error: Option<(usize, String)> = None;
        for result in results {
            match result {
                Ok(mine) => {
                    for (index, resolved) in mine {
                        slots[index] = Some(resolved);
                    }
                }
                Err((index, error)) => {
                    if first_error.as_ref().is_none_or(|(at, _)| index < *at) {
                        first_error = Some((index, error));
                    }
                }
            }
        }
        if let Some((_, error)) = first_error {
            return Err(error);
        }
        Ok(slots
            .into_iter()
            .map(|slot| slot.expect("every key was resolved"))
            .collect())
    }
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

/// Blocking request/response over one keep-alive connection, reopened when the server closes
/// it. Only for setup (resolving actors), never on the measured path.
pub(crate) struct BlockingClient {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<TcpStream>,
    /// Bytes read past the last response (a well-behaved server sends none).
    pending: Vec<u8>,
}

/// How an exchange failed.
enum Failure {
    /// Nothing of the response arrived on a reused connection: the server may have closed it
    /// while idle, so the request is worth one retry on a fresh connection.
    Stale(String),
    Fatal(String),
}

impl BlockingClient {
    pub(crate) fn new(addr: SocketAddr, timeout: Duration) -> BlockingClient {
        BlockingClient {
            addr,
            timeout,
            stream: None,
            pending: Vec::new(),
        }
    }

    /// Sends `request` and returns the status and body of its response. Only for idempotent
    /// requests: one that failed on a reused connection before any response byte is sent again.
    pub(crate) fn exchange(&mut self, request: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let reused = self.stream.is_some();
        match self.try_exchange(request) {
            Ok(answer) => Ok(answer),
            Err(Failure::Stale(_)) if reused => {
                self.stream = None;
                self.try_exchange(request).map_err(|failure| match failure {
                    Failure::Stale(error) | Failure::Fatal(error) => error,
                })
            }
            Err(Failure::Stale(error) | Failure::Fatal(error)) => Err(error),
        }
    }

    fn try_exchange(&mut self, request: &[u8]) -> Result<(u16, Vec<u8>), Failure> {
        let timeout = self.timeout;
        let io = |error: std::io::Error| match error.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("no response within {timeout:?}")
            }
            _ => error.to_string(),
        };
        if self.stream.is_none() {
            let stream = connect_blocking(self.addr, timeout).map_err(Failure::Fatal)?;
            let setup = |stream: &TcpStream| {
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                stream.set_nodelay(true)
            };
            setup(&stream).map_err(|error| Failure::Fatal(io(error)))?;
            self.pending.clear();
            self.stream = Some(stream);
        }
        let result = self.exchange_on_stream(request, &io);
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn exchange_on_stream(
        &mut self,
        request: &[u8],
        io: &dyn Fn(std::io::Error) -> String,
    ) -> Result<(u16, Vec<u8>), Failure> {
        let stream = self.stream.as_mut().expect("connected by the caller");
        let stale = |error: std::io::Error| match error.kind() {
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionAborted => Failure::Stale(io(error)),
            _ => Failure::Fatal(io(error)),
        };
        stream.write_all(request).map_err(stale)?;
        let mut reader = ResponseReader::new(false);
        let mut body = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let mut received_any = !self.pending.is_empty();
        loop {
            let (consumed, step) = reader
                .advance(&self.pending, &mut body)
                .map_err(|error| Failure::Fatal(error.to_string()))?;
            self.pending.drain(..consumed);
            if let Step::Done(response) = step {
                if !response.keep_alive {
                    self.stream = None;
                }
                return Ok((response.status, body));
            }
            let read = match stream.read(&mut chunk) {
                Ok(read) => read,
                Err(error) if !received_any => return Err(stale(error)),
                Err(error) => return Err(Failure::Fatal(io(error))),
            };
            if read == 0 {
                if let Some(response) = reader.finish_at_eof() {
                    self.stream = None;
                    return Ok((response.status, body));
                }
                let message = "connection closed before a complete response".to_string();
                return Err(if received_any {
                    Failure::Fatal(message)
                } else {
                    Failure::Stale(message)
                });
            }
            received_any = true;
            self.pending.extend_from_slice(&chunk[..read]);
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
    fn created_flags() {
        assert_eq!(
            extract_created(r#"{"actor":{},"created":true}"#),
            Some(true)
        );
        assert_eq!(extract_created(r#"{"created" : false}"#), Some(false));
        assert_eq!(extract_created(r#"{"actor":{}}"#), None);
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
