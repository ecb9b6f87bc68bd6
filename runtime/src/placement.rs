//! Where an actor lives: a pure function of (actor name, key), carried in the actor id.
//!
//! * The **actor id** is a 64-bit hash of the actor's name and its canonical key string
//!   ([`crate::key::serialize`]), written as 16 lowercase hex digits. It is deterministic, like
//!   the reference server's ids, so `get` / `getOrCreate` of the same (name, key) always name the
//!   same id, also after a restart.
//! * The **owning shard** of an id is `jump_consistent_hash(id, shard_count)`. Any shard can
//!   compute it from the id alone, with no shared table, which is what lets a request land on any
//!   shard (SO_REUSEPORT) and be forwarded to the owner. Jump hashing moves only `1/n` of the
//!   actors when the shard count grows from `n - 1` to `n`, which keeps re-sharding cheap.
//!
//! The hash is FNV-1a (64-bit) over `name ++ 0x00 ++ key` followed by the SplitMix64 finaliser to
//! spread FNV's weak low bits. It is part of the on-disk and on-the-wire contract: changing it
//! changes every actor id.

use std::fmt;

/// The identity of one actor instance, stable across restarts.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct ActorId(pub u64);

impl ActorId {
    /// The id of the actor named `name` with canonical key string `key`.
    pub fn derive(name: &str, key: &str) -> ActorId {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &byte in name.as_bytes().iter().chain(&[0u8]).chain(key.as_bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        ActorId(splitmix64(hash))
    }

    /// Parses the 16-hex-digit form. Anything else is not an id we issued.
    pub fn parse(text: &str) -> Option<ActorId> {
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(ActorId)
    }

    /// The shard that owns this actor when the server runs `shard_count` shards.
    pub fn shard(self, shard_count: usize) -> usize {
        jump_consistent_hash(self.0, shard_count)
    }

    /// Writes the 16-hex-digit form into a fixed buffer, without allocating.
    pub fn to_hex(self) -> [u8; 16] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = DIGITS[((self.0 >> (60 - 4 * i)) & 0xf) as usize];
        }
        out
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorId({self})")
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014).
fn jump_consistent_hash(mut key: u64, buckets: usize) -> usize {
    assert!(buckets > 0, "a server has at least one shard");
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = (((b + 1) as f64) * ((1u64 << 31) as f64 / (((key >> 33) + 1) as f64))) as i64;
    }
    b as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        assert_eq!(
            ActorId::derive("counter", "a"),
            ActorId::derive("counter", "a")
        );
        assert_ne!(
            ActorId::derive("counter", "a"),
            ActorId::derive("counter", "b")
        );
        // The separator keeps (name, key) pairs apart that concatenate to the same bytes.
        assert_ne!(ActorId::derive("ab", "c"), ActorId::derive("a", "bc"));
    }

    #[test]
    fn hex_round_trip() {
        for id in [0, 1, u64::MAX, 0x0123_4567_89ab_cdef] {
            let id = ActorId(id);
            let hex = id.to_hex();
            let text = std::str::from_utf8(&hex).unwrap();
            assert_eq!(text, id.to_string());
            assert_eq!(ActorId::parse(text), Some(id));
        }
        assert_eq!(ActorId::parse("xyz"), None);
        assert_eq!(ActorId::parse("0123456789abcdeg"), None);
        assert_eq!(ActorId::parse("0123456789abcdef0"), None);
    }

    #[test]
    fn jump_hash_is_balanced_and_moves_little() {
        let n = 20_000u64;
        let mut counts = [0usize; 4];
        let mut moved = 0;
        for i in 0..n {
            let id = ActorId::derive("counter", &i.to_string());
            let four = id.shard(4);
            counts[four] += 1;
            assert!(four < 4);
            if id.shard(5) != four {
                moved += 1;
            }
            assert_eq!(id.shard(1), 0);
        }
        for count in counts {
            assert!(count > 4_500 && count < 5_500, "unbalanced: {counts:?}");
        }
        // Growing 4 -> 5 shards moves about 1/5 of the actors, all of them to the new shard.
        assert!(moved > 3_500 && moved < 4_500, "moved {moved}");
    }
}
