//! The store side of the token cache: [`Persist`], owned by [`Tokens`](super::Tokens), knows
//! records, versions and leases, and nothing of the cache's slots. A token is written before
//! anyone uses it: a renewed refresh_token, whose predecessor the platform has already killed, is
//! on disk before the slot shows it. Writes are compare-and-swap on the record's version; what to
//! do when another writer got there first depends on what is being written ([`Mode`]), and the
//! outcome ([`Written`]) tells the cache what to publish.

use super::TokenKey;
use crate::store::{Lease, Put, Record, Store, StoreError};
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

/// What a write decided the cache should publish.
#[derive(Debug)]
pub(super) enum Written {
    /// Stored at `version`: ours as it was, or (`merged`) the newer stored access token with our
    /// grant beside it.
    Stored {
        /// The version the store gave it.
        version: u64,
        /// What was written instead of ours, when it was merged.
        merged: Option<Record>,
    },
    /// Another writer stored a better record: publish that one.
    Adopted(Record),
    /// Deleted since it was read (a user forgotten while their refresh was in flight): publish
    /// ours, and do not store it again.
    Deleted,
    /// Not stored (the store did not answer, or the record kept changing): publish ours, and
    /// write it later over version `expected`.
    Failed {
        /// The version the next attempt must replace.
        expected: u64,
    },
    /// A store that keeps nothing (`memory`).
    NotDurable,
}

/// Attempts before giving up on a record other writers keep changing.
const CAS_ATTEMPTS: usize = 4;
/// How often an instance waiting on another's fetch looks at the store.
const LEASE_POLL: Duration = Duration::from_millis(25);
/// A lease outlives the fetch it covers by this, for the write that follows.
const LEASE_SLACK: Duration = Duration::from_secs(1);
/// A stored token with less life than this left is not worth adopting.
const ADOPT_MIN_LIFE: u64 = 30;

/// Whether a stored token has enough life left to be worth using.
fn live(r: &Record) -> bool {
    r.expires_unix > super::unix_now() + ADOPT_MIN_LIFE
}

/// What coordinating with other instances decided.
pub(super) enum Coordinated {
    /// Another instance stored a newer record: use it if it is live; else its grant is newer than
    /// ours and must be what a refresh uses.
    Adopted(Record),
    /// Fetch, holding this lease (or none: a store without leases).
    Lease(Option<Lease>),
    /// The store cannot be reached: fetch without coordination (availability first).
    Alone,
    /// Another instance held the lease and wrote nothing in time.
    TimedOut,
}

/// The store side of the cache.
pub(super) struct Persist {
    store: Arc<Store>,
}

impl Persist {
    /// Over `store`.
    pub(super) fn new(store: Arc<Store>) -> Self {
        Persist { store }
    }

    /// The store itself, for reads that need no coordination.
    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    /// Writes `rec` over stored version `expected` (see [`Mode`] and [`Written`]). If the store
    /// cannot be reached the failure is logged and the caller keeps the token in memory, to be
    /// written later: losing it would be worse.
    pub(super) async fn write(&self, mut rec: Record, mut expected: u64, mode: Mode, lease: Option<&Lease>) -> Written {
        if !self.store.is_durable() {
            return Written::NotDurable;
        }
        let key = rec.key.clone();
        let mut merged = false;
        for _ in 0..CAS_ATTEMPTS {
            match self.store.put_fenced(&rec, expected, lease).await {
                Ok(Put::Written(version)) => {
                    return Written::Stored {
                        version,
                        merged: merged.then_some(rec),
                    }
                }
                // Deleted since we read it (a user forgotten by the admin API or the unauthorize
                // webhook while their refresh was in flight): a fetch must not bring it back.
                Ok(Put::Conflict(None)) if mode == Mode::Adopt && expected > 0 => {
                    tracing::info!(app = %key.app, class = key.class.as_str(), "token deleted meanwhile; not stored again");
                    return Written::Deleted;
                }
                Ok(Put::Conflict(None)) => expected = 0,
                Ok(Put::Conflict(Some(newer))) => match mode {
                    // Theirs is about to expire and carries no grant: our fresh one is better.
                    Mode::Adopt if !live(&newer) && newer.grant.is_none() => expected = newer.version,
                    Mode::Adopt => {
                        tracing::info!(app = %key.app, class = key.class.as_str(), "another writer stored a newer token; using it");
                        return Written::Adopted(newer);
                    }
                    Mode::Overwrite => expected = newer.version,
                    // Nothing of ours to keep (a client token): resolve as a fetch does.
                    Mode::KeepGrant if rec.grant.is_none() => {
                        if live(&newer) {
                            return Written::Adopted(newer);
                        }
                        expected = newer.version;
                    }
                    Mode::KeepGrant => {
                        // Keep the newer refresh_token chain: more renewals, or the same count
                        // and a later expiry. Theirs may be newer (renewed while we were cut off).
                        let theirs_newer = match (&newer.grant, &rec.grant) {
                            (Some(g), Some(o)) => {
                                (g.renewals, g.refresh_expires_unix) > (o.renewals, o.refresh_expires_unix)
                            }
                            (Some(_), None) => true,
                            _ => false,
                        };
                        if theirs_newer {
                            return Written::Adopted(newer);
                        }
                        // Their access token (it may be newer), our grant.
                        expected = newer.version;
                        rec = Record {
                            grant: rec.grant.take(),
                            ..newer
                        };
                        merged = true;
                    }
                },
                Err(e) => {
                    tracing::error!(app = %key.app, class = key.class.as_str(),
                        "could not write a token to the store ({e}); it is kept in memory and written when the store answers");
                    return Written::Failed { expected };
                }
            }
        }
        tracing::error!(app = %key.app, class = key.class.as_str(), "the stored token kept changing under this write; retrying later");
        Written::Failed { expected }
    }

    /// Before fetching: with a shared store, adopt a newer stored record (than version `base`),
    /// or wait while another instance fetches, or take the lease.
    pub(super) async fn coordinate(&self, key: &TokenKey, base: u64, fetch_timeout: Duration) -> Coordinated {
        if !self.store.is_shared() {
            return Coordinated::Lease(None);
        }
        let deadline = Instant::now() + fetch_timeout + LEASE_SLACK;
        loop {
            // The version this round saw; a write after it (and before our lease) means look again.
            let mut seen = base;
            match self.store.get(key).await {
                // A newer record: a live token to use, or (user tokens) a newer grant to refresh with.
                Ok(Some(r)) if r.version > base && (live(&r) || r.grant.is_some()) => {
                    return Coordinated::Adopted(r);
                }
                Ok(Some(r)) => seen = seen.max(r.version),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(app = %key.app, class = key.class.as_str(), "{e}; fetching without coordination");
                    return Coordinated::Alone;
                }
            }
            match self.store.acquire(key, fetch_timeout + LEASE_SLACK).await {
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

    /// Gives a lease back (if still ours).
    pub(super) async fn release(&self, lease: Option<Lease>) {
        self.store.release(lease).await;
    }

    /// Whether the store answers.
    pub(super) async fn ready(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}
