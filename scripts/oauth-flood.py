#!/usr/bin/env python3
"""The authorization flow under a flood (issue #15, item 4): NOCODE `/oauth/authorize` →
`/oauth/callback?state=S` pairs with no code and MADEUP pairs with `&code=x`, all from 127.0.0.1,
while a real user from 127.0.0.2 walks authorize → consent → callback → first call every second.

    cargo build --release && python3 scripts/oauth-flood.py [NOCODE [MADEUP]]   # 1000000 100000
    python3 scripts/oauth-flood.py --per-address-off ...   # as if the flood came from everywhere

Runs the sandbox and a gateway (default `[oauth]` settings; `--per-address-off` sets
`per_address_per_sec = 0`, which is what an attacker with many addresses, or any client behind a
reverse proxy, sees) on loopback ports. The flood is raw HTTP/1.1, pipelined in batches on a few
keep-alive connections per process, in 3 processes. Prints, per 10 s and at the end: requests
sent and their statuses, code exchanges the platform saw (most in any one second), the user's
flows (all must succeed; the slowest), `/healthz` latency (polled every 0.2 s on a new
connection) and the gateway's RSS.
"""
import http.client, multiprocessing, re, socket, sys, threading, time, urllib.parse

from gwproc import config_head, rss_mb, running

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
NOCODE = int(ARGS[0]) if len(ARGS) > 0 else 1_000_000
MADEUP = int(ARGS[1]) if len(ARGS) > 1 else 100_000
PER_ADDRESS_OFF = "--per-address-off" in sys.argv
BATCH, CONNS = 200, 4
STATE = re.compile(rb"[?&]state=([A-Za-z0-9_-]+)")


def config(sb_port, gw_port, admin_port, secret):
    app = f'redirect_uri = "http://127.0.0.1:{admin_port}/oauth/callback"\nscopes = ["user_info", "video.list.bytes"]\n'
    oauth = "[oauth]\nper_address_per_sec = 0\n" if PER_ADDRESS_OFF else ""
    return config_head(sb_port, gw_port, admin_port, secret, app=app) + f"""
[[routes]]
name = "video-list"
path = "/api/douyin/v1/video/video_list/"
token = "user"

{oauth}"""


def read_responses(sock, buf, n):
    """Reads `n` HTTP/1.1 responses (each with a Content-Length) from `sock`; returns their
    (status, state-in-Location or None) and what is left of the buffer."""
    out = []
    while len(out) < n:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
            continue
        raw = bytes(buf[:end])
        head = raw.lower()
        m = re.search(rb"\r\ncontent-length: *(\d+)", head)
        length = int(m.group(1)) if m else 0
        if len(buf) < end + 4 + length:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
            continue
        m = STATE.search(raw) if head.startswith(b"http/1.1 302") else None
        out.append((int(head[9:12]), m.group(1).decode() if m else None))
        del buf[:end + 4 + length]
    return out, buf


