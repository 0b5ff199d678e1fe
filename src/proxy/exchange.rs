//! Forwarding and the retry policy: at most one replay, only after the
//! platform rejected the token, only when the request body was small enough
//! to keep, and only before anything went to the caller.

use super::headers::{self, ACCESS_TOKEN};
use super::token_error;
use crate::body::{read_up_to, CallerBody, ProxyBody, Read, ReadError, Stalled, TooLarge};
use crate::config::Inject;
use crate::error::GatewayError;
use crate::inspect::{self, Context, Verdict};
use crate::route::Route;
use crate::runtime::Runtime;
use crate::state::Shared;
use crate::token::{Need, Token, TokenKey};
use crate::upstream::describe;
use bytes::Bytes;
use http::{header, request::Parts, Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Upstream answers up to this size are read and checked for a token
/// rejection; the platform's error envelopes are a few hundred bytes, so a
/// larger answer is a success and streams through untouched.
const INSPECT_LIMIT: u64 = 64 * 1024;

/// The request body: kept (can be replayed) or streaming (cannot).
enum Outbound {
    Kept(Bytes),
    Streaming(ProxyBody),
}

async fn prepare_body(
    body: Incoming,
    content_length: Option<u64>,
    keep: u64,
    max: u64,
    stall: Duration,
) -> Result<Outbound, GatewayError> {
    use http_body::Body;
    if body.is_end_stream() {
        return Ok(Outbound::Kept(Bytes::new()));
    }
    if content_length.is_some_and(|n| n > keep) {
        return Ok(Outbound::Streaming(ProxyBody::from_caller(None, body, max, stall)));
    }
    match read_up_to(body, keep.min(max), Some(stall)).await {
        Ok(Read::Complete(b)) => Ok(Outbound::Kept(b)),
        Ok(Read::Partial(p, _)) if p.len() as u64 > max => Err(GatewayError::BodyTooLarge(max)),
        Ok(Read::Partial(p, rest)) => Ok(Outbound::Streaming(ProxyBody::from_caller(Some(p), rest, max, stall))),
        Err(ReadError::Stalled(ms)) => Err(GatewayError::ClientTimeout(ms)),
        Err(ReadError::Body(e)) => Err(GatewayError::BadRequest(format!(
            "could not read the request body: {e}"
        ))),
    }
}

fn build_request(
    rt: &Runtime,
    route: &Route,
    parts: &Parts,
    token: Option<&Token>,
    body: ProxyBody,
) -> Result<Request<ProxyBody>, GatewayError> {
    let query_token = token.filter(|_| route.inject == Inject::Query).map(|t| t.value());
    let query = headers::rewrite_query(parts.uri.query(), query_token);
    let uri = match query {
        Some(q) => rt.base.uri(&format!("{}?{q}", parts.uri.path())),
        None => rt.base.uri(parts.uri.path()),
    }
    .map_err(|e| GatewayError::BadRequest(format!("request target: {e}")))?;
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = parts.headers.clone();
    if let Some(t) = token {
        if route.inject == Inject::Header {
            req.headers_mut().insert(&ACCESS_TOKEN, t.header.clone());
        }
        // Answers must be readable to spot a token rejection: no compression on token routes.
        req.headers_mut().remove(header::ACCEPT_ENCODING);
    }
    Ok(req)
}

fn inspectable(h: &http::HeaderMap) -> bool {
    let encoded = h.get(header::CONTENT_ENCODING).is_some_and(|v| v != "identity");
    let ctype_ok = h.get(header::CONTENT_TYPE).is_none_or(|v| {
        let v = v.as_bytes();
        v.starts_with(b"text/") || v.windows(4).any(|w| w.eq_ignore_ascii_case(b"json"))
    });
    let small = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_none_or(|n| n <= INSPECT_LIMIT);
    !encoded && ctype_ok && small
}

/// Sends one attempt; returns the answer with its body either read (and its
/// codes) or streaming.
async fn send(
    shared: &Shared,
    route_metrics: &crate::metrics::RouteMetrics,
    req: Request<ProxyBody>,
    inspect: bool,
) -> Result<(Response<ProxyBody>, Option<inspect::Codes>), GatewayError> {
    let t0 = Instant::now();
    let resp = shared.client.request(req).await.map_err(|e| {
        // The caller's body failing is the caller's fault, never the upstream's.
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = src {
            if let Some(t) = s.downcast_ref::<TooLarge>() {
                return GatewayError::BodyTooLarge(t.0);
            }
            if let Some(b) = s.downcast_ref::<CallerBody>() {
                return GatewayError::BadRequest(b.to_string());
            }
            if let Some(t) = s.downcast_ref::<Stalled>() {
                return GatewayError::ClientTimeout(t.0);
            }
            src = s.source();
        }
        GatewayError::UpstreamUnavailable(describe(&e))
    })?;
    route_metrics.upstream.observe(t0.elapsed().as_secs_f64());
    let (mut parts, body) = resp.into_parts();
    headers::strip_response(&mut parts.headers);
    if !inspect || !inspectable(&parts.headers) {
        return Ok((
            Response::from_parts(parts, ProxyBody::stream(None, body, u64::MAX)),
            None,
        ));
    }
    match read_up_to(body, INSPECT_LIMIT, None).await {
        Ok(Read::Complete(b)) => {
            let codes = inspect::codes(&b);
            Ok((Response::from_parts(parts, ProxyBody::full(b)), codes))
        }
        Ok(Read::Partial(p, rest)) => Ok((
            Response::from_parts(parts, ProxyBody::stream(Some(p), rest, u64::MAX)),
            None,
        )),
        Err(ReadError::Body(e)) => Err(GatewayError::UpstreamUnavailable(format!(
            "reading the answer: {}",
            describe(&e)
        ))),
        Err(ReadError::Stalled(_)) => unreachable!("no stall limit on answers"),
    }
}

/// Counts and explains a token the platform rejected in the first half of its
/// life: the usual cause is another fetcher with the same credentials (only the
/// latest two client_tokens stay valid), or a user who revoked the app.
fn evicted_early(shared: &Shared, key: &TokenKey, token: &Token) {
    let life = token.expires_at().saturating_duration_since(token.obtained_at);
    let age = token.obtained_at.elapsed();
    if token.replaced_rejected || age >= life / 2 || token.evicted_noted.set() {
        return;
    }
    shared
        .metrics
        .evicted_early
        .with_label_values(&[&key.app, key.class.as_str()])
        .inc();
    match key.class {
        crate::token::TokenClass::Client => tracing::warn!(app = %key.app, age_s = age.as_secs(),
            "the platform rejected a client_token long before its expiry: something else is fetching client_tokens \
             with this app's credentials (another gateway with its own store, a test environment using production \
             keys, a home-made token server); only the latest two stay valid. Let one owner fetch."),
        _ => tracing::warn!(app = %key.app, class = key.class.as_str(), age_s = age.as_secs(),
            "the platform rejected a token long before its expiry: the user may have revoked the app, \
             or another system refreshed or re-authorized this user"),
    }
}

/// Forwards a request, replaying it once with a new token if the platform
/// rejected the first.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    shared: &Shared,
    rt: &Runtime,
    route: &Route,
    parts: Parts,
    body: Incoming,
    content_length: Option<u64>,
    key: Option<TokenKey>,
    token: Option<Arc<Token>>,
) -> Result<Response<ProxyBody>, GatewayError> {
    let server = &rt.config.server;
    let metrics = &rt.route_metrics[route.index];
    let stall = Duration::from_millis(server.body_read_timeout_ms);
    let outbound = prepare_body(
        body,
        content_length,
        server.retry_buffer_bytes,
        server.max_body_bytes,
        stall,
    )
    .await?;
    let (Some(key), Some(token)) = (key, token) else {
        let body = match outbound {
            Outbound::Kept(b) => ProxyBody::full(b),
            Outbound::Streaming(s) => s,
        };
        let req = build_request(rt, route, &parts, None, body)?;
        return send(shared, metrics, req, false).await.map(|(r, _)| r);
    };
    let (kept, first_body) = match outbound {
        Outbound::Kept(b) => (Some(b.clone()), ProxyBody::full(b)),
        Outbound::Streaming(s) => (None, s),
    };
    let req = build_request(rt, route, &parts, Some(&token), first_body)?;
    let (resp, codes) = send(shared, metrics, req, true).await?;
    let Some(Verdict::Refresh(code)) = codes.map(|c| rt.codes.verdict(&c, Context::Api)) else {
        metrics.health.accepted();
        return Ok(resp);
    };
    if metrics.health.suspect() {
        // This route's API rejected fresh tokens moments ago: its rejections fetch nothing now,
        // and the token the other routes use stays.
        metrics.retry_suppressed.inc();
        return Ok(resp);
    }
    evicted_early(shared, &key, &token);
    let Some(kept) = kept else {
        // Too large to replay: the caller gets this answer, the next call a new token.
        metrics.retry_not_replayable.inc();
        let tokens = Arc::clone(&shared.tokens);
        let generation = token.generation;
        tokio::spawn(async move {
            let _ = tokens.obtain(&key, Need::Rejected(generation)).await;
        });
        return Ok(resp);
    };
    tracing::info!(route = %route.name, app = %key.app, class = key.class.as_str(), code, "platform rejected the token; refreshing and replaying once");
    let fresh = match shared.tokens.obtain(&key, Need::Rejected(token.generation)).await {
        Ok(t) => t,
        Err(e) => {
            metrics.retry_token_unavailable.inc();
            return Err(token_error(rt, route, e));
        }
    };
    let req = build_request(rt, route, &parts, Some(&fresh), ProxyBody::full(kept))?;
    let (resp, codes) = send(shared, metrics, req, true).await?;
    match codes.map(|c| rt.codes.verdict(&c, Context::Api)) {
        Some(Verdict::Refresh(code)) => {
            metrics.retry_rejected.inc();
            metrics.rejects_fresh.inc();
            match metrics.health.rejected_fresh(fresh.generation) {
                Some(pause) => tracing::warn!(route = %route.name, app = %key.app, class = key.class.as_str(), code,
                    pause_s = pause.as_secs(),
                    "route {} rejected two brand-new tokens in a row: its API does not take this token class \
                     (check the route's `token =` and [token_errors]). Its rejections fetch no new token for {} s; \
                     other routes are unaffected", route.name, pause.as_secs()),
                None => tracing::warn!(route = %route.name, app = %key.app, class = key.class.as_str(), code,
                    "the platform rejected the new token too; passing its answer on"),
            }
        }
        _ => {
            metrics.health.accepted();
            metrics.retry_ok.inc();
        }
    }
    Ok(resp)
}
