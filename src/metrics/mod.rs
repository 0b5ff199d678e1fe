//! The gateway's Prometheus metrics: one `Metrics` registered at start, with
//! label handles looked up once (a `with_label_values` call takes a lock).
//! Labels are bounded: route names, app names, token classes, outcomes.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
mod process;
mod route;
mod tokens;
pub mod window;

pub use process::ProcessCollector;
pub use route::{codes_seen, RouteKind, RouteMetrics};
pub use tokens::TokenMetrics;

/// Route label for requests that matched no route.
pub const NO_ROUTE: &str = "_no_route";
/// Route label for requests refused before routing (no or wrong caller key, a path that is not
/// canonical, CONNECT, headers too large, the in-flight cap).
pub const REFUSED: &str = "_refused";
/// Route label for `POST /_gateway/exchange_code`, which the gateway answers itself.
pub const EXCHANGE_CODE: &str = "_exchange_code";

/// The version and git commit of this build, as `--version` and `douyin_gateway_build_info` say.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("DOUYIN_GATEWAY_GIT"), ")");

/// The gateway's own families: name, help, labels. Counters end in `_total`, histograms in
/// `_seconds`; the rest are gauges.
pub const FAMILIES: &[(&str, &str, &[&str])] = &[
    ("douyin_gateway_requests_total", "Requests answered, by route and status.", &["route", "status"]),
    (
        "douyin_gateway_request_duration_seconds",
        "Time from request to response headers, by route.",
        &["route"],
    ),
    (
        "douyin_gateway_upstream_duration_seconds",
        "Time of each upstream exchange, by route.",
        &["route"],
    ),
    (
        "douyin_gateway_token_fetches_total",
        "Calls to token endpoints, by app, class and outcome.",
        &["app", "class", "outcome"],
    ),
    (
        "douyin_gateway_token_retries_total",
        "Calls replayed after a token refresh, by route and outcome.",
        &["route", "outcome"],
    ),
    (
        "douyin_gateway_token_cache_total",
        "Token cache lookups, by class and result.",
        &["class", "result"],
    ),
    ("douyin_gateway_tokens", "Tokens held, by app, class and state.", &["app", "class", "state"]),
    (
        "douyin_gateway_reauthorization",
        "Users who must authorize the app again (when=required) or will have to within 7 days (when=within_7d).",
        &["app", "when"],
    ),
    (
        "douyin_gateway_refresh_token_renewals_total",
        "refresh_token renewals, by app and outcome.",
        &["app", "outcome"],
    ),
    (
        "douyin_gateway_token_evicted_early_total",
        "Tokens the platform rejected in the first half of their lifetime: something else fetches with these credentials.",
        &["app", "class"],
    ),
    (
        "douyin_gateway_route_rejects_fresh_tokens_total",
        "Times a route's API rejected a token fetched moments ago to replace one it rejected: the route's token class is likely wrong.",
        &["route"],
    ),
    (
        "douyin_gateway_platform_errors_total",
        "Error codes in the platform's answers (token routes), by route and code (a known list, else \"other\").",
        &["route", "code"],
    ),
    (
        "douyin_gateway_signatures_total",
        "Signed calls, by app and outcome: signed (a request signed with the app's key), verified (an answer's \
         Byte-Signature checked good), refused (an answer refused: bad or missing signature, or an unsigned 5xx).",
        &["app", "outcome"],
    ),
    (
        "douyin_gateway_requests_in_flight",
        "Proxy requests in progress (bounded by server.max_in_flight).",
        &[],
    ),
    (
        "douyin_gateway_store_ready",
        "1 when the token store answered within 1 s at this scrape (as /readyz), else 0.",
        &[],
    ),
    (
        "douyin_gateway_build_info",
        "The running build: version and git commit (always 1).",
        &["version", "git"],
    ),
    (
        "douyin_gateway_connections_closed_total",
        "Connections the gateway refused or closed itself, by listener and reason: max_connections and per_ip \
         (refused at accept), evicted (closed to make room at the cap), head_timeout, head_budget, bad_head \
         (a head hyper could not parse).",
        &["listener", "reason"],
    ),
    (
        "douyin_gateway_pending_head_bytes",
        "Bytes of request heads not yet complete, held by all connections together.",
        &[],
    ),
    (
        "douyin_gateway_callbacks_total",
        "[[callbacks]] requests, by callback and outcome: forwarded (the backend answered), bad_signature, \
         stale (timestamp over 300 s off), replayed (nonce seen), nonces_full, backend_failed.",
        &["callback", "outcome"],
    ),
    (
        "douyin_gateway_callback_nonces",
        "Nonces of verified callbacks remembered (10 minutes each), against replays.",
        &[],
    ),
    (
        "douyin_gateway_webhook_forwards_total",
        "Webhook events relayed to [[webhook_forward]] targets (N:HOST:PORT), by outcome: delivered (2xx), \
         refused (another status), failed (no answer in timeout_ms).",
        &["target", "outcome"],
    ),
    (
        "douyin_gateway_provider_events_total",
        "Events POSTed to a [[providers]] event URL, by provider, event (PUSH, AUTHORIZED, UPDATE_AUTHORIZED, \
         UNAUTHORIZED, other; - when unread) and outcome: ok, bad_signature, stale, replayed, nonces_full, \
         bad_message (did not decrypt or parse, or another appid), store_failed.",
        &["provider", "event", "outcome"],
    ),
    (
        "douyin_gateway_authorizers",
        "Merchant apps' authorizer tokens each [[providers]] holds, by state (valid, expired, failed, \
         reauthorization_required); with a shared store every stored one once a pass over the store is complete.",
        &["provider", "state"],
    ),
    (
        "douyin_gateway_provider_ticket_age_seconds",
        "Seconds since the gateway received the provider's latest component_ticket (the platform pushes one every \
         10 minutes); -1 while it holds none.",
        &["provider"],
    ),
    (
        "douyin_gateway_access_log_dropped_total",
        "Access lines dropped because the log's writer was behind (stderr blocked), never delaying a call.",
        &[],
    ),
];

