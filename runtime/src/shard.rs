//! One shard: the actors it owns, its directory, its store, and its side of the mailbox.
//!
//! A shard lives on one pinned glommio executor and is reached only from that thread (`Rc`, no
//! `Send`). Everything an actor needs is here; other shards reach it only through messages.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pinion_net::server::{Detached, WsSession};
use pinion_storage::{ActorRecord, Store};

use crate::actor::{ActorInfo, ActorObject, ActorType};
use crate::config::Config;
use crate::lifecycle::{Gate, Notify, Timer};
use crate::mailbox::{Mailbox, Message, Postman, Token};
use crate::placement::ActorId;
use crate::protocol::{self, Forwarded, Reply, RivetError};
use crate::realtime;
use crate::registry::Registry;
use crate::sys;
use crate::value::Value;

pub(crate) struct Shard {
    /// This shard, for the clients its actors hold (weak: actors live inside the shard).
    pub(crate) me: std::rc::Weak<Shard>,
    pub(crate) index: usize,
    pub(crate) config: Rc<Config>,
    pub(crate) postman: Postman,
    types: Vec<Rc<dyn ActorType>>,
    /// The awake actors. Sleeping ones exist only in the store (see `lifecycle`).
    pub(crate) actors: RefCell<HashMap<ActorId, Rc<dyn ActorObject>>>,
    /// Actors in a transition (waking, sleeping, being created or destroyed).
    pub(crate) gates: RefCell<HashMap<ActorId, Rc<Gate>>>,
    /// The shard's store: directory, snapshots, schedules. Only this shard touches it.
    pub(crate) store: Rc<dyn Store>,
    /// Save and sleep timers of awake actors (see `lifecycle`).
    pub(crate) timers: RefCell<BinaryHeap<Reverse<Timer>>>,
    pub(crate) timer_notify: Notify,
    /// Schedules running now, as (actor, schedule).
    pub(crate) firing: RefCell<HashSet<(u64, u64)>>,
    /// The last actor incarnation number given out.
    pub(crate) epoch: Cell<u64>,
    pub(crate) schedule_counter: Cell<u64>,
    /// A reusable buffer for snapshots.
    pub(crate) snapshot_buf: RefCell<Vec<u8>>,
    waiters: RefCell<Waiters>,
    /// The body of `GET /metadata`, built once.
    pub(crate) metadata_json: Vec<u8>,
    /// A reusable buffer for encoding outputs; borrowed only between awaits.
    pub(crate) scratch: RefCell<Vec<u8>>,
    /// Serves a WebSocket moved here from another shard on this shard's network driver; set by
    /// the server once the driver exists.
    adopter: RefCell<Option<Adopter>>,
    /// This shard's WebSockets, pinged by the heartbeat.
    pub(crate) heartbeats: realtime::Heartbeats,
    /// Dispatches the network driver's waiting completions now (see `yield_turn`); set by the
    /// server for the io_uring driver.
    io_poller: RefCell<Option<Box<dyn Fn()>>>,
    /// This shard's inbox.
    mailbox: Mailbox,
    /// Wakes a cold mailbox task when this shard sends a call, so it turns hot for the reply.
    mail_expected: Notify,
    /// When the last message arrived or the last call left (the hot mailbox task's clock).
    last_mail: Cell<std::time::Instant>,
    /// A `Stop` arrived (through `drain_mailbox`, or the mailbox task): the shard is stopping.
    /// It accepts no connection, and each response asks its connection to close.
    stopping: Cell<bool>,
    /// Wakes the server's stop sequence when `stopping` is set.
    stop_requested: Notify,
    /// The stop sequence is done with the network: the mailbox task ends.
    closed: Cell<bool>,
    /// Requests being handled now: HTTP requests this shard accepted and calls other shards
    /// forwarded to it (see [`Shard::enter_request`]). A stop waits for them.
    requests_in_flight: Cell<usize>,
    /// How long each wake from the store took, in µs: from the request finding the actor asleep
    /// to the actor ready (records read, state decoded, `create_vars`, `on_wake`). Logged at a
    /// clean stop.
    pub(crate) wakes: RefCell<hdrhistogram::Histogram<u64>>,
    /// The wakes among those that read from the device (the store read some record through
    /// its ring: not wholly in the page cache).
    pub(crate) device_wakes: RefCell<hdrhistogram::Histogram<u64>>,
}

