//! The reference actor set of `shared/reference` (RivetKit 2.0.33), written against Pinion's
//! actor API. Names, actions and observable behaviour match `reference-server/actors.js`; actors
//! whose features Pinion does not have yet (connections, schedules, sleep, actor-to-actor calls)
//! join as those features land.

use pinion_runtime::{
    ActionCtx, ActionError, ActionResult, Actions, Actor, ActorInfo, RawRequest, RawResponse,
    Registry, Rest, UserError, Value, value,
};
use serde::{Deserialize, Serialize};

/// Every demo actor type.
pub fn registry() -> Registry {
    Registry::new()
        .register::<Counter>()
        .register::<Profile>()
        .register::<Api>()
        .register::<Transform>()
}

/// `counter`: `{count}`; `increment(amount = 1)` returns the new count.
pub struct Counter;

#[derive(Default)]
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
                // The reference also broadcasts "count"; events arrive with connections.
                Ok(c.state.count)
            })
            .action("getCount", |c, ()| Ok(c.state.count))
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
