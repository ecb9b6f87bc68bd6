//! `LogStore` against real files in temporary directories, inside glommio executors.

mod common;

use common::segments;

use std::cell::Cell;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use pinion_storage::{
    ActorRecord, LayoutError, LogStore, Options, PREFILL_FIRST, ScheduleEntry, Store, reshard,
    shard_dir,
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), name)
    }

    fn new_in(base: &Path, name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = base.join(format!(
            "pinion-storage-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `f` on a fresh glommio executor thread and waits for it.
fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(f)
        .expect("executor")
        .join()
        .expect("test body panicked");
}

fn quiet() -> Options {
    Options {
        compaction: false,
        ..Options::default()
    }
}

/// [`quiet`] without the zeros written ahead of the records: a segment file then ends at its
/// last record, for tests that cut and measure files.
fn exact() -> Options {
    Options {
        prefill_bytes_max: 0,
        ..quiet()
    }
}

async fn open(data_dir: &Path, options: Options) -> LogStore {
    // Other tests of this binary spawn child processes: between its fork and its exec, a child
    // holds a copy of every descriptor, `LOCK`'s too (close-on-exec closes it only at the exec),
    // so a store closed a moment ago can still look locked. Retry for that window only.
    let mut attempts = 0;
    loop {
        match LogStore::open(data_dir, 0, 1, options.clone()).await {
            Ok(store) => return store,
            Err(error) if error.kind() == std::io::ErrorKind::ResourceBusy && attempts < 50 => {
                attempts += 1;
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(error) => panic!("open store: {error:?}"),
        }
    }
}

fn actor(id: u64, name: &str, key: &[&str]) -> ActorRecord {
    ActorRecord {
        id,
        name: name.into(),
        key: key.iter().map(|k| k.to_string()).collect(),
        created_ms: 1_700_000_000_000 + id,
        destroyed_ms: None,
    }
}

fn state_of(id: u64, version: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(16));
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&version.to_le_bytes());
    while v.len() < len {
        v.push((v.len() as u64 ^ id ^ version) as u8);
    }
    v
}

fn version_of(state: &[u8]) -> u64 {
    u64::from_le_bytes(state[8..16].try_into().unwrap())
}

/// Lamping–Veach jump consistent hash, as the runtime's placement uses.
fn jump(mut key: u64, buckets: usize) -> usize {
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = (((b + 1) as f64) * ((1u64 << 31) as f64 / (((key >> 33) + 1) as f64))) as i64;
    }
    b as usize
}