/// Wake times in µs, up to a minute.
fn wake_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// A request in flight: see [`Shard::enter_request`].
pub(crate) struct InFlight<'a> {
    shard: &'a Shard,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let count = &self.shard.requests_in_flight;
        count.set(count.get() - 1);
    }
}

/// See [`Shard::set_adopter`].
pub(crate) type Adopter = Box<dyn Fn(Detached, Box<dyn WsSession>)>;

/// Mailbox messages handled in a row before the mailbox task yields to the shard's other tasks.
const MAILBOX_BURST_MAX: usize = 256;

/// How often the hot mailbox task dispatches the network driver's completions itself (one
/// `io_uring_enter`; see [`Shard::run_mailbox`]): the most a connection's bytes wait behind
/// that polling.
const NET_SLICE: Duration = Duration::from_micros(20);

/// How long the hot mailbox task polls before it lets the executor run its reactor once: the
/// most a timer or a file completion waits behind that polling.
const REACTOR_SLICE: Duration = Duration::from_micros(200);

/// How a resolve request ended, on the owning shard.
pub(crate) struct Resolved {
    pub(crate) record: ActorRecord,
    pub(crate) created: bool,
}

impl Shard {
    pub(crate) fn new(
        index: usize,
        config: Rc<Config>,
        registry: &Registry,
        postman: Postman,
        mailbox: Mailbox,
        store: Rc<dyn Store>,
    ) -> Rc<Shard> {
        let types = registry.instantiate();
        let metadata_json = protocol::metadata_json(registry);
        let shard = Rc::new_cyclic(|me| Shard {
            me: me.clone(),
            index,
            config,
            postman,
            types,
            actors: RefCell::new(HashMap::new()),
            gates: RefCell::new(HashMap::new()),
            store,
            timers: RefCell::new(BinaryHeap::new()),
            timer_notify: Notify::default(),
            firing: RefCell::new(HashSet::new()),
            epoch: Cell::new(0),
            schedule_counter: Cell::new(0),
            snapshot_buf: RefCell::new(Vec::new()),
            waiters: RefCell::new(Waiters::default()),
            metadata_json,
            scratch: RefCell::new(Vec::new()),
            adopter: RefCell::new(None),
            heartbeats: realtime::Heartbeats::default(),
            io_poller: RefCell::new(None),
            mailbox,
            mail_expected: Notify::default(),
            last_mail: Cell::new(sys::now()),
            stopping: Cell::new(false),
            stop_requested: Notify::default(),
            closed: Cell::new(false),
            requests_in_flight: Cell::new(0),
            wakes: RefCell::new(wake_histogram()),
            device_wakes: RefCell::new(wake_histogram()),
        });
        assert!(shard.index < shard.shard_count());
        shard
    }

    /// Sets how the network driver's waiting completions are dispatched on demand.
    pub(crate) fn set_io_poller(&self, poll: Box<dyn Fn()>) {
        *self.io_poller.borrow_mut() = Some(poll);
    }

    /// Fairness: lets the shard's other ready tasks run before the current one goes on,
    /// including connections whose requests arrived while the shard was busy (their
    /// completions are dispatched first, so they are queued ahead of this task), and submits
    /// what they wrote when this task resumes (the driver's own flush would come only after
    /// the tasks queued behind it, however long they run).
    pub(crate) async fn yield_turn(self: &Rc<Self>) {
        self.poll_io();
        self.drain_mailbox();
        futures_lite::future::yield_now().await;
        self.poll_io();
    }

