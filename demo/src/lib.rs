//! The reference actor set of `shared/reference` (RivetKit 2.0.33), written against Pinion's
//! actor API. Names, actions and observable behaviour match `reference-server/actors.js`.
//! Extras beyond the reference: `counter.incrementSaved` (`save_state` before replying),
//! `durableCounter` (the output gate), `reminder.pending`/`cancel`/`remindAt` (listing and
//! cancelling schedules).

use std::time::Duration;

pub mod cli;

use pinion_runtime::{
    ActionCtx, ActionError, ActionResult, Actions, Actor, ActorInfo, ActorOptions, Ctx, RawRequest,
    RawResponse, Registry, Rest, ScheduleId, UserError, Value, WsClose, WsMessage, WsSender,
    WsSession, join_all, value,
};
use serde::{Deserialize, Serialize};

/// Every demo actor type.
pub fn registry() -> Registry {
    Registry::new()
        .register::<Counter>()
        .register::<Profile>()
        .register::<Api>()
        .register::<Transform>()
        .register::<ChatRoom>()
        .register::<Echo>()
        .register::<Lifecycle>()
        .register::<Coordinator>()
        .register::<Worker>()
        .register::<Reminder>()
        .register::<Sleeper>()
        .register::<DurableCounter>()
}

/// `counter`: `{count}`; `increment(amount = 1)` returns the new count and broadcasts it as
/// `count`.
pub struct Counter;

#[derive(Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CounterState {
    pub count: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WhoAmI<'a> {
    name: &'a str,
    key: &'a [String],
    actor_id: String,
}

impl Actor for Counter {
    const NAME: &'static str = "counter";
    type State = CounterState;
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<CounterState> {
        Ok(CounterState::default())
    }

    fn create_vars(_: &ActorInfo, _: &CounterState) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action("increment", |c, (amount,): (Option<i64>,)| {
                let amount = amount.unwrap_or(1);
                c.state.count =
                    c.state.count.checked_add(amount).ok_or_else(|| {
                        UserError::new("The count would overflow.").code("overflow")
                    })?;
                c.broadcast("count", (c.state.count,))?;
                Ok(c.state.count)
            })
            .action("getCount", |c, ()| Ok(c.state.count))
            // Extra: `increment`, then `save_state` (RivetKit's `saveState({immediate: true})`):
            // the reply means the new count is on disk.
            .action_async(
                "incrementSaved",
                |c, (amount,): (Option<i64>,)| async move {
                    let count = c.state_mut(|s| {
                        s.count = s.count.saturating_add(amount.unwrap_or(1));
                        s.count
                    });
                    c.save_state().await?;
                    Ok(count)
                },
            )
            .action("whoAmI", |c, ()| {
                Ok(value::to_value(&WhoAmI {
                    name: c.name(),
                    key: c.key(),
                    actor_id: c.actor_id().to_string(),
                })?)
            })
            .action("echo", |_, Rest(args)| Ok(args));
    }
}

/// `profile`: state from creation input `{name}`; `setName` validates the length.
pub struct Profile;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProfileState {
    pub name: String,
}

#[derive(Deserialize)]
struct ProfileInput {
    name: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TooShort {
    min_length: usize,
    actual: usize,
}

impl Actor for Profile {
    const NAME: &'static str = "profile";
    type State = ProfileState;
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, input: Option<Value>) -> ActionResult<ProfileState> {
        // As in the reference: a string `input.name` is used, anything else means "unnamed".
        let name = input
            .and_then(|input| value::from_value::<ProfileInput>(&input).ok())
            .and_then(|input| match input.name {
                Some(Value::String(name)) => Some(name),
                _ => None,
            })
            .unwrap_or_else(|| "unnamed".into());
        Ok(ProfileState { name })
    }

