#!/usr/bin/env python3
"""Memory after a connection burst: RSS before, with N keep-alive connections open (each has
made one call), and after they close, every few seconds for a minute.

    cargo build --release && python3 scripts/rss-burst.py [N]   # N defaults to 5000

Runs the sandbox and a gateway on loopback ports; stops both at the end. Prints one line per
sample: seconds since the burst closed, RSS in MB, open fds of the gateway.
"""
import resource, socket, sys, time

from gwproc import config_head, fds, rss_mb, running

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000


def config(sb_port, gw_port, admin_port, secret):
    return config_head(sb_port, gw_port, admin_port, secret) + """[[routes]]
name = "ticket"
path = "/js/getticket/"
token = "client"
"""


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with running(config) as g:
        req = b"GET /js/getticket/ HTTP/1.1\r\nHost: g\r\n\r\n"
        warm = socket.create_connection(("127.0.0.1", g.gw_port))
        warm.sendall(req)
        warm.recv(65536)
        warm.close()
        time.sleep(1)
        print(f"before: rss_mb={rss_mb(g.pid):.1f} fds={fds(g.pid)}")
        conns = []
        for _ in range(N):
            s = socket.create_connection(("127.0.0.1", g.gw_port))
            s.sendall(req)
            conns.append(s)
        for s in conns:
            s.recv(65536)
        print(f"open:   rss_mb={rss_mb(g.pid):.1f} fds={fds(g.pid)} connections={len(conns)}")
        for s in conns:
            s.close()
        t0 = time.time()
        for at in [0, 2, 5, 10, 20, 30, 45, 60]:
            time.sleep(max(0, t0 + at - time.time()))
            print(f"after {at:>2}s: rss_mb={rss_mb(g.pid):.1f} fds={fds(g.pid)}")


if __name__ == "__main__":
    main()