def flood(admin_port, pairs, code, counts):
    """`pairs` authorize → callback pairs (callback with `code`), pipelined `BATCH` at a time on
    `CONNS` connections taken in turn. A callback whose authorize got no state reuses the last
    state seen (or a made-up one), as a script would."""
    conns = []
    for _ in range(CONNS):
        s = socket.create_connection(("127.0.0.1", admin_port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append([s, bytearray()])
    authorize = b"GET /oauth/authorize?app=main HTTP/1.1\r\nHost: a\r\n\r\n"
    last = "bm8tc3RhdGUteWV0"
    done, turn = 0, 0
    while done < pairs:
        n = min(BATCH, pairs - done)
        c = conns[turn % CONNS]
        turn += 1
        c[0].sendall(authorize * n)
        got, c[1] = read_responses(c[0], c[1], n)
        reqs = []
        for status, state in got:
            counts[f"authorize {status}"] = counts.get(f"authorize {status}", 0) + 1
            last = state or last
            reqs.append(f"GET /oauth/callback?state={last}{code} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        c[0].sendall(b"".join(reqs))
        got, c[1] = read_responses(c[0], c[1], n)
        for status, _ in got:
            counts[f"callback {status}"] = counts.get(f"callback {status}", 0) + 1
        done += n


def flood_process(index, admin_port, pairs, code, queue):
    counts = {}
    t = threading.Thread(target=flood, args=(admin_port, pairs, code, counts))
    t.start()
    while t.is_alive():
        t.join(5)
        queue.put((index, t.is_alive(), dict(counts)))


def get(port, path, source=None, host="127.0.0.1"):
    c = http.client.HTTPConnection(host, port, timeout=10, source_address=(source, 0) if source else None)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, r.getheader("location") or r.getheader("retry-after"), body


def browser_get(port, path, source, retries):
    """A GET as the user's browser makes it: a 429 page reloads itself after Retry-After."""
    while True:
        status, location, body = get(port, path, source)
        if status != 429 or retries[0] >= 10:
            return status, location, body
        retries[0] += 1
        time.sleep(int(location))


def user_flow(g):
    """A real user from 127.0.0.2: authorize → consent → callback → first call.
    (ok, seconds, why, reloads after a 429)."""
    t0, retries = time.monotonic(), [0]
    status, loc, _ = browser_get(g.admin_port, "/oauth/authorize?app=main", "127.0.0.2", retries)
    if status != 302:
        return False, time.monotonic() - t0, f"authorize {status}", retries[0]
    u = urllib.parse.urlsplit(loc)
    status, loc, _ = get(u.port, f"{u.path}?{u.query}")
    if status != 302:
        return False, time.monotonic() - t0, f"consent {status}", retries[0]
    u = urllib.parse.urlsplit(loc)
    status, _, body = browser_get(g.admin_port, f"{u.path}?{u.query}", "127.0.0.2", retries)
    if status != 200:
        return False, time.monotonic() - t0, f"callback {status}", retries[0]
    open_id = re.search(rb"<code>([^<]+)</code>", body).group(1).decode()
    status, _, body = get(g.gw_port, f"/api/douyin/v1/video/video_list/?open_id={open_id}&cursor=0&count=10",
                          "127.0.0.2")
    if status != 200 or b'"error_code":0' not in body:
        return False, time.monotonic() - t0, f"first call {status}", retries[0]
    return True, time.monotonic() - t0, "", retries[0]


def exchanges(g):
    _, _, body = get(g.sb_port, "/sandbox/stats")
    return int(re.search(rb'"access_token_calls":(\d+)', body).group(1))


def main():
    with running(config) as g:
        rss0 = rss_mb(g.pid)
        stop = threading.Event()
        users, health, per_sec = [], [], []

        def users_loop():
            while not stop.is_set():
                t = time.monotonic()
                users.append(user_flow(g))
                stop.wait(max(0, t + 1 - time.monotonic()))

        def health_loop():
            while not stop.is_set():
                t = time.monotonic()
                status, _, _ = get(g.admin_port, "/healthz")
                health.append((time.monotonic() - t, status))
                stop.wait(0.2)

        def exchange_loop():
            last = exchanges(g)
            while not stop.wait(1):
                now = exchanges(g)
                per_sec.append(now - last)
                last = now

        threads = [threading.Thread(target=f) for f in (users_loop, health_loop, exchange_loop)]
        for t in threads:
            t.start()
        queue = multiprocessing.Queue()
        jobs = [(NOCODE - NOCODE // 2, ""), (NOCODE // 2, ""), (MADEUP, "&code=x")]
        procs = [multiprocessing.Process(target=flood_process, args=(i, g.admin_port, n, code, queue))
                 for i, (n, code) in enumerate(jobs)]
        start = time.monotonic()
        for p in procs:
            p.start()
        # Each process reports its counts every 5 s, and once more when it is done.
        latest, running_procs, next_report = [{} for _ in procs], len(procs), start + 10
        while running_procs:
            index, alive, counts = queue.get()
            latest[index] = counts
            running_procs -= not alive
            if time.monotonic() >= next_report:
                next_report += 10
                print(f"{time.monotonic() - start:6.0f}s requests={sum(sum(c.values()) for c in latest)} "
                      f"users={len(users)} ok={sum(u[0] for u in users)} "
                      f"exchanges/s max={max(per_sec, default=0)} "
                      f"healthz max={max((h[0] for h in health), default=0) * 1000:.1f} ms "
                      f"rss={rss_mb(g.pid):.1f} MB", flush=True)
        for p in procs:
            p.join()
        elapsed = time.monotonic() - start
        stop.set()
        for t in threads:
            t.join()
        totals = {}
        for counts in latest:
            for k, n in counts.items():
                totals[k] = totals.get(k, 0) + n
        sent = sum(totals.values())
        total_exchanges = exchanges(g)
        lat = sorted(h[0] for h in health)
        flows = [u[1] for u in users if u[0]]
        first_try = [u[1] for u in users if u[0] and u[3] == 0]
        failed = [u for u in users if not u[0]]
        print(f"flood: {sent} requests in {elapsed:.1f} s ({sent / elapsed:.0f}/s), per_address_off={PER_ADDRESS_OFF}")
        for k in sorted(totals):
            print(f"  {k}: {totals[k]}")
        print(f"platform code exchanges: {total_exchanges} (users' included), most in one second: {max(per_sec, default=0)}, "
              f"mean {total_exchanges / elapsed:.1f}/s")
        print(f"user flows: {len(users)}, succeeded {len(flows)} ({len(first_try)} at the first try, slowest of "
              f"those {max(first_try, default=0) * 1000:.0f} ms, median "
              f"{sorted(first_try)[len(first_try) // 2] * 1000 if first_try else 0:.0f} ms; "
              f"{len(flows) - len(first_try)} after a 429 page reloaded itself, slowest {max(flows, default=0):.1f} s); "
              f"failures: {sorted(set(u[2] for u in failed))} ({len(failed)})")
        print(f"/healthz: {len(lat)} probes, max {lat[-1] * 1000:.1f} ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms, "
              f"non-200: {sum(1 for h in health if h[1] != 200)}")
        print(f"gateway RSS: {rss0:.1f} MB before, {rss_mb(g.pid):.1f} MB after")


if __name__ == "__main__":
    main()
