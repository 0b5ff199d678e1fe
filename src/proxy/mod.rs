//! The proxy: the tower middleware stack the project card describes, one
//! module per layer, outermost first.
//!
//! ```text
//!  caller ──► SetSensitiveRequestHeaders   (tower-http: caller keys never printable)
//!         ──► Edge          request id, admission limits, target checks, deadline,
//!                           panics caught, metrics, access log; every GatewayError
//!                           becomes the contract's JSON answer here, and only here
//!         ──► Authenticate  who is calling (caller key, or anonymous)
//!         ──► ExchangeCode  `POST /_gateway/exchange_code` answered here (codes the app received
//!                           itself); every other path passes on
//!         ──► Routing       which route; may this caller use it; which token it needs;
//!                           caller credentials stripped
//!         ──► KeepBody      a small request body read and kept for a replay; a form body
//!                           read whole and cleaned of credentials, a multipart one scanned
//!         ──► AttachToken   the token the route's class needs (cache hit: synchronous,
//!                           lock-free); header or query
//!         ──► Retry         the platform's answer inspected (small JSON only); on a token
//!                           rejection: one refresh (single flight), one replay of the kept body
//!         ──► Sign          a signing route's request signed as sent (each replay again), its
//!                           answer's Byte-Signature verified
//!         ──► Forward       the upstream client (connections per thread)
//! ```
//!
//! [`AttachTokenLayer`] and [`RetryLayer`] work around any HTTP client service, without the
//! rest of the gateway: see `examples/own_client.rs`. The other layers read the request's
//! [`Call`] (the config it is handled under), which [`EdgeLayer`] puts in its extensions.

pub mod attach;
pub mod authenticate;
/// The one reading of paths and names ([`crate::canonical`]), as the proxy layers use it.
pub use crate::canonical;
pub mod edge;
pub mod exchange_code;
pub mod form;
pub mod forward;
pub mod headers;
pub mod health;
pub mod keep;
pub mod multipart;
pub mod retry;
pub mod routing;
pub mod sign;

pub use attach::{AttachToken, AttachTokenLayer, Attached, Found, TokenFor};
pub use authenticate::{Authenticate, AuthenticateLayer};
pub use edge::{Edge, EdgeLayer};
pub use exchange_code::{ExchangeCode, ExchangeCodeLayer};
pub use forward::Forward;
pub use keep::{KeepBody, KeepBodyLayer};
pub use retry::{Retry, RetryLayer};
pub use routing::{Routing, RoutingLayer};
pub use sign::{Sign, SignLayer};

pub use crate::head::{head_size, request_id, RequestId, X_REQUEST_ID};

use crate::error::GatewayError;
use crate::runtime::Runtime;
use crate::state::Shared;
use http::{header, Request};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The gateway's whole stack around clients of its own, one per upstream (the server builds one
/// [`Forward`] and a stack around it per proxy thread).
pub fn stack(shared: Arc<Shared>, health: Arc<health::Health>) -> Result<Stack, String> {
    let forward = Forward::build(&shared.runtime.load().config)?;
    Ok(stack_around(shared, health, forward))
}

/// The stack of [`stack`] around any innermost service ([`Forward`]; a test's).
/// `health` is the routes' health the retry policy keeps, shared by every stack of a gateway.
pub fn stack_around<S>(shared: Arc<Shared>, health: Arc<health::Health>, forward: S) -> Wrapped<S> {
    let tokens = Arc::clone(&shared.tokens);
    tower::ServiceBuilder::new()
        .layer(tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            crate::caller::GATEWAY_KEY.clone(),
            headers::ACCESS_TOKEN.clone(),
        ]))
        .layer(EdgeLayer::new(Arc::clone(&shared)))
        .layer(AuthenticateLayer)
        .layer(ExchangeCodeLayer::new(shared))
        .layer(RoutingLayer::new(Arc::clone(&tokens)))
        .layer(KeepBodyLayer)
        .layer(AttachTokenLayer::new(Arc::clone(&tokens)))
        .layer(RetryLayer::new(tokens).with_health(health))
        .layer(SignLayer)
        .service(forward)
}

/// The stack around an innermost service.
pub type Wrapped<S> = tower_http::sensitive_headers::SetSensitiveRequestHeaders<
    Edge<Authenticate<ExchangeCode<Routing<KeepBody<AttachToken<Retry<Sign<S>>>>>>>>,
>;

/// The proxy service stack [`stack`] builds.
pub type Stack = Wrapped<Forward>;

/// What the gateway's layers share about one request: the compiled config it is handled under
/// from start to end (a SIGHUP swaps the next requests' config, never this one's), the caller
/// and the route once known. One allocation per request, cloned by reference count.
#[derive(Clone)]
pub struct Call(Arc<CallInner>);

