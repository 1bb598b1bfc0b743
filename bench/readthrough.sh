#!/usr/bin/env bash
# Read-through benchmark: kache's /v1/upstreams/{name}/... and Varnish 7, side by side in
# one run, in front of the same counting upstream (bench/upstream.py: 200, max-age=3600,
# BODY_BYTES bytes, UPSTREAM_DELAY_MS per request, a count of requests per path).
#
#   bash bench/readthrough.sh            # apt-get install -y varnish wrk; results on stdout
#   KACHE_BIN=target/release/kache-node DURATION=20 bash bench/readthrough.sh
#
# 1. Hit throughput, one core each: one kache node (--worker-threads 1) and one varnishd
#    (one thread pool), each in turn pinned to SERVER_CPU; KEYSPACE URLs warmed through
#    it, then wrk -t1 -c50 pinned to CLIENT_CPU GETs random URLs of the keyspace. Reports
#    requests/s, p99, the server's CPU time per request (user + system, from /proc; on a
#    shared machine a server may not get its whole core) and the upstream requests
#    during the window (0: all hits). For reference, the same wrk against kache's plain
#    GET /v1/keys/{key}, values of the same size, on the same node.
# 2. Cold herd: 3 kache nodes (static members, RF=2) and 3 varnishd, each system with a
#    fresh count. HERD_URLS cold URLs x HERD_EACH requests, all in flight at once, spread
#    round-robin over the 3 instances (bench/herd.py). Reports the upstream requests:
#    kache fetches each URL once for the cluster (HERD_URLS), Varnish once per instance
#    (up to 3 x HERD_URLS). Then the same requests again, which must all be hits.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
DURATION=${DURATION:-10}
KEYSPACE=${KEYSPACE:-1000}
CONNECTIONS=${CONNECTIONS:-50}
BODY_BYTES=${BODY_BYTES:-1024}
UPSTREAM_DELAY_MS=${UPSTREAM_DELAY_MS:-50}
HERD_URLS=${HERD_URLS:-100}
HERD_EACH=${HERD_EACH:-10}
BASE=${BASE:-17400}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
PARTS=${PARTS:-hits,herd}   # which sections to run
run_part() { [[ ",$PARTS," == *",$1,"* ]]; }

# shellcheck source=lib.sh
source "$here/lib.sh"
bench_require "apt-get install -y varnish wrk curl util-linux procps" \
  varnishd wrk curl taskset pgrep python3
bench_workdir
# varnishd's shared-memory log lives in its work dir, which Varnish wants on tmpfs (as
# /var/lib/varnish is when packaged); $work may be on disk.
shm=$(mktemp -d /dev/shm/kache-readthrough.XXXXXX)
trap 'bench_cleanup; rm -rf "$shm"' EXIT
trap 'exit 143' INT TERM   # stop here; the EXIT trap cleans up once
kache_bin=$(kache_binary "$root")

upstream_port=$BASE
kache_http() { echo $((BASE + 10 + 10 * $1)); }   # kache node i: HTTP, then gRPC
kache_grpc() { echo $((BASE + 11 + 10 * $1)); }
varnish_port() { echo $((BASE + 50 + $1)); }     # varnishd i

# $pids (killed on exit) holds the upstream and the servers; stop_all stops the servers.
servers=()
pin=()   # a command prefix for the servers started next, e.g. (taskset -c 1)
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
stop_all() { for pid in "${servers[@]}"; do stop "$pid"; done; servers=(); pids=("$upstream_pid"); }

# upstream: python3 upstream.py (counts), /__reset, /__count -> "total distinct"
start_upstream() {
  python3 "$here/upstream.py" "$upstream_port" "$BODY_BYTES" "$UPSTREAM_DELAY_MS" 2>"$work/upstream.log" &
  upstream_pid=$!; pids+=("$upstream_pid")
  wait_port "$upstream_port" 100
}
upstream_reset() { curl -sf "127.0.0.1:$upstream_port/__reset" >/dev/null; }
upstream_count() {
  curl -sf "127.0.0.1:$upstream_port/__count" | python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["total"], c["distinct"])'
}

