#!/usr/bin/env bash
# Cluster benchmarks, kache and Redis Cluster side by side in one run:
#   1. forwarding cost: GET through a node that owns the key vs one that must forward it;
#   2. rebalance: N keys of 100 bytes in 3 nodes, add a 4th, time until the move is done,
#      with a reader checking keys throughout; Redis Cluster (3 masters + 3 replicas) with
#      the same data, `redis-cli --cluster add-node` then `rebalance --cluster-use-empty-masters`.
#
#   bash bench/cluster.sh                  # KEYS=1000000 DURATION=10
#   FWD_NODES=3 FWD_RF=2 KACHE_ARGS='--read-consistency one' PARTS=forwarding bash bench/cluster.sh
#                                          # forwarding with replicas (default: 2 nodes, RF=1)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
KEYS=${KEYS:-1000000}
DURATION=${DURATION:-10}
BASE=${BASE:-17300}
FWD_NODES=${FWD_NODES:-2}
FWD_RF=${FWD_RF:-1}
KACHE_ARGS=${KACHE_ARGS:-}               # extra node flags, e.g. --read-consistency one
PARTS=${PARTS:-forwarding,kache,redis}   # which sections to run
run_part() { [[ ",$PARTS," == *",$1,"* ]]; }
# shellcheck source=lib.sh
source "$here/lib.sh"
bench_require "apt-get install -y wrk redis-server redis-tools curl" \
  wrk redis-server redis-cli redis-benchmark python3 curl taskset
bench_workdir
bin=$(kache_binary "$root")

http_port() { echo $((BASE + 10 * $1)); }
grpc_port() { echo $((BASE + 10 * $1 + 1)); }
resp_port() { echo $((BASE + 10 * $1 + 2)); }
members() { # epoch rf ids...
  local epoch=$1 rf=$2; shift 2
  { printf 'epoch: %s\npartitions: 271\nreplicationFactor: %s\nmembers:\n' "$epoch" "$rf"
    for i in "$@"; do printf '  - id: node-%s\n    address: 127.0.0.1:%s\n' "$i" "$(grpc_port "$i")"; done
  } >"$work/members.tmp"
  mv "$work/members.tmp" "$work/members.yaml"
}
start_kache() { # index
  "$bin" --node-id "node-$1" --http-addr "127.0.0.1:$(http_port "$1")" --grpc-addr "127.0.0.1:$(grpc_port "$1")" --resp-addr "127.0.0.1:$(resp_port "$1")" \
    --members-file "$work/members.yaml" --anti-entropy-interval 0 --max-memory 4GiB $KACHE_ARGS 2>"$work/node-$1.log" &
  pids+=($!)
}
wait_ready() { for _ in $(seq 1 300); do curl -sf "127.0.0.1:$(http_port "$1")/readyz" >/dev/null && return; sleep 0.1; done; echo "node-$1 not ready" >&2; exit 1; }
settled() { # epoch nodes...
  local epoch=$1; shift
  for i in "$@"; do
    curl -sf "127.0.0.1:$(http_port "$i")/v1/cluster" | python3 -c "
import json,sys; r=json.load(sys.stdin)
ok = r['epoch']==$epoch and not r['rebalance']['active'] and r['ownership']['pending']==0 and r['ownership']['heldNotOwned']==0
sys.exit(0 if ok else 1)" || return 1
  done
}
stop_all() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }

echo "# kache cluster benchmarks: $(date -u +%FT%TZ), $(nproc) CPUs, $(redis-server --version | awk '{print $3}'), $KEYS keys of 100 bytes"

# 1. Forwarding cost: two nodes, RF=1 (or FWD_NODES, FWD_RF); node-0 serves keys it owns
#    and keys it does not, which it forwards to their owners.
if run_part forwarding; then
fwd_nodes=$(seq 0 $((FWD_NODES - 1)))
members 1 "$FWD_RF" $fwd_nodes
for i in $fwd_nodes; do start_kache "$i"; done
for i in $fwd_nodes; do wait_ready "$i"; done
python3 "$here/load.py" kache "127.0.0.1:$(http_port 0)" 100000
python3 - "$(http_port 0)" "$work" <<'PY'
import http.client, json, sys
port, work = int(sys.argv[1]), sys.argv[2]
conn = http.client.HTTPConnection("127.0.0.1", port)
local, remote = open(work + "/local.keys", "w"), open(work + "/remote.keys", "w")
for i in range(0, 100000, 5):
    key = "key:%012d" % i
    conn.request("GET", "/v1/cluster/keys/" + key)
    owners = json.loads(conn.getresponse().read())["owners"]
    (local if "node-0" in owners else remote).write(key + "\n")
PY
fwd() { KEYS_FILE="$work/$1.keys" taskset -c 0 wrk -t1 -c50 -d"${DURATION}s" --latency -s "$here/wrk-keys.lua" "http://127.0.0.1:$(http_port 0)" | awk '/Requests\/sec/ {r=$2} $1=="99%" {p=$2} /Non-2xx/ {e=$5} END {print r, p, (e==""?0:e)}'; }
read -r local_rps local_p99 local_bad <<<"$(fwd local)"
read -r remote_rps remote_p99 remote_bad <<<"$(fwd remote)"
stop_all
echo "forwarding ($FWD_NODES nodes, RF=$FWD_RF${KACHE_ARGS:+, $KACHE_ARGS}): owner ${local_rps} GET/s (p99 ${local_p99}), non-owner ${remote_rps} GET/s (p99 ${remote_p99}); ratio $(awk -v a="$remote_rps" -v b="$local_rps" 'BEGIN{printf "%.2f", a/b}'); non-2xx ${local_bad}/${remote_bad}"
fi

