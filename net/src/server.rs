//! The per-connection loop: read, parse, dispatch to a [`Handler`], batch responses, repeat.
//!
//! # Buffers
//!
//! Each connection owns one read buffer and one output `Vec`, both reused for every request.
//! The read buffer starts at [`READ_BUF_INITIAL`] bytes and grows only when a request needs it,
//! up to `header_bytes_max + body_bytes_max` plus the chunked framing and read slack; after a
//! large request it shrinks back once it is empty, so idle keep-alive connections stay small.
//! Requests borrow the read buffer (zero-copy); the body is handed to the handler as a mutable
//! slice of it, de-chunked in place when it was chunked.
//!
//! # Flow of one request
//!
//! 1. Wait until [`find_head_end`] sees a complete head. While waiting, the bytes received so
//!    far are validated with [`parse_head`] each time their length doubles (and always once the
//!    head limit is passed), so garbage and over-long heads are rejected early while a peer that
//!    dribbles one byte per read still costs linear, not quadratic, parsing work.
//! 2. Split the buffer at the end of the head and parse the head from the left half. When the
//!    body is already in the right half (the common case for small RPC requests), the handler
//!    runs right away on that single parse.
//! 3. Otherwise remember the framing, answer `Expect: 100-continue`, read (and de-chunk) until
//!    the body is complete, then parse the unchanged head bytes once more and run the handler.
//!    The second parse is the price of not holding a borrow of the buffer across reads.
//!
//! Responses are appended to the output buffer and written with one `write` whenever the loop is
//! about to wait for the peer (no complete request left in the buffer), before an interim
//! `100 Continue`, or when more than [`OUT_FLUSH_BYTES_MAX`] bytes are pending. Pipelined
//! requests are therefore answered in order and in as few syscalls as possible. The price: while
//! a later pipelined request's handler is awaiting something, the responses to the requests
//! before it stay buffered (non-pipelining clients are unaffected).
//!
//! # Errors and closing
//!
//! A protocol error is answered with a short `text/plain` response carrying the status from
//! [`crate::http::Error::status`] and `connection: close`. Then, as for every close the server
//! initiates, the loop flushes, shuts down its write side, and drains (discards) what the peer
//! still sends for up to [`LINGER_TIMEOUT`] or [`LINGER_BYTES_MAX`] bytes before dropping the
//! socket: closing with unread data would make the kernel send a RST that can destroy the
//! response before the client reads it.
//!
//! [`serve`] returns `Ok(())` for every ending that is not a socket error: the peer closing
//! between requests, the peer closing mid-request (the partial request is dropped silently),
//! protocol errors and handler-requested closes. Socket errors are returned as `Err`, except
//! those of a handoff (below), which go to the handoff closure.
//!
//! The loop has no idle or header-read timeout of its own; callers that need one (against
//! slow-loris peers) can set glommio's read timeout on the stream before calling [`serve`].
//!
//! # WebSocket
//!
//! A request whose `Upgrade` field lists `websocket` is a WebSocket upgrade request. If
//! [`Handler::wants_upgrade`] says the handler serves WebSocket for it, the handshake is
//! validated ([`crate::ws::validate_upgrade`]); an invalid one is answered with the
//! [`crate::ws::HandshakeError`]'s status and headers (400 or 426) and the connection stays an
//! HTTP connection. A valid one goes to [`Handler::upgrade`]: `Some` writes the
//! `101 Switching Protocols`, flushes it (with every response before it) and turns the same
//! connection, with the bytes already read after the head, into a WebSocket served by the
//! handler's [`WsSession`] ([`Accepted::new`]), or hands it off ([`Accepted::handoff`], below);
//! `None` hands the request to [`Handler::handle`] like any other.
//! Handlers that do not override `wants_upgrade` (the default) see upgrade requests in
//! `handle`, as before WebSocket support existed. The WebSocket loop is described in the docs
//! of the `websocket` submodule, summarised on [`WsSession`] and [`WsSender`].
//!
//! # Handing a WebSocket to another executor
//!
//! A connection is accepted on whichever executor's listener the kernel picked, but the
//! application state a WebSocket talks to may live on another executor (in Pinion: the actor
//! lives on its owning shard). Served where it was accepted, every message and every reply
//! would cross executors, and a cross-executor wake costs 20–45 µs on the machines we measured,
//! more than serving the message itself. A WebSocket is long-lived, so it pays to move it once,
//! at upgrade time, to the executor that owns its state, and from then on serve it there with
//! no hop at all.
//!
//! [`Accepted::handoff`] does that: the loop writes and flushes the 101, takes the bytes it has
//! already read after the upgrade request (frames the client sent without waiting for the 101),
//! calls [`Transport::detach`] (which waits until no operation on the socket is in flight and
//! returns the socket with the bytes the transport received and nobody read), prepends the
//! former to the latter, gives the resulting [`Detached`] to the closure and returns. The
//! closure sends it wherever it must go (it is `Send`); there the socket is adopted
//! ([`crate::uring::Driver::adopt`], or glommio's `TcpStream::from_raw_fd`) and served with
//! [`serve_websocket`], starting with [`Detached::received`]. No byte is lost or reordered on
//! the way: everything the peer sent is either in `received` or still in the kernel's socket
//! buffer. If the 101 cannot be written or the detach fails, the closure gets the error and the
//! connection is closed.
//!
//! # Handler shape
//!
//! [`Handler::handle`] returns `impl Future` so implementations can be plain `async fn`s. In
//! edition 2024 the returned future captures every lifetime in the signature, so it may hold
//! `req`, `body`, `res` and `self` across awaits; glommio is single-threaded, so no `Send` bound
//! is required.