    fn create_vars(_: &ActorInfo, _: &ProfileState) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action("getName", |c, ()| Ok(c.state.name.clone()))
            .action("setName", |c, (name,): (Value,)| {
                // JS `name.length` counts UTF-16 code units.
                let (valid, actual) = match &name {
                    Value::String(text) => {
                        let units = text.encode_utf16().count();
                        (units >= 3, units)
                    }
                    _ => (false, 0),
                };
                if !valid {
                    return Err(UserError::new("Name too short")
                        .code("name_too_short")
                        .metadata(TooShort {
                            min_length: 3,
                            actual,
                        })
                        .into());
                }
                let Value::String(name) = name else {
                    unreachable!("checked above")
                };
                c.state.name = name;
                Ok(c.state.name.clone())
            })
            .action("boom", |_, ()| -> ActionResult<()> {
                Err(ActionError::internal("secret detail"))
            });
    }
}

/// `api`: raw HTTP (`onRequest`). A POST increments the count; every request answers JSON
/// `{count, method, path, query}`, with the path as the handler sees it (without `/request`).
pub struct Api;

#[derive(Serialize)]
struct ApiAnswer<'a> {
    count: i64,
    method: &'a str,
    path: &'a str,
    query: &'a str,
}

impl Actor for Api {
    const NAME: &'static str = "api";
    type State = CounterState;
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<CounterState> {
        Ok(CounterState::default())
    }

    fn create_vars(_: &ActorInfo, _: &CounterState) {}

    fn actions(actions: &mut Actions<Self>) {
        actions.action("getCount", |c, ()| Ok(c.state.count));
    }

    fn on_request(
        c: &mut ActionCtx<'_, Self>,
        request: &RawRequest<'_>,
    ) -> Option<ActionResult<RawResponse>> {
        if request.method == "POST" {
            c.state.count += 1;
        }
        let answer = ApiAnswer {
            count: c.state.count,
            method: request.method,
            path: request.path,
            query: request.query,
        };
        let mut body = Vec::new();
        Some(
            value::write_tagged(&mut body, &answer)
                .map(|()| RawResponse::json(body))
                .map_err(ActionError::from),
        )
    }
}

/// `transform`: `onBeforeActionResponse` wraps every output as `{wrapped: output}`.
pub struct Transform;

impl Actor for Transform {
    const NAME: &'static str = "transform";
    type State = ();
    type Vars = ();
    type ConnState = ();
    const TRANSFORMS_OUTPUT: bool = true;

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<()> {
        Ok(())
    }

    fn create_vars(_: &ActorInfo, _: &()) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action("value", |_, ()| Ok(42))
            .action("echoArgs", |_, Rest(args)| Ok(args));
    }

    fn on_before_action_response(
        _: &mut ActionCtx<'_, Self>,
        _action: &str,
        _args: &[Value],
        output: Option<Value>,
    ) -> ActionResult<Option<Value>> {
        // As in JS, `{wrapped: undefined}` has no `wrapped` field once serialized.
        let mut wrapped = pinion_runtime::value::Map::new();
        if let Some(output) = output {
            wrapped.insert("wrapped", output);
        }
        Ok(Some(Value::Object(wrapped)))
    }
}

/// `chatRoom`: messages with the sender's `userId` (connection state from the params);
/// `onBeforeConnect` refuses the token `"bad"`.
pub struct ChatRoom;

#[derive(Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ChatState {
    pub messages: Vec<String>,
}

/// A chat connection: who it is.
pub struct ChatConn {
    pub user_id: String,
}

#[derive(Serialize)]
struct Notification<'a> {
    from: &'a str,
    text: &'a str,
}

impl Actor for ChatRoom {
    const NAME: &'static str = "chatRoom";
    type State = ChatState;
    type Vars = ();
    type ConnState = ChatConn;

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<ChatState> {
        Ok(ChatState::default())
    }

    fn create_vars(_: &ActorInfo, _: &ChatState) {}

    fn on_before_connect(_: &mut ActionCtx<'_, Self>, params: &Value) -> ActionResult<()> {
        if params.get("token").and_then(Value::as_str) == Some("bad") {
            return Err(UserError::new("Forbidden: bad token")
                .code("forbidden")
                .into());
        }
        Ok(())
    }

