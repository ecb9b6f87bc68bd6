# Shell helpers shared by the benchmark scripts (benches/compare/compare.sh,
# benches/durable/durable.sh). Source it after setting `script` (the name log lines carry),
# `install` (1: install what is missing with apt-get) and `dry_run` (1: only say what would be
# installed; optional).

log() { echo "$script: $*" >&2; }
has() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

apt_install() { # package... (tries once as is, then after an apt-get update)
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    has sudo || { log "need root or sudo to install $*"; return 1; }
    sudo=(sudo)
  fi
  has apt-get || { log "no apt-get: install $* yourself"; return 1; }
  log "installing $* (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get install -y -q "$@" >/dev/null ||
    { "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" apt-get install -y -q "$@" >/dev/null; }
}

ensure() { # command package... : installs the first package that works when command is missing
  local cmd=$1; shift
  has "$cmd" && return 0
  if [ "${dry_run:-0}" = 1 ]; then log "would install $1 (for $cmd)"; return 0; fi
  [ "$install" = 1 ] || { log "$cmd is missing (apt-get install $1)"; return 1; }
  local pkg
  for pkg in "$@"; do apt_install "$pkg" && has "$cmd" && return 0; done
  return 1
}

secs() { # duration text (1s, 500ms, 2m30s) -> seconds
  python3 - "$1" <<'PY'
import re, sys
text, total = sys.argv[1], 0.0
units = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
parts = re.findall(r"([\d.]+)(us|µs|ms|s|m|h)", text)
if not parts or "".join(n + u for n, u in parts) != text:
    sys.exit(f"bad duration {text}")
print(sum(float(n) * units[u] for n, u in parts))
PY
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # pid -> utime + stime (clock ticks)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { # port pid seconds: until the port accepts, false if the process ended first
  local i
  for i in $(seq 1 $(($3 * 10))); do
    kill -0 "$2" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
