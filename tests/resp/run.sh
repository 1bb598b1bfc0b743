#!/usr/bin/env bash
# Proves kache serves Redis clients nobody here wrote, on a loopback cluster that scales out
# (3 -> 4 nodes) and in (4 -> 2) under load: redis-cli (also -c), redis-py 5.2.1's Redis and
# RedisCluster (tests/resp/workload.py) and go-redis v9's Client and ClusterClient
# (tests/resp/goredis), with no error reply, no lost write and no resurrected delete.
#
#   bash tests/resp/run.sh                        # kache: $KACHE_BIN, else a release build
#   RESP_TARGET=redis bash tests/resp/run.sh      # the same clients and checks against a real
#                                                 # Redis Cluster: proves the checks themselves
#   bash tests/resp/run.sh install                # only install the clients (.ci/run does)
# RESP_RF sets kache's replication factor (default 2); RESP_KEEP=1 keeps the work directory
# (logs, every op) of a failed run, RESP_KEEP=always of any run. Needs redis-server and redis-tools,
# python3 with venv, go, curl (.ci/run installs them). Caches a redis-py venv and the
# go-redis binary under ~/.cache/kache. Bounded: every wait has a deadline.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${RESP_TARGET:-kache}
rf=${RESP_RF:-2}
cache=${KACHE_CACHE:-$HOME/.cache/kache}
began=$(date +%s)
venv="$cache/venv"
gobin="$cache/bin/resp-goredis"

# redis-py in a cached venv, go-redis built once per change of its sources.
install_clients() {
  if ! "$venv/bin/python" -c 'import redis, sys; sys.exit(redis.__version__ != "5.2.1")' 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check redis==5.2.1
  fi
  local sum
  sum=$(cat "$here"/goredis/{go.mod,go.sum,main.go} | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$gobin.sha256" 2>/dev/null)" != "$sum" ] || [ ! -x "$gobin" ]; then
    mkdir -p "$(dirname "$gobin")"
    (cd "$here/goredis" && go build -o "$gobin.tmp" .)
    mv "$gobin.tmp" "$gobin"
    echo "$sum" >"$gobin.sha256"
  fi
}
if [ "${1:-}" = install ]; then
  install_clients
  exit 0
fi

[[ $target == kache || $target == redis ]] || { echo "RESP_TARGET is kache or redis, not $target" >&2; exit 2; }
for tool in redis-server redis-cli python3 go curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y redis-server redis-tools python3-venv golang-go curl" >&2; exit 2; }
done

work=$(mktemp -d -t kache-resp.XXXXXX)
pids=()       # every process this script started, killed on exit
declare -A node_pid
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${RESP_KEEP:-}" = always ] || { [ "$status" -ne 0 ] && [ -n "${RESP_KEEP:-}" ]; }; then
    echo "kept $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
