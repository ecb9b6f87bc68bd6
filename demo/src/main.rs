//! `pinion-demo`: serves the reference actor set on 127.0.0.1:6420.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pinion_runtime::{Config, Server};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serves RivetKit's reference actor set (counter, profile, ...) over the RivetKit 2.0 protocol.
#[derive(Parser)]
#[command(
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
    /// Directory for the shards' files (storage is in memory in this version).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Prefix of every route, e.g. /api/rivet.
    #[arg(long, default_value = "/")]
    base_path: String,
    /// Microseconds an idle shard polls for work before it parks; 0 parks at once (lowest idle
    /// CPU, highest wake-up latency at low load).
    #[arg(long, default_value_t = 100)]
    spin_us: u64,
}

fn main() -> ExitCode {
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
    let config = Config {
        listen: args.listen,
        shards: args.shards,
        base_path: args.base_path,
        data_dir: args.data_dir,
        spin_before_park: std::time::Duration::from_micros(args.spin_us),
        ..Config::default()
    };
    let server = match Server::start(pinion_demo::registry(), config) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("pinion-demo: {error}");
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
    match server.stop() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pinion-demo: {error}");
            ExitCode::FAILURE
        }
    }
}
