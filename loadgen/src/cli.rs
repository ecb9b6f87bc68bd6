//! Command line: two subcommands sharing the load options.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::keys::{self, KeyDist};
use crate::plot::YScale;
use crate::socket::BUSY_POLL_CONNECTIONS_MAX;

const EXAMPLES: &str = "\
Examples:
  # 64 connections increment one counter actor for 10 s after a 1 s warmup
  loadgen action --endpoint http://127.0.0.1:6420 --actor counter --key bench \\
      --action increment --args '[1]' --connections 64 --duration 10s --warmup 1s

  # the same through a base path, with a two-part key [\"tenant\", \"a/b\"]
  loadgen action --endpoint http://127.0.0.1:3000/api/rivet --actor counter \\
      --key-part tenant --key-part a/b --action increment --args '[1]'

  # open loop: 20000 req/s in total over 64 connections, at most 16 in flight per connection
  loadgen action --endpoint http://127.0.0.1:6420 --actor counter --key bench \\
      --action increment --rate 20000 --max-in-flight 16 --duration 30s --warmup 2s

  # 10000 actors bench-0..bench-9999, requests spread uniformly / Zipf-skewed (s = 1.1)
  loadgen action --actor counter --key bench --action increment --keys 10000 --key-dist uniform
  loadgen action --actor counter --key bench --action increment --keys 10000 \\
      --key-dist zipf:1.1 --seed 7

  # resolve on every call, like the official client's stateless handles (PUT, then POST)
  loadgen action --actor counter --key bench --action increment --resolve-each

  # nginx `return 200` for comparison, stop after 100000 requests, keep the results
  loadgen raw --url http://127.0.0.1:8080/ --connections 64 --requests 100000 \\
      --json out.json --hgrm out.hgrm --plot out.svg

  # overlay several runs' latency percentile distributions (see `loadgen plot --help`)
  loadgen plot --out cmp.svg nginx=nginx.json pinion=pinion.json

  # two executors (threads) on CPUs 1-2, 4 requests in flight per connection
  taskset -c 1,2 loadgen raw --url http://127.0.0.1:8080/ --threads 2 --pipeline 4

  # open loop against nginx at 50000 req/s
  loadgen raw --url http://127.0.0.1:8080/ --rate 50000 --duration 20s --warmup 2s

  # actions over connection WebSockets, 8 in flight per connection (see `loadgen ws --help`)
  loadgen ws --actor counter --key bench --action increment --args '[1]' --in-flight 8

  # broadcast fan-out to 1000 subscribers (see `loadgen fanout --help`)
  loadgen fanout --actor counter --key bench --subscribers 1000 --rounds 20

  # round-trip latency without loadgen's wake-up cost: one busy-polling connection on CPU 0
  taskset -c 0 loadgen action --busy-poll --connections 1 --actor counter --key bench \\
      --action increment --args '[1]' --duration 10s --warmup 2s

  # glommio executors poll 50 µs before they park (default 200; 0 parks at once)
  loadgen raw --url http://127.0.0.1:8080/ --connections 4 --spin-us 50

Durations: 500ms, 10s, 1m, 1m30s, 1.5s (units: us, ms, s, m, h).

Counting: `requests` = `ok` (2xx) + request errors (non-2xx status, timeout, reset, closed,
parse, io). Connect failures are errors too but not requests. With --requests N exactly N
measured requests are sent in total, unless --duration ends the run first. Requests still in
flight at the deadline are abandoned and not counted; warmup requests are never counted.
Latency covers 2xx responses only and ends when the whole response is read. Throughput =
requests / measured duration.

Closed loop (the default): each connection writes --pipeline requests, reads their responses
and repeats. Latency runs from writing a request (a pipelined batch) to reading its response,
so a slow server also slows the load (coordinated omission).

