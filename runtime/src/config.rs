//! Server configuration and the protocol-level limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

/// How a server runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address every shard listens on (SO_REUSEPORT). Port 0 picks a free port, shared by all
    /// shards.
    pub listen: SocketAddr,
    /// Number of shards; `None` = one per CPU the process may run on (its affinity mask, so
    /// `taskset -c 1 pinion-demo` runs one shard on CPU 1).
    pub shards: Option<usize>,
    /// Prefix of every route (RIVETKIT_PROTOCOL.md §1), e.g. `/api/rivet`; `/` for none.
    pub base_path: String,
    /// Where shards keep their files (`shard-<i>-of-<n>/`, see `pinion-storage`). `None`: actor
    /// data lives in memory only and is lost when the process ends.
    pub data_dir: Option<PathBuf>,
    /// Limits of the HTTP/1.1 layer.
    pub http: pinion_net::http::Limits,
    /// A connection on which a read waits longer than this (idle keep-alive, or a peer that stops
    /// sending mid-request) is closed, so idle and stalled peers cannot pin sockets forever.
    pub read_timeout: Duration,
    /// Which socket layer the shards use.
    pub net_driver: NetDriver,
    /// How long an idle shard keeps polling for work before it parks (sleeps in the kernel).
    /// Waking a parked core costs tens of microseconds on virtual machines (an interrupt to an
    /// idle vCPU), which dominates a round trip at low load; polling a little first keeps a
    /// request that arrives soon after the last one off that path, at the cost of up to this
    /// much CPU after each burst of work. Zero parks at once.
    pub spin_before_park: Duration,
    /// How often the server pings each WebSocket (RivetKit connections and raw sockets). A
    /// socket from which nothing (no message, no pong) arrived for a whole interval after a
    /// ping is closed with 1011 `heartbeat_timeout`: a peer that vanished without closing
    /// (a dead host, a dropped NAT mapping) is noticed within two intervals instead of holding
    /// its connection, and receiving events, forever. RivetKit 2.0 sends no pings of its own;
    /// every WebSocket client answers them. `None` disables the heartbeat.
    pub ws_heartbeat: Option<Duration>,
    /// How long a stop ([`crate::Server::stop`], SIGTERM for `pinion-demo`) waits for what is
    /// in flight once the listeners are closed: WebSockets closing (each is sent a 1001 close
    /// first) and HTTP requests being handled (their responses say `connection: close`; idle
    /// keep-alive connections end without waiting). Whatever is still open after this long is
    /// ended. Every changed actor is saved after that. See `Server::stop`.
    pub stop_grace: Duration,
    /// How long an actor may stay idle before it sleeps, for actor types that do not set
    /// their own ([`crate::actor::ActorOptions::sleep_timeout`]). RivetKit's default: 30 s.
    pub sleep_timeout: Duration,
    /// How long a state change may wait before it is written, for actor types that do not set
    /// their own ([`crate::actor::ActorOptions::save_interval`]). RivetKit's default: 10 s.
    pub save_interval: Duration,
    /// Options of the durable store (`--data-dir`).
    pub store: pinion_storage::Options,
    /// Limits of the RivetKit protocol layer.
    pub limits: Limits,
    /// Runs on each shard's thread once its store is open (recovery done), before the shard
    /// serves. `pinion-demo` uses it to hand the memory recovery freed back to the OS at once
    /// (its allocator, mimalloc, would otherwise keep it until that thread allocates again).
    pub after_store_open: Option<fn()>,
    /// Wraps each shard's store once it is open, before the shard serves: the storage seam for
    /// fault injection, tracing and tests (a test holds saves back to check that no durable
    /// reply leaves before its write). The wrapper must keep the [`pinion_storage::Store`]
    /// contract: writes applied in call order, `durable` only once they are on disk.
    pub wrap_store: Option<WrapStore>,
}

