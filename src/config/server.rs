//! `[server]`: the listeners, and what one connection or request may hold or take.

use super::validate::Collector;
use super::Config;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Request bodies above this are refused with 413: Douyin's largest uploads
/// (video parts) stay well below 20 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 20 * 1024 * 1024;
/// Bodies up to this size are kept so a call can be replayed once after a
/// token refresh; 2 MiB covers every JSON/form API while bounding memory.
pub const DEFAULT_RETRY_BUFFER_BYTES: u64 = 2 * 1024 * 1024;
/// The platform answers within seconds; 30 s is nginx's `proxy_read_timeout` order.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Long enough for in-flight calls (and a retry) to finish on SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
/// `server.header_read_timeout_ms`.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// `server.idle_timeout_ms`.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// `server.body_read_timeout_ms`.
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 10_000;
/// `server.max_in_flight`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;
/// `server.max_header_bytes` (nginx allows 4 × 8 KiB by default).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// `server.max_pending_head_bytes`: what unfinished heads may hold together before any caller is
/// known. 64 MiB is 2,000 connections each holding a whole 32 KiB head; ordinary heads (under
/// 8 KiB) are never refused for it.
pub const DEFAULT_MAX_PENDING_HEAD_BYTES: usize = 64 * 1024 * 1024;

/// `[server]`: the listeners, and the limits on connections and requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The proxy listener; callers point their base URL here.
    pub listen: String,
    /// Metrics, health, OAuth and admin API.
    pub admin_listen: String,
    /// Larger request bodies get 413.
    pub max_body_bytes: u64,
    /// Bodies up to this size are buffered so a call can be retried once.
    pub retry_buffer_bytes: u64,
    /// Time allowed for the upstream to answer (headers and inspected body).
    pub request_timeout_ms: u64,
    /// Time in-flight requests get on SIGTERM/SIGINT.
    pub shutdown_grace_ms: u64,
    /// No caller key needed; refused unless `listen` is loopback.
    pub allow_anonymous: bool,
    /// How users' browsers reach the admin listener (or `public_listen`, when set), for
    /// `authorize_url` (default `http://{public_listen or admin_listen}`).
    pub public_admin_url: Option<String>,
    /// A listener for what must be reachable from the internet: `/oauth/*` (the authorization
    /// flow) and `/webhooks/douyin`, and nothing else. When set, the admin listener no longer
    /// serves those, and can stay private.
    pub public_listen: Option<String>,
    /// Serve the proxy over HTTPS.
    pub tls: Option<TlsConfig>,
    /// Threads serving proxy requests, each with a current-thread runtime, accept loop and
    /// upstream pool of its own (default: one per core). Read at start only.
    pub worker_threads: Option<usize>,
    /// A request head not complete this long after its first byte: connection closed.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in progress and no bytes for this long: closed.
    pub idle_timeout_ms: u64,
    /// The longest the gateway waits, in all, for a caller's request body (the time the upstream
    /// takes to accept it does not count): past it, 408 `client_timeout`. A body trickling in is
    /// cut as surely as one that stops.
    pub body_read_timeout_ms: u64,
    /// Open proxy connections at most (default: from the file-descriptor limit). At the cap, the
    /// connection waiting longest for its head (else the one idle longest) is closed to make room;
    /// when all are inside requests, new connections are closed at once. Read at start only.
    pub max_connections: Option<usize>,
    /// Connections one address (an IPv6 address by its /64) may hold on each listener; past it,
    /// its new connections are closed at once. 0: no such limit (behind a load balancer, where
    /// every connection comes from its address). Default: an eighth of `max_connections` (at
    /// least 32) on the proxy listener, 16 on the admin and public listeners. Read at start only.
    pub max_connections_per_ip: Option<usize>,
    /// Bytes of unfinished request heads all connections may hold together; past it, a
    /// connection whose unfinished head is over 8 KiB is closed. Read at start only.
    pub max_pending_head_bytes: usize,
    /// Requests in progress at most; past it, 503 `overloaded` at once.
    pub max_in_flight: usize,
    /// A request head (names, values, 4 bytes a line) larger than this: 431 `headers_too_large`.
    pub max_header_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            retry_buffer_bytes: DEFAULT_RETRY_BUFFER_BYTES,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            allow_anonymous: false,
            public_admin_url: None,
            public_listen: None,
            tls: None,
            worker_threads: None,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            body_read_timeout_ms: DEFAULT_BODY_READ_TIMEOUT_MS,
            max_connections: None,
            max_connections_per_ip: None,
            max_pending_head_bytes: DEFAULT_MAX_PENDING_HEAD_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// `[server.tls]`: serve the proxy over HTTPS with these PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_path: PathBuf,
    /// PEM private key.
    pub key_path: PathBuf,
}

