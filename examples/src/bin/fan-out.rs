//! # fan-out: scatter work over many actors, gather the results
//!
//! **Pattern.** One actor (`aggregator`) splits a job into N parts and sends each part to its
//! own `shardWorker` actor, all at once (**fan-out**: N calls started together and awaited with
//! [`join_all`]); it then combines the N answers into one result (**fan-in**). Here the job is
//! the sum of `x²` for `x` in `0..up_to`, split into N ranges; every worker also waits
//! `--delay-ms` before answering, standing in for I/O (a database read, an external API).
//!
//! The workers' keys (`["w0"]`, `["w1"]`, …) hash over every shard, so their work runs on every
//! core. While the aggregator awaits, it is not blocked: other actions of the same actor (and
//! every other actor of its shard) keep running. The run is timed three ways:
//!
//! * *cold*: the first fan-out also creates the N workers;
//! * *warm*: the same fan-out again, the workers exist;
//! * *sequential*: the same calls one after the other (await each before the next), the
//!   baseline: about N × the delay, where the fan-out took about one delay.
//!
//! **When to use it.** When a request needs answers from many actors (a query over every shard
//! of a sharded dataset, a map-reduce job, notifying every member of a group) and the answers
//! do not depend on each other. Bound N (here `--workers`, at most 4096): every call to an actor
//! of another shard holds one of its shard's `Limits::forwarded_calls_max` slots until it is
//! answered, beyond which calls fail with `actor/overloaded`. And decide what one failure
//! means: here any failed part fails the job (`?` on each result).
//!
//! ```sh
//! cargo run -p pinion-examples --bin fan-out -- --workers 64 --delay-ms 10
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use pinion_examples::{Driver, Error, Flags, ms};
use pinion_runtime::{
    ActionResult, Actions, Actor, ActorInfo, CallError, Ctx, Registry, UserError, Value, join_all,
    sys,
};
use serde::{Deserialize, Serialize};

/// Runs the fan-out example: an `aggregator` and N `shardWorker` actors.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    flags: Flags,
    /// Number of workers the job is split over (1 to 4096).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=i64::from(WORKERS_MAX)))]
    workers: u32,
    /// The job: the sum of x² for x in 0..up_to.
    #[arg(long, default_value_t = 100_000)]
    up_to: u64,
    /// Simulated I/O latency of each worker's part, in milliseconds.
    #[arg(long, default_value_t = 5)]
    delay_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let registry = Registry::new()
        .register::<Aggregator>()
        .register::<ShardWorker>();
    pinion_examples::run("fan-out", registry, &args.flags, |d| drive(d, &args))
}

/// Most workers one job may use.
const WORKERS_MAX: u32 = 4096;

/// A job as the aggregator takes it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Job {
    workers: u32,
    up_to: u64,
    delay_ms: u64,
}

/// What the aggregator answers: the result and where the time went.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Outcome {
    workers: u32,
    sum: u64,
    /// From the first call sent to the last answer received.
    calls_ms: f64,
    /// Combining the answers.
    fan_in_ms: f64,
}

/// One worker's answer.
#[derive(Debug, Serialize, Deserialize)]
struct Partial {
    from: u64,
    to: u64,
    sum: u64,
}

// ---- the aggregator --------------------------------------------------------------------------

/// `aggregator`: `fanOut(job)` and, for comparison, `sequential(job)`.
struct Aggregator;

impl Actor for Aggregator {
    const NAME: &'static str = "aggregator";
    /// Jobs run.
    type State = u64;
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<u64> {
        Ok(0)
    }

    fn create_vars(_: &ActorInfo, _: &u64) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action_async("fanOut", |c, (job,): (Job,)| async move {
                run_job(&c, job, true).await
            })
            .action_async("sequential", |c, (job,): (Job,)| async move {
                run_job(&c, job, false).await
            })
            .action("jobs", |c, ()| Ok(*c.state));
    }
}

