//! Calling actors from inside actions (RivetKit's `c.client()`).
//!
//! ```text
//! let client = c.client();
//! let ack: Ack = client
//!     .get_or_create("worker", [task.id.as_str()])
//!     .call("process", (&task, c.key()))
//!     .await?;
//! ```
//!
//! A call names its target by type name and key (get, getOrCreate with an optional input,
//! create) or by id, and carries the action's arguments as tagged JSON, exactly like a stateless
//! call from outside: resolution and the action run on the owning shard in one step, with an
//! ephemeral connection (so the callee's connect hooks run, as for any RivetKit client), and the
//! answer is the output or the error. When the owner is this shard the call runs right here,
//! with no message; otherwise it is one [`Forwarded::Call`] to the owner and one reply back.
//! [`ActorHandle::call_owned`] skips the JSON on the same shard: owned arguments of exactly the
//! action's parameter type are moved into it, and an output of exactly the requested type is
//! moved back.
//!
//! Errors: a [`UserError`] of the callee comes back as a [`CallError`] with group `user` and its
//! code, message and metadata, and `?` turns it into the same `UserError` for the caller's own
//! client. Every other failure (internal errors, masked as for external clients; overload;
//! `action/timed_out` when the call's deadline, [`crate::Limits::action_timeout`], passes; a
//! missing actor or action) is a `CallError` with its group and code, which `?` turns into an
//! internal error of the caller.
//!
//! Re-entrancy: the caller's action awaits the reply, and other actions of the caller's actor run
//! meanwhile (including calls back into it, from any shard), so call chains and cycles complete.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::actor::{ActionError, Typed, UserError};
use crate::key;
use crate::placement::ActorId;
use crate::protocol::{self, Forwarded, Input, Reply, RivetError};
use crate::shard::{Create, Shard};
use crate::sys;
use crate::value::{self, Value};

/// Calls other actors from an action; cheap to clone. See the module docs.
#[derive(Clone)]
pub struct Client {
    pub(crate) shard: Weak<Shard>,
}

impl Client {
    /// The existing actor `name` with `key` (RivetKit's `get`): calls fail with
    /// `actor/not_found` if there is none.
    pub fn get(&self, name: &str, key: impl KeyParts) -> ActorHandle {
        self.handle(name, key, Create::Never, None)
    }

    /// The actor `name` with `key`, created on first use (RivetKit's `getOrCreate`).
    pub fn get_or_create(&self, name: &str, key: impl KeyParts) -> ActorHandle {
        self.handle(name, key, Create::IfAbsent, None)
    }

    /// Like [`Client::get_or_create`], with the creation input used if this call creates it.
    pub fn get_or_create_with_input(
        &self,
        name: &str,
        key: impl KeyParts,
        input: Value,
    ) -> ActorHandle {
        self.handle(name, key, Create::IfAbsent, Some(input))
    }

    /// Creates the actor `name` with `key` now (RivetKit's `create`) and returns a handle to it;
    /// fails with `actor/duplicate_key` if it exists.
    pub async fn create(
        &self,
        name: &str,
        key: impl KeyParts,
        input: Option<Value>,
    ) -> Result<ActorHandle, CallError> {
        let handle = self.handle(name, key, Create::Always, input);
        // An empty action name resolves (here: creates) without calling anything.
        handle.call::<()>("", ()).await?;
        Ok(self.get_for_id(name, handle.id()))
    }

    /// The actor with id `id` (RivetKit's `getForId`).
    pub fn get_for_id(&self, name: &str, id: ActorId) -> ActorHandle {
        ActorHandle {
            client: self.clone(),
            target: CallTarget::Id {
                name: name.to_string(),
                id,
            },
        }
    }

    fn handle(
        &self,
        name: &str,
        key: impl KeyParts,
        create: Create,
        input: Option<Value>,
    ) -> ActorHandle {
        let key = key.into_parts();
        ActorHandle {
            client: self.clone(),
            target: CallTarget::Key {
                id: ActorId::derive(name, &key::serialize(&key)),
                name: name.to_string(),
                key,
                create,
                input,
            },
        }
    }
}

/// Anything that names the parts of an actor key: `["a", "b"]`, `&["a"]`, `Vec<String>`,
/// `&[String]`.
pub trait KeyParts {
    fn into_parts(self) -> Vec<String>;
}

impl<S: AsRef<str>, const N: usize> KeyParts for [S; N] {
    fn into_parts(self) -> Vec<String> {
        self.iter().map(|s| s.as_ref().to_string()).collect()
    }
}

impl<S: AsRef<str>> KeyParts for &[S] {
    fn into_parts(self) -> Vec<String> {
        self.iter().map(|s| s.as_ref().to_string()).collect()
    }
}

impl KeyParts for Vec<String> {
    fn into_parts(self) -> Vec<String> {
        self
    }
}

