#!/usr/bin/env bash
# A kache cluster on loopback, without Kubernetes: N nodes sharing a watched member file.
#
#   scripts/local-cluster.sh up [N]      start N nodes (default 3), print their endpoints
#   scripts/local-cluster.sh add         start one more node and add it (new epoch)
#   scripts/local-cluster.sh remove ID   remove a member (new epoch), wait for its handoff, stop it
#   scripts/local-cluster.sh status      epoch, ownership and rebalance progress per node
#   scripts/local-cluster.sh restart     SIGKILL every node at once, start them again
#   scripts/local-cluster.sh down        stop every node and remove the state
#
# Node i listens on HTTP 127.0.0.1:(7070+10i) and gRPC 127.0.0.1:(7071+10i).
# Environment: KACHE_LOCAL_DIR (state, default /tmp/kache-local), RF (replication
# factor at `up`, default 2), KACHE_NODE_ARGS (extra flags for every node), PERSIST=1
# (each node keeps a data dir, $KACHE_LOCAL_DIR/data-<i>, with --fsync ${FSYNC:-everysec};
# `restart` then brings every node back with its data).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${KACHE_LOCAL_DIR:-/tmp/kache-local}
# The replication factor and persistence are fixed at `up` and kept with the state.
rf=$(cat "$dir/rf" 2>/dev/null || echo "${RF:-2}")
persist=$(cat "$dir/persist" 2>/dev/null || echo "${PERSIST:-0}")
bin="$root/target/release/kache-node"

http_port() { echo $((7070 + 10 * $1)); }
grpc_port() { echo $((7071 + 10 * $1)); }
resp_port() { echo $((7072 + 10 * $1)); }

die() { echo "local-cluster: $*" >&2; exit 1; }

members() { [ -f "$dir/members" ] && cat "$dir/members" || true; }
epoch() { [ -f "$dir/epoch" ] && cat "$dir/epoch" || echo 0; }

# Writes the member file for the node indexes on stdin, with the next epoch.
publish() {
  local next=$(( $(epoch) + 1 )) list tmp="$dir/members.yaml.tmp"
  list=$(cat)
  {
    printf 'epoch: %s\npartitions: 271\nreplicationFactor: %s\nmembers:\n' "$next" "$rf"
    for i in $list; do printf '  - id: node-%s\n    address: 127.0.0.1:%s\n' "$i" "$(grpc_port "$i")"; done
  } >"$tmp"
  mv "$tmp" "$dir/members.yaml"   # atomic: nodes never read half a file
  echo "$list" | tr ' ' '\n' | sed '/^$/d' >"$dir/members"
  echo "$next" >"$dir/epoch"
  echo "published epoch $next: members $(echo $list)"
}

start_node() {
  local i=$1 data=()
  [ "$persist" = 1 ] && data=(--data-dir "$dir/data-$i" --fsync "${FSYNC:-everysec}" --cluster-id local)
  # shellcheck disable=SC2086
  "$bin" --node-id "node-$i" --http-addr "127.0.0.1:$(http_port "$i")" \
    --grpc-addr "127.0.0.1:$(grpc_port "$i")" --resp-addr "127.0.0.1:$(resp_port "$i")" --members-file "$dir/members.yaml" \
    "${data[@]}" ${KACHE_NODE_ARGS:-} >>"$dir/node-$i.log" 2>&1 &
  echo $! >"$dir/node-$i.pid"
}

wait_ready() {
  local i=$1
  for _ in $(seq 1 200); do
    curl -sf "127.0.0.1:$(http_port "$i")/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "node-$i did not become ready; see $dir/node-$i.log"
}

cluster_json() { curl -sf "127.0.0.1:$(http_port "$1")/v1/cluster"; }

summary() {
  python3 -c '
import json, sys
r = json.load(sys.stdin)
o, b = r["ownership"], r["rebalance"]
move = "moving %s->%s %d/%d partitions" % (b["fromEpoch"], b["toEpoch"], b["partitionsDone"], b["partitionsTotal"]) if b["active"] else "settled"
print("%-8s epoch %-3s owned %-4s pending %-4s held-not-owned %-4s %s" % (r["node"]["id"], r["epoch"], o["owned"], o["pending"], o["heldNotOwned"], move))'
}

case "${1:-}" in
  up)
    n=${2:-3}
    [ -f "$dir/members" ] && die "already up in $dir (run down first)"
    mkdir -p "$dir"
    echo "$rf" >"$dir/rf"
    echo "$persist" >"$dir/persist"
    cargo build --release -q -p kache-node --manifest-path "$root/Cargo.toml"
    seq 0 $((n - 1)) | tr '\n' ' ' | publish
    for i in $(members); do start_node "$i"; done
    for i in $(members); do wait_ready "$i"; done
    echo "kache: $n nodes, RF=$rf, state in $dir"
    for i in $(members); do echo "  node-$i  http://127.0.0.1:$(http_port "$i")  grpc 127.0.0.1:$(grpc_port "$i")"; done
    echo "try: curl -X PUT -d hello 127.0.0.1:7070/v1/keys/a; curl 127.0.0.1:7080/v1/keys/a; $0 add; $0 status"
    ;;
  add)
    [ -f "$dir/members" ] || die "not up"
    last=$(ls "$dir"/node-*.pid 2>/dev/null | sed 's/.*node-\([0-9]*\)\.pid/\1/' | sort -n | tail -1)
    i=$((last + 1))
    start_node "$i"
    wait_ready "$i"
    echo "$(members | tr '\n' ' ') $i" | publish
    ;;
  remove)
    id=${2:?usage: remove ID}
    i=${id#node-}
    members | grep -qx "$i" || die "node-$i is not a member"
    members | grep -vx "$i" | tr '\n' ' ' | publish
    for _ in $(seq 1 600); do
      if cluster_json "$i" | python3 -c 'import json,sys; r=json.load(sys.stdin); sys.exit(0 if not r["rebalance"]["active"] and r["ownership"]["heldNotOwned"] == 0 else 1)'; then
        kill "$(cat "$dir/node-$i.pid")"; rm -f "$dir/node-$i.pid"
        echo "node-$i handed off everything and stopped"
        exit 0
      fi
      sleep 0.1
    done
    die "node-$i still holds data after 60 s; it keeps running (see $0 status)"
    ;;
  restart)
    [ -f "$dir/members" ] || die "not up"
    for i in $(members); do kill -9 "$(cat "$dir/node-$i.pid")" 2>/dev/null || true; done
    sleep 0.5
    for i in $(members); do start_node "$i"; done
    for i in $(members); do wait_ready "$i"; done
    if [ "$persist" = 1 ]; then
      echo "every node SIGKILLed and started again; each loaded its data dir"
    else
      echo "every node SIGKILLed and started again, empty (up with PERSIST=1 to keep data)"
    fi
    ;;
  status)
    [ -d "$dir" ] || die "not up"
    echo "member file epoch $(epoch), members: $(members | tr '\n' ' ')"
    for pid in "$dir"/node-*.pid; do
      i=$(basename "$pid" .pid); i=${i#node-}
      cluster_json "$i" | summary || echo "node-$i  not answering"
    done
    ;;
  down)
    for pid in "$dir"/node-*.pid; do
      [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
    done
    rm -rf "$dir"
    echo "stopped"
    ;;
  *)
    sed -n '2,16p' "$0"; exit 2 ;;
esac
