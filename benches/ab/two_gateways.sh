#!/usr/bin/env bash
# Interleaved A/B of two gateway binaries side by side (or one binary, two models).
#
#   benches/ab/two_gateways.sh BIN_A BIN_B MODEL CONNS ROUNDS SECS [gateway args...]
#   e.g. benches/ab/two_gateways.sh /tmp/gw-old target/release/examples/gateway static/static 1 12 4
#        MB=auto:bench-static benches/ab/two_gateways.sh GW GW static/static 1 12 4   # auto vs composite
#
# Starts nginx (benches/nginx/static.conf) and both gateways (ports 47201, 47202; each in its own
# directory, so each has its own SQLite file), warms both up, then runs `wrk -t1 -cCONNS --latency`
# against A and B alternately for ROUNDS rounds of SECS seconds, and prints per gateway the median
# of the rounds' p50 and p99, the mean req/s, and every round's p50. Run each pair twice with the
# order swapped: on a shared machine drift then reaches both alike. Needs nginx and wrk.
set -euo pipefail
A=$(realpath "$1"); B=$(realpath "$2"); M=$3; C=${4:-1}; R=${5:-10}; S=${6:-5}; shift 6
HERE=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /tmp/boo-ab.XXXX); mkdir -p "$W/tmp" "$W/a" "$W/b"
UP=$((47000 + RANDOM % 100))
sed -e "s#{{PREFIX}}#$W#g" -e "s#{{PORT}}#$UP#g" "$HERE/nginx/static.conf" > "$W/static.conf"
nginx -p "$W" -c "$W/static.conf" -g 'daemon off;' 2>/dev/null & NG=$!
cat > "$W/boocontrol.json" <<J
{"providers":[{"id":"static","kind":"llama-server","base_url":"http://127.0.0.1:$UP"}],
 "policies":[{"name":"auto:bench-static","candidates":["static/static"],"order":["priority"]}]}
J
MB=${MB:-$M}
for x in "a:$M" "b:$MB"; do
cat > "$W/post-${x%%:*}.lua" <<L
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"${x#*:}","messages":[{"role":"user","content":"Say hi."}],"max_tokens":4}'
L
done
(cd "$W/a" && RUST_LOG=warn exec "$A" --config "$W/boocontrol.json" --listen 127.0.0.1:47201 "$@" > "$W/a.log" 2>&1) & PA=$!
(cd "$W/b" && RUST_LOG=warn exec "$B" --config "$W/boocontrol.json" --listen 127.0.0.1:47202 "$@" > "$W/b.log" 2>&1) & PB=$!
trap 'kill $PA $PB $NG 2>/dev/null || true' EXIT
for p in 47201 47202; do for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$p/health" && break; sleep 0.1; done; done
lua() { if [ "$1" = 47201 ]; then echo "$W/post-a.lua"; else echo "$W/post-b.lua"; fi; }
for p in 47201 47202; do wrk -t1 -c"$C" -d2s -s "$(lua $p)" "http://127.0.0.1:$p/v1/chat/completions" > /dev/null; done
for _ in $(seq 1 "$R"); do
  for p in 47201 47202; do
    wrk -t1 -c"$C" -d"${S}s" --latency -s "$(lua $p)" "http://127.0.0.1:$p/v1/chat/completions" \
      | awk -v p=$p '/^ +50%/ {v50=$2} /^ +99%/ {v99=$2} /Requests\/sec/ {rps=$2} END {print p, v50, v99, rps}'
  done
done | awk '
function us(x) { if (x ~ /us$/) return x+0; if (x ~ /ms$/) return (x+0)*1000; return (x+0)*1e6 }
{ n[$1]++; a50[$1, n[$1]] = us($2); a99[$1, n[$1]] = us($3); r[$1] += $4 }
END { for (p in n) { m = n[p]; for (i = 1; i <= m; i++) s[i] = a50[p, i]; asort(s); t = "";
  for (i = 1; i <= m; i++) t = t " " s[i]; for (i = 1; i <= m; i++) q[i] = a99[p, i]; asort(q);
  printf "%s median-of-p50 %.1f µs  median-of-p99 %.1f µs  mean req/s %.0f  p50s:%s\n",
    (p == 47201 ? "A" : "B"), s[int((m + 1) / 2)], q[int((m + 1) / 2)], r[p] / m, t } }'
