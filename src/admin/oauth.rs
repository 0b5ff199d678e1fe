//! The user authorization flow the gateway hosts: `/oauth/authorize` sends
//! the browser to the platform's consent page with a fresh single-use
//! `state`; `/oauth/callback` checks it, exchanges the code, stores the tokens.

use crate::body::ProxyBody;
use crate::state::{Pending, Shared};
use crate::token::{issuer, TokenError, TokenKey};
use http::{header, HeaderValue, Response, StatusCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `state` is good this long: the platform's code lives 10 minutes too.
const STATE_TTL: Duration = Duration::from_secs(600);
/// Pending authorizations kept at most; past this, expired ones are dropped
/// and, if still full, new ones refused (a flood cannot grow memory).
const MAX_PENDING: usize = 10_000;

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

fn page(status: StatusCode, title: &str, body: &str) -> Response<ProxyBody> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><h1>{t}</h1><p>{body}</p></body></html>\n",
        t = escape(title)
    );
    let mut r = Response::new(ProxyBody::full(html));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn query(q: Option<&str>) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// `GET /oauth/authorize?app=NAME`: 302 to the platform's consent page.
pub(super) fn authorize(shared: &Shared, q: Option<&str>) -> Response<ProxyBody> {
    let q = query(q);
    let rt = shared.runtime.load();
    let name = q
        .get("app")
        .map(String::as_str)
        .or_else(|| (rt.apps.len() == 1).then(|| &*rt.apps[0].name));
    let Some(app) = name.and_then(|n| rt.apps.iter().find(|a| &*a.name == n)) else {
        return page(
            StatusCode::NOT_FOUND,
            "Unknown app",
            "Name a configured app: /oauth/authorize?app=NAME",
        );
    };
    let Some(redirect_uri) = &app.redirect_uri else {
        return page(
            StatusCode::BAD_REQUEST,
            "No redirect_uri",
            "This app has no redirect_uri configured.",
        );
    };
    if shared.pending.len() >= MAX_PENDING {
        let now = Instant::now();
        shared.pending.retain(|_, p| p.expires > now);
        if shared.pending.len() >= MAX_PENDING {
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many pending authorizations",
                "Try again in a few minutes.",
            );
        }
    }
    let state = hex::encode(rand::random::<[u8; 16]>());
    shared.pending.insert(
        state.clone(),
        Pending {
            app: app.name.to_string(),
            expires: Instant::now() + STATE_TTL,
        },
    );
    let connect = form_urlencoded::Serializer::new(String::new())
        .append_pair("client_key", &app.platform_key)
        .append_pair("response_type", "code")
        .append_pair("scope", &app.scopes)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("state", &state)
        .finish();
    let base = &rt.config.upstream.base_url;
    let location = format!("{}/platform/oauth/connect/?{connect}", base.trim_end_matches('/'));
    let mut r = Response::new(ProxyBody::empty());
    *r.status_mut() = StatusCode::FOUND;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_str(&location).expect("url-encoded"));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /oauth/callback?code=…&state=…`: checks the state, exchanges the code,
/// stores the user's tokens. Nothing is stored on any failure.
pub(super) async fn callback(shared: &Shared, q: Option<&str>) -> Response<ProxyBody> {
    let q = query(q);
    let Some(state) = q.get("state").filter(|s| !s.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization failed",
            "The callback carries no state.",
        );
    };
    // Single use: taken out whether or not what follows succeeds.
    let pending = match shared.pending.remove(state) {
        Some((_, p)) if p.expires > Instant::now() => p,
        Some(_) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Authorization failed",
                "This authorization expired: start again.",
            )
        }
        None => {
            return page(
                StatusCode::BAD_REQUEST,
                "Authorization failed",
                "Unknown or already used state: start the authorization again.",
            )
        }
    };
    let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization declined",
            "The platform sent no code: the user did not consent.",
        );
    };
    let settings = shared.tokens.issuer_config();
    match issuer::exchange_code(&shared.client, &settings, &pending.app, code).await {
        Ok((open_id, fetched)) => {
            let key = TokenKey::user(Arc::from(pending.app.as_str()), &open_id);
            match shared.tokens.install(&key, fetched).await {
                Ok(_) => {}
                // In use, and written when the store answers: the user is authorized.
                Err(e @ TokenError::Network(_)) => tracing::error!(app = %pending.app, "user authorized, but {e}"),
                Err(e) => return page(StatusCode::BAD_GATEWAY, "Authorization failed", &escape(&e.to_string())),
            }
            tracing::info!(app = %pending.app, "user authorized the app");
            page(
                StatusCode::OK,
                "Authorized",
                &format!(
                    "The gateway now holds tokens for open_id <code>{}</code> of app {}.",
                    escape(&open_id),
                    escape(&pending.app)
                ),
            )
        }
        Err(e) => {
            tracing::warn!(app = %pending.app, "authorization code exchange failed: {e}");
            // A refused code is the request's fault (stale, reused); a platform we cannot reach is ours.
            let status = match e {
                TokenError::Network(_) | TokenError::Timeout(_) | TokenError::Status(_) | TokenError::Malformed(_) => {
                    StatusCode::BAD_GATEWAY
                }
                _ => StatusCode::BAD_REQUEST,
            };
            page(
                status,
                "Authorization failed",
                &format!("The platform refused the code: {}", escape(&e.to_string())),
            )
        }
    }
}
