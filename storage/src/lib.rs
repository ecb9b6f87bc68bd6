//! `pinion-storage`: what a shard persists, behind one interface.
//!
//! Every shard owns one [`Store`] and nothing else touches it (shared-nothing: no file is written
//! by two shards). A store holds the shard's **actor directory** (one [`ActorRecord`] per actor:
//! id, name, key, creation and destruction time), each actor's **state snapshot** (opaque bytes;
//! the runtime produces them with rkyv), **pending schedules** (actor, schedule id, due time,
//! opaque payload) and **connection-independent metadata** (per-actor key/value).
//!
//! Two backends implement the trait:
//!
//! * [`MemoryStore`]: in the shard's memory, every write "durable" at once. Tests, and servers
//!   without `--data-dir`.
//! * [`LogStore`]: durable. One append-only log per shard, written through io_uring (glommio)
//!   with group commit, recovered at start with torn-tail handling, compacted in the background.
//!
//! A deterministic simulator implements [`Store`] too (with its own fault model); the runtime
//! holds a `Box`/`Rc<dyn Store>` and never names a backend outside server start-up.
//!
//! # The `Store` seam
//!
//! Object-safe, single-threaded, `&self` everywhere (no `RefCell` borrow of the store is held
//! across an await). Futures are [`StoreFuture`]s: already complete (no allocation) or boxed.
//!
//! * **Writes** (`put_actor`, `save_state`, `delete_state`, `put_schedule`, `delete_schedule`,
//!   `put_meta`, `delete_meta`) return the write's [`Seq`]. A write is applied (visible to reads)
//!   when it returns; it is **durable** once `durable(seq)` completes. Writes apply in call order.
//!   When the log backend's batch is full, a write waits (back-pressure) instead of buffering
//!   without bound; its future then applies it when there is room, in call order, and dropping
//!   that future abandons the write. The usual pattern, "immediate save":
//!   `let seq = store.save_state(id, &snapshot).await?; store.durable(seq).await?;` — many
//!   actors doing this at once share one `fdatasync`.
//! * **In-memory reads** are synchronous: [`Store::actor`] (name, created, destroyed, has_state;
//!   no key), [`Store::for_each_actor`], [`Store::due_schedules`], [`Store::next_due_ms`],
//!   [`Store::schedules_of`], [`Store::meta_keys`].
//! * **Byte reads** are futures: [`Store::read_state`] (wake from disk), [`Store::read_actor`] (the
//!   full record, with the key), [`Store::read_schedule`], [`Store::read_meta`].
//! * [`Store::load_directory`] (every record, keys included, blocking reads) is for tools and
//!   tests; the runtime never loads the directory: it asks [`Store::actor`] and reads one record
//!   ([`Store::read_actor`]) when it needs a key.
//!
//! # `LogStore` design
//!
//! **Files.** `<data_dir>/shard-<index>-of-<count>/seg-<n>.log` (n from 1, 8 digits), and a
//! `LOCK` file that the open store holds an exclusive `flock` on (a second opener, in this process
//! or another, gets an error instead of writing the same files). The shard
//! count is in the directory name, so [`LogStore::open`] sees a data directory written with another
//! count and refuses it with a [`LayoutError`] that says what to do: start with the old count, or
//! run [`reshard`] (`reshard(data_dir, from, to, place)`, with the runtime's placement function;
//! [`reshard_blocking`] runs it on an executor of its own). Re-sharding copies every live record
//! into `.reshard-<from>-to-<to>/shard-*-of-<to>/`, makes it durable, marks the staging directory
//! `COMPLETE`, renames the new directories into place and removes the old ones; it is restartable
//! at any point, and `open` refuses a data directory with an unfinished one.
//!
//! **Writes and group commit.** An append encodes its record into the current in-memory batch,
//! updates the index and returns its sequence number, all synchronously. One flusher task per
//! store takes the oldest batch and submits one `write` at its offset linked to one `fdatasync`
//! (`IOSQE_IO_LINK`) on a small io_uring of its own, so the kernel's worker thread runs the sync
//! right after the write without a round trip through the executor (completions come back
//! through an eventfd read with glommio; if that ring cannot be set up, glommio's
//! [`BufferedFile`](glommio::io::BufferedFile) calls do both), then wakes the `durable` waiters
//! it covers. While a batch is written and synced, new appends fill the next
//! one, so under load one sync covers every write that arrived during the previous one. After a
//! sync that released writers, the flusher waits for them to write again before it takes the next
//! batch, up to [`Options::commit_window_max`] (500 µs; it stops early after a quarter of that
//! with no new writer), so that closed-loop writers share one sync instead of alternating between
//! two half-full batches.
//!
//! **Zeros written ahead.** A batch appended at the end of a file makes its `fdatasync` persist
//! new blocks and the file's size as well as the data; over blocks already written it persists
//! only the data (measured on this virtio disk: `pwrite` + `fdatasync` of 6 400 bytes, median
//! 470 µs appending against 235 µs overwriting; a `fallocate`d range is no better than an
//! append, its extents still have to be marked written). So a prefill task keeps zeros written
//! and synced ahead of the active segment's records: 256 KiB ([`PREFILL_FIRST`]) once a segment
//! has its first batch, then fills twice as large up to [`Options::prefill_bytes_max`] (4 MiB)
//! whenever the records come within half the last fill of the zeros' end. A fill starts past
//! every record appended so far, and the flusher writes no batch over a fill still in flight.
//! A fill that fails (no space, a file size limit) only costs that segment its overwrites.
//! When appends move to a new segment, the sealed one is truncated to the end of its records.
//! Measured with wrk at 64 connections on one `durableCounter`: 35–41k → 47–52k durable
//! increments/s.
//!
//! **The next segment, made ahead.** Once the active segment is half full, the same task creates
//! the next one (the *spare*): the file, [`Options::prefill_bytes_max`] of zeros (capped at a
//! segment), its `fdatasync` and the directory's. A rollover then creates no file and syncs no
//! directory, and its first batches are overwrites. A rollover that catches the spare still being
//! made waits for it; if making it failed, the file is removed and the rollover creates the
//! segment as before. Measured (`bench_rollover_latency`: one 4 000-byte durable write at a time,
//! 1 MiB segments, 60 rollovers): the write that starts a segment took p50 1.66–1.72 ms, p90
//! 2.2–2.7 ms without the spare, and p50 479–514 µs, p90 609–644 µs with it (re-measured later
//! at a slower moment of this VM: 1.65 ms against 609–666 µs).
//!
//! Bounds: [`Options::batch_bytes_max`] bytes waiting for the flusher (1 MiB) and
//! [`Options::waiters_max`] tasks in `durable` (16 384); beyond either, appends wait (in a FIFO of
//! tickets; a waiting append holds no copy of its bytes, so memory stays bounded however many
//! tasks wait). A new segment's name is made durable (directory `fsync`) before anything in it is
//! acknowledged. If a write or sync fails the store is poisoned: every later write and `durable`
//! fails, and the shard must restart (and recover); after a failed `fsync` the kernel's view of
//! the file is not to be trusted.
//!
//! Measured here (2 vCPUs, virtio disk, ext4, `fdatasync` ≈ 0.3–0.45 ms), durable 64-byte saves
//! per second, each writer awaiting `durable` before its next save: 1 writer ≈ 2 300–3 000,
//! 16 writers ≈ 31 000–39 000 (16 writes per sync), 256 writers ≈ 265 000–295 000 (≈ 200 per
//! sync). For scale, Redis 7.0 with `appendfsync always` on the same disk (`redis-benchmark -t
//! incr`, over loopback): 3 400, 23 000 and 63 000 requests/s with 1, 16 and 256 clients.
//!
//! Page cache, not `O_DIRECT`: the flusher needs exactly one write and one `fdatasync` per batch
//! either way, but a buffered file needs no aligned buffers or read-modify-write of the last
//! partial block, and reads (waking an actor) hit the page cache while its segment is warm
//! instead of always paying a device read. Measured `read_state` of a 200-byte state among
//! 100 000: warm p50 11–16 µs, p99 19–55 µs; with the segments evicted from the page cache
//! (device reads) p50 110–140 µs, p99 ≈ 230 µs on this virtio disk. Segments are advised
//! `POSIX_FADV_RANDOM` (point reads), so a cold wake does not read and cache a readahead window
//! around its record. A record the page cache holds is read with `preadv2(RWF_NOWAIT)`, which
//! never waits for the device, instead of a round trip through the ring; only a record that is
//! not (wholly) cached goes through io_uring (`Stats::cached_reads` / `ring_reads`). Waking an
//! actor from a warm page cache, measured by the server: p50 22 → 6 µs.
//!
//! What a cold read costs beyond the device (`bench_cold_reads_against_the_device` in
//! `tests/log_store.rs`, pinned to one CPU, 3 000 reads per row, two rounds; another VM of the
//! same kind, whose disk was faster than the one above): `read_state` p50 65–71 µs, p99 117–123;
//! `read_actor` and `read_state` together (a wake; two pages) p50 72–80, p99 121–147; the same
//! segment read with 4 KiB `O_DIRECT` reads, through glommio's `DmaFile` p50 56–61, p99 94–115,
//! and with a blocking `pread` p50 56–71, p99 88–112. The store adds ~10 µs at p50 and little
//! at p99: a buffered read is not the tail.
//!
//! **Index** (in memory, rebuilt by recovery). Per actor one hash-table entry: the id and a
//! 48-byte slot (location of the directory record, location of the latest state or tombstone,
//! created and destroyed times, interned type-name index). Keys stay on disk. A location is
//! (segment, offset, length). After recovery the table is shrunk to fit: measured 124 bytes of
//! RSS per sleeping actor for 1 000 000 actors (the table's load factor is just under one half
//! there; ~60 bytes just below a power of two). Schedules and metadata are indexed in B-trees
//! (key, due time, location), their payloads stay on disk.
//!
//! **Reads.** `read_state` looks up the location, copies from a batch still in memory or reads
//! the record from its segment (io_uring), and checks its checksum and kind.
//!
//! **Recovery.** Segments are scanned in order with large sequential reads (4 MiB), every record's
//! CRC checked, the index rebuilt (latest record wins; sequence numbers must increase). Rules:
//!
//! * A segment ends at its last record followed by nothing, or by zeros only (the space written
//!   ahead; kept, so the next writes overwrite it). Zeros after a partial record are a torn
//!   tail like any other.
//! * Segments at the end of the directory that hold only zeros, or nothing, were made ahead and
//!   never written (a segment in use starts with its header record): they are not part of the
//!   log, so the segment before them is the **last** one for the rules below. The first of them
//!   is kept as the spare ([`Recovered::spare`]); any others are deleted. (The first segment of
//!   a store always counts as part of the log, even when empty.)
//! * In the **last** segment, a bad record (checksum mismatch, bad magic, a zero header with
//!   data after it, or a record running past the end of the file) is a **torn tail**: the file is truncated there (and
//!   synced), [`Recovered::torn_tail`] says so, a warning is logged, and the store opens.
//!   Everything acknowledged was before it: only one batch is ever written-but-not-synced, so
//!   unacknowledged bytes span at most one write. Unless valid records (with higher sequence
//!   numbers) appear more than one write's maximum span past the bad one: then acknowledged
//!   records are damaged, and `open` fails with a message naming the file and offset.
//! * In an **older** segment any bad record is corruption: `open` fails and names the file and
//!   offset (dropping it would silently lose acknowledged records after it). Restore from a
//!   backup, or move the segment and later ones away to accept the loss.
//! * A record with a newer format version, or an unknown kind without the "optional" bit, fails
//!   `open` ("written by a newer build").
//!
//! Measured: 1 000 000 actors (directory record + 64-byte state each, 2 000 003 records, 183 MB)
//! recover in 0.6–0.7 s from a warm page cache and 1.0 s with the files evicted from it.
//!
//! **Compaction.** Each segment has byte and live-byte counts (live = records the index points
//! at). A background task ([`Options::compact_interval`]) picks the sealed, fully durable segment
//! with the most dead bytes, if at least [`Options::compact_dead_ratio`] of it and
//! [`Options::compact_dead_bytes_min`] bytes are dead (or nothing is live), reads it sequentially,
//! and appends a copy of each record that is still live through the normal append path (so it
//! waits for room like any write, is durable under the same rules, and is skipped if the record was
//! superseded meanwhile). Once the copies are durable the segment file is deleted. It yields every
//! 64 records. Tombstones (deletes) are copied forward while an older segment exists (it may hold
//! what they delete); in the oldest segment they are dropped. A crash before the delete leaves the
//! old segment, whose records lose to the copies' higher sequence numbers.
//!
//! # On-disk format (version 1)
//!
//! All integers little-endian. A segment is a sequence of records, each starting at an offset
//! that is a multiple of 8:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 4 | CRC-32C (Castagnoli) of bytes 4 .. 24 + `len` (the rest of the header and the payload) |
//! | 4  | 4 | magic `b"PNRC"` |
//! | 8  | 2 | format version (1); readers accept versions up to their own |
//! | 10 | 2 | kind (below); bit 15 set = optional (unknown ones are skipped, and dropped by compaction) |
//! | 12 | 4 | `len`: payload bytes, at most [`PAYLOAD_BYTES_MAX`] (16 MiB) |
//! | 16 | 8 | sequence number: strictly increasing through the shard's log |
//! | 24 | `len` | payload |
//! | | 0–7 | zero padding to a multiple of 8 (not checksummed) |
//!
//! Payloads by kind (`str` = `u32` byte length + UTF-8 bytes, `bytes` = the rest of the payload):
//!
//! | kind | name | payload |
//! |-----:|------|---------|
//! | 1 | Segment | shard `u32`, shard count `u32`, segment number `u32`, reserved `u32` (0), created unix ms `u64`. First record of every segment, and only there |
//! | 2 | Actor | id `u64`, created ms `u64`, destroyed ms `u64` (0 if alive), flags `u32` (bit 0: destroyed), name `str`, key part count `u32`, key parts `str`… |
//! | 3 | State | id `u64`, snapshot `bytes` (8-aligned in the file) |
//! | 4 | DeleteState | id `u64` |
//! | 5 | Schedule | actor `u64`, schedule id `u64`, due unix ms `u64`, payload `bytes` |
//! | 6 | DeleteSchedule | actor `u64`, schedule id `u64` |
//! | 7 | Meta | actor `u64`, key length `u32`, key bytes, value `bytes` |
//! | 8 | DeleteMeta | actor `u64`, key length `u32`, key bytes |
//!
//! Why a hand-written encoding and not rkyv for these small structured payloads: the format must be
//! documented byte for byte (above) and stay stable, and rkyv's archived layout depends on its
//! cargo features (endianness, pointer width, alignment), which cargo unifies across the whole
//! workspace, so an unrelated crate enabling one would silently change this crate's files;
//! recovery also decodes only the fields it indexes, with no validation pass and no alignment
//! requirement on its read buffers. State snapshots, the large and hot payload, are the runtime's
//! rkyv bytes, stored verbatim at an 8-aligned file offset. The header's version and the optional
//! bit are the extension points: a new kind is added with a new number (optional if older builds
//! may ignore it), an incompatible payload change bumps the version.
//!
//! The checksum is computed by this crate (private module `crc32c`): the SSE 4.2
//! `crc32` instruction when present, a slicing-by-8 table otherwise, pinned to the RFC 3720
//! vectors — forty lines instead of a dependency.
//!
//! # Not done yet
//!
//! * The batch's write and `fdatasync` run on io_uring's worker thread, which inherits the
//!   shard's CPU and so waits for a busy shard to be preempted: through the server, a batch cycle
//!   with 64 writers took ~1.6 ms against ~0.43 ms for the sync alone. Moving that worker to
//!   housekeeping CPUs (`IORING_REGISTER_IOWQ_AFF` on the ring that runs the sync, which glommio
//!   does not expose) or syncing from a ring of our own is the next step.
//! * Actors are never forgotten: a destroyed actor keeps its directory record (as before) and its
//!   48-byte slot. A `forget` record kind would let compaction drop both.
//! * No salvage mode: corruption before the tail refuses to open; the operator moves files away.
//! * Directory listing, `LOCK` and shard-directory creation use `std::fs` (start-up only); segment
//!   reads, writes, syncs, creation and deletion go through glommio.
//! * Waking an actor whose key the runtime needs costs two reads (`read_actor` and `read_state`);
//!   they can be issued concurrently, or the runtime can keep keys of awake actors only.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

