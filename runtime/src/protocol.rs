//! The RivetKit 2.0 client protocol over HTTP (RIVETKIT_PROTOCOL.md §1–§7, §11, §13), JSON
//! encoding: the manager API that resolves actors and the gateway's stateless action calls.
//!
//! Every request is routed on the shard that accepted it. Requests that name an actor (by id, or
//! by name and key, which hash to the id) run on the actor's owning shard: locally when that is
//! this shard, otherwise as a [`Forwarded`] message whose [`Reply`] is written back on the
//! connection the request came in on.

use std::borrow::Cow;
use std::rc::Rc;

use pinion_net::http::{Method, Request, Response};
use pinion_net::server::{Accepted, Handler};
use pinion_net::ws::Protocols;
use serde::Deserialize;

use crate::actor::{
    ActionError, ActorObject, CallArgs, Failure, Output, RawRequest, RawResponse, Started, Typed,
};
use crate::client::{self, CallTarget};
use crate::conn::ConnKey;
use crate::key;
use crate::mailbox::Message;
use crate::placement::ActorId;
use crate::realtime::{self, WsKind, WsRequest};
use crate::registry::Registry;
use crate::shard::{Create, Shard};
use crate::sys;
use crate::value::{self, ArgList, Value, write_json_str};

const JSON_HEADERS: &[(&str, &[u8])] = &[
    ("content-type", b"application/json"),
    ("access-control-allow-origin", b"*"),
    ("access-control-allow-credentials", b"true"),
    ("access-control-expose-headers", b"*"),
];
const TEXT_HEADERS: &[(&str, &[u8])] = &[
    ("content-type", b"text/plain; charset=utf-8"),
    ("access-control-allow-origin", b"*"),
    ("access-control-allow-credentials", b"true"),
    ("access-control-expose-headers", b"*"),
];
const INTERNAL_MESSAGE: &str = "Internal error. Read the server logs for more details.";

/// A RivetKit error as the client sees it: `{group, code, message, metadata?}` with an HTTP status.
#[derive(Debug, PartialEq)]
pub struct RivetError {
    pub status: u16,
    pub group: &'static str,
    pub code: Cow<'static, str>,
    pub message: Cow<'static, str>,
    pub metadata: Option<Value>,
}

impl RivetError {
    fn new(
        status: u16,
        group: &'static str,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        RivetError {
            status,
            group,
            code: Cow::Borrowed(code),
            message: message.into(),
            metadata: None,
        }
    }

    /// The masked form of every non-public error.
    pub fn internal() -> RivetError {
        let mut error = RivetError::new(500, "internal", "internal_error", INTERNAL_MESSAGE);
        error.metadata = Some(Value::Object(Default::default()));
        error
    }

    pub(crate) fn from_action(error: ActionError) -> RivetError {
        match error {
            ActionError::User(user) => RivetError {
                status: 400,
                group: "user",
                code: Cow::Owned(user.code),
                message: Cow::Owned(user.message),
                metadata: user.metadata,
            },
            ActionError::Internal(_) => RivetError::internal(),
        }
    }

    pub(crate) fn actor_not_found(id: &str) -> RivetError {
        RivetError::new(404, "actor", "not_found", format!("Actor not found: {id}"))
    }

    pub(crate) fn actor_type_unknown(name: &str) -> RivetError {
        RivetError::new(
            400,
            "actor",
            "not_found",
            format!("No actor type named '{name}' is registered."),
        )
    }

    pub(crate) fn duplicate_key(name: &str, key: &[String]) -> RivetError {
        let mut message = format!("Actor already exists with name '{name}' and key '");
        let mut key_json = Vec::new();
        let _ = value::write_tagged(&mut key_json, key);
        message.push_str(&String::from_utf8_lossy(&key_json));
        message.push('\'');
        RivetError::new(400, "actor", "duplicate_key", message)
    }

    /// A call reached an actor that went to sleep or was destroyed meanwhile (the reference
    /// answers "Actor is stopping" the same way).
    pub(crate) fn stopping() -> RivetError {
        RivetError::new(500, "internal", "internal_error", "Actor is stopping.")
    }

    pub(crate) fn overloaded() -> RivetError {
        RivetError::new(
            503,
            "actor",
            "overloaded",
            "The server is overloaded; retry later.",
        )
    }

    pub(crate) fn encoding_invalid() -> RivetError {
        RivetError::new(
            400,
            "encoding",
            "invalid",
            "Unsupported encoding; this server speaks `json`.",
        )
    }

    pub(crate) fn params_invalid() -> RivetError {
        RivetError::new(400, "params", "invalid", "Invalid connection params.")
    }

    pub(crate) fn timed_out() -> RivetError {
        RivetError::new(
            400,
            "action",
            "timed_out",
            "The action did not answer before its deadline.",
        )
    }

    pub(crate) fn outgoing_too_long() -> RivetError {
        RivetError::new(
            400,
            "message",
            "outgoing_too_long",
            "The action's output is too long.",
        )
    }

    pub(crate) fn websocket_not_defined() -> RivetError {
        RivetError::new(
            404,
            "handler",
            "websocket_not_defined",
            "This actor does not handle raw WebSockets (onWebSocket is not defined).",
        )
    }

    fn action_not_found(name: &str) -> RivetError {
        RivetError::new(
            400,
            "action",
            "not_found",
            format!("Action '{name}' not found. Validate the action exists on your actor."),
        )
    }

    fn invalid(message: impl Into<Cow<'static, str>>) -> RivetError {
        RivetError::new(400, "request", "invalid", message)
    }

    fn route_not_found() -> RivetError {
        RivetError::new(404, "request", "not_found", "No such route.")
    }

    /// Appends the JSON body.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"group\":");
        write_json_str(out, self.group);
        out.extend_from_slice(b",\"code\":");
        write_json_str(out, &self.code);
        out.extend_from_slice(b",\"message\":");
        write_json_str(out, &self.message);
        if let Some(metadata) = &self.metadata {
            out.extend_from_slice(b",\"metadata\":");
            if value::write_tagged(out, metadata).is_err() {
                out.extend_from_slice(b"null");
            }
        }
        out.push(b'}');
    }
}

