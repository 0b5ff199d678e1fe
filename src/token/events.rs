//! What the token engine tells whoever listens. The engine publishes typed [`Event`]s to its
//! [`Events`] fan-out and calls nobody above it: `[[notify]]` receivers, the token metrics and
//! the status page's list of recent failures subscribe ([`Observer`]), each deciding what an event
//! means to it.
//!
//! ```
//! use douyin_gateway::token::events::{Event, Events, Observer};
//! use std::sync::{atomic::{AtomicUsize, Ordering}, Arc};
//! struct Hits(AtomicUsize);
//! impl Observer for Hits {
//!     fn on(&self, e: &Event<'_>) {
//!         if let Event::Cache { hit: true, .. } = e {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//! }
//! let events = Events::default();
//! let hits = Arc::new(Hits(AtomicUsize::new(0)));
//! events.subscribe(hits.clone());
//! events.publish(&Event::Cache { class: douyin_gateway::vocab::TokenClass::Client, hit: true });
//! assert_eq!(hits.0.load(Ordering::Relaxed), 1);
//! ```

use super::TokenError;
use crate::vocab::{unix_now, TokenClass, TokenKey};
use arc_swap::ArcSwap;
use std::sync::Arc;

mod recent;
pub use recent::{RecentEvent, RecentEvents, RECENT_EVENTS};

/// Something the engine did or found.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A call looked for a live cached token of `class`: found (`hit`) or not.
    Cache {
        /// The token's class.
        class: TokenClass,
        /// Found live.
        hit: bool,
    },
    /// A fetch ended (or was not made: the app's fetch budget is spent), with its outcome: `ok`,
    /// `network`, `timeout`, `refused`, `rate_limited`, …
    Fetched {
        /// Which token.
        key: &'a TokenKey,
        /// `ok`, or the failure's outcome.
        outcome: &'static str,
    },
    /// A fetch or renewal failed. Its message names no token.
    Failed {
        /// Which token.
        key: &'a TokenKey,
        /// Why.
        error: &'a TokenError,
    },
    /// An app-level token has failed to fetch for longer than `fetch_failing_after` (once per run
    /// of failures).
    FetchFailing {
        /// Which token.
        key: &'a TokenKey,
        /// The last failure's outcome.
        outcome: &'static str,
        /// The run's first failure, Unix seconds.
        since_unix: u64,
    },
    /// A token announced as [`Event::FetchFailing`] was fetched again.
    FetchRecovered {
        /// Which token.
        key: &'a TokenKey,
        /// The run's first failure, Unix seconds.
        since_unix: u64,
    },
    /// The platform rejected a token in the first half of its life (once per token): another
    /// fetcher with the same credentials, or a user who revoked the app.
    EvictedEarly {
        /// Which token.
        key: &'a TokenKey,
        /// Its age then, seconds.
        age_s: u64,
    },
    /// A refresh_token renewal ended with `outcome` (`ok`, or the failure's).
    Renewal {
        /// Which token.
        key: &'a TokenKey,
        /// `ok`, or the failure's outcome.
        outcome: &'static str,
    },
    /// A user must authorize the app again (a dead refresh_token, a revocation).
    ReauthorizationRequired {
        /// App name.
        app: &'a str,
        /// The user.
        open_id: &'a str,
        /// Why, in words.
        reason: &'a str,
    },
    /// A merchant app's authorization is gone (`unauthorized`: it withdrew it, `UNAUTHORIZED`) or
    /// its grant cannot be renewed and it must authorize the provider again.
    AuthorizerLost {
        /// The provider's name.
        provider: &'a str,
        /// The merchant app.
        authorizer_appid: &'a str,
        /// Why, in words.
        reason: &'a str,
        /// Withdrawn by the merchant (else: must authorize again).
        unauthorized: bool,
    },
    /// A user's refresh_token cannot be renewed again and dies within 7 days: the user must
    /// re-consent by then (once per user and deadline).
    ReauthorizationDue {
        /// App name.
        app: &'a str,
        /// The user.
        open_id: &'a str,
        /// The deadline, Unix seconds.
        by_unix: u64,
    },
    /// A route's API rejected, for one caller, two brand-new tokens in a row: the retry policy
    /// distrusts its rejections for that caller (they fetch no new token) for `pause_s`.
    RouteDistrusted {
        /// The route's name.
        route: &'a str,
        /// The token it rejected (for a user route, the user's).
        key: &'a TokenKey,
        /// The caller's name (`-`: anonymous).
        caller: &'a str,
        /// For how long, seconds.
        pause_s: u64,
    },
}

