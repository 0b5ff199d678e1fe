//! `[admin]`: the key of the admin API.

use super::validate::{is_sha256_hex, Collector};
use super::Config;
use serde::Deserialize;

/// `[admin]`: the admin API's key, by digest.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Hex SHA-256 of the admin key; absent = admin API off.
    pub api_key_sha256: Option<String>,
}

impl Config {
    /// `[admin]`: `api_key_sha256`, when given, is a SHA-256 in hex.
    pub(super) fn validate_admin(&self, c: &mut Collector<'_>) {
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
    }
}
