//! [`LogStore`]: one shard's append-only log of segments, group commit, recovery, compaction.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use glommio::io::{BufferedFile, Directory, OpenOptions};

use crate::syncring::SyncRing;
use glommio::task::JoinHandle;

use crate::format::{
    self, Body, FORMAT_VERSION, HEADER_LEN, Header, Kind, MAGIC, PAYLOAD_BYTES_MAX, Parsed,
    WRITE_SPAN_MAX, align8,
};
use crate::index::{Index, Loc};
use crate::{ActorEntry, ActorRecord, ScheduleEntry, Seq, Store, StoreFuture, layout};

/// Tuning of a [`LogStore`]. The defaults suit a server; tests shrink segments to exercise
/// rollover and compaction.
#[derive(Clone, Debug)]
pub struct Options {
    /// A segment is sealed and a new one started when the next record would take it past this.
    /// (A record larger than a whole segment gets a segment to itself.) At most 1 GiB.
    pub segment_bytes_max: u64,
    /// The most bytes of records waiting for the flusher (the batch being filled while the
    /// previous one is written and synced). An append that would go past it waits (back-pressure),
    /// unless the batch is empty. At most [`PAYLOAD_BYTES_MAX`].
    pub batch_bytes_max: usize,
    /// The most tasks waiting in [`Store::durable`]. While there are this many, appends wait.
    pub waiters_max: usize,
    /// Run the background compaction task.
    pub compaction: bool,
    /// How often the compaction task looks for work.
    pub compact_interval: Duration,
    /// A sealed segment is compacted once this share of its bytes is dead (superseded or
    /// deleted records)...
    pub compact_dead_ratio: f64,
    /// ...and at least this many bytes are dead. A segment with nothing live is always deleted.
    pub compact_dead_bytes_min: u64,
    /// Size of the sequential reads of recovery and compaction.
    pub read_chunk_bytes: usize,
    /// Group commit window: after a sync, the flusher waits at most this long for the writers that
    /// sync released to write again, so that their writes share the next sync with those already
    /// waiting. It starts at once when they all have (with one writer it never waits), when
    /// nothing was released, or when half of [`Options::batch_bytes_max`] is waiting, and early
    /// when a quarter of the window passes with no new writer (open-loop traffic). Under load
    /// this trades a little latency for fewer syncs: every sync costs the shard's core tens of
    /// microseconds (the io_uring worker, interrupts, context switches) besides the disk's time.
    /// Zero turns the window off: each batch is taken as soon as the previous sync is done.
    pub commit_window_max: Duration,
    /// Zero-filled space kept written ahead of the active segment's last record, at most this
    /// many bytes per fill (the first fill of a segment is [`PREFILL_FIRST`], each next one
    /// twice the last). A batch that lands on blocks already written is an overwrite: its
    /// `fdatasync` then has no block allocation or file size to make durable, only the data,
    /// and takes about half as long as an append's (measured here: 235 against 470 µs at the
    /// median). A background task writes and syncs the zeros; recovery reads a zero tail after
    /// the last record as the end of the log. Zero turns it off (every batch appends).
    ///
    /// The same task also makes the next segment ahead of need, once the active one is half
    /// full (see [`Recovered::spare`]): created, filled with [`Options::prefill_bytes_max`] of
    /// zeros and its name made durable, so that a rollover costs no file creation and no
    /// directory `fdatasync`, and the new segment's first batches are overwrites too.
    pub prefill_bytes_max: u64,
}

/// The first zero fill of a segment (see [`Options::prefill_bytes_max`]): small, so that a
/// store that writes little does not write megabytes of zeros.
pub const PREFILL_FIRST: u64 = 256 << 10;

/// Upper bound of [`Options::segment_bytes_max`] (offsets are 32-bit).
pub const SEGMENT_BYTES_LIMIT: u64 = 1 << 30;

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_bytes_max: 64 << 20,
            batch_bytes_max: 1 << 20,
            waiters_max: 16 * 1024,
            compaction: true,
            compact_interval: Duration::from_secs(1),
            compact_dead_ratio: 0.5,
            compact_dead_bytes_min: 1 << 20,
            read_chunk_bytes: 4 << 20,
            commit_window_max: Duration::from_micros(500),
            prefill_bytes_max: 4 << 20,
        }
    }
}

/// What recovery found when the store was opened.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    pub elapsed: Duration,
    pub segments: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Valid records read.
    pub records: u64,
    /// Actors with a directory record (destroyed ones included).
    pub actors: usize,
    /// Of those, the ones not destroyed.
    pub live_actors: usize,
    pub states: usize,
    pub schedules: usize,
    pub meta: usize,
    /// The last sequence number in the log.
    pub last_seq: Seq,
    /// Set when the last segment ended in a partial or corrupt record that was cut off.
    pub torn_tail: Option<TornTail>,
    /// The segment found after the last one that holds only zeros (or nothing): made ahead of
    /// need (see [`Options::prefill_bytes_max`]) and not used yet. It is not part of the log
    /// (the segment before it is the last one for the torn-tail rules) and is kept for the next
    /// rollover. Further such segments after it are deleted.
    pub spare: Option<u32>,
}

/// A torn tail recovery dropped: the bytes from `offset` to the end of segment `segment`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub segment: u32,
    pub offset: u64,
    pub dropped_bytes: u64,
    pub reason: &'static str,
}

/// Counters of a [`LogStore`].
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Records appended (including segment headers and compaction copies).
    pub appends: u64,
    /// Batches written (one write call each, unless the kernel wrote short).
    pub batches: u64,
    /// `fdatasync` calls on segment files.
    pub syncs: u64,
    pub bytes_written: u64,
    /// Appends that had to wait for room.
    pub admission_waits: u64,
    /// Group commit windows the flusher waited in before taking a batch
    /// ([`Options::commit_window_max`]).
    pub gathers: u64,
    pub segments_created: u64,
    /// Of those, the ones made ahead of need (see [`Options::prefill_bytes_max`]).
    pub spares_created: u64,
    /// Attempts to make a segment ahead of need that failed (the rollover then creates it).
    pub spare_failures: u64,
    /// Zero bytes written ahead of the records ([`Options::prefill_bytes_max`]).
    pub prefill_bytes: u64,
    /// Zero fills that failed (each leaves its segment's batches appending).
    pub prefill_failures: u64,
    /// Record reads (waking an actor, a schedule's payload, ...) served from the page cache
    /// without the ring; the others went through io_uring.
    pub cached_reads: u64,
    pub ring_reads: u64,
    /// Segments compacted (live records copied forward, file deleted).
    pub compactions: u64,
    pub compaction_copies: u64,
    /// Segments on disk now, their bytes, and the bytes the index points at.
    pub segments: usize,
    pub disk_bytes: u64,
    pub live_bytes: u64,
}

/// One segment of a [`LogStore`], for monitoring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub number: u32,
    pub bytes: u64,
    pub live_bytes: u64,
    /// The segment appends go to.
    pub active: bool,
}

/// One shard's durable store: an append-only log of segment files in the shard's directory,
/// written through glommio (io_uring) with group commit. See the crate documentation.
///
/// Must be opened and used inside a glommio executor; it spawns two tasks there (the flusher and,
/// unless disabled, the compactor). [`LogStore::close`] flushes and stops them; dropping the store
/// lets them finish writing what was appended, then stop.
pub struct LogStore {
    inner: Rc<Inner>,
    flusher: RefCell<Option<JoinHandle<()>>>,
    compactor: RefCell<Option<JoinHandle<()>>>,
    prefiller: RefCell<Option<JoinHandle<()>>>,
}

struct Inner {
    /// Holds an exclusive `flock` on the shard directory's `LOCK` file while the store is open.
    /// Taken (released) by [`LogStore::close`].
    lock: RefCell<Option<std::fs::File>>,
    dir: PathBuf,
    shard: u32,
    shards: u32,
    options: Options,
    /// The shard directory, for `fsync`s of new names; taken and closed by `shut`.
    dir_handle: RefCell<Option<Rc<Directory>>>,
    recovered: Recovered,
    state: RefCell<State>,
    /// The flusher's own ring for linked write + `fdatasync` (see `syncring`); `None` when it
    /// could not be set up, and then glommio's file calls do both.
    sync_ring: Option<SyncRing>,
    /// Cleared once the filesystem refuses `RWF_NOWAIT` reads: every record read then goes
    /// through the ring without trying the page cache first (see `read_cached`).
    nowait_reads: Cell<bool>,
}

struct State {
    index: Index,
    /// Open segment files. A segment with records still only in memory may have none yet.
    files: BTreeMap<u32, Rc<BufferedFile>>,
    /// The segment appends go to, and its size including what is still in memory.
    active: u32,
    active_size: u64,
    next_seq: Seq,
    durable_seq: Seq,
    /// Appended records not yet durable, oldest first. The front one is being written when
    /// `in_flight`; each is for one segment.
    batches: VecDeque<Batch>,
    in_flight: bool,
    /// Bytes in batches the flusher has not taken yet.
    pending_bytes: usize,
    /// Tasks in `durable`, by (sequence number, unique id).
    waiters: BTreeMap<(Seq, u64), Waker>,
    /// The group commit window (see [`Options::commit_window_max`]): while the flusher gathers,
    /// it waits for this many tasks in `durable` (those left after the last sync plus those it
    /// released); 0 when it does not gather.
    gather_target: usize,
    next_waiter: u64,
    /// Appends waiting for room, in call order.
    admission: VecDeque<Ticket>,
    next_ticket: u64,
    flusher: Option<Waker>,
    compactor: Option<Waker>,
    closing: bool,
    compacting: bool,
    /// Set when a write or sync failed: nothing more can be made durable.
    poisoned: Option<(io::ErrorKind, String)>,
    fill: Fill,
    /// The next segment, made ahead of need by the prefill task.
    spare: Option<Spare>,
    stats: Stats,
}

