//! The gateway's Prometheus metrics: one `Metrics` registered at start, with
//! label handles looked up once (a `with_label_values` call takes a lock).
//! Labels are bounded: route names, app names, token classes, outcomes.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::OnceLock;

/// Route label for requests that matched no route.
pub const NO_ROUTE: &str = "_no_route";
/// Route label for requests refused before routing (no or wrong caller key, a path that is not
/// canonical, CONNECT, headers too large, the in-flight cap).
pub const REFUSED: &str = "_refused";

/// The version and git commit of this build, as `--version` and `douyin_gateway_build_info` say.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("DOUYIN_GATEWAY_GIT"), ")");

/// Latency buckets from 0.5 ms (a cache-hit hop) to 30 s (the default timeout).
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// All metric families.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    /// `douyin_gateway_token_fetches_total{app,class,outcome}`.
    pub token_fetches: IntCounterVec,
    token_retries: IntCounterVec,
    /// `douyin_gateway_token_cache_total{class,result}`.
    pub token_cache: IntCounterVec,
    /// `douyin_gateway_tokens{app,class,state}`, set at scrape time.
    pub tokens: IntGaugeVec,
    /// `douyin_gateway_reauthorization{app,when}`: users who must re-consent
    /// (`required`) or will have to within 7 days (`within_7d`), set at scrape time.
    pub reauthorization: IntGaugeVec,
    /// `douyin_gateway_refresh_token_renewals_total{app,outcome}`.
    pub renewals: IntCounterVec,
    /// `douyin_gateway_token_evicted_early_total{app,class}`: tokens the platform
    /// rejected well before their expiry.
    pub evicted_early: IntCounterVec,
    /// `douyin_gateway_route_rejects_fresh_tokens_total{route}`.
    pub rejects_fresh: IntCounterVec,
    /// `douyin_gateway_requests_in_flight`: proxy requests in progress, set at scrape time.
    pub in_flight: prometheus::IntGauge,
    /// `douyin_gateway_store_ready`: 1 when the token store answered the last scrape's check.
    pub store_ready: prometheus::IntGauge,
    platform_errors: IntCounterVec,
    /// `douyin_gateway_connections_closed_total{listener,reason}`: connections the gateway
    /// refused or closed itself.
    pub connections_closed: IntCounterVec,
    /// `douyin_gateway_pending_head_bytes`: bytes of unfinished request heads held by all
    /// connections, set at scrape time.
    pub pending_head_bytes: prometheus::IntGauge,
}