mod crc32c;
mod format;
mod index;
mod layout;
mod log;
mod syncring;

pub use format::PAYLOAD_BYTES_MAX;
pub use layout::{LayoutError, ReshardReport, reshard, reshard_blocking, shard_dir};
pub use log::{LogStore, Options, PREFILL_FIRST, Recovered, SegmentInfo, Stats, TornTail};

/// A record's position in its store's log: every write gets the next one. A write is durable
/// once [`Store::durable_seq`] reaches its sequence number.
pub type Seq = u64;

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

/// What a store keeps in memory about an actor: everything of its [`ActorRecord`] but the key,
/// which stays on disk ([`Store::read_actor`]), so a million sleeping actors fit in little RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActorEntry {
    /// The actor type's name (shared by every actor of the type).
    pub name: Rc<str>,
    pub created_ms: u64,
    pub destroyed_ms: Option<u64>,
    /// Whether a state snapshot is saved.
    pub has_state: bool,
}

/// A pending scheduled item of an actor. Its payload is read with [`Store::read_schedule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ScheduleEntry {
    pub due_ms: u64,
    pub actor: u64,
    /// Chosen by the runtime; unique per actor.
    pub schedule: u64,
}

/// The future a [`Store`] method returns: either already complete (no allocation; the common
/// case for writes and for [`MemoryStore`]) or a boxed future.
///
/// Writes take effect in call order. A write that had room takes effect during the call itself;
/// one that has to wait for room (back-pressure) takes effect when its future completes, and
/// dropping that future before then abandons it. Await every write.
pub struct StoreFuture<'a, T>(Fut<'a, T>);