/// The segment after the active one, created by the prefill task before appends reach it: its
/// file exists, its name is durable, and its first `end` bytes are zeros made durable.
struct Spare {
    seg: u32,
    /// `None` while the prefill task is still making it: a rollover to `seg` waits for it
    /// (creating the file itself would collide with the one being made).
    file: Option<Rc<BufferedFile>>,
    end: u64,
}

/// The zeros written ahead of the active segment's records (see [`Options::prefill_bytes_max`]).
struct Fill {
    /// The segment this is about; when it is not the active one any more, the prefill task
    /// starts over on the new one.
    seg: u32,
    /// The segment's file holds written blocks up to here: records, then zeros.
    end: u64,
    /// The fill being written, `[from, to)`. The flusher writes no batch that overlaps it (its
    /// zeros would land on the records).
    busy: Option<(u64, u64)>,
    /// The size of the last fill: the next starts when fewer than half as many zeros are left.
    last: u64,
    /// The size of the next fill.
    next: u64,
    /// A fill of this segment failed (no space, a file size limit): batches append.
    failed: bool,
    /// The segment after this one was made ahead of need, or that was tried and failed.
    spare_tried: bool,
    /// Once this segment's records reach this size (half a segment), the next one is made.
    spare_at: u64,
    /// The prefill task, while it waits for work.
    waker: Option<Waker>,
}

impl Fill {
    fn new(seg: u32, end: u64, options: &Options) -> Fill {
        Fill {
            seg,
            end,
            busy: None,
            last: PREFILL_FIRST.min(options.prefill_bytes_max),
            next: PREFILL_FIRST.min(options.prefill_bytes_max),
            failed: false,
            spare_tried: false,
            spare_at: options.segment_bytes_max / 2,
            waker: None,
        }
    }

    /// The fill of a segment made ahead of need, whose first `end` bytes are zeros already.
    fn ahead(seg: u32, end: u64, options: &Options) -> Fill {
        let mut fill = Fill::new(seg, end, options);
        if end > 0 {
            fill.last = end;
            fill.next = (end * 2).min(options.prefill_bytes_max).max(fill.next);
        }
        fill
    }

    /// Whether `[from, to)` of `seg` overlaps the fill being written.
    fn overlaps(&self, seg: u32, from: u64, to: u64) -> bool {
        self.seg == seg && self.busy.is_some_and(|(a, b)| from < b && a < to)
    }

    /// Whether the prefill task may have work: the active segment changed, its records came
    /// within half the last fill of the zeros' end, or they reached half the segment and the
    /// next one is not made yet.
    fn wanted(&self, active: u32, active_size: u64) -> bool {
        self.seg != active || self.fill_due(active_size) || self.spare_due(active_size)
    }

    /// Whether the records came within half the last fill of the zeros' end.
    fn fill_due(&self, active_size: u64) -> bool {
        !self.failed && self.busy.is_none() && active_size + self.last / 2 >= self.end
    }

    /// Whether the records reached half the segment and the next one was not tried yet.
    fn spare_due(&self, active_size: u64) -> bool {
        !self.spare_tried && active_size >= self.spare_at
    }
}

struct Batch {
    seg: u32,
    start: u64,
    buf: Vec<u8>,
    last_seq: Seq,
}

struct Ticket {
    id: u64,
    waker: Option<Waker>,
}

/// A write, borrowing what it writes until it is applied.
enum Op<'a> {
    Actor(&'a ActorRecord),
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
    /// A record copied from a segment (compaction, re-sharding). With `from`, it is appended
    /// only if the record at `from` is still the latest for its subject when the copy is applied.
    Copy {
        kind: u16,
        payload: &'a [u8],
        body: Body<'a>,
        from: Option<Loc>,
    },
}

impl Op<'_> {
    fn kind(&self) -> u16 {
        (match self {
            Op::Actor(_) => Kind::Actor,
            Op::State { .. } => Kind::State,
            Op::DeleteState { .. } => Kind::DeleteState,
            Op::Schedule { .. } => Kind::Schedule,
            Op::DeleteSchedule { .. } => Kind::DeleteSchedule,
            Op::Meta { .. } => Kind::Meta,
            Op::DeleteMeta { .. } => Kind::DeleteMeta,
            Op::Copy { kind, .. } => return *kind,
        }) as u16
    }

    fn payload_len(&self) -> usize {
        match self {
            Op::Actor(record) => format::actor_payload_len(record),
            Op::State { snapshot, .. } => 8 + snapshot.len(),
            Op::DeleteState { .. } => 8,
            Op::Schedule { payload, .. } => 24 + payload.len(),
            Op::DeleteSchedule { .. } => 16,
            Op::Meta { key, value, .. } => 12 + key.len() + value.len(),
            Op::DeleteMeta { key, .. } => 12 + key.len(),
            Op::Copy { payload, .. } => payload.len(),
        }
    }

    fn put_payload(&self, out: &mut Vec<u8>) {
        match *self {
            Op::Actor(record) => format::put_actor_payload(out, record),
            Op::State { id, snapshot } => {
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(snapshot);
            }
            Op::DeleteState { id } => out.extend_from_slice(&id.to_le_bytes()),
            Op::Schedule {
                actor,
                schedule,
                due_ms,
                payload,
            } => {
                out.extend_from_slice(&actor.to_le_bytes());
                out.extend_from_slice(&schedule.to_le_bytes());
                out.extend_from_slice(&due_ms.to_le_bytes());
                out.extend_from_slice(payload);
            }
            Op::DeleteSchedule { actor, schedule } => {
                out.extend_from_slice(&actor.to_le_bytes());
                out.extend_from_slice(&schedule.to_le_bytes());
            }
            Op::Meta { actor, key, value } => {
                out.extend_from_slice(&actor.to_le_bytes());
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(value);
            }
            Op::DeleteMeta { actor, key } => {
                out.extend_from_slice(&actor.to_le_bytes());
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
            }
            Op::Copy { payload, .. } => out.extend_from_slice(payload),
        }
    }

    fn body(&self) -> Body<'_> {
        match *self {
            Op::Actor(record) => Body::Actor(format::ActorView {
                id: record.id,
                created_ms: record.created_ms,
                destroyed_ms: record.destroyed_ms,
                name: &record.name,
                keys: &[],
            }),
            Op::State { id, snapshot } => Body::State { id, snapshot },
            Op::DeleteState { id } => Body::DeleteState { id },
            Op::Schedule {
                actor,
                schedule,
                due_ms,
                payload,
            } => Body::Schedule {
                actor,
                schedule,
                due_ms,
                payload,
            },
            Op::DeleteSchedule { actor, schedule } => Body::DeleteSchedule { actor, schedule },
            Op::Meta { actor, key, value } => Body::Meta { actor, key, value },
            Op::DeleteMeta { actor, key } => Body::DeleteMeta { actor, key },
            Op::Copy { ref body, .. } => body.clone(),
        }
    }

    fn footprint(&self) -> u64 {
        align8((HEADER_LEN + self.payload_len()) as u64)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn corrupt(path: &Path, offset: u64, reason: &str, detail: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "pinion-storage: {} is corrupt at offset {offset}: {reason}. {detail}",
            path.display()
        ),
    )
}

const NOT_LAST: &str = "This is not the last segment, so records acknowledged after it would be \
     lost if it were cut here; the store refuses to open. Restore the shard directory from a \
     backup, or move this segment and every later one out of the directory to accept losing them";

pub(crate) fn segment_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("seg-{segment:08}.log"))
}

/// The segment numbers in `dir`, ascending.
fn list_segments(dir: &Path) -> io::Result<Vec<u32>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(number) = name
            .strip_prefix("seg-")
            .and_then(|rest| rest.strip_suffix(".log"))
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|&n| n != 0)
        {
            segments.push(number);
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

/// Sequential reader of one segment's records, in large reads.
struct SegReader {
    file: Rc<BufferedFile>,
    size: u64,
    chunk: usize,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    base: u64,
    /// Offset in `buf` of the next record (may be past `buf.len()` by the last padding).
    cur: usize,
}

enum Next<'a> {
    Record {
        off: u64,
        header: Header,
        payload: &'a [u8],
    },
    End,
    Bad {
        off: u64,
        reason: &'static str,
    },
}

impl SegReader {
    fn new(file: Rc<BufferedFile>, size: u64, chunk: usize) -> SegReader {
        SegReader {
            file,
            size,
            chunk: chunk.max(64 << 10),
            buf: Vec::new(),
            base: 0,
            cur: 0,
        }
    }

    fn pos(&self) -> u64 {
        self.base + self.cur as u64
    }

    async fn next(&mut self) -> io::Result<Next<'_>> {
        let header = loop {
            let outcome = if self.cur <= self.buf.len() {
                match format::parse(&self.buf[self.cur..]) {
                    Parsed::Record(header) => Ok(header),
                    Parsed::Short(need) => Err(Some(need)),
                    Parsed::Bad(reason) => {
                        return Ok(Next::Bad {
                            off: self.pos(),
                            reason,
                        });
                    }
                }
            } else {
                Err(Some(HEADER_LEN))
            };
            match outcome {
                Ok(header) => break header,
                Err(need) => {
                    let need = need.unwrap_or(HEADER_LEN);
                    let pos = self.pos();
                    if pos >= self.size {
                        return Ok(Next::End);
                    }
                    if pos + need as u64 > self.size {
                        return Ok(Next::Bad {
                            off: pos,
                            reason: if need == HEADER_LEN {
                                "partial record header at the end of the file"
                            } else {
                                "record runs past the end of the file"
                            },
                        });
                    }
                    self.fill(need).await?;
                }
            }
        };
        let off = self.pos();
        let start = self.cur;
        self.cur += align8(header.record_len() as u64) as usize;
        Ok(Next::Record {
            off,
            header,
            payload: &self.buf[start + HEADER_LEN..start + header.record_len()],
        })
    }

    /// Makes `buf[cur..]` hold at least `need` bytes (the caller checked the file has them).
    async fn fill(&mut self, need: usize) -> io::Result<()> {
        if self.cur >= self.buf.len() {
            self.base += self.cur as u64;
            self.buf.clear();
        } else {
            self.buf.drain(..self.cur);
            self.base += self.cur as u64;
        }
        self.cur = 0;
        while self.buf.len() < need {
            let at = self.base + self.buf.len() as u64;
            let want = (self.chunk.max(need - self.buf.len()) as u64).min(self.size - at);
            let read = self.file.read_at(at, want as usize).await?;
            if read.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment file shorter than its recorded size",
                ));
            }
            self.buf.extend_from_slice(&read);
        }
        Ok(())
    }
}