/// See [`Config::wrap_store`].
pub type WrapStore = fn(Rc<dyn pinion_storage::Store>) -> Rc<dyn pinion_storage::Store>;

/// The socket layer under the HTTP stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetDriver {
    /// Our own io_uring per shard (`pinion_net::uring`): multishot receive, batched sends.
    /// Falls back to [`NetDriver::Glommio`] with a warning where the kernel lacks it (< 6.1).
    Uring,
    /// glommio's `TcpStream`.
    Glommio,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 6420)),
            shards: None,
            base_path: "/".into(),
            data_dir: None,
            http: pinion_net::http::Limits::default(),
            read_timeout: Duration::from_secs(60),
            net_driver: NetDriver::Uring,
            spin_before_park: Duration::from_micros(100),
            ws_heartbeat: Some(Duration::from_secs(30)),
            stop_grace: Duration::from_secs(5),
            sleep_timeout: Duration::from_secs(30),
            save_interval: Duration::from_secs(10),
            store: pinion_storage::Options::default(),
            limits: Limits::default(),
            after_store_open: None,
            wrap_store: None,
        }
    }
}

/// Limits of the RivetKit protocol layer. Each violation has its protocol error.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest action request body (`{"args":[...]}`); larger → `400 message/incoming_too_long`.
    /// RivetKit's default is 64 KiB.
    pub action_body_bytes_max: usize,
    /// Largest encoded action output; larger → `400 message/outgoing_too_long`. RivetKit: 1 MiB.
    pub action_output_bytes_max: usize,
    /// Largest manager API body (`PUT/POST /actors`, which carries the creation input).
    pub manager_body_bytes_max: usize,
    /// Calls a shard may have forwarded to other shards and not yet had answered; more →
    /// `503 actor/overloaded`. Also bounds every inbox (see `mailbox`).
    pub forwarded_calls_max: usize,
    /// Ids accepted in one `GET /actors?actor_ids=` (the reference accepts 32).
    pub actor_ids_max: usize,
    /// Asynchronous actions one connection may have running; more get `actor/overloaded`
    /// (synchronous actions complete before the next message is read and need no bound).
    pub conn_actions_in_flight_max: usize,
    /// Events one connection may subscribe to; more close it with 1011.
    pub conn_subscriptions_max: usize,
    /// Asynchronous actions one actor may have running (from every connection, stateless call
    /// and actor-to-actor call together); more get `actor/overloaded` at once instead of
    /// queueing without bound.
    pub actor_pending_max: usize,
    /// The deadline of an action call (RivetKit's `actionTimeout`, 60 s): a stateless call or a
    /// call from another actor whose action has not answered by then fails with
    /// `action/timed_out`; the action is cancelled at its next await and a late reply dropped.
    pub action_timeout: Duration,
    /// Scheduled actions one shard runs at once; more due schedules wait their turn.
    pub schedules_in_flight_max: usize,
    /// Fairness between the actors of a shard, per turn: once an actor's synchronous code
    /// (actions, hooks) ran longer than this in its turn, its next stateless or actor-to-actor
    /// call first lets the shard's other ready tasks run (it yields once), then starts a new
    /// turn. So a slow or flooded actor cannot make the calls of the other actors
    /// on its shard wait behind all of its own; alone on its shard it loses nothing but a
    /// yield per turn. Actions are never interrupted: one long synchronous action still holds
    /// the core for as long as it runs.
    pub actor_turn_budget: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            action_body_bytes_max: 64 * 1024,
            action_output_bytes_max: 1024 * 1024,
            manager_body_bytes_max: 256 * 1024,
            forwarded_calls_max: 16 * 1024,
            actor_ids_max: 32,
            conn_actions_in_flight_max: 4096,
            conn_subscriptions_max: 1024,
            actor_pending_max: 10_000,
            action_timeout: Duration::from_secs(60),
            schedules_in_flight_max: 1024,
            actor_turn_budget: Duration::from_micros(500),
        }
    }
}
