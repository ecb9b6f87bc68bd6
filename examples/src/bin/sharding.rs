//! # sharding: split one hot entity over many actors, by time or at random
//!
//! **Pattern.** One actor runs on one core, so an entity that takes more traffic (or holds more
//! data) than one actor should is split over several, with a *shard key* in the actor key:
//!
//! * **By time**: a `metrics` actor per hour, keyed by the hour the event happened in,
//!   `["2026-11-27T14"]`, derived from the event's timestamp. Each actor's data is bounded (an
//!   hour's worth), old hours go cold and can be dropped whole, and a time-range query asks only
//!   the hours it spans. But all the writes of the current hour go to one actor: the time key
//!   bounds size, not load.
//! * **At random**: a `counter` split over K keys, `["page-views", "shard-3"]`; every write
//!   picks one at random, so the write load spreads over K actors, and so over the shards their
//!   keys hash to. Reads pay instead: the total is the sum of all K, read by fanning out.
//!
//! Reads that span shards go through a `dashboard` actor that fans out with
//! [`join_all`] (`get`, not `getOrCreate`: an hour or counter shard that never saw a write does
//! not exist, and its `actor/not_found` counts as zero instead of creating it). The driver
//! prints which shard each key lands on (`ActorId::derive(name, key::serialize(key))
//! .shard(n)`, the placement every shard computes) and how the writes spread over the shards.
//!
//! **When to use it.** Time keys for append-mostly data read by time range (metrics, logs,
//! events, chat history by day). Random keys for a hot entity whose writes commute (counters,
//! rate-limit buckets, likes), when reads are rarer than writes. Pick K ≥ a few times the shard
//! count, so that the keys cover every shard evenly.
//!
//! ```sh
//! cargo run -p pinion-examples --bin sharding -- --counter-keys 16 --increments 5000
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Parser;
use pinion_examples::{Driver, Error, Flags};
use pinion_runtime::{
    ActionResult, Actions, Actor, ActorInfo, CallError, Registry, UserError, Value, join_all, sys,
};
use serde::{Deserialize, Serialize};

/// Runs the sharding example: `metrics` per hour, a `counter` over random keys, a `dashboard`.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    flags: Flags,
    /// Metric events to record, spread evenly over 3 hours from 2026-11-27T13:00Z.
    #[arg(long, default_value_t = 600)]
    events: u64,
    /// Keys the counter is split over (1 to 1024).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=i64::from(COUNTER_KEYS_MAX)))]
    counter_keys: u32,
    /// Increments of the counter, each to a random key.
    #[arg(long, default_value_t = 1000)]
    increments: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let registry = Registry::new()
        .register::<Metrics>()
        .register::<Counter>()
        .register::<Dashboard>();
    pinion_examples::run("sharding", registry, &args.flags, |d| drive(d, &args))
}

const HOUR_MS: u64 = 3_600_000;
/// 2026-11-27T13:00:00Z.
const START_MS: u64 = 1_795_784_400_000;
/// The counter the example splits.
const COUNTER: &str = "page-views";
/// Most keys a counter may be split over.
const COUNTER_KEYS_MAX: u32 = 1024;

/// The hour key of a Unix timestamp in milliseconds: `"2026-11-27T14"` (UTC), the first 13
/// characters of its ISO 8601 form, as RivetKit's docs derive it
/// (`new Date().toISOString().slice(0, 13)`).
fn hour_key(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let hour = (secs % 86_400) / 3600;
    format!("{year:04}-{month:02}-{day:02}T{hour:02}")
}

/// (year, month, day) of a day number since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The key of counter shard `i`.
fn counter_key(i: u32) -> [String; 2] {
    [COUNTER.to_string(), format!("shard-{i}")]
}

/// Whether a call failed because its target does not exist (a `get` of an actor never created).
fn not_found(error: &CallError) -> bool {
    error.group == "actor" && error.code == "not_found"
}

// ---- sharding by time ---------------------------------------------------------------------

/// `metrics`: the events of one hour (its key).
struct Metrics;

/// One hour's aggregate, as stored and as answered.
#[derive(
    Clone, Debug, Default, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
struct HourStats {
    hour: String,
    count: u64,
    sum: u64,
    min: Option<u64>,
    max: Option<u64>,
}

impl Actor for Metrics {
    const NAME: &'static str = "metrics";
    type State = HourStats;
    type Vars = ();
    type ConnState = ();

    fn create_state(info: &ActorInfo, _: Option<Value>) -> ActionResult<HourStats> {
        Ok(HourStats {
            hour: info.key().first().cloned().unwrap_or_default(),
            ..HourStats::default()
        })
    }

