//! # chat-index: a coordinator actor over data actors
//!
//! **Pattern.** State is split into *data actors*, one per entity (here a `room` per chat room,
//! holding its messages), and a *coordinator actor* that keeps track of them (here an `index`
//! that creates rooms and lists them). The coordinator creates its data actors with
//! `c.client().create(...)`, remembers their ids, and answers questions about all of them by
//! calling each (`listRooms` fans out a `summary()` call per room). Clients ask the coordinator
//! *where* things are, then talk to the data actors directly, by id: the messages never pass
//! through the index, so it stays small and cold while the rooms take the traffic, each on the
//! shard its (name, key) hashes to.
//!
//! **When to use it.** Whenever entities must be discoverable or enumerable (rooms in a lobby,
//! documents of a workspace, matches of a game server) but each one's traffic is independent.
//! Keep the coordinator to the index: if every message went through it, it would be the one
//! actor, on one core, that everything waits for.
//!
//! Details shown here: the room key is the index key plus the room name (`["main", "general"]`),
//! so each index has its own rooms; `create` (not `getOrCreate`) makes the room, so the room's
//! existence is the source of truth and a concurrent `createRoom` of the same name loses with
//! `actor/duplicate_key`, which the index turns into its own `UserError` (`room_exists`).
//!
//! ```sh
//! cargo run -p pinion-examples --bin chat-index            # drive, print, stop
//! cargo run -p pinion-examples --bin chat-index -- --serve # ... and keep serving
//! ```

use std::process::ExitCode;

use clap::Parser;
use pinion_examples::{Driver, Error, Flags};
use pinion_runtime::{
    ActionError, ActionResult, Actions, Actor, ActorId, ActorInfo, Registry, UserError, Value,
    join_all, value,
};
use serde::{Deserialize, Serialize};

/// Runs the chat-index example: an `index` coordinator and `room` data actors.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    flags: Flags,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let registry = Registry::new().register::<Index>().register::<Room>();
    pinion_examples::run("chat-index", registry, &args.flags, drive)
}

// ---- the coordinator ---------------------------------------------------------------------

/// `index`: creates rooms and lists them.
struct Index;

#[derive(Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct IndexState {
    /// Room names and actor ids, in creation order.
    rooms: Vec<(String, ActorId)>,
}

/// A room as the index answers it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomRef {
    name: String,
    actor_id: String,
}

impl Actor for Index {
    const NAME: &'static str = "index";
    type State = IndexState;
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<IndexState> {
        Ok(IndexState::default())
    }

    fn create_vars(_: &ActorInfo, _: &IndexState) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action_async("createRoom", |c, (name,): (String,)| async move {
                let name = name.trim().to_string();
                if name.is_empty() {
                    return Err(UserError::new("A room needs a name.")
                        .code("bad_name")
                        .into());
                }
                if c.state(|s| s.rooms.iter().any(|(known, _)| *known == name)) {
                    return Err(room_exists(&name));
                }
                // The room's key is this index's key plus the room's name.
                let mut key = c.key().to_vec();
                key.push(name.clone());
                let input = value::to_value(&RoomInput { name: &name })?;
                // `create` makes the actor now. Another createRoom of the same name may have
                // passed the check above while we awaited: then one of the two creations fails
                // here.
                let room = match c.client().create("room", key, Some(input)).await {
                    Ok(room) => room,
                    Err(error) if error.code == "duplicate_key" => return Err(room_exists(&name)),
                    Err(error) => return Err(error.into()),
                };
                c.state_mut(|s| s.rooms.push((name.clone(), room.id())));
                Ok(RoomRef {
                    name,
                    actor_id: room.id().to_string(),
                })
            })
            .action("rooms", |c, ()| {
                Ok(c.state
                    .rooms
                    .iter()
                    .map(|(name, id)| RoomRef {
                        name: name.clone(),
                        actor_id: id.to_string(),
                    })
                    .collect::<Vec<_>>())
            })
            // Asks every room for its summary, all at once (the rooms live on every shard).
            .action_async("listRooms", |c, ()| async move {
                let client = c.client();
                let rooms: Vec<_> = c.state(|s| {
                    s.rooms
                        .iter()
                        .map(|(_, id)| client.get_for_id("room", *id))
                        .collect()
                });
                let summaries = join_all(
                    rooms
                        .iter()
                        .map(|room| room.call::<RoomSummary>("summary", ())),
                )
                .await;
                summaries
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(ActionError::from)
            });
    }
}