/// Logs the detail of an error the client only sees masked.
pub(crate) fn log_internal(what: &str, actor: &str, error: &ActionError) {
    if let ActionError::Internal(detail) = error {
        tracing::error!(actor, what, %detail, "internal error (masked for the client)");
    }
}

/// Work that runs on the owning shard on behalf of another shard.
pub(crate) enum Forwarded {
    /// `PUT/POST/GET /actors` by name and key. The reply is the complete response body.
    Resolve {
        name: String,
        key: Vec<String>,
        input: Option<String>,
        create: Create,
    },
    /// One id of `GET /actors?actor_ids=`: the reply body is the actor object, or empty if absent.
    Lookup { id: ActorId },
    /// `POST /gateway/{id}/action/{name}`, with its raw body and connection params.
    Action {
        id: ActorId,
        name: String,
        body: Vec<u8>,
        params: Value,
    },
    /// An actor-to-actor call (`c.client()`): resolve the target and run the action.
    Call {
        target: CallTarget,
        action: String,
        body: Vec<u8>,
    },
    /// `/gateway/{id}/request/{path}`: raw HTTP for the actor's `on_request`.
    Raw {
        id: ActorId,
        request: OwnedRawRequest,
        params: Value,
    },
}

/// A [`RawRequest`] that can cross shards.
pub(crate) struct OwnedRawRequest {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl OwnedRawRequest {
    fn from(request: &RawRequest<'_>) -> OwnedRawRequest {
        OwnedRawRequest {
            method: request.method.to_string(),
            path: request.path.to_string(),
            query: request.query.to_string(),
            headers: request
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
            body: request.body.to_vec(),
        }
    }
}

/// The owning shard's answer to a [`Forwarded`] call: a status and a JSON body.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    /// The headers of a raw (`onRequest`) response; `None` for the protocol's JSON replies.
    pub(crate) raw_headers: Option<Vec<(String, String)>>,
}

impl Reply {
    /// An empty 500, for a sink that is always written (every action path writes its reply).
    pub(crate) fn new() -> Reply {
        Reply {
            status: 500,
            body: Vec::new(),
            raw_headers: None,
        }
    }

    /// A 200 with `{}` (an action that returned `undefined`).
    pub(crate) fn ok_empty() -> Reply {
        let mut reply = Reply::new();
        reply.status = 200;
        reply.body.extend_from_slice(b"{}");
        reply
    }

    pub(crate) fn error(error: &RivetError) -> Reply {
        let mut reply = Reply::new();
        reply.status = error.status;
        error.write_json(&mut reply.body);
        reply
    }

    /// Writes this reply, from another shard, as the HTTP response.
    fn write_to(&self, res: &mut Response<'_>) {
        match &self.raw_headers {
            None => res.json(self.status, &mut |out| out.extend_from_slice(&self.body)),
            Some(headers) => send_raw(res, self.status, headers, &self.body),
        }
    }
}

/// Where an answer goes: straight into the HTTP response, or into a [`Reply`] for another shard.
trait Sink {
    fn json(&mut self, status: u16, write: &mut dyn FnMut(&mut Vec<u8>));

    /// A raw (`onRequest`) response: the actor's status, headers and body, as they are.
    fn raw(&mut self, response: RawResponse);

    fn error(&mut self, error: &RivetError) {
        self.json(error.status, &mut |out| error.write_json(out));
    }
}

impl Sink for Response<'_> {
    fn json(&mut self, status: u16, write: &mut dyn FnMut(&mut Vec<u8>)) {
        self.send_with(status, JSON_HEADERS, write);
    }

    fn raw(&mut self, response: RawResponse) {
        send_raw(self, response.status, &response.headers, &response.body);
    }
}

impl Sink for Reply {
    fn json(&mut self, status: u16, write: &mut dyn FnMut(&mut Vec<u8>)) {
        self.status = status;
        self.body.clear();
        write(&mut self.body);
    }

    fn raw(&mut self, response: RawResponse) {
        self.status = response.status;
        self.body = response.body;
        self.raw_headers = Some(response.headers);
    }
}

/// Sends an actor's raw response, adding the CORS headers every route carries unless the actor
/// set them itself. `content-length` and `connection` are the HTTP layer's; the actor's are
/// dropped.
fn send_raw(res: &mut Response<'_>, status: u16, headers: &[(String, String)], body: &[u8]) {
    let mut all: Vec<(&str, &[u8])> = headers
        .iter()
        .filter(|(name, _)| {
            !name.eq_ignore_ascii_case("content-length")
                && !name.eq_ignore_ascii_case("connection")
                && !name.eq_ignore_ascii_case("transfer-encoding")
        })
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    for (name, value) in &JSON_HEADERS[1..] {
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            all.push((name, value));
        }
    }
    res.send(status, &all, body);
}

