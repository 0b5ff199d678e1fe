//! What the admin API, the status page and the gauges see of the cache: each token's state
//! ([`TokenInfo`]), the re-consent forecast, and the census the gauges are set from.

use super::sweep::Tally;
use super::REAUTHORIZE_HORIZON;
use crate::token::events::Event;
use crate::token::{unix_now, Grant, GrantState, Token, TokenClass, TokenKey, Tokens, Tuning};
use std::sync::Arc;
use std::time::Instant;

/// Where a cached token stands, as the admin API, the status page and the gauges show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TokenState {
    /// Live: calls carry it.
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

    /// Whether a token of `class` can be in this state (only users and merchant apps must
    /// re-authorize).
    pub fn applies_to(self, class: TokenClass) -> bool {
        self != TokenState::ReauthorizationRequired || matches!(class, TokenClass::User | TokenClass::Authorizer)
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
/// (`required`, `within_7d`), with every configured app (and whether it has a mini-app token) and
/// provider so that its series can start at zero.
#[derive(Debug, Default)]
pub struct Census {
    /// The configured apps, and whether each has a mini-app token.
    pub apps: Vec<(Arc<str>, bool)>,
    /// The configured service providers: their merchant apps count in `tokens` as
    /// [`TokenClass::Authorizer`], the provider's name as the app.
    pub providers: Vec<Arc<str>>,
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
            self.upkeep.due_announced.remove(&info.key);
            return;
        }
        if self.upkeep.due_announced.insert(info.key.clone(), by) != Some(by) {
            self.events.publish(&Event::ReauthorizationDue {
                app: &info.key.app,
                open_id,
                by_unix: by,
            });
        }
    }

    /// Whether [`Tokens::announce_due`] would do anything for user `key`'s token `t`: announce a
    /// deadline within the horizon not announced yet (or announced as another), or forget one
    /// that left it. Read without building the token's [`TokenInfo`]; a user announced already,
    /// deadline unchanged, is not picked again round after round.
    pub(super) fn announces(&self, key: &TokenKey, t: &Token, tuning: Tuning, now_unix: u64) -> bool {
        let Some(g) = t.grant.as_deref() else {
            return false;
        };
        if key.class != TokenClass::User || matches!(g.state, GrantState::Dead(_)) {
            return false;
        }
        let by = reauthorize_by(g, tuning, now_unix);
        let announced = self.upkeep.due_announced.get(key).map(|e| *e.value());
        if by <= now_unix + REAUTHORIZE_HORIZON.as_secs() {
            announced != Some(by)
        } else {
            announced.is_some()
        }
    }

    /// Users who must re-authorize now or within 7 days, soonest first, whose open_id contains
    /// `search`: the total, and `limit` of them from `offset`. Walks the cached users once
    /// without copying the others (with a shared store: the users this instance has read).
    pub fn forecast(&self, search: &str, offset: usize, limit: usize) -> (usize, Vec<TokenInfo>) {
        let (now, now_unix, tuning) = (Instant::now(), unix_now(), self.settings.load().tuning);
        let horizon = now_unix + REAUTHORIZE_HORIZON.as_secs();
        let mut due: Vec<TokenInfo> = Vec::new();
        self.cache.for_each(|key, slot| {
            if key.class != TokenClass::User || !key.open_id().is_some_and(|o| o.contains(search)) {
                return;
            }
            let info = Self::info(key, slot.current().as_ref(), now, now_unix, tuning);
            let soon =
                info.state == TokenState::ReauthorizationRequired || info.reauthorize_by.is_some_and(|b| b <= horizon);
            if soon {
                due.push(info);
            }
        });
        due.sort_by(|a, b| (a.reauthorize_by, &a.key).cmp(&(b.reauthorize_by, &b.key)));
        let total = due.len();
        (total, due.into_iter().skip(offset).take(limit).collect())
    }

    /// One cached token's state, without its value; `None` when it is not cached.
    pub fn info_of(&self, key: &TokenKey) -> Option<TokenInfo> {
        let slot = self.cache.get(key)?;
        let t = slot.current();
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
        let mut out: Vec<TokenInfo> = Vec::new();
        self.cache
            .for_each(|key, slot| out.push(Self::info(key, slot.current().as_ref(), now, now_unix, tuning)));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// A token's state as the admin API and gauges see it.
    pub(super) fn info(
        key: &TokenKey,
        current: Option<&Arc<Token>>,
        now: Instant,
        now_unix: u64,
        tuning: Tuning,
    ) -> TokenInfo {
        let grant = current.and_then(|t| t.grant.clone());
        let dead = grant
            .as_deref()
            .is_some_and(|g| !g.usable(now_unix) || g.state != GrantState::Active);
        let state = match current {
            // A merchant app's grant is spent by design (single use): only a dead one counts.
            Some(_) if dead && key.class == TokenClass::User => TokenState::ReauthorizationRequired,
            Some(_)
                if key.class == TokenClass::Authorizer
                    && grant.as_deref().is_some_and(|g| matches!(g.state, GrantState::Dead(_))) =>
            {
                TokenState::ReauthorizationRequired
            }
            Some(t) if now < t.expires_at() => TokenState::Valid,
            Some(_) => TokenState::Expired,
            None => TokenState::Failed,
        };
        let reauthorize_by = grant
            .as_deref()
            .filter(|_| key.class == TokenClass::User)
            .map(|g| reauthorize_by(g, tuning, now_unix));
        TokenInfo {
            key: key.clone(),
            state,
            expires_unix: current.map(|t| t.expires_unix.into()),
            version: current.map_or(0, |t| t.version),
            grant,
            reauthorize_by,
        }
    }

    /// What the gauges show (at scrape time): from the cache; with a shared store, user and biz
    /// tokens from the last complete pass over the store once there is one (every stored user,
    /// not only those read here).
    pub fn census(&self) -> Census {
        let swept = self.upkeep.swept.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut tally = Tally::default();
        let (now, now_unix, tuning) = (Instant::now(), unix_now(), self.settings.load().tuning);
        self.cache.for_each(|key, slot| {
            let info = Self::info(key, slot.current().as_ref(), now, now_unix, tuning);
            if swept.is_none() || info.key.class.is_app_level() {
                tally.add(&info);
            }
        });
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
        let mut providers: Vec<Arc<str>> = settings.issuer.providers.keys().cloned().collect();
        providers.sort();
        let (tokens, reauthorization) = tally.into_counts();
        Census {
            apps,
            providers,
            tokens,
            reauthorization,
        }
    }
}

/// When user grant `g`'s holder must authorize again: now for a dead refresh_token (or when it
/// was to expire, if earlier); otherwise its expiry plus a lifetime for each renewal left, each
/// renewal happening `renew_before` ahead of expiry.
fn reauthorize_by(g: &Grant, tuning: Tuning, now_unix: u64) -> u64 {
    let left = match g.state {
        GrantState::Active => tuning.max_renewals.saturating_sub(g.renewals) as u64,
        _ => 0,
    };
    let step = u64::from(g.refresh_lifetime_secs).saturating_sub(tuning.renew_before.as_secs());
    match g.state {
        GrantState::Dead(_) => now_unix.min(g.refresh_expires_unix),
        _ => g.refresh_expires_unix + left * step,
    }
}
