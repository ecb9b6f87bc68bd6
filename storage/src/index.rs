//! The in-memory index of one shard's log: where the latest record of everything is.
//!
//! Sized for many sleeping actors: an actor costs one hash-table entry of 56 bytes (id plus a
//! 48-byte [`Slot`]). Its name is an interned type index, its key stays on disk (read with the
//! directory record when the actor wakes), and its state is a location, never bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;

use crate::format::{Body, align8};

/// Where a record is: segment number (from 1; 0 means "nowhere"), byte offset, and length
/// without padding. The top bit of `len` marks a tombstone (a delete record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Loc {
    pub(crate) seg: u32,
    pub(crate) off: u32,
    len: u32,
}

const TOMB: u32 = 1 << 31;

impl Loc {
    pub(crate) const NONE: Loc = Loc {
        seg: 0,
        off: 0,
        len: 0,
    };

    pub(crate) fn new(seg: u32, off: u32, len: usize, tombstone: bool) -> Loc {
        debug_assert!(seg != 0 && (len as u64) < u64::from(TOMB));
        Loc {
            seg,
            off,
            len: len as u32 | if tombstone { TOMB } else { 0 },
        }
    }

    pub(crate) fn is_none(self) -> bool {
        self.seg == 0
    }

    pub(crate) fn is_tombstone(self) -> bool {
        self.len & TOMB != 0
    }

    /// Points at a live value (not nothing, not a tombstone).
    pub(crate) fn is_value(self) -> bool {
        !self.is_none() && !self.is_tombstone()
    }

    /// Record length without padding.
    pub(crate) fn len(self) -> usize {
        (self.len & !TOMB) as usize
    }

    /// Bytes the record occupies in its segment (with padding).
    pub(crate) fn footprint(self) -> u64 {
        align8((self.len & !TOMB) as u64)
    }

    /// The same location, ignoring the tombstone bit.
    fn same_place(self, other: Loc) -> bool {
        self.seg == other.seg && self.off == other.off
    }
}

/// One actor: its directory record and its state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub(crate) actor: Loc,
    pub(crate) state: Loc,
    pub(crate) created_ms: u64,
    /// `u64::MAX` while alive.
    pub(crate) destroyed_ms: u64,
    /// Index into [`Index::names`]; meaningless while `actor` is none.
    pub(crate) name: u32,
}

impl Slot {
    const EMPTY: Slot = Slot {
        actor: Loc::NONE,
        state: Loc::NONE,
        created_ms: 0,
        destroyed_ms: u64::MAX,
        name: 0,
    };
}

/// A scheduled item: when it is due and where its record is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SchedSlot {
    pub(crate) loc: Loc,
    pub(crate) due_ms: u64,
}

/// Hashes actor ids. They are already well-mixed 64-bit hashes, but keys come from clients, so the
/// table still folds each id with a per-process seed (a 128-bit multiply, as in foldhash).
#[derive(Clone, Copy)]
pub(crate) struct IdHash {
    seed: u64,
}

impl Default for IdHash {
    fn default() -> IdHash {
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
        IdHash { seed: seed | 1 }
    }
}

impl BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            seed: self.seed,
            hash: 0,
        }
    }
}

pub(crate) struct IdHasher {
    seed: u64,
    hash: u64,
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.hash
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, id: u64) {
        let product = u128::from(id ^ self.hash ^ self.seed) * 0x9e37_79b9_7f4a_7c15_u128;
        self.hash = (product as u64) ^ ((product >> 64) as u64);
    }
}

/// Bytes and live bytes of one segment, for compaction.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SegStat {
    /// Bytes written (with padding), live or not.
    pub(crate) bytes: u64,
    /// Bytes of the records the index points at.
    pub(crate) live: u64,
    /// Sequence number of the last record in the segment.
    pub(crate) last_seq: u64,
}

