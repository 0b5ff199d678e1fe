#!/usr/bin/env python3
"""What a stranger without a key can make a release gateway hold (issue #15, items 1 to 3).

    cargo build --release
    python3 scripts/abuse-load.py memory [N]        # N unfinished heads at the 32 KiB limit (3000)
    python3 scripts/abuse-load.py admin [SECS]      # slow heads + stalled webhook bodies vs /healthz (240)
    python3 scripts/abuse-load.py admin-open [SECS] # the same with max_connections_per_ip = 0
    python3 scripts/abuse-load.py public [SECS]     # the same against public_listen vs OAuth callbacks (240)
    python3 scripts/abuse-load.py fair [SECS]       # 1,100 dripping connections under ulimit -n 1024 (40)

Every scenario runs the sandbox and a gateway on loopback ports, attacks from 127.0.0.1 and
measures what a real user on 127.0.0.2 gets; it stops both at the end and prints its figures.
`--bin PATH` measures another build (main's, for a before/after).
"""
import errno, json, os, resource, select, socket, sys, threading, time, urllib.parse

from gwproc import config_head, fds, rss_mb, running
import gwproc

ATTACKER, USER = "127.0.0.1", "127.0.0.2"


def connect(port, src=ATTACKER, blocking=True):
    s = socket.socket()
    s.bind((src, 0))
    if blocking:
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
    else:
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
    return s


def request(port, raw, src=USER, timeout=5.0):
    """One request on a new connection from `src`: (status or 0, seconds, body)."""
    t0 = time.perf_counter()
    try:
        s = connect(port, src)
        s.settimeout(timeout)
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            if _:
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v)
                if len(body) >= length:
                    break
        s.close()
        return int(data[9:12] or 0), time.perf_counter() - t0, data
    except (OSError, ValueError):
        return 0, time.perf_counter() - t0, b""


def summary(name, results, within):
    lat = sorted(r[1] for r in results)
    ok = [r for r in results if r[0] and r[0] < 500 and r[1] <= within]
    pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p / 100))] * 1000 if lat else 0
    print(f"{name}: {len(ok)}/{len(results)} answered within {within * 1000:.0f} ms "
          f"({100 * len(ok) / max(1, len(results)):.1f}%), p50={pct(50):.1f} ms p99={pct(99):.1f} ms "
          f"max={pct(100):.1f} ms, statuses={sorted(set(r[0] for r in results))}")


