//! Durable schedules (RivetKit's `c.schedule`): run an action of this actor later.
//!
//! `schedule.after(delay, "action", args)` and `schedule.at(unix_ms, "action", args)` write a
//! schedule record to the shard's store (actor, schedule id, due time, payload = action name and
//! arguments). The store indexes pending schedules by due time (a B-tree in memory; payloads
//! stay on disk), so a shard with a million pending schedules keeps one small entry per schedule
//! and finds the next due one in O(log n). One timer task per shard sleeps until the earliest
//! due time, wakes the actor if it sleeps, runs the action (with no connection, like RivetKit),
//! and then deletes the schedule.
//!
//! Delivery is **at least once**: a schedule is deleted only after its action ran, so one that
//! was due while the server was down runs after the restart (late rather than never), and one
//! whose action was running during a crash runs again. An action that fails is logged and not
//! retried (as RivetKit). Beyond RivetKit: [`Schedule::list`] and [`Schedule::cancel`].

use std::rc::Weak;
use std::time::Duration;

use serde::Serialize;

use crate::actor::{ActionError, ActionResult};
use crate::placement::ActorId;
use crate::shard::Shard;
use crate::sys;
use crate::value;

/// A schedule's id, unique within its actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScheduleId(pub u64);

impl std::fmt::Display for ScheduleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for ScheduleId {
    type Err = std::num::ParseIntError;
    fn from_str(text: &str) -> Result<ScheduleId, Self::Err> {
        u64::from_str_radix(text, 16).map(ScheduleId)
    }
}

/// A pending schedule, as [`Schedule::list`] shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheduled {
    pub id: ScheduleId,
    /// When it is due, in milliseconds since the Unix epoch.
    pub due_ms: u64,
}

/// The schedules of one actor; from [`crate::ActionCtx::schedule`] or [`crate::Ctx::schedule`].
pub struct Schedule {
    shard: Weak<Shard>,
    actor: ActorId,
}

/// Payload layout version (first byte).
const PAYLOAD_VERSION: u8 = 1;

impl Schedule {
    pub(crate) fn new(shard: Weak<Shard>, actor: ActorId) -> Schedule {
        Schedule { shard, actor }
    }

    /// Runs `action` with `args` (a tuple of arguments, as for [`crate::Conn::send`]) after
    /// `delay`.
    pub fn after(
        &self,
        delay: Duration,
        action: &str,
        args: impl Serialize,
    ) -> ActionResult<ScheduleId> {
        let due = sys::unix_ms().saturating_add(delay.as_millis().min(u64::MAX as u128) as u64);
        self.at(due, action, args)
    }

    /// Runs `action` with `args` at `unix_ms` (milliseconds since the Unix epoch; a time in the
    /// past runs at once).
    pub fn at(&self, unix_ms: u64, action: &str, args: impl Serialize) -> ActionResult<ScheduleId> {
        let shard = self.shard()?;
        let payload = encode_payload(action, &args)?;
        if payload.len() > shard.config.limits.action_body_bytes_max {
            return Err(ActionError::internal(
                "the scheduled action's arguments are larger than the action body limit",
            ));
        }
        let id = ScheduleId(shard.next_schedule_id());
        shard.put_schedule(self.actor, id.0, unix_ms, payload);
        Ok(id)
    }

    /// The actor's pending schedules, earliest first.
    pub fn list(&self) -> ActionResult<Vec<Scheduled>> {
        let shard = self.shard()?;
        let mut list: Vec<Scheduled> = shard
            .store
            .schedules_of(self.actor.0)
            .into_iter()
            .map(|entry| Scheduled {
                id: ScheduleId(entry.schedule),
                due_ms: entry.due_ms,
            })
            .collect();
        list.sort_by_key(|s| (s.due_ms, s.id));
        Ok(list)
    }

    /// Cancels a pending schedule; `false` if there is none with that id (it ran already, or
    /// never existed).
    pub fn cancel(&self, id: ScheduleId) -> ActionResult<bool> {
        let shard = self.shard()?;
        let exists = shard.store.schedule(self.actor.0, id.0).is_some();
        if exists {
            shard.delete_schedule(self.actor, id.0);
        }
        Ok(exists)
    }

    fn shard(&self) -> ActionResult<std::rc::Rc<Shard>> {
        self.shard
            .upgrade()
            .ok_or_else(|| ActionError::internal("the shard is stopping"))
    }
}

/// `[version u8][name length u16 LE][name][{"args":[...]}]`: the body is what a stateless call
/// of the action would carry, so firing it reuses the action path.
fn encode_payload(action: &str, args: &impl Serialize) -> ActionResult<Vec<u8>> {
    let name_len = u16::try_from(action.len())
        .map_err(|_| ActionError::internal("the scheduled action's name is too long"))?;
    let mut out = Vec::with_capacity(16 + action.len());
    out.push(PAYLOAD_VERSION);
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(action.as_bytes());
    out.extend_from_slice(b"{\"args\":");
    value::write_args(&mut out, args).map_err(|error| {
        ActionError::internal(format!("the scheduled arguments do not serialize: {error}"))
    })?;
    out.push(b'}');
    Ok(out)
}

/// The action name and body of a payload.
pub(crate) fn decode_payload(payload: &[u8]) -> Option<(&str, &[u8])> {
    let (&version, rest) = payload.split_first()?;
    if version != PAYLOAD_VERSION || rest.len() < 2 {
        return None;
    }
    let name_len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
    let rest = &rest[2..];
    if rest.len() < name_len {
        return None;
    }
    let name = std::str::from_utf8(&rest[..name_len]).ok()?;
    Some((name, &rest[name_len..]))
}

impl Serialize for Scheduled {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Scheduled", 2)?;
        s.serialize_field("id", &self.id.to_string())?;
        s.serialize_field("dueMs", &self.due_ms)?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        let payload = encode_payload("sendReminder", &("hi",)).unwrap();
        let (name, body) = decode_payload(&payload).unwrap();
        assert_eq!(name, "sendReminder");
        assert_eq!(body, br#"{"args":["hi"]}"#);
        assert!(decode_payload(&payload[..3]).is_none());
        assert!(decode_payload(&[]).is_none());
    }
}
