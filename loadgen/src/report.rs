//! Results: merging executors, the text summary, the JSON summary and the .hgrm file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::keys::KeyDist;
use crate::plot::{self, Series, YScale};
use crate::rivet::json_string;
use crate::shard::{ErrorKind, LATENCY_NS_MAX, ShardReport};
use crate::wsload::WsExtras;

/// CPU time of the whole process (all threads), from `getrusage(RUSAGE_SELF)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CpuTime {
    pub(crate) user: Duration,
    pub(crate) system: Duration,
}

impl CpuTime {
    pub(crate) fn now() -> CpuTime {
        // SAFETY: `rusage` is plain old data, so all-zero bytes are a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid, writable `rusage` that outlives the call.
        let result = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        if result != 0 {
            return CpuTime {
                user: Duration::ZERO,
                system: Duration::ZERO,
            };
        }
        let to_duration = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        CpuTime {
            user: to_duration(usage.ru_utime),
            system: to_duration(usage.ru_stime),
        }
    }

    pub(crate) fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// What the run was, for the report header.
#[derive(Debug, Clone)]
pub(crate) struct RunInfo {
    pub(crate) mode: &'static str,
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) connections: u32,
    pub(crate) threads: u32,
    /// `--busy-poll`: one busy-polling thread per connection.
    pub(crate) busy_poll: bool,
    pub(crate) pipeline: u32,
    pub(crate) duration_limit: Duration,
    pub(crate) requests_limit: Option<u64>,
    pub(crate) warmup: Duration,
    pub(crate) actor_id: Option<String>,
    /// Open loop: the target rate (requests/s in total) and `--max-in-flight`.
    pub(crate) open: Option<(f64, u32)>,
    /// `action` and `ws`: which actors the load is spread over.
    pub(crate) keys: Option<KeysInfo>,
    /// `ws` only: the action sent over the connections.
    pub(crate) ws: Option<WsInfo>,
}

/// What a `ws` run sends.
#[derive(Debug, Clone)]
pub(crate) struct WsInfo {
    pub(crate) action: String,
    pub(crate) args: String,
    /// Closed loop: actions outstanding per connection.
    pub(crate) in_flight: u32,
}

/// The actors of an `action` run.
#[derive(Debug, Clone)]
pub(crate) struct KeysInfo {
    pub(crate) count: u64,
    /// First and last key strings (serialised), for the report.
    pub(crate) first: String,
    pub(crate) last: String,
    pub(crate) dist: KeyDist,
    pub(crate) seed: u64,
    pub(crate) resolve_each: bool,
}

/// Everything measured, merged over executors.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) requests: u64,
    pub(crate) ok: u64,
    pub(crate) errors: BTreeMap<ErrorKind, u64>,
    pub(crate) histogram: Histogram<u64>,
    pub(crate) connects: u64,
    /// Measured requests handed to a connection.
    pub(crate) sent: u64,
    /// Open loop: measured requests held back by `--max-in-flight`.
    pub(crate) late: u64,
    /// Open loop: send time minus intended time of each measured request (ns).
    pub(crate) send_lag: Histogram<u64>,
    /// Measured window: end of warmup to the deadline or the last response.
    pub(crate) elapsed: Duration,
    pub(crate) cpu: CpuTime,
    /// Wall time over which `cpu` was spent (warmup and setup included).
    pub(crate) wall: Duration,
    /// `ws` only: what only WebSockets have.
    pub(crate) ws: Option<WsExtras>,
}

impl Summary {
    pub(crate) fn merge(
        reports: Vec<ShardReport>,
        measure_start: Instant,
        cpu: CpuTime,
        wall: Duration,
    ) -> Summary {
        let mut histogram = Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
            .expect("static histogram bounds are valid");
        let mut summary = Summary {
            requests: 0,
            ok: 0,
            errors: BTreeMap::new(),
            histogram: histogram.clone(),
            connects: 0,
            sent: 0,
            late: 0,
            send_lag: histogram.clone(),
            elapsed: Duration::ZERO,
            cpu,
            wall,
            ws: None,
        };
        let mut end = measure_start;
        for report in reports {
            summary.requests += report.requests;
            summary.ok += report.ok;
            summary.connects += report.connects;
            summary.sent += report.sent;
            summary.late += report.late;
            summary
                .send_lag
                .add(&report.send_lag)
                .expect("histograms share their bounds");
            for (kind, count) in report.errors {
                *summary.errors.entry(kind).or_default() += count;
            }
            histogram
                .add(&report.histogram)
                .expect("histograms share their bounds");
            end = end.max(report.end);
        }
        summary.histogram = histogram;
        summary.elapsed = end.saturating_duration_since(measure_start);
        summary
    }

