//! A zero fill ahead of the log (`Options::prefill_bytes_max`) that the kernel refuses. The
//! zeros are an optimisation, not a promise: a failed fill must not fail a write or poison the
//! store; that segment's batches append instead. `RLIMIT_FSIZE` makes the fill fail for real
//! (cut at the limit, then `EFBIG`). A test binary of its own because the limit applies to the
//! whole process.

mod common;

use common::segments;

use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use pinion_storage::{ActorRecord, LogStore, Options, Store};

/// Below the end of the first fill (`PREFILL_FIRST` past the segment's first batch).
const LIMIT: u64 = 100_000 + 123;
const STATE_BYTES: usize = 3_000;

fn set_file_size_limit(limit: u64) {
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `rlimit` is a valid, initialised struct for the duration of the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

fn state(version: u64) -> Vec<u8> {
    let mut v = version.to_le_bytes().to_vec();
    v.resize(STATE_BYTES, (version % 251) as u8);
    v
}

async fn save(store: &LogStore, version: u64) -> std::io::Result<()> {
    let seq = store.save_state(7, &state(version)).await?;
    store.durable(seq).await
}

#[test]
fn a_failed_zero_fill_leaves_the_store_writing() {
    // SAFETY: replaces the disposition of one signal that nothing else in this process handles
    // (at the limit the kernel sends SIGXFSZ, which would end the process).
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let dir = std::env::temp_dir().join(format!(
        "pinion-storage-prefill-limit-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data_dir = dir.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let options = Options {
                compaction: false,
                ..Options::default()
            };
            set_file_size_limit(LIMIT);
            let store = LogStore::open(&data_dir, 0, 1, options.clone())
                .await
                .unwrap();
            let shard_dir = store.dir().to_owned();
            let record = ActorRecord {
                id: 7,
                name: "counter".into(),
                key: vec!["fill".into()],
                created_ms: 1_700_000_000_000,
                destroyed_ms: None,
            };
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
            assert_eq!(store.read_actor(7).await.unwrap(), Some(record));
            assert_eq!(store.read_state(7).await.unwrap().unwrap(), state(last));
            // A new store fills again.
            save(&store, last + 1).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while store.stats().prefill_bytes == 0 {
                assert!(Instant::now() < deadline, "no fill after reopening");
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            assert!(std::fs::metadata(&segment).unwrap().len() > written);
            store.close().await.unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
