#!/usr/bin/env bash
# TLS benchmark: what encryption and authentication cost, side by side in one run.
#
#   bash bench/tls.sh                      # defaults below; results go to stdout
#   PARTS=http bash bench/tls.sh           # only one part (http, resp, peer)
#
# 1. http: one node over HTTP, `wrk` GET and PUT (50 keep-alive connections, 100-byte
#    values, random keys of a preloaded keyspace), three ways: plaintext, TLS
#    (--client-tls-dir), and TLS with a bearer token (--auth-dir). Target: TLS at least
#    0.8x plaintext.
# 2. resp: `redis-benchmark --tls` GET and SET against kache's RESP port with TLS and
#    against redis-server's tls-port, and both in plaintext for reference. Target: kache
#    GET over TLS at least 1.0x Redis over TLS.
# 3. peer: a 3-node cluster at RF=2 taking wrk PUTs on one node (each write goes to a
#    peer as well), plaintext peers against mutual TLS (--peer-tls-dir).
# Each server is pinned to one core and the load generator to the other; kache runs one
# worker thread (Redis is single-threaded). In part 3 the three nodes share one core.
# Certificates: a throwaway EC P-256 CA and leaves made with openssl in a temp dir.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
DURATION=${DURATION:-10}
KEYSPACE=${KEYSPACE:-100000}
CONNECTIONS=${CONNECTIONS:-50}
VALUE_BYTES=${VALUE_BYTES:-100}
REQUESTS=${REQUESTS:-1000000}
BASE=${BASE:-17600}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
PARTS=${PARTS:-http,resp,peer}
run_part() { [[ ",$PARTS," == *",$1,"* ]]; }

# shellcheck source=lib.sh
source "$here/lib.sh"
bench_require "apt-get install -y wrk redis-server redis-tools openssl util-linux curl" \
  wrk redis-server redis-benchmark redis-cli openssl taskset python3 curl
redis-benchmark --help 2>&1 | grep -q -- '--tls' ||
  { echo "this redis-benchmark was built without TLS" >&2; exit 1; }

bench_workdir
bin=$(kache_binary "$root")
certs="$work/certs"
mkdir -p "$certs"

# A CA, and one leaf per name: SANs for 127.0.0.1 and kache://bench/<name>, both EKUs.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=kache-bench-ca -keyout "$certs/ca.key" -out "$certs/ca.crt" 2>/dev/null
leaf() { # name dir: writes dir/tls.crt, dir/tls.key, dir/ca.crt and dir/<name>.{crt,key}
  local name=$1 dir=$2
  mkdir -p "$dir"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$dir/$name.key" -out "$work/$name.csr" 2>/dev/null
  openssl x509 -req -in "$work/$name.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" \
    -CAcreateserial -days 2 -out "$dir/$name.crt" -extfile <(printf '%s\n' \
      "subjectAltName=IP:127.0.0.1,DNS:localhost,URI:kache://bench/$name" \
      "extendedKeyUsage=serverAuth,clientAuth" "keyUsage=digitalSignature") 2>/dev/null
  cp "$dir/$name.crt" "$dir/tls.crt"; cp "$dir/$name.key" "$dir/tls.key"
  cp "$certs/ca.crt" "$dir/ca.crt"
}
leaf server "$certs/client-tls"
for i in 0 1 2; do leaf "node-$i" "$certs/peer"; done
rm -f "$certs/peer/tls.crt" "$certs/peer/tls.key"
token=$(head -c 32 /dev/urandom | base64 | tr -d '=+/')
mkdir -p "$certs/auth/readwrite/bench"
printf '%s' "$token" >"$certs/auth/readwrite/bench/user"

http_port() { echo $((BASE + 10 * $1)); }
grpc_port() { echo $((BASE + 10 * $1 + 1)); }
resp_port() { echo $((BASE + 10 * $1 + 2)); }
REDIS_PORT=$((BASE + 100))

start_kache() { # index [flags...]
  local i=$1; shift
  taskset -c "$SERVER_CPU" "$bin" --node-id "node-$i" --http-addr "127.0.0.1:$(http_port "$i")" \
    --grpc-addr "127.0.0.1:$(grpc_port "$i")" --resp-addr "127.0.0.1:$(resp_port "$i")" \
    --worker-threads 1 --max-memory 4GiB "$@" 2>"$work/kache-$i.log" &
  pids+=($!)
  wait_port "$(http_port "$i")"
}

stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

# "1.83ms" / "812.00us" / "1.02s" -> milliseconds
to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 } printf "%.3f", v }' <<<"$1"; }

wrk_run() { # url script [wrk flags...] -> "rps p99_ms non2xx"
  local url=$1 script=$2; shift 2
  KEYSPACE=$KEYSPACE VALUE_BYTES=$VALUE_BYTES taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" \
    -d"${DURATION}s" --latency -s "$here/$script" "$@" "$url" >"$work/wrk.out"
  local rps p99 bad
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
  p99=$(to_ms "$(awk '$1=="99%" {print $2}' "$work/wrk.out")")
  bad=$(awk '/Non-2xx/ {print $5} /Socket errors/ {print "socket-errors"}' "$work/wrk.out" | head -1)
  echo "$rps $p99 ${bad:-0}"
}

# redis-benchmark's CSV: "test","rps","avg","min","p50","p95","p99","max" -> "rps p99"
rb() { # port test [flags...]
  local port=$1 test=$2; shift 2
  taskset -c "$CLIENT_CPU" redis-benchmark -p "$port" -c "$CONNECTIONS" -n "$REQUESTS" \
    -d "$VALUE_BYTES" -r "$KEYSPACE" -t "$test" --csv "$@" 2>/dev/null | grep -i "^\"$test\"" | tail -1 \
    | awk -F'"' '{printf "%s %s\n", $4, $14}'
}

row() { # label a_rps a_p99 b_rps b_p99
  printf '%-30s %12s %12s %7s %10s %10s\n' "$1" "$2" "$4" "$(ratio "$2" "$4")" "$3" "$5"
}
header() { printf '\n%-30s %12s %12s %7s %10s %10s\n' "$1" "$2" "$3" ratio "$2_p99" "$3_p99"; }

echo "# TLS: $(date -u +%FT%TZ), $(nproc) CPUs, $(redis-server --version | awk '{print $3}'), $(openssl version)"
echo "# ${CONNECTIONS} connections, ${VALUE_BYTES}-byte values, ${KEYSPACE} keys"

if run_part http; then
  url="127.0.0.1:$(http_port 0)"
  start_kache 0 --resp-addr off
  python3 "$here/load.py" kache "$url" "$KEYSPACE" "$VALUE_BYTES"
  read -r p_get p_get_p99 p_get_bad <<<"$(wrk_run "http://$url" wrk-get.lua)"
  read -r p_put p_put_p99 p_put_bad <<<"$(wrk_run "http://$url" wrk-put.lua)"
  stop_all
  start_kache 0 --resp-addr off --client-tls-dir "$certs/client-tls"
  CACERT="$certs/ca.crt" python3 "$here/load.py" kache "https://$url" "$KEYSPACE" "$VALUE_BYTES"
  read -r t_get t_get_p99 t_get_bad <<<"$(wrk_run "https://$url" wrk-get.lua)"
  read -r t_put t_put_p99 t_put_bad <<<"$(wrk_run "https://$url" wrk-put.lua)"
  stop_all
  start_kache 0 --resp-addr off --client-tls-dir "$certs/client-tls" --auth-dir "$certs/auth"
  CACERT="$certs/ca.crt" TOKEN=$token python3 "$here/load.py" kache "https://$url" "$KEYSPACE" "$VALUE_BYTES"
  bearer="Authorization: Bearer $token"
  read -r a_get a_get_p99 a_get_bad <<<"$(wrk_run "https://$url" wrk-get.lua -H "$bearer")"
  read -r a_put a_put_p99 a_put_bad <<<"$(wrk_run "https://$url" wrk-put.lua -H "$bearer")"
  stop_all
  echo
  echo "## http: wrk -t1 -c$CONNECTIONS -d${DURATION}s, one node"
  header "" tls plain
  row "GET tls / plain" "$t_get" "$t_get_p99" "$p_get" "$p_get_p99"
  row "PUT tls / plain" "$t_put" "$t_put_p99" "$p_put" "$p_put_p99"
  row "GET tls+token / plain" "$a_get" "$a_get_p99" "$p_get" "$p_get_p99"
  row "PUT tls+token / plain" "$a_put" "$a_put_p99" "$p_put" "$p_put_p99"
  echo "non-2xx: plain ${p_get_bad}/${p_put_bad}, tls ${t_get_bad}/${t_put_bad}, tls+token ${a_get_bad}/${a_put_bad}"
