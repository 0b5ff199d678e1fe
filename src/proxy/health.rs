//! How far the retry policy trusts a route's token rejections, per caller ([`Health`]).
//!
//! A route whose API rejected, for one caller, a brand-new token on the replay (after its
//! rejection of the previous one) is not taking that token class, or that caller's calls are
//! malformed (the platform answers an unreadable body with a token error all the same). Its
//! rejections for that caller then fetch nothing for a while, so they cannot burn the app's fetch
//! budget or evict the token other routes use, and other callers are not affected. This is the
//! policy's own state: metrics only count what it decides.

use dashmap::DashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The health of every route for every caller that struck it, shared by the proxy threads. An
/// entry exists only for a (route, caller) that had a strike: routes and callers come from the
/// config, so the table is bounded by it.
#[derive(Debug, Default)]
pub struct Health {
    entries: DashMap<Box<str>, Arc<CallerHealth>>,
    /// Entries with strikes now: while none has, an accepted call costs one atomic load.
    struck: AtomicUsize,
}

fn entry_key(route: &str, caller: &str) -> String {
    format!("{route}\u{1f}{caller}")
}

impl Health {
    /// Whether `caller`'s rejections on `route` are distrusted now.
    pub fn suspect(&self, route: &str, caller: &str) -> bool {
        if self.struck.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.entries
            .get(entry_key(route, caller).as_str())
            .is_some_and(|h| h.suspect())
    }

    /// The platform accepted `caller`'s call on `route`: it is trusted again.
    pub fn accepted(&self, route: &str, caller: &str) {
        if self.struck.load(Ordering::Acquire) == 0 {
            return;
        }
        let Some(h) = self
            .entries
            .get(entry_key(route, caller).as_str())
            .map(|h| Arc::clone(&h))
        else {
            return;
        };
        if h.accepted() {
            self.struck.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// `route` rejected, for `caller`, token `generation`, fetched to replace one it rejected.
    /// Returns how long the route is suspect for that caller from now, if it is.
    pub fn rejected_fresh(&self, route: &str, caller: &str, generation: u32) -> Option<std::time::Duration> {
        let h = Arc::clone(
            &self
                .entries
                .entry(entry_key(route, caller).into_boxed_str())
                .or_default(),
        );
        let (first, suspect) = h.rejected_fresh(generation);
        if first {
            self.struck.fetch_add(1, Ordering::AcqRel);
        }
        suspect
    }
}

/// How one caller's token rejections on a route are trusted. A route whose API rejected, for
/// this caller, a brand-new token on the replay (after its rejection of the previous one) gets a
/// strike; from the second strike in a row the route is *suspect* for that caller for 30 s,
/// doubling with each further strike up to 5 minutes, and that caller's rejections fetch no new
/// token meanwhile: they cannot burn the app's fetch budget, and the token other routes use stays.
/// Any call of that caller the route gets accepted clears it. Other callers are not affected:
/// one caller sending what the platform cannot read (its answer is a token error all the same)
/// cannot stop the gateway refreshing for everyone. A token merely revoked (another fetcher, a
/// revocation) is replaced as often as that happens.
#[derive(Debug, Default)]
struct CallerHealth {
    strikes: std::sync::atomic::AtomicU32,
    struck_generation: std::sync::atomic::AtomicU32,
    suspect_until_ms: std::sync::atomic::AtomicU64,
}

fn monotonic_ms() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1
}

impl CallerHealth {
    /// First strike that makes the route suspect.
    const SUSPECT_AT: u32 = 2;

    /// The platform accepted a call: whether it had strikes (now cleared).
    fn accepted(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.suspect_until_ms.store(0, Relaxed);
        self.strikes.swap(0, Relaxed) != 0
    }

    /// Whether the route's rejections are distrusted now.
    fn suspect(&self) -> bool {
        monotonic_ms() < self.suspect_until_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The route rejected token `generation`, fetched to replace one it rejected. Counted once
    /// per token; returns whether this was the first strike, and how long the route is suspect
    /// from now, if it is.
    fn rejected_fresh(&self, generation: u32) -> (bool, Option<std::time::Duration>) {
        use std::sync::atomic::Ordering::{AcqRel, Relaxed};
        if self.struck_generation.swap(generation, AcqRel) == generation {
            return (false, None);
        }
        let n = self.strikes.fetch_add(1, AcqRel) + 1;
        if n < Self::SUSPECT_AT {
            return (n == 1, None);
        }
        let secs = (30u64 << (n - Self::SUSPECT_AT).min(4)).min(300);
        self.suspect_until_ms.store(monotonic_ms() + secs * 1000, Relaxed);
        (false, Some(std::time::Duration::from_secs(secs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_fresh_rejections_distrust_the_route_for_that_caller_only_until_one_is_accepted() {
        let h = Health::default();
        assert!(!h.suspect("r", "a"));
        assert_eq!(h.rejected_fresh("r", "a", 1), None);
        assert_eq!(h.rejected_fresh("r", "a", 1), None, "once per token");
        assert!(h.rejected_fresh("r", "a", 2).is_some());
        assert!(h.suspect("r", "a"));
        assert!(!h.suspect("r", "b"), "another caller");
        assert!(!h.suspect("s", "a"), "another route");
        h.accepted("r", "a");
        assert!(!h.suspect("r", "a"));
        assert_eq!(h.struck.load(Ordering::Relaxed), 0);
    }
}
