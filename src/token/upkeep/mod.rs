//! Upkeep of the cache: renewing refresh_tokens before they expire, writing
//! changes the store missed, and what the admin API and gauges see.

use super::events::Event;
use super::persist::{Coordinated, Mode};
use super::{issuer, unix_now, Grant, GrantState, Slot, Token, TokenClass, TokenError, TokenKey, Tokens, Tuning};
use dashmap::DashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod authorizers;
mod sweep;
mod sync;
mod view;

pub use sweep::SWEEP_PER_ROUND;
pub use view::{Census, TokenInfo, TokenState};

/// The upkeep's own state: where the pass over a shared store stands and what its last complete
/// pass counted, and which users were told they are due to re-consent.
#[derive(Default)]
pub(crate) struct Upkeep {
    sweep: tokio::sync::Mutex<sweep::Sweep>,
    swept: std::sync::Mutex<Option<Arc<sweep::Tally>>>,
    due_announced: DashMap<TokenKey, u64>,
}

/// How far ahead the re-consent forecast looks.
pub const REAUTHORIZE_HORIZON: Duration = Duration::from_secs(7 * 24 * 3600);

impl Tokens {
    /// Renews refresh_tokens that expire within the renewal window; run
    /// periodically. The old refresh_token dies at once on the platform, so the
    /// new one replaces it in the slot before the slot's lock is released.
    ///
    /// With a shared store, each round also takes the next step of a pass over the whole store
    /// ([`SWEEP_PER_ROUND`] records): users no call has needed on this instance are renewed
    /// too, and the pass counts every stored token by state for the gauges.
    pub async fn maintain(&self) {
        self.flush_dirty().await;
        let (tuning, now_unix, announcing) = (self.settings.load().tuning, unix_now(), self.events().wants_due());
        // Only the users with work this round (a refresh_token to renew, a deadline to announce
        // or forget), not a copy of every user's key and slot: 48 bytes each, a 6 MiB rise
        // every round with 100,000 users. Each is checked again under its slot's lock.
        let work = self.cache.collect(|key, slot| {
            key.class == TokenClass::User
                && slot.current_is(|t| due(t, tuning) || (announcing && self.announces(key, t, tuning, now_unix)))
        });
        for (key, slot) in work {
            self.maintain_one(&key, &slot).await;
            if announcing {
                let t = slot.current();
                let info = Self::info(
                    &key,
                    t.as_ref(),
                    Instant::now(),
                    unix_now(),
                    self.settings.load().tuning,
                );
                self.announce_due(&info);
            }
        }
        if self.persist.store().is_shared() {
            self.sweep_store().await;
        }
    }

    async fn maintain_one(&self, key: &TokenKey, slot: &Slot) {
        let settings = self.settings.load_full();
        let tuning = settings.tuning;
        let _flight = slot.flight().await;
        let Some(t) = slot.current() else { return };
        if !due(&t, tuning) {
            return;
        }
        let Some((t, lease)) = self.renewal_lease(key, slot, t, &tuning).await else {
            return;
        };
        let g = t.grant.as_deref().expect("due implies a grant").clone();
        if g.renewals >= tuning.max_renewals {
            self.renewals_exhausted(key, slot, &t, g, lease).await;
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
        self.events.publish(&Event::Renewal { key, outcome });
        match result {
            Ok(new) => {
                // The old refresh_token is dead: the new one is written before anything else.
                self.put(slot, key, t.with_grant(new), t.version, Mode::KeepGrant, lease.as_ref())
                    .await;
                tracing::info!(app = %key.app, renewals = g.renewals + 1, "refresh_token renewed");
            }
            Err(e @ (TokenError::RenewalsExhausted(_) | TokenError::AuthorizationRequired(_))) => {
                // The renewal limit, or a dead refresh_token: stop renewing; a refresh_token
                // that still lives serves until it expires.
                let state = match &e {
                    TokenError::RenewalsExhausted(_) => GrantState::RenewalsExhausted,
                    _ => GrantState::Dead(Arc::new(e.to_string())),
                };
                let why = e;
                if let TokenError::AuthorizationRequired(reason) = &why {
                    self.events.publish(&Event::ReauthorizationRequired {
                        app: &key.app,
                        open_id: key.open_id().unwrap_or(""),
                        reason,
                    });
                }
                self.put(
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
            Err(e) => {
                self.events.publish(&Event::Failed { key, error: &e });
                tracing::warn!(app = %key.app, "refresh_token renewal failed: {e}")
            }
        }
        self.persist.release(lease).await;
    }

    /// A refresh_token renewed as often as the platform allows: marked so, it serves until it
    /// expires and the user must re-consent before then.
    async fn renewals_exhausted(
        &self,
        key: &TokenKey,
        slot: &Slot,
        t: &Token,
        g: Grant,
        lease: Option<crate::store::Lease>,
    ) {
        let renewals = g.renewals;
        let exhausted = Grant {
            state: GrantState::RenewalsExhausted,
            ..g
        };
        self.put(
            slot,
            key,
            t.with_grant(exhausted),
            t.version,
            Mode::Adopt,
            lease.as_ref(),
        )
        .await;
        self.persist.release(lease).await;
        tracing::warn!(app = %key.app, renewals,
            "a user's refresh_token cannot be renewed again: they must re-consent before it expires");
    }

    /// Several instances: one renews (the others would find the refresh_token dead). The token
    /// to renew and the lease to do it under (none without a shared store); `None` when this
    /// instance is not to renew it now.
    async fn renewal_lease(
        &self,
        key: &TokenKey,
        slot: &Slot,
        t: Arc<Token>,
        tuning: &Tuning,
    ) -> Option<(Arc<Token>, Option<crate::store::Lease>)> {
        if !self.persist.store().is_shared() {
            return Some((t, None));
        }
        match self.persist.coordinate(key, t.version, tuning.fetch_timeout).await {
            Coordinated::Adopted(r) => {
                let newer = slot.set(self.token_of(r).ok()?);
                if !due(&newer, *tuning) {
                    return None;
                }
                match self.persist.store().acquire(key, tuning.fetch_timeout).await {
                    Ok(Some(l)) => Some((newer, Some(l))),
                    _ => None,
                }
            }
            Coordinated::Lease(l) => Some((t, l)),
            Coordinated::Alone | Coordinated::TimedOut => None,
        }
    }

    /// Writes the changes the store missed while it was unreachable.
    async fn flush_dirty(&self) {
        let dirty = self.cache.collect(|_, slot| slot.is_dirty());
        for (key, slot) in dirty {
            let _flight = slot.flight().await;
            let Some(t) = slot.current() else { continue };
            let version = t.version;
            self.put(&slot, &key, (*t).clone(), version, Mode::KeepGrant, None)
                .await;
        }
    }
}

/// Whether a token's refresh_token is due for renewal.
pub(super) fn due(t: &Token, tuning: Tuning) -> bool {
    let now = unix_now();
    t.grant.as_deref().is_some_and(|g| {
        g.state == GrantState::Active && g.usable(now) && g.refresh_expires_unix <= now + tuning.renew_before.as_secs()
    })
}
