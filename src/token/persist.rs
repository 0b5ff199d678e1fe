//! Between the cache and the store. A token is written before anyone uses it:
//! a renewed refresh_token, whose predecessor the platform has already
//! killed, is on disk before the slot shows it. Writes are compare-and-swap on
//! the record's version; what to do when another writer got there first
//! depends on what is being written ([`Mode`]).

use super::cache::Tuning;
use super::cache::{Slot, Tokens};
use super::{Token, TokenError, TokenKey};
use crate::store::{Lease, Put, Record, StoreError, StoreEvent};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a write does on a version conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// A fetched token: the newer stored one wins (it is at least as good, and
    /// other instances already use it).
    Adopt,
    /// A new authorization or an import: it replaces whatever is stored.
    Overwrite,
    /// A renewed refresh_token: the platform killed the old one, so ours must
    /// win; the newer stored access token is kept beside it.
    KeepGrant,
}

/// Attempts before giving up on a record other writers keep changing.
const CAS_ATTEMPTS: usize = 4;
/// How often an instance waiting on another's fetch looks at the store.
const LEASE_POLL: Duration = Duration::from_millis(25);
/// A lease outlives the fetch it covers by this, for the write that follows.
const LEASE_SLACK: Duration = Duration::from_secs(1);
/// Cached tokens compared with the store per round trip after a resubscription.
const RESYNC_BATCH: usize = 500;
/// A stored token with less life than this left is not worth adopting.
const ADOPT_MIN_LIFE: u64 = 30;

/// Whether a stored token has enough life left to be worth using.
fn live(r: &Record) -> bool {
    r.expires_unix > super::unix_now() + ADOPT_MIN_LIFE
}

/// What coordinating with other instances decided.
pub(super) enum Coordinated {
    /// Another instance stored a newer token: use it if it is live; else its grant
    /// is newer than ours and must be what a refresh uses.
    Adopted(Token),
    /// Fetch, holding this lease (or none: a store without leases).
    Lease(Option<Lease>),
    /// The store cannot be reached: fetch without coordination (availability first).
    Alone,
    /// Another instance held the lease and wrote nothing in time.
    TimedOut,
}