enum Fut<'a, T> {
    Ready(Option<T>),
    Boxed(Pin<Box<dyn Future<Output = T> + 'a>>),
}

impl<'a, T> StoreFuture<'a, T> {
    /// A future that is already complete.
    pub fn ready(value: T) -> StoreFuture<'a, T> {
        StoreFuture(Fut::Ready(Some(value)))
    }

    /// Wraps a future.
    pub fn boxed(future: impl Future<Output = T> + 'a) -> StoreFuture<'a, T> {
        StoreFuture(Fut::Boxed(Box::pin(future)))
    }

    /// The value, if the future is already complete and has not been polled to completion.
    pub fn now(self) -> Option<T> {
        match self.0 {
            Fut::Ready(value) => value,
            Fut::Boxed(_) => None,
        }
    }
}

// The value is only ever moved out, never pinned, so the wrapper is `Unpin` whatever `T` is.
impl<T> Unpin for StoreFuture<'_, T> {}

impl<T> Future for StoreFuture<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.get_mut().0 {
            Fut::Ready(value) => {
                Poll::Ready(value.take().expect("StoreFuture polled after completion"))
            }
            Fut::Boxed(future) => future.as_mut().poll(cx),
        }
    }
}

/// A shard's persistence backend. Object-safe (`Rc<dyn Store>`), single-threaded, `&self`
/// everywhere (the backend keeps its own interior state, so no borrow is held across an await).
///
/// * Reads of what is in memory (`actor`, `due_schedules`, ...) are synchronous.
/// * Reads of bytes (`read_state`, `read_actor`, ...) are futures: the log backend reads its
///   segment files through io_uring.
/// * Writes return their [`Seq`] as soon as they are applied (visible to reads at once) and are
///   made durable in groups; [`Store::durable`] waits for one. Writes are applied in call order.
/// * [`MemoryStore`] is the in-process implementation (everything durable at once); a
///   deterministic simulator implements the same trait with its own fault model.
pub trait Store {
    /// Every directory record, destroyed ones included, keys and all.
    ///
    /// Kept for small directories and tests: it reads every record (the log backend does so with
    /// blocking reads). A runtime with many sleeping actors uses [`Store::for_each_actor`] and
    /// [`Store::read_actor`].
    fn load_directory(&mut self) -> Vec<ActorRecord>;

