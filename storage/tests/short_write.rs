//! A log write the kernel cuts short. `RLIMIT_FSIZE` makes a write that crosses the limit write
//! only up to it (and the next one fail with `EFBIG`), which is the one way to get a real short
//! write from a local filesystem on demand. The store must fail the writers of that batch, refuse
//! later writes, and keep every write it acknowledged before; reopened, it drops the torn tail.
//!
//! This exercises the linked write + `fdatasync` of the store's own ring when the write comes
//! back short (the linked sync is cancelled) and the glommio path that writes the rest. It is a
//! test binary of its own because the limit applies to the whole process.

mod common;
#[path = "common/fsize.rs"]
mod fsize;

use common::segments;
use fsize::{ACTOR, STATE_BYTES, actor_record, run_in_temp_dir, set_file_size_limit, state};

use std::time::Duration;

use pinion_storage::{LogStore, Options, Store};

/// Where the file size limit is set: inside a batch, not at a record boundary.
const LIMIT: u64 = 200_000 + 123;

#[test]
fn a_short_write_fails_its_batch_and_keeps_what_was_acknowledged() {
    run_in_temp_dir("short-write", |data_dir| async move {
        // No zeros written ahead: the batch must be the write that extends the file, so
        // that the file's length shows where the kernel cut it. (`prefill_limit.rs` covers
        // a fill that the limit cuts.)
        let options = Options {
            compaction: false,
            prefill_bytes_max: 0,
            ..Options::default()
        };
        let store = LogStore::open(&data_dir, 0, 1, options.clone())
            .await
            .unwrap();
        let shard_dir = store.dir().to_owned();
        let record = actor_record("short");
        let seq = store.put_actor(&record).await.unwrap();
        store.durable(seq).await.unwrap();

        set_file_size_limit(LIMIT);
        // One durable write at a time until one fails: each is its own batch, so the batch
        // that crosses the limit is cut inside it.
        let mut acknowledged = 0;
        let mut failure = None;
        for version in 1..=(2 * LIMIT / STATE_BYTES as u64) {
            let result = match store.save_state(ACTOR, &state(version)).await {
                Ok(seq) => store.durable(seq).await,
                Err(error) => Err(error),
            };
            match result {
                Ok(()) => acknowledged = version,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let failure = failure.expect("a write past the file size limit must fail");
        assert!(
            acknowledged > 10,
            "only {acknowledged} writes before the limit"
        );
        // The batch was cut at the limit, not refused whole: the kernel wrote up to it.
        let segment = segments(&shard_dir).pop().unwrap();
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), LIMIT);
        // Nothing more is accepted once a write failed, and saying so does not hang.
        let later = match store.save_state(ACTOR, &state(10_000)).await {
            Ok(seq) => store.durable(seq).await,
            Err(error) => Err(error),
        };
        assert!(later.is_err(), "a write after the failure was acknowledged");
        // Acknowledged writes are still readable in memory.
        let read = store.read_state(ACTOR).await.unwrap().unwrap();
        assert!(u64::from_le_bytes(read[..8].try_into().unwrap()) >= acknowledged);
        let closed = futures_lite::future::or(
            async {
                let _ = store.close().await;
                true
            },
            async {
                glommio::timer::sleep(Duration::from_secs(10)).await;
                false
            },
        )
        .await;
        assert!(closed, "closing a store whose write failed hung");
        eprintln!("failed as expected after {acknowledged} writes: {failure}");

        set_file_size_limit(libc::RLIM_INFINITY);
        let store = LogStore::open(&data_dir, 0, 1, options).await.unwrap();
        assert!(
            store.recovered().torn_tail.is_some(),
            "the cut batch is a torn tail"
        );
        assert_eq!(store.read_actor(ACTOR).await.unwrap(), Some(record));
        let read = store.read_state(ACTOR).await.unwrap().unwrap();
        assert_eq!(
            read,
            state(acknowledged),
            "the last acknowledged state survives"
        );
        store.close().await.unwrap();
    });
}
