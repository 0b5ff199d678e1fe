//! The hot cache: a `DashMap` of [`Slot`]s read on every request without waiting.
//!
//! Reading: [`Tokens::cached`] finds the slot, loads its current token from an `ArcSwap` (no lock
//! held past the call) and, once the token passed its `refresh_at`, starts one background refresh
//! while the caller carries on. Fetching, one at a time per slot, is [`super::obtain`]'s.

use super::events::Event;
use super::{Slot, Token, TokenKey, Tokens};
use crate::vocab::{KeyRef, Lookup};
use dashmap::DashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What a caller of [`Tokens::obtain`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any live token.
    Any,
    /// The platform rejected generation `n`: drop it (if still current) and get another.
    Rejected(u32),
    /// Generation `n` is getting old: replace it, keeping it in use meanwhile.
    Newer(u32),
}

/// The slots by key, and the generation counter that names each token put in one.
pub(crate) struct Cache {
    slots: DashMap<TokenKey, Arc<Slot>>,
    generation: AtomicU32,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            slots: DashMap::new(),
            generation: AtomicU32::new(1),
        }
    }
}

impl Cache {
    /// `key`'s slot, if it has one.
    pub(crate) fn get(&self, key: &TokenKey) -> Option<Arc<Slot>> {
        self.slots.get(key).map(|s| Arc::clone(&s))
    }

    /// The key as the map holds it (a copy by reference count) and its slot, found from its
    /// parts.
    pub(crate) fn find(&self, key: KeyRef<'_>) -> Option<(TokenKey, Arc<Slot>)> {
        self.slots
            .get(&key as &dyn Lookup)
            .map(|e| (e.key().clone(), Arc::clone(e.value())))
    }

    /// `key`'s slot, made empty if it had none.
    pub(crate) fn slot(&self, key: &TokenKey) -> Arc<Slot> {
        Arc::clone(&self.slots.entry(key.clone()).or_default())
    }

    /// Keeps the slots whose key `keep` says; returns how many went.
    pub(crate) fn retain(&self, keep: impl Fn(&TokenKey) -> bool) -> usize {
        let before = self.slots.len();
        self.slots.retain(|k, _| keep(k));
        before - self.slots.len()
    }

    /// The slots `pick` picks, copied out (no map lock held by the caller afterwards).
    pub(crate) fn collect(&self, pick: impl Fn(&TokenKey, &Slot) -> bool) -> Vec<(TokenKey, Arc<Slot>)> {
        self.slots
            .iter()
            .filter(|e| pick(e.key(), e.value()))
            .map(|e| (e.key().clone(), Arc::clone(e.value())))
            .collect()
    }

    /// Visits every slot under the map's read locks (for counting: `visit` must not touch the
    /// map).
    pub(crate) fn for_each(&self, mut visit: impl FnMut(&TokenKey, &Slot)) {
        for e in self.slots.iter() {
            visit(e.key(), e.value());
        }
    }

    /// The name of the next token made: never 0 (which names no token), distinct among the
    /// last 4 billion tokens (4 bytes in every cached token; it is only compared for equality).
    pub(crate) fn next_generation(&self) -> u32 {
        loop {
            let g = self.generation.fetch_add(1, Ordering::Relaxed);
            if g != 0 {
                return g;
            }
        }
    }
}

impl Tokens {
    /// The hot path: a live cached token, without waiting. Counts hit or miss,
    /// and starts a background refresh once the token is getting old.
    pub fn cached(self: &Arc<Self>, key: &TokenKey) -> Option<Arc<Token>> {
        let hit = self.cache.get(key).and_then(|slot| self.live(slot, key));
        if hit.is_none() {
            self.events.publish(&Event::Cache {
                class: key.class,
                hit: false,
            });
        }
        hit
    }

    /// [`Tokens::cached`] from a key's parts, in one lookup and without allocating: on a hit the
    /// key as the cache holds it and the token. A miss is not counted: the caller goes on with
    /// [`KeyRef::to_key`] and [`Tokens::cached`] or [`Tokens::obtain`], which count it.
    pub fn cached_by(self: &Arc<Self>, parts: KeyRef<'_>) -> Option<(TokenKey, Arc<Token>)> {
        let (key, slot) = self.cache.find(parts)?;
        let token = self.live(slot, &key)?;
        Some((key, token))
    }

    /// The slot's token if live (a hit, counted; a background refresh started once it is
    /// getting old).
    fn live(self: &Arc<Self>, slot: Arc<Slot>, key: &TokenKey) -> Option<Arc<Token>> {
        let t = slot.current()?;
        let now = Instant::now();
        if now >= t.expires_at() {
            return None;
        }
        self.events.publish(&Event::Cache {
            class: key.class,
            hit: true,
        });
        if now >= t.refresh_at() && slot.start_refresh() {
            let this = Arc::clone(self);
            let (key, generation) = (key.clone(), t.generation);
            tokio::spawn(async move {
                let _ = this.obtain_in(&slot, &key, Need::Newer(generation)).await;
                slot.end_refresh();
            });
        }
        Some(t)
    }

    /// Counts and explains a token the platform rejected in the first half of its life, once per
    /// token however many calls carried it: the usual cause is another fetcher with the same
    /// credentials (only the latest two client_tokens stay valid), or a user who revoked the app.
    pub fn note_rejected(&self, key: &TokenKey, token: &Token) {
        let obtained = token.obtained_at();
        let life = token.expires_at().saturating_duration_since(obtained);
        let age = obtained.elapsed();
        if token.replaced_rejected || age >= life / 2 || token.evicted_noted.set() {
            return;
        }
        self.events.publish(&Event::EvictedEarly {
            key,
            age_s: age.as_secs(),
        });
        match key.class {
            c if c.is_app_level() => tracing::warn!(app = %key.app, class = c.as_str(), age_s = age.as_secs(),
                "the platform rejected an app token long before its expiry: something else is fetching \
                 this app's tokens with its credentials (another gateway with its own store, a test environment \
                 using production keys, a home-made token server, an SDK fetching its own); only the latest two \
                 stay valid. Let one owner fetch."),
            _ => tracing::warn!(app = %key.app, class = key.class.as_str(), age_s = age.as_secs(),
                "the platform rejected a token long before its expiry: the user may have revoked the app, \
                 or another system refreshed or re-authorized this user"),
        }
    }
}
