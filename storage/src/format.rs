//! The bytes of a log segment: record header, record kinds and their payloads.
//!
//! See the crate documentation for the normative description; this module is its code. Every
//! integer is little-endian. A record is a 24-byte header, the payload, and zero padding up to the
//! next multiple of 8 (so every header and every payload starts 8-aligned in the file).

use crate::crc32c;

/// `b"PNRC"`: the first four bytes of every record header after the checksum.
pub(crate) const MAGIC: u32 = u32::from_le_bytes(*b"PNRC");
/// The format version this build writes. Readers accept every version up to their own.
pub(crate) const FORMAT_VERSION: u16 = 1;
/// Bytes in a record header.
pub(crate) const HEADER_LEN: usize = 24;
/// The largest payload a record may carry (a state snapshot, a schedule payload, a meta value).
pub const PAYLOAD_BYTES_MAX: usize = 16 << 20;
/// The most bytes one write of the flusher spans: a batch is at most `batch_bytes_max` (which is
/// capped at [`PAYLOAD_BYTES_MAX`]) or one record of the largest size plus a segment header.
/// Recovery uses it to tell a torn tail from corruption: valid records more than this far past a
/// bad one were acknowledged, so the bad one is not a torn tail.
pub(crate) const WRITE_SPAN_MAX: u64 = (PAYLOAD_BYTES_MAX + 4 * HEADER_LEN + 64) as u64;
/// Kinds with this bit set are optional: a reader that does not know one skips it. A reader that
/// meets an unknown kind without it refuses to open the log (it was written by a newer build).
pub(crate) const OPTIONAL_KIND: u16 = 0x8000;

/// Record kinds. The numbers are part of the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub(crate) enum Kind {
    Segment = 1,
    Actor = 2,
    State = 3,
    DeleteState = 4,
    Schedule = 5,
    DeleteSchedule = 6,
    Meta = 7,
    DeleteMeta = 8,
}

impl Kind {
    pub(crate) fn from_u16(kind: u16) -> Option<Kind> {
        Some(match kind {
            1 => Kind::Segment,
            2 => Kind::Actor,
            3 => Kind::State,
            4 => Kind::DeleteState,
            5 => Kind::Schedule,
            6 => Kind::DeleteSchedule,
            7 => Kind::Meta,
            8 => Kind::DeleteMeta,
            _ => return None,
        })
    }
}

pub(crate) const fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

/// A parsed record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) version: u16,
    pub(crate) kind: u16,
    pub(crate) len: u32,
    pub(crate) seq: u64,
}

impl Header {
    /// Bytes of the record without padding.
    pub(crate) fn record_len(&self) -> usize {
        HEADER_LEN + self.len as usize
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// What is at some offset of a segment.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// A whole record whose checksum holds; its payload is `buf[HEADER_LEN..header.record_len()]`.
    Record(Header),
    /// The header (or, once the header is known, the record) needs this many bytes, and `buf`
    /// has fewer.
    Short(usize),
    /// Not a valid record.
    Bad(&'static str),
}

/// Parses the record at the start of `buf`.
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    if buf.len() < HEADER_LEN {
        return Parsed::Short(HEADER_LEN);
    }
    if u32_at(buf, 4) != MAGIC {
        return Parsed::Bad(if buf[..HEADER_LEN].iter().all(|&b| b == 0) {
            "zeros where a record header should be"
        } else {
            "bad magic"
        });
    }
    let header = Header {
        version: u16_at(buf, 8),
        kind: u16_at(buf, 10),
        len: u32_at(buf, 12),
        seq: u64_at(buf, 16),
    };
    if header.len as usize > PAYLOAD_BYTES_MAX {
        return Parsed::Bad("payload length over the maximum");
    }
    let total = header.record_len();
    if buf.len() < total {
        return Parsed::Short(total);
    }
    if crc32c::crc32c(&buf[4..total]) != u32_at(buf, 0) {
        return Parsed::Bad("checksum mismatch");
    }
    Parsed::Record(header)
}

/// Appends one record to `out`: header, the payload written by `payload` (which must write
/// exactly `payload_len` bytes), padding. Returns the record's length without padding.
pub(crate) fn put_record(
    out: &mut Vec<u8>,
    kind: u16,
    seq: u64,
    payload_len: usize,
    payload: impl FnOnce(&mut Vec<u8>),
) -> usize {
    debug_assert!(payload_len <= PAYLOAD_BYTES_MAX);
    let start = out.len();
    let total = HEADER_LEN + payload_len;
    out.reserve(align8(total as u64) as usize);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    payload(out);
    assert_eq!(out.len() - start, total, "payload length mismatch");
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    out.resize(start + align8(total as u64) as usize, 0);
    total
}

/// A decoded payload, borrowing the record's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Body<'a> {
    Segment {
        shard: u32,
        shards: u32,
        segment: u32,
        created_ms: u64,
    },
    Actor(ActorView<'a>),
    State {
        id: u64,
        snapshot: &'a [u8],
    },
    DeleteState {
        id: u64,
    },
    Schedule {
        actor: u64,
        schedule: u64,
        due_ms: u64,
        payload: &'a [u8],
    },
    DeleteSchedule {
        actor: u64,
        schedule: u64,
    },
    Meta {
        actor: u64,
        key: &'a [u8],
        value: &'a [u8],
    },
    DeleteMeta {
        actor: u64,
        key: &'a [u8],
    },
    /// An optional kind this build does not know; skipped.
    Unknown,
}

impl Body<'_> {
    /// The actor a record belongs to (for placement when re-sharding).
    pub(crate) fn actor(&self) -> Option<u64> {
        match *self {
            Body::Actor(ref a) => Some(a.id),
            Body::State { id, .. } | Body::DeleteState { id } => Some(id),
            Body::Schedule { actor, .. }
            | Body::DeleteSchedule { actor, .. }
            | Body::Meta { actor, .. }
            | Body::DeleteMeta { actor, .. } => Some(actor),
            Body::Segment { .. } | Body::Unknown => None,
        }
    }