# start_kache INDEX [FLAGS...]: a node with the upstream "api", run under $pin
start_kache() {
  local i=$1; shift
  "${pin[@]}" "$kache_bin" --node-id "node-$i" --http-addr "127.0.0.1:$(kache_http "$i")" \
    --grpc-addr "127.0.0.1:$(kache_grpc "$i")" --resp-addr off \
    --upstream "api=http://127.0.0.1:$upstream_port" "$@" 2>"$work/kache-$i.log" &
  pids+=("$!"); servers+=("$!")
}
wait_ready() {
  for _ in $(seq 1 300); do
    curl -sf "127.0.0.1:$(kache_http "$1")/readyz" >/dev/null && return
    sleep 0.1
  done
  echo "kache node-$1 not ready:" >&2; tail -5 "$work/kache-$1.log" >&2; exit 1
}

# start_varnish INDEX [PARAMS...]: varnishd in the foreground, its own work dir, the
# upstream as its one backend and the builtin VCL (a 200 with max-age is cached). As
# root, -j none keeps it from switching to the varnish user, which cannot enter $work
# or $shm.
cat >"$work/bench.vcl" <<EOF
vcl 4.1;
backend upstream { .host = "127.0.0.1"; .port = "$upstream_port"; }
EOF
start_varnish() {
  local i=$1; shift
  "${pin[@]}" varnishd -F -j none -n "$shm/varnish-$i" -a "127.0.0.1:$(varnish_port "$i")" -f "$work/bench.vcl" \
    -s malloc,256m -p thread_pool_min=100 -p thread_pool_max=2000 "$@" >"$work/varnish-$i.log" 2>&1 &
  pids+=("$!"); servers+=("$!")
}

# "1.83ms" / "812.00us" / "1.02s" -> milliseconds
to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 } printf "%.3f", v }' <<<"$1"; }

