//! Connections of an actor (RivetKit's `c.conn` / `c.conns`): who is calling, with which
//! params and connection state, and who receives which events.
//!
//! A connection is either **realtime** (a RivetKit connection WebSocket, `handle.connect()`;
//! it can receive events) or **ephemeral** (made for one stateless HTTP call or raw request,
//! as RivetKit does, so the connect hooks run for those too; it receives nothing). Both live in
//! the actor's [`Conns`] table while they exist.
//!
//! Events: [`Conns`] keeps, per event name, the realtime connections subscribed to it, so a
//! broadcast finds its subscribers with one lookup. The event frame is encoded once and the
//! same bytes (an `Rc<[u8]>`) are queued on every subscriber's socket.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use pinion_net::server::{SendError, WsSender, encode_text_frame};
use serde::Serialize;

use crate::actor::{ActionError, ActionResult, Actor};
use crate::value::{self, Value, write_json_str};

/// A connection's id: random, shown as a UUID (RivetKit's `conn.id`, the `connectionId` of
/// `Init`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(pub(crate) u128);

impl ConnId {
    pub(crate) fn random() -> ConnId {
        let high = u128::from(crate::sys::random_u64());
        let low = u128::from(crate::sys::random_u64());
        // Version 4, variant 10xx: a well-formed random UUID.
        let bits = (high << 64 | low) & !(0xf << 76) & !(0x3 << 62);
        ConnId(bits | (0x4 << 76) | (0x2 << 62))
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (b >> 96) as u32,
            (b >> 80) as u16,
            (b >> 64) as u16,
            (b >> 48) as u16,
            b & 0xffff_ffff_ffff
        )
    }
}

/// Where a connection sits in its actor's table; stale keys (of a connection that left) find
/// nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnKey {
    index: u32,
    generation: u32,
}

impl ConnKey {
    /// The key of no connection (hooks that run before one exists, such as `on_create`).
    pub(crate) const NONE: ConnKey = ConnKey {
        index: u32::MAX,
        generation: 0,
    };
}

/// One connection of an actor of type `A`.
pub struct Conn<A: Actor> {
    id: ConnId,
    params: Value,
    state: A::ConnState,
    /// The socket of a realtime connection; `None` for an ephemeral one.
    sender: Option<WsSender>,
    /// The events this connection subscribed to.
    events: Vec<Rc<str>>,
    /// The actor's output gate, if it has one.
    gate: Option<Rc<Held>>,
}

/// Event frames an output gate holds until the state they depend on is durable
/// ([`crate::actor::ActorOptions::durable_before_reply`]).
pub(crate) type Held = RefCell<Vec<(WsSender, Rc<[u8]>)>>;

/// Queues `frame` on `sender`, or holds it behind the gate.
fn deliver(gate: Option<&Rc<Held>>, sender: &WsSender, frame: Rc<[u8]>) {
    match gate {
        Some(held) => held.borrow_mut().push((sender.clone(), frame)),
        None => report_send(sender.send_frame_bytes(frame)),
    }
}

impl<A: Actor> Conn<A> {
    /// The connection's id (a UUID).
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The params the client connected with (`null` when it gave none).
    pub fn params(&self) -> &Value {
        &self.params
    }

