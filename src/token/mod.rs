//! Tokens: what the gateway attaches, where it keeps them, how it gets new ones.
//!
//! - [`cache`]: the in-memory map read on every request, with one fetch in
//!   flight per token however many requests wait, and back-off after failures.
//! - [`issuer`]: the calls to the platform's token endpoints.
//! - `persist`: the store side (writes with their conflict rules, coordination between
//!   instances), owned by [`Tokens`] and knowing nothing of its slots.
//! - [`upkeep`]: renewals, store events, what the admin API and gauges see.

mod authorizer;
mod budget;
pub mod cache;
mod error;
pub mod events;
mod import;
pub mod issuer;
mod names;
mod obtain;
mod persist;
mod settings;
mod slot;
mod stored;
mod tickets;
pub mod upkeep;
mod value;

pub use crate::vocab::{lifetime, unix_now, Grant, GrantState, KeyRef, TokenClass, TokenKey};
pub use authorizer::AuthorizationEvent;
pub use budget::BUDGET_WINDOW;
pub use cache::Need;
pub use error::TokenError;
pub use import::ImportedGrant;
pub use obtain::CodeFailure;
pub use settings::{Settings, Tuning};
pub use slot::{FetchState, Slot};
pub use tickets::Ticket;
pub use upkeep::TokenInfo;
pub use value::{unix_u32, Flag, Token};

use crate::store::{Store, StoreError};
use crate::upstream::HttpClient;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// The token engine. Each job has one owner, which keeps its state to itself and is asked through
/// its methods: the hot cache with its single flights ([`cache`], [`obtain`]), the store side
/// (`persist`, `stored`), the platform side ([`issuer`]), the fetch budgets (`budget`) and the
/// upkeep (renewal rounds, store sweeps, the forecast: [`upkeep`]). What happens is published to
/// [`events`] subscribers; the engine calls nothing above it.
pub struct Tokens {
    cache: cache::Cache,
    settings: ArcSwap<Settings>,
    client: HttpClient,
    events: events::Events,
    persist: persist::Persist,
    budgets: budget::Budgets,
    upkeep: upkeep::Upkeep,
    names: names::Names,
    tickets: tickets::Tickets,
    /// Merchant apps' spent refresh-token fingerprints, by `provider/appid` (also in the store;
    /// the memory store keeps none).
    spent: dashmap::DashMap<String, Vec<u8>>,
}

impl Tokens {
    /// An empty cache; nobody hears its events until [`Tokens::events`] gets subscribers.
    pub fn new(client: HttpClient, settings: Settings, store: Arc<Store>) -> Arc<Self> {
        Arc::new(Tokens {
            cache: cache::Cache::default(),
            settings: ArcSwap::from_pointee(settings),
            client,
            events: Default::default(),
            persist: persist::Persist::new(store),
            budgets: Default::default(),
            upkeep: Default::default(),
            names: Default::default(),
            tickets: Default::default(),
            spent: Default::default(),
        })
    }

    /// Tokens for a program of its own, with no gateway around them (the proxy's
    /// `AttachTokenLayer` and `RetryLayer` around its own client): the config's apps, token
    /// endpoints, tuning and store, tokens the store holds loaded; no subscribers.
    pub async fn from_config(config: crate::config::Config) -> Result<Arc<Self>, String> {
        let client = crate::upstream::client(&config.upstream)?;
        let settings = Settings::from_config(&config)?;
        let store = Arc::new(Store::open(&config.store).await?);
        let tokens = Tokens::new(client, settings, store);
        tokens.load().await.map_err(|e| e.to_string())?;
        Ok(tokens)
    }

    /// Where the engine's events go: subscribe here.
    pub fn events(&self) -> &events::Events {
        &self.events
    }

    /// Tells the subscribers of something that happened to a token outside the engine (a user
    /// who revoked the app, as the platform's webhook says).
    pub fn announce(&self, event: &events::Event<'_>) {
        self.events.publish(event);
    }

    /// Installs new settings (config reload). Tokens of apps whose client_key changed, or that
    /// are gone, are dropped.
    pub fn reconfigure(&self, settings: Settings) {
        let old = self.settings.load();
        self.cache.retain(|k| match k.class {
            TokenClass::Component | TokenClass::Authorizer => old.same_provider(&settings, &k.app),
            _ => matches!(
                (old.issuer.apps.get(&k.app), settings.issuer.apps.get(&k.app)),
                (Some(a), Some(b)) if a.client_key == b.client_key
            ),
        });
        self.settings.store(Arc::new(settings));
    }

    /// The issuer's settings now in force (endpoints, apps, codes).
    pub fn issuer_config(&self) -> issuer::IssuerConfig {
        self.settings.load().issuer.clone()
    }

    /// How fetching `key` stands now.
    pub fn fetch_state(&self, key: &TokenKey) -> FetchState {
        let Some(slot) = self.cache.get(key) else {
            return FetchState::Ok;
        };
        let Some(flight) = slot.try_flight() else {
            return FetchState::Fetching;
        };
        flight.state()
    }

    /// Whether the store answers.
    pub async fn store_ready(&self) -> Result<(), StoreError> {
        self.persist.ready().await
    }
}
