//! The actor API: how users define actor types, their state, vars and actions.
//!
//! An actor type implements [`Actor`] and registers its actions in [`Actor::actions`]:
//!
//! ```
//! use pinion_runtime::{ActionResult, Actions, Actor, ActorInfo, Value};
//!
//! struct Counter;
//! #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
//! struct CounterState {
//!     count: i64,
//! }
//!
//! impl Actor for Counter {
//!     const NAME: &'static str = "counter";
//!     type State = CounterState;
//!     type Vars = ();
//!     type ConnState = ();
//!     fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<CounterState> {
//!         Ok(CounterState { count: 0 })
//!     }
//!     fn create_vars(_: &ActorInfo, _: &CounterState) {}
//!     fn actions(actions: &mut Actions<Self>) {
//!         actions
//!             .action("increment", |c, (amount,): (Option<i64>,)| {
//!                 c.state.count += amount.unwrap_or(1);
//!                 Ok(c.state.count)
//!             })
//!             .action_async("addLater", |c, (x,): (i64,)| async move {
//!                 // ... await something here; other actions of this actor run meanwhile ...
//!                 Ok(c.state_mut(|s| {
//!                     s.count += x;
//!                     s.count
//!                 }))
//!             });
//!     }
//! }
//! ```
//!
//! **Borrows of state cannot cross an await, by construction.** A synchronous action gets
//! `&mut State` in [`ActionCtx`] and cannot await at all. An asynchronous action gets an owned
//! [`Ctx`] whose only access to the state is [`Ctx::state`] / [`Ctx::state_mut`], which lend it to
//! a synchronous closure whose result type cannot mention the borrow. So while one action awaits,
//! other actions of the same actor run (as in RivetKit, which the re-entrant coordinator/worker
//! pattern needs), and none of them can observe a half-finished borrow.
//!
//! Both of these are compile errors, which is the point:
//!
//! ```compile_fail
//! # use pinion_runtime::{ActionResult, Actions, Actor, ActorInfo, Value, sys};
//! # struct A; #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)] struct S { n: i64 }
//! # impl Actor for A {
//! #     const NAME: &'static str = "a"; type State = S; type Vars = (); type ConnState = ();
//! #     fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<S> { Ok(S { n: 0 }) }
//! #     fn create_vars(_: &ActorInfo, _: &S) {}
//! #     fn actions(actions: &mut Actions<Self>) {
//! // A borrow of the state cannot leave the closure it was lent to...
//! actions.action_async("leak", |c, ()| async move {
//!     let state: &mut S = c.state_mut(|s| s);
//!     sys::sleep(std::time::Duration::from_millis(1)).await;
//!     state.n += 1;
//!     Ok(state.n)
//! });
//! #     }
//! # }
//! ```
//!
//! ```compile_fail
//! # use pinion_runtime::{ActionResult, Actions, Actor, ActorInfo, Value, sys};
//! # struct A; #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)] struct S { n: i64 }
//! # impl Actor for A {
//! #     const NAME: &'static str = "a"; type State = S; type Vars = (); type ConnState = ();
//! #     fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<S> { Ok(S { n: 0 }) }
//! #     fn create_vars(_: &ActorInfo, _: &S) {}
//! #     fn actions(actions: &mut Actions<Self>) {
//! // ...and the `&mut State` of a synchronous action cannot be carried into a future.
//! actions.action("escape", |c, ()| {
//!     let state = &mut *c.state;
//!     sys::spawn(async move { state.n += 1 });
//!     Ok(())
//! });
//! #     }
//! # }
//! ```
//!
//! Errors: return a [`UserError`] for failures the client should see (its code, message and
//! metadata reach the client). Any other error (`?` on anything implementing `std::error::Error`)
//! or a panic becomes `internal/internal_error` for the client with no detail, is logged, and the
//! shard keeps serving.

use std::any::{Any, TypeId};
use std::cell::{Cell, Ref, RefCell, RefMut};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use pinion_net::server::{WsSender, WsSession};

use crate::client::Client;
use crate::conn::{Conn, ConnId, ConnKey, Conns};
use crate::persist::{Persist, PersistError};
use crate::placement::ActorId;
use crate::schedule::Schedule;
use crate::sys;
use crate::value::{self, ArgList, Value};

/// The result type of actions and hooks.
pub type ActionResult<T> = Result<T, ActionError>;

/// How the runtime keeps an actor type: when its state is saved, when it sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActorOptions {
    /// How long an actor stays awake without a request, action, connection or schedule before
    /// it is saved and evicted from memory (RivetKit's `sleepTimeout`). `None`: the server's
    /// [`crate::Config::sleep_timeout`] (30 s by default, as RivetKit).
    pub sleep_timeout: Option<Duration>,
    /// Never sleep on idleness (RivetKit's `noSleep`); [`ActionCtx::sleep`] still works.
    pub no_sleep: bool,
    /// Sleep even with realtime connections open (they are closed with 1000 when it does, and
    /// clients reconnect, waking it). Off by default: a connected actor stays awake.
    pub sleep_with_conns: bool,
    /// How long a state change may wait before it is written (RivetKit's `stateSaveInterval`).
    /// `None`: the server's [`crate::Config::save_interval`] (10 s, as RivetKit). Changes are
    /// also written when the actor sleeps and when the server stops cleanly.
    pub save_interval: Option<Duration>,
    /// The output gate (beyond RivetKit, like Cloudflare Durable Objects'): a reply, and every
    /// event an action emitted, is held until the state as of the end of that action is on
    /// disk. Saves of many actors share one `fdatasync` (group commit), so this stays fast.
    pub durable_before_reply: bool,
}

impl ActorOptions {
    pub const DEFAULT: ActorOptions = ActorOptions {
        sleep_timeout: None,
        no_sleep: false,
        sleep_with_conns: false,
        save_interval: None,
        durable_before_reply: false,
    };
}

impl Default for ActorOptions {
    fn default() -> ActorOptions {
        ActorOptions::DEFAULT
    }
}

