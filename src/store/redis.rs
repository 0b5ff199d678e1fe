//! The shared store: Redis (or Valkey) behind a connection manager that
//! reconnects by itself. Besides the records it carries what many instances
//! need to act as one:
//!
//! - compare-and-swap writes in Lua, each publishing `app\tclass\tsubject\tversion`
//!   on `{prefix}events` so every instance's cache learns of the change;
//! - a lease per token (`SET NX PX`, the value a fencing number from `INCR`):
//!   one instance fetches, the others wait for the record to change; a holder
//!   that dies loses the lease when it expires.

use super::crypto::Keys;
use super::record::{class_from, class_name};
use super::{Put, Record, StoreError, StoreEvent};
use crate::vocab::TokenKey;
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::time::Duration;

/// Records read per pipelined round trip.
const READ_BATCH: usize = 500;

/// How often the primary is asked again whether it has replicas.
const REPLICAS_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Redis calls slower than this count as failures: a token fetch must not hang on the store.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// CAS write: KEYS[1] record, KEYS[2] lease; ARGV expected, sealed, app, class, subject, channel, fence.
/// Returns {1, version} written, {0, version, sealed} conflict, {2} lease lost.
const PUT: &str = r#"
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

/// Release a lease only if still ours.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// A held lease.
#[derive(Debug)]
pub struct Lease {
    key: String,
    fence: String,
}

/// Where the current primary is.
enum Source {
    /// One address.
    Direct(redis::Client),
    /// Asked of Sentinels, again after a failover.
    Sentinel {
        sentinel: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
        /// `user:pass@` for the primary (may be empty).
        auth: String,
        /// Database number.
        db: i64,
    },
}

/// A Sentinel URL: `redis+sentinel://[user:pass@]host:port[,host:port…]/SERVICE[/DB]`.
fn parse_sentinel(url: &str) -> Result<(Vec<String>, String, String, i64), String> {
    let rest = url
        .strip_prefix("redis+sentinel://")
        .ok_or("not a redis+sentinel:// URL")?;
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (format!("{a}@"), r),
        None => (String::new(), rest),
    };
    let (hosts, path) = rest
        .split_once('/')
        .ok_or("name the monitored service: redis+sentinel://host:26379/SERVICE")?;
    let mut path = path.split('/');
    let service = path
        .next()
        .filter(|s| !s.is_empty())
        .ok_or("name the monitored service after the hosts")?
        .to_string();
    let db = match path.next().filter(|d| !d.is_empty()) {
        Some(d) => d.parse().map_err(|_| format!("database {d:?} is not a number"))?,
        None => 0,
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{h}"))
        .collect();
    if nodes.is_empty() {
        return Err("no Sentinel host in the URL".into());
    }
    Ok((nodes, service, auth, db))
}

