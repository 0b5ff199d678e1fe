#!/usr/bin/env python3
"""A 200 MiB upload and a 200 MiB download through the gateway (a client_token route) and through
nginx (streaming: no request or response buffering) in front of the same sandbox; prints each
one's throughput (median of 3, MB/s), the ratio gateway/nginx, and the gateway's peak RSS growth.

    cargo build --release && python3 scripts/streams-vs-nginx.py [MiB]

Needs nginx and curl (Debian: apt-get install nginx curl).
"""
import os, statistics, subprocess, sys, tempfile, threading, time

from gwproc import config_head, free_port, rss_mb, running, wait_port

MIB = int(sys.argv[1]) if len(sys.argv) > 1 else 200


def config(sb_port, gw_port, admin_port, secret):
    return config_head(sb_port, gw_port, admin_port, secret).replace(
        'allow_anonymous = true', 'allow_anonymous = true\nmax_body_bytes = 1073741824') + """[[routes]]
name = "stream"
path = "/sandbox/*"
methods = ["GET", "POST"]
token = "client"
"""


def transfer(port, what, upload_file):
    if what == "upload":
        cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "content-type: application/octet-stream",
               "--data-binary", f"@{upload_file}", f"http://127.0.0.1:{port}/sandbox/sink"]
    else:
        cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/sandbox/bytes?n={MIB << 20}"]
    t0 = time.time()
    code = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    elapsed = time.time() - t0
    if code != "200":
        sys.exit(f"{what} on port {port}: HTTP {code}")
    return (MIB << 20) / 1e6 / elapsed


def main():
    work = tempfile.mkdtemp()
    upload = os.path.join(work, "upload.bin")
    with open(upload, "wb") as f:
        f.truncate(MIB << 20)
    with running(config) as g:
        nx_port = free_port()
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx.err; daemon on;
events {{ worker_connections 1024; }}
http {{ access_log off; client_max_body_size 0;
  upstream sb {{ server 127.0.0.1:{g.sb_port}; keepalive 16; }}
  server {{ listen 127.0.0.1:{nx_port};
    location / {{ proxy_pass http://sb; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_request_buffering off; proxy_buffering off;
                 proxy_set_header access-token "clt.fixed"; }} }} }}
""")
        subprocess.run(["nginx", "-c", conf], check=True)
        try:
            wait_port(nx_port)
            for what in ("upload", "download"):
                gw, nx, growth = [], [], []
                for _ in range(3):
                    nx.append(transfer(nx_port, what, upload))
                    base = rss_mb(g.pid)
                    peak = [base]
                    done = threading.Event()

                    def sample():
                        while not done.is_set():
                            peak[0] = max(peak[0], rss_mb(g.pid))
                            time.sleep(0.005)

                    t = threading.Thread(target=sample)
                    t.start()
                    gw.append(transfer(g.gw_port, what, upload))
                    done.set()
                    t.join()
                    growth.append(peak[0] - base)
                mg, mn = statistics.median(gw), statistics.median(nx)
                print(f"{what} {MIB} MiB: gateway_mb_s={mg:.0f} nginx_mb_s={mn:.0f} ratio={mg / mn:.2f} "
                      f"gateway_peak_rss_growth_mib={max(growth):.1f}", flush=True)
        finally:
            subprocess.run(["nginx", "-c", conf, "-s", "stop"], check=False)
            os.unlink(upload)


main()
