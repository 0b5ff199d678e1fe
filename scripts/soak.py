#!/usr/bin/env python3
"""Soak: steady load over a client route and a user route for MINUTES (default 10), with the app's
client_token revoked on the platform every 5 s (as a competing fetcher would) and one user's
access_token expired every 30 s. Prints calls, failures, token fetches, and the gateway's RSS and
open fds at the start, the middle and the end; exits 1 if any call failed.

    cargo build --release && python3 scripts/soak.py [--minutes 10] [--workers 6] [--users 20]
        [--revoke-every 5] [--revoke-jitter 0] [--expire-every 30] [--misrouted]

--revoke-every 4 --revoke-jitter 1 revokes at random 3 to 5 s; 0 never revokes. --misrouted adds
a route whose API rejects every token of its class (a user API configured as a client route) and
a worker calling it: its calls fail by design and are counted apart.

Everything runs on loopback: the sandbox and the gateway are started as processes of their own
and stopped at the end. A call succeeds when the gateway answers 200 and the platform's envelope
carries no error code; a failure is a gateway error (x-gateway-error), a platform error passed
through, or a broken connection.
"""
import argparse, http.client, json, random, re, sys, threading, time

from gwproc import config_head, fds, rss_mb, running
import urllib.parse

CALLER_KEY = "soak-caller-key"
ADMIN_KEY = "soak-admin-key"


def sha256(s):
    import hashlib
    return hashlib.sha256(s.encode()).hexdigest()


def get(port, path, headers=None, method="GET", body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict(r.getheaders()), data


def envelope_ok(data):
    try:
        v = json.loads(data)
    except ValueError:
        return False
    codes = [v.get("err_no"), v.get("error_code"), (v.get("data") or {}).get("error_code"), (v.get("extra") or {}).get("error_code")]
    return all(c in (None, 0, "0") for c in codes)


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = self.ok = self.gateway_errors = self.platform_errors = self.broken = 0
        self.codes = {}

    def add(self, outcome, code=None):
        with self.lock:
            self.calls += 1
            setattr(self, outcome, getattr(self, outcome) + 1)
            if code:
                self.codes[code] = self.codes.get(code, 0) + 1


def misrouted_worker(port, counts, stop):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while not stop.is_set():
        try:
            conn.request("GET", "/video/list/?open_id=x", headers={"x-gateway-key": CALLER_KEY})
            conn.getresponse().read()
            counts.add("ok")
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        time.sleep(0.01)


def worker(port, users, counts, stop):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"x-gateway-key": CALLER_KEY}
    n = 0
    while not stop.is_set():
        n += 1
        path = "/js/getticket/" if n % 2 else f"/api/douyin/v1/video/video_list/?open_id={random.choice(users)}&cursor=0&count=10"
        try:
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException):
            counts.add("broken")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            continue
        err = r.getheader("x-gateway-error")
        if err:
            counts.add("gateway_errors", err)
        elif r.status == 200 and envelope_ok(data):
            counts.add("ok")
        else:
            counts.add("platform_errors", f"HTTP {r.status} {data[:80]!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--revoke-every", type=float, default=5)
    ap.add_argument("--revoke-jitter", type=float, default=0)
    ap.add_argument("--expire-every", type=float, default=30)
    ap.add_argument("--misrouted", action="store_true")
    args = ap.parse_args()
    def config(sb_port, gw_port, admin_port, secret):
        head = config_head(
            sb_port, gw_port, admin_port, secret, anonymous=False, admin_key=ADMIN_KEY,
            app=f'redirect_uri = "http://127.0.0.1:{admin_port}/oauth/callback"\n'
            'scopes = ["user_info", "video.list.bytes"]',
        )
        return head + (f"""[[callers]]
name = "soak"
api_key_sha256 = "{sha256(CALLER_KEY)}"
[[routes]]
name = "ticket"
path = "/js/getticket/"
token = "client"
inject = "query"
[[routes]]
name = "video-list"
path = "/api/douyin/v1/video/video_list/"
token = "user"
""" + ("""[[routes]]
name = "misrouted"
path = "/video/list/"
token = "client"
inject = "query"
""" if args.misrouted else "") + """
# All the users authorize at the start, from one address: not a flood.
[oauth]
per_address_per_sec = 0
max_exchanges_per_sec = 1000
""")

    stop = threading.Event()
    with running(config) as g:
        sb_port, gw_port, admin_port, gw = g.sb_port, g.gw_port, g.admin_port, g.process
        try:
            users = []
            for _ in range(args.users):
                _, h, _ = get(admin_port, "/oauth/authorize?app=main")
                consent = urllib.parse.urlsplit(h["location"])
                _, h, _ = get(consent.port, consent.path + "?" + consent.query)
                back = urllib.parse.urlsplit(h["location"])
                _, _, page = get(back.port, back.path + "?" + back.query)
                users.append(re.search(rb"<code>(.*?)</code>", page).group(1).decode())
            counts = Counts()
            threads = [threading.Thread(target=worker, args=(gw_port, users, counts, stop)) for _ in range(args.workers)]
            misrouted = Counts()
            if args.misrouted:
                threads.append(threading.Thread(target=misrouted_worker, args=(gw_port, misrouted, stop)))
            for t in threads:
                t.start()
            start = time.time()
            end = start + args.minutes * 60
            reports = {start + 5: "start", start + args.minutes * 30: "middle"}
            gap = lambda: args.revoke_every + random.uniform(-args.revoke_jitter, args.revoke_jitter)
            next_revoke = start + gap() if args.revoke_every > 0 else float("inf")
            next_expire = start + args.expire_every if args.expire_every > 0 else float("inf")
            expired = 0

            def report(label):
                _, _, s = get(sb_port, "/sandbox/stats")
                s = json.loads(s)
                with counts.lock:
                    print(
                        f"{label:>6} t={time.time() - start:6.1f}s calls={counts.calls} ok={counts.ok} "
                        f"gateway_errors={counts.gateway_errors} platform_errors={counts.platform_errors} broken={counts.broken} "
                        f"client_token_fetches={s['client_token_calls']} user_refreshes={s['refresh_token_calls']} "
                        f"revocations={revocations} expiries={expired} rss_mb={rss_mb(gw.pid):.1f} fds={fds(gw.pid)}"
                        + (f" misrouted_calls={misrouted.calls}" if args.misrouted else ""),
                        flush=True,
                    )

            revocations = 0
            while time.time() < end:
                now = time.time()
                for at, label in list(reports.items()):
                    if now >= at:
                        report(label)
                        del reports[at]
                if now >= next_revoke:
                    get(sb_port, "/sandbox/revoke", {"content-type": "application/json"}, "POST",
                        json.dumps({"client_key": "awsandbox0000001"}))
                    revocations += 1
                    next_revoke += gap()
                if now >= next_expire:
                    get(sb_port, "/sandbox/revoke", {"content-type": "application/json"}, "POST",
                        json.dumps({"expire_user": users[expired % len(users)]}))
                    expired += 1
                    next_expire += args.expire_every
                time.sleep(0.05)
            stop.set()
            for t in threads:
                t.join()
            report("end")
            if counts.codes:
                print("failures by kind:", counts.codes)
            failed = counts.calls - counts.ok
            print(f"{counts.ok} of {counts.calls} calls succeeded; {failed} failed")
            return 1 if failed else 0
        finally:
            stop.set()


if __name__ == "__main__":
    sys.exit(main())
