#!/usr/bin/env bash
# Persistence benchmark: kache with --data-dir and Redis with its AOF, side by side in one
# run, both driven by the same tools (redis-benchmark, redis-cli --pipe).
#
#   bash bench/persistence.sh                 # REQUESTS=500000, KEYS=1000000 below
#   PARTS=put bash bench/persistence.sh       # only the PUT part (or: restart)
#
# 1. put: `redis-benchmark -t set -c 50 -d 100 -r 100000` against kache `--fsync everysec`
#    and Redis `appendonly yes, appendfsync everysec`, then `always` against `always`,
#    without and with `-P 16`. Each server is pinned to one core and redis-benchmark to the
#    other; kache runs one worker thread (its log flusher is a second thread on the same
#    core).
# 2. restart: KEYS keys of 100 bytes loaded through `redis-cli --pipe` into each; both
#    stopped (SIGTERM) and started again: the time from the start until DBSIZE answers
#    KEYS, from the log as written (kache: its log; Redis: its AOF), and again after
#    compaction (kache: a snapshot; Redis: BGREWRITEAOF, an RDB preamble). Disk bytes per
#    key after compaction.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
REQUESTS=${REQUESTS:-500000}
KEYS=${KEYS:-1000000}
BASE=${BASE:-17600}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
PARTS=${PARTS:-put,restart}
run_part() { [[ ",$PARTS," == *",$1,"* ]]; }

# shellcheck source=lib.sh
source "$here/lib.sh"
bench_require "apt-get install -y redis-server redis-tools util-linux python3" \
  redis-server redis-benchmark redis-cli taskset python3

work=$(mktemp -d)
kache_pid=""
redis_pid=""
stop() { # pid
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || true
  # Bounded: a server that does not stop within 60 s is killed.
  for _ in $(seq 1 600); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}
