//! WebSockets to actors (RIVETKIT_PROTOCOL.md §8, §10): RivetKit connections
//! (`/gateway/{id}/connect`, what `handle.connect()` opens) and raw WebSockets
//! (`/gateway/{id}/websocket/{path}`, served by the actor's `on_websocket`).
//!
//! # Placement
//!
//! A WebSocket is served on the shard that owns its actor. The kernel spreads connections over
//! the shards' SO_REUSEPORT listeners without knowing actors, so one that lands elsewhere is
//! **moved** at upgrade time: the accepting shard writes the 101, takes the socket out of its
//! loop together with any bytes already received ([`pinion_net::server::Detached`]) and mails
//! it to the owner, which adopts it into its own io_uring driver and serves it from then on.
//! That costs one cross-shard message per connection, instead of one per message in each
//! direction for as long as the connection lives (20–45 µs per hop when the other shard is
//! parked, on the machines we measured), and events reach subscribers with no hop at all.
//!
//! # A connection's life
//!
//! On the owning shard, [`RivetSession`] runs the connect hooks (`on_before_connect`,
//! `create_conn_state`, `on_connect`) when the socket opens and sends `Init`, or closes with
//! 1011 and the rejecting error's code (as the reference does). Each `ActionRequest` starts the
//! action right in the message callback: a synchronous action completes there and its response
//! is queued at once; an asynchronous one becomes a task that queues its response when done,
//! so many actions can be in flight on one connection and responses go out in completion
//! order. Events an action emits are queued on the socket when emitted, so they precede its
//! response. When the socket closes, `on_disconnect` runs and the connection (with its
//! subscriptions) leaves the actor.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::Duration;

use pinion_net::server::{WsClose, WsMessage, WsSender, WsSession};
use pinion_net::ws::CLOSE_MESSAGE_TOO_BIG;

use crate::actor::{ActorObject, CallArgs, Output, RawRequest, Started};
use crate::conn::ConnKey;
use crate::placement::ActorId;
use crate::protocol::{self, Pending, RivetError, failure_error, log_internal};
use crate::shard::Shard;
use crate::sys;
use crate::value::{self, ToServer, Value};

/// A connection keeps a response buffer up to this size between messages; a larger one (after
/// a large output) is dropped rather than pinned for the life of the connection.
const FRAME_RETAIN_BYTES_MAX: usize = 16 * 1024;

/// The close code for a rejected or failed RivetKit connection (spec §8.6, §8.7).
const CLOSE_INTERNAL: u16 = 1011;

/// Whether a WebSocket's peer is still there: see [`crate::Config::ws_heartbeat`].
pub(crate) struct Liveness {
    sender: WsSender,
    /// Something arrived since the last heartbeat tick.
    seen: Cell<bool>,
}

impl Liveness {
    fn seen(&self) {
        self.seen.set(true);
    }
}

/// Weak references to items owned elsewhere. A dropped item leaves the list when the list is
/// walked ([`WeakList::retain`]) or, on a push, once the list has doubled since it was last
/// pruned: its length stays within twice its live items (and [`WeakList::PRUNE_MIN`]) even if
/// nothing walks it, at an amortised O(1) per push.
struct WeakList<T> {
    items: Vec<Weak<T>>,
    /// The length after the last pruning.
    pruned_len: usize,
}

impl<T> Default for WeakList<T> {
    fn default() -> Self {
        WeakList {
            items: Vec::new(),
            pruned_len: 0,
        }
    }
}

impl<T> WeakList<T> {
    /// Below this length a push never prunes.
    const PRUNE_MIN: usize = 64;

    fn push(&mut self, item: &Rc<T>) {
        if self.items.len() >= 2 * self.pruned_len.max(Self::PRUNE_MIN) {
            self.items.retain(|weak| weak.strong_count() > 0);
            self.pruned_len = self.items.len();
        }
        self.items.push(Rc::downgrade(item));
    }

    /// Calls `keep` on every live item and keeps those it returns true for; dropped items leave.
    fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.items
            .retain(|weak| weak.upgrade().is_some_and(|item| keep(&item)));
        self.pruned_len = self.items.len();
    }

    /// Items not dropped yet.
    fn live(&self) -> usize {
        self.items
            .iter()
            .filter(|weak| weak.strong_count() > 0)
            .count()
    }
}

/// The WebSockets of one shard, for the heartbeat. Sessions hold their [`Liveness`]; the list
/// holds weak references, so a closed socket drops out at the next tick (or, with no heartbeat,
/// once the list has doubled).
#[derive(Default)]
pub(crate) struct Heartbeats {
    sockets: RefCell<WeakList<Liveness>>,
}

