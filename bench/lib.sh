# What the bench scripts share; sourced by them, never run on its own.
#   bench_require HINT TOOL...   fail with HINT (how to install) if a TOOL is missing
#   bench_workdir                $work (a temporary dir) and $pids (servers started);
#                                on exit every pid is killed and $work removed
#   kache_binary ROOT            $KACHE_BIN (to compare another build, say the previous
#                                commit's, with the same script), else a release build
#   wait_port PORT [TRIES]       wait (50 ms a try, 200 tries by default) until 127.0.0.1:PORT accepts
#   ratio A B                    A / B to two decimals, n/a when B is 0

bench_require() {
  local hint=$1 tool; shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: $hint" >&2; exit 1; }
  done
}

bench_workdir() {
  work=$(mktemp -d)
  pids=()
  trap bench_cleanup EXIT INT TERM
}

bench_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

kache_binary() {
  if [ -n "${KACHE_BIN:-}" ]; then
    echo "$KACHE_BIN"
  else
    cargo build --release -q -p kache-node --manifest-path "$1/Cargo.toml"
    echo "$1/target/release/kache-node"
  fi
}

wait_port() {
  for _ in $(seq 1 "${2:-200}"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2; exit 1
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
