//! Getting a token that is not cached live: one fetch per slot at a time, however many calls
//! wait.
//!
//! [`Tokens::obtain`] takes the slot's flight. Whoever holds it fetches; the others wait, then
//! find the new token and return it: one call to the platform however many requests wait. With a
//! shared store the instances first agree who fetches (`persist`); an app-level token's fetches
//! are held to its budget (`budget`); a failure starts a back-off (doubling, capped) during which
//! callers fail fast with the last error, so an outage cannot turn into a fetch storm that trips
//! the platform's rate limit.

use super::events::Event;
use super::issuer::{self, Fetched};
use super::persist::{Coordinated, Mode};
use super::slot::Flight;
use super::{Grant, GrantState, Need, Settings, Slot, Token, TokenClass, TokenError, TokenKey, Tokens, Tuning};
use crate::store::Lease;
use std::sync::Arc;
use std::time::Instant;

/// A component token is fetched again once less than this remains (seconds).
const COMPONENT_RENEW_BEFORE_SECS: f64 = 30.0 * 60.0;

/// Why authorizing a user with a code failed ([`Tokens::authorize_with_code`]).
#[derive(Debug)]
pub enum CodeFailure {
    /// The platform refused the code, or could not be reached.
    Exchange(TokenError),
    /// The tokens could not be kept.
    Store(TokenError),
}

/// What the instances' coordination left to do.
enum Coordination {
    /// Another instance stored a live token: it is in use now.
    Done(Arc<Token>),
    /// Fetch, refreshing with `current`'s grant, under `lease` if the store has leases.
    Fetch {
        current: Option<Arc<Token>>,
        lease: Option<Lease>,
    },
}

impl Tokens {
    /// Gets a token as `need` says, fetching if required: one fetch per key at a time.
    pub async fn obtain(&self, key: &TokenKey, need: Need) -> Result<Arc<Token>, TokenError> {
        let slot = match key.class {
            // User tokens come only from authorization or import: an unknown open_id gets no slot,
            // so callers cannot grow the map with made-up ids.
            TokenClass::User => match self.cache.get(key) {
                Some(s) => s,
                None => self.slot_from_store(key).await.ok_or_else(|| {
                    TokenError::AuthorizationRequired(
                        "no tokens are stored for this open_id: the user must authorize the app".into(),
                    )
                })?,
            },
            // Likewise a merchant app: only an authorization or an import makes its slot.
            TokenClass::Authorizer => match self.cache.get(key) {
                Some(s) => s,
                None => self
                    .slot_from_store(key)
                    .await
                    .ok_or_else(|| super::authorizer::not_authorized(&key.app, key.subject()))?,
            },
            _ => self.cache.slot(key),
        };
        self.obtain_in(&slot, key, need).await
    }