Busy polling (--busy-poll, closed loop only): each connection runs on its own OS thread instead
of a glommio executor, with a nonblocking TCP_NODELAY socket: it writes its request(s) and spins
on recv(MSG_DONTWAIT) (no sleeping, no epoll) until the responses are in. A parked executor
takes tens of µs to wake up on a VM, which the default mode measures as latency at low load
(--spin-us narrows that); a busy-polling connection sees a response within one recv of its
arrival. Each connection burns a full core: use 1 (at most 16) connections, with loadgen pinned
to a CPU of its own (taskset -c 0) and the server on others. --threads does not apply; the rest
(--pipeline, --in-flight, --warmup, --duration, --requests, --timeout, counting, reports) is as
in the closed loop, and the JSON summary says `\"busy_poll\": true`.

Open loop (--rate R): request j of the run (over all connections) is due at start + j/R;
connection g of C sends requests g, g+C, g+2C, ... (R/C per second each), pipelined on its
keep-alive connection, whatever the responses do. Latency runs from the INTENDED send time,
so a stall shows in the percentiles even for requests that were not sent during it (as wrk2
does). A connection keeps at most --max-in-flight K requests unanswered; when a request falls
due with K outstanding it waits, and goes out as soon as a response frees a place (the
schedule is kept: later requests do not move, and latency still counts from the intended
time); such requests are `late_sends`. While a connection is down, due requests are queued
(up to K) and sent on reconnect; a response that closes the connection loses the requests
already written after it (`closed` errors), while those not yet written go to the next one.
--timeout applies to the oldest unanswered request of a connection, from its writing; when it
expires the connection is closed and its written requests fail as `timeout`. Each
connection's schedule starts at its first connection (earlier slots are setup and skipped);
slots due during --warmup are warmup. With --requests N the first N measured slots are sent
and the run ends once they are answered. `sent` counts measured requests handed to a
connection, `achieved_rate` = sent / measured duration, and `send_lag_us` is how long after
its intended time each was sent (the bound, reconnects and loadgen's own wake-up delay, which
is also in the latencies). Requests due but never sent by the deadline count nowhere except
as the gap between `rate` and `achieved_rate`.

Keys (action): --keys N with --key-dist uniform or zipf[:S] spreads the load over N actors with
keys PREFIX-0 .. PREFIX-(N-1) (PREFIX is --key, default `key`), each resolved once up front
(PUT /actors, in parallel); every request then picks its actor: uniformly, or by Zipf's law
(PREFIX-0 is the most frequent; rank r has weight 1/r^S, S = 0.99 by default), from a
generator seeded by --seed and the connection's index (deterministic per connection); the
report's url then has `*` for the actor id and actor_id is null. The default, hot, loads the
single actor named by --key/--key-part as given.

