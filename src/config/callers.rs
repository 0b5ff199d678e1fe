//! `[[callers]]`: the services allowed to call the gateway, by key digest.

use super::validate::{is_sha256_hex, Collector};
use super::Config;
use serde::Deserialize;

/// `[[callers]]`: a service allowed to call, and the routes it may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// Name used in logs.
    pub name: String,
    /// Hex SHA-256 of the caller's key.
    pub api_key_sha256: String,
    /// Route names it may use; `"*"` = all.
    #[serde(default = "all_routes")]
    pub routes: Vec<String>,
    /// May exchange authorization codes its app received itself (`POST /_gateway/exchange_code`).
    #[serde(default)]
    pub exchange_codes: bool,
}

fn all_routes() -> Vec<String> {
    vec!["*".into()]
}

impl Config {
    /// Each `[[callers]]`: a unique name, a key digest, routes that exist.
    pub(super) fn validate_callers(&self, c: &mut Collector<'_>) {
        for (i, caller) in self.callers.iter().enumerate() {
            let idx = Some(i);
            if self.callers.iter().filter(|o| o.name == caller.name).count() > 1 {
                c.err(
                    "callers",
                    idx,
                    "name",
                    format!("caller {:?} is defined more than once", caller.name),
                );
            }
            if !is_sha256_hex(&caller.api_key_sha256) {
                c.err(
                    "callers",
                    idx,
                    "api_key_sha256",
                    "must be 64 hex digits (douyin-gateway hash-key prints it)",
                );
            }
            for r in &caller.routes {
                if r != "*" && !self.routes.iter().any(|x| &x.name == r) {
                    c.err("callers", idx, "routes", format!("no [[routes]] named {r:?}"));
                }
            }
        }
    }
}