    /// The in-memory summary of actor `id`, if it has a directory record.
    fn actor(&self, id: u64) -> Option<ActorEntry>;

    /// Calls `f` for every actor with a directory record (destroyed ones too). `f` may read the
    /// store but not write to it.
    fn for_each_actor(&self, f: &mut dyn FnMut(u64, &ActorEntry));

    /// The full directory record of `id` (with its key).
    fn read_actor(&self, id: u64) -> StoreFuture<'_, io::Result<Option<ActorRecord>>>;

    /// Inserts or replaces the directory record with `record.id`.
    fn put_actor<'a>(&'a self, record: &'a ActorRecord) -> StoreFuture<'a, io::Result<Seq>>;

    /// The last snapshot saved for `id`, if any.
    fn read_state(&self, id: u64) -> StoreFuture<'_, io::Result<Option<Vec<u8>>>>;

    /// Replaces the snapshot of `id`.
    fn save_state<'a>(&'a self, id: u64, snapshot: &'a [u8]) -> StoreFuture<'a, io::Result<Seq>>;

    /// Removes the snapshot of `id` (the directory record stays, marked destroyed by the caller).
    fn delete_state(&self, id: u64) -> StoreFuture<'_, io::Result<Seq>>;

    /// Inserts or replaces schedule `schedule` of `actor`, due at `due_ms` (Unix ms), with an
    /// opaque payload (what to run).
    fn put_schedule<'a>(
        &'a self,
        actor: u64,
        schedule: u64,
        due_ms: u64,
        payload: &'a [u8],
    ) -> StoreFuture<'a, io::Result<Seq>>;

    /// Removes schedule `schedule` of `actor` (done or cancelled).
    fn delete_schedule(&self, actor: u64, schedule: u64) -> StoreFuture<'_, io::Result<Seq>>;

    /// Up to `limit` pending schedules due at or before `now_ms`, earliest first.
    fn due_schedules(&self, now_ms: u64, limit: usize) -> Vec<ScheduleEntry>;

    /// When the earliest pending schedule is due.
    fn next_due_ms(&self) -> Option<u64>;

    /// The pending schedules of `actor`.
    fn schedules_of(&self, actor: u64) -> Vec<ScheduleEntry>;

    /// Pending schedule `schedule` of `actor`, if there is one (an in-memory lookup).
    fn schedule(&self, actor: u64, schedule: u64) -> Option<ScheduleEntry>;

    /// The payload of a pending schedule.
    fn read_schedule(
        &self,
        actor: u64,
        schedule: u64,
    ) -> StoreFuture<'_, io::Result<Option<Vec<u8>>>>;

    /// Sets metadata `key` of `actor` (connection-independent values the runtime keeps beside the
    /// state).
    fn put_meta<'a>(
        &'a self,
        actor: u64,
        key: &'a [u8],
        value: &'a [u8],
    ) -> StoreFuture<'a, io::Result<Seq>>;

    /// Removes metadata `key` of `actor`.
    fn delete_meta<'a>(&'a self, actor: u64, key: &'a [u8]) -> StoreFuture<'a, io::Result<Seq>>;

    /// The metadata keys `actor` has.
    fn meta_keys(&self, actor: u64) -> Vec<Vec<u8>>;

    /// The value of metadata `key` of `actor`.
    fn read_meta<'a>(
        &'a self,
        actor: u64,
        key: &'a [u8],
    ) -> StoreFuture<'a, io::Result<Option<Vec<u8>>>>;

    /// Completes once every write up to and including `seq` is durable. Fails if the store can no
    /// longer make writes durable (an I/O error: the shard must restart and recover).
    fn durable(&self, seq: Seq) -> StoreFuture<'_, io::Result<()>>;

    /// The sequence number of the last write applied (0 before any).
    fn last_seq(&self) -> Seq;

    /// Every write up to this one is durable.
    fn durable_seq(&self) -> Seq;

    /// Completes once every write applied so far is durable.
    fn flush(&self) -> StoreFuture<'_, io::Result<()>> {
        self.durable(self.last_seq())
    }

    /// The backend's counters (appends, batches, syncs, ...), if it keeps any: for logs and
    /// monitoring.
    fn stats(&self) -> Option<Stats> {
        None
    }

    /// Makes everything durable and closes the store: later writes fail, and whatever the store
    /// holds exclusively (the log's directory lock) is released. For a clean stop.
    fn close(&self) -> StoreFuture<'_, io::Result<()>> {
        self.flush()
    }
}

