//! The test controls (`/sandbox/…`, not part of the platform): counters, faults, the clock,
//! revocations, the request log, codes as an app would receive them, large transfers.

use super::state::{Faults, Inner, State};
use super::{mini, oauth, Reply};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use std::time::Duration;

/// `POST /sandbox/sink`: a large upload, counted as it comes and never held; `{"bytes": N}`.
pub(super) async fn sink(mut body: Incoming) -> Reply {
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => return Reply::status(StatusCode::BAD_REQUEST, "text/plain", "bad body"),
        }
    }
    Reply::json(json!({ "bytes": bytes }))
}

/// `POST /sandbox/login_code`: a `tt.login` code ([`mini::login_code`]), or 400 saying why not.
pub(super) fn login_code(state: &State, body: &[u8]) -> Reply {
    match mini::login_code(state, body) {
        Ok(v) => Reply::json(v),
        Err(e) => Reply::json(json!({ "error": e })).with_status(StatusCode::BAD_REQUEST),
    }
}

/// `POST /sandbox/auth_code` `{"client_key", "scope"?}`: the authorization code the consent page
/// would give a mini-app (`tt.showDouyinOpenAuth`) or mobile SDK, as JSON `{"code"}`.
pub(super) fn auth_code(state: &State, body: &[u8]) -> Reply {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("client_key", v["client_key"].as_str().unwrap_or(""))
        .append_pair("response_type", "code")
        .append_pair("scope", v["scope"].as_str().unwrap_or("user_info"))
        .append_pair("redirect_uri", "app://sandbox")
        .finish();
    let consent = oauth::connect(state, &query);
    let code = consent.location.as_deref().and_then(|l| {
        form_urlencoded::parse(l.split_once('?')?.1.as_bytes())
            .find(|(k, _)| k == "code")
            .map(|(_, c)| c.into_owned())
    });
    match code {
        Some(code) => Reply::json(json!({ "code": code })),
        None => consent,
    }
}

/// The other controls: `GET /sandbox/stats`, `GET /sandbox/bytes?n=N`, `GET|DELETE
/// /sandbox/requests`, `POST /sandbox/faults`, `POST /sandbox/clock`, `POST /sandbox/revoke`.
pub(super) fn control(state: &State, method: &Method, path: &str, query: Option<&str>, body: &[u8]) -> Reply {
    let mut inner = state.inner.lock().unwrap();
    match (method, path) {
        (&Method::GET, "/sandbox/stats") => Reply::json(state.counters.json()),
        (&Method::GET, "/sandbox/bytes") => {
            // A large download: `n` bytes (at most 1 GiB) of application/octet-stream.
            let n = form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .find(|(k, _)| k == "n")
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .unwrap_or(0)
                .min(1 << 30);
            let mut r = Reply::status(StatusCode::OK, "application/octet-stream", "");
            r.body = Bytes::from(vec![b'x'; n]);
            r
        }
        (&Method::GET, "/sandbox/requests") => Reply::json(json!({"requests": inner.log})),
        (&Method::DELETE, "/sandbox/requests") => {
            inner.log.clear();
            Reply::json(json!({"cleared": true}))
        }
        (&Method::POST, "/sandbox/faults") => match serde_json::from_slice::<Faults>(body) {
            Ok(f) => {
                inner.faults = f;
                Reply::json(json!({"faults": inner.faults}))
            }
            Err(e) => bad(format!("faults: {e}")),
        },
        (&Method::POST, "/sandbox/clock") => {
            let secs = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["advance_secs"].as_u64());
            match secs {
                Some(s) => {
                    inner.offset += Duration::from_secs(s);
                    Reply::json(json!({"offset_secs": inner.offset.as_secs()}))
                }
                None => bad("body must be {\"advance_secs\": N}".into()),
            }
        }
        (&Method::POST, "/sandbox/revoke") => revoke(&mut inner, body),
        _ => bad(format!("no sandbox control {method} {path}")),
    }
}

/// `POST /sandbox/revoke` `{"client_key"}` (the app's client_tokens die), `{"expire_user"}` (a
/// user's access and biz tokens expire now) or `{"revoke_user"}` (all the user's tokens die).
fn revoke(inner: &mut Inner, body: &[u8]) -> Reply {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if let Some(k) = v["client_key"].as_str() {
        inner.client_tokens.remove(k);
        Reply::json(json!({"revoked": "client_tokens"}))
    } else if let Some(o) = v["expire_user"].as_str() {
        let now = inner.now();
        for u in inner.users.values_mut().filter(|u| u.open_id == o) {
            u.expires_at = now;
        }
        for b in inner.biz.values_mut().filter(|b| b.open_id == o) {
            b.expires_at = now;
        }
        Reply::json(json!({"expired": o}))
    } else if let Some(o) = v["revoke_user"].as_str() {
        inner.users.retain(|_, u| u.open_id != o);
        inner.refresh.retain(|_, r| r.open_id != o);
        inner.biz.retain(|_, b| b.open_id != o);
        inner.biz_refresh.retain(|_, b| b.open_id != o);
        Reply::json(json!({"revoked": o}))
    } else {
        bad("body must name client_key, expire_user or revoke_user".into())
    }
}

/// 400 with `{"error": why}`.
fn bad(why: String) -> Reply {
    Reply::json(json!({ "error": why })).with_status(StatusCode::BAD_REQUEST)
}
