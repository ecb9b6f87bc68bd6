//! Opening RivetKit connection WebSockets (protocol §8.1) for `loadgen ws` and `loadgen fanout`:
//! the upgrade to `/gateway/{actorId}/connect` with the subprotocols `rivet` and
//! `rivet_encoding.json`, the check of the `101` (which must select `rivet`), and the wait for
//! the `Init` frame. [`Opening`] does it sans IO over a [`FrameBuffer`]; [`open`] drives it on a
//! [`Socket`] (glommio's or a busy-polled one) and [`BlockingWs`] on a blocking one (the fan-out
//! trigger).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::keys::SplitMix64;
use crate::rivetconn::{self, ToClient};
use crate::shard::ErrorKind;
use crate::socket::Socket;
use crate::ws::{self, FrameError, MessageKind, Next, Payload};

/// The subprotocol the server must select.
pub(crate) const RIVET_PROTOCOL: &str = "rivet";
/// Initial read buffer of a connection; it grows to hold a larger frame.
const FRAME_BUFFER_BYTES: usize = 8 * 1024;
/// The most of a refused upgrade's body quoted in an error.
const QUOTED_BODY_BYTES_MAX: usize = 200;

/// Where connections go: one upgrade target per actor.
#[derive(Debug)]
pub(crate) struct WsEndpoint {
    pub(crate) addr: SocketAddr,
    /// The `Host` header value.
    pub(crate) host: String,
    /// Per actor: `{base}/gateway/{actorId}/connect`.
    pub(crate) targets: Vec<String>,
    /// Per actor: its id (which `Init` must repeat).
    pub(crate) actor_ids: Vec<String>,
    /// The `Sec-WebSocket-Protocol` value offered.
    pub(crate) protocols: String,
    pub(crate) headers: Vec<(String, String)>,
}

impl WsEndpoint {
    /// The subprotocols the official client offers (§8.1): `rivet`, the encoding, and the
    /// connection params if any (`encodeURIComponent` of their JSON text).
    pub(crate) fn protocols(conn_params: Option<&str>) -> String {
        let mut protocols = format!("{RIVET_PROTOCOL}, rivet_encoding.json");
        if let Some(params) = conn_params {
            protocols.push_str(", rivet_conn_params.");
            protocols.push_str(&crate::rivet::encode_uri_component(params));
        }
        protocols
    }

    fn request(&self, actor: usize, key: &str) -> Vec<u8> {
        ws::upgrade_request(
            &self.targets[actor],
            &self.host,
            key,
            &self.protocols,
            &self.headers,
        )
    }
}

/// A 4-byte masking key.
pub(crate) fn mask(rng: &mut SplitMix64) -> [u8; 4] {
    (rng.next_u64() as u32).to_ne_bytes()
}

/// Why a connection could not be opened: how to count it and what to tell the user.
#[derive(Debug)]
pub(crate) struct SetupError {
    pub(crate) kind: ErrorKind,
    pub(crate) detail: String,
}

impl SetupError {
    fn handshake(detail: impl Into<String>) -> SetupError {
        SetupError {
            kind: ErrorKind::Handshake,
            detail: detail.into(),
        }
    }
}

/// A complete message from the server.
pub(crate) struct Message<'a> {
    pub(crate) kind: MessageKind,
    pub(crate) bytes: &'a [u8],
}

/// A connection's read buffer and frame reader. Bytes are read into [`FrameBuffer::space`]
/// and announced with [`FrameBuffer::filled`]; [`FrameBuffer::next_message`] hands out the
/// complete messages in place.
pub(crate) struct FrameBuffer {
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    reader: ws::Reader,
    /// The size of the frame being waited for, when its header has arrived.
    need: usize,
}

impl FrameBuffer {
    pub(crate) fn new() -> FrameBuffer {
        FrameBuffer {
            buf: vec![0; FRAME_BUFFER_BYTES],
            start: 0,
            end: 0,
            reader: ws::Reader::new(),
            need: 0,
        }
    }

