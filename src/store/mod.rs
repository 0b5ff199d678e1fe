//! Where tokens are kept: `memory` (nothing survives a restart), `sqlite`
//! (one file, the default) or `redis` (shared by many instances).
//!
//! The token engine's in-process cache stays in front of every
//! store: the store is read at start and on a miss, and written whenever a
//! token changes, before the new token is used. Every write is a
//! compare-and-swap on the record's version, so a slow writer can never
//! replace a newer token with an older one. Token values (and the rest of the
//! record) are encrypted with AES-256-GCM ([`crypto`]).

pub mod crypto;
pub mod record;
pub mod redis;
pub mod sqlite;

use crate::config::{StoreConfig, StoreKind};
use crate::vocab::TokenKey;
pub use record::Record;
pub use redis::Lease;
use std::time::Duration;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or failed.
    #[error("token store unavailable: {0}")]
    Unavailable(String),
    /// A record cannot be read with the configured keys.
    #[error("token store record {key}: {reason}")]
    Unreadable {
        /// Which record.
        key: String,
        /// Why.
        reason: String,
    },
}

/// What a shared store tells the instances following it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// Another instance wrote this token at this version.
    Changed(TokenKey, u64),
    /// Another instance deleted this token (a user forgotten).
    Deleted(TokenKey),
    /// The subscription was (re)established: events may have been missed, so what is cached
    /// must be compared with the store.
    Resync,
}

/// The outcome of a compare-and-swap write.
#[derive(Debug)]
pub enum Put {
    /// Written; the record's new version.
    Written(u64),
    /// Someone wrote first; what the store holds now.
    Conflict(Option<Record>),
}

/// The kind of a provider's latest component_ticket ([`Store::put_value`]).
pub const KIND_TICKET: &str = "provider_ticket";
/// The kind of the fingerprint of a merchant app's refresh token sent to the platform (name
/// `provider/authorizer_appid`): a stored grant whose token it matches was spent already.
pub const KIND_SPENT_REFRESH: &str = "authorizer_refresh_spent";

/// Every kind of sealed value ([`Store::put_value`]).
pub const VALUE_KINDS: [&str; 2] = [KIND_TICKET, KIND_SPENT_REFRESH];

/// The associated data binding a sealed value to its kind and name.
fn value_aad(kind: &str, name: &str) -> Vec<u8> {
    format!("douyin-gateway/v1/value\n{kind}\n{name}").into_bytes()
}

/// Opens a sealed value.
fn open_value(keys: &crypto::Keys, kind: &str, name: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
    keys.open(&value_aad(kind, name), sealed)
        .map(|(v, _)| v)
        .map_err(|e| StoreError::Unreadable {
            key: format!("{kind}/{name}"),
            reason: e.to_string(),
        })
}

/// The configured store.
pub enum Store {
    /// Nothing persisted.
    Memory,
    /// Embedded SQLite.
    Sqlite(sqlite::SqliteStore),
    /// Redis, shared by instances (boxed: it is much larger than the others).
    Redis(Box<redis::RedisStore>),
}

impl Store {
    /// Opens the configured store (creates the SQLite file and schema if needed).
    pub async fn open(cfg: &StoreConfig) -> Result<Store, String> {
        let keys = || -> Result<crypto::Keys, String> {
            let var = cfg
                .encryption_key_env
                .as_deref()
                .ok_or("[store] encryption_key_env is required")?;
            let current = crypto::Key::from_env(var)?;
            let previous = cfg
                .previous_encryption_key_env
                .as_deref()
                .map(crypto::Key::from_env)
                .transpose()?;
            Ok(crypto::Keys { current, previous })
        };
        Ok(match cfg.kind {
            StoreKind::Memory => Store::Memory,
            StoreKind::Sqlite => Store::Sqlite(sqlite::SqliteStore::open(&cfg.path, keys()?).await?),
            StoreKind::Redis => {
                let url = cfg.url.as_deref().ok_or("[store] kind = \"redis\" needs url")?;
                let ack = std::time::Duration::from_millis(cfg.replica_ack_timeout_ms);
                Store::Redis(Box::new(
                    redis::RedisStore::open(url, &cfg.key_prefix, keys()?, ack).await?,
                ))
            }
        })
    }

