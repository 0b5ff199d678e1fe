//! The fetch budget of app-level tokens: at most `client_token_fetch_budget` fetches per token in
//! any [`BUDGET_WINDOW`], so that a storm of rejections (another fetcher, a misrouted API) cannot
//! trip the platform's own limit (500 per 5 minutes, 10020) and lock the app out.

use super::{TokenError, TokenKey};
use dashmap::DashMap;
use std::time::{Duration, Instant};

/// The window of `client_fetch_budget`: the platform's own limit counts 5 minutes.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(300);

/// Each app-level token's fetches in the last [`BUDGET_WINDOW`].
#[derive(Default)]
pub(crate) struct Budgets(DashMap<TokenKey, std::sync::Mutex<Budget>>);

/// One token's fetches in the window, oldest first, and whether running out was logged.
#[derive(Default)]
struct Budget {
    fetched: std::collections::VecDeque<Instant>,
    warned: bool,
}

impl Budgets {
    /// Counts a fetch of `key` about to be made, unless `budget` were made in the window already:
    /// then the error, and whether it was already said (so it is logged once per run).
    pub(crate) fn spend(&self, key: &TokenKey, budget: u32, now: Instant) -> Result<(), (TokenError, bool)> {
        let entry = self.0.entry(key.clone()).or_default();
        let mut b = entry.lock().unwrap_or_else(|p| p.into_inner());
        while b.fetched.front().is_some_and(|t| now - *t >= BUDGET_WINDOW) {
            b.fetched.pop_front();
        }
        if b.fetched.len() as u32 >= budget.max(1) {
            let retry = BUDGET_WINDOW.saturating_sub(now - b.fetched[0]);
            let warned = std::mem::replace(&mut b.warned, true);
            return Err((
                TokenError::BudgetExhausted {
                    budget,
                    retry_in_ms: retry.as_millis() as u64,
                },
                warned,
            ));
        }
        b.fetched.push_back(now);
        b.warned = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_allows_so_many_in_the_window_and_says_it_once() {
        let b = Budgets::default();
        let key = TokenKey::client("main".into());
        let t0 = Instant::now();
        assert!(b.spend(&key, 2, t0).is_ok());
        assert!(b.spend(&key, 2, t0).is_ok());
        assert!(matches!(
            b.spend(&key, 2, t0),
            Err((TokenError::BudgetExhausted { .. }, false))
        ));
        assert!(matches!(b.spend(&key, 2, t0), Err((_, true))));
        assert!(b.spend(&key, 2, t0 + BUDGET_WINDOW).is_ok());
    }
}