/// The token engine's events as counters (subscribed with [`Metrics::token_observer`]).
pub struct TokenMetrics {
    hits: [IntCounter; 4],
    misses: [IntCounter; 4],
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

/// The `reason`s of `douyin_gateway_connections_closed_total`.
pub const CONNECTION_CLOSE_REASONS: &[&str] = &[
    "max_connections",
    "per_ip",
    "evicted",
    "head_timeout",
    "head_budget",
    "bad_head",
];

/// Platform codes counted by value in `douyin_gateway_platform_errors_total{route, code}`: rate
/// limits and quotas (28003017 quota exhausted, 28003018 and 40007 too many calls), the app or
/// user states no token can fix (28001016 app banned; 28001045, 28001046, 28001047 user
/// deregistered, banned, private), and the token rejections themselves. Any other non-zero code
/// counts as `other`, so the label stays bounded.
pub const PLATFORM_CODES: &[i64] = &[
    28003017, 28003018, 40007, 28001016, 28001045, 28001046, 28001047, 10008, 2190008, 2190002, 28001008, 28001003,
    40004, 11016,
];

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
    }

    /// Counts one answered request.
    pub fn count(&self, status: u16) {
        let slot = self.statuses.get(status as usize).unwrap_or(&self.statuses[0]);
        slot.get_or_init(|| self.requests.with_label_values(&[&self.name, &status.to_string()]))
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "douyin_gateway_requests_total",
                "Requests answered, by route and status.",
            ),
            &["route", "status"],
        )
        .unwrap();
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "douyin_gateway_request_duration_seconds",
                "Time from request to response headers, by route.",
            )
            .buckets(BUCKETS.to_vec()),
            &["route"],
        )
        .unwrap();
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "douyin_gateway_upstream_duration_seconds",
                "Time of each upstream exchange, by route.",
            )
            .buckets(BUCKETS.to_vec()),
            &["route"],
        )
        .unwrap();
        let token_fetches = IntCounterVec::new(
            Opts::new(
                "douyin_gateway_token_fetches_total",
                "Calls to token endpoints, by app, class and outcome.",
            ),
            &["app", "class", "outcome"],
        )
        .unwrap();
        let token_retries = IntCounterVec::new(
            Opts::new(
                "douyin_gateway_token_retries_total",
                "Calls replayed after a token refresh, by route and outcome.",
            ),
            &["route", "outcome"],
        )
        .unwrap();
        let token_cache = IntCounterVec::new(
            Opts::new(
                "douyin_gateway_token_cache_total",
                "Token cache lookups, by class and result.",
            ),
            &["class", "result"],
        )
        .unwrap();
        let tokens = IntGaugeVec::new(
            Opts::new("douyin_gateway_tokens", "Tokens held, by app, class and state."),
            &["app", "class", "state"],
        )
        .unwrap();
        let reauthorization = IntGaugeVec::new(
            Opts::new(
                "douyin_gateway_reauthorization",
                "Users who must authorize the app again (when=required) or will have to within 7 days (when=within_7d).",
            ),
            &["app", "when"],
        )
        .unwrap();
        let renewals = IntCounterVec::new(
            Opts::new(
                "douyin_gateway_refresh_token_renewals_total",
                "refresh_token renewals, by app and outcome.",
            ),
            &["app", "outcome"],
        )
        .unwrap();
        let evicted_early = IntCounterVec::new(
            Opts::new(
                "douyin_gateway_token_evicted_early_total",
                "Tokens the platform rejected in the first half of their lifetime: something else fetches with these credentials.",
            ),
            &["app", "class"],
        )
        .unwrap();
        let rejects_fresh = IntCounterVec::new(
            Opts::new(
                "douyin_gateway_route_rejects_fresh_tokens_total",
                "Times a route's API rejected a token fetched moments ago to replace one it rejected: the route's token class is likely wrong.",
            ),
            &["route"],
        )
        .unwrap();
        let platform_errors = IntCounterVec::new(
            Opts::new(
                "douyin_gateway_platform_errors_total",
                "Error codes in the platform's answers (token routes), by route and code (a known list, else \"other\").",
            ),
            &["route", "code"],
        )
        .unwrap();
        let in_flight = prometheus::IntGauge::new(
            "douyin_gateway_requests_in_flight",
            "Proxy requests in progress (bounded by server.max_in_flight).",
        )
        .unwrap();
        let store_ready = prometheus::IntGauge::new(
            "douyin_gateway_store_ready",
            "1 when the token store answered within 1 s at this scrape (as /readyz), else 0.",
        )
        .unwrap();
        let build_info = IntGaugeVec::new(
            Opts::new(
                "douyin_gateway_build_info",
                "The running build: version and git commit (always 1).",
            ),
            &["version", "git"],
        )
        .unwrap();
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("DOUYIN_GATEWAY_GIT")])
            .set(1);
        let connections_closed = IntCounterVec::new(
            Opts::new(
                "douyin_gateway_connections_closed_total",
                "Connections the gateway refused or closed itself, by listener and reason: \
                 max_connections and per_ip (refused at accept), evicted (closed to make room at the \
                 cap), head_timeout, head_budget, bad_head (a head hyper could not parse).",
            ),
            &["listener", "reason"],
        )
        .unwrap();
        for listener in ["proxy", "admin", "public"] {
            for reason in CONNECTION_CLOSE_REASONS {
                connections_closed.with_label_values(&[listener, reason]);
            }
        }
        let pending_head_bytes = prometheus::IntGauge::new(
            "douyin_gateway_pending_head_bytes",
            "Bytes of request heads not yet complete, held by all connections together.",
        )
        .unwrap();
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .unwrap();
        for c in [
            Box::new(connections_closed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(pending_head_bytes.clone()),
            Box::new(reauthorization.clone()),
            Box::new(in_flight.clone()),
            Box::new(store_ready.clone()),
            Box::new(build_info),
            Box::new(rejects_fresh.clone()),
            Box::new(platform_errors.clone()),
            Box::new(evicted_early.clone()),
            Box::new(renewals.clone()),
            Box::new(requests.clone()),
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(token_fetches.clone()),
            Box::new(token_retries.clone()),
            Box::new(token_cache.clone()),
            Box::new(tokens.clone()),
        ] {
            registry.register(c).unwrap();
        }
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            token_fetches,
            token_retries,
            token_cache,
            tokens,
            reauthorization,
            renewals,
            evicted_early,
            rejects_fresh,
            in_flight,
            store_ready,
            platform_errors,
            connections_closed,
            pending_head_bytes,
        }
    }

    /// Puts every per-app family at zero for `app` (a family with no series is missing from a
    /// scrape, and a graph of it shows "no data" rather than 0).
    pub fn app_at_zero(&self, app: &str, mini_app: bool) {
        for class in crate::vocab::TokenClass::ALL {
            if class == crate::vocab::TokenClass::MiniApp && !mini_app {
                continue;
            }
            self.token_fetches.with_label_values(&[app, class.as_str(), "ok"]);
            self.evicted_early.with_label_values(&[app, class.as_str()]);
        }
        self.renewals.with_label_values(&[app, "ok"]);
    }

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

    /// Sets `douyin_gateway_tokens` and `douyin_gateway_reauthorization` from the engine's
    /// census (at scrape time). Every app's series start at zero: a graph shows 0, not "no
    /// data", and an alert on `douyin_gateway_tokens{state="failed"} > 0` has a series to watch.
    pub fn set_token_gauges(&self, census: &crate::token::upkeep::Census) {
        use crate::token::upkeep::TokenState;
        use crate::vocab::TokenClass;
        self.tokens.reset();
        self.reauthorization.reset();
        for (app, mini_app) in &census.apps {
            for class in TokenClass::ALL {
                if class == TokenClass::MiniApp && !mini_app {
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
        for ((app, class, state), n) in &census.tokens {
            self.tokens
                .with_label_values(&[&**app, class.as_str(), state.as_str()])
                .set(*n);
        }
        for ((app, when), n) in &census.reauthorization {
            self.reauthorization.with_label_values(&[&**app, when]).set(*n);
        }
    }

    /// Adds a collector of another part (the store's).
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(c) {
            tracing::warn!("metric not registered: {e}");
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encode metrics");
        out
    }
}