    pub(crate) fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    pub(crate) fn throughput(&self) -> f64 {
        self.per_second(self.requests)
    }

    /// Measured requests sent per second of the measured window.
    pub(crate) fn achieved_rate(&self) -> f64 {
        self.per_second(self.sent)
    }

    fn per_second(&self, count: u64) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            count as f64 / seconds
        } else {
            0.0
        }
    }

    /// Send lag in microseconds at `quantile`; 0 without sends.
    fn send_lag_us(&self, quantile: f64) -> f64 {
        if self.send_lag.is_empty() {
            return 0.0;
        }
        self.send_lag.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn send_lag_max_us(&self) -> f64 {
        if self.send_lag.is_empty() {
            0.0
        } else {
            self.send_lag.max() as f64 / 1000.0
        }
    }

    /// CPU time as a share of one core over the wall time, in percent.
    pub(crate) fn cpu_percent(&self) -> f64 {
        let wall = self.wall.as_secs_f64();
        let cpu = (self.cpu.user + self.cpu.system).as_secs_f64();
        if wall > 0.0 { 100.0 * cpu / wall } else { 0.0 }
    }

    /// Latency in microseconds at `quantile`; 0 without successful responses.
    pub(crate) fn latency_us(&self, quantile: f64) -> f64 {
        if self.histogram.is_empty() {
            return 0.0;
        }
        self.histogram.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn max_us(&self) -> f64 {
        if self.histogram.is_empty() {
            0.0
        } else {
            self.histogram.max() as f64 / 1000.0
        }
    }
}

const QUANTILES: [(&str, &str, f64); 4] = [
    ("p50", "p50", 0.5),
    ("p90", "p90", 0.9),
    ("p99", "p99", 0.99),
    ("p99.9", "p999", 0.999),
];

/// The human-readable report (stable format: one `key:` per line, fixed order).
pub(crate) fn text(info: &RunInfo, summary: &Summary) -> String {
    let mut out = String::new();
    let limit = match info.requests_limit {
        Some(n) => format!("{} or {n} requests", seconds(info.duration_limit)),
        None => seconds(info.duration_limit),
    };
    let _ = writeln!(out, "target:      {} {}", info.method, info.url);
    if let Some(id) = &info.actor_id {
        let _ = writeln!(out, "actor:       {id}");
    }
    if let Some(ws) = &info.ws {
        let _ = writeln!(out, "action:      {} {}", ws.action, ws.args);
    }
    let pacing = match info.open {
        None if info.ws.is_some() => format!(
            "{} in flight per connection",
            info.ws.as_ref().map_or(0, |ws| ws.in_flight)
        ),
        None => format!("pipeline {}", info.pipeline),
        Some((rate, max_in_flight)) => format!(
            "open loop at {} req/s (max {max_in_flight} in flight per connection)",
            trim_float(rate)
        ),
    };
    let _ = writeln!(
        out,
        "load:        {} connections, {} thread(s){}, {pacing}, {limit}, warmup {}",
        info.connections,
        info.threads,
        if info.busy_poll { " busy-polling" } else { "" },
        seconds(info.warmup)
    );
    if let Some(keys) = info.keys.as_ref().filter(|keys| keys.count > 1) {
        let _ = writeln!(
            out,
            "keys:        {} actors {:?}..{:?}, {}, seed {}",
            keys.count, keys.first, keys.last, keys.dist, keys.seed
        );
    }
    if info.keys.as_ref().is_some_and(|keys| keys.resolve_each) {
        let _ = writeln!(
            out,
            "resolve:     PUT /actors before every call (the pair is one request)"
        );
    }
    let _ = writeln!(
        out,
        "requests:    {} ({} ok, {} errors)",
        summary.requests,
        summary.ok,
        summary.error_total()
    );
    if !summary.errors.is_empty() {
        let kinds: Vec<String> = summary
            .errors
            .iter()
            .map(|(kind, count)| format!("{}={count}", kind.name()))
            .collect();
        let _ = writeln!(out, "errors:      {}", kinds.join(" "));
    }
    let _ = writeln!(out, "duration:    {:.3} s", summary.elapsed.as_secs_f64());
    let _ = writeln!(out, "throughput:  {:.1} req/s", summary.throughput());
    if let Some((rate, _)) = info.open {
        let _ = writeln!(
            out,
            "sent:        {} ({:.1} req/s of {} scheduled, {} late)",
            summary.sent,
            summary.achieved_rate(),
            trim_float(rate),
            summary.late
        );
        let _ = writeln!(
            out,
            "send_lag_us: p50={:.1} p99={:.1} max={:.1}",
            summary.send_lag_us(0.5),
            summary.send_lag_us(0.99),
            summary.send_lag_max_us()
        );
    }
    let mut latency = String::new();
    for (label, _, quantile) in QUANTILES {
        let _ = write!(latency, "{label}={:.1} ", summary.latency_us(quantile));
    }
    let _ = writeln!(
        out,
        "latency_us:  {latency}max={:.1} (n={})",
        summary.max_us(),
        summary.histogram.len()
    );
    let _ = writeln!(
        out,
        "cpu:         user={:.3} s sys={:.3} s util={:.1} % of one core over {:.3} s wall",
        summary.cpu.user.as_secs_f64(),
        summary.cpu.system.as_secs_f64(),
        summary.cpu_percent(),
        summary.wall.as_secs_f64()
    );
    let _ = writeln!(out, "connections: {} opened", summary.connects);
    if let Some(ws) = &summary.ws {
        let _ = writeln!(
            out,
            "events:      {} received (ignored), {} connection-level errors",
            ws.events, ws.connection_errors
        );
        if !ws.error_codes.is_empty() {
            let codes: Vec<String> = ws
                .error_codes
                .iter()
                .map(|(code, count)| format!("{code}={count}"))
                .collect();
            let _ = writeln!(out, "action_errors: {}", codes.join(" "));
        }
        let _ = writeln!(out, "handshake_us: {}", percentile_line(&ws.handshake));
        if let Some(failure) = &ws.first_failure {
            let _ = writeln!(out, "first_failure: {failure}");
        }
    }
    out
}

/// `p50=… p90=… p99=… p99.9=… max=… (n=…)` in microseconds, as on the `latency_us` line.
pub(crate) fn percentile_line(histogram: &Histogram<u64>) -> String {
    let at = |quantile: f64| {
        if histogram.is_empty() {
            0.0
        } else {
            histogram.value_at_quantile(quantile) as f64 / 1000.0
        }
    };
    let mut line = String::new();
    for (label, _, quantile) in QUANTILES {
        let _ = write!(line, "{label}={:.1} ", at(quantile));
    }
    let max = if histogram.is_empty() {
        0.0
    } else {
        histogram.max() as f64 / 1000.0
    };
    let _ = write!(line, "max={max:.1} (n={})", histogram.len());
    line
}

/// `{"p50": …, "p90": …, "p99": …, "p999": …, "max": …, "mean": …, "stdev": …, "count": …}` in
/// microseconds, as the JSON summary's `latency_us`.
pub(crate) fn percentile_json(histogram: &Histogram<u64>) -> String {
    let number = |value: f64| format!("{value:.3}");
    let empty = histogram.is_empty();
    let micros = |nanos: f64| if empty { 0.0 } else { nanos / 1000.0 };
    let mut out = String::from("{");
    for (_, key, quantile) in QUANTILES {
        let value = if empty {
            0
        } else {
            histogram.value_at_quantile(quantile)
        };
        let _ = write!(out, "\"{key}\": {}, ", number(micros(value as f64)));
    }
    let _ = write!(
        out,
        "\"max\": {}, \"mean\": {}, \"stdev\": {}, \"count\": {}}}",
        number(micros(histogram.max() as f64)),
        number(micros(if empty { 0.0 } else { histogram.mean() })),
        number(micros(if empty { 0.0 } else { histogram.stdev() })),
        histogram.len()
    );
    out
}

pub(crate) fn seconds(duration: Duration) -> String {
    format!("{}s", trim_float(duration.as_secs_f64()))
}

pub(crate) fn trim_float(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The JSON summary. Latencies in microseconds, times in seconds.
pub(crate) fn json(info: &RunInfo, summary: &Summary) -> String {
    let number = |value: f64| {
        if value.is_finite() {
            format!("{value:.3}")
        } else {
            "null".to_string()
        }
    };
    let mut errors = String::new();
    for (index, (kind, count)) in summary.errors.iter().enumerate() {
        let separator = if index == 0 { "" } else { ", " };
        let _ = write!(errors, "{separator}{}: {count}", json_string(&kind.name()));
    }
    let mut latency = String::new();
    for (_, key, quantile) in QUANTILES {
        let _ = write!(
            latency,
            "\"{key}\": {}, ",
            number(summary.latency_us(quantile))
        );
    }
    let mean_us = if summary.histogram.is_empty() {
        0.0
    } else {
        summary.histogram.mean() / 1000.0
    };
    let stdev_us = if summary.histogram.is_empty() {
        0.0
    } else {
        summary.histogram.stdev() / 1000.0
    };
    let optional = |value: Option<String>| value.unwrap_or_else(|| "null".to_string());
    let open = info.open.is_some();
    let send_lag = open.then(|| {
        format!(
            r#"{{"p50": {}, "p99": {}, "max": {}}}"#,
            number(summary.send_lag_us(0.5)),
            number(summary.send_lag_us(0.99)),
            number(summary.send_lag_max_us())
        )
    });
    let keys = info.keys.as_ref();
    format!(
        r#"{{
  "mode": {mode},
  "method": {method},
  "url": {url},
  "actor_id": {actor_id},
  "connections": {connections},
  "threads": {threads},
  "busy_poll": {busy_poll},
  "pipeline": {pipeline},
  "duration_limit_s": {duration_limit},
  "requests_limit": {requests_limit},
  "warmup_s": {warmup},
  "loop": {loop_},
  "rate": {rate},
  "max_in_flight": {max_in_flight},
  "keys": {keys},
  "key_dist": {key_dist},
  "seed": {seed},
  "resolve_each": {resolve_each},
  "requests": {requests},
  "ok": {ok},
  "errors": {error_total},
  "errors_by_kind": {{{errors}}},
  "duration_s": {elapsed},
  "throughput_rps": {throughput},
  "sent": {sent},
  "achieved_rate": {achieved_rate},
  "late_sends": {late},
  "send_lag_us": {send_lag},
  "latency_us": {{{latency}"max": {max}, "mean": {mean}, "stdev": {stdev}, "count": {count}}},
  "percentiles_us": {percentiles},
  "cpu": {{"user_s": {user}, "sys_s": {sys}, "wall_s": {wall}, "util_percent": {util}}},
  "connections_opened": {connects},
  "ws": {ws}
}}
"#,
        mode = json_string(info.mode),
        method = json_string(&info.method),
        url = json_string(&info.url),
        actor_id = optional(info.actor_id.as_deref().map(json_string)),
        connections = info.connections,
        threads = info.threads,
        busy_poll = info.busy_poll,
        pipeline = optional((!open).then(|| info.pipeline.to_string())),
        duration_limit = number(info.duration_limit.as_secs_f64()),
        requests_limit = optional(info.requests_limit.map(|n| n.to_string())),
        warmup = number(info.warmup.as_secs_f64()),
        loop_ = json_string(if open { "open" } else { "closed" }),
        rate = optional(info.open.map(|(rate, _)| number(rate))),
        max_in_flight = optional(info.open.map(|(_, max)| max.to_string())),
        keys = optional(keys.map(|keys| keys.count.to_string())),
        key_dist = optional(keys.map(|keys| json_string(&keys.dist.to_string()))),
        seed = optional(keys.map(|keys| keys.seed.to_string())),
        resolve_each = optional(keys.map(|keys| keys.resolve_each.to_string())),
        sent = summary.sent,
        achieved_rate = number(summary.achieved_rate()),
        late = optional(open.then(|| summary.late.to_string())),
        send_lag = optional(send_lag),
        requests = summary.requests,
        ok = summary.ok,
        error_total = summary.error_total(),
        elapsed = number(summary.elapsed.as_secs_f64()),
        throughput = number(summary.throughput()),
        max = number(summary.max_us()),
        mean = number(mean_us),
        stdev = number(stdev_us),
        count = summary.histogram.len(),
        percentiles = plot::percentile_points_json(&summary.histogram),
        user = number(summary.cpu.user.as_secs_f64()),
        sys = number(summary.cpu.system.as_secs_f64()),
        wall = number(summary.wall.as_secs_f64()),
        util = number(summary.cpu_percent()),
        connects = summary.connects,
        ws = optional(ws_json(info, summary)),
    )
}

