//! Following other instances through a shared store: a change they published is adopted, a
//! deletion forgotten, and after a resubscription every cached token compared with the store.

use crate::store::{Record, StoreEvent};
use crate::token::{TokenKey, Tokens};
use std::sync::Arc;

/// Cached tokens compared with the store per round trip after a resubscription.
const RESYNC_BATCH: usize = 500;

impl Tokens {
    /// A change another instance published: adopt a newer token, forget a deleted one, or after
    /// a resubscription compare every cached token with the store (in bulk) and write back what
    /// the store lost.
    pub async fn on_store_event(&self, event: StoreEvent) {
        match event {
            StoreEvent::Resync => {
                let keys: Vec<TokenKey> = self.cache.collect(|_, _| true).into_iter().map(|(k, _)| k).collect();
                for chunk in keys.chunks(RESYNC_BATCH) {
                    match self.persist.store().get_many(chunk).await {
                        Ok(records) => {
                            for (key, record) in chunk.iter().zip(records) {
                                self.compare_with_stored(key, record, 0);
                            }
                        }
                        Err(e) => {
                            tracing::warn!("could not compare cached tokens with the store after resubscribing: {e}");
                            break;
                        }
                    }
                }
                self.flush_dirty().await;
            }
            StoreEvent::Deleted(key) => {
                self.cache.retain(|k| *k != key);
            }
            StoreEvent::Changed(key, version) => self.refresh_from_store(&key, version).await,
        }
    }

    async fn refresh_from_store(&self, key: &TokenKey, at_least: u64) {
        let Some(slot) = self.cache.get(key) else {
            return;
        };
        if slot.current().is_some_and(|t| t.version >= at_least) {
            return;
        }
        if let Ok(record) = self.persist.store().get(key).await {
            self.compare_with_stored(key, record, at_least);
        }
    }

    /// Adopts a stored record newer than the cached token; `at_least == 0` (a resync) also marks
    /// for writing back a cached token the store lost (Redis restarted without persistence):
    /// this instance holds the surviving copy.
    fn compare_with_stored(&self, key: &TokenKey, record: Option<Record>, at_least: u64) {
        let Some(slot) = self.cache.get(key) else {
            return;
        };
        match record {
            Some(r) => {
                let newer = slot.current().is_none_or(|t| r.version > t.version);
                if newer {
                    if let Ok(t) = self.token_of(r) {
                        slot.set(t);
                    }
                }
            }
            None if at_least == 0 && !slot.is_empty() => {
                slot.set_dirty(true);
            }
            None => {}
        }
    }

    /// With a shared store: follows other instances' changes until `stop`.
    pub fn listen(self: &Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) -> Option<tokio::task::JoinHandle<()>> {
        if !self.persist.store().is_shared() {
            return None;
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let this = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                this.on_store_event(event).await;
            }
        });
        let this = Arc::clone(self);
        Some(tokio::spawn(async move {
            if let crate::store::Store::Redis(r) = this.persist.store() {
                r.listen(tx, stop).await;
            }
        }))
    }
}