cleanup() {
  stop "$kache_pid"; stop "$redis_pid"
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

bin=$(kache_binary "$root")

kache_port=$((BASE + 2))
redis_port=$((BASE + 100))

start_kache() { # data-dir fsync [extra flags...]
  local dir=$1 fsync=$2; shift 2
  mkdir -p "$dir"
  taskset -c "$SERVER_CPU" "$bin" --node-id bench --http-addr "127.0.0.1:$BASE" \
    --grpc-addr "127.0.0.1:$((BASE + 1))" --resp-addr "127.0.0.1:$kache_port" \
    --worker-threads 1 --max-memory 4GiB --data-dir "$dir" --fsync "$fsync" "$@" \
    2>>"$work/kache.log" &
  kache_pid=$!
}

start_redis() { # dir appendfsync
  mkdir -p "$1"
  (cd "$1" && exec taskset -c "$SERVER_CPU" redis-server --port "$redis_port" --bind 127.0.0.1 \
    --dir "$1" --save '' --appendonly yes --appendfsync "$2" --protected-mode no \
    --auto-aof-rewrite-percentage 0 >>"$work/redis.log" 2>&1) &
  redis_pid=$!
}

# redis-benchmark's CSV: "test","rps","avg","min","p50","p95","p99","max" -> "rps p99"
bench() { # port [flags...]
  local port=$1; shift
  taskset -c "$CLIENT_CPU" redis-benchmark -p "$port" -c 50 -n "$REQUESTS" -d 100 -r 100000 \
    -t set --csv "$@" 2>/dev/null | grep -i '^"set"' | tail -1 | awk -F'"' '{printf "%s %s\n", $4, $14}'
}

row() { printf '%-34s %12s %12s %7s %10s %10s\n' "$@"; }

echo "# kache --data-dir vs Redis AOF: $(date -u +%FT%TZ), $(nproc) CPUs, $(redis-server --version | awk '{print $3}'), $(df -h "$work" | awk 'NR==2 {print $1}')"

if run_part put; then
  echo "# redis-benchmark -t set -c 50 -d 100 -r 100000 -n $REQUESTS"
  row run kache_rps redis_rps ratio kache_p99 redis_p99
  for policy in everysec always; do
    for pipeline in 1 16; do
      start_kache "$work/k-$policy-$pipeline" "$policy"; start_redis "$work/r-$policy-$pipeline" "$policy"
      wait_port "$kache_port" 600; wait_port "$redis_port" 600
      read -r k_rps k_p99 <<<"$(bench "$kache_port" -P "$pipeline")"
      read -r r_rps r_p99 <<<"$(bench "$redis_port" -P "$pipeline")"
      row "SET fsync $policy -P $pipeline" "$k_rps" "$r_rps" "$(ratio "$k_rps" "$r_rps")" "$k_p99" "$r_p99"
      stop "$kache_pid"; stop "$redis_pid"; kache_pid=""; redis_pid=""
      rm -rf "$work/k-$policy-$pipeline" "$work/r-$policy-$pipeline"
    done
  done
fi

# Milliseconds from now until DBSIZE on `port` answers `want` (Redis answers -LOADING
# meanwhile; kache accepts connections only once loaded).
time_to_ready() { # port want started_ns
  for _ in $(seq 1 12000); do
    if [ "$(redis-cli -p "$1" DBSIZE 2>/dev/null)" = "$2" ]; then
      echo $(( ($(date +%s%N) - $3) / 1000000 )); return 0
    fi
    sleep 0.01
  done
  echo "never"
}

restart_both() { # label kache-extra-flags...
  local label=$1; shift
  stop "$kache_pid"; stop "$redis_pid"
  local t0
  t0=$(date +%s%N); start_kache "$work/k-restart" everysec "$@"
  local k_ms; k_ms=$(time_to_ready "$kache_port" "$KEYS" "$t0")
  t0=$(date +%s%N); start_redis "$work/r-restart" everysec
  local r_ms; r_ms=$(time_to_ready "$redis_port" "$KEYS" "$t0")
  row "restart to ready, $label (ms)" "$k_ms" "$r_ms" "$(ratio "$k_ms" "$r_ms")" "" ""
}

if run_part restart; then
  echo "# $KEYS keys with random 100-byte values, loaded with redis-cli --pipe; everysec"
  # Random values (hex of random bytes): a repeated byte would let Redis's RDB compress
  # each value to a few bytes, which no real value does.
  python3 - "$KEYS" >"$work/load.resp" <<'EOF'
import os, sys
out = sys.stdout.buffer
for i in range(int(sys.argv[1])):
    key = b"key:%d" % i
    value = os.urandom(50).hex().encode()
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$100\r\n%s\r\n" % (len(key), key, value))
EOF
  start_kache "$work/k-restart" everysec --snapshot-interval 1h; start_redis "$work/r-restart" everysec
  wait_port "$kache_port" 600; wait_port "$redis_port" 600
  taskset -c "$CLIENT_CPU" redis-cli -p "$kache_port" --pipe <"$work/load.resp" >/dev/null
  taskset -c "$CLIENT_CPU" redis-cli -p "$redis_port" --pipe <"$work/load.resp" >/dev/null
  [ "$(redis-cli -p "$kache_port" DBSIZE)" = "$KEYS" ] || { echo "kache holds $(redis-cli -p "$kache_port" DBSIZE) keys" >&2; exit 1; }
  row run kache redis ratio "" ""
  restart_both "log/AOF as written" --snapshot-interval 1h
  # Compaction: kache snapshots 1 s after a start that replayed its log; Redis rewrites.
  redis-cli -p "$redis_port" BGREWRITEAOF >/dev/null
  for _ in $(seq 1 600); do
    [ "$(redis-cli -p "$redis_port" INFO persistence | tr -d '\r' | awk -F: '/^aof_rewrite_in_progress/ {print $2}')" = 0 ] &&
      [ "$(curl -s "127.0.0.1:$BASE/v1/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["persistence"]["snapshots"])')" -ge 1 ] && break
    sleep 0.1
  done
  k_bytes=$(du -sb "$work/k-restart" | cut -f1); r_bytes=$(du -sb "$work/r-restart" | cut -f1)
  row "disk bytes per key, compacted" "$((k_bytes / KEYS))" "$((r_bytes / KEYS))" "$(ratio "$k_bytes" "$r_bytes")" "" ""
  restart_both "after compaction"
fi
