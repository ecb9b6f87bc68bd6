//! Helpers for Pinion's end-to-end tests: start a demo server in-process on `127.0.0.1:0`, and
//! talk to it over real sockets with a small blocking HTTP/1.1 client (httparse as the
//! response parser, so the server is checked by an independent implementation).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use pinion_runtime::{Config, Server};

pub mod ws;

/// Starts the demo actor set with `shards` shards on a free port.
pub fn start(shards: usize) -> Server {
    start_with(Config {
        shards: Some(shards),
        ..test_config()
    })
}

pub fn test_config() -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    }
}

pub fn start_with(config: Config) -> Server {
    Server::start(pinion_demo::registry(), config).expect("server starts")
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("pinion-test-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Sends raw bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends one request with a body and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        self.write(&bytes);
        self.read_reply().expect("a response")
    }

    pub fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
    }

    /// [`Conn::request`] that reports I/O errors (and a close before the response) instead of
    /// panicking: for tests that kill the server under load.
    pub fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Reply> {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes)?;
        loop {
            if let Some(reply) = self.parse_buffered() {
                return Ok(reply);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads one response; `None` if the server closed the connection first.
    pub fn read_reply(&mut self) -> Option<Reply> {
        loop {
            if let Some(reply) = self.parse_buffered() {
                return Some(reply);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(error) => panic!("read: {error}"),
            };
            if n == 0 {
                assert!(
                    self.buffer.is_empty(),
                    "connection closed mid-response: {:?}",
                    self.buffer
                );
                return None;
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// Whether a response (or anything) has arrived and not been read yet, without blocking.
    pub fn has_data(&mut self) -> bool {
        if !self.buffer.is_empty() {
            return true;
        }
        self.stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let ready = matches!(self.stream.peek(&mut byte), Ok(n) if n > 0);
        self.stream.set_nonblocking(false).unwrap();
        ready
    }

    /// Bounds how long each read waits (10 s from [`Conn::open`]).
    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }

    /// True if the server ends the connection (end of stream or a reset) before the read
    /// timeout, sending nothing more first. Unlike [`Conn::is_closed`], a timeout is false.
    pub fn ends(&mut self) -> bool {
        if !self.buffer.is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    /// True if the server has closed the connection (reads EOF or a reset).
    /// Waits (up to the read timeout, 10 s unless set) for the end; a server that sends bytes
    /// instead, or nothing within the timeout, has not closed it.
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => matches!(
                error.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
        }
    }

    fn parse_buffered(&mut self) -> Option<Reply> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(&self.buffer).expect("a valid HTTP response") {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return None,
        };
        let status = response.code.unwrap();
        let headers: Vec<(String, String)> = response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().expect("numeric content-length"))
            .unwrap_or(0);
        if self.buffer.len() < head_len + length {
            return None;
        }
        let body = self.buffer[head_len..head_len + length].to_vec();
        self.buffer.drain(..head_len + length);
        Some(Reply {
            status,
            headers,
            body,
        })
    }
}

/// A client of the RivetKit HTTP protocol on one connection.
pub struct Rivet {
    pub conn: Conn,
}

impl Rivet {
    pub fn connect(addr: SocketAddr) -> Rivet {
        Rivet {
            conn: Conn::open(addr),
        }
    }

    /// `PUT /actors` (getOrCreate); returns the actor id.
    pub fn get_or_create(&mut self, name: &str, key: &str) -> String {
        let body = serde_json::json!({"name": name, "key": key}).to_string();
        let reply = self.conn.request(
            "PUT",
            "/actors?namespace=default",
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["actor"]["actor_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Sends `POST /gateway/{id}/action/{name}` with `args` without waiting for the answer
    /// (read it later with `conn.read_reply()`).
    pub fn send_action(&mut self, id: &str, action: &str, args: serde_json::Value) {
        let body = serde_json::json!({ "args": args }).to_string();
        let head = format!(
            "POST /gateway/{id}/action/{action} HTTP/1.1\r\ncontent-type: application/json\r\nx-rivet-encoding: json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        self.conn
            .write(&[head.as_bytes(), body.as_bytes()].concat());
    }

    /// `POST /gateway/{id}/action/{name}` with `args`.
    pub fn action(&mut self, id: &str, action: &str, args: serde_json::Value) -> Reply {
        self.send_action(id, action, args);
        self.conn.read_reply().expect("a response")
    }

    /// Calls an action that must succeed; returns its `output`.
    pub fn call(&mut self, id: &str, action: &str, args: serde_json::Value) -> serde_json::Value {
        let reply = self.action(id, action, args);
        assert_eq!(reply.status, 200, "{action}: {}", reply.text());
        reply.json()["output"].clone()
    }

    /// Creates `name` actors with keys `{prefix}-0`, `{prefix}-1`, ... until each of `shards`
    /// shards owns one; their ids, indexed by shard.
    pub fn actor_per_shard(&mut self, name: &str, prefix: &str, shards: usize) -> Vec<String> {
        let mut ids: Vec<Option<String>> = vec![None; shards];
        for key in 0.. {
            let id = self.get_or_create(name, &format!("{prefix}-{key}"));
            let shard = pinion_runtime::ActorId::parse(&id).unwrap().shard(shards);
            ids[shard].get_or_insert(id);
            if ids.iter().all(Option::is_some) {
                break;
            }
        }
        ids.into_iter().map(Option::unwrap).collect()
    }
}

/// 16 keep-alive connections, each having answered `GET /health`. They land on either shard
/// (`SO_REUSEPORT`): with two shards, none on one of them once in 65,536.
pub fn connections_on_every_shard(addr: SocketAddr) -> Vec<Conn> {
    (0..16)
        .map(|_| {
            let mut conn = Conn::open(addr);
            assert_eq!(conn.get("/health").status, 200);
            conn
        })
        .collect()
}

/// The connections the server has not ended (within 5 ms each: call it once the ended ones
/// have had time to end), with the default read timeout again.
pub fn still_open(conns: Vec<Conn>) -> Vec<Conn> {
    conns
        .into_iter()
        .filter_map(|mut conn| {
            conn.set_read_timeout(Duration::from_millis(5));
            let ended = conn.ends();
            conn.set_read_timeout(Duration::from_secs(10));
            (!ended).then_some(conn)
        })
        .collect()
}