use std::future::Future;
use std::io;
use std::mem;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use glommio::net::TcpStream;

use crate::http::{
    BodyKind, CHUNK_LINE_BYTES_MAX, CONTINUE_RESPONSE, ChunkedDecoder, Dechunked, Error, Header,
    Limits, Progress, Request, Response, find_head_end, parse_head, reason_phrase, recycle_headers,
};
use crate::ws;

mod websocket;

use websocket::Then;
pub use websocket::{
    Accepted, CLOSE_OUTBOUND_FULL, SendError, WsClose, WsLimits, WsMessage, WsSender, WsSession,
    encode_binary_frame, encode_text_frame,
};

/// The size a connection's read buffer starts with (and shrinks back to): large enough for a
/// typical request head and small JSON body in a single read.
pub const READ_BUF_INITIAL: usize = 8 * 1024;

/// The least free space the read buffer offers to a `read`; below it the buffer is compacted or
/// grown first, so reads are never uselessly small.
pub const READ_SPACE_MIN: usize = 4 * 1024;

/// The output buffer is written out as soon as it holds more than this many bytes, even if more
/// pipelined requests are buffered, so a peer cannot make the server accumulate responses.
pub const OUT_FLUSH_BYTES_MAX: usize = 64 * 1024;

/// The initial capacity of a connection's output buffer.
pub const OUT_BUF_INITIAL: usize = 8 * 1024;

/// After a flush, an output buffer whose capacity grew beyond this is shrunk back to
/// [`OUT_BUF_INITIAL`], so one large response does not pin memory for the connection's lifetime.
pub const OUT_RETAIN_BYTES_MAX: usize = 256 * 1024;

/// When the server closes a connection, it discards at most this many further bytes from the
/// peer while waiting for the peer to close (see the module docs).
pub const LINGER_BYTES_MAX: usize = 256 * 1024;

/// When the server closes a connection, it waits at most this long for the peer to close.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// Application logic behind the connection loop.
pub trait Handler {
    /// Handles one complete request. `body` is the fully received, de-chunked body, borrowed
    /// mutably from the connection's buffer so the handler can parse JSON in place (simd-json).
    /// The handler answers through `res`; if it returns without sending, the loop answers 500.
    fn handle(
        &self,
        req: &Request<'_>,
        body: &mut [u8],
        res: &mut Response<'_>,
    ) -> impl Future<Output = ()>;

    /// Whether this handler serves WebSocket for `req`, a request whose `Upgrade` field lists
    /// `websocket` (e.g. by path). When it does, the handshake is validated and an invalid one
    /// is answered 400/426 by the loop; a valid one goes to [`Handler::upgrade`]. When it does
    /// not (the default), the request goes to [`Handler::handle`] like any other.
    ///
    /// This is separate from `upgrade` because the loop must know whether to validate (and
    /// answer a broken handshake itself) before it may call `upgrade`, which only ever sees
    /// valid handshakes.
    fn wants_upgrade(&self, req: &Request<'_>) -> bool {
        let _ = req;
        false
    }

