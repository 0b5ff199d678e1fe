#!/usr/bin/env python3
"""Memory per cached user token: imports N users (default 100,000) through the admin API, then
calls each once, and prints the gateway's RSS (MiB) before, at its peak during the import, after
it, after the calls, and 12 s later (once jemalloc returned what the calls freed), with bytes per
token; then its peak over the next WATCH seconds (default 65: a maintenance round).

    cargo build --release && python3 scripts/users-memory.py [N [WATCH]]

The calls go to a user route whose path the sandbox does not serve (it answers 404 without
checking the token), so every user's token is attached and nothing is refreshed.
"""
import http.client, json, sys, threading, time

from gwproc import config_head, rss_mb, running

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
# Seconds to watch the RSS after it settled: one maintenance round at least.
WATCH = int(sys.argv[2]) if len(sys.argv) > 2 else 65
ADMIN_KEY = "users-memory-admin-key"


def config(sb_port, gw_port, admin_port, secret):
    return config_head(sb_port, gw_port, admin_port, secret, admin_key=ADMIN_KEY) + """[[routes]]
name = "user-probe"
path = "/memory/probe/"
token = "user"
"""


def main():
    with running(config) as g:
        peak = [0.0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb(g.pid))
                time.sleep(0.05)

        time.sleep(0.5)
        before = rss_mb(g.pid)
        print(f"before:        rss_mb={before:.1f}", flush=True)
        threading.Thread(target=sample, daemon=True).start()
        admin = http.client.HTTPConnection("127.0.0.1", g.admin_port, timeout=30)
        headers = {"x-admin-key": ADMIN_KEY, "content-type": "application/json"}
        t0 = time.time()
        for i in range(N):
            body = json.dumps({
                "access_token": f"act.{i:012d}{'a' * 28}",
                "refresh_token": f"rft.{i:012d}{'b' * 28}",
                "expires_in": 1296000,
                "refresh_expires_in": 2592000,
                "scope": "user_info,video.list.bytes",
            })
            admin.request("PUT", f"/admin/users/main/_000{i:032x}", body=body, headers=headers)
            r = admin.getresponse()
            r.read()
            if r.status != 200:
                sys.exit(f"import {i}: HTTP {r.status}")
        imported = rss_mb(g.pid)
        print(f"imported:      rss_mb={imported:.1f} peak_rss_mb={peak[0]:.1f} "
              f"bytes_per_token={(imported - before) * 1048576 / N:.0f} ({time.time() - t0:.1f} s)", flush=True)
        proxy = http.client.HTTPConnection("127.0.0.1", g.gw_port, timeout=30)
        for i in range(N):
            proxy.request("GET", f"/memory/probe/?open_id=_000{i:032x}")
            r = proxy.getresponse()
            r.read()
            if r.getheader("x-gateway-error"):
                sys.exit(f"call {i}: {r.getheader('x-gateway-error')}")
        called = rss_mb(g.pid)
        done.set()
        print(f"called once:   rss_mb={called:.1f} peak_rss_mb={peak[0]:.1f} "
              f"bytes_per_token={(called - before) * 1048576 / N:.0f}", flush=True)
        # jemalloc returns pages freed by the calls after its 10 s decay: the cache's own size.
        time.sleep(12)
        settled = rss_mb(g.pid)
        print(f"settled (12 s): rss_mb={settled:.1f} bytes_per_token={(settled - before) * 1048576 / N:.0f}", flush=True)
        # A maintenance round (every 60 s by default) must not raise it either.
        top, t0 = settled, time.time()
        while time.time() - t0 < WATCH:
            top = max(top, rss_mb(g.pid))
            time.sleep(0.05)
        print(f"watched ({WATCH} s): peak_rss_mb={top:.1f} rss_mb={rss_mb(g.pid):.1f}", flush=True)


if __name__ == "__main__":
    main()
