//! `pinion-runtime`: a thread-per-core, shared-nothing runtime for RivetKit actors.
//!
//! * [`Server`] starts one shard per core: a pinned glommio executor with its own SO_REUSEPORT
//!   listener, its own actors and its own store. Shards share nothing and talk through
//!   [`mailbox`] messages.
//! * [`placement`] maps (actor name, key) to an [`ActorId`] and an id to its owning shard.
//! * [`actor`] is the API for defining actors; [`Registry`] collects the types a server runs.
//! * `protocol` speaks the RivetKit 2.0 client protocol (JSON encoding) over `pinion-net`;
//!   `realtime` serves its connection WebSockets and [`conn`] holds an actor's connections.
//! * [`sys`] is the one seam for nondeterminism (clock, timers, spawning, randomness).

pub mod actor;
pub mod client;
pub mod config;
pub mod conn;
pub mod key;
mod lifecycle;
mod mailbox;
pub mod persist;
pub mod placement;
mod protocol;
mod realtime;
mod registry;
pub mod schedule;
mod server;
mod shard;
pub mod sys;
pub mod value;

pub use actor::{
    ActionCtx, ActionError, ActionResult, Actions, Actor, ActorInfo, ActorOptions, Ctx, FromArgs,
    RawRequest, RawResponse, Rest, Tracked, UserError,
};
pub use client::{ActorHandle, CallError, Client, join_all};
pub use config::{Config, Limits, NetDriver, WrapStore};
pub use conn::{Conn, ConnId, Conns};
pub use persist::{Persist, PersistError};
/// The raw WebSocket API for [`Actor::on_websocket`], from `pinion-net`.
pub use pinion_net::server::{WsClose, WsMessage, WsSender, WsSession};
pub use pinion_storage;
pub use placement::ActorId;
pub use protocol::RivetError;
pub use registry::Registry;
/// The rkyv version state snapshots are made with (derive its traits on actor states).
pub use rkyv;
pub use schedule::{Schedule, ScheduleId, Scheduled};
pub use server::{Server, block_shutdown_signals, wait_for_shutdown_signal};
pub use value::Value;
