//! The token engine's metrics: its events as counters ([`TokenMetrics`], a subscriber) and its
//! census as gauges.

use super::Metrics;
use prometheus::{IntCounter, IntCounterVec};

/// The token engine's events as counters (subscribed with [`Metrics::token_observer`]).
pub struct TokenMetrics {
    hits: [IntCounter; crate::vocab::TokenClass::ALL.len()],
    misses: [IntCounter; crate::vocab::TokenClass::ALL.len()],
    fetches: IntCounterVec,
    evicted_early: IntCounterVec,
    renewals: IntCounterVec,
}

impl crate::token::events::Observer for TokenMetrics {
    fn on(&self, event: &crate::token::events::Event<'_>) {
        use crate::token::events::Event;
        match *event {
            Event::Cache { class, hit: true } => self.hits[class as usize].inc(),
            Event::Cache { class, hit: false } => self.misses[class as usize].inc(),
            Event::Fetched { key, outcome } => self
                .fetches
                .with_label_values(&[&key.app, key.class.as_str(), outcome])
                .inc(),
            Event::EvictedEarly { key, .. } => self
                .evicted_early
                .with_label_values(&[&key.app, key.class.as_str()])
                .inc(),
            Event::Renewal { key, outcome } => self.renewals.with_label_values(&[&key.app, outcome]).inc(),
            _ => {}
        }
    }
}

impl Metrics {
    /// The subscriber that counts the token engine's events: cache hits and misses, fetches by
    /// outcome, early evictions, renewals.
    pub fn token_observer(&self) -> std::sync::Arc<TokenMetrics> {
        let cache =
            |hit: &str| crate::vocab::TokenClass::ALL.map(|c| self.token_cache.with_label_values(&[c.as_str(), hit]));
        std::sync::Arc::new(TokenMetrics {
            hits: cache("hit"),
            misses: cache("miss"),
            fetches: self.token_fetches.clone(),
            evicted_early: self.evicted_early.clone(),
            renewals: self.renewals.clone(),
        })
    }

    /// Sets `douyin_gateway_tokens`, `douyin_gateway_reauthorization` and
    /// `douyin_gateway_authorizers` from the engine's census (at scrape time). Every app's series start at zero: a graph shows 0, not "no
    /// data", and an alert on `douyin_gateway_tokens{state="failed"} > 0` has a series to watch.
    pub fn set_token_gauges(&self, census: &crate::token::upkeep::Census) {
        use crate::token::upkeep::TokenState;
        use crate::vocab::TokenClass;
        self.tokens.reset();
        self.reauthorization.reset();
        for (app, mini_app) in &census.apps {
            for class in TokenClass::ALL {
                if (class == TokenClass::MiniApp && !mini_app)
                    || matches!(class, TokenClass::Component | TokenClass::Authorizer)
                {
                    continue;
                }
                for state in TokenState::ALL.into_iter().filter(|s| s.applies_to(class)) {
                    self.tokens
                        .with_label_values(&[&**app, class.as_str(), state.as_str()])
                        .set(0);
                }
            }
            for when in ["required", "within_7d"] {
                self.reauthorization.with_label_values(&[&**app, when]).set(0);
            }
        }
        self.authorizers.reset();
        for provider in &census.providers {
            for state in TokenState::ALL {
                self.authorizers
                    .with_label_values(&[&**provider, state.as_str()])
                    .set(0);
            }
        }
        for ((app, class, state), n) in &census.tokens {
            if *class == TokenClass::Authorizer && census.providers.contains(app) {
                self.authorizers.with_label_values(&[&**app, state.as_str()]).set(*n);
            }
            self.tokens
                .with_label_values(&[&**app, class.as_str(), state.as_str()])
                .set(*n);
        }
        for ((app, when), n) in &census.reauthorization {
            self.reauthorization.with_label_values(&[&**app, when]).set(*n);
        }
    }

    /// Sets `douyin_gateway_provider_ticket_age_seconds` (at scrape time): for each configured
    /// provider, the seconds since its latest ticket was received, or -1 when it holds none (a
    /// series that is always there, so an alert can watch `== -1` as well as a large age).
    pub fn set_ticket_ages(&self, ages: &[(std::sync::Arc<str>, Option<u64>)]) {
        self.provider_ticket_age.reset();
        for (provider, age) in ages {
            let v = age.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX));
            self.provider_ticket_age.with_label_values(&[&**provider]).set(v);
        }
    }
}
