//! `[store]`: where tokens are kept, and the key they are encrypted with.

use super::validate::Collector;
use super::Config;
use serde::Deserialize;
use std::path::PathBuf;

/// Which store keeps tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Embedded SQLite file (the default).
    #[default]
    Sqlite,
    /// Redis, shared by many instances.
    Redis,
    /// In process only; lost on restart.
    Memory,
}

/// `[store]`: where tokens are kept and the key they are encrypted with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite`, `redis` or `memory`.
    pub kind: StoreKind,
    /// SQLite file.
    pub path: PathBuf,
    /// Redis URL.
    pub url: Option<String>,
    /// Prefix of every Redis key.
    pub key_prefix: String,
    /// Environment variable holding the base64 32-byte encryption key.
    pub encryption_key_env: Option<String>,
    /// During a key rotation: the variable holding the key records were written with before.
    pub previous_encryption_key_env: Option<String>,
    /// Redis with replicas: how long a write whose loss loses a user (authorization, refresh,
    /// renewal) waits for a replica to acknowledge it.
    pub replica_ack_timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Sqlite,
            path: "data/tokens.db".into(),
            url: None,
            key_prefix: "douyin-gateway:".into(),
            encryption_key_env: None,
            previous_encryption_key_env: None,
            replica_ack_timeout_ms: 1000,
        }
    }
}

impl Config {
    /// `[store]`: a Redis URL for Redis, and encryption keys that are set and 32 bytes.
    pub(super) fn validate_store(&self, c: &mut Collector<'_>) {
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
                    if crate::secret::key_from_base64(&v).is_err() {
                        c.err("store", None, "encryption_key_env",
                            format!("{var} must hold 32 bytes in base64 (douyin-gateway keygen prints one)"));
                    }
                }
            },
        }
    }
}
