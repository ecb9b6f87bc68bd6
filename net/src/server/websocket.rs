//! The WebSocket mode of a connection: what [`super::serve_with`] runs after a [`Handler`]
//! accepted an upgrade with [`Accepted::new`], and what [`super::serve_websocket`] runs for a
//! connection upgraded elsewhere and handed over ([`Accepted::handoff`]; see the `server` module
//! docs). Both build the same connection state and run the same loop; a handed-over connection
//! starts with the bytes its old owner had received and not read
//! ([`super::Detached::received`]) in the read buffer, and an empty output buffer (its 101 was
//! written before the handoff).
//!
//! # Shape
//!
//! A WebSocket is served by one task, the connection's, which owns the [`Transport`], the read
//! buffer (the same one the HTTP loop used: bytes that followed the upgrade request's head are
//! frames; or, after a handoff, one that starts with the received bytes) and an [`Assembler`]. The application side is a [`WsSession`] (a boxed trait object
//! the handler returned) and any number of [`WsSender`] clones that append to the connection's
//! **outbound queue**. The session's callbacks are synchronous: `on_message` starts work (spawns
//! a task for an action, say) and returns; whoever holds a `WsSender` answers later, in any
//! order, as many times as it likes, from any task of the shard.
//!
//! [`Handler`]: super::Handler
//!
//! # One iteration of the loop
//!
//! 1. Decode every complete frame already buffered: text and binary messages go to
//!    [`WsSession::on_message`] (in place, mutable, without a copy when unfragmented), pings are
//!    answered with pongs through the outbound queue, pongs go to [`WsSession::on_pong`], a
//!    close starts the closing handshake.
//! 2. If the outbound queue holds anything, write all of it with one `write` (the queue is a
//!    list of byte runs; consecutive frames encoded by the senders share one run, so a burst of
//!    replies is already contiguous, and a lone pre-encoded broadcast frame is written straight
//!    from its `Rc` without a copy).
//! 3. Wait for whichever comes first: more bytes from the peer, or output (a sender queued a
//!    frame or asked to close; the sender wakes the task through a stored waker). The read is
//!    polled first, so a busy peer cannot starve output and queued output cannot starve input:
//!    each iteration does at most one read and one write.
//!
//! Losing the race drops the pending read future. That loses no data on either transport: a
//! [`crate::uring::UringStream`] read copies out of the slot's queue only in the poll that
//! returns `Ready` (received bytes wait in the slot otherwise), and glommio's `TcpStream` read
//! is readiness based (`recv` runs inside the poll that returns `Ready`; a pending read only
//! holds a poll registration). [`ReadBuf::fill`](super::ReadBuf) updates its indices in that
//! same poll. Writes are never raced against reads; while one batch is being written the loop
//! does not read (TCP flow control then pushes back on a peer that sends without reading).
//!
//! # Bounds
//!
//! * Inbound: [`WsLimits::codec`] bounds a frame (the read buffer grows to at most a frame plus
//!   [`super::READ_SPACE_MIN`], and shrinks back when empty) and a fragmented message (the
//!   assembler's buffer). Violations close with the codec's code (1002, 1007, 1009).
//! * Outbound: [`WsLimits::outbound_bytes_max`] bounds the bytes queued and not yet written
//!   (counting the batch being written), [`WsLimits::outbound_frames_max`] the frames queued. A
//!   send that would exceed either fails with [`SendError::Overflow`] and fails the connection
//!   with [`CLOSE_OUTBOUND_FULL`] (1008, policy violation: the peer does not read fast enough):
//!   the queued frames are dropped and only the close frame is left to write. If the peer does
//!   not take the batch being written within [`super::LINGER_TIMEOUT`] after that, the
//!   connection is cut (write side shut down, socket dropped) without waiting for it.
//!
//! # Closing
//!
//! * The peer sends a close: the loop stops delivering messages, drops unsent queued frames,
//!   echoes the peer's code and reason (or a close without status if it sent none), then closes like the
//!   HTTP loop does: shut down the write side and drain what the peer still sends, bounded by
//!   [`super::LINGER_TIMEOUT`] and [`super::LINGER_BYTES_MAX`].
//! * The session asks to close ([`WsSender::close`], or an `Err(WsClose)` from `on_message`):
//!   the close frame is queued behind what is already queued (so a final message still goes
//!   out), no more messages are delivered, and once it is written the connection closes as
//!   above (the peer's close echo is drained, not parsed).
//! * The peer violates the protocol: a close with the codec's code and reason replaces the
//!   queued frames, then as above.
//! * The peer disappears (end of stream without a close, or a socket error): nothing more is
//!   written.
//!
//! Once closing starts, every sender's sends fail with [`SendError::Closed`];
//! [`WsSession::on_close`] is called exactly once, as soon as the loop learns of the close, with
//! the code of the close frame that ended the connection (ours or the peer's), or `None` if
//! there was none (the peer vanished or sent a close without status, the 101 could not be
//! written, or the serve future was dropped). Writes after closing started are bounded by
//! [`super::LINGER_TIMEOUT`] each.
//!
//! # Timeouts and heartbeats
//!
//! The transport's read timeout is meant for HTTP (slow-loris heads) and would kill idle but
//! healthy WebSockets, so it is switched off after the 101. The loop sends no pings and has no
//! idle timeout: liveness is the layer above's business. It can send pings with
//! [`WsSender::ping`], see pongs in [`WsSession::on_pong`] and end a dead connection with
//! [`WsSender::close`].

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::mem;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::{
    Conn, Detached, Fill, LINGER_TIMEOUT, OUT_BUF_INITIAL, OUT_RETAIN_BYTES_MAX, READ_SPACE_MIN,
    ReadBuf, Transport,
};
use crate::ws::{
    self, Assembler, CLOSE_POLICY_VIOLATION, FRAME_HEADER_BYTES_MAX, Message, Opcode, Progress,
    Role, Text,
};