    /// Where to read to: never empty. Moves unconsumed bytes to the front, and grows the
    /// buffer when the frame being waited for does not fit.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let unconsumed = self.end - self.start;
        let wanted = self.need.max(unconsumed + 1).max(FRAME_BUFFER_BYTES);
        if self.start > 0 && (self.end == self.buf.len() || wanted > self.buf.len() - self.start) {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = unconsumed;
        }
        if wanted > self.buf.len() {
            self.buf.resize(wanted, 0);
        }
        &mut self.buf[self.end..]
    }

    pub(crate) fn filled(&mut self, count: usize) {
        self.end += count;
    }

    /// The unconsumed bytes.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(crate) fn consume(&mut self, count: usize) {
        self.start += count;
    }

    /// The next complete message, if the buffer holds one.
    pub(crate) fn next_message(&mut self) -> Result<Option<Message<'_>>, FrameError> {
        loop {
            match self.reader.next(&self.buf[self.start..self.end])? {
                Next::NeedMore { frame_len } => {
                    self.need = frame_len.unwrap_or(0);
                    return Ok(None);
                }
                Next::Fragment { consumed } => self.start += consumed,
                Next::Message {
                    consumed,
                    kind,
                    payload,
                } => {
                    let base = self.start;
                    self.start += consumed;
                    self.need = 0;
                    let bytes = match payload {
                        Payload::InBuffer(range) => &self.buf[base + range.start..base + range.end],
                        Payload::Assembled => self.reader.assembled(),
                    };
                    return Ok(Some(Message { kind, bytes }));
                }
            }
        }
    }
}

/// The opening of one connection after its upgrade request was written: first the `101`, then
/// the `Init` frame. Sans IO: [`Opening::advance`] looks at what was read so far.
pub(crate) struct Opening {
    accept: String,
    /// The actor the connection was opened to; `Init` must name it.
    actor_id: String,
    upgraded: bool,
}

impl Opening {
    /// A new key and the upgrade request for `actor`.
    pub(crate) fn start(
        endpoint: &WsEndpoint,
        actor: usize,
        rng: &mut SplitMix64,
    ) -> (Opening, Vec<u8>) {
        let mut random = [0u8; 16];
        random[..8].copy_from_slice(&rng.next_u64().to_ne_bytes());
        random[8..].copy_from_slice(&rng.next_u64().to_ne_bytes());
        let key = ws::key_from(random);
        let request = endpoint.request(actor, &key);
        (
            Opening {
                accept: ws::accept_for(&key),
                actor_id: endpoint.actor_ids[actor].clone(),
                upgraded: false,
            },
            request,
        )
    }

    /// Consumes what it can of `frames`; `Ok(true)` once `Init` arrived (naming the actor the
    /// connection was opened to), `Ok(false)` when more bytes are needed. Pings before `Init`
    /// are answered into `out`.
    pub(crate) fn advance(
        &mut self,
        frames: &mut FrameBuffer,
        out: &mut Vec<u8>,
        rng: &mut SplitMix64,
    ) -> Result<bool, SetupError> {
        if !self.upgraded {
            match ws::check_handshake(frames.pending(), &self.accept, Some(RIVET_PROTOCOL)) {
                Ok(None) => return Ok(false),
                Ok(Some(head_len)) => {
                    frames.consume(head_len);
                    self.upgraded = true;
                }
                Err(ws::HandshakeError::Status(status)) => {
                    let pending = frames.pending();
                    let body = pending
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(&[][..], |at| &pending[at + 4..]);
                    let body = &body[..body.len().min(QUOTED_BODY_BYTES_MAX)];
                    let body = String::from_utf8_lossy(body);
                    return Err(SetupError {
                        kind: ErrorKind::HandshakeStatus(status),
                        detail: format!(
                            "upgrade refused with HTTP {status} (expected 101): {}",
                            body.trim()
                        ),
                    });
                }
                Err(error) => return Err(SetupError::handshake(error.to_string())),
            }
        }
        loop {
            let message = frames
                .next_message()
                .map_err(|error| SetupError::handshake(format!("before Init: {error}")))?;
            let Some(message) = message else {
                return Ok(false);
            };
            match message.kind {
                MessageKind::Text | MessageKind::Binary => {
                    return match rivetconn::decode(message.bytes) {
                        Ok(ToClient::Init { actor_id, .. }) if actor_id.is(&self.actor_id) => {
                            Ok(true)
                        }
                        Ok(ToClient::Init { actor_id, .. }) => Err(SetupError::handshake(format!(
                            "Init names actor {:?}, but the connection was opened to {:?}",
                            actor_id.decode(),
                            self.actor_id
                        ))),
                        Ok(ToClient::Error {
                            group,
                            code,
                            message,
                            ..
                        }) => Err(SetupError::handshake(format!(
                            "connection rejected before Init: {}/{}: {}",
                            group.decode(),
                            code.decode(),
                            message.decode()
                        ))),
                        Ok(_) => Err(SetupError::handshake(format!(
                            "the first message is not Init: {}",
                            clip(message.bytes)
                        ))),
                        Err(error) => Err(SetupError::handshake(format!(
                            "the first message is not Init ({error}): {}",
                            clip(message.bytes)
                        ))),
                    };
                }
                MessageKind::Ping => {
                    ws::write_frame(out, ws::Opcode::Pong, message.bytes, mask(rng))
                }
                MessageKind::Pong => {}
                MessageKind::Close => {
                    let why = match ws::close_parts(message.bytes) {
                        Ok(Some((code, reason))) => format!("{code} {reason}"),
                        _ => "no status".to_string(),
                    };
                    return Err(SetupError::handshake(format!(
                        "the server closed the WebSocket before Init ({why})"
                    )));
                }
            }
        }
    }
}