    fn poll_io(&self) {
        if let Some(poll) = &*self.io_poller.borrow() {
            poll();
        }
    }

    /// Sets how WebSockets moved here are served (on this shard's network driver).
    pub(crate) fn set_adopter(&self, adopter: Adopter) {
        *self.adopter.borrow_mut() = Some(adopter);
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.postman.shard_count()
    }

    pub(crate) fn actor_type(&self, name: &str) -> Option<&Rc<dyn ActorType>> {
        self.types.iter().find(|t| t.name() == name)
    }

    pub(crate) fn has_type(&self, name: &str) -> bool {
        self.actor_type(name).is_some()
    }

    /// Whether actor `id` is awake as `name` with `key`, with no transition (create, wake,
    /// sleep, destroy) holding its gate: a call may then go straight to it.
    pub(crate) fn is_awake_as(&self, id: ActorId, name: &str, key: &[String]) -> bool {
        if self.gates.borrow().contains_key(&id) {
            return false;
        }
        self.actors.borrow().get(&id).is_some_and(|actor| {
            let info = actor.info();
            info.name() == name && info.key() == key
        })
    }

    /// The running instance of actor `id`, if this shard has it.
    pub(crate) fn actor(&self, id: ActorId) -> Option<Rc<dyn ActorObject>> {
        debug_assert_eq!(
            id.shard(self.shard_count()),
            self.index,
            "actor {id} is not ours"
        );
        self.actors.borrow().get(&id).cloned()
    }

    /// Creates the actor (name, key) unless it exists. `input` is the creation input, used only
    /// when the actor is created here. A new actor's record and first snapshot are durable
    /// before this returns.
    pub(crate) async fn resolve(
        self: &Rc<Self>,
        name: &str,
        key: Vec<String>,
        input: Option<Value>,
        create: Create,
    ) -> Result<Option<Resolved>, RivetError> {
        let Some(actor_type) = self.actor_type(name).cloned() else {
            return Err(RivetError::actor_type_unknown(name));
        };
        let id = ActorId::derive(name, &crate::key::serialize(&key));
        debug_assert_eq!(id.shard(self.shard_count()), self.index);
        self.pass_gate(id).await;
        let existing = match self.actor(id) {
            Some(actor) => Some(actor.info().record()),
            None => match self.store.actor(id.0) {
                Some(entry) if entry.destroyed_ms.is_none() => self.read_record(id).await,
                _ => None,
            },
        };
        if let Some(record) = existing {
            if record.name != name || record.key != key {
                // Two (name, key) pairs hashing to one 64-bit id: astronomically rare, but never
                // silently hand one actor's state to the other.
                tracing::error!(%id, name, ?key, other_name = %record.name, other_key = ?record.key, "actor id collision");
                return Err(RivetError::internal());
            }
            return match create {
                Create::Never | Create::IfAbsent => Ok(Some(Resolved {
                    record,
                    created: false,
                })),
                Create::Always => Err(RivetError::duplicate_key(name, &key)),
            };
        }
        if create == Create::Never {
            return Ok(None);
        }
        if self.gates.borrow().contains_key(&id) || self.actor(id).is_some() {
            // Another call created it while we read: answer as if it had been there.
            return Box::pin(self.resolve(name, key, input, create)).await;
        }
        let guard = self.close_gate(id);
        let info = ActorInfo {
            name: actor_type.name(),
            key: key.into_boxed_slice(),
            id,
            created_ms: sys::unix_ms(),
        };
        let record = info.record();
        let instance = actor_type
            .create(info, input, self.client())
            .map_err(|error| {
                protocol::log_internal("create_state", name, &error);
                RivetError::from_action(error)
            })?;
        let store_error = |error: std::io::Error| {
            tracing::error!(%id, %error, "storing a new actor failed");
            RivetError::internal()
        };
        self.store.put_actor(&record).await.map_err(store_error)?;
        instance.life().change();
        let seq = self.save(&instance).await.map_err(store_error)?;
        self.install(instance);
        drop(guard);
        self.store.durable(seq).await.map_err(store_error)?;
        Ok(Some(Resolved {
            record,
            created: true,
        }))
    }