/// Runs a forwarded call on this (the owning) shard.
pub(crate) async fn run_forwarded(shard: &Rc<Shard>, call: Forwarded) -> Reply {
    let mut reply = Reply::new();
    match call {
        Forwarded::Resolve {
            name,
            key,
            input,
            create,
        } => resolve(shard, &name, key, input.as_deref(), create, &mut reply).await,
        Forwarded::Lookup { id } => {
            reply.status = 200;
            if let Some(record) = shard.read_record(id).await {
                write_actor(&mut reply.body, &record);
            }
        }
        Forwarded::Action {
            id,
            name,
            mut body,
            params,
        } => action(shard, id, &name, Input::Json(&mut body), params, &mut reply).await,
        Forwarded::Call {
            target,
            action,
            mut body,
        } => return client::run(shard, &target, &action, Input::Json(&mut body)).await,
        Forwarded::Raw {
            id,
            request,
            params,
        } => {
            let headers: Vec<(&str, &[u8])> = request
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect();
            let view = RawRequest {
                method: &request.method,
                path: &request.path,
                query: &request.query,
                headers: &headers,
                body: &request.body,
            };
            raw_request(shard, id, &view, params, &mut reply).await;
        }
    }
    reply
}

/// Counts an asynchronous action in its actor's [`ActorObject::pending`] while it runs.
pub(crate) struct Pending(Rc<dyn ActorObject>);

impl Pending {
    pub(crate) fn count(actor: &Rc<dyn ActorObject>) -> Pending {
        actor.pending().set(actor.pending().get() + 1);
        Pending(actor.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending().set(self.0.pending().get() - 1);
    }
}

/// The `x-rivet-conn-params` of a stateless request, `null` when absent.
fn header_params(req: &Request<'_>) -> Result<Value, RivetError> {
    match req.header("x-rivet-conn-params") {
        None => Ok(Value::Null),
        Some(bytes) => {
            let mut bytes = bytes.to_vec();
            value::parse_tagged::<Value>(&mut bytes).map_err(|_| RivetError::params_invalid())
        }
    }
}

/// The ephemeral connection of a stateless call (RivetKit runs the connect hooks for those
/// too): connected when made, disconnected when dropped, also if the call's future is dropped
/// halfway (its client went away).
struct Ephemeral {
    actor: Rc<dyn ActorObject>,
    conn: ConnKey,
}

impl Ephemeral {
    fn connect(actor: &Rc<dyn ActorObject>, params: Value) -> Result<Ephemeral, RivetError> {
        match actor.clone().connect(params, None) {
            Ok((conn, _)) => Ok(Ephemeral {
                actor: actor.clone(),
                conn,
            }),
            Err(error) => {
                log_internal("connect", actor.info().name(), &error);
                Err(RivetError::from_action(error))
            }
        }
    }
}

impl Drop for Ephemeral {
    fn drop(&mut self) {
        self.actor.clone().disconnect(self.conn);
    }
}

/// The HTTP entry point of a shard.
pub(crate) struct Gateway {
    pub(crate) shard: Rc<Shard>,
}

impl Handler for Gateway {
    async fn handle(&self, req: &Request<'_>, body: &mut [u8], res: &mut Response<'_>) {
        self.shard.drain_mailbox();
        let _in_flight = self.shard.enter_request();
        if self.shard.is_stopping() {
            // The stop waits for this request, then ends the connection: say so.
            res.close_after();
            if ws_route(&self.shard.config.base_path, req.path).is_some() {
                // `upgrade` declined: no new WebSocket on a stopping shard.
                return res.send(
                    503,
                    TEXT_HEADERS,
                    b"Service Unavailable: the server is stopping",
                );
            }
        }
        let Some(path) = strip_base(&self.shard.config.base_path, req.path) else {
            return res.send(404, TEXT_HEADERS, b"Not Found (Pinion)");
        };
        if req.method == Method::Options {
            return preflight(req, res);
        }
        match (req.method, path) {
            (Method::Get, "/metadata") => res.send(200, JSON_HEADERS, &self.shard.metadata_json),
            (Method::Get, "/health") => res.send(
                200,
                JSON_HEADERS,
                concat!(
                    "{\"status\":\"ok\",\"runtime\":\"pinion\",\"version\":\"",
                    env!("CARGO_PKG_VERSION"),
                    "\"}"
                )
                .as_bytes(),
            ),
            (Method::Get, "/") => res.send(
                200,
                TEXT_HEADERS,
                b"This is a Pinion server (RivetKit 2.0 protocol).\n",
            ),
            (Method::Put | Method::Post | Method::Get, "/actors") => {
                self.actors(req, body, res).await
            }
            _ => match path.strip_prefix("/gateway/") {
                Some(rest) => self.gateway(req, rest, body, res).await,
                None => res.send(404, TEXT_HEADERS, b"Not Found (Pinion)"),
            },
        }
    }

    fn wants_upgrade(&self, req: &Request<'_>) -> bool {
        ws_route(&self.shard.config.base_path, req.path).is_some()
    }