/// An actor type: its name, state, vars and actions.
pub trait Actor: Sized + 'static {
    /// The name clients address the type by (`client.counter`, `"name":"counter"`).
    const NAME: &'static str;
    /// Durable state: created once per actor, by [`Actor::create_state`], and saved as an rkyv
    /// snapshot (derive `rkyv::Archive`, `rkyv::Serialize` and `rkyv::Deserialize`; see
    /// [`crate::persist`]).
    type State: Persist;
    /// Ephemeral per-instance data, rebuilt by [`Actor::create_vars`] every time the actor starts.
    type Vars: 'static;
    /// Per-connection state (RivetKit's `conn.state`), built by [`Actor::create_conn_state`]
    /// when a client connects. `()` for actors that keep none.
    type ConnState: 'static;

    /// Builds the state of a new actor from its creation input (`None` when the client gave none).
    /// Runs once, when the actor is created.
    fn create_state(actor: &ActorInfo, input: Option<Value>) -> ActionResult<Self::State>;

    /// Builds the vars every time the actor starts.
    fn create_vars(actor: &ActorInfo, state: &Self::State) -> Self::Vars;

    /// Registers the actions.
    fn actions(actions: &mut Actions<Self>);

    /// Builds the state of a new connection from its params (`null` when the client gave
    /// none), after [`Actor::on_before_connect`] accepted it (RivetKit's `createConnState`).
    /// An error rejects the connection like `on_before_connect` does. The default builds
    /// `ConnState = ()`; actors with any other `ConnState` must implement it (the default
    /// fails every connection with an internal error that says so).
    fn create_conn_state(
        actor: &mut ActionCtx<'_, Self>,
        params: &Value,
    ) -> ActionResult<Self::ConnState> {
        let _ = (actor, params);
        default_conn_state::<Self::ConnState>().ok_or_else(|| {
            ActionError::internal(format!(
                "{} has a ConnState without Default and does not implement create_conn_state",
                Self::NAME
            ))
        })
    }

    /// Runs once, when the actor is created, before [`Actor::on_wake`] (RivetKit's
    /// `onCreate`). An error fails the creation.
    fn on_create(actor: &mut ActionCtx<'_, Self>) -> ActionResult<()> {
        let _ = actor;
        Ok(())
    }

    /// Runs every time the actor starts, after its vars are built (RivetKit's `onWake`).
    /// An error fails the start.
    fn on_wake(actor: &mut ActionCtx<'_, Self>) -> ActionResult<()> {
        let _ = actor;
        Ok(())
    }

    /// How the runtime keeps this type (sleep timeout, save interval, output gate).
    const OPTIONS: ActorOptions = ActorOptions::DEFAULT;

    /// Runs before the actor sleeps (idle for its sleep timeout, or [`ActionCtx::sleep`]):
    /// after its last action, before its connections are closed and its state is saved
    /// (RivetKit's `onSleep`). Changes it makes to the state are saved.
    fn on_sleep(actor: &mut ActionCtx<'_, Self>) {
        let _ = actor;
    }

    /// Runs when the actor is destroyed ([`ActionCtx::destroy`]), before its data is deleted
    /// (RivetKit's `onDestroy`).
    fn on_destroy(actor: &mut ActionCtx<'_, Self>) {
        let _ = actor;
    }

    /// Whether [`Actor::on_state_change`] runs. Off by default: noticing a change costs a
    /// snapshot of the state after every action, hook and `state_mut`.
    const OBSERVES_STATE: bool = false;

    /// Runs after an action or hook changed the state (compared by snapshot), when
    /// [`Actor::OBSERVES_STATE`] is set (RivetKit's `onStateChange`). Changes it makes itself
    /// do not trigger it again.
    fn on_state_change(actor: &mut ActionCtx<'_, Self>) {
        let _ = actor;
    }

    /// Runs before a client connects, with its params: a realtime connection (`connect()`),
    /// the ephemeral connection of a stateless call, or a raw request or WebSocket (RivetKit's
    /// `onBeforeConnect`). A [`UserError`] rejects it: a stateless caller gets the error, a
    /// realtime connection is closed with 1011 and the error's code as the reason.
    fn on_before_connect(actor: &mut ActionCtx<'_, Self>, params: &Value) -> ActionResult<()> {
        let _ = (actor, params);
        Ok(())
    }

    /// Runs when a connection was accepted and added to the actor's connections;
    /// [`ActionCtx::conn`] is the new connection (RivetKit's `onConnect`).
    fn on_connect(actor: &mut ActionCtx<'_, Self>) {
        let _ = actor;
    }

    /// Runs when a connection ends, while [`ActionCtx::conn`] still shows it (RivetKit's
    /// `onDisconnect`); afterwards it is gone from [`ActionCtx::conns`].
    fn on_disconnect(actor: &mut ActionCtx<'_, Self>) {
        let _ = actor;
    }

    /// Raw WebSocket (RivetKit's `onWebSocket`): connections to
    /// `/gateway/{id}/websocket/{path}`. Returns the session that serves the socket (its
    /// messages pass through untouched, text as text and binary as binary), `None` (the
    /// default) when the actor has none (the socket is then closed with 1011
    /// `websocket_not_defined`), or an error, which closes it with 1011 and the error's code.
    /// The session can keep `actor` to reach the state.
    fn on_websocket(
        actor: Ctx<Self>,
        request: &RawRequest<'_>,
    ) -> Option<ActionResult<Box<dyn WsSession>>> {
        let _ = (actor, request);
        None
    }

    /// Raw HTTP (RivetKit's `onRequest`): requests to `/gateway/{id}/request/{path}`. `None`
    /// (the default) means the actor has no handler, which clients see as
    /// `404 handler/request_not_defined`. Runs like a synchronous action: atomic, with direct
    /// access to the state.
    fn on_request(
        actor: &mut ActionCtx<'_, Self>,
        request: &RawRequest<'_>,
    ) -> Option<ActionResult<RawResponse>> {
        let _ = (actor, request);
        None
    }

    /// Whether [`Actor::on_before_action_response`] runs. Off by default, so that actors without
    /// the hook encode outputs straight to the wire instead of through a [`Value`].
    const TRANSFORMS_OUTPUT: bool = false;

    /// RivetKit's `onBeforeActionResponse`: rewrites the output of every action (over HTTP and,
    /// with connections, over WebSocket) before it is sent. `None` is JS `undefined`. Runs only
    /// when [`Actor::TRANSFORMS_OUTPUT`] is true.
    fn on_before_action_response(
        actor: &mut ActionCtx<'_, Self>,
        action: &str,
        args: &[Value],
        output: Option<Value>,
    ) -> ActionResult<Option<Value>> {
        let _ = (actor, action, args);
        Ok(output)
    }
}

/// What `create_conn_state` builds by default: `()` when that is the type, else nothing.
fn default_conn_state<T: 'static>() -> Option<T> {
    let unit: Box<dyn std::any::Any> = Box::new(());
    unit.downcast::<T>().ok().map(|state| *state)
}

/// A raw HTTP request as an actor's [`Actor::on_request`] sees it.
#[derive(Debug)]
pub struct RawRequest<'a> {
    pub method: &'a str,
    /// The path below `/gateway/{id}/request`, starting with `/` (`/request/a/b` → `/a/b`).
    pub path: &'a str,
    /// The query string with its leading `?`, or empty, as `URL.search` gives it.
    pub query: &'a str,
    pub headers: &'a [(&'a str, &'a [u8])],
    pub body: &'a [u8],
}

impl RawRequest<'_> {
    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// What [`Actor::on_request`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// A 200 response with a JSON body.
    pub fn json(body: impl Into<Vec<u8>>) -> RawResponse {
        RawResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
        }
    }
}

/// What an actor knows about itself.
#[derive(Clone, Debug)]
pub struct ActorInfo {
    pub(crate) name: &'static str,
    /// A boxed slice, not a `Vec`: every awake actor holds one, and the capacity word would
    /// cost 8 bytes each.
    pub(crate) key: Box<[String]>,
    pub(crate) id: ActorId,
    /// When the actor was created (Unix ms).
    pub(crate) created_ms: u64,
}

impl ActorInfo {
    pub fn name(&self) -> &'static str {
        self.name
    }
    /// The key parts the actor was created with.
    pub fn key(&self) -> &[String] {
        &self.key
    }
    pub fn actor_id(&self) -> ActorId {
        self.id
    }
    /// When the actor was created, in milliseconds since the Unix epoch.
    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    pub(crate) fn record(&self) -> pinion_storage::ActorRecord {
        pinion_storage::ActorRecord {
            id: self.id.0,
            name: self.name.to_string(),
            key: self.key.to_vec(),
            created_ms: self.created_ms,
            destroyed_ms: None,
        }
    }
}