# 2. Rebalance, kache: RF=2, 3 members, then a 4th.
kache_s=
if run_part kache; then
members 1 2 0 1 2
for i in 0 1 2 3; do start_kache "$i"; done
for i in 0 1 2 3; do wait_ready "$i"; done
load_start=$(date +%s.%N)
python3 "$here/load.py" kache "127.0.0.1:$(http_port 0)" "$KEYS"
load_s=$(awk -v a="$load_start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
rm -f "$work/stop"
python3 "$here/read_check.py" "$(http_port 0),$(http_port 1),$(http_port 2)" "$KEYS" "$work/stop" >"$work/reads" &
reader=$!
sleep 1
t0=$(date +%s.%N)
members 2 2 0 1 2 3
until settled 2 0 1 2 3; do sleep 0.05; done
kache_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
sleep 1; touch "$work/stop"; wait "$reader"
read -r reads misses errors <"$work/reads"
moved=$(for i in 0 1 2 3; do curl -s "127.0.0.1:$(http_port "$i")/v1/cluster"; echo; done | python3 -c '
import json, sys
r = [json.loads(l)["rebalance"] for l in sys.stdin if l.strip()]
print(sum(x["recordsMoved"] for x in r), sum(x["bytesMoved"] for x in r))')
read -r k_records k_bytes <<<"$moved"
stop_all
echo "kache: loaded $KEYS keys (RF=2) in ${load_s}s; add a 4th node: rebalance done in ${kache_s}s, $k_records records / $((k_bytes / 1048576)) MiB moved ($(awk -v n="$k_records" -v s="$kache_s" 'BEGIN{printf "%.0f", n/s}') records/s, $(awk -v b="$k_bytes" -v s="$kache_s" 'BEGIN{printf "%.1f", b/1048576/s}') MB/s); reader during the move: $reads reads, $misses misses, $errors errors"

fi

# 2b. Rebalance, Redis Cluster: 3 masters + 3 replicas, then a 4th master.
if run_part redis; then
for i in 0 1 2 3 4 5 6; do
  port=$((BASE + 100 + i)); mkdir -p "$work/redis-$i"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$work/redis-$i" --cluster-enabled yes \
    --cluster-config-file nodes.conf --save '' --appendonly no --protected-mode no >"$work/redis-$i.log" 2>&1 &
  pids+=($!)
done
for i in 0 1 2 3 4 5 6; do
  for _ in $(seq 1 100); do redis-cli -p $((BASE + 100 + i)) ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create $(for i in 0 1 2 3 4 5; do printf '127.0.0.1:%s ' $((BASE + 100 + i)); done) --cluster-replicas 1 --cluster-yes >/dev/null
until redis-cli -p $((BASE + 100)) cluster info | grep -q 'cluster_state:ok'; do sleep 0.2; done
# The same keys as kache, each piped to the master owning its hash slot.
redis-cli -p $((BASE + 100)) cluster nodes >"$work/nodes.txt"
ranges=$(awk '/master/ { split($2, a, "[:@]"); for (i = 9; i <= NF; i++) { printf "%s%s:%s", sep, a[2], $i; sep = "," } }' "$work/nodes.txt")
[ -n "$ranges" ] || { echo "no master slot ranges in:" >&2; cat "$work/nodes.txt" >&2; exit 1; }
python3 "$here/load.py" resp-cluster "$KEYS" 100 "$work" "$ranges"
for file in "$work"/*.resp; do redis-cli -p "$(basename "$file" .resp)" --pipe <"$file" >/dev/null; done
r_keys=$(for port in $(echo "$ranges" | tr ',' '\n' | cut -d: -f1 | sort -u); do redis-cli -p "$port" dbsize; done | awk '{s+=$1} END {print s}')
redis-cli --cluster add-node "127.0.0.1:$((BASE + 106))" "127.0.0.1:$((BASE + 100))" >/dev/null
# Wait until the new master has joined and every node agrees, before rebalancing.
for _ in $(seq 1 100); do
  redis-cli -p $((BASE + 100)) cluster nodes | grep -q ":$((BASE + 106))@.*master.*connected" \
    && redis-cli -p $((BASE + 106)) cluster info | grep -q 'cluster_state:ok' \
    && redis-cli --cluster check "127.0.0.1:$((BASE + 100))" >"$work/check.log" 2>&1 && break
  sleep 0.2
done
t0=$(date +%s.%N)
if ! redis-cli --cluster rebalance "127.0.0.1:$((BASE + 100))" --cluster-use-empty-masters >"$work/rebalance.log" 2>&1; then
  echo "redis rebalance failed:" >&2; tail -5 "$work/rebalance.log" >&2; exit 1
fi
redis_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
r_moved=$(redis-cli -p $((BASE + 106)) dbsize)
stop_all
echo "redis cluster: $r_keys keys; add a 4th master: rebalance done in ${redis_s}s, $r_moved keys moved ($(awk -v n="$r_moved" -v s="$redis_s" 'BEGIN{printf "%.0f", n/s}') keys/s)"
[ -n "$kache_s" ] && echo "time ratio (Redis / kache): $(awk -v a="$redis_s" -v b="$kache_s" 'BEGIN{printf "%.1f", a/b}')x"
fi