impl Config {
    /// `[server]`: its addresses, its limits, who may call without a key, the TLS files.
    pub(super) fn validate_server(&self, c: &mut Collector<'_>) {
        let s = &self.server;
        let listen = check_listeners(c, s);
        check_limits(c, s);
        if s.allow_anonymous {
            if let Some(addr) = listen {
                if !addr.ip().is_loopback() {
                    c.err("server", None, "allow_anonymous", format!(
                        "anonymous callers are allowed only on a loopback listener; listen is {addr}: add [[callers]] keys instead"));
                }
            }
        } else if self.callers.is_empty() {
            c.warn(
                "server",
                None,
                "",
                "no [[callers]] and allow_anonymous = false: every call gets 401",
            );
        }
        if let Some(tls) = &s.tls {
            for (key, path) in [("cert_path", &tls.cert_path), ("key_path", &tls.key_path)] {
                if !path.is_file() {
                    c.err("server.tls", None, key, format!("{} does not exist", path.display()));
                }
            }
        }
    }
}

/// `listen`, `admin_listen` and `public_listen` are addresses, the public one apart from the
/// others; returns `listen` when it is one.
fn check_listeners(c: &mut Collector<'_>, s: &ServerConfig) -> Option<SocketAddr> {
    let listen = s.listen.parse::<SocketAddr>();
    if listen.is_err() {
        c.err(
            "server",
            None,
            "listen",
            format!("{:?} is not an address like 127.0.0.1:8080", s.listen),
        );
    }
    if s.admin_listen.parse::<SocketAddr>().is_err() {
        c.err(
            "server",
            None,
            "admin_listen",
            format!("{:?} is not an address like 127.0.0.1:9090", s.admin_listen),
        );
    }
    if let Some(p) = &s.public_listen {
        match p.parse::<SocketAddr>() {
            Err(_) => c.err(
                "server",
                None,
                "public_listen",
                format!("{p:?} is not an address like 0.0.0.0:8443"),
            ),
            Ok(a) if a.port() != 0 && (a.to_string() == s.admin_listen || s.listen == *p) => c.err(
                "server",
                None,
                "public_listen",
                "must differ from listen and admin_listen",
            ),
            Ok(_) => {}
        }
    }
    listen.ok()
}

/// Sizes, timeouts and counts: none may be 0, and the retry buffer fits in the body limit.
fn check_limits(c: &mut Collector<'_>, s: &ServerConfig) {
    if s.max_body_bytes == 0 {
        c.err("server", None, "max_body_bytes", "must be greater than 0");
    }
    if s.retry_buffer_bytes > s.max_body_bytes {
        c.warn(
            "server",
            None,
            "retry_buffer_bytes",
            "is larger than max_body_bytes; max_body_bytes bounds it",
        );
    }
    if s.worker_threads == Some(0) {
        c.err(
            "server",
            None,
            "worker_threads",
            "must be at least 1 (leave it out for one per core)",
        );
    }
    for (key, v) in [
        ("request_timeout_ms", s.request_timeout_ms),
        ("header_read_timeout_ms", s.header_read_timeout_ms),
        ("idle_timeout_ms", s.idle_timeout_ms),
        ("body_read_timeout_ms", s.body_read_timeout_ms),
        ("max_in_flight", s.max_in_flight as u64),
        ("max_header_bytes", s.max_header_bytes as u64),
    ] {
        if v == 0 {
            c.err("server", None, key, "must be greater than 0");
        }
    }
    if s.max_connections == Some(0) {
        c.err(
            "server",
            None,
            "max_connections",
            "must be at least 1 (leave it out to derive it from the file-descriptor limit)",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_zero_is_refused() {
        let text = "[server]\nworker_threads = 0\n[store]\nkind = \"memory\"\n";
        let err = Config::load_str(text, "t").unwrap_err();
        assert!(err.problems.iter().any(|p| p.key == "server.worker_threads"), "{err}");
        let (c, _) = Config::load_str("[server]\nworker_threads = 1\n[store]\nkind = \"memory\"\n", "t").unwrap();
        assert_eq!(c.server.worker_threads, Some(1));
    }
}
