//! The `pinion-demo` command line: flags, start, signals, stop. A library module so that test
//! harnesses can run the very same server as a child process (and kill it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use clap::Parser;
use pinion_runtime::{ActorId, Config, Server};

/// Serves RivetKit's reference actor set (counter, profile, ...) over the RivetKit 2.0 protocol.
#[derive(Parser)]
#[command(
    name = "pinion-demo",
    version,
    after_help = "Example:\n  pinion-demo --listen 127.0.0.1:6420 --shards 2\n  curl -X PUT 'http://127.0.0.1:6420/actors' -d '{\"name\":\"counter\",\"key\":\"c\"}'"
)]
struct Args {
    /// Address every shard listens on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:6420")]
    listen: SocketAddr,
    /// Number of shards (pinned executors). Default: one per CPU this process may use.
    #[arg(long)]
    shards: Option<usize>,
    /// Directory for the shards' files: actor state, directory and schedules survive restarts
    /// and crashes. Without it, actors live in memory only.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Before starting, move every actor in --data-dir to the layout of --shards (needed after
    /// changing the shard count; the server refuses to start otherwise).
    #[arg(long, requires = "data_dir", requires = "shards")]
    reshard: bool,
    /// Idle time after which an actor sleeps (saved and evicted), for types that set none.
    #[arg(long, default_value_t = 30_000)]
    sleep_timeout_ms: u64,
    /// How long a state change may wait before it is written, for types that set none.
    #[arg(long, default_value_t = 10_000)]
    save_interval_ms: u64,
    /// Prefix of every route, e.g. /api/rivet.
    #[arg(long, default_value = "/")]
    base_path: String,
    /// Microseconds an idle shard polls for work before it parks; 0 parks at once (lowest idle
    /// CPU, highest wake-up latency at low load).
    #[arg(long, default_value_t = 100)]
    spin_us: u64,
    /// Group commit window with --data-dir: after a sync, how long the store may wait for the
    /// writers it released to write again so they share the next sync; 0 never waits.
    #[arg(long, default_value_t = 500)]
    commit_window_us: u64,
    /// With --data-dir: the largest zero fill the store writes ahead of its records, so that
    /// batches overwrite blocks instead of appending (cheaper syncs); 0 turns it off.
    #[arg(long, default_value_t = 4096)]
    prefill_kib: u64,
    /// On SIGINT/SIGTERM, how long to wait for requests in flight and closing WebSockets
    /// before ending every connection left (actors are saved after that).
    #[arg(long, default_value_t = 5_000)]
    stop_grace_ms: u64,
}

/// Runs `pinion-demo` with the process arguments until SIGINT/SIGTERM.
pub fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PINION_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(error) = pinion_runtime::block_shutdown_signals() {
        eprintln!("pinion-demo: cannot block signals: {error}");
        return ExitCode::FAILURE;
    }
    if args.reshard
        && let (Some(dir), Some(shards)) = (&args.data_dir, args.shards)
        && let Err(error) = reshard(dir, shards)
    {
        eprintln!("pinion-demo: re-sharding {} failed: {error}", dir.display());
        return ExitCode::FAILURE;
    }
    let config = Config {
        listen: args.listen,
        shards: args.shards,
        base_path: args.base_path,
        data_dir: args.data_dir,
        spin_before_park: Duration::from_micros(args.spin_us),
        sleep_timeout: Duration::from_millis(args.sleep_timeout_ms),
        save_interval: Duration::from_millis(args.save_interval_ms),
        stop_grace: Duration::from_millis(args.stop_grace_ms),
        store: pinion_storage::Options {
            commit_window_max: Duration::from_micros(args.commit_window_us),
            prefill_bytes_max: args.prefill_kib << 10,
            ..pinion_storage::Options::default()
        },
        after_store_open: Some(return_free_memory),
        ..Config::default()
    };
    let server = match Server::start(crate::registry(), config) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("pinion-demo: {error}");
            if error.to_string().contains("re-shard") {
                eprintln!("pinion-demo: to re-shard, run once with --reshard --shards <new count>");
            }
            return ExitCode::FAILURE;
        }
    };
    println!(
        "pinion-demo listening on http://{} (shards: {})",
        server.local_addr(),
        server.shard_count()
    );
    match pinion_runtime::wait_for_shutdown_signal() {
        Ok(signal) => tracing::info!(signal, "stopping"),
        Err(error) => tracing::error!(%error, "cannot wait for signals; stopping"),
    }
    let stopping = std::time::Instant::now();
    match server.stop() {
        Ok(()) => {
            let elapsed_ms = stopping.elapsed().as_millis() as u64;
            tracing::info!(elapsed_ms, "stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("pinion-demo: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Moves the data directory's actors to the `to`-shard layout, if it has another one.
fn reshard(dir: &std::path::Path, to: usize) -> std::io::Result<()> {
    let mut counts: Vec<usize> = Vec::new();
    if dir.exists() {
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(count) = name
                .strip_prefix("shard-")
                .and_then(|rest| rest.split_once("-of-"))
                .and_then(|(_, count)| count.parse::<usize>().ok())
                && !counts.contains(&count)
            {
                counts.push(count);
            }
            if let Some(pair) = name.strip_prefix(".reshard-")
                && let Some((from, _)) = pair.split_once("-to-")
                && let Ok(from) = from.parse::<usize>()
                && !counts.contains(&from)
            {
                counts.push(from);
            }
        }
    }
    match counts.as_slice() {
        [] => {
            println!(
                "pinion-demo: {} holds no shards yet; nothing to re-shard",
                dir.display()
            );
            Ok(())
        }
        [from] if *from == to => {
            println!("pinion-demo: {} already has {to} shards", dir.display());
            Ok(())
        }
        [from] => {
            println!(
                "pinion-demo: re-sharding {} from {from} to {to} shards...",
                dir.display()
            );
            let report =
                pinion_storage::reshard_blocking(dir.to_path_buf(), *from, to, move |id| {
                    ActorId(id).shard(to)
                })?;
            println!(
                "pinion-demo: moved {} records in {:.2} s",
                report.records,
                report.elapsed.as_secs_f64()
            );
            Ok(())
        }
        several => Err(std::io::Error::other(format!(
            "the data directory holds several shard layouts ({several:?}); move the extra ones away"
        ))),
    }
}

/// Returns the memory the calling thread's heap holds free to the OS now: after recovery, whose
/// read buffers and index-building scratch are freed by then, a shard's resident memory drops to
/// what its actors need (mimalloc, the binary's allocator, would otherwise keep it until the
/// thread allocates again).
fn return_free_memory() {
    // Links mimalloc into every binary that links this function, including ones (tests) whose
    // global allocator is another: `mi_collect` then finds an empty heap and returns.
    extern crate mimalloc as _;
    unsafe extern "C" {
        /// mimalloc's `mi_collect`: collects the calling thread's heap; `force` also frees
        /// the pages it holds in reserve.
        fn mi_collect(force: bool);
    }
    // SAFETY: a plain call into the allocator linked into this binary (`main.rs` installs
    // mimalloc as the global allocator); it takes no pointers and only affects the calling
    // thread's heap.
    unsafe { mi_collect(true) }
}