#[derive(Default)]
pub(crate) struct Index {
    pub(crate) actors: HashMap<u64, Slot, IdHash>,
    pub(crate) names: Vec<Rc<str>>,
    name_ids: HashMap<Rc<str>, u32>,
    pub(crate) schedules: BTreeMap<(u64, u64), SchedSlot>,
    /// (due, actor, schedule) of every pending schedule.
    pub(crate) due: BTreeSet<(u64, u64, u64)>,
    /// actor → key → location of the latest put or delete.
    pub(crate) meta: BTreeMap<u64, BTreeMap<Box<[u8]>, Loc>>,
    pub(crate) segs: BTreeMap<u32, SegStat>,
}

impl Index {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.name_ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        let name: Rc<str> = Rc::from(name);
        self.names.push(name.clone());
        self.name_ids.insert(name, id);
        id
    }

    fn kill(&mut self, old: Loc) {
        if old.is_none() {
            return;
        }
        match self.segs.get_mut(&old.seg) {
            Some(stat) => stat.live -= old.footprint(),
            None => debug_assert!(false, "a live record in deleted segment {}", old.seg),
        }
    }

    fn live(&mut self, new: Loc) {
        self.segs.entry(new.seg).or_default().live += new.footprint();
    }

    /// Makes the record at `loc` the latest for what it describes.
    pub(crate) fn apply(&mut self, body: &Body<'_>, loc: Loc) {
        debug_assert_eq!(loc.is_tombstone(), body.is_tombstone());
        match body {
            Body::Segment { .. } | Body::Unknown => return,
            Body::Actor(a) => {
                let name = self.intern(a.name);
                let slot = self.actors.entry(a.id).or_insert(Slot::EMPTY);
                let old = std::mem::replace(&mut slot.actor, loc);
                slot.name = name;
                slot.created_ms = a.created_ms;
                slot.destroyed_ms = a.destroyed_ms.unwrap_or(u64::MAX);
                self.kill(old);
            }
            Body::State { id, .. } | Body::DeleteState { id } => {
                let slot = self.actors.entry(*id).or_insert(Slot::EMPTY);
                let old = std::mem::replace(&mut slot.state, loc);
                self.kill(old);
            }
            Body::Schedule {
                actor,
                schedule,
                due_ms,
                ..
            } => {
                let old = self.schedules.insert(
                    (*actor, *schedule),
                    SchedSlot {
                        loc,
                        due_ms: *due_ms,
                    },
                );
                if let Some(old) = old {
                    if old.loc.is_value() {
                        self.due.remove(&(old.due_ms, *actor, *schedule));
                    }
                    self.kill(old.loc);
                }
                self.due.insert((*due_ms, *actor, *schedule));
            }
            Body::DeleteSchedule { actor, schedule } => {
                let old = self
                    .schedules
                    .insert((*actor, *schedule), SchedSlot { loc, due_ms: 0 });
                if let Some(old) = old {
                    if old.loc.is_value() {
                        self.due.remove(&(old.due_ms, *actor, *schedule));
                    }
                    self.kill(old.loc);
                }
            }
            Body::Meta { actor, key, .. } | Body::DeleteMeta { actor, key } => {
                let keys = self.meta.entry(*actor).or_default();
                let old = match keys.get_mut(*key) {
                    Some(slot) => std::mem::replace(slot, loc),
                    None => {
                        keys.insert((*key).into(), loc);
                        Loc::NONE
                    }
                };
                self.kill(old);
            }
        }
        self.live(loc);
    }

    /// Where the index says the latest record about `body`'s subject is.
    fn current(&self, body: &Body<'_>) -> Loc {
        match body {
            Body::Segment { .. } | Body::Unknown => Loc::NONE,
            Body::Actor(a) => self.actors.get(&a.id).map_or(Loc::NONE, |s| s.actor),
            Body::State { id, .. } | Body::DeleteState { id } => {
                self.actors.get(id).map_or(Loc::NONE, |s| s.state)
            }
            Body::Schedule {
                actor, schedule, ..
            }
            | Body::DeleteSchedule { actor, schedule } => self
                .schedules
                .get(&(*actor, *schedule))
                .map_or(Loc::NONE, |s| s.loc),
            Body::Meta { actor, key, .. } | Body::DeleteMeta { actor, key } => self
                .meta
                .get(actor)
                .and_then(|keys| keys.get(*key))
                .copied()
                .unwrap_or(Loc::NONE),
        }
    }

    /// Whether the record `body` at `loc` is the latest for its subject.
    pub(crate) fn is_live(&self, body: &Body<'_>, loc: Loc) -> bool {
        let current = self.current(body);
        !current.is_none() && current.same_place(loc)
    }

    /// Forgets the tombstone `body` at `loc` (compaction of the oldest segment: nothing older is
    /// left for it to hide). Removes an actor slot that is left pointing at nothing.
    pub(crate) fn drop_tombstone(&mut self, body: &Body<'_>, loc: Loc) {
        if !self.is_live(body, loc) {
            return;
        }
        self.kill(loc);
        match body {
            Body::DeleteState { id } => {
                if let Some(slot) = self.actors.get_mut(id) {
                    slot.state = Loc::NONE;
                    if slot.actor.is_none() {
                        self.actors.remove(id);
                    }
                }
            }
            Body::DeleteSchedule { actor, schedule } => {
                self.schedules.remove(&(*actor, *schedule));
            }
            Body::DeleteMeta { actor, key } => {
                if let Some(keys) = self.meta.get_mut(actor) {
                    keys.remove(*key);
                    if keys.is_empty() {
                        self.meta.remove(actor);
                    }
                }
            }
            _ => debug_assert!(false, "not a tombstone"),
        }
    }

    /// Shrinks the tables to their contents (after recovery, so a million actors do not keep
    /// the slack of the last doubling).
    pub(crate) fn shrink(&mut self) {
        self.actors.shrink_to_fit();
    }

    pub(crate) fn live_states(&self) -> usize {
        self.actors.values().filter(|s| s.state.is_value()).count()
    }

    pub(crate) fn pending_schedules(&self) -> usize {
        self.due.len()
    }

    pub(crate) fn live_meta(&self) -> usize {
        self.meta
            .values()
            .flat_map(|keys| keys.values())
            .filter(|l| l.is_value())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ActorView;

    #[test]
    fn slot_is_small() {
        assert_eq!(std::mem::size_of::<Loc>(), 12);
        assert_eq!(std::mem::size_of::<Slot>(), 48);
    }

    #[test]
    fn apply_tracks_live_bytes_and_tombstones() {
        let mut index = Index::default();
        let actor = Body::Actor(ActorView {
            id: 1,
            created_ms: 10,
            destroyed_ms: None,
            name: "counter",
            keys: &[0, 0, 0, 0],
        });
        let a = Loc::new(1, 0, 60, false);
        index.apply(&actor, a);
        let s1 = Loc::new(1, 64, 40, false);
        index.apply(
            &Body::State {
                id: 1,
                snapshot: b"x",
            },
            s1,
        );
        assert_eq!(index.segs[&1].live, 64 + 40);
        let s2 = Loc::new(2, 0, 41, false);
        let state2 = Body::State {
            id: 1,
            snapshot: b"xy",
        };
        index.apply(&state2, s2);
        assert_eq!(index.segs[&1].live, 64);
        assert_eq!(index.segs[&2].live, 48);
        assert!(index.is_live(&state2, s2));
        assert!(!index.is_live(&state2, s1));
        let del = Body::DeleteState { id: 1 };
        let d = Loc::new(2, 48, 32, true);
        index.apply(&del, d);
        assert_eq!(index.segs[&2].live, 32);
        assert_eq!(index.live_states(), 0);
        index.drop_tombstone(&del, d);
        assert_eq!(index.segs[&2].live, 0);
        assert!(index.actors[&1].state.is_none());
        assert_eq!(
            index.names[index.actors[&1].name as usize].as_ref(),
            "counter"
        );
    }
}
