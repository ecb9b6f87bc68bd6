//! An actor's life on its shard: wake from the store, periodic saves, sleep, destroy, schedules.
//!
//! * **Awake** actors are in `Shard::actors`. A **sleeping** actor is only in the store: its
//!   directory record (name, key, created) and its last snapshot; it costs the store's index
//!   entry and nothing here.
//! * **Transitions** (waking, falling asleep, being destroyed, being created) hold a [`Gate`] for
//!   the actor id: a request that arrives meanwhile waits at the gate and then looks again, so an
//!   actor is never awake twice, never read from the store while its last save is still
//!   queued, and never served after it was destroyed.
//! * **Saves**: a change marks the actor dirty and queues one save timer per actor (its save
//!   interval); the save writes a snapshot only if its bytes differ from the last one written.
//!   Durable-before-reply and `save_state()` write at once and wait for the group commit.
//! * **Sleep**: one sleep timer per awake actor. When it fires, an actor that is idle (no action
//!   running, no call in progress, no connection unless `sleep_with_conns`) for its whole sleep
//!   timeout runs `on_sleep`, has its connections closed, is saved and leaves memory; otherwise
//!   the timer is re-armed for when it could be.
//! * One **timer task** per shard serves the timer heap and the store's due schedules.
//!
//! Every timer entry carries the epoch of the actor incarnation it was set for, so an entry left
//! over from before a sleep cannot act on the actor's next incarnation.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use pinion_storage::{ActorRecord, ScheduleEntry, Seq, StoreFuture};

use crate::actor::{ActorInfo, ActorObject, hash_bytes};
use crate::client::Client;
use crate::placement::ActorId;
use crate::protocol::{self, RivetError};
use crate::shard::Shard;
use crate::sys;

/// WebSocket close code for connections of an actor that goes to sleep or is destroyed (with an
/// empty reason, as the reference; the official client reconnects, which wakes the actor).
const CLOSE_NORMAL: u16 = 1000;
/// Timer-heap entries handled in a row before the timer task yields.
const TIMER_BURST_MAX: usize = 256;
/// Schedules started per pass of the timer task.
const SCHEDULE_BURST_MAX: usize = 256;
/// The timer task looks at the clock at least this often (it also guards against the wall
/// clock, which schedules use, being stepped).
const TIMER_WAIT_MAX: Duration = Duration::from_secs(1);
/// How often a requested sleep looks again whether the actor's calls are done.
const SLEEP_RETRY: Duration = Duration::from_millis(5);