    /// The connection state, built by [`Actor::create_conn_state`].
    pub fn state(&self) -> &A::ConnState {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut A::ConnState {
        &mut self.state
    }

    /// Whether this is a realtime connection (a `connect()` WebSocket) rather than the ephemeral
    /// connection of a stateless call.
    pub fn is_realtime(&self) -> bool {
        self.sender.is_some()
    }

    /// Sends event `name` with `args` to this connection only, subscribed or not (RivetKit's
    /// `conn.send`). `args` is a tuple (or array) of the event's arguments; any other value is
    /// sent as the single argument. Ephemeral connections receive nothing, and neither does a
    /// connection that is closing; both are not errors. Fails only if `args` does not
    /// serialize.
    pub fn send(&self, name: &str, args: impl Serialize) -> ActionResult<()> {
        let Some(sender) = &self.sender else {
            return Ok(());
        };
        let mut payload = Vec::new();
        write_event(&mut payload, name, &args)?;
        let text = std::str::from_utf8(&payload).map_err(ActionError::from)?;
        deliver(self.gate.as_ref(), sender, encode_text_frame(text));
        Ok(())
    }

    pub(crate) fn sender(&self) -> Option<&WsSender> {
        self.sender.as_ref()
    }
}

/// The connections of one actor.
///
/// Memory: every stateless call adds an ephemeral connection for its duration, so an idle actor
/// that has served calls would keep a slot table sized for its busiest moment. The table starts
/// with room for one connection and is emptied (a burst's extra room given back) whenever the
/// last connection leaves; a key's generation comes from a counter of the actor's, never from
/// the slot, so a key of a connection that has left never matches a later one.
pub struct Conns<A: Actor> {
    slots: Vec<Slot<A>>,
    free: Vec<u32>,
    live: u32,
    /// The generation of the next connection.
    next_generation: u32,
    /// Per event name, the realtime connections subscribed to it.
    subscribers: HashMap<Rc<str>, Vec<ConnKey>>,
    /// The output gate of an actor with `durable_before_reply`.
    gate: Option<Rc<Held>>,
}

enum Slot<A: Actor> {
    Free,
    Used { generation: u32, conn: Conn<A> },
}

impl<A: Actor> Default for Conns<A> {
    fn default() -> Self {
        Conns::new(false)
    }
}

impl<A: Actor> Conns<A> {
    /// An empty table; `gated`: events are held until released (the output gate).
    pub(crate) fn new(gated: bool) -> Self {
        Conns {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            next_generation: 0,
            subscribers: HashMap::new(),
            gate: gated.then(|| Rc::new(RefCell::new(Vec::new()))),
        }
    }

