//! The outermost gateway layer: what every request gets before any route is known, and the one
//! place a [`GatewayError`] becomes an answer.
//!
//! - a request id (the caller's when plain, else a new one, the caller's then logged escaped as
//!   `caller_request_id`), echoed on every answer;
//! - admission: over `max_in_flight` requests in progress → 503 `overloaded` at once (a caller
//!   can retry elsewhere; a queue would only add latency); a head over `max_header_bytes` → 431;
//! - the target: CONNECT, absolute-form targets (the caller's `Host` never picks the upstream)
//!   and any path a later hop could read differently ([`crate::canonical`]) → 400;
//! - a head with both `Content-Length` and `Transfer-Encoding` → 400, and the connection closed;
//! - the deadline `request_timeout_ms` over everything inside → 504, or 408 when the gateway was
//!   waiting on the caller's body then;
//! - a panic anywhere inside → 500 `internal_error`, logged (the connection and the process live on);
//! - per-route metrics and the access log (the path only, never the query).
//!
//! It puts the request's [`Call`] in its extensions for the layers inside.

use super::{canonical, request_id, Call, X_REQUEST_ID};
use crate::body::ProxyBody;
use crate::error::GatewayError;
use crate::logs::access::AccessLine;
use crate::logs::Escaped;
use crate::runtime::Runtime;
use crate::state::Shared;
use http::{HeaderValue, Method, Request, Response, Uri};
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Wraps a service in [`Edge`].
#[derive(Clone)]
pub struct EdgeLayer {
    shared: Arc<Shared>,
}

impl EdgeLayer {
    /// The edge of a gateway over `shared` (its config, limits and metrics).
    pub fn new(shared: Arc<Shared>) -> Self {
        EdgeLayer { shared }
    }
}

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            shared: Arc::clone(&self.shared),
            inner,
        }
    }
}

/// See the [module docs](self).
#[derive(Clone)]
pub struct Edge<S> {
    shared: Arc<Shared>,
    inner: S,
}

/// A request counted in progress until dropped.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The header the platform names its log id in (what its support asks for).
static PLATFORM_LOG_ID: http::HeaderName = http::HeaderName::from_static("x-tt-logid");

/// Refuses what no route may see: CONNECT, absolute-form targets, non-canonical paths.
fn check_target<B>(req: &Request<B>) -> Result<(), GatewayError> {
    if req.method() == Method::CONNECT {
        return Err(GatewayError::BadRequest("CONNECT is not proxied".into()));
    }
    // In HTTP/1 a scheme or authority in the target means absolute form; HTTP/2 always carries them
    // (`:scheme`, `:authority`), and they never choose the upstream either way.
    let absolute = req.uri().scheme().is_some() || req.uri().authority().is_some();
    if absolute && req.version() < http::Version::HTTP_2 {
        return Err(GatewayError::BadRequest(
            "absolute-form request targets are refused: send the path only".into(),
        ));
    }
    if let Some(problem) = canonical::path_problem(req.uri().path()) {
        // Routing, the permission check and forwarding all use this one path: refuse any a later
        // hop could read differently.
        return Err(GatewayError::BadRequest(format!("{problem}: send the canonical path")));
    }
    Ok(())
}

impl<S, B, RB> tower::Service<Request<B>> for Edge<S>
where
    S: tower::Service<Request<B>, Response = Response<ProxyBody<RB>>, Error = GatewayError>,
{
    type Response = Response<ProxyBody<RB>>;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The layers inside are always ready; an error here would be a bug, answered per request.
        let _ = std::task::ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let runtime = self.shared.runtime.load_full();
        let super::RequestId {
            id: rid,
            callers: caller_rid,
        } = request_id(req.headers());
        let server = &runtime.config.server;
        let count = self.shared.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let in_flight = InFlight(Arc::clone(&self.shared));
        // Kept for the log line of an error; both are reference-counted, not copied.
        let (method, uri) = (req.method().clone(), req.uri().clone());
        let peer = req.extensions().get::<crate::conn::Peer>().map(|p| p.0);
        let timeout_ms = server.request_timeout_ms;
        let conflicting = req.extensions().get::<crate::conn::ConflictingLength>().is_some();
        let refused = if let Some(e) = crate::head::refusal(&req, server.max_header_bytes) {
            Err(e)
        } else if count > server.max_in_flight {
            Err(GatewayError::Overloaded(server.max_in_flight))
        } else {
            check_target(&req)
        };
        let (state, call) = match refused {
            Err(e) => (State::Refused { error: Some(e) }, None),
            Ok(()) => {
                let call = Call::new(Arc::clone(&runtime));
                req.extensions_mut().insert(call.clone());
                let inner = &mut self.inner;
                match std::panic::catch_unwind(AssertUnwindSafe(move || inner.call(req))) {
                    Ok(f) => {
                        let future = tokio::time::timeout(Duration::from_millis(timeout_ms), f);
                        (State::Running { future }, Some(call))
                    }
                    Err(panic) => (
                        State::Refused {
                            error: Some(panicked(panic)),
                        },
                        Some(call),
                    ),
                }
            }
        };
        EdgeFuture {
            state,
            done: Some(Done {
                start,
                rid,
                caller_rid,
                method,
                uri,
                peer,
                runtime,
                call,
                timeout_ms,
                close: conflicting,
                _in_flight: in_flight,
            }),
        }
    }
}