impl Heartbeats {
    fn watch(&self, sender: WsSender) -> Rc<Liveness> {
        let liveness = Rc::new(Liveness {
            sender,
            seen: Cell::new(true),
        });
        self.sockets.borrow_mut().push(&liveness);
        liveness
    }

    /// One tick: pings every socket that showed life since the last tick, closes the others.
    fn tick(&self) {
        self.sockets.borrow_mut().retain(|socket| {
            if !socket.sender.is_open() {
                return false;
            }
            if socket.seen.replace(false) {
                let _ = socket.sender.ping(b"");
                true
            } else {
                tracing::debug!("closing a WebSocket whose peer stopped answering");
                let _ = socket.sender.close(CLOSE_INTERNAL, "heartbeat_timeout");
                false
            }
        });
    }

    /// Closes every open WebSocket of the shard with `code` (after what is queued on it), for a
    /// stop: 1001, going away. Returns how many it closed.
    pub(crate) fn close_all(&self, code: u16, reason: &str) -> usize {
        let mut closed = 0;
        self.sockets.borrow_mut().retain(|socket| {
            if socket.sender.close(code, reason).is_ok() {
                closed += 1;
            }
            true
        });
        closed
    }

    /// WebSockets whose session still exists (open, or closing and not yet ended).
    pub(crate) fn live(&self) -> usize {
        self.sockets.borrow().live()
    }

    /// Ticks every `interval` until the shard stops.
    pub(crate) async fn run(shard: Rc<Shard>, interval: Duration) {
        loop {
            sys::sleep(interval).await;
            shard.heartbeats.tick();
        }
    }
}

/// A WebSocket upgrade to an actor, as the accepting shard parsed it; `Send`, so it can travel
/// to the owning shard with the socket.
#[derive(Debug)]
pub(crate) struct WsRequest {
    pub(crate) id: ActorId,
    pub(crate) kind: WsKind,
    /// The value of the `rivet_encoding.` subprotocol, if offered.
    pub(crate) encoding: Option<String>,
    /// The percent-decoded JSON of the `rivet_conn_params.` subprotocol, if offered.
    pub(crate) params: Option<String>,
}

#[derive(Debug)]
pub(crate) enum WsKind {
    /// `/gateway/{id}/connect`.
    Connect,
    /// `/gateway/{id}/websocket/{path}`: what the actor's `on_websocket` sees.
    Raw {
        path: String,
        query: String,
        headers: Vec<(String, Vec<u8>)>,
    },
}

/// Builds the session for `request` on the owning shard.
pub(crate) async fn open(shard: &Rc<Shard>, request: WsRequest) -> Box<dyn WsSession> {
    let actor = match shard.load(request.id).await {
        Ok(Some(actor)) => actor,
        Ok(None) => return reject(&RivetError::actor_not_found(&request.id.to_string())),
        Err(error) => return reject(&error),
    };
    let params = match parse_params(request.params.as_deref()) {
        Ok(params) => params,
        Err(error) => return reject(&error),
    };
    match request.kind {
        WsKind::Connect => {
            if let Some(encoding) = request.encoding.as_deref()
                && encoding != "json"
            {
                return reject(&RivetError::encoding_invalid());
            }
            Box::new(RivetSession {
                shard: shard.clone(),
                actor,
                params: Some(params),
                conn: None,
                sender: None,
                in_flight: Rc::new(Cell::new(0)),
                liveness: None,
                frame: Vec::new(),
            })
        }
        WsKind::Raw {
            path,
            query,
            headers,
        } => {
            let conn = match actor.clone().connect(params, None) {
                Ok((conn, _)) => conn,
                Err(error) => {
                    log_internal("connect", actor.info().name(), &error);
                    return reject(&RivetError::from_action(error));
                }
            };
            let headers: Vec<(&str, &[u8])> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect();
            let raw = RawRequest {
                method: "GET",
                path: &path,
                query: &query,
                headers: &headers,
                body: &[],
            };
            let opened = actor.clone().websocket(&raw, conn);
            let inner = match opened {
                Some(Ok(session)) => session,
                failed => {
                    let error = match failed {
                        Some(Err(error)) => {
                            log_internal("on_websocket", actor.info().name(), &error);
                            RivetError::from_action(error)
                        }
                        _ => RivetError::websocket_not_defined(),
                    };
                    actor.disconnect(conn);
                    return reject(&error);
                }
            };
            Box::new(RawSession {
                shard: shard.clone(),
                actor,
                conn,
                inner,
                liveness: None,
            })
        }
    }
}

