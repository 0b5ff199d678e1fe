//! The token cache: a `DashMap` of slots read on every request without
//! waiting, and per-slot single-flight for fetching.
//!
//! Reading: [`Tokens::cached`] finds the slot, loads its current token from an
//! `ArcSwap` (no lock held past the call) and, once the token passed its
//! `refresh_at`, starts one background refresh while the caller carries on.
//!
//! Fetching: [`Tokens::obtain`] takes the slot's async mutex. Whoever holds it
//! fetches; the others wait, then find the new token and return it: one call
//! to the platform however many requests wait. A failure starts a back-off
//! (doubling, capped) during which callers fail fast with the last error, so an
//! outage cannot turn into a fetch storm that trips the platform's rate limit.

use super::events::Event;
use super::issuer::Fetched;
use super::issuer::{self, IssuerConfig};
use super::persist::{Coordinated, Mode, Persist, Written};
pub use super::settings::{Settings, Tuning};
use super::{unix_now, Grant, GrantState, Token, TokenClass, TokenError, TokenKey};
use crate::store::{Lease, Record, Store, StoreError};
use crate::upstream::HttpClient;
use arc_swap::{ArcSwap, ArcSwapOption};
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a caller of [`Tokens::obtain`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any live token.
    Any,
    /// The platform rejected generation `n`: drop it (if still current) and get another.
    Rejected(u64),
    /// Generation `n` is getting old: replace it, keeping it in use meanwhile.
    Newer(u64),
}

#[derive(Default)]
pub(super) struct Flight(Option<Box<Failing>>);

/// A token whose fetches fail: how often in a row, when to try again, and why. Boxed in its
/// slot's [`Flight`]: one pointer in every slot, the rest only in those that failed.
#[derive(Debug)]
pub(super) struct Failing {
    failures: u32,
    retry_after: Instant,
    last_error: TokenError,
    /// The first failure in this run (Unix seconds), for `token.fetch_failing`.
    since_unix: u64,
    /// When the first failure happened.
    since: Instant,
    /// `token.fetch_failing` was sent for this run.
    announced: bool,
}

/// One token's place in the cache.
#[derive(Default)]
pub struct Slot {
    pub(super) current: ArcSwapOption<Token>,
    pub(super) flight: tokio::sync::Mutex<Flight>,
    pub(super) refreshing: AtomicBool,
    /// A change the store has not taken yet (it was unreachable): written by the next sweep.
    pub(super) dirty: AtomicBool,
}

/// An app's client_token fetches in the last [`BUDGET_WINDOW`], oldest first.
#[derive(Default)]
pub(super) struct Budget {
    fetched: std::collections::VecDeque<Instant>,
    warned: bool,
}

impl Budget {
    /// Counts a fetch about to be made, unless `budget` were made in the window already.
    fn spend(&mut self, budget: u32, now: Instant) -> Result<(), TokenError> {
        while self.fetched.front().is_some_and(|t| now - *t >= BUDGET_WINDOW) {
            self.fetched.pop_front();
        }
        if self.fetched.len() as u32 >= budget.max(1) {
            let retry = BUDGET_WINDOW.saturating_sub(now - self.fetched[0]);
            return Err(TokenError::BudgetExhausted {
                budget,
                retry_in_ms: retry.as_millis() as u64,
            });
        }
        self.fetched.push_back(now);
        self.warned = false;
        Ok(())
    }
}

/// Why authorizing a user with a code failed ([`Tokens::authorize_with_code`]).
#[derive(Debug)]
pub enum CodeFailure {
    /// The platform refused the code, or could not be reached.
    Exchange(TokenError),
    /// The tokens could not be kept.
    Store(TokenError),
}

/// The window of `client_fetch_budget`: the platform's own limit counts 5 minutes.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(300);

/// The token cache and its fetching.
pub struct Tokens {
    pub(super) slots: DashMap<TokenKey, Arc<Slot>>,
    pub(super) settings: ArcSwap<Settings>,
    pub(super) client: HttpClient,
    pub(super) generation: AtomicU64,
    /// Who hears what the engine does ([`super::events`]).
    events: super::events::Events,
    /// The store side: writes, coordination with other instances.
    pub(super) persist: Persist,
    /// Per app-level token (client_token, mini-app token): fetches against `client_fetch_budget`.
    budgets: DashMap<TokenKey, std::sync::Mutex<Budget>>,
    /// A shared store's renewal sweep: where it stands.
    pub(super) sweep: tokio::sync::Mutex<super::upkeep::Sweep>,
    /// What the last complete pass of the sweep counted.
    pub(super) swept: std::sync::Mutex<Option<Arc<super::upkeep::Tally>>>,
    /// Users announced as `user.reauthorization_due`, with the deadline announced.
    pub(super) due_announced: DashMap<TokenKey, u64>,
}