/// A subscriber to the engine's events. `on` is called on the engine's path (for
/// [`Event::Cache`], on every call): it must not block.
pub trait Observer: Send + Sync {
    /// One event.
    fn on(&self, event: &Event<'_>);

    /// Whether it wants [`Event::ReauthorizationDue`], which costs a look at every cached user
    /// each maintenance round (default: no).
    fn wants_due(&self) -> bool {
        false
    }
}

/// The engine's subscribers.
#[derive(Default)]
pub struct Events {
    observers: ArcSwap<Vec<Arc<dyn Observer>>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("observers", &self.observers.load().len())
            .finish()
    }
}

impl Events {
    /// Adds a subscriber.
    pub fn subscribe(&self, observer: Arc<dyn Observer>) {
        self.observers.rcu(|old| {
            let mut v = Vec::clone(old);
            v.push(Arc::clone(&observer));
            v
        });
    }

    /// Tells every subscriber.
    pub fn publish(&self, event: &Event<'_>) {
        for o in self.observers.load().iter() {
            o.on(event);
        }
    }

    /// Whether any subscriber wants [`Event::ReauthorizationDue`].
    pub fn wants_due(&self) -> bool {
        self.observers.load().iter().any(|o| o.wants_due())
    }
}

/// Failures the status page lists.
pub const RECENT_ERRORS: usize = 20;

/// A token fetch or renewal that failed: what and why, never a token.
#[derive(Debug, Clone)]
pub struct RecentError {
    /// When, Unix seconds.
    pub at_unix: u64,
    /// Which token.
    pub key: TokenKey,
    /// The metric outcome (`network`, `refused`, …).
    pub outcome: &'static str,
    /// The error, as logged.
    pub message: String,
}

/// The last [`RECENT_ERRORS`] failures ([`Event::Failed`]), for the status page: a subscriber.
#[derive(Debug, Default)]
pub struct RecentErrors(std::sync::Mutex<std::collections::VecDeque<RecentError>>);

impl RecentErrors {
    /// The latest failures, newest first.
    pub fn list(&self) -> Vec<RecentError> {
        let recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().cloned().collect()
    }
}

impl Observer for RecentErrors {
    fn on(&self, event: &Event<'_>) {
        let Event::Failed { key, error } = event else { return };
        let mut recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_ERRORS {
            recent.pop_front();
        }
        recent.push_back(RecentError {
            at_unix: unix_now(),
            key: (*key).clone(),
            outcome: error.outcome(),
            message: error.to_string(),
        });
    }
}

/// Fetches of each app-level token (client, mini-app) that worked and that failed, since start,
/// for the status page: a subscriber. User tokens are not counted (there may be millions).
#[derive(Debug, Default)]
pub struct FetchCounts(dashmap::DashMap<TokenKey, [u64; 2]>);

impl FetchCounts {
    /// `key`'s fetches: worked, failed.
    pub fn of(&self, key: &TokenKey) -> (u64, u64) {
        self.0.get(key).map_or((0, 0), |c| (c[0], c[1]))
    }
}

impl Observer for FetchCounts {
    fn on(&self, event: &Event<'_>) {
        let Event::Fetched { key, outcome } = event else { return };
        if key.class.is_app_level() {
            self.0.entry((*key).clone()).or_default()[usize::from(*outcome != "ok")] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_errors_keep_the_last_twenty_newest_first() {
        let recent = RecentErrors::default();
        let key = TokenKey::client("main".into());
        for i in 0..25u64 {
            recent.on(&Event::Failed {
                key: &key,
                error: &TokenError::Timeout(i),
            });
        }
        let list = recent.list();
        assert_eq!(list.len(), RECENT_ERRORS);
        assert!(list[0].message.contains("24"), "{}", list[0].message);
        assert!(list[19].message.contains('5'), "{}", list[19].message);
    }
}
