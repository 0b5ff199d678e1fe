//! `[tokens]` and `[token_errors]`: how tokens are kept fresh, and which platform codes mean a
//! token is dead.

use super::validate::Collector;
use super::Config;
use serde::Deserialize;

/// Refresh a token in the background once this share of its lifetime has
/// passed, so callers never wait for one that is about to expire.
pub const DEFAULT_REFRESH_AT_FRACTION: f64 = 0.8;
/// First delay after a failed token fetch; doubles per failure.
pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 500;
/// Cap of the back-off: short enough to recover quickly, long enough that an
/// outage cannot turn into the 500-calls-in-5-minutes lock-out (10020).
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 10_000;
/// A token endpoint that has not answered by then counts as failed.
pub const DEFAULT_TOKEN_FETCH_TIMEOUT_MS: u64 = 10_000;
/// Renew refresh_tokens 7 days before they expire: days of slack for an
/// outage, while each renewal still adds 23 of its 30 days.
pub const DEFAULT_RENEW_BEFORE_SECS: u64 = 7 * 24 * 3600;
/// The platform allows 5 renewals of a refresh_token.
pub const DEFAULT_MAX_RENEWALS: u32 = 5;
/// Looking for refresh_tokens due once a minute is ample for a 7-day window.
pub const DEFAULT_MAINTAIN_INTERVAL_MS: u64 = 60_000;
/// `tokens.client_token_fetch_budget`: 40% of the platform's 500 per 5 minutes, which also
/// counts any other fetcher using the same credentials.
pub const DEFAULT_CLIENT_TOKEN_FETCH_BUDGET: u32 = 200;

/// `[tokens]` (extension): how tokens are kept fresh.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Share of a token's lifetime after which it is refreshed in the background.
    pub refresh_at_fraction: f64,
    /// First back-off delay after a failed fetch.
    pub backoff_initial_ms: u64,
    /// Largest back-off delay.
    pub backoff_max_ms: u64,
    /// Timeout of one call to a token endpoint.
    pub fetch_timeout_ms: u64,
    /// Renew a user's refresh_token once it expires within this many seconds.
    pub renew_before_secs: u64,
    /// Renewals the platform allows per refresh_token chain.
    pub max_renewals: u32,
    /// How often refresh_tokens due for renewal are looked for.
    pub maintain_interval_ms: u64,
    /// client_token fetches one app may make in any 5 minutes (the platform allows 500).
    pub client_token_fetch_budget: u32,
    /// An app-level token (client, mini_app) whose fetches have failed this long is announced
    /// (`token.fetch_failing` to `[[notify]]`).
    pub fetch_failing_after_secs: u64,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            refresh_at_fraction: DEFAULT_REFRESH_AT_FRACTION,
            backoff_initial_ms: DEFAULT_BACKOFF_INITIAL_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
            fetch_timeout_ms: DEFAULT_TOKEN_FETCH_TIMEOUT_MS,
            renew_before_secs: DEFAULT_RENEW_BEFORE_SECS,
            max_renewals: DEFAULT_MAX_RENEWALS,
            client_token_fetch_budget: DEFAULT_CLIENT_TOKEN_FETCH_BUDGET,
            maintain_interval_ms: DEFAULT_MAINTAIN_INTERVAL_MS,
            fetch_failing_after_secs: 60,
        }
    }
}

/// `[token_errors]`: replaces the default code tables when given.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenErrorsConfig {
    /// Codes meaning "this access token is dead": refresh and retry once.
    pub refresh: Option<Vec<i64>>,
    /// Codes meaning "the user must authorize again".
    pub reauthorize: Option<Vec<i64>>,
}

impl Config {
    /// `[tokens]`: a fraction inside (0, 1), a back-off that starts and grows, no zero period.
    pub(super) fn validate_tokens(&self, c: &mut Collector<'_>) {
        let t = &self.tokens;
        if !(t.refresh_at_fraction > 0.0 && t.refresh_at_fraction < 1.0) {
            c.err(
                "tokens",
                None,
                "refresh_at_fraction",
                "must be between 0 and 1, e.g. 0.8",
            );
        }
        if t.backoff_initial_ms == 0 || t.backoff_initial_ms > t.backoff_max_ms {
            c.err(
                "tokens",
                None,
                "backoff_initial_ms",
                "must be greater than 0 and at most backoff_max_ms",
            );
        }
        if t.maintain_interval_ms == 0 {
            c.err("tokens", None, "maintain_interval_ms", "must be greater than 0");
        }
        if t.fetch_timeout_ms == 0 {
            c.err("tokens", None, "fetch_timeout_ms", "must be greater than 0");
        }
    }
}