    /// The store's own metrics, to register with the gateway's.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        match self {
            Store::Redis(r) => vec![Box::new(r.replica_ack_timeouts.clone())],
            _ => Vec::new(),
        }
    }

    /// Whether several instances share it (and must coordinate fetches).
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Redis(_))
    }

    /// [`Self::put`], accepted by Redis only while `lease` is held.
    pub async fn put_fenced(&self, rec: &Record, expected: u64, lease: Option<&Lease>) -> Result<Put, StoreError> {
        match self {
            Store::Redis(r) => r.put_fenced(rec, expected, lease).await,
            _ => self.put(rec, expected).await,
        }
    }

    /// Takes the fetch lease on a token (`None`: another instance holds it).
    /// Only a shared store has leases; one instance needs none (callers check [`Self::is_shared`]).
    pub async fn acquire(&self, key: &TokenKey, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        match self {
            Store::Redis(r) => r.acquire(key, ttl).await,
            _ => Ok(None),
        }
    }

    /// Gives a lease back.
    pub async fn release(&self, lease: Option<Lease>) {
        if let (Store::Redis(r), Some(l)) = (self, lease) {
            r.release(l).await;
        }
    }

    /// Whether tokens survive a restart here.
    pub fn is_durable(&self) -> bool {
        !matches!(self, Store::Memory)
    }

    /// Every record (at start). Fails if any cannot be read: better to refuse
    /// to start than to run with tokens silently missing.
    pub async fn load_all(&self) -> Result<Vec<Record>, StoreError> {
        match self {
            Store::Memory => Ok(Vec::new()),
            Store::Sqlite(s) => s.load_all().await,
            Store::Redis(r) => r.load_all().await,
        }
    }

    /// One step of a pass over a shared store's records (see `RedisStore::sweep_page`); a
    /// private store has nothing to sweep (it is loaded whole at start).
    pub async fn sweep_page(&self, cursor: u64) -> Result<(u64, Vec<Record>), StoreError> {
        match self {
            Store::Redis(r) => r.sweep_page(cursor).await,
            _ => Ok((0, Vec::new())),
        }
    }

    /// One record.
    pub async fn get(&self, key: &TokenKey) -> Result<Option<Record>, StoreError> {
        match self {
            Store::Memory => Ok(None),
            Store::Sqlite(s) => s.get(key).await,
            Store::Redis(r) => r.get(key).await,
        }
    }

    /// A shared store's records of one app (or provider) and class, as every instance wrote
    /// them (a merchant app authorized through another instance); a private store answers none,
    /// its records being all in memory since the start.
    pub async fn shared_records(&self, app: &str, class: crate::vocab::TokenClass) -> Result<Vec<Record>, StoreError> {
        match self {
            Store::Redis(r) => r.records_of(app, class).await,
            _ => Ok(Vec::new()),
        }
    }

    /// Several records, in the order of `keys`: one round trip to Redis per call.
    pub async fn get_many(&self, keys: &[TokenKey]) -> Result<Vec<Option<Record>>, StoreError> {
        match self {
            Store::Redis(r) => r.get_many(keys).await,
            _ => {
                let mut out = Vec::with_capacity(keys.len());
                for k in keys {
                    out.push(self.get(k).await?);
                }
                Ok(out)
            }
        }
    }

    /// Writes `rec` if the stored version is still `expected` (0: absent).
    pub async fn put(&self, rec: &Record, expected: u64) -> Result<Put, StoreError> {
        match self {
            Store::Memory => Ok(Put::Written(expected + 1)),
            Store::Sqlite(s) => s.put(rec, expected).await,
            Store::Redis(r) => r.put(rec, expected).await,
        }
    }

    /// Removes a record; whether it existed.
    pub async fn delete(&self, key: &TokenKey) -> Result<bool, StoreError> {
        match self {
            Store::Memory => Ok(false),
            Store::Sqlite(s) => s.delete(key).await,
            Store::Redis(r) => r.delete(key).await,
        }
    }

    /// Removes a user's user and biz records of an app; how many.
    pub async fn delete_user(&self, app: &str, open_id: &str) -> Result<usize, StoreError> {
        match self {
            Store::Memory => Ok(0),
            Store::Sqlite(s) => s.delete_user(app, open_id).await,
            Store::Redis(r) => r.delete_user(app, open_id).await,
        }
    }

    /// Whether the store answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory => Ok(()),
            Store::Sqlite(s) => s.ping().await,
            Store::Redis(r) => r.ping().await,
        }
    }

    /// Keeps a sealed value that is not a token, by kind and name (a provider's component
    /// ticket: kind [`KIND_TICKET`], the provider's name), encrypted as tokens are; the memory
    /// store keeps nothing. Tokens' reads never see these.
    pub async fn put_value(&self, kind: &'static str, name: &str, value: &[u8]) -> Result<(), StoreError> {
        match self {
            Store::Memory => Ok(()),
            Store::Sqlite(s) => s.put_value(kind, name, value).await,
            Store::Redis(r) => r.put_value(kind, name, value).await,
        }
    }

    /// A value [`Self::put_value`] kept.
    pub async fn get_value(&self, kind: &'static str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Memory => Ok(None),
            Store::Sqlite(s) => s.get_value(kind, name).await,
            Store::Redis(r) => r.get_value(kind, name).await,
        }
    }

    /// Rewrites every record under the current key (`douyin-gateway rekey`).
    pub async fn rekey(&self) -> Result<usize, StoreError> {
        let records = self.load_all().await?;
        let mut n = 0;
        for r in &records {
            if let Put::Written(_) = self.put(r, r.version).await? {
                n += 1;
            }
        }
        // And the sealed values beside them (providers' tickets, spent refresh tokens).
        for kind in VALUE_KINDS {
            let names = match self {
                Store::Memory => Vec::new(),
                Store::Sqlite(s) => s.value_names(kind).await?,
                Store::Redis(r) => r.value_names(kind).await?,
            };
            for name in names {
                if let Some(v) = self.get_value(kind, &name).await? {
                    self.put_value(kind, &name, &v).await?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}
