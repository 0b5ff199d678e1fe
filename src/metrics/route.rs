//! A route's metric handles, resolved once per route ([`RouteMetrics`]).

use super::{Metrics, PLATFORM_CODES};
use prometheus::{IntCounter, IntCounterVec};
use std::sync::OnceLock;

/// Handles of one route, resolved once.
pub struct RouteMetrics {
    name: String,
    requests: IntCounterVec,
    /// Request duration (whole request, as the caller sees it).
    pub duration: prometheus::Histogram,
    /// Upstream duration (each upstream exchange).
    pub upstream: prometheus::Histogram,
    /// Retry after refresh, answered well.
    pub retry_ok: IntCounter,
    /// Retry after refresh, still rejected.
    pub retry_rejected: IntCounter,
    /// Refresh code on a call too large to replay.
    pub retry_not_replayable: IntCounter,
    /// Refresh code on a token refreshed moments ago: not refreshed again.
    pub retry_suppressed: IntCounter,
    /// Refresh code, but no new token could be had.
    pub retry_token_unavailable: IntCounter,
    /// `douyin_gateway_route_rejects_fresh_tokens_total{route}`: times the route rejected a token
    /// fetched moments ago to replace one it rejected (its API does not take this class).
    pub rejects_fresh: IntCounter,
    /// `douyin_gateway_platform_errors_total{route, code}`, one per [`PLATFORM_CODES`] entry then `other`.
    platform_errors: Box<[IntCounter]>,
    /// The route's last 5 minutes, for the status page.
    pub window: std::sync::Arc<super::window::Window>,
    statuses: Box<[OnceLock<IntCounter>]>,
}

impl RouteMetrics {
    /// Counts a non-zero error code the platform answered on this route.
    pub fn platform_error(&self, code: i64) {
        let i = PLATFORM_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(PLATFORM_CODES.len());
        self.platform_errors[i].inc();
        self.window.platform_error(std::time::Instant::now(), code);
    }

    /// Counts one answered request.
    pub fn count(&self, status: u16) {
        let slot = self.statuses.get(status as usize).unwrap_or(&self.statuses[0]);
        slot.get_or_init(|| self.requests.with_label_values(&[&self.name, &status.to_string()]))
            .inc();
    }
}

impl Metrics {
    /// Handles for a route name; its 200 count is there from the start.
    pub fn route(&self, name: &str) -> RouteMetrics {
        let retry = |o: &str| self.token_retries.with_label_values(&[name, o]);
        let m = RouteMetrics {
            name: name.to_string(),
            requests: self.requests.clone(),
            duration: self.request_duration.with_label_values(&[name]),
            upstream: self.upstream_duration.with_label_values(&[name]),
            retry_ok: retry("ok"),
            retry_rejected: retry("rejected_again"),
            retry_not_replayable: retry("not_replayable"),
            retry_suppressed: retry("suppressed"),
            retry_token_unavailable: retry("token_unavailable"),
            rejects_fresh: self.rejects_fresh.with_label_values(&[name]),
            window: self.windows.of(name),
            statuses: (0..600).map(|_| OnceLock::new()).collect(),
            platform_errors: PLATFORM_CODES
                .iter()
                .map(|c| c.to_string())
                .chain(std::iter::once("other".to_string()))
                .map(|c| self.platform_errors.with_label_values(&[name, &c]))
                .collect(),
        };
        m.statuses[200].get_or_init(|| self.requests.with_label_values(&[name, "200"]));
        m
    }
}