    /// Called for a request that asks to upgrade to WebSocket (a GET with
    /// `Upgrade: websocket`) after the handshake headers validated, when
    /// [`Handler::wants_upgrade`] returned true for it. `protocols` are the subprotocols the
    /// client offers, in its order of preference. Return `Some` to accept: the loop writes the
    /// 101 (selecting [`Accepted::protocol`] if the client offered it, no subprotocol
    /// otherwise) and then either serves the connection as a WebSocket with the session given
    /// to [`Accepted::new`], or detaches it and gives it to the closure given to
    /// [`Accepted::handoff`], to be served on another executor. `None` answers the request with
    /// [`Handler::handle`] as a normal HTTP request (default: None).
    fn upgrade(
        &self,
        req: &Request<'_>,
        protocols: ws::Protocols<'_>,
    ) -> impl Future<Output = Option<Accepted>> {
        let _ = (req, protocols);
        async { None }
    }
}

/// A byte stream the serve loop can run on: glommio's `TcpStream`, or a stream of our own
/// io_uring driver ([`crate::uring::UringStream`]).
///
/// Callers should set `TCP_NODELAY` on TCP streams: responses are already batched per read and
/// Nagle's algorithm would only add latency (notably after an interim `100 Continue`).
pub trait Transport {
    /// Reads at most `buf.len()` bytes; 0 means end of stream.
    fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>>;
    /// Writes all of `buf`.
    fn write_all(&mut self, buf: &[u8]) -> impl Future<Output = io::Result<()>>;
    /// Shuts down the write side.
    fn shutdown_write(&mut self) -> impl Future<Output = io::Result<()>>;
    /// Bounds how long one read may wait.
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
    /// Gives up the connection without closing it, once every operation in flight on it has
    /// finished: returns the socket and the bytes the transport received on it that were not
    /// read yet, in order, so that another transport (typically on another executor) can go on
    /// with it. See [`Detached`].
    fn detach(self) -> impl Future<Output = io::Result<Detached>>
    where
        Self: Sized;
}

/// A connection taken out of the serve loop: the socket and the bytes received on it that nobody
/// has read yet (in order).
///
/// It is `Send`: the point is to move the connection to another executor, which adopts the
/// socket ([`crate::uring::Driver::adopt`], or glommio's `TcpStream::from_raw_fd`) and goes on,
/// for an upgraded WebSocket with [`serve_websocket`], passing `received` along. Dropping it
/// closes the connection (the peer sees the TCP connection end).
#[derive(Debug)]
pub struct Detached {
    /// The connected socket, with its options (`TCP_NODELAY`) as they were.
    pub fd: OwnedFd,
    /// Bytes received on the socket and not read yet, which come before anything the socket
    /// receives from now on.
    pub received: Vec<u8>,
}

impl Transport for TcpStream {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        AsyncReadExt::read(self, buf).await
    }
    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        AsyncWriteExt::write_all(self, buf).await
    }
    async fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
            .await
            .map_err(io::Error::from)
    }
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout).map_err(io::Error::from)
    }
    /// Duplicates the descriptor (close-on-exec) and drops glommio's stream, which closes its
    /// own descriptor only; the socket lives on in the duplicate. `received` is always empty:
    /// an unbuffered glommio stream reads straight from the socket (readiness based), so it has
    /// nothing received and unread. Glommio has no operation in flight that could take data:
    /// at most a readiness poll, which the drop cancels.
    async fn detach(self) -> io::Result<Detached> {
        // SAFETY: the descriptor is open for as long as `self` lives, and the borrow ends within
        // this statement, before `self` is dropped.
        let fd = unsafe { BorrowedFd::borrow_raw(self.as_raw_fd()) }.try_clone_to_owned()?;
        drop(self);
        Ok(Detached {
            fd,
            received: Vec::new(),
        })
    }
}