    /// [`Tokens::obtain`] in a slot at hand.
    pub(super) async fn obtain_in(&self, slot: &Slot, key: &TokenKey, need: Need) -> Result<Arc<Token>, TokenError> {
        let mut flight = slot.flight().await;
        let now = Instant::now();
        if let Some(t) = slot.current() {
            let live = now < t.expires_at();
            match need {
                Need::Any if live => return Ok(t),
                Need::Rejected(g) | Need::Newer(g) if g != t.generation && live => return Ok(t),
                // Keep its grant: the refresh_token renews it.
                Need::Rejected(g) if g == t.generation => {
                    slot.set(t.killed());
                }
                _ => {}
            }
        }
        if let Some(e) = flight.backing_off(now) {
            return Err(e);
        }
        let settings = self.settings.load_full();
        let tuning = settings.tuning;
        let (current, lease) = match self.coordinate(slot, key, &tuning).await? {
            Coordination::Done(t) => {
                flight.reset();
                return Ok(t);
            }
            Coordination::Fetch { current, lease } => (current, lease),
        };
        if key.class == TokenClass::Authorizer && lease.is_none() && self.persist.store().is_shared() {
            // A merchant app's refresh token is spent once: never without the lease that keeps
            // another instance from spending it too (the store did not answer).
            let err = TokenError::Network(
                "the token store is unavailable: a merchant app's single-use refresh token is only spent under \
                 the store's lease"
                    .into(),
            );
            return Err(self.failed(slot, &mut flight, key, err, current, &tuning).await);
        }
        if key.class.is_app_level() {
            if let Err((e, warned)) = self.budgets.spend(key, tuning.client_fetch_budget, Instant::now()) {
                self.persist.release(lease).await;
                self.events.publish(&Event::Fetched {
                    key,
                    outcome: e.outcome(),
                });
                if !warned {
                    tracing::warn!(app = %key.app, class = key.class.as_str(), "{e}: calls needing a new token of this class get 503 until then. \
                        Something rejects this app's tokens unusually often (another fetcher, a misrouted API).");
                }
                return Err(e);
            }
        }
        let result = self.fetch(&settings, key, current.as_deref(), need).await;
        let outcome = result.as_ref().map_or_else(TokenError::outcome, |_| "ok");
        self.events.publish(&Event::Fetched { key, outcome });
        let result = match result {
            Ok(token) => {
                let expected = current.as_ref().map_or(0, |c| c.version);
                // A merchant app's new grant is the only live one (the platform ended the one
                // before): it is kept even if another writer got there first.
                let mode = match key.class {
                    TokenClass::Authorizer => Mode::KeepGrant,
                    _ => Mode::Adopt,
                };
                Ok(self.put(slot, key, token, expected, mode, lease.as_ref()).await)
            }
            Err(e) => Err(e),
        };
        self.persist.release(lease).await;
        match result {
            Ok(token) => {
                if let Some(since_unix) = flight.succeeded() {
                    self.events.publish(&Event::FetchRecovered { key, since_unix });
                }
                tracing::info!(app = %key.app, class = key.class.as_str(), generation = token.generation, "token obtained");
                Ok(token)
            }
            Err(err) => Err(self.failed(slot, &mut flight, key, err, current, &tuning).await),
        }
    }

    /// Many instances: the store may hold a newer token already, or another instance may be
    /// fetching it (then wait for its write); else take the lease and fetch.
    async fn coordinate(&self, slot: &Slot, key: &TokenKey, tuning: &Tuning) -> Result<Coordination, TokenError> {
        let mut current = slot.current();
        loop {
            let base = current.as_ref().map_or(0, |t| t.version);
            match self.persist.coordinate(key, base, tuning.fetch_timeout).await {
                Coordinated::Adopted(r) => {
                    let Ok(t) = self.token_of(r) else {
                        return Ok(Coordination::Fetch { current, lease: None });
                    };
                    let t = slot.set(t);
                    if Instant::now() < t.expires_at() {
                        return Ok(Coordination::Done(t));
                    }
                    // Expired, but its grant is the newest: refresh with it.
                    current = Some(t);
                }
                Coordinated::Lease(lease) => return Ok(Coordination::Fetch { current, lease }),
                Coordinated::Alone => return Ok(Coordination::Fetch { current, lease: None }),
                Coordinated::TimedOut => return Err(TokenError::Timeout(tuning.fetch_timeout.as_millis() as u64)),
            }
        }
    }

    /// One call to the platform for `key`, within the fetch timeout.
    async fn fetch(
        &self,
        settings: &Settings,
        key: &TokenKey,
        current: Option<&Token>,
        need: Need,
    ) -> Result<Token, TokenError> {
        let mut tuning = settings.tuning;
        let fetch = async {
            if key.class == TokenClass::Authorizer {
                return self.fetch_authorizer(settings, key, current).await;
            }
            if key.class != TokenClass::Component {
                return issuer::fetch(&self.client, &settings.issuer, key, current).await;
            }
            let Some(ticket) = self
                .ticket(&key.app)
                .await
                .map_err(|e| TokenError::Network(e.to_string()))?
            else {
                return Err(TokenError::Refused {
                    code: 0,
                    description: format!(
                        "provider {:?} has no component_ticket yet: the platform pushes one every 10 minutes to \
                         /providers/{}/events",
                        key.app, key.app
                    ),
                });
            };
            issuer::fetch_component(&settings.issuer, key, &ticket.value).await
        };
        let fetched = match tokio::time::timeout(tuning.fetch_timeout, fetch).await {
            Ok(r) => r?,
            Err(_) => return Err(TokenError::Timeout(tuning.fetch_timeout.as_millis() as u64)),
        };
        if key.class == TokenClass::Component {
            // Fetched again once under 30 minutes remain (the old one served meanwhile).
            let life = fetched.expires_in.max(1) as f64;
            let fraction = ((life - COMPONENT_RENEW_BEFORE_SECS) / life).max(0.0);
            tuning.refresh_at_fraction = tuning.refresh_at_fraction.min(fraction);
        }
        let mut t = self.build(fetched, tuning)?;
        t.replaced_rejected = matches!(need, Need::Rejected(_));
        Ok(t)
    }