/// Connection params as the client sent them (plain JSON); `null` when absent.
pub(crate) fn parse_params(text: Option<&str>) -> Result<Value, RivetError> {
    match text {
        None => Ok(Value::Null),
        Some(text) => {
            let mut bytes = text.as_bytes().to_vec();
            value::parse_tagged::<Value>(&mut bytes).map_err(|_| RivetError::params_invalid())
        }
    }
}

fn reject(error: &RivetError) -> Box<dyn WsSession> {
    Box::new(Rejected {
        reason: error.code.to_string(),
    })
}

/// A session that closes as soon as it opens: 1011 with the error's code as the reason, as the
/// reference does for a rejected connection.
struct Rejected {
    reason: String,
}

impl WsSession for Rejected {
    fn on_open(&mut self, sender: WsSender) {
        let _ = sender.close(CLOSE_INTERNAL, &self.reason);
    }
    fn on_message(&mut self, _: WsMessage<'_>) -> Result<(), WsClose> {
        Ok(())
    }
    fn on_close(&mut self, _: Option<u16>) {}
}

/// A raw WebSocket: the actor's session, plus the connection it holds in the actor.
struct RawSession {
    shard: Rc<Shard>,
    actor: Rc<dyn ActorObject>,
    conn: ConnKey,
    inner: Box<dyn WsSession>,
    liveness: Option<Rc<Liveness>>,
}

impl WsSession for RawSession {
    fn on_open(&mut self, sender: WsSender) {
        self.liveness = Some(self.shard.heartbeats.watch(sender.clone()));
        self.inner.on_open(sender)
    }
    fn on_message(&mut self, message: WsMessage<'_>) -> Result<(), WsClose> {
        if let Some(liveness) = &self.liveness {
            liveness.seen();
        }
        self.inner.on_message(message)
    }
    fn on_pong(&mut self, payload: &[u8]) {
        if let Some(liveness) = &self.liveness {
            liveness.seen();
        }
        self.inner.on_pong(payload)
    }
    fn on_close(&mut self, code: Option<u16>) {
        self.inner.on_close(code);
        self.actor.clone().disconnect(self.conn);
    }
}

/// A RivetKit connection (`handle.connect()`), JSON encoding.
struct RivetSession {
    shard: Rc<Shard>,
    actor: Rc<dyn ActorObject>,
    /// The params, until the connect hooks take them.
    params: Option<Value>,
    /// The connection in the actor, once accepted.
    conn: Option<ConnKey>,
    sender: Option<WsSender>,
    /// Asynchronous actions of this connection still running.
    in_flight: Rc<Cell<usize>>,
    liveness: Option<Rc<Liveness>>,
    /// Where synchronous actions' responses are built, reused across messages.
    frame: Vec<u8>,
}

impl WsSession for RivetSession {
    fn on_open(&mut self, sender: WsSender) {
        let params = self.params.take().unwrap_or(Value::Null);
        match self.actor.clone().connect(params, Some(sender.clone())) {
            Ok((conn, conn_id)) => {
                self.conn = Some(conn);
                self.liveness = Some(self.shard.heartbeats.watch(sender.clone()));
                let mut frame = Vec::with_capacity(128);
                frame.extend_from_slice(b"{\"body\":{\"tag\":\"Init\",\"val\":{\"actorId\":\"");
                frame.extend_from_slice(&self.actor.info().actor_id().to_hex());
                frame.extend_from_slice(b"\",\"connectionId\":\"");
                frame.extend_from_slice(conn_id.to_string().as_bytes());
                frame.extend_from_slice(b"\"}}}");
                send_frame(&sender, &frame);
            }
            Err(error) => {
                log_internal("connect", self.actor.info().name(), &error);
                let error = RivetError::from_action(error);
                let _ = sender.close(CLOSE_INTERNAL, &error.code);
            }
        }
        self.sender = Some(sender);
    }

    fn on_pong(&mut self, _: &[u8]) {
        if let Some(liveness) = &self.liveness {
            liveness.seen();
        }
    }

