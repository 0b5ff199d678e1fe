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
UPCPU=$OTHERCPU
. "$(dirname "$0")/bench-setup.sh"
bench_upstream
bench_gateway
U=http://127.0.0.1:$GW$BENCH_PATH
wrk -t1 -c50 -d2s $U >/dev/null
$OTHERCPU wrk -t1 -c$CONNS --latency -d${SECS}s $U > $W/wrk.out
grep -A4 "Latency Distribution" $W/wrk.out; grep Requests/sec $W/wrk.out
echo "the gateway's own histograms (seconds: calls at or under):"
curl -s http://127.0.0.1:$AD/metrics | grep -E 'douyin_gateway_(request|upstream)_duration_seconds_bucket\{route="all"' \
  | grep -E 'le="(0.0005|0.001|0.0025|0.005|\+Inf)"'
