#!/usr/bin/env bash
# User-space instructions per proxied request (valgrind callgrind): a noise-free A/B measure of
# the gateway's own work, for machines where wall-clock figures swing with other load.
#
#   benches/callgrind/instructions.sh GATEWAY_BIN [MODEL] [extra gateway args...]
#   e.g. benches/callgrind/instructions.sh target/release/examples/gateway static/static --no-telemetry
#        benches/callgrind/instructions.sh target/release/examples/gateway auto:bench-static
#
# Starts nginx (benches/nginx/static.conf: a canned chat completion) and the gateway under
# callgrind (2 workers), warms up with wrk for 3 s, zeroes the counters, runs `wrk -t1` with
# CG_CONNS connections (default 16) for CG_SECS (default 8) seconds, dumps, and divides the
# instructions of every gateway thread (connection workers, telemetry writer, SQLite threads) by
# the requests counted on /metrics.
# Needs valgrind, nginx and wrk (apt-get install valgrind nginx-light wrk). Kernel time is not
# counted: syscalls and wake-ups cost the same for any proxy; see gateway_load for those.
set -euo pipefail
BIN=$(realpath "$1"); MODEL=${2:-static/static}; shift $(( $# >= 2 ? 2 : 1 ))
HERE=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /tmp/boo-callgrind.XXXX)
mkdir -p "$W/tmp"
UP=$((47000 + RANDOM % 500)); GW=$((47600 + RANDOM % 500))
sed -e "s#{{PREFIX}}#$W#g" -e "s#{{PORT}}#$UP#g" "$HERE/nginx/static.conf" > "$W/static.conf"
nginx -p "$W" -c "$W/static.conf" -g 'daemon off;' 2>/dev/null & NG=$!
cat > "$W/boocontrol.json" <<J
{"providers":[{"id":"static","kind":"llama-server","base_url":"http://127.0.0.1:$UP"}],
 "policies":[{"name":"auto:bench-static","candidates":["static/static"],"order":["priority"]}]}
J
cat > "$W/post.lua" <<L
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"$MODEL","messages":[{"role":"user","content":"Say hi."}],"max_tokens":4}'
L
cd "$W"
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$W/cg.out" \
  "$BIN" --config "$W/boocontrol.json" --listen "127.0.0.1:$GW" --workers 2 "$@" > "$W/gateway.log" 2>&1 &
VG=$!
trap 'kill $VG $NG 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$GW/health" && break; sleep 0.2; done
count() { curl -s "http://127.0.0.1:$GW/metrics" | awk '/^boo_gateway_requests_total/ {s+=$2} END {print s+0}'; }
wrk -t1 -c"${CG_CONNS:-16}" -d3s -s "$W/post.lua" "http://127.0.0.1:$GW/v1/chat/completions" > /dev/null
R0=$(count)
callgrind_control -z "$VG" > /dev/null
wrk -t1 -c"${CG_CONNS:-16}" -d"${CG_SECS:-8}s" -s "$W/post.lua" "http://127.0.0.1:$GW/v1/chat/completions" | grep -E "requests in|Non-2xx" || true
callgrind_control -d "$VG" > /dev/null
R1=$(count)
sleep 0.5
IR=$(callgrind_annotate "$W/cg.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
N=$((R1 - R0 - 1))   # minus the /metrics request itself
echo "requests=$N instructions=$IR per_request=$((IR / N))  (profile: callgrind_annotate --inclusive=yes $W/cg.out.1)"