/// What follows a bad record in a segment.
struct Tail {
    /// Every byte from the bad record to the end of the file is zero: the space the prefill
    /// task wrote ahead of the records ([`Options::prefill_bytes_max`]), not damage.
    zeros: bool,
    /// The offset of the last valid record past the bad one with a sequence number above the
    /// last one read (records inside records are skipped).
    last_valid: Option<u64>,
}

/// Reads `[from, size)` of `file` (`from` is a bad record's offset) and says what is there.
async fn read_tail(
    file: &BufferedFile,
    from: u64,
    size: u64,
    after: Seq,
    chunk: usize,
) -> io::Result<Tail> {
    let mut tail = Tail {
        zeros: true,
        last_valid: None,
    };
    if from >= size {
        return Ok(tail);
    }
    let mut data = Vec::with_capacity((size - from) as usize);
    while (data.len() as u64) < size - from {
        let at = from + data.len() as u64;
        let read = file
            .read_at(at, (chunk as u64).min(size - at) as usize)
            .await?;
        if read.is_empty() {
            break;
        }
        data.extend_from_slice(&read);
    }
    tail.zeros = data.iter().all(|&b| b == 0);
    if tail.zeros {
        return Ok(tail);
    }
    let mut p = 8usize;
    while p + HEADER_LEN <= data.len() {
        if data[p + 4..p + 8] == MAGIC.to_le_bytes()
            && let Parsed::Record(header) = format::parse(&data[p..])
            && header.seq > after
        {
            tail.last_valid = Some(from + p as u64);
            p += align8(header.record_len() as u64) as usize;
            continue;
        }
        p += 8;
    }
    Ok(tail)
}

/// Takes the segments made ahead of need (see [`Spare`]) off the end of `segments`: those after
/// the last one with a byte that is not zero (the last one always stays, as a fresh store's
/// first segment may hold nothing yet). The first of them, when it directly follows the last
/// segment, is returned as the spare; any others are deleted (only one is ever made at a time,
/// so they are left from an interrupted rollover, e.g. a segment whose first batch never made
/// it to disk, made again).
async fn find_spare(
    dir: &Path,
    dir_handle: &Directory,
    segments: &mut Vec<u32>,
    chunk: usize,
) -> io::Result<Option<Spare>> {
    let mut empty = Vec::new();
    while segments.len() > 1 {
        let seg = *segments.last().expect("more than one");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .buffered_open(segment_path(dir, seg))
            .await?;
        let size = file.file_size().await?;
        if !holds_only_zeros(&file, size, chunk).await? {
            file.close().await?;
            break;
        }
        segments.pop();
        empty.push((seg, file, size));
    }
    let last = *segments.last().unwrap_or(&0);
    let mut spare = None;
    let mut deleted = false;
    // Lowest first: the one right after the last segment is the spare.
    for (seg, file, size) in empty.into_iter().rev() {
        if spare.is_none() && seg == last + 1 {
            advise_random(&file);
            spare = Some(Spare {
                seg,
                file: Some(Rc::new(file)),
                end: size,
            });
            continue;
        }
        file.close().await?;
        let path = segment_path(dir, seg);
        tracing::info!(segment = %path.display(), "pinion-storage: deleting a second empty segment after the log");
        std::fs::remove_file(&path)?;
        deleted = true;
    }
    if deleted {
        dir_handle.sync().await?;
    }
    Ok(spare)
}

/// Whether the first `size` bytes of `file` are all zeros. Stops at the first piece that is not
/// (a segment in use has its header record at offset 0, so that is the first page).
async fn holds_only_zeros(file: &BufferedFile, size: u64, chunk: usize) -> io::Result<bool> {
    let mut at = 0;
    let mut piece = 4096;
    while at < size {
        let read = file.read_at(at, piece.min(size - at) as usize).await?;
        if read.is_empty() {
            break;
        }
        if read.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += read.len() as u64;
        piece = chunk as u64;
    }
    Ok(true)
}

/// Tells the kernel that reads of `file` are random point reads (waking an actor reads one
/// record), so it does not read ahead around each: a cold read then costs one page from the
/// device, not a readahead window. (Recovery and compaction read in large explicit chunks.)
fn advise_random(file: &BufferedFile) {
    use std::os::fd::AsRawFd;
    // SAFETY: `posix_fadvise` only reads its integer arguments; the descriptor stays open for the
    // call (we hold the file).
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    if rc != 0 {
        tracing::debug!(rc, "posix_fadvise(RANDOM) failed; reads will use readahead");
    }
}

/// Takes an exclusive lock on `dir/LOCK`, so two stores (in this process or another) never write
/// one shard's files.
fn lock_dir(dir: &Path) -> io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))?;
    // SAFETY: `flock` only takes an integer descriptor (open: we own `file`) and flags.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(
            if error.kind() == io::ErrorKind::WouldBlock {
                io::ErrorKind::ResourceBusy
            } else {
                error.kind()
            },
            format!(
                "pinion-storage: cannot lock {}: {error} (is another server, or another store in \
                 this one, using this shard directory?)",
                dir.display()
            ),
        ));
    }
    Ok(file)
}

/// Every segment starts with a segment header naming it, and has no other.
fn check_segment_header(
    body: &Body<'_>,
    off: u64,
    path: &Path,
    expected: (u32, u32, u32),
) -> io::Result<()> {
    match (body, off) {
        (
            &Body::Segment {
                shard,
                shards,
                segment,
                ..
            },
            0,
        ) if (shard, shards, segment) != expected => Err(corrupt(
            path,
            0,
            &format!(
                "the segment header names segment {segment} of shard {shard} of {shards}, not \
                 segment {} of shard {} of {}",
                expected.2, expected.0, expected.1
            ),
            "Was a file copied between shard directories?",
        )),
        (Body::Segment { .. }, 0) => Ok(()),
        (_, 0) => Err(corrupt(path, 0, "no segment header", "")),
        (Body::Segment { .. }, _) => Err(corrupt(path, off, "a second segment header", "")),
        _ => Ok(()),
    }
}

impl LogStore {
    /// Opens (creating if needed) the store of shard `shard` of `shards` under `data_dir`, in
    /// `data_dir/shard-<shard>-of-<shards>/`, and recovers it. Fails with a [`crate::LayoutError`]
    /// (inside the `io::Error`) if `data_dir` was written with another shard count.
    pub async fn open(
        data_dir: &Path,
        shard: usize,
        shards: usize,
        options: Options,
    ) -> io::Result<LogStore> {
        assert!(shard < shards, "shard {shard} of {shards}");
        layout::check(data_dir, shards)?;
        let dir = layout::shard_dir(data_dir, shard, shards);
        layout::create_dir_durable(&dir)?;
        LogStore::open_dir(dir, shard, shards, options).await
    }

