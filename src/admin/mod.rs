//! The admin listener: health, readiness, metrics, the status page ([`status`]), the OAuth
//! authorization flow ([`oauth`]), the platform's webhook ([`webhook`]), and the admin API behind
//! `X-Admin-Key` ([`api`]). With `server.public_listen`, the flow and the webhook are served on
//! the public listener instead, by the same [`handle`].
//!
//! Handlers answer an [`Answer`]: their errors are [`GatewayError`]s, which [`handle`] alone turns
//! into the contract's JSON, with the request's id.

mod api;
mod authorizers;
mod body;
mod callbacks;
mod oauth;
mod providers;
mod relay;
mod status;
mod webhook;

pub use body::{BodySlots, MAX_BODY_READS};
pub use oauth::{OAuthLimits, OAuthStates, Reservation, Verified};
pub use webhook::Delivered;

use crate::body::ProxyBody;
use crate::conn::{ConflictingLength, Peer};
use crate::error::GatewayError;
use crate::state::Shared;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;

/// A store slower than this to answer a readiness probe is not ready.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// What a handler on these listeners answers: a response, or an error for [`handle`] to render.
type Answer = Result<Response<ProxyBody>, GatewayError>;

/// What the admin and public listeners keep for themselves, beside the gateway's [`Shared`].
pub struct State {
    /// The authorization flow's signed, single-use states.
    pub oauth: OAuthStates,
    /// The authorization flow's limits: per client address, and code exchanges.
    pub oauth_limits: OAuthLimits,
    /// Webhook deliveries processed already, by `Msg-Id`.
    pub webhooks: Delivered,
    /// Request bodies being read on each listener.
    pub body_slots: BodySlots,
    /// Nonces of verified `[[callbacks]]`, against replays.
    pub nonces: crate::relay::Nonces,
    /// (`Nonce`, `MsgSignature`) of verified `[[providers]]` events, against replays.
    pub provider_nonces: crate::relay::Nonces,
}

impl State {
    /// The listeners' state for a gateway on `store`: OAuth states are signed with a key derived
    /// from its encryption key, so instances sharing a store accept each other's.
    pub fn new(store: &crate::config::StoreConfig) -> Self {
        State {
            oauth: OAuthStates::new(OAuthStates::key_for(store)),
            oauth_limits: OAuthLimits::default(),
            webhooks: Delivered::default(),
            body_slots: BodySlots::default(),
            nonces: crate::relay::Nonces::default(),
            provider_nonces: providers::event_nonces(),
        }
    }
}

