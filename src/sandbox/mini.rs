//! The developer.toutiao.com side, as `shared/docs/douyin-platform.md` describes it: the mini-app
//! server access_token (`/api/apps/v2/token`, envelope D), `tt.login` codes exchanged at
//! `/api/apps/v2/jscode2session`, and a sample API taking the mini-app token in its JSON body
//! (`/auth/entity/get_appid_auth`, envelope G). One sandbox serves both hosts: point an
//! `[[upstreams]]` entry at it.

use super::state::{Counters, Logged, LoginCode, State, CODE_TTL};
use super::Reply;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Envelope D.
fn d_reply(code: i64, tips: &str, data: Value) -> Reply {
    Reply::json(json!({"err_no": code, "err_tips": tips, "data": data}))
}

fn object(body: &[u8]) -> Option<Map<String, Value>> {
    serde_json::from_slice::<Value>(body).ok()?.as_object().cloned()
}

fn text<'a>(m: &'a Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Checks appid and secret as the mini-app endpoints do: `Err` is the answer.
fn check_app(state: &State, appid: &str, secret: &str) -> Result<(), Reply> {
    match state.apps.get(appid) {
        None => Err(d_reply(40015, "appid 错误", Value::Null)),
        Some(s) if s != secret => Err(d_reply(40017, "secret 错误", Value::Null)),
        Some(_) => Ok(()),
    }
}

/// `POST /api/apps/v2/token` (JSON): a new mini-app token; the previous one lives 5 more minutes.
pub(super) fn token(state: &State, body: &[u8]) -> Reply {
    Counters::bump(&state.counters.mini_app_token_calls);
    let Some(m) = object(body) else {
        return d_reply(40014, "参数错误: body must be JSON", Value::Null);
    };
    if text(&m, "grant_type") != "client_credential" {
        return d_reply(40020, "grant_type 不是 client_credential", Value::Null);
    }
    let appid = text(&m, "appid");
    if let Err(r) = check_app(state, appid, text(&m, "secret")) {
        return r;
    }
    let mut inner = state.inner.lock().unwrap();
    let now = inner.now();
    let ttl = Duration::from_secs(state.opts.client_token_ttl);
    let tokens = inner.mini_app_tokens.entry(appid.to_string()).or_default();
    let value = super::state::issue_app_token(tokens, "0801121846", now, ttl);
    Counters::bump(&state.counters.mini_app_tokens_issued);
    d_reply(
        0,
        "success",
        json!({"access_token": value, "expires_in": ttl.as_secs()}),
    )
}

/// `POST /sandbox/login_code` `{"appid", "openid"?}`: what `tt.login` gives the mini-app (a test
/// control, not the platform's).
pub(super) fn login_code(state: &State, body: &[u8]) -> Result<Value, String> {
    let m = object(body).ok_or("body must be a JSON object")?;
    let appid = text(&m, "appid");
    if !state.apps.contains_key(appid) {
        return Err(format!("no app {appid:?} in the sandbox"));
    }
    let openid = match text(&m, "openid") {
        "" => super::state::mint("_000"),
        o => o.to_string(),
    };
    let code = super::state::mint("");
    let mut inner = state.inner.lock().unwrap();
    let expires_at = inner.now() + CODE_TTL;
    inner.login_codes.insert(
        code.clone(),
        LoginCode {
            appid: appid.into(),
            openid: openid.clone(),
            expires_at,
        },
    );
    Ok(json!({"code": code, "openid": openid}))
}

/// `POST /api/apps/v2/jscode2session` (JSON): a `tt.login` code for the user's openid and session
/// key. Each code works once.
pub(super) fn jscode2session(state: &State, body: &[u8]) -> Reply {
    Counters::bump(&state.counters.jscode2session_calls);
    let Some(m) = object(body) else {
        return d_reply(40014, "参数错误: body must be JSON", Value::Null);
    };
    let appid = text(&m, "appid");
    if let Err(r) = check_app(state, appid, text(&m, "secret")) {
        return r;
    }
    let code = text(&m, "code");
    if code.is_empty() && text(&m, "anonymous_code").is_empty() {
        return d_reply(40014, "参数错误: code 或 anonymous_code 必填", Value::Null);
    }
    let mut inner = state.inner.lock().unwrap();
    let now = inner.now();
    match inner.login_codes.remove(code) {
        Some(c) if c.appid == appid && c.expires_at > now => d_reply(
            0,
            "success",
            json!({"session_key": super::state::mint(""), "openid": c.openid,
                   "anonymous_openid": "", "unionid": format!("union{}", c.openid)}),
        ),
        _ => d_reply(40018, "code 错误", Value::Null),
    }
}

/// `POST /auth/entity/get_appid_auth` (JSON, the mini-app token in the body's `access_token`),
/// answered in envelope G; `None` for another path.
pub(super) fn api(state: &State, path: &str, headers: &http::HeaderMap, body: &[u8]) -> Option<Reply> {
    if path != "/auth/entity/get_appid_auth" {
        return None;
    }
    Counters::bump(&state.counters.api_calls);
    let m = object(body).unwrap_or_default();
    let token = text(&m, "access_token");
    let mut inner = state.inner.lock().unwrap();
    let now = inner.now();
    let found = inner
        .mini_app_tokens
        .get(text(&m, "appid"))
        .and_then(|ts| ts.iter().find(|t| t.value == token).cloned());
    let verdict = match found {
        Some(t) if t.expires_at > now => Ok(()),
        Some(_) => Err("access_token 已过期"),
        None => Err("access_token 错误"),
    };
    inner.log(Logged {
        method: "POST".into(),
        path: path.into(),
        query: None,
        access_token_headers: Vec::new(),
        access_token_params: Vec::new(),
        access_token_body: (!token.is_empty()).then(|| token.to_string()),
        body_len: body.len(),
        body_sha256: hex::encode(Sha256::digest(body)),
        accepted: verdict.is_ok(),
        header_names: headers.keys().map(|k| k.as_str().to_string()).collect(),
    });
    drop(inner);
    Some(match verdict {
        Ok(()) => Reply::json(json!({
            "data": {"appid": text(&m, "appid"), "subject_type": 1, "auth_status": 2},
            "err": {"err_code": 0, "err_msg": ""}
        })),
        Err(msg) => {
            Counters::bump(&state.counters.api_rejected);
            Reply::json(json!({"data": null, "err": {"err_code": 11016, "err_msg": msg}}))
        }
    })
}