    fn create_vars(_: &ActorInfo, _: &HourStats) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action("record", |c, (ts, value): (u64, u64)| {
                // The key is derived from the data: an event of another hour is a routing bug.
                if hour_key(ts) != c.state.hour {
                    return Err(UserError::new(format!(
                        "An event of {} sent to the actor of {}.",
                        hour_key(ts),
                        c.state.hour
                    ))
                    .code("wrong_hour")
                    .into());
                }
                let s = &mut *c.state;
                s.count += 1;
                s.sum += value;
                s.min = Some(s.min.map_or(value, |min| min.min(value)));
                s.max = Some(s.max.map_or(value, |max| max.max(value)));
                Ok(s.count)
            })
            .action("summary", |c, ()| Ok(c.state.clone()));
    }
}

// ---- random sharding ------------------------------------------------------------------------

/// `counter`: one shard of a split counter (key `[name, "shard-i"]`).
struct Counter;

impl Actor for Counter {
    const NAME: &'static str = "counter";
    type State = i64;
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<i64> {
        Ok(0)
    }

    fn create_vars(_: &ActorInfo, _: &i64) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            .action("increment", |c, (amount,): (Option<i64>,)| {
                *c.state += amount.unwrap_or(1);
                Ok(*c.state)
            })
            .action("get", |c, ()| Ok(*c.state));
    }
}

// ---- reads across shards ------------------------------------------------------------------

/// `dashboard`: queries that span shards, answered by fanning out.
struct Dashboard;

/// The answer of `hourly`.
#[derive(Debug, Serialize, Deserialize)]
struct Range {
    hours: Vec<HourStats>,
    count: u64,
    sum: u64,
}

/// The answer of `counterTotal`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CounterTotal {
    total: i64,
    per_key: Vec<i64>,
}

impl Actor for Dashboard {
    const NAME: &'static str = "dashboard";
    type State = ();
    type Vars = ();
    type ConnState = ();

    fn create_state(_: &ActorInfo, _: Option<Value>) -> ActionResult<()> {
        Ok(())
    }

    fn create_vars(_: &ActorInfo, _: &()) {}

    fn actions(actions: &mut Actions<Self>) {
        actions
            // Every hour that starts in [from, to): one call per hour, all at once.
            .action_async("hourly", |c, (from, to): (u64, u64)| async move {
                if to < from || (to - from) / HOUR_MS > 24 * 31 {
                    return Err(UserError::new("At most 31 days, from <= to.")
                        .code("bad_range")
                        .into());
                }
                let client = c.client();
                let hours: Vec<String> = (from / HOUR_MS..to.div_ceil(HOUR_MS))
                    .map(|hour| hour_key(hour * HOUR_MS))
                    .collect();
                let handles: Vec<_> = hours
                    .iter()
                    .map(|hour| client.get("metrics", [hour.as_str()]))
                    .collect();
                let answers =
                    join_all(handles.iter().map(|h| h.call::<HourStats>("summary", ()))).await;
                let mut range = Range {
                    hours: Vec::new(),
                    count: 0,
                    sum: 0,
                };
                for (hour, answer) in hours.into_iter().zip(answers) {
                    let stats = match answer {
                        Ok(stats) => stats,
                        // No event in that hour: its actor was never created.
                        Err(error) if not_found(&error) => HourStats {
                            hour,
                            ..HourStats::default()
                        },
                        Err(error) => return Err(error.into()),
                    };
                    range.count += stats.count;
                    range.sum += stats.sum;
                    range.hours.push(stats);
                }
                Ok(range)
            })
            // The counter's total: the sum of its `keys` shards, read all at once.
            .action_async("counterTotal", |c, (keys,): (u32,)| async move {
                if !(1..=COUNTER_KEYS_MAX).contains(&keys) {
                    return Err(
                        UserError::new(format!("keys must be in 1..={COUNTER_KEYS_MAX}"))
                            .code("bad_keys")
                            .into(),
                    );
                }
                let client = c.client();
                let handles: Vec<_> = (0..keys)
                    .map(|i| client.get("counter", counter_key(i)))
                    .collect();
                let answers = join_all(handles.iter().map(|h| h.call::<i64>("get", ()))).await;
                let per_key = answers
                    .into_iter()
                    .map(|answer| match answer {
                        Ok(count) => Ok(count),
                        Err(error) if not_found(&error) => Ok(0),
                        Err(error) => Err(error),
                    })
                    .collect::<Result<Vec<i64>, _>>()?;
                Ok(CounterTotal {
                    total: per_key.iter().sum(),
                    per_key,
                })
            });
    }
}

// ---- the driver ---------------------------------------------------------------------------