/// Re-resolving the primary at most this often (a burst of failures asks Sentinel once).
const RESOLVE_EVERY: Duration = Duration::from_millis(500);

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
        let source = if url.starts_with("redis+sentinel://") {
            let (nodes, service, auth, db) = parse_sentinel(url).map_err(|e| format!("[store] url: {e}"))?;
            let sentinel = redis::sentinel::SentinelClient::build(
                nodes,
                service,
                None,
                redis::sentinel::SentinelServerType::Master,
            )
            .map_err(|e| format!("[store] url: {e}"))?;
            Source::Sentinel {
                sentinel: tokio::sync::Mutex::new(sentinel),
                auth,
                db,
            }
        } else {
            Source::Direct(redis::Client::open(url).map_err(|e| format!("[store] url: {e}"))?)
        };
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
            put: redis::Script::new(PUT),
            release: redis::Script::new(RELEASE),
            replica_ack: replica_ack.min(RESPONSE_TIMEOUT - Duration::from_millis(500)),
            replicas: std::sync::Mutex::new(None),
            replica_ack_timeouts: prometheus::IntCounter::new(
                "douyin_gateway_store_replica_ack_timeouts_total",
                "User and biz writes no Redis replica acknowledged within replica_ack_timeout_ms: a failover then could lose them.",
            )
            .expect("metric"),
        })
    }

    /// A client for the current primary.
    async fn primary(source: &Source) -> redis::RedisResult<redis::Client> {
        match source {
            Source::Direct(c) => Ok(c.clone()),
            Source::Sentinel { sentinel, auth, db } => {
                let found = tokio::time::timeout(CONNECT_TIMEOUT, sentinel.lock().await.async_get_client())
                    .await
                    .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "Sentinel did not answer")))??;
                match found.get_connection_info().addr() {
                    redis::ConnectionAddr::Tcp(host, port) => {
                        redis::Client::open(format!("redis://{auth}{host}:{port}/{db}"))
                    }
                    _ => Ok(found),
                }
            }
        }
    }

    async fn connect(source: &Source) -> redis::RedisResult<ConnectionManager> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        Self::primary(source)
            .await?
            .get_connection_manager_with_config(config)
            .await
    }

    /// The connection to use; with Sentinel, first asks again where the primary
    /// is if a recent failure suggested it moved.
    async fn conn(&self) -> ConnectionManager {
        use std::sync::atomic::Ordering;
        if matches!(self.source, Source::Sentinel { .. }) && self.stale.load(Ordering::Acquire) {
            let due = {
                let mut last = self.last_resolve.lock().unwrap_or_else(|p| p.into_inner());
                let due = last.elapsed() >= RESOLVE_EVERY;
                if due {
                    *last = std::time::Instant::now();
                }
                due
            };
            if due {
                match Self::connect(&self.source).await {
                    Ok(c) => {
                        self.conn.store(Arc::new(c));
                        self.stale.store(false, Ordering::Release);
                        tracing::info!("reconnected to the Redis primary Sentinel names");
                    }
                    Err(e) => tracing::warn!("cannot reach the Redis primary through Sentinel: {e}"),
                }
            }
        }
        (**self.conn.load()).clone()
    }

    /// A store error; with Sentinel, a failure that may mean a failover marks the
    /// connection for re-resolution.
    fn fail(&self, e: redis::RedisError) -> StoreError {
        let moved = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.code() == Some("READONLY");
        if moved && matches!(self.source, Source::Sentinel { .. }) {
            self.stale.store(true, std::sync::atomic::Ordering::Release);
        }
        unavailable(e)
    }

    fn record_key(&self, key: &TokenKey) -> String {
        format!(
            "{}t:{}:{}:{}",
            self.prefix,
            key.app,
            class_name(key.class),
            key.subject()
        )
    }

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

    async fn scan(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn().await;
        let (mut cursor, mut out) = (0u64, Vec::new());
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.fail(e))?;
            out.extend(keys);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    async fn read(&self, rkey: &str) -> Result<Option<Record>, StoreError> {
        Ok(self.read_many(std::slice::from_ref(&rkey)).await?.pop().flatten())
    }

    /// Records by Redis key, in one pipelined round trip.
    async fn read_many<K: AsRef<str>>(&self, rkeys: &[K]) -> Result<Vec<Option<Record>>, StoreError> {
        self.read_each(rkeys).await?.into_iter().collect()
    }

    /// Records by Redis key, in one pipelined round trip, each readable or not.
    async fn read_each<K: AsRef<str>>(
        &self,
        rkeys: &[K],
    ) -> Result<Vec<Result<Option<Record>, StoreError>>, StoreError> {
        type Row = (
            Option<u64>,
            Option<Vec<u8>>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        if rkeys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await;
        let mut pipe = redis::pipe();
        for k in rkeys {
            pipe.cmd("HMGET").arg(k.as_ref()).arg(&["v", "s", "a", "c", "o"]);
        }
        let rows: Vec<Row> = pipe.query_async(&mut conn).await.map_err(|e| self.fail(e))?;
        Ok(rows
            .into_iter()
            .map(|(v, s, a, c, o)| {
                let (Some(v), Some(s), Some(a), Some(c), Some(o)) = (v, s, a, c, o) else {
                    return Ok(None);
                };
                let Some(class) = class_from(&c) else { return Ok(None) };
                let key = TokenKey::stored(a.into(), class, &o);
                Record::open(&self.keys, key, v, &s).map(Some)
            })
            .collect())
    }

    /// One step of a pass over every record: the records under the keys one `SCAN` step
    /// returns (read in one pipelined round trip; unreadable ones logged and skipped), and the
    /// cursor of the next step (0: the pass is over).
    pub async fn sweep_page(&self, cursor: u64) -> Result<(u64, Vec<Record>), StoreError> {
        let pattern = format!("{}t:*", glob_escape(&self.prefix));
        let mut conn = self.conn().await;
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(READ_BATCH)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        let mut out = Vec::with_capacity(keys.len());
        for r in self.read_each(&keys).await? {
            match r {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => tracing::warn!("skipping a stored token in the sweep: {e}"),
            }
        }
        Ok((next, out))
    }

    /// Every record, read in pipelined batches.
    pub async fn load_all(&self) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        let keys = self.scan(&format!("{}t:*", glob_escape(&self.prefix))).await?;
        for chunk in keys.chunks(READ_BATCH) {
            out.extend(self.read_many(chunk).await?.into_iter().flatten());
        }
        Ok(out)
    }

    /// Several records, in the order of `keys`, in pipelined batches.
    pub async fn get_many(&self, keys: &[TokenKey]) -> Result<Vec<Option<Record>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(READ_BATCH) {
            let rkeys: Vec<String> = chunk.iter().map(|k| self.record_key(k)).collect();
            out.extend(self.read_many(&rkeys).await?);
        }
        Ok(out)
    }

    /// Writes records that are not stored yet, at version 1, in pipelined batches and without
    /// compare-and-swap or events: a bulk load into an empty key prefix (a migration, the
    /// `redis_scale` bench), never for a prefix instances are using.
    pub async fn insert_new(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut conn = self.conn().await;
        for chunk in records.chunks(READ_BATCH) {
            let mut pipe = redis::pipe();
            for rec in chunk {
                let sealed = self.keys.seal(&Record::aad(&rec.key), &rec.body());
                pipe.cmd("HSET")
                    .arg(self.record_key(&rec.key))
                    .arg("v")
                    .arg(1)
                    .arg("s")
                    .arg(sealed)
                    .arg("a")
                    .arg(&*rec.key.app)
                    .arg("c")
                    .arg(class_name(rec.key.class))
                    .arg("o")
                    .arg(rec.key.subject())
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn).await.map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// One record.
    pub async fn get(&self, key: &TokenKey) -> Result<Option<Record>, StoreError> {
        self.read(&self.record_key(key)).await
    }

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

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

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

    /// Delivers change events until `stop` fires, resubscribing after a lost connection (each
    /// subscription starts with [`StoreEvent::Resync`]).
    pub async fn listen(
        &self,
        events: tokio::sync::mpsc::UnboundedSender<StoreEvent>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        use futures_util::StreamExt;
        let channel = self.channel();
        let mut delay = Duration::from_millis(100);
        loop {
            let subscribed = async {
                let mut ps = Self::primary(&self.source).await?.get_async_pubsub().await?;
                ps.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(ps)
            };
            match tokio::time::timeout(CONNECT_TIMEOUT, subscribed).await {
                Ok(Ok(ps)) => {
                    delay = Duration::from_millis(100);
                    let _ = events.send(StoreEvent::Resync);
                    let mut stream = ps.into_on_message();
                    loop {
                        tokio::select! {
                            msg = stream.next() => {
                                let Some(msg) = msg else { break };
                                let Ok(payload) = msg.get_payload::<String>() else { continue };
                                let mut parts = payload.splitn(4, '\t');
                                let (Some(app), Some(class), Some(subject), Some(v)) = (parts.next(), parts.next(), parts.next(), parts.next()) else { continue };
                                let (Some(class), Ok(v)) = (class_from(class), v.parse::<u64>()) else { continue };
                                let key = TokenKey::stored(app.into(), class, subject);
                                let _ = events.send(if v == 0 { StoreEvent::Deleted(key) } else { StoreEvent::Changed(key, v) });
                            }
                            _ = stop.changed() => return,
                        }
                    }
                    tracing::warn!("lost the Redis event subscription; resubscribing");
                }
                _ => tracing::warn!("cannot subscribe to Redis events; retrying in {} ms", delay.as_millis()),
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

/// A Redis URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}[redacted]@{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls() {
        let (nodes, service, auth, db) = parse_sentinel("redis+sentinel://:pw@h1:26379,h2:26380/mymaster/2").unwrap();
        assert_eq!(nodes, ["redis://h1:26379", "redis://h2:26380"]);
        assert_eq!((service.as_str(), auth.as_str(), db), ("mymaster", ":pw@", 2));
        assert_eq!(parse_sentinel("redis+sentinel://h:26379/m").unwrap().3, 0);
        assert!(parse_sentinel("redis+sentinel://h:26379").is_err());
        assert!(parse_sentinel("redis+sentinel://h:26379/m/x").is_err());
        assert!(parse_sentinel("redis+sentinel:///m").is_err());
    }

    #[test]
    fn urls_and_globs() {
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://[redacted]@h:6379/0");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
    }
}
