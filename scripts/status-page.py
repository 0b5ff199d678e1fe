#!/usr/bin/env python3
"""The status page over many users: imports N users (default 100,000; a third of them with
consent ending in 3 days, so inside the 7-day forecast) through the admin API, then times
GET /status (first page), a search by open_id, and the last page, 20 times each, printing the
median and the slowest in milliseconds.

    cargo build --release && python3 scripts/status-page.py [N]
"""
import http.client, json, statistics, sys, time

from gwproc import config_head, running

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
ADMIN_KEY = "status-page-admin-key"


def config(sb_port, gw_port, admin_port, secret):
    # No renewals left: a user's consent ends with their refresh_token, so the third imported
    # with 3 days left are in the 7-day forecast.
    return config_head(sb_port, gw_port, admin_port, secret, admin_key=ADMIN_KEY) + (
        "[tokens]\nmax_renewals = 0\nrenew_before_secs = 3600\n")


def main():
    with running(config) as g:
        admin = http.client.HTTPConnection("127.0.0.1", g.admin_port, timeout=60)
        headers = {"x-admin-key": ADMIN_KEY, "content-type": "application/json"}
        t0 = time.time()
        for i in range(N):
            body = json.dumps({
                "access_token": f"act.{i:012d}",
                "refresh_token": f"rft.{i:012d}",
                "expires_in": 1296000,
                "refresh_expires_in": 3 * 86400 if i % 3 == 0 else 2592000,
            })
            admin.request("PUT", f"/admin/users/main/_000{i:032x}", body=body, headers=headers)
            r = admin.getresponse()
            r.read()
            if r.status != 200:
                sys.exit(f"import {i}: HTTP {r.status}")
        print(f"imported {N} users in {time.time() - t0:.1f} s", flush=True)
        due = (N + 2) // 3
        last = (due + 49) // 50
        for label, path in [("first page", "/status"),
                            ("search", f"/status?q={(N // 2 // 3 * 3):032x}"),
                            ("last page", f"/status?page={last}")]:
            times = []
            for _ in range(20):
                t = time.perf_counter()
                admin.request("GET", path, headers=headers)
                r = admin.getresponse()
                page = r.read()
                times.append((time.perf_counter() - t) * 1000)
                if r.status != 200:
                    sys.exit(f"{path}: HTTP {r.status}")
            total = page.split(b'id="forecast-total">')[1].split(b"<")[0].decode()
            print(f"{label:10} median_ms={statistics.median(times):.1f} max_ms={max(times):.1f} "
                  f"bytes={len(page)} rows={page.count(b'<td><code>')} ({total})", flush=True)


if __name__ == "__main__":
    main()