    /// Whether this record only deletes something (a tombstone).
    pub(crate) fn is_tombstone(&self) -> bool {
        matches!(
            self,
            Body::DeleteState { .. } | Body::DeleteSchedule { .. } | Body::DeleteMeta { .. }
        )
    }
}

/// An actor directory record, with its key parts still encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ActorView<'a> {
    pub(crate) id: u64,
    pub(crate) created_ms: u64,
    pub(crate) destroyed_ms: Option<u64>,
    pub(crate) name: &'a str,
    /// `count: u32` then `count` × (`len: u32`, bytes).
    pub(crate) keys: &'a [u8],
}

impl ActorView<'_> {
    pub(crate) fn to_record(&self) -> Result<crate::ActorRecord, &'static str> {
        let mut key = Vec::new();
        let b = self.keys;
        if b.len() < 4 {
            return Err("actor key count missing");
        }
        let count = u32_at(b, 0) as usize;
        let mut at = 4;
        for _ in 0..count {
            if b.len() < at + 4 {
                return Err("actor key part truncated");
            }
            let len = u32_at(b, at) as usize;
            at += 4;
            let part = b.get(at..at + len).ok_or("actor key part truncated")?;
            key.push(
                std::str::from_utf8(part)
                    .map_err(|_| "actor key part is not UTF-8")?
                    .to_owned(),
            );
            at += len;
        }
        if at != b.len() {
            return Err("trailing bytes after the actor key");
        }
        Ok(crate::ActorRecord {
            id: self.id,
            name: self.name.to_owned(),
            key,
            created_ms: self.created_ms,
            destroyed_ms: self.destroyed_ms,
        })
    }
}

/// Decodes the payload of a record of kind `kind`.
pub(crate) fn decode(kind: u16, p: &[u8]) -> Result<Body<'_>, &'static str> {
    let Some(known) = Kind::from_u16(kind) else {
        return if kind & OPTIONAL_KIND != 0 {
            Ok(Body::Unknown)
        } else {
            Err("unknown record kind (written by a newer build?)")
        };
    };
    let need = |n: usize| {
        if p.len() < n {
            Err("payload too short for its kind")
        } else {
            Ok(())
        }
    };
    let exact = |n: usize| {
        if p.len() != n {
            Err("payload length wrong for its kind")
        } else {
            Ok(())
        }
    };
    Ok(match known {
        Kind::Segment => {
            exact(24)?;
            Body::Segment {
                shard: u32_at(p, 0),
                shards: u32_at(p, 4),
                segment: u32_at(p, 8),
                created_ms: u64_at(p, 16),
            }
        }
        Kind::Actor => {
            need(36)?;
            let flags = u32_at(p, 24);
            let name_len = u32_at(p, 28) as usize;
            let name = p.get(32..32 + name_len).ok_or("actor name truncated")?;
            let name = std::str::from_utf8(name).map_err(|_| "actor name is not UTF-8")?;
            let keys = &p[32 + name_len..];
            if keys.len() < 4 {
                return Err("actor key count missing");
            }
            Body::Actor(ActorView {
                id: u64_at(p, 0),
                created_ms: u64_at(p, 8),
                destroyed_ms: (flags & 1 != 0).then(|| u64_at(p, 16)),
                name,
                keys,
            })
        }
        Kind::State => {
            need(8)?;
            Body::State {
                id: u64_at(p, 0),
                snapshot: &p[8..],
            }
        }
        Kind::DeleteState => {
            exact(8)?;
            Body::DeleteState { id: u64_at(p, 0) }
        }
        Kind::Schedule => {
            need(24)?;
            Body::Schedule {
                actor: u64_at(p, 0),
                schedule: u64_at(p, 8),
                due_ms: u64_at(p, 16),
                payload: &p[24..],
            }
        }
        Kind::DeleteSchedule => {
            exact(16)?;
            Body::DeleteSchedule {
                actor: u64_at(p, 0),
                schedule: u64_at(p, 8),
            }
        }
        Kind::Meta | Kind::DeleteMeta => {
            need(12)?;
            let key_len = u32_at(p, 8) as usize;
            let key = p.get(12..12 + key_len).ok_or("meta key truncated")?;
            if known == Kind::Meta {
                Body::Meta {
                    actor: u64_at(p, 0),
                    key,
                    value: &p[12 + key_len..],
                }
            } else {
                if p.len() != 12 + key_len {
                    return Err("trailing bytes after a meta key");
                }
                Body::DeleteMeta {
                    actor: u64_at(p, 0),
                    key,
                }
            }
        }
    })
}

