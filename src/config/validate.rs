//! `Config::validate`: every semantic problem at once, each with its key path
//! and line, so `douyin-gateway check` can list them all.

use super::{locate::line_of, Config, StoreKind};
use std::fmt;
use std::net::SocketAddr;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The config is refused.
    Error,
    /// Worth a look; the config still loads.
    Warning,
}

/// One thing wrong with a config.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The file.
    pub file: String,
    /// Dotted key path, e.g. `routes[2].path`.
    pub key: String,
    /// Line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong, for a human.
    pub message: String,
}

impl Problem {
    pub(crate) fn error(file: &str, key: &str, line: Option<usize>, message: String) -> Self {
        Problem {
            severity: Severity::Error,
            file: file.into(),
            key: key.into(),
            line,
            message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: {}", self.located())
    }
}

impl Problem {
    /// The problem without its severity word (for a log line whose level says it):
    /// `file:line: key: message`.
    pub fn located(&self) -> String {
        let mut s = self.file.clone();
        if let Some(line) = self.line {
            s.push_str(&format!(":{line}"));
        }
        if !self.key.is_empty() {
            s.push_str(&format!(": {}", self.key));
        }
        s.push_str(&format!(": {}", self.message));
        s
    }
}

pub(super) struct Collector<'a> {
    text: &'a str,
    file: &'a str,
    out: Vec<Problem>,
}

impl Collector<'_> {
    pub(super) fn push(&mut self, sev: Severity, table: &str, index: Option<usize>, key: &str, msg: String) {
        let path = match index {
            Some(i) => format!("{table}[{i}]"),
            None => table.to_string(),
        };
        let path = if key.is_empty() { path } else { format!("{path}.{key}") };
        self.out.push(Problem {
            severity: sev,
            file: self.file.into(),
            line: line_of(self.text, table, index, key),
            key: path,
            message: msg,
        });
    }
    pub(super) fn err(&mut self, table: &str, index: Option<usize>, key: &str, msg: impl Into<String>) {
        self.push(Severity::Error, table, index, key, msg.into());
    }
    pub(super) fn warn(&mut self, table: &str, index: Option<usize>, key: &str, msg: impl Into<String>) {
        self.push(Severity::Warning, table, index, key, msg.into());
    }
}

pub(super) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether an env var or file secret is present and non-empty.
pub(super) fn secret_present(env: &Option<String>, file: &Option<std::path::PathBuf>) -> Result<(), String> {
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(()),
            Ok(_) => Err(format!("environment variable {var} is empty")),
            Err(_) => Err(format!(
                "environment variable {var} is not set: export {var}=… (the secret from the Douyin Open Platform console)"
            )),
        };
    }
    if let Some(path) = file {
        return match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => Ok(()),
            Ok(_) => Err(format!("secret file {} is empty", path.display())),
            Err(e) => Err(format!("cannot read secret file {}: {e}", path.display())),
        };
    }
    Ok(())
}

impl Config {
    /// Warns about values copied from the repository's example `config.toml` that must be
    /// replaced before the gateway faces anyone: the example admin and caller keys (whose
    /// plaintext is in the example's comments) and the placeholder client_key.
    fn warn_example_values(&self, c: &mut Collector<'_>) {
        let example_admin = crate::secret::hash_key("example-admin-key");
        let example_caller = crate::secret::hash_key("example-caller-key");
        if self.admin.api_key_sha256.as_deref() == Some(example_admin.as_str()) {
            c.warn(
                "admin",
                None,
                "api_key_sha256",
                "is the example's key (\"example-admin-key\", printed in config.toml): anyone can use the admin API; \
                 set your own (echo -n KEY | douyin-gateway hash-key)",
            );
        }
        for (i, caller) in self.callers.iter().enumerate() {
            if caller.api_key_sha256 == example_caller || caller.api_key_sha256 == example_admin {
                c.warn(
                    "callers",
                    Some(i),
                    "api_key_sha256",
                    "is the example's key (printed in config.toml): anyone can call as this caller; set your own",
                );
            }
        }
        for (i, app) in self.apps.iter().enumerate() {
            if app.client_key == "awxxxxxxxxxxxxxx" {
                c.warn(
                    "apps",
                    Some(i),
                    "client_key",
                    "is the example's placeholder: put the app's client_key from the Douyin Open Platform console",
                );
            }
        }
    }

    /// Every problem of the config; also checks that named secrets exist.
    pub fn validate(&self, text: &str, file: &str) -> Vec<Problem> {
        let mut c = Collector {
            text,
            file,
            out: Vec::new(),
        };
        self.validate_server(&mut c);
        self.validate_store(&mut c);
        self.validate_apps(&mut c);
        self.validate_routes(&mut c);
        self.validate_callers(&mut c);
        self.validate_notify(&mut c);
        self.warn_example_values(&mut c);
        c.out
    }