    fn create_conn_state(_: &mut ActionCtx<'_, Self>, params: &Value) -> ActionResult<ChatConn> {
        // As in the reference: `String(params.userId)` when truthy, else "anonymous".
        let user_id = match params.get("userId") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => None,
            Some(Value::String(text)) if text.is_empty() => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(other) => {
                let mut json = Vec::new();
                value::write_tagged(&mut json, other)?;
                Some(String::from_utf8_lossy(&json).into_owned())
            }
        };
        Ok(ChatConn {
            user_id: user_id.unwrap_or_else(|| "anonymous".into()),
        })
    }

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action("send", |c, (text,): (String,)| {
                let line = format!("{}: {}", c.conn().state().user_id, text);
                c.state.messages.push(line.clone());
                c.broadcast("message", (&line,))?;
                Ok(line)
            })
            .action("history", |c, ()| Ok(c.state.messages.clone()))
            .action("whoAmI", |c, ()| Ok(c.conn().state().user_id.clone()))
            .action("notifyOthers", |c, (text,): (String,)| {
                let me = c.conn();
                let note = Notification {
                    from: &me.state().user_id,
                    text: &text,
                };
                let mut sent = 0;
                for conn in c.conns().iter().filter(|conn| conn.id() != me.id()) {
                    conn.send("notification", (&note,))?;
                    sent += 1;
                }
                Ok(sent)
            });
    }
}

/// `echo`: a raw WebSocket (`onWebSocket`) that sends every message back as it came, text as
/// text and binary as binary.
pub struct Echo;

struct EchoSocket {
    sender: Option<WsSender>,
}

impl WsSession for EchoSocket {
    fn on_open(&mut self, sender: WsSender) {
        self.sender = Some(sender);
    }

    fn on_message(&mut self, message: WsMessage<'_>) -> Result<(), WsClose> {
        if let Some(sender) = &self.sender {
            // A send fails only when the socket is closing; then there is no one to echo to.
            let _ = match message {
                WsMessage::Text(text) => sender.send_text(&text),
                WsMessage::Binary(bytes) => sender.send_binary(bytes),
            };
        }
        Ok(())
    }

    fn on_close(&mut self, _: Option<u16>) {}
}

impl Actor for Echo {
    const NAME: &'static str = "echo";
    type State = ();
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<()> {
        Ok(())
    }

    fn create_vars(_: &ActorInfo, _: &()) {}

    fn actions(_: &mut Actions<Self>) {}

    fn on_websocket(_: Ctx<Self>, _: &RawRequest<'_>) -> Option<ActionResult<Box<dyn WsSession>>> {
        Some(Ok(Box::new(EchoSocket { sender: None })))
    }
}

/// `lifecycle`: records its hooks (`onCreate`, `onWake`, `onConnect`, `onDisconnect`) in
/// `events`.
pub struct Lifecycle;

#[derive(Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LifecycleState {
    pub events: Vec<String>,
}

impl Actor for Lifecycle {
    const NAME: &'static str = "lifecycle";
    type State = LifecycleState;
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<LifecycleState> {
        Ok(LifecycleState::default())
    }

    fn create_vars(_: &ActorInfo, _: &LifecycleState) {}

    fn on_create(c: &mut ActionCtx<'_, Self>) -> ActionResult<()> {
        c.state.events.push("onCreate".into());
        Ok(())
    }

    fn on_wake(c: &mut ActionCtx<'_, Self>) -> ActionResult<()> {
        c.state.events.push("onWake".into());
        Ok(())
    }

    fn on_connect(c: &mut ActionCtx<'_, Self>) {
        c.state.events.push("onConnect".into());
    }

    fn on_disconnect(c: &mut ActionCtx<'_, Self>) {
        c.state.events.push("onDisconnect".into());
    }

    fn actions(actions: &mut Actions<Self>) {
        // Outputs are encoded before the ephemeral connection's on_disconnect runs, so this is
        // the snapshot the reference returns.
        actions
            .action("events", |c, ()| Ok(c.state.events.clone()))
            .action("destroyMe", |c, ()| {
                c.destroy();
                Ok(true)
            });
    }
}

/// `coordinator`: `startJob(tasks)` has a `worker` per task process it (workers live on every
/// shard) and awaits them all; each worker calls back `reportResult` on this coordinator while
/// `startJob` is still running, which needs re-entrant actions.
pub struct Coordinator;

#[derive(Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CoordinatorState {
    /// Results by task id, in report order (a JS object keeps insertion order).
    pub results: value::Map,
}

