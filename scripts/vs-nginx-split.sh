#!/usr/bin/env bash
# ../shared/bench/vs-nginx.sh as it is, with each proxy's CPU per call also split into user and
# system time (user_us, sys_us, and their ratios on the last line): where the gateway's extra CPU
# goes. Same arguments and environment as that script; LEAN=false (or true) also sets the
# gateway's `upstream.lean_http1` (its own HTTP/1.1 client, on by default).
#
#   NGINX_ACCESS_LOG=1 scripts/vs-nginx-split.sh target/release/douyin-gateway client
set -euo pipefail
SRC=${VS_NGINX:-$(dirname "$0")/../../shared/bench/vs-nginx.sh}
[ -f "$SRC" ] || { echo "no $SRC (set VS_NGINX)"; exit 2; }
T=$(mktemp); trap 'rm -f $T' EXIT
python3 - "$SRC" "$T" <<'PY'
import os, sys
s = open(sys.argv[1]).read()
edits = [
    ('local t=0 p tp f;', 'local t=0 u=0 p tp f;'),
    ('t=$((t+${12}+${13}));', 't=$((t+${12}+${13})); u=$((u+${12}));'),
    ('done; done; echo $t; }', 'done; done; echo $t $u; }'),
    ('name,c0,c1,tck=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),int(sys.argv[4])',
     'name,tck=sys.argv[1],int(sys.argv[4]); (c0,u0),(c1,u1)=[map(int,a.split()) for a in sys.argv[2:4]]'),
    ('cpu_us_per_req={(c1-c0)/tck*1e6/max(n,1):.1f} non2xx',
     'cpu_us_per_req={(c1-c0)/tck*1e6/max(n,1):.1f} user_us={(u1-u0)/tck*1e6/max(n,1):.1f} '
     'sys_us={((c1-c0)-(u1-u0))/tck*1e6/max(n,1):.1f} non2xx'),
    ('''f"p99={g['p99_ms']/x['p99_ms']:.2f} gateway_non2xx''',
     '''f"p99={g['p99_ms']/x['p99_ms']:.2f} user={g['user_us']/x['user_us']:.2f} sys={g['sys_us']/x['sys_us']:.2f} gateway_non2xx'''),
]
lean = os.environ.get("LEAN")
if lean not in (None, "true", "false"):
    sys.exit(f"LEAN must be true or false, not {lean!r}")
if lean is not None:
    edits.append(('base_url = "$SCHEME://127.0.0.1:$UP"\n',
                  'base_url = "$SCHEME://127.0.0.1:$UP"\nlean_http1 = ' + lean + '\n'))
for old, new in edits:
    if s.count(old) != 1:
        sys.exit(f"vs-nginx.sh changed: cannot find {old!r}")
    s = s.replace(old, new)
open(sys.argv[2], "w").write(s)
PY
exec bash "$T" "$@"