/// An error the client sees: group `user`, the given code (default `user_error`), message and
/// optional metadata, HTTP status 400.
///
/// It deliberately does not implement `std::error::Error`, so that `?` can turn every *other*
/// error into an internal one without overlapping this conversion.
#[derive(Clone, Debug, PartialEq)]
pub struct UserError {
    pub code: String,
    pub message: String,
    pub metadata: Option<Value>,
}

impl UserError {
    pub fn new(message: impl Into<String>) -> UserError {
        UserError {
            code: "user_error".into(),
            message: message.into(),
            metadata: None,
        }
    }

    pub fn code(mut self, code: impl Into<String>) -> UserError {
        self.code = code.into();
        self
    }

    /// Attaches metadata; anything serializable. A value that fails to serialize is dropped
    /// rather than turning a user error into an internal one.
    pub fn metadata(mut self, metadata: impl Serialize) -> UserError {
        self.metadata = value::to_value(&metadata).ok();
        self
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user/{}: {}", self.code, self.message)
    }
}

/// Why an action failed.
pub enum ActionError {
    /// Reaches the client as is.
    User(UserError),
    /// Reaches the client as `internal/internal_error`; the detail stays in the server log.
    Internal(Box<dyn std::error::Error>),
}

impl ActionError {
    /// An internal error with a message for the log.
    pub fn internal(message: impl Into<String>) -> ActionError {
        ActionError::Internal(message.into().into())
    }
}

impl From<UserError> for ActionError {
    fn from(error: UserError) -> ActionError {
        ActionError::User(error)
    }
}

impl<E: std::error::Error + 'static> From<E> for ActionError {
    fn from(error: E) -> ActionError {
        ActionError::Internal(Box::new(error))
    }
}

impl fmt::Debug for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionError::User(error) => write!(f, "{error}"),
            ActionError::Internal(error) => write!(f, "internal: {error}"),
        }
    }
}

/// The actor's state as an action or hook sees it: dereferences to `A::State`, and notes any
/// mutable access (`c.state.n += 1`, `&mut *c.state`, a `&mut self` method) as a change, which
/// is saved (and, with `durable_before_reply`, made durable before the reply) and shown to
/// `on_state_change`. A call that only reads costs no snapshot.
///
/// A change made through a shared reference (a `Cell` or `RefCell` inside the state) is not
/// noticed: keep such fields out of the state, or mutate the state through `&mut` after them.
pub struct Tracked<'a, S> {
    state: &'a mut S,
    touched: &'a Cell<bool>,
}

impl<S> std::ops::Deref for Tracked<'_, S> {
    type Target = S;

    fn deref(&self) -> &S {
        self.state
    }
}

impl<S> std::ops::DerefMut for Tracked<'_, S> {
    fn deref_mut(&mut self) -> &mut S {
        self.touched.set(true);
        self.state
    }
}

/// The context of a synchronous action: direct access to state and vars.
pub struct ActionCtx<'a, A: Actor> {
    pub state: Tracked<'a, A::State>,
    pub vars: &'a mut A::Vars,
    cell: &'a Rc<ActorCell<A>>,
    conn: ConnKey,
}

impl<A: Actor> ActionCtx<'_, A> {
    pub fn name(&self) -> &'static str {
        self.cell.info.name
    }
    pub fn key(&self) -> &[String] {
        &self.cell.info.key
    }
    pub fn actor_id(&self) -> ActorId {
        self.cell.info.id
    }
    /// An owned handle to this actor, e.g. to move into a spawned task.
    pub fn handle(&self) -> Ctx<A> {
        Ctx {
            cell: self.cell.clone(),
            conn: self.conn,
        }
    }

    /// The connection this action (or hook) runs for: the realtime connection the call came
    /// on, or the ephemeral connection of a stateless call (RivetKit's `c.conn`).
    ///
    /// # Panics
    /// In hooks that run without a connection (`on_create`, `on_wake`, `on_before_connect`,
    /// `create_conn_state`), and while [`ActionCtx::conn_mut`] is held; like every panic in
    /// an action, the caller sees an internal error. See [`ActionCtx::try_conn`].
    pub fn conn(&self) -> Ref<'_, Conn<A>> {
        self.try_conn()
            .expect("no connection here (a hook that runs before the connection exists?)")
    }

    /// [`ActionCtx::conn`], or `None` where there is no connection.
    pub fn try_conn(&self) -> Option<Ref<'_, Conn<A>>> {
        Ref::filter_map(self.cell.conns.borrow(), |conns| conns.conn(self.conn)).ok()
    }

    /// The calling connection, mutably (for its state).
    ///
    /// # Panics
    /// As [`ActionCtx::conn`], and while any other borrow of the connections is held.
    pub fn conn_mut(&self) -> RefMut<'_, Conn<A>> {
        RefMut::filter_map(self.cell.conns.borrow_mut(), |conns| {
            conns.conn_mut(self.conn)
        })
        .ok()
        .expect("no connection here (a hook that runs before the connection exists?)")
    }

    /// Every connection of the actor (RivetKit's `c.conns`).
    pub fn conns(&self) -> Ref<'_, Conns<A>> {
        self.cell.conns.borrow()
    }

    /// Sends event `name` to every connection subscribed to it (RivetKit's `c.broadcast`).
    /// `args` is a tuple of the event's arguments (`(count,)`); see [`Conn::send`].
    pub fn broadcast(&self, name: &str, args: impl Serialize) -> ActionResult<()> {
        broadcast(self.cell, name, args)
    }

    /// A client for calling other actors (RivetKit's `c.client()`); calls are asynchronous, so
    /// use it from asynchronous actions (or move it into a spawned task).
    pub fn client(&self) -> Client {
        self.cell.client.clone()
    }

    /// Durable timers of this actor (RivetKit's `c.schedule`).
    pub fn schedule(&self) -> Schedule {
        self.cell.schedule()
    }

    /// Puts the actor to sleep once its running actions are done (RivetKit's `c.sleep()`):
    /// `on_sleep` runs, its state is saved, it leaves memory, and the next request wakes it.
    pub fn sleep(&self) {
        self.cell.request_sleep();
    }

    /// Destroys the actor after this action (RivetKit's `c.destroy()`): `on_destroy` runs, its
    /// connections are closed, its state and schedules are deleted, and its key is free
    /// (`get` finds nothing, `getOrCreate` creates a new actor).
    pub fn destroy(&self) {
        self.cell.request_destroy();
    }
}

fn broadcast<A: Actor>(cell: &ActorCell<A>, name: &str, args: impl Serialize) -> ActionResult<()> {
    match cell.conns.try_borrow() {
        Ok(conns) => conns.broadcast(name, args),
        Err(_) => Err(ActionError::internal(
            "broadcast while the connections are borrowed mutably (conn_mut)",
        )),
    }
}

/// The context of an asynchronous action: an owned handle to the actor. State and vars are lent
/// to synchronous closures only, so no borrow can be held across an await.
pub struct Ctx<A: Actor> {
    cell: Rc<ActorCell<A>>,
    conn: ConnKey,
}

impl<A: Actor> Clone for Ctx<A> {
    fn clone(&self) -> Self {
        Ctx {
            cell: self.cell.clone(),
            conn: self.conn,
        }
    }
}