struct CallInner {
    runtime: Arc<Runtime>,
    caller: AtomicUsize,
    route: AtomicUsize,
    /// The last upstream answer's status (0: none), for the access log.
    upstream_status: std::sync::atomic::AtomicU16,
    /// How far the caller's body has come, to tell whose fault a timeout is.
    body: crate::body::BodyProgress,
}

impl AsRef<crate::body::BodyProgress> for CallInner {
    fn as_ref(&self) -> &crate::body::BodyProgress {
        &self.body
    }
}

const UNSET: usize = usize::MAX;
/// The `route` of a code exchange ([`Call::is_exchange`]): no route of the table.
const EXCHANGE: usize = usize::MAX - 1;

impl Call {
    /// A request handled under `runtime`.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Call(Arc::new(CallInner {
            runtime,
            caller: AtomicUsize::new(UNSET),
            route: AtomicUsize::new(UNSET),
            upstream_status: Default::default(),
            body: Default::default(),
        }))
    }

    /// The call a request carries; [`EdgeLayer`] puts it there.
    pub fn of<B>(req: &Request<B>) -> Result<&Call, GatewayError> {
        req.extensions().get::<Call>().ok_or_else(|| {
            tracing::error!("a gateway layer ran without the Edge layer outside it");
            GatewayError::Internal
        })
    }

    /// The compiled config.
    pub fn runtime(&self) -> &Runtime {
        &self.0.runtime
    }

    /// The caller, once authenticated: `Some(None)` anonymous, `Some(Some(i))` caller `i`.
    pub fn caller(&self) -> Option<Option<usize>> {
        match self.0.caller.load(Ordering::Relaxed) {
            UNSET => None,
            v if v == UNSET - 1 => Some(None),
            i => Some(Some(i)),
        }
    }

    pub(crate) fn set_caller(&self, caller: Option<usize>) {
        self.0.caller.store(caller.unwrap_or(UNSET - 1), Ordering::Relaxed);
    }

    /// How far the caller's body has come.
    pub fn body(&self) -> &crate::body::BodyProgress {
        &self.0.body
    }

    /// A handle on [`Call::body`] for the body's readers.
    pub fn body_progress(&self) -> crate::body::Progress {
        Arc::clone(&self.0) as crate::body::Progress
    }

    /// The status of the last answer the upstream gave this request, if it gave one.
    pub fn upstream_status(&self) -> Option<u16> {
        Some(self.0.upstream_status.load(Ordering::Relaxed)).filter(|&s| s != 0)
    }

    pub(crate) fn set_upstream_status(&self, status: u16) {
        self.0.upstream_status.store(status, Ordering::Relaxed);
    }

    /// The route matched, by index.
    pub fn route(&self) -> Option<usize> {
        Some(self.0.route.load(Ordering::Relaxed)).filter(|&i| i < EXCHANGE)
    }

    /// Whether the gateway answers this request itself as `POST /_gateway/exchange_code`.
    pub fn is_exchange(&self) -> bool {
        self.0.route.load(Ordering::Relaxed) == EXCHANGE
    }

    /// Marks the request as the code exchange (counted under its own route label).
    pub(crate) fn set_exchange(&self) {
        self.0.route.store(EXCHANGE, Ordering::Relaxed);
    }

    pub(crate) fn set_route(&self, index: usize) {
        self.0.route.store(index, Ordering::Relaxed);
    }

    /// The metric handles of the route matched.
    pub fn route_metrics(&self) -> Option<&crate::metrics::RouteMetrics> {
        self.route().map(|i| &self.runtime().route_metrics[i])
    }
}

pin_project_lite::pin_project! {
    /// The future of a layer that either refused the request at once or passes it on: the inner
    /// service's future, or a ready error. Named, so a refusal or a pass costs no allocation.
    #[project = CheckedProj]
    #[allow(missing_docs)] // the variants are documented; their fields are the state they name
    pub enum Checked<F, T> {
        /// Passed on.
        Inner { #[pin] future: F },
        /// Refused.
        Refused { error: Option<GatewayError> },
        /// Answered by the layer itself.
        Answered { response: Option<T> },
    }
}

impl<F, T> Checked<F, T> {
    /// Passes on to `future`.
    pub fn inner(future: F) -> Self {
        Checked::Inner { future }
    }

    /// Refuses with `error`.
    pub fn refused(error: GatewayError) -> Self {
        Checked::Refused { error: Some(error) }
    }

    /// Answers with `response`, the inner service not called.
    pub fn answered(response: T) -> Self {
        Checked::Answered {
            response: Some(response),
        }
    }
}

impl<F, T, E> std::future::Future for Checked<F, T>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: Into<GatewayError>,
{
    type Output = Result<T, GatewayError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match self.project() {
            CheckedProj::Inner { future } => future.poll(cx).map_err(Into::into),
            CheckedProj::Refused { error } => {
                std::task::Poll::Ready(Err(error.take().expect("polled after completion")))
            }
            CheckedProj::Answered { response } => {
                std::task::Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
        }
    }
}
