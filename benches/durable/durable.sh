#!/usr/bin/env bash
# Durability benchmarks: Pinion's durable writes beside Redis with `appendfsync always`, the
# latency of waking an actor from disk, and the recovery time and memory of a large population
# of sleeping actors. One run, one Markdown table.
#
#   benches/durable/durable.sh [options]
#
#   --connections LIST  connections (redis-benchmark clients) for part a       (default 1,16,64,256)
#   --duration D        measured time per loadgen run                           (default 5s)
#   --warmup D          loadgen warm-up before each measured run                (default 1s)
#   --redis-seconds S   redis-benchmark -n is sized to take about S seconds     (default 4)
#   --sleepers N        sleeper actors for part b                               (default 20000)
#   --population N      counter actors for part c                               (default 1000000)
#   --touch N           actors woken at that population, spread over it        (default 10000)
#   --workers N         connections of `population create` in part c           (default 64)
#   --sleep-timeout-ms MS  pinion-demo --sleep-timeout-ms after the restarts in part c (default 5000:
#                       longer than touching --touch actors one at a time takes)
#   --rounds N          rounds of part a2 per C                                 (default 5)
#   --rounds-connections LIST  connections for part a2                         (default 64,256)
#   --parts LIST        any of writes,rounds,wake,population                    (default all)
#   --quick             smoke run: --connections 1,64 --duration 2s --warmup 500ms --redis-seconds 2
#                       --sleepers 5000 --population 100000 --touch 5000 --rounds 2
#                       --rounds-connections 64 (explicit options win)
#   --data-root DIR     where the data directories (Pinion's and Redis's) go: the disk under test
#                                                                   (default ${TMPDIR:-/tmp})
#   --server-cpu C      CPU the servers are pinned to                           (default 1)
#   --load-cpu C        CPU loadgen / redis-benchmark / population are pinned to (default 0)
#   --out DIR           results directory                                       (default bench-out/durable)
#   --no-install        fail instead of installing redis-server when it is missing
#   --no-build          use the release binaries as they are
# Environment: DURABLE_SERVER_ARGS, extra pinion-demo flags for every Pinion server (experiments,
# e.g. "--spin-us 400"); recorded in the results' notes.
#
# a. writes: Redis INCR (redis-benchmark -t incr -P 1) with `--appendonly yes --appendfsync
#    always` and, for reference, without persistence; Pinion (pinion-demo --shards 1 --data-dir,
#    a LogStore on the same filesystem as Redis's AOF) with loadgen action: counter.increment
#    (saved on the save interval, not per reply: the baseline), durableCounter.increment (reply
#    held until the state is fdatasync'ed: the output gate) and counter.incrementSaved
#    (save_state() before replying), each on one hot actor and, for C >= 16, spread uniformly
#    over C actors (--keys C). Every row: req/s, p50/p99, the server's CPU use (utime + stime
#    over the run; loadgen's warm-up included) and the ratio to Redis-always at the same C.
#    The two 1-actor Pinion workloads run once more under wrk (-t1, an epoll client like
#    redis-benchmark; see wrk_run for why the client matters): the rows to set beside Redis.
#    For C >= 16, durableCounter.increment also runs under wrk spread uniformly over C actors
#    (each request to one picked at random), so that every request is its own record.
#    Then a durability check: SIGKILL, restart, and the hot durableCounter must hold at least
#    the increments whose replies loadgen counted.
# a2. rounds: Redis `appendfsync always` and Pinion durableCounter.increment (one actor, wrk),
#    one after the other, --rounds times at each C of --rounds-connections (which goes first
#    alternates), on one Redis and one pinion-demo started for this part. Per round the ratio, then
#    the median ratio and how many rounds Pinion was ahead in: on a shared VM whose speed drifts
#    by tens of percent within minutes, one row per server (part a) can land on a slow spell of
#    one of them; rounds put both under the same spells.
# b. wake: `population create` --sleepers sleeper actors (bump once each, so each has state on
#    disk); `sleepNow` on each puts them to sleep (saved, evicted); `population touch --action
#    read` (one connection, one request at a time) wakes each from disk (page cache warm); a
#    second touch right away measures the same request on awake actors; both again with a client
#    that spins on its socket (`touch --spin`: its own wake-up stays out of the latencies). As
#    root with a writable /proc/sys/vm/drop_caches, twice more (each client once) after sleepNow +
#    `sync; echo 1 > drop_caches` (cold page cache; this drops the page cache of the whole
#    machine). "check" counts replies with
#    `"vars":0`: actors whose ephemeral vars started over, i.e. that were really woken. The
#    server runs with a long sleep timeout so that the awake baseline stays awake (20000
#    sequential requests take longer than a short timeout).
# c. population: server A (sleep timeout 1 h, so that nothing sleeps during the run: creating the
#    population takes far longer than a short timeout) creates --population counter actors
#    (--workers connections) and calls `getCount` once on each (an idle actor has served
#    calls: each call adds a connection while it runs); RSS of the empty server and right after
#    creation (all awake, idle); SIGTERM (clean stop, timed). Server B on the same data directory with
#    --sleep-timeout-ms: spawn -> first 200 from GET /metadata (recovery + start; the store's own
#    recovery time is taken from its log line), RSS (all asleep); --touch ids spread over the
#    population woken one at a time (latency), RSS, RSS once they slept again. SIGKILL; server C
#    on the same directory: spawn -> ready, RSS, the same --touch sample again.
#    RSS is taken "at ready" and "settled": after 1 s of GET /health traffic (no actor woken),
#    polled until it has not fallen for 2 s (at most 15 s); memory the server freed (recovery's
#    buffers) stays resident while it is idle, until its allocator runs again. Bytes per actor =
#    (RSS - settled RSS of the empty server A) / N; RSS includes glommio's io_uring rings and
#    buffers, hence the subtraction.
# Latencies include the client's own wake-up on each response (loadgen's executor, population's
# blocked read), except in the spinning-client rows: the same within each kind of row, so the
# differences are the server's.
#
# Output: the Markdown table on stdout and in OUT/table.md; OUT/results.jsonl; every run's raw
# output (loadgen JSON/text, redis-benchmark CSV, population output, servers' stderr) in OUT.
# Installs redis-server and wrk (apt-get, as compare.sh does) when missing; builds pinion-demo, loadgen
# and population (release) unless --no-build. Every run is bounded in time; the script stops only
# the processes it started, by PID, and removes its data directories. With the defaults it takes
# about 9 minutes; --quick about 2.5.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
here=$root/benches/durable