/// A message quoted in an error, cut short.
pub(crate) fn clip(bytes: &[u8]) -> String {
    const SHOWN_BYTES_MAX: usize = 300;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN_BYTES_MAX)]);
    if bytes.len() > SHOWN_BYTES_MAX {
        format!("{text}…")
    } else {
        text.into_owned()
    }
}

/// An open connection (on a glommio executor unless the socket says otherwise).
pub(crate) struct WsConn<S = TcpStream> {
    pub(crate) stream: S,
    pub(crate) frames: FrameBuffer,
}

/// Connects to `actor`'s connection endpoint and waits for `Init`: the TCP connect within
/// `connect_timeout`, the rest within `timeout`.
pub(crate) async fn open<S: Socket>(
    endpoint: &WsEndpoint,
    actor: usize,
    rng: &mut SplitMix64,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<WsConn<S>, SetupError> {
    let mut stream = S::connect(endpoint.addr, connect_timeout)
        .await
        .map_err(|error| SetupError {
            kind: ErrorKind::of_connect(&error),
            detail: format!("cannot connect to {}: {error}", endpoint.addr),
        })?;
    let mut frames = FrameBuffer::new();
    let handshake = handshake(&mut stream, &mut frames, endpoint, actor, rng);
    let expired = async {
        S::sleep(timeout).await;
        Err(SetupError::handshake(format!(
            "no 101 and Init within {timeout:?} of connecting"
        )))
    };
    futures_lite::future::or(handshake, expired).await?;
    Ok(WsConn { stream, frames })
}

/// Writes the upgrade and reads until `Init`.
async fn handshake(
    stream: &mut impl Socket,
    frames: &mut FrameBuffer,
    endpoint: &WsEndpoint,
    actor: usize,
    rng: &mut SplitMix64,
) -> Result<(), SetupError> {
    let io_error = |error: io::Error| SetupError {
        kind: ErrorKind::of_io(&error),
        detail: format!("during the WebSocket handshake: {error}"),
    };
    let (mut opening, request) = Opening::start(endpoint, actor, rng);
    stream.write_all(&request).await.map_err(io_error)?;
    let mut out = Vec::new();
    loop {
        if opening.advance(frames, &mut out, rng)? {
            return Ok(());
        }
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(io_error)?;
            out.clear();
        }
        let read = stream.read(frames.space()).await.map_err(io_error)?;
        if read == 0 {
            return Err(SetupError {
                kind: ErrorKind::Closed,
                detail: "the server closed the connection during the WebSocket handshake"
                    .to_string(),
            });
        }
        frames.filled(read);
    }
}

/// A connection on a blocking socket, for the fan-out trigger (on the main thread).
pub(crate) struct BlockingWs {
    stream: std::net::TcpStream,
    frames: FrameBuffer,
    rng: SplitMix64,
    out: Vec<u8>,
}

