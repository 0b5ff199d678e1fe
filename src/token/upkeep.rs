//! Upkeep of the cache: renewing refresh_tokens before they expire, writing
//! changes the store missed, and what the admin API and gauges see.

use super::cache::{Slot, Tokens, Tuning};
use super::events::Event;
use super::persist::{Coordinated, Mode};
use super::{issuer, unix_now, Grant, GrantState, Token, TokenClass, TokenError, TokenKey};
use crate::store::{Record, StoreEvent};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Cached tokens compared with the store per round trip after a resubscription.
const RESYNC_BATCH: usize = 500;

/// How far ahead the re-consent forecast looks.
pub const REAUTHORIZE_HORIZON: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where a cached token stands, as the admin API, the status page and the gauges show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TokenState {
    /// Live.
    Valid,
    /// Past its expiry (a call will refresh it).
    Expired,
    /// No token: its fetch failed, or none has been made.
    Failed,
    /// A user whose refresh_token is dead or cannot be renewed: must authorize again.
    ReauthorizationRequired,
}

impl TokenState {
    /// Every state, in the order the gauges list them.
    pub const ALL: [TokenState; 4] = [
        TokenState::Valid,
        TokenState::Expired,
        TokenState::Failed,
        TokenState::ReauthorizationRequired,
    ];

    /// Its name in the admin API and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Valid => "valid",
            TokenState::Expired => "expired",
            TokenState::Failed => "failed",
            TokenState::ReauthorizationRequired => "reauthorization_required",
        }
    }

    /// Whether a token of `class` can be in this state (only users must re-authorize).
    pub fn applies_to(self, class: TokenClass) -> bool {
        self != TokenState::ReauthorizationRequired || class == TokenClass::User
    }
}

