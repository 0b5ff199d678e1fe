//! Upkeep of the cache: renewing refresh_tokens before they expire, writing
//! changes the store missed, and what the admin API and gauges see.

use super::cache::{Slot, Tokens};
use super::persist::{Coordinated, Mode};
use super::{issuer, unix_now, Grant, GrantState, Token, TokenClass, TokenError, TokenKey};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How far ahead the re-consent forecast looks.
pub const REAUTHORIZE_HORIZON: Duration = Duration::from_secs(7 * 24 * 3600);

/// A token as the admin API and gauges see it: never its value.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    /// Which token.
    pub key: TokenKey,
    /// `valid`, `expired`, `failed` or `reauthorization_required`.
    pub state: &'static str,
    /// The platform's expiry of the token, Unix seconds.
    pub expires_unix: Option<u64>,
    /// The grant behind a user or biz token.
    pub grant: Option<Arc<Grant>>,
    /// When the user must re-consent at the latest, Unix seconds (user tokens).
    pub reauthorize_by: Option<u64>,
    /// The store's version of it (0: not stored).
    pub version: u64,
}

impl Tokens {
    /// Renews refresh_tokens that expire within the renewal window; run
    /// periodically. The old refresh_token dies at once on the platform, so the
    /// new one replaces it in the slot before the slot's lock is released.
    pub async fn maintain(&self) {
        self.flush_dirty().await;
        let due: Vec<(TokenKey, Arc<Slot>)> = self
            .slots
            .iter()
            .filter(|e| e.key().class == TokenClass::User)
            .map(|e| (e.key().clone(), Arc::clone(e.value())))
            .collect();
        for (key, slot) in due {
            self.maintain_one(&key, &slot).await;
        }
    }

    async fn maintain_one(&self, key: &TokenKey, slot: &Slot) {
        let settings = self.settings.load_full();
        let tuning = settings.tuning;
        let _flight = slot.flight.lock().await;
        let Some(mut t) = slot.current.load_full() else { return };
        let due = |t: &Token| {
            let now = unix_now();
            t.grant.as_deref().is_some_and(|g| {
                g.state == GrantState::Active
                    && g.usable(now)
                    && g.refresh_expires_unix <= now + tuning.renew_before.as_secs()
            })
        };
        if !due(&t) {
            return;
        }
        // Several instances: one renews (the others would find the refresh_token dead).
        let mut lease = None;
        if self.store.is_shared() {
            match self.coordinate(key, Some(&t), tuning).await {
                Coordinated::Adopted(newer) => {
                    let newer = Self::adopt(slot, newer);
                    if !due(&newer) {
                        return;
                    }
                    t = newer;
                    match self.store.acquire(key, tuning.fetch_timeout).await {
                        Ok(Some(l)) => lease = Some(l),
                        _ => return,
                    }
                }
                Coordinated::Lease(l) => lease = l,
                Coordinated::Alone | Coordinated::TimedOut => return,
            }
        }
        let g = t.grant.as_deref().expect("due implies a grant").clone();
        if g.renewals >= tuning.max_renewals {
            let exhausted = Grant {
                state: GrantState::RenewalsExhausted,
                ..g.clone()
            };
            self.publish(
                slot,
                key,
                t.with_grant(exhausted),
                t.version,
                Mode::Adopt,
                lease.as_ref(),
            )
            .await;
            self.store.release(lease).await;
            tracing::warn!(app = %key.app, renewals = g.renewals,
                "a user's refresh_token cannot be renewed again: they must re-consent before it expires");
            return;
        }
        let result = tokio::time::timeout(
            tuning.fetch_timeout,
            issuer::renew(&self.client, &settings.issuer, key, &g),
        )
        .await;
        let result = result.unwrap_or(Err(TokenError::Timeout(tuning.fetch_timeout.as_millis() as u64)));
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics.renewals.with_label_values(&[&key.app, outcome]).inc();
        match result {
            Ok(new) => {
                // The old refresh_token is dead: the new one is written before anything else.
                self.publish(slot, key, t.with_grant(new), t.version, Mode::KeepGrant, lease.as_ref())
                    .await;
                tracing::info!(app = %key.app, renewals = g.renewals + 1, "refresh_token renewed");
            }
            Err(e @ (TokenError::RenewalsExhausted(_) | TokenError::AuthorizationRequired(_))) => {
                // The renewal limit, or a dead refresh_token: stop renewing; a refresh_token
                // that still lives serves until it expires.
                let state = match &e {
                    TokenError::RenewalsExhausted(_) => GrantState::RenewalsExhausted,
                    _ => GrantState::Dead(e.to_string()),
                };
                let why = e;
                self.publish(
                    slot,
                    key,
                    t.with_grant(Grant { state, ..g }),
                    t.version,
                    Mode::Adopt,
                    lease.as_ref(),
                )
                .await;
                tracing::warn!(app = %key.app, "refresh_token renewal refused: {why}");
            }
            // Network trouble: the next round tries again (the window is days wide).
            Err(e) => tracing::warn!(app = %key.app, "refresh_token renewal failed: {e}"),
        }
        self.store.release(lease).await;
    }

    /// Every token's state, without values.
    pub fn snapshot(&self) -> Vec<TokenInfo> {
        let now = Instant::now();
        let now_unix = unix_now();
        let tuning = self.settings.load().tuning;
        let mut out: Vec<TokenInfo> = self
            .slots
            .iter()
            .map(|e| {
                let current = e.value().current.load_full();
                let grant = current.as_ref().and_then(|t| t.grant.clone());
                let dead = grant
                    .as_deref()
                    .is_some_and(|g| !g.usable(now_unix) || g.state != GrantState::Active);
                let state = match &current {
                    Some(_) if dead && e.key().class == TokenClass::User => "reauthorization_required",
                    Some(t) if now < t.expires_at() => "valid",
                    Some(_) => "expired",
                    None => "failed",
                };
                let reauthorize_by = grant.as_deref().filter(|_| e.key().class == TokenClass::User).map(|g| {
                    let left = match g.state {
                        GrantState::Active => tuning.max_renewals.saturating_sub(g.renewals) as u64,
                        _ => 0,
                    };
                    // Each renewal happens `renew_before` ahead of expiry and adds a full lifetime.
                    let step = g.refresh_lifetime_secs.saturating_sub(tuning.renew_before.as_secs());
                    match g.state {
                        GrantState::Dead(_) => now_unix.min(g.refresh_expires_unix),
                        _ => g.refresh_expires_unix + left * step,
                    }
                });
                TokenInfo {
                    key: e.key().clone(),
                    state,
                    expires_unix: current.as_ref().map(|t| t.expires_unix),
                    version: current.as_ref().map_or(0, |t| t.version),
                    grant,
                    reauthorize_by,
                }
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Sets the `douyin_gateway_tokens` and `douyin_gateway_reauthorization`
    /// gauges from the cache (at scrape time).
    pub fn update_gauges(&self) {
        self.metrics.tokens.reset();
        self.metrics.reauthorization.reset();
        let horizon = unix_now() + REAUTHORIZE_HORIZON.as_secs();
        for info in self.snapshot() {
            self.metrics
                .tokens
                .with_label_values(&[&info.key.app, info.key.class.as_str(), info.state])
                .inc();
            if info.key.class != TokenClass::User {
                continue;
            }
            let when = match (info.state, info.reauthorize_by) {
                ("reauthorization_required", _) => "required",
                (_, Some(by)) if by <= horizon => "within_7d",
                _ => continue,
            };
            self.metrics
                .reauthorization
                .with_label_values(&[&info.key.app, when])
                .inc();
        }
    }
}