/// What a handler works with: the gateway's state, the listeners' own, and which listener the
/// request came in on.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    shared: &'a Shared,
    own: &'a State,
    side: Side,
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

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Admin => "admin",
            Side::Public => "public",
        }
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<ProxyBody> {
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

/// Whether a path is what the internet must reach (the OAuth flow, the platform's webhook, the
/// `[[callbacks]]`, the providers' event URLs).
fn is_public_path(rt: &crate::runtime::Runtime, path: &str) -> bool {
    path.starts_with("/oauth/")
        || path == "/webhooks/douyin"
        || path.starts_with("/providers/")
        || is_callback(rt, path)
}

fn is_callback(rt: &crate::runtime::Runtime, path: &str) -> bool {
    rt.callbacks.iter().any(|c| c.path == path)
}

/// Handles one request on the admin or public listener: every answer carries `x-request-id`, and
/// errors carry it in their JSON too. Each listener serves only its own paths.
pub async fn handle(shared: Arc<Shared>, own: Arc<State>, side: Side, req: Request<Incoming>) -> Response<ProxyBody> {
    let rid = crate::head::request_id(req.headers()).id;
    // Kept for the access line of a refusal (reference-counted, not copied).
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    // hyper frames such a body as chunked, another hop might not: the connection is not reused.
    let close = req.extensions().get::<ConflictingLength>().is_some();
    let cx = Ctx {
        shared: &shared,
        own: &own,
        side,
    };
    let answer = match crate::head::refusal(&req, shared.runtime.load().config.server.max_header_bytes) {
        Some(e) => Err(e),
        None => match listener_serves(cx, req.uri().path()) {
            Ok(()) => route(cx, req).await,
            Err(e) => Err(e),
        },
    };
    let mut resp = answer.unwrap_or_else(|e| e.into_response(rid.to_str().unwrap_or("-")));
    if close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if resp.status().is_client_error() || resp.status().is_server_error() {
        // Refusals on the listeners that face the internet (failed admin keys, unknown paths,
        // oversized or ambiguous heads, rate limits) in the access log: the path, never the query.
        tracing::info!(
            target: "access",
            request_id = %rid.to_str().unwrap_or("-"),
            listener = side.name(),
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

/// Whether this listener serves `path`: the public one only the public paths, and the admin one
/// those too unless a public listener is configured.
fn listener_serves(cx: Ctx<'_>, path: &str) -> Result<(), GatewayError> {
    let rt = cx.shared.runtime.load();
    let public_set = rt.config.server.public_listen.is_some();
    match cx.side {
        Side::Public if !is_public_path(&rt, path) => Err(GatewayError::NotFound(
            "this listener serves /oauth/*, /webhooks/douyin, /providers/*/events and the [[callbacks]] paths only"
                .into(),
        )),
        Side::Admin if public_set && is_public_path(&rt, path) => Err(GatewayError::NotFound(format!(
            "{path} is served on server.public_listen"
        ))),
        _ => Ok(()),
    }
}

async fn route(cx: Ctx<'_>, req: Request<Incoming>) -> Answer {
    let shared = cx.shared;
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => Ok(text(StatusCode::OK, "ok\n")),
        (&Method::GET, "/readyz") => store_ready(shared).await.map(|()| text(StatusCode::OK, "ready\n")),
        (&Method::GET, "/metrics") => Ok(metrics(shared).await),
        (_, p) if p.starts_with("/oauth/") => oauth::handle(cx, req).await,
        (&Method::POST, "/webhooks/douyin") => webhook::handle(cx, req).await,
        (_, p) if p.starts_with("/providers/") => providers::handle(cx, req).await,
        (_, p) if is_callback(&shared.runtime.load(), p) => callbacks::handle(cx, req).await,
        (&Method::GET, "/status") => match api::authorized(shared, req.headers()) {
            None => Err(GatewayError::NotFound(
                "the status page is off with the admin API: set [admin] api_key_sha256".into(),
            )),
            Some(false) => Err(GatewayError::AdminUnauthenticated { challenge: true }),
            Some(true) => Ok(status::page(shared, req.uri().query()).await),
        },
        (_, p) if p.starts_with("/admin/") => api::handle(cx, req).await,
        (_, p) => Err(GatewayError::NotFound(format!("no admin endpoint {p}"))),
    }
}

/// Whether the token store answers, within [`READY_TIMEOUT`].
async fn store_ready(shared: &Shared) -> Result<(), GatewayError> {
    match tokio::time::timeout(READY_TIMEOUT, shared.tokens.store_ready()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(GatewayError::StoreUnavailable(e.to_string())),
        Err(_) => Err(GatewayError::StoreUnavailable(
            "the token store did not answer within 1 s".into(),
        )),
    }
}

/// When `provider`'s latest component_ticket was received (Unix seconds; `None`: it holds none),
/// or why that is unknown: read from memory, else from the store within [`READY_TIMEOUT`].
async fn ticket_received(shared: &Shared, provider: &str) -> Result<Option<u64>, String> {
    match tokio::time::timeout(READY_TIMEOUT, shared.tokens.ticket(provider)).await {
        Ok(Ok(t)) => Ok(t.map(|t| t.received_unix)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the token store did not answer within 1 s".into()),
    }
}

/// Each provider's ticket's age in seconds; `None` while it holds none (or the store cannot say).
async fn ticket_ages(shared: &Shared) -> Vec<(Arc<str>, Option<u64>)> {
    let now = crate::vocab::unix_now();
    let rt = shared.runtime.load_full();
    let mut out = Vec::with_capacity(rt.providers.len());
    for p in &rt.providers {
        let received = ticket_received(shared, &p.name).await.ok().flatten();
        out.push((Arc::clone(&p.name), received.map(|t| now.saturating_sub(t))));
    }
    out
}

/// `GET /metrics`: the gauges read at scrape time are set first.
async fn metrics(shared: &Shared) -> Response<ProxyBody> {
    shared.metrics.set_token_gauges(&shared.tokens.census());
    shared.metrics.set_ticket_ages(&ticket_ages(shared).await);
    let ready = store_ready(shared).await;
    shared.metrics.store_ready.set(i64::from(ready.is_ok()));
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