impl std::fmt::Display for TokenState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for TokenState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What the gauges show: tokens by app, class and state, and users by re-consent forecast
/// (`required`, `within_7d`), with every configured app (and whether it has a mini-app token) so
/// that its series can start at zero.
#[derive(Debug, Default)]
pub struct Census {
    /// The configured apps, and whether each has a mini-app token.
    pub apps: Vec<(Arc<str>, bool)>,
    /// Tokens by app, class and state.
    pub tokens: std::collections::HashMap<(Arc<str>, TokenClass, TokenState), i64>,
    /// Users by app and forecast.
    pub reauthorization: std::collections::HashMap<(Arc<str>, &'static str), i64>,
}

/// A token as the admin API and gauges see it: never its value.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    /// Which token.
    pub key: TokenKey,
    /// Where it stands.
    pub state: TokenState,
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
    ///
    /// With a shared store, each round also takes the next step of a pass over the whole store
    /// ([`SWEEP_PER_ROUND`] records): users no call has needed on this instance are renewed
    /// too, and the pass counts every stored token by state for the gauges.
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
            if self.events().wants_due() {
                let t = slot.current.load_full();
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

    /// One step of the pass over a shared store.
    async fn sweep_store(&self) {
        let Ok(mut sweep) = self.sweep.try_lock() else { return };
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
                let key = r.key.clone();
                let slot = self.slots.get(&key).map(|s| Arc::clone(&s));
                let cached = slot.as_ref().and_then(|s| s.current.load_full());
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
                    let slot = Arc::clone(&self.slots.entry(key.clone()).or_default());
                    if slot.current.load().is_none() {
                        Self::adopt(&slot, (*token).clone());
                    }
                    self.maintain_one(&key, &slot).await;
                }
            }
            sweep.cursor = next;
            if next == 0 {
                let done = std::mem::take(&mut sweep.tally);
                *self.swept.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(done));
                break;
            }
        }
    }

    async fn maintain_one(&self, key: &TokenKey, slot: &Slot) {
        let settings = self.settings.load_full();
        let tuning = settings.tuning;
        let _flight = slot.flight.lock().await;
        let Some(mut t) = slot.current.load_full() else { return };
        let due = |t: &Token| due(t, tuning);
        if !due(&t) {
            return;
        }
        // Several instances: one renews (the others would find the refresh_token dead).
        let mut lease = None;
        if self.persist.store().is_shared() {
            match self.persist.coordinate(key, t.version, tuning.fetch_timeout).await {
                Coordinated::Adopted(r) => {
                    let Ok(newer) = self.token_of(r) else { return };
                    let newer = Self::adopt(slot, newer);
                    if !due(&newer) {
                        return;
                    }
                    t = newer;
                    match self.persist.store().acquire(key, tuning.fetch_timeout).await {
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
            self.persist.release(lease).await;
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
        self.events().publish(&Event::Renewal { key, outcome });
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
                    _ => GrantState::Dead(Arc::new(e.to_string())),
                };
                let why = e;
                if let TokenError::AuthorizationRequired(reason) = &why {
                    self.events().publish(&Event::ReauthorizationRequired {
                        app: &key.app,
                        open_id: key.open_id().unwrap_or(""),
                        reason,
                    });
                }
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
            Err(e) => {
                self.events().publish(&Event::Failed { key, error: &e });
                tracing::warn!(app = %key.app, "refresh_token renewal failed: {e}")
            }
        }
        self.persist.release(lease).await;
    }

    /// Writes the changes the store missed while it was unreachable.
    pub(super) async fn flush_dirty(&self) {
        let dirty: Vec<(TokenKey, Arc<Slot>)> = self
            .slots
            .iter()
            .filter(|e| e.value().dirty.load(Ordering::Acquire))
            .map(|e| (e.key().clone(), Arc::clone(e.value())))
            .collect();
        for (key, slot) in dirty {
            let _flight = slot.flight.lock().await;
            let Some(t) = slot.current.load_full() else { continue };
            let version = t.version;
            self.publish(&slot, &key, (*t).clone(), version, Mode::KeepGrant, None)
                .await;
        }
    }

    /// A change another instance published: adopt a newer token, forget a deleted one, or after
    /// a resubscription compare every cached token with the store (in bulk) and write back what
    /// the store lost.
    pub async fn on_store_event(&self, event: StoreEvent) {
        match event {
            StoreEvent::Resync => {
                let keys: Vec<TokenKey> = self.slots.iter().map(|e| e.key().clone()).collect();
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
                self.slots.remove(&key);
            }
            StoreEvent::Changed(key, version) => self.refresh_from_store(&key, version).await,
        }
    }

    async fn refresh_from_store(&self, key: &TokenKey, at_least: u64) {
        let Some(slot) = self.slots.get(key).map(|s| Arc::clone(&s)) else {
            return;
        };
        if slot.current.load().as_ref().is_some_and(|t| t.version >= at_least) {
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
        let Some(slot) = self.slots.get(key).map(|s| Arc::clone(&s)) else {
            return;
        };
        match record {
            Some(r) => {
                let newer = slot.current.load().as_ref().is_none_or(|t| r.version > t.version);
                if newer {
                    if let Ok(t) = self.token_of(r) {
                        Self::adopt(&slot, t);
                    }
                }
            }
            None if at_least == 0 && slot.current.load().is_some() => {
                slot.dirty.store(true, Ordering::Release);
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

    /// Sends `user.reauthorization_due` once per user and deadline when the deadline comes
    /// within 7 days (the `within_7d` of the forecast); a user who re-consents gets a later
    /// deadline, and a new announcement when that one comes near.
    pub(super) fn announce_due(&self, info: &TokenInfo) {
        let (Some(by), Some(open_id)) = (info.reauthorize_by, info.key.open_id()) else {
            return;
        };
        // A dead refresh_token was announced as `user.reauthorization_required`; one that cannot
        // be renewed again still works until its deadline, which is what this announces.
        let dead = info
            .grant
            .as_deref()
            .is_some_and(|g| matches!(g.state, GrantState::Dead(_)));
        if info.key.class != TokenClass::User || dead {
            return;
        }
        if by > unix_now() + REAUTHORIZE_HORIZON.as_secs() {
            self.due_announced.remove(&info.key);
            return;
        }
        if self.due_announced.insert(info.key.clone(), by) != Some(by) {
            self.events().publish(&Event::ReauthorizationDue {
                app: &info.key.app,
                open_id,
                by_unix: by,
            });
        }
    }

    /// Users who must re-authorize now or within 7 days, soonest first, whose open_id contains
    /// `search`: the total, and `limit` of them from `offset`. Walks the cached users once
    /// without copying the others (with a shared store: the users this instance has read).
    pub fn forecast(&self, search: &str, offset: usize, limit: usize) -> (usize, Vec<TokenInfo>) {
        let (now, now_unix, tuning) = (Instant::now(), unix_now(), self.settings.load().tuning);
        let horizon = now_unix + REAUTHORIZE_HORIZON.as_secs();
        let mut due: Vec<TokenInfo> = self
            .slots
            .iter()
            .filter(|e| e.key().class == TokenClass::User && e.key().open_id().is_some_and(|o| o.contains(search)))
            .filter_map(|e| {
                let info = Self::info(e.key(), e.value().current.load_full().as_ref(), now, now_unix, tuning);
                let soon = info.state == TokenState::ReauthorizationRequired
                    || info.reauthorize_by.is_some_and(|b| b <= horizon);
                soon.then_some(info)
            })
            .collect();
        due.sort_by(|a, b| (a.reauthorize_by, &a.key).cmp(&(b.reauthorize_by, &b.key)));
        let total = due.len();
        (total, due.into_iter().skip(offset).take(limit).collect())
    }

    /// One cached token's state, without its value; `None` when it is not cached.
    pub fn info_of(&self, key: &TokenKey) -> Option<TokenInfo> {
        let slot = self.slots.get(key).map(|s| Arc::clone(&s))?;
        let t = slot.current.load_full();
        Some(Self::info(
            key,
            t.as_ref(),
            Instant::now(),
            unix_now(),
            self.settings.load().tuning,
        ))
    }

    /// Every cached token's state, without values. With a shared store: the tokens this
    /// instance has read (its apps' client tokens, and the users its calls or its renewals needed).
    pub fn snapshot(&self) -> Vec<TokenInfo> {
        let now = Instant::now();
        let now_unix = unix_now();
        let tuning = self.settings.load().tuning;
        let mut out: Vec<TokenInfo> = self
            .slots
            .iter()
            .map(|e| Self::info(e.key(), e.value().current.load_full().as_ref(), now, now_unix, tuning))
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// A token's state as the admin API and gauges see it.
    fn info(key: &TokenKey, current: Option<&Arc<Token>>, now: Instant, now_unix: u64, tuning: Tuning) -> TokenInfo {
        let grant = current.and_then(|t| t.grant.clone());
        let dead = grant
            .as_deref()
            .is_some_and(|g| !g.usable(now_unix) || g.state != GrantState::Active);
        let state = match current {
            Some(_) if dead && key.class == TokenClass::User => TokenState::ReauthorizationRequired,
            Some(t) if now < t.expires_at() => TokenState::Valid,
            Some(_) => TokenState::Expired,
            None => TokenState::Failed,
        };
        let reauthorize_by = grant.as_deref().filter(|_| key.class == TokenClass::User).map(|g| {
            let left = match g.state {
                GrantState::Active => tuning.max_renewals.saturating_sub(g.renewals) as u64,
                _ => 0,
            };
            // Each renewal happens `renew_before` ahead of expiry and adds a full lifetime.
            let step = u64::from(g.refresh_lifetime_secs).saturating_sub(tuning.renew_before.as_secs());
            match g.state {
                GrantState::Dead(_) => now_unix.min(g.refresh_expires_unix),
                _ => g.refresh_expires_unix + left * step,
            }
        });
        TokenInfo {
            key: key.clone(),
            state,
            expires_unix: current.map(|t| t.expires_unix),
            version: current.map_or(0, |t| t.version),
            grant,
            reauthorize_by,
        }
    }

    /// What the gauges show (at scrape time): from the cache; with a shared store, user and biz
    /// tokens from the last complete pass over the store once there is one (every stored user,
    /// not only those read here).
    pub fn census(&self) -> Census {
        let swept = self.swept.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut tally = Tally::default();
        let (now, now_unix, tuning) = (Instant::now(), unix_now(), self.settings.load().tuning);
        for e in self.slots.iter() {
            let info = Self::info(e.key(), e.value().current.load_full().as_ref(), now, now_unix, tuning);
            if swept.is_none() || info.key.class.is_app_level() {
                tally.add(&info);
            }
        }
        if let Some(s) = swept {
            tally.merge(&s);
        }
        let settings = self.settings.load();
        let mut apps: Vec<(Arc<str>, bool)> = settings
            .issuer
            .apps
            .iter()
            .map(|(app, creds)| (Arc::clone(app), creds.mini_app.is_some()))
            .collect();
        apps.sort();
        Census {
            apps,
            tokens: tally.tokens,
            reauthorization: tally.reauthorization,
        }
    }
}

/// Whether a token's refresh_token is due for renewal.
fn due(t: &Token, tuning: Tuning) -> bool {
    let now = unix_now();
    t.grant.as_deref().is_some_and(|g| {
        g.state == GrantState::Active && g.usable(now) && g.refresh_expires_unix <= now + tuning.renew_before.as_secs()
    })
}

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
    fn add(&mut self, info: &TokenInfo) {
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

    fn merge(&mut self, other: &Tally) {
        for (k, n) in &other.tokens {
            *self.tokens.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &other.reauthorization {
            *self.reauthorization.entry(k.clone()).or_default() += n;
        }
    }
}
