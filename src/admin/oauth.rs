//! The user authorization flow the gateway hosts: `/oauth/authorize` sends
//! the browser to the platform's consent page with a fresh single-use
//! `state`; `/oauth/callback` checks it, exchanges the code, stores the tokens.

use crate::body::ProxyBody;
use crate::state::Shared;
use crate::token::{unix_now, CodeFailure};
use base64::Engine;
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use http::{header, HeaderValue, Response, StatusCode};
use sha2::Sha256;

/// A `state` is good this long: the platform's code lives 10 minutes too.
const STATE_TTL_SECS: u64 = 600;
/// Used states remembered at most (about 50 bytes each). Only states the gateway signed count,
/// each one an authorize and a callback; past this, callbacks are refused until some expire.
const MAX_USED: usize = 1_000_000;
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 16;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The authorization flow's `state`s. A state is self-contained and signed:
/// `base64url(expiry ‖ nonce ‖ app ‖ HMAC-SHA256(key, expiry ‖ nonce ‖ app)[..16])`, so starting a
/// flow stores nothing and a flood of `/oauth/authorize` costs no memory. A callback whose state
/// verifies is remembered by its nonce until the state expires: each state works once.
pub struct OAuthStates {
    key: [u8; 32],
    used: DashMap<[u8; NONCE_LEN], u64>,
}

impl OAuthStates {
    /// States signed with `key`; instances sharing it accept each other's states.
    pub fn new(key: [u8; 32]) -> Self {
        OAuthStates {
            key,
            used: DashMap::new(),
        }
    }

    /// The signing key: derived from the store's encryption key when there is one (so every
    /// instance of a Redis deployment accepts the others' states), else random for this process.
    pub fn key_for(store: &crate::config::StoreConfig) -> [u8; 32] {
        let raw = store
            .encryption_key_env
            .as_deref()
            .and_then(|var| std::env::var(var).ok())
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v.trim()).ok());
        match raw {
            Some(k) => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&k).expect("any key length");
                mac.update(b"douyin-gateway oauth state v1");
                mac.finalize().into_bytes().into()
            }
            None => rand::random(),
        }
    }

    fn tag(&self, signed: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        mac.update(signed);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        tag
    }

    /// A fresh state for `app`.
    pub fn issue(&self, app: &str) -> String {
        let mut b = Vec::with_capacity(8 + NONCE_LEN + app.len() + TAG_LEN);
        b.extend_from_slice(&(unix_now() + STATE_TTL_SECS).to_be_bytes());
        b.extend_from_slice(&rand::random::<[u8; NONCE_LEN]>());
        b.extend_from_slice(app.as_bytes());
        let tag = self.tag(&b);
        b.extend_from_slice(&tag);
        B64.encode(b)
    }

    /// The app a state was issued for, once; why not otherwise.
    pub fn redeem(&self, state: &str) -> Result<String, &'static str> {
        const UNKNOWN: &str = "Unknown or already used state: start the authorization again.";
        let b = B64.decode(state).map_err(|_| UNKNOWN)?;
        if b.len() < 8 + NONCE_LEN + TAG_LEN {
            return Err(UNKNOWN);
        }
        let (signed, tag) = b.split_at(b.len() - TAG_LEN);
        let good: bool = subtle::ConstantTimeEq::ct_eq(&self.tag(signed)[..], tag).into();
        if !good {
            return Err(UNKNOWN);
        }
        let expires = u64::from_be_bytes(signed[..8].try_into().expect("8 bytes"));
        let now = unix_now();
        if now >= expires {
            return Err("This authorization expired: start again.");
        }
        let nonce: [u8; NONCE_LEN] = signed[8..8 + NONCE_LEN].try_into().expect("nonce");
        let app = std::str::from_utf8(&signed[8 + NONCE_LEN..]).map_err(|_| UNKNOWN)?;
        if self.used.len() >= MAX_USED {
            self.used.retain(|_, exp| *exp > now);
            if self.used.len() >= MAX_USED {
                tracing::warn!(
                    max = MAX_USED,
                    "too many authorizations in 10 minutes: callbacks refused until some expire"
                );
                return Err("Too many authorizations in progress: try again in a few minutes.");
            }
        }
        match self.used.entry(nonce) {
            dashmap::Entry::Occupied(_) => Err(UNKNOWN),
            dashmap::Entry::Vacant(v) => {
                v.insert(expires);
                Ok(app.to_owned())
            }
        }
    }

    /// States redeemed and not yet expired (remembered so they work once).
    pub fn remembered(&self) -> usize {
        self.used.len()
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
    // Single use: spent whether or not what follows succeeds.
    let app = match shared.oauth.redeem(state) {
        Ok(app) => app,
        Err(why) => return page(StatusCode::BAD_REQUEST, "Authorization failed", why),
    };
    let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization declined",
            "The platform sent no code: the user did not consent.",
        );
    };
    match shared.tokens.authorize_with_code(&app, code).await {
        Ok((open_id, _)) => {
            tracing::info!(target: "audit", action = "authorize", app = %app, open_id = %open_id, "user authorized the app");
            page(
                StatusCode::OK,
                "Authorized",
                &format!(
                    "The gateway now holds tokens for open_id <code>{}</code> of app {}.",
                    escape(&open_id),
                    escape(&app)
                ),
            )
        }
        Err(CodeFailure::Store(e)) => page(StatusCode::BAD_GATEWAY, "Authorization failed", &escape(&e.to_string())),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_works_once_for_its_app_and_cannot_be_forged() {
        let states = OAuthStates::new([7; 32]);
        let s = states.issue("main");
        assert_eq!(states.redeem(&s).unwrap(), "main");
        assert!(states.redeem(&s).is_err(), "single use");
        // Another key's state, a flipped bit, a truncated state, garbage: all refused.
        assert!(OAuthStates::new([8; 32]).redeem(&states.issue("main")).is_err());
        let mut raw = B64.decode(states.issue("main")).unwrap();
        raw[10] ^= 1;
        assert!(states.redeem(&B64.encode(&raw)).is_err());
        assert!(states.redeem(&s[..20]).is_err());
        assert!(states.redeem("not base64 at all!").is_err());
        assert_eq!(states.remembered(), 1);
    }

    #[test]
    fn an_expired_state_is_refused() {
        let states = OAuthStates::new([7; 32]);
        let mut b = (unix_now() - 1).to_be_bytes().to_vec();
        b.extend_from_slice(&[0; NONCE_LEN]);
        b.extend_from_slice(b"main");
        let tag = states.tag(&b);
        b.extend_from_slice(&tag);
        assert_eq!(
            states.redeem(&B64.encode(&b)),
            Err("This authorization expired: start again.")
        );
    }
}