    /// Opens the store in `dir` without checking the data directory's layout.
    pub(crate) async fn open_dir(
        dir: PathBuf,
        shard: usize,
        shards: usize,
        mut options: Options,
    ) -> io::Result<LogStore> {
        options.segment_bytes_max = options.segment_bytes_max.clamp(4096, SEGMENT_BYTES_LIMIT);
        options.batch_bytes_max = options.batch_bytes_max.clamp(4096, PAYLOAD_BYTES_MAX);
        options.waiters_max = options.waiters_max.max(1);
        let started = Instant::now();
        let lock = lock_dir(&dir)?;
        let dir_handle = Directory::open(&dir).await?;
        let (shard, shards) = (shard as u32, shards as u32);
        let mut segments = list_segments(&dir)?;
        let spare = find_spare(&dir, &dir_handle, &mut segments, options.read_chunk_bytes).await?;
        let mut index = Index::default();
        let mut files = BTreeMap::new();
        let mut recovered = Recovered {
            segments: segments.len(),
            spare: spare.as_ref().map(|s| s.seg),
            ..Recovered::default()
        };
        let mut last_seq: Seq = 0;
        let mut active = 1;
        let mut active_size = 0;
        // How far the active segment's file goes (records, then zeros).
        let mut active_filled = 0;
        for (i, &seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let path = segment_path(&dir, seg);
            let file = if last {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .buffered_open(&path)
                    .await?
            } else {
                BufferedFile::open(&path).await?
            };
            let file = Rc::new(file);
            let size = file.file_size().await?;
            recovered.bytes += size;
            let mut filled = size;
            index.segs.entry(seg).or_default();
            let mut reader = SegReader::new(file.clone(), size, options.read_chunk_bytes);
            let mut end = 0;
            loop {
                match reader.next().await? {
                    Next::End => break,
                    Next::Record {
                        off,
                        header,
                        payload,
                    } => {
                        if header.version > FORMAT_VERSION {
                            return Err(corrupt(
                                &path,
                                off,
                                &format!(
                                    "record format version {} is newer than this build's {}",
                                    header.version, FORMAT_VERSION
                                ),
                                "Open it with a newer build",
                            ));
                        }
                        if header.seq <= last_seq {
                            return Err(corrupt(
                                &path,
                                off,
                                &format!(
                                    "sequence number {} does not follow {last_seq}",
                                    header.seq
                                ),
                                "",
                            ));
                        }
                        let body = format::decode(header.kind, payload)
                            .map_err(|reason| corrupt(&path, off, reason, ""))?;
                        check_segment_header(&body, off, &path, (shard, shards, seg))?;
                        let loc =
                            Loc::new(seg, off as u32, header.record_len(), body.is_tombstone());
                        index.apply(&body, loc);
                        let footprint = align8(header.record_len() as u64);
                        let stat = index.segs.get_mut(&seg).expect("inserted above");
                        stat.bytes += footprint;
                        stat.last_seq = header.seq;
                        last_seq = header.seq;
                        end = off + footprint;
                        recovered.records += 1;
                    }
                    Next::Bad { off, reason } => {
                        let tail =
                            read_tail(&file, off, size, last_seq, options.read_chunk_bytes).await?;
                        if tail.zeros {
                            // The prefilled space after the last record: the end of the log.
                            break;
                        }
                        if !last {
                            return Err(corrupt(&path, off, reason, NOT_LAST));
                        }
                        if let Some(valid) = tail.last_valid
                            && valid - off > WRITE_SPAN_MAX
                        {
                            return Err(corrupt(
                                &path,
                                off,
                                reason,
                                &format!(
                                    "Valid records follow at offset {valid}, farther than one \
                                     write can reach, so this is not a torn tail but damage to \
                                     acknowledged records; the store refuses to open. Restore \
                                     the shard directory from a backup, or truncate the file \
                                     to {off} bytes to accept losing them"
                                ),
                            ));
                        }
                        tracing::warn!(
                            segment = %path.display(),
                            offset = off,
                            dropped_bytes = size - off,
                            reason,
                            "pinion-storage: dropping the torn tail of the log"
                        );
                        file.truncate(off).await?;
                        file.fdatasync().await?;
                        filled = off;
                        recovered.torn_tail = Some(TornTail {
                            segment: seg,
                            offset: off,
                            dropped_bytes: size - off,
                            reason,
                        });
                        break;
                    }
                }
            }
            advise_random(&file);
            files.insert(seg, file);
            active = seg;
            active_size = end;
            active_filled = filled;
        }
        index.shrink();
        recovered.actors = index.actors.values().filter(|s| !s.actor.is_none()).count();
        recovered.live_actors = index
            .actors
            .values()
            .filter(|s| !s.actor.is_none() && s.destroyed_ms == u64::MAX)
            .count();
        recovered.states = index.live_states();
        recovered.schedules = index.pending_schedules();
        recovered.meta = index.live_meta();
        recovered.last_seq = last_seq;
        recovered.elapsed = started.elapsed();
        let state = State {
            index,
            files,
            active,
            active_size,
            next_seq: last_seq + 1,
            durable_seq: last_seq,
            batches: VecDeque::new(),
            in_flight: false,
            pending_bytes: 0,
            waiters: BTreeMap::new(),
            gather_target: 0,
            next_waiter: 0,
            admission: VecDeque::new(),
            next_ticket: 0,
            flusher: None,
            compactor: None,
            closing: false,
            compacting: false,
            poisoned: None,
            fill: Fill::new(active, active_filled, &options),
            spare,
            stats: Stats::default(),
        };
        let inner = Rc::new(Inner {
            lock: RefCell::new(Some(lock)),
            dir,
            shard,
            shards,
            options,
            dir_handle: RefCell::new(Some(Rc::new(dir_handle))),
            recovered,
            state: RefCell::new(state),
            nowait_reads: Cell::new(true),
            sync_ring: match SyncRing::new() {
                Ok(ring) => Some(ring),
                Err(error) => {
                    tracing::warn!(%error, "pinion-storage: no io_uring of its own for syncs; using glommio's");
                    None
                }
            },
        });
        let flusher = glommio::spawn_local(flusher(inner.clone())).detach();
        let compactor = inner
            .options
            .compaction
            .then(|| glommio::spawn_local(compactor(inner.clone())).detach());
        let prefiller = (inner.options.prefill_bytes_max > 0)
            .then(|| glommio::spawn_local(prefiller(inner.clone())).detach());
        Ok(LogStore {
            inner,
            flusher: RefCell::new(Some(flusher)),
            compactor: RefCell::new(compactor),
            prefiller: RefCell::new(prefiller),
        })
    }

    /// What recovery found.
    pub fn recovered(&self) -> &Recovered {
        &self.inner.recovered
    }

    /// The shard directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn stats(&self) -> Stats {
        let st = self.inner.state.borrow();
        let mut stats = st.stats.clone();
        stats.segments = st.index.segs.len();
        stats.disk_bytes = st.index.segs.values().map(|s| s.bytes).sum();
        stats.live_bytes = st.index.segs.values().map(|s| s.live).sum();
        stats
    }

    /// Every segment on disk: number, bytes, live bytes (ascending).
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let st = self.inner.state.borrow();
        st.index
            .segs
            .iter()
            .map(|(&number, stat)| SegmentInfo {
                number,
                bytes: stat.bytes,
                live_bytes: stat.live,
                active: number == st.active,
            })
            .collect()
    }

    /// Compacts every sealed segment that qualifies (see [`Options`]) now, and returns how many.
    /// The background task does the same every [`Options::compact_interval`].
    pub async fn compact(&self) -> io::Result<usize> {
        let mut done = 0;
        loop {
            // Let a pass of the background task finish first.
            while self.inner.state.borrow().compacting {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            if !compact_once(&self.inner).await? {
                return Ok(done);
            }
            done += 1;
        }
    }

    /// Makes everything appended durable, stops the background tasks and closes the files.
    pub async fn close(self) -> io::Result<()> {
        self.shut().await
    }

    /// [`LogStore::close`] through a reference (the [`Store::close`] of the trait): afterwards
    /// every write fails, and the shard directory's lock is released, so another store (in this
    /// process or another) can open it.
    async fn shut(&self) -> io::Result<()> {
        self.inner.set_closing();
        let compactor = self.compactor.borrow_mut().take();
        if let Some(task) = compactor {
            task.await;
        }
        let flusher = self.flusher.borrow_mut().take();
        if let Some(task) = flusher {
            task.await;
        }
        let prefiller = self.prefiller.borrow_mut().take();
        if let Some(task) = prefiller {
            task.await;
        }
        let result = match &self.inner.state.borrow().poisoned {
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            None => Ok(()),
        };
        let (files, spare) = {
            let mut st = self.inner.state.borrow_mut();
            (std::mem::take(&mut st.files), st.spare.take())
        };
        let spare = spare.and_then(|s| s.file).map(|file| (0, file));
        for (_, file) in files.into_iter().chain(spare) {
            if let Ok(file) = Rc::try_unwrap(file) {
                file.close().await?;
            }
        }
        let dir_handle = self.inner.dir_handle.borrow_mut().take();
        if let Some(Ok(dir_handle)) = dir_handle.map(Rc::try_unwrap) {
            // Closed now: dropped, glommio would close it at a later reactor pass, which a
            // stopping executor may never make. Nothing was written through it, so a failed
            // close loses nothing.
            let _ = dir_handle.close().await;
        }
        self.inner.lock.borrow_mut().take();
        result
    }

    fn write<'a>(&'a self, op: Op<'a>) -> StoreFuture<'a, io::Result<Seq>> {
        if op.payload_len() > PAYLOAD_BYTES_MAX {
            return StoreFuture::ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "pinion-storage: a record of {} bytes is over the limit of {PAYLOAD_BYTES_MAX}",
                    op.payload_len()
                ),
            )));
        }
        match submit(&self.inner, op) {
            Submitted::Done(result) => {
                StoreFuture::ready(result.map(|seq| seq.expect("only copies are skipped")))
            }
            Submitted::Wait(admit) => StoreFuture::boxed(async move {
                admit.await.map(|seq| seq.expect("only copies are skipped"))
            }),
        }
    }

    /// The bytes of the record at `loc`, checked.
    async fn read_record(&self, loc: Loc, kind: Kind) -> io::Result<Vec<u8>> {
        read_record(&self.inner, loc, kind).await
    }

    /// Copies every live record of this store into `targets[place(actor)]` (re-sharding).
    pub(crate) async fn copy_live_into(
        &self,
        targets: &[LogStore],
        place: &dyn Fn(u64) -> usize,
    ) -> io::Result<u64> {
        let segments: Vec<(u32, Rc<BufferedFile>, u64)> = {
            let st = self.inner.state.borrow();
            st.files
                .iter()
                .map(|(&seg, file)| (seg, file.clone(), st.index.segs[&seg].bytes))
                .collect()
        };
        let mut copied = 0;
        for (seg, file, size) in segments {
            let mut reader = SegReader::new(file, size, self.inner.options.read_chunk_bytes);
            loop {
                let (off, header, payload) = match reader.next().await? {
                    Next::End => break,
                    Next::Bad { off, reason } => {
                        return Err(corrupt(
                            &segment_path(&self.inner.dir, seg),
                            off,
                            reason,
                            "",
                        ));
                    }
                    Next::Record {
                        off,
                        header,
                        payload,
                    } => (off, header, payload),
                };
                let body = format::decode(header.kind, payload).map_err(|reason| {
                    corrupt(&segment_path(&self.inner.dir, seg), off, reason, "")
                })?;
                let loc = Loc::new(seg, off as u32, header.record_len(), body.is_tombstone());
                let Some(actor) = body.actor() else { continue };
                if body.is_tombstone() || !self.inner.state.borrow().index.is_live(&body, loc) {
                    continue;
                }
                let target = &targets[place(actor)];
                let op = Op::Copy {
                    kind: header.kind,
                    payload,
                    body,
                    from: None,
                };
                match submit(&target.inner, op) {
                    Submitted::Done(result) => result?,
                    Submitted::Wait(admit) => admit.await?,
                };
                copied += 1;
            }
        }
        Ok(copied)
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        self.inner.set_closing();
    }
}

