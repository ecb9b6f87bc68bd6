#!/usr/bin/env bash
# Pinion beside nginx, Redis and RivetKit on Node, on one machine, in one run, with one table.
#
#   benches/compare/compare.sh [options]
#
#   --duration D        closed-loop measured time per run                  (default 10s)
#   --open-duration D   open-loop measured time per run                    (default 6s)
#   --warmup D          unmeasured load before every run (a separate run)  (default 1s)
#   --connections N     connections / redis-benchmark clients              (default 64)
#   --rates R1,R2,...   fixed offered rates (req/s) for the open loop; 50 % of nginx's
#                       closed-loop maximum from this run is always added  (default 500,5000)
#   --rounds N          closed-loop rounds, systems alternating; medians   (default 2)
#   --systems LIST      any of nginx,redis,node,pinion, in table order     (default all four)
#   --server-cpu C      CPU the servers are pinned to                      (default 1)
#   --load-cpu C        CPU loadgen / redis-benchmark are pinned to        (default 0)
#   --out DIR           results directory                                  (default bench-out/compare)
#   --reference DIR     the RivetKit reference server   (default $REFERENCE_DIR or /work/shared/reference)
#   --no-install        fail instead of installing what is missing
#   --no-build          use the release binaries as they are
#   --dry-run           check the tools, print the plan and its duration, start nothing
#
# What runs (every server pinned to --server-cpu, every load generator to --load-cpu):
#   nginx   `return 200` (one worker, access log off)               loadgen raw
#   redis   redis-server INCR (no persistence)                      redis-benchmark -t incr
#   node    RivetKit 2.0.33 reference server, counter.increment(1)  loadgen action
#   pinion  pinion-demo --shards 1, counter.increment(1)            loadgen action
# First the closed loop (--connections connections, --rounds rounds alternating between the
# systems), then the open loop (loadgen --rate) at each offered rate for every system whose
# closed-loop maximum reaches it (the others are marked; redis-benchmark has no open loop).
# Server CPU time per request is utime+stime of the server process (/proc/PID/stat, all its
# threads) around the measured run, divided by the requests measured; warm-ups are separate
# runs so that the ticks cover exactly the measured requests.
#
# Output: the Markdown table on stdout and in OUT/table.md, every run's loadgen JSON/.hgrm
# (redis: its output and an .hgrm made from its percentile distribution) and OUT/results.jsonl,
# and the latency plots OUT/compare.svg (closed loop, every system) and OUT/compare-open.svg
# (open loop at 50 % of nginx's maximum).
#
# Installs what is missing, once: nginx-light and redis-server with apt-get (as root or via
# sudo), python3, node/npm (Debian's nodejs, if there is no node at all), and the reference
# server's node_modules (npm install in a copy under ${TMPDIR:-/tmp}, only when node_modules is
# missing or the reference's package files changed). Builds loadgen and pinion-demo (release).
# Every run is bounded in time; the script stops only the processes it started, by PID.
# With the defaults it takes about 3 minutes (plus installs the first time); --dry-run says how
# long for the options given.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
here=$root/benches/compare

duration=10s
open_duration=6s
warmup=1s
connections=64
rates=500,5000
rounds=2
systems=nginx,redis,node,pinion
server_cpu=1
load_cpu=0
out=bench-out/compare
reference=${REFERENCE_DIR:-/work/shared/reference}
ref_copy=${REFERENCE_COPY:-${TMPDIR:-/tmp}/pinion-compare-reference}
install=1
build=1
dry_run=0
command_line="benches/compare/compare.sh${*:+ $*}"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    --open-duration) open_duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --systems) systems=$2; shift 2 ;;
    --server-cpu) server_cpu=$2; shift 2 ;;
    --load-cpu) load_cpu=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --reference) reference=$2; shift 2 ;;
    --no-install) install=0; shift ;;
    --no-build) build=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

script=compare.sh
# shellcheck source=benches/lib.sh
. "$root/benches/lib.sh"
want() { [[ ",$systems," == *",$1,"* ]]; }

# --- tools ----------------------------------------------------------------------------------
ensure python3 python3
ensure taskset util-linux
has cargo || [ "$build" = 0 ] || { log "needs cargo (https://rustup.rs) to build loadgen and pinion-demo"; exit 1; }
if want nginx; then ensure nginx nginx-light nginx || { log "no nginx"; exit 1; }; fi
if want redis; then
  ensure redis-server redis-server || { log "no redis-server"; exit 1; }
  ensure redis-benchmark redis-tools redis-server || { log "no redis-benchmark"; exit 1; }
