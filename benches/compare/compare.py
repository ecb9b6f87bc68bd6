#!/usr/bin/env python3
"""Bookkeeping for compare.sh: one record per run, then the table.

    compare.py loadgen  RESULTS NAME KIND ROUND RATE JSON TICKS_BEFORE TICKS_AFTER CLK_TCK
    compare.py redis    RESULTS NAME ROUND OUTPUT HGRM REQUESTS TICKS_BEFORE TICKS_AFTER CLK_TCK
    compare.py redis-rps OUTPUT           (the throughput of a redis-benchmark run, for sizing)
    compare.py half     RESULTS           (50 % of nginx's median closed-loop req/s, rounded)
    compare.py maxrps   RESULTS NAME      (a system's median closed-loop req/s, 0 if none)
    compare.py plotrun  RESULTS KIND NAME [RATE]  (the file to plot: the median round's)
    compare.py skip     RESULTS NAME RATE WHY [MAX]   (an open-loop run left out, and why)
    compare.py fail     RESULTS NAME WHY              (a system that could not be measured)
    compare.py table    RESULTS META_JSON  (prints the Markdown table)

RESULTS is a JSON-lines file; each record has the system, the kind (closed/open), the round or
the offered rate, throughput, latency percentiles (µs), the server's CPU µs per request and the
file with the latency distribution.
"""

import json
import re
import statistics
import sys

SUSTAIN = 0.95  # an open-loop run sustains its rate when >= 95 % of it completed, error-free