    async fn upgrade(&self, req: &Request<'_>, protocols: Protocols<'_>) -> Option<Accepted> {
        if self.shard.is_stopping() {
            // Answered by `handle` instead, which closes the connection.
            return None;
        }
        let (id, route) = ws_route(&self.shard.config.base_path, req.path)?;
        // An unknown id falls through to `handle`, which answers `actor/not_found`.
        let id = ActorId::parse(id)?;
        let mut rivet = false;
        let mut encoding = None;
        let mut params = None;
        for protocol in protocols {
            if protocol == "rivet" {
                rivet = true;
            } else if let Some(name) = protocol.strip_prefix("rivet_encoding.") {
                encoding = Some(name.to_string());
            } else if let Some(text) = protocol.strip_prefix("rivet_conn_params.") {
                // Undecodable params are refused like unparsable ones, on the owning shard.
                params =
                    Some(percent_decode(text, false).map_or_else(String::new, Cow::into_owned));
            }
        }
        let kind = match route {
            WsRoute::Connect => WsKind::Connect,
            WsRoute::Raw(path) => WsKind::Raw {
                path: if path.is_empty() {
                    "/".into()
                } else {
                    path.into()
                },
                query: if req.query.is_empty() {
                    String::new()
                } else {
                    format!("?{}", req.query)
                },
                headers: req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect(),
            },
        };
        let request = WsRequest {
            id,
            kind,
            encoding,
            params,
        };
        // Select `rivet` when offered (the official client insists); offer nothing otherwise.
        let protocol = rivet.then(|| "rivet".to_string());
        let shard = &self.shard;
        let owner = id.shard(shard.shard_count());
        if owner == shard.index {
            return Some(Accepted::new(
                protocol,
                realtime::open(shard, request).await,
            ));
        }
        // Move the socket to the owning shard (see `realtime`, Placement).
        let postman = shard.postman.clone();
        Some(Accepted::handoff(
            protocol,
            Box::new(move |detached| match detached {
                Ok(socket) => {
                    // A shard that has ended drops the socket, which closes the connection.
                    let _ = postman.send(owner, Message::Adopt { socket, request });
                }
                Err(error) => tracing::debug!(%error, "WebSocket handoff failed"),
            }),
        ))
    }
}

/// Which WebSocket route a gateway path is.
enum WsRoute<'a> {
    /// `/gateway/{id}/connect`.
    Connect,
    /// `/gateway/{id}/websocket{path}`, with the path below `/websocket`.
    Raw(&'a str),
}

/// The actor id text and route of a WebSocket path, or `None` if it is not one.
fn ws_route<'a>(base: &str, path: &'a str) -> Option<(&'a str, WsRoute<'a>)> {
    let rest = strip_base(base, path)?.strip_prefix("/gateway/")?;
    let (id, route) = rest.split_once('/')?;
    let id = id.split_once('@').map_or(id, |(id, _)| id);
    if route == "connect" {
        return Some((id, WsRoute::Connect));
    }
    let below = route.strip_prefix("websocket")?;
    (below.is_empty() || below.starts_with('/')).then_some((id, WsRoute::Raw(below)))
}

impl Gateway {
    /// `/actors`: resolve by name and key (`PUT` = getOrCreate, `POST` = create, `GET` = get), or
    /// look up by ids (`GET ?actor_ids=`).
    async fn actors(&self, req: &Request<'_>, body: &mut [u8], res: &mut Response<'_>) {
        let shard = &self.shard;
        let (name, key, input, create) = match req.method {
            Method::Get => {
                let mut name = None;
                let mut key = None;
                for (field, text) in query_pairs(req.query) {
                    match field {
                        "name" => name = Some(text),
                        "key" => key = Some(text),
                        "actor_ids" => return self.lookup(&text, res).await,
                        _ => {}
                    }
                }
                let Some(name) = name else {
                    return res.error(&RivetError::invalid(
                        "`GET /actors` needs `name` and `key`, or `actor_ids`.",
                    ));
                };
                (
                    name.into_owned(),
                    key.map(Cow::into_owned),
                    None,
                    Create::Never,
                )
            }
            _ => {
                if body.len() > shard.config.limits.manager_body_bytes_max {
                    return res.error(&RivetError::new(
                        400,
                        "message",
                        "incoming_too_long",
                        "The request body is too long.",
                    ));
                }
                let parsed: ActorsBody = match simd_json::serde::from_slice(body) {
                    Ok(parsed) => parsed,
                    Err(error) => {
                        return res.error(&RivetError::invalid(format!(
                            "Invalid request body: {error}"
                        )));
                    }
                };
                let create = if req.method == Method::Put {
                    Create::IfAbsent
                } else {
                    Create::Always
                };
                (parsed.name, parsed.key, parsed.input, create)
            }
        };
        let key = match key {
            Some(text) => match key::parse(&text) {
                Ok(parts) => parts,
                Err(error) => {
                    return res.error(&RivetError::invalid(format!(
                        "Invalid actor key: {error:?}"
                    )));
                }
            },
            // `create` without a key gets a random one, as in the reference.
            None if create == Create::Always => vec![format!("{:016x}", crate::sys::random_u64())],
            None => return res.error(&RivetError::invalid("An actor key is required.")),
        };
        if !shard.has_type(&name) {
            return res.error(&RivetError::actor_type_unknown(&name));
        }
        let owner = ActorId::derive(&name, &key::serialize(&key)).shard(shard.shard_count());
        if owner == shard.index {
            resolve(shard, &name, key, input.as_deref(), create, res).await;
        } else {
            let reply = shard
                .forward(
                    owner,
                    Forwarded::Resolve {
                        name,
                        key,
                        input,
                        create,
                    },
                )
                .await;
            reply.write_to(res);
        }
    }