fi
if want node; then
  [ -f "$reference/reference-server/server.js" ] || { log "no reference server at $reference (--reference DIR)"; exit 1; }
  ensure node nodejs || { log "no node"; exit 1; }
  ensure npm npm || { log "no npm"; exit 1; }
fi
duration_s=$(secs "$duration"); open_s=$(secs "$open_duration"); warmup_s=$(secs "$warmup")
IFS=, read -ra rate_list <<< "$rates"
IFS=, read -ra system_list <<< "$systems"
for s in "${system_list[@]}"; do
  case $s in nginx|redis|node|pinion) ;; *) log "unknown system $s"; exit 2 ;; esac
done
http_systems=(); for s in "${system_list[@]}"; do [ "$s" = redis ] || http_systems+=("$s"); done

if [ "$(nproc)" -lt 2 ] && [ "$server_cpu" != "$load_cpu" ]; then
  log "only $(nproc) CPU: servers and load share CPU 0"
  server_cpu=0; load_cpu=0
fi
estimate=$(python3 -c "
n, h, r, rates = ${#system_list[@]}, ${#http_systems[@]}, $rounds, ${#rate_list[@]} + 1
print(round(15 + r * n * ($warmup_s + $duration_s + 1.5) + rates * h * ($warmup_s + $open_s + 1.5)))")
echo "plan: ${system_list[*]}; closed loop $rounds round(s) x $duration, open loop at ${rates} req/s + 50 % of nginx's maximum x $open_duration; warmup $warmup; $connections connections; servers on CPU $server_cpu, load on CPU $load_cpu; about ${estimate}s"
if [ "$dry_run" = 1 ]; then exit 0; fi

if [ "$build" = 1 ]; then
  cargo build --release --quiet -p pinion-loadgen -p pinion-demo
fi
loadgen=$root/target/release/loadgen
demo=$root/target/release/pinion-demo

# --- the reference server's copy (npm install only when needed) ------------------------------
if want node; then
  mkdir -p "$ref_copy"
  stamp=$(cat "$reference/package.json" "$reference/package-lock.json" 2>/dev/null | cksum)
  if [ "$(cat "$ref_copy/.source-stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$ref_copy/node_modules"
  fi
  (cd "$reference" && find . -path ./node_modules -prune -o -type f -print) | while read -r f; do
    cmp -s "$reference/$f" "$ref_copy/$f" || install -D -m 644 "$reference/$f" "$ref_copy/$f"
  done
  if [ ! -d "$ref_copy/node_modules" ]; then
    log "npm install in $ref_copy"
    (cd "$ref_copy" && timeout 600 npm install --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$stamp" > "$ref_copy/.source-stamp"
  fi
fi

# --- servers ----------------------------------------------------------------------------------
mkdir -p "$out"
out=$(cd "$out" && pwd)
results=$out/results.jsonl
rm -f "$results" "$out"/*-closed-r*.json "$out"/*-open-*.json "$out"/*.hgrm "$out"/*.txt
tmp=$(mktemp -d)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

clk_tck=$(getconf CLK_TCK)
fail() { log "$1: $2"; python3 "$here/compare.py" fail "$results" "$1" "$2"; }
declare -A pid_of
declare -A label_of

if want nginx; then
  nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
  nginx_port=$(free_port)
  cat > "$tmp/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
error_log $tmp/nginx-error.log;
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
    listen 127.0.0.1:$nginx_port;
    location / { return 200; }
  }
}
CONF
  taskset -c "$server_cpu" "$nginx_bin" -e "$tmp/nginx-error.log" -c "$tmp/nginx.conf" &
  pid_of[nginx]=$!; pids+=("$!")
  label_of[nginx]="nginx $("$nginx_bin" -v 2>&1 | sed 's|.*nginx/||') \`return 200\`"
  wait_port "$nginx_port" "${pid_of[nginx]}" 10 || fail nginx "did not start"
fi
if want redis; then
  redis_port=$(free_port)
  taskset -c "$server_cpu" redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --dir "$tmp" --logfile "$tmp/redis.log" &
  pid_of[redis]=$!; pids+=("$!")
  label_of[redis]="Redis $(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/') \`INCR\`"
  wait_port "$redis_port" "${pid_of[redis]}" 10 || fail redis "did not start"
fi
if want node; then
  node_port=$(free_port)
  mkdir -p "$tmp/rivet-data"
  (cd "$ref_copy" && exec env PORT="$node_port" HOST=127.0.0.1 RIVET_DATA_DIR="$tmp/rivet-data" \
    taskset -c "$server_cpu" node reference-server/server.js > "$out/node-server.log" 2>&1) &
  pid_of[node]=$!; pids+=("$!")
  rivetkit=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' \
    "$ref_copy/node_modules/rivetkit/package.json" 2>/dev/null || echo '?')
  label_of[node]="RivetKit $rivetkit on Node $(node --version | tr -d v) \`counter.increment\`"
  wait_port "$node_port" "${pid_of[node]}" 60 || fail node "did not start (see $out/node-server.log)"
fi
if want pinion; then
  taskset -c "$server_cpu" "$demo" --listen 127.0.0.1:0 --shards 1 > "$tmp/demo.out" 2> "$tmp/demo.err" &
  pid_of[pinion]=$!; pids+=("$!")
  label_of[pinion]="Pinion \`counter.increment\`"
  for _ in $(seq 1 100); do grep -q 'listening on' "$tmp/demo.out" && break; sleep 0.1; done
  pinion_endpoint=$(grep -o 'http://[^ ]*' "$tmp/demo.out" | head -n1 || true)
  [ -n "$pinion_endpoint" ] || fail pinion "did not start"
fi
sleep 0.3

load_args() { # system -> the loadgen arguments in `args`
  case $1 in
    nginx) args=(raw --url "http://127.0.0.1:$nginx_port/") ;;
    node) args=(action --endpoint "http://127.0.0.1:$node_port" --actor counter --key bench --action increment --args '[1]') ;;
    pinion) args=(action --endpoint "$pinion_endpoint" --actor counter --key bench --action increment --args '[1]') ;;
  esac
}
alive() { # system: its server is still up and has not failed
  kill -0 "${pid_of[$1]}" 2>/dev/null || { fail "$1" "the server exited"; return 1; }
  ! grep -q "\"system\": \"$1\", \"kind\": \"failed\"" "$results" 2>/dev/null
}
lg() { timeout "$(python3 -c "print(int($1 * 2 + 30))")" taskset -c "$load_cpu" "$loadgen" "${@:2}"; }

closed_run() { # system round
  local name=$1 round=$2 pid=${pid_of[$1]} before after file=$out/$1-closed-r$2
  alive "$name" || return 0
  if [ "$name" = redis ]; then
    local warm_n n
    warm_n=$(python3 -c "print(max(5000, int($warmup_s * 20000)))")
    timeout 60 taskset -c "$load_cpu" redis-benchmark -h 127.0.0.1 -p "$redis_port" -t incr -c "$connections" \
      -n "$warm_n" --csv > "$tmp/redis-warm.txt" 2>&1 || { fail redis "redis-benchmark warm-up failed"; return 0; }
    n=$(python3 -c "print(max(10000, int($(python3 "$here/compare.py" redis-rps "$tmp/redis-warm.txt") * $duration_s)))")
    before=$(ticks "$pid")
    timeout "$(python3 -c "print(int($duration_s * 3 + 30))")" taskset -c "$load_cpu" redis-benchmark -h 127.0.0.1 \
      -p "$redis_port" -t incr -c "$connections" -n "$n" --precision 3 > "$file.txt" 2>&1 ||
      { fail redis "redis-benchmark failed or overran (see $file.txt)"; return 0; }
    after=$(ticks "$pid")
    python3 "$here/compare.py" redis "$results" redis "$round" "$file.txt" "$file.hgrm" "$n" "$before" "$after" "$clk_tck"
    return 0
  fi
  load_args "$name"
  lg "$warmup_s" "${args[@]}" --connections "$connections" --duration "$warmup" --quiet 2>> "$out/$name.err" ||
    { fail "$name" "loadgen warm-up failed (see $out/$name.err)"; return 0; }
  before=$(ticks "$pid")
  lg "$duration_s" "${args[@]}" --connections "$connections" --duration "$duration" \
    --json "$file.json" --hgrm "$file.hgrm" > "$file.txt" 2>> "$out/$name.err" ||
    { fail "$name" "loadgen failed (see $out/$name.err)"; return 0; }
  after=$(ticks "$pid")
  python3 "$here/compare.py" loadgen "$results" "$name" closed "$round" - "$file.json" "$before" "$after" "$clk_tck"
}

open_run() { # system rate
  local name=$1 rate=$2 pid=${pid_of[$1]} before after file=$out/$1-open-$2
  alive "$name" || return 0
  load_args "$name"
  lg "$warmup_s" "${args[@]}" --connections "$connections" --rate "$rate" --duration "$warmup" --quiet 2>> "$out/$name.err" ||
    { fail "$name" "loadgen warm-up failed (see $out/$name.err)"; return 0; }
  before=$(ticks "$pid")
  lg "$open_s" "${args[@]}" --connections "$connections" --rate "$rate" --duration "$open_duration" \
    --json "$file.json" --hgrm "$file.hgrm" > "$file.txt" 2>> "$out/$name.err" ||
    { fail "$name" "loadgen failed at $rate req/s (see $out/$name.err)"; return 0; }
  after=$(ticks "$pid")
  python3 "$here/compare.py" loadgen "$results" "$name" open 0 "$rate" "$file.json" "$before" "$after" "$clk_tck"
}

started=$(date -u '+%Y-%m-%d %H:%M UTC')
machine="$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r)"
echo "machine: $machine; load average $(cut -d' ' -f1-3 /proc/loadavg) at $started"
for round in $(seq 1 "$rounds"); do
  echo "-- closed loop, $connections connections, $duration, round $round of $rounds"
  for s in "${system_list[@]}"; do closed_run "$s" "$round"; done
done

half_rate=0
if want nginx; then half_rate=$(python3 "$here/compare.py" half "$results"); fi
all_rates=("${rate_list[@]}")
if [ "$half_rate" -gt 0 ]; then all_rates+=("$half_rate"); fi
for rate in "${all_rates[@]}"; do
  echo "-- open loop at $rate req/s, $connections connections, $open_duration"
  for s in "${system_list[@]}"; do
    if [ "$s" = redis ]; then
      python3 "$here/compare.py" skip "$results" redis "$rate" no-open-loop
      continue
    fi
    max=$(python3 "$here/compare.py" maxrps "$results" "$s")
    if [ "$max" -lt "$rate" ]; then
      echo "  $s: skipped (closed-loop maximum $max req/s)"
      python3 "$here/compare.py" skip "$results" "$s" "$rate" max "$max"
      continue
    fi
    open_run "$s" "$rate"
  done
done

# --- the table and the plots --------------------------------------------------------------------
meta=$(python3 - "$half_rate" "${all_rates[@]}" <<PY
import json, sys
labels = {"nginx": """${label_of[nginx]:-nginx}""", "redis": """${label_of[redis]:-Redis}""",
          "node": """${label_of[node]:-RivetKit on Node}""", "pinion": """${label_of[pinion]:-Pinion}"""}
systems = [[s, labels[s], ""] for s in "${systems}".split(",")]
print(json.dumps({"systems": systems, "rates": [float(r) for r in sys.argv[2:]], "half_rate": int(sys.argv[1])}))
PY
)
{
  echo "Measured $started on $machine: servers pinned to CPU $server_cpu, load generators to CPU $load_cpu;"
  echo "closed loop $connections connections x $duration ($rounds round(s), medians), open loop x $open_duration, warm-up $warmup."
  echo "Command: $command_line"
  echo
  python3 "$here/compare.py" table "$results" "$meta"
} > "$out/table.md"
echo
cat "$out/table.md"

plot_inputs=()
for s in "${system_list[@]}"; do
  f=$(python3 "$here/compare.py" plotrun "$results" closed "$s")
  [ -n "$f" ] && plot_inputs+=("${label_of[$s]//\`/}=$f")
done
if [ ${#plot_inputs[@]} -gt 0 ]; then
  "$loadgen" plot --out "$out/compare.svg" \
    --title "closed loop, $connections connections: latency by percentile" "${plot_inputs[@]}"
  echo "plot: $out/compare.svg"
fi
plot_inputs=()
for s in "${http_systems[@]}"; do
  f=$(python3 "$here/compare.py" plotrun "$results" open "$s" "$half_rate")
  [ -n "$f" ] && plot_inputs+=("${label_of[$s]//\`/}=$f")
done
if [ ${#plot_inputs[@]} -gt 0 ]; then
  "$loadgen" plot --out "$out/compare-open.svg" \
    --title "open loop at $half_rate req/s (50 % of nginx's maximum), $connections connections" "${plot_inputs[@]}"
  echo "plot: $out/compare-open.svg"
fi
