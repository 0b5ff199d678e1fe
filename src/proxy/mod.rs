//! The proxy: a request's whole journey, phase by phase.
//!
//! 1. refuse CONNECT and absolute-form targets (the caller's `Host` never picks the upstream);
//! 2. authenticate the caller; 3. match a route; 4. check the caller may use it;
//! 5. find the token the route needs (cache hit: no waiting);
//! 6. strip credentials and hop-by-hop headers; 7. forward, inspect the answer,
//!    refresh and replay once on a token rejection ([`exchange`]).
//!
//! Gateway errors become responses in one place: [`GatewayError::into_response`].

pub mod canonical;
mod exchange;
pub mod headers;

use crate::body::ProxyBody;
use crate::caller::Identity;
use crate::config::TokenKind;
use crate::error::GatewayError;
use crate::route::Route;
use crate::runtime::Runtime;
use crate::state::Shared;
use crate::token::{Need, Token, TokenError, TokenKey};
use http::{header, HeaderName, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Request id header: taken from the caller when sane, else generated; echoed on every answer.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The proxy with its middleware: caller keys marked sensitive from the moment
/// a request arrives (so no debug output can print them), and a panic turned
/// into the contract's JSON error instead of a dropped connection.
pub fn stack(shared: Arc<Shared>) -> Stack {
    stack_around(Proxy::new(shared))
}

/// The middleware of [`stack`] around any inner service (the proxy; a test's).
fn stack_around<S>(inner: S) -> Wrapped<S> {
    tower::ServiceBuilder::new()
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response as PanicHandler,
        ))
        .layer(tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            crate::caller::GATEWAY_KEY.clone(),
            headers::ACCESS_TOKEN.clone(),
        ]))
        .service(inner)
}

type PanicHandler = fn(Box<dyn std::any::Any + Send + 'static>) -> Response<ProxyBody>;

/// The middleware around a service.
type Wrapped<S> =
    tower_http::catch_panic::CatchPanic<tower_http::sensitive_headers::SetSensitiveRequestHeaders<S>, PanicHandler>;

/// The proxy service stack [`stack`] builds.
pub type Stack = Wrapped<Proxy>;

fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response<ProxyBody> {
    let what = err
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| err.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!("a request handler panicked: {what}");
    GatewayError::Internal.into_response("-")
}

/// The proxy as a tower `Service`.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy over shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Proxy { shared }
    }
}

impl tower::Service<Request<Incoming>> for Proxy {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { Ok(handle(shared, req).await) })
    }
}

/// The request id of a request: the caller's when sane, else a new one.
pub fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let ok = v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic());
        if ok && !v.is_empty() {
            return v.clone();
        }
    }
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| format!("{:08x}", rand::random::<u32>()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{prefix}-{n:x}")).expect("ascii")
}

/// A request counted in progress until dropped.
struct InFlight<'a> {
    counter: &'a AtomicUsize,
    /// The count including this request.
    count: usize,
}

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        let count = counter.fetch_add(1, Ordering::AcqRel) + 1;
        InFlight { counter, count }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
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

/// Handles one request from start to end; never fails (errors are answers).
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ProxyBody> {
    let start = Instant::now();
    let rt = shared.runtime.load_full();
    let rid = request_id(req.headers());
    // Kept for the log line of an error; both are reference-counted, not copied.
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let mut route_index = None;
    let server = &rt.config.server;
    let in_flight = InFlight::enter(&shared.in_flight);
    let result = if in_flight.count > server.max_in_flight {
        // Refused at once rather than queued: the caller can retry elsewhere or later.
        Err(GatewayError::Overloaded(server.max_in_flight))
    } else if head_size(&req) > server.max_header_bytes {
        Err(GatewayError::HeadersTooLarge(server.max_header_bytes))
    } else {
        let timeout = Duration::from_millis(server.request_timeout_ms);
        match tokio::time::timeout(timeout, journey(&shared, &rt, req, &mut route_index)).await {
            Ok(r) => r,
            Err(_) => Err(GatewayError::UpstreamTimeout(server.request_timeout_ms)),
        }
    };
    drop(in_flight);
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            let route = route_index.map_or("-", |i| &rt.config.routes[i].name);
            let (rid, path) = (rid.to_str().unwrap_or("-"), uri.path());
            if e.status().is_server_error() {
                tracing::warn!(request_id = %rid, %method, %path, route, code = e.code(), "{e}");
            } else {
                tracing::info!(request_id = %rid, %method, %path, route, code = e.code(), "{e}");
            }
            e.into_response(rid)
        }
    };
    let m = route_index.map_or(&rt.no_route_metrics, |i| &rt.route_metrics[i]);
    let elapsed = start.elapsed();
    m.count(resp.status().as_u16());
    m.duration.observe(elapsed.as_secs_f64());
    // The access log: the path only, never the query (a caller's query may carry a credential).
    tracing::debug!(
        target: "douyin_gateway::access",
        request_id = %rid.to_str().unwrap_or("-"),
        %method,
        path = %uri.path(),
        route = %route_index.map_or("-", |i| &*rt.config.routes[i].name),
        status = resp.status().as_u16(),
        ms = elapsed.as_secs_f64() * 1000.0,
    );
    resp.headers_mut().insert(&X_REQUEST_ID, rid);
    resp
}

