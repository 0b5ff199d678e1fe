#!/usr/bin/env bash
# The gateway's latency under wrk (client mode, the same upstream as ../shared/bench/vs-nginx.sh),
# with the gateway's own request and upstream histograms, to tell a wait inside it from one
# outside (scheduling). Used to find the lean client's p99 tail (docs/performance.md).
#
#   [CONNS=10] [SECS=8] [LEAN=false] [PIN=1] scripts/wrk-latency.sh target/release/douyin-gateway
#
# PIN=1: the gateway on core 0, wrk and the upstream on core 1 (taskset). LEAN=false: hyper's client.
set -euo pipefail
BIN=$1; SECS=${SECS:-8}; CONNS=${CONNS:-10}
GWCPU=""; OTHERCPU=""
if [ -n "${PIN:-}" ]; then GWCPU="taskset -c 0"; OTHERCPU="taskset -c 1"; fi
W=$(mktemp -d); trap 'for p in $(cat $W/pids 2>/dev/null); do kill $p 2>/dev/null || true; done' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
UP=$(port); GW=$(port); AD=$(port)
BODY='{"data":{"list":[{"item_id":"@9VwL3","title":"hello"}],"error_code":0,"description":""},"extra":{"error_code":0,"description":"","logid":"2024","now":1700000000}}'
TOK='{"data":{"access_token":"clt.bench0123456789","description":"","error_code":0,"expires_in":7200},"message":"success"}'
cat >$W/up.conf <<C
worker_processes 1; pid $W/up.pid; error_log $W/up.err; daemon on;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:$UP;
    location = /oauth/client_token/ { default_type application/json; return 200 '$TOK'; }
    location / { default_type application/json; return 200 '$BODY'; } } }
C
$OTHERCPU nginx -c $W/up.conf; sleep 0.3; echo "$(cat $W/up.pid)" > $W/pids
cat >$W/gw.toml <<C
[server]
listen = "127.0.0.1:$GW"
admin_listen = "127.0.0.1:$AD"
allow_anonymous = true
[upstream]
base_url = "http://127.0.0.1:$UP"
lean_http1 = ${LEAN:-true}
[store]
kind = "memory"
[[apps]]
name = "bench"
client_key = "awbench"
client_secret_env = "BENCH_SECRET"
[[routes]]
name = "all"
path = "/*"
token = "client"
inject = "header"
C
BENCH_SECRET=s3cret $GWCPU "$BIN" serve --config $W/gw.toml >$W/gw.log 2>&1 &
GWPID=$!; echo "$GWPID" >>$W/pids
for i in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:$AD/healthz && break; sleep 0.1; done
U=http://127.0.0.1:$GW/api/douyin/v1/video/video_list/
wrk -t1 -c50 -d2s $U >/dev/null
$OTHERCPU wrk -t1 -c$CONNS --latency -d${SECS}s $U > $W/wrk.out
grep -A4 "Latency Distribution" $W/wrk.out; grep Requests/sec $W/wrk.out
echo "the gateway's own histograms (seconds: calls at or under):"
curl -s http://127.0.0.1:$AD/metrics | grep -E 'douyin_gateway_(request|upstream)_duration_seconds_bucket\{route="all"' \
  | grep -E 'le="(0.0005|0.001|0.0025|0.005|\+Inf)"'