/// A [`Store`] in the shard's memory. Nothing survives the process; every write is "durable"
/// at once.
#[derive(Default)]
pub struct MemoryStore {
    inner: RefCell<Memory>,
}

#[derive(Default)]
struct Memory {
    directory: HashMap<u64, ActorRecord>,
    states: HashMap<u64, Vec<u8>>,
    schedules: BTreeMap<(u64, u64), (u64, Vec<u8>)>,
    due: BTreeSet<ScheduleEntry>,
    meta: BTreeMap<(u64, Vec<u8>), Vec<u8>>,
    seq: Seq,
}

impl Memory {
    fn next(&mut self) -> io::Result<Seq> {
        self.seq += 1;
        Ok(self.seq)
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn write(&self, f: impl FnOnce(&mut Memory)) -> StoreFuture<'_, io::Result<Seq>> {
        let mut memory = self.inner.borrow_mut();
        f(&mut memory);
        StoreFuture::ready(memory.next())
    }
}

fn entry_of(record: &ActorRecord, has_state: bool) -> ActorEntry {
    ActorEntry {
        name: Rc::from(record.name.as_str()),
        created_ms: record.created_ms,
        destroyed_ms: record.destroyed_ms,
        has_state,
    }
}

impl Store for MemoryStore {
    fn load_directory(&mut self) -> Vec<ActorRecord> {
        self.inner.borrow().directory.values().cloned().collect()
    }