/// The `ws` object of the JSON summary.
fn ws_json(run: &RunInfo, summary: &Summary) -> Option<String> {
    let (info, extras) = (run.ws.as_ref()?, summary.ws.as_ref()?);
    let mut codes = String::new();
    for (index, (code, count)) in extras.error_codes.iter().enumerate() {
        let separator = if index == 0 { "" } else { ", " };
        let _ = write!(codes, "{separator}{}: {count}", json_string(code));
    }
    Some(format!(
        r#"{{"action": {}, "args": {}, "in_flight": {}, "events": {}, "connection_errors": {}, "action_errors": {{{codes}}}, "handshake_us": {}, "first_failure": {}}}"#,
        json_string(&info.action),
        json_string(&info.args),
        if run.open.is_some() {
            "null".to_string()
        } else {
            info.in_flight.to_string()
        },
        extras.events,
        extras.connection_errors,
        percentile_json(&extras.handshake),
        extras
            .first_failure
            .as_deref()
            .map_or_else(|| "null".to_string(), json_string),
    ))
}

/// The `--plot` SVG: this run's latency percentile distribution (log-scaled latency).
pub(crate) fn plot(info: &RunInfo, summary: &Summary) -> String {
    let pacing = match info.open {
        None => format!("closed loop, {} connections", info.connections),
        Some((rate, _)) => format!(
            "open loop at {} req/s, {} connections",
            trim_float(rate),
            info.connections
        ),
    };
    let title = format!("{} {} {}: {pacing}", info.mode, info.method, info.url);
    let label = format!(
        "{} at {:.0} req/s (n={})",
        info.mode,
        summary.throughput(),
        summary.histogram.len()
    );
    let series = Series::from_histogram(&label, &summary.histogram);
    plot::svg(&title, &[series], YScale::Log)
}