    /// Sends `call` to shard `owner` and waits for its reply.
    pub(crate) async fn forward(self: &Rc<Self>, owner: usize, call: Forwarded) -> Reply {
        debug_assert_ne!(owner, self.index);
        let token = {
            let mut waiters = self.waiters.borrow_mut();
            if waiters.in_use >= self.config.limits.forwarded_calls_max {
                return Reply::error(&RivetError::overloaded());
            }
            waiters.insert()
        };
        let sent = self.postman.send(
            owner,
            Message::Call {
                from: self.index,
                token,
                call,
            },
        );
        if !sent {
            // The owner has stopped (this shard is stopping too).
            self.waiters.borrow_mut().release(token);
            return Reply::error(&RivetError::stopping());
        }
        self.last_mail.set(sys::now());
        self.mail_expected.notify();
        WaitReply {
            shard: self.clone(),
            token,
        }
        .await
    }

    /// Serves the mailbox until [`Shard::close_mailbox`]: through a stop's drain as well, so
    /// that requests in flight still get the replies of other shards.
    ///
    /// Two modes. **Cold**: nothing is expected, so the task waits in the channel and a message
    /// wakes it through the executor (another shard's wake is queued to glommio's reactor and seen
    /// at its next pass, which re-arms its timers with `io_uring_enter`: 8–10 µs per wake-up on
    /// this machine's VMs even while the executor spins, more if it parked). **Hot**: for
    /// `Config::spin_before_park` after the last message in or call out, the task stays runnable
    /// and looks at the inbox's flag on every turn of the shard's run queue, so a message is
    /// handled within one task's turn of its arrival, with no reactor pass in between (a hop
    /// costs what the channel costs). While hot it dispatches the network driver's completions
    /// every `NET_SLICE`, and every `REACTOR_SLICE` it sleeps once, so the executor drains its
    /// queue and runs its reactor (timers, files) as it would without the spin. Zero
    /// `spin_before_park` keeps it always cold.
    pub(crate) async fn run_mailbox(self: Rc<Self>) {
        let hot_for = self.config.spin_before_park;
        while !self.closed.get() {
            let cold = async { self.mailbox.recv().await.map(Some) };
            let expected = async {
                self.mail_expected.wait().await;
                Some(None)
            };
            let Some(first) = futures_lite::future::or(cold, expected).await else {
                return;
            };
            if let Some(message) = first {
                self.handle_message(message);
                self.handle_burst();
            }
            if hot_for.is_zero() {
                // Let the shard's own tasks run before the next burst.
                futures_lite::future::yield_now().await;
                continue;
            }
            let started = sys::now();
            self.last_mail.set(started);
            let (mut polled, mut reacted) = (started, started);
            while !self.closed.get() {
                let now = sys::now();
                if self.drain_mailbox() > 0 {
                    self.last_mail.set(now);
                } else if now.saturating_duration_since(self.last_mail.get()) >= hot_for {
                    break;
                }
                if now.saturating_duration_since(reacted) >= REACTOR_SLICE {
                    sys::sleep(Duration::from_micros(1)).await;
                    let resumed = sys::now();
                    (polled, reacted) = (resumed, resumed);
                } else {
                    if now.saturating_duration_since(polled) >= NET_SLICE {
                        self.poll_io();
                        polled = now;
                    }
                    futures_lite::future::yield_now().await;
                }
            }
        }
    }

    /// Whether a `Stop` arrived: the shard is stopping.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Completes once a `Stop` arrived.
    pub(crate) async fn stop_requested(&self) {
        while !self.stopping.get() {
            self.stop_requested.wait().await;
        }
    }