/// A task as the client sends it: `{id, value}`.
#[derive(Serialize, Deserialize)]
struct Task {
    id: Value,
    value: Value,
}

impl Actor for Coordinator {
    const NAME: &'static str = "coordinator";
    type State = CoordinatorState;
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<CoordinatorState> {
        Ok(CoordinatorState::default())
    }

    fn create_vars(_: &ActorInfo, _: &CoordinatorState) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action_async("startJob", |c, (tasks,): (Vec<Value>,)| async move {
                let client = c.client();
                let my_key = c.key().to_vec();
                let calls = tasks.iter().map(|task| {
                    let worker = client.get_or_create("worker", [task_id(task)]);
                    let my_key = &my_key;
                    async move { worker.call::<Value>("process", (task, my_key)).await }
                });
                let acks = join_all(calls).await;
                acks.into_iter()
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(ActionError::from)
            })
            .action("reportResult", |c, (task_id, result): (Value, Value)| {
                c.state.results.insert(js_key(&task_id), result);
                Ok(true)
            })
            .action("results", |c, ()| {
                Ok(Value::Object(c.state.results.clone()))
            });
    }
}

/// `worker`: `process(task, coordinatorKey)` doubles `task.value`, reports it to the
/// coordinator, and returns `{id, worker, result}`.
pub struct Worker;

#[derive(Serialize)]
struct Ack<'a> {
    id: &'a Value,
    worker: &'a [String],
    result: Value,
}

impl Actor for Worker {
    const NAME: &'static str = "worker";
    type State = i64;
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<i64> {
        Ok(0)
    }

    fn create_vars(_: &ActorInfo, _: &i64) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action_async(
                "process",
                |c, (task, coordinator_key): (Task, Vec<String>)| async move {
                    c.state_mut(|processed| *processed += 1);
                    // JS `task.value * 2`.
                    let result = match (task.value.as_i64(), to_number(&task.value)) {
                        (Some(int), _) if int.checked_mul(2).is_some() => Value::from(int * 2),
                        (_, number) if number.is_finite() => {
                            let doubled = number * 2.0;
                            if doubled.fract() == 0.0 && doubled.abs() < 9.0e15 {
                                Value::from(doubled as i64)
                            } else {
                                Value::from(doubled)
                            }
                        }
                        // NaN and infinities serialize as null, as JSON.stringify does.
                        _ => Value::Null,
                    };
                    c.client()
                        .get_or_create("coordinator", coordinator_key)
                        .call::<Value>("reportResult", (&task.id, &result))
                        .await?;
                    Ok(value::to_value(&Ack {
                        id: &task.id,
                        worker: c.key(),
                        result,
                    })?)
                },
            )
            .action("processedCount", |c, ()| Ok(*c.state));
    }
}

/// JS `ToNumber` for the values JSON can carry: numbers, numeric strings (trimmed; empty is 0),
/// `null` (0), booleans (0/1), and arrays of at most one element (`[]` is 0, `[x]` is x's);
/// everything else is NaN.
fn to_number(value: &Value) -> f64 {
    match value {
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(text) => {
            let text = text.trim();
            if text.is_empty() {
                0.0
            } else {
                text.parse().unwrap_or(f64::NAN)
            }
        }
        Value::Array(items) => match items.as_slice() {
            [] => 0.0,
            [one] => to_number(one),
            _ => f64::NAN,
        },
        other => other.as_f64().unwrap_or(f64::NAN),
    }
}

/// The worker key of a task: its id as JS's `String()` would print it.
fn task_id(task: &Value) -> String {
    task.get("id").map_or_else(|| "undefined".into(), js_key)
}

/// A value used as an object key or key part, as JS converts it to a string.
fn js_key(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "null".into(),
        other => {
            let mut json = Vec::new();
            let _ = value::write_tagged(&mut json, other);
            String::from_utf8_lossy(&json).into_owned()
        }
    }
}

/// `reminder`: `setReminder(message, delayMs)` schedules `sendReminder(message)`, which records
/// the message and broadcasts `reminder` `{message}`. Extras: `remindAt(message, unixMs)`,
/// `pending()` (the pending schedules, `[{id, dueMs}]`) and `cancel(id)`.
pub struct Reminder;