impl Transport for crate::uring::UringStream {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::uring::UringStream::read(self, buf).await
    }
    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        crate::uring::UringStream::write_all(self, buf).await
    }
    async fn shutdown_write(&mut self) -> io::Result<()> {
        crate::uring::UringStream::shutdown_write(self)
    }
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        crate::uring::UringStream::set_read_timeout(self, timeout);
        Ok(())
    }
    async fn detach(self) -> io::Result<Detached> {
        crate::uring::UringStream::detach(self).await
    }
}

/// Serves one connection until the peer closes, a protocol error, or the handler asks to close.
/// See the module docs for the flow, the flushing policy and what is returned when.
/// WebSocket connections get [`WsLimits::default`]; see [`serve_with`].
pub async fn serve<T: Transport, H: Handler>(
    stream: T,
    handler: &H,
    limits: &Limits,
) -> io::Result<()> {
    serve_with(stream, handler, limits, &WsLimits::default()).await
}

/// [`serve`] with explicit limits for the connection's WebSocket mode, if it is upgraded.
/// Once upgraded, the connection is served as a WebSocket until it closes, and this returns
/// then (`Ok` for every ending that is not a socket error, as for HTTP).
///
/// An upgrade accepted with [`Accepted::handoff`] ends the loop instead: the 101 is written,
/// the connection detached ([`Transport::detach`]) and given to the handoff closure, and this
/// returns `Ok(())`, also when writing or detaching failed (the closure gets that error).
pub async fn serve_with<T: Transport, H: Handler>(
    stream: T,
    handler: &H,
    limits: &Limits,
    ws_limits: &WsLimits,
) -> io::Result<()> {
    let mut conn = Conn {
        stream,
        rb: ReadBuf::new(limits),
        out: Vec::with_capacity(OUT_BUF_INITIAL),
    };
    let mut headers: Vec<Header<'static>> = Vec::new();
    loop {
        match conn.next_request(handler, limits, &mut headers).await? {
            Next::KeepAlive => {}
            Next::Close => return conn.close().await,
            Next::PeerClosed => return Ok(()),
            Next::Upgrade(session) => return websocket::run(conn, session, ws_limits).await,
            Next::Handoff(handoff) => {
                handoff(conn.detach().await);
                return Ok(());
            }
        }
    }
}

/// Serves a connection that was upgraded to WebSocket elsewhere (the 101 is already written),
/// typically one that another executor's serve loop handed off with [`Accepted::handoff`] and
/// this executor adopted from the [`Detached`]. `received` are the bytes received on it and not
/// read yet ([`Detached::received`]): the first frames, which are decoded before anything is
/// read from `stream`.
///
/// The connection is served exactly as [`serve_with`] serves one it upgraded itself (see the
/// `websocket` submodule's docs): `session` gets `on_open` at once, the read timeout is switched
/// off, and this returns when the connection has closed. Socket options (`TCP_NODELAY`) are
/// whatever the socket already has.
///
/// With our io_uring driver the received bytes may go either here or to
/// [`crate::uring::Driver::adopt`] (which queues them in the stream); give them to one of the
/// two, not both. Here they cost no copy and have no bound beyond memory.
pub async fn serve_websocket<T: Transport>(
    stream: T,
    received: Vec<u8>,
    session: Box<dyn WsSession>,
    limits: &WsLimits,
) -> io::Result<()> {
    let conn = Conn {
        stream,
        rb: ReadBuf::with_data(received),
        out: Vec::with_capacity(OUT_BUF_INITIAL),
    };
    websocket::run(conn, session, limits).await
}

/// What the loop does after one request.
enum Next {
    /// Wait for the next request on this connection.
    KeepAlive,
    /// Flush, shut down and linger: the server ends the connection.
    Close,
    /// The peer closed (between requests or mid-request); nothing more can be written usefully.
    PeerClosed,
    /// The 101 is in the output buffer and the request consumed: serve a WebSocket.
    Upgrade(Box<dyn WsSession>),
    /// The 101 is in the output buffer and the request consumed: write it, detach the
    /// connection and give it to the closure.
    Handoff(Box<dyn FnOnce(io::Result<Detached>)>),
}

/// What [`dispatch`] did with a request.
enum Dispatched {
    /// A response was written; `close` says whether the connection must close after it.
    Http { close: bool },
    /// The handler accepted a WebSocket upgrade and the 101 was written.
    Upgrade(Box<dyn WsSession>),
    /// The handler accepted a WebSocket upgrade to be served elsewhere and the 101 was written.
    Handoff(Box<dyn FnOnce(io::Result<Detached>)>),
}

