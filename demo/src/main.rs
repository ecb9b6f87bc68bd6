//! `pinion-demo`: serves the reference actor set on 127.0.0.1:6420 (see `pinion_demo::cli`).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    pinion_demo::cli::main()
}
