"""Helpers shared by the measurement scripts: free ports, waiting for a listener, and reading a
process's RSS and open file descriptors from /proc. `GATEWAY_BIN` names another build to run
(to compare two), else target/release."""
import contextlib, hashlib, os, socket, subprocess, sys, tempfile, time

BIN = os.environ.get("GATEWAY_BIN") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "douyin-gateway")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port):
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def config_head(sb_port, gw_port, admin_port, secret, anonymous=True, admin_key=None, app=""):
    """The part of a gateway config every script shares: listeners, the sandbox as upstream, a
    memory store, the optional admin key, and the one app (plus `app` lines); the script appends
    its callers and routes."""
    admin = f'[admin]\napi_key_sha256 = "{hashlib.sha256(admin_key.encode()).hexdigest()}"\n' if admin_key else ""
    return f"""[server]
listen = "127.0.0.1:{gw_port}"
admin_listen = "127.0.0.1:{admin_port}"
allow_anonymous = {"true" if anonymous else "false"}
[upstream]
base_url = "http://127.0.0.1:{sb_port}"
[store]
kind = "memory"
{admin}[[apps]]
name = "main"
client_key = "awsandbox0000001"
client_secret_file = "{secret}"
{app}
"""


class Gateway:
    """A running sandbox and gateway: their ports, and the gateway's process."""

    def __init__(self, sb_port, gw_port, admin_port, process):
        self.sb_port, self.gw_port, self.admin_port, self.process = sb_port, gw_port, admin_port, process
        self.pid = process.pid


@contextlib.contextmanager
def running(config):
    """Starts the sandbox and a gateway on free loopback ports, the gateway with the TOML that
    `config(sb_port, gw_port, admin_port, secret_path)` returns; stops both and removes the files
    at the end. The release binary must be built."""
    sb_port, gw_port, admin_port = free_port(), free_port(), free_port()
    secret = tempfile.NamedTemporaryFile("w", delete=False)
    secret.write("sandbox-secret")
    secret.close()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    cfg.write(config(sb_port, gw_port, admin_port, secret.name))
    cfg.close()
    sb = subprocess.Popen([BIN, "sandbox", "--listen", f"127.0.0.1:{sb_port}"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    gw = subprocess.Popen([BIN, "serve", "--config", cfg.name], stderr=subprocess.DEVNULL)
    try:
        wait_port(sb_port)
        wait_port(gw_port)
        wait_port(admin_port)
        yield Gateway(sb_port, gw_port, admin_port, gw)
    finally:
        gw.terminate()
        sb.terminate()
        gw.wait()
        sb.wait()
        os.unlink(cfg.name)
        os.unlink(secret.name)