/// Where phase 2 left a request.
enum Step {
    /// The request was invalid; answer with this error and close.
    Reject(Error),
    /// The handler ran. `region_len` is the new length of everything after the head (decoded
    /// body plus pipelined bytes), `body_len` the length of the body within it.
    Done {
        outcome: Dispatched,
        body_len: usize,
        region_len: usize,
    },
    /// The head is valid but the body is still arriving.
    Slow(Pending),
}

/// Whether the body of a just-parsed request is already in the buffer.
enum BodyState {
    /// The body is complete: `body_len` bytes after the head, and `region_len` bytes in all
    /// after the head (body plus pipelined bytes; smaller than before for de-chunked bodies).
    Ready { body_len: usize, region_len: usize },
    /// The body is still arriving; for chunked bodies, the decoder and the buffer length it left.
    Pending(Option<(ChunkedDecoder, usize)>),
    /// The chunked framing is invalid.
    Invalid(Error),
}

/// A request whose head is valid and whose body is still arriving.
struct Pending {
    head_len: usize,
    body: BodyKind,
    expect_continue: bool,
    /// The chunked decoder with the progress made so far and the unconsumed length it left.
    decoder: Option<(ChunkedDecoder, usize)>,
}

/// What one read produced.
enum Fill {
    /// Some bytes arrived.
    Read,
    /// The peer closed its write side.
    Eof,
    /// The buffer is at its cap and full, so the current request cannot fit.
    Full,
}

/// One connection's socket and reusable buffers.
struct Conn<T> {
    stream: T,
    rb: ReadBuf,
    out: Vec<u8>,
}

impl<T: Transport> Conn<T> {
    /// Reads, parses and answers one request (reading only if the buffer does not already hold
    /// it), and says how to go on.
    async fn next_request<H: Handler>(
        &mut self,
        handler: &H,
        limits: &Limits,
        store: &mut Vec<Header<'static>>,
    ) -> io::Result<Next> {
        // Phase 1: a complete head in the buffer.
        let mut scanned: usize = 0;
        let mut validated: usize = 0;
        let head_len = loop {
            let data = self.rb.data();
            if let Some(end) = find_head_end(data, scanned) {
                break end;
            }
            scanned = data.len().saturating_sub(3);
            if !data.is_empty()
                && (data.len() >= validated.saturating_mul(2)
                    || data.len() > limits.header_bytes_max)
            {
                validated = data.len();
                let mut headers = recycle_headers(mem::take(store));
                let checked = match parse_head(data, &mut headers, limits) {
                    Ok(Progress::Complete(head)) => Ok(Some(head.len)),
                    Ok(Progress::Partial) => Ok(None),
                    Err(error) => Err(error),
                };
                *store = recycle_headers(headers);
                match checked {
                    Err(error) => return Ok(self.reject(error)),
                    // Unreachable in practice (find_head_end would have seen it); phase 2
                    // validates again, so following the parser is safe.
                    Ok(Some(len)) => break len,
                    Ok(None) => {}
                }
            }
            let mid_request = !data.is_empty();
            match self.fill(0).await? {
                Fill::Read => {}
                Fill::Eof if mid_request => {
                    tracing::debug!("peer closed mid-request");
                    return Ok(Next::PeerClosed);
                }
                Fill::Eof => return Ok(Next::PeerClosed),
                Fill::Full => return Ok(self.reject(Error::HeaderFieldsTooLarge)),
            }
        };

        // Phase 2: parse the head; dispatch at once when the body is already here.
        let mut headers = recycle_headers(mem::take(store));
        let (head_bytes, rest) = self.rb.data_mut().split_at_mut(head_len);
        let rest_len = rest.len();
        let parsed = parse_head(head_bytes, &mut headers, limits);
        let step = match parsed {
            Err(error) => Step::Reject(error),
            // Impossible for bytes that end with the head's CRLF CRLF; still answered safely.
            Ok(Progress::Partial) => Step::Reject(Error::BadRequest),
            Ok(Progress::Complete(head)) => {
                let body = match head.body {
                    BodyKind::None => BodyState::Ready {
                        body_len: 0,
                        region_len: rest_len,
                    },
                    BodyKind::Length(n) if rest_len >= n => BodyState::Ready {
                        body_len: n,
                        region_len: rest_len,
                    },
                    BodyKind::Length(_) => BodyState::Pending(None),
                    BodyKind::Chunked => {
                        let mut decoder = ChunkedDecoder::new(limits);
                        match decoder.decode(rest) {
                            Err(error) => BodyState::Invalid(error),
                            Ok(Dechunked::Complete { body_len, len }) => BodyState::Ready {
                                body_len,
                                region_len: len,
                            },
                            Ok(Dechunked::Partial { len }) => {
                                BodyState::Pending(Some((decoder, head_len + len)))
                            }
                        }
                    }
                };
                match body {
                    BodyState::Invalid(error) => Step::Reject(error),
                    BodyState::Ready {
                        body_len,
                        region_len,
                    } => {
                        let outcome =
                            dispatch(handler, &head.request, &mut rest[..body_len], &mut self.out)
                                .await;
                        Step::Done {
                            outcome,
                            body_len,
                            region_len,
                        }
                    }
                    BodyState::Pending(decoder) => Step::Slow(Pending {
                        head_len,
                        body: head.body,
                        expect_continue: head.expect_continue,
                        decoder,
                    }),
                }
            }
        };
        *store = recycle_headers(headers);
        match step {
            Step::Reject(error) => Ok(self.reject(error)),
            Step::Done {
                outcome,
                body_len,
                region_len,
            } => {
                // For chunked bodies the region was compacted, so the data now ends earlier and
                // the next request starts right after the decoded body; for the others this
                // changes nothing.
                self.rb.set_len(head_len + region_len);
                self.rb.consume(head_len + body_len);
                self.after_response(outcome).await
            }
            Step::Slow(pending) => {
                if let Some((_, len)) = pending.decoder {
                    self.rb.set_len(len);
                }
                self.finish_slow(handler, limits, store, pending).await
            }
        }
    }

