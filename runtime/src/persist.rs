//! State snapshots: how an actor's durable state becomes bytes for the store and back.
//!
//! A snapshot is a 16-byte header followed by the state archived with rkyv 0.8:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 4 | magic `b"PNST"` |
//! | 4 | 2 | snapshot format version (1) |
//! | 6 | 2 | reserved (0) |
//! | 8 | 8 | reserved (0) |
//! | 16 | … | `rkyv::to_bytes` of the state (its root at the end, as rkyv lays it out) |
//!
//! The header is 16 bytes so that the archive keeps the alignment rkyv gave it (16 is the
//! largest an archived type asks for, `i128`). The store adds its own record header and
//! checksum around these bytes (see `pinion-storage`'s format docs). Loading validates the archive
//! with bytecheck before deserializing, so a damaged or foreign snapshot is an error, never
//! undefined behaviour.
//!
//! Any type that derives `rkyv::Archive`, `rkyv::Serialize` and `rkyv::Deserialize` is a
//! [`Persist`] state. Schema evolution is rkyv's: a changed state type cannot read old snapshots
//! (loading fails with an error naming the actor); keep the old type and convert, or version the
//! state yourself (an enum of versions).

use std::fmt;

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::de::Pool;
use rkyv::rancor::{self, Strategy};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

const MAGIC: &[u8; 4] = b"PNST";
const VERSION: u16 = 1;
/// Bytes before the archive.
pub const HEADER_BYTES: usize = 16;

/// A state that can be snapshotted: implemented for every rkyv-archivable type.
pub trait Persist: Sized + 'static {
    /// Replaces `out` with the snapshot of `self` (header and archive).
    fn save(&self, out: &mut Vec<u8>) -> Result<(), PersistError>;
    /// Reads a snapshot written by [`Persist::save`].
    fn load(snapshot: &[u8]) -> Result<Self, PersistError>;
}

impl<T> Persist for T
where
    T: rkyv::Archive
        + for<'a> rkyv::Serialize<HighSerializer<Vec<u8>, ArenaHandle<'a>, rancor::Error>>
        + 'static,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, Strategy<Pool, rancor::Error>>,
{
    fn save(&self, out: &mut Vec<u8>) -> Result<(), PersistError> {
        out.clear();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&[0; HEADER_BYTES - 6]);
        let buffer = std::mem::take(out);
        match rkyv::api::high::to_bytes_in::<_, rancor::Error>(self, buffer) {
            Ok(buffer) => {
                *out = buffer;
                Ok(())
            }
            Err(error) => Err(PersistError(format!("archiving the state failed: {error}"))),
        }
    }

    fn load(snapshot: &[u8]) -> Result<T, PersistError> {
        let archive = archive_of(snapshot)?;
        // The store's buffer has no alignment guarantee; rkyv needs the archive aligned.
        let mut aligned = AlignedVec::<16>::with_capacity(archive.len());
        aligned.extend_from_slice(archive);
        rkyv::from_bytes::<T, rancor::Error>(&aligned)
            .map_err(|error| PersistError(format!("the snapshot does not decode: {error}")))
    }
}

/// The archive inside a snapshot, after checking its header.
fn archive_of(snapshot: &[u8]) -> Result<&[u8], PersistError> {
    if snapshot.len() < HEADER_BYTES || &snapshot[..4] != MAGIC {
        return Err(PersistError("not a state snapshot (bad header)".into()));
    }
    let version = u16::from_le_bytes([snapshot[4], snapshot[5]]);
    if version > VERSION {
        return Err(PersistError(format!(
            "snapshot format version {version} is newer than this build's ({VERSION})"
        )));
    }
    Ok(&snapshot[HEADER_BYTES..])
}

/// Why a state could not be saved or loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistError(pub String);

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PersistError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
    struct S {
        count: i64,
        names: Vec<String>,
        extra: Value,
    }

    #[test]
    fn round_trips_with_values() {
        let mut object = crate::value::Map::new();
        object.insert("big", Value::BigInt(-(1 << 100)));
        object.insert("list", Value::Array(vec![Value::Null, Value::Float(1.5)]));
        let state = S {
            count: 7,
            names: vec!["a".into(), "".into()],
            extra: Value::Object(object),
        };
        let mut out = vec![1, 2, 3];
        state.save(&mut out).unwrap();
        assert_eq!(&out[..4], MAGIC);
        // Misaligned on purpose: load must not depend on the caller's alignment.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&out);
        assert_eq!(S::load(&shifted[1..]).unwrap(), state);
    }

    #[test]
    fn rejects_damage() {
        let mut out = Vec::new();
        42i64.save(&mut out).unwrap();
        assert!(i64::load(&out[..8]).is_err());
        let mut bad = out.clone();
        bad[0] = b'X';
        assert!(i64::load(&bad).is_err());
        let mut newer = out.clone();
        newer[4] = 9;
        assert!(i64::load(&newer).unwrap_err().0.contains("newer"));
        // A string whose length points past the end fails validation.
        let mut s = Vec::new();
        String::from("hello world, long enough to be out of line")
            .save(&mut s)
            .unwrap();
        let n = s.len();
        s[n - 4] = 0xff;
        assert!(String::load(&s).is_err());
    }
}