/// How fetching a token stands: failing since when, or not.
#[derive(Debug, Clone)]
pub enum FetchState {
    /// Its last fetch worked (or none was needed yet).
    Ok,
    /// A fetch is under way.
    Fetching,
    /// Fetches have failed `failures` times in a row since `since_unix`.
    Failing {
        /// In a row.
        failures: u32,
        /// First of them, Unix seconds.
        since_unix: u64,
        /// The last one's outcome.
        outcome: &'static str,
    },
}

impl Tokens {
    /// An empty cache; nobody hears its events until [`Tokens::events`] gets subscribers.
    pub fn new(client: HttpClient, settings: Settings, store: Arc<Store>) -> Arc<Self> {
        Arc::new(Tokens {
            slots: DashMap::new(),
            settings: ArcSwap::from_pointee(settings),
            client,
            generation: AtomicU64::new(1),
            events: Default::default(),
            persist: Persist::new(store),
            budgets: DashMap::new(),
            sweep: Default::default(),
            swept: Default::default(),
            due_announced: DashMap::new(),
        })
    }

    /// Where the engine's events go: subscribe here.
    pub fn events(&self) -> &super::events::Events {
        &self.events
    }

    /// Tells the subscribers of something that happened to a token outside the engine (a user
    /// who revoked the app, as the platform's webhook says).
    pub fn announce(&self, event: &super::events::Event<'_>) {
        self.events.publish(event);
    }

    /// How fetching `key` stands now.
    pub fn fetch_state(&self, key: &TokenKey) -> FetchState {
        let Some(slot) = self.slots.get(key).map(|s| Arc::clone(&s)) else {
            return FetchState::Ok;
        };
        let Ok(flight) = slot.flight.try_lock() else {
            return FetchState::Fetching;
        };
        match flight.0.as_deref() {
            Some(f) => FetchState::Failing {
                failures: f.failures,
                since_unix: f.since_unix,
                outcome: f.last_error.outcome(),
            },
            None => FetchState::Ok,
        }
    }

    /// Tokens for a program of its own, with no gateway around them (the proxy's
    /// [`AttachTokenLayer`](crate::proxy::AttachTokenLayer) and [`RetryLayer`](crate::proxy::RetryLayer)
    /// around its own client): the config's apps, token endpoints, tuning and store, tokens the
    /// store holds loaded; no subscribers.
    pub async fn from_config(config: crate::config::Config) -> Result<Arc<Self>, String> {
        let client = crate::upstream::client(&config.upstream)?;
        let settings = Settings::from_config(&config)?;
        let store = Arc::new(Store::open(&config.store).await?);
        let tokens = Tokens::new(client, settings, store);
        tokens.load().await.map_err(|e| e.to_string())?;
        Ok(tokens)
    }

    /// Installs new settings (config reload). Tokens of apps whose client_key
    /// changed, or that are gone, are dropped.
    pub fn reconfigure(&self, settings: Settings) {
        let old = self.settings.load();
        self.slots.retain(|k, _| {
            let keep = matches!(
                (old.issuer.apps.get(&k.app), settings.issuer.apps.get(&k.app)),
                (Some(a), Some(b)) if a.client_key == b.client_key
            );
            keep
        });
        self.settings.store(Arc::new(settings));
    }

