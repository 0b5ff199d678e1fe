//! The user authorization flow the gateway hosts: `/oauth/authorize` sends
//! the browser to the platform's consent page with a fresh single-use
//! `state`; `/oauth/callback` checks it, exchanges the code, stores the tokens.
//!
//! Anyone can call both, so both cost little and are bounded ([`OAuthLimits`]): each client
//! address has a rate on `/oauth/*` (`oauth.per_address_per_sec`), checked first; a callback then
//! checks its state's signature; one without a code (or with the platform's `error`) answers a
//! page and stores nothing, its state still usable; only then is a code exchanged, within the
//! gateway's budget (`oauth.max_exchanges_per_sec`), under a reservation of the state
//! ([`states`]) that is kept only if the platform accepted the code.

mod limits;
mod states;

pub use limits::OAuthLimits;
pub use states::{OAuthStates, Reservation, Verified};

use super::{Answer, Ctx};
use crate::body::ProxyBody;
use crate::config::OAuthConfig;
use crate::conn::Peer;
use crate::error::GatewayError;
use crate::token::CodeFailure;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use maud::{html, Render, DOCTYPE};
use std::net::{IpAddr, Ipv4Addr};

/// A page for the browser: `title` as heading, `body` under it; with `reload`, one the browser
/// loads again after that many seconds.
fn page(status: StatusCode, title: &str, body: impl Render, reload: Option<u64>) -> Response<ProxyBody> {
    let html = html! {
        (DOCTYPE)
        html {
            head {
                meta charset="utf-8";
                @if let Some(secs) = reload {
                    meta http-equiv="refresh" content=(secs);
                }
                title { (title) }
            }
            body {
                h1 { (title) }
                p { (body) }
            }
        }
    };
    let mut html = html.into_string();
    html.push('\n');
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

/// An authorization that did not complete, and why.
fn failed(status: StatusCode, why: impl Render) -> Response<ProxyBody> {
    page(status, "Authorization failed", why, None)
}

fn query(q: Option<&str>) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// `/oauth/*` on the admin or public listener: the client address's rate first, then the flow.
pub(super) async fn handle(cx: Ctx<'_>, req: Request<Incoming>) -> Answer {
    let wants_json = wants_json(req.headers());
    // Every listener's connections put their peer there; without one (never, bar a bug) all such
    // requests share one rate.
    let ip = req
        .extensions()
        .get::<Peer>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0.ip());
    let config = cx.shared.runtime.load().config.oauth.clone();
    if let Err(e) = cx.own.oauth_limits.admit(ip, &config) {
        return limited(e, wants_json);
    }
    let q = req.uri().query();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/oauth/authorize") => Ok(authorize(cx, q)),
        (&Method::GET, "/oauth/callback") => callback(cx, q, wants_json, &config).await,
        (_, path) => Err(GatewayError::NotFound(format!("no admin endpoint {path}"))),
    }
}

/// `GET /oauth/authorize?app=NAME`: 302 to the platform's consent page.
fn authorize(cx: Ctx<'_>, q: Option<&str>) -> Response<ProxyBody> {
    let q = query(q);
    let rt = cx.shared.runtime.load();
    let name = q
        .get("app")
        .map(String::as_str)
        .or_else(|| (rt.apps.len() == 1).then(|| &*rt.apps[0].name));
    let Some(app) = name.and_then(|n| rt.apps.iter().find(|a| &*a.name == n)) else {
        let why = "Name a configured app: /oauth/authorize?app=NAME";
        return page(StatusCode::NOT_FOUND, "Unknown app", why, None);
    };
    let Some(redirect_uri) = &app.redirect_uri else {
        let why = "This app has no redirect_uri configured.";
        return page(StatusCode::BAD_REQUEST, "No redirect_uri", why, None);
    };
    let state = cx.own.oauth.issue(&app.name);
    let connect = form_urlencoded::Serializer::new(String::new())
        .append_pair("client_key", &app.platform_key)
        .append_pair("response_type", "code")
        .append_pair("scope", &app.scopes)
        .extend_pairs((!app.optional_scopes.is_empty()).then_some(("optionalScope", &*app.optional_scopes)))
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

/// `GET /oauth/callback?code=…&state=…`: checks the state, exchanges the code, stores the
/// user's tokens. Nothing is stored on any failure, and a state is spent only by a code the
/// platform accepted.
async fn callback(cx: Ctx<'_>, q: Option<&str>, wants_json: bool, config: &OAuthConfig) -> Answer {
    let q = query(q);
    let Some(state) = q.get("state").filter(|s| !s.is_empty()) else {
        return Ok(failed(StatusCode::BAD_REQUEST, "The callback carries no state."));
    };
    let verified = match cx.own.oauth.verify(state) {
        Ok(v) => v,
        Err(why) => return Ok(failed(StatusCode::BAD_REQUEST, why)),
    };
    // Declined (the platform's `error`, or no code): a page, and the state stays usable, so whoever
    // saw it cannot spend it for the user.
    let code = match q.get("code").filter(|c| !c.is_empty()) {
        Some(code) if !q.contains_key("error") => code,
        _ => {
            let why = "The platform sent no code: the user did not consent.";
            return Ok(page(StatusCode::BAD_REQUEST, "Authorization declined", why, None));
        }
    };
    // Reserved before the budget is charged: a spent state or a second callback with the same
    // state costs no exchange.
    let reservation = match cx.own.oauth.reserve(&verified) {
        Ok(r) => r,
        Err(why) => return Ok(failed(StatusCode::BAD_REQUEST, why)),
    };
    if let Err(e) = cx.own.oauth_limits.exchange(config) {
        return limited(e, wants_json);
    }
    let app = &verified.app;
    Ok(match cx.shared.tokens.authorize_with_code(app, code).await {
        Ok((open_id, _)) => {
            reservation.keep();
            tracing::info!(target: "audit", action = "authorize", app = %app, open_id = %open_id, "user authorized the app");
            let done = html! { "The gateway now holds tokens for open_id " code { (open_id) } " of app " (app) "." };
            page(StatusCode::OK, "Authorized", done, None)
        }
        Err(CodeFailure::Store(e)) => {
            // The platform took the code: the state is spent.
            reservation.keep();
            failed(StatusCode::BAD_GATEWAY, e.to_string())
        }
        Err(CodeFailure::Exchange(e)) => {
            tracing::warn!(app = %app, "authorization code exchange failed: {e}");
            // A refused code is the request's fault (stale, reused); a platform we cannot reach is ours.
            let status = if e.platform_unreachable() {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::BAD_REQUEST
            };
            failed(status, format!("The platform refused the code: {e}"))
        }
    })
}

/// Whether the client asked for JSON (`Accept: application/json`): a program, not a browser.
fn wants_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

/// A limit's refusal: 429 with `Retry-After` and `x-gateway-error: rate_limited`, as the
/// contract's JSON for a client that asks for JSON, else as a page for the browser, which loads
/// it again after `Retry-After` (a refused callback's state and code are still good: the user
/// needs to do nothing).
fn limited(e: GatewayError, wants_json: bool) -> Answer {
    if wants_json {
        return Err(e);
    }
    let reload = match e {
        GatewayError::RateLimited { retry_after_secs, .. } => Some(retry_after_secs),
        _ => None,
    };
    let body = format!("{e}. This page reloads by itself.");
    let mut r = page(e.status(), "Too many requests", body, reload);
    e.add_headers(r.headers_mut());
    r.headers_mut()
        .insert(&crate::error::X_GATEWAY_ERROR, HeaderValue::from_static(e.code()));
    Ok(r)
}
