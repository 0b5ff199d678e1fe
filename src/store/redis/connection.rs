//! Finding the primary (one address, or asked of Sentinels again after a failover) and keeping
//! a connection to it that reconnects by itself.

use super::{unavailable, RedisStore};
use crate::store::StoreError;
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::time::Duration;

/// Redis calls slower than this count as failures: a token fetch must not hang on the store.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connecting (or asking Sentinel) longer than this is a failure, for the same reason.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the current primary is.
pub(super) enum Source {
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

impl Source {
    /// The source a `[store] url` names: `redis+sentinel://…` asks Sentinels, anything else is
    /// one address.
    pub(super) fn from_url(url: &str) -> Result<Source, String> {
        if !url.starts_with("redis+sentinel://") {
            return Ok(Source::Direct(
                redis::Client::open(url).map_err(|e| format!("[store] url: {e}"))?,
            ));
        }
        let (nodes, service, auth, db) = parse_sentinel(url).map_err(|e| format!("[store] url: {e}"))?;
        let sentinel =
            redis::sentinel::SentinelClient::build(nodes, service, None, redis::sentinel::SentinelServerType::Master)
                .map_err(|e| format!("[store] url: {e}"))?;
        Ok(Source::Sentinel {
            sentinel: tokio::sync::Mutex::new(sentinel),
            auth,
            db,
        })
    }
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

impl RedisStore {
    /// A client for the current primary.
    pub(super) async fn primary(source: &Source) -> redis::RedisResult<redis::Client> {
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

    /// A connection manager to the current primary, with the gateway's timeouts.
    pub(super) async fn connect(source: &Source) -> redis::RedisResult<ConnectionManager> {
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
    pub(super) async fn conn(&self) -> ConnectionManager {
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
    pub(super) fn fail(&self, e: redis::RedisError) -> StoreError {
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

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| self.fail(e))
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
    fn urls() {
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://[redacted]@h:6379/0");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }
}
