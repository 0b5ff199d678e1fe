//! The pass over a shared store: a page of records each maintenance round, renewing the users no
//! call has brought into this instance's cache, and counting every stored token for the gauges.

use super::view::{TokenInfo, TokenState};
use super::{due, REAUTHORIZE_HORIZON};
use crate::token::{unix_now, TokenClass, Tokens};
use std::sync::Arc;
use std::time::Instant;

/// Stored records the renewal sweep reads per maintenance round (a few pipelined round trips):
/// with the default 60 s round, a pass over 1,000,000 users takes about 3 hours, well inside the
/// 7-day renewal window.
pub const SWEEP_PER_ROUND: usize = 5_000;

/// Where a pass over a shared store stands.
#[derive(Default)]
pub(crate) struct Sweep {
    cursor: u64,
    tally: Tally,
}

/// Tokens counted by state, and users by re-consent forecast.
#[derive(Default, Clone)]
pub(crate) struct Tally {
    tokens: std::collections::HashMap<(Arc<str>, TokenClass, TokenState), i64>,
    reauthorization: std::collections::HashMap<(Arc<str>, &'static str), i64>,
}

impl Tally {
    pub(super) fn add(&mut self, info: &TokenInfo) {
        let app = Arc::clone(&info.key.app);
        *self
            .tokens
            .entry((Arc::clone(&app), info.key.class, info.state))
            .or_default() += 1;
        if info.key.class != TokenClass::User {
            return;
        }
        let horizon = unix_now() + REAUTHORIZE_HORIZON.as_secs();
        let when = match (info.state, info.reauthorize_by) {
            (TokenState::ReauthorizationRequired, _) => "required",
            (_, Some(by)) if by <= horizon => "within_7d",
            _ => return,
        };
        *self.reauthorization.entry((app, when)).or_default() += 1;
    }

    /// The counts: tokens by app, class and state; users by app and forecast.
    #[allow(clippy::type_complexity)]
    pub(super) fn into_counts(
        self,
    ) -> (
        std::collections::HashMap<(Arc<str>, TokenClass, TokenState), i64>,
        std::collections::HashMap<(Arc<str>, &'static str), i64>,
    ) {
        (self.tokens, self.reauthorization)
    }

    pub(super) fn merge(&mut self, other: &Tally) {
        for (k, n) in &other.tokens {
            *self.tokens.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &other.reauthorization {
            *self.reauthorization.entry(k.clone()).or_default() += n;
        }
    }
}

impl Tokens {
    /// One step of the pass over a shared store.
    pub(super) async fn sweep_store(&self) {
        let Ok(mut sweep) = self.upkeep.sweep.try_lock() else {
            return;
        };
        let tuning = self.settings.load().tuning;
        let (now, now_unix) = (Instant::now(), unix_now());
        let mut seen = 0;
        while seen < SWEEP_PER_ROUND {
            let (next, records) = match self.persist.store().sweep_page(sweep.cursor).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!("the renewal sweep could not read the token store: {e}");
                    return;
                }
            };
            // An empty SCAN step still moves the pass on.
            seen += records.len().max(1);
            for r in records {
                if r.key.class.is_app_level() {
                    continue; // every instance holds its apps' own tokens
                }
                let key = self.names.key(&self.settings.load(), r.key.clone());
                let slot = self.cache.get(&key);
                let cached = slot.as_ref().and_then(|s| s.current());
                let token = match cached {
                    Some(t) if t.version >= r.version => t,
                    _ => match self.token_of(r) {
                        Ok(t) => Arc::new(t),
                        Err(_) => continue,
                    },
                };
                let info = Self::info(&key, Some(&token), now, now_unix, tuning);
                if slot.is_none() {
                    self.announce_due(&info);
                }
                sweep.tally.add(&info);
                if key.class == TokenClass::User && slot.is_none() && due(&token, tuning) {
                    let slot = self.cache.slot(&key);
                    if slot.is_empty() {
                        slot.set((*token).clone());
                    }
                    self.maintain_one(&key, &slot).await;
                }
            }
            sweep.cursor = next;
            if next == 0 {
                let done = std::mem::take(&mut sweep.tally);
                *self.upkeep.swept.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(done));
                break;
            }
        }
    }
}