async fn journey(
    shared: &Shared,
    rt: &Runtime,
    req: Request<Incoming>,
    route_index: &mut Option<usize>,
) -> Result<Response<ProxyBody>, GatewayError> {
    let (mut parts, body) = req.into_parts();
    if parts.method == Method::CONNECT {
        return Err(GatewayError::BadRequest("CONNECT is not proxied".into()));
    }
    // In HTTP/1 a scheme or authority in the target means absolute form; HTTP/2 always carries them
    // (`:scheme`, `:authority`), and they never choose the upstream either way.
    let absolute = parts.uri.scheme().is_some() || parts.uri.authority().is_some();
    if absolute && parts.version < http::Version::HTTP_2 {
        return Err(GatewayError::BadRequest(
            "absolute-form request targets are refused: send the path only".into(),
        ));
    }
    if let Some(problem) = canonical::path_problem(parts.uri.path()) {
        // Routing, the permission check and forwarding all use this one path: refuse any a later
        // hop could read differently.
        return Err(GatewayError::BadRequest(format!("{problem}: send the canonical path")));
    }
    let identity = rt
        .callers
        .authenticate(&parts.headers)
        .ok_or(GatewayError::CallerUnauthenticated)?;
    let route = rt
        .routes
        .find(&parts.method, parts.uri.path())
        .ok_or_else(|| GatewayError::NoRoute {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
        })?;
    *route_index = Some(route.index);
    if !identity.may_use(route.index) {
        return Err(forbidden(&identity, route));
    }
    let max = rt.config.server.max_body_bytes;
    let content_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if content_length.is_some_and(|n| n > max) {
        return Err(GatewayError::BodyTooLarge(max));
    }
    let key = token_key(rt, route, &parts)?;
    headers::strip_request(&mut parts.headers);
    let token = match &key {
        Some(k) => Some(token_for(shared, rt, route, k).await?),
        None => None,
    };
    exchange::run(shared, rt, route, parts, body, content_length, key, token).await
}

fn forbidden(identity: &Identity<'_>, route: &Route) -> GatewayError {
    GatewayError::CallerForbidden {
        caller: identity.name().to_owned(),
        route: route.name.to_string(),
    }
}

/// The token a route needs for this request, or `None` for `token = "none"`.
fn token_key(rt: &Runtime, route: &Route, parts: &http::request::Parts) -> Result<Option<TokenKey>, GatewayError> {
    let app = || &rt.apps[route.app];
    let open_id = || {
        route
            .open_id
            .extract(parts)
            .map_err(GatewayError::BadRequest)?
            .ok_or_else(|| {
                GatewayError::OpenIdMissing(match &route.open_id {
                    crate::route::OpenIdSource::Query { name, .. } => format!("query parameter {name:?}"),
                    crate::route::OpenIdSource::Header(h) => format!("header {h:?}"),
                })
            })
    };
    Ok(match route.token {
        TokenKind::None => None,
        TokenKind::Client => Some(app().client_key.clone()),
        TokenKind::User => Some(TokenKey::user(Arc::clone(&app().name), &open_id()?)),
        TokenKind::Biz => Some(TokenKey::biz(
            Arc::clone(&app().name),
            &open_id()?,
            route.biz_scope.as_deref().unwrap_or(""),
        )),
    })
}

/// The cached token, or one obtained now (waiting on the single flight).
async fn token_for(shared: &Shared, rt: &Runtime, route: &Route, key: &TokenKey) -> Result<Arc<Token>, GatewayError> {
    if let Some(t) = shared.tokens.cached(key) {
        return Ok(t);
    }
    shared
        .tokens
        .obtain(key, Need::Any)
        .await
        .map_err(|e| token_error(rt, route, e))
}

/// A token failure as the caller sees it.
fn token_error(rt: &Runtime, route: &Route, e: TokenError) -> GatewayError {
    if e.needs_authorization() {
        GatewayError::UserAuthorizationRequired {
            message: e.to_string(),
            authorize_url: rt.apps.get(route.app).and_then(|a| a.authorize_url.clone()),
        }
    } else {
        GatewayError::TokenUnavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::{Service, ServiceExt};

    /// Through the very middleware `stack()` puts around the proxy.
    #[tokio::test]
    async fn a_panic_becomes_the_contract_error() {
        let mut svc = stack_around(tower::service_fn(|_: Request<()>| async {
            if true {
                panic!("boom");
            }
            Ok::<_, Infallible>(Response::new(ProxyBody::empty()))
        }));
        let resp = svc.ready().await.unwrap().call(Request::new(())).await.unwrap();
        assert_eq!(resp.status(), 500);
        assert_eq!(resp.headers()[&crate::error::X_GATEWAY_ERROR], "internal_error");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["gateway_error"]["code"], "internal_error");
    }
}