# CPU time (user + system, clock ticks) of PID and its child processes: varnishd's
# manager does no request work, its child does.
cpu_ticks() {
  local pid total=0
  # shellcheck disable=SC2046 # one child pid a line
  for pid in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
clk_tck=$(getconf CLK_TCK)
us_per() { awk -v a="$1" -v b="$2" -v n="$3" -v hz="$clk_tck" 'BEGIN { if (n > 0) printf "%.1f", (b - a) * 1e6 / hz / n; else print "n/a" }'; }

# wrk_run PORT SCRIPT PATH_FORMAT -> "rps p99_ms non2xx requests"
wrk_run() {
  KEYSPACE=$KEYSPACE PATH_FORMAT=$3 taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" \
    -d"${DURATION}s" --latency -s "$here/$2" "http://127.0.0.1:$1" >"$work/wrk.out"
  local rps p99 bad
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
  [ -n "$rps" ] || { echo "wrk failed:" >&2; cat "$work/wrk.out" >&2; exit 1; }
  p99=$(to_ms "$(awk '$1=="99%" {print $2}' "$work/wrk.out")")
  # "Non-2xx or 3xx responses: N", "Socket errors: connect C, read R, write W, timeout T"
  bad=$(awk '/Non-2xx/ {n=$5} /Socket errors/ {gsub(",", ""); s="+sock:" $4 "/" $6 "/" $8 "/" $10}
    END {print (n == "" ? 0 : n) s}' "$work/wrk.out")
  echo "$rps $p99 $bad $(awk '/requests in/ {print $1}' "$work/wrk.out")"
}

# herd PORTS PATH_FORMAT URLS EACH [CONCURRENCY] -> one JSON line (bench/herd.py)
herd() { python3 "$here/herd.py" "$@"; }
# field JSON EXPR: a value of herd's JSON line, e.g. field "$out" 'j["status"].get("200", 0)'
field() { python3 -c "import json,sys; j=json.loads(sys.argv[1]); v=$2; print(json.dumps(v, separators=(',', ':')) if isinstance(v, dict) else v)" "$1"; }
non200() { field "$1" 'j["requests"] - j["status"].get("200", 0)'; }

# hits NAME PID PORT PATH_FORMAT: warm KEYSPACE URLs, check a second pass, then wrk;
# writes "rps p99_ms non2xx upstream_in_window cpu_us_per_request second_pass_xcache"
# to $work/NAME.hits. CPU per request is the server's own: on a shared machine the
# server may not get its whole core, and then requests/s says less than it seems.
hits() {
  local name=$1 pid=$2 port=$3 path=$4 warm again before after rps p99 bad n cpu0 cpu1
  warm=$(herd "$port" "$path" "$KEYSPACE" 1 "$CONNECTIONS")
  [ "$(non200 "$warm")" = 0 ] || { echo "$name: warming failed: $warm" >&2; exit 1; }
  again=$(herd "$port" "$path" "$KEYSPACE" 1 "$CONNECTIONS")
  read -r before _ <<<"$(upstream_count)"
  cpu0=$(cpu_ticks "$pid")
  wrk_run "$port" wrk-paths.lua "$path" >"$work/$name.wrk"
  cpu1=$(cpu_ticks "$pid")
  read -r after _ <<<"$(upstream_count)"
  read -r rps p99 bad n <"$work/$name.wrk"
  echo "$rps $p99 $bad $((after - before)) $(us_per "$cpu0" "$cpu1" "$n") $(field "$again" 'j["xcache"]')" >"$work/$name.hits"
}

echo "# kache vs Varnish, read-through: $(date -u +%FT%TZ), $(nproc) CPUs, $(varnishd -V 2>&1 | head -1 | awk '{print $2}' | tr -d '(')"
echo "# ${BODY_BYTES}-byte bodies, max-age=3600; hits: ${KEYSPACE} URLs, ${CONNECTIONS} connections, ${DURATION}s per run; herd: ${HERD_URLS} URLs x ${HERD_EACH}, upstream delay ${UPSTREAM_DELAY_MS} ms"

start_upstream

if run_part hits; then
  pin=(taskset -c "$SERVER_CPU")
  start_kache 0 --worker-threads 1 --max-memory 1GiB
  wait_ready 0
  hits kache "${servers[0]}" "$(kache_http 0)" "/v1/upstreams/api/item/%d"
  read -r k_rps k_p99 k_bad k_up k_cpu k_again <"$work/kache.hits"
  # The same node's plain key GET, values of the same size, as a reference point.
  python3 "$here/load.py" kache "127.0.0.1:$(kache_http 0)" "$KEYSPACE" "$BODY_BYTES"
  cpu0=$(cpu_ticks "${servers[0]}")
  wrk_run "$(kache_http 0)" wrk-get.lua unused >"$work/keys.wrk"
  cpu1=$(cpu_ticks "${servers[0]}")
  read -r kv_rps kv_p99 kv_bad kv_n <"$work/keys.wrk"
  kv_cpu=$(us_per "$cpu0" "$cpu1" "$kv_n")
  stop_all

  start_varnish 0 -p thread_pools=1
  wait_port "$(varnish_port 0)" 200
  hits varnish "${servers[0]}" "$(varnish_port 0)" "/item/%d"
  read -r v_rps v_p99 v_bad v_up v_cpu v_again <"$work/varnish.hits"
  stop_all
  pin=()

  printf '\n%-24s %12s %10s %12s %8s %20s\n' "hits (one core each)" rps p99_ms cpu_us/req non2xx upstream_in_window
  printf '%-24s %12s %10s %12s %8s %20s\n' "kache read-through" "$k_rps" "$k_p99" "$k_cpu" "$k_bad" "$k_up"
  printf '%-24s %12s %10s %12s %8s %20s\n' "varnish" "$v_rps" "$v_p99" "$v_cpu" "$v_bad" "$v_up"
  printf '%-24s %12s %10s %12s %8s\n' "kache GET /v1/keys" "$kv_rps" "$kv_p99" "$kv_cpu" "$kv_bad"
  echo "ratio kache/varnish: rps $(ratio "$k_rps" "$v_rps"), p99 $(ratio "$k_p99" "$v_p99"), cpu/req $(ratio "$k_cpu" "$v_cpu"); read-through / plain GET on kache: rps $(ratio "$k_rps" "$kv_rps")"
  echo "non2xx: non-2xx responses, then +sock:connect/read/write/timeout when wrk saw socket errors"
  echo "second warm pass, X-Cache: kache $k_again; varnish $v_again"
fi

if run_part herd; then
  herd_total=$((HERD_URLS * HERD_EACH))
  members="node-0=127.0.0.1:$(kache_grpc 0),node-1=127.0.0.1:$(kache_grpc 1),node-2=127.0.0.1:$(kache_grpc 2)"
  for i in 0 1 2; do start_kache "$i" --members "$members" --replication-factor 2; done
  for i in 0 1 2; do wait_ready "$i"; done
  upstream_reset
  k_herd=$(herd "$(kache_http 0),$(kache_http 1),$(kache_http 2)" "/v1/upstreams/api/cold/%d" "$HERD_URLS" "$HERD_EACH")
  read -r k_herd_up k_herd_distinct <<<"$(upstream_count)"
  k_herd2=$(herd "$(kache_http 0),$(kache_http 1),$(kache_http 2)" "/v1/upstreams/api/cold/%d" "$HERD_URLS" "$HERD_EACH")
  read -r k_herd_up2 _ <<<"$(upstream_count)"
  stop_all

  for i in 0 1 2; do start_varnish "$i" -p thread_pools=1; done
  for i in 0 1 2; do wait_port "$(varnish_port "$i")" 200; done
  upstream_reset
  v_herd=$(herd "$(varnish_port 0),$(varnish_port 1),$(varnish_port 2)" "/cold/%d" "$HERD_URLS" "$HERD_EACH")
  read -r v_herd_up v_herd_distinct <<<"$(upstream_count)"
  v_herd2=$(herd "$(varnish_port 0),$(varnish_port 1),$(varnish_port 2)" "/cold/%d" "$HERD_URLS" "$HERD_EACH")
  read -r v_herd_up2 _ <<<"$(upstream_count)"
  stop_all

  printf '\ncold herd: %s URLs x %s = %s requests at once over 3 instances\n' "$HERD_URLS" "$HERD_EACH" "$herd_total"
  printf '%-10s %18s %10s %10s %8s %8s %s\n' system upstream_requests distinct non200 errors seconds x-cache
  printf '%-10s %18s %10s %10s %8s %8s %s\n' kache "$k_herd_up" "$k_herd_distinct" "$(non200 "$k_herd")" \
    "$(field "$k_herd" 'j["errors"]')" "$(field "$k_herd" 'j["seconds"]')" "$(field "$k_herd" 'j["xcache"]')"
  printf '%-10s %18s %10s %10s %8s %8s\n' varnish "$v_herd_up" "$v_herd_distinct" "$(non200 "$v_herd")" \
    "$(field "$v_herd" 'j["errors"]')" "$(field "$v_herd" 'j["seconds"]')"
  echo "statuses: kache $(field "$k_herd" 'j["status"]'), varnish $(field "$v_herd" 'j["status"]')"
  for run in k_herd v_herd; do
    first=$(field "${!run}" 'j["first_error"]')
    [ "$first" = None ] || echo "$run first error: $first"
  done
  echo "the same requests again: upstream requests kache +$((k_herd_up2 - k_herd_up)), varnish +$((v_herd_up2 - v_herd_up)); non-200 kache $(non200 "$k_herd2"), varnish $(non200 "$v_herd2"); kache X-Cache $(field "$k_herd2" 'j["xcache"]')"
fi