Resolve on every call (action, --resolve-each): each request is a PUT /actors (getOrCreate)
followed, once it is answered 2xx, by the action POST on the same connection, as the official
client's stateless handles do. The pair counts as one request and one latency sample (from
writing the PUT, or its intended time, to the end of the POST's response); a non-2xx PUT
fails the pair with its status and no POST is sent. The POST uses the actor id resolved up
front (the PUT's body is not parsed during the load).

JSON summary (--json), besides the fields of the text report: `loop` (\"closed\" or \"open\"),
`rate` and `max_in_flight` (open loop), `pipeline` (closed loop), `sent`, `achieved_rate`,
`late_sends` and `send_lag_us` {p50, p99, max} (open loop), `busy_poll`, and for action `keys`,
`key_dist`, `seed`, `resolve_each`; a field that does not apply is null. `mode` is the
subcommand. `percentiles_us` lists [percentile, µs] pairs every tenth of a nine from 0 % to
99.999 %, then [100, max]: enough to plot the distribution (`loadgen plot`).

Progress: on a terminal (stderr), a line once a second with the elapsed time, the phase,
requests, errors, the rate over the last second and the running p99 of the measured requests
so far (with several threads, the highest of their p99s); nothing when stderr is not a
terminal or with --quiet.

Exit status: 0 when the run completed (even with errors), 1 for setup errors (bad URL,
unreachable endpoint, actor resolution failed), 2 for command-line errors.";

const PLOT_HELP: &str = "\
Examples:
  # the runs' --json summaries (or .hgrm files) overlaid, labelled by file name
  loadgen plot --out latency.svg nginx.json pinion.json

  # explicit labels, a title and a linear latency axis
  loadgen plot -o cmp.svg --title 'counter.increment, 64 connections' --y linear \\
      'nginx return 200=out/nginx.json' 'pinion=out/pinion.json' 'redis=out/redis.hgrm'

x is the percentile on a log scale of nines (0 %, 90 %, 99 %, 99.9 %, 99.99 % equally spaced),
y the latency (log scale by default). Each curve joins the run's percentile points: from a JSON
summary its `percentiles_us` (every tenth of a nine), or from an older summary without it the
p50/p90/p99/p99.9/max of `latency_us`; from an .hgrm file every row. The legend gives each
run's p50, p99 and p99.9.";

const WS_HELP: &str = "\
Examples:
  # 4 connections to one counter actor, 8 actions in flight on each, 10 s after a 1 s warmup
  loadgen ws --endpoint http://127.0.0.1:6420 --actor counter --key bench \\
      --action increment --args '[1]' --connections 4 --in-flight 8 --duration 10s --warmup 1s

  # open loop: 5000 actions/s over 16 connections, at most 32 unanswered per connection
  loadgen ws --actor counter --key bench --action increment --args '[1]' \\
      --connections 16 --rate 5000 --max-in-flight 32 --duration 30s --warmup 2s

  # the round-trip latency of one action at a time, without loadgen's wake-up cost: one
  # busy-polling connection, loadgen on CPU 0 (see --busy-poll in `loadgen action --help`)
  taskset -c 0 loadgen ws --busy-poll --connections 1 --actor counter --key bench \\
      --action increment --args '[1]' --duration 10s --warmup 2s

  # 64 connections spread over 1000 actors (each connection picks its actor by Zipf's law),
  # two executors, 100000 actions, results kept
  loadgen ws --actor counter --key bench --action increment --keys 1000 --key-dist zipf \\
      --connections 64 --threads 2 --requests 100000 --json ws.json --hgrm ws.hgrm

The actors are resolved up front (PUT /actors getOrCreate, once per key). Each connection picks
its actor (by --key-dist, again on every reconnect), opens
GET {base}/gateway/{actorId}/connect as a WebSocket offering the subprotocols `rivet,
rivet_encoding.json` (plus `rivet_conn_params.<params>` with --conn-params), requires the 101
to select `rivet`, and waits for the Init frame (which must name the actor). Then it sends
ActionRequest text frames (masked) with ids [\"$BigInt\",\"0\"], [\"$BigInt\",\"1\"], ... and
matches each ActionResponse, or Error frame with that actionId, to its request by id, in any
order. Event frames are counted and otherwise ignored; pings are answered.

Counting: `requests` = `ok` (ActionResponse) + request errors: `action_error` (an Error frame
for the action; its group/code is listed under `action_errors`), `timeout`, `closed`, `reset`,
`io`, `protocol` (a frame or message that breaks RFC 6455 or the RivetKit protocol, such as a
response to an id that is not in flight; the connection is dropped). Failed connections count
as errors but not requests: `connect*`, `handshake_status_<status>` (upgrade refused),
`handshake` (bad 101, no Init in time, rejected before Init). When a connection fails, every
action written to it fails and a new connection is opened at once (ids from 0 again); a failed
connect or handshake is retried after 50 ms.

Closed loop (default): each connection keeps --in-flight actions outstanding, sending a new one
as soon as one is answered; latency runs from writing an action to reading its response.
Open loop (--rate R): as for `action` (see `loadgen action --help`): action j of the run is
due at start + j/R, latency runs from that intended time, at most --max-in-flight are
outstanding per connection (later ones go out late), and actions due while a connection is
being (re)opened are queued and sent after its Init.

--timeout applies to the oldest unanswered action of a connection and to each handshake (101
and Init); --connect-timeout to the TCP connect. `handshake_us` is connect → Init for every
connection opened (warmup included). Requests in flight at the deadline are abandoned.

The open-file limit is raised to its hard limit when the connections need it. The JSON summary
is that of `action` plus `ws`: {action, in_flight, events, connection_errors, action_errors,
handshake_us, first_failure}.

Exit status: 0 when the run completed (even with errors), 1 for setup errors, 2 for
command-line errors.";

const FANOUT_HELP: &str = "\
Examples:
  # 1000 subscribers to counter \"bench\"'s `count` event, 20 rounds of increment(1) 100 ms apart
  loadgen fanout --endpoint http://127.0.0.1:6420 --actor counter --key bench \\
      --subscribers 1000 --event count --action increment --args '[1]' --rounds 20

  # 10000 subscribers on two executors, results kept for plotting
  loadgen fanout --actor counter --key fan --subscribers 10000 --threads 2 --rounds 50 \\
      --interval 200ms --json fanout.json --hgrm delivery.hgrm --hgrm-last last.hgrm

How a run goes: the actor is resolved once (PUT /actors). A trigger WebSocket connection is
opened first (not subscribed; it fails the run at once if connections do not work). Then the
M subscribers connect (at most --setup-concurrency at a time; failed attempts are retried
until --setup-timeout), each waits for its Init and sends SubscriptionRequest{eventName,
subscribe: true}. Once all are subscribed, warm-up rounds run until one reaches every
subscriber (subscriptions have no acknowledgement, so this is how loadgen knows they are all in
effect), then the measured rounds. Rounds run in lockstep: the trigger sends the action, waits
for its ActionResponse and for the event at all M subscribers, pauses --interval, and triggers
the next round.

Measured: `delivery_us`, for every subscriber in every measured round, the time from writing
the trigger's ActionRequest to reading that subscriber's Event frame; `last_us`, per complete
round, the time until the LAST subscriber had it; `trigger_us`, the trigger's action latency.
An event counts for the round that is open when it arrives, once per subscriber; an event while
no round is open, or a second one in a round, is `unexpected` (someone else is triggering the
actor, or it broadcasts more than once). Every subscriber must receive the same args in a round
(`mismatched` counts those that did not).

A round that is not complete within --timeout leaves `missing` deliveries and ends the run;
the report is still printed and loadgen exits with status 1, as it does for mismatched args, a
subscriber that lost its connection, or a failed trigger. Other exit statuses: 0 when every
delivery arrived, 2 for command-line errors.

Limits: each subscriber is one socket: the open-file limit is raised to its hard limit when
needed, and loadgen refuses to start when M exceeds it. Over one loopback address about 28000
connections fit the default ephemeral port range.

The JSON summary has the counts above, `delivery_us`, `last_delivery_us`, `trigger_us` and
`handshake_us` (connect → Init; microseconds), the setup time and per-round results
(`rounds_detail`). --hgrm writes the per-delivery distribution, --hgrm-last the per-round
last-delivery one (milliseconds, HdrHistogram's .hgrm format).";

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Closed- or open-loop HTTP/1.1 and RivetKit WebSocket load generator for Pinion (and the servers it is compared with)",
    after_help = EXAMPLES
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Microseconds each loadgen executor polls for completions before it parks. Waking a
    /// parked core costs tens of microseconds on a VM, which would otherwise be measured as
    /// server latency at low load; costs CPU only while waiting. 0 parks at once.
    #[arg(long, global = true, default_value_t = 200)]
    pub(crate) spin_us: u64,
}

impl Cli {
    /// Parses the command line, exiting as clap does on an error (status 2), including the
    /// checks clap's attributes cannot express.
    pub(crate) fn parse_checked() -> Cli {
        let cli = Cli::parse();
        if let Err(error) = cli.check() {
            error.exit();
        }
        cli
    }

    fn check(&self) -> Result<(), clap::Error> {
        let Some(load) = self.command.load() else {
            return Ok(());
        };
        if load.busy_poll && load.connections > BUSY_POLL_CONNECTIONS_MAX {
            return Err(Cli::command().error(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "--busy-poll runs at most {BUSY_POLL_CONNECTIONS_MAX} connections (each \
                     spins a whole core), not --connections {}; it is meant for \
                     --connections 1 with loadgen pinned to its own CPU (taskset -c 0)",
                    load.connections
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Resolve a RivetKit actor (PUT /actors) and load one of its actions over HTTP.
    #[command(after_help = EXAMPLES)]
    Action(ActionArgs),
    /// Load any URL with a fixed request.
    #[command(after_help = EXAMPLES)]
    Raw(RawArgs),
    /// Resolve a RivetKit actor and load one of its actions over connection WebSockets
    /// (GET /gateway/{id}/connect), several actions in flight per connection.
    #[command(after_help = WS_HELP)]
    Ws(WsArgs),
    /// Broadcast fan-out: M subscriber WebSockets on one actor, a trigger action per round;
    /// latency from the trigger to every subscriber's Event.
    #[command(after_help = FANOUT_HELP)]
    Fanout(FanoutArgs),
    /// Overlay the latency percentile distributions of several runs (their --json summaries
    /// or .hgrm files) in one SVG plot.
    #[command(after_help = PLOT_HELP)]
    Plot(PlotArgs),
}

impl Command {
    /// The load options, for the subcommands that have them.
    pub(crate) fn load(&self) -> Option<&LoadArgs> {
        match self {
            Command::Action(args) => Some(&args.load),
            Command::Raw(args) => Some(&args.load),
            Command::Ws(args) => Some(&args.load),
            Command::Fanout(_) | Command::Plot(_) => None,
        }
    }
}

/// The actor(s) and the action that `action` and `ws` load.
#[derive(Debug, Args)]
pub(crate) struct ActorArgs {
    /// RivetKit endpoint; a path in it is a base path for every request.
    #[arg(long, default_value = "http://127.0.0.1:6420")]
    pub(crate) endpoint: String,
    /// Namespace for the manager API (`?namespace=`).
    #[arg(long, default_value = "default")]
    pub(crate) namespace: String,
    /// Actor name (the registry's actor type).
    #[arg(long)]
    pub(crate) actor: String,
    /// Actor key with one part, like getOrCreate("bench"). No key at all is the empty key.
    /// With --key-dist uniform or zipf, the prefix of the --keys actors' keys.
    #[arg(long, conflicts_with = "key_part")]
    pub(crate) key: Option<String>,
    /// One part of a multi-part key; repeat in order.
    #[arg(long = "key-part", value_name = "PART")]
    pub(crate) key_part: Vec<String>,
    /// Action name.
    #[arg(long)]
    pub(crate) action: String,
    /// Action arguments as a JSON array.
    #[arg(long, default_value = "[]")]
    pub(crate) args: String,
    /// Connection params (JSON text): the `x-rivet-conn-params` header (action), the
    /// `rivet_conn_params.` subprotocol (ws).
    #[arg(long, value_name = "JSON")]
    pub(crate) conn_params: Option<String>,
    /// Extra header `name: value` on every request (action; for ws on the PUT /actors and the
    /// WebSocket upgrade); repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = parse_header)]
    pub(crate) headers: Vec<(String, String)>,
    /// Spread the load over N actors with keys `PREFIX-0` .. `PREFIX-(N-1)` (PREFIX from
    /// --key, default `key`), each resolved once up front; needs --key-dist uniform or zipf.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub(crate) keys: u64,
    /// How the load picks its actor (each request for action, each connection for ws): `hot`
    /// (the one --key/--key-part actor), `uniform` over the --keys actors, or `zipf[:S]`
    /// (rank r ∝ 1/r^S, S default 0.99; PREFIX-0 hottest).
    #[arg(long, value_name = "DIST", default_value = "hot", value_parser = keys::parse_key_dist)]
    pub(crate) key_dist: KeyDist,
    /// Seed of the key choice (each connection's sequence is deterministic per seed).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
}

#[derive(Debug, Args)]
pub(crate) struct ActionArgs {
    #[command(flatten)]
    pub(crate) target: ActorArgs,
    /// Every request is `PUT /actors` then the action POST on the same connection (like the
    /// official client's stateless handles); the pair is one request and one latency sample.
    #[arg(long)]
    pub(crate) resolve_each: bool,
    /// Closed loop: requests written back to back per connection before reading their responses.
    #[arg(long, default_value_t = 1, conflicts_with = "rate", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) pipeline: u32,
    #[command(flatten)]
    pub(crate) load: LoadArgs,
}

#[derive(Debug, Args)]
pub(crate) struct WsArgs {
    #[command(flatten)]
    pub(crate) target: ActorArgs,
    /// Closed loop: actions kept outstanding on each connection; a new one is sent as soon as
    /// one is answered (responses are matched by id, in any order).
    #[arg(long, value_name = "K", default_value_t = 1, conflicts_with = "rate", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub(crate) in_flight: u32,
    #[command(flatten)]
    pub(crate) load: LoadArgs,
}

#[derive(Debug, Args)]
pub(crate) struct FanoutArgs {
    /// RivetKit endpoint; a path in it is a base path for every request.
    #[arg(long, default_value = "http://127.0.0.1:6420")]
    pub(crate) endpoint: String,
    /// Namespace for the manager API (`?namespace=`).
    #[arg(long, default_value = "default")]
    pub(crate) namespace: String,
    /// Actor name (the registry's actor type); one actor, resolved once.
    #[arg(long)]
    pub(crate) actor: String,
    /// Actor key with one part. No key at all is the empty key.
    #[arg(long, conflicts_with = "key_part")]
    pub(crate) key: Option<String>,
    /// One part of a multi-part key; repeat in order.
    #[arg(long = "key-part", value_name = "PART")]
    pub(crate) key_part: Vec<String>,
    /// Subscriber WebSocket connections, spread over the threads.
    #[arg(long, short = 'm', value_name = "M", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) subscribers: u32,
    /// Event every subscriber subscribes to (and the trigger action broadcasts).
    #[arg(long, default_value = "count")]
    pub(crate) event: String,
    /// Action the trigger connection calls once per round.
    #[arg(long, default_value = "increment")]
    pub(crate) action: String,
    /// The trigger action's arguments as a JSON array.
    #[arg(long, default_value = "[1]")]
    pub(crate) args: String,
    /// Measured rounds.
    #[arg(long, short = 'r', value_name = "R", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) rounds: u32,
    /// Unmeasured rounds first; the last must reach every subscriber (up to 10 more are tried).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) warmup_rounds: u32,
    /// Pause between the end of a round (all deliveries in) and the next trigger.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub(crate) interval: Duration,
    /// Longest wait for a round's trigger response and all its deliveries (a round still
    /// incomplete then has missing deliveries and ends the run); also bounds each handshake.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// Longest wait for a TCP connection.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) connect_timeout: Duration,
    /// Longest wait for all subscribers to connect and subscribe (failed attempts are retried
    /// until then).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(crate) setup_timeout: Duration,
    /// Subscriber connections being opened at once, over all threads.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) setup_concurrency: u32,
    /// Connection params (JSON text), sent as the `rivet_conn_params.` subprotocol.
    #[arg(long, value_name = "JSON")]
    pub(crate) conn_params: Option<String>,
    /// Extra header `name: value` on the PUT /actors and every WebSocket upgrade; repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = parse_header)]
    pub(crate) headers: Vec<(String, String)>,
    /// Executors (threads) for the subscribers (pinning is left to taskset).
    #[arg(long, short = 't', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) threads: u32,
    /// Write a JSON summary to this file.
    #[arg(long, value_name = "PATH")]
    pub(crate) json: Option<PathBuf>,
    /// Write the per-delivery latency distribution (milliseconds) in .hgrm format.
    #[arg(long, value_name = "PATH")]
    pub(crate) hgrm: Option<PathBuf>,
    /// Write the per-round last-delivery latency distribution (milliseconds) in .hgrm format.
    #[arg(long, value_name = "PATH")]
    pub(crate) hgrm_last: Option<PathBuf>,
    /// Print nothing but errors (results still go to --json / --hgrm).
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PlotArgs {
    /// The SVG file to write.
    #[arg(long, short = 'o', value_name = "FILE.svg")]
    pub(crate) out: PathBuf,
    /// Title above the plot.
    #[arg(long)]
    pub(crate) title: Option<String>,
    /// Latency axis scale.
    #[arg(long, value_enum, default_value_t = YScale::Log)]
    pub(crate) y: YScale,
    /// Runs to overlay, in legend order: `PATH` (labelled by its file name) or `LABEL=PATH`;
    /// each a --json summary of action/raw/ws or an .hgrm file (values in milliseconds).
    #[arg(value_name = "[LABEL=]FILE", required = true)]
    pub(crate) inputs: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RawArgs {
    /// Target URL (http only).
    #[arg(long)]
    pub(crate) url: String,
    /// Request method.
    #[arg(long, default_value = "GET", value_parser = parse_method)]
    pub(crate) method: String,
    /// Request body (a content-length is added).
    #[arg(long)]
    pub(crate) body: Option<String>,
    /// Extra header `name: value`; repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = parse_header)]
    pub(crate) headers: Vec<(String, String)>,
    /// Closed loop: requests written back to back per connection before reading their responses.
    #[arg(long, default_value_t = 1, conflicts_with = "rate", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) pipeline: u32,
    #[command(flatten)]
    pub(crate) load: LoadArgs,
}

#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// Keep-alive connections, spread over the threads.
    #[arg(long, short = 'c', default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) connections: u32,
    /// Measured run time (after the warmup).
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Stop after this many measured requests in total (the duration still bounds the run).
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) requests: Option<u64>,
    /// Load before measuring; excluded from every number but CPU time.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// Executors (threads), each with its share of the connections (pinning is left to taskset).
    #[arg(long, short = 't', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) threads: u32,
    /// Open loop: send R requests per second in total, at fixed intended times spread evenly
    /// over the connections, and measure latency from those times (see "Open loop" below).
    #[arg(long, value_name = "R", value_parser = parse_rate)]
    pub(crate) rate: Option<f64>,
    /// Open loop: most unanswered requests per connection; a request due beyond it waits for a
    /// response and goes out late (its latency still counts from its intended time).
    #[arg(long, value_name = "K", default_value_t = 64, requires = "rate", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub(crate) max_in_flight: u32,
    /// Closed loop only: each connection on its own OS thread (not glommio) that writes its
    /// request(s) and spins on a nonblocking TCP_NODELAY socket (`recv(MSG_DONTWAIT)`, no
    /// sleeping, no epoll) until the responses are in, so the latency has no wake-up of loadgen
    /// in it. Each connection burns a full core: meant for 1 (or a few, at most 16) connections
    /// with loadgen pinned to its own CPU (`taskset -c 0`); --threads does not apply.
    #[arg(long, conflicts_with_all = ["rate", "threads"])]
    pub(crate) busy_poll: bool,
    /// Longest wait for the responses to a request (or a pipelined batch).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// Longest wait for a TCP connection.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) connect_timeout: Duration,
    /// Write a JSON summary to this file.
    #[arg(long, value_name = "PATH")]
    pub(crate) json: Option<PathBuf>,
    /// Write the latency distribution (milliseconds) in HdrHistogram's .hgrm text format.
    #[arg(long, value_name = "PATH")]
    pub(crate) hgrm: Option<PathBuf>,
    /// Write an SVG plot of the latency percentile distribution (x: percentile on a log scale
    /// of nines up to 99.99 %, y: latency on a log scale). `loadgen plot` overlays several runs
    /// from their --json summaries.
    #[arg(long, value_name = "FILE.svg")]
    pub(crate) plot: Option<PathBuf>,
    /// Print nothing but errors (results still go to --json / --hgrm / --plot).
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
}

impl LoadArgs {
    /// Threads the load runs on: --threads, or one per connection with --busy-poll.
    pub(crate) fn executors(&self) -> u32 {
        if self.busy_poll {
            self.connections
        } else {
            self.threads
        }
    }
}

/// Parses `500ms`, `10s`, `1m`, `1m30s`, `1.5s`, `100us`/`100µs`, `2h`. A unit is required.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad =
        |why: &str| format!("invalid duration `{text}`: {why} (examples: 500ms, 10s, 1m, 1m30s)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let value: f64 = number.parse().map_err(|_| bad("expected a number"))?;
        let seconds_per_unit = match unit.trim() {
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(bad("missing unit")),
            _ => return Err(bad("unknown unit")),
        };
        let seconds = value * seconds_per_unit;
        if !seconds.is_finite() || seconds > 1e9 {
            return Err(bad("too long"));
        }
        total += Duration::from_secs_f64(seconds);
        rest = after;
    }
    Ok(total)
}

/// Parses a request rate: a positive number of requests per second, like `2000` or `0.5`.
fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid rate `{text}`: expected requests per second, like 2000"))?;
    if !(rate.is_finite() && rate > 0.0 && rate <= 1e9) {
        return Err(format!(
            "invalid rate `{text}`: must be > 0 and <= 1e9 requests per second"
        ));
    }
    Ok(rate)
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once(':').ok_or("expected `name: value`")?;
    let name = name.trim();
    let valid_name = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if !valid_name || value.contains(['\r', '\n']) {
        return Err(format!("invalid header `{text}`"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

fn parse_method(text: &str) -> Result<String, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("invalid method `{text}`"));
    }
    Ok(text.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("10s"), Ok(ms(10_000)));
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("1m"), Ok(ms(60_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("2h"), Ok(ms(7_200_000)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        for bad in ["", "10", "s", "10x", "1..5s", "-1s", "10 s s", "1e3s"] {
            assert!(parse_duration(bad).is_err(), "`{bad}` should be rejected");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("2000"), Ok(2000.0));
        assert_eq!(parse_rate(" 0.5 "), Ok(0.5));
        for bad in ["", "0", "-1", "nan", "inf", "1e10", "fast"] {
            assert!(parse_rate(bad).is_err(), "`{bad}` should be rejected");
        }
    }

    #[test]
    fn open_loop_options() {
        let parse = |args: &[&str]| {
            let mut all = vec!["loadgen", "raw", "--url", "http://127.0.0.1:1/"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all)
        };
        let closed = parse(&[]).unwrap();
        let closed = closed.command.load().unwrap();
        assert_eq!((closed.rate, closed.max_in_flight), (None, 64));
        let open = parse(&["--rate", "100", "--max-in-flight", "4"]).unwrap();
        let open = open.command.load().unwrap();
        assert_eq!((open.rate, open.max_in_flight), (Some(100.0), 4));
        assert!(parse(&["--max-in-flight", "4"]).is_err(), "needs --rate");
        assert!(parse(&["--rate", "100", "--pipeline", "2"]).is_err());
    }

    #[test]
    fn busy_poll_options() {
        let parse = |args: &[&str]| {
            let mut all = vec!["loadgen"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).and_then(|cli| cli.check().map(|()| cli))
        };
        let ws = ["ws", "--actor", "a", "--action", "b", "--busy-poll"];
        let raw = ["raw", "--url", "http://127.0.0.1:1/", "--busy-poll"];
        for base in [&ws[..], &raw[..]] {
            let with = |extra: &[&str]| parse(&[base, extra].concat());
            let one = with(&["-c", "1"]).unwrap();
            assert!(one.command.load().unwrap().busy_poll);
            assert!(with(&["-c", "16"]).is_ok());
            // The default 64 connections are too many.
            let error = with(&[]).unwrap_err().to_string();
            assert!(error.contains("at most 16 connections"), "{error}");
            assert!(with(&["-c", "17"]).is_err());
            for open in [
                &["-c", "1", "--rate", "100"][..],
                &["-c", "1", "--threads", "1"],
            ] {
                let error = with(open).unwrap_err();
                assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
            }
        }
        let action = [
            "action",
            "--actor",
            "a",
            "--action",
            "b",
            "--busy-poll",
            "-c",
            "2",
        ];
        assert!(parse(&[&action[..], &["--pipeline", "4"]].concat()).is_ok());
        // The help states the limit.
        let command = Cli::command();
        let ws = command.find_subcommand("ws").unwrap();
        let flag = ws.get_arguments().find(|arg| arg.get_id() == "busy_poll");
        let help = flag.unwrap().get_help().unwrap().to_string();
        assert!(
            help.contains(&format!("at most {BUSY_POLL_CONNECTIONS_MAX})")),
            "{help}"
        );
    }

    #[test]
    fn headers() {
        assert_eq!(parse_header("X-A:  b c "), Ok(("X-A".into(), "b c".into())));
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header(": v").is_err());
        assert!(parse_header("a b: v").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