/// Which actor a call goes to, as it travels to the owning shard.
#[derive(Clone, Debug)]
pub(crate) enum CallTarget {
    Key {
        /// Derived from `name` and `key` once, when the handle is made.
        id: ActorId,
        name: String,
        key: Vec<String>,
        create: Create,
        input: Option<Value>,
    },
    Id {
        name: String,
        id: ActorId,
    },
}

impl CallTarget {
    fn id(&self) -> ActorId {
        match self {
            CallTarget::Key { id, .. } | CallTarget::Id { id, .. } => *id,
        }
    }
}

/// One target actor; see [`Client`].
pub struct ActorHandle {
    client: Client,
    target: CallTarget,
}

impl ActorHandle {
    /// The target's id (derived from name and key, or given).
    pub fn id(&self) -> ActorId {
        self.target.id()
    }

    /// Calls `action` with `args` (a tuple: `(a, b)`; `()` for none) and decodes its output into
    /// `R` (`Value` for anything; `()` or `Option<T>` where the action returns undefined).
    pub async fn call<R: DeserializeOwned>(
        &self,
        action: &str,
        args: impl Serialize,
    ) -> Result<R, CallError> {
        let shard = self.client.shard.upgrade().ok_or_else(CallError::stopped)?;
        let mut body = Vec::with_capacity(64);
        body.extend_from_slice(b"{\"args\":");
        value::write_args(&mut body, &args).map_err(|error| {
            CallError::internal(format!("the arguments do not serialize: {error}"))
        })?;
        body.push(b'}');
        let owner = self.target.id().shard(shard.shard_count());
        let timeout = shard.config.limits.action_timeout;
        let call = async {
            if owner == shard.index {
                run(&shard, &self.target, action, Input::Json(&mut body)).await
            } else {
                let call = Forwarded::Call {
                    target: self.target.clone(),
                    action: action.to_string(),
                    body,
                };
                shard.forward(owner, call).await
            }
        };
        let reply = sys::timeout(timeout, call).await;
        decode(reply.unwrap_or_else(|| Reply::error(&RivetError::timed_out())))
    }

    /// [`ActorHandle::call`] with owned arguments. When the target lives on this shard and its
    /// action was registered with exactly the type of `args`, the values are moved into the
    /// action without being encoded, and if the action's output type is exactly `R` it is moved
    /// back the same way: no JSON, no copy. Otherwise (other types, another shard, an actor type
    /// that rewrites outputs) it is the same call as [`ActorHandle::call`]. Either way the callee
    /// sees the same thing: the same hooks, connection, limits, deadline and output gate.
    pub async fn call_owned<R, Args>(&self, action: &str, args: Args) -> Result<R, CallError>
    where
        R: DeserializeOwned + 'static,
        Args: Serialize + 'static,
    {
        let shard = self.client.shard.upgrade().ok_or_else(CallError::stopped)?;
        if self.target.id().shard(shard.shard_count()) != shard.index {
            return self.call(action, args).await;
        }
        let typed = Typed::new::<Args, R>(args);
        let call = run(&shard, &self.target, action, Input::Typed(&typed));
        let reply = sys::timeout(shard.config.limits.action_timeout, call)
            .await
            .unwrap_or_else(|| Reply::error(&RivetError::timed_out()));
        if reply.status == 200
            && let Some(output) = typed.slot.borrow_mut().take()
        {
            let output = output
                .downcast::<R>()
                .expect("an action fills the slot only with the type the caller asked for");
            return Ok(*output);
        }
        decode(reply)
    }
}

/// Runs a call on the owning shard: resolves the target, then runs the action as a stateless
/// call with an ephemeral connection. The reply is what a stateless HTTP call would answer.
pub(crate) async fn run(
    shard: &Rc<Shard>,
    target: &CallTarget,
    action: &str,
    input: Input<'_>,
) -> Reply {
    let id = match target {
        // The common case, an awake actor that no transition holds: no directory lookup (and no
        // copy of its name and key to compare).
        &CallTarget::Key {
            id,
            ref name,
            ref key,
            create: Create::Never | Create::IfAbsent,
            ..
        } if shard.is_awake_as(id, name, key) => id,
        CallTarget::Key {
            name,
            key,
            create,
            input,
            ..
        } => match shard
            .resolve(name, key.clone(), input.clone(), *create)
            .await
        {
            Err(error) => return Reply::error(&error),
            Ok(None) => {
                return Reply::error(&RivetError::actor_not_found(&format!(
                    "no {name} with that key"
                )));
            }
            Ok(Some(resolved)) => ActorId(resolved.record.id),
        },
        &CallTarget::Id { ref name, id } => match shard.read_record(id).await {
            Some(record) if record.name == *name => id,
            _ => return Reply::error(&RivetError::actor_not_found(&id.to_string())),
        },
    };
    if action.is_empty() {
        // Resolution only (`Client::create`): the answer is `undefined`.
        return Reply::ok_empty();
    }
    let mut reply = Reply::new();
    protocol::run_action(shard, id, action, input, Value::Null, &mut reply).await;
    reply
}

