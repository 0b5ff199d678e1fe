//! A lease per token: one instance fetches while the others wait for the record to change.

use super::RedisStore;
use crate::store::StoreError;
use crate::vocab::TokenKey;
use std::time::Duration;

/// Release a lease only if still ours.
pub(super) const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// A held lease: give it to [`RedisStore::put_fenced`] to write only while it is held.
#[derive(Debug)]
pub struct Lease {
    /// The lease's Redis key.
    key: String,
    /// Its fencing number: what the key holds while the lease is ours.
    pub(super) fence: String,
}

impl RedisStore {
    /// Takes the lease on a token for `ttl`, or `None` if another instance holds it.
    pub async fn acquire(&self, key: &TokenKey, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        let mut conn = self.conn().await;
        let fence: u64 = redis::cmd("INCR")
            .arg(format!("{}fence", self.prefix))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        let lease = Lease {
            key: self.lease_key(key),
            fence: fence.to_string(),
        };
        let ok: Option<String> = redis::cmd("SET")
            .arg(&lease.key)
            .arg(&lease.fence)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(ok.map(|_| lease))
    }

    /// Gives a lease back (if still ours).
    pub async fn release(&self, lease: Lease) {
        let mut conn = self.conn().await;
        let _ = self
            .release
            .key(&lease.key)
            .arg(&lease.fence)
            .invoke_async::<i64>(&mut conn)
            .await;
    }
}
