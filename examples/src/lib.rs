//! Shared plumbing of the example binaries (`src/bin/*.rs`): the command-line flags every example
//! takes, starting and stopping its [`Server`], and [`Driver`], a small blocking HTTP/1.1 client of
//! the RivetKit protocol with which each example drives its own actors, so that it runs end to end
//! without Node.
//!
//! An example's `main` is `pinion_examples::run(name, registry, &flags, |driver| ...)`: the server
//! starts on 127.0.0.1 (`--port`, default 0 = any free port, printed), the closure drives it and
//! prints what happens, then the server stops and the process exits 0 (1 if the driver failed).
//! With `--serve` the server keeps serving after the drive, until SIGINT/SIGTERM, so that the
//! actors can be explored with curl or the official client.

use std::any::TypeId;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use pinion_runtime::{ActorId, Config, Registry, Server, Value, key, value};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The flags every example takes (flatten them into the example's own `clap` struct).
#[derive(clap::Args, Debug, Clone)]
pub struct Flags {
    /// Port to listen on (127.0.0.1); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Number of shards; default: one per CPU this process may use.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Keep serving after the drive, until Ctrl-C, instead of stopping.
    #[arg(long)]
    pub serve: bool,
}

/// The drive's error: anything, printed by [`run`].
pub type Error = Box<dyn std::error::Error>;

/// Starts `registry` as flags say, runs `drive` against it, then stops it (or serves on with
/// `--serve`). Returns the process's exit code.
pub fn run(
    name: &str,
    registry: Registry,
    flags: &Flags,
    drive: impl FnOnce(&mut Driver) -> Result<(), Error>,
) -> ExitCode {
    // Signals must be blocked before the shards' threads start, which inherit the mask.
    if flags.serve
        && let Err(error) = pinion_runtime::block_shutdown_signals()
    {
        eprintln!("{name}: cannot block signals: {error}");
        return ExitCode::FAILURE;
    }
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], flags.port)),
        shards: flags.shards,
        ..Config::default()
    };
    let server = match Server::start(registry, config) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("{name}: cannot start the server: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{name} listening on http://{} (shards: {})",
        server.local_addr(),
        server.shard_count()
    );
    let outcome = Driver::connect(server.local_addr(), server.shard_count())
        .map_err(Error::from)
        .and_then(|mut driver| drive(&mut driver));
    let mut code = ExitCode::SUCCESS;
    if let Err(error) = outcome {
        eprintln!("{name}: {error}");
        code = ExitCode::FAILURE;
    } else if flags.serve {
        println!(
            "{name}: serving on http://{} until Ctrl-C",
            server.local_addr()
        );
        if let Err(error) = pinion_runtime::wait_for_shutdown_signal() {
            eprintln!("{name}: cannot wait for signals: {error}");
        }
    }
    if let Err(error) = server.stop() {
        eprintln!("{name}: {error}");
        return ExitCode::FAILURE;
    }
    println!("{name}: server stopped");
    code
}

/// The shard that owns actor `name` with key `parts` on a server with `shards` shards: the
/// placement function every shard computes ([`ActorId::derive`] over the canonical key string,
/// then jump consistent hashing).
pub fn shard_of(name: &str, parts: &[&str], shards: usize) -> usize {
    actor_id(name, parts).shard(shards)
}

/// The id of actor `name` with key `parts` (a hash of the two, so stable across restarts).
pub fn actor_id(name: &str, parts: &[&str]) -> ActorId {
    let parts: Vec<String> = parts.iter().map(|part| part.to_string()).collect();
    ActorId::derive(name, &key::serialize(&parts))
}

/// A failed request: the error body the server answered (`{group, code, message}`), or a
/// transport problem.
#[derive(Debug)]
pub struct Failed {
    pub status: u16,
    pub group: String,
    pub code: String,
    pub message: String,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} ({}): {}",
            self.group, self.code, self.status, self.message
        )
    }
}

impl std::error::Error for Failed {}

impl Failed {
    fn client(message: impl fmt::Display) -> Failed {
        Failed {
            status: 0,
            group: "client".into(),
            code: "error".into(),
            message: message.to_string(),
        }
    }
}

impl From<io::Error> for Failed {
    fn from(error: io::Error) -> Failed {
        Failed::client(error)
    }
}

/// A blocking client of the RivetKit HTTP protocol on one keep-alive connection: `PUT /actors`
/// to resolve (getOrCreate) an actor by name and key, `POST /gateway/{id}/action/{name}` with
/// `{"args":[...]}` to call it.
pub struct Driver {
    stream: TcpStream,
    received: Vec<u8>,
    shards: usize,
}