    /// Counts a request as in flight until the guard drops (answered, or dropped with its
    /// connection).
    pub(crate) fn enter_request(&self) -> InFlight<'_> {
        self.requests_in_flight
            .set(self.requests_in_flight.get() + 1);
        InFlight { shard: self }
    }

    /// Requests being handled now (see [`Shard::enter_request`]).
    pub(crate) fn requests_in_flight(&self) -> usize {
        self.requests_in_flight.get()
    }

    /// Drops the shard's hooks into the network driver (adopter, poller), at the end of a stop's
    /// drain: WebSockets moved here later are closed.
    pub(crate) fn release_network(&self) {
        self.adopter.borrow_mut().take();
        self.io_poller.borrow_mut().take();
    }

    /// Answers the calls still in the inbox with "stopping" and drops the other mail, at the
    /// very end of the shard (the mailbox task has ended): once the shard is dropped, sends to it
    /// fail at once, so no caller is left waiting for a reply.
    pub(crate) fn refuse_mail(&self) {
        while let Some(message) = self.mailbox.try_recv() {
            self.refuse(message);
        }
    }

    /// Refuses mail as it arrives, for as long as it is polled: between the end of a stop's drain
    /// and the shard's end (saving every changed actor can take a while), so that a call forwarded
    /// here meanwhile is answered "stopping" at once instead of waiting for the shard to end.
    pub(crate) async fn refuse_mail_while_saving(&self) {
        while let Some(message) = self.mailbox.recv().await {
            self.mailbox.take_waiting();
            self.refuse(message);
        }
    }

    fn refuse(&self, message: Message) {
        match message {
            Message::Call { from, token, .. } => {
                let reply = Reply::error(&RivetError::stopping());
                let _ = self.postman.send(from, Message::Reply { token, reply });
            }
            // A reply to a call of this shard's whose request outlived the stop grace: harmless
            // to deliver (or to discard, if its future was dropped with its connection).
            Message::Reply { token, reply } => self.waiters.borrow_mut().complete(token, reply),
            // Dropping the socket closes the connection.
            Message::Adopt { .. } | Message::Stop => {}
        }
    }

    /// Ends the mailbox task (`run_mailbox`), at the end of a stop's drain.
    pub(crate) fn close_mailbox(&self) {
        self.closed.set(true);
        self.mail_expected.notify();
    }

    /// Handles the mail that arrived, if any, now: called at the shard's hot points (each HTTP
    /// request, each connection message, each fairness yield) and by the mailbox task while it is
    /// hot. A busy executor polls its wake-up eventfd, and so runs a cold mailbox task, only when
    /// its run queue drains, which under load delays cross-shard calls and replies by the length
    /// of that queue; this check costs one relaxed atomic load when there is no mail. Returns the
    /// number of messages handled.
    pub(crate) fn drain_mailbox(self: &Rc<Self>) -> usize {
        if !self.mailbox.take_waiting() {
            return 0;
        }
        self.handle_burst()
    }

    /// Handles up to `MAILBOX_BURST_MAX` queued messages; more than that are left for the next
    /// look (the flag is set again), so a flood from other shards cannot starve this shard's own
    /// connections. Returns the number handled.
    fn handle_burst(self: &Rc<Self>) -> usize {
        for handled in 0..MAILBOX_BURST_MAX {
            let Some(message) = self.mailbox.try_recv() else {
                return handled;
            };
            self.handle_message(message);
        }
        // More than a burst: leave the rest for the next look.
        self.mailbox.set_waiting();
        MAILBOX_BURST_MAX
    }

    fn handle_message(self: &Rc<Self>, message: Message) {
        match message {
            Message::Call { from, token, call } => {
                let shard = self.clone();
                sys::spawn(async move {
                    let in_flight = shard.enter_request();
                    let reply = protocol::run_forwarded(&shard, call).await;
                    drop(in_flight);
                    // A caller that has ended awaits nothing any more.
                    let _ = shard.postman.send(from, Message::Reply { token, reply });
                });
            }
            Message::Reply { token, reply } => self.waiters.borrow_mut().complete(token, reply),
            Message::Adopt { socket, request } => {
                if self.stopping.get() {
                    // Too late to serve it here: dropping it closes the connection.
                    tracing::debug!(shard = self.index, "a WebSocket moved here while stopping");
                    drop(socket);
                    return;
                }
                let shard = self.clone();
                sys::spawn(async move {
                    // Waking a sleeping actor may read the store first.
                    let session = realtime::open(&shard, request).await;
                    match &*shard.adopter.borrow() {
                        Some(adopt) => adopt(socket, session),
                        None => {
                            tracing::error!("a WebSocket was moved to a shard without a driver")
                        }
                    }
                });
            }
            Message::Stop => {
                if !self.stopping.replace(true) {
                    tracing::debug!(shard = self.index, "stopping");
                    // Through the shard-local `Notify`, never with a message to itself: when this
                    // `Stop` was taken by a request's `drain_mailbox`, the same burst would take
                    // that message too (a clean stop hung that way, about once in 40 right after
                    // heavy load).
                    self.stop_requested.notify();
                }
            }
        }
    }
}

