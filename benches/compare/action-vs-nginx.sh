#!/usr/bin/env bash
# One run, one machine: `counter.increment` through `POST /gateway/{id}/action/increment` on
# pinion-demo (--shards 1) beside nginx `return 200`, both pinned to the same CPU, driven by the
# same loadgen settings from another CPU. Prints req/s, latency percentiles and each server's CPU
# time per request (utime+stime from /proc/PID/stat, before and after the run).
#
#   benches/compare/action-vs-nginx.sh [duration=10s] [connections=64] [rounds=3] [server_cpu=1] [load_cpu=0]
#
# The two servers are measured alternately, `rounds` times each, because this shared VM drifts by
# ±15 % between identical runs; the summary gives each figure's median over the rounds and the
# ratios of those medians.
#
# Needs nginx (apt-get install nginx-light); builds the release binaries itself. Starts and stops
# only its own processes.
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-10s}
connections=${2:-64}
rounds=${3:-3}
server_cpu=${4:-1}
load_cpu=${5:-0}
out=${OUT_DIR:-bench-out}
mkdir -p "$out"

command -v nginx >/dev/null || { echo "needs nginx: apt-get install -y nginx-light" >&2; exit 1; }
cargo build --release --quiet --bin pinion-demo --bin loadgen
clk_tck=$(getconf CLK_TCK)

# CPU ticks (utime + stime) of a process and its threads/children we started.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

tmp=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

port_nginx=18080
cat > "$tmp/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
error_log $tmp/error.log;
pid $tmp/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp;
  proxy_temp_path $tmp;
  fastcgi_temp_path $tmp;
  uwsgi_temp_path $tmp;
  scgi_temp_path $tmp;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$port_nginx reuseport;
    location / { return 200; }
  }
}
CONF
taskset -c "$server_cpu" nginx -c "$tmp/nginx.conf" &
nginx_pid=$!
pids+=("$nginx_pid")

taskset -c "$server_cpu" target/release/pinion-demo --listen 127.0.0.1:0 --shards 1 > "$tmp/demo.out" 2> "$tmp/demo.err" &
demo_pid=$!
pids+=("$demo_pid")
for _ in $(seq 1 100); do grep -q 'listening on' "$tmp/demo.out" && break; sleep 0.1; done
endpoint=$(grep -o 'http://[^ ]*' "$tmp/demo.out" | head -n1)
sleep 0.3

run() { # name pid loadgen-args...
  local name=$1 pid=$2; shift 2
  local before after
  # Warm up in a separate run so that the CPU ticks below cover exactly the measured requests.
  taskset -c "$load_cpu" target/release/loadgen "$@" --connections "$connections" --duration 1s --quiet
  before=$(ticks "$pid")
  taskset -c "$load_cpu" target/release/loadgen "$@" --connections "$connections" --duration "$duration" \
    --json "$out/$name.json" --hgrm "$out/$name.hgrm" > "$out/$name.txt"
  after=$(ticks "$pid")
  python3 - "$name" "$out/$name.json" "$before" "$after" "$clk_tck" "$out/rounds.jsonl" <<'PY'
import json, sys
name, path, before, after, hz, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
s = json.load(open(path))
lat = s["latency_us"]
total = s["requests"]
cpu_s = (after - before) / hz
row = dict(name=name, rps=s["throughput_rps"], p50=lat["p50"], p99=lat["p99"], p999=lat["p999"],
           cpu_us=1e6 * cpu_s / max(total, 1), loadgen_cpu=s["cpu"]["util_percent"], errors=s["errors"])
open(rounds, "a").write(json.dumps(row) + "\n")
print(f"{name:8} {s['throughput_rps']:>10.0f} req/s  p50 {lat['p50']:>7.1f}  p99 {lat['p99']:>7.1f}  "
      f"p99.9 {lat['p999']:>7.1f}  max {lat['max']:>8.1f} us  errors {s['errors']}  "
      f"server cpu {cpu_s:.2f} s = {1e6 * cpu_s / max(total, 1):.2f} us/req  loadgen cpu {s['cpu']['util_percent']:.0f}%")
PY
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); servers on CPU $server_cpu, loadgen on CPU $load_cpu; $connections connections, $duration"
rm -f "$out/rounds.jsonl"
for round in $(seq 1 "$rounds"); do
  echo "-- round $round of $rounds"
  run nginx "$nginx_pid" raw --url "http://127.0.0.1:$port_nginx/"
  run pinion "$demo_pid" action --endpoint "$endpoint" --actor counter --key bench --action increment --args '[1]' 2>/dev/null
done
python3 - "$out/rounds.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
med = {}
for name in ("nginx", "pinion"):
    mine = [r for r in rows if r["name"] == name]
    med[name] = {k: statistics.median(r[k] for r in mine) for k in ("rps", "p50", "p99", "p999", "cpu_us")}
print(f"\nmedians of {len(rows) // 2} rounds:")
print(f"{'server':8} {'req/s':>9} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'cpu us/req':>11}")
for name, m in med.items():
    print(f"{name:8} {m['rps']:>9.0f} {m['p50']:>8.0f} {m['p99']:>8.0f} {m['p999']:>9.0f} {m['cpu_us']:>11.2f}")
n, p = med["nginx"], med["pinion"]
print(f"pinion/nginx: throughput {p['rps'] / n['rps']:.2f}x (target >= 0.80), p99 {p['p99'] / n['p99']:.2f}x (target <= 1.5), "
      f"cpu/req {p['cpu_us'] / n['cpu_us']:.2f}x (target <= 1.25)")
PY
