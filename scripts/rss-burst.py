#!/usr/bin/env python3
"""Memory after a connection burst: RSS before, with N keep-alive connections open (each has
made one call), and after they close, every few seconds for a minute.

    cargo build --release && python3 scripts/rss-burst.py [N]   # N defaults to 5000

Runs the sandbox and a gateway on loopback ports; stops both at the end. Prints one line per
sample: seconds since the burst closed, RSS in MB, open fds of the gateway.
"""
import os, resource, socket, subprocess, sys, tempfile, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "douyin-gateway")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sb_port, gw_port, admin_port = free_port(), free_port(), free_port()
    secret = tempfile.NamedTemporaryFile("w", delete=False)
    secret.write("sandbox-secret")
    secret.close()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    cfg.write(f"""[server]
listen = "127.0.0.1:{gw_port}"
admin_listen = "127.0.0.1:{admin_port}"
allow_anonymous = true
[upstream]
base_url = "http://127.0.0.1:{sb_port}"
[store]
kind = "memory"
[[apps]]
name = "main"
client_key = "awsandbox0000001"
client_secret_file = "{secret.name}"
[[routes]]
name = "ticket"
path = "/js/getticket/"
token = "client"
""")
    cfg.close()
    sb = subprocess.Popen([BIN, "sandbox", "--listen", f"127.0.0.1:{sb_port}"], stderr=subprocess.DEVNULL)
    gw = subprocess.Popen([BIN, "serve", "--config", cfg.name], stderr=subprocess.DEVNULL)
    try:
        wait_port(sb_port)
        wait_port(gw_port)
        req = b"GET /js/getticket/ HTTP/1.1\r\nHost: g\r\n\r\n"
        warm = socket.create_connection(("127.0.0.1", gw_port))
        warm.sendall(req)
        warm.recv(65536)
        warm.close()
        time.sleep(1)
        print(f"before: rss_mb={rss_mb(gw.pid):.1f} fds={fds(gw.pid)}")
        conns = []
        for _ in range(N):
            s = socket.create_connection(("127.0.0.1", gw_port))
            s.sendall(req)
            conns.append(s)
        for s in conns:
            s.recv(65536)
        print(f"open:   rss_mb={rss_mb(gw.pid):.1f} fds={fds(gw.pid)} connections={len(conns)}")
        for s in conns:
            s.close()
        t0 = time.time()
        for at in [0, 2, 5, 10, 20, 30, 45, 60]:
            time.sleep(max(0, t0 + at - time.time()))
            print(f"after {at:>2}s: rss_mb={rss_mb(gw.pid):.1f} fds={fds(gw.pid)}")
    finally:
        gw.terminate()
        sb.terminate()
        gw.wait()
        sb.wait()
        os.unlink(cfg.name)
        os.unlink(secret.name)


if __name__ == "__main__":
    main()