/// Whether a resolve may create the actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Create {
    /// `get`: never create.
    Never,
    /// `getOrCreate`.
    IfAbsent,
    /// `create`: fail with `actor/duplicate_key` if it exists.
    Always,
}

/// Calls this shard forwarded to others, awaiting their replies. A slab indexed by token, so
/// completing a call is an index, not a hash lookup or an allocation.
#[derive(Default)]
struct Waiters {
    slots: Vec<Slot>,
    free: Vec<Token>,
    in_use: usize,
}

enum Slot {
    Free,
    Waiting(Option<Waker>),
    Ready(Reply),
    /// The awaiting future was dropped (its connection closed); the reply is discarded.
    Abandoned,
}

impl Waiters {
    fn insert(&mut self) -> Token {
        self.in_use += 1;
        if let Some(token) = self.free.pop() {
            self.slots[token as usize] = Slot::Waiting(None);
            return token;
        }
        self.slots.push(Slot::Waiting(None));
        Token::try_from(self.slots.len() - 1).expect("forwarded_calls_max fits in a token")
    }

    fn release(&mut self, token: Token) {
        self.slots[token as usize] = Slot::Free;
        self.free.push(token);
        self.in_use -= 1;
    }

    fn complete(&mut self, token: Token, reply: Reply) {
        let slot = &mut self.slots[token as usize];
        match std::mem::replace(slot, Slot::Free) {
            Slot::Waiting(waker) => {
                *slot = Slot::Ready(reply);
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
            Slot::Abandoned => self.release(token),
            Slot::Free | Slot::Ready(_) => {
                // A reply for a token we did not send: a bug in the transport, not bad input.
                panic!("reply for token {token} that is not awaited");
            }
        }
    }
}

struct WaitReply {
    shard: Rc<Shard>,
    token: Token,
}

impl Future for WaitReply {
    type Output = Reply;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        let mut waiters = self.shard.waiters.borrow_mut();
        let slot = &mut waiters.slots[self.token as usize];
        match slot {
            Slot::Waiting(waker) => {
                *waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Slot::Ready(_) => {
                let Slot::Ready(reply) = std::mem::replace(slot, Slot::Free) else {
                    unreachable!()
                };
                waiters.release(self.token);
                // Leave the slot untouchable by our Drop.
                drop(waiters);
                let this = self.get_mut();
                this.token = Token::MAX;
                Poll::Ready(reply)
            }
            Slot::Free | Slot::Abandoned => panic!("polled a released wait slot"),
        }
    }
}

impl Drop for WaitReply {
    fn drop(&mut self) {
        if self.token == Token::MAX {
            return;
        }
        let mut waiters = self.shard.waiters.borrow_mut();
        match waiters.slots[self.token as usize] {
            Slot::Waiting(_) => waiters.slots[self.token as usize] = Slot::Abandoned,
            Slot::Ready(_) => waiters.release(self.token),
            Slot::Free | Slot::Abandoned => {}
        }
    }
}
