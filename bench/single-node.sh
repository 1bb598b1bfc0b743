#!/usr/bin/env bash
# Single-node benchmark: one kache node and one redis-server, side by side in one run.
#
#   bash bench/single-node.sh            # defaults below; results go to stdout
#   DURATION=20 KEYSPACE=1000000 bash bench/single-node.sh
#
# Throughput: 50 keep-alive connections, 100-byte values, random keys of a preloaded
# keyspace; kache driven by wrk, Redis by redis-benchmark. Each server is pinned to one
# core and each load generator to the other (Redis is single-threaded, and on a 2-core
# machine the load generator needs a core), and kache runs one worker thread to match.
# Memory: 1M keys of 100 bytes loaded into a fresh instance of each; kache's RSS growth
# against Redis's used_memory growth.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
DURATION=${DURATION:-10}
KEYSPACE=${KEYSPACE:-100000}
CONNECTIONS=${CONNECTIONS:-50}
VALUE_BYTES=${VALUE_BYTES:-100}
MEMORY_KEYS=${MEMORY_KEYS:-1000000}
KACHE_PORT=${KACHE_PORT:-17070}
REDIS_PORT=${REDIS_PORT:-16379}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}

# shellcheck source=lib.sh
source "$here/lib.sh"
bench_require "apt-get install -y wrk redis-server redis-tools util-linux" \
  wrk redis-server redis-benchmark redis-cli taskset python3

bench_workdir

kache_bin=$(kache_binary "$root")

start_kache() {
  taskset -c "$SERVER_CPU" "$kache_bin" --http-addr "127.0.0.1:$KACHE_PORT" --resp-addr off --node-id bench \
    --max-memory 8GiB --worker-threads 1 2>"$work/kache.log" &
  kache_pid=$!; pids+=("$kache_pid")
  wait_port "$KACHE_PORT" 100
}

start_redis() {
  taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
    --appendonly no --protected-mode no >"$work/redis.log" 2>&1 &
  redis_pid=$!; pids+=("$redis_pid")
  wait_port "$REDIS_PORT" 100
}

stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

# "1.83ms" / "812.00us" / "1.02s" -> milliseconds
to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 } printf "%.3f", v }' <<<"$1"; }

wrk_run() { # script -> "rps p99_ms non2xx"
  KEYSPACE=$KEYSPACE VALUE_BYTES=$VALUE_BYTES taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" \
    -d"${DURATION}s" --latency -s "$here/$1" "http://127.0.0.1:$KACHE_PORT" >"$work/wrk.out"
  local rps p99 bad
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
  p99=$(to_ms "$(awk '$1=="99%" {print $2}' "$work/wrk.out")")
  bad=$(awk '/Non-2xx/ {print $5} /Socket errors/ {print "socket-errors"}' "$work/wrk.out" | head -1)
  echo "$rps $p99 ${bad:-0}"
}

redis_run() { # test -> "rps p99_ms"
  # As many requests as Redis serves in about DURATION seconds at 100k/s.
  taskset -c "$CLIENT_CPU" redis-benchmark -p "$REDIS_PORT" -c "$CONNECTIONS" -n $((DURATION * 100000)) \
    -d "$VALUE_BYTES" -r "$KEYSPACE" -t "$1" --csv 2>/dev/null | tail -1 \
    | awk -F'"' '{printf "%s %s\n", $4, $14}'
}


echo "# kache vs Redis, one node: $(date -u +%FT%TZ), $(nproc) CPUs, $(redis-server --version | awk '{print $3}')"
echo "# ${CONNECTIONS} connections, ${VALUE_BYTES}-byte values, ${KEYSPACE} keys, ${DURATION}s per run"

start_kache; start_redis
python3 "$here/load.py" kache "127.0.0.1:$KACHE_PORT" "$KEYSPACE" "$VALUE_BYTES"
python3 "$here/load.py" resp "$KEYSPACE" "$VALUE_BYTES" | redis-cli -p "$REDIS_PORT" --pipe >/dev/null

read -r k_get k_get_p99 k_get_bad <<<"$(wrk_run wrk-get.lua)"
read -r r_get r_get_p99 <<<"$(redis_run get)"
read -r k_put k_put_p99 k_put_bad <<<"$(wrk_run wrk-put.lua)"
read -r r_set r_set_p99 <<<"$(redis_run set)"
stop "$kache_pid"; stop "$redis_pid"

printf '\n%-6s %14s %14s %8s %14s %14s %8s\n' op kache_rps redis_rps ratio kache_p99_ms redis_p99_ms ratio
printf '%-6s %14s %14s %8s %14s %14s %8s\n' GET "$k_get" "$r_get" "$(ratio "$k_get" "$r_get")" "$k_get_p99" "$r_get_p99" "$(ratio "$k_get_p99" "$r_get_p99")"
printf '%-6s %14s %14s %8s %14s %14s %8s\n' PUT "$k_put" "$r_set" "$(ratio "$k_put" "$r_set")" "$k_put_p99" "$r_set_p99" "$(ratio "$k_put_p99" "$r_set_p99")"
echo "kache non-2xx responses: GET ${k_get_bad}, PUT ${k_put_bad}"

# Memory per key, each server fresh.
rss() { awk '/VmRSS/ {print $2 * 1024}' "/proc/$1/status"; }
used_memory() { redis-cli -p "$REDIS_PORT" info memory | awk -F: '/^used_memory:/ {print $2+0}'; }

start_kache; start_redis
k_rss0=$(rss "$kache_pid"); r_used0=$(used_memory); r_rss0=$(rss "$redis_pid")
python3 "$here/load.py" kache "127.0.0.1:$KACHE_PORT" "$MEMORY_KEYS" "$VALUE_BYTES"
python3 "$here/load.py" resp "$MEMORY_KEYS" "$VALUE_BYTES" | redis-cli -p "$REDIS_PORT" --pipe >/dev/null
k_rss1=$(rss "$kache_pid"); r_used1=$(used_memory); r_rss1=$(rss "$redis_pid")
k_keys=$(curl -s "127.0.0.1:$KACHE_PORT/v1/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["keys"])')
r_keys=$(redis-cli -p "$REDIS_PORT" dbsize)
per_key() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.1f", (b - a) / n }'; }
k_per=$(per_key "$k_rss0" "$k_rss1" "$MEMORY_KEYS")
r_per=$(per_key "$r_used0" "$r_used1" "$MEMORY_KEYS")
r_rss_per=$(per_key "$r_rss0" "$r_rss1" "$MEMORY_KEYS")
printf '\n%s keys of %s bytes: kache %s keys, Redis %s keys\n' "$MEMORY_KEYS" "$VALUE_BYTES" "$k_keys" "$r_keys"
printf 'bytes/key: kache RSS growth %s, Redis used_memory growth %s (ratio %s); Redis RSS growth %s (ratio %s)\n' \
  "$k_per" "$r_per" "$(ratio "$k_per" "$r_per")" "$r_rss_per" "$(ratio "$k_per" "$r_rss_per")"