connections='' duration='' warmup='' redis_seconds='' sleepers='' population='' touch_n=''
workers=64
pop_sleep_ms=5000
parts=writes,rounds,wake,population
rounds='' rounds_connections=''
quick=0
data_root=${TMPDIR:-/tmp}
server_cpu=1
load_cpu=0
out=bench-out/durable
install=1
build=1
command_line="benches/durable/durable.sh${*:+ $*}"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --connections) connections=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --redis-seconds) redis_seconds=$2; shift 2 ;;
    --sleepers) sleepers=$2; shift 2 ;;
    --population) population=$2; shift 2 ;;
    --touch) touch_n=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --sleep-timeout-ms) pop_sleep_ms=$2; shift 2 ;;
    --parts) parts=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --rounds-connections) rounds_connections=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --data-root) data_root=$2; shift 2 ;;
    --server-cpu) server_cpu=$2; shift 2 ;;
    --load-cpu) load_cpu=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-install) install=0; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "durable.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$quick" = 1 ]; then
  : "${connections:=1,64}" "${duration:=2s}" "${warmup:=500ms}" "${redis_seconds:=2}"
  : "${sleepers:=5000}" "${population:=100000}" "${touch_n:=5000}" "${rounds:=2}"
  : "${rounds_connections:=64}"
fi
: "${rounds:=5}" "${rounds_connections:=64,256}"
: "${connections:=1,16,64,256}" "${duration:=5s}" "${warmup:=1s}" "${redis_seconds:=4}"
: "${sleepers:=20000}" "${population:=1000000}" "${touch_n:=10000}"

script=durable.sh
# shellcheck source=benches/lib.sh
. "$root/benches/lib.sh"
step() { echo "== $*" >&2; }
want() { [[ ",$parts," == *",$1,"* ]]; }
for p in ${parts//,/ }; do
  case $p in writes|rounds|wake|population) ;; *) log "unknown part $p"; exit 2 ;; esac
done

# --- tools (benches/lib.sh) ------------------------------------------------------------------
ensure python3 python3
ensure taskset util-linux
if want writes || want rounds; then
  ensure wrk wrk || { log "no wrk"; exit 1; }
  ensure redis-server redis-server || { log "no redis-server"; exit 1; }
  ensure redis-benchmark redis-tools redis-server || { log "no redis-benchmark"; exit 1; }
fi
has cargo || [ "$build" = 0 ] || { log "needs cargo (https://rustup.rs) to build the binaries"; exit 1; }
duration_s=$(secs "$duration"); warmup_s=$(secs "$warmup")
IFS=, read -ra conn_list <<< "$connections"

if [ "$(nproc)" -lt 2 ] && [ "$server_cpu" != "$load_cpu" ]; then
  log "only $(nproc) CPU: servers and load share CPU 0"
  server_cpu=0; load_cpu=0
fi

if [ "$build" = 1 ]; then
  step "building pinion-demo, loadgen and population (release)"
  cargo build --release --quiet --bin loadgen --bin pinion-demo --bin population
fi
bin=${CARGO_TARGET_DIR:-$root/target}/release
loadgen=$bin/loadgen
demo=$bin/pinion-demo
pop=$bin/population
for b in "$loadgen" "$demo" "$pop"; do [ -x "$b" ] || { log "missing $b (build it, or drop --no-build)"; exit 1; }; done