/// The close code a connection is failed with when its outbound queue would exceed
/// [`WsLimits`]: 1008 (policy violation). The peer is not reading as fast as it is sent to;
/// 1013 ("try again later") would suggest the server is overloaded, which it is not.
pub const CLOSE_OUTBOUND_FULL: u16 = CLOSE_POLICY_VIOLATION;

/// The reason sent with [`CLOSE_OUTBOUND_FULL`].
const OUTBOUND_FULL_REASON: &str = "outbound queue full";

/// Limits of a connection in WebSocket mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WsLimits {
    /// Inbound frame and message sizes, enforced by the codec (1009 when exceeded).
    pub codec: ws::Limits,
    /// Bytes sent through the connection's [`WsSender`]s (and pongs) that are queued or being
    /// written. A send that would go beyond fails the connection with [`CLOSE_OUTBOUND_FULL`].
    /// It also bounds one message: a frame larger than this can never be sent.
    pub outbound_bytes_max: usize,
    /// Frames queued and not yet handed to the transport; beyond, as for bytes. Bounds the queue
    /// of small pre-encoded frames, whose bytes are shared and cost little each.
    pub outbound_frames_max: usize,
}

impl Default for WsLimits {
    /// The codec's defaults (1 MiB frames, 4 MiB messages), 8 MiB and 65 536 frames outbound.
    fn default() -> Self {
        WsLimits {
            codec: ws::Limits::default(),
            outbound_bytes_max: 8 * 1024 * 1024,
            outbound_frames_max: 65_536,
        }
    }
}

/// What [`super::Handler::upgrade`] returns to accept a WebSocket: the subprotocol to select,
/// and who serves the connection after the 101, this loop ([`Accepted::new`]) or another
/// executor ([`Accepted::handoff`]).
pub struct Accepted {
    protocol: Option<String>,
    then: Then,
}

/// Who serves an accepted WebSocket.
pub(super) enum Then {
    /// This loop, with this session.
    Serve(Box<dyn WsSession>),
    /// Whoever the closure gives the detached connection to.
    Handoff(Box<dyn FnOnce(io::Result<Detached>)>),
}

impl Accepted {
    /// Serve the WebSocket here with `session`: the loop writes the 101 and serves the
    /// connection until it closes.
    ///
    /// `protocol` is the subprotocol to select. It must be one the client offered; any other
    /// (including any when the client offered none) is dropped, and the 101 selects none, as
    /// [`crate::ws::write_accept`] does.
    pub fn new(protocol: Option<String>, session: Box<dyn WsSession>) -> Accepted {
        Accepted {
            protocol,
            then: Then::Serve(session),
        }
    }

    /// Write the 101 here, then take the connection out of this loop and give it to `handoff`
    /// (e.g. to send it to another shard, which serves it with [`super::serve_websocket`]).
    /// `handoff` is called exactly once with `Ok(detached)`, or with `Err` if writing the 101
    /// or detaching failed (then the connection is gone); it runs on the loop's task, so it
    /// should only pass the connection on. The one exception: if the serve future is dropped
    /// before the loop got that far, the closure is dropped uncalled (and the connection
    /// closed). `protocol` as for [`Accepted::new`].
    ///
    /// The [`Detached`] holds the socket and every byte received after the upgrade request that
    /// the loop had not consumed (frames the client sent right behind the request), so the new
    /// owner loses nothing. See the `server` module docs for when this is worth it.
    pub fn handoff(
        protocol: Option<String>,
        handoff: Box<dyn FnOnce(io::Result<Detached>)>,
    ) -> Accepted {
        Accepted {
            protocol,
            then: Then::Handoff(handoff),
        }
    }