impl<A: Actor> Ctx<A> {
    pub fn name(&self) -> &'static str {
        self.cell.info.name
    }
    pub fn key(&self) -> &[String] {
        &self.cell.info.key
    }
    pub fn actor_id(&self) -> ActorId {
        self.cell.info.id
    }

    /// Runs `f` with shared access to the state.
    ///
    /// Panics (caught, and reported to the client as an internal error) if called from inside
    /// `state_mut` of the same actor.
    pub fn state<R>(&self, f: impl FnOnce(&A::State) -> R) -> R {
        f(&self.cell.state.borrow())
    }

    /// Runs `f` with exclusive access to the state.
    pub fn state_mut<R>(&self, f: impl FnOnce(&mut A::State) -> R) -> R {
        let result = f(&mut self.cell.state.borrow_mut());
        self.cell.changed(self.conn);
        result
    }

    pub fn vars<R>(&self, f: impl FnOnce(&A::Vars) -> R) -> R {
        f(&self.cell.vars.borrow())
    }

    pub fn vars_mut<R>(&self, f: impl FnOnce(&mut A::Vars) -> R) -> R {
        f(&mut self.cell.vars.borrow_mut())
    }

    /// The id of the calling connection, while it is connected (see [`ActionCtx::conn`]).
    pub fn conn_id(&self) -> Option<ConnId> {
        self.cell.conns.borrow().conn(self.conn).map(Conn::id)
    }

    /// Runs `f` with the calling connection, or with `None` once it is gone (a realtime
    /// connection can close while an asynchronous action awaits).
    pub fn conn<R>(&self, f: impl FnOnce(Option<&Conn<A>>) -> R) -> R {
        f(self.cell.conns.borrow().conn(self.conn))
    }

    /// Runs `f` with the calling connection mutably, or with `None` once it is gone.
    pub fn conn_mut<R>(&self, f: impl FnOnce(Option<&mut Conn<A>>) -> R) -> R {
        f(self.cell.conns.borrow_mut().conn_mut(self.conn))
    }

    /// Runs `f` with every connection of the actor.
    pub fn conns<R>(&self, f: impl FnOnce(&Conns<A>) -> R) -> R {
        f(&self.cell.conns.borrow())
    }

    /// Sends event `name` to every connection subscribed to it; see [`ActionCtx::broadcast`].
    pub fn broadcast(&self, name: &str, args: impl Serialize) -> ActionResult<()> {
        broadcast(&self.cell, name, args)
    }

    /// A client for calling other actors (RivetKit's `c.client()`); see [`crate::client`].
    pub fn client(&self) -> Client {
        self.cell.client.clone()
    }

    /// See [`ActionCtx::schedule`].
    pub fn schedule(&self) -> Schedule {
        self.cell.schedule()
    }

    /// See [`ActionCtx::sleep`].
    pub fn sleep(&self) {
        self.cell.request_sleep();
    }

    /// See [`ActionCtx::destroy`].
    pub fn destroy(&self) {
        self.cell.request_destroy();
    }

    /// Saves the state now and completes once it is durable (RivetKit's
    /// `c.saveState({immediate: true})`). Many actors saving at once share one `fdatasync`.
    pub async fn save_state(&self) -> ActionResult<()> {
        let cell: Rc<dyn ActorObject> = self.cell.clone();
        match self.cell.client.shard.upgrade() {
            Some(shard) => shard.persist(&cell).await.map_err(ActionError::from),
            None => Err(ActionError::internal("the shard is stopping")),
        }
    }
}

/// Action arguments, decoded from the JSON argument array.
///
/// Implemented for tuples of up to 8 deserializable types (a missing trailing argument decodes as
/// `null`, so `Option<T>` parameters behave like JS optional parameters; extra arguments are
/// ignored, as in JS), for `()` and for [`Rest`].
pub trait FromArgs: Sized + 'static {
    fn from_args(args: &ArgList<'_>) -> Result<Self, value::Error>;
}

impl FromArgs for () {
    fn from_args(_: &ArgList<'_>) -> Result<(), value::Error> {
        Ok(())
    }
}

/// Every argument, untyped: for variadic actions such as `echo(...args)`.
pub struct Rest(pub Vec<Value>);

impl FromArgs for Rest {
    fn from_args(args: &ArgList<'_>) -> Result<Rest, value::Error> {
        args.rest(0).map(Rest)
    }
}

macro_rules! tuple_from_args {
    ($($name:ident $index:tt),+) => {
        impl<$($name: DeserializeOwned + 'static),+> FromArgs for ($($name,)+) {
            fn from_args(args: &ArgList<'_>) -> Result<Self, value::Error> {
                Ok(($(args.decode::<$name>($index)?,)+))
            }
        }
    };
}
tuple_from_args!(A 0);
tuple_from_args!(A 0, B 1);
tuple_from_args!(A 0, B 1, C 2);
tuple_from_args!(A 0, B 1, C 2, D 3);
tuple_from_args!(A 0, B 1, C 2, D 3, E 4);
tuple_from_args!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_args!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_args!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

/// What an action produced, encoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Output {
    /// The tagged JSON of the value was written to the caller's buffer.
    Written,
    /// The action returned `()`: RivetKit's `undefined`, sent as `{}` without an `output` field.
    Undefined,
}

/// A running asynchronous action. On success it yields the tagged JSON of its output (`None` for
/// `undefined`). The action's own code runs from the first poll on, so dropping a `Running` that
/// was never polled runs none of it (how a refused call is undone).
pub(crate) type Running = Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>, Failure>>>>;

/// An action started on an actor.
pub(crate) enum Started {
    /// A synchronous action ran to completion; on success its output is in the caller's buffer.
    Done(Result<Output, Failure>),
    /// An asynchronous action is running.
    Running(Running),
}

/// An action failure as the protocol layer sees it.
pub(crate) enum Failure {
    Action(ActionError),
    /// The arguments did not decode into the action's parameter types.
    BadArgs(value::Error),
    NotFound,
    /// The actor went to sleep or was destroyed while the caller held it.
    Stopping,
}

type SyncHandler<A> = Box<
    dyn Fn(&Rc<ActorCell<A>>, ConnKey, &CallArgs<'_, '_>, &mut Vec<u8>) -> Result<Output, Failure>,
>;
type AsyncHandler<A> =
    Box<dyn Fn(&Rc<ActorCell<A>>, ConnKey, &CallArgs<'_, '_>) -> Result<Running, Failure>>;

/// An action's arguments as the handler receives them: the decoded JSON list, and for a
/// same-shard call with owned arguments ([`crate::ActorHandle::call_owned`]) the values
/// themselves.
pub(crate) struct CallArgs<'l, 'a> {
    pub(crate) list: &'l ArgList<'a>,
    pub(crate) typed: Option<&'l Typed>,
}

impl<'l, 'a> CallArgs<'l, 'a> {
    pub(crate) fn json(list: &'l ArgList<'a>) -> CallArgs<'l, 'a> {
        CallArgs { list, typed: None }
    }

    /// The arguments as `Args`: moved out of the typed call when it carries exactly that type,
    /// decoded from the list otherwise.
    fn take<Args: FromArgs>(&self) -> Result<Args, Failure> {
        match self.typed.and_then(Typed::take_args::<Args>) {
            Some(args) => Ok(args),
            None => Args::from_args(self.list).map_err(Failure::BadArgs),
        }
    }