impl Driver {
    pub fn connect(addr: SocketAddr, shards: usize) -> io::Result<Driver> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        // Longer than the server's action deadline (60 s), so a slow action fails there first.
        stream.set_read_timeout(Some(Duration::from_secs(90)))?;
        Ok(Driver {
            stream,
            received: Vec::new(),
            shards,
        })
    }

    /// The server's shard count.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The shard that owns actor `name` with key `parts` on this server.
    pub fn shard_of(&self, name: &str, parts: &[&str]) -> usize {
        shard_of(name, parts, self.shards)
    }

    /// `PUT /actors`: the id of actor `name` with key `parts`, created if absent.
    pub fn get_or_create(&mut self, name: &str, parts: &[&str]) -> Result<String, Failed> {
        #[derive(Serialize)]
        struct Body<'a> {
            name: &'a str,
            key: String,
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            actor: Resolved,
        }
        #[derive(serde::Deserialize)]
        struct Resolved {
            actor_id: String,
        }
        let parts: Vec<String> = parts.iter().map(|part| part.to_string()).collect();
        let mut body = Vec::new();
        value::write_tagged(
            &mut body,
            &Body {
                name,
                key: key::serialize(&parts),
            },
        )
        .map_err(Failed::client)?;
        let mut answer = self.request("PUT", "/actors?namespace=default", &body)?;
        let answer: Answer = value::parse_tagged(&mut answer).map_err(Failed::client)?;
        Ok(answer.actor.actor_id)
    }

    /// `POST /gateway/{actor_id}/action/{action}` with `args` (a tuple: `(a, b)`, `()` for none);
    /// decodes the output into `R` (`Value` for anything, `()` for none).
    pub fn call<R: DeserializeOwned, A: Serialize + 'static>(
        &mut self,
        actor_id: &str,
        action: &str,
        args: A,
    ) -> Result<R, Failed> {
        let mut body = b"{\"args\":".to_vec();
        if TypeId::of::<A>() == TypeId::of::<()>() {
            // No arguments: `[]` (serde writes `()` as `null`, which would be one argument).
            body.extend_from_slice(b"[]");
        } else {
            value::write_args(&mut body, &args).map_err(Failed::client)?;
        }
        body.push(b'}');
        let mut answer = self.request(
            "POST",
            &format!("/gateway/{actor_id}/action/{action}"),
            &body,
        )?;
        // `{"output": …}`, or `{}` when the action returned nothing.
        let answer: Value = value::parse_tagged(&mut answer).map_err(Failed::client)?;
        let output = answer.get("output").cloned().unwrap_or(Value::Null);
        value::from_value(&output).map_err(|error| {
            Failed::client(format!("{action}: unexpected output {output:?}: {error}"))
        })
    }

    /// Sends one request and returns the body of a 2xx answer; any other status is the error
    /// the body describes.
    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Vec<u8>, Failed> {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.stream.write_all(&request)?;
        let (status, mut body) = self.read_response()?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            group: String,
            code: String,
            message: String,
        }
        Err(match value::parse_tagged::<ErrorBody>(&mut body) {
            Ok(error) => Failed {
                status,
                group: error.group,
                code: error.code,
                message: error.message,
            },
            Err(_) => Failed {
                status,
                group: "http".into(),
                code: status.to_string(),
                message: String::from_utf8_lossy(&body).into_owned(),
            },
        })
    }

    /// Reads one response (status line, headers, `content-length` body).
    fn read_response(&mut self) -> Result<(u16, Vec<u8>), Failed> {
        loop {
            if let Some(end) = find(&self.received, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.received[..end])
                    .map_err(|_| Failed::client("a response head that is not UTF-8"))?;
                let mut lines = head.split("\r\n");
                let status = lines
                    .next()
                    .and_then(|line| line.split(' ').nth(1))
                    .and_then(|code| code.parse::<u16>().ok())
                    .ok_or_else(|| Failed::client(format!("bad status line in {head:?}")))?;
                let length = lines
                    .filter_map(|line| line.split_once(':'))
                    .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, value)| value.trim().parse::<usize>().ok())
                    .ok_or_else(|| Failed::client("a response without content-length"))?;
                let start = end + 4;
                if self.received.len() >= start + length {
                    let body = self.received[start..start + length].to_vec();
                    self.received.drain(..start + length);
                    return Ok((status, body));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(Failed::client("the server closed the connection"));
            }
            self.received.extend_from_slice(&chunk[..n]);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Milliseconds, for printing a duration.
pub fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}
