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

mod states;

pub use states::{OAuthStates, Reservation, Verified};

use crate::body::ProxyBody;
use crate::config::OAuthConfig;
use crate::conn::Peer;
use crate::error::GatewayError;
use crate::limit::{retry_after_secs, PerAddress, Window};
use crate::state::Shared;
use crate::token::CodeFailure;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};

/// Logged at most this often while code exchanges are at their limit.
const WARN_EVERY_SECS: u64 = 60;

/// The limits of the flow: a rate per client address on `/oauth/*`, and the gateway's budget of
/// code exchanges. Bounded memory whatever arrives (128 KiB of address slots).
#[derive(Default)]
pub struct OAuthLimits {
    /// At most `max_exchanges_per_sec` in any one second: what the platform sees is the rate.
    exchanges: Window,
    per_address: PerAddress,
    /// When (unix seconds) "exchanges at their limit" was last logged.
    warned_at: AtomicU64,
}

impl OAuthLimits {
    /// One `/oauth/*` request from `ip`.
    pub fn admit(&self, ip: IpAddr, config: &OAuthConfig) -> Result<(), GatewayError> {
        if config.per_address_per_sec == 0 {
            return Ok(());
        }
        self.per_address
            .take(ip, config.per_address_per_sec, config.per_address_burst)
            .map_err(|wait| GatewayError::RateLimited {
                what: "too many authorization requests from this address",
                retry_after_secs: retry_after_secs(wait),
            })
    }

    /// One code exchange at the platform.
    pub fn exchange(&self, config: &OAuthConfig) -> Result<(), GatewayError> {
        let rate = config.max_exchanges_per_sec;
        self.exchanges.take(rate).map_err(|wait| {
            let now = crate::token::unix_now();
            let last = self.warned_at.load(Ordering::Relaxed);
            if now >= last + WARN_EVERY_SECS
                && self
                    .warned_at
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    max_exchanges_per_sec = rate,
                    "authorization callbacks refused: code exchanges are at oauth.max_exchanges_per_sec \
                     (made-up codes from strangers, or more real users than the limit allows)"
                );
            }
            GatewayError::RateLimited {
                what: "the gateway is exchanging as many authorization codes as it may",
                retry_after_secs: retry_after_secs(wait),
            }
        })
    }
}

pub(super) fn escape(s: &str) -> String {
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
    page_reloading(status, title, body, None)
}

/// A page; with `reload`, one the browser loads again after that many seconds.
fn page_reloading(status: StatusCode, title: &str, body: &str, reload: Option<u64>) -> Response<ProxyBody> {
    let refresh = reload.map_or(String::new(), |s| {
        format!("<meta http-equiv=\"refresh\" content=\"{s}\">")
    });
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">{refresh}<title>{t}</title></head>\
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
fn authorize(shared: &Shared, q: Option<&str>) -> Response<ProxyBody> {
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
    let state = shared.oauth.issue(&app.name);
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
async fn callback(shared: &Shared, q: Option<&str>, wants_json: bool, config: &OAuthConfig) -> Response<ProxyBody> {
    let q = query(q);
    let Some(state) = q.get("state").filter(|s| !s.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization failed",
            "The callback carries no state.",
        );
    };
    let verified = match shared.oauth.verify(state) {
        Ok(v) => v,
        Err(why) => return page(StatusCode::BAD_REQUEST, "Authorization failed", why),
    };
    // Declined (the platform's `error`, or no code): a page, and the state stays usable, so whoever
    // saw it cannot spend it for the user.
    let code = match q.get("code").filter(|c| !c.is_empty()) {
        Some(code) if !q.contains_key("error") => code,
        _ => {
            return page(
                StatusCode::BAD_REQUEST,
                "Authorization declined",
                "The platform sent no code: the user did not consent.",
            )
        }
    };
    // Reserved before the budget is charged: a spent state or a second callback with the same
    // state costs no exchange.
    let reservation = match shared.oauth.reserve(&verified) {
        Ok(r) => r,
        Err(why) => return page(StatusCode::BAD_REQUEST, "Authorization failed", why),
    };
    if let Err(e) = shared.oauth_limits.exchange(config) {
        return limited(e, wants_json);
    }
    let app = &verified.app;
    match shared.tokens.authorize_with_code(app, code).await {
        Ok((open_id, _)) => {
            reservation.keep();
            tracing::info!(target: "audit", action = "authorize", app = %app, open_id = %open_id, "user authorized the app");
            page(
                StatusCode::OK,
                "Authorized",
                &format!(
                    "The gateway now holds tokens for open_id <code>{}</code> of app {}.",
                    escape(&open_id),
                    escape(app)
                ),
            )
        }
        Err(CodeFailure::Store(e)) => {
            // The platform took the code: the state is spent.
            reservation.keep();
            page(StatusCode::BAD_GATEWAY, "Authorization failed", &escape(&e.to_string()))
        }
        Err(CodeFailure::Exchange(e)) => {
            tracing::warn!(app = %app, "authorization code exchange failed: {e}");
            // A refused code is the request's fault (stale, reused); a platform we cannot reach is ours.
            let status = if e.platform_unreachable() {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::BAD_REQUEST
            };
            page(
                status,
                "Authorization failed",
                &format!("The platform refused the code: {}", escape(&e.to_string())),
            )
        }
    }
}

/// `/oauth/*` on the admin or public listener: the client address's rate first, then the flow.
pub(super) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<ProxyBody> {
    let wants_json = wants_json(req.headers());
    // Every listener's connections put their peer there; without one (never, bar a bug) all such
    // requests share one rate.
    let ip = req
        .extensions()
        .get::<Peer>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0.ip());
    let config = shared.runtime.load().config.oauth.clone();
    if let Err(e) = shared.oauth_limits.admit(ip, &config) {
        return limited(e, wants_json);
    }
    let q = req.uri().query();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/oauth/authorize") => authorize(shared, q),
        (&Method::GET, "/oauth/callback") => callback(shared, q, wants_json, &config).await,
        (_, path) => super::error(StatusCode::NOT_FOUND, "not_found", format!("no admin endpoint {path}")),
    }
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
fn limited(e: GatewayError, wants_json: bool) -> Response<ProxyBody> {
    if wants_json {
        return super::gateway_error(e);
    }
    let reload = match e {
        GatewayError::RateLimited { retry_after_secs, .. } => Some(retry_after_secs),
        _ => None,
    };
    let body = format!("{}. This page reloads by itself.", escape(&e.to_string()));
    let mut r = page_reloading(e.status(), "Too many requests", &body, reload);
    e.add_headers(r.headers_mut());
    r.headers_mut()
        .insert(&crate::error::X_GATEWAY_ERROR, HeaderValue::from_static(e.code()));
    r
}
