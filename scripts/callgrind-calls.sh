#!/bin/bash
# usage: [UPSTREAM_TLS=1] [LEAN=false] scripts/callgrind-calls.sh GATEWAY_BINARY LABEL [CALLS]
# Instructions per proxied call, counted by callgrind (steady on a shared machine, unlike time), and
# by function with scripts/callgrind-top.py on the dump it names:
# one keep-alive caller connection, worker_threads = 1, access log off; CALLS (2000) calls counted
# after a 300-call warm-up. The upstream: the sandbox over plain HTTP, a client_token route; with
# LEAN=false hyper's client instead of the lean one (the default); with
# UPSTREAM_TLS=1 a second gateway serving HTTPS (ALPN h2, a certificate made here with openssl) in
# front of the sandbox, a token-less route. Ports 18181-18191. Build the gateway with its own code
# optimised, without a release build: CARGO_PROFILE_DEV_OPT_LEVEL=2 cargo build --bin douyin-gateway
set -e
BIN=$1; LABEL=$2; N=${3:-2000}
D=${TMPDIR:-/tmp}/callgrind-calls/$LABEL; rm -rf $D; mkdir -p $D
echo -n sandbox-secret > $D/secret
$BIN sandbox --listen 127.0.0.1:18181 > $D/sandbox.log 2>&1 &
PIDS=$!
app="[store]
kind = \"memory\"
[[apps]]
name = \"main\"
client_key = \"awsandbox0000001\"
client_secret_file = \"$D/secret\""
if [ -n "$UPSTREAM_TLS" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $D/key.pem \
    -out $D/cert.pem -days 2 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
  cat > $D/front.toml <<CFG
[server]
listen = "127.0.0.1:18182"
admin_listen = "127.0.0.1:18183"
allow_anonymous = true
[server.tls]
cert_path = "$D/cert.pem"
key_path = "$D/key.pem"
[upstream]
base_url = "http://127.0.0.1:18181"
$app
[[routes]]
name = "pass"
path = "/*"
token = "none"
CFG
  RUST_LOG=warn $BIN serve --config $D/front.toml > $D/front.log 2>&1 &
  PIDS="$PIDS $!"
  UPSTREAM="base_url = \"https://127.0.0.1:18182\"
ca_file = \"$D/cert.pem\""
  ROUTE="name = \"stats\"
path = \"/sandbox/stats\"
token = \"none\""
  URL=http://127.0.0.1:18190/sandbox/stats
else
  UPSTREAM="base_url = \"http://127.0.0.1:18181\"
lean_http1 = ${LEAN:-true}"
  ROUTE="name = \"ticket\"
path = \"/js/getticket/\"
token = \"client\""
  URL=http://127.0.0.1:18190/js/getticket/
fi
cat > $D/config.toml <<CFG
[server]
listen = "127.0.0.1:18190"
admin_listen = "127.0.0.1:18191"
allow_anonymous = true
worker_threads = 1
[upstream]
$UPSTREAM
$app
[[routes]]
$ROUTE
CFG
RUST_LOG=info,access=off valgrind --tool=callgrind --compress-strings=no --compress-pos=no --callgrind-out-file=$D/cg.%p.out $BIN serve --config $D/config.toml > $D/gw.log 2>&1 &
GW=$!
for i in $(seq 1 120); do curl -s -o /dev/null $URL && break; sleep 1; done
URLS=$(for i in $(seq 1 300); do echo -n "-o /dev/null $URL "; done)
curl -s $URLS > /dev/null
callgrind_control -z $GW > /dev/null
URLS=$(for i in $(seq 1 $N); do echo -n "-o /dev/null $URL "; done)
curl -s -w "%{http_code}\n" $URLS > $D/codes.txt 2>&1 || true
callgrind_control -d $GW > /dev/null
sleep 2
kill $GW $PIDS; wait $GW 2>/dev/null || true
F=$(ls -t $D/cg.*.out.* | head -1)
echo "dump: $F; answers by status:"
sort $D/codes.txt | uniq -c | head -3
TOTAL=$(callgrind_annotate $F 2>/dev/null | grep -m1 "PROGRAM TOTALS" | awk '{gsub(",","",$1); print $1}')
echo "$LABEL: total Ir over $N calls = $TOTAL; per call = $((TOTAL / N))"
