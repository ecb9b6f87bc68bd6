//! `pinion-net`: Pinion's own network protocol stack.
//!
//! * [`http`]: an incremental, zero-copy HTTP/1.1 request parser with a named limit on every size,
//!   chunked body decoding, and a response writer that appends to a per-connection buffer.
//! * [`server`]: the per-connection loop (keep-alive, pipelining answered in order,
//!   `Expect: 100-continue`, protocol errors answered with 400/413/414/431 and a clean close), and
//!   after an accepted upgrade the WebSocket loop that feeds a [`server::WsSession`] and writes
//!   what its [`server::WsSender`] queues. Runs over any [`server::Transport`]. An upgraded
//!   connection can instead be detached and handed to another executor, which serves it with
//!   [`server::serve_websocket`] (see the `server` module docs).
//! * [`ws`]: the WebSocket (RFC 6455) codec: handshake validation and the 101 response, an
//!   incremental zero-copy frame parser, message reassembly with UTF-8 checks, and frame writers.
//! * [`uring`]: our own TCP driver on a per-shard io_uring (the default transport).
//! * [`listener`]: SO_REUSEPORT listeners, one per shard, on the same address.
//!
//! Architecture invariant: this crate knows nothing of actors, shards or RivetKit. It hands parsed
//! requests to a [`server::Handler`] and writes what the handler produced.

pub mod http;
pub mod listener;
pub mod server;
pub mod uring;
pub mod ws;