    /// Phase 3: the head is valid but the body has not fully arrived. Answers
    /// `Expect: 100-continue`, reads (and de-chunks) the rest of the body, parses the head again
    /// and dispatches.
    async fn finish_slow<H: Handler>(
        &mut self,
        handler: &H,
        limits: &Limits,
        store: &mut Vec<Header<'static>>,
        pending: Pending,
    ) -> io::Result<Next> {
        let head_len = pending.head_len;
        if pending.expect_continue {
            self.out.extend_from_slice(CONTINUE_RESPONSE);
        }
        let body_len = match pending.body {
            BodyKind::None => 0,
            BodyKind::Length(n) => {
                let want = head_len + n;
                while self.rb.len() < want {
                    match self.fill(want).await? {
                        Fill::Read => {}
                        Fill::Eof => return Ok(Next::PeerClosed),
                        Fill::Full => return Ok(self.reject(Error::ContentTooLarge)),
                    }
                }
                n
            }
            BodyKind::Chunked => {
                let mut decoder = match pending.decoder {
                    Some((decoder, _)) => decoder,
                    None => ChunkedDecoder::new(limits),
                };
                loop {
                    match self.fill(0).await? {
                        Fill::Read => {}
                        Fill::Eof => return Ok(Next::PeerClosed),
                        Fill::Full => return Ok(self.reject(Error::ContentTooLarge)),
                    }
                    let Some(region) = self.rb.data_mut().get_mut(head_len..) else {
                        return Ok(self.reject(Error::BadRequest));
                    };
                    match decoder.decode(region) {
                        Err(error) => return Ok(self.reject(error)),
                        Ok(Dechunked::Partial { len }) => self.rb.set_len(head_len + len),
                        Ok(Dechunked::Complete { body_len, len }) => {
                            self.rb.set_len(head_len + len);
                            break body_len;
                        }
                    }
                }
            }
        };

        let mut headers = recycle_headers(mem::take(store));
        let (head_bytes, rest) = self.rb.data_mut().split_at_mut(head_len);
        let parsed = parse_head(head_bytes, &mut headers, limits);
        let outcome = match parsed {
            Ok(Progress::Complete(head)) => match rest.get_mut(..body_len) {
                Some(body) => Some(dispatch(handler, &head.request, body, &mut self.out).await),
                None => None,
            },
            // The same bytes parsed before; failing now would be a bug, answered without panic.
            _ => None,
        };
        *store = recycle_headers(headers);
        match outcome {
            Some(outcome) => {
                self.rb.consume(head_len + body_len);
                self.after_response(outcome).await
            }
            None => Ok(self.reject(Error::BadRequest)),
        }
    }

