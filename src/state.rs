//! What every request and the admin listener share.

use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::token::Tokens;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// Shared state of a running gateway.
pub struct Shared {
    /// The current compiled config.
    pub runtime: ArcSwap<Runtime>,
    /// The token cache.
    pub tokens: Arc<Tokens>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Proxy requests in progress (bounded by `server.max_in_flight`).
    pub in_flight: std::sync::atomic::AtomicUsize,
    /// The token engine's last failures, for the status page.
    pub recent_errors: Arc<crate::token::events::RecentErrors>,
    /// Bytes of unfinished request heads held by every listener's connections.
    pub head_budget: Arc<crate::conn::HeadBudget>,
    /// The authorization flow's signed, single-use states.
    pub oauth: crate::admin::OAuthStates,
    /// Request bodies being read on the admin and public listeners.
    pub body_slots: crate::admin::BodySlots,
    /// The authorization flow's limits: per client address, and code exchanges.
    pub oauth_limits: crate::admin::OAuthLimits,
    /// Webhook deliveries processed already, by `Msg-Id`.
    pub webhooks: crate::admin::Delivered,
}