    /// Where an output of type `R` goes unencoded: the typed call's slot if its caller wants
    /// exactly `R` (and the actor type does not rewrite outputs).
    fn slot<A: Actor, R: 'static>(&self) -> Option<OutputSlot> {
        if A::TRANSFORMS_OUTPUT {
            return None;
        }
        self.typed
            .filter(|typed| typed.output == TypeId::of::<R>())
            .map(|typed| typed.slot.clone())
    }
}

/// Where a typed call's output lands (see [`Typed`]).
pub(crate) type OutputSlot = Rc<RefCell<Option<Box<dyn Any>>>>;

/// A same-shard call's owned arguments and the output type its caller wants: handed to the
/// action without being encoded, and its output handed back the same way, when the action was
/// registered with exactly those types. Otherwise the arguments are encoded and the output
/// decoded, as for any call.
pub(crate) struct Typed {
    args: Cell<Option<Box<dyn Any>>>,
    args_type: TypeId,
    encode: fn(&dyn Any, &mut Vec<u8>) -> Result<(), value::Error>,
    output: TypeId,
    pub(crate) slot: OutputSlot,
}

impl Typed {
    pub(crate) fn new<Args: Serialize + 'static, R: 'static>(args: Args) -> Typed {
        fn encode<Args: Serialize + 'static>(
            args: &dyn Any,
            out: &mut Vec<u8>,
        ) -> Result<(), value::Error> {
            let args = args
                .downcast_ref::<Args>()
                .expect("a typed call encodes its own arguments");
            out.extend_from_slice(b"{\"args\":");
            value::write_args(out, args)?;
            out.push(b'}');
            Ok(())
        }
        Typed {
            args: Cell::new(Some(Box::new(args))),
            args_type: TypeId::of::<Args>(),
            encode: encode::<Args>,
            output: TypeId::of::<R>(),
            slot: Rc::new(RefCell::new(None)),
        }
    }

    pub(crate) fn args_type(&self) -> TypeId {
        self.args_type
    }

    /// Writes the arguments as an action body (`{"args":[...]}`), for an action whose
    /// parameter types differ from them.
    pub(crate) fn encode_args(&self, out: &mut Vec<u8>) -> Result<(), value::Error> {
        let args = self.args.take().expect("the arguments are still here");
        let result = (self.encode)(&*args, out);
        self.args.set(Some(args));
        result
    }

    fn take_args<Args: 'static>(&self) -> Option<Args> {
        let args = self.args.take()?;
        match args.downcast::<Args>() {
            Ok(args) => Some(*args),
            Err(args) => {
                self.args.set(Some(args));
                None
            }
        }
    }
}

enum Handler<A: Actor> {
    Sync(SyncHandler<A>),
    Async(AsyncHandler<A>),
}

/// The action table of an actor type, filled by [`Actor::actions`].
pub struct Actions<A: Actor> {
    handlers: HashMap<&'static str, Handler<A>>,
    /// The parameter type of each action, for typed same-shard calls.
    arg_types: HashMap<&'static str, TypeId>,
}

impl<A: Actor> Actions<A> {
    /// Registers a synchronous action. It runs to completion before any other action of the actor
    /// starts, so it is atomic (200 concurrent `increment(1)` give exactly 200).
    pub fn action<Args, R, F>(&mut self, name: &'static str, f: F) -> &mut Self
    where
        Args: FromArgs,
        R: Serialize + 'static,
        F: Fn(&mut ActionCtx<'_, A>, Args) -> ActionResult<R> + 'static,
    {
        let handler = move |cell: &Rc<ActorCell<A>>,
                            conn: ConnKey,
                            args: &CallArgs<'_, '_>,
                            out: &mut Vec<u8>| {
            let arg_values = transform_args::<A>(args.list)?;
            let slot = args.slot::<A, R>();
            let args = args.take::<Args>()?;
            with_ctx(cell, conn, |ctx| {
                let result = f(ctx, args).map_err(Failure::Action)?;
                if A::TRANSFORMS_OUTPUT {
                    encode(&transform(ctx, name, &arg_values, &result)?, out)
                } else if let Some(slot) = slot {
                    *slot.borrow_mut() = Some(Box::new(result));
                    Ok(Output::Undefined)
                } else {
                    encode(&result, out)
                }
            })
            .map_err(Failure::Action)?
        };
        self.insert(name, TypeId::of::<Args>(), Handler::Sync(Box::new(handler)))
    }

    /// Registers an asynchronous action. While it awaits, other actions of the same actor run.
    pub fn action_async<Args, R, F, Fut>(&mut self, name: &'static str, f: F) -> &mut Self
    where
        Args: FromArgs,
        R: Serialize + 'static,
        F: Fn(Ctx<A>, Args) -> Fut + 'static,
        Fut: Future<Output = ActionResult<R>> + 'static,
    {
        let f = Rc::new(f);
        let handler = move |cell: &Rc<ActorCell<A>>, conn: ConnKey, args: &CallArgs<'_, '_>| {
            let arg_values = transform_args::<A>(args.list)?;
            let slot = args.slot::<A, R>();
            let args = args.take::<Args>()?;
            let ctx = Ctx {
                cell: cell.clone(),
                conn,
            };
            let cell = cell.clone();
            let f = f.clone();
            let future: Pin<Box<dyn Future<Output = _>>> = Box::pin(async move {
                let started = catch_unwind(AssertUnwindSafe(|| f(ctx, args)));
                let result = match started {
                    Ok(future) => CatchUnwind(future).await,
                    Err(panic) => Err(panic),
                };
                match result {
                    Ok(Ok(value)) if A::TRANSFORMS_OUTPUT => {
                        let output =
                            with_ctx(&cell, conn, |ctx| transform(ctx, name, &arg_values, &value))
                                .map_err(Failure::Action)??;
                        encode_owned(&output)
                    }
                    Ok(Ok(value)) => match slot {
                        Some(slot) => {
                            *slot.borrow_mut() = Some(Box::new(value));
                            Ok(None)
                        }
                        None => encode_owned(&value),
                    },
                    Ok(Err(error)) => Err(Failure::Action(error)),
                    Err(panic) => Err(Failure::Action(panicked(panic))),
                }
            });
            Ok(future)
        };
        self.insert(
            name,
            TypeId::of::<Args>(),
            Handler::Async(Box::new(handler)),
        )
    }

    fn insert(&mut self, name: &'static str, args: TypeId, handler: Handler<A>) -> &mut Self {
        self.arg_types.insert(name, args);
        let previous = self.handlers.insert(name, handler);
        assert!(
            previous.is_none(),
            "action {name} of {} registered twice",
            A::NAME
        );
        self
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.handlers.keys().copied()
    }
}

/// The arguments as values, for [`Actor::on_before_action_response`]; empty (and free) for
/// actors without the hook.
fn transform_args<A: Actor>(args: &ArgList<'_>) -> Result<Vec<Value>, Failure> {
    if A::TRANSFORMS_OUTPUT {
        args.rest(0).map_err(Failure::BadArgs)
    } else {
        Ok(Vec::new())
    }
}

/// Runs [`Actor::on_before_action_response`] on an action's result.
fn transform<A: Actor, R: Serialize + 'static>(
    ctx: &mut ActionCtx<'_, A>,
    action: &str,
    args: &[Value],
    result: &R,
) -> Result<Transformed, Failure> {
    let output = if TypeId::of::<R>() == TypeId::of::<()>() {
        None
    } else {
        Some(value::to_value(result).map_err(unserializable)?)
    };
    A::on_before_action_response(ctx, action, args, output)
        .map(Transformed)
        .map_err(Failure::Action)
}

/// An output rewritten by [`Actor::on_before_action_response`]; `None` is `undefined`.
struct Transformed(Option<Value>);

impl Serialize for Transformed {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

fn encode<R: Serialize + 'static>(value: &R, out: &mut Vec<u8>) -> Result<Output, Failure> {
    if TypeId::of::<R>() == TypeId::of::<()>() {
        return Ok(Output::Undefined);
    }
    if let Some(Transformed(None)) = (value as &dyn std::any::Any).downcast_ref::<Transformed>() {
        return Ok(Output::Undefined);
    }
    value::write_tagged(out, value).map_err(unserializable)?;
    Ok(Output::Written)
}

/// [`encode`] into a buffer of its own, for outputs that arrive after an await.
fn encode_owned<R: Serialize + 'static>(value: &R) -> Result<Option<Vec<u8>>, Failure> {
    let mut out = Vec::new();
    Ok(match encode(value, &mut out)? {
        Output::Written => Some(out),
        Output::Undefined => None,
    })
}

fn unserializable(error: value::Error) -> Failure {
    Failure::Action(ActionError::internal(format!(
        "the action's result does not serialize: {error}"
    )))
}

/// Runs `f` with exclusive access to the actor's state and vars, as synchronous code does:
/// a panic inside becomes an internal error.
fn with_ctx<A: Actor, T>(
    cell: &Rc<ActorCell<A>>,
    conn: ConnKey,
    f: impl FnOnce(&mut ActionCtx<'_, A>) -> T,
) -> ActionResult<T> {
    let (Ok(mut state), Ok(mut vars)) = (cell.state.try_borrow_mut(), cell.vars.try_borrow_mut())
    else {
        return Err(ActionError::internal(
            "state is borrowed by a closure that is still running",
        ));
    };
    let touched = Cell::new(false);
    let mut ctx = ActionCtx {
        state: Tracked {
            state: &mut *state,
            touched: &touched,
        },
        vars: &mut *vars,
        cell,
        conn,
    };
    let started = sys::now();
    let result = catch_unwind(AssertUnwindSafe(|| f(&mut ctx))).map_err(panicked);
    let ended = sys::now();
    cell.life.last_active.set(ended);
    cell.life.charge(started, ended);
    if !touched.get() {
        // Read only (or a `state_mut` of its own, which did its bookkeeping).
        return result;
    }
    if A::OBSERVES_STATE && !cell.life.observing.get() {
        cell.life.observing.set(true);
        let observed = catch_unwind(AssertUnwindSafe(|| observe_change(&mut ctx)));
        cell.life.observing.set(false);
        if observed.is_err() {
            tracing::error!(actor = A::NAME, "on_state_change panicked");
        }
    }
    cell.mark_dirty();
    result
}

/// Runs `on_state_change` if the state's snapshot differs from the last one seen.
fn observe_change<A: Actor>(ctx: &mut ActionCtx<'_, A>) {
    let mut bytes = Vec::new();
    if ctx.state.save(&mut bytes).is_err() {
        return;
    }
    let hash = hash_bytes(&bytes);
    if hash == ctx.cell.life.observed_hash.replace(hash) {
        return;
    }
    A::on_state_change(ctx);
    bytes.clear();
    if ctx.state.save(&mut bytes).is_ok() {
        ctx.cell.life.observed_hash.set(hash_bytes(&bytes));
    }
}

pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(bytes)
}

fn panicked(panic: Box<dyn std::any::Any + Send>) -> ActionError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".into());
    ActionError::internal(format!("action panicked: {message}"))
}