    /// The keys of every connection.
    pub(crate) fn keys(&self) -> Vec<ConnKey> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| match slot {
                Slot::Used { generation, .. } => Some(ConnKey {
                    index: index as u32,
                    generation: *generation,
                }),
                Slot::Free => None,
            })
            .collect()
    }

    /// The frames the output gate holds (empty without a gate).
    pub(crate) fn take_held(&self) -> Vec<(WsSender, Rc<[u8]>)> {
        match &self.gate {
            Some(held) => std::mem::take(&mut *held.borrow_mut()),
            None => Vec::new(),
        }
    }

    /// How many connections the actor has (realtime and ephemeral).
    pub fn len(&self) -> usize {
        self.live as usize
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Every connection, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Conn<A>> {
        self.slots.iter().filter_map(|slot| match slot {
            Slot::Used { conn, .. } => Some(conn),
            Slot::Free => None,
        })
    }

    /// The connection with id `id`, if it is still connected.
    pub fn get(&self, id: ConnId) -> Option<&Conn<A>> {
        self.iter().find(|conn| conn.id == id)
    }

    /// How many realtime connections are subscribed to `event`.
    pub fn subscribers(&self, event: &str) -> usize {
        self.subscribers.get(event).map_or(0, Vec::len)
    }

    pub(crate) fn conn(&self, key: ConnKey) -> Option<&Conn<A>> {
        match self.slots.get(key.index as usize) {
            Some(Slot::Used { generation, conn }) if *generation == key.generation => Some(conn),
            _ => None,
        }
    }

    pub(crate) fn conn_mut(&mut self, key: ConnKey) -> Option<&mut Conn<A>> {
        match self.slots.get_mut(key.index as usize) {
            Some(Slot::Used { generation, conn }) if *generation == key.generation => Some(conn),
            _ => None,
        }
    }

    pub(crate) fn insert(
        &mut self,
        id: ConnId,
        params: Value,
        state: A::ConnState,
        sender: Option<WsSender>,
    ) -> ConnKey {
        let conn = Conn {
            id,
            params,
            state,
            sender,
            events: Vec::new(),
            gate: self.gate.clone(),
        };
        let live = self
            .live
            .checked_add(1)
            .expect("fewer than 2^32 connections");
        self.live = live;
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            debug_assert!(matches!(slot, Slot::Free), "a free-listed slot is in use");
            *slot = Slot::Used { generation, conn };
            return ConnKey { index, generation };
        }
        if self.slots.capacity() == 0 {
            // Room for one: most actors have one connection at a time (a call in progress).
            self.slots.reserve_exact(1);
        }
        let index = self.slots.len() as u32;
        self.slots.push(Slot::Used { generation, conn });
        ConnKey { index, generation }
    }

    /// Removes the connection and its subscriptions.
    pub(crate) fn remove(&mut self, key: ConnKey) -> Option<Conn<A>> {
        self.conn(key)?;
        let slot = &mut self.slots[key.index as usize];
        let Slot::Used { conn, .. } = std::mem::replace(slot, Slot::Free) else {
            unreachable!()
        };
        self.live -= 1;
        for event in &conn.events {
            self.unlist(event, key);
        }
        if self.live == 0 {
            // The last one left: keep room for one connection, give the rest back.
            self.free = Vec::new();
            if self.slots.capacity() > 1 {
                self.slots = Vec::new();
            } else {
                self.slots.clear();
            }
        } else {
            self.free.push(key.index);
        }
        Some(conn)
    }

    /// Subscribes or unsubscribes a realtime connection. Fails when the connection already has
    /// `limit` subscriptions.
    pub(crate) fn subscribe(
        &mut self,
        key: ConnKey,
        event: &str,
        subscribe: bool,
        limit: usize,
    ) -> Result<(), &'static str> {
        let Some(conn) = self.conn_mut(key) else {
            return Ok(());
        };
        let position = conn.events.iter().position(|e| &**e == event);
        match (subscribe, position) {
            (true, Some(_)) | (false, None) => Ok(()),
            (true, None) => {
                if conn.events.len() >= limit {
                    return Err("too many subscriptions on one connection");
                }
                let name: Rc<str> = match self.subscribers.get_key_value(event) {
                    Some((name, _)) => name.clone(),
                    None => Rc::from(event),
                };
                let conn = self.conn_mut(key).expect("checked above");
                conn.events.push(name.clone());
                self.subscribers.entry(name).or_default().push(key);
                Ok(())
            }
            (false, Some(at)) => {
                let conn = self.conn_mut(key).expect("checked above");
                let name = conn.events.swap_remove(at);
                self.unlist(&name, key);
                Ok(())
            }
        }
    }

    fn unlist(&mut self, event: &str, key: ConnKey) {
        if let Some(list) = self.subscribers.get_mut(event) {
            if let Some(at) = list.iter().position(|k| *k == key) {
                list.swap_remove(at);
            }
            if list.is_empty() {
                self.subscribers.remove(event);
            }
        }
    }

    /// Sends event `name` to every connection subscribed to it: encoded once, the same frame
    /// bytes queued on each socket. See [`Conn::send`] for `args`.
    pub fn broadcast(&self, name: &str, args: impl Serialize) -> ActionResult<()> {
        let Some(list) = self.subscribers.get(name) else {
            return Ok(());
        };
        let mut payload = Vec::new();
        write_event(&mut payload, name, &args)?;
        let text = std::str::from_utf8(&payload).map_err(ActionError::from)?;
        let frame = encode_text_frame(text);
        for key in list {
            if let Some(sender) = self.conn(*key).and_then(|conn| conn.sender.as_ref()) {
                deliver(self.gate.as_ref(), sender, frame.clone());
            }
        }
        Ok(())
    }
}

/// Sends from actors are fire-and-forget, as in RivetKit: a closing connection just misses
/// the event, and one whose queue overflowed is being failed by the socket layer.
fn report_send(result: Result<(), SendError>) {
    if let Err(error) = result {
        tracing::debug!(%error, "event not delivered");
    }
}