/// The payload length and writer of an actor record.
pub(crate) fn actor_payload_len(record: &crate::ActorRecord) -> usize {
    36 + record.name.len() + record.key.iter().map(|k| 4 + k.len()).sum::<usize>()
}

pub(crate) fn put_actor_payload(out: &mut Vec<u8>, record: &crate::ActorRecord) {
    out.extend_from_slice(&record.id.to_le_bytes());
    out.extend_from_slice(&record.created_ms.to_le_bytes());
    out.extend_from_slice(&record.destroyed_ms.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&u32::from(record.destroyed_ms.is_some()).to_le_bytes());
    out.extend_from_slice(&(record.name.len() as u32).to_le_bytes());
    out.extend_from_slice(record.name.as_bytes());
    out.extend_from_slice(&(record.key.len() as u32).to_le_bytes());
    for part in &record.key {
        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
        out.extend_from_slice(part.as_bytes());
    }
}

/// The payload of a segment header record.
pub(crate) fn put_segment_payload(
    out: &mut Vec<u8>,
    shard: u32,
    shards: u32,
    segment: u32,
    created_ms: u64,
) {
    out.extend_from_slice(&shard.to_le_bytes());
    out.extend_from_slice(&shards.to_le_bytes());
    out.extend_from_slice(&segment.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&created_ms.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ActorRecord;

    fn record(kind: u16, seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_record(&mut out, kind, seq, payload.len(), |o| {
            o.extend_from_slice(payload)
        });
        out
    }

    #[test]
    fn record_round_trips_and_pads() {
        let bytes = record(Kind::State as u16, 42, &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(bytes.len(), 40); // 24 + 9 -> 33 -> padded to 40
        match parse(&bytes) {
            Parsed::Record(header) => {
                let payload = &bytes[HEADER_LEN..header.record_len()];
                assert_eq!(header.seq, 42);
                assert_eq!(header.kind, Kind::State as u16);
                assert_eq!(header.version, FORMAT_VERSION);
                assert_eq!(payload, &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(&bytes[..10]), Parsed::Short(HEADER_LEN)));
        assert!(matches!(parse(&bytes[..30]), Parsed::Short(33)));
        for i in 0..33 {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                matches!(parse(&bad), Parsed::Bad(_) | Parsed::Short(_)),
                "flip at {i} went unnoticed"
            );
        }
        assert!(matches!(parse(&[0u8; 64]), Parsed::Bad(_)));
    }

    #[test]
    fn actor_payload_round_trips() {
        let rec = ActorRecord {
            id: 9,
            name: "chat".into(),
            key: vec!["a".into(), "".into(), "é/x".into()],
            created_ms: 5,
            destroyed_ms: Some(7),
        };
        let mut p = Vec::new();
        put_actor_payload(&mut p, &rec);
        assert_eq!(p.len(), actor_payload_len(&rec));
        let Body::Actor(view) = decode(Kind::Actor as u16, &p).unwrap() else {
            panic!()
        };
        assert_eq!(view.to_record().unwrap(), rec);
        let alive = ActorRecord {
            destroyed_ms: None,
            key: vec![],
            ..rec
        };
        let mut p = Vec::new();
        put_actor_payload(&mut p, &alive);
        let Body::Actor(view) = decode(Kind::Actor as u16, &p).unwrap() else {
            panic!()
        };
        assert_eq!(view.to_record().unwrap(), alive);
    }

    #[test]
    fn unknown_kinds() {
        assert_eq!(decode(OPTIONAL_KIND | 77, b"x"), Ok(Body::Unknown));
        assert!(decode(77, b"x").is_err());
        assert!(decode(Kind::DeleteState as u16, &[0; 7]).is_err());
    }
}