impl State {
    fn error(&self) -> Option<io::Error> {
        if let Some((kind, message)) = &self.poisoned {
            return Some(io::Error::new(*kind, message.clone()));
        }
        if self.closing {
            return Some(io::Error::other("pinion-storage: the store is closed"));
        }
        None
    }

    fn wake_admission_head(&mut self) {
        if let Some(waker) = self.admission.front_mut().and_then(|t| t.waker.take()) {
            waker.wake();
        }
    }

    fn wake_all(&mut self) {
        for (_, waker) in std::mem::take(&mut self.waiters) {
            waker.wake();
        }
        for ticket in &mut self.admission {
            if let Some(waker) = ticket.waker.take() {
                waker.wake();
            }
        }
    }
}

impl Inner {
    /// `fsync`s the shard directory (new or removed names); fails once the store is closed.
    async fn sync_dir(&self) -> io::Result<()> {
        let dir = self.dir_handle.borrow().clone();
        match dir {
            Some(dir) => dir.sync().await.map_err(io::Error::from),
            None => Err(io::Error::other("the store is closed")),
        }
    }

    fn set_closing(&self) {
        let mut st = self.state.borrow_mut();
        st.closing = true;
        if let Some(waker) = st.flusher.take() {
            waker.wake();
        }
        if let Some(waker) = st.compactor.take() {
            waker.wake();
        }
        if let Some(waker) = st.fill.waker.take() {
            waker.wake();
        }
        st.wake_all();
    }

    fn room(&self, st: &State, footprint: u64) -> bool {
        (st.pending_bytes == 0
            || st.pending_bytes as u64 + footprint <= self.options.batch_bytes_max as u64)
            && st.waiters.len() < self.options.waiters_max
    }

    /// Appends one record to the batch of the active segment; returns its sequence number and
    /// offset.
    fn append_record(
        &self,
        st: &mut State,
        kind: u16,
        payload_len: usize,
        payload: impl FnOnce(&mut Vec<u8>),
    ) -> (Seq, u64) {
        let footprint = align8((HEADER_LEN + payload_len) as u64);
        let new_batch = match st.batches.back() {
            None => true,
            Some(batch) => batch.seg != st.active || (st.in_flight && st.batches.len() == 1),
        };
        if new_batch {
            let (seg, start) = (st.active, st.active_size);
            st.batches.push_back(Batch {
                seg,
                start,
                buf: Vec::with_capacity(footprint.max(4096) as usize),
                last_seq: 0,
            });
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let batch = st.batches.back_mut().expect("pushed above");
        format::put_record(&mut batch.buf, kind, seq, payload_len, payload);
        batch.last_seq = seq;
        let off = st.active_size;
        st.active_size += footprint;
        st.pending_bytes += footprint as usize;
        let stat = st.index.segs.entry(st.active).or_default();
        stat.bytes += footprint;
        stat.last_seq = seq;
        st.stats.appends += 1;
        (seq, off)
    }

    /// Applies `op`: appends its record and points the index at it. `None` for a copy whose
    /// source is no longer live.
    fn apply_op(&self, st: &mut State, op: &Op<'_>) -> Option<Seq> {
        let body = op.body();
        if let Op::Copy {
            from: Some(from), ..
        } = op
            && !st.index.is_live(&body, *from)
        {
            return None;
        }
        let footprint = op.footprint();
        if st.active_size > 0 && st.active_size + footprint > self.options.segment_bytes_max {
            st.active += 1;
            st.active_size = 0;
        }
        if st.active_size == 0 {
            let (shard, shards, segment) = (self.shard, self.shards, st.active);
            self.append_record(st, Kind::Segment as u16, 24, |out| {
                format::put_segment_payload(out, shard, shards, segment, unix_ms())
            });
        }
        let payload_len = op.payload_len();
        let (seq, off) = self.append_record(st, op.kind(), payload_len, |out| op.put_payload(out));
        let loc = Loc::new(
            st.active,
            off as u32,
            HEADER_LEN + payload_len,
            body.is_tombstone(),
        );
        st.index.apply(&body, loc);
        if let Op::Copy { from: Some(_), .. } = op {
            st.stats.compaction_copies += 1;
        }
        if let Some(waker) = st.flusher.take() {
            waker.wake();
        }
        if st.fill.waker.is_some() && st.fill.wanted(st.active, st.active_size) {
            st.fill.waker.take().expect("checked").wake();
        }
        Some(seq)
    }
}

enum Submitted<'a> {
    Done(io::Result<Option<Seq>>),
    Wait(Admit<'a>),
}

/// Applies `op` now if there is room and nobody is waiting ahead of it, or queues it.
fn submit<'a>(inner: &'a Inner, op: Op<'a>) -> Submitted<'a> {
    let mut st = inner.state.borrow_mut();
    if let Some(error) = st.error() {
        return Submitted::Done(Err(error));
    }
    let footprint = op.footprint();
    if st.admission.is_empty() && inner.room(&st, footprint) {
        return Submitted::Done(Ok(inner.apply_op(&mut st, &op)));
    }
    let ticket = st.next_ticket;
    st.next_ticket += 1;
    st.admission.push_back(Ticket {
        id: ticket,
        waker: None,
    });
    st.stats.admission_waits += 1;
    Submitted::Wait(Admit {
        inner,
        ticket,
        op,
        footprint,
        done: false,
    })
}

/// A write waiting for room, in call order.
struct Admit<'a> {
    inner: &'a Inner,
    ticket: u64,
    op: Op<'a>,
    footprint: u64,
    done: bool,
}

impl Admit<'_> {
    fn leave(&mut self, st: &mut State) {
        self.done = true;
        if let Ok(at) = st.admission.binary_search_by_key(&self.ticket, |t| t.id) {
            st.admission.remove(at);
            if at == 0 {
                st.wake_admission_head();
            }
        }
    }
}

impl Future for Admit<'_> {
    type Output = io::Result<Option<Seq>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let inner = this.inner;
        let mut st = inner.state.borrow_mut();
        if let Some(error) = st.error() {
            this.leave(&mut st);
            return Poll::Ready(Err(error));
        }
        let head = st.admission.front().map(|t| t.id) == Some(this.ticket);
        if head && inner.room(&st, this.footprint) {
            st.admission.pop_front();
            this.done = true;
            let seq = inner.apply_op(&mut st, &this.op);
            // The next in line may fit too.
            st.wake_admission_head();
            return Poll::Ready(Ok(seq));
        }
        if let Ok(at) = st.admission.binary_search_by_key(&this.ticket, |t| t.id) {
            st.admission[at].waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Admit<'_> {
    fn drop(&mut self) {
        if !self.done {
            let inner = self.inner;
            self.leave(&mut inner.state.borrow_mut());
        }
    }
}

/// Waits until `seq` is durable.
struct Durable<'a> {
    inner: &'a Inner,
    seq: Seq,
    key: Option<(Seq, u64)>,
}

impl Future for Durable<'_> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut st = this.inner.state.borrow_mut();
        if st.durable_seq >= this.seq {
            if let Some(key) = this.key.take() {
                st.waiters.remove(&key);
            }
            return Poll::Ready(Ok(()));
        }
        if let Some((kind, message)) = &st.poisoned {
            return Poll::Ready(Err(io::Error::new(*kind, message.clone())));
        }
        let key = match this.key {
            Some(key) => key,
            None => {
                let key = (this.seq, st.next_waiter);
                st.next_waiter += 1;
                this.key = Some(key);
                key
            }
        };
        st.waiters.insert(key, cx.waker().clone());
        if st.gather_target != 0
            && st.waiters.len() >= st.gather_target
            && let Some(flusher) = st.flusher.take()
        {
            flusher.wake();
        }
        Poll::Pending
    }
}

impl Drop for Durable<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.inner.state.borrow_mut().waiters.remove(&key);
        }
    }
}

fn durable(inner: &Inner, seq: Seq) -> StoreFuture<'_, io::Result<()>> {
    let st = inner.state.borrow();
    let seq = seq.min(st.next_seq - 1);
    if st.durable_seq >= seq {
        return StoreFuture::ready(Ok(()));
    }
    if let Some((kind, message)) = &st.poisoned {
        return StoreFuture::ready(Err(io::Error::new(*kind, message.clone())));
    }
    StoreFuture::boxed(Durable {
        inner,
        seq,
        key: None,
    })
}

/// The bytes of the record at `loc`: from a batch still in memory, else from its segment file.
async fn read_record(inner: &Inner, loc: Loc, kind: Kind) -> io::Result<Vec<u8>> {
    let file = {
        let st = inner.state.borrow();
        let off = u64::from(loc.off);
        let in_memory = st
            .batches
            .iter()
            .find(|b| b.seg == loc.seg && off >= b.start && off < b.start + b.buf.len() as u64);
        match in_memory {
            Some(batch) => {
                let at = (off - batch.start) as usize;
                return check_record(batch.buf[at..at + loc.len()].to_vec(), loc, kind, inner);
            }
            None => st.files.get(&loc.seg).cloned().ok_or_else(|| {
                io::Error::other(format!(
                    "pinion-storage: segment {} is not open (a bug)",
                    loc.seg
                ))
            })?,
        }
    };
    if inner.nowait_reads.get() {
        match read_cached(&file, u64::from(loc.off), loc.len()) {
            Cached::Read(bytes) => {
                inner.state.borrow_mut().stats.cached_reads += 1;
                return check_record(bytes, loc, kind, inner);
            }
            Cached::Unsupported => {
                tracing::debug!(dir = %inner.dir.display(), "RWF_NOWAIT reads refused here; reading through the ring");
                inner.nowait_reads.set(false);
            }
            Cached::Missed => {}
        }
    }
    inner.state.borrow_mut().stats.ring_reads += 1;
    let read = file.read_at(u64::from(loc.off), loc.len()).await?;
    check_record(read.to_vec(), loc, kind, inner)
}