impl Tokens {
    pub(super) fn record_of(key: &TokenKey, t: &Token) -> Record {
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
    /// published is what the write decided: ours with its new version, or a newer stored one
    /// adopted ([`Mode`]). Tokens read from the store go to the slot as they are ([`Self::adopt`]).
    pub(super) async fn publish(
        &self,
        slot: &Slot,
        key: &TokenKey,
        t: Token,
        expected: u64,
        mode: Mode,
        lease: Option<&Lease>,
    ) -> Arc<Token> {
        let t = Arc::new(self.write(slot, key, t, expected, mode, lease).await);
        slot.current.store(Some(Arc::clone(&t)));
        t
    }

    /// Puts a token read from the store in the slot: nothing to write.
    pub(super) fn adopt(slot: &Slot, t: Token) -> Arc<Token> {
        let t = Arc::new(t);
        slot.current.store(Some(Arc::clone(&t)));
        t
    }

    /// Writes `t` over stored version `expected`; returns the token to publish
    /// (with its new version, or the newer stored one when adopting). If the
    /// store cannot be reached the token is kept in memory, marked for the
    /// next sweep, and the failure logged: losing it would be worse.
    async fn write(
        &self,
        slot: &Slot,
        key: &TokenKey,
        mut t: Token,
        mut expected: u64,
        mode: Mode,
        lease: Option<&Lease>,
    ) -> Token {
        if !self.store.is_durable() {
            return t;
        }
        for _ in 0..CAS_ATTEMPTS {
            match self.store.put_fenced(&Self::record_of(key, &t), expected, lease).await {
                Ok(Put::Written(v)) => {
                    t.version = v;
                    slot.dirty.store(false, Ordering::Release);
                    return t;
                }
                // Deleted since we read it (a user forgotten by the admin API or the unauthorize
                // webhook while their refresh was in flight): a fetch must not bring it back.
                Ok(Put::Conflict(None)) if mode == Mode::Adopt && expected > 0 => {
                    tracing::info!(app = %key.app, class = key.class.as_str(), "token deleted meanwhile; not stored again");
                    return t;
                }
                Ok(Put::Conflict(None)) => expected = 0,
                Ok(Put::Conflict(Some(newer))) => match mode {
                    // Theirs is about to expire and carries no grant: our fresh one is better.
                    Mode::Adopt if !live(&newer) && newer.grant.is_none() => expected = newer.version,
                    Mode::Adopt => match self.token_of(newer) {
                        Ok(theirs) => {
                            tracing::info!(app = %key.app, class = key.class.as_str(), "another writer stored a newer token; using it");
                            slot.dirty.store(false, Ordering::Release);
                            return theirs;
                        }
                        Err(_) => expected = t.version.max(expected),
                    },
                    Mode::Overwrite => expected = newer.version,
                    // Nothing of ours to keep (a client token): resolve as a fetch does.
                    Mode::KeepGrant if t.grant.is_none() => {
                        expected = newer.version;
                        if live(&newer) {
                            if let Ok(theirs) = self.token_of(newer) {
                                slot.dirty.store(false, Ordering::Release);
                                return theirs;
                            }
                        }
                    }
                    Mode::KeepGrant => {
                        // Keep the newer refresh_token chain: more renewals, or the same count
                        // and a later expiry. Theirs may be newer (renewed while we were cut off).
                        let ours = t.grant.clone();
                        let theirs_newer = match (&newer.grant, &ours) {
                            (Some(g), Some(o)) => {
                                (g.renewals, g.refresh_expires_unix) > (o.renewals, o.refresh_expires_unix)
                            }
                            (Some(_), None) => true,
                            _ => false,
                        };
                        expected = newer.version;
                        if let Ok(mut theirs) = self.token_of(newer) {
                            if theirs_newer {
                                slot.dirty.store(false, Ordering::Release);
                                return theirs;
                            }
                            theirs.grant = ours;
                            t = theirs;
                        }
                    }
                },
                Err(e) => {
                    // Remember what this write was to replace: the retry must compare against it.
                    t.version = expected;
                    slot.dirty.store(true, Ordering::Release);
                    tracing::error!(app = %key.app, class = key.class.as_str(),
                        "could not write a token to the store ({e}); it is kept in memory and written when the store answers");
                    return t;
                }
            }
        }
        t.version = expected;
        slot.dirty.store(true, Ordering::Release);
        tracing::error!(app = %key.app, class = key.class.as_str(), "the stored token kept changing under this write; retrying later");
        t
    }

    /// Before fetching: with a shared store, adopt a newer stored token, or wait
    /// while another instance fetches, or take the lease.
    pub(super) async fn coordinate(&self, key: &TokenKey, current: Option<&Token>, tuning: Tuning) -> Coordinated {
        if !self.store.is_shared() {
            return Coordinated::Lease(None);
        }
        let base = current.map_or(0, |t| t.version);
        let deadline = Instant::now() + tuning.fetch_timeout + LEASE_SLACK;
        loop {
            // The version this round saw; a write after it (and before our lease) means look again.
            let mut seen = base;
            match self.store.get(key).await {
                // A newer record: a live token to use, or (user tokens) a newer grant to refresh with.
                Ok(Some(r)) if r.version > base && (live(&r) || r.grant.is_some()) => {
                    if let Ok(t) = self.token_of(r) {
                        return Coordinated::Adopted(t);
                    }
                }
                Ok(Some(r)) => seen = seen.max(r.version),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(app = %key.app, class = key.class.as_str(), "{e}; fetching without coordination");
                    return Coordinated::Alone;
                }
            }
            match self.store.acquire(key, tuning.fetch_timeout + LEASE_SLACK).await {
                Ok(Some(lease)) => {
                    // Read again under the lease: the previous holder may have written and let go
                    // between our read and our acquire.
                    match self.store.get(key).await {
                        Ok(Some(r)) if r.version > seen => {
                            self.store.release(Some(lease)).await;
                            continue;
                        }
                        Ok(_) => return Coordinated::Lease(Some(lease)),
                        Err(_) => {
                            self.store.release(Some(lease)).await;
                            return Coordinated::Alone;
                        }
                    }
                }
                Ok(None) => {}
                Err(_) => return Coordinated::Alone,
            }
            if Instant::now() >= deadline {
                return Coordinated::TimedOut;
            }
            tokio::time::sleep(LEASE_POLL).await;
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
                    match self.store.get_many(chunk).await {
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
        if let Ok(record) = self.store.get(key).await {
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
        if !self.store.is_shared() {
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
            if let crate::store::Store::Redis(r) = &*this.store {
                r.listen(tx, stop).await;
            }
        }))
    }

    /// Loads every stored token (at start). Records still under the previous
    /// key are rewritten under the current one.
    ///
    /// A shared store (Redis) may hold far more users than one instance serves: only the apps'
    /// client tokens are read at start; a user or biz token is read the first time a call needs
    /// it, and the renewal sweep pages through the rest ([`Tokens::maintain`]).
    pub async fn load(&self) -> Result<usize, StoreError> {
        let records = if self.store.is_shared() {
            let keys: Vec<TokenKey> = self
                .settings
                .load()
                .issuer
                .apps
                .keys()
                .map(|app| TokenKey::client(Arc::clone(app)))
                .collect();
            self.store.get_many(&keys).await?.into_iter().flatten().collect()
        } else {
            self.store.load_all().await?
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
        if !self.store.is_shared() {
            return None;
        }
        let record = match self.store.get(key).await {
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

    /// Forgets a user: their user token and their biz tokens of that app, in
    /// memory and in the store. Returns how many tokens were dropped.
    pub async fn remove_user(&self, app: &str, open_id: &str) -> Result<usize, StoreError> {
        let before = self.slots.len();
        self.slots
            .retain(|k, _| !(&*k.app == app && k.open_id() == Some(open_id)));
        let in_memory = before - self.slots.len();
        let stored = self.store.delete_user(app, open_id).await?;
        Ok(in_memory.max(stored))
    }

    /// Whether the store answers.
    pub async fn store_ready(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}
