//! What the proxy and the admin listener share: the config, the token engine, metrics and the
//! connection budgets. The admin listener's own state is `admin::State`.

use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::token::Tokens;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// Shared state of a running gateway.
pub struct Shared {
    /// The current compiled config.
    pub runtime: ArcSwap<Runtime>,
    /// The token engine: cache, fetches, store, renewals.
    pub tokens: Arc<Tokens>,
    /// The registry `/metrics` renders, and the handles the layers count with.
    pub metrics: Arc<Metrics>,
    /// Proxy requests in progress (bounded by `server.max_in_flight`).
    pub in_flight: std::sync::atomic::AtomicUsize,
    /// The token engine's last failures, for the status page.
    pub recent_errors: Arc<crate::token::events::RecentErrors>,
    /// The app tokens' fetches that worked and failed, for the status page.
    pub fetch_counts: Arc<crate::token::events::FetchCounts>,
    /// The last token events (revocations, early evictions, distrusted routes, …), for the
    /// status page.
    pub recent_events: Arc<crate::token::events::RecentEvents>,
    /// Bytes of unfinished request heads held by every listener's connections.
    pub head_budget: Arc<crate::conn::HeadBudget>,
}
