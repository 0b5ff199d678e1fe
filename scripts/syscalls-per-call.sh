#!/usr/bin/env bash
# System calls and context switches per request, the gateway against nginx (client mode, nginx with
# its buffered access log), counted by `perf stat` under wrk: counts, steady on a busy machine.
#
#   cargo build --release && scripts/syscalls-per-call.sh [path/to/douyin-gateway]
#
# Env: SECS (5), CONNS (50), GW_SERVER_EXTRA (lines for the gateway's [server] table), LEAN=false
# (hyper's client), STRACE=1 (also a `strace -c` summary of the gateway). Needs nginx, wrk and
# perf. The upstream and the gateway are set up by scripts/bench-setup.sh.
set -euo pipefail
BIN=${1:-target/release/douyin-gateway}
SECS=${SECS:-5}; CONNS=${CONNS:-50}
. "$(dirname "$0")/bench-setup.sh"
NX=$(port)
bench_upstream
cat >$W/nx.conf <<EOF
worker_processes 1; pid $W/nx.pid; error_log $W/nx.err; daemon on;
events { worker_connections 4096; }
http { access_log $W/nx.access combined buffer=64k flush=1s; keepalive_requests 10000000;
  upstream up { server 127.0.0.1:$UP; keepalive 128; }
  server { listen 127.0.0.1:$NX;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header access-token "clt.bench0123456789"; } } }
EOF
nginx -c $W/nx.conf; sleep 0.3; cat $W/nx.pid >>$W/pids
bench_gateway
P=$BENCH_PATH
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