    /// Decides how to continue after a response was appended, flushing early if a lot of output
    /// is pending.
    async fn after_response(&mut self, outcome: Dispatched) -> io::Result<Next> {
        let close = match outcome {
            Dispatched::Http { close } => close,
            Dispatched::Upgrade(session) => return Ok(Next::Upgrade(session)),
            Dispatched::Handoff(handoff) => return Ok(Next::Handoff(handoff)),
        };
        if close {
            return Ok(Next::Close);
        }
        if self.out.len() > OUT_FLUSH_BYTES_MAX {
            self.flush().await?;
        }
        Ok(Next::KeepAlive)
    }

    /// Appends the error response for `error` and tells the loop to close.
    fn reject(&mut self, error: Error) -> Next {
        let status = error.status();
        tracing::debug!(status, %error, "rejecting request");
        let mut res = Response::detached(&mut self.out, true);
        res.send(
            status,
            &[("content-type", b"text/plain")],
            reason_phrase(status).as_bytes(),
        );
        Next::Close
    }

    /// Flushes pending output (the peer may be waiting for it), then reads once.
    async fn fill(&mut self, want: usize) -> io::Result<Fill> {
        self.flush().await?;
        self.rb.fill(&mut self.stream, want).await
    }

    /// Writes all pending output.
    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
            if self.out.capacity() > OUT_RETAIN_BYTES_MAX {
                self.out.shrink_to(OUT_BUF_INITIAL);
            }
        }
        Ok(())
    }

    /// Takes the connection out of the loop after an upgrade accepted with
    /// [`Accepted::handoff`]: writes the 101 (and any responses before it), then detaches the
    /// stream. The bytes already read after the upgrade request (frames the client sent right
    /// behind it) come first in `received`, before those the transport still held.
    async fn detach(mut self) -> io::Result<Detached> {
        self.flush().await?;
        let mut unread = self.rb.data().to_vec();
        let mut detached = self.stream.detach().await?;
        if !unread.is_empty() {
            unread.append(&mut detached.received);
            detached.received = unread;
        }
        Ok(detached)
    }

    /// Ends the connection from the server side: flush, shut down writing, then drain what the
    /// peer still sends (bounded in bytes and time) so the close does not turn into a RST.
    async fn close(mut self) -> io::Result<()> {
        self.flush().await?;
        if let Err(error) = self.stream.shutdown_write().await {
            tracing::debug!(%error, "shutdown failed");
            return Ok(());
        }
        if self.stream.set_read_timeout(Some(LINGER_TIMEOUT)).is_err() {
            return Ok(());
        }
        let mut drained = 0;
        let scratch = self.rb.scratch();
        while drained <= LINGER_BYTES_MAX {
            match self.stream.read(scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
        Ok(())
    }
}

/// Runs the handler for one request and makes sure exactly one response was written (or, for an
/// accepted WebSocket upgrade, the 101); says whether the connection must close afterwards or
/// becomes a WebSocket.
async fn dispatch<H: Handler>(
    handler: &H,
    req: &Request<'_>,
    body: &mut [u8],
    out: &mut Vec<u8>,
) -> Dispatched {
    if asks_websocket(req) && handler.wants_upgrade(req) {
        match ws::validate_upgrade(req) {
            Err(error) => {
                tracing::debug!(path = req.path, %error, "invalid WebSocket handshake");
                let mut res = Response::for_request(out, req);
                res.send(error.status(), error.headers(), error.reason().as_bytes());
                return Dispatched::Http {
                    close: res.will_close(),
                };
            }
            Ok(upgrade) => {
                if let Some(accepted) = handler.upgrade(req, upgrade.protocols()).await {
                    ws::write_accept(out, &upgrade, accepted.protocol());
                    return match accepted.into_then() {
                        Then::Serve(session) => Dispatched::Upgrade(session),
                        Then::Handoff(handoff) => Dispatched::Handoff(handoff),
                    };
                }
            }
        }
    }
    let mut res = Response::for_request(out, req);
    handler.handle(req, body, &mut res).await;
    if !res.is_sent() {
        tracing::warn!(
            path = req.path,
            "handler returned without a response; answering 500"
        );
        res.send(
            500,
            &[("content-type", b"text/plain")],
            b"Internal Server Error",
        );
    }
    Dispatched::Http {
        close: res.will_close(),
    }
}

/// Whether `req` asks to upgrade to WebSocket: some `Upgrade` field lists `websocket`
/// (a comma-separated, case-insensitive token list).
fn asks_websocket(req: &Request<'_>) -> bool {
    req.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"websocket"))
}