    /// `GET /actors?actor_ids=a,b,c`.
    async fn lookup(&self, ids: &str, res: &mut Response<'_>) {
        let shard = &self.shard;
        let ids: Vec<&str> = ids.split(',').filter(|id| !id.is_empty()).collect();
        if ids.len() > shard.config.limits.actor_ids_max {
            return res.error(&RivetError::invalid(format!(
                "At most {} actor ids per request.",
                shard.config.limits.actor_ids_max
            )));
        }
        let mut list = Vec::with_capacity(64);
        list.extend_from_slice(b"{\"actors\":[");
        let mut first = true;
        for text in ids {
            // An id we could not have issued names no actor: an empty result, not an error.
            let Some(id) = ActorId::parse(text) else {
                continue;
            };
            let owner = id.shard(shard.shard_count());
            let before = list.len();
            if !first {
                list.push(b',');
            }
            let start = list.len();
            if owner == shard.index {
                if let Some(record) = shard.read_record(id).await {
                    write_actor(&mut list, &record);
                }
            } else {
                let reply = shard.forward(owner, Forwarded::Lookup { id }).await;
                if reply.status != 200 {
                    return reply.write_to(res);
                }
                list.extend_from_slice(&reply.body);
            }
            if list.len() == start {
                list.truncate(before);
            } else {
                first = false;
            }
        }
        list.extend_from_slice(b"]}");
        res.json(200, &mut |out| out.extend_from_slice(&list));
    }

    /// `/gateway/{id}/...`.
    async fn gateway(
        &self,
        req: &Request<'_>,
        rest: &str,
        body: &mut [u8],
        res: &mut Response<'_>,
    ) {
        let shard = &self.shard;
        let (id_text, route) = rest.split_once('/').unwrap_or((rest, ""));
        // The reference also accepts `{id}@{token}`; the token is not checked there either.
        let id_text = id_text.split_once('@').map_or(id_text, |(id, _)| id);
        let Some(id) = ActorId::parse(id_text) else {
            return res.error(&RivetError::actor_not_found(id_text));
        };
        if route == "request" || route.starts_with("request/") {
            return self
                .raw(req, id, &route["request".len()..], body, res)
                .await;
        }
        let Some(action_name) = route.strip_prefix("action/") else {
            return res.error(&RivetError::route_not_found());
        };
        if req.method != Method::Post {
            return res.error(&RivetError::invalid("Actions are called with POST."));
        }
        let Some(action_name) = percent_decode(action_name, false) else {
            return res.error(&RivetError::invalid(
                "The action name is not valid percent-encoded UTF-8.",
            ));
        };
        match req.header("x-rivet-encoding") {
            None | Some(b"json") => {}
            Some(_) => return res.error(&RivetError::encoding_invalid()),
        }
        let params = match header_params(req) {
            Ok(params) => params,
            Err(error) => return res.error(&error),
        };
        if body.len() > shard.config.limits.action_body_bytes_max {
            return res.error(&RivetError::new(
                400,
                "message",
                "incoming_too_long",
                "The action request is too long.",
            ));
        }
        let owner = id.shard(shard.shard_count());
        if owner == shard.index {
            action(shard, id, &action_name, Input::Json(body), params, res).await;
        } else {
            let call = Forwarded::Action {
                id,
                name: action_name.into_owned(),
                body: body.to_vec(),
                params,
            };
            let reply = shard.forward(owner, call).await;
            reply.write_to(res);
        }
    }
}

impl Gateway {
    /// `/gateway/{id}/request/{path}`: raw HTTP to the actor's `on_request`, which sees the path
    /// without `/request` and the query as `URL.search` gives it.
    async fn raw(
        &self,
        req: &Request<'_>,
        id: ActorId,
        path: &str,
        body: &[u8],
        res: &mut Response<'_>,
    ) {
        let shard = &self.shard;
        let path = if path.is_empty() { "/" } else { path };
        let query = if req.query.is_empty() {
            String::new()
        } else {
            format!("?{}", req.query)
        };
        let headers: Vec<(&str, &[u8])> = req.headers.iter().map(|h| (h.name, h.value)).collect();
        let request = RawRequest {
            method: req.method_str,
            path,
            query: &query,
            headers: &headers,
            body,
        };
        let params = match header_params(req) {
            Ok(params) => params,
            Err(error) => return res.error(&error),
        };
        let owner = id.shard(shard.shard_count());
        if owner == shard.index {
            raw_request(shard, id, &request, params, res).await;
        } else {
            let call = Forwarded::Raw {
                id,
                request: OwnedRawRequest::from(&request),
                params,
            };
            shard.forward(owner, call).await.write_to(res);
        }
    }
}