fi

if run_part resp; then
  tls=(--tls --cacert "$certs/ca.crt")
  start_kache 0 --client-tls-dir "$certs/client-tls"
  python3 "$here/load.py" resp "$KEYSPACE" "$VALUE_BYTES" |
    redis-cli -p "$(resp_port 0)" "${tls[@]}" --pipe >/dev/null
  read -r k_get k_get_p99 <<<"$(rb "$(resp_port 0)" get "${tls[@]}")"
  read -r k_set k_set_p99 <<<"$(rb "$(resp_port 0)" set "${tls[@]}")"
  stop_all
  start_kache 0
  python3 "$here/load.py" resp "$KEYSPACE" "$VALUE_BYTES" | redis-cli -p "$(resp_port 0)" --pipe >/dev/null
  read -r kp_get kp_get_p99 <<<"$(rb "$(resp_port 0)" get)"
  stop_all
  (cd "$work" && exec taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" \
    --tls-port $((REDIS_PORT + 1)) --tls-cert-file "$certs/client-tls/tls.crt" \
    --tls-key-file "$certs/client-tls/tls.key" --tls-ca-cert-file "$certs/ca.crt" \
    --tls-auth-clients no --bind 127.0.0.1 --save '' --appendonly no --protected-mode no \
    >"$work/redis.log" 2>&1) &
  pids+=($!)
  wait_port $((REDIS_PORT + 1))
  python3 "$here/load.py" resp "$KEYSPACE" "$VALUE_BYTES" | redis-cli -p "$REDIS_PORT" --pipe >/dev/null
  read -r r_get r_get_p99 <<<"$(rb $((REDIS_PORT + 1)) get "${tls[@]}")"
  read -r r_set r_set_p99 <<<"$(rb $((REDIS_PORT + 1)) set "${tls[@]}")"
  read -r rp_get rp_get_p99 <<<"$(rb "$REDIS_PORT" get)"
  stop_all
  echo
  echo "## resp: redis-benchmark -c $CONNECTIONS -n $REQUESTS -r $KEYSPACE -d $VALUE_BYTES, one node"
  header "" kache redis
  row "GET over TLS" "$k_get" "$k_get_p99" "$r_get" "$r_get_p99"
  row "SET over TLS" "$k_set" "$k_set_p99" "$r_set" "$r_set_p99"
  row "GET plaintext (reference)" "$kp_get" "$kp_get_p99" "$rp_get" "$rp_get_p99"
fi

if run_part peer; then
  members="node-0=127.0.0.1:$(grpc_port 0),node-1=127.0.0.1:$(grpc_port 1),node-2=127.0.0.1:$(grpc_port 2)"
  cluster() { # [flags...] -> starts three nodes
    for i in 0 1 2; do
      start_kache "$i" --resp-addr off --members "$members" --replication-factor 2 --cluster-id bench "$@"
    done
    for _ in $(seq 1 200); do
      curl -sf "127.0.0.1:$(http_port 0)/readyz" >/dev/null && break
      sleep 0.05
    done
  }
  cluster
  read -r c_put c_put_p99 c_put_bad <<<"$(wrk_run "http://127.0.0.1:$(http_port 0)" wrk-put.lua)"
  stop_all
  cluster --peer-tls-dir "$certs/peer"
  read -r m_put m_put_p99 m_put_bad <<<"$(wrk_run "http://127.0.0.1:$(http_port 0)" wrk-put.lua)"
  stop_all
  echo
  echo "## peer: 3 nodes on one core, RF=2, wrk PUT to node-0 for ${DURATION}s"
  header "" mtls plain
  row "PUT, peers mTLS / plain" "$m_put" "$m_put_p99" "$c_put" "$c_put_p99"
  echo "non-2xx: plain ${c_put_bad}, mtls ${m_put_bad}"
fi