class Holder(threading.Thread):
    """Keeps `n` connections from ATTACKER open, each having sent `first`, dripping `drip` (one
    byte a second) if given, and reopens those the gateway closes, until stopped."""

    def __init__(self, port, n, first, drip=None):
        super().__init__(daemon=True)
        self.port, self.n, self.first, self.drip = port, n, first, drip
        self.socks, self.stop, self.reopened = {}, False, 0

    def open_one(self):
        try:
            s = connect(self.port, blocking=False)
        except OSError:
            return
        self.socks[s] = 0

    def drop(self, s):
        self.socks.pop(s, None)
        s.close()

    def run(self):
        for _ in range(self.n):
            self.open_one()
        last_drip = time.time()
        while not self.stop:
            # Sockets connected: send their first bytes; sockets the gateway closed: reopen.
            poll = select.poll()
            by_fd = {}
            for s, sent in self.socks.items():
                by_fd[s.fileno()] = s
                poll.register(s, select.POLLIN | (0 if sent else select.POLLOUT))
            for fd, ev in poll.poll(200):
                s = by_fd[fd]
                if ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    self.drop(s)
                    continue
                if ev & select.POLLIN:
                    try:
                        if s.recv(65536):
                            continue
                    except OSError:
                        pass
                    self.drop(s)
                    continue
                if ev & select.POLLOUT and self.socks.get(s) == 0:
                    try:
                        s.send(self.first)
                        self.socks[s] = 1
                    except OSError:
                        self.drop(s)
            if self.drip and time.time() - last_drip >= 1:
                last_drip = time.time()
                for s, state in list(self.socks.items()):
                    if state:
                        try:
                            s.send(self.drip)
                        except OSError:
                            self.drop(s)
            # Reopen at most a tenth of the pool per round: an attacker reconnecting when cut.
            for _ in range(min(self.n - len(self.socks), max(1, self.n // 10))):
                self.open_one()
                self.reopened += 1
        for s in self.socks:
            s.close()


def base_config(server_extra="", app=""):
    def config(sb, gw, admin, secret):
        c = config_head(sb, gw, admin, secret, app=app)
        c = c.replace("[upstream]", server_extra + "\n[upstream]", 1)
        return c + '[[routes]]\nname = "ticket"\npath = "/js/getticket/"\ntoken = "client"\n'
    return config


def memory(n):
    """n connections each holding an unfinished head of max_header_bytes (32 KiB)."""
    head = b"GET /js/getticket/ HTTP/1.1\r\nHost: g\r\nX-Pad: " + b"a" * (32 * 1024 - 40)
    for label, extra in [("max_connections_per_ip = 0 (worst case: every head from its own address)",
                          "max_connections_per_ip = 0\nheader_read_timeout_ms = 120000"),
                         ("defaults (one address)", "header_read_timeout_ms = 120000")]:
        with running(base_config(extra)) as g:
            r = request(g.gw_port, b"GET /js/getticket/ HTTP/1.1\r\nHost: g\r\n\r\n")
            time.sleep(2)
            idle = rss_mb(g.pid)
            print(f"\n{label}\nidle: rss_mb={idle:.1f} fds={fds(g.pid)} (first call {r[0]})")
            conns = []
            for _ in range(n):
                try:
                    s = connect(g.gw_port)
                    s.setblocking(False)
                    conns.append(s)
                except OSError:
                    pass
            for s in conns:
                try:
                    s.send(head)
                except OSError:
                    pass
            time.sleep(3)
            open_now = fds(g.pid)
            peak = rss_mb(g.pid)
            probe = request(g.gw_port, b"GET /js/getticket/ HTTP/1.1\r\nHost: g\r\n\r\n", src=USER)
            print(f"{n} heads sent: rss_mb={peak:.1f} (+{peak - idle:.1f}) gateway fds={open_now} "
                  f"a call from {USER}: {probe[0]} in {probe[1] * 1000:.1f} ms")
            for s in conns:
                s.close()
            t0 = time.time()
            for at in [5, 10, 30, 60]:
                time.sleep(max(0, t0 + at - time.time()))
                print(f"after {at:>2}s: rss_mb={rss_mb(g.pid):.1f} (+{rss_mb(g.pid) - idle:.1f} over idle) fds={fds(g.pid)}")


def admin(secs, public=False, per_ip=True):
    extra = 'public_listen = "127.0.0.1:%d"' % gwproc.free_port() if public else ""
    if not per_ip:
        extra += "\nmax_connections_per_ip = 0"
    app = 'redirect_uri = "https://app.example/oauth/callback"'
    with running(base_config(extra, app)) as g:
        port = g.admin_port
        if public:
            port = int(extra.split('"')[1].rsplit(":", 1)[1])
            gwproc.wait_port(port)
        bodies = Holder(port, 64, b"POST /webhooks/douyin HTTP/1.1\r\nHost: g\r\ncontent-type: application/json\r\n"
                                  b"content-length: 1000\r\n\r\n{\"event\":")
        slow = Holder(port, 100, b"GET /healthz HTTP/1.1\r\nHo")
        bodies.start()
        time.sleep(0.5)
        slow.start()
        time.sleep(1)
        print(f"holding {len(bodies.socks)} stalled bodies and {len(slow.socks)} slow heads "
              f"on the {'public' if public else 'admin'} listener for {secs} s "
              f"({'max_connections_per_ip default' if per_ip else 'max_connections_per_ip = 0'})")
        results, same = [], []
        t_end = time.time() + secs
        while time.time() < t_end:
            t0 = time.time()
            if public:
                results.append(oauth_flow(g, port))
            else:
                results.append(request(port, b"GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n"))
                same.append(request(port, b"GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n", src=ATTACKER))
            time.sleep(max(0, 1 - (time.time() - t0)))
        bodies.stop = slow.stop = True
        print(f"attacker reconnections: {bodies.reopened + slow.reopened}; rss_mb={rss_mb(g.pid):.1f}")
        if public:
            summary(f"OAuth flow (authorize, consent, callback) from {USER}", results, 1.0)
        else:
            summary(f"/healthz from {USER}", results, 0.1)
            summary(f"/healthz from {ATTACKER} (the flooding address)", same, 0.1)
        bodies.join()
        slow.join()


def oauth_flow(g, port):
    """authorize → the sandbox's consent page → callback, from USER: (status, seconds, body)."""
    t0 = time.perf_counter()
    st, _, data = request(port, b"GET /oauth/authorize?app=main HTTP/1.1\r\nHost: g\r\n\r\n")
    if st != 302:
        return st, time.perf_counter() - t0, data
    loc = [l for l in data.split(b"\r\n") if l.lower().startswith(b"location:")][0].split(b":", 1)[1].strip()
    u = urllib.parse.urlsplit(loc.decode())
    st, _, data = request(u.port, f"GET {u.path}?{u.query} HTTP/1.1\r\nHost: g\r\n\r\n".encode())
    loc = [l for l in data.split(b"\r\n") if l.lower().startswith(b"location:")][0].split(b":", 1)[1].strip()
    q = urllib.parse.urlsplit(loc.decode()).query
    st, _, data = request(port, f"GET /oauth/callback?{q} HTTP/1.1\r\nHost: g\r\n\r\n".encode())
    return st, time.perf_counter() - t0, data


def fair(secs):
    """One address holding 1,100 one-byte-a-second connections against a gateway under
    `ulimit -n 1024`; calls from another address, each on a new connection."""
    orig = gwproc.subprocess.Popen

    def limited(args, **kw):
        if "serve" in args:
            kw["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
        return orig(args, **kw)

    gwproc.subprocess.Popen = limited
    try:
        with running(base_config("")) as g:
            call = b"GET /js/getticket/ HTTP/1.1\r\nHost: g\r\n\r\n"
            request(g.gw_port, call)
            h = Holder(g.gw_port, 1100, b"G", drip=b"E")
            h.start()
            time.sleep(3)
            print(f"holding {len(h.socks)} dripping connections from {ATTACKER}; gateway fds={fds(g.pid)}")
            results = []
            t_end = time.time() + secs
            while time.time() < t_end:
                t0 = time.time()
                results.append(request(g.gw_port, call))
                time.sleep(max(0, 0.1 - (time.time() - t0)))
            h.stop = True
            print(f"attacker reconnections: {h.reopened}")
            summary(f"calls from {USER}", results, 0.1)
            h.join()
    finally:
        gwproc.subprocess.Popen = orig


def main():
    args = sys.argv[1:]
    if "--bin" in args:
        i = args.index("--bin")
        gwproc.BIN = os.path.abspath(args[i + 1])
        del args[i:i + 2]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    what = args[0] if args else "memory"
    arg = int(args[1]) if len(args) > 1 else None
    if what == "memory":
        memory(arg or 3000)
    elif what == "admin":
        admin(arg or 240)
    elif what == "admin-open":
        admin(arg or 240, per_ip=False)
    elif what == "public":
        admin(arg or 240, public=True)
    elif what == "fair":
        fair(arg or 40)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