/// Runs the raw HTTP handler of actor `id` on the owning shard.
async fn raw_request(
    shard: &Rc<Shard>,
    id: ActorId,
    request: &RawRequest<'_>,
    params: Value,
    sink: &mut dyn Sink,
) {
    let actor = match shard.load(id).await {
        Ok(Some(actor)) => actor,
        Ok(None) => return sink.error(&RivetError::actor_not_found(&id.to_string())),
        Err(error) => return sink.error(&error),
    };
    let conn = match Ephemeral::connect(&actor, params) {
        Ok(conn) => conn,
        Err(error) => return sink.error(&error),
    };
    let response = actor.clone().request(request, conn.conn);
    drop(conn);
    if let Some(Ok(_)) = &response
        && actor.options().durable_before_reply
        && let Err(error) = gate_output(shard, &actor).await
    {
        return sink.error(&error);
    }
    match response {
        None => sink.error(&RivetError::new(
            404,
            "handler",
            "request_not_defined",
            "This actor does not handle raw HTTP requests (onRequest is not defined).",
        )),
        Some(Ok(response)) => sink.raw(response),
        Some(Err(error)) => {
            log_internal("on_request", actor.info().name(), &error);
            sink.error(&RivetError::from_action(error));
        }
    }
}

#[derive(Deserialize)]
struct ActorsBody {
    name: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    input: Option<String>,
}

/// Resolves (name, key) on the owning shard and writes the manager API's answer.
async fn resolve(
    shard: &Rc<Shard>,
    name: &str,
    key: Vec<String>,
    input: Option<&str>,
    create: Create,
    sink: &mut dyn Sink,
) {
    let input = match input {
        None => None,
        Some(text) => match value::decode_base64_cbor(text) {
            Ok(value) => Some(value),
            Err(error) => {
                return sink.error(&RivetError::invalid(format!(
                    "Invalid actor input: {error}"
                )));
            }
        },
    };
    match shard.resolve(name, key, input, create).await {
        Err(error) => sink.error(&error),
        Ok(None) => sink.json(200, &mut |out| out.extend_from_slice(b"{\"actors\":[]}")),
        Ok(Some(resolved)) => sink.json(200, &mut |out| match create {
            Create::Never => {
                out.extend_from_slice(b"{\"actors\":[");
                write_actor(out, &resolved.record);
                out.extend_from_slice(b"]}");
            }
            Create::IfAbsent => {
                out.extend_from_slice(b"{\"actor\":");
                write_actor(out, &resolved.record);
                out.extend_from_slice(if resolved.created {
                    b",\"created\":true}"
                } else {
                    b",\"created\":false}"
                });
            }
            Create::Always => {
                out.extend_from_slice(b"{\"actor\":");
                write_actor(out, &resolved.record);
                out.push(b'}');
            }
        }),
    }
}

/// [`action`] for callers elsewhere in the crate (actor-to-actor calls).
pub(crate) async fn run_action(
    shard: &Rc<Shard>,
    id: ActorId,
    name: &str,
    input: Input<'_>,
    params: Value,
    sink: &mut Reply,
) {
    action(shard, id, name, input, params, sink).await
}

/// An action call's arguments as they arrive.
pub(crate) enum Input<'b> {
    /// A `{"args":[...]}` body (parsed in place).
    Json(&'b mut [u8]),
    /// A same-shard call's own values (see [`Typed`]).
    Typed(&'b Typed),
}

/// Runs action `name` of actor `id` on the owning shard and writes `{"output": ...}` or the error
/// (a typed call's output, when it takes the typed path, goes to its slot and `{}` is written).
async fn action(
    shard: &Rc<Shard>,
    id: ActorId,
    name: &str,
    input: Input<'_>,
    params: Value,
    sink: &mut dyn Sink,
) {
    let mut actor = match shard.actor(id) {
        Some(actor) => actor,
        None => match shard.load(id).await {
            Ok(Some(actor)) => actor,
            Ok(None) => return sink.error(&RivetError::actor_not_found(&id.to_string())),
            Err(error) => return sink.error(&error),
        },
    };
    // A typed call whose values are not the action's parameter types is encoded here and goes
    // on as any call (its output can still come back unencoded).
    let mut encoded = Vec::new();
    let parsed = match input {
        Input::Json(body) => value::parse_action_body(body).map(|list| (list, None)),
        Input::Typed(typed) if actor.arg_type(name) == Some(typed.args_type()) => {
            Ok((ArgList::empty(), Some(typed)))
        }
        Input::Typed(typed) => typed
            .encode_args(&mut encoded)
            .and_then(|()| value::parse_action_body(&mut encoded))
            .map(|list| (list, Some(typed))),
    };
    let (list, typed) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => {
            return sink.error(&RivetError::invalid(format!(
                "Invalid action request body: {error}"
            )));
        }
    };
    let args = CallArgs { list: &list, typed };
    let limit = shard.config.limits.action_output_bytes_max;
    if actor
        .life()
        .over_budget(shard.config.limits.actor_turn_budget)
    {
        // Fairness: this actor had its turn; let the other ready tasks go first.
        shard.yield_turn().await;
        actor.life().new_turn();
        // It may have gone to sleep (or been destroyed) meanwhile: look it up again.
        actor = match shard.load(id).await {
            Ok(Some(actor)) => actor,
            Ok(None) => return sink.error(&RivetError::actor_not_found(&id.to_string())),
            Err(error) => return sink.error(&error),
        };
    }
    let conn = match Ephemeral::connect(&actor, params) {
        Ok(conn) => conn,
        Err(error) => return sink.error(&error),
    };
    let next = {
        let mut scratch = shard.scratch.borrow_mut();
        scratch.clear();
        let durable = actor.options().durable_before_reply;
        match actor.clone().start(name, &args, &mut scratch, conn.conn) {
            Started::Done(Ok(output)) if durable => Next::Gated(Ok((output, scratch.clone()))),
            Started::Done(Err(failure)) if durable => Next::Gated(Err(failure)),
            Started::Done(Ok(output)) => return write_output(sink, output, &scratch, limit),
            Started::Done(Err(failure)) => {
                return write_failure(sink, actor.info().name(), name, failure);
            }
            Started::Running(future) => Next::Running(future),
        }
    };
    let (output, gated) = match next {
        Next::Running(running) => {
            return finish_action(shard, &actor, name, running, conn, sink).await;
        }
        Next::Gated(Err(failure)) => {
            drop(conn);
            // Events the action emitted before failing leave with the state they saw.
            let _ = gate_output(shard, &actor).await;
            return write_failure(sink, actor.info().name(), name, failure);
        }
        Next::Gated(Ok(done)) => done,
    };
    // The output gate: the reply waits for the state it reflects to be durable.
    drop(conn);
    if let Err(error) = gate_output(shard, &actor).await {
        return sink.error(&error);
    }
    write_output(sink, output, &gated, limit)
}

