#!/usr/bin/env python3
"""Bookkeeping for durable.sh: one JSON record per measurement, then the Markdown tables.

    durable.py redis-rps CSV                         (throughput of a redis-benchmark --csv run)
    durable.py redis    RESULTS LABEL C CSV [CPU%]   (a redis-benchmark --csv run)
    durable.py loadgen  RESULTS LABEL C JSON [CPU%]  (a loadgen --json summary)
    durable.py touch    RESULTS NAME LABEL JSON [READ_BYTES]  (a `population touch --json` summary,
                                                      and what the server read from the device)
    durable.py metric   RESULTS NAME VALUE           (a number: RSS, milliseconds, ...)
    durable.py note     RESULTS TEXT                 (a line printed under the tables)
    durable.py recovered SERVER_LOG                  ("<elapsed_ms> <records>" of the last
                                                      `store recovered` line, or "- -")
    durable.py table    RESULTS                      (prints the Markdown tables)

With DURABLE_ROUND=N in the environment, `redis` and `loadgen` record a round of part a2 (Redis
and Pinion alternating) instead of a row of part a.

RESULTS is a JSON-lines file. Latencies are in microseconds, RSS in bytes.
"""

import csv
import json
import os
import re
import statistics
import sys


def load(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def append(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def redis_row(path):
    """The INCR row of redis-benchmark --csv: rps and latencies (ms) by column name."""
    with open(path, errors="replace") as f:
        rows = list(csv.reader(line for line in f.read().replace("\r", "\n").split("\n") if line))
    header = next((r for r in rows if r and r[0] == "test"), None)
    row = next((r for r in rows if r and r[0] == "INCR"), None)
    if header is None or row is None:
        raise SystemExit(f"cannot parse redis-benchmark output {path}")
    return {name: float(value) for name, value in zip(header[1:], row[1:])}


def fmt_num(value, digits=0):
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def fmt_us(value):
    if value is None:
        return "—"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def fmt_mib(value):
    return "—" if value is None else f"{value / 2**20:,.1f} MiB"


def writes_table(records):
    rows = [r for r in records if r["kind"] == "write"]
    if not rows:
        return []
    always = {r["c"]: r["rps"] for r in rows if r["label"].startswith("Redis") and "always" in r["label"]}
    out = [
        "### a. Durable increments/s: Pinion beside Redis `appendfsync always`",
        "",
        "| C | workload | req/s | p50 µs | p99 µs | errors | server CPU | × Redis always |",
        "|--:|:--|--:|--:|--:|--:|--:|--:|",
    ]
    for c in sorted({r["c"] for r in rows}):
        for r in (r for r in rows if r["c"] == c):
            base = always.get(c)
            ratio = f"{r['rps'] / base:.2f}" if base else "—"
            cpu = "—" if r.get("cpu") is None else f"{r['cpu']:.0f} %"
            out.append(
                f"| {c} | {r['label']} | {fmt_num(r['rps'])} | {fmt_us(r['p50'])} | "
                f"{fmt_us(r['p99'])} | {r['errors']} | {cpu} | {ratio} |"
            )
    out += ["", "server CPU: utime + stime of the server process over the run (Pinion: loadgen's "
            "warm-up included), as a percentage of one CPU.", ""]
    return out


def write_record(**fields):
    """A row of part a, or with DURABLE_ROUND set, one measurement of a round of part a2."""
    round_ = os.environ.get("DURABLE_ROUND")
    if round_:
        return dict(kind="round", round=int(round_), **fields)
    return dict(kind="write", **fields)


def rounds_table(records):
    rows = [r for r in records if r["kind"] == "round"]
    if not rows:
        return []
    out = [
        "### a2. Rounds: Redis `appendfsync always` and Pinion's output gate, alternating",
        "",
        "Each round measures both servers back to back (which goes first alternates), so that a",
        "slow spell of this shared machine lands on both rather than on one row.",
        "",
        "| C | round | Redis always req/s | Pinion req/s | × Redis always |",
        "|--:|--:|--:|--:|--:|",
    ]
    for c in sorted({r["c"] for r in rows}):
        ratios, redis_all, pinion_all = [], [], []
        for n in sorted({r["round"] for r in rows if r["c"] == c}):
            pair = [r for r in rows if r["c"] == c and r["round"] == n]
            redis = next((r["rps"] for r in pair if r["label"].startswith("Redis")), None)
            pinion = next((r["rps"] for r in pair if not r["label"].startswith("Redis")), None)
            if redis is None or pinion is None:
                continue
            ratios.append(pinion / redis)
            redis_all.append(redis)
            pinion_all.append(pinion)
            out.append(f"| {c} | {n} | {fmt_num(redis)} | {fmt_num(pinion)} | {pinion / redis:.2f} |")
        if ratios:
            ahead = sum(1 for x in ratios if x > 1)
            out.append(
                f"| {c} | **median of {len(ratios)}** | {fmt_num(statistics.median(redis_all))} | "
                f"{fmt_num(statistics.median(pinion_all))} | **{statistics.median(ratios):.2f}** "
                f"(ahead in {ahead} of {len(ratios)}) |"
            )
    label = next(r["label"] for r in rows if not r["label"].startswith("Redis"))
    out += ["", f"Pinion: {label}.", ""]
    return out


def touch_row(r):
    lat = r["latency_us"]
    woken = "—" if r.get("matching") is None else f"{r['matching']:,}"
    read = "—" if r.get("read_bytes") is None else f"{r['read_bytes'] / 1024:,.0f} KiB"
    return (
        f"| {r['label']} | {r['count']:,} | {woken} | {read} | {fmt_us(lat['p50'])} | {fmt_us(lat['p90'])} | "
        f"{fmt_us(lat['p99'])} | {fmt_us(lat['p999'])} | {fmt_us(lat['max'])} | {r['errors']} |"
    )


TOUCH_HEADER = [
    "| run | requests | check | device reads | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | errors |",
    "|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
]


def wake_table(records):
    touches = {r["name"]: r for r in records if r["kind"] == "touch" and r["name"].startswith("wake-")}
    if not touches:
        return []
    out = ["### b. Wake from disk: one request at a time, one `sleeper.read` per actor", ""]
    out += TOUCH_HEADER
    out += [touch_row(r) for r in touches.values()]
    out.append("")
    out.append("check: replies with `\"vars\":0`, i.e. actors whose ephemeral vars started over "
               "(really woken; `bump` had set them to 1 before they slept). device reads: read_bytes "
               "of the server's /proc/PID/io during the run (a 4 KiB page holds many small states, so "
               "even with a cold page cache most wakes find theirs cached by an earlier one).")
    out.append("")
    for name, base in (("wake-warm", "wake-awake"), ("wake-cold", "wake-awake"),
                       ("wake-warm-spin", "wake-awake-spin"),
                       ("wake-cold-spin", "wake-awake-spin")):
        woke, awake = touches.get(name), touches.get(base)
        if woke and awake:
            d50 = woke["latency_us"]["p50"] - awake["latency_us"]["p50"]
            d99 = woke["latency_us"]["p99"] - awake["latency_us"]["p99"]
            out.append(f"- {woke['label']} minus awake: p50 {d50:+,.1f} µs, p99 {d99:+,.1f} µs")
    out.append("")
    return out


def population_table(records):
    m = {r["name"]: r["value"] for r in records if r["kind"] == "metric"}
    touches = {r["name"]: r for r in records if r["kind"] == "touch" and r["name"].startswith("pop-")}
    n = m.get("pop_n")
    if not n:
        return []
    n = int(n)

    def per_actor(key):
        if m.get(key) is None or m.get("rss_empty") is None:
            return "—"
        return f"{(m[key] - m['rss_empty']) / n:,.0f} B per actor"

    def ms(key):
        return "—" if m.get(key) is None else f"{m[key]:,.0f} ms"

    def recovered(suffix):
        if m.get("recovered_ms_" + suffix) is None:
            return ""
        return (f" (store recovery {m['recovered_ms_' + suffix]:,.0f} ms, "
                f"{m.get('records_' + suffix, 0):,.0f} log records)")

    rows = [
        ("actors created (and `getCount` called once on each)", f"{n:,} `counter` in {m.get('create_s', 0):.1f} s: "
                           f"{fmt_num(m.get('create_rate'))} actors/s ({m.get('create_workers', 0):.0f} connections)"),
        ("RSS, empty server: at ready / settled", f"{fmt_mib(m.get('rss_empty_ready'))} / {fmt_mib(m.get('rss_empty'))}"),
        ("RSS, all awake and idle: right after creation", f"{fmt_mib(m.get('rss_awake'))}: {per_actor('rss_awake')}"),
        ("RSS, all awake and idle: settled", f"{fmt_mib(m.get('rss_awake_settled'))}: {per_actor('rss_awake_settled')}"),
        ("clean stop (SIGTERM) with all awake", ms("stop_term_ms")),
        ("data directory", fmt_mib(m.get("data_bytes"))),
        ("restart after SIGTERM: spawn → GET /metadata 200", ms("ready_term_ms") + recovered("term")),
        ("RSS after that restart, all asleep: at ready", f"{fmt_mib(m.get('rss_asleep_ready'))}: {per_actor('rss_asleep_ready')}"),
        ("RSS after that restart, all asleep: settled", f"{fmt_mib(m.get('rss_asleep'))}: {per_actor('rss_asleep')}"),
        ("peak RSS of that process (VmHWM) before the wake-ups", fmt_mib(m.get("hwm_term"))),
        (f"RSS right after waking {m.get('touch_n', 0):,.0f} of them", fmt_mib(m.get("rss_touched"))),
        ("RSS once those slept again (settled)", f"{fmt_mib(m.get('rss_resleep'))}: {per_actor('rss_resleep')}"),
        ("restart after SIGKILL: spawn → GET /metadata 200", ms("ready_kill_ms") + recovered("kill")),
        ("RSS after that restart, all asleep: at ready", f"{fmt_mib(m.get('rss_kill_ready'))}: {per_actor('rss_kill_ready')}"),
        ("RSS after that restart, all asleep: settled", f"{fmt_mib(m.get('rss_kill'))}: {per_actor('rss_kill')}"),
        ("peak RSS of that process (VmHWM)", fmt_mib(m.get("hwm_kill"))),
    ]
    out = [f"### c. {n:,} sleeping actors: recovery and memory", "", "| measurement | value |", "|:--|:--|"]
    out += [f"| {name} | {value} |" for name, value in rows]
    out.append("")
    if touches:
        out.append(f"Wake latency at that population (`counter.getCount` on ids spread over the population, shuffled, one at a time):")
        out.append("")
        out += TOUCH_HEADER
        out += [touch_row(r) for r in touches.values()]
        out.append("")
        out.append("check: replies `{\"output\":0}` (the actor exists after the restart, with its state).")
        out.append("")
    out.append("Bytes per actor = (RSS − settled RSS of the empty server) / actors. The empty "
               "server's RSS is mostly glommio's io_uring rings and preallocated buffers. \"At ready\": "
               "the first RSS after GET /metadata answers; \"settled\": after 1 s of GET /health traffic "
               "(no actor woken) and once the RSS stopped falling. pinion-demo hands the memory "
               "recovery freed back to the OS before it serves (mimalloc's mi_collect on each "
               "shard), so the two should agree; both are kept to show it.")
    out.append("")
    return out


def cpu_arg(args):
    return float(args[4]) if len(args) > 4 else None


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "redis-rps":
        print(redis_row(args[0])["rps"])
    elif cmd == "redis":
        results, label, c, path = args[:4]
        row = redis_row(path)
        append(results, write_record(label=label, c=int(c), rps=row["rps"],
                                     p50=row["p50_latency_ms"] * 1000,
                                     p99=row["p99_latency_ms"] * 1000,
                                     errors=0, cpu=cpu_arg(args), file=path))
    elif cmd == "loadgen":
        results, label, c, path = args[:4]
        with open(path) as f:
            s = json.load(f)
        lat = s["latency_us"]
        append(results, write_record(label=label, c=int(c), rps=s["throughput_rps"],
                                     p50=lat["p50"], p99=lat["p99"], errors=s["errors"],
                                     cpu=cpu_arg(args), file=path))
    elif cmd == "touch":
        results, name, label, path = args[:4]
        with open(path) as f:
            s = json.load(f)
        read = int(args[4]) if len(args) > 4 else None
        append(results, dict(kind="touch", name=name, label=label, file=path, read_bytes=read, **s))
    elif cmd == "metric":
        results, name, value = args
        append(results, dict(kind="metric", name=name, value=float(value)))
    elif cmd == "note":
        append(args[0], dict(kind="note", text=" ".join(args[1:])))
    elif cmd == "recovered":
        found = "- -"
        with open(args[0], errors="replace") as f:
            for line in f:
                if "store recovered" in line:
                    ms = re.search(r"elapsed_ms=(\d+)", line)
                    records = re.search(r"records=(\d+)", line)
                    if ms and records:
                        found = f"{ms.group(1)} {records.group(1)}"
        print(found)
    elif cmd == "table":
        records = load(args[0])
        lines = writes_table(records) + rounds_table(records) + wake_table(records) + population_table(records)
        notes = [r["text"] for r in records if r["kind"] == "note"]
        notes.append("latencies include the client's own wake-up on each response (loadgen's "
                     "executor, population's blocked read), except in the spinning-client rows: "
                     "the same within each kind of row, so the differences between them are the "
                     "server's")
        if notes:
            lines += ["Notes:", ""] + [f"- {t}" for t in notes]
        print("\n".join(lines).rstrip())
    else:
        raise SystemExit(f"durable.py: unknown command {cmd}")


if __name__ == "__main__":
    main()