    fn validate_server(&self, c: &mut Collector<'_>) {
        let s = &self.server;
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
        if s.allow_anonymous {
            if let Ok(addr) = listen {
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
        check_upstream(c, "upstream", None, &self.upstream);
        for (i, u) in self.upstreams.iter().enumerate() {
            if u.name.is_empty() {
                c.err("upstreams", Some(i), "name", "must not be empty");
            } else if self.upstreams.iter().filter(|o| o.name == u.name).count() > 1 {
                c.err(
                    "upstreams",
                    Some(i),
                    "name",
                    format!("upstream {:?} is defined more than once", u.name),
                );
            }
            check_upstream(c, "upstreams", Some(i), &u.settings());
        }
        if let Some(h) = &self.admin.api_key_sha256 {
            if !is_sha256_hex(h) {
                c.err(
                    "admin",
                    None,
                    "api_key_sha256",
                    "must be 64 hex digits (douyin-gateway hash-key prints it)",
                );
            }
        }
        let t = &self.tokens;
        if !(t.refresh_at_fraction > 0.0 && t.refresh_at_fraction < 1.0) {
            c.err(
                "tokens",
                None,
                "refresh_at_fraction",
                "must be between 0 and 1, e.g. 0.8",
            );
        }
        if t.backoff_initial_ms == 0 || t.backoff_initial_ms > t.backoff_max_ms {
            c.err(
                "tokens",
                None,
                "backoff_initial_ms",
                "must be greater than 0 and at most backoff_max_ms",
            );
        }
        if t.maintain_interval_ms == 0 {
            c.err("tokens", None, "maintain_interval_ms", "must be greater than 0");
        }
        if t.fetch_timeout_ms == 0 {
            c.err("tokens", None, "fetch_timeout_ms", "must be greater than 0");
        }
        let o = &self.oauth;
        if o.max_exchanges_per_sec == 0 {
            c.err(
                "oauth",
                None,
                "max_exchanges_per_sec",
                "must be at least 1 (to stop authorizations, remove the apps' redirect_uri)",
            );
        }
        if o.per_address_burst == 0 {
            c.err(
                "oauth",
                None,
                "per_address_burst",
                "must be at least 1 (per_address_per_sec = 0 turns the per-address limit off)",
            );
        }
    }

    fn validate_store(&self, c: &mut Collector<'_>) {
        let st = &self.store;
        if let Some(var) = &st.previous_encryption_key_env {
            if let Err(e) = crate::secret::key_from_env(var) {
                c.err("store", None, "previous_encryption_key_env", e);
            }
        }
        if st.kind == StoreKind::Redis && st.url.is_none() {
            c.err(
                "store",
                None,
                "url",
                "kind = \"redis\" needs url = \"redis://host:6379/0\"",
            );
        }
        match (&st.encryption_key_env, st.kind) {
            (None, StoreKind::Memory) => {}
            (None, _) => c.err("store", None, "encryption_key_env",
                "tokens are encrypted at rest: name the environment variable holding the key (douyin-gateway keygen prints one)"),
            (Some(var), _) => match std::env::var(var) {
                Err(_) => c.err(
                    "store",
                    None,
                    "encryption_key_env",
                    format!("environment variable {var} is not set: export {var}=\"$(douyin-gateway keygen)\" once, and keep that key"),
                ),
                Ok(v) => {
                    use base64::Engine;
                    let ok = base64::engine::general_purpose::STANDARD
                        .decode(v.trim())
                        .is_ok_and(|k| k.len() == 32);
                    if !ok {
                        c.err("store", None, "encryption_key_env",
                            format!("{var} must hold 32 bytes in base64 (douyin-gateway keygen prints one)"));
                    }
                }
            },
        }
    }
}

/// An upstream's base_url and ca_file (`[upstream]` or one `[[upstreams]]` entry).
fn check_upstream(c: &mut Collector<'_>, table: &str, index: Option<usize>, u: &super::UpstreamConfig) {
    match u.base_url.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some() => {
            if uri.query().is_some() || !uri.path().trim_end_matches('/').is_empty() {
                c.err(
                    table,
                    index,
                    "base_url",
                    "must be scheme://host[:port] with no path or query",
                );
            }
        }
        _ => c.err(
            table,
            index,
            "base_url",
            format!("{:?} is not an http(s) URL", u.base_url),
        ),
    }
    if let Some(ca) = &u.ca_file {
        if !ca.is_file() {
            c.err(table, index, "ca_file", format!("{} does not exist", ca.display()));
        }
    }
    if u.connect_timeout_ms == 0 {
        c.err(table, index, "connect_timeout_ms", "must be greater than 0");
    }
}
