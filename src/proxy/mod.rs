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
//!         ──► Forward       the pooled upstream client
//! ```
//!
//! [`AttachTokenLayer`] and [`RetryLayer`] work around any HTTP client service, without the
//! rest of the gateway: see `examples/own_client.rs`. The other layers read the request's
//! [`Scope`] (the config it is handled under), which [`EdgeLayer`] puts in its extensions.

pub mod attach;
pub mod authenticate;
pub mod canonical;
pub mod edge;
pub mod exchange_code;
pub mod form;
pub mod forward;
pub mod headers;
pub mod keep;
pub mod multipart;
pub mod retry;
pub mod routing;

pub use attach::{AttachToken, AttachTokenLayer, Attached, TokenFor};
pub use authenticate::{Authenticate, AuthenticateLayer};
pub use edge::{Edge, EdgeLayer};
pub use exchange_code::{ExchangeCode, ExchangeCodeLayer};
pub use forward::Forward;
pub use keep::{KeepBody, KeepBodyLayer};
pub use retry::{Retry, RetryLayer};
pub use routing::{Routing, RoutingLayer};

use crate::error::GatewayError;
use crate::runtime::Runtime;
use crate::state::Shared;
use http::{header, HeaderName, HeaderValue, Request};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Request id header: taken from the caller when plain ([`request_id`]), else generated; echoed on
/// every answer.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The gateway's whole stack around pooled clients of its own, one per upstream (the server
/// builds one such stack per proxy thread).
pub fn stack(shared: Arc<Shared>) -> Result<Stack, String> {
    let clients = shared
        .runtime
        .load()
        .config
        .all_upstreams()
        .iter()
        .map(crate::upstream::client)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(stack_around(shared, Forward::over(clients)))
}

/// The stack of [`stack`] around any innermost service (the pooled client; a test's).
pub fn stack_around<S>(shared: Arc<Shared>, forward: S) -> Wrapped<S> {
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
        .layer(RoutingLayer)
        .layer(KeepBodyLayer)
        .layer(AttachTokenLayer::new(Arc::clone(&tokens)))
        .layer(RetryLayer::new(tokens))
        .service(forward)
}

/// The stack around an innermost service.
pub type Wrapped<S> = tower_http::sensitive_headers::SetSensitiveRequestHeaders<
    Edge<Authenticate<ExchangeCode<Routing<KeepBody<AttachToken<Retry<S>>>>>>>,
>;

/// The proxy service stack [`stack`] builds.
pub type Stack = Wrapped<Forward>;

/// What the gateway's layers share about one request: the compiled config it is handled under
/// from start to end (a SIGHUP swaps the next requests' config, never this one's), the caller
/// and the route once known. One allocation per request, cloned by reference count.
#[derive(Clone)]
pub struct Scope(Arc<ScopeInner>);

struct ScopeInner {
    runtime: Arc<Runtime>,
    caller: AtomicUsize,
    route: AtomicUsize,
    /// The last upstream answer's status (0: none), for the access log.
    upstream_status: std::sync::atomic::AtomicU16,
    /// How far the caller's body has come, to tell whose fault a timeout is.
    body: crate::body::BodyProgress,
}

impl AsRef<crate::body::BodyProgress> for ScopeInner {
    fn as_ref(&self) -> &crate::body::BodyProgress {
        &self.body
    }
}

const UNSET: usize = usize::MAX;