    /// A fetch failed: a dead refresh_token is remembered (no call tries it again), the failure
    /// is told, and the back-off grows. Returns the error for the callers.
    async fn failed(
        &self,
        slot: &Slot,
        flight: &mut Flight,
        key: &TokenKey,
        err: TokenError,
        current: Option<Arc<Token>>,
        tuning: &Tuning,
    ) -> TokenError {
        let mut told = false;
        if let (TokenError::AuthorizationRequired(why), Some(t)) = (&err, &current) {
            if let Some(g) = t.grant.as_deref().filter(|g| !matches!(g.state, GrantState::Dead(_))) {
                let dead = Grant {
                    state: GrantState::Dead(Arc::new(why.clone())),
                    ..g.clone()
                };
                self.put(slot, key, t.killed().with_grant(dead), t.version, Mode::Adopt, None)
                    .await;
                tracing::warn!(app = %key.app, class = key.class.as_str(), open_id = key.open_id().unwrap_or("-"),
                    authorizer_appid = key.authorizer_appid().unwrap_or("-"), "must authorize again: {why}");
                told = true;
                if key.class == TokenClass::Authorizer {
                    self.authorizer_lost(key, why, false);
                }
                if let Some(open_id) = key.open_id() {
                    self.events.publish(&Event::ReauthorizationRequired {
                        app: &key.app,
                        open_id,
                        reason: why,
                    });
                }
            }
        }
        self.events.publish(&Event::Failed { key, error: &err });
        let failed = flight.failed(&err, tuning, key.class.is_app_level());
        if let Some(since_unix) = failed.announce_since {
            self.events.publish(&Event::FetchFailing {
                key,
                outcome: err.outcome(),
                since_unix,
            });
        }
        if err.needs_authorization() {
            if !told {
                tracing::info!(app = %key.app, class = key.class.as_str(), open_id = key.open_id().unwrap_or("-"), "{err}");
            }
        } else {
            tracing::warn!(app = %key.app, class = key.class.as_str(), failures = failed.failures,
                backoff_ms = failed.backoff.as_millis() as u64, "token fetch failed: {err}");
        }
        err
    }

    /// A token from what a fetch obtained, with the next generation.
    fn build(&self, f: Fetched, tuning: Tuning) -> Result<Token, TokenError> {
        let mut t = Token::new(
            self.cache.next_generation(),
            f.value,
            f.expires_in,
            tuning.refresh_at_fraction,
        )?;
        t.grant = f.grant.map(|g| Arc::new(self.names.grant(g)));
        Ok(t)
    }

    /// Authorizes a user of `app` with an authorization code: exchanges it and stores the user's
    /// tokens. Returns the open_id and the token now in use. A store that does not answer keeps
    /// the tokens in use in memory (written when it answers): the user is authorized, and that is
    /// logged. Nothing is stored on any other failure. For the gateway's own callback and for
    /// codes an app received itself.
    pub async fn authorize_with_code(&self, app: &str, code: &str) -> Result<(String, Arc<Token>), CodeFailure> {
        let settings = self.issuer_config();
        let (open_id, fetched) = issuer::exchange_code(&self.client, &settings, app, code)
            .await
            .map_err(CodeFailure::Exchange)?;
        let key = TokenKey::user(Arc::from(app), &open_id);
        let token = match self.install(&key, fetched).await {
            Ok(t) => t,
            Err(e @ TokenError::Network(_)) => {
                tracing::error!(app, "user authorized, but {e}");
                let current = self.cache.get(&key).and_then(|s| s.current());
                current.ok_or(CodeFailure::Store(e))?
            }
            Err(e) => return Err(CodeFailure::Store(e)),
        };
        Ok((open_id, token))
    }

    /// Stores tokens obtained elsewhere (authorization callback, admin import), replacing
    /// whatever the slot held and clearing any back-off.
    pub async fn install(&self, key: &TokenKey, fetched: Fetched) -> Result<Arc<Token>, TokenError> {
        let token = self.build(fetched, self.settings.load().tuning)?;
        self.install_token(key, token).await
    }
}
