//! The admin listener: health, readiness, metrics, the OAuth authorization
//! flow ([`oauth`]), the platform's webhook ([`webhook`]), and the admin API
//! behind `X-Admin-Key` ([`api`]).

mod api;
mod oauth;
mod status;

pub use oauth::{OAuthLimits, OAuthStates, Reservation, Verified};
mod webhook;
pub use webhook::Delivered;

use crate::body::ProxyBody;
use crate::state::Shared;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A store slower than this to answer a readiness probe is not ready.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Admin and webhook request bodies are small JSON documents.
const MAX_ADMIN_BODY: usize = 64 * 1024;

pub(crate) fn json(status: StatusCode, v: serde_json::Value) -> Response<ProxyBody> {
    crate::error::json_response(status, &v)
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// An admin-listener error: rendered where every gateway error is ([`crate::error::render`]).
pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<ProxyBody> {
    let rid = REQUEST_ID.try_with(|r| r.to_str().unwrap_or("-").to_owned()).ok();
    crate::error::render(status, code, &message.into(), rid.as_deref(), serde_json::Value::Null)
}

/// A [`crate::error::GatewayError`] on the admin listener, with the request's id.
pub(crate) fn gateway_error(e: crate::error::GatewayError) -> Response<ProxyBody> {
    let rid = REQUEST_ID.try_with(|r| r.to_str().unwrap_or("-").to_owned()).ok();
    e.into_response(rid.as_deref().unwrap_or("-"))
}

/// Bodies being read at once on one listener at most: half its connections, so connections
/// stalling their bodies (until `body_read_timeout_ms` cuts them) leave the rest to probes and
/// to everyone else.
pub const MAX_BODY_READS: usize = crate::conn::ADMIN_MAX_CONNECTIONS / 2;

/// Request bodies being read on the admin and the public listener.
#[derive(Debug, Default)]
pub struct BodySlots([AtomicUsize; 2]);

/// A body being read, counted until dropped.
struct BodySlot<'a>(&'a AtomicUsize);

impl BodySlots {
    fn take(&self, side: Side) -> Option<BodySlot<'_>> {
        let n = &self.0[side as usize];
        if n.fetch_add(1, Ordering::AcqRel) >= MAX_BODY_READS {
            n.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(BodySlot(n))
    }
}

impl Drop for BodySlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads a small body within `body_read_timeout_ms` in all, or answers 400, 408, 413, or 503 when
/// the listener is reading [`MAX_BODY_READS`] bodies already.
pub(crate) async fn read_body(shared: &Shared, body: Incoming) -> Result<Bytes, Response<ProxyBody>> {
    let side = SIDE.try_with(|s| *s).unwrap_or(Side::Admin);
    let Some(_slot) = shared.body_slots.take(side) else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!("this listener is reading {MAX_BODY_READS} request bodies already; retry shortly"),
        ));
    };
    let stall = std::time::Duration::from_millis(shared.runtime.load().config.server.body_read_timeout_ms);
    match crate::body::read_up_to(body, MAX_ADMIN_BODY as u64, Some(stall)).await {
        Ok(crate::body::Read::Complete(b)) => Ok(b),
        Ok(crate::body::Read::Partial(..)) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("admin bodies are at most {MAX_ADMIN_BODY} bytes"),
        )),
        Err(crate::body::ReadError::Stalled(ms)) => {
            tracing::info!(
                timeout_ms = ms,
                "an admin-listener request body was not received in time"
            );
            Err(error(
                StatusCode::REQUEST_TIMEOUT,
                "client_timeout",
                crate::error::GatewayError::ClientTimeout(ms).to_string(),
            ))
        }
        Err(crate::body::ReadError::Body(e)) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("could not read the body: {e}"),
        )),
    }
}

tokio::task_local! {
    /// The request id of the admin request being handled, for its error body.
    static REQUEST_ID: HeaderValue;
    /// The listener it came in on.
    static SIDE: Side;
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `admin_listen`: health, metrics, the admin API; and the OAuth flow and webhook unless
    /// `public_listen` is set.
    Admin,
    /// `public_listen`: the OAuth flow and the webhook only.
    Public,
}