def load(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def append(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def cpu_us(before, after, hz, requests):
    return 1e6 * (int(after) - int(before)) / int(hz) / max(int(requests), 1)


def record_loadgen(results, name, kind, round_, rate, path, before, after, hz):
    with open(path) as f:
        s = json.load(f)
    lat = s["latency_us"]
    rate = float(rate) if rate not in ("", "-") else None
    record = dict(
        system=name, kind=kind, round=int(round_), rate=rate, rps=s["throughput_rps"],
        p50=lat["p50"], p99=lat["p99"], p999=lat["p999"], max=lat["max"],
        cpu_us=cpu_us(before, after, hz, s["requests"]), requests=s["requests"],
        errors=s["errors"], loadgen_cpu=s["cpu"]["util_percent"], file=path,
    )
    if kind == "open":
        record["sustained"] = s["errors"] == 0 and s["throughput_rps"] >= SUSTAIN * rate
    append(results, record)
    return record


def redis_rps(text):
    m = re.search(r"throughput summary: ([\d.]+) requests per second", text)
    if m:
        return float(m.group(1))
    m = re.search(r'"INCR","([\d.]+)"', text)  # --csv
    return float(m.group(1)) if m else 0.0


def record_redis(results, name, round_, output, hgrm, requests, before, after, hz):
    text = open(output, errors="replace").read().replace("\r", "\n")
    rps = redis_rps(text)
    # "Latency by percentile distribution:" then `P% <= V milliseconds (cumulative count N)`.
    section = text.split("Latency by percentile distribution:", 1)
    if len(section) < 2 or rps == 0:
        raise SystemExit(f"cannot parse redis-benchmark output {output}")
    rows = []
    for line in section[1].split("\n"):
        m = re.match(r"\s*([\d.]+)% <= ([\d.]+) milliseconds \(cumulative count (\d+)\)", line)
        if m:
            rows.append((float(m.group(1)), float(m.group(2)), int(m.group(3))))
        elif rows and line.strip():
            break
    # The summary's p50/p99 are exact (read from its HdrHistogram); p99.9 is the first listed
    # percentile at or above 99.9 % (the list halves the distance to 100 % each step).
    summary = re.search(
        r"avg\s+min\s+p50\s+p95\s+p99\s+max\s*\n\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)",
        text)

    def at(percent):
        return next((ms for p, ms, _ in rows if p >= percent - 1e-9), rows[-1][1]) * 1000

    p50, p99 = (float(summary.group(3)) * 1000, float(summary.group(5)) * 1000) if summary else (at(50), at(99))
    with open(hgrm, "w") as f:
        f.write(f"{'Value':>12} {'Percentile':>14} {'TotalCount':>10}\n\n")
        for p, ms, count in rows:
            f.write(f"{ms:12.3f} {p / 100:14.12f} {count:10d}\n")
    record = dict(
        system=name, kind="closed", round=int(round_), rate=None, rps=rps, p50=p50, p99=p99,
        p999=at(99.9), max=rows[-1][1] * 1000, cpu_us=cpu_us(before, after, hz, requests),
        requests=int(requests), errors=0, loadgen_cpu=None, file=hgrm,
    )
    append(results, record)
    return record


def closed(records, name):
    return [r for r in records if r["system"] == name and r["kind"] == "closed"]


def median_of(rows, key):
    return statistics.median(r[key] for r in rows)


def max_rps(records, name):
    rows = closed(records, name)
    return median_of(rows, "rps") if rows else 0.0


def half(records):
    rps = max_rps(records, "nginx")
    return int(round(rps / 2 / 100.0) * 100) if rps else 0


def median_run(rows):
    """The run whose throughput is the median (the lower middle one for an even count)."""
    rows = sorted(rows, key=lambda r: r["rps"])
    return rows[(len(rows) - 1) // 2]


def fmt_int(v):
    return f"{v:,.0f}"


def fmt_us(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def ratio(v, base):
    return f" ({v / base:.2f}×)" if base else ""


def table(results, meta_json):
    records = load(results)
    meta = json.loads(meta_json)
    systems = meta["systems"]  # [[key, label, note], ...] in row order
    rates = [float(r) for r in meta["rates"]]
    half_rate = meta.get("half_rate") or 0
    base = {}
    rows_out = []
    med = {}
    for key, _, _ in systems:
        rows = closed(records, key)
        if rows:
            med[key] = {k: median_of(rows, k) for k in ("rps", "p50", "p99", "p999", "cpu_us")}
    opens = {}
    for r in records:
        if r["kind"] == "open":
            opens[(r["system"], float(r["rate"]))] = r
    skipped = {(r["system"], float(r["rate"])): r for r in records if r["kind"] == "skipped"}
    failed = {r["system"]: r["why"] for r in records if r["kind"] == "failed"}
    base = med.get("nginx", {})
    rate_cols = []
    for rate in rates:
        label = f"open p99 µs @ {fmt_int(rate)}/s"
        if half_rate and abs(rate - half_rate) < 1e-6:
            label += " (½ nginx max)"
        rate_cols.append((rate, label))
    half_cpu = bool(half_rate)
    header = ["system", "req/s", "p50 µs", "p99 µs", "p99.9 µs", "CPU µs/req"]
    header += [label for _, label in rate_cols]
    if half_cpu:
        header.append(f"CPU µs/req @ {fmt_int(half_rate)}/s")
    notes = set()
    for key, label, note in systems:
        cells = [label]
        m = med.get(key)
        if not m:
            cells += [failed.get(key, "not run")] + [""] * (len(header) - 2)
            rows_out.append(cells)
            continue
        is_base = key == "nginx"
        for field, fmt in (("rps", fmt_int), ("p50", fmt_us), ("p99", fmt_us), ("p999", fmt_us)):
            cell = fmt(m[field])
            if not is_base and base:
                cell += ratio(m[field], base[field])
            cells.append(cell)
        cell = f"{m['cpu_us']:.2f}"
        if not is_base and base:
            cell += ratio(m["cpu_us"], base["cpu_us"])
        cells.append(cell)
        for rate, _ in rate_cols:
            r = opens.get((key, rate))
            if r is None:
                s = skipped.get((key, rate))
                if s and s.get("why") == "no-open-loop":
                    cells.append("n/a ¹")
                    notes.add(1)
                elif s:
                    cells.append(f"– (max {fmt_int(s['max'])}) ²")
                    notes.add(2)
                else:
                    cells.append("")
                continue
            cell = fmt_us(r["p99"])
            if not r["sustained"]:
                cell = f"✗ {cell} ({fmt_int(r['rps'])}/s done) ³"
                notes.add(3)
            else:
                b = opens.get(("nginx", rate))
                if not is_base and b and b["sustained"]:
                    cell += ratio(r["p99"], b["p99"])
            cells.append(cell)
        if half_cpu:
            r = opens.get((key, float(half_rate)))
            if r is None:
                s = skipped.get((key, float(half_rate)))
                cells.append({"no-open-loop": "n/a ¹", "max": "– ²"}.get(s and s.get("why"), ""))
            else:
                cell = f"{r['cpu_us']:.2f}"
                b = opens.get(("nginx", float(half_rate)))
                if not is_base and b:
                    cell += ratio(r["cpu_us"], b["cpu_us"])
                if not r["sustained"]:
                    cell += " ³"
                cells.append(cell)
        rows_out.append(cells)
    out = ["| " + " | ".join(header) + " |",
           "|---|" + "---:|" * (len(header) - 1)]
    out += ["| " + " | ".join(c for c in cells) + " |" for cells in rows_out]
    footnotes = {
        1: "¹ redis-benchmark has no fixed-rate (open-loop) mode.",
        2: "² not run: the system's closed-loop maximum in this run is below the offered rate.",
        3: f"³ did not sustain the offered rate (under {SUSTAIN:.0%} of it completed, or errors).",
    }
    out.append("")
    gen = []
    for key, _, _ in systems:
        rows = [r for r in closed(records, key) if r.get("loadgen_cpu") is not None]
        if rows:
            gen.append(f"{key} {median_of(rows, 'loadgen_cpu'):.0f} %")
    if gen:
        out.append("Load generator CPU in the closed-loop runs (of one core): " + ", ".join(gen) + ".")
    out.append("(×) = ratio to nginx (the same column). " + " ".join(footnotes[n] for n in sorted(notes)))
    print("\n".join(out))


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "loadgen":
        r = record_loadgen(*args)
        extra = ""
        if r["kind"] == "open":
            extra = "  sustained" if r["sustained"] else "  NOT SUSTAINED"
        print(f"  {r['system']:7} {r['kind']:6} {r['rps']:>9.0f} req/s  p50 {r['p50']:>9.1f}  p99 {r['p99']:>9.1f}"
              f"  p99.9 {r['p999']:>9.1f} µs  errors {r['errors']}  server {r['cpu_us']:.2f} µs/req"
              f"  loadgen cpu {r['loadgen_cpu']:.0f}%{extra}")
    elif cmd == "redis":
        r = record_redis(*args)
        print(f"  {r['system']:7} closed {r['rps']:>9.0f} req/s  p50 {r['p50']:>9.1f}  p99 {r['p99']:>9.1f}"
              f"  p99.9 {r['p999']:>9.1f} µs  server {r['cpu_us']:.2f} µs/req")
    elif cmd == "redis-rps":
        print(f"{redis_rps(open(args[0], errors='replace').read()):.0f}")
    elif cmd == "half":
        print(half(load(args[0])))
    elif cmd == "maxrps":
        print(f"{max_rps(load(args[0]), args[1]):.0f}")
    elif cmd == "plotrun":
        records = load(args[0])
        if args[1] == "open":
            rows = [r for r in records if r["system"] == args[2] and r["kind"] == "open"
                    and abs(float(r["rate"]) - float(args[3])) < 1e-6]
        else:
            rows = closed(records, args[2])
        if rows:
            print(median_run(rows)["file"])
    elif cmd == "skip":
        record = dict(system=args[1], kind="skipped", rate=float(args[2]), why=args[3])
        if len(args) > 4:
            record["max"] = float(args[4])
        append(args[0], record)
    elif cmd == "fail":
        append(args[0], dict(system=args[1], kind="failed", why=args[2]))
    elif cmd == "table":
        table(*args)
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