/// What [`read_cached`] found.
enum Cached {
    Read(Vec<u8>),
    /// Not (wholly) in the page cache, or interrupted: read it through the ring.
    Missed,
    /// The filesystem does not take `RWF_NOWAIT` reads.
    Unsupported,
}

/// `len` bytes at `off` if the page cache holds all of them: a `preadv2(RWF_NOWAIT)`, which never
/// waits for the disk. A record read then costs one short syscall instead of a round trip through
/// the ring (submit, complete, wake the task): waking an actor whose state is cached takes a few
/// microseconds.
fn read_cached(file: &BufferedFile, off: u64, len: usize) -> Cached {
    use std::os::fd::AsRawFd;
    let Ok(off) = libc::off_t::try_from(off) else {
        return Cached::Missed;
    };
    let mut bytes = Vec::<u8>::with_capacity(len);
    let iov = libc::iovec {
        iov_base: bytes.as_mut_ptr().cast(),
        iov_len: len,
    };
    // SAFETY: `iov` describes `len` bytes of `bytes`' spare capacity, which live until after the
    // call; the kernel writes at most that many. The descriptor is open (we hold the file).
    let read = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, off, libc::RWF_NOWAIT) };
    if read < 0 {
        let refused = io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP);
        return if refused {
            Cached::Unsupported
        } else {
            Cached::Missed
        };
    }
    if read as usize != len {
        return Cached::Missed;
    }
    // SAFETY: the kernel initialised all `len` bytes.
    unsafe { bytes.set_len(len) };
    Cached::Read(bytes)
}

fn check_record(bytes: Vec<u8>, loc: Loc, kind: Kind, inner: &Inner) -> io::Result<Vec<u8>> {
    let fail = |reason: &str| {
        corrupt(
            &segment_path(&inner.dir, loc.seg),
            u64::from(loc.off),
            reason,
            "Reading a record the index points at",
        )
    };
    if bytes.len() != loc.len() {
        return Err(fail("short read"));
    }
    match format::parse(&bytes) {
        Parsed::Record(header) if header.kind == kind as u16 => Ok(bytes),
        Parsed::Record(_) => Err(fail("record of another kind")),
        Parsed::Bad(reason) => Err(fail(reason)),
        Parsed::Short(_) => Err(fail("short record")),
    }
}