/// Polls the inner future, turning a panic during a poll into an `Err`.
struct CatchUnwind<F>(F);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning of the only field; `CatchUnwind` never moves it out.
        let inner = unsafe { self.map_unchecked_mut(|this| &mut this.0) };
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// One live actor of type `A`.
pub(crate) struct ActorCell<A: Actor> {
    info: ActorInfo,
    state: RefCell<A::State>,
    vars: RefCell<A::Vars>,
    conns: RefCell<Conns<A>>,
    actions: Rc<Actions<A>>,
    client: Client,
    /// Asynchronous actions of this actor still running.
    pending: Cell<usize>,
    life: Life,
}

/// Where an awake actor is in its life, as the shard's saver, sleep timer and output gate see it.
pub(crate) struct Life {
    /// State changes so far (a counter): the state may differ from the last snapshot written
    /// while it is ahead of `saved_changes`.
    pub(crate) changes: Cell<u64>,
    /// The value of `changes` the newest snapshot appended to the store covers. Advanced only
    /// once that snapshot is in the store (its sequence number known), never when it is taken:
    /// a change made before a snapshot whose append is still waiting (back-pressure) is not yet
    /// covered by any sequence number, so a durable reply for it must not skip its own save.
    pub(crate) saved_changes: Cell<u64>,
    /// Saves of this actor appended or waiting to be (between their snapshot and their sequence
    /// number). While one is, `saved_hash` may not be the newest snapshot's that will be on disk.
    pub(crate) saves_in_flight: Cell<u32>,
    /// A save timer is pending for this actor.
    pub(crate) save_queued: Cell<bool>,
    /// The last time an action, hook, request or connection touched the actor.
    pub(crate) last_active: Cell<Instant>,
    /// Evicted (asleep) or destroyed: new calls fail, changes are no longer saved.
    pub(crate) retired: Cell<bool>,
    pub(crate) sleep_requested: Cell<bool>,
    pub(crate) destroy_requested: Cell<bool>,
    /// The sequence number of this actor's last store write.
    pub(crate) write_seq: Cell<pinion_storage::Seq>,
    /// Hash of the last snapshot written: an unchanged state is not written again.
    pub(crate) saved_hash: Cell<u64>,
    /// Hash of the last snapshot `on_state_change` saw (only with `OBSERVES_STATE`).
    observed_hash: Cell<u64>,
    observing: Cell<bool>,
    /// Which incarnation of the actor this is (set by the shard when it is installed; timers
    /// carry it). 0 while starting.
    pub(crate) epoch: Cell<u64>,
    /// Fairness: how long the actor's synchronous code ran in its current turn (since it last
    /// yielded to the shard's other tasks), in nanoseconds (a `Duration` takes 16 bytes).
    turn_busy_ns: Cell<u64>,
}

impl Life {
    /// Notes a change of the state.
    pub(crate) fn change(&self) {
        self.changes.set(self.changes.get() + 1);
    }

    /// Whether the state may differ from the last snapshot appended to the store.
    pub(crate) fn is_dirty(&self) -> bool {
        self.changes.get() != self.saved_changes.get()
    }

