//! `RLIMIT_FSIZE`, for the tests that need the kernel to cut a write short. Those are test
//! binaries of their own (the limit applies to the whole process) and include this file with
//! `#[path]`, so that the other binaries do not carry it unused.

/// Bytes of each state the tests write.
pub const STATE_BYTES: usize = 3_000;

/// Makes a write that crosses `limit` write up to it and the next one fail with `EFBIG`,
/// instead of ending the process: ignores SIGXFSZ and sets the soft limit (the hard one stays
/// unlimited, so the limit can be raised again).
pub fn set_file_size_limit(limit: u64) {
    // SAFETY: replaces the disposition of one signal that nothing else in this process handles.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `rlimit` is a valid, initialised struct for the duration of the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// A state of [`STATE_BYTES`] that starts with its version.
pub fn state(version: u64) -> Vec<u8> {
    let mut v = version.to_le_bytes().to_vec();
    v.resize(STATE_BYTES, (version % 251) as u8);
    v
}

/// The id of the actor whose states the tests write.
pub const ACTOR: u64 = 7;

/// The directory record of [`ACTOR`], with key `key`.
pub fn actor_record(key: &str) -> pinion_storage::ActorRecord {
    pinion_storage::ActorRecord {
        id: ACTOR,
        name: "counter".into(),
        key: vec![key.into()],
        created_ms: 1_700_000_000_000,
        destroyed_ms: None,
    }
}

/// Runs `test` on a glommio executor of its own with a fresh data directory
/// (`$TMPDIR/pinion-storage-<name>-<pid>`), removed afterwards.
pub fn run_in_temp_dir<F, Fut>(name: &str, test: F)
where
    F: FnOnce(std::path::PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let dir = std::env::temp_dir().join(format!("pinion-storage-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data_dir = dir.clone();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || test(data_dir))
        .unwrap()
        .join()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