#[derive(Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ReminderState {
    pub sent: Vec<Value>,
}

#[derive(Serialize)]
struct ReminderEvent<'a> {
    message: &'a Value,
}

impl Actor for Reminder {
    const NAME: &'static str = "reminder";
    type State = ReminderState;
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<ReminderState> {
        Ok(ReminderState::default())
    }

    fn create_vars(_: &ActorInfo, _: &ReminderState) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action("setReminder", |c, (message, delay_ms): (Value, Value)| {
                // JS: a missing or non-numeric delay is NaN, which setTimeout treats as 0.
                let delay = to_number(&delay_ms);
                let delay = if delay.is_finite() && delay > 0.0 {
                    delay as u64
                } else {
                    0
                };
                c.schedule()
                    .after(Duration::from_millis(delay), "sendReminder", (message,))?;
                Ok(true)
            })
            .action("remindAt", |c, (message, at_ms): (Value, u64)| {
                Ok(c.schedule()
                    .at(at_ms, "sendReminder", (message,))?
                    .to_string())
            })
            .action("sendReminder", |c, (message,): (Value,)| {
                c.broadcast("reminder", (ReminderEvent { message: &message },))?;
                c.state.sent.push(message);
                Ok(())
            })
            .action("sent", |c, ()| Ok(c.state.sent.clone()))
            .action("pending", |c, ()| c.schedule().list())
            .action("cancel", |c, (id,): (String,)| {
                let Ok(id) = id.parse::<ScheduleId>() else {
                    return Ok(false);
                };
                c.schedule().cancel(id)
            });
    }
}

/// `sleeper`: durable `state.count` and ephemeral `vars.count`; `onWake` counts wakes in the
/// state; `sleepNow()` puts the actor to sleep (`c.sleep()`).
pub struct Sleeper;

#[derive(Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SleeperState {
    pub count: i64,
    pub wakes: i64,
}

pub struct SleeperVars {
    pub count: i64,
}

#[derive(Serialize)]
struct SleeperView {
    state: i64,
    vars: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    wakes: Option<i64>,
}

impl Actor for Sleeper {
    const NAME: &'static str = "sleeper";
    type State = SleeperState;
    type Vars = SleeperVars;
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<SleeperState> {
        Ok(SleeperState::default())
    }

    fn create_vars(_: &ActorInfo, _: &SleeperState) -> SleeperVars {
        SleeperVars { count: 0 }
    }

    fn on_wake(c: &mut ActionCtx<'_, Self>) -> ActionResult<()> {
        c.state.wakes += 1;
        Ok(())
    }

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action("bump", |c, ()| {
                c.state.count += 1;
                c.vars.count += 1;
                Ok(SleeperView {
                    state: c.state.count,
                    vars: c.vars.count,
                    wakes: None,
                })
            })
            .action("read", |c, ()| {
                Ok(SleeperView {
                    state: c.state.count,
                    vars: c.vars.count,
                    wakes: Some(c.state.wakes),
                })
            })
            .action("sleepNow", |c, ()| {
                c.sleep();
                Ok(true)
            });
    }
}

/// `durableCounter` (extra): a counter behind the output gate
/// ([`ActorOptions::durable_before_reply`]): `increment(amount = 1)`'s reply, and the `count`
/// event it broadcasts, leave only once the new count is on disk.
pub struct DurableCounter;

impl Actor for DurableCounter {
    const NAME: &'static str = "durableCounter";
    type State = CounterState;
    type Vars = ();
    type ConnState = ();
    const OPTIONS: ActorOptions = ActorOptions {
        durable_before_reply: true,
        ..ActorOptions::DEFAULT
    };

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<CounterState> {
        Ok(CounterState::default())
    }

    fn create_vars(_: &ActorInfo, _: &CounterState) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action("increment", |c, (amount,): (Option<i64>,)| {
                c.state.count = c.state.count.saturating_add(amount.unwrap_or(1));
                c.broadcast("count", (c.state.count,))?;
                Ok(c.state.count)
            })
            .action("getCount", |c, ()| Ok(c.state.count));
    }
}