    fn on_message(&mut self, message: WsMessage<'_>) -> Result<(), WsClose> {
        if let Some(liveness) = &self.liveness {
            liveness.seen();
        }
        self.shard.drain_mailbox();
        let (Some(conn), Some(sender)) = (self.conn, self.sender.clone()) else {
            // Rejected: the close is on its way.
            return Ok(());
        };
        let bytes = match message {
            WsMessage::Text(text) => text.into_bytes_mut(),
            WsMessage::Binary(bytes) => bytes,
        };
        let limits = &self.shard.config.limits;
        if bytes.len() > limits.action_body_bytes_max {
            return Err(WsClose {
                code: CLOSE_MESSAGE_TOO_BIG,
                reason: "incoming_too_long".into(),
            });
        }
        let message = value::parse_to_server(bytes).map_err(|error| {
            tracing::debug!(%error, "malformed connection message");
            // The reference closes too: without a parsed id there is nothing to answer.
            WsClose {
                code: CLOSE_INTERNAL,
                reason: "invalid_request".into(),
            }
        })?;
        match message {
            ToServer::Subscription { event, subscribe } => self
                .actor
                .subscribe(conn, event, subscribe, limits.conn_subscriptions_max)
                .map_err(|why| WsClose {
                    code: CLOSE_INTERNAL,
                    reason: why.into(),
                }),
            ToServer::Action { id, name, args } => {
                self.action(conn, &sender, id, name, &args);
                Ok(())
            }
        }
    }

    fn on_close(&mut self, _: Option<u16>) {
        if let Some(conn) = self.conn.take() {
            self.actor.clone().disconnect(conn);
        }
    }
}

impl RivetSession {
    fn action(
        &mut self,
        conn: ConnKey,
        sender: &WsSender,
        id: u64,
        name: &str,
        args: &value::ArgList<'_>,
    ) {
        let limits = &self.shard.config.limits;
        let output_max = limits.action_output_bytes_max;
        let running = {
            let mut scratch = self.shard.scratch.borrow_mut();
            scratch.clear();
            match self
                .actor
                .clone()
                .start(name, &CallArgs::json(args), &mut scratch, conn)
            {
                Started::Done(result) => {
                    let frame = &mut self.frame;
                    frame.clear();
                    let output = result.map(|output| match output {
                        Output::Written => Some(&scratch[..]),
                        Output::Undefined => None,
                    });
                    write_result(
                        frame,
                        id,
                        output,
                        self.actor.info().name(),
                        name,
                        output_max,
                    );
                    if self.actor.options().durable_before_reply {
                        // The output gate: the reply leaves once the state it reflects is
                        // durable (with the events the action emitted).
                        let (shard, actor) = (self.shard.clone(), self.actor.clone());
                        let (sender, gated) = (sender.clone(), frame.clone());
                        sys::spawn(async move {
                            send_gated(&shard, &actor, &sender, id, &gated).await;
                        });
                        return;
                    }
                    send_frame(sender, frame);
                    if frame.capacity() > FRAME_RETAIN_BYTES_MAX {
                        *frame = Vec::new();
                    }
                    return;
                }
                Started::Running(future) => future,
            }
        };
        if self.in_flight.get() >= limits.conn_actions_in_flight_max
            || self.actor.pending().get() >= limits.actor_pending_max
        {
            // Refused before its first poll, so none of the action's code ran.
            drop(running);
            let mut frame = Vec::new();
            write_error(&mut frame, &RivetError::overloaded(), Some(id));
            send_frame(sender, &frame);
            return;
        }
        let in_flight = self.in_flight.clone();
        in_flight.set(in_flight.get() + 1);
        let pending = Pending::count(&self.actor);
        let sender = sender.clone();
        let actor_name = self.actor.info().name();
        let action = name.to_string();
        let timeout = limits.action_timeout;
        let gate = self
            .actor
            .options()
            .durable_before_reply
            .then(|| (self.shard.clone(), self.actor.clone()));
        sys::spawn(async move {
            let result = sys::timeout(timeout, running).await;
            in_flight.set(in_flight.get() - 1);
            drop(pending);
            let mut frame = Vec::new();
            let Some(result) = result else {
                write_error(&mut frame, &RivetError::timed_out(), Some(id));
                send_frame(&sender, &frame);
                return;
            };
            match result {
                Ok(output) => write_result(
                    &mut frame,
                    id,
                    Ok(output.as_deref()),
                    actor_name,
                    &action,
                    output_max,
                ),
                Err(failure) => write_result(
                    &mut frame,
                    id,
                    Err(failure),
                    actor_name,
                    &action,
                    output_max,
                ),
            }
            match gate {
                Some((shard, actor)) => send_gated(&shard, &actor, &sender, id, &frame).await,
                None => send_frame(&sender, &frame),
            }
        });
    }
}