failures=()
pass() { passed=$((passed + 1)); }
fail() { echo "FAIL $*" >&2; failures+=("$*"); }
# expect WHAT WANT COMMAND...: COMMAND's output (redis-cli -c's redirect notes dropped) is WANT.
expect() {
  local what=$1 want=$2 got; shift 2
  got=$("$@" 2>&1 | grep -v '^-> Redirected' || true)
  if [ "$got" = "$want" ]; then pass; else fail "$what: \`$*\` expected '$want', got '$got'"; fi
}
die() {
  echo "FATAL $*" >&2
  for log in "$work"/*.log; do
    [ -f "$log" ] && { echo "--- tail $log" >&2; tail -n 8 "$log" >&2; }
  done
  exit 1
}
# wait_for SECONDS WHAT COMMAND...: polls COMMAND every 0.2s until it succeeds.
wait_for() {
  local seconds=$1 what=$2 try; shift 2
  for ((try = 0; try < seconds * 5; try++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "$what: not within ${seconds}s"
}
step() { echo "== [$(($(date +%s) - began))s] $*"; }

# Ports: 4 nodes x (resp, http, grpc), plus a standalone Redis for the plain clients in
# redis mode. Random free ports below 45000 whose +10000 is free too (Redis Cluster's bus
# port), so parallel runs do not collide.
read -r -a ports <<<"$(python3 -c '
import random, socket
def free(port):
    with socket.socket() as s:
        try: s.bind(("127.0.0.1", port)); return True
        except OSError: return False
found = set()
while len(found) < 13:
    p = random.randrange(20000, 45000)
    if p not in found and free(p) and free(p + 10000): found.add(p)
print(" ".join(map(str, found)))')"
resp_port() { echo "${ports[$1]}"; }
http_port() { echo "${ports[$((4 + $1))]}"; }
grpc_port() { echo "${ports[$((8 + $1))]}"; }
standalone_port=${ports[12]}
resp_ports() { for i in "$@"; do printf '%s ' "$(resp_port "$i")"; done; }
seeds() { local out=; for i in "$@"; do out+="${out:+,}127.0.0.1:$(resp_port "$i")"; done; echo "$out"; }

step "clients: redis-py 5.2.1 venv, go-redis binary"
install_clients

# --- The cluster under test.
if [ "$target" = kache ]; then
  if [ -n "${KACHE_BIN:-}" ]; then
    bin=$KACHE_BIN
  else
    cargo build --release --locked -q -p kache-node --manifest-path "$root/Cargo.toml"
    bin="${CARGO_TARGET_DIR:-$root/target}/release/kache-node"
  fi
  [ -x "$bin" ] || die "no kache-node binary at $bin"
fi

members() { # epoch "members..." "departing..."
  { printf 'epoch: %s\npartitions: 271\nreplicationFactor: %s\n' "$1" "$rf"
    for section in members departing; do
      local list=$2; [ "$section" = departing ] && list=${3:-}
      [ -n "$list" ] || continue
      echo "$section:"
      for i in $list; do printf '  - id: node-%s\n    address: 127.0.0.1:%s\n' "$i" "$(grpc_port "$i")"; done
    done
  } >"$work/members.tmp"
  mv "$work/members.tmp" "$work/members.yaml"   # a node never reads half a file
}
resp_ping() { [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ]; }
node_ready() { # index: what start_node waits for (a node that exits fails at once)
  if [ "$target" = kache ]; then curl -sf "127.0.0.1:$(http_port "$1")/readyz" >/dev/null; else resp_ping "$(resp_port "$1")"; fi
}
start_node() { # indices...: starts them all, then waits for each (members wait for peers)
  local i
  for i in "$@"; do launch_node "$i"; done
  for i in "$@"; do wait_node "$i"; done
}
launch_node() { # index
  local i=$1
  if [ "$target" = kache ]; then
    "$bin" --node-id "node-$i" --http-addr "127.0.0.1:$(http_port "$i")" \
      --grpc-addr "127.0.0.1:$(grpc_port "$i")" --resp-addr "127.0.0.1:$(resp_port "$i")" \
      --members-file "$work/members.yaml" --max-memory 256MiB >"$work/node-$i.log" 2>&1 &
  else
    mkdir -p "$work/redis-$i"
    redis-server --port "$(resp_port "$i")" --bind 127.0.0.1 --dir "$work/redis-$i" --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-allow-replica-migration no --save "" --appendonly no \
      >"$work/node-$i.log" 2>&1 &
  fi
  node_pid[$i]=$!
  pids+=($!)
}
wait_node() { # index
  local i=$1 try
  for ((try = 0; try <= 150; try++)); do
    kill -0 "${node_pid[$i]}" 2>/dev/null || die "node-$i exited: $(tail -3 "$work/node-$i.log")"
    node_ready "$i" && break
    [ "$try" -lt 150 ] || die "node-$i not ready within 30s"
    sleep 0.2
  done
  if [ "$target" = kache ]; then
    grep -q "resp_addr=127.0.0.1:$(resp_port "$i")" "$work/node-$i.log" ||
      fail "node-$i: the listening log line lacks resp_addr=127.0.0.1:$(resp_port "$i")"
  fi
  wait_for 30 "node-$i answers PING on RESP" resp_ping "$(resp_port "$i")"
}
stop_node() { kill "${node_pid[$1]}" 2>/dev/null || true; wait "${node_pid[$1]}" 2>/dev/null || true; }
settled() { # epoch nodes...
  local epoch=$1 urls=(); shift
  for i in "$@"; do urls+=("http://127.0.0.1:$(http_port "$i")"); done
  python3 "$here/checks.py" settled "$epoch" "${urls[@]}"
}
redis_agree() { # nodes...: each knows them all as connected masters, in an ok cluster
  local n
  for n in "$@"; do
    [ "$(redis-cli -p "$(resp_port "$n")" cluster nodes | grep -c 'master.* connected')" = $# ] || return 1
    redis-cli -p "$(resp_port "$n")" cluster info | grep -q cluster_state:ok || return 1
  done
  redis-cli --cluster check "127.0.0.1:$(resp_port "$1")" >"$work/check.out" 2>&1 &&
    ! grep -q '\[ERR\]\|\[WARNING\]' "$work/check.out"
}

step "start a 3-node $target cluster (RF=$rf for kache)"
if [ "$target" = kache ]; then
  members 1 "0 1 2"
  start_node 0 1 2
  wait_for 60 "epoch 1 settled on all 3 nodes" settled 1 0 1 2
else
  start_node 0 1 2
  redis-cli --cluster create $(seeds 0 1 2 | tr ',' ' ') --cluster-yes >"$work/create.out" 2>&1 ||
    die "redis-cli --cluster create: $(tail -3 "$work/create.out")"
  wait_for 30 "redis cluster state ok" redis_agree 0 1 2
  redis-server --port "$standalone_port" --bind 127.0.0.1 --save '' --appendonly no >"$work/standalone.log" 2>&1 &
  pids+=($!)
  wait_for 30 "standalone redis" resp_ping "$standalone_port"
fi

# --- redis-cli checks. Against kache a plain redis-cli reaches every key through any node
# (forwarding); against Redis Cluster only -c does.
route=(); [ "$target" = redis ] && route=(-c)
step "redis-cli: PING and a SET/GET round trip on every node"
for i in 0 1 2; do
  p=$(resp_port "$i")
  expect "node-$i PING" PONG redis-cli -p "$p" ping
  expect "node-$i SET" OK redis-cli "${route[@]}" -p "$p" set "cli:rt:$i" "value-$i"
  expect "node-$i GET" "value-$i" redis-cli "${route[@]}" -p "$p" get "cli:rt:$i"
done
for i in 0 1 2; do
  j=$(((i + 1) % 3))
  expect "node-$i GET of the key SET through node-$j" "value-$j" redis-cli "${route[@]}" -p "$(resp_port "$i")" get "cli:rt:$j"
done

if [ "$target" = kache ]; then
  step "HTTP and RESP serve one keyspace"
  http() { echo "http://127.0.0.1:$(http_port "$1")/v1/keys/$2"; }
  curl -sf -X PUT --data-binary from-http "$(http 0 cli:http)" >/dev/null &&
    pass || fail "PUT $(http 0 cli:http) failed"
  for i in 1 2; do expect "RESP GET on node-$i of a key PUT over HTTP" from-http redis-cli -p "$(resp_port "$i")" get cli:http; done
  expect "RESP SET on node-2" OK redis-cli -p "$(resp_port 2)" set cli:resp from-resp
  expect "HTTP GET on node-0 of a key SET over RESP" from-resp curl -sf "$(http 0 cli:resp)"
  expect "RESP SET EX on node-1" OK redis-cli -p "$(resp_port 1)" set cli:ttl v ex 100
  ttl=$(curl -sf -D - -o /dev/null "$(http 0 cli:ttl)" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-kache-ttl" {print $2}')
  if [ -n "$ttl" ] && [ "$ttl" -ge 1 ] && [ "$ttl" -le 100 ]; then pass; else
    fail "HTTP GET of a key SET EX 100 over RESP: x-kache-ttl expected 1..100, got '$ttl'"; fi
  expect "RESP DEL on node-0 of a key PUT over HTTP" 1 redis-cli -p "$(resp_port 0)" del cli:http
  expect "HTTP GET of a key deleted over RESP" 404 curl -s -o /dev/null -w '%{http_code}' "$(http 2 cli:http)"
fi

step "redis-cli -c through every node, keys in many slots"
for i in 0 1 2; do
  for k in $(seq 0 199); do echo "SET cli:n$i:$k value-$i-$k"; done >"$work/set-$i.cmd"
  for k in $(seq 0 199); do echo "GET cli:n$i:$k"; done >"$work/get-$i.cmd"
  for k in $(seq 0 199); do echo "value-$i-$k"; done >"$work/want-$i.out"
  redis-cli -c -p "$(resp_port "$i")" <"$work/set-$i.cmd" 2>&1 | grep -v '^-> Redirected' >"$work/set-$i.out" || true
  other=$(((i + 1) % 3))
  redis-cli -c -p "$(resp_port "$other")" <"$work/get-$i.cmd" 2>&1 | grep -v '^-> Redirected' >"$work/get-$i.out" || true
  oks=$(grep -cx OK "$work/set-$i.out" || true)
  slots=$(python3 "$here/checks.py" keyslot $(seq -f "cli:n$i:%g" 0 199) | sort -u | wc -l)
  if [ "$oks" = 200 ] && cmp -s "$work/want-$i.out" "$work/get-$i.out"; then pass; else
    fail "redis-cli -c: 200 SETs through node-$i ($oks OK), GETs through node-$other: $(diff "$work/want-$i.out" "$work/get-$i.out" | head -3 | tr '\n' ' ')"
  fi
  echo "node-$i: 200 keys in $slots slots written, read back through node-$other"
done

step "CLUSTER KEYSLOT agrees with Redis"
# Values from Redis 7.0 itself (hashtags, empty and repeated braces included).
while read -r want key; do
  expect "CLUSTER KEYSLOT '$key'" "$want" redis-cli -p "$(resp_port 0)" cluster keyslot "$key"
done <<'KEYS'
12182 foo
5061 bar
866 hello
3443 {user1000}.following
3443 {user1000}.followers
9500 {}foo
8363 foo{}{bar}
4015 foo{{bar}}zap
5061 foo{bar}{zap}
15495 {a}
12739 123456789
KEYS
expect "CLUSTER KEYSLOT ''" 0 redis-cli -p "$(resp_port 1)" cluster keyslot ""
# And for the 600 keys above: the server's answer is checks.py's CRC16 (itself checked
# against real Redis by RESP_TARGET=redis).
cat "$work"/get-*.cmd | sed 's/^GET /CLUSTER KEYSLOT /' | redis-cli -p "$(resp_port 2)" >"$work/keyslot.out" 2>&1 || true
python3 "$here/checks.py" keyslot $(cat "$work"/get-*.cmd | cut -d' ' -f2) >"$work/keyslot.want"
if cmp -s "$work/keyslot.want" "$work/keyslot.out"; then pass; else
  fail "CLUSTER KEYSLOT of 600 keys differs from CRC16 mod 16384: $(diff "$work/keyslot.want" "$work/keyslot.out" | head -3 | tr '\n' ' ')"
fi

step "CLUSTER SLOTS covers slots 0..16383 exactly once, on every node alike"
for i in 0 1 2; do
  redis-cli -2 --json -p "$(resp_port "$i")" cluster slots >"$work/slots-$i.json" 2>&1 || true
  if out=$(python3 "$here/checks.py" slots $(resp_ports 0 1 2) <"$work/slots-$i.json"); then
    pass; echo "node-$i: $out"
  else fail "node-$i CLUSTER SLOTS: $out"; fi
done
if cmp -s "$work/slots-0.json" "$work/slots-1.json" && cmp -s "$work/slots-0.json" "$work/slots-2.json"; then pass; else
  fail "CLUSTER SLOTS differs between nodes"
fi
if [ "$target" = kache ]; then
  port_ids="$(resp_port 0)=node-0,$(resp_port 1)=node-1,$(resp_port 2)=node-2"
  if out=$(python3 "$here/checks.py" agree "http://127.0.0.1:$(http_port 0)" 271 "$port_ids" \
    foo bar hello '{user1000}.following' $(seq -f 'cli:n0:%g' 0 49) <"$work/slots-0.json"); then pass; else
    fail "CLUSTER SLOTS and /v1/cluster/keys disagree: $out"
  fi
fi

# --- redis-py and go-redis workloads while the cluster scales out and in.
step "workloads: redis-py and go-redis, plain and cluster clients"
if [ "$target" = kache ]; then
  py_plain=127.0.0.1:$(resp_port 0); go_plain=127.0.0.1:$(resp_port 1); separate=()
else
  py_plain=127.0.0.1:$standalone_port; go_plain=$py_plain; separate=(--separate-keyspaces)
fi
rm -f "$work/stop"
"$venv/bin/python" "$here/workload.py" --plain "$py_plain" --cluster "$(seeds 0 1 2)" \
  --stop-file "$work/stop" --ready-file "$work/py.ready" --ops-log "$work/py-ops.jsonl" \
  --max-seconds 150 "${separate[@]}" >"$work/py.out" 2>&1 &
py_pid=$!; pids+=($py_pid)
"$gobin" -plain "$go_plain" -cluster "$(seeds 0 1 2)" -stop-file "$work/stop" \
  -ready-file "$work/go.ready" -ops-log "$work/go-ops.log" -max-duration 150s -rate 400 \
  "${separate[@]/--/-}" >"$work/go.out" 2>&1 &
go_pid=$!; pids+=($go_pid)
wait_for 30 "redis-py workload connected" test -f "$work/py.ready"
wait_for 30 "go-redis workload connected" test -f "$work/go.ready"
sleep 4

step "scale out: 3 -> 4 nodes"
t0=$(date +%s.%N)
if [ "$target" = kache ]; then
  start_node 3
  members 2 "0 1 2 3"
  wait_for 90 "epoch 2 settled on all 4 nodes" settled 2 0 1 2 3
else
  start_node 3
  redis-cli --cluster add-node "127.0.0.1:$(resp_port 3)" "127.0.0.1:$(resp_port 0)" >"$work/add.out" 2>&1 ||
    die "add-node: $(tail -3 "$work/add.out")"
  wait_for 30 "node-3 joined" redis_agree 0 1 2 3
  redis-cli --cluster rebalance "127.0.0.1:$(resp_port 0)" --cluster-use-empty-masters >"$work/rebalance.out" 2>&1 ||
    die "rebalance: $(tail -3 "$work/rebalance.out")"
fi
echo "scale out done in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s"
sleep 4

step "scale in: 4 -> 2 nodes (node-2 and node-3 leave)"
t0=$(date +%s.%N)
if [ "$target" = kache ]; then
  members 3 "0 1" "2 3"
  wait_for 90 "epoch 3 settled on all 4 nodes" settled 3 0 1 2 3
else
  weights=()
  for i in 2 3; do weights+=("$(redis-cli -p "$(resp_port "$i")" cluster myid)=0"); done
  redis-cli --cluster rebalance "127.0.0.1:$(resp_port 0)" --cluster-weight "${weights[@]}" >"$work/drain.out" 2>&1 ||
    die "drain: $(tail -3 "$work/drain.out")"
  for i in 2 3; do
    redis-cli --cluster del-node "127.0.0.1:$(resp_port 0)" "$(redis-cli -p "$(resp_port "$i")" cluster myid)" \
      >>"$work/del.out" 2>&1 || die "del-node node-$i: $(tail -3 "$work/del.out")"
  done
fi
# Both at once: a departed kache node serves for half its grace period (10 s) before it
# exits, while clients refresh their slot maps.
for i in 2 3; do kill "${node_pid[$i]}" 2>/dev/null || true; done
for i in 2 3; do stop_node "$i"; done
echo "scale in done in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s"
sleep 4

step "stop the workloads and check every key"
touch "$work/stop"
for ((i = 0; i < 600; i++)); do
  kill -0 "$py_pid" 2>/dev/null || kill -0 "$go_pid" 2>/dev/null || break
  sleep 0.2
done
for pid in "$py_pid" "$go_pid"; do
  if kill -0 "$pid" 2>/dev/null; then fail "workload $pid still running 120s after the stop file"; kill "$pid"; fi
done
py_status=0; wait "$py_pid" || py_status=$?
go_status=0; wait "$go_pid" || go_status=$?
cat "$work/py.out" "$work/go.out"
if [ "$py_status" -eq 0 ]; then pass; else fail "redis-py workload exited $py_status (violations above)"; fi
if [ "$go_status" -eq 0 ]; then pass; else fail "go-redis workload exited $go_status (violations above)"; fi

step "after the scale-in: redis-cli -c reads the 600 keys, CLUSTER SLOTS names only node-0 and node-1"
cat "$work"/get-{0,1,2}.cmd | redis-cli -c -p "$(resp_port 0)" 2>&1 | grep -v '^-> Redirected' >"$work/get-after.out" || true
if cat "$work"/want-{0,1,2}.out | cmp -s - "$work/get-after.out"; then pass; else
  fail "redis-cli -c after the scale-in: $(cat "$work"/want-{0,1,2}.out | diff - "$work/get-after.out" | head -3 | tr '\n' ' ')"
fi
for i in 0 1; do
  if out=$(redis-cli -2 --json -p "$(resp_port "$i")" cluster slots 2>&1 | python3 "$here/checks.py" slots $(resp_ports 0 1)); then
    pass; echo "node-$i: $out"
  else fail "node-$i CLUSTER SLOTS after the scale-in: $out"; fi
done

echo "== summary ($target, $(($(date +%s) - began))s)"
grep -h 'redis-py:\|go-redis:' "$work/py.out" "$work/go.out" || true
if [ ${#failures[@]} -gt 0 ]; then printf 'FAIL %s\n' "${failures[@]}"; fi
echo "resp: $passed passed, ${#failures[@]} failed"
[ ${#failures[@]} -eq 0 ]