fn mix(x: u64) -> u64 {
    let mut x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Polls every future, last first, until all are done (so an out-of-order poll cannot change
/// the order writes are applied in).
struct JoinAllReversed<F: Future + Unpin> {
    futures: Vec<Option<F>>,
    outputs: Vec<Option<F::Output>>,
}

impl<F: Future + Unpin> Future for JoinAllReversed<F>
where
    F::Output: Unpin,
{
    type Output = Vec<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<F::Output>> {
        let this = self.get_mut();
        let mut pending = false;
        for i in (0..this.futures.len()).rev() {
            if let Some(future) = &mut this.futures[i] {
                match Pin::new(future).poll(cx) {
                    Poll::Ready(output) => {
                        this.outputs[i] = Some(output);
                        this.futures[i] = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        Poll::Ready(this.outputs.iter_mut().map(|o| o.take().unwrap()).collect())
    }
}

fn join_all_reversed<F: Future + Unpin>(futures: Vec<F>) -> JoinAllReversed<F>
where
    F::Output: Unpin,
{
    let n = futures.len();
    JoinAllReversed {
        futures: futures.into_iter().map(Some).collect(),
        outputs: (0..n).map(|_| None).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Round trip

#[test]
fn round_trip_everything_survives_reopen() {
    let tmp = TempDir::new("round-trip");
    let dir = tmp.path().to_owned();
    run(move || async move {
        let store = open(&dir, quiet()).await;
        let counter = actor(1, "counter", &["a", "b/c"]);
        let chat = actor(2, "chat", &[]);
        let gone = actor(3, "counter", &["gone"]);
        for record in [&counter, &chat, &gone] {
            store.put_actor(record).await.unwrap();
        }
        store.save_state(1, b"one-v1").await.unwrap();
        store.save_state(2, b"two-v1").await.unwrap();
        store.save_state(1, b"one-v2").await.unwrap();
        store.save_state(3, b"three").await.unwrap();
        // Reads see writes before they are durable.
        assert_eq!(
            store.read_state(1).await.unwrap().as_deref(),
            Some(&b"one-v2"[..])
        );
        let destroyed = ActorRecord {
            destroyed_ms: Some(1_800_000_000_000),
            ..gone.clone()
        };
        store.put_actor(&destroyed).await.unwrap();
        store.delete_state(3).await.unwrap();
        store.put_schedule(1, 10, 5_000, b"alarm-a").await.unwrap();
        store.put_schedule(1, 11, 3_000, b"alarm-b").await.unwrap();
        store.put_schedule(2, 10, 4_000, b"alarm-c").await.unwrap();
        store.put_schedule(1, 10, 6_000, b"alarm-a2").await.unwrap();
        store.delete_schedule(2, 10).await.unwrap();
        store.put_meta(1, b"region", b"eu").await.unwrap();
        store.put_meta(1, b"tier", b"gold").await.unwrap();
        store.put_meta(2, b"x", b"y").await.unwrap();
        store.delete_meta(2, b"x").await.unwrap();
        store.put_meta(1, b"tier", b"platinum").await.unwrap();
        let empty = actor(4, "empty", &[""]);
        store.put_actor(&empty).await.unwrap();
        store.save_state(4, b"").await.unwrap();
        let last = store.last_seq();
        store.flush().await.unwrap();
        assert_eq!(store.durable_seq(), last);
        store.close().await.unwrap();

        for round in 0..2 {
            let mut store = open(&dir, quiet()).await;
            let recovered = store.recovered().clone();
            assert_eq!(recovered.torn_tail, None, "round {round}");
            assert_eq!(recovered.actors, 4);
            assert_eq!(recovered.live_actors, 3);
            assert_eq!(recovered.states, 3);
            assert_eq!(recovered.schedules, 2);
            assert_eq!(recovered.meta, 2);
            assert_eq!(recovered.last_seq, last);
            assert_eq!(store.read_actor(1).await.unwrap(), Some(counter.clone()));
            assert_eq!(store.read_actor(3).await.unwrap(), Some(destroyed.clone()));
            assert_eq!(store.read_actor(99).await.unwrap(), None);
            let entry = store.actor(3).unwrap();
            assert_eq!(&*entry.name, "counter");
            assert_eq!(entry.destroyed_ms, destroyed.destroyed_ms);
            assert!(!entry.has_state);
            assert!(store.actor(1).unwrap().has_state);
            let mut seen = Vec::new();
            store.for_each_actor(&mut |id, _| seen.push(id));
            seen.sort();
            assert_eq!(seen, vec![1, 2, 3, 4]);
            let mut directory = store.load_directory();
            directory.sort_by_key(|r| r.id);
            assert_eq!(
                directory,
                vec![
                    counter.clone(),
                    chat.clone(),
                    destroyed.clone(),
                    empty.clone()
                ]
            );
            assert_eq!(
                store.read_state(1).await.unwrap().as_deref(),
                Some(&b"one-v2"[..])
            );
            assert_eq!(
                store.read_state(2).await.unwrap().as_deref(),
                Some(&b"two-v1"[..])
            );
            assert_eq!(store.read_state(3).await.unwrap(), None);
            assert_eq!(
                store.read_state(4).await.unwrap().as_deref(),
                Some(&b""[..])
            );
            assert_eq!(store.next_due_ms(), Some(3_000));
            assert_eq!(
                store.due_schedules(u64::MAX, 10),
                vec![
                    ScheduleEntry {
                        due_ms: 3_000,
                        actor: 1,
                        schedule: 11
                    },
                    ScheduleEntry {
                        due_ms: 6_000,
                        actor: 1,
                        schedule: 10
                    },
                ]
            );
            assert_eq!(store.due_schedules(3_000, 10).len(), 1);
            assert!(store.schedules_of(2).is_empty());
            assert_eq!(
                store.read_schedule(1, 10).await.unwrap().as_deref(),
                Some(&b"alarm-a2"[..])
            );
            assert_eq!(store.read_schedule(2, 10).await.unwrap(), None);
            assert_eq!(
                store.meta_keys(1),
                vec![b"region".to_vec(), b"tier".to_vec()]
            );
            assert!(store.meta_keys(2).is_empty());
            assert_eq!(
                store.read_meta(1, b"tier").await.unwrap().as_deref(),
                Some(&b"platinum"[..])
            );
            assert_eq!(store.read_meta(2, b"x").await.unwrap(), None);
            store.close().await.unwrap();
        }
    });
}

#[test]
fn a_shard_directory_is_opened_once() {
    let tmp = TempDir::new("lock");
    let dir = tmp.path().to_owned();
    run(move || async move {
        let store = open(&dir, quiet()).await;
        let error = LogStore::open(&dir, 0, 1, quiet())
            .await
            .err()
            .expect("locked");
        assert!(error.to_string().contains("cannot lock"), "{error}");
        store.close().await.unwrap();
        open(&dir, quiet()).await.close().await.unwrap();
    });
}

#[test]
fn oversized_records_are_refused() {
    let tmp = TempDir::new("oversized");
    let dir = tmp.path().to_owned();
    run(move || async move {
        let store = open(&dir, quiet()).await;
        let big = vec![0u8; pinion_storage::PAYLOAD_BYTES_MAX];
        let error = store.save_state(1, &big).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        // Just under the limit is fine, and gets a segment to itself.
        let fits = vec![7u8; pinion_storage::PAYLOAD_BYTES_MAX - 8];
        let seq = store.save_state(1, &fits).await.unwrap();
        store.durable(seq).await.unwrap();
        store.close().await.unwrap();
        let store = open(&dir, quiet()).await;
        assert_eq!(store.read_state(1).await.unwrap().unwrap(), fits);
        store.close().await.unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Group commit and back-pressure

#[test]
fn group_commit_shares_fdatasyncs() {
    const WRITERS: u64 = 1000;
    let tmp = TempDir::new("group-commit");
    let dir = tmp.path().to_owned();
    run(move || async move {
        let store = Rc::new(open(&dir, quiet()).await);
        let tasks: Vec<_> = (0..WRITERS)
            .map(|id| {
                let store = store.clone();
                glommio::spawn_local(async move {
                    let state = state_of(id, 1, 100);
                    let seq = store.save_state(id, &state).await.unwrap();
                    store.durable(seq).await.unwrap();
                    assert!(store.durable_seq() >= seq);
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        let stats = store.stats();
        println!("{WRITERS} durable writes: {stats:?}");
        assert!(
            stats.syncs < WRITERS / 4,
            "{} fdatasyncs for {WRITERS} writes",
            stats.syncs
        );
        Rc::try_unwrap(store).ok().unwrap().close().await.unwrap();
        let store = open(&dir, quiet()).await;
        for id in 0..WRITERS {
            assert_eq!(
                store.read_state(id).await.unwrap().unwrap(),
                state_of(id, 1, 100)
            );
        }
        store.close().await.unwrap();
    });
}

/// Whether the filesystem under `dir` takes `preadv2(RWF_NOWAIT)` reads (ext4 and xfs do; tmpfs
/// refuses them).
fn takes_nowait_reads(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let path = dir.join("nowait-probe");
    std::fs::write(&path, [0u8; 64]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let mut byte = [0u8; 1];
    let iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: `iov` describes `byte`, which outlives the call; the descriptor is open.
    let read = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, 0, libc::RWF_NOWAIT) };
    std::fs::remove_file(&path).unwrap();
    read == 1
}

/// Writes 64 durable states of 3,000 bytes to a store under `base`, then checks which reads
/// were served from the page cache and which went through the ring.
fn check_record_reads(base: &Path, nowait: bool) {
    let tmp = TempDir::new_in(base, "cached-reads");
    let dir = tmp.path().to_owned();
    run(move || async move {
        let store = open(&dir, exact()).await;
        for id in 0..64 {
            let seq = store.save_state(id, &state_of(id, 1, 3000)).await.unwrap();
            store.durable(seq).await.unwrap();
        }
        let reads = |store: &LogStore| (store.stats().cached_reads, store.stats().ring_reads);
        let read = async |id: u64| {
            assert_eq!(
                store.read_state(id).await.unwrap().unwrap(),
                state_of(id, 1, 3000)
            );
        };
        assert_eq!(reads(&store), (0, 0));
        // Just written: in the page cache.
        read(7).await;
        assert_eq!(reads(&store), if nowait { (1, 0) } else { (0, 1) });
        // Out of the page cache: through io_uring, and cached again after it.
        evict_from_page_cache(store.dir());
        read(40).await;
        assert_eq!(reads(&store), if nowait { (1, 1) } else { (0, 2) });
        read(40).await;
        assert_eq!(reads(&store), if nowait { (2, 1) } else { (0, 3) });
        store.close().await.unwrap();
    });
}

#[test]
fn cached_records_are_read_without_the_ring_and_evicted_ones_through_it() {
    let base = std::env::temp_dir();
    check_record_reads(&base, takes_nowait_reads(&base));
}

#[test]
fn where_the_filesystem_refuses_nowait_reads_every_read_goes_through_the_ring() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() || takes_nowait_reads(shm) {
        println!("no filesystem that refuses RWF_NOWAIT reads at /dev/shm; nothing to check");
        return;
    }
    check_record_reads(shm, false);
}

#[test]
fn group_commit_window_gathers_the_writers_a_sync_released() {
    let tmp = TempDir::new("commit-window");
    let dir = tmp.path().to_owned();
    run(move || async move {
        // A window far longer than the test may run: any write that waited for its end would
        // hit the timeouts below.
        let options = Options {
            commit_window_max: Duration::from_secs(60),
            ..quiet()
        };
        let store = Rc::new(open(&dir, options).await);
        let within = |limit_s| Duration::from_secs(limit_s);

        // One writer: every sync releases it and it is all there is, so it never waits.
        for round in 0..20u64 {
            let saved = async {
                let seq = store.save_state(1, &state_of(1, round, 64)).await.unwrap();
                store.durable(seq).await.unwrap();
                Ok(())
            };
            assert!(
                glommio::timer::timeout(within(10), saved).await.is_ok(),
                "a lone writer waited for the commit window (round {round})"
            );
        }
        assert_eq!(
            store.stats().gathers,
            0,
            "a lone writer waited for the window"
        );

        // Eight writers in a closed loop that come back at different times (as clients across a
        // network do): once a sync released them, the flusher waits until all eight wrote again,
        // so each round costs one sync (the window never runs out). Without the window, the
        // first one back would start a sync of its own.
        let before = store.stats().syncs;
        let rounds = 30u64;
        let writers: Vec<_> = (0..8u64)
            .map(|id| {
                let store = store.clone();
                glommio::spawn_local(async move {
                    for round in 0..rounds {
                        let seq = store
                            .save_state(10 + id, &state_of(10 + id, round, 64))
                            .await
                            .unwrap();
                        store.durable(seq).await.unwrap();
                        glommio::timer::sleep(Duration::from_micros(300 * id)).await;
                    }
                })
            })
            .collect();
        let all = async {
            for writer in writers {
                writer.await;
            }
            Ok(())
        };
        assert!(
            glommio::timer::timeout(within(30), all).await.is_ok(),
            "closed-loop writers stalled"
        );
        let syncs = store.stats().syncs - before;
        assert!(
            syncs <= rounds + 2,
            "{syncs} syncs for {rounds} rounds of 8 writers: the window did not gather them"
        );
        for id in 0..8u64 {
            let got = store.read_state(10 + id).await.unwrap().unwrap();
            assert_eq!(version_of(&got), rounds - 1);
        }

        let store = Rc::try_unwrap(store).ok().expect("writers are done");
        store.close().await.unwrap();

        // A released writer that does not come back costs at most the window: the other one
        // goes on.
        let options = Options {
            commit_window_max: Duration::from_millis(200),
            ..quiet()
        };
        let store = Rc::new(open(&dir, options).await);
        let once = {
            let store = store.clone();
            glommio::spawn_local(async move {
                let seq = store.save_state(30, b"once").await.unwrap();
                store.durable(seq).await.unwrap();
            })
        };
        let on = {
            let store = store.clone();
            glommio::spawn_local(async move {
                for round in 0..5u64 {
                    let seq = store
                        .save_state(31, &state_of(31, round, 64))
                        .await
                        .unwrap();
                    store.durable(seq).await.unwrap();
                }
            })
        };
        let both = async {
            once.await;
            on.await;
            Ok(())
        };
        assert!(
            glommio::timer::timeout(within(10), both).await.is_ok(),
            "a writer stalled after another stopped"
        );
        assert_eq!(version_of(&store.read_state(31).await.unwrap().unwrap()), 4);
        assert!(store.stats().gathers > 0, "{:?}", store.stats());
    });
}

#[test]
fn back_pressure_bounds_batches_and_keeps_call_order() {
    let tmp = TempDir::new("back-pressure");
    let dir = tmp.path().to_owned();
    run(move || async move {
        let options = Options {
            batch_bytes_max: 4096,
            waiters_max: 8,
            ..quiet()
        };
        let store = open(&dir, options).await;
        // 400 writes of ~1 KiB to 4 actors, created in call order and polled last-first: with a
        // 4 KiB batch most must wait, and they must still apply in call order.
        let states: Vec<Vec<u8>> = (0..400u64).map(|i| state_of(i % 4, i, 1000)).collect();
        let futures: Vec<_> = states
            .iter()
            .enumerate()
            .map(|(i, s)| store.save_state(i as u64 % 4, s))
            .collect();
        let seqs: Vec<u64> = join_all_reversed(futures)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "applied out of order");
        let stats = store.stats();
        assert!(stats.admission_waits > 300, "{stats:?}");
        for id in 0..4u64 {
            let got = store.read_state(id).await.unwrap().unwrap();
            assert_eq!(version_of(&got), 396 + id);
        }
        // Many tasks waiting on durability: the waiter bound holds appends back, nothing stalls.
        let store = Rc::new(store);
        let tasks: Vec<_> = (0..100u64)
            .map(|i| {
                let store = store.clone();
                glommio::spawn_local(async move {
                    let seq = store.save_state(100 + i, b"w").await.unwrap();
                    store.durable(seq).await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        Rc::try_unwrap(store).ok().unwrap().close().await.unwrap();
        let store = open(&dir, quiet()).await;
        for id in 0..4u64 {
            let got = store.read_state(id).await.unwrap().unwrap();
            assert_eq!(version_of(&got), 396 + id);
        }
        assert_eq!(store.recovered().states, 104);
        store.close().await.unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Torn tails and corruption

/// The 20 records written first are there; record 99 (the last) is there iff `last_present`.
async fn check_torn(store: &LogStore, last_present: bool) {
    for i in 0..20u64 {
        assert_eq!(
            store.read_state(i).await.unwrap().unwrap(),
            state_of(i, 1, 50)
        );
    }
    let last = store.read_state(99).await.unwrap();
    assert_eq!(last.is_some(), last_present);
}

#[test]
fn torn_tail_at_every_offset_of_the_last_record() {
    let tmp = TempDir::new("torn");
    let data_dir = tmp.path().to_owned();
    run(move || async move {
        let shard = shard_dir(&data_dir, 0, 1);
        // 20 records, then the size before and after a 21st.
        let store = open(&data_dir, exact()).await;
        for i in 0..20u64 {
            store.save_state(i, &state_of(i, 1, 50)).await.unwrap();
        }
        store.close().await.unwrap();
        let file = segments(&shard).pop().unwrap();
        let before = std::fs::metadata(&file).unwrap().len();
        let store = open(&data_dir, exact()).await;
        store.save_state(99, &state_of(99, 1, 61)).await.unwrap();
        store.close().await.unwrap();
        let full = std::fs::read(&file).unwrap();
        let record_len = 24 + 8 + 61; // unpadded
        assert_eq!(full.len() as u64, before + 96);

        for cut in before..full.len() as u64 {
            std::fs::write(&file, &full[..cut as usize]).unwrap();
            let store = open(&data_dir, exact()).await;
            let complete = cut >= before + record_len;
            let torn = store.recovered().torn_tail.clone();
            assert_eq!(
                torn.is_some(),
                cut > before && !complete,
                "cut at {cut}: {torn:?}"
            );
            check_torn(&store, complete).await;
            // New writes go after the good records, and the next open is clean.
            let seq = store.save_state(1000, b"after").await.unwrap();
            store.durable(seq).await.unwrap();
            store.close().await.unwrap();
            let store = open(&data_dir, exact()).await;
            assert_eq!(store.recovered().torn_tail, None, "cut at {cut}");
            check_torn(&store, complete).await;
            assert_eq!(
                store.read_state(1000).await.unwrap().as_deref(),
                Some(&b"after"[..])
            );
            store.close().await.unwrap();
        }

        // With zeros written ahead of the records (`Options::prefill_bytes_max`), a write cut
        // short leaves the file's length alone: its first `cut` bytes, then zeros. Zeros right
        // after a complete record are the end of the log, kept for the next writes; a partial
        // record before them is a torn tail, cut off with them.
        let zeros = 64 * 1024;
        for cut in before..=full.len() as u64 {
            let mut crashed = full[..cut as usize].to_vec();
            crashed.resize(full.len() + zeros, 0);
            std::fs::write(&file, &crashed).unwrap();
            let store = open(&data_dir, quiet()).await;
            let complete = cut >= before + record_len;
            let torn = store.recovered().torn_tail.clone();
            assert_eq!(
                torn.is_some(),
                cut > before && !complete,
                "zeros after cut {cut}: {torn:?}"
            );
            let kept = if complete {
                full.len()
            } else {
                before as usize
            };
            assert_eq!(store.stats().disk_bytes, kept as u64, "cut at {cut}");
            match torn {
                Some(torn) => {
                    assert_eq!(torn.offset, before, "cut at {cut}");
                    assert_eq!(torn.dropped_bytes as usize, crashed.len() - before as usize);
                    assert_eq!(std::fs::metadata(&file).unwrap().len(), before);
                }
                None => assert_eq!(
                    std::fs::metadata(&file).unwrap().len() as usize,
                    crashed.len(),
                    "a zero tail stays for the next writes (cut at {cut})"
                ),
            }
            check_torn(&store, complete).await;
            let seq = store.save_state(1000, b"after").await.unwrap();
            store.durable(seq).await.unwrap();
            store.close().await.unwrap();
            // The new record went where the good ones end, over the zeros.
            let bytes = std::fs::read(&file).unwrap();
            assert_eq!(&bytes[kept + 4..kept + 8], b"PNRC", "cut at {cut}");
            let store = open(&data_dir, quiet()).await;
            assert_eq!(store.recovered().torn_tail, None, "cut at {cut}");
            check_torn(&store, complete).await;
            assert_eq!(
                store.read_state(1000).await.unwrap().as_deref(),
                Some(&b"after"[..])
            );
            store.close().await.unwrap();
        }

        // A flipped byte anywhere in the last record drops it (and only it).
        for at in (before..before + record_len).step_by(7) {
            let mut bad = full.clone();
            bad[at as usize] ^= 0x40;
            std::fs::write(&file, &bad).unwrap();
            let store = open(&data_dir, exact()).await;
            let torn = store.recovered().torn_tail.clone().expect("torn tail");
            assert_eq!(torn.offset, before, "flip at {at}");
            check_torn(&store, false).await;
            store.close().await.unwrap();
            assert_eq!(std::fs::metadata(&file).unwrap().len(), before);
        }
    });
}

/// Polls `cond` every millisecond for up to 10 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn batches_overwrite_the_zeros_written_ahead_and_recovery_ends_the_log_at_them() {
    let tmp = TempDir::new("prefill");
    let data_dir = tmp.path().to_owned();
    run(move || async move {
        let shard = shard_dir(&data_dir, 0, 1);
        let options = Options {
            prefill_bytes_max: 1 << 20,
            ..quiet()
        };
        let store = open(&data_dir, options.clone()).await;
        let seq = store.save_state(0, &state_of(0, 1, 100)).await.unwrap();
        store.durable(seq).await.unwrap();
        eventually("the first fill", || store.stats().prefill_bytes > 0).await;
        let file = segments(&shard).pop().unwrap();
        let len = std::fs::metadata(&file).unwrap().len();
        let first = store.stats().prefill_bytes;
        assert_eq!(first, PREFILL_FIRST, "the first fill of a segment");
        assert!(len > store.stats().disk_bytes + PREFILL_FIRST / 2, "{len}");

        // Well within the zeros: every batch is an overwrite, the file does not grow.
        for i in 1..200u64 {
            let seq = store.save_state(i, &state_of(i, 1, 100)).await.unwrap();
            store.durable(seq).await.unwrap();
        }
        let records = store.stats().disk_bytes;
        assert!(records < PREFILL_FIRST / 2, "{records}");
        assert_eq!(std::fs::metadata(&file).unwrap().len(), len);
        assert_eq!(store.stats().prefill_bytes, first, "no second fill yet");
        store.close().await.unwrap();
        let bytes = std::fs::read(&file).unwrap();
        assert!(bytes[records as usize..].iter().all(|&b| b == 0));

        // Reopened: the zeros end the log (no torn tail) and stay for the next writes.
        let store = open(&data_dir, options.clone()).await;
        assert_eq!(store.recovered().torn_tail, None);
        assert_eq!(store.recovered().states, 200);
        assert_eq!(store.stats().disk_bytes, records);
        for i in 0..200u64 {
            assert_eq!(
                store.read_state(i).await.unwrap().unwrap(),
                state_of(i, 1, 100)
            );
        }
        assert_eq!(std::fs::metadata(&file).unwrap().len(), len);

        // Past half of the zeros, the next fill keeps ahead of the records (a reopened store
        // starts again with the first fill's size).
        let mut i = 200u64;
        while store.stats().disk_bytes < len - PREFILL_FIRST / 4 {
            let seq = store.save_state(i, &state_of(i, 1, 100)).await.unwrap();
            store.durable(seq).await.unwrap();
            i += 1;
        }
        eventually("the second fill", || store.stats().prefill_bytes > 0).await;
        assert_eq!(store.stats().prefill_bytes, PREFILL_FIRST);
        let grown = std::fs::metadata(&file).unwrap().len();
        assert!(grown >= len + PREFILL_FIRST, "{grown}");
        store.close().await.unwrap();
        let store = open(&data_dir, options).await;
        assert_eq!(store.recovered().torn_tail, None);
        assert_eq!(store.recovered().states, i as usize);
        assert_eq!(
            store.read_state(i - 1).await.unwrap().unwrap(),
            state_of(i - 1, 1, 100)
        );
        store.close().await.unwrap();
    });
}

#[test]
fn a_sealed_segment_loses_its_zeros_and_the_active_one_keeps_them() {
    let tmp = TempDir::new("prefill-roll");
    let data_dir = tmp.path().to_owned();
    run(move || async move {
        let shard = shard_dir(&data_dir, 0, 1);
        let options = Options {
            segment_bytes_max: 1 << 20,
            prefill_bytes_max: 1 << 20,
            ..quiet()
        };
        let store = open(&data_dir, options.clone()).await;
        let mut i = 0u64;
        write_until(&store, &mut i, |s| s.segments().len() >= 3).await;
        assert!(store.stats().prefill_bytes > 0);
        let sealed_end = |store: &LogStore| {
            store
                .segments()
                .into_iter()
                .filter(|s| !s.active)
                .map(|s| (s.number, s.bytes))
                .collect::<Vec<_>>()
        };
        let files: Vec<PathBuf> = store
            .segments()
            .iter()
            .map(|s| segment_file(&shard, s.number))
            .collect();
        eventually("the sealed segments cut at their records", || {
            sealed_end(&store)
                .iter()
                .zip(&files)
                .all(|(&(_, bytes), file)| std::fs::metadata(file).unwrap().len() == bytes)
        })
        .await;
        eventually("zeros ahead of the active segment's records", || {
            let active = store.segments().into_iter().find(|s| s.active).unwrap();
            std::fs::metadata(files.last().unwrap()).unwrap().len() > active.bytes
        })
        .await;
        store.close().await.unwrap();

        reopens_clean_with(&data_dir, options, i).await;
    });
}

fn segment_file(shard: &Path, number: u32) -> PathBuf {
    shard.join(format!("seg-{number:08}.log"))
}

/// The active segment's number and bytes of records; (0, 0) before the first record.
fn active_segment(store: &LogStore) -> (u32, u64) {
    let active = store.segments().into_iter().find(|s| s.active);
    active.map_or((0, 0), |s| (s.number, s.bytes))
}

/// Opens the store again and checks it recovers without a torn tail, with the 1,000-byte states
/// of actors `0..states` (the first, middle and last read back).
async fn reopens_clean_with(data_dir: &Path, options: Options, states: u64) {
    let store = open(data_dir, options).await;
    assert_eq!(store.recovered().torn_tail, None);
    assert_eq!(store.recovered().states, states as usize);
    for id in [0, states / 2, states - 1] {
        assert_eq!(
            store.read_state(id).await.unwrap().unwrap(),
            state_of(id, 1, 1000)
        );
    }
    store.close().await.unwrap();
}

/// 1 MiB segments with fills (and spares) of [`PREFILL_FIRST`], for the spare tests.
fn spare_options() -> Options {
    Options {
        segment_bytes_max: 1 << 20,
        prefill_bytes_max: PREFILL_FIRST,
        ..quiet()
    }
}

/// Durable writes of 1,000-byte states from `*i` on, until `done`.
async fn write_until(store: &LogStore, i: &mut u64, mut done: impl FnMut(&LogStore) -> bool) {
    while !done(store) {
        let seq = store.save_state(*i, &state_of(*i, 1, 1000)).await.unwrap();
        store.durable(seq).await.unwrap();
        *i += 1;
        if i.is_multiple_of(64) {
            // Give the prefill task turns, as a server's idle moments do.
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[test]
fn the_next_segment_is_made_ahead_and_the_rollover_writes_over_its_zeros() {
    let tmp = TempDir::new("spare");
    let data_dir = tmp.path().to_owned();
    run(move || async move {
        let shard = shard_dir(&data_dir, 0, 1);
        let options = spare_options();
        let store = open(&data_dir, options.clone()).await;
        let mut i = 0u64;
        write_until(&store, &mut i, |s| active_segment(s).1 >= 1 << 19).await;
        let (first, _) = active_segment(&store);
        let spare = segment_file(&shard, first + 1);
        eventually("the next segment made ahead", || spare.exists()).await;
        eventually("its zeros", || store.stats().spares_created == 1).await;
        // Made without filling the rest of the active segment first: the fills still only keep
        // ahead of the records (at most one fill past half the segment).
        let filled = store.stats().prefill_bytes;
        assert!(filled <= (1 << 19) + PREFILL_FIRST + 16 * 1024, "{filled}");
        let bytes = std::fs::read(&spare).unwrap();
        assert_eq!(bytes.len() as u64, PREFILL_FIRST);
        assert!(bytes.iter().all(|&b| b == 0));
        assert_eq!(store.segments().len(), 1, "not part of the log yet");

        // The rollover takes it: no file is created, and the first batches are overwrites.
        let created = store.stats().segments_created;
        write_until(&store, &mut i, |s| active_segment(s).0 == first + 1).await;
        write_until(&store, &mut i, |s| active_segment(s).1 >= PREFILL_FIRST / 4).await;
        assert_eq!(store.stats().segments_created, created);
        assert_eq!(std::fs::metadata(&spare).unwrap().len(), PREFILL_FIRST);

        // Half full, the one after it is made; a clean stop leaves it on disk, and the next
        // open keeps it as the spare, outside the log.
        write_until(&store, &mut i, |s| active_segment(s).1 >= 1 << 19).await;
        eventually("the second spare", || store.stats().spares_created == 2).await;
        store.close().await.unwrap();
        assert!(segment_file(&shard, first + 2).exists());
        let store = open(&data_dir, options.clone()).await;
        assert_eq!(store.recovered().spare, Some(first + 2));
        assert_eq!(store.recovered().segments, 2);
        assert_eq!(store.recovered().torn_tail, None);
        assert_eq!(store.recovered().states, i as usize);
        write_until(&store, &mut i, |s| active_segment(s).0 == first + 2).await;
        assert_eq!(store.stats().segments_created, 0, "the kept spare was used");
        assert_eq!(
            std::fs::metadata(segment_file(&shard, first + 2))
                .unwrap()
                .len(),
            PREFILL_FIRST
        );
        store.close().await.unwrap();
        reopens_clean_with(&data_dir, options, i).await;
    });
}

#[test]
fn a_torn_tail_before_the_segments_made_ahead_is_recovered() {
    let tmp = TempDir::new("spare-torn");
    let data_dir = tmp.path().to_owned();
    run(move || async move {
        let shard = shard_dir(&data_dir, 0, 1);
        let options = spare_options();
        let store = open(&data_dir, options.clone()).await;
        let mut i = 0u64;
        write_until(&store, &mut i, |s| {
            s.segments().len() == 2 && active_segment(s).1 >= 1 << 19
        })
        .await;
        eventually("the spare", || store.stats().spares_created == 2).await;
        let (active, end) = active_segment(&store);
        store.close().await.unwrap();

        // A crash in the middle of a batch: part of a record after the last one, in the zeros.
        // Then a second empty segment (as a rollover interrupted twice could leave) and the
        // spare cut to nothing (a crash right after it was created).
        let path = segment_file(&shard, active);
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() as u64 > end + 100);
        let end = end as usize;
        let last = bytes[..end]
            .windows(4)
            .rposition(|w| w == b"PNRC")
            .expect("the last record's magic")
            - 4;
        let partial = bytes[last..last + 100].to_vec();
        bytes[end..end + 100].copy_from_slice(&partial);
        std::fs::write(&path, &bytes).unwrap();
        std::fs::write(segment_file(&shard, active + 1), b"").unwrap();
        std::fs::write(segment_file(&shard, active + 2), vec![0u8; 8192]).unwrap();

        let store = open(&data_dir, options.clone()).await;
        let torn = store.recovered().torn_tail.clone().expect("a torn tail");
        assert_eq!((torn.segment, torn.offset), (active, end as u64));
        assert_eq!(store.recovered().spare, Some(active + 1));
        assert!(!segment_file(&shard, active + 2).exists(), "deleted");
        assert_eq!(store.recovered().states, i as usize);
        assert_eq!(
            store.read_state(i - 1).await.unwrap().unwrap(),
            state_of(i - 1, 1, 1000)
        );
        // The empty spare is used as it is (its zeros are filled as for any new segment).
        write_until(&store, &mut i, |s| active_segment(s).0 == active + 1).await;
        assert_eq!(store.stats().segments_created, 0);
        store.close().await.unwrap();
        let store = open(&data_dir, options).await;
        assert_eq!(store.recovered().torn_tail, None);
        assert_eq!(store.recovered().states, i as usize);
        store.close().await.unwrap();
    });
}

#[test]
fn corruption_before_the_tail_is_an_error() {
    let tmp = TempDir::new("corrupt");
    let data_dir = tmp.path().to_owned();
    run(move || async move {
        let shard = shard_dir(&data_dir, 0, 1);
        let options = Options {
            segment_bytes_max: 8192,
            ..quiet()
        };
        let store = open(&data_dir, options.clone()).await;
        for i in 0..200u64 {
            store.save_state(i, &state_of(i, 1, 100)).await.unwrap();
        }
        store.close().await.unwrap();
        let files = segments(&shard);
        assert!(files.len() >= 3);
        // A flipped byte in an older segment: refuse to open, naming the file.
        let original = std::fs::read(&files[0]).unwrap();
        let mut bad = original.clone();
        bad[200] ^= 1;
        std::fs::write(&files[0], &bad).unwrap();
        let error = LogStore::open(&data_dir, 0, 1, options.clone())
            .await
            .err()
            .expect("corruption must not open");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        let message = error.to_string();
        assert!(message.contains("seg-00000001.log"), "{message}");
        assert!(message.contains("not the last segment"), "{message}");
        std::fs::write(&files[0], &original).unwrap();
        let store = open(&data_dir, options).await;
        assert_eq!(store.recovered().states, 200);
        store.close().await.unwrap();
    });
}

#[test]
fn damage_far_before_the_end_of_the_last_segment_is_an_error() {
    let tmp = TempDir::new("corrupt-last");
    let data_dir = tmp.path().to_owned();
    run(move || async move {
        let shard = shard_dir(&data_dir, 0, 1);
        let store = open(&data_dir, quiet()).await;
        // 20 MiB in one segment: more than one write can span.
        let big = vec![5u8; 1 << 20];
        for i in 0..20u64 {
            store.save_state(i, &big).await.unwrap();
        }
        store.close().await.unwrap();
        let file = segments(&shard).pop().unwrap();
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[1000] ^= 1; // inside the first state record
        std::fs::write(&file, &bytes).unwrap();
        let error = LogStore::open(&data_dir, 0, 1, quiet())
            .await
            .err()
            .expect("must not open");
        assert!(error.to_string().contains("not a torn tail"), "{error}");
    });
}

// ---------------------------------------------------------------------------------------------
// Rollover and compaction

#[test]
fn rollover_and_compaction_bound_disk_usage() {
    let tmp = TempDir::new("compaction");
    let data_dir = tmp.path().to_owned();
    run(move || async move {
        let segment = 64 * 1024;
        let options = Options {
            segment_bytes_max: segment,
            compact_dead_bytes_min: 4096,
            compact_interval: Duration::from_millis(5),
            ..Options::default()
        };
        let store = open(&data_dir, options.clone()).await;
        // Long-lived records in the first segment, and a state that is deleted later: its
        // tombstone must survive compaction while the old state is still on disk.
        for id in 0..50u64 {
            store
                .put_actor(&actor(id, "counter", &["k"]))
                .await
                .unwrap();
        }
        store.save_state(1000, b"to be deleted").await.unwrap();
        store.put_schedule(7, 1, 99, b"sched").await.unwrap();
        store.put_meta(7, b"m", b"v").await.unwrap();
        store.delete_state(1000).await.unwrap();
        let mut max_disk = 0;
        for version in 0..2_000u64 {
            for id in 0..10u64 {
                store
                    .save_state(id, &state_of(id, version, 200))
                    .await
                    .unwrap();
            }
            if version % 100 == 0 {
                store.flush().await.unwrap();
                max_disk = max_disk.max(store.stats().disk_bytes);
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        }
        store.flush().await.unwrap();
        store.compact().await.unwrap();
        let stats = store.stats();
        println!(
            "after 20000 overwrites: {stats:?}, max disk {max_disk}, {:?}",
            store.segments()
        );
        assert!(stats.compactions > 50, "{stats:?}");
        assert!(stats.segments_created > 50, "{stats:?}");
        assert!(stats.disk_bytes < 4 * segment, "{stats:?}");
        assert!(max_disk < 40 * segment, "disk grew to {max_disk}");
        let files = segments(&shard_dir(&data_dir, 0, 1));
        assert_eq!(files.len(), stats.segments);
        store.close().await.unwrap();

        let store = open(&data_dir, options).await;
        for id in 0..10u64 {
            assert_eq!(
                store.read_state(id).await.unwrap().unwrap(),
                state_of(id, 1_999, 200)
            );
        }
        for id in 0..50u64 {
            assert_eq!(
                store.read_actor(id).await.unwrap(),
                Some(actor(id, "counter", &["k"]))
            );
        }
        assert_eq!(store.read_state(1000).await.unwrap(), None);
        assert_eq!(
            store.read_schedule(7, 1).await.unwrap().as_deref(),
            Some(&b"sched"[..])
        );
        assert_eq!(
            store.read_meta(7, b"m").await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
        store.close().await.unwrap();
    });
}

#[test]
fn tombstones_outlive_the_records_they_hide() {
    let tmp = TempDir::new("tombstones");
    let data_dir = tmp.path().to_owned();
    run(move || async move {
        let options = Options {
            segment_bytes_max: 8192,
            compact_dead_bytes_min: 1,
            compact_dead_ratio: 0.3,
            ..quiet()
        };
        let store = open(&data_dir, options.clone()).await;
        // Segment 1: a state, a schedule and a meta value, then long-lived actor records (which
        // spill into segment 2).
        store.save_state(5, b"old state").await.unwrap();
        store.put_schedule(5, 1, 10, b"old schedule").await.unwrap();
        store.put_meta(5, b"k", b"old meta").await.unwrap();
        for id in 0..120u64 {
            store.put_actor(&actor(id, "a", &["x"])).await.unwrap();
        }
        store.flush().await.unwrap();
        assert!(store.segments().len() >= 2);
        // Later segments: the deletes, then garbage that makes them worth compacting.
        store.delete_state(5).await.unwrap();
        store.delete_schedule(5, 1).await.unwrap();
        store.delete_meta(5, b"k").await.unwrap();
        for v in 0..300u64 {
            store.save_state(9, &state_of(9, v, 100)).await.unwrap();
        }
        store.flush().await.unwrap();
        let compacted = store.compact().await.unwrap();
        assert!(compacted > 0);
        println!("{:?}", store.segments());
        assert!(
            segments(&shard_dir(&data_dir, 0, 1))[0].ends_with("seg-00000001.log"),
            "segment 1 (live actors) should stay"
        );
        store.close().await.unwrap();
        let store = open(&data_dir, options).await;
        assert_eq!(store.read_state(5).await.unwrap(), None);
        assert_eq!(store.read_schedule(5, 1).await.unwrap(), None);
        assert_eq!(store.read_meta(5, b"k").await.unwrap(), None);
        assert_eq!(
            version_of(&store.read_state(9).await.unwrap().unwrap()),
            299
        );
        store.close().await.unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Shard count changes

#[test]
fn shard_count_change_is_refused_then_resharded() {
    let tmp = TempDir::new("reshard");
    let data_dir = tmp.path().to_owned();
    run(move || async move {
        const ACTORS: u64 = 300;
        for shard in 0..2 {
            let store = LogStore::open(&data_dir, shard, 2, quiet()).await.unwrap();
            for i in 0..ACTORS {
                let id = mix(i);
                if jump(id, 2) != shard {
                    continue;
                }
                store
                    .put_actor(&actor(id, "counter", &[&i.to_string()]))
                    .await
                    .unwrap();
                store.save_state(id, &state_of(id, 1, 40)).await.unwrap();
                store.save_state(id, &state_of(id, 2, 40)).await.unwrap();
                if i % 3 == 0 {
                    store.put_schedule(id, 1, 1000 + i, b"s").await.unwrap();
                }
                if i % 5 == 0 {
                    store.put_meta(id, b"k", &i.to_le_bytes()).await.unwrap();
                }
                if i % 7 == 0 {
                    store.delete_state(id).await.unwrap();
                }
            }
            store.close().await.unwrap();
        }

        let error = LogStore::open(&data_dir, 0, 3, quiet())
            .await
            .err()
            .expect("a different shard count must not open");
        let layout = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<LayoutError>())
            .expect("a LayoutError");
        assert!(matches!(
            layout,
            LayoutError::ShardCountMismatch { found, expected: 3, .. } if found == &[2]
        ));
        let message = error.to_string();
        assert!(
            message.contains("2 shards") && message.contains("re-shard"),
            "{message}"
        );
        assert!(
            !shard_dir(&data_dir, 0, 3).exists(),
            "refusal must change nothing"
        );

        let report = reshard(&data_dir, 2, 3, &|id| jump(id, 3)).await.unwrap();
        println!("{report:?}");
        assert!(!shard_dir(&data_dir, 0, 2).exists());
        assert!(LogStore::open(&data_dir, 0, 2, quiet()).await.is_err());
        let stores = [
            LogStore::open(&data_dir, 0, 3, quiet()).await.unwrap(),
            LogStore::open(&data_dir, 1, 3, quiet()).await.unwrap(),
            LogStore::open(&data_dir, 2, 3, quiet()).await.unwrap(),
        ];
        let mut total = 0;
        for store in &stores {
            total += store.recovered().actors;
        }
        assert_eq!(total as u64, ACTORS);
        for i in 0..ACTORS {
            let id = mix(i);
            let store = &stores[jump(id, 3)];
            assert_eq!(
                store.read_actor(id).await.unwrap(),
                Some(actor(id, "counter", &[&i.to_string()])),
                "actor {i}"
            );
            let state = store.read_state(id).await.unwrap();
            if i % 7 == 0 {
                assert_eq!(state, None);
            } else {
                assert_eq!(state.unwrap(), state_of(id, 2, 40));
            }
            assert_eq!(store.schedules_of(id).len(), usize::from(i % 3 == 0));
            assert_eq!(
                store.read_meta(id, b"k").await.unwrap(),
                (i % 5 == 0).then(|| i.to_le_bytes().to_vec())
            );
        }
        for store in stores {
            store.close().await.unwrap();
        }

        // An interrupted re-shard is refused at open, and finished by running it again.
        std::fs::create_dir(data_dir.join(".reshard-3-to-4")).unwrap();
        let error = LogStore::open(&data_dir, 0, 3, quiet())
            .await
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("interrupted re-shard"),
            "{error}"
        );
        let report = reshard(&data_dir, 3, 4, &|id| jump(id, 4)).await.unwrap();
        assert!(report.records > 0);
        let mut total = 0;
        for shard in 0..4 {
            let store = LogStore::open(&data_dir, shard, 4, quiet()).await.unwrap();
            total += store.recovered().actors;
            store.close().await.unwrap();
        }
        assert_eq!(total as u64, ACTORS);
    });
}

// ---------------------------------------------------------------------------------------------
// Crash test: a child process appends and reports what is durable; it is SIGKILLed at a random
// moment; everything it reported must be there.

const CRASH_DIR: &str = "PINION_STORAGE_CRASH_DIR";
const CRASH_WRITERS: u64 = 32;

/// The child's side (does nothing unless started by `crash_recovery_keeps_acknowledged_writes`).
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_DIR) else {
        return;
    };
    run(move || async move {
        let options = Options {
            segment_bytes_max: 256 * 1024,
            compact_interval: Duration::from_millis(20),
            compact_dead_bytes_min: 4096,
            ..Options::default()
        };
        let store = Rc::new(
            LogStore::open(Path::new(&dir), 0, 1, options)
                .await
                .unwrap(),
        );
        for writer in 0..CRASH_WRITERS {
            let store = store.clone();
            glommio::spawn_local(async move {
                let mut version = match store.read_state(writer).await.unwrap() {
                    Some(state) => version_of(&state),
                    None => 0,
                };
                loop {
                    version += 1;
                    let state = state_of(writer, version, 64 + (version % 200) as usize);
                    let seq = store.save_state(writer, &state).await.unwrap();
                    store.durable(seq).await.unwrap();
                    println!("ACK {writer} {version}");
                }
            })
            .detach();
        }
        // Runs until the parent kills the process.
        std::future::pending::<()>().await;
    });
}

#[test]
fn crash_recovery_keeps_acknowledged_writes() {
    let tmp = TempDir::new("crash");
    let exe = std::env::current_exe().unwrap();
    let mut acked = vec![0u64; CRASH_WRITERS as usize];
    let mut seed = 0x1234_5678_u64 ^ u64::from(std::process::id());
    for cycle in 0..6 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CRASH_DIR, tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split_whitespace();
                if parts.next() == Some("ACK") {
                    let writer: usize = parts.next().unwrap().parse().unwrap();
                    let version: u64 = parts.next().unwrap().parse().unwrap();
                    acks.push((writer, version));
                }
            }
            acks
        });
        seed = mix(seed);
        let delay = Duration::from_millis(150 + seed % 400);
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        for (writer, version) in &acks {
            acked[*writer] = acked[*writer].max(*version);
        }
        if cycle % 2 == 1 {
            // What power loss can add and a kill cannot: the start of a record that never made
            // it, after everything that did.
            let last = segments(&shard_dir(tmp.path(), 0, 1)).pop().unwrap();
            let mut torn = std::fs::read(&last).unwrap();
            let keep = torn.len();
            torn.extend_from_within(keep.saturating_sub(200)..keep);
            torn.truncate(keep + 1 + (seed % 150) as usize);
            std::fs::write(&last, &torn).unwrap();
        }
        let expect = acked.clone();
        let dir = tmp.path().to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        run(move || async move {
            let store = LogStore::open(&dir, 0, 1, quiet()).await.unwrap();
            let recovered = store.recovered().clone();
            for (writer, &min) in expect.iter().enumerate() {
                let state = store.read_state(writer as u64).await.unwrap();
                let version = state.as_deref().map_or(0, version_of);
                assert!(
                    version >= min,
                    "writer {writer}: acknowledged version {min} but recovered {version}"
                );
                if let Some(state) = state {
                    assert_eq!(
                        state,
                        state_of(writer as u64, version, 64 + (version % 200) as usize)
                    );
                }
            }
            store.close().await.unwrap();
            tx.send(recovered).unwrap();
        });
        let recovered = rx.recv().unwrap();
        println!(
            "cycle {cycle}: killed after {delay:?}, {} acks, recovered {} records in {:?}, torn \
             tail {:?}",
            acks.len(),
            recovered.records,
            recovered.elapsed,
            recovered.torn_tail
        );
        assert!(!acks.is_empty(), "the child acknowledged nothing");
    }
}

// ---------------------------------------------------------------------------------------------
// Benchmarks (run with `cargo test --release -p pinion-storage --test log_store -- --ignored
// --nocapture`)

#[test]
#[ignore = "benchmark; run with --ignored"]
fn bench_durable_appends_and_reads() {
    let tmp = TempDir::new("bench");
    let dir = tmp.path().to_owned();
    run(move || async move {
        let store = Rc::new(open(&dir, Options::default()).await);
        for writers in [1u64, 16, 256] {
            let done = Rc::new(Cell::new(0u64));
            let stop = Rc::new(Cell::new(false));
            let before = store.stats();
            let started = Instant::now();
            let tasks: Vec<_> = (0..writers)
                .map(|w| {
                    let (store, done, stop) = (store.clone(), done.clone(), stop.clone());
                    glommio::spawn_local(async move {
                        let mut version = 0;
                        while !stop.get() {
                            version += 1;
                            let state = state_of(w, version, 64);
                            let seq = store.save_state(w, &state).await.unwrap();
                            store.durable(seq).await.unwrap();
                            done.set(done.get() + 1);
                        }
                    })
                })
                .collect();
            glommio::timer::sleep(Duration::from_secs(3)).await;
            stop.set(true);
            for task in tasks {
                task.await;
            }
            let elapsed = started.elapsed();
            let after = store.stats();
            let syncs = after.syncs - before.syncs;
            println!(
                "durable saves, {writers:>3} writers: {:>8.0}/s ({} in {elapsed:.2?}, {syncs} \
                 fdatasyncs, {:.1} writes per sync)",
                done.get() as f64 / elapsed.as_secs_f64(),
                done.get(),
                done.get() as f64 / syncs.max(1) as f64,
            );
        }

        // Wake-from-disk: read_state of random actors among 100 000 (page cache warm, as for
        // actors that slept recently).
        const ACTORS: u64 = 100_000;
        for id in 0..ACTORS {
            store
                .save_state(1_000_000 + id, &state_of(id, 1, 200))
                .await
                .unwrap();
        }
        store.flush().await.unwrap();
        let mut samples = Vec::with_capacity(20_000);
        let mut x = 1u64;
        for _ in 0..20_000 {
            x = mix(x);
            let id = 1_000_000 + x % ACTORS;
            let started = Instant::now();
            let state = store.read_state(id).await.unwrap().unwrap();
            samples.push(started.elapsed());
            assert_eq!(state.len(), 200);
        }
        print_latencies("read_state (200 B, warm page cache)", &mut samples);

        // Wake from disk: the same reads with the segments evicted from the page cache first.
        let mut cold = Vec::with_capacity(2_000);
        for round in 0..2_000 {
            if round % 100 == 0 {
                evict_from_page_cache(store.dir());
            }
            x = mix(x);
            let id = 1_000_000 + x % ACTORS;
            let started = Instant::now();
            let state = store.read_state(id).await.unwrap().unwrap();
            cold.push(started.elapsed());
            assert_eq!(state.len(), 200);
        }
        print_latencies("read_state (200 B, evicted from the page cache)", &mut cold);
        Rc::try_unwrap(store).ok().unwrap().close().await.unwrap();
    });
}

/// The latency of one durable write at a time across many segment rollovers: the write that
/// starts a new segment against the others. With the prefill on (the default), the new segment
/// was made ahead of need.
#[test]
#[ignore = "benchmark; run with --ignored"]
fn bench_rollover_latency() {
    let tmp = TempDir::new("bench-rollover");
    let dir = tmp.path().to_owned();
    run(move || async move {
        let options = Options {
            segment_bytes_max: 1 << 20,
            ..quiet()
        };
        let store = open(&dir, options).await;
        let (mut rollovers, mut others) = (Vec::new(), Vec::new());
        let mut i = 0u64;
        while rollovers.len() < 60 {
            let before = active_segment(&store).0;
            let started = Instant::now();
            let seq = store
                .save_state(i % 64, &state_of(i, 1, 4000))
                .await
                .unwrap();
            store.durable(seq).await.unwrap();
            let elapsed = started.elapsed();
            if active_segment(&store).0 != before && i > 0 {
                rollovers.push(elapsed);
            } else {
                others.push(elapsed);
            }
            i += 1;
        }
        for (what, samples) in [
            ("rollover writes", &mut rollovers),
            ("other writes", &mut others),
        ] {
            print_latencies(what, samples);
        }
        let stats = store.stats();
        println!(
            "segments created {}, of them made ahead {}",
            stats.segments_created, stats.spares_created
        );
        store.close().await.unwrap();
    });
}

/// Prints the count and percentiles of `samples` (sorted in place), for the benchmarks.
fn print_latencies(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "{what:<48} n {:>5}  p50 {:>9.1?}  p90 {:>9.1?}  p99 {:>9.1?}  p99.9 {:>9.1?}  max {:>9.1?}",
        samples.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        samples[samples.len() - 1],
    );
}

/// Drops the clean pages of every segment in `dir` from the page cache.
fn evict_from_page_cache(dir: &Path) {
    use std::os::fd::AsRawFd;
    for path in segments(dir) {
        let file = std::fs::File::open(path).unwrap();
        // SAFETY: `posix_fadvise` only reads its arguments; the descriptor is open for the call.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
    }
}

const RECOVERY_DIR: &str = "PINION_STORAGE_RECOVERY_DIR";

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// The recovery benchmark's child: opens the store in a fresh process and reports.
#[test]
fn recovery_child() {
    let Ok(dir) = std::env::var(RECOVERY_DIR) else {
        return;
    };
    let cold = std::env::var_os("PINION_STORAGE_RECOVERY_COLD").is_some();
    if cold {
        evict_from_page_cache(&shard_dir(Path::new(&dir), 0, 1));
    }
    run(move || async move {
        let before = rss_bytes();
        let store = LogStore::open(Path::new(&dir), 0, 1, quiet())
            .await
            .unwrap();
        let after = rss_bytes();
        let recovered = store.recovered().clone();
        println!(
            "RECOVERED ({}) {} actors, {} states, {} records, {} MB in {:?}; RSS +{} bytes = \
             {:.1} bytes per actor",
            if cold {
                "page cache evicted"
            } else {
                "page cache warm"
            },
            recovered.actors,
            recovered.states,
            recovered.records,
            recovered.bytes >> 20,
            recovered.elapsed,
            after - before,
            (after - before) as f64 / recovered.actors as f64
        );
        let started = Instant::now();
        let state = store.read_state(mix(5)).await.unwrap();
        println!("first read_state after recovery: {:?}", started.elapsed());
        assert!(state.is_some());
        store.close().await.unwrap();
    });
}

#[test]
#[ignore = "benchmark; run with --ignored"]
fn bench_recovery_of_a_million_sleeping_actors() {
    const ACTORS: u64 = 1_000_000;
    let tmp = TempDir::new("recovery");
    let dir = tmp.path().to_owned();
    run(move || async move {
        let store = open(&dir, quiet()).await;
        let names = ["counter", "chat", "document", "game"];
        let started = Instant::now();
        for i in 0..ACTORS {
            let id = mix(i);
            let name = names[(i % 4) as usize];
            store
                .put_actor(&actor(id, name, &["tenant-42", &format!("user-{i}")]))
                .await
                .unwrap();
            store.save_state(id, &state_of(id, 1, 64)).await.unwrap();
        }
        store.flush().await.unwrap();
        println!(
            "wrote {ACTORS} actors (directory record + 64 B state) in {:?}: {:?}",
            started.elapsed(),
            store.stats()
        );
        store.close().await.unwrap();
    });
    for cold in [true, false] {
        let mut child = Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "recovery_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(RECOVERY_DIR, tmp.path());
        if cold {
            child.env("PINION_STORAGE_RECOVERY_COLD", "1");
        }
        let output = child.output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        for line in text.lines() {
            for tag in ["RECOVERED", "first read_state"] {
                if let Some(at) = line.find(tag) {
                    println!("{}", &line[at..]);
                }
            }
        }
        assert!(output.status.success(), "{text}");
    }
}

/// Cold reads: the store against the bare device, from one glommio executor (pin it with
/// `taskset`). Directory records are written first and states after them, as for actors created
/// and then saved, so an actor's two records sit in different pages.
#[test]
#[ignore = "benchmark; run with --ignored"]
fn bench_cold_reads_against_the_device() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = TempDir::new("coldbench");
    let dir = tmp.path().to_owned();
    run(move || async move {
        let store = open(&dir, quiet()).await;
        const ACTORS: u64 = 100_000;
        for id in 0..ACTORS {
            store
                .put_actor(&actor(id, "sleeper", &[&format!("key-{id}")]))
                .await
                .unwrap();
        }
        for id in 0..ACTORS {
            store.save_state(id, &state_of(id, 1, 200)).await.unwrap();
        }
        store.flush().await.unwrap();
        let report = |what: &str, mut v: Vec<Duration>| print_latencies(what, &mut v);
        let mut x = 7u64;
        const N: usize = 3_000;
        for round in 0..2 {
            println!("round {round}");
            // read_state alone.
            let mut v = Vec::with_capacity(N);
            let before = store.stats().ring_reads;
            for i in 0..N {
                if i % 100 == 0 {
                    evict_from_page_cache(store.dir());
                }
                x = mix(x);
                let t = Instant::now();
                store.read_state(x % ACTORS).await.unwrap().unwrap();
                v.push(t.elapsed());
            }
            let rr = store.stats().ring_reads - before;
            report(&format!("read_state ({rr} ring reads)"), v);
            // read_actor and read_state together, as a wake does.
            let mut v = Vec::with_capacity(N);
            let before = store.stats().ring_reads;
            for i in 0..N {
                if i % 100 == 0 {
                    evict_from_page_cache(store.dir());
                }
                x = mix(x);
                let t = Instant::now();
                let (a, s) = futures_lite::future::zip(
                    store.read_actor(x % ACTORS),
                    store.read_state(x % ACTORS),
                )
                .await;
                a.unwrap().unwrap();
                s.unwrap().unwrap();
                v.push(t.elapsed());
            }
            let rr = store.stats().ring_reads - before;
            report(&format!("read_actor + read_state ({rr} ring reads)"), v);
            // The segment files read directly: O_DIRECT 4 KiB, through glommio's DmaFile, and
            // with a blocking pread.
            let seg = segments(store.dir())[0].clone();
            let size = std::fs::metadata(&seg).unwrap().len() / 4096;
            let dma = glommio::io::DmaFile::open(&seg).await.unwrap();
            let mut v = Vec::with_capacity(N);
            for _ in 0..N {
                x = mix(x);
                let t = Instant::now();
                dma.read_at_aligned((x % size) * 4096, 4096).await.unwrap();
                v.push(t.elapsed());
            }
            dma.close().await.unwrap();
            report("DmaFile 4 KiB O_DIRECT", v);
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&seg)
                .unwrap();
            let mut buf = vec![0u8; 8192];
            let at = buf.as_ptr().align_offset(4096);
            let mut v = Vec::with_capacity(N);
            for _ in 0..N {
                x = mix(x);
                let t = Instant::now();
                // SAFETY: 4096 bytes at an aligned offset inside `buf`.
                let n = unsafe {
                    libc::pread(
                        file.as_raw_fd(),
                        buf.as_mut_ptr().add(at).cast(),
                        4096,
                        ((x % size) * 4096) as i64,
                    )
                };
                assert_eq!(n, 4096);
                v.push(t.elapsed());
            }
            report("blocking pread 4 KiB O_DIRECT", v);
            // Buffered blocking pread of 200 bytes, evicted.
            let file = std::fs::File::open(&seg).unwrap();
            let mut v = Vec::with_capacity(N);
            for i in 0..N {
                if i % 100 == 0 {
                    evict_from_page_cache(store.dir());
                }
                x = mix(x);
                let t = Instant::now();
                // SAFETY: 200 bytes into `buf`.
                let n = unsafe {
                    libc::pread(
                        file.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        200,
                        ((x % size) * 4096 + 1000) as i64,
                    )
                };
                assert_eq!(n, 200);
                v.push(t.elapsed());
            }
            report("blocking buffered pread 200 B (evicted)", v);
        }
        store.close().await.unwrap();
    });
}
