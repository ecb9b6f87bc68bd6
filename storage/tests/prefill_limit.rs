//! A zero fill ahead of the log (`Options::prefill_bytes_max`) that the kernel refuses. The
//! zeros are an optimisation, not a promise: a failed fill must not fail a write or poison the
//! store; that segment's batches append instead. `RLIMIT_FSIZE` makes the fill fail for real
//! (cut at the limit, then `EFBIG`). A test binary of its own because the limit applies to the
//! whole process.

mod common;
#[path = "common/fsize.rs"]
mod fsize;

use common::segments;
use fsize::{ACTOR, actor_record, run_in_temp_dir, set_file_size_limit, state};

use std::time::{Duration, Instant};

use pinion_storage::{LogStore, Options, Store};

/// Below the end of the first fill (`PREFILL_FIRST` past the segment's first batch).
const LIMIT: u64 = 100_000 + 123;

async fn save(store: &LogStore, version: u64) -> std::io::Result<()> {
    let seq = store.save_state(ACTOR, &state(version)).await?;
    store.durable(seq).await
}

#[test]
fn a_failed_zero_fill_leaves_the_store_writing() {
    run_in_temp_dir("prefill-limit", |data_dir| async move {
        let options = Options {
            compaction: false,
            ..Options::default()
        };
        set_file_size_limit(LIMIT);
        let store = LogStore::open(&data_dir, 0, 1, options.clone())
            .await
            .unwrap();
        let shard_dir = store.dir().to_owned();
        let record = actor_record("fill");
        let seq = store.put_actor(&record).await.unwrap();
        store.durable(seq).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.stats().prefill_failures == 0 {
            assert!(Instant::now() < deadline, "the fill did not fail");
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(store.stats().prefill_bytes, 0);
        // The kernel wrote the fill's zeros up to the limit, then refused the rest.
        let segment = segments(&shard_dir).pop().unwrap();
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), LIMIT);

        // Writes below the limit go on and are acknowledged.
        for version in 1..=10 {
            save(&store, version).await.unwrap();
        }
        // Past the limit (raised now), this segment's batches append.
        set_file_size_limit(libc::RLIM_INFINITY);
        let last = 60;
        for version in 11..=last {
            save(&store, version).await.unwrap();
        }
        let written = store.stats().disk_bytes;
        assert!(written > LIMIT, "{written}");
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), written);
        assert_eq!(
            store.stats().prefill_failures,
            1,
            "no retry on that segment"
        );
        store.close().await.unwrap();

        let store = LogStore::open(&data_dir, 0, 1, options).await.unwrap();
        assert_eq!(store.recovered().torn_tail, None);
        assert_eq!(store.read_actor(ACTOR).await.unwrap(), Some(record));
        assert_eq!(store.read_state(ACTOR).await.unwrap().unwrap(), state(last));
        // A new store fills again.
        save(&store, last + 1).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.stats().prefill_bytes == 0 {
            assert!(Instant::now() < deadline, "no fill after reopening");
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert!(std::fs::metadata(&segment).unwrap().len() > written);
        store.close().await.unwrap();
    });
}