/// A panic inside the stack, logged, as the error the caller gets. tower-http's `CatchPanic`
/// would do the same at the price of boxing every answer's body.
fn panicked(err: Box<dyn std::any::Any + Send + 'static>) -> GatewayError {
    let what = err
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| err.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!("a request handler panicked: {what}");
    GatewayError::Internal
}

/// What the edge keeps of a request to answer and account for it.
struct Done {
    start: Instant,
    rid: HeaderValue,
    /// The caller's request id when it was not plain.
    caller_rid: Option<HeaderValue>,
    method: Method,
    uri: Uri,
    /// The connection's peer (absent when the stack runs outside the gateway's listeners).
    peer: Option<std::net::SocketAddr>,
    runtime: Arc<Runtime>,
    call: Option<Call>,
    timeout_ms: u64,
    /// The connection is to close after this answer.
    close: bool,
    _in_flight: InFlight,
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running { #[pin] future: tokio::time::Timeout<F> },
        Refused { error: Option<GatewayError> },
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Edge`].
    pub struct EdgeFuture<F> {
        #[pin]
        state: State<F>,
        done: Option<Done>,
    }
}

impl<F, RB> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody<RB>>, GatewayError>>,
{
    type Output = Result<Response<ProxyBody<RB>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.state.project() {
            StateProj::Running { future } => match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(Ok(r))) => r,
                Ok(Poll::Ready(Err(_))) => Err(this
                    .done
                    .as_ref()
                    .map_or(GatewayError::UpstreamTimeout(0), Done::timed_out)),
                Err(panic) => Err(panicked(panic)),
            },
            StateProj::Refused { error } => Err(error.take().expect("polled after completion")),
        };
        let done = this.done.take().expect("polled after completion");
        Poll::Ready(Ok(done.finish(result)))
    }
}

impl Done {
    /// The error of a request that ran out of time: the caller's when the gateway was waiting on
    /// the caller's body, else the upstream's.
    fn timed_out(&self) -> GatewayError {
        match &self.call {
            Some(call) if call.body().waiting_on_caller() => GatewayError::ClientTimeout(self.timeout_ms),
            _ => GatewayError::UpstreamTimeout(self.timeout_ms),
        }
    }

    fn finish<RB>(self, result: Result<Response<ProxyBody<RB>>, GatewayError>) -> Response<ProxyBody<RB>> {
        let Done {
            start,
            rid,
            caller_rid,
            method,
            uri,
            peer,
            runtime: rt,
            call,
            close,
            _in_flight,
            ..
        } = self;
        drop(_in_flight);
        let route_index = call.as_ref().and_then(Call::route);
        let exchange = call.as_ref().is_some_and(Call::is_exchange);
        let route = match route_index {
            Some(i) => &*rt.config.routes[i].name,
            None if exchange => crate::metrics::EXCHANGE_CODE,
            None => "-",
        };
        let mut refused = false;
        let error_code = result.as_ref().err().map(GatewayError::code);
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                refused = route_index.is_none() && !matches!(e, GatewayError::NoRoute { .. });
                let (rid, path) = (rid.to_str().unwrap_or("-"), uri.path());
                let caller_request_id = caller_rid
                    .as_ref()
                    .map(|v| tracing::field::display(Escaped(v.as_bytes())));
                if e.status().is_server_error() {
                    tracing::warn!(request_id = %rid, caller_request_id, %method, %path, route, code = e.code(), "{e}");
                } else {
                    tracing::info!(request_id = %rid, caller_request_id, %method, %path, route, code = e.code(), "{e}");
                }
                e.into_response(rid)
            }
        };
        let m = match route_index {
            Some(i) => &rt.route_metrics[i],
            None if exchange => &rt.exchange_metrics,
            None if refused => &rt.refused_metrics,
            None => &rt.no_route_metrics,
        };
        let elapsed = start.elapsed();
        m.count(resp.status().as_u16());
        m.duration.observe(elapsed.as_secs_f64());
        m.window.record(start + elapsed, elapsed, error_code);
        // The access log: the path only, never the query (a caller's query may carry a credential).
        if rt.config.log.access {
            let caller = match call.as_ref().and_then(Call::caller) {
                Some(who) => rt.callers.identity(who).into_name(),
                None => "-",
            };
            let upstream_status = call.as_ref().and_then(Call::upstream_status);
            crate::logs::access::log(&AccessLine {
                request_id: rid.to_str().unwrap_or("-"),
                peer,
                caller_request_id: caller_rid.as_ref().map(HeaderValue::as_bytes),
                caller,
                route,
                method: &method,
                path: uri.path(),
                status: resp.status().as_u16(),
                micros: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                upstream_status: upstream_status.unwrap_or(0),
                // What the platform's support asks for.
                logid: resp
                    .headers()
                    .get(&PLATFORM_LOG_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-"),
            });
        }
        resp.headers_mut().insert(&X_REQUEST_ID, rid);
        if close {
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