/// How [`action`] goes on once the action started.
enum Next {
    /// A synchronous action of an actor with the output gate finished (output copied out of the
    /// shared scratch buffer, which cannot be held across the wait).
    Gated(Result<(Output, Vec<u8>), Failure>),
    Running(crate::actor::Running),
}

/// The rest of [`action`] for an asynchronous action: admission, deadline, output gate.
async fn finish_action(
    shard: &Rc<Shard>,
    actor: &Rc<dyn ActorObject>,
    name: &str,
    running: crate::actor::Running,
    conn: Ephemeral,
    sink: &mut dyn Sink,
) {
    let actor = actor.clone();
    let limit = shard.config.limits.action_output_bytes_max;
    if actor.pending().get() >= shard.config.limits.actor_pending_max {
        // Refused before its first poll, so none of the action's code ran.
        return sink.error(&RivetError::overloaded());
    }
    let _pending = Pending::count(&actor);
    let Some(result) = sys::timeout(shard.config.limits.action_timeout, running).await else {
        return sink.error(&RivetError::timed_out());
    };
    if actor.options().durable_before_reply {
        drop(conn);
        let gated = gate_output(shard, &actor).await;
        if let (Ok(_), Err(error)) = (&result, gated) {
            return sink.error(&error);
        }
    }
    match result {
        Ok(Some(encoded)) => write_output(sink, Output::Written, &encoded, limit),
        Ok(None) => write_output(sink, Output::Undefined, &[], limit),
        Err(failure) => write_failure(sink, actor.info().name(), name, failure),
    }
}

fn write_output(sink: &mut dyn Sink, output: Output, encoded: &[u8], limit: usize) {
    match output {
        Output::Undefined => sink.json(200, &mut |out| out.extend_from_slice(b"{}")),
        Output::Written if encoded.len() > limit => sink.error(&RivetError::outgoing_too_long()),
        Output::Written => sink.json(200, &mut |out| {
            out.extend_from_slice(b"{\"output\":");
            out.extend_from_slice(encoded);
            out.push(b'}');
        }),
    }
}

fn write_failure(sink: &mut dyn Sink, actor: &str, action: &str, failure: Failure) {
    sink.error(&failure_error(actor, action, failure));
}

/// The output gate of an actor with `durable_before_reply`, after an action: saves the state
/// and waits until it is durable, then sends the events the action emitted. On a storage error
/// the events are dropped and the caller gets an internal error (its change may not survive).
pub(crate) async fn gate_output(
    shard: &Shard,
    actor: &Rc<dyn ActorObject>,
) -> Result<(), RivetError> {
    let held = actor.take_held();
    match shard.persist(actor).await {
        Ok(()) => {
            for (sender, frame) in held {
                let _ = sender.send_frame_bytes(frame);
            }
            Ok(())
        }
        Err(error) => {
            tracing::error!(id = %actor.info().actor_id(), %error, "a durable save failed");
            Err(RivetError::internal())
        }
    }
}

/// Runs a scheduled action (no connection, as RivetKit runs them), with the action deadline;
/// failures are logged.
pub(crate) async fn run_scheduled(
    shard: &Rc<Shard>,
    actor: &Rc<dyn ActorObject>,
    name: &str,
    body: &mut [u8],
) {
    let actor_name = actor.info().name();
    let args = match value::parse_action_body(body) {
        Ok(args) => args,
        Err(error) => {
            tracing::error!(actor = actor_name, action = name, %error, "unreadable scheduled arguments");
            return;
        }
    };
    let started = {
        let mut scratch = shard.scratch.borrow_mut();
        scratch.clear();
        actor
            .clone()
            .start(name, &CallArgs::json(&args), &mut scratch, ConnKey::NONE)
    };
    let result = match started {
        Started::Done(result) => result.map(|_| ()),
        Started::Running(running) => {
            let _pending = Pending::count(actor);
            match sys::timeout(shard.config.limits.action_timeout, running).await {
                Some(result) => result.map(|_| ()),
                None => {
                    tracing::error!(
                        actor = actor_name,
                        action = name,
                        "scheduled action timed out"
                    );
                    return;
                }
            }
        }
    };
    match result {
        Ok(()) => {
            if actor.options().durable_before_reply {
                let _ = gate_output(shard, actor).await;
            }
        }
        Err(failure) => {
            let error = failure_error(actor_name, name, failure);
            tracing::warn!(actor = actor_name, action = name, code = %error.code, "scheduled action failed");
        }
    }
}