impl Scope {
    /// A request handled under `runtime`.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Scope(Arc::new(ScopeInner {
            runtime,
            caller: AtomicUsize::new(UNSET),
            route: AtomicUsize::new(UNSET),
            upstream_status: Default::default(),
            body: Default::default(),
        }))
    }

    /// The scope a request carries; [`EdgeLayer`] puts it there.
    pub fn of<B>(req: &Request<B>) -> Result<&Scope, GatewayError> {
        req.extensions().get::<Scope>().ok_or_else(|| {
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

    /// A handle on [`Scope::body`] for the body's readers.
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
        Some(self.0.route.load(Ordering::Relaxed)).filter(|&i| i != UNSET)
    }

    pub(crate) fn set_route(&self, index: usize) {
        self.0.route.store(index, Ordering::Relaxed);
    }

    /// The metric handles of the route matched.
    pub fn route_metrics(&self) -> Option<&crate::metrics::RouteMetrics> {
        self.route().map(|i| &self.runtime().route_metrics[i])
    }
}

/// The id a request is known by, and the caller's own when it was not used.
#[derive(Debug, Clone)]
pub struct RequestId {
    /// What the answer's `x-request-id`, its error body and the log lines carry.
    pub id: HeaderValue,
    /// The caller's `X-Request-Id` when it was not plain: never echoed, logged escaped as
    /// `caller_request_id` (a reference-counted copy of the header, not an allocation).
    pub callers: Option<HeaderValue>,
}

/// Whether a caller's request id may be used as it is: `^[A-Za-z0-9._:-]{1,64}$`. Nothing a log
/// reader, a browser or a shell could read as more than an id, and not long.
fn plain_request_id(v: &[u8]) -> bool {
    (1..=64).contains(&v.len())
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The request id of a request: the caller's when plain, else a new one.
pub fn request_id(headers: &http::HeaderMap) -> RequestId {
    let callers = headers.get(&X_REQUEST_ID);
    match callers {
        Some(v) if plain_request_id(v.as_bytes()) => RequestId {
            id: v.clone(),
            callers: None,
        },
        _ => RequestId {
            id: new_request_id(),
            callers: callers.cloned(),
        },
    }
}

fn new_request_id() -> HeaderValue {
    // `{8 hex digits of this process}-{counter in hex}`, written without a formatter.
    static PREFIX: OnceLock<[u8; 8]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let prefix = PREFIX.get_or_init(|| {
        let r = rand::random::<u32>();
        std::array::from_fn(|i| HEX[(r >> (28 - 4 * i) & 0xf) as usize])
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut out = [0u8; 8 + 1 + 16];
    out[..8].copy_from_slice(prefix);
    out[8] = b'-';
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        out[9 + i] = HEX[(n >> (4 * (digits - 1 - i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out[..9 + digits]).expect("ascii")
}

/// The size of a request head as it came: target, and each header line's name, value and `: `/CRLF.
pub fn head_size<B>(req: &Request<B>) -> usize {
    let target = req.uri().path().len() + req.uri().query().map_or(0, |q| q.len() + 1);
    target
        + req
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_prefix_dash_hex_counter_and_only_a_plain_caller_id_is_kept() {
        let a = request_id(&http::HeaderMap::new());
        let b = request_id(&http::HeaderMap::new());
        assert!(a.callers.is_none());
        let (pa, na) = a.id.to_str().unwrap().split_once('-').unwrap();
        let (pb, nb) = b.id.to_str().unwrap().split_once('-').unwrap();
        assert_eq!(pa.len(), 8);
        assert_eq!(pa, pb);
        assert!(pa.bytes().chain(na.bytes()).all(|c| c.is_ascii_hexdigit()));
        assert!(u64::from_str_radix(nb, 16).unwrap() > u64::from_str_radix(na, 16).unwrap());
        assert!(plain_request_id(a.id.as_bytes()), "the gateway's own are plain");
        let mut h = http::HeaderMap::new();
        let long = "A.b_c:d-9".repeat(8);
        for kept in ["caller-7", "a.B_c:9", &long[..64]] {
            h.insert(&X_REQUEST_ID, HeaderValue::from_str(kept).unwrap());
            let r = request_id(&h);
            assert_eq!((r.id.to_str().unwrap(), r.callers), (kept, None));
        }
        for refused in ["has space", "\"><script>", "", "a/b", "id;x", &long[..65]] {
            h.insert(&X_REQUEST_ID, HeaderValue::from_str(refused).unwrap());
            let r = request_id(&h);
            assert_ne!(r.id, refused);
            assert_eq!(r.callers.unwrap(), refused);
        }
        h.insert(&X_REQUEST_ID, HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert!(request_id(&h).callers.is_some());
    }
}
