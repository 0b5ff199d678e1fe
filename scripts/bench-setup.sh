# Sourced by scripts/wrk-latency.sh and scripts/syscalls-per-call.sh: the upstream and the gateway
# of ../shared/bench/vs-nginx.sh's client mode, on free loopback ports, in a work folder removed
# (and every process in $W/pids killed) on exit.
#
#   BIN=… [UPCPU="taskset -c 1"] [GWCPU="taskset -c 0"] [LEAN=false] [GW_SERVER_EXTRA=…]
#   . "$(dirname "$0")/bench-setup.sh"
#   bench_upstream     # nginx answering a video list and the client_token endpoint on $UP
#   bench_gateway      # the gateway on $GW (admin $AD) in front of it, a client-token route; $GWPID
W=$(mktemp -d); trap 'for p in $(cat $W/pids 2>/dev/null); do kill $p 2>/dev/null || true; done; rm -rf $W' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
UP=$(port); GW=$(port); AD=$(port)
BODY='{"data":{"list":[{"item_id":"@9VwL3","title":"hello"}],"error_code":0,"description":""},"extra":{"error_code":0,"description":"","logid":"2024","now":1700000000}}'
TOK='{"data":{"access_token":"clt.bench0123456789","description":"","error_code":0,"expires_in":7200},"message":"success"}'
# The path the benches call: a client-token route answered with $BODY.
BENCH_PATH=/api/douyin/v1/video/video_list/

bench_upstream() {
  cat >$W/up.conf <<C
worker_processes 1; pid $W/up.pid; error_log $W/up.err; daemon on;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:$UP;
    location = /oauth/client_token/ { default_type application/json; return 200 '$TOK'; }
    location / { default_type application/json; return 200 '$BODY'; } } }
C
  ${UPCPU:-} nginx -c $W/up.conf; sleep 0.3; cat $W/up.pid >>$W/pids
}

bench_gateway() {
  cat >$W/gw.toml <<C
[server]
listen = "127.0.0.1:$GW"
admin_listen = "127.0.0.1:$AD"
allow_anonymous = true
${GW_SERVER_EXTRA:-}
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
  BENCH_SECRET=s3cret ${GWCPU:-} "$BIN" serve --config $W/gw.toml >$W/gw.log 2>&1 </dev/null &
  GWPID=$!; echo "$GWPID" >>$W/pids
  for i in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:$AD/healthz && break; sleep 0.1; done
}
