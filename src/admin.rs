//! The admin listener: health, readiness, metrics, and the admin API behind
//! `X-Admin-Key` (or `Authorization: Bearer`).

use crate::body::ProxyBody;
use crate::state::Shared;
use crate::token::{Need, TokenClass, TokenKey};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// Admin request bodies are small JSON documents.
const MAX_ADMIN_BODY: usize = 64 * 1024;

fn json(status: StatusCode, v: serde_json::Value) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(serde_json::to_vec(&v).expect("json")));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
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

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<ProxyBody> {
    let mut r = json(
        status,
        serde_json::json!({"gateway_error": {"code": code, "message": message.into()}}),
    );
    if let Ok(v) = HeaderValue::from_str(code) {
        r.headers_mut().insert(&crate::error::X_GATEWAY_ERROR, v);
    }
    r
}

/// Handles one admin request.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ProxyBody> {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/metrics") => {
            shared.tokens.update_gauge();
            let mut r = Response::new(ProxyBody::full(shared.metrics.render()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (_, p) if p.starts_with("/admin/") => admin_api(&shared, req).await,
        _ => error(StatusCode::NOT_FOUND, "not_found", format!("no admin endpoint {path}")),
    }
}

fn authorized(shared: &Shared, headers: &http::HeaderMap) -> Option<bool> {
    let rt = shared.runtime.load();
    let want = rt.config.admin.api_key_sha256.as_ref()?;
    let mut want_bytes = [0u8; 32];
    hex::decode_to_slice(want, &mut want_bytes).ok()?;
    let key = headers
        .get("x-admin-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| bearer(headers));
    let Some(key) = key else { return Some(false) };
    let got: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    Some(bool::from(got.ct_eq(&want_bytes)))
}

fn bearer(h: &http::HeaderMap) -> Option<String> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (s, k) = v.split_once(' ')?;
    s.eq_ignore_ascii_case("bearer").then(|| k.trim().to_owned())
}

fn unix_in(d: Option<std::time::Duration>) -> serde_json::Value {
    d.map(|d| {
        (SystemTime::now() + d)
            .duration_since(UNIX_EPOCH)
            .map(|t| t.as_secs())
            .unwrap_or(0)
    })
    .map_or(serde_json::Value::Null, Into::into)
}

fn class_of(s: &str) -> Option<TokenClass> {
    TokenClass::ALL.into_iter().find(|c| c.as_str() == s)
}

async fn admin_api(shared: &Shared, req: Request<Incoming>) -> Response<ProxyBody> {
    match authorized(shared, req.headers()) {
        None => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "the admin API is off: set [admin] api_key_sha256",
            )
        }
        Some(false) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "admin_unauthenticated",
                "send the admin key as X-Admin-Key",
            )
        }
        Some(true) => {}
    }
    let (parts, body) = req.into_parts();
    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/admin/tokens") => {
            let list: Vec<_> = shared
                .tokens
                .snapshot()
                .into_iter()
                .map(|i| {
                    let open_id = match i.key.class {
                        TokenClass::Client => serde_json::Value::Null,
                        _ => i.key.subject.split('\n').next().unwrap_or("").into(),
                    };
                    serde_json::json!({
                        "app": &*i.key.app, "class": i.key.class.as_str(), "open_id": open_id,
                        "expires_at": unix_in(i.expires_in), "refresh_expires_at": null, "state": i.state,
                    })
                })
                .collect();
            json(StatusCode::OK, serde_json::json!({ "tokens": list }))
        }
        (&Method::POST, "/admin/refresh") => {
            let bytes = match http_body_util::Limited::new(body, MAX_ADMIN_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("could not read the body: {e}"),
                    )
                }
            };
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct RefreshReq {
                app: String,
                class: String,
                open_id: Option<String>,
            }
            let r: RefreshReq = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("body must be {{\"app\",\"class\",\"open_id\"?}}: {e}"),
                    )
                }
            };
            let rt = shared.runtime.load();
            let Some(app) = rt.apps.iter().find(|a| *a.name == r.app) else {
                return error(StatusCode::NOT_FOUND, "unknown_app", format!("no app {:?}", r.app));
            };
            let key = match (class_of(&r.class), r.open_id.as_deref()) {
                (Some(TokenClass::Client), _) => app.client_key.clone(),
                (Some(TokenClass::User), Some(o)) => TokenKey::user(Arc::clone(&app.name), o),
                (Some(TokenClass::User | TokenClass::Biz), None) => {
                    return error(StatusCode::BAD_REQUEST, "bad_request", "class user/biz needs open_id")
                }
                (Some(TokenClass::Biz), Some(_)) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "biz tokens are refreshed by the calls that use them",
                    )
                }
                (None, _) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "class must be client, user or biz",
                    )
                }
            };
            let generation = shared.tokens.cached(&key).map_or(0, |t| t.generation);
            match shared.tokens.obtain(&key, Need::Newer(generation)).await {
                Ok(t) => json(
                    StatusCode::OK,
                    serde_json::json!({"refreshed": true, "expires_at": unix_in(Some(t.expires_at.saturating_duration_since(std::time::Instant::now())))}),
                ),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "token_unavailable", e.to_string()),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no admin endpoint {} {}", parts.method, parts.uri.path()),
        ),
    }
}