/// The classic HdrHistogram percentile distribution (`outputPercentileDistribution` with 5
/// ticks per half distance), values in milliseconds as the HdrHistogram plotter expects.
pub(crate) fn hgrm(histogram: &Histogram<u64>) -> String {
    const NANOS_PER_MS: f64 = 1_000_000.0;
    let digits = usize::from(histogram.sigfig());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !histogram.is_empty() {
        for value in histogram.iter_quantiles(5) {
            total += value.count_since_last_iteration();
            let ms = value.value_iterated_to() as f64 / NANOS_PER_MS;
            let quantile = value.quantile_iterated_to();
            if quantile < 1.0 {
                let _ = writeln!(
                    out,
                    "{ms:>12.digits$} {quantile:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - quantile)
                );
            } else {
                let _ = writeln!(out, "{ms:>12.digits$} {quantile:>2.12} {total:>10}");
            }
        }
    }
    let (mean, stdev, max) = if histogram.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            histogram.mean() / NANOS_PER_MS,
            histogram.stdev() / NANOS_PER_MS,
            histogram.max() as f64 / NANOS_PER_MS,
        )
    };
    let sub_buckets = (2 * 10u64.pow(u32::from(histogram.sigfig()))).next_power_of_two();
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.digits$}, StdDeviation   = {stdev:>12.digits$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:>12.digits$}, Total count    = {:>12}]",
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {sub_buckets:>12}]",
        histogram.buckets()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_shape() {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, 3).unwrap();
        for micros in 1..=1000u64 {
            histogram.record(micros * 1000).unwrap();
        }
        let text = hgrm(&histogram);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        assert!(
            lines[2].starts_with("       0.001 0.000000000000          1           1.00"),
            "{}",
            lines[2]
        );
        let last_value = lines.iter().rfind(|l| !l.starts_with('#')).unwrap();
        assert!(
            last_value.contains(" 1.000000000000       1000"),
            "{last_value}"
        );
        assert!(
            text.contains("#[Max     =        1.000, Total count    =         1000]"),
            "{text}"
        );
        assert!(text.ends_with("SubBuckets     =         2048]\n"), "{text}");
    }
}