/// Splits `job` into `job.workers` ranges, has worker `w{i}` sum range `i`, and adds up the
/// parts: all calls at once (`parallel`) or one after the other.
async fn run_job(c: &Ctx<Aggregator>, job: Job, parallel: bool) -> ActionResult<Outcome> {
    if job.workers == 0 || job.workers > WORKERS_MAX {
        return Err(
            UserError::new(format!("workers must be in 1..={WORKERS_MAX}"))
                .code("bad_job")
                .into(),
        );
    }
    let client = c.client();
    let chunk = job.up_to.div_ceil(u64::from(job.workers));
    let parts: Vec<_> = (0..u64::from(job.workers))
        .map(|i| {
            let worker = client.get_or_create("shardWorker", [format!("w{i}")]);
            let from = (i * chunk).min(job.up_to);
            let to = ((i + 1) * chunk).min(job.up_to);
            (worker, from, to)
        })
        .collect();

    // Fan-out.
    let started = sys::now();
    let answers: Vec<Result<Partial, CallError>> = if parallel {
        join_all(parts.iter().map(|(worker, from, to)| {
            worker.call::<Partial>("sumSquares", (from, to, job.delay_ms))
        }))
        .await
    } else {
        let mut answers = Vec::with_capacity(parts.len());
        for (worker, from, to) in &parts {
            answers.push(
                worker
                    .call::<Partial>("sumSquares", (from, to, job.delay_ms))
                    .await,
            );
        }
        answers
    };
    let calls = started.elapsed();

    // Fan-in: any failed part fails the job; the parts must cover 0..up_to exactly once.
    let started = sys::now();
    let mut sum = 0u64;
    let mut covered = 0u64;
    for answer in answers {
        let part = answer?;
        sum = sum
            .checked_add(part.sum)
            .ok_or_else(|| UserError::new("The sum overflows u64.").code("overflow"))?;
        covered += part.to - part.from;
    }
    if covered != job.up_to {
        return Err(pinion_runtime::ActionError::internal(format!(
            "the parts cover {covered} numbers, not {}",
            job.up_to
        )));
    }
    let fan_in = started.elapsed();
    c.state_mut(|jobs| *jobs += 1);
    Ok(Outcome {
        workers: job.workers,
        sum,
        calls_ms: millis(calls),
        fan_in_ms: millis(fan_in),
    })
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

// ---- the workers ---------------------------------------------------------------------------

/// `shardWorker`: sums the squares of a range, after a simulated I/O wait.
struct ShardWorker;

impl Actor for ShardWorker {
    const NAME: &'static str = "shardWorker";
    /// Parts computed.
    type State = u64;
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<u64> {
        Ok(0)
    }

    fn create_vars(_: &ActorInfo, _: &u64) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action_async(
                "sumSquares",
                |c, (from, to, delay_ms): (u64, u64, u64)| async move {
                    if delay_ms > 0 {
                        // Other actions of this actor run while it waits.
                        sys::sleep(Duration::from_millis(delay_ms)).await;
                    }
                    let mut sum = 0u64;
                    for x in from..to {
                        sum = x
                            .checked_mul(x)
                            .and_then(|square| sum.checked_add(square))
                            .ok_or_else(|| {
                                UserError::new("The sum overflows u64.").code("overflow")
                            })?;
                    }
                    c.state_mut(|parts| *parts += 1);
                    Ok(Partial { from, to, sum })
                },
            )
            .action("parts", |c, ()| Ok(*c.state));
    }
}

// ---- the driver ---------------------------------------------------------------------------

fn drive(d: &mut Driver, args: &Args) -> Result<(), Error> {
    let job = Job {
        workers: args.workers,
        up_to: args.up_to,
        delay_ms: args.delay_ms,
    };
    let aggregator = d.get_or_create("aggregator", &["main"])?;
    println!(
        "aggregator [\"main\"] on shard {}; job: sum of x² for x in 0..{}, over {} workers, {} ms of simulated I/O each",
        d.shard_of("aggregator", &["main"]),
        job.up_to,
        job.workers,
        job.delay_ms
    );
    let mut per_shard = vec![0u32; d.shards()];
    for i in 0..job.workers {
        per_shard[d.shard_of("shardWorker", &[&format!("w{i}")])] += 1;
    }
    let spread: Vec<String> = per_shard
        .iter()
        .enumerate()
        .map(|(shard, n)| format!("shard {shard}: {n}"))
        .collect();
    println!("workers per shard: {}", spread.join(", "));

    let expected = sum_of_squares_below(job.up_to);
    for (phase, action) in [
        ("cold", "fanOut"),
        ("warm", "fanOut"),
        ("sequential", "sequential"),
    ] {
        let started = Instant::now();
        let outcome: Outcome = d.call(&aggregator, action, (job,))?;
        let total = started.elapsed();
        println!(
            "{phase:<10} {action}: sum {} | calls {:.2} ms, fan-in {:.3} ms, round trip {}",
            outcome.sum,
            outcome.calls_ms,
            outcome.fan_in_ms,
            ms(total)
        );
        if outcome.sum != expected {
            return Err(format!("{phase}: sum {} != expected {expected}", outcome.sum).into());
        }
    }
    println!("sum: {expected} (expected {expected})");

    // Every worker computed one part per run. Ids derive from (name, key), so the driver can
    // call a worker by id without resolving it first.
    let mut parts_total = 0;
    for i in 0..job.workers {
        let id = pinion_examples::actor_id("shardWorker", &[&format!("w{i}")]).to_string();
        let parts: u64 = d.call(&id, "parts", ())?;
        parts_total += parts;
    }
    println!(
        "parts computed: {parts_total} ({} workers x 3 runs)",
        job.workers
    );
    Ok(())
}

/// Σ x² for x in 0..n, in closed form: (n-1)·n·(2n-1)/6.
fn sum_of_squares_below(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let (n, m) = (u128::from(n), u128::from(n - 1));
    (m * n * (2 * n - 1) / 6) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_form_matches_the_loop() {
        for n in [0u64, 1, 2, 3, 10, 1000] {
            assert_eq!(sum_of_squares_below(n), (0..n).map(|x| x * x).sum::<u64>());
        }
    }
}