/// Whether a path is what the internet must reach (the OAuth flow, the platform's webhook).
fn is_public_path(path: &str) -> bool {
    path.starts_with("/oauth/") || path == "/webhooks/douyin"
}

/// Handles one request on the admin or public listener: every answer carries `x-request-id`, and
/// errors carry it in their JSON too. Each listener serves only its own paths.
pub async fn handle(shared: Arc<Shared>, side: Side, req: Request<Incoming>) -> Response<ProxyBody> {
    let rid = crate::head::request_id(req.headers()).id;
    // Kept for the access line of a refusal (reference-counted, not copied).
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let peer = req.extensions().get::<crate::conn::Peer>().map(|p| p.0);
    let max = shared.runtime.load().config.server.max_header_bytes;
    let mut resp = if let Some(e) = crate::head::refusal(&req, max) {
        let close = req.extensions().get::<crate::conn::ConflictingLength>().is_some();
        let mut r = e.into_response(rid.to_str().unwrap_or("-"));
        if close {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    } else {
        let path = req.uri().path();
        let public_set = shared.runtime.load().config.server.public_listen.is_some();
        match side {
            Side::Public if !is_public_path(path) => error(
                StatusCode::NOT_FOUND,
                "not_found",
                "this listener serves /oauth/* and /webhooks/douyin only",
            ),
            Side::Admin if public_set && is_public_path(path) => error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{path} is served on server.public_listen"),
            ),
            _ => {
                REQUEST_ID
                    .scope(rid.clone(), SIDE.scope(side, route(shared, req)))
                    .await
            }
        }
    };
    if resp.status().is_client_error() || resp.status().is_server_error() {
        // Refusals on the listeners that face the internet (failed admin keys, unknown paths,
        // oversized or ambiguous heads, rate limits) in the access log: the path, never the query.
        tracing::info!(
            target: "access",
            request_id = %rid.to_str().unwrap_or("-"),
            listener = match side { Side::Admin => "admin", Side::Public => "public" },
            peer = %peer.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            %method,
            path = %uri.path(),
            status = resp.status().as_u16(),
            code = resp.headers().get(&crate::error::X_GATEWAY_ERROR).and_then(|v| v.to_str().ok()).unwrap_or("-"),
            "refused"
        );
    }
    resp.headers_mut().insert(&crate::head::X_REQUEST_ID, rid);
    resp
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ProxyBody> {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => match tokio::time::timeout(READY_TIMEOUT, shared.tokens.store_ready()).await {
            Ok(Ok(())) => text(StatusCode::OK, "ready\n"),
            Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string()),
            Err(_) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the token store did not answer within 1 s",
            ),
        },
        (&Method::GET, "/metrics") => {
            shared.metrics.set_token_gauges(&shared.tokens.census());
            let ready = tokio::time::timeout(READY_TIMEOUT, shared.tokens.store_ready()).await;
            shared.metrics.store_ready.set(i64::from(matches!(ready, Ok(Ok(())))));
            let in_flight = shared.in_flight.load(std::sync::atomic::Ordering::Relaxed);
            shared.metrics.in_flight.set(in_flight as i64);
            shared.metrics.pending_head_bytes.set(shared.head_budget.used() as i64);
            let mut r = Response::new(ProxyBody::full(shared.metrics.render()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (_, p) if p.starts_with("/oauth/") => oauth::handle(&shared, req).await,
        (&Method::POST, "/webhooks/douyin") => webhook::handle(&shared, req).await,
        (&Method::GET, "/status") => match api::authorized(&shared, req.headers()) {
            None => error(
                StatusCode::NOT_FOUND,
                "not_found",
                "the status page is off with the admin API: set [admin] api_key_sha256",
            ),
            Some(false) => {
                let mut r = error(
                    StatusCode::UNAUTHORIZED,
                    "admin_unauthenticated",
                    "send the admin key as X-Admin-Key, or as the password of HTTP Basic (any user name)",
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"douyin-gateway\", charset=\"UTF-8\""),
                );
                r
            }
            Some(true) => status::page(&shared, req.uri().query()).await,
        },
        (_, p) if p.starts_with("/admin/") => api::handle(&shared, req).await,
        _ => error(StatusCode::NOT_FOUND, "not_found", format!("no admin endpoint {path}")),
    }
}
