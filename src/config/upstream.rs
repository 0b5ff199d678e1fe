//! `[upstream]` and `[[upstreams]]`: the hosts calls are forwarded to.

use super::validate::Collector;
use super::Config;
use serde::Deserialize;
use std::path::PathBuf;

/// The platform's API host.
pub const DEFAULT_UPSTREAM: &str = "https://open.douyin.com";
/// A healthy TCP+TLS connect to the platform takes well under a second.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 3_000;

/// `[upstream]`: the platform host (or the sandbox) calls and token fetches go to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// API calls and token endpoints go here.
    pub base_url: String,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout_ms: u64,
    /// An extra CA (PEM) to trust besides the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// *(extension)* Over plain HTTP, a call whose body is in memory goes over the proxy's own
    /// HTTP/1.1 client rather than hyper's (about 11% fewer instructions a call;
    /// docs/performance.md). On by default; `false` puts every call on hyper's client.
    pub lean_http1: bool,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            base_url: DEFAULT_UPSTREAM.into(),
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            ca_file: None,
            lean_http1: true,
        }
    }
}

/// `[[upstreams]]`: another host a route may forward to, such as `developer.toutiao.com`
/// (mini-app server APIs) or `webcast.bytedance.com` (live streaming).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedUpstream {
    /// What routes call it (`upstream = NAME`).
    pub name: String,
    /// `scheme://host[:port]`.
    pub base_url: String,
    /// TCP (and TLS) connect timeout.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// An extra CA (PEM) to trust besides the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// As `[upstream]`'s `lean_http1`.
    #[serde(default = "default_lean_http1")]
    pub lean_http1: bool,
}

fn default_lean_http1() -> bool {
    true
}

fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}

impl NamedUpstream {
    /// Its connection settings, as `[upstream]` has them.
    pub fn settings(&self) -> UpstreamConfig {
        UpstreamConfig {
            base_url: self.base_url.clone(),
            connect_timeout_ms: self.connect_timeout_ms,
            ca_file: self.ca_file.clone(),
            lean_http1: self.lean_http1,
        }
    }
}

impl Config {
    /// Every upstream's settings, in the order routes refer to them: `[upstream]` first, then each
    /// `[[upstreams]]` in file order.
    pub fn all_upstreams(&self) -> Vec<UpstreamConfig> {
        std::iter::once(self.upstream.clone())
            .chain(self.upstreams.iter().map(NamedUpstream::settings))
            .collect()
    }

    /// `[upstream]` and each `[[upstreams]]` entry: URL, CA file, timeout; names unique.
    pub(super) fn validate_upstreams(&self, c: &mut Collector<'_>) {
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
    }
}

/// An upstream's base_url and ca_file (`[upstream]` or one `[[upstreams]]` entry).
fn check_upstream(c: &mut Collector<'_>, table: &str, index: Option<usize>, u: &UpstreamConfig) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lean_client_is_on_unless_a_table_turns_it_off() {
        let text = "[store]\nkind = \"memory\"\n[[upstreams]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:1\"\n\
                    [[upstreams]]\nname = \"b\"\nbase_url = \"http://127.0.0.1:2\"\nlean_http1 = false\n";
        let (c, _) = Config::load_str(text, "t").unwrap();
        let lean: Vec<bool> = c.all_upstreams().iter().map(|u| u.lean_http1).collect();
        assert_eq!(lean, [true, true, false]);
        let (c, _) = Config::load_str("[store]\nkind = \"memory\"\n[upstream]\nlean_http1 = false\n", "t").unwrap();
        assert!(!c.all_upstreams()[0].lean_http1);
    }
}
