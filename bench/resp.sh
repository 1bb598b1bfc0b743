#!/usr/bin/env bash
# RESP benchmark: kache and Redis side by side in one run, both driven by redis-benchmark.
#
#   bash bench/resp.sh                       # REQUESTS=1000000 below
#   PARTS=single bash bench/resp.sh          # only the one-node part (or: cluster)
#
# 1. One node: `redis-benchmark -t get,set -c 50 -d 100`, without and with `-P 16`.
#    Each server is pinned to one core and redis-benchmark to the other; kache runs one
#    worker thread (Redis is single-threaded).
# 2. Three nodes: `redis-benchmark --cluster -t get,set -c 50 -d 100` against a 3-node
#    kache (RF=1: one copy, as 3 Redis masters without replicas hold one) and a 3-master
#    Redis Cluster. All servers share one core and redis-benchmark has the other.
# Keys are random over KEYSPACE (-r); redis-benchmark's default single key would make
# every SET of a run write one key.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
REQUESTS=${REQUESTS:-1000000}
KEYSPACE=${KEYSPACE:-100000}
CONNECTIONS=${CONNECTIONS:-50}
VALUE_BYTES=${VALUE_BYTES:-100}
BASE=${BASE:-17500}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
PARTS=${PARTS:-single,cluster}
run_part() { [[ ",$PARTS," == *",$1,"* ]]; }

# shellcheck source=lib.sh
source "$here/lib.sh"
bench_require "apt-get install -y redis-server redis-tools curl util-linux" \
  redis-server redis-benchmark redis-cli taskset curl

bench_workdir

bin=$(kache_binary "$root")

# kache node i: HTTP BASE+10i, gRPC +1, RESP +2. Redis i: BASE+100+i.
http_port() { echo $((BASE + 10 * $1)); }
grpc_port() { echo $((BASE + 10 * $1 + 1)); }
resp_port() { echo $((BASE + 10 * $1 + 2)); }
redis_port() { echo $((BASE + 100 + $1)); }

start_kache() { # index [extra flags...]
  local i=$1; shift
  taskset -c "$SERVER_CPU" "$bin" --node-id "node-$i" --http-addr "127.0.0.1:$(http_port "$i")" \
    --grpc-addr "127.0.0.1:$(grpc_port "$i")" --resp-addr "127.0.0.1:$(resp_port "$i")" \
    --worker-threads 1 --max-memory 4GiB "$@" 2>"$work/kache-$i.log" &
  pids+=($!)
  wait_port "$(resp_port "$i")"
}

start_redis() { # index [extra flags...]
  local i=$1; shift
  (cd "$work" && exec taskset -c "$SERVER_CPU" redis-server --port "$(redis_port "$i")" --bind 127.0.0.1 \
    --save '' --appendonly no --protected-mode no "$@" >"$work/redis-$i.log" 2>&1) &
  pids+=($!)
  wait_port "$(redis_port "$i")"
}

stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

# redis-benchmark's CSV: "test","rps","avg","min","p50","p95","p99","max" -> "rps p99"
bench() { # port test [flags...]
  local port=$1 test=$2; shift 2
  taskset -c "$CLIENT_CPU" redis-benchmark -p "$port" -c "$CONNECTIONS" -n "$REQUESTS" \
    -d "$VALUE_BYTES" -r "$KEYSPACE" -t "$test" --csv "$@" 2>/dev/null | grep -i "^\"$test\"" | tail -1 \
    | awk -F'"' '{printf "%s %s\n", $4, $14}'
}

row() { # label kache_rps kache_p99 redis_rps redis_p99
  printf '%-22s %12s %12s %7s %10s %10s\n' "$1" "$2" "$4" "$(ratio "$2" "$4")" "$3" "$5"
}

echo "# kache vs Redis over RESP: $(date -u +%FT%TZ), $(nproc) CPUs, $(redis-server --version | awk '{print $3}')"
echo "# redis-benchmark -c $CONNECTIONS -d $VALUE_BYTES -r $KEYSPACE -n $REQUESTS"
printf '%-22s %12s %12s %7s %10s %10s\n' run kache_rps redis_rps ratio kache_p99 redis_p99

if run_part single; then
  start_kache 0; start_redis 0
  for pipeline in 1 16; do
    for test in set get; do
      read -r k_rps k_p99 <<<"$(bench "$(resp_port 0)" "$test" -P "$pipeline")"
      read -r r_rps r_p99 <<<"$(bench "$(redis_port 0)" "$test" -P "$pipeline")"
      row "one node ${test^^} -P $pipeline" "$k_rps" "$k_p99" "$r_rps" "$r_p99"
    done
  done
  stop_all
fi

if run_part cluster; then
  { printf 'epoch: 1\npartitions: 271\nreplicationFactor: 1\nmembers:\n'
    for i in 0 1 2; do printf '  - id: node-%s\n    address: 127.0.0.1:%s\n' "$i" "$(grpc_port "$i")"; done
  } >"$work/members.yaml"
  for i in 0 1 2; do start_kache "$i" --members-file "$work/members.yaml" --anti-entropy-interval 0; done
  for i in 0 1 2; do
    for _ in $(seq 1 300); do curl -sf "127.0.0.1:$(http_port "$i")/readyz" >/dev/null && break; sleep 0.1; done
  done
  for i in 0 1 2; do start_redis "$i" --cluster-enabled yes --cluster-config-file "nodes-$i.conf"; done
  redis-cli --cluster create "127.0.0.1:$(redis_port 0)" "127.0.0.1:$(redis_port 1)" \
    "127.0.0.1:$(redis_port 2)" --cluster-yes >"$work/create.log" 2>&1
  for _ in $(seq 1 100); do
    redis-cli -p "$(redis_port 0)" cluster info | grep -q 'cluster_state:ok' && break; sleep 0.1
  done
  for test in set get; do
    read -r k_rps k_p99 <<<"$(bench "$(resp_port 0)" "$test" --cluster)"
    read -r r_rps r_p99 <<<"$(bench "$(redis_port 0)" "$test" --cluster)"
    row "3 nodes ${test^^} --cluster" "$k_rps" "$k_p99" "$r_rps" "$r_p99"
  done
  stop_all
fi