/// How the trigger's action ended.
pub(crate) enum ActionOutcome {
    /// The `ActionResponse`.
    Ok,
    /// An `Error` frame for the action: `group/code: message`.
    Failed(String),
}

impl BlockingWs {
    pub(crate) fn open(
        endpoint: &WsEndpoint,
        mut rng: SplitMix64,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<BlockingWs, String> {
        let stream = crate::rivet::connect_blocking(endpoint.addr, connect_timeout)?;
        stream
            .set_nodelay(true)
            .map_err(|error| format!("set_nodelay: {error}"))?;
        let (mut opening, request) = Opening::start(endpoint, 0, &mut rng);
        let mut ws = BlockingWs {
            stream,
            frames: FrameBuffer::new(),
            rng,
            out: request,
        };
        let until = Instant::now() + timeout;
        loop {
            ws.flush()?;
            if opening
                .advance(&mut ws.frames, &mut ws.out, &mut ws.rng)
                .map_err(|error| error.detail)?
            {
                return Ok(ws);
            }
            if ws.out.is_empty() {
                ws.read_some(until)?;
            }
        }
    }

    fn flush(&mut self) -> Result<(), String> {
        if !self.out.is_empty() {
            self.stream
                .write_all(&self.out)
                .map_err(|error| format!("WebSocket write failed: {error}"))?;
            self.out.clear();
        }
        Ok(())
    }

    fn read_some(&mut self, until: Instant) -> Result<(), String> {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".to_string());
        }
        self.stream
            .set_read_timeout(Some(left))
            .map_err(|error| error.to_string())?;
        match self.stream.read(self.frames.space()) {
            Ok(0) => Err("the server closed the connection".to_string()),
            Ok(read) => {
                self.frames.filled(read);
                Ok(())
            }
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err("timed out".to_string())
            }
            Err(error) => Err(format!("WebSocket read failed: {error}")),
        }
    }

    /// Sends one text frame.
    pub(crate) fn send_text(&mut self, payload: &[u8]) -> Result<(), String> {
        let mask = mask(&mut self.rng);
        ws::write_frame(&mut self.out, ws::Opcode::Text, payload, mask);
        self.flush()
    }

    /// Reads until the response to action `id` (other messages are skipped, pings answered).
    pub(crate) fn wait_action(&mut self, id: u64, until: Instant) -> Result<ActionOutcome, String> {
        loop {
            loop {
                let message = self
                    .frames
                    .next_message()
                    .map_err(|error| format!("invalid frame from the server: {error}"))?;
                let Some(message) = message else { break };
                match message.kind {
                    MessageKind::Text | MessageKind::Binary => {
                        match rivetconn::decode(message.bytes) {
                            Ok(ToClient::ActionResponse { id: answered }) if answered == id => {
                                return Ok(ActionOutcome::Ok);
                            }
                            Ok(ToClient::Error {
                                action_id,
                                group,
                                code,
                                message,
                            }) if action_id.is_none_or(|failed| failed == id) => {
                                return Ok(ActionOutcome::Failed(format!(
                                    "{}/{}: {}",
                                    group.decode(),
                                    code.decode(),
                                    message.decode()
                                )));
                            }
                            Ok(_) => {}
                            Err(error) => {
                                return Err(format!(
                                    "undecodable message ({error}): {}",
                                    clip(message.bytes)
                                ));
                            }
                        }
                    }
                    MessageKind::Ping => {
                        let mask = mask(&mut self.rng);
                        ws::write_frame(&mut self.out, ws::Opcode::Pong, message.bytes, mask);
                    }
                    MessageKind::Pong => {}
                    MessageKind::Close => {
                        return Err("the server closed the trigger's WebSocket".to_string());
                    }
                }
            }
            self.flush()?;
            self.read_some(until)?;
        }
    }

    /// Sends a close frame (best effort) and drops the connection.
    pub(crate) fn close(mut self) {
        let mask = mask(&mut self.rng);
        ws::write_close(&mut self.out, ws::CLOSE_NORMAL, "", mask);
        let _ = self.flush();
    }
}
