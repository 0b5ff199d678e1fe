//! The compare-and-swap write (which publishes the change), waiting for a replica, deletion.

use super::{glob_escape, Lease, RedisStore};
use crate::store::record::class_name;
use crate::store::{Put, Record, StoreError};
use crate::vocab::TokenKey;
use redis::aio::ConnectionManager;
use std::time::Duration;

/// How often the primary is asked again whether it has replicas.
const REPLICAS_CHECK_EVERY: Duration = Duration::from_secs(5);

/// CAS write: KEYS[1] record, KEYS[2] lease; ARGV expected, sealed, app, class, subject, channel, fence.
/// Returns {1, version} written, {0, version, sealed} conflict, {2} lease lost.
pub(super) const PUT: &str = r#"
if ARGV[7] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[7] then return {2} end
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if cur ~= tonumber(ARGV[1]) then
  return {0, cur, redis.call('HGET', KEYS[1], 's') or ''}
end
local nv = cur + 1
redis.call('HSET', KEYS[1], 'v', nv, 's', ARGV[2], 'a', ARGV[3], 'c', ARGV[4], 'o', ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[3] .. '\t' .. ARGV[4] .. '\t' .. ARGV[5] .. '\t' .. nv)
return {1, nv}
"#;

impl RedisStore {
    /// Compare-and-swap write; with `lease`, only while that lease is held.
    pub async fn put_fenced(&self, rec: &Record, expected: u64, lease: Option<&Lease>) -> Result<Put, StoreError> {
        let mut conn = self.conn().await;
        let sealed = self.keys.seal(&Record::aad(&rec.key), &rec.body());
        let result: Vec<redis::Value> = self
            .put
            .key(self.record_key(&rec.key))
            .key(self.lease_key(&rec.key))
            .arg(expected)
            .arg(sealed)
            .arg(&*rec.key.app)
            .arg(class_name(rec.key.class))
            .arg(rec.key.subject())
            .arg(self.channel())
            .arg(lease.map_or("", |l| l.fence.as_str()))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        let int = |v: &redis::Value| match v {
            redis::Value::Int(i) => *i as u64,
            _ => 0,
        };
        match result.first().map(int) {
            Some(1) => {
                if !rec.key.class.is_app_level() {
                    // A user's refresh_token: the platform killed the old one, so losing this
                    // write in a failover loses the user.
                    self.replicated(&mut conn, &rec.key).await;
                }
                Ok(Put::Written(result.get(1).map_or(0, int)))
            }
            Some(2) => Ok(Put::Conflict(self.get(&rec.key).await?)),
            _ => {
                let version = result.get(1).map_or(0, int);
                match result.get(2) {
                    Some(redis::Value::BulkString(s)) if version > 0 && !s.is_empty() => Ok(Put::Conflict(Some(
                        Record::open(&self.keys, rec.key.clone(), version, s)?,
                    ))),
                    _ => Ok(Put::Conflict(None)),
                }
            }
        }
    }

    /// Waits (`WAIT 1`, bounded) until a replica acknowledged the writes so far, when the primary
    /// has replicas; counts and logs a wait that timed out. Redis replicates asynchronously: a
    /// primary that dies right after acknowledging a write may not have passed it on.
    async fn replicated(&self, conn: &mut ConnectionManager, key: &TokenKey) {
        let known = *self.replicas.lock().unwrap_or_else(|p| p.into_inner());
        let replicas = match known {
            Some((n, at)) if at.elapsed() < REPLICAS_CHECK_EVERY => n,
            _ => {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(conn)
                    .await
                    .unwrap_or_default();
                let n = info
                    .lines()
                    .find_map(|l| l.strip_prefix("connected_slaves:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                *self.replicas.lock().unwrap_or_else(|p| p.into_inner()) = Some((n, std::time::Instant::now()));
                n
            }
        };
        if replicas == 0 {
            return;
        }
        let acked: Result<u64, _> = redis::cmd("WAIT")
            .arg(1)
            .arg(self.replica_ack.as_millis() as u64)
            .query_async(conn)
            .await;
        if !matches!(acked, Ok(n) if n >= 1) {
            self.replica_ack_timeouts.inc();
            tracing::warn!(app = %key.app, class = class_name(key.class), timeout_ms = self.replica_ack.as_millis() as u64,
                "no Redis replica acknowledged a user's new tokens in time: a failover now could lose them \
                 (the user would have to authorize again). Check replication lag");
        }
    }

    /// Compare-and-swap write.
    pub async fn put(&self, rec: &Record, expected: u64) -> Result<Put, StoreError> {
        self.put_fenced(rec, expected, None).await
    }

    /// Tells every instance a record is gone (version 0).
    async fn publish(&self, key: &TokenKey) -> Result<(), StoreError> {
        let mut conn = self.conn().await;
        let msg = format!("{}\t{}\t{}\t0", key.app, class_name(key.class), key.subject());
        redis::cmd("PUBLISH")
            .arg(self.channel())
            .arg(msg)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Removes a record.
    pub async fn delete(&self, key: &TokenKey) -> Result<bool, StoreError> {
        let mut conn = self.conn().await;
        let n: u64 = redis::cmd("DEL")
            .arg(self.record_key(key))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        self.publish(key).await?;
        Ok(n > 0)
    }

    /// Removes a user's user and biz records of an app.
    pub async fn delete_user(&self, app: &str, open_id: &str) -> Result<usize, StoreError> {
        let user = TokenKey::user(app.into(), open_id);
        let mut n = usize::from(self.delete(&user).await?);
        let pattern = format!(
            "{}t:{}:biz:{}\n*",
            glob_escape(&self.prefix),
            glob_escape(app),
            glob_escape(open_id)
        );
        for k in self.scan(&pattern).await? {
            if let Some(r) = self.read(&k).await? {
                n += usize::from(self.delete(&r.key).await?);
            }
        }
        Ok(n)
    }
}