    fn new(saved_hash: u64, observed_hash: u64) -> Life {
        Life {
            changes: Cell::new(0),
            saved_changes: Cell::new(0),
            saves_in_flight: Cell::new(0),
            save_queued: Cell::new(false),
            last_active: Cell::new(sys::now()),
            retired: Cell::new(false),
            sleep_requested: Cell::new(false),
            destroy_requested: Cell::new(false),
            write_seq: Cell::new(0),
            saved_hash: Cell::new(saved_hash),
            observed_hash: Cell::new(observed_hash),
            observing: Cell::new(false),
            epoch: Cell::new(0),
            turn_busy_ns: Cell::new(0),
        }
    }

    /// Charges `started..ended` of synchronous actor code to the actor's turn.
    fn charge(&self, started: Instant, ended: Instant) {
        let ran = ended.saturating_duration_since(started).as_nanos();
        let ran = u64::try_from(ran).unwrap_or(u64::MAX);
        self.turn_busy_ns
            .set(self.turn_busy_ns.get().saturating_add(ran));
    }

    /// Whether the actor's current turn used more than `budget` of the shard: its next call
    /// should let the shard's other ready tasks run first, and then starts a new turn
    /// ([`Life::new_turn`]). See `Limits::actor_turn_budget`.
    pub(crate) fn over_budget(&self, budget: Duration) -> bool {
        u128::from(self.turn_busy_ns.get()) > budget.as_nanos()
    }

    /// After the actor yielded to the others.
    pub(crate) fn new_turn(&self) {
        self.turn_busy_ns.set(0);
    }
}

impl<A: Actor> ActorCell<A> {
    /// Notes a change of the state: queues a save unless one is queued.
    fn mark_dirty(&self) {
        let life = &self.life;
        if life.retired.get() {
            return;
        }
        life.change();
        if !life.save_queued.get()
            && let Some(shard) = self.client.shard.upgrade()
        {
            life.save_queued.set(true);
            shard.queue_save(self.info.id);
        }
    }

    /// After `state_mut`: the same bookkeeping `with_ctx` does.
    fn changed(self: &Rc<Self>, conn: ConnKey) {
        if A::OBSERVES_STATE {
            // Runs the observer (and marks the state dirty) through the usual path.
            let _ = with_ctx(self, conn, |ctx| ctx.state.touched.set(true));
        } else {
            self.life.last_active.set(sys::now());
            self.mark_dirty();
        }
    }

    fn schedule(&self) -> Schedule {
        Schedule::new(self.client.shard.clone(), self.info.id)
    }

    fn request_sleep(&self) {
        if self.life.retired.get() || self.life.sleep_requested.replace(true) {
            return;
        }
        if let Some(shard) = self.client.shard.upgrade() {
            shard.queue_sleep_now(self.info.id);
        }
    }

    fn request_destroy(&self) {
        if self.life.retired.get() || self.life.destroy_requested.replace(true) {
            return;
        }
        if let Some(shard) = self.client.shard.upgrade() {
            shard.queue_destroy(self.info.id);
        }
    }
}

/// A live actor of any type, as the shard holds it.
pub(crate) trait ActorObject {
    fn info(&self) -> &ActorInfo;
    fn life(&self) -> &Life;
    fn options(&self) -> ActorOptions;
    /// Writes the state's snapshot into `out` (replacing its contents).
    fn snapshot(&self, out: &mut Vec<u8>) -> Result<(), PersistError>;
    /// Realtime connections (WebSockets) and ephemeral ones (calls in progress).
    fn conn_counts(&self) -> (usize, usize);
    /// Runs `on_sleep` (`sleeping`) or `on_destroy`, then disconnects every connection (running
    /// `on_disconnect`) and closes the realtime ones with `code`.
    fn stop(self: Rc<Self>, sleeping: bool, code: u16, reason: &str);
    /// Takes the event frames the output gate holds (see [`ActorOptions::durable_before_reply`]).
    fn take_held(&self) -> Vec<(WsSender, Rc<[u8]>)>;
    /// How many asynchronous actions of this actor are running (see `Limits::actor_pending_max`).
    fn pending(&self) -> &Cell<usize>;
    /// Starts action `name` for connection `conn`. For a synchronous action, the output is
    /// written to `out`.
    fn start(
        self: Rc<Self>,
        name: &str,
        args: &CallArgs<'_, '_>,
        out: &mut Vec<u8>,
        conn: ConnKey,
    ) -> Started;
    /// The parameter type of action `name`, when a typed call may hand it its arguments
    /// unencoded (not for actor types that rewrite outputs from the arguments' values).
    fn arg_type(&self, name: &str) -> Option<TypeId>;
    /// Runs the raw HTTP handler; `None` if the actor has none.
    fn request(
        self: Rc<Self>,
        request: &RawRequest<'_>,
        conn: ConnKey,
    ) -> Option<ActionResult<RawResponse>>;
    /// Opens the raw WebSocket session; `None` if the actor has no handler.
    fn websocket(
        self: Rc<Self>,
        request: &RawRequest<'_>,
        conn: ConnKey,
    ) -> Option<ActionResult<Box<dyn WsSession>>>;
    /// Runs the connect hooks and adds the connection (realtime when `sender` is given).
    fn connect(
        self: Rc<Self>,
        params: Value,
        sender: Option<WsSender>,
    ) -> ActionResult<(ConnKey, ConnId)>;
    /// Runs `on_disconnect` and removes the connection (and its subscriptions).
    fn disconnect(self: Rc<Self>, conn: ConnKey);
    /// (Un)subscribes a realtime connection to an event.
    fn subscribe(
        &self,
        conn: ConnKey,
        event: &str,
        subscribe: bool,
        limit: usize,
    ) -> Result<(), &'static str>;
}

impl<A: Actor> ActorObject for ActorCell<A> {
    fn info(&self) -> &ActorInfo {
        &self.info
    }

    fn life(&self) -> &Life {
        &self.life
    }

    fn options(&self) -> ActorOptions {
        A::OPTIONS
    }

    fn snapshot(&self, out: &mut Vec<u8>) -> Result<(), PersistError> {
        match self.state.try_borrow() {
            Ok(state) => state.save(out),
            Err(_) => Err(PersistError("the state is borrowed".into())),
        }
    }

    fn conn_counts(&self) -> (usize, usize) {
        let conns = self.conns.borrow();
        let realtime = conns.iter().filter(|c| c.is_realtime()).count();
        (realtime, conns.len() - realtime)
    }

    fn stop(self: Rc<Self>, sleeping: bool, code: u16, reason: &str) {
        let hook = if sleeping {
            with_ctx(&self, ConnKey::NONE, A::on_sleep)
        } else {
            with_ctx(&self, ConnKey::NONE, A::on_destroy)
        };
        if let Err(error) = hook {
            tracing::error!(
                actor = A::NAME,
                ?error,
                sleeping,
                "on_sleep/on_destroy failed"
            );
        }
        let keys = self.conns.borrow().keys();
        for key in keys {
            let sender = self
                .conns
                .borrow()
                .conn(key)
                .and_then(|conn| conn.sender().cloned());
            self.clone().disconnect(key);
            if let Some(sender) = sender {
                let _ = sender.close(code, reason);
            }
        }
    }

    fn take_held(&self) -> Vec<(WsSender, Rc<[u8]>)> {
        self.conns.borrow().take_held()
    }

    fn pending(&self) -> &Cell<usize> {
        &self.pending
    }

