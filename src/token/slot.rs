//! One token's place in the cache ([`Slot`]): the token calls read without waiting, the
//! single flight that fetches its successor ([`Flight`]), and how its fetches have been failing.

use super::{unix_now, Token, TokenError, Tuning};
use arc_swap::ArcSwapOption;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One token's place in the cache.
#[derive(Default)]
pub struct Slot {
    current: ArcSwapOption<Token>,
    flight: tokio::sync::Mutex<Flight>,
    refreshing: AtomicBool,
    /// A change the store has not taken yet (it was unreachable): written by the next sweep.
    dirty: AtomicBool,
}

impl Slot {
    /// The token calls use now, if any (live or not).
    pub(crate) fn current(&self) -> Option<Arc<Token>> {
        self.current.load_full()
    }

    /// Whether it holds a token that `pick` picks: read in place, no reference count taken.
    pub(crate) fn current_is(&self, pick: impl FnOnce(&Token) -> bool) -> bool {
        self.current.load().as_deref().is_some_and(pick)
    }

    /// Whether it holds a token at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.current.load().is_none()
    }

    /// Puts `t` in for the calls; returns it as they share it.
    pub(crate) fn set(&self, t: Token) -> Arc<Token> {
        let t = Arc::new(t);
        self.current.store(Some(Arc::clone(&t)));
        t
    }

    /// The one fetch at a time: whoever holds it fetches, the others wait for it.
    pub(crate) async fn flight(&self) -> tokio::sync::MutexGuard<'_, Flight> {
        self.flight.lock().await
    }

    /// The flight if nobody holds it (a fetch is under way otherwise).
    pub(crate) fn try_flight(&self) -> Option<tokio::sync::MutexGuard<'_, Flight>> {
        self.flight.try_lock().ok()
    }

    /// Starts a background refresh unless one is under way; whether this call started it.
    pub(crate) fn start_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// The background refresh ended.
    pub(crate) fn end_refresh(&self) {
        self.refreshing.store(false, Ordering::Release);
    }

    /// Marks whether the store still lacks this slot's token.
    pub(crate) fn set_dirty(&self, dirty: bool) {
        self.dirty.store(dirty, Ordering::Release);
    }

    /// Whether the store still lacks this slot's token.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }
}

/// The state of a slot's fetching, held under its lock: fine, or failing.
#[derive(Default)]
pub(crate) struct Flight(Option<Box<Failing>>);

/// A token whose fetches fail: how often in a row, when to try again, and why. Boxed: one pointer
/// in every slot, the rest only in those that failed.
#[derive(Debug)]
struct Failing {
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

/// What a failed fetch means for the next ones ([`Flight::failed`]).
pub(crate) struct Failed {
    /// In a row.
    pub(crate) failures: u32,
    /// Until the next try.
    pub(crate) backoff: Duration,
    /// The run's first failure, Unix seconds, when this failure is the one to announce as
    /// `token.fetch_failing`.
    pub(crate) announce_since: Option<u64>,
}

impl Flight {
    /// While backing off after failures: the error calls get meanwhile.
    pub(crate) fn backing_off(&self, now: Instant) -> Option<TokenError> {
        let f = self.0.as_deref()?;
        (now < f.retry_after).then(|| TokenError::BackingOff {
            last: Box::new(f.last_error.clone()),
            retry_in_ms: (f.retry_after - now).as_millis() as u64,
        })
    }

    /// The slot's token was replaced from elsewhere (the store, an import): no run of failures.
    pub(crate) fn reset(&mut self) {
        self.0 = None;
    }

    /// A fetch worked: the run of failures ends. Its first failure (Unix seconds) when it was
    /// announced as failing, so its recovery is announced too.
    pub(crate) fn succeeded(&mut self) -> Option<u64> {
        let announced = self.0.take().filter(|f| f.announced)?;
        Some(announced.since_unix)
    }

    /// A fetch failed with `err`: the back-off doubles (capped), and an app-level token failing
    /// for longer than `fetch_failing_after` is to be announced, once per run.
    pub(crate) fn failed(&mut self, err: &TokenError, tuning: &Tuning, app_level: bool) -> Failed {
        let failures = self.0.as_ref().map_or(0, |f| f.failures) + 1;
        let doubling = tuning.backoff_initial.saturating_mul(1u32 << (failures - 1).min(16));
        let backoff = doubling.min(tuning.backoff_max);
        let (since, since_unix, announced) = self.0.as_deref().map_or((Instant::now(), unix_now(), false), |f| {
            (f.since, f.since_unix, f.announced)
        });
        let announce = app_level && !announced && since.elapsed() >= tuning.fetch_failing_after;
        self.0 = Some(Box::new(Failing {
            failures,
            retry_after: Instant::now() + backoff,
            last_error: err.clone(),
            since,
            since_unix,
            announced: announced || announce,
        }));
        Failed {
            failures,
            backoff,
            announce_since: announce.then_some(since_unix),
        }
    }

    /// How it stands, for the status page.
    pub(crate) fn state(&self) -> FetchState {
        match self.0.as_deref() {
            Some(f) => FetchState::Failing {
                failures: f.failures,
                since_unix: f.since_unix,
                outcome: f.last_error.outcome(),
            },
            None => FetchState::Ok,
        }
    }
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