/// The client's view of an action failure; internal details are logged here.
pub(crate) fn failure_error(actor: &str, action: &str, failure: Failure) -> RivetError {
    match failure {
        Failure::Stopping => RivetError::stopping(),
        Failure::NotFound => RivetError::action_not_found(action),
        Failure::BadArgs(error) => {
            RivetError::invalid(format!("Invalid arguments for action '{action}': {error}"))
        }
        Failure::Action(error) => {
            log_internal(action, actor, &error);
            RivetError::from_action(error)
        }
    }
}

/// The actor object of the manager API (§5.1).
fn write_actor(out: &mut Vec<u8>, record: &pinion_storage::ActorRecord) {
    out.extend_from_slice(b"{\"actor_id\":\"");
    out.extend_from_slice(&ActorId(record.id).to_hex());
    out.extend_from_slice(b"\",\"name\":");
    write_json_str(out, &record.name);
    out.extend_from_slice(b",\"key\":");
    write_json_str(out, &key::serialize(&record.key));
    out.extend_from_slice(
        b",\"namespace_id\":\"default\",\"runner_name_selector\":\"default\",\"create_ts\":",
    );
    out.extend_from_slice(itoa::Buffer::new().format(record.created_ms).as_bytes());
    out.extend_from_slice(
        b",\"connectable_ts\":null,\"destroy_ts\":null,\"sleep_ts\":null,\"start_ts\":null}",
    );
}

/// The body of `GET /metadata` (§2): only logged by the client, but it must be JSON.
pub(crate) fn metadata_json(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"runtime\":\"pinion\",\"version\":\"");
    out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    out.extend_from_slice(b"\",\"runner\":{\"kind\":{\"normal\":{}}},\"actorNames\":{");
    for (i, name) in registry.names().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(&mut out, name);
        out.extend_from_slice(b":{\"metadata\":{}}");
    }
    out.extend_from_slice(b"}}");
    out
}

/// CORS preflight (§13): echo the origin and the requested headers.
fn preflight(req: &Request<'_>, res: &mut Response<'_>) {
    let origin = req.header("origin").unwrap_or(b"*");
    let headers = req.header("access-control-request-headers").unwrap_or(b"*");
    res.send(
        204,
        &[
            ("access-control-allow-origin", origin),
            ("access-control-allow-credentials", b"true"),
            (
                "access-control-allow-methods",
                b"GET, POST, PUT, DELETE, OPTIONS, PATCH",
            ),
            ("access-control-allow-headers", headers),
            ("access-control-max-age", b"86400"),
        ],
        b"",
    );
}

/// The path below the base path, or `None` when the request is outside it. `base` is
/// normalised: `/` or a prefix without a trailing slash.
fn strip_base<'a>(base: &str, path: &'a str) -> Option<&'a str> {
    if base == "/" || base.is_empty() {
        return Some(path);
    }
    let rest = path.strip_prefix(base)?;
    match rest {
        "" => Some("/"),
        _ if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

/// The `key=value` pairs of a query string, percent-decoded (`+` is a space, as
/// `URLSearchParams` writes it). Pairs that do not decode are skipped.
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, Cow<'_, str>)> {
    query.split('&').filter_map(|pair| {
        let (field, text) = pair.split_once('=').unwrap_or((pair, ""));
        Some((field, percent_decode(text, true)?))
    })
}

/// Decodes `%XX` escapes (and `+` as space when `plus_is_space`). `None` if an escape is malformed
/// or the result is not UTF-8.
pub(crate) fn percent_decode(text: &str, plus_is_space: bool) -> Option<Cow<'_, str>> {
    if !text
        .bytes()
        .any(|b| b == b'%' || (plus_is_space && b == b'+'))
    {
        return Some(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_path_stripping() {
        assert_eq!(strip_base("/", "/actors"), Some("/actors"));
        assert_eq!(
            strip_base("/api/rivet", "/api/rivet/actors"),
            Some("/actors")
        );
        assert_eq!(strip_base("/api/rivet", "/api/rivet"), Some("/"));
        assert_eq!(strip_base("/api/rivet", "/api/rivets/actors"), None);
        assert_eq!(strip_base("/api/rivet", "/actors"), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("abc", true).as_deref(), Some("abc"));
        assert_eq!(percent_decode("a%2Fb%5C", true).as_deref(), Some("a/b\\"));
        assert_eq!(percent_decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%F0%9F%98%80", false).as_deref(), Some("😀"));
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%2", false), None);
        assert_eq!(percent_decode("%FF", false), None);
    }

    #[test]
    fn error_bodies() {
        let mut out = Vec::new();
        RivetError::internal().write_json(&mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"group":"internal","code":"internal_error","message":"Internal error. Read the server logs for more details.","metadata":{}}"#
        );
        out.clear();
        RivetError::duplicate_key("profile", &["a/b".into()]).write_json(&mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"group":"actor","code":"duplicate_key","message":"Actor already exists with name 'profile' and key '[\"a/b\"]'"}"#
        );
    }
}