    fn request(
        self: Rc<Self>,
        request: &RawRequest<'_>,
        conn: ConnKey,
    ) -> Option<ActionResult<RawResponse>> {
        with_ctx(&self, conn, |ctx| A::on_request(ctx, request))
            .unwrap_or_else(|error| Some(Err(error)))
    }

    fn websocket(
        self: Rc<Self>,
        request: &RawRequest<'_>,
        conn: ConnKey,
    ) -> Option<ActionResult<Box<dyn WsSession>>> {
        let ctx = Ctx { cell: self, conn };
        catch_unwind(AssertUnwindSafe(|| A::on_websocket(ctx, request)))
            .unwrap_or_else(|panic| Some(Err(panicked(panic))))
    }

    fn arg_type(&self, name: &str) -> Option<TypeId> {
        if A::TRANSFORMS_OUTPUT {
            return None;
        }
        self.actions.arg_types.get(name).copied()
    }

    fn start(
        self: Rc<Self>,
        name: &str,
        args: &CallArgs<'_, '_>,
        out: &mut Vec<u8>,
        conn: ConnKey,
    ) -> Started {
        if self.life.retired.get() {
            return Started::Done(Err(Failure::Stopping));
        }
        let actions = self.actions.clone();
        match actions.handlers.get(name) {
            None => Started::Done(Err(Failure::NotFound)),
            Some(Handler::Sync(handler)) => Started::Done(handler(&self, conn, args, out)),
            Some(Handler::Async(handler)) => match handler(&self, conn, args) {
                Err(failure) => Started::Done(Err(failure)),
                Ok(future) => Started::Running(future),
            },
        }
    }

    fn connect(
        self: Rc<Self>,
        params: Value,
        sender: Option<WsSender>,
    ) -> ActionResult<(ConnKey, ConnId)> {
        // One `with_ctx` for the three hooks (one clock pair, one state borrow): every stateless
        // call connects, so this runs once per request.
        let id = ConnId::random();
        let inserted = Cell::new(None);
        let connected = with_ctx(&self, ConnKey::NONE, |ctx| {
            A::on_before_connect(ctx, &params)?;
            let state = A::create_conn_state(ctx, &params)?;
            let key = ctx
                .cell
                .conns
                .try_borrow_mut()
                .map_err(|_| ActionError::internal("connect while the connections are borrowed"))?
                .insert(id, params, state, sender);
            inserted.set(Some(key));
            ctx.conn = key;
            A::on_connect(ctx);
            Ok(key)
        });
        match connected {
            Ok(Ok(key)) => Ok((key, id)),
            Ok(Err(error)) | Err(error) => {
                // `on_connect` panicked after the connection was added: take it out again.
                if let Some(key) = inserted.get() {
                    self.conns.borrow_mut().remove(key);
                }
                Err(error)
            }
        }
    }

    fn disconnect(self: Rc<Self>, conn: ConnKey) {
        if self.conns.borrow().conn(conn).is_none() {
            return;
        }
        if let Err(error) = with_ctx(&self, conn, A::on_disconnect) {
            tracing::error!(actor = A::NAME, ?error, "on_disconnect failed");
        }
        self.conns.borrow_mut().remove(conn);
    }

    fn subscribe(
        &self,
        conn: ConnKey,
        event: &str,
        subscribe: bool,
        limit: usize,
    ) -> Result<(), &'static str> {
        match self.conns.try_borrow_mut() {
            Ok(mut conns) => conns.subscribe(conn, event, subscribe, limit),
            Err(_) => Err("the connections are borrowed"),
        }
    }
}

/// An actor type as a shard holds it: builds instances. One per type per shard, built at shard
/// start from the [`crate::Registry`].
pub(crate) trait ActorType {
    fn name(&self) -> &'static str;
    /// Builds a new actor: `create_state`, `create_vars`, `on_create`, `on_wake`.
    fn create(
        &self,
        info: ActorInfo,
        input: Option<Value>,
        client: Client,
    ) -> ActionResult<Rc<dyn ActorObject>>;
    /// Starts an existing actor from its snapshot: `create_vars`, `on_wake`.
    fn wake(
        &self,
        info: ActorInfo,
        snapshot: &[u8],
        client: Client,
    ) -> ActionResult<Rc<dyn ActorObject>>;
}

pub(crate) struct TypeOf<A: Actor> {
    actions: Rc<Actions<A>>,
}

impl<A: Actor> TypeOf<A> {
    pub(crate) fn build() -> Rc<dyn ActorType> {
        let mut actions = Actions {
            handlers: HashMap::new(),
            arg_types: HashMap::new(),
        };
        A::actions(&mut actions);
        tracing::debug!(actor = A::NAME, actions = ?actions.names().collect::<Vec<_>>(), "registered");
        Rc::new(TypeOf::<A> {
            actions: Rc::new(actions),
        })
    }
}

impl<A: Actor> ActorType for TypeOf<A> {
    fn name(&self) -> &'static str {
        A::NAME
    }

    fn create(
        &self,
        info: ActorInfo,
        input: Option<Value>,
        client: Client,
    ) -> ActionResult<Rc<dyn ActorObject>> {
        let built = catch_unwind(AssertUnwindSafe(|| {
            let state = A::create_state(&info, input)?;
            let vars = A::create_vars(&info, &state);
            Ok::<_, ActionError>((state, vars))
        }));
        let (state, vars) = match built {
            Ok(result) => result?,
            Err(panic) => return Err(panicked(panic)),
        };
        // Nothing is saved yet (the first save always writes), but the observer starts from the
        // initial state: creating it is not a change.
        let observed = if A::OBSERVES_STATE {
            let mut bytes = Vec::new();
            state.save(&mut bytes).map_err(ActionError::from)?;
            hash_bytes(&bytes)
        } else {
            0
        };
        let cell = self.cell(info, state, vars, client, 0, observed);
        with_ctx(&cell, ConnKey::NONE, A::on_create)??;
        with_ctx(&cell, ConnKey::NONE, A::on_wake)??;
        Ok(cell)
    }

    fn wake(
        &self,
        info: ActorInfo,
        snapshot: &[u8],
        client: Client,
    ) -> ActionResult<Rc<dyn ActorObject>> {
        let built = catch_unwind(AssertUnwindSafe(|| {
            let state = A::State::load(snapshot)?;
            let vars = A::create_vars(&info, &state);
            Ok::<_, ActionError>((state, vars))
        }));
        let (state, vars) = match built {
            Ok(result) => result?,
            Err(panic) => return Err(panicked(panic)),
        };
        let hash = hash_bytes(snapshot);
        let cell = self.cell(info, state, vars, client, hash, hash);
        with_ctx(&cell, ConnKey::NONE, A::on_wake)??;
        Ok(cell)
    }
}

impl<A: Actor> TypeOf<A> {
    fn cell(
        &self,
        info: ActorInfo,
        state: A::State,
        vars: A::Vars,
        client: Client,
        saved_hash: u64,
        observed_hash: u64,
    ) -> Rc<ActorCell<A>> {
        Rc::new(ActorCell::<A> {
            info,
            state: RefCell::new(state),
            vars: RefCell::new(vars),
            conns: RefCell::new(Conns::new(A::OPTIONS.durable_before_reply)),
            actions: self.actions.clone(),
            client,
            pending: Cell::new(0),
            life: Life::new(saved_hash, observed_hash),
        })
    }
}
