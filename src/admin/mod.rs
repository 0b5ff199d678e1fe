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
use http_body_util::BodyExt;
use hyper::body::Incoming;
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

/// Reads a small body, or answers 400/413.
pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, Response<ProxyBody>> {
    match http_body_util::Limited::new(body, MAX_ADMIN_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("admin bodies are at most {MAX_ADMIN_BODY} bytes"),
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("could not read the body: {e}"),
        )),
    }
}

tokio::task_local! {
    /// The request id of the admin request being handled, for its error body.
    static REQUEST_ID: HeaderValue;
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
    let rid = crate::proxy::request_id(req.headers()).id;
    let max = shared.runtime.load().config.server.max_header_bytes;
    let mut resp = if crate::proxy::head_size(&req) > max {
        crate::error::GatewayError::HeadersTooLarge(max).into_response(rid.to_str().unwrap_or("-"))
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
            _ => REQUEST_ID.scope(rid.clone(), route(shared, req)).await,
        }
    };
    resp.headers_mut().insert(&crate::proxy::X_REQUEST_ID, rid);
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
            shared.tokens.update_gauges();
            let ready = tokio::time::timeout(READY_TIMEOUT, shared.tokens.store_ready()).await;
            shared.metrics.store_ready.set(i64::from(matches!(ready, Ok(Ok(())))));
            let in_flight = shared.in_flight.load(std::sync::atomic::Ordering::Relaxed);
            shared.metrics.in_flight.set(in_flight as i64);
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
