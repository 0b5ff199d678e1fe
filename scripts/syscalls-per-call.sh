#!/usr/bin/env bash
# System calls and context switches per request, the gateway against nginx (client mode, nginx with
# its buffered access log), counted by `perf stat` under wrk: counts, steady on a busy machine.
#
#   cargo build --release && scripts/syscalls-per-call.sh [path/to/douyin-gateway]
#
# Env: SECS (5), CONNS (50), GW_SERVER_EXTRA (lines for the gateway's [server] table), STRACE=1
# (also a `strace -c` summary of the gateway). Needs nginx, wrk and perf.
set -euo pipefail
BIN=${1:-target/release/douyin-gateway}
SECS=${SECS:-5}; CONNS=${CONNS:-50}
W=$(mktemp -d); trap 'for p in $(cat $W/pids 2>/dev/null); do kill $p 2>/dev/null || true; done; rm -rf $W' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
UP=$(port); NX=$(port); GW=$(port); AD=$(port)
BODY='{"data":{"list":[{"item_id":"@9VwL3","title":"hello"}],"error_code":0,"description":""},"extra":{"error_code":0,"description":"","logid":"2024","now":1700000000}}'
TOK='{"data":{"access_token":"clt.bench0123456789","description":"","error_code":0,"expires_in":7200},"message":"success"}'
cat >$W/up.conf <<EOF
worker_processes 1; pid $W/up.pid; error_log $W/up.err; daemon on;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:$UP;
    location = /oauth/client_token/ { default_type application/json; return 200 '$TOK'; }
    location / { default_type application/json; return 200 '$BODY'; } } }
EOF
cat >$W/nx.conf <<EOF
worker_processes 1; pid $W/nx.pid; error_log $W/nx.err; daemon on;
events { worker_connections 4096; }
http { access_log $W/nx.access combined buffer=64k flush=1s; keepalive_requests 10000000;
  upstream up { server 127.0.0.1:$UP; keepalive 128; }
  server { listen 127.0.0.1:$NX;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header access-token "clt.bench0123456789"; } } }
EOF
nginx -c $W/up.conf; nginx -c $W/nx.conf; sleep 0.3
echo "$(cat $W/up.pid) $(cat $W/nx.pid)" >$W/pids
cat >$W/gw.toml <<EOF
[server]
listen = "127.0.0.1:$GW"
admin_listen = "127.0.0.1:$AD"
allow_anonymous = true
${GW_SERVER_EXTRA:-}
[upstream]
base_url = "http://127.0.0.1:$UP"
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
EOF
BENCH_SECRET=s3cret "$BIN" serve --config $W/gw.toml >$W/gw.log 2>&1 </dev/null &
GWPID=$!; echo "$GWPID" >>$W/pids
for i in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:$AD/healthz && break; sleep 0.1; done
P=/api/douyin/v1/video/video_list/
NXW=$(pgrep -P "$(cat $W/nx.pid)")
wrk -t1 -c$CONNS -d2s "http://127.0.0.1:$GW$P" >/dev/null; wrk -t1 -c$CONNS -d2s "http://127.0.0.1:$NX$P" >/dev/null
for who in gateway nginx; do
  if [ $who = gateway ]; then pid=$GWPID; port=$GW; else pid=$NXW; port=$NX; fi
  perf stat -e raw_syscalls:sys_enter,context-switches,cpu-migrations -p $pid -o $W/$who.perf -- sleep $SECS & PERF=$!
  out=$(wrk -t1 -c$CONNS -d${SECS}s "http://127.0.0.1:$port$P")
  wait $PERF
  n=$(echo "$out" | grep -oE '[0-9]+ requests in' | cut -d' ' -f1)
  python3 - "$who" "$n" $W/$who.perf <<'EOF'
import sys,re
who,n,f=sys.argv[1],int(sys.argv[2]),open(sys.argv[3]).read()
vals={}
for m in re.finditer(r"^\s*([\d,]+)\s+(\S+)",f,re.M):
    vals[m.group(2)]=int(m.group(1).replace(",",""))
print(who, "requests", n, " ".join(f"{k}/req={v/n:.2f}" for k,v in vals.items()))
EOF
done
if [ -n "${STRACE:-}" ]; then
  timeout 4 strace -c -f -p $GWPID -o $W/st.txt & sleep 0.2
  wrk -t1 -c$CONNS -d3s "http://127.0.0.1:$GW$P" | grep requests; sleep 1.5; head -30 $W/st.txt
fi
