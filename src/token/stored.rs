//! The cache's side of the store: what goes into a slot comes from a write through the store
//! ([`Tokens::put`]) or from the store as it is (at start, on a user's first call, from another
//! instance). `persist` decides what a write means; this puts its outcome in the slot.

use super::persist::{Mode, Written};
use super::{Slot, Token, TokenError, TokenKey, Tokens};
use crate::store::{Lease, Record, StoreError};
use std::sync::Arc;

impl Tokens {
    /// A stored record of a token.
    fn record_of(key: &TokenKey, t: &Token) -> Record {
        Record {
            key: key.clone(),
            version: t.version,
            access_token: crate::secret::Secret::new(t.value()),
            expires_unix: t.expires_unix.into(),
            grant: t.grant.as_deref().cloned(),
            stale_key: false,
        }
    }

    /// A cached token from a stored record.
    pub(super) fn token_of(&self, r: Record) -> Result<Token, TokenError> {
        let left = r.expires_unix.saturating_sub(super::unix_now());
        let fraction = self.settings.load().tuning.refresh_at_fraction;
        let generation = self.cache.next_generation();
        let mut t = Token::new(generation, r.access_token.expose().to_string(), left.max(1), fraction)?;
        if left == 0 {
            t = t.killed();
        }
        t.expires_unix = super::unix_u32(r.expires_unix);
        t.grant = r.grant.map(|g| Arc::new(self.names.grant(g)));
        t.version = r.version;
        Ok(t)
    }

    /// The one way a new or changed token reaches the calls: written to the store first (on a
    /// shared store, accepted only while `lease` is held), then put in the slot. What is
    /// published is what the write decided ([`Written`]): ours with its new version, a newer
    /// stored one, or ours kept in memory (marked to be written later) when the store did not
    /// take it.
    pub(super) async fn put(
        &self,
        slot: &Slot,
        key: &TokenKey,
        mut t: Token,
        expected: u64,
        mode: Mode,
        lease: Option<&Lease>,
    ) -> Arc<Token> {
        let stored = |t: Token| {
            slot.set_dirty(false);
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
                    slot.set_dirty(true);
                    t
                }
            },
            Written::Failed { expected } => {
                // Remember what this write was to replace: the retry must compare against it.
                t.version = expected;
                slot.set_dirty(true);
                t
            }
            Written::Deleted | Written::NotDurable => t,
        };
        slot.set(t)
    }

    /// Loads every stored token (at start). Records still under the previous
    /// key are rewritten under the current one.
    ///
    /// A shared store (Redis) may hold far more users than one instance serves: only the apps'
    /// client tokens are read at start; a user or biz token is read the first time a call needs
    /// it, and the renewal sweep pages through the rest ([`Tokens::maintain`]).
    pub async fn load(&self) -> Result<usize, StoreError> {
        let records = if self.persist.store().is_shared() {
            let settings = self.settings.load();
            let keys: Vec<TokenKey> = settings
                .issuer
                .apps
                .iter()
                .flat_map(|(name, app)| {
                    let mini = app.mini_app.is_some().then(|| TokenKey::mini_app(Arc::clone(name)));
                    std::iter::once(TokenKey::client(Arc::clone(name))).chain(mini)
                })
                .chain(
                    settings
                        .issuer
                        .providers
                        .keys()
                        .map(|p| TokenKey::component(Arc::clone(p))),
                )
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
            let (key, stale) = (self.names.key(&self.settings.load(), r.key.clone()), r.stale_key);
            let Ok(t) = self.token_of(r) else { continue };
            let slot = self.cache.slot(&key);
            if stale {
                let version = t.version;
                self.put(&slot, &key, t, version, Mode::Adopt, None).await;
            } else {
                slot.set(t);
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
        let slot = self.cache.slot(key);
        if slot.is_empty() {
            slot.set(t);
        }
        Some(slot)
    }

    /// Forgets a user: their user token and their biz tokens of that app, in
    /// memory and in the store. Returns how many tokens were dropped.
    pub async fn remove_user(&self, app: &str, open_id: &str) -> Result<usize, StoreError> {
        let in_memory = self.cache.retain(|k| !(&*k.app == app && k.open_id() == Some(open_id)));
        let stored = self.persist.store().delete_user(app, open_id).await?;
        Ok(in_memory.max(stored))
    }
}
