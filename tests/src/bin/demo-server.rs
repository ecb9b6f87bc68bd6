//! `pinion-demo` as a binary of this package, so that its integration tests can run the server
//! as a child process (and `kill -9` it): Cargo gives a package's tests the paths of its own
//! binaries only.

fn main() -> std::process::ExitCode {
    pinion_demo::cli::main()
}