    /// The subprotocol to select, as given to the constructor.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    pub(super) fn into_then(self) -> Then {
        self.then
    }
}

impl fmt::Debug for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let then = match self.then {
            Then::Serve(_) => "serve",
            Then::Handoff(_) => "handoff",
        };
        f.debug_struct("Accepted")
            .field("protocol", &self.protocol)
            .field("then", &then)
            .finish()
    }
}

/// A complete data message from the peer, borrowed mutably (from the read buffer when it came
/// in one frame, from the assembler when it was fragmented) so it can be parsed in place.
#[derive(Debug)]
pub enum WsMessage<'a> {
    /// A text message, checked to be UTF-8. [`Text::into_bytes_mut`] gives the bytes mutably
    /// without `unsafe` (what `simd_json::from_slice` wants); it derefs to `str`.
    Text(Text<'a>),
    /// A binary message.
    Binary(&'a mut [u8]),
}

/// Asks the loop to close the connection with this close frame (see [`WsSession::on_message`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsClose {
    /// The close code; one [`crate::ws::is_valid_close_code`] refuses is sent as a close
    /// without status.
    pub code: u16,
    /// The reason, cut to [`crate::ws::CLOSE_REASON_BYTES_MAX`] bytes at a char boundary.
    pub reason: String,
}

/// The application side of one WebSocket connection. Single-threaded and object safe: the loop
/// holds it as `Box<dyn WsSession>` and calls it from the connection's task, never re-entrantly.
pub trait WsSession {
    /// Called once right after the 101 is written, with the sender for this connection. Keep it
    /// (and clone it into tasks): it is the only way to send.
    fn on_open(&mut self, sender: WsSender);

    /// A complete message arrived (text or binary; pings/pongs/closes are handled by the loop).
    /// Synchronous on purpose: the session starts work (e.g. spawns an action) and returns;
    /// replies go out through the `WsSender` it was given. `Err` closes the connection with
    /// that close frame, after what is already queued.
    fn on_message(&mut self, message: WsMessage<'_>) -> Result<(), WsClose>;

    /// A pong arrived (the answer to a [`WsSender::ping`], or an unsolicited heartbeat), with
    /// its payload. Default: ignored.
    fn on_pong(&mut self, payload: &[u8]) {
        let _ = payload;
    }

    /// The connection ended (peer close, error, or server close); called exactly once, even
    /// when `on_open` never was (the 101 could not be written). `code` is the close code that
    /// ended it (see the module docs), `None` when there was none. Messages are no longer
    /// delivered and sends fail from then on.
    fn on_close(&mut self, code: Option<u16>);
}

/// Why a send did not queue anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The connection is closing or closed.
    Closed,
    /// The frame would exceed [`WsLimits`]; the connection is now failing with
    /// [`CLOSE_OUTBOUND_FULL`].
    Overflow,
    /// [`WsSender::send_frame_bytes`] got bytes that are not exactly one final, unmasked,
    /// non-close frame.
    InvalidFrame,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Closed => "the WebSocket is closed",
            SendError::Overflow => "the WebSocket's outbound queue is full",
            SendError::InvalidFrame => "not a single final unmasked data or ping/pong frame",
        })
    }
}

impl std::error::Error for SendError {}

/// Sends on one WebSocket connection: appends frames to its bounded outbound queue, which the
/// connection's task writes out. Cheap to clone (an `Rc`), `!Send`: it lives on the shard of
/// its connection. Sends never wait; they fail once the connection is closing
/// ([`SendError::Closed`]) or when the queue is full ([`SendError::Overflow`], which fails the
/// connection). Frames from all clones go out in the order they were queued.
#[derive(Clone)]
pub struct WsSender {
    shared: Rc<RefCell<Outbound>>,
}

impl fmt::Debug for WsSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsSender")
            .field("open", &self.is_open())
            .finish()
    }
}

impl WsSender {
    /// Queues a text message (one frame).
    pub fn send_text(&self, text: &str) -> Result<(), SendError> {
        self.shared
            .borrow_mut()
            .push_encoded(frame_len(text.len()), |out| ws::write_text(out, text))
    }

    /// Queues a binary message (one frame).
    pub fn send_binary(&self, data: &[u8]) -> Result<(), SendError> {
        self.shared
            .borrow_mut()
            .push_encoded(frame_len(data.len()), |out| ws::write_binary(out, data))
    }