/// A family of [`FAMILIES`] by name.
fn family(name: &str) -> (&'static str, &'static str, &'static [&'static str]) {
    *FAMILIES
        .iter()
        .find(|(n, _, _)| *n == name)
        .unwrap_or_else(|| panic!("{name} is not in FAMILIES"))
}

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
    signatures: IntCounterVec,
    /// `douyin_gateway_connections_closed_total{listener,reason}`: connections the gateway
    /// refused or closed itself.
    pub connections_closed: IntCounterVec,
    /// `douyin_gateway_pending_head_bytes`: bytes of unfinished request heads held by all
    /// connections, set at scrape time.
    pub pending_head_bytes: prometheus::IntGauge,
    /// `douyin_gateway_callbacks_total{callback,outcome}`.
    pub callbacks: IntCounterVec,
    /// `douyin_gateway_callback_nonces`: nonces remembered, set as they are recorded.
    pub callback_nonces: prometheus::IntGauge,
    /// `douyin_gateway_webhook_forwards_total{target,outcome}`.
    pub webhook_forwards: IntCounterVec,
    /// `douyin_gateway_provider_events_total{provider,event,outcome}`.
    pub provider_events: IntCounterVec,
    /// `douyin_gateway_authorizers{provider,state}`, set at scrape time.
    pub authorizers: IntGaugeVec,
    /// `douyin_gateway_provider_ticket_age_seconds{provider}`, set at scrape time.
    pub provider_ticket_age: IntGaugeVec,
    /// Each route's last 5 minutes, for the status page (not exported to Prometheus).
    pub windows: window::Windows,
    /// `douyin_gateway_access_log_dropped_total`: brought up to [`crate::logs::access::dropped`]
    /// at each scrape.
    access_log_dropped: prometheus::IntCounter,
    /// What of [`crate::logs::access::dropped`] the counter counts already.
    access_log_counted: std::sync::atomic::AtomicU64,
}

