#!/bin/bash
# usage: scripts/callgrind-calls.sh GATEWAY_BINARY LABEL [CALLS]
# Instructions per proxied call, counted by callgrind (steady on a shared machine, unlike time):
# a client_token route, the sandbox as a plain-HTTP upstream (ports 18181, 18190-18191), one
# keep-alive caller connection, worker_threads = 1, access log off; CALLS (2000) calls counted
# after a 300-call warm-up. Build the gateway with its own code optimised, without a release
# build: CARGO_PROFILE_DEV_OPT_LEVEL=2 cargo build --bin douyin-gateway
set -e
BIN=$1; LABEL=$2; N=${3:-2000}
D=${TMPDIR:-/tmp}/callgrind-calls/$LABEL; rm -rf $D; mkdir -p $D
echo -n sandbox-secret > $D/secret
$BIN sandbox --listen 127.0.0.1:18181 > $D/sandbox.log 2>&1 &
SB=$!
cat > $D/config.toml <<CFG
[server]
listen = "127.0.0.1:18190"
admin_listen = "127.0.0.1:18191"
allow_anonymous = true
worker_threads = 1
[upstream]
base_url = "http://127.0.0.1:18181"
[store]
kind = "memory"
[[apps]]
name = "main"
client_key = "awsandbox0000001"
client_secret_file = "$D/secret"
[[routes]]
name = "ticket"
path = "/js/getticket/"
token = "client"
CFG
RUST_LOG=info,access=off valgrind --tool=callgrind --callgrind-out-file=$D/cg.%p.out $BIN serve --config $D/config.toml > $D/gw.log 2>&1 &
GW=$!
for i in $(seq 1 120); do curl -s -o /dev/null http://127.0.0.1:18190/js/getticket/ && break; sleep 1; done
URLS=$(for i in $(seq 1 300); do echo -n "-o /dev/null http://127.0.0.1:18190/js/getticket/ "; done)
curl -s $URLS > /dev/null
callgrind_control -z $GW > /dev/null
URLS=$(for i in $(seq 1 $N); do echo -n "-o /dev/null http://127.0.0.1:18190/js/getticket/ "; done)
curl -s -w "%{http_code}\n" $URLS > $D/codes.txt 2>&1 || true
callgrind_control -d $GW > /dev/null
sleep 2
kill $GW $SB; wait $GW 2>/dev/null || true
F=$(ls -t $D/cg.*.out.* 2>/dev/null | head -1)
[ -z "$F" ] && F=$(ls -t $D/cg.*.out* | head -1)
echo "dump: $F"
sort $D/codes.txt | uniq -c | head -3
TOTAL=$(callgrind_annotate $F 2>/dev/null | grep -m1 "PROGRAM TOTALS" | awk '{gsub(",","",$1); print $1}')
echo "$LABEL: total Ir over $N calls = $TOTAL; per call = $((TOTAL / N))"