    fn actor(&self, id: u64) -> Option<ActorEntry> {
        let memory = self.inner.borrow();
        let record = memory.directory.get(&id)?;
        Some(entry_of(record, memory.states.contains_key(&id)))
    }

    fn for_each_actor(&self, f: &mut dyn FnMut(u64, &ActorEntry)) {
        let memory = self.inner.borrow();
        for (&id, record) in &memory.directory {
            f(id, &entry_of(record, memory.states.contains_key(&id)));
        }
    }

    fn read_actor(&self, id: u64) -> StoreFuture<'_, io::Result<Option<ActorRecord>>> {
        StoreFuture::ready(Ok(self.inner.borrow().directory.get(&id).cloned()))
    }

    fn put_actor<'a>(&'a self, record: &'a ActorRecord) -> StoreFuture<'a, io::Result<Seq>> {
        self.write(|m| {
            m.directory.insert(record.id, record.clone());
        })
    }

    fn read_state(&self, id: u64) -> StoreFuture<'_, io::Result<Option<Vec<u8>>>> {
        StoreFuture::ready(Ok(self.inner.borrow().states.get(&id).cloned()))
    }

    fn save_state<'a>(&'a self, id: u64, snapshot: &'a [u8]) -> StoreFuture<'a, io::Result<Seq>> {
        self.write(|m| {
            let slot = m.states.entry(id).or_default();
            slot.clear();
            slot.extend_from_slice(snapshot);
        })
    }

    fn delete_state(&self, id: u64) -> StoreFuture<'_, io::Result<Seq>> {
        self.write(|m| {
            m.states.remove(&id);
        })
    }

    fn put_schedule<'a>(
        &'a self,
        actor: u64,
        schedule: u64,
        due_ms: u64,
        payload: &'a [u8],
    ) -> StoreFuture<'a, io::Result<Seq>> {
        self.write(|m| {
            if let Some((old, _)) = m
                .schedules
                .insert((actor, schedule), (due_ms, payload.to_vec()))
            {
                m.due.remove(&ScheduleEntry {
                    due_ms: old,
                    actor,
                    schedule,
                });
            }
            m.due.insert(ScheduleEntry {
                due_ms,
                actor,
                schedule,
            });
        })
    }

    fn delete_schedule(&self, actor: u64, schedule: u64) -> StoreFuture<'_, io::Result<Seq>> {
        self.write(|m| {
            if let Some((due_ms, _)) = m.schedules.remove(&(actor, schedule)) {
                m.due.remove(&ScheduleEntry {
                    due_ms,
                    actor,
                    schedule,
                });
            }
        })
    }

    fn due_schedules(&self, now_ms: u64, limit: usize) -> Vec<ScheduleEntry> {
        let memory = self.inner.borrow();
        memory
            .due
            .iter()
            .take_while(|e| e.due_ms <= now_ms)
            .take(limit)
            .copied()
            .collect()
    }

    fn next_due_ms(&self) -> Option<u64> {
        self.inner.borrow().due.first().map(|e| e.due_ms)
    }

    fn schedules_of(&self, actor: u64) -> Vec<ScheduleEntry> {
        let memory = self.inner.borrow();
        memory
            .schedules
            .range((actor, 0)..=(actor, u64::MAX))
            .map(|(&(actor, schedule), &(due_ms, _))| ScheduleEntry {
                due_ms,
                actor,
                schedule,
            })
            .collect()
    }

    fn schedule(&self, actor: u64, schedule: u64) -> Option<ScheduleEntry> {
        let memory = self.inner.borrow();
        memory
            .schedules
            .get(&(actor, schedule))
            .map(|&(due_ms, _)| ScheduleEntry {
                due_ms,
                actor,
                schedule,
            })
    }

    fn read_schedule(
        &self,
        actor: u64,
        schedule: u64,
    ) -> StoreFuture<'_, io::Result<Option<Vec<u8>>>> {
        let memory = self.inner.borrow();
        StoreFuture::ready(Ok(memory
            .schedules
            .get(&(actor, schedule))
            .map(|(_, payload)| payload.clone())))
    }

    fn put_meta<'a>(
        &'a self,
        actor: u64,
        key: &'a [u8],
        value: &'a [u8],
    ) -> StoreFuture<'a, io::Result<Seq>> {
        self.write(|m| {
            m.meta.insert((actor, key.to_vec()), value.to_vec());
        })
    }

    fn delete_meta<'a>(&'a self, actor: u64, key: &'a [u8]) -> StoreFuture<'a, io::Result<Seq>> {
        self.write(|m| {
            m.meta.remove(&(actor, key.to_vec()));
        })
    }

    fn meta_keys(&self, actor: u64) -> Vec<Vec<u8>> {
        let memory = self.inner.borrow();
        memory
            .meta
            .range((actor, Vec::new())..)
            .take_while(|((a, _), _)| *a == actor)
            .map(|((_, key), _)| key.clone())
            .collect()
    }

    fn read_meta<'a>(
        &'a self,
        actor: u64,
        key: &'a [u8],
    ) -> StoreFuture<'a, io::Result<Option<Vec<u8>>>> {
        let memory = self.inner.borrow();
        StoreFuture::ready(Ok(memory.meta.get(&(actor, key.to_vec())).cloned()))
    }

    fn durable(&self, _seq: Seq) -> StoreFuture<'_, io::Result<()>> {
        StoreFuture::ready(Ok(()))
    }

    fn last_seq(&self) -> Seq {
        self.inner.borrow().seq
    }

    fn durable_seq(&self) -> Seq {
        self.inner.borrow().seq
    }
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
        let s1 = store.put_actor(&record).now().unwrap().unwrap();
        store.save_state(7, b"abc").now().unwrap().unwrap();
        let s3 = store.save_state(7, b"de").now().unwrap().unwrap();
        assert!(s1 < s3);
        assert_eq!(store.durable_seq(), s3);
        assert!(store.flush().now().unwrap().is_ok());
        assert_eq!(store.load_directory(), vec![record.clone()]);
        assert_eq!(
            store.read_state(7).now().unwrap().unwrap().as_deref(),
            Some(&b"de"[..])
        );
        let entry = store.actor(7).unwrap();
        assert_eq!(&*entry.name, "counter");
        assert!(entry.has_state);
        let destroyed = ActorRecord {
            destroyed_ms: Some(2),
            ..record
        };
        store.put_actor(&destroyed).now().unwrap().unwrap();
        store.delete_state(7).now().unwrap().unwrap();
        assert_eq!(store.load_directory(), vec![destroyed.clone()]);
        assert_eq!(store.read_state(7).now().unwrap().unwrap(), None);
        assert_eq!(store.read_actor(7).now().unwrap().unwrap(), Some(destroyed));

        store
            .put_schedule(7, 1, 50, b"tick")
            .now()
            .unwrap()
            .unwrap();
        store
            .put_schedule(7, 2, 10, b"tock")
            .now()
            .unwrap()
            .unwrap();
        store
            .put_schedule(7, 1, 30, b"tick2")
            .now()
            .unwrap()
            .unwrap();
        assert_eq!(store.next_due_ms(), Some(10));
        assert_eq!(
            store.due_schedules(30, 10),
            vec![
                ScheduleEntry {
                    due_ms: 10,
                    actor: 7,
                    schedule: 2
                },
                ScheduleEntry {
                    due_ms: 30,
                    actor: 7,
                    schedule: 1
                }
            ]
        );
        assert_eq!(store.schedule(7, 2).map(|e| e.due_ms), Some(10));
        store.delete_schedule(7, 2).now().unwrap().unwrap();
        assert_eq!(store.schedule(7, 2), None);
        assert_eq!(store.schedules_of(7).len(), 1);
        assert_eq!(
            store.read_schedule(7, 1).now().unwrap().unwrap().as_deref(),
            Some(&b"tick2"[..])
        );

        store.put_meta(7, b"k", b"v").now().unwrap().unwrap();
        assert_eq!(store.meta_keys(7), vec![b"k".to_vec()]);
        assert_eq!(
            store.read_meta(7, b"k").now().unwrap().unwrap().as_deref(),
            Some(&b"v"[..])
        );
        store.delete_meta(7, b"k").now().unwrap().unwrap();
        assert!(store.meta_keys(7).is_empty());
    }
}