/// A one-shot event: tasks wait until it opens.
#[derive(Default)]
pub(crate) struct Gate {
    open: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Gate {
    fn open(&self) {
        self.open.set(true);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Completes once the gate is open.
    pub(crate) fn wait(self: Rc<Gate>) -> impl Future<Output = ()> {
        std::future::poll_fn(move |cx| {
            if self.open.get() {
                Poll::Ready(())
            } else {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// Holds an actor's gate closed; opens and removes it when dropped (also when the task doing
/// the transition is dropped halfway).
pub(crate) struct GateGuard {
    shard: Rc<Shard>,
    id: ActorId,
    gate: Rc<Gate>,
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        let mut gates = self.shard.gates.borrow_mut();
        if gates
            .get(&self.id)
            .is_some_and(|gate| Rc::ptr_eq(gate, &self.gate))
        {
            gates.remove(&self.id);
        }
        drop(gates);
        self.gate.open();
    }
}

/// Wakes one task; a notification before the wait is not lost.
#[derive(Default)]
pub(crate) struct Notify {
    flag: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub(crate) fn notify(&self) {
        self.flag.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    pub(crate) fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.flag.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    Save,
    Sleep,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timer {
    at: Instant,
    id: u64,
    epoch: u64,
    kind: TimerKind,
}

/// Polls a store future once; `None` if it would wait (it is then dropped, abandoning the
/// write, and the caller retries from a task).
fn poll_now<T>(future: &mut StoreFuture<'_, T>) -> Option<T> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(future).poll(&mut cx) {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    }
}

/// A write of a pending schedule, kept whole so it can be retried from a task.
enum ScheduleWrite {
    Put {
        actor: ActorId,
        schedule: u64,
        due_ms: u64,
        payload: Vec<u8>,
    },
    Delete {
        actor: ActorId,
        schedule: u64,
    },
}

impl ScheduleWrite {
    fn actor(&self) -> ActorId {
        match self {
            ScheduleWrite::Put { actor, .. } | ScheduleWrite::Delete { actor, .. } => *actor,
        }
    }

    fn apply<'a>(
        &'a self,
        store: &'a dyn pinion_storage::Store,
    ) -> StoreFuture<'a, io::Result<Seq>> {
        match self {
            ScheduleWrite::Put {
                actor,
                schedule,
                due_ms,
                payload,
            } => store.put_schedule(actor.0, *schedule, *due_ms, payload),
            ScheduleWrite::Delete { actor, schedule } => store.delete_schedule(actor.0, *schedule),
        }
    }
}

fn internal(what: &str, id: ActorId, error: &dyn std::fmt::Display) -> RivetError {
    tracing::error!(%id, %error, "{what}");
    RivetError::internal()
}

impl Shard {
    /// Closes the gate of actor `id` (which must be open).
    pub(crate) fn close_gate(self: &Rc<Self>, id: ActorId) -> GateGuard {
        let gate = Rc::new(Gate::default());
        let previous = self.gates.borrow_mut().insert(id, gate.clone());
        debug_assert!(previous.is_none(), "two transitions of actor {id} at once");
        GateGuard {
            shard: self.clone(),
            id,
            gate,
        }
    }

    /// Waits while actor `id` is in a transition.
    pub(crate) async fn pass_gate(&self, id: ActorId) {
        loop {
            let gate = self.gates.borrow().get(&id).cloned();
            match gate {
                Some(gate) => gate.wait().await,
                None => return,
            }
        }
    }

    /// The awake instance of actor `id`, waking it from the store if it sleeps; `None` if there
    /// is no such actor (never created, or destroyed).
    pub(crate) async fn load(
        self: &Rc<Self>,
        id: ActorId,
    ) -> Result<Option<Rc<dyn ActorObject>>, RivetError> {
        loop {
            if let Some(actor) = self.actor(id) {
                return Ok(Some(actor));
            }
            let gate = self.gates.borrow().get(&id).cloned();
            if let Some(gate) = gate {
                gate.wait().await;
                continue;
            }
            match self.store.actor(id.0) {
                Some(entry) if entry.destroyed_ms.is_none() => {}
                _ => return Ok(None),
            }
            let _guard = self.close_gate(id);
            let ring_reads = || self.store.stats().map_or(0, |stats| stats.ring_reads);
            let (started, reads_before) = (sys::now(), ring_reads());
            let woken = self.wake(id).await;
            let micros = sys::now().duration_since(started).as_micros() as u64;
            // Saturates at the histogram's bound (a minute) instead of failing.
            self.wakes.borrow_mut().saturating_record(micros.max(1));
            if ring_reads() > reads_before {
                // Some record was not (wholly) in the page cache. Approximate while other
                // wakes overlap this one; exact for one request at a time.
                self.device_wakes
                    .borrow_mut()
                    .saturating_record(micros.max(1));
            }
            return woken.map(Some);
        }
    }

    /// Reads actor `id` back from the store and starts it (`create_vars`, `on_wake`).
    async fn wake(self: &Rc<Self>, id: ActorId) -> Result<Rc<dyn ActorObject>, RivetError> {
        // Both reads are in flight at once (two io_uring reads, one wait).
        let (record, snapshot) =
            futures_lite::future::zip(self.store.read_actor(id.0), self.store.read_state(id.0))
                .await;
        let record = match record {
            Ok(Some(record)) => record,
            Ok(None) => return Err(internal("the actor has no record", id, &"")),
            Err(error) => return Err(internal("reading the actor record failed", id, &error)),
        };
        let Some(actor_type) = self.actor_type(&record.name).cloned() else {
            tracing::error!(%id, name = %record.name, "a stored actor's type is not registered");
            return Err(RivetError::actor_type_unknown(&record.name));
        };
        let snapshot = match snapshot {
            Ok(snapshot) => snapshot,
            Err(error) => return Err(internal("reading the actor state failed", id, &error)),
        };
        let info = ActorInfo {
            name: actor_type.name(),
            key: record.key.into_boxed_slice(),
            id,
            created_ms: record.created_ms,
        };
        let client = self.client();
        let started = match &snapshot {
            Some(snapshot) => actor_type.wake(info, snapshot, client),
            None => {
                // A crash between writing the record and the first snapshot: start afresh.
                tracing::warn!(%id, "actor without a saved state; creating its state again");
                actor_type.create(info, None, client)
            }
        };
        let instance = started.map_err(|error| {
            protocol::log_internal("wake", actor_type.name(), &error);
            RivetError::from_action(error)
        })?;
        self.install(instance.clone());
        Ok(instance)
    }

    pub(crate) fn client(&self) -> Client {
        Client {
            shard: self.me.clone(),
        }
    }

    /// Makes `instance` the awake incarnation of its actor and arms its sleep timer.
    pub(crate) fn install(&self, instance: Rc<dyn ActorObject>) {
        let id = instance.info().actor_id();
        let epoch = self.epoch.get() + 1;
        self.epoch.set(epoch);
        instance.life().epoch.set(epoch);
        let options = instance.options();
        if !options.no_sleep {
            let timeout = options.sleep_timeout.unwrap_or(self.config.sleep_timeout);
            self.push_timer(Timer {
                at: sys::now() + timeout,
                id: id.0,
                epoch,
                kind: TimerKind::Sleep,
            });
        }
        // A change made while starting (`on_create`, `on_wake`) could not queue its save yet
        // (no epoch); queue it now for this incarnation.
        instance.life().save_queued.set(false);
        if instance.life().is_dirty() {
            self.queue_save_of(&instance);
        }
        self.actors.borrow_mut().insert(id, instance);
    }

    fn push_timer(&self, timer: Timer) {
        let mut timers = self.timers.borrow_mut();
        let earlier = timers.peek().is_none_or(|Reverse(top)| timer.at < top.at);
        timers.push(Reverse(timer));
        drop(timers);
        if earlier {
            self.timer_notify.notify();
        }
    }

    /// Queues a save of actor `id` after its save interval (called once per dirty period).
    pub(crate) fn queue_save(&self, id: ActorId) {
        if let Some(actor) = self.actors.borrow().get(&id) {
            self.queue_save_of(actor);
        }
    }

    fn queue_save_of(&self, actor: &Rc<dyn ActorObject>) {
        let life = actor.life();
        if life.epoch.get() == 0 {
            // Still starting: `install` queues it.
            return;
        }
        life.save_queued.set(true);
        let interval = actor
            .options()
            .save_interval
            .unwrap_or(self.config.save_interval);
        self.push_timer(Timer {
            at: sys::now() + interval,
            id: actor.info().actor_id().0,
            epoch: life.epoch.get(),
            kind: TimerKind::Save,
        });
    }

    /// `c.sleep()`: sleeps the actor once its calls are done.
    pub(crate) fn queue_sleep_now(&self, id: ActorId) {
        if let Some(shard) = self.me.upgrade() {
            sys::spawn(async move { shard.sleep_actor(id).await });
        }
    }

    /// `c.destroy()`: destroys the actor once the current action returned.
    pub(crate) fn queue_destroy(&self, id: ActorId) {
        if let Some(shard) = self.me.upgrade() {
            sys::spawn(async move { shard.destroy_actor(id).await });
        }
    }

    /// Writes the actor's snapshot if it changed since the last write; the sequence number of
    /// the actor's last write.
    pub(crate) async fn save(&self, actor: &Rc<dyn ActorObject>) -> io::Result<Seq> {
        let life = actor.life();
        // The changes this snapshot covers. Another save of this actor may be waiting for room
        // in the store meanwhile (back-pressure), with a snapshot that covers them too; but
        // until it is appended it has no sequence number to wait for, so this save goes on.
        let covers = life.changes.get();
        if covers == life.saved_changes.get() {
            return Ok(life.write_seq.get());
        }
        let mut snapshot = std::mem::take(&mut *self.snapshot_buf.borrow_mut());
        if let Err(error) = actor.snapshot(&mut snapshot) {
            return Err(io::Error::other(error));
        }
        let hash = hash_bytes(&snapshot);
        let result = if hash == life.saved_hash.get() && life.saves_in_flight.get() == 0 {
            // The same bytes as the newest snapshot appended, whose sequence number (or a
            // later one) is in `write_seq`. (With a save in flight, its different bytes would
            // land after them: this one is written again instead.)
            if covers > life.saved_changes.get() {
                life.saved_changes.set(covers);
            }
            Ok(life.write_seq.get())
        } else {
            let id = actor.info().actor_id().0;
            let in_flight = SaveInFlight::new(life);
            let saved = self.store.save_state(id, &snapshot).await;
            drop(in_flight);
            match saved {
                Ok(seq) => {
                    // Saves of one actor are appended in call order (admission is FIFO), but
                    // their tasks may resume in any order: only the newest sets the hash.
                    if covers > life.saved_changes.get() {
                        life.saved_changes.set(covers);
                        life.saved_hash.set(hash);
                    }
                    life.write_seq.set(life.write_seq.get().max(seq));
                    Ok(life.write_seq.get())
                }
                Err(error) => Err(error),
            }
        };
        snapshot.clear();
        let mut buf = self.snapshot_buf.borrow_mut();
        if buf.capacity() < snapshot.capacity() && snapshot.capacity() <= 64 * 1024 {
            *buf = snapshot;
        }
        result
    }

    /// Saves the actor now and waits until the save (and its earlier writes) is durable.
    pub(crate) async fn persist(&self, actor: &Rc<dyn ActorObject>) -> io::Result<()> {
        // Let the calls that are ready run first: those of this actor change its state too, and
        // the first of their saves covers all of them (one snapshot and one record for a burst
        // instead of one each).
        futures_lite::future::yield_now().await;
        let seq = self.save(actor).await?;
        if seq > self.store.durable_seq() {
            self.store.durable(seq).await?;
        }
        Ok(())
    }

    /// Puts actor `id` to sleep (`c.sleep()` or idleness): waits until no call of it is in
    /// progress, then `on_sleep`, close its connections, save, and evict.
    async fn sleep_actor(self: Rc<Self>, id: ActorId) {
        // Called from inside an action (`c.sleep()`), and glommio may start a spawned task
        // before the spawning one continues: let the action finish and queue its reply first.
        futures_lite::future::yield_now().await;
        let deadline = sys::now() + self.config.limits.action_timeout;
        let actor = loop {
            self.pass_gate(id).await;
            let Some(actor) = self.actor(id) else {
                return;
            };
            let (_, ephemeral) = actor.conn_counts();
            if actor.pending().get() == 0 && ephemeral == 0 {
                break actor;
            }
            if sys::now() >= deadline {
                tracing::warn!(%id, "sleep abandoned: calls kept running");
                actor.life().sleep_requested.set(false);
                return;
            }
            sys::sleep(SLEEP_RETRY).await;
        };
        let _guard = self.close_gate(id);
        self.actors.borrow_mut().remove(&id);
        actor.clone().stop(true, CLOSE_NORMAL, "");
        actor.life().retired.set(true);
        match self.save(&actor).await {
            Ok(_) => tracing::debug!(%id, "actor sleeps"),
            Err(error) => tracing::error!(%id, %error, "saving a sleeping actor failed"),
        }
    }

    /// Destroys actor `id`: `on_destroy`, close its connections, delete its state, schedules and
    /// metadata, mark its record destroyed (its key is free again), make that durable.
    async fn destroy_actor(self: Rc<Self>, id: ActorId) {
        // Let the action that asked for it finish and reply first.
        futures_lite::future::yield_now().await;
        self.pass_gate(id).await;
        let Some(actor) = self.actor(id) else {
            return;
        };
        let _guard = self.close_gate(id);
        self.actors.borrow_mut().remove(&id);
        actor.clone().stop(false, CLOSE_NORMAL, "");
        actor.life().retired.set(true);
        if let Err(error) = self.erase(&actor).await {
            tracing::error!(%id, %error, "destroying an actor failed");
        } else {
            tracing::debug!(%id, "actor destroyed");
        }
    }

    async fn erase(&self, actor: &Rc<dyn ActorObject>) -> io::Result<()> {
        let id = actor.info().actor_id().0;
        for entry in self.store.schedules_of(id) {
            self.store.delete_schedule(id, entry.schedule).await?;
        }
        for key in self.store.meta_keys(id) {
            self.store.delete_meta(id, &key).await?;
        }
        self.store.delete_state(id).await?;
        let record = ActorRecord {
            destroyed_ms: Some(sys::unix_ms()),
            ..actor.info().record()
        };
        self.store.put_actor(&record).await?;
        self.store.flush().await
    }

    /// The directory record of actor `id`, if it exists and is not destroyed.
    pub(crate) async fn read_record(&self, id: ActorId) -> Option<ActorRecord> {
        if let Some(actor) = self.actor(id) {
            return Some(actor.info().record());
        }
        match self.store.actor(id.0) {
            Some(entry) if entry.destroyed_ms.is_none() => {}
            _ => return None,
        }
        match self.store.read_actor(id.0).await {
            Ok(record) => record.filter(|r| r.destroyed_ms.is_none()),
            Err(error) => {
                tracing::error!(%id, %error, "reading an actor record failed");
                None
            }
        }
    }

    /// A schedule id: the time in ms and a per-shard counter, so ids increase and do not repeat
    /// across restarts (unless the clock goes back by more than the counter covers).
    pub(crate) fn next_schedule_id(&self) -> u64 {
        let n = self.schedule_counter.get().wrapping_add(1);
        self.schedule_counter.set(n);
        (sys::unix_ms() << 16) | (n & 0xffff)
    }

    pub(crate) fn put_schedule(
        &self,
        actor: ActorId,
        schedule: u64,
        due_ms: u64,
        payload: Vec<u8>,
    ) {
        self.write_schedule(ScheduleWrite::Put {
            actor,
            schedule,
            due_ms,
            payload,
        });
    }

    pub(crate) fn delete_schedule(&self, actor: ActorId, schedule: u64) {
        self.write_schedule(ScheduleWrite::Delete { actor, schedule });
    }

    /// Applies a schedule write now (actions cannot await) or, when the log's batch is full,
    /// from a task once there is room; then wakes the timer task, whose next due time may change.
    fn write_schedule(&self, write: ScheduleWrite) {
        let mut pending = write.apply(&*self.store);
        match poll_now(&mut pending) {
            Some(result) => {
                drop(pending);
                self.note_write(write.actor(), result);
            }
            None => {
                drop(pending);
                if let Some(shard) = self.me.upgrade() {
                    sys::spawn(async move {
                        let result = write.apply(&*shard.store).await;
                        shard.note_write(write.actor(), result);
                        shard.timer_notify.notify();
                    });
                }
            }
        }
        self.timer_notify.notify();
    }

    /// Records a write of an actor's data, so that its next durable reply waits for it too.
    fn note_write(&self, actor: ActorId, result: io::Result<Seq>) {
        match result {
            Ok(seq) => {
                if let Some(actor) = self.actors.borrow().get(&actor) {
                    let life = actor.life();
                    life.write_seq.set(life.write_seq.get().max(seq));
                }
            }
            Err(error) => tracing::error!(%actor, %error, "a schedule write failed"),
        }
    }

    /// The shard's timer task: saves, sleep checks and due schedules.
    pub(crate) async fn run_timers(self: Rc<Self>) {
        loop {
            let now = sys::now();
            let mut handled = 0;
            loop {
                let due = {
                    let mut timers = self.timers.borrow_mut();
                    match timers.peek() {
                        Some(Reverse(top)) if top.at <= now => timers.pop().map(|Reverse(t)| t),
                        _ => None,
                    }
                };
                let Some(timer) = due else { break };
                self.on_timer(timer, now).await;
                handled += 1;
                if handled % TIMER_BURST_MAX == 0 {
                    futures_lite::future::yield_now().await;
                }
            }
            let next_schedule = self.start_due_schedules();
            let now = sys::now();
            let mut wait = TIMER_WAIT_MAX;
            if let Some(Reverse(top)) = self.timers.borrow().peek() {
                wait = wait.min(top.at.saturating_duration_since(now));
            }
            if let Some(due_ms) = next_schedule {
                wait = wait.min(Duration::from_millis(due_ms.saturating_sub(sys::unix_ms())));
            }
            if wait.is_zero() {
                futures_lite::future::yield_now().await;
                continue;
            }
            futures_lite::future::or(sys::sleep(wait), self.timer_notify.wait()).await;
        }
    }

    async fn on_timer(self: &Rc<Self>, timer: Timer, now: Instant) {
        let id = ActorId(timer.id);
        let Some(actor) = self.actor(id) else {
            return;
        };
        if actor.life().epoch.get() != timer.epoch {
            return;
        }
        match timer.kind {
            TimerKind::Save => {
                actor.life().save_queued.set(false);
                if let Err(error) = self.save(&actor).await {
                    tracing::error!(%id, %error, "saving an actor failed");
                }
            }
            TimerKind::Sleep => {
                let options = actor.options();
                let timeout = options.sleep_timeout.unwrap_or(self.config.sleep_timeout);
                let (realtime, ephemeral) = actor.conn_counts();
                let busy = actor.pending().get() > 0
                    || ephemeral > 0
                    || (realtime > 0 && !options.sleep_with_conns);
                let idle_until = actor.life().last_active.get() + timeout;
                let at = if busy {
                    now + timeout
                } else if idle_until <= now {
                    self.queue_sleep_now(id);
                    return;
                } else {
                    idle_until
                };
                self.push_timer(Timer { at, ..timer });
            }
        }
    }

    /// Starts the schedules that are due (at most `schedules_in_flight_max` at once); returns
    /// when the next one is due, if known.
    fn start_due_schedules(self: &Rc<Self>) -> Option<u64> {
        let cap = self.config.limits.schedules_in_flight_max;
        let now_ms = sys::unix_ms();
        let in_flight = self.firing.borrow().len();
        if in_flight >= cap {
            return None;
        }
        let due = self
            .store
            .due_schedules(now_ms, in_flight + SCHEDULE_BURST_MAX);
        let mut started = 0;
        for entry in due {
            if !self
                .firing
                .borrow_mut()
                .insert((entry.actor, entry.schedule))
            {
                continue;
            }
            started += 1;
            let shard = self.clone();
            sys::spawn(async move { shard.fire(entry).await });
            if self.firing.borrow().len() >= cap {
                return None;
            }
        }
        if started == SCHEDULE_BURST_MAX {
            return Some(now_ms);
        }
        let firing = self.firing.borrow();
        self.store
            .due_schedules(u64::MAX, firing.len() + 1)
            .into_iter()
            .find(|e| !firing.contains(&(e.actor, e.schedule)))
            .map(|e| e.due_ms)
    }

    /// Runs one due schedule, then deletes it (at least once: a crash before the delete runs it
    /// again after the restart).
    async fn fire(self: Rc<Self>, entry: ScheduleEntry) {
        let id = ActorId(entry.actor);
        match self.store.read_schedule(entry.actor, entry.schedule).await {
            Ok(Some(payload)) => match crate::schedule::decode_payload(&payload) {
                Some((action, body)) => match self.load(id).await {
                    Ok(Some(actor)) => {
                        let mut body = body.to_vec();
                        protocol::run_scheduled(&self, &actor, action, &mut body).await;
                    }
                    Ok(None) => tracing::debug!(%id, "schedule of an actor that is gone"),
                    Err(_) => tracing::error!(%id, "cannot wake an actor for its schedule"),
                },
                None => tracing::error!(%id, schedule = entry.schedule, "unreadable schedule"),
            },
            Ok(None) => {} // Cancelled meanwhile.
            Err(error) => tracing::error!(%id, %error, "reading a schedule failed"),
        }
        if let Err(error) = self
            .store
            .delete_schedule(entry.actor, entry.schedule)
            .await
        {
            tracing::error!(%id, %error, "deleting a schedule that ran failed");
        }
        self.firing
            .borrow_mut()
            .remove(&(entry.actor, entry.schedule));
        self.timer_notify.notify();
    }

    /// On a clean stop: saves every changed actor and waits until it is durable.
    pub(crate) async fn save_all(&self) {
        let actors: Vec<Rc<dyn ActorObject>> = self.actors.borrow().values().cloned().collect();
        for actor in &actors {
            if let Err(error) = self.save(actor).await {
                tracing::error!(id = %actor.info().actor_id(), %error, "saving at stop failed");
            }
        }
        if let Err(error) = self.store.flush().await {
            tracing::error!(%error, "flushing the store at stop failed");
        }
    }
}

/// Counts one save of an actor in flight (`Life::saves_in_flight`) while it lives, including
/// when the saving call is dropped half-way.
struct SaveInFlight<'a>(&'a crate::actor::Life);

impl<'a> SaveInFlight<'a> {
    fn new(life: &'a crate::actor::Life) -> SaveInFlight<'a> {
        life.saves_in_flight.set(life.saves_in_flight.get() + 1);
        SaveInFlight(life)
    }
}

impl Drop for SaveInFlight<'_> {
    fn drop(&mut self) {
        self.0.saves_in_flight.set(self.0.saves_in_flight.get() - 1);
    }
}