/// The flusher: writes and syncs one batch at a time, oldest first.
async fn flusher(inner: Rc<Inner>) {
    loop {
        // With a batch to write (and not before: with one writer, the window would then never be
        // needed), give the writers the last sync released a chance to join it.
        poll_fn(|cx| {
            let mut st = inner.state.borrow_mut();
            if !st.batches.is_empty() || st.closing || st.poisoned.is_some() {
                return Poll::Ready(());
            }
            st.flusher = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        gather(&inner).await;
        let job = poll_fn(|cx| {
            let mut st = inner.state.borrow_mut();
            if st.poisoned.is_some() {
                return Poll::Ready(None);
            }
            if let Some(batch) = st.batches.front()
                && !st.in_flight
                && !st
                    .fill
                    .overlaps(batch.seg, batch.start, batch.start + batch.buf.len() as u64)
            {
                let job = (batch.seg, batch.start, batch.buf.clone(), batch.last_seq);
                st.in_flight = true;
                st.pending_bytes -= job.2.len();
                st.wake_admission_head();
                return Poll::Ready(Some(job));
            }
            if st.closing {
                return Poll::Ready(None);
            }
            st.flusher = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some((seg, start, buf, last_seq)) = job else {
            break;
        };
        let len = buf.len() as u64;
        match write_batch(&inner, seg, start, buf).await {
            Ok(()) => {
                let mut st = inner.state.borrow_mut();
                st.batches.pop_front();
                st.in_flight = false;
                st.durable_seq = last_seq;
                st.stats.batches += 1;
                st.stats.syncs += 1;
                st.stats.bytes_written += len;
                let later = st.waiters.split_off(&(last_seq + 1, 0));
                let done = std::mem::replace(&mut st.waiters, later);
                if !inner.options.commit_window_max.is_zero() && !done.is_empty() {
                    st.gather_target = st.waiters.len() + done.len();
                }
                for (_, waker) in done {
                    waker.wake();
                }
                st.wake_admission_head();
            }
            Err(error) => {
                tracing::error!(
                    dir = %inner.dir.display(),
                    %error,
                    "pinion-storage: a log write failed; the store accepts no more writes"
                );
                let mut st = inner.state.borrow_mut();
                st.poisoned = Some((
                    error.kind(),
                    format!("pinion-storage: writing the log failed: {error}"),
                ));
                st.wake_all();
                break;
            }
        }
    }
}

async fn write_batch(inner: &Inner, seg: u32, start: u64, mut buf: Vec<u8>) -> io::Result<()> {
    let existing = poll_fn(|cx| {
        let mut st = inner.state.borrow_mut();
        if let Some(file) = st.files.get(&seg) {
            return Poll::Ready(Some(file.clone()));
        }
        let Some(spare) = st.spare.as_ref().filter(|spare| spare.seg == seg) else {
            return Poll::Ready(None);
        };
        match spare.file.clone() {
            Some(file) => {
                // Made ahead of need: its name is durable and its first bytes are zeros. The
                // prefill task picks up its fill when it sees the active segment changed.
                st.files.insert(seg, file.clone());
                if let Some(waker) = st.fill.waker.take() {
                    waker.wake();
                }
                Poll::Ready(Some(file))
            }
            None => {
                // The prefill task is making it and wakes the flusher when done.
                st.flusher = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await;
    let file = match existing {
        Some(file) => file,
        None => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .buffered_open(segment_path(&inner.dir, seg))
                .await?;
            // The new name must be durable before anything in the file is acknowledged.
            inner.sync_dir().await?;
            let file = Rc::new(file);
            advise_random(&file);
            let mut st = inner.state.borrow_mut();
            st.files.insert(seg, file.clone());
            st.stats.segments_created += 1;
            if let Some(waker) = st.fill.waker.take() {
                waker.wake();
            }
            file
        }
    };
    let mut pos = start;
    if let Some(ring) = &inner.sync_ring {
        let len = buf.len();
        let written = ring.write_and_sync(file.as_raw_fd(), buf, pos).await?;
        if written == len {
            return Ok(());
        }
        // A short write: the linked sync was cancelled; the rest goes the plain way below.
        buf = short_write_rest(inner, start, pos, written);
        pos += written as u64;
    }
    loop {
        let len = buf.len();
        let written = file.write_at(buf, pos).await?;
        if written == len {
            break;
        }
        if written == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "segment write made no progress",
            ));
        }
        buf = short_write_rest(inner, start, pos, written);
        pos += written as u64;
    }
    file.fdatasync().await?;
    Ok(())
}

/// What a short write at `pos` (of the front batch, which starts at `start`) left unwritten: a
/// rare case, so copying it is fine (the writes take their buffer).
fn short_write_rest(inner: &Inner, start: u64, pos: u64, written: usize) -> Vec<u8> {
    let rest = inner.state.borrow().batches.front().map(|b| {
        let done = (pos - start) as usize + written;
        b.buf[done..].to_vec()
    });
    rest.unwrap_or_default()
}

/// The prefill task: keeps zeros written ahead of the active segment's records (see
/// [`Options::prefill_bytes_max`]), one fill at a time, each written and synced before the
/// flusher may write a batch over it.
async fn prefiller(inner: Rc<Inner>) {
    let max = inner.options.prefill_bytes_max;
    loop {
        let job = poll_fn(|cx| {
            let mut st = inner.state.borrow_mut();
            if st.closing || st.poisoned.is_some() {
                return Poll::Ready(None);
            }
            let st = &mut *st;
            if st.fill.seg != st.active {
                let (sealed, filled) = (st.fill.seg, st.fill.end);
                let waker = st.fill.waker.take();
                // The new segment was made ahead of need (this task makes the spare, so it is
                // finished by now): its zeros are there already.
                let ahead = match &st.spare {
                    Some(Spare {
                        seg,
                        file: Some(file),
                        end,
                    }) if *seg == st.active => Some((file.clone(), *end)),
                    _ => None,
                };
                st.fill = match ahead {
                    Some((file, end)) => {
                        st.spare = None;
                        st.files.entry(st.active).or_insert(file);
                        Fill::ahead(st.active, end, &inner.options)
                    }
                    None => Fill::new(st.active, 0, &inner.options),
                };
                st.fill.waker = waker;
                // The segment appends left is sealed: cut the zeros past its last record, or
                // they would stay on disk until compaction deletes the segment. (Its batches
                // still being written lie below that end; a crash before the cut is durable
                // leaves zeros, which recovery reads as the end.)
                if let (Some(file), Some(stat)) =
                    (st.files.get(&sealed), st.index.segs.get(&sealed))
                    && filled > stat.bytes
                {
                    return Poll::Ready(Some(Job::Cut {
                        seg: sealed,
                        file: file.clone(),
                        len: stat.bytes,
                    }));
                }
            }
            if let Some(file) = st.files.get(&st.active)
                && st.fill.fill_due(st.active_size)
            {
                // Past every record appended so far, so no batch written or queued before
                // this fill overlaps it; later ones that do wait for it (see `Fill::busy`).
                let from = st.fill.end.max(st.active_size.next_multiple_of(4096));
                let to = (from + st.fill.next).min(inner.options.segment_bytes_max);
                if to > from {
                    st.fill.busy = Some((from, to));
                    return Poll::Ready(Some(Job::Fill {
                        seg: st.active,
                        file: file.clone(),
                        from,
                        to,
                    }));
                }
            }
            if st.fill.spare_due(st.active_size) && st.spare.is_none() {
                st.fill.spare_tried = true;
                let seg = st.active + 1;
                if !st.files.contains_key(&seg) {
                    st.spare = Some(Spare {
                        seg,
                        file: None,
                        end: 0,
                    });
                    return Poll::Ready(Some(Job::Spare { seg }));
                }
            }
            st.fill.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let (seg, file, from, to) = match job {
            None => break,
            Some(Job::Spare { seg }) => {
                let len = max.min(inner.options.segment_bytes_max);
                let started = Instant::now();
                let result = make_spare(&inner, seg, len).await;
                let mut st = inner.state.borrow_mut();
                match result {
                    Ok(file) => {
                        tracing::debug!(
                            segment = seg,
                            bytes = len,
                            elapsed_us = started.elapsed().as_micros() as u64,
                            "pinion-storage: next segment made ahead of need"
                        );
                        st.spare = Some(Spare {
                            seg,
                            file: Some(Rc::new(file)),
                            end: len,
                        });
                        st.stats.segments_created += 1;
                        st.stats.spares_created += 1;
                    }
                    Err(error) => {
                        tracing::warn!(
                            segment = %segment_path(&inner.dir, seg).display(),
                            %error,
                            "pinion-storage: making the next segment ahead of need failed; the \
                             rollover creates it instead"
                        );
                        st.spare = None;
                        st.stats.spare_failures += 1;
                    }
                }
                // A rollover to `seg` may be waiting for it (see `write_batch`).
                if let Some(waker) = st.flusher.take() {
                    waker.wake();
                }
                continue;
            }
            Some(Job::Cut { seg, file, len }) => {
                if let Err(error) = file.truncate(len).await {
                    tracing::warn!(
                        segment = %segment_path(&inner.dir, seg).display(),
                        %error,
                        "pinion-storage: cutting the zeros after a sealed segment's records failed"
                    );
                }
                continue;
            }
            Some(Job::Fill {
                seg,
                file,
                from,
                to,
            }) => (seg, file, from, to),
        };
        let started = Instant::now();
        let result = write_zeros(&file, from, to).await;
        let mut st = inner.state.borrow_mut();
        st.fill.busy = None;
        match result {
            Ok(()) => {
                tracing::debug!(
                    segment = seg,
                    offset = from,
                    bytes = to - from,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "pinion-storage: zeros written ahead of the log"
                );
                st.fill.end = to;
                st.fill.last = to - from;
                st.fill.next = (st.fill.next * 2).min(max);
                st.stats.prefill_bytes += to - from;
            }
            Err(error) => {
                tracing::warn!(
                    segment = %segment_path(&inner.dir, seg).display(),
                    offset = from,
                    %error,
                    "pinion-storage: writing zeros ahead of the log failed; this segment's \
                     batches append instead (slower syncs)"
                );
                st.fill.failed = true;
                st.stats.prefill_failures += 1;
            }
        }
        if let Some(waker) = st.flusher.take() {
            waker.wake();
        }
    }
}

/// Creates segment `seg` ahead of need with `len` bytes of zeros, all durable (data, size and
/// name). On failure the file is removed again, so that the rollover can create it.
async fn make_spare(inner: &Inner, seg: u32, len: u64) -> io::Result<BufferedFile> {
    let path = segment_path(&inner.dir, seg);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .buffered_open(&path)
        .await?;
    let made = async {
        write_zeros(&file, 0, len).await?;
        inner.sync_dir().await?;
        io::Result::Ok(())
    }
    .await;
    match made {
        Ok(()) => {
            advise_random(&file);
            Ok(file)
        }
        Err(error) => {
            let _ = file.close().await;
            if let Err(remove) = std::fs::remove_file(&path) {
                tracing::error!(
                    segment = %path.display(),
                    error = %remove,
                    "pinion-storage: removing a segment that could not be made ahead of need \
                     failed; the rollover to it will fail"
                );
            }
            Err(error)
        }
    }
}

/// Work for the prefill task.
enum Job {
    /// Write zeros over `[from, to)` of the active segment `seg`.
    Fill {
        seg: u32,
        file: Rc<BufferedFile>,
        from: u64,
        to: u64,
    },
    /// Make segment `seg` (the one after the active one) ahead of need: see [`Spare`].
    Spare { seg: u32 },
    /// Truncate the sealed segment `seg` to `len`, the end of its records.
    Cut {
        seg: u32,
        file: Rc<BufferedFile>,
        len: u64,
    },
}

/// Writes zeros over `[from, to)` of `file` and makes them durable (blocks and file size), so
/// that later writes there are overwrites.
async fn write_zeros(file: &BufferedFile, from: u64, to: u64) -> io::Result<()> {
    const PIECE: u64 = 1 << 20;
    let mut pos = from;
    while pos < to {
        let len = (to - pos).min(PIECE);
        let written = file.write_at(vec![0; len as usize], pos).await?;
        if written == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "zero fill made no progress",
            ));
        }
        pos += written as u64;
    }
    file.fdatasync().await?;
    Ok(())
}

/// The group commit window (see [`Options::commit_window_max`]): after a sync that released
/// writers, waits until as many tasks are in `durable` as were there plus those released. It
/// stops early when a quarter of the window passes with no new task in `durable` (the writers
/// are not coming back: open-loop traffic, or writers that were done), and at the window's end.
async fn gather(inner: &Inner) {
    {
        let mut st = inner.state.borrow_mut();
        if st.waiters.len() >= st.gather_target {
            // Not gathering, or everyone is back already (a lone writer always is).
            st.gather_target = 0;
            return;
        }
    }
    let window = inner.options.commit_window_max;
    let quiet = window / 4;
    let started = Instant::now();
    loop {
        let seen = inner.state.borrow().waiters.len();
        let gathered = poll_fn(|cx| {
            let mut st = inner.state.borrow_mut();
            let half = inner.options.batch_bytes_max / 2;
            if st.waiters.len() >= st.gather_target
                || st.closing
                || st.poisoned.is_some()
                || st.pending_bytes >= half
            {
                return Poll::Ready(true);
            }
            st.flusher = Some(cx.waker().clone());
            Poll::Pending
        });
        let left = window.saturating_sub(started.elapsed());
        let done = futures_lite::future::or(gathered, async {
            glommio::timer::sleep(quiet.min(left)).await;
            false
        })
        .await;
        if done || started.elapsed() >= window || inner.state.borrow().waiters.len() <= seen {
            break;
        }
    }
    let mut st = inner.state.borrow_mut();
    st.gather_target = 0;
    st.stats.gathers += 1;
}

/// The background compactor.
async fn compactor(inner: Rc<Inner>) {
    loop {
        let closing = futures_lite::future::or(
            async {
                glommio::timer::sleep(inner.options.compact_interval).await;
                false
            },
            poll_fn(|cx| {
                let mut st = inner.state.borrow_mut();
                if st.closing {
                    return Poll::Ready(true);
                }
                st.compactor = Some(cx.waker().clone());
                Poll::Pending
            }),
        )
        .await;
        if closing {
            break;
        }
        loop {
            match compact_once(&inner).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(error) => {
                    if !inner.state.borrow().closing {
                        tracing::error!(
                            dir = %inner.dir.display(),
                            %error,
                            "pinion-storage: compaction failed"
                        );
                    }
                    break;
                }
            }
        }
    }
}

/// Compacts the sealed, durable segment with the most dead bytes, if one qualifies.
async fn compact_once(inner: &Inner) -> io::Result<bool> {
    let (victim, file, size, oldest) = {
        let mut st = inner.state.borrow_mut();
        if st.compacting || st.closing {
            return Ok(false);
        }
        let mut best: Option<(u32, u64)> = None;
        for (&seg, stat) in &st.index.segs {
            if seg >= st.active || stat.last_seq > st.durable_seq {
                continue;
            }
            let dead = stat.bytes - stat.live;
            let qualifies = stat.live == 0
                || (dead >= inner.options.compact_dead_bytes_min
                    && dead as f64 >= inner.options.compact_dead_ratio * stat.bytes as f64);
            if qualifies && best.is_none_or(|(_, most)| dead > most) {
                best = Some((seg, dead));
            }
        }
        let Some((victim, _)) = best else {
            return Ok(false);
        };
        let Some(file) = st.files.get(&victim).cloned() else {
            return Ok(false);
        };
        st.compacting = true;
        let oldest = st.index.segs.keys().next() == Some(&victim);
        (victim, file, st.index.segs[&victim].bytes, oldest)
    };
    // Cleared however the pass ends (also if its future is dropped half-way).
    let _guard = Compacting(inner);
    compact_segment(inner, victim, file, size, oldest).await?;
    Ok(true)
}

struct Compacting<'a>(&'a Inner);

impl Drop for Compacting<'_> {
    fn drop(&mut self) {
        self.0.state.borrow_mut().compacting = false;
    }
}

async fn compact_segment(
    inner: &Inner,
    victim: u32,
    file: Rc<BufferedFile>,
    size: u64,
    oldest: bool,
) -> io::Result<()> {
    let path = segment_path(&inner.dir, victim);
    let mut reader = SegReader::new(file.clone(), size, inner.options.read_chunk_bytes);
    let mut last_copy = 0;
    let mut since_yield = 0;
    loop {
        let (off, header, payload) = match reader.next().await? {
            Next::End => break,
            Next::Bad { off, reason } => return Err(corrupt(&path, off, reason, "Compacting")),
            Next::Record {
                off,
                header,
                payload,
            } => (off, header, payload),
        };
        let body = format::decode(header.kind, payload)
            .map_err(|reason| corrupt(&path, off, reason, "Compacting"))?;
        let loc = Loc::new(victim, off as u32, header.record_len(), body.is_tombstone());
        {
            let mut st = inner.state.borrow_mut();
            if !st.index.is_live(&body, loc) {
                continue;
            }
            if body.is_tombstone() && oldest {
                // Nothing older is left for the tombstone to hide.
                st.index.drop_tombstone(&body, loc);
                continue;
            }
        }
        let op = Op::Copy {
            kind: header.kind,
            payload,
            body,
            from: Some(loc),
        };
        let seq = match submit(inner, op) {
            Submitted::Done(result) => result?,
            Submitted::Wait(admit) => admit.await?,
        };
        if let Some(seq) = seq {
            last_copy = seq;
        }
        since_yield += 1;
        if since_yield == 64 {
            since_yield = 0;
            futures_lite::future::yield_now().await;
        }
    }
    if last_copy != 0 {
        durable(inner, last_copy).await?;
    }
    {
        let mut st = inner.state.borrow_mut();
        let live = st.index.segs.get(&victim).map_or(0, |s| s.live);
        if live != 0 {
            return Err(io::Error::other(format!(
                "pinion-storage: segment {victim} still has {live} live bytes after compaction \
                 (a bug); not deleting it"
            )));
        }
        st.index.segs.remove(&victim);
        st.files.remove(&victim);
        st.stats.compactions += 1;
    }
    drop(reader);
    file.remove().await?;
    Ok(())
}