/// Turns a stateless reply (`{"output": …}`, `{}`, or an error body) into the caller's result.
fn decode<R: DeserializeOwned>(mut reply: Reply) -> Result<R, CallError> {
    if reply.status != 200 {
        return Err(CallError::from_body(&mut reply.body));
    }
    let body = &mut reply.body[..];
    if !(body.starts_with(b"{\"output\":") && body.len() > 11) {
        // `{}`: the action returned undefined.
        return value::parse_tagged::<R>(&mut b"null".to_vec()).map_err(undecodable);
    }
    let end = body.len() - 1;
    value::parse_tagged::<R>(&mut body[10..end]).map_err(undecodable)
}

fn undecodable(error: value::Error) -> CallError {
    CallError::internal(format!(
        "the output does not decode into the expected type: {error}"
    ))
}

/// Why a call to another actor failed: the callee's error as its clients would see it (group,
/// code, message, metadata), or the call's own failure (`action/timed_out`, `actor/overloaded`).
#[derive(Clone, Debug, PartialEq)]
pub struct CallError {
    pub group: String,
    pub code: String,
    pub message: String,
    pub metadata: Option<Value>,
}

impl CallError {
    fn internal(message: String) -> CallError {
        CallError {
            group: "internal".into(),
            code: "internal_error".into(),
            message,
            metadata: None,
        }
    }

    fn stopped() -> CallError {
        CallError::internal("the shard is stopping".into())
    }

    fn from_body(body: &mut [u8]) -> CallError {
        #[derive(serde::Deserialize)]
        struct Body {
            group: String,
            code: String,
            message: String,
            #[serde(default)]
            metadata: Option<Value>,
        }
        match value::parse_tagged::<Body>(body) {
            Ok(body) => CallError {
                group: body.group,
                code: body.code,
                message: body.message,
                metadata: body.metadata,
            },
            Err(error) => CallError::internal(format!("undecodable error reply: {error}")),
        }
    }

    /// Whether this is the callee's [`UserError`].
    pub fn is_user(&self) -> bool {
        self.group == "user"
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}: {}", self.group, self.code, self.message)
    }
}

impl From<CallError> for ActionError {
    /// A callee's `UserError` stays one (its client sees the same code, message and metadata);
    /// anything else is an internal error of the caller (logged, masked for its client).
    fn from(error: CallError) -> ActionError {
        if error.is_user() {
            ActionError::User(UserError {
                code: error.code,
                message: error.message,
                metadata: error.metadata,
            })
        } else {
            ActionError::internal(format!("a call to another actor failed: {error}"))
        }
    }
}

/// Runs every future concurrently on this task and returns their outputs in order (for fan-out
/// from an action: `join_all(tasks.iter().map(|t| handle(t).call(...)))`).
///
/// Each future gets a waker of its own that records its index, so a wake-up polls only the
/// futures that were woken: a fan-out of N calls costs O(N) polls in all, not O(N²).
pub async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Option<Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    let mut left = pending.len();
    let woken = Arc::new(Woken {
        indices: Mutex::new((0..pending.len()).collect()),
        parent: Mutex::new(None),
    });
    let wakers: Vec<Waker> = (0..pending.len())
        .map(|index| {
            Waker::from(Arc::new(ChildWaker {
                index,
                woken: woken.clone(),
            }))
        })
        .collect();
    std::future::poll_fn(|cx| {
        *woken.parent.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        let ready = std::mem::take(&mut *woken.indices.lock().unwrap_or_else(|e| e.into_inner()));
        for index in ready {
            let Some(future) = &mut pending[index] else {
                continue;
            };
            let mut child = Context::from_waker(&wakers[index]);
            if let Poll::Ready(value) = future.as_mut().poll(&mut child) {
                outputs[index] = Some(value);
                pending[index] = None;
                left -= 1;
            }
        }
        if left == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("every future completed"))
        .collect()
}

/// The children of a [`join_all`] that were woken since its last poll, and its own waker.
/// (`Waker` must be `Send + Sync`, hence `Arc` and `Mutex`; they are never contended: everything
/// runs on the shard's thread.)
struct Woken {
    indices: Mutex<Vec<usize>>,
    parent: Mutex<Option<Waker>>,
}

struct ChildWaker {
    index: usize,
    woken: Arc<Woken>,
}

impl Wake for ChildWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken
            .indices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.index);
        if let Some(parent) = &*self.woken.parent.lock().unwrap_or_else(|e| e.into_inner()) {
            parent.wake_by_ref();
        }
    }
}
