//! The admin API behind `X-Admin-Key` (or `Authorization: Bearer`): list
//! tokens (never their values), import and forget users, refresh now; service providers'
//! merchant apps under `/admin/providers` ([`super::authorizers`]).

use super::body::read_body;
use super::{json, Answer, Ctx};
use crate::body::ProxyBody;
use crate::error::GatewayError;
use crate::inspect::Lenient;
use crate::secret::Secret;
use crate::state::Shared;
use crate::token::issuer::{Fetched, REFRESH_TOKEN_LIFETIME};
use crate::token::{unix_now, Grant, GrantState, Need, TokenClass, TokenKey};
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Whether the request carries the admin key: `X-Admin-Key`, `Authorization: Bearer KEY`, or HTTP
/// Basic with any user name and the key as password (so a browser can open `/status`). `None`
/// when no admin key is configured.
pub(super) fn authorized(shared: &Shared, headers: &http::HeaderMap) -> Option<bool> {
    let rt = shared.runtime.load();
    let mut want = [0u8; 32];
    hex::decode_to_slice(rt.config.admin.api_key_sha256.as_ref()?, &mut want).ok()?;
    let from_authorization = || -> Option<String> {
        let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (s, k) = v.split_once(' ')?;
        if s.eq_ignore_ascii_case("bearer") {
            return Some(k.trim().to_string());
        }
        if s.eq_ignore_ascii_case("basic") {
            use base64::Engine;
            let pair = base64::engine::general_purpose::STANDARD.decode(k.trim()).ok()?;
            let pair = String::from_utf8(pair).ok()?;
            return Some(pair.split_once(':')?.1.to_string());
        }
        None
    };
    let key = headers
        .get("x-admin-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(from_authorization);
    let Some(key) = key else { return Some(false) };
    let got: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    Some(bool::from(got.ct_eq(&want)))
}

fn class_of(s: &str) -> Option<TokenClass> {
    TokenClass::ALL.into_iter().find(|c| c.as_str() == s)
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

/// Handles `/admin/*`.
pub(super) async fn handle(cx: Ctx<'_>, req: Request<Incoming>) -> Answer {
    let shared = cx.shared;
    match authorized(shared, req.headers()) {
        None => {
            return Err(GatewayError::NotFound(
                "the admin API is off: set [admin] api_key_sha256".into(),
            ))
        }
        Some(false) => return Err(GatewayError::AdminUnauthenticated { challenge: false }),
        Some(true) => {}
    }
    let (parts, body) = req.into_parts();
    let segments: Vec<&str> = parts.uri.path().trim_start_matches('/').split('/').collect();
    match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["admin", "tokens"]) => Ok(list(shared)),
        (&Method::PUT, ["admin", "users", app, open_id]) if !open_id.is_empty() => {
            let body = read_body(cx, body).await?;
            import(shared, &decode(app), &decode(open_id), &body).await
        }
        (&Method::DELETE, ["admin", "users", app, open_id]) if !open_id.is_empty() => {
            forget(shared, decode(app), decode(open_id)).await
        }
        (method, ["admin", "providers", rest @ ..]) => {
            let rest: Vec<String> = rest.iter().map(|s| decode(s)).collect();
            super::authorizers::handle(cx, method, &rest, body).await
        }
        (&Method::POST, ["admin", "refresh"]) => {
            let body = read_body(cx, body).await?;
            refresh(shared, &body).await
        }
        _ => Err(GatewayError::NotFound(format!(
            "no admin endpoint {} {}",
            parts.method,
            parts.uri.path()
        ))),
    }
}

/// `DELETE /admin/users/{app}/{open_id}`.
async fn forget(shared: &Shared, app: String, open_id: String) -> Answer {
    match shared.tokens.remove_user(&app, &open_id).await {
        Ok(0) => Err(GatewayError::NotFound(
            "no tokens stored for that app and open_id".into(),
        )),
        Ok(n) => {
            tracing::info!(target: "audit", action = "delete", app = %app, open_id = %open_id, deleted = n, "admin deleted a user's tokens");
            Ok(json(
                StatusCode::OK,
                json!({"deleted": n, "app": app, "open_id": open_id}),
            ))
        }
        Err(e) => Err(GatewayError::StoreUnavailable(e.to_string())),
    }
}

