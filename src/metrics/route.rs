//! A route's metric handles, resolved once per route ([`RouteMetrics`]). Only series that can
//! occur on the route are created up front ([`RouteKind`]): a scrape shows 0 where a count can
//! grow, and nothing where it cannot.

use super::{Metrics, PLATFORM_CODES};
use crate::vocab::TokenClass;
use prometheus::{IntCounter, IntCounterVec};
use std::sync::OnceLock;

/// What a route does, so what its metrics can count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Forwards with a token of this class: retries, rejected fresh tokens and the platform's
    /// error codes ([`codes_seen`]) can occur.
    Token(TokenClass),
    /// Forwards with no token (`none`, `app_secret`): requests and both durations.
    Forwarded,
    /// Answered by the gateway itself (`placeholder`, `_no_route`, `_refused`,
    /// `_exchange_code`): requests and their duration only.
    Local,
}

/// Rate limits and quotas (28003017 quota exhausted, 28003018 and 40007 too many calls) and a
/// banned app (28001016): any Open Platform call can meet them.
const APP_CODES: &[i64] = &[28003017, 28003018, 40007, 28001016];
/// A user's state no token fixes (28001045 deregistered, 28001046 banned, 28001047 private):
/// calls about a user.
const USER_CODES: &[i64] = &[28001045, 28001046, 28001047];
/// The Open Platform's rejections of its own tokens (open.douyin.com).
const OPEN_PLATFORM_REJECTIONS: &[i64] = &[10008, 2190008, 2190002, 28001008, 28001003];
/// Rejections of the mini-app token: developer.toutiao.com's 11016, and the live-interactive
/// APIs' 40004 (webcast.bytedance.com takes the mini-app token in `X-Token`).
const MINI_APP_REJECTIONS: &[i64] = &[11016, 40004];

/// The [`PLATFORM_CODES`] a route attaching `class` can see, created up front; any other code
/// still counts, its series created when it first occurs.
pub fn codes_seen(class: TokenClass) -> Vec<i64> {
    let groups: &[&[i64]] = match class {
        TokenClass::Client => &[APP_CODES, OPEN_PLATFORM_REJECTIONS],
        TokenClass::User | TokenClass::Biz => &[APP_CODES, USER_CODES, OPEN_PLATFORM_REJECTIONS],
        TokenClass::MiniApp | TokenClass::Component | TokenClass::Authorizer => &[MINI_APP_REJECTIONS],
    };
    groups.iter().flat_map(|g| g.iter().copied()).collect()
}

/// Handles of one route, resolved once.
pub struct RouteMetrics {
    name: String,
    requests: IntCounterVec,
    /// Request duration (whole request, as the caller sees it).
    pub duration: prometheus::Histogram,
    /// Upstream duration (each upstream exchange). On a [`RouteKind::Local`] route, where no
    /// call goes upstream, it is registered nowhere.
    pub upstream: prometheus::Histogram,
    /// Retry after refresh, answered well. This and the other retry handles, and
    /// `rejects_fresh`, are registered only on a [`RouteKind::Token`] route: no other route
    /// attaches a token to retry.
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
    /// `douyin_gateway_platform_errors_total{route, code}`, one per [`PLATFORM_CODES`] entry then
    /// `other`; those the route's class sees created up front, the others at their first count.
    platform_errors: Box<[OnceLock<IntCounter>]>,
    platform_errors_vec: IntCounterVec,
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
        self.platform_errors[i]
            .get_or_init(|| {
                let code = PLATFORM_CODES
                    .get(i)
                    .map_or_else(|| "other".to_string(), |c| c.to_string());
                self.platform_errors_vec.with_label_values(&[&self.name, &code])
            })
            .inc();
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
    /// Handles for a route name, with the series its `kind` can see there from the start: the
    /// request duration; the upstream duration when it forwards; the retries, rejected fresh
    /// tokens and its class's platform codes when it attaches a token; the 200 count on a route
    /// (`status`: another status, or none for `_refused`, which never answers 200).
    pub fn route(&self, name: &str, kind: RouteKind, status: Option<u16>) -> RouteMetrics {
        let class = match kind {
            RouteKind::Token(class) => Some(class),
            _ => None,
        };
        // A handle no call can reach is left out of the registry.
        let retry = |o: &str| match class {
            Some(_) => self.token_retries.with_label_values(&[name, o]),
            None => IntCounter::new("unregistered", "-").expect("a valid counter"),
        };
        let upstream = match kind {
            RouteKind::Local => prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("unregistered", "-"))
                .expect("a valid histogram"),
            _ => self.upstream_duration.with_label_values(&[name]),
        };
        let seen = class.map(codes_seen).unwrap_or_default();
        let m = RouteMetrics {
            name: name.to_string(),
            requests: self.requests.clone(),
            duration: self.request_duration.with_label_values(&[name]),
            upstream,
            retry_ok: retry("ok"),
            retry_rejected: retry("rejected_again"),
            retry_not_replayable: retry("not_replayable"),
            retry_suppressed: retry("suppressed"),
            retry_token_unavailable: retry("token_unavailable"),
            rejects_fresh: match class {
                Some(_) => self.rejects_fresh.with_label_values(&[name]),
                None => IntCounter::new("unregistered", "-").expect("a valid counter"),
            },
            window: self.windows.of(name),
            statuses: (0..600).map(|_| OnceLock::new()).collect(),
            platform_errors: (0..=PLATFORM_CODES.len()).map(|_| OnceLock::new()).collect(),
            platform_errors_vec: self.platform_errors.clone(),
        };
        if class.is_some() {
            for (i, slot) in m.platform_errors.iter().enumerate() {
                match PLATFORM_CODES.get(i) {
                    Some(code) if seen.contains(code) => {
                        slot.get_or_init(|| self.platform_errors.with_label_values(&[name, &code.to_string()]))
                    }
                    Some(_) => continue,
                    None => slot.get_or_init(|| self.platform_errors.with_label_values(&[name, "other"])),
                };
            }
        }
        if let Some(slot) = status.and_then(|s| m.statuses.get(usize::from(s))) {
            let status = status.unwrap_or_default().to_string();
            slot.get_or_init(|| self.requests.with_label_values(&[name, &status]));
        }
        m
    }
}