fn room_exists(name: &str) -> ActionError {
    UserError::new(format!("There is already a room named {name:?}."))
        .code("room_exists")
        .into()
}

// ---- the data actors ------------------------------------------------------------------------

/// `room`: one chat room and its messages.
struct Room;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct RoomState {
    name: String,
    messages: Vec<Message>,
}

#[derive(Serialize)]
struct RoomInput<'a> {
    name: &'a str,
}

#[derive(
    Clone, Debug, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
struct Message {
    user: String,
    text: String,
}

/// What a room tells the index about itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RoomSummary {
    name: String,
    messages: usize,
    last: Option<String>,
}

impl Actor for Room {
    const NAME: &'static str = "room";
    type State = RoomState;
    type Vars = ();
    type ConnState = ();

    fn create_state(info: &ActorInfo, input: Option<Value>) -> ActionResult<RoomState> {
        // The name from the creation input; a room made without one is named after its key.
        let name = input
            .as_ref()
            .and_then(|input| input.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| info.key().last().cloned())
            .unwrap_or_default();
        Ok(RoomState {
            name,
            messages: Vec::new(),
        })
    }

    fn create_vars(_: &ActorInfo, _: &RoomState) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action("post", |c, (user, text): (String, String)| {
                c.state.messages.push(Message { user, text });
                Ok(c.state.messages.len())
            })
            .action("history", |c, ()| Ok(c.state.messages.clone()))
            .action("summary", |c, ()| {
                Ok(RoomSummary {
                    name: c.state.name.clone(),
                    messages: c.state.messages.len(),
                    last: c
                        .state
                        .messages
                        .last()
                        .map(|m| format!("{}: {}", m.user, m.text)),
                })
            });
    }
}

// ---- the driver ---------------------------------------------------------------------------

fn drive(d: &mut Driver) -> Result<(), Error> {
    let index = d.get_or_create("index", &["main"])?;
    println!(
        "index [\"main\"]: actor {index} on shard {}",
        d.shard_of("index", &["main"])
    );

    let mut rooms = Vec::new();
    for name in ["general", "random", "help"] {
        let room: RoomRef = d.call(&index, "createRoom", (name,))?;
        println!(
            "createRoom({name:?}): actor {} (key [\"main\", {name:?}]) on shard {}",
            room.actor_id,
            d.shard_of("room", &["main", name])
        );
        rooms.push(room);
    }
    match d.call::<RoomRef, _>(&index, "createRoom", ("general",)) {
        Err(error) if error.code == "room_exists" => {
            println!("createRoom(\"general\") again: {error}")
        }
        other => return Err(format!("a second createRoom(\"general\") gave {other:?}").into()),
    }

    // Messages go straight to the rooms, by the ids the index gave out.
    let posts = [
        ("general", "alice", "hi all"),
        ("general", "bob", "hello alice"),
        ("general", "carol", "morning!"),
        ("random", "bob", "anyone seen my keys?"),
        ("random", "alice", "no"),
        ("help", "dave", "how do I make a room?"),
    ];
    for (room, user, text) in posts {
        let id = &rooms
            .iter()
            .find(|r| r.name == room)
            .ok_or("no such room")?
            .actor_id;
        let count: usize = d.call(id, "post", (user, text))?;
        println!("post to {room}: {user}: {text:?} -> message #{count}");
    }

    let listed: Vec<RoomSummary> = d.call(&index, "listRooms", ())?;
    println!("rooms: {}", listed.len());
    let mut total = 0;
    for room in &listed {
        println!(
            "  {}: {} message{}, last {:?}",
            room.name,
            room.messages,
            if room.messages == 1 { "" } else { "s" },
            room.last.as_deref().unwrap_or("-")
        );
        total += room.messages;
    }
    println!("messages: {total}");
    Ok(())
}
