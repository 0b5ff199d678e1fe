//! Change events: every instance subscribes to `{prefix}events` and updates its cache.

use super::connection::CONNECT_TIMEOUT;
use super::RedisStore;
use crate::store::record::class_from;
use crate::store::StoreEvent;
use crate::vocab::TokenKey;
use std::time::Duration;

impl RedisStore {
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
                                if let Some(event) = event(&payload) {
                                    let _ = events.send(event);
                                }
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

/// The event an `app\tclass\tsubject\tversion` message announces (version 0: deleted); `None`
/// for a message no gateway sent.
fn event(payload: &str) -> Option<StoreEvent> {
    let mut parts = payload.splitn(4, '\t');
    let (Some(app), Some(class), Some(subject), Some(v)) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let (Some(class), Ok(v)) = (class_from(class), v.parse::<u64>()) else {
        return None;
    };
    let key = TokenKey::stored(app.into(), class, subject);
    Some(if v == 0 {
        StoreEvent::Deleted(key)
    } else {
        StoreEvent::Changed(key, v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::TokenClass;

    #[test]
    fn messages() {
        let alice = TokenKey::user("app".into(), "alice");
        assert_eq!(
            event("app\tuser\talice\t3"),
            Some(StoreEvent::Changed(alice.clone(), 3))
        );
        assert_eq!(event("app\tuser\talice\t0"), Some(StoreEvent::Deleted(alice)));
        let biz = TokenKey::stored("app".into(), TokenClass::Biz, "ent\nscope");
        assert_eq!(event("app\tbiz\tent\nscope\t7"), Some(StoreEvent::Changed(biz, 7)));
        for odd in ["", "app\tuser\talice", "app\tnoclass\talice\t1", "app\tuser\talice\tv1"] {
            assert_eq!(event(odd), None, "{odd:?}");
        }
    }
}
