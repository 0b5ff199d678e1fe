#!/usr/bin/env python3
"""SQLite restart with N users (default 100,000): imports them through the admin API into an
encrypted SQLite store, restarts the gateway twice, and prints how long each start took until
/readyz answered 200, and its RSS (MiB) then and 12 s later.

    cargo build --release && python3 scripts/sqlite-restart.py [N]
"""
import http.client, json, os, subprocess, sys, tempfile, time, base64
from gwproc import config_head, free_port, wait_port, rss_mb, BIN
N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
ADMIN_KEY = "restart-admin"
work = tempfile.mkdtemp()
secret = os.path.join(work, "secret"); open(secret, "w").write("sandbox-secret")
key = base64.b64encode(os.urandom(32)).decode()
sb_port, gw_port, ad_port = free_port(), free_port(), free_port()
cfg = config_head(sb_port, gw_port, ad_port, secret, admin_key=ADMIN_KEY).replace(
    'kind = "memory"', f'kind = "sqlite"\npath = "{work}/tokens.db"\nencryption_key_env = "RESTART_KEY"') + \
    '[[routes]]\nname = "u"\npath = "/u/"\ntoken = "user"\n'
open(os.path.join(work, "gw.toml"), "w").write(cfg)
env = dict(os.environ, RESTART_KEY=key)
sb = subprocess.Popen([BIN, "sandbox", "--listen", f"127.0.0.1:{sb_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def start():
    t0 = time.time()
    p = subprocess.Popen([BIN, "serve", "--config", os.path.join(work, "gw.toml")], env=env, stderr=subprocess.DEVNULL)
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", ad_port, timeout=1); c.request("GET", "/readyz")
            if c.getresponse().status == 200: break
        except OSError: pass
        time.sleep(0.01)
    return p, time.time() - t0
p, _ = start()
admin = http.client.HTTPConnection("127.0.0.1", ad_port, timeout=30)
h = {"x-admin-key": ADMIN_KEY, "content-type": "application/json"}
for i in range(N):
    body = json.dumps({"access_token": f"act.{i:012d}{'a'*28}", "refresh_token": f"rft.{i:012d}{'b'*28}",
                       "expires_in": 1296000, "refresh_expires_in": 2592000, "scope": "user_info"})
    admin.request("PUT", f"/admin/users/main/_000{i:032x}", body=body, headers=h); r = admin.getresponse(); r.read()
    assert r.status == 200, r.status
p.terminate(); p.wait()
for _ in range(2):
    p, t = start()
    ready_rss = rss_mb(p.pid)
    time.sleep(12)
    print(f"sqlite restart with {N} users: ready in {t:.2f} s, rss_mb={ready_rss:.1f} when ready, "
          f"{rss_mb(p.pid):.1f} 12 s later", flush=True)
    p.terminate(); p.wait()
sb.terminate()