    /// The hot path: a live cached token, without waiting. Counts hit or miss,
    /// and starts a background refresh once the token is getting old.
    pub fn cached(self: &Arc<Self>, key: &TokenKey) -> Option<Arc<Token>> {
        let class = key.class;
        let slot = self.slots.get(key).map(|s| Arc::clone(&s));
        let token = slot.as_ref().and_then(|s| s.current.load_full());
        let now = Instant::now();
        match (slot, token) {
            (Some(slot), Some(t)) if now < t.expires_at() => {
                self.events.publish(&Event::Cache { class, hit: true });
                if now >= t.refresh_at() && !slot.refreshing.swap(true, Ordering::AcqRel) {
                    let this = Arc::clone(self);
                    let (key, generation) = (key.clone(), t.generation);
                    tokio::spawn(async move {
                        let _ = this.obtain_in(&slot, &key, Need::Newer(generation)).await;
                        slot.refreshing.store(false, Ordering::Release);
                    });
                }
                Some(t)
            }
            _ => {
                self.events.publish(&Event::Cache { class, hit: false });
                None
            }
        }
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

    /// Gets a token as `need` says, fetching if required: one fetch per key at a time.
    pub async fn obtain(&self, key: &TokenKey, need: Need) -> Result<Arc<Token>, TokenError> {
        let slot = match key.class {
            // User tokens come only from authorization or import: an unknown open_id gets no slot,
            // so callers cannot grow the map with made-up ids.
            TokenClass::User => match self.slots.get(key).map(|s| Arc::clone(&s)) {
                Some(s) => s,
                None => self.slot_from_store(key).await.ok_or_else(|| {
                    TokenError::AuthorizationRequired(
                        "no tokens are stored for this open_id: the user must authorize the app".into(),
                    )
                })?,
            },
            _ => Arc::clone(&self.slots.entry(key.clone()).or_default()),
        };
        self.obtain_in(&slot, key, need).await
    }

    async fn obtain_in(&self, slot: &Slot, key: &TokenKey, need: Need) -> Result<Arc<Token>, TokenError> {
        let mut flight = slot.flight.lock().await;
        let now = Instant::now();
        if let Some(t) = slot.current.load_full() {
            let live = now < t.expires_at();
            match need {
                Need::Any if live => return Ok(t),
                Need::Rejected(g) | Need::Newer(g) if g != t.generation && live => return Ok(t),
                // Keep its grant: the refresh_token renews it.
                Need::Rejected(g) if g == t.generation => slot.current.store(Some(Arc::new(t.killed()))),
                _ => {}
            }
        }
        if let Some(f) = flight.0.as_deref() {
            if now < f.retry_after {
                let wait = f.retry_after - now;
                return Err(TokenError::BackingOff {
                    last: Box::new(f.last_error.clone()),
                    retry_in_ms: wait.as_millis() as u64,
                });
            }
        }
        let settings = self.settings.load_full();
        let tuning = settings.tuning;
        let mut current = slot.current.load_full();
        // Many instances: the store may hold a newer token already, or another instance may be
        // fetching it (then wait for its write); else take the lease and fetch.
        let lease = loop {
            let base = current.as_ref().map_or(0, |t| t.version);
            match self.persist.coordinate(key, base, tuning.fetch_timeout).await {
                Coordinated::Adopted(r) => {
                    let Ok(t) = self.token_of(r) else { break None };
                    let t = Self::adopt(slot, t);
                    if Instant::now() < t.expires_at() {
                        *flight = Flight::default();
                        return Ok(t);
                    }
                    // Expired, but its grant is the newest: refresh with it.
                    current = Some(t);
                }
                Coordinated::Lease(l) => break l,
                Coordinated::Alone => break None,
                Coordinated::TimedOut => return Err(TokenError::Timeout(tuning.fetch_timeout.as_millis() as u64)),
            }
        };
        if key.class.is_app_level() {
            let spent = {
                let budget = self.budgets.entry(key.clone()).or_default();
                let mut b = budget.lock().expect("budget");
                b.spend(tuning.client_fetch_budget, Instant::now())
                    .map_err(|e| (e, std::mem::replace(&mut b.warned, true)))
            };
            if let Err((e, warned)) = spent {
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
        let fetch = issuer::fetch(&self.client, &settings.issuer, key, current.as_deref());
        let result = match tokio::time::timeout(tuning.fetch_timeout, fetch).await {
            Ok(r) => r,
            Err(_) => Err(TokenError::Timeout(tuning.fetch_timeout.as_millis() as u64)),
        }
        .and_then(|f| {
            let mut t = self.build(f, tuning)?;
            t.replaced_rejected = matches!(need, Need::Rejected(_));
            Ok(t)
        });
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.events.publish(&Event::Fetched { key, outcome });
        match result {
            Ok(token) => {
                let expected = current.as_ref().map_or(0, |c| c.version);
                let token = self
                    .publish(slot, key, token, expected, Mode::Adopt, lease.as_ref())
                    .await;
                self.persist.release(lease).await;
                if let Some(f) = flight.0.as_deref().filter(|f| f.announced) {
                    self.events.publish(&Event::FetchRecovered {
                        key,
                        since_unix: f.since_unix,
                    });
                }
                *flight = Flight::default();
                tracing::info!(app = %key.app, class = key.class.as_str(), generation = token.generation, "token obtained");
                Ok(token)
            }
            Err(err) => {
                self.persist.release(lease).await;
                let mut told = false;
                if let (TokenError::AuthorizationRequired(why), Some(t)) = (&err, &current) {
                    // The refresh_token is dead: remember it, so no call tries it again.
                    if let Some(g) = t.grant.as_deref().filter(|g| !matches!(g.state, GrantState::Dead(_))) {
                        let dead = Grant {
                            state: GrantState::Dead(Arc::new(why.clone())),
                            ..g.clone()
                        };
                        self.publish(slot, key, t.killed().with_grant(dead), t.version, Mode::Adopt, None)
                            .await;
                        tracing::warn!(app = %key.app, class = key.class.as_str(), open_id = key.open_id().unwrap_or("-"),
                            "user must authorize again: {why}");
                        told = true;
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
                let failures = flight.0.as_ref().map_or(0, |f| f.failures) + 1;
                let doubling = tuning.backoff_initial.saturating_mul(1u32 << (failures - 1).min(16));
                let delay = doubling.min(tuning.backoff_max);
                let (since, since_unix, mut announced) =
                    flight.0.as_deref().map_or((Instant::now(), unix_now(), false), |f| {
                        (f.since, f.since_unix, f.announced)
                    });
                if key.class.is_app_level() && !announced && since.elapsed() >= tuning.fetch_failing_after {
                    self.events.publish(&Event::FetchFailing {
                        key,
                        outcome: err.outcome(),
                        since_unix,
                    });
                    announced = true;
                }
                flight.0 = Some(Box::new(Failing {
                    failures,
                    retry_after: Instant::now() + delay,
                    last_error: err.clone(),
                    since,
                    since_unix,
                    announced,
                }));
                if err.needs_authorization() {
                    if !told {
                        tracing::info!(app = %key.app, class = key.class.as_str(), open_id = key.open_id().unwrap_or("-"), "{err}");
                    }
                } else {
                    tracing::warn!(app = %key.app, class = key.class.as_str(), failures,
                        backoff_ms = delay.as_millis() as u64, "token fetch failed: {err}");
                }
                Err(err)
            }
        }
    }

    /// The issuer's settings now in force (endpoints, apps, codes).
    pub fn issuer_config(&self) -> IssuerConfig {
        self.settings.load().issuer.clone()
    }

    fn build(&self, f: Fetched, tuning: Tuning) -> Result<Token, TokenError> {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let mut t = Token::new(generation, f.value, f.expires_in, tuning.refresh_at_fraction)?;
        t.grant = f.grant.map(Arc::new);
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
                let slot = self.slots.get(&key).map(|s| Arc::clone(&s));
                slot.and_then(|s| s.current.load_full()).ok_or(CodeFailure::Store(e))?
            }
            Err(e) => return Err(CodeFailure::Store(e)),
        };
        Ok((open_id, token))
    }

    /// Stores tokens obtained elsewhere (authorization callback, admin import),
    /// replacing whatever the slot held and clearing any back-off.
    pub async fn install(&self, key: &TokenKey, fetched: Fetched) -> Result<Arc<Token>, TokenError> {
        let token = self.build(fetched, self.settings.load().tuning)?;
        let slot = Arc::clone(&self.slots.entry(key.clone()).or_default());
        let mut flight = slot.flight.lock().await;
        let expected = slot.current.load().as_ref().map_or(0, |c| c.version);
        let token = self.publish(&slot, key, token, expected, Mode::Overwrite, None).await;
        *flight = Flight::default();
        if slot.dirty.load(Ordering::Acquire) {
            // In use, and written by the next sweep; but not durable yet, which the caller must hear.
            return Err(TokenError::Network(
                "the token store is unavailable: the tokens are in use but only in memory until it answers".into(),
            ));
        }
        Ok(token)
    }
}

/// The cache's side of the store: what goes into a slot comes from a write (`Tokens::publish`)
/// or from the store as it is (`Tokens::adopt`).
impl Tokens {
    /// A stored record of a token.
    fn record_of(key: &TokenKey, t: &Token) -> Record {
        Record {
            key: key.clone(),
            version: t.version,
            access_token: crate::secret::Secret::new(t.value()),
            expires_unix: t.expires_unix,
            grant: t.grant.as_deref().cloned(),
            stale_key: false,
        }
    }

    /// A cached token from a stored record.
    pub(super) fn token_of(&self, r: Record) -> Result<Token, TokenError> {
        let left = r.expires_unix.saturating_sub(super::unix_now());
        let fraction = self.settings.load().tuning.refresh_at_fraction;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let mut t = Token::new(generation, r.access_token.expose().to_string(), left.max(1), fraction)?;
        if left == 0 {
            t = t.killed();
        }
        t.expires_unix = r.expires_unix;
        t.grant = r.grant.map(Arc::new);
        t.version = r.version;
        Ok(t)
    }

    /// The one way a new or changed token reaches the calls: written to the store first (on a
    /// shared store, accepted only while `lease` is held), then published to the slot. What is
    /// published is what the write decided ([`Written`]): ours with its new version, a newer
    /// stored one, or ours kept in memory (marked to be written later) when the store did not
    /// take it.
    pub(super) async fn publish(
        &self,
        slot: &Slot,
        key: &TokenKey,
        mut t: Token,
        expected: u64,
        mode: Mode,
        lease: Option<&Lease>,
    ) -> Arc<Token> {
        let stored = |t: Token| {
            slot.dirty.store(false, Ordering::Release);
            t
        };
        let t = match self
            .persist
            .write(Self::record_of(key, &t), expected, mode, lease)
            .await
        {
            Written::Stored { version, merged } => {
                let mut out = match merged.map(|r| self.token_of(r)) {
                    Some(Ok(m)) => m,
                    _ => t,
                };
                out.version = version;
                stored(out)
            }
            Written::Adopted(r) => match self.token_of(r) {
                Ok(theirs) => stored(theirs),
                Err(_) => {
                    t.version = expected;
                    slot.dirty.store(true, Ordering::Release);
                    t
                }
            },
            Written::Failed { expected } => {
                // Remember what this write was to replace: the retry must compare against it.
                t.version = expected;
                slot.dirty.store(true, Ordering::Release);
                t
            }
            Written::Deleted | Written::NotDurable => t,
        };
        Self::adopt(slot, t)
    }

    /// Puts a token in the slot as it is (read from the store: nothing to write).
    pub(super) fn adopt(slot: &Slot, t: Token) -> Arc<Token> {
        let t = Arc::new(t);
        slot.current.store(Some(Arc::clone(&t)));
        t
    }

    /// Loads every stored token (at start). Records still under the previous
    /// key are rewritten under the current one.
    ///
    /// A shared store (Redis) may hold far more users than one instance serves: only the apps'
    /// client tokens are read at start; a user or biz token is read the first time a call needs
    /// it, and the renewal sweep pages through the rest ([`Tokens::maintain`]).
    pub async fn load(&self) -> Result<usize, StoreError> {
        let records = if self.persist.store().is_shared() {
            let keys: Vec<TokenKey> = self
                .settings
                .load()
                .issuer
                .apps
                .iter()
                .flat_map(|(name, app)| {
                    let mini = app.mini_app.is_some().then(|| TokenKey::mini_app(Arc::clone(name)));
                    std::iter::once(TokenKey::client(Arc::clone(name))).chain(mini)
                })
                .collect();
            self.persist
                .store()
                .get_many(&keys)
                .await?
                .into_iter()
                .flatten()
                .collect()
        } else {
            self.persist.store().load_all().await?
        };
        let n = records.len();
        for r in records {
            let (key, stale) = (r.key.clone(), r.stale_key);
            let Ok(t) = self.token_of(r) else { continue };
            let slot = Arc::clone(&self.slots.entry(key.clone()).or_default());
            if stale {
                let version = t.version;
                self.publish(&slot, &key, t, version, Mode::Adopt, None).await;
            } else {
                Self::adopt(&slot, t);
            }
        }
        Ok(n)
    }

    /// The slot of a user in a shared store this instance has not read yet (stored by another
    /// instance, or not needed since start). A private store was loaded whole at start.
    pub(super) async fn slot_from_store(&self, key: &TokenKey) -> Option<Arc<Slot>> {
        if !self.persist.store().is_shared() {
            return None;
        }
        let record = match self.persist.store().get(key).await {
            Ok(r) => r?,
            Err(e) => {
                tracing::warn!(app = %key.app, "token store unavailable while looking up a user: {e}");
                return None;
            }
        };
        let t = self.token_of(record).ok()?;
        let slot = Arc::clone(&self.slots.entry(key.clone()).or_default());
        if slot.current.load().is_none() {
            Self::adopt(&slot, t);
        }
        Some(slot)
    }

    /// Forgets a user: their user token and their biz tokens of that app, in
    /// memory and in the store. Returns how many tokens were dropped.
    pub async fn remove_user(&self, app: &str, open_id: &str) -> Result<usize, StoreError> {
        let before = self.slots.len();
        self.slots
            .retain(|k, _| !(&*k.app == app && k.open_id() == Some(open_id)));
        let in_memory = before - self.slots.len();
        let stored = self.persist.store().delete_user(app, open_id).await?;
        Ok(in_memory.max(stored))
    }

    /// Whether the store answers.
    pub async fn store_ready(&self) -> Result<(), StoreError> {
        self.persist.ready().await
    }
}
