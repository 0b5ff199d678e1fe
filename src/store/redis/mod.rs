//! The shared store: Redis (or Valkey) behind a connection manager that
//! reconnects by itself. Besides the records it carries what many instances
//! need to act as one:
//!
//! - compare-and-swap writes in Lua, each publishing `app\tclass\tsubject\tversion`
//!   on `{prefix}events` so every instance's cache learns of the change;
//! - a lease per token (`SET NX PX`, the value a fencing number from `INCR`):
//!   one instance fetches, the others wait for the record to change; a holder
//!   that dies loses the lease when it expires.
//!
//! One file per concern: `connection` finds the primary and keeps a connection to it, `records`
//! reads records (and bulk-loads them), `write` is the compare-and-swap write and deletion,
//! `lease` the per-token lease, `events` the subscription to changes.

mod connection;
mod events;
mod lease;
mod records;
mod values;
mod write;

pub use connection::redact_url;
pub use lease::Lease;

use super::crypto::Keys;
use super::record::class_name;
use super::StoreError;
use crate::vocab::TokenKey;
use connection::{Source, RESPONSE_TIMEOUT};
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::time::Duration;

/// Records read per pipelined round trip.
const READ_BATCH: usize = 500;

/// The Redis store.
pub struct RedisStore {
    source: Source,
    conn: arc_swap::ArcSwap<ConnectionManager>,
    /// Set after a failure that may mean the primary moved (Sentinel only).
    stale: std::sync::atomic::AtomicBool,
    last_resolve: std::sync::Mutex<std::time::Instant>,
    prefix: String,
    keys: Arc<Keys>,
    put: redis::Script,
    release: redis::Script,
    /// How long a user write waits for a replica (below the response timeout).
    replica_ack: Duration,
    /// Replicas the primary had, and when it was asked.
    replicas: std::sync::Mutex<Option<(u64, std::time::Instant)>>,
    /// `douyin_gateway_store_replica_ack_timeouts_total`.
    pub replica_ack_timeouts: prometheus::IntCounter,
}

/// A store error from anything that went wrong talking to Redis.
fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Escapes glob characters for `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

impl RedisStore {
    /// Connects (fails if Redis does not answer at start).
    pub async fn open(url: &str, prefix: &str, keys: Keys, replica_ack: Duration) -> Result<RedisStore, String> {
        let source = Source::from_url(url)?;
        let conn = Self::connect(&source)
            .await
            .map_err(|e| format!("cannot reach Redis at {}: {e}", redact_url(url)))?;
        Ok(RedisStore {
            source,
            conn: arc_swap::ArcSwap::from_pointee(conn),
            stale: std::sync::atomic::AtomicBool::new(false),
            last_resolve: std::sync::Mutex::new(std::time::Instant::now()),
            prefix: prefix.to_string(),
            keys: Arc::new(keys),
            put: redis::Script::new(write::PUT),
            release: redis::Script::new(lease::RELEASE),
            replica_ack: replica_ack.min(RESPONSE_TIMEOUT - Duration::from_millis(500)),
            replicas: std::sync::Mutex::new(None),
            replica_ack_timeouts: prometheus::IntCounter::new(
                "douyin_gateway_store_replica_ack_timeouts_total",
                "User and biz writes no Redis replica acknowledged within replica_ack_timeout_ms: a failover then could lose them.",
            )
            .expect("metric"),
        })
    }

    /// The Redis key of a token's record.
    fn record_key(&self, key: &TokenKey) -> String {
        format!(
            "{}t:{}:{}:{}",
            self.prefix,
            key.app,
            class_name(key.class),
            key.subject()
        )
    }

    /// The Redis key of a token's lease.
    fn lease_key(&self, key: &TokenKey) -> String {
        format!(
            "{}lease:{}:{}:{}",
            self.prefix,
            key.app,
            class_name(key.class),
            key.subject()
        )
    }

    /// The channel change events go to.
    pub fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert_eq!(glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
    }
}