/// A connection's read buffer: `buf[start..end]` holds received bytes not yet consumed.
struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The largest `buf.len()` this connection may reach.
    cap: usize,
}

impl ReadBuf {
    /// A buffer that starts with `data` as its unconsumed bytes (at least [`READ_BUF_INITIAL`]
    /// long, reusing `data`'s allocation). The cap is what it needs to hold `data`; the caller
    /// sets the real one ([`ReadBuf::set_cap`]).
    fn with_data(mut data: Vec<u8>) -> ReadBuf {
        let end = data.len();
        data.resize(end.max(READ_BUF_INITIAL), 0);
        ReadBuf {
            cap: data.len(),
            buf: data,
            start: 0,
            end,
        }
    }

    fn new(limits: &Limits) -> ReadBuf {
        let cap = limits
            .header_bytes_max
            .saturating_add(limits.body_bytes_max)
            .saturating_add(CHUNK_LINE_BYTES_MAX)
            .saturating_add(limits.header_bytes_max) // the chunked trailer section
            .saturating_add(READ_SPACE_MIN);
        ReadBuf {
            buf: vec![0; READ_BUF_INITIAL],
            start: 0,
            end: 0,
            cap: cap.max(READ_BUF_INITIAL),
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    /// Shortens the unconsumed data to `len` bytes (after in-place chunked decoding).
    fn set_len(&mut self, len: usize) {
        self.end = self.start + len.min(self.len());
    }

    /// Marks the first `n` unconsumed bytes as consumed; when nothing is left the buffer
    /// rewinds (and shrinks back if a large request made it grow).
    fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > READ_BUF_INITIAL {
                self.buf.truncate(READ_BUF_INITIAL);
                self.buf.shrink_to_fit();
            }
        }
    }

    /// Sets the largest size the buffer may grow to (the WebSocket mode bounds it by the frame
    /// limit instead of the HTTP limits). Data already buffered is kept.
    fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(READ_BUF_INITIAL);
    }

    /// The whole buffer as scratch space, for discarding input while lingering.
    fn scratch(&mut self) -> &mut [u8] {
        self.start = 0;
        self.end = 0;
        &mut self.buf
    }

    /// Reads once into the free space, first making room: compacting when the free space is
    /// below [`READ_SPACE_MIN`] or `want` (a total unconsumed length the caller needs, 0 if
    /// unknown) would not fit, then growing (doubling, at least to `want`) up to the cap.
    async fn fill<T: Transport>(&mut self, stream: &mut T, want: usize) -> io::Result<Fill> {
        let len = self.len();
        let want = want.max(len + READ_SPACE_MIN).min(self.cap);
        if self.start > 0
            && (self.buf.len() - self.end < READ_SPACE_MIN || self.buf.len() - self.start < want)
        {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = len;
        }
        if self.buf.len() - self.start < want {
            let grown = self
                .buf
                .len()
                .saturating_mul(2)
                .max(self.start + want)
                .min(self.cap);
            if grown > self.buf.len() {
                self.buf.resize(grown, 0);
            }
        }
        let Some(space) = self.buf.get_mut(self.end..).filter(|s| !s.is_empty()) else {
            return Ok(Fill::Full);
        };
        let n = stream.read(space).await?;
        if n == 0 {
            return Ok(Fill::Eof);
        }
        self.end += n;
        Ok(Fill::Read)
    }
}