/// Writes the `Event` message for `name` and `args` (spec §8.2).
fn write_event(out: &mut Vec<u8>, name: &str, args: &impl Serialize) -> ActionResult<()> {
    out.extend_from_slice(b"{\"body\":{\"tag\":\"Event\",\"val\":{\"name\":");
    write_json_str(out, name);
    out.extend_from_slice(b",\"args\":");
    value::write_args(out, args).map_err(|error| {
        ActionError::internal(format!("the event's arguments do not serialize: {error}"))
    })?;
    out.extend_from_slice(b"}}}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_ids_are_v4_uuids() {
        let id = ConnId::random().to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(ConnId::random(), ConnId::random());
    }

    #[test]
    fn event_args_are_an_array() {
        let mut out = Vec::new();
        write_event(&mut out, "count", &(3,)).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"body":{"tag":"Event","val":{"name":"count","args":[3]}}}"#
        );
        out.clear();
        write_event(&mut out, "n", &serde_json_like()).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"body":{"tag":"Event","val":{"name":"n","args":[{"a":1}]}}}"#
        );
    }

    fn serde_json_like() -> std::collections::BTreeMap<&'static str, i32> {
        [("a", 1)].into_iter().collect()
    }

    struct Probe;

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    struct ProbeState;

    impl Actor for Probe {
        const NAME: &'static str = "probe";
        type State = ProbeState;
        type Vars = ();
        type ConnState = u32;
        fn create_state(_: &crate::ActorInfo, _: Option<Value>) -> ActionResult<ProbeState> {
            Ok(ProbeState)
        }
        fn create_vars(_: &crate::ActorInfo, _: &ProbeState) {}
        fn actions(_: &mut crate::Actions<Self>) {}
    }

    fn add(conns: &mut Conns<Probe>, n: u32) -> ConnKey {
        conns.insert(ConnId::random(), Value::Null, n, None)
    }

    #[test]
    fn a_key_of_a_connection_that_left_never_matches_a_later_one() {
        let mut conns = Conns::<Probe>::default();
        let first = add(&mut conns, 1);
        assert_eq!(conns.remove(first).map(|c| c.state), Some(1));
        // The table emptied and the next connection takes the same slot.
        let second = add(&mut conns, 2);
        assert_eq!(second.index, first.index);
        assert!(conns.conn(first).is_none());
        assert!(conns.remove(first).is_none());
        assert_eq!(conns.conn(second).map(|c| c.state), Some(2));
        // The same through the free list, with others still connected.
        let third = add(&mut conns, 3);
        assert_eq!(conns.remove(second).map(|c| c.state), Some(2));
        let fourth = add(&mut conns, 4);
        assert_eq!(fourth.index, second.index);
        assert!(conns.conn(second).is_none());
        assert_eq!(conns.conn(fourth).map(|c| c.state), Some(4));
        assert_eq!(conns.conn(third).map(|c| c.state), Some(3));
        assert_eq!(conns.len(), 2);
        let mut states: Vec<u32> = conns.iter().map(|c| c.state).collect();
        states.sort();
        assert_eq!(states, [3, 4]);
    }

    #[test]
    fn an_idle_actor_keeps_room_for_one_connection() {
        let mut conns = Conns::<Probe>::default();
        // One call at a time: the room for one is allocated once and kept.
        let key = add(&mut conns, 0);
        let table = conns.slots.as_ptr();
        conns.remove(key);
        for n in 1..10 {
            let key = add(&mut conns, n);
            assert_eq!(conns.slots.as_ptr(), table, "no allocation per connection");
            conns.remove(key);
        }
        assert_eq!(conns.slots.capacity(), 1);
        // A burst grows the table; once the last connection leaves, the room is given back.
        let keys: Vec<ConnKey> = (0..20).map(|n| add(&mut conns, n)).collect();
        assert!(conns.slots.capacity() >= 20);
        for key in &keys[..19] {
            conns.remove(*key);
        }
        assert_eq!(conns.len(), 1);
        conns.remove(keys[19]);
        assert!(conns.is_empty());
        assert!(conns.slots.capacity() <= 1);
        assert_eq!(conns.free.capacity(), 0);
        assert!(keys.iter().all(|key| conns.conn(*key).is_none()));
    }

    #[test]
    fn a_connection_that_leaves_takes_its_subscriptions() {
        let mut conns = Conns::<Probe>::default();
        let a = add(&mut conns, 1);
        let b = add(&mut conns, 2);
        conns.subscribe(a, "e", true, 8).unwrap();
        conns.subscribe(b, "e", true, 8).unwrap();
        conns.subscribe(b, "f", true, 8).unwrap();
        assert_eq!(conns.subscribers("e"), 2);
        conns.remove(a);
        assert_eq!(conns.subscribers("e"), 1);
        assert_eq!(conns.subscribers("f"), 1);
        conns.remove(b);
        assert_eq!(conns.subscribers("e"), 0);
        assert!(conns.subscribers.is_empty());
        assert_eq!(
            conns.subscribe(b, "e", true, 8),
            Ok(()),
            "a departed key subscribes nothing"
        );
        assert!(conns.subscribers.is_empty());
    }
}