# --- bookkeeping, processes --------------------------------------------------------------------
mkdir -p "$out" "$data_root"
out=$(cd "$out" && pwd)
results=$out/results.jsonl
rm -f "$results" "$out"/*.json "$out"/*.txt "$out"/*.csv "$out"/*.err "$out"/table.md
tmp=$(mktemp -d "$data_root/pinion-durable.XXXXXX")
pids=() # "PID:start time" of every process started here (a PID alone may be reused once it ended)
track() { # pid: remember it and stop bash from reporting it (a SIGKILLed job would print "Killed")
  pids+=("$1:$(start_time "$1")")
  disown "$1"
}
start_time() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null || true; }
exited() { # pid: true once the process is gone or a zombie
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
  [ -z "$state" ] || [ "$state" = Z ]
}
stop() { # pid signal timeout_s: signals it, waits (bounded; then SIGKILL); prints the ms it took
  local pid=$1 start i
  start=$(date +%s%N)
  kill "-$2" "$pid" 2>/dev/null || true
  for i in $(seq 1 $(($3 * 50))); do exited "$pid" && break; sleep 0.02; done
  if ! exited "$pid"; then
    log "PID $pid did not exit within $3 s of SIG$2: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  echo $((($(date +%s%N) - start) / 1000000))
}
cleanup() {
  local entry pid
  for entry in "${pids[@]}"; do
    pid=${entry%%:*}
    if ! exited "$pid" && [ "$(start_time "$pid")" = "${entry#*:}" ]; then stop "$pid" TERM 10 >/dev/null; fi
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rss() { "$pop" rss --pid "$1"; }
hwm() { "$pop" rss --pid "$1" --field VmHWM; }
# rss_settled PID: 1 s of GET /health on 4 connections (wakes no actor), then polls the RSS every
# 250 ms until it has not fallen for 2 s (at most 15 s) and prints it. Memory the server freed
# (recovery's buffers, for one) stays resident in an idle process until the allocator runs again
# and returns it; the traffic gives it that chance.
rss_settled() {
  local last now steady=0
  timeout 30 taskset -c "$load_cpu" "$loadgen" raw --url "$endpoint/health" --connections 4 \
    --duration 1s --quiet > /dev/null 2>> "$out/loadgen.err" || log "GET /health traffic failed (see $out/loadgen.err)"
  last=$(rss "$1")
  for _ in $(seq 1 60); do
    sleep 0.25
    now=$(rss "$1")
    if [ "$now" -lt "$last" ]; then steady=0; last=$now; else steady=$((steady + 1)); fi
    [ "$steady" -ge 8 ] && break
  done
  echo "$last"
}
per_actor() { python3 -c "print(round(($1 - $rss_empty) / $population))"; }
mib() { python3 -c "print(f'{$1 / 2**20:.1f} MiB')"; }
metric() { python3 "$here/durable.py" metric "$results" "$1" "$2"; }
note() { python3 "$here/durable.py" note "$results" "$*"; }
load() { taskset -c "$load_cpu" "$@"; }

# start_pinion NAME DATA_DIR SLEEP_MS: spawns pinion-demo on a fresh port and waits until GET
# /metadata answers; sets pinion_pid, endpoint and ready_ms (spawn -> ready).
start_pinion() {
  local name=$1 port spawn_ns
  port=$(free_port)
  endpoint=http://127.0.0.1:$port
  spawn_ns=$(date +%s%N)
  # shellcheck disable=SC2086 # DURABLE_SERVER_ARGS is a list of flags
  taskset -c "$server_cpu" "$demo" --listen "127.0.0.1:$port" --shards 1 --data-dir "$2" \
    --sleep-timeout-ms "$3" ${DURABLE_SERVER_ARGS:-} > "$out/$name.out" 2> "$out/$name.err" &
  pinion_pid=$!; track "$pinion_pid"
  if ! ready_ms=$(load "$pop" wait-ready --endpoint "$endpoint" --timeout-ms 600000 --since-ns "$spawn_ns"); then
    log "pinion-demo ($name) did not become ready; its stderr:"; tail -n 20 "$out/$name.err" >&2
    exit 1
  fi
  log "pinion-demo ($name, PID $pinion_pid, --sleep-timeout-ms $3) ready on $endpoint after $ready_ms ms"
}

# touch NAME LABEL ARGS...: population touch --json, recorded with the bytes the server read from
# the device meanwhile (read_bytes of /proc/PID/io); fails the script if requests fail.
read_bytes() { awk '/^read_bytes:/ {print $2}' "/proc/$1/io"; }
touch_run() {
  local name=$1 label=$2 before after; shift 2
  before=$(read_bytes "$pinion_pid")
  load "$pop" touch --endpoint "$endpoint" --json "$out/$name.json" "$@" > "$out/$name.txt" ||
    { log "population touch ($name) failed:"; cat "$out/$name.txt" >&2; exit 1; }
  after=$(read_bytes "$pinion_pid")
  sed 's/^/  /' "$out/$name.txt" >&2
  echo "  the server read $(((after - before) / 1024)) KiB from the device meanwhile" >&2
  python3 "$here/durable.py" touch "$results" "$name" "$label" "$out/$name.json" "$((after - before))"
}

# findmnt names ext4 as ext4 (stat -f says "ext2/ext3" for every ext); stat -f where it is missing.
fs_type=$(findmnt -n -o FSTYPE --target "$tmp" 2>/dev/null || stat -f -c %T "$tmp")
if [ "$fs_type" = ext4 ] && [ -r "/proc/fs/ext4/$(basename "$(df --output=source "$tmp" | tail -n 1)")/options" ] &&
  ! [ -d "/proc/fs/jbd2/$(basename "$(df --output=source "$tmp" | tail -n 1)")-8" ]; then
  fs_type="ext4 (no journal)"
fi
fs_dev=$(df --output=source "$tmp" | tail -n 1)
started=$(date -u '+%Y-%m-%d %H:%M UTC')
machine="$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r)"
echo "machine: $machine; load average $(cut -d' ' -f1-3 /proc/loadavg) at $started" >&2
echo "data directories under $data_root ($fs_type on $fs_dev); servers on CPU $server_cpu, load on CPU $load_cpu" >&2
if [ "$fs_type" = tmpfs ] || [ "$fs_type" = ramfs ]; then
  log "warning: $data_root is $fs_type: fsync costs nothing there (use --data-root on a disk)"
  note "the data directories were on $fs_type: fsync costs nothing there, durable numbers are not"
fi
if [ -n "${DURABLE_SERVER_ARGS:-}" ]; then
  note "every pinion-demo ran with the extra flags DURABLE_SERVER_ARGS=\"$DURABLE_SERVER_ARGS\""
fi

# --- a. durable writes ------------------------------------------------------------------------
clk_tck=$(getconf CLK_TCK)
cpu_start() { cpu_ticks=$(ticks "$1"); cpu_ns=$(date +%s%N); }
cpu_pct() { # pid: the server's CPU use (utime + stime, all threads) since cpu_start, in %
  python3 -c "print(round(100 * ($(ticks "$1") - $cpu_ticks) / $clk_tck / (($(date +%s%N) - $cpu_ns) / 1e9)))"
}
redis_run() { # label port pid C name
  local label=$1 port=$2 pid=$3 c=$4 name=$5 n_cal n rps cpu
  n_cal=$((c * 20 > 2000 ? c * 20 : 2000))
  timeout 120 taskset -c "$load_cpu" redis-benchmark -h 127.0.0.1 -p "$port" -t incr -c "$c" \
    -n "$n_cal" -P 1 --csv > "$out/$name-cal.csv" 2>&1 ||
    { log "redis-benchmark calibration failed (see $out/$name-cal.csv)"; return 1; }
  rps=$(python3 "$here/durable.py" redis-rps "$out/$name-cal.csv")
  n=$(python3 -c "print(int(min(10_000_000, max($c * 50, 2000, $rps * $redis_seconds))))")
  log "$label, $c clients: -n $n (calibration: $rps req/s)"
  cpu_start "$pid"
  timeout $((redis_seconds * 5 + 60)) taskset -c "$load_cpu" redis-benchmark -h 127.0.0.1 -p "$port" \
    -t incr -c "$c" -n "$n" -P 1 --csv > "$out/$name.csv" 2>&1 ||
    { log "redis-benchmark failed or overran (see $out/$name.csv)"; return 1; }
  cpu=$(cpu_pct "$pid")
  python3 "$here/durable.py" redis "$results" "$label" "$c" "$out/$name.csv" "$cpu"
  echo "  $(tail -n 1 "$out/$name.csv"); server CPU $cpu %" >&2
}

record_run() { # label C name cpu: a run's OUT/name.json (loadgen's summary shape) into the results
  local label=$1 c=$2 name=$3 cpu=$4
  python3 "$here/durable.py" loadgen "$results" "$label" "$c" "$out/$name.json" "$cpu"
  python3 -c "import json; s = json.load(open('$out/$name.json')); l = s['latency_us']; \
print(f\"  {s['throughput_rps']:,.0f} req/s, p50 {l['p50']:.0f} µs, p99 {l['p99']:.0f} µs, {s['errors']} errors, server CPU $cpu %\")" >&2
}

loadgen_run() { # label C name loadgen-action-args... (the server: writes_pid)
  local label=$1 c=$2 name=$3 cpu; shift 3
  log "$label, $c connections"
  cpu_start "$writes_pid"
  timeout "$(python3 -c "print(int(($duration_s + $warmup_s) * 2 + 60))")" taskset -c "$load_cpu" \
    "$loadgen" action --endpoint "$endpoint" "$@" --connections "$c" --duration "$duration" \
    --warmup "$warmup" --json "$out/$name.json" > "$out/$name.txt" 2>> "$out/loadgen.err" ||
    { log "loadgen failed (see $out/loadgen.err)"; return 1; }
  cpu=$(cpu_pct "$writes_pid")
  record_run "$label" "$c" "$name" "$cpu"
}

# wrk: an epoll client, as redis-benchmark is. loadgen's glommio executor arms one io_uring recv
# per connection, and each response sent to it costs the server's core a task-work wake-up of
# loadgen (an IPI while loadgen runs): measured here ~19 µs of server CPU per durable request
# with loadgen against ~7 µs when loadgen is never idle (plain increments). wrk's epoll wait is
# woken once per burst, as redis-benchmark's is, so the wrk rows compare the servers on equal
# terms.
wrk_run() { # label C name actor action [actors] (the server: writes_pid)
  local label=$1 c=$2 name=$3 actor=$4 action=$5 actors=${6:-1} cpu url
  log "$label, $c connections"
  # The actors (keys wrk-0 .. wrk-<actors - 1>); with more than one, each request goes to one
  # of them picked uniformly at random, as loadgen's --key-dist uniform does.
  python3 - "$endpoint" "$actor" "$actors" > "$tmp/wrk-ids" <<'PY' ||
import json, sys, urllib.request
endpoint, actor, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(count):
    key = "wrk" if count == 1 else f"wrk-{i}"
    request = urllib.request.Request(endpoint + "/actors", method="PUT",
                                     data=json.dumps({"name": actor, "key": key}).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        print(json.load(response)["actor"]["actor_id"])
PY
  { log "creating the $actor actors for wrk failed"; return 1; }
  cat > "$tmp/wrk.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"args":[1]}'
wrk.headers["Content-Type"] = "application/json"
local paths = {}
for id in io.lines(os.getenv("WRK_IDS")) do
  paths[#paths + 1] = "/gateway/" .. id .. "/action/" .. os.getenv("WRK_ACTION")
end
if #paths > 1 then
  request = function()
    return wrk.format(nil, paths[math.random(#paths)])
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  local f = io.open(os.getenv("WRK_JSON"), "w")
  f:write(string.format('{"throughput_rps": %.1f, "ok": %d, "errors": %d, ' ..
    '"latency_us": {"p50": %d, "p99": %d}}\n', summary.requests / (summary.duration / 1e6),
    summary.requests - errors, errors, latency:percentile(50), latency:percentile(99)))
  f:close()
end
LUA
  export WRK_IDS=$tmp/wrk-ids WRK_ACTION=$action
  url=$endpoint/gateway/$(head -n 1 "$tmp/wrk-ids")/action/$action
  # Warm-up (wrk has none of its own), then the measured run.
  WRK_JSON=/dev/null timeout 60 taskset -c "$load_cpu" wrk -t1 -c"$c" \
    -d"$(python3 -c "print(max(1, round($warmup_s)))")s" -s "$tmp/wrk.lua" "$url" > /dev/null 2>&1 || true
  cpu_start "$writes_pid"
  WRK_JSON=$out/$name.json timeout "$(python3 -c "print(int($duration_s * 2 + 60))")" \
    taskset -c "$load_cpu" wrk -t1 -c"$c" -d"$(python3 -c "print(max(1, round($duration_s)))")s" \
    -s "$tmp/wrk.lua" "$url" > "$out/$name.txt" 2>&1 || { log "wrk failed (see $out/$name.txt)"; return 1; }
  cpu=$(cpu_pct "$writes_pid")
  record_run "$label" "$c" "$name" "$cpu"
}

if want writes; then
  step "a. durable increments/s (C = ${connections}; loadgen $warmup warm-up + $duration, redis ~${redis_seconds}s per run)"
  redis_version=$(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/')
  mkdir -p "$tmp/redis-always" "$tmp/redis-none" "$tmp/pinion-writes"
  redis_always_port=$(free_port)
  taskset -c "$server_cpu" redis-server --port "$redis_always_port" --bind 127.0.0.1 --save '' \
    --appendonly yes --appendfsync always --daemonize no --dir "$tmp/redis-always" \
    --logfile "$out/redis-always.log" &
  redis_always_pid=$!; track "$redis_always_pid"
  redis_none_port=$(free_port)
  taskset -c "$server_cpu" redis-server --port "$redis_none_port" --bind 127.0.0.1 --save '' \
    --appendonly no --daemonize no --dir "$tmp/redis-none" --logfile "$out/redis-none.log" &
  redis_none_pid=$!; track "$redis_none_pid"
  wait_port "$redis_always_port" "$redis_always_pid" 10 || { log "redis-server (always) did not start"; exit 1; }
  wait_port "$redis_none_port" "$redis_none_pid" 10 || { log "redis-server (no persistence) did not start"; exit 1; }
  start_pinion pinion-writes "$tmp/pinion-writes" 30000
  writes_pid=$pinion_pid
  for c in "${conn_list[@]}"; do
    step "a. C = $c"
    redis_run "Redis $redis_version INCR, no persistence" "$redis_none_port" "$redis_none_pid" "$c" "redis-none-c$c"
    redis_run "Redis $redis_version INCR, appendfsync always" "$redis_always_port" "$redis_always_pid" "$c" "redis-always-c$c"
    loadgen_run "Pinion counter.increment (not durable per reply)" "$c" "counter-c$c" \
      --actor counter --key hot --action increment --args '[1]'
    loadgen_run "Pinion durableCounter.increment, 1 actor" "$c" "durable-hot-c$c" \
      --actor durableCounter --key hot --action increment --args '[1]'
    if [ "$c" -ge 16 ]; then
      loadgen_run "Pinion durableCounter.increment, $c actors" "$c" "durable-spread-c$c" \
        --actor durableCounter --key spread --keys "$c" --key-dist uniform --action increment --args '[1]'
    fi
    loadgen_run "Pinion counter.incrementSaved, 1 actor" "$c" "saved-hot-c$c" \
      --actor counter --key hot --action incrementSaved --args '[1]'
    if [ "$c" -ge 16 ]; then
      loadgen_run "Pinion counter.incrementSaved, $c actors" "$c" "saved-spread-c$c" \
        --actor counter --key spread --keys "$c" --key-dist uniform --action incrementSaved --args '[1]'
    fi
    wrk_run "Pinion durableCounter.increment, 1 actor, wrk" "$c" "wrk-durable-c$c" durableCounter increment
    wrk_run "Pinion counter.incrementSaved, 1 actor, wrk" "$c" "wrk-saved-c$c" counter incrementSaved
    if [ "$c" -ge 16 ]; then
      # No two requests in a burst share an actor's save: one record per request.
      wrk_run "Pinion durableCounter.increment, $c actors, wrk" "$c" "wrk-durable-spread-c$c" \
        durableCounter increment "$c"
    fi
    exited "$writes_pid" && { log "pinion-demo exited during the writes (see $out/pinion-writes.err)"; exit 1; }
  done
  for pid in "$redis_always_pid" "$redis_none_pid"; do stop "$pid" TERM 10 >/dev/null; done
  # Durability check: SIGKILL, restart, and the hot durableCounter must hold at least every
  # increment whose reply loadgen counted (warm-up and abandoned requests come on top).
  stop "$writes_pid" KILL 10 >/dev/null
  start_pinion pinion-writes-restart "$tmp/pinion-writes" 30000
  read -r count acked < <(python3 - "$endpoint" "$out" <<'PY'
import glob, json, sys, urllib.request
endpoint, out = sys.argv[1:]
def call(method, path, body):
    request = urllib.request.Request(endpoint + path, data=json.dumps(body).encode(), method=method,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)
acked = sum(json.load(open(f))["ok"] for f in glob.glob(f"{out}/durable-hot-c*.json"))
actor = call("PUT", "/actors", {"name": "durableCounter", "key": "hot"})["actor"]["actor_id"]
print(call("POST", f"/gateway/{actor}/action/getCount", {"args": []})["output"], acked)
PY
)
  [ -n "${count:-}" ] || { log "durability check: getCount after the restart failed"; exit 1; }
  if [ "$count" -ge "$acked" ]; then verdict=ok; else verdict="LOST $((acked - count))"; fi
  log "after SIGKILL + restart, durableCounter 'hot' = $count; acknowledged (measured) increments: $acked: $verdict"
  note "durability check (part a): after SIGKILL and restart the hot durableCounter holds $count, the measured acknowledged increments were $acked ($verdict)"
  stop "$pinion_pid" TERM 60 >/dev/null
fi

# --- a2. rounds ---------------------------------------------------------------------------------
if want rounds; then
  IFS=, read -ra rounds_list <<< "$rounds_connections"
  step "a2. rounds: Redis always and Pinion's output gate alternating, $rounds rounds at C = $rounds_connections"
  mkdir -p "$tmp/redis-rounds" "$tmp/pinion-rounds"
  redis_rounds_port=$(free_port)
  taskset -c "$server_cpu" redis-server --port "$redis_rounds_port" --bind 127.0.0.1 --save '' \
    --appendonly yes --appendfsync always --daemonize no --dir "$tmp/redis-rounds" \
    --logfile "$out/redis-rounds.log" &
  redis_rounds_pid=$!; track "$redis_rounds_pid"
  wait_port "$redis_rounds_port" "$redis_rounds_pid" 10 || { log "redis-server (rounds) did not start"; exit 1; }
  start_pinion pinion-rounds "$tmp/pinion-rounds" 30000
  writes_pid=$pinion_pid
  redis_version=$(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/')
  for c in "${rounds_list[@]}"; do
    for n in $(seq 1 "$rounds"); do
      step "a2. C = $c, round $n of $rounds"
      export DURABLE_ROUND=$n
      round_redis() {
        redis_run "Redis $redis_version INCR, appendfsync always" "$redis_rounds_port" \
          "$redis_rounds_pid" "$c" "round-redis-c$c-$n"
      }
      round_pinion() {
        wrk_run "durableCounter.increment (output gate), 1 actor, wrk" "$c" "round-pinion-c$c-$n" \
          durableCounter increment
      }
      if [ $((n % 2)) = 1 ]; then round_redis; round_pinion; else round_pinion; round_redis; fi
      unset DURABLE_ROUND
    done
  done
  exited "$writes_pid" && { log "pinion-demo exited during the rounds (see $out/pinion-rounds.err)"; exit 1; }
  stop "$redis_rounds_pid" TERM 10 >/dev/null
  stop "$pinion_pid" TERM 60 >/dev/null
fi

# --- b. wake from disk --------------------------------------------------------------------------
if want wake; then
  step "b. wake from disk: $sleepers sleeper actors"
  start_pinion pinion-wake "$tmp/pinion-wake" 3600000
  wake_pid=$pinion_pid
  load "$pop" create --endpoint "$endpoint" --actor sleeper --prefix s --count "$sleepers" --workers 8 \
    --action bump --ids "$tmp/sleepers.ids" 2>&1 | tee "$out/wake-create.txt" >&2
  put_to_sleep() {
    log "sleepNow on every sleeper"
    load "$pop" touch --endpoint "$endpoint" --ids "$tmp/sleepers.ids" --action sleepNow --workers 8 \
      > "$out/wake-sleepnow.txt" 2>&1 || { log "sleepNow failed:"; cat "$out/wake-sleepnow.txt" >&2; exit 1; }
    sleep 2 # the sleeps (save, evict) finish after the replies
  }
  put_to_sleep
  log "read on every sleeper, one at a time: each wakes from disk (page cache warm)"
  touch_run wake-warm "asleep: wake from disk, page cache warm" --ids "$tmp/sleepers.ids" --action read \
    --count-matching '"vars":0'
  log "read again right away: the same actors, awake"
  touch_run wake-awake "awake (same request, right after)" --ids "$tmp/sleepers.ids" --action read
  # The same two runs with a client that polls its socket instead of sleeping in read(): its own
  # wake-up on each response (tens of µs on a VM) then stays out of the latencies.
  put_to_sleep
  log "the same with a spinning client (touch --spin): wake from disk, page cache warm"
  touch_run wake-warm-spin "asleep: wake from disk, page cache warm, spinning client" \
    --ids "$tmp/sleepers.ids" --action read --count-matching '"vars":0' --spin
  touch_run wake-awake-spin "awake (same request, right after), spinning client" \
    --ids "$tmp/sleepers.ids" --action read --spin
  if [ "$(id -u)" = 0 ] && [ -w /proc/sys/vm/drop_caches ]; then
    put_to_sleep
    log "sync; echo 1 > /proc/sys/vm/drop_caches"
    sync
    cached_before=$(awk '/^Cached:/ {print $2}' /proc/meminfo)
    if (echo 1 > /proc/sys/vm/drop_caches) 2>/dev/null; then
      log "page cache: $((cached_before / 1024)) MiB before, $(($(awk '/^Cached:/ {print $2}' /proc/meminfo) / 1024)) MiB after"
      touch_run wake-cold "asleep: wake from disk, cold page cache" --ids "$tmp/sleepers.ids" --action read \
        --count-matching '"vars":0'
      # Once more with the spinning client: the device's latency without the client's wake-up.
      put_to_sleep
      sync
      if (echo 1 > /proc/sys/vm/drop_caches) 2>/dev/null; then
        touch_run wake-cold-spin "asleep: wake from disk, cold page cache, spinning client" \
          --ids "$tmp/sleepers.ids" --action read --count-matching '"vars":0' --spin
      fi
    else
      log "cannot write /proc/sys/vm/drop_caches: no cold run"
      note "no cold-page-cache run: /proc/sys/vm/drop_caches is not writable here"
    fi
  else
    note "no cold-page-cache run: needs root and a writable /proc/sys/vm/drop_caches"
  fi
  exited "$wake_pid" && { log "pinion-demo exited during part b (see $out/pinion-wake.err)"; exit 1; }
  log "pinion-demo (wake) stopped in $(stop "$wake_pid" TERM 60) ms"
  # The server's own measure of each wake (request found the actor asleep -> actor ready: record
  # and state read, decoded, create_vars, on_wake), logged at the clean stop: every wake (warm
  # and cold page cache together), and those among them that read from the device.
  server_wakes() {
    python3 - "$out/pinion-wake.err" "$1" <<'PY'
import re, sys
found = ""
for line in open(sys.argv[1], errors="replace"):
    if sys.argv[2] in line:
        v = dict(re.findall(r"(count|p50_us|p99_us|max_us)=(\d+)", line))
        if len(v) == 4:
            found = (f"{v['count']} wakes, p50 {v['p50_us']} µs, p99 {v['p99_us']} µs, "
                     f"max {v['max_us']} µs")
print(found)
PY
  }
  wakes=$(server_wakes "wakes at stop")
  if [ -n "$wakes" ]; then
    log "server-side wake time: $wakes"
    note "wake from disk, measured by the server (request found the actor asleep -> actor ready; warm and cold page cache together): $wakes"
  fi
  wakes=$(server_wakes "wakes that read from the device")
  if [ -n "$wakes" ]; then
    log "server-side wake time, wakes that read from the device: $wakes"
    note "of those, the wakes that read from the device (some record not in the page cache), measured by the server: $wakes"
  fi
fi

# --- c. recovery and memory of a sleeping population -------------------------------------------
if want population; then
  step "c. population: $population counter actors"
  dir=$tmp/pinion-population
  start_pinion pinion-pop-a "$dir" 3600000
  metric rss_empty_ready "$(rss "$pinion_pid")"
  rss_empty=$(rss_settled "$pinion_pid"); metric rss_empty "$rss_empty"; metric pop_n "$population"
  log "RSS of the empty server: $(mib "$rss_empty")"
  step "c. creating $population counters over $workers connections"
  create_start=$(date +%s%N)
  load "$pop" create --endpoint "$endpoint" --actor counter --prefix p --count "$population" \
    --action getCount --workers "$workers" --ids "$tmp/population.ids" 2>&1 |
    tee "$out/pop-create.txt" >&2
  create_s=$(python3 -c "print(($(date +%s%N) - $create_start) / 1e9)")
  rss_awake=$(rss "$pinion_pid")
  metric rss_awake "$rss_awake"; metric create_s "$create_s"; metric create_workers "$workers"
  metric create_rate "$(python3 -c "print($population / $create_s)")"
  log "RSS with $population awake idle actors: $(mib "$rss_awake") ($(per_actor "$rss_awake") B per actor)"
  rss_awake_settled=$(rss_settled "$pinion_pid"); metric rss_awake_settled "$rss_awake_settled"
  log "after 1 s of GET /health, settled: $(mib "$rss_awake_settled") ($(per_actor "$rss_awake_settled") B per actor)"
  stop_ms=$(stop "$pinion_pid" TERM 300); metric stop_term_ms "$stop_ms"
  log "clean stop (SIGTERM) with every actor awake: $stop_ms ms"
  data_bytes=$(du -sb "$dir" | cut -f1); metric data_bytes "$data_bytes"

  step "c. restart after SIGTERM (--sleep-timeout-ms $pop_sleep_ms)"
  start_pinion pinion-pop-b "$dir" "$pop_sleep_ms"
  metric ready_term_ms "$ready_ms"
  read -r rec_ms rec_records < <(python3 "$here/durable.py" recovered "$out/pinion-pop-b.err")
  [ "$rec_ms" = - ] || { metric recovered_ms_term "$rec_ms"; metric records_term "$rec_records"; }
  rss_ready=$(rss "$pinion_pid"); metric rss_asleep_ready "$rss_ready"
  log "RSS with $population sleeping actors, at ready: $(mib "$rss_ready") ($(per_actor "$rss_ready") B per actor)"
  rss_asleep=$(rss_settled "$pinion_pid"); metric rss_asleep "$rss_asleep"; metric hwm_term "$(hwm "$pinion_pid")"
  log "after 1 s of GET /health, settled: $(mib "$rss_asleep") ($(per_actor "$rss_asleep") B per actor); peak RSS so far $(mib "$(hwm "$pinion_pid")")"
  metric touch_n "$touch_n"
  log "getCount on $touch_n actors spread over the population, one at a time (each wakes from disk)"
  touch_run pop-wake-term "wake from disk after the SIGTERM restart ($touch_n actors)" \
    --ids "$tmp/population.ids" --action getCount --sample "$touch_n" --seed 1 --count-matching '"output":0'
  rss_touched=$(rss "$pinion_pid"); metric rss_touched "$rss_touched"
  log "RSS with $touch_n of them awake: $(mib "$rss_touched"); waiting for them to sleep again"
  sleep "$(python3 -c "print($pop_sleep_ms / 1000)")"
  rss_resleep=$(rss_settled "$pinion_pid"); metric rss_resleep "$rss_resleep"
  log "RSS once they slept again: $(mib "$rss_resleep")"

  step "c. SIGKILL, restart"
  stop "$pinion_pid" KILL 10 >/dev/null
  start_pinion pinion-pop-c "$dir" "$pop_sleep_ms"
  metric ready_kill_ms "$ready_ms"
  read -r rec_ms rec_records < <(python3 "$here/durable.py" recovered "$out/pinion-pop-c.err")
  [ "$rec_ms" = - ] || { metric recovered_ms_kill "$rec_ms"; metric records_kill "$rec_records"; }
  rss_ready=$(rss "$pinion_pid"); metric rss_kill_ready "$rss_ready"
  rss_kill=$(rss_settled "$pinion_pid"); metric rss_kill "$rss_kill"; metric hwm_kill "$(hwm "$pinion_pid")"
  log "RSS after the SIGKILL restart: $(mib "$rss_ready") at ready, $(mib "$rss_kill") after 1 s of GET /health"
  touch_run pop-wake-kill "wake from disk after the SIGKILL restart (the same $touch_n actors)" \
    --ids "$tmp/population.ids" --action getCount --sample "$touch_n" --seed 2 --count-matching '"output":0'
  log "pinion-demo (population) stopped in $(stop "$pinion_pid" TERM 300) ms"
fi

# --- the table --------------------------------------------------------------------------------------
{
  echo "Measured $started on $machine; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Servers pinned to CPU $server_cpu, load generators to CPU $load_cpu; data directories on $fs_type ($fs_dev)."
  echo "pinion-demo --shards 1 --data-dir; loadgen $warmup warm-up + $duration per row; redis-benchmark -n sized for ~${redis_seconds} s."
  echo "Command: $command_line"
  echo
  python3 "$here/durable.py" table "$results"
} > "$out/table.md"
echo
cat "$out/table.md"