fn drive(d: &mut Driver, args: &Args) -> Result<(), Error> {
    let dashboard = d.get_or_create("dashboard", &["main"])?;
    by_time(d, &dashboard, args)?;
    at_random(d, &dashboard, args)
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn by_time(d: &mut Driver, dashboard: &str, args: &Args) -> Result<(), Error> {
    println!(
        "== sharding by time: {} events over 3 hours from {}:00Z, one metrics actor per hour",
        args.events,
        hour_key(START_MS)
    );
    let step = 3 * HOUR_MS / args.events.max(1);
    // hour key -> (actor id, events)
    let mut hours: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut value_sum = 0;
    for i in 0..args.events {
        let ts = START_MS + i * step;
        let value = i * 37 % 100;
        let hour = hour_key(ts);
        if !hours.contains_key(&hour) {
            let id = d.get_or_create("metrics", &[&hour])?;
            hours.insert(hour.clone(), (id, 0));
        }
        let (id, events) = hours.get_mut(&hour).ok_or("no hour")?;
        d.call::<u64, _>(id, "record", (ts, value))?;
        *events += 1;
        value_sum += value;
    }
    let mut per_shard = vec![0u64; d.shards()];
    for (hour, (_, events)) in &hours {
        let shard = d.shard_of("metrics", &[hour]);
        per_shard[shard] += events;
        println!("  metrics [{hour:?}] on shard {shard}: {events} events");
    }
    print_spread(&per_shard, args.events, "events");
    println!(
        "  (while an hour is current, all its writes go to that one actor: a time key bounds each actor's data, not the write load)"
    );

    // A range with an empty hour on each side: those actors do not exist and count as zero.
    let (from, to) = (START_MS - HOUR_MS, START_MS + 4 * HOUR_MS);
    let range: Range = d.call(dashboard, "hourly", (from, to))?;
    let with_data = range.hours.iter().filter(|h| h.count > 0).count();
    println!(
        "dashboard.hourly({}..{}): {} hours, {} with events",
        hour_key(from),
        hour_key(to),
        range.hours.len(),
        with_data
    );
    for h in &range.hours {
        println!(
            "  {}: count {}, sum {}, min {:?}, max {:?}",
            h.hour, h.count, h.sum, h.min, h.max
        );
    }
    println!("events: {} (expected {})", range.count, args.events);
    println!("event value sum: {} (expected {value_sum})", range.sum);
    if range.count != args.events || range.sum != value_sum {
        return Err("the hourly totals do not match what was recorded".into());
    }
    Ok(())
}

fn at_random(d: &mut Driver, dashboard: &str, args: &Args) -> Result<(), Error> {
    let keys = args.counter_keys;
    println!(
        "== random sharding: {} increments of {COUNTER:?}, each to one of {keys} random keys",
        args.increments
    );
    let mut ids: Vec<Option<String>> = vec![None; keys as usize];
    let mut hits = vec![0u64; keys as usize];
    for _ in 0..args.increments {
        let i = (sys::random_u64() % u64::from(keys)) as u32;
        let slot = &mut ids[i as usize];
        let id = match slot {
            Some(id) => id,
            None => {
                let [name, shard] = counter_key(i);
                slot.insert(d.get_or_create("counter", &[&name, &shard])?)
            }
        };
        d.call::<i64, _>(id, "increment", (1,))?;
        hits[i as usize] += 1;
    }
    let mut per_shard = vec![0u64; d.shards()];
    for (i, hits) in hits.iter().enumerate() {
        let [name, shard_key] = counter_key(i as u32);
        let shard = d.shard_of("counter", &[&name, &shard_key]);
        per_shard[shard] += hits;
        println!("  counter [{name:?}, {shard_key:?}] on shard {shard}: {hits} increments");
    }
    print_spread(&per_shard, args.increments, "increments");
    println!(
        "  (unsplit, counter [{COUNTER:?}] would take all {} increments on shard {})",
        args.increments,
        d.shard_of("counter", &[COUNTER])
    );

    let total: CounterTotal = d.call(dashboard, "counterTotal", (keys,))?;
    println!(
        "dashboard.counterTotal({keys}): per key {:?}",
        total.per_key
    );
    println!("total: {} (expected {})", total.total, args.increments);
    if total.total != args.increments as i64 {
        return Err("the counter's total does not match the increments".into());
    }
    Ok(())
}

fn print_spread(per_shard: &[u64], total: u64, what: &str) {
    let spread: Vec<String> = per_shard
        .iter()
        .enumerate()
        .map(|(shard, n)| format!("shard {shard}: {n} ({:.0}%)", percent(*n, total)))
        .collect();
    println!("  {what} per shard: {}", spread.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_keys() {
        assert_eq!(hour_key(START_MS), "2026-11-27T13");
        assert_eq!(hour_key(START_MS + HOUR_MS + 59 * 60_000), "2026-11-27T14");
        assert_eq!(hour_key(0), "1970-01-01T00");
        // 2024-02-29T23:59:59.999Z, a leap day, then the next day.
        assert_eq!(hour_key(1_709_251_199_999), "2024-02-29T23");
        assert_eq!(hour_key(1_709_251_200_000), "2024-03-01T00");
        // 2026-12-31T23:00Z -> 2027-01-01T00:00Z.
        assert_eq!(hour_key(1_798_758_000_000), "2026-12-31T23");
        assert_eq!(hour_key(1_798_761_600_000), "2027-01-01T00");
    }
}