impl LogStore {
    /// Reads the record at `loc` with blocking reads (for [`Store::load_directory`]).
    fn read_record_blocking(&self, loc: Loc) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let st = self.inner.state.borrow();
        let off = u64::from(loc.off);
        if let Some(batch) = st
            .batches
            .iter()
            .find(|b| b.seg == loc.seg && off >= b.start && off < b.start + b.buf.len() as u64)
        {
            let at = (off - batch.start) as usize;
            return Ok(batch.buf[at..at + loc.len()].to_vec());
        }
        let file = std::fs::File::open(segment_path(&self.inner.dir, loc.seg))?;
        let mut bytes = vec![0; loc.len()];
        file.read_exact_at(&mut bytes, off)?;
        check_record(bytes, loc, Kind::Actor, &self.inner)
    }

    fn entry(&self, slot: &crate::index::Slot, names: &[Rc<str>]) -> ActorEntry {
        ActorEntry {
            name: names[slot.name as usize].clone(),
            created_ms: slot.created_ms,
            destroyed_ms: (slot.destroyed_ms != u64::MAX).then_some(slot.destroyed_ms),
            has_state: slot.state.is_value(),
        }
    }
}

fn decode_actor(bytes: &[u8]) -> io::Result<ActorRecord> {
    match format::decode(Kind::Actor as u16, &bytes[HEADER_LEN..]) {
        Ok(Body::Actor(view)) => view
            .to_record()
            .map_err(|reason| io::Error::new(io::ErrorKind::InvalidData, reason)),
        Ok(_) => unreachable!("decoded as an actor record"),
        Err(reason) => Err(io::Error::new(io::ErrorKind::InvalidData, reason)),
    }
}

impl Store for LogStore {
    fn stats(&self) -> Option<Stats> {
        Some(LogStore::stats(self))
    }

    fn close(&self) -> StoreFuture<'_, io::Result<()>> {
        StoreFuture::boxed(self.shut())
    }

    fn load_directory(&mut self) -> Vec<ActorRecord> {
        let locs: Vec<Loc> = {
            let st = self.inner.state.borrow();
            st.index
                .actors
                .values()
                .filter(|s| !s.actor.is_none())
                .map(|s| s.actor)
                .collect()
        };
        let mut records = Vec::with_capacity(locs.len());
        for loc in locs {
            match self
                .read_record_blocking(loc)
                .and_then(|bytes| decode_actor(&bytes))
            {
                Ok(record) => records.push(record),
                Err(error) => {
                    tracing::error!(%error, "pinion-storage: cannot read an actor record")
                }
            }
        }
        records
    }

    fn actor(&self, id: u64) -> Option<ActorEntry> {
        let st = self.inner.state.borrow();
        let slot = st.index.actors.get(&id)?;
        if slot.actor.is_none() {
            return None;
        }
        Some(self.entry(slot, &st.index.names))
    }

    fn for_each_actor(&self, f: &mut dyn FnMut(u64, &ActorEntry)) {
        let st = self.inner.state.borrow();
        for (&id, slot) in &st.index.actors {
            if !slot.actor.is_none() {
                f(id, &self.entry(slot, &st.index.names));
            }
        }
    }

    fn read_actor(&self, id: u64) -> StoreFuture<'_, io::Result<Option<ActorRecord>>> {
        let loc = self
            .inner
            .state
            .borrow()
            .index
            .actors
            .get(&id)
            .map_or(Loc::NONE, |s| s.actor);
        if loc.is_none() {
            return StoreFuture::ready(Ok(None));
        }
        StoreFuture::boxed(async move {
            let bytes = self.read_record(loc, Kind::Actor).await?;
            decode_actor(&bytes).map(Some)
        })
    }

    fn put_actor<'a>(&'a self, record: &'a ActorRecord) -> StoreFuture<'a, io::Result<Seq>> {
        self.write(Op::Actor(record))
    }

    fn read_state(&self, id: u64) -> StoreFuture<'_, io::Result<Option<Vec<u8>>>> {
        let loc = self
            .inner
            .state
            .borrow()
            .index
            .actors
            .get(&id)
            .map_or(Loc::NONE, |s| s.state);
        if !loc.is_value() {
            return StoreFuture::ready(Ok(None));
        }
        StoreFuture::boxed(async move {
            let mut bytes = self.read_record(loc, Kind::State).await?;
            bytes.drain(..HEADER_LEN + 8);
            Ok(Some(bytes))
        })
    }

    fn save_state<'a>(&'a self, id: u64, snapshot: &'a [u8]) -> StoreFuture<'a, io::Result<Seq>> {
        self.write(Op::State { id, snapshot })
    }

    fn delete_state(&self, id: u64) -> StoreFuture<'_, io::Result<Seq>> {
        self.write(Op::DeleteState { id })
    }

    fn put_schedule<'a>(
        &'a self,
        actor: u64,
        schedule: u64,
        due_ms: u64,
        payload: &'a [u8],
    ) -> StoreFuture<'a, io::Result<Seq>> {
        self.write(Op::Schedule {
            actor,
            schedule,
            due_ms,
            payload,
        })
    }

    fn delete_schedule(&self, actor: u64, schedule: u64) -> StoreFuture<'_, io::Result<Seq>> {
        self.write(Op::DeleteSchedule { actor, schedule })
    }

    fn due_schedules(&self, now_ms: u64, limit: usize) -> Vec<ScheduleEntry> {
        let st = self.inner.state.borrow();
        st.index
            .due
            .iter()
            .take_while(|&&(due_ms, _, _)| due_ms <= now_ms)
            .take(limit)
            .map(|&(due_ms, actor, schedule)| ScheduleEntry {
                due_ms,
                actor,
                schedule,
            })
            .collect()
    }

    fn next_due_ms(&self) -> Option<u64> {
        self.inner
            .state
            .borrow()
            .index
            .due
            .first()
            .map(|&(due, _, _)| due)
    }

    fn schedule(&self, actor: u64, schedule: u64) -> Option<ScheduleEntry> {
        let st = self.inner.state.borrow();
        st.index
            .schedules
            .get(&(actor, schedule))
            .filter(|s| s.loc.is_value())
            .map(|s| ScheduleEntry {
                due_ms: s.due_ms,
                actor,
                schedule,
            })
    }

    fn schedules_of(&self, actor: u64) -> Vec<ScheduleEntry> {
        let st = self.inner.state.borrow();
        st.index
            .schedules
            .range((actor, 0)..=(actor, u64::MAX))
            .filter(|(_, s)| s.loc.is_value())
            .map(|(&(actor, schedule), s)| ScheduleEntry {
                due_ms: s.due_ms,
                actor,
                schedule,
            })
            .collect()
    }

    fn read_schedule(
        &self,
        actor: u64,
        schedule: u64,
    ) -> StoreFuture<'_, io::Result<Option<Vec<u8>>>> {
        let loc = self
            .inner
            .state
            .borrow()
            .index
            .schedules
            .get(&(actor, schedule))
            .map_or(Loc::NONE, |s| s.loc);
        if !loc.is_value() {
            return StoreFuture::ready(Ok(None));
        }
        StoreFuture::boxed(async move {
            let mut bytes = self.read_record(loc, Kind::Schedule).await?;
            bytes.drain(..HEADER_LEN + 24);
            Ok(Some(bytes))
        })
    }

    fn put_meta<'a>(
        &'a self,
        actor: u64,
        key: &'a [u8],
        value: &'a [u8],
    ) -> StoreFuture<'a, io::Result<Seq>> {
        self.write(Op::Meta { actor, key, value })
    }

    fn delete_meta<'a>(&'a self, actor: u64, key: &'a [u8]) -> StoreFuture<'a, io::Result<Seq>> {
        self.write(Op::DeleteMeta { actor, key })
    }

    fn meta_keys(&self, actor: u64) -> Vec<Vec<u8>> {
        let st = self.inner.state.borrow();
        st.index.meta.get(&actor).map_or_else(Vec::new, |keys| {
            keys.iter()
                .filter(|(_, loc)| loc.is_value())
                .map(|(key, _)| key.to_vec())
                .collect()
        })
    }

    fn read_meta<'a>(
        &'a self,
        actor: u64,
        key: &'a [u8],
    ) -> StoreFuture<'a, io::Result<Option<Vec<u8>>>> {
        let loc = self
            .inner
            .state
            .borrow()
            .index
            .meta
            .get(&actor)
            .and_then(|keys| keys.get(key))
            .copied()
            .unwrap_or(Loc::NONE);
        if !loc.is_value() {
            return StoreFuture::ready(Ok(None));
        }
        StoreFuture::boxed(async move {
            let mut bytes = self.read_record(loc, Kind::Meta).await?;
            bytes.drain(..HEADER_LEN + 12 + key.len());
            Ok(Some(bytes))
        })
    }

    fn durable(&self, seq: Seq) -> StoreFuture<'_, io::Result<()>> {
        durable(&self.inner, seq)
    }

    fn last_seq(&self) -> Seq {
        self.inner.state.borrow().next_seq - 1
    }

    fn durable_seq(&self) -> Seq {
        self.inner.state.borrow().durable_seq
    }
}
