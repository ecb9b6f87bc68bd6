//! `pinion-storage`: what a shard persists, behind one interface.
//!
//! Every shard owns one [`Store`] and nothing else touches it (shared-nothing: no file or table is
//! written by two shards). The store holds the shard's **actor directory** (one [`ActorRecord`]
//! per actor: name, key, id, creation time, destruction time) and each actor's **state snapshot**
//! (opaque bytes produced by the runtime).
//!
//! This version ships [`MemoryStore`], which keeps everything in the shard's memory: actors
//! survive for the life of the process, not across restarts. The durable backend (rkyv snapshots
//! in append-only log segments written through io_uring, with group commit and torn-tail
//! recovery) implements the same trait; the runtime is written against the trait so that swap,
//! and a fault-injecting backend for the deterministic simulator, touch no other code.

use std::collections::HashMap;

/// One actor in a shard's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActorRecord {
    /// The actor id (see the runtime's `placement` module: a hash of name and key).
    pub id: u64,
    pub name: String,
    pub key: Vec<String>,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Set once the actor is destroyed; its key is free again.
    pub destroyed_ms: Option<u64>,
}

/// A shard's persistence backend.
///
/// Writes are applied in call order. A backend may buffer them; [`Store::flush`] is the point at
/// which everything written before it is durable (a no-op for [`MemoryStore`]).
pub trait Store {
    /// Every record in the directory, for rebuilding the shard's tables at start.
    fn load_directory(&mut self) -> Vec<ActorRecord>;
    /// Inserts or replaces the record with `record.id`.
    fn put_actor(&mut self, record: &ActorRecord);
    /// The last snapshot saved for `id`, if any.
    fn load_state(&mut self, id: u64) -> Option<Vec<u8>>;
    /// Replaces the snapshot of `id`.
    fn save_state(&mut self, id: u64, snapshot: &[u8]);
    /// Removes the snapshot of `id` (the directory record stays, marked destroyed by the caller).
    fn delete_state(&mut self, id: u64);
    /// Makes every earlier write durable.
    fn flush(&mut self);
}

/// A [`Store`] in the shard's memory. Nothing survives the process.
#[derive(Default)]
pub struct MemoryStore {
    directory: HashMap<u64, ActorRecord>,
    states: HashMap<u64, Vec<u8>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl Store for MemoryStore {
    fn load_directory(&mut self) -> Vec<ActorRecord> {
        self.directory.values().cloned().collect()
    }

    fn put_actor(&mut self, record: &ActorRecord) {
        self.directory.insert(record.id, record.clone());
    }

    fn load_state(&mut self, id: u64) -> Option<Vec<u8>> {
        self.states.get(&id).cloned()
    }

    fn save_state(&mut self, id: u64, snapshot: &[u8]) {
        let slot = self.states.entry(id).or_default();
        slot.clear();
        slot.extend_from_slice(snapshot);
    }

    fn delete_state(&mut self, id: u64) {
        self.states.remove(&id);
    }

    fn flush(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_round_trips() {
        let mut store = MemoryStore::new();
        let record = ActorRecord {
            id: 7,
            name: "counter".into(),
            key: vec!["a".into(), "".into()],
            created_ms: 1,
            destroyed_ms: None,
        };
        store.put_actor(&record);
        store.save_state(7, b"abc");
        store.save_state(7, b"de");
        store.flush();
        assert_eq!(store.load_directory(), vec![record.clone()]);
        assert_eq!(store.load_state(7).as_deref(), Some(&b"de"[..]));
        let destroyed = ActorRecord {
            destroyed_ms: Some(2),
            ..record
        };
        store.put_actor(&destroyed);
        store.delete_state(7);
        assert_eq!(store.load_directory(), vec![destroyed]);
        assert_eq!(store.load_state(7), None);
    }
}