/// Sends an action's response frame through the output gate of its actor: after the actor's
/// state is durable (and its held events are sent); an internal error instead if the save failed.
async fn send_gated(
    shard: &Shard,
    actor: &Rc<dyn ActorObject>,
    sender: &WsSender,
    id: u64,
    frame: &[u8],
) {
    match protocol::gate_output(shard, actor).await {
        Ok(()) => send_frame(sender, frame),
        Err(error) => {
            let mut frame = Vec::new();
            write_error(&mut frame, &error, Some(id));
            send_frame(sender, &frame);
        }
    }
}

/// Writes an action's `ActionResponse` (spec §8.2: no `output` for `undefined`), or its
/// `Error` frame.
fn write_result(
    frame: &mut Vec<u8>,
    id: u64,
    result: Result<Option<&[u8]>, crate::actor::Failure>,
    actor: &str,
    action: &str,
    output_max: usize,
) {
    match result {
        Ok(Some(output)) if output.len() > output_max => {
            write_error(frame, &RivetError::outgoing_too_long(), Some(id))
        }
        Ok(output) => {
            frame.extend_from_slice(b"{\"body\":{\"tag\":\"ActionResponse\",\"val\":{\"id\":");
            write_id(frame, Some(id));
            if let Some(output) = output {
                frame.extend_from_slice(b",\"output\":");
                frame.extend_from_slice(output);
            }
            frame.extend_from_slice(b"}}}");
        }
        Err(failure) => write_error(frame, &failure_error(actor, action, failure), Some(id)),
    }
}

/// Writes an `Error` frame: the error's fields plus `actionId` (`null` for a connection-level
/// error).
fn write_error(frame: &mut Vec<u8>, error: &RivetError, action_id: Option<u64>) {
    frame.extend_from_slice(b"{\"body\":{\"tag\":\"Error\",\"val\":");
    error.write_json(frame);
    frame.pop(); // the object's closing brace: one more field follows
    frame.extend_from_slice(b",\"actionId\":");
    write_id(frame, action_id);
    frame.extend_from_slice(b"}}}");
}

fn write_id(frame: &mut Vec<u8>, id: Option<u64>) {
    match id {
        Some(id) => {
            frame.extend_from_slice(b"[\"$BigInt\",\"");
            frame.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
            frame.extend_from_slice(b"\"]");
        }
        None => frame.extend_from_slice(b"null"),
    }
}

/// Queues a frame built by this module. Only the JSON writers fill it, so it is UTF-8; a send
/// that fails means the connection is closing, and the response has nowhere to go.
fn send_frame(sender: &WsSender, frame: &[u8]) {
    let text = match std::str::from_utf8(frame) {
        Ok(text) => text,
        Err(error) => {
            tracing::error!(%error, "a connection frame is not UTF-8");
            return;
        }
    };
    if let Err(error) = sender.send_text(text) {
        tracing::debug!(%error, "connection frame not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weak_list_nobody_walks_stays_within_twice_its_live_items() {
        let mut list = WeakList::default();
        let mut kept = Vec::new();
        let mut longest = 0;
        for n in 0..10_000u32 {
            let item = Rc::new(n);
            list.push(&item);
            // One item in ten stays alive; the others are dropped at once (closed sockets).
            if n % 10 == 0 {
                kept.push(item);
            }
            longest = longest.max(list.items.len());
            assert!(
                list.items.len() <= 2 * (kept.len() + 1).max(WeakList::<u32>::PRUNE_MIN) + 1,
                "{} entries for {} live items",
                list.items.len(),
                kept.len()
            );
        }
        assert_eq!(list.live(), 1_000);
        assert!(longest <= 2_001, "longest {longest}");
        // Every kept item is still listed.
        let mut seen = Vec::new();
        list.retain(|n| {
            seen.push(*n);
            true
        });
        assert_eq!(seen, kept.iter().map(|n| **n).collect::<Vec<_>>());
    }

    #[test]
    fn retain_drops_the_dropped_and_the_rejected() {
        let mut list = WeakList::default();
        let items: Vec<Rc<u32>> = (0..10).map(Rc::new).collect();
        for item in &items {
            list.push(item);
        }
        let mut items = items;
        items.truncate(6);
        list.retain(|n| n % 2 == 0);
        assert_eq!(list.items.len(), 3);
        assert_eq!(list.live(), 3);
        drop(items);
        assert_eq!(list.live(), 0);
        list.retain(|_| true);
        assert!(list.items.is_empty());
    }
}