/// `douyin_gateway_signatures_total{app,outcome}` of one app, resolved once.
#[derive(Clone)]
pub struct SignatureCounters {
    /// Requests signed with the app's key.
    pub signed: prometheus::IntCounter,
    /// Answers whose `Byte-Signature` verified.
    pub verified: prometheus::IntCounter,
    /// Answers refused: a bad or missing signature, or an unsigned 5xx.
    pub refused: prometheus::IntCounter,
}

impl std::fmt::Debug for SignatureCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignatureCounters")
    }
}

/// The `outcome`s of `douyin_gateway_callbacks_total`.
pub const CALLBACK_OUTCOMES: &[&str] = &[
    "forwarded",
    "bad_signature",
    "stale",
    "replayed",
    "nonces_full",
    "backend_failed",
];

/// The `outcome`s of `douyin_gateway_webhook_forwards_total`.
pub const WEBHOOK_FORWARD_OUTCOMES: &[&str] = &["delivered", "refused", "failed"];

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
/// counts as `other`, so the label stays bounded. A route's series are created up front only for
/// the codes its token class can see ([`codes_seen`]).
pub const PLATFORM_CODES: &[i64] = &[
    28003017, 28003018, 40007, 28001016, 28001045, 28001046, 28001047, 10008, 2190008, 2190002, 28001008, 28001003,
    40004, 11016,
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family, as [`FAMILIES`] lists them, and the process metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str| {
            let (n, help, labels) = family(name);
            let c = IntCounterVec::new(Opts::new(n, help), labels).expect("a valid family");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let gauges = |name: &str| {
            let (n, help, labels) = family(name);
            let g = IntGaugeVec::new(Opts::new(n, help), labels).expect("a valid family");
            registry.register(Box::new(g.clone())).expect("registered once");
            g
        };
        let gauge = |name: &str| {
            let (n, help, _) = family(name);
            let g = prometheus::IntGauge::new(n, help).expect("a valid family");
            registry.register(Box::new(g.clone())).expect("registered once");
            g
        };
        let histogram = |name: &str| {
            let (n, help, labels) = family(name);
            let h = HistogramVec::new(HistogramOpts::new(n, help).buckets(BUCKETS.to_vec()), labels)
                .expect("a valid family");
            registry.register(Box::new(h.clone())).expect("registered once");
            h
        };
        gauges("douyin_gateway_build_info")
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("DOUYIN_GATEWAY_GIT")])
            .set(1);
        let connections_closed = counter("douyin_gateway_connections_closed_total");
        for listener in ["proxy", "admin", "public"] {
            for reason in CONNECTION_CLOSE_REASONS {
                connections_closed.with_label_values(&[listener, reason]);
            }
        }
        registry
            .register(Box::new(ProcessCollector::new()))
            .expect("registered once");
        Metrics {
            requests: counter("douyin_gateway_requests_total"),
            request_duration: histogram("douyin_gateway_request_duration_seconds"),
            upstream_duration: histogram("douyin_gateway_upstream_duration_seconds"),
            token_fetches: counter("douyin_gateway_token_fetches_total"),
            token_retries: counter("douyin_gateway_token_retries_total"),
            token_cache: counter("douyin_gateway_token_cache_total"),
            tokens: gauges("douyin_gateway_tokens"),
            reauthorization: gauges("douyin_gateway_reauthorization"),
            renewals: counter("douyin_gateway_refresh_token_renewals_total"),
            evicted_early: counter("douyin_gateway_token_evicted_early_total"),
            rejects_fresh: counter("douyin_gateway_route_rejects_fresh_tokens_total"),
            in_flight: gauge("douyin_gateway_requests_in_flight"),
            store_ready: gauge("douyin_gateway_store_ready"),
            platform_errors: counter("douyin_gateway_platform_errors_total"),
            signatures: counter("douyin_gateway_signatures_total"),
            connections_closed,
            pending_head_bytes: gauge("douyin_gateway_pending_head_bytes"),
            callbacks: counter("douyin_gateway_callbacks_total"),
            callback_nonces: gauge("douyin_gateway_callback_nonces"),
            webhook_forwards: counter("douyin_gateway_webhook_forwards_total"),
            provider_events: counter("douyin_gateway_provider_events_total"),
            authorizers: gauges("douyin_gateway_authorizers"),
            provider_ticket_age: gauges("douyin_gateway_provider_ticket_age_seconds"),
            windows: Default::default(),
            access_log_dropped: {
                let (n, help, _) = family("douyin_gateway_access_log_dropped_total");
                let c = prometheus::IntCounter::new(n, help).expect("a valid family");
                registry.register(Box::new(c.clone())).expect("registered once");
                c
            },
            access_log_counted: Default::default(),
            registry,
        }
    }

    /// Puts every per-app family at zero for `app` (a family with no series is missing from a
    /// scrape, and a graph of it shows "no data" rather than 0).
    pub fn app_at_zero(&self, app: &str, mini_app: bool) {
        for class in crate::vocab::TokenClass::ALL {
            use crate::vocab::TokenClass;
            if (class == TokenClass::MiniApp && !mini_app)
                || matches!(class, TokenClass::Component | TokenClass::Authorizer)
            {
                continue;
            }
            self.token_fetches.with_label_values(&[app, class.as_str(), "ok"]);
            self.evicted_early.with_label_values(&[app, class.as_str()]);
        }
        self.renewals.with_label_values(&[app, "ok"]);
    }

    /// Puts a provider's families at zero: `douyin_gateway_provider_events_total` for the outcomes
    /// an alert watches, its component and authorizer token fetches and early evictions, its
    /// merchant apps in every state, and its ticket's age at -1 (none held) until a scrape reads it.
    pub fn provider_at_zero(&self, provider: &str) {
        use crate::vocab::TokenClass;
        for class in [TokenClass::Component, TokenClass::Authorizer] {
            self.token_fetches.with_label_values(&[provider, class.as_str(), "ok"]);
            self.evicted_early.with_label_values(&[provider, class.as_str()]);
        }
        for state in crate::token::upkeep::TokenState::ALL {
            self.authorizers.with_label_values(&[provider, state.as_str()]).set(0);
        }
        self.provider_ticket_age.with_label_values(&[provider]).set(-1);
        for (event, outcome) in [
            ("PUSH", "ok"),
            ("PUSH", "store_failed"),
            ("-", "bad_signature"),
            ("-", "stale"),
            ("-", "replayed"),
            ("-", "bad_message"),
        ] {
            self.provider_events.with_label_values(&[provider, event, outcome]);
        }
    }

    /// Puts the `[[callbacks]]` and `[[webhook_forward]]` families at zero for each callback and
    /// target, every outcome.
    pub fn relay_at_zero<'a>(&self, callbacks: impl Iterator<Item = &'a str>, targets: impl Iterator<Item = &'a str>) {
        for c in callbacks {
            for outcome in CALLBACK_OUTCOMES {
                self.callbacks.with_label_values(&[c, outcome]);
            }
        }
        for t in targets {
            for outcome in WEBHOOK_FORWARD_OUTCOMES {
                self.webhook_forwards.with_label_values(&[t, outcome]);
            }
        }
    }

    /// The `douyin_gateway_signatures_total` handles of `app`, each series there from the start.
    pub fn signatures(&self, app: &str) -> SignatureCounters {
        let c = |outcome: &str| self.signatures.with_label_values(&[app, outcome]);
        SignatureCounters {
            signed: c("signed"),
            verified: c("verified"),
            refused: c("refused"),
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
        let dropped = crate::logs::access::dropped();
        let counted = self
            .access_log_counted
            .fetch_max(dropped, std::sync::atomic::Ordering::AcqRel);
        if dropped > counted {
            self.access_log_dropped.inc_by(dropped - counted);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encode metrics");
        out
    }
}