    /// Queues a pre-encoded frame, e.g. from [`encode_text_frame`]: for broadcasts, encode once
    /// and hand the same `Rc` to every subscriber's sender; the bytes are shared, not copied
    /// into the queue. `frame` must be exactly one final, unmasked frame that is text, binary,
    /// ping or pong ([`SendError::InvalidFrame`] otherwise; closes go through
    /// [`WsSender::close`]). Only the header is checked, not text's UTF-8.
    pub fn send_frame_bytes(&self, frame: Rc<[u8]>) -> Result<(), SendError> {
        if !is_single_frame(&frame) {
            return Err(SendError::InvalidFrame);
        }
        self.shared.borrow_mut().push_shared(frame)
    }

    /// Queues a ping with `payload` (cut to 125 bytes); the pong arrives in
    /// [`WsSession::on_pong`].
    pub fn ping(&self, payload: &[u8]) -> Result<(), SendError> {
        let len = frame_len(payload.len().min(ws::CONTROL_PAYLOAD_BYTES_MAX));
        self.shared
            .borrow_mut()
            .push_encoded(len, |out| ws::write_ping(out, payload))
    }

    /// Closes the connection with `code` and `reason` after what is already queued (see the
    /// module docs). Fails with [`SendError::Closed`] if it is already closing.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), SendError> {
        if self
            .shared
            .borrow_mut()
            .start_close(Some(code), reason, false)
        {
            Ok(())
        } else {
            Err(SendError::Closed)
        }
    }

    /// Whether sends are still accepted (the connection is open and not closing).
    pub fn is_open(&self) -> bool {
        self.shared.borrow().state == State::Open
    }
}

/// Encodes a final text frame for [`WsSender::send_frame_bytes`].
pub fn encode_text_frame(text: &str) -> Rc<[u8]> {
    let mut out = Vec::with_capacity(frame_len(text.len()));
    ws::write_text(&mut out, text);
    out.into()
}

/// Encodes a final binary frame for [`WsSender::send_frame_bytes`].
pub fn encode_binary_frame(data: &[u8]) -> Rc<[u8]> {
    let mut out = Vec::with_capacity(frame_len(data.len()));
    ws::write_binary(&mut out, data);
    out.into()
}

/// The size of an unmasked frame with `payload` bytes (minimal length encoding).
fn frame_len(payload: usize) -> usize {
    let header = match payload {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    };
    payload.saturating_add(header)
}

/// Whether `bytes` are exactly one final, unmasked frame whose opcode is not close or
/// continuation.
fn is_single_frame(bytes: &[u8]) -> bool {
    let unbounded = ws::Limits {
        frame_payload_bytes_max: usize::MAX,
        message_bytes_max: usize::MAX,
    };
    match ws::parse_header(bytes, &unbounded, Role::Client) {
        Ok(Progress::Complete(header)) => {
            header.fin
                && !matches!(header.opcode, Opcode::Close | Opcode::Continuation)
                && header.frame_len() == bytes.len()
        }
        _ => false,
    }
}

/// Where a connection is in its life, as the senders see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Sends are accepted.
    Open,
    /// A close frame is queued (or was written); `code` is what `on_close` reports.
    Closing { code: Option<u16> },
    /// The connection's task is gone.
    Closed,
}

/// A run of queued bytes.
enum Chunk {
    /// Frames encoded by the senders, back to back.
    Owned(Vec<u8>),
    /// One pre-encoded frame shared with other connections.
    Shared(Rc<[u8]>),
}

/// What [`Outbound::take_batch`] handed to the loop.
enum Batch {
    /// The bytes are in the loop's output buffer.
    Buffer,
    /// One shared frame, written from its `Rc`.
    Shared(Rc<[u8]>),
}

/// A connection's outbound queue, shared by its senders and its task.
struct Outbound {
    state: State,
    queue: VecDeque<Chunk>,
    /// Bytes in `queue`.
    queued_bytes: usize,
    /// Frames in `queue`.
    queued_frames: usize,
    /// Bytes of the batch the loop is writing.
    in_flight: usize,
    /// An empty buffer kept for the next `Owned` run, so steady traffic does not allocate.
    spare: Vec<u8>,
    /// The connection task, waiting for output or a close.
    waker: Option<Waker>,
    bytes_max: usize,
    frames_max: usize,
}