fn list(shared: &Shared) -> Response<ProxyBody> {
    let list: Vec<Value> = shared
        .tokens
        .snapshot()
        .into_iter()
        .map(|i| {
            let open_id = i.key.open_id();
            let mut v = json!({
                "app": &*i.key.app,
                "class": i.key.class.as_str(),
                "open_id": open_id,
                "expires_at": i.expires_unix,
                "refresh_expires_at": i.grant.as_ref().map(|g| g.refresh_expires_unix),
                "state": i.state,
                "version": i.version,
            });
            if let Some(appid) = i.key.authorizer_appid() {
                // The merchant app's; its provider is the `app`.
                v["authorizer_appid"] = appid.into();
            }
            if let Some(g) = &i.grant {
                v["scope"] = match i.key.class {
                    TokenClass::Biz => i.key.biz_scope().unwrap_or("").into(),
                    _ => (*g.scope).into(),
                };
                if i.key.class == TokenClass::User {
                    v["renewals"] = g.renewals.into();
                    v["reauthorize_by"] = i.reauthorize_by.into();
                }
                if let GrantState::Dead(why) = &g.state {
                    v["reason"] = why.as_str().into();
                }
            }
            v
        })
        .collect();
    json(StatusCode::OK, json!({ "tokens": list }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Import {
    access_token: String,
    refresh_token: String,
    expires_in: Lenient,
    refresh_expires_in: Lenient,
    #[serde(default)]
    scope: String,
}

async fn import(shared: &Shared, app: &str, open_id: &str, body: &[u8]) -> Answer {
    let bad = |m: &str| Err(GatewayError::BadRequest(m.into()));
    let i: Import = serde_json::from_slice(body).map_err(|e| {
        GatewayError::BadRequest(format!(
            "body must be {{\"access_token\",\"refresh_token\",\"expires_in\",\"refresh_expires_in\",\"scope\"?}}: {e}"
        ))
    })?;
    let (Some(expires_in), Some(refresh_in)) = (
        i.expires_in.0.filter(|e| *e > 0),
        i.refresh_expires_in.0.filter(|e| *e > 0),
    ) else {
        return bad("expires_in and refresh_expires_in must be positive numbers of seconds");
    };
    if i.access_token.is_empty() || i.refresh_token.is_empty() {
        return bad("access_token and refresh_token must not be empty");
    }
    let rt = shared.runtime.load();
    let Some(a) = rt.apps.iter().find(|a| &*a.name == app) else {
        return Err(GatewayError::UnknownApp(app.into()));
    };
    let fetched = Fetched {
        value: i.access_token,
        expires_in: expires_in as u64,
        grant: Some(Grant {
            refresh_token: Secret::new(i.refresh_token),
            refresh_expires_unix: unix_now() + refresh_in as u64,
            // An imported token's history is unknown: count it as freshly issued.
            refresh_lifetime_secs: crate::token::lifetime(REFRESH_TOKEN_LIFETIME.max(refresh_in as u64)),
            renewals: 0,
            scope: std::sync::Arc::from(i.scope.as_str()),
            state: GrantState::Active,
        }),
    };
    match shared
        .tokens
        .install(&TokenKey::user(Arc::clone(&a.name), open_id), fetched)
        .await
    {
        Ok(t) => {
            tracing::info!(target: "audit", action = "import", app, open_id, "admin imported a user's tokens");
            Ok(json(
                StatusCode::OK,
                json!({"stored": true, "app": app, "open_id": open_id, "expires_at": t.expires_unix}),
            ))
        }
        Err(e) => bad(&e.to_string()),
    }
}

async fn refresh(shared: &Shared, body: &[u8]) -> Answer {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RefreshReq {
        app: String,
        class: String,
        open_id: Option<String>,
        scope: Option<String>,
    }
    let bad = |m: &str| Err(GatewayError::BadRequest(m.into()));
    let r: RefreshReq = serde_json::from_slice(body)
        .map_err(|e| GatewayError::BadRequest(format!("body must be {{\"app\",\"class\",\"open_id\"?}}: {e}")))?;
    let rt = shared.runtime.load();
    let Some(app) = rt.apps.iter().find(|a| *a.name == r.app) else {
        return Err(GatewayError::UnknownApp(r.app));
    };
    let key = match (class_of(&r.class), r.open_id.as_deref()) {
        (Some(TokenClass::Client), _) => app.client_key.clone(),
        (Some(TokenClass::MiniApp), _) => app.mini_app_key.clone(),
        (Some(TokenClass::User), Some(o)) => TokenKey::user(Arc::clone(&app.name), o),
        (Some(TokenClass::Biz), Some(o)) => match r.scope.as_deref() {
            Some(s) => TokenKey::biz(Arc::clone(&app.name), o, s),
            None => return bad("class biz needs scope"),
        },
        (Some(TokenClass::Component | TokenClass::Authorizer), _) => {
            return bad("component and authorizer tokens are the providers': see /admin/providers")
        }
        (Some(_), None) => return bad("class user/biz needs open_id"),
        (None, _) => return bad("class must be client, mini_app, user or biz"),
    };
    tracing::info!(target: "audit", action = "refresh", app = %app.name, class = key.class.as_str(),
        open_id = key.open_id().unwrap_or("-"), "admin asked for a token refresh");
    let generation = shared.tokens.cached(&key).map_or(0, |t| t.generation);
    match shared.tokens.obtain(&key, Need::Newer(generation)).await {
        Ok(t) => Ok(json(
            StatusCode::OK,
            json!({"refreshed": true, "expires_at": t.expires_unix}),
        )),
        // Also during the back-off after the platform said so: the user must still authorize again.
        Err(e) if e.needs_authorization() => Err(GatewayError::UserAuthorizationRequired {
            message: e.to_string(),
            authorize_url: None,
        }),
        Err(e) => Err(GatewayError::TokenUnavailable(e.to_string())),
    }
}