impl Outbound {
    fn new(limits: &WsLimits) -> Outbound {
        Outbound {
            state: State::Open,
            queue: VecDeque::new(),
            queued_bytes: 0,
            queued_frames: 0,
            in_flight: 0,
            spare: Vec::new(),
            waker: None,
            bytes_max: limits.outbound_bytes_max,
            frames_max: limits.outbound_frames_max,
        }
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Checks that a frame of `len` bytes may be queued; on overflow, fails the connection.
    fn admit(&mut self, len: usize) -> Result<(), SendError> {
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        let bytes = self
            .queued_bytes
            .saturating_add(self.in_flight)
            .saturating_add(len);
        if bytes > self.bytes_max || self.queued_frames >= self.frames_max {
            tracing::debug!(
                bytes,
                frames = self.queued_frames,
                "WebSocket outbound queue full; closing"
            );
            self.start_close(Some(CLOSE_OUTBOUND_FULL), OUTBOUND_FULL_REASON, true);
            return Err(SendError::Overflow);
        }
        Ok(())
    }

    /// Queues a frame of `len` bytes that `write` appends.
    fn push_encoded(
        &mut self,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), SendError> {
        self.admit(len)?;
        self.append(write);
        Ok(())
    }

    fn push_shared(&mut self, frame: Rc<[u8]>) -> Result<(), SendError> {
        self.admit(frame.len())?;
        self.queued_bytes += frame.len();
        self.queued_frames += 1;
        self.queue.push_back(Chunk::Shared(frame));
        self.wake();
        Ok(())
    }

    /// Appends a frame to the last owned run (starting one if needed), without limit checks.
    fn append(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if !matches!(self.queue.back(), Some(Chunk::Owned(_))) {
            let run = mem::take(&mut self.spare);
            self.queue.push_back(Chunk::Owned(run));
        }
        if let Some(Chunk::Owned(run)) = self.queue.back_mut() {
            let before = run.len();
            write(run);
            self.queued_bytes += run.len() - before;
            self.queued_frames += 1;
        }
        self.wake();
    }

    /// Starts closing with a close frame carrying `code` (none when `None`) and `reason`;
    /// `discard` drops what is queued first. Returns false if already closing.
    fn start_close(&mut self, code: Option<u16>, reason: &str, discard: bool) -> bool {
        if self.state != State::Open {
            return false;
        }
        if discard {
            self.drop_queue();
        }
        self.state = State::Closing { code };
        self.append(|out| match code {
            Some(code) => ws::write_close(out, code, reason),
            None => ws::write_frame(out, true, Opcode::Close, &[]),
        });
        true
    }

    /// Empties the queue (the batch in flight is not affected).
    fn drop_queue(&mut self) {
        while let Some(chunk) = self.queue.pop_front() {
            if let Chunk::Owned(run) = chunk {
                self.recycle(run);
            }
        }
        self.queued_bytes = 0;
        self.queued_frames = 0;
    }

    fn recycle(&mut self, mut run: Vec<u8>) {
        run.clear();
        if run.capacity() <= OUT_RETAIN_BYTES_MAX && run.capacity() > self.spare.capacity() {
            self.spare = run;
        }
    }

    /// Moves the whole queue into one batch: into `dst` (empty), or a lone shared frame as is.
    fn take_batch(&mut self, dst: &mut Vec<u8>) -> Option<Batch> {
        if self.queue.is_empty() {
            return None;
        }
        self.in_flight += self.queued_bytes;
        self.queued_bytes = 0;
        self.queued_frames = 0;
        if self.queue.len() == 1 {
            match self.queue.pop_front() {
                Some(Chunk::Shared(frame)) => return Some(Batch::Shared(frame)),
                Some(Chunk::Owned(mut run)) => {
                    if dst.is_empty() {
                        // Hand the run over without copying; `dst`'s buffer becomes the spare.
                        mem::swap(dst, &mut run);
                    } else {
                        dst.extend_from_slice(&run);
                    }
                    self.recycle(run);
                    return Some(Batch::Buffer);
                }
                None => return None,
            }
        }
        while let Some(chunk) = self.queue.pop_front() {
            match chunk {
                Chunk::Owned(run) => {
                    dst.extend_from_slice(&run);
                    self.recycle(run);
                }
                Chunk::Shared(frame) => dst.extend_from_slice(&frame),
            }
        }
        Some(Batch::Buffer)
    }

    /// Ready when there is something to write or a close to act on.
    fn poll_output(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.queue.is_empty() || self.state != State::Open {
            return Poll::Ready(());
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Ready once the connection is closing.
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.state != State::Open {
            return Poll::Ready(());
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The session and the queue of a connection; dropping it ends the connection for both: sends
/// fail from then on, and `on_close` runs if it has not.
struct Endpoint {
    session: Box<dyn WsSession>,
    shared: Rc<RefCell<Outbound>>,
    /// `on_close` was called.
    notified: bool,
}

impl Endpoint {
    /// Calls `on_close` once the queue says the connection is closing (once).
    fn notice_close(&mut self) {
        if self.notified {
            return;
        }
        let state = self.shared.borrow().state;
        if let State::Closing { code } = state {
            self.notified = true;
            self.session.on_close(code);
        }
    }

    /// Hands one message to the session; a close it asks for is queued.
    fn deliver(&mut self, message: WsMessage<'_>) {
        if let Err(close) = self.session.on_message(message) {
            self.shared
                .borrow_mut()
                .start_close(Some(close.code), &close.reason, false);
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let state = {
            let mut shared = self.shared.borrow_mut();
            let state = shared.state;
            shared.state = State::Closed;
            shared.drop_queue();
            shared.waker = None;
            state
        };
        if !self.notified {
            self.notified = true;
            let code = match state {
                State::Closing { code } => code,
                State::Open | State::Closed => None,
            };
            self.session.on_close(code);
        }
    }
}

/// What ended a wait in the loop.
enum Event {
    Input(io::Result<Fill>),
    Output,
}

/// Serves the connection as a WebSocket; `conn.out` holds the 101 (and any responses before
/// it), or nothing for a connection upgraded elsewhere. See the module docs.
pub(super) async fn run<T: Transport>(
    mut conn: Conn<T>,
    session: Box<dyn WsSession>,
    limits: &WsLimits,
) -> io::Result<()> {
    let shared = Rc::new(RefCell::new(Outbound::new(limits)));
    let mut endpoint = Endpoint {
        session,
        shared: Rc::clone(&shared),
        notified: false,
    };
    conn.flush().await?;
    conn.stream.set_read_timeout(None)?;
    endpoint.session.on_open(WsSender {
        shared: Rc::clone(&shared),
    });
    conn.rb.set_cap(
        FRAME_HEADER_BYTES_MAX
            .saturating_add(limits.codec.frame_payload_bytes_max)
            .saturating_add(READ_SPACE_MIN),
    );
    let mut assembler = Assembler::new(&limits.codec, Role::Server);
    loop {
        let want = decode_buffered(&mut conn.rb, &mut assembler, &mut endpoint, &limits.codec);
        endpoint.notice_close();
        if !write_queued(&mut conn, &shared).await? {
            // The peer did not take what was written within the grace period after closing
            // started: cut the connection.
            endpoint.notice_close();
            tracing::debug!("WebSocket write stalled while closing; dropping the connection");
            let _ = conn.stream.shutdown_write().await;
            return Ok(());
        }
        endpoint.notice_close();
        let state = shared.borrow().state;
        if state != State::Open && shared.borrow().queue.is_empty() {
            break;
        }
        let event = {
            let rb = &mut conn.rb;
            let stream = &mut conn.stream;
            let input = async { Event::Input(rb.fill(stream, want).await) };
            let output = async {
                poll_fn(|cx| shared.borrow_mut().poll_output(cx)).await;
                Event::Output
            };
            futures_lite::future::or(input, output).await
        };
        match event {
            Event::Output | Event::Input(Ok(Fill::Read)) => {}
            Event::Input(Ok(Fill::Eof)) => {
                tracing::debug!("WebSocket peer closed the TCP connection");
                return Ok(());
            }
            // Cannot happen: the buffer's cap holds any frame the codec accepts.
            Event::Input(Ok(Fill::Full)) => {
                shared.borrow_mut().start_close(
                    Some(ws::CLOSE_MESSAGE_TOO_BIG),
                    "frame too large",
                    true,
                );
            }
            Event::Input(Err(error)) => return Err(error),
        }
    }
    // The close frame is written: shut down and linger, as the HTTP loop does. Sends already
    // fail (closing). The session lives until the peer has closed too (or the linger gave up),
    // so that whoever counts live sessions (a stopping server) sees the closing handshake end;
    // dropping the endpoint then marks the queue closed.
    let closed = conn.close().await;
    drop(endpoint);
    closed
}

/// Decodes the complete frames in the read buffer while the connection is open; returns how
/// many unconsumed bytes the next read should make room for (the size of a frame whose header
/// has arrived, else 0).
fn decode_buffered(
    rb: &mut ReadBuf,
    assembler: &mut Assembler,
    endpoint: &mut Endpoint,
    limits: &ws::Limits,
) -> usize {
    loop {
        if endpoint.shared.borrow().state != State::Open {
            return 0;
        }
        let decoded = match assembler.decode(rb.data_mut()) {
            Ok(Progress::Complete(decoded)) => decoded,
            Ok(Progress::Partial) => break,
            Err(error) => {
                tracing::debug!(%error, "WebSocket protocol error");
                endpoint
                    .shared
                    .borrow_mut()
                    .start_close(Some(error.code()), error.reason(), true);
                return 0;
            }
        };
        let len = decoded.len;
        match decoded.message {
            None => {}
            Some(Message::Text(text)) => endpoint.deliver(WsMessage::Text(text)),
            Some(Message::Binary(data)) => endpoint.deliver(WsMessage::Binary(data)),
            Some(Message::Ping(payload)) => {
                // An overflow here fails the connection, which is what a peer that pings
                // without reading deserves.
                let _ = endpoint
                    .shared
                    .borrow_mut()
                    .push_encoded(frame_len(payload.len()), |out| ws::write_pong(out, payload));
            }
            Some(Message::Pong(payload)) => endpoint.session.on_pong(payload),
            Some(Message::Close(frame)) => {
                let code = frame.as_ref().map(|frame| frame.code);
                let reason = frame.as_ref().map_or("", |frame| frame.reason);
                tracing::debug!(?code, reason, "WebSocket closed by the peer");
                // Echo the code and the reason, as common servers (and RivetKit's) do.
                endpoint.shared.borrow_mut().start_close(code, reason, true);
            }
        }
        rb.consume(len);
    }
    match ws::parse_header(rb.data(), limits, Role::Server) {
        Ok(Progress::Complete(header)) => header.frame_len(),
        _ => 0,
    }
}

/// Writes everything queued as one batch. Returns false if the write was abandoned because the
/// connection started closing and the write did not finish within [`LINGER_TIMEOUT`] after
/// that (the stream is then mid-frame and must be dropped).
async fn write_queued<T: Transport>(
    conn: &mut Conn<T>,
    shared: &Rc<RefCell<Outbound>>,
) -> io::Result<bool> {
    let Some(batch) = shared.borrow_mut().take_batch(&mut conn.out) else {
        return Ok(true);
    };
    let deadline = async {
        poll_fn(|cx| shared.borrow_mut().poll_closing(cx)).await;
        glommio::timer::sleep(LINGER_TIMEOUT).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "write stalled"))
    };
    let result = match &batch {
        Batch::Buffer => futures_lite::future::or(conn.stream.write_all(&conn.out), deadline).await,
        Batch::Shared(frame) => {
            futures_lite::future::or(conn.stream.write_all(frame), deadline).await
        }
    };
    shared.borrow_mut().in_flight = 0;
    conn.out.clear();
    if conn.out.capacity() > OUT_RETAIN_BYTES_MAX {
        conn.out.shrink_to(OUT_BUF_INITIAL);
    }
    match result {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::TimedOut => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound(bytes_max: usize, frames_max: usize) -> WsSender {
        WsSender {
            shared: Rc::new(RefCell::new(Outbound::new(&WsLimits {
                codec: ws::Limits::default(),
                outbound_bytes_max: bytes_max,
                outbound_frames_max: frames_max,
            }))),
        }
    }

    fn drain(sender: &WsSender) -> Vec<u8> {
        let mut out = Vec::new();
        let batch = sender.shared.borrow_mut().take_batch(&mut out);
        match batch {
            Some(Batch::Shared(frame)) => out.extend_from_slice(&frame),
            Some(Batch::Buffer) | None => {}
        }
        sender.shared.borrow_mut().in_flight = 0;
        out
    }

    #[test]
    fn frame_len_matches_the_writers() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let mut out = Vec::new();
            ws::write_binary(&mut out, &vec![7u8; len]);
            assert_eq!(frame_len(len), out.len(), "payload {len}");
        }
    }

    #[test]
    fn frames_keep_their_order_across_owned_and_shared_runs() {
        let sender = outbound(1 << 20, 100);
        sender.send_text("a").unwrap();
        sender.send_text("b").unwrap();
        sender.send_frame_bytes(encode_binary_frame(b"c")).unwrap();
        sender.send_text("d").unwrap();
        let mut expected = Vec::new();
        ws::write_text(&mut expected, "a");
        ws::write_text(&mut expected, "b");
        ws::write_binary(&mut expected, b"c");
        ws::write_text(&mut expected, "d");
        assert_eq!(drain(&sender), expected);
        assert!(drain(&sender).is_empty());
    }

    #[test]
    fn a_lone_shared_frame_is_written_from_its_rc() {
        let sender = outbound(1 << 20, 100);
        let frame = encode_text_frame("news");
        sender.send_frame_bytes(Rc::clone(&frame)).unwrap();
        let mut out = Vec::new();
        match sender.shared.borrow_mut().take_batch(&mut out) {
            Some(Batch::Shared(batch)) => assert!(Rc::ptr_eq(&batch, &frame)),
            _ => panic!("expected the shared frame itself"),
        }
        assert!(out.is_empty());
    }

    #[test]
    fn invalid_pre_encoded_frames_are_refused() {
        let sender = outbound(1 << 20, 100);
        let mut two = Vec::new();
        ws::write_text(&mut two, "a");
        ws::write_text(&mut two, "b");
        let mut close = Vec::new();
        ws::write_close(&mut close, 1000, "");
        let mut fragment = Vec::new();
        ws::write_frame(&mut fragment, false, Opcode::Text, b"x");
        let mut masked = Vec::new();
        ws::write_frame_masked(&mut masked, true, Opcode::Text, b"x", [1, 2, 3, 4]);
        let truncated = &encode_text_frame("hello")[..4];
        for bad in [&two[..], &close, &fragment, &masked, truncated, &[]] {
            assert_eq!(
                sender.send_frame_bytes(bad.into()),
                Err(SendError::InvalidFrame),
                "{bad:?}"
            );
        }
        let mut ping = Vec::new();
        ws::write_ping(&mut ping, b"p");
        assert_eq!(sender.send_frame_bytes(ping.into()), Ok(()));
        assert!(sender.is_open());
    }

    #[test]
    fn exceeding_the_byte_limit_fails_the_connection_with_1008() {
        let sender = outbound(100, 100);
        sender.send_binary(&[0; 50]).unwrap();
        // In flight counts too.
        let mut out = Vec::new();
        assert!(sender.shared.borrow_mut().take_batch(&mut out).is_some());
        sender.send_binary(&[0; 40]).unwrap();
        assert_eq!(sender.send_binary(&[0; 10]), Err(SendError::Overflow));
        assert!(!sender.is_open());
        assert_eq!(sender.send_text("late"), Err(SendError::Closed));
        assert_eq!(sender.close(1000, ""), Err(SendError::Closed));
        // Only the close frame is left.
        sender.shared.borrow_mut().in_flight = 0;
        let mut expected = Vec::new();
        ws::write_close(&mut expected, CLOSE_OUTBOUND_FULL, OUTBOUND_FULL_REASON);
        assert_eq!(drain(&sender), expected);
        assert_eq!(
            sender.shared.borrow().state,
            State::Closing {
                code: Some(CLOSE_OUTBOUND_FULL)
            }
        );
    }

    #[test]
    fn exceeding_the_frame_limit_fails_the_connection() {
        let sender = outbound(1 << 20, 3);
        for _ in 0..3 {
            sender.send_frame_bytes(encode_text_frame("x")).unwrap();
        }
        assert_eq!(
            sender.send_frame_bytes(encode_text_frame("x")),
            Err(SendError::Overflow)
        );
        assert!(!sender.is_open());
    }

    #[test]
    fn close_goes_after_what_is_queued() {
        let sender = outbound(1 << 20, 100);
        sender.send_text("last words").unwrap();
        sender.close(4000, "bye").unwrap();
        assert_eq!(sender.send_text("too late"), Err(SendError::Closed));
        let mut expected = Vec::new();
        ws::write_text(&mut expected, "last words");
        ws::write_close(&mut expected, 4000, "bye");
        assert_eq!(drain(&sender), expected);
    }

    struct Recorder(Rc<RefCell<Vec<Option<u16>>>>);

    impl WsSession for Recorder {
        fn on_open(&mut self, _: WsSender) {}
        fn on_message(&mut self, _: WsMessage<'_>) -> Result<(), WsClose> {
            Ok(())
        }
        fn on_close(&mut self, code: Option<u16>) {
            self.0.borrow_mut().push(code);
        }
    }

    #[test]
    fn on_close_runs_exactly_once_and_sends_fail_afterwards() {
        let closes = Rc::new(RefCell::new(Vec::new()));
        let sender = outbound(1 << 20, 100);
        let mut endpoint = Endpoint {
            session: Box::new(Recorder(Rc::clone(&closes))),
            shared: Rc::clone(&sender.shared),
            notified: false,
        };
        endpoint.notice_close();
        assert!(closes.borrow().is_empty());
        sender.close(4001, "").unwrap();
        endpoint.notice_close();
        endpoint.notice_close();
        drop(endpoint);
        assert_eq!(*closes.borrow(), vec![Some(4001)]);
        assert_eq!(sender.send_text("x"), Err(SendError::Closed));

        // Dropped while open: reported without a code.
        let closes = Rc::new(RefCell::new(Vec::new()));
        let sender = outbound(1 << 20, 100);
        drop(Endpoint {
            session: Box::new(Recorder(Rc::clone(&closes))),
            shared: Rc::clone(&sender.shared),
            notified: false,
        });
        assert_eq!(*closes.borrow(), vec![None]);
        assert!(!sender.is_open());
    }
}
