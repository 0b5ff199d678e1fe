//! The emulated token endpoints and authorization page, as
//! `shared/docs/douyin-platform.md` describes them.

use super::state::{BizToken, Code, Counters, RefreshToken, State, UserToken, BUDGET_WINDOW, CODE_TTL, OVERLAP};
use super::{form, Reply};
use serde_json::{json, Value};
use std::time::Duration;

/// Envelope A success.
fn a_ok(mut data: Value) -> Reply {
    data["error_code"] = 0.into();
    data["description"] = "".into();
    Reply::json(json!({"data": data, "message": "success"}))
}

/// Envelope A error.
pub(super) fn a_err(code: i64, description: &str) -> Reply {
    Reply::json(json!({"data": {"error_code": code, "description": description}, "message": "error"}))
}

/// Envelope E (biz).
fn e_reply(code: i64, message: &str, data: Value) -> Reply {
    Reply::json(json!({"error_code": code, "message": message, "data": data}))
}

fn json_body(body: &[u8]) -> Option<serde_json::Map<String, Value>> {
    serde_json::from_slice::<Value>(body).ok()?.as_object().cloned()
}

fn field<'a>(m: &'a serde_json::Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Checks client_key and secret: `Err` is the platform's answer.
fn check_app(state: &State, key: &str, secret: Option<&str>) -> Result<(), (i64, &'static str)> {
    match state.apps.get(key) {
        None if key.is_empty() => Err((10002, "参数错误: client_key")),
        None => Err((10003, "client_key不存在")),
        Some(s) if secret.is_some_and(|x| x != s) => Err((10013, "client_key或client_secret错误")),
        Some(_) => Ok(()),
    }
}

/// `POST /oauth/client_token/` and `/oauth/stable_client_token/` (JSON).
pub(super) fn client_token(state: &State, body: &[u8], stable: bool) -> Reply {
    Counters::bump(&state.counters.client_token_calls);
    if stable {
        Counters::bump(&state.counters.stable_client_token_calls);
    }
    let Some(m) = json_body(body) else {
        return a_err(10002, "参数错误: body must be JSON");
    };
    let (key, secret) = (field(&m, "client_key"), field(&m, "client_secret"));
    if field(&m, "grant_type") != "client_credential" {
        return a_err(10002, "参数错误: grant_type");
    }
    if let Err((c, d)) = check_app(state, key, Some(secret)) {
        return a_err(c, d);
    }
    let mut inner = state.inner.lock().unwrap();
    let now = inner.now();
    let calls = inner.client_calls.entry(key.to_string()).or_default();
    while calls.front().is_some_and(|t| now.duration_since(*t) > BUDGET_WINDOW) {
        calls.pop_front();
    }
    if calls.len() as u64 >= state.opts.client_token_budget {
        return Reply::json(
            json!({"data": {"error_code": 10020, "description": "请求太频繁"}, "message": "error",
            "extra": {"logid": "sandbox", "now": 0}}),
        );
    }
    calls.push_back(now);
    let ttl = Duration::from_secs(state.opts.client_token_ttl);
    let tokens = inner.client_tokens.entry(key.to_string()).or_default();
    if stable {
        if let Some(t) = tokens.last().filter(|t| t.expires_at > now + OVERLAP) {
            let left = t.expires_at.duration_since(now).as_secs();
            return a_ok(json!({"access_token": t.value, "expires_in": left}));
        }
    }
    let value = super::state::issue_app_token(tokens, "clt.", now, ttl);
    Counters::bump(&state.counters.client_tokens_issued);
    a_ok(json!({"access_token": value, "expires_in": ttl.as_secs()}))
}

fn user_answer(
    state: &State,
    access: &str,
    refresh: &str,
    r: &RefreshToken,
    now: std::time::Instant,
    access_left: Duration,
) -> Reply {
    let _ = state;
    a_ok(json!({
        "access_token": access, "expires_in": access_left.as_secs(), "open_id": r.open_id,
        "refresh_token": refresh, "refresh_expires_in": r.expires_at.saturating_duration_since(now).as_secs(),
        "scope": r.scope, "captcha": "", "desc_url": "", "log_id": "sandbox",
    }))
}

/// `GET /platform/oauth/connect/`: the user consents at once; 302 back with a code.
pub(super) fn connect(state: &State, query: &str) -> Reply {
    let q = form(query.as_bytes());
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    if let Err((c, d)) = check_app(state, get("client_key"), None) {
        return a_err(c, d);
    }
    if get("response_type") != "code" || get("redirect_uri").is_empty() {
        return a_err(10002, "参数错误: response_type=code and redirect_uri are required");
    }
    let open_id = match (get("open_id"), &state.opts.consent_open_id) {
        ("", Some(o)) => o.clone(),
        ("", None) => super::state::mint("_000"),
        (o, _) => o.to_string(),
    };
    // `optionalScope`: `name,1,other,0`: the sandbox's user keeps the ticked ones (1) and
    // leaves the others, as a user who clicks "agree" without changing anything.
    let optional: Vec<&str> = match get("optionalScope") {
        "" => Vec::new(),
        o => o.split(',').collect(),
    };
    let well_formed = optional.len() % 2 == 0
        && optional
            .chunks(2)
            .all(|p| !p[0].is_empty() && matches!(p[1], "0" | "1"));
    if !well_formed {
        return a_err(10002, "参数错误: optionalScope");
    }
    let mut scope = get("scope").to_string();
    for pair in optional.chunks(2).filter(|p| p.len() == 2 && p[1] == "1") {
        if !scope.split(',').any(|s| s == pair[0]) {
            if !scope.is_empty() {
                scope.push(',');
            }
            scope.push_str(pair[0]);
        }
    }
    let code = super::state::mint("");
    let mut inner = state.inner.lock().unwrap();
    let expires_at = inner.now() + CODE_TTL;
    inner.codes.insert(
        code.clone(),
        Code {
            client_key: get("client_key").into(),
            open_id,
            scope,
            expires_at,
        },
    );
    let mut target = get("redirect_uri").to_string();
    target.push(if target.contains('?') { '&' } else { '?' });
    target.push_str(
        &form_urlencoded::Serializer::new(String::new())
            .append_pair("code", &code)
            .append_pair("state", get("state"))
            .finish(),
    );
    Reply::redirect(&target)
}

/// `POST /oauth/access_token/` (form): code exchange.
pub(super) fn access_token(state: &State, body: &[u8]) -> Reply {
    Counters::bump(&state.counters.access_token_calls);
    let f = form(body);
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    if get("grant_type") != "authorization_code" {
        return a_err(10002, "参数错误: grant_type");
    }
    if let Err((c, d)) = check_app(state, get("client_key"), Some(get("client_secret"))) {
        return a_err(c, d);
    }
    let mut inner = state.inner.lock().unwrap();
    let now = inner.now();
    let code = match inner.codes.remove(get("code")) {
        Some(c) if c.expires_at > now && c.client_key == get("client_key") => c,
        _ => return a_err(10007, "授权码过期"),
    };
    let access = super::state::mint("act.");
    let refresh = super::state::mint("rft.");
    let access_ttl = Duration::from_secs(state.opts.access_token_ttl);
    let r = RefreshToken {
        client_key: code.client_key.clone(),
        open_id: code.open_id.clone(),
        scope: code.scope.clone(),
        expires_at: now + Duration::from_secs(state.opts.refresh_token_ttl),
        renewals: 0,
        access_token: access.clone(),
    };
    inner.users.insert(
        access.clone(),
        UserToken {
            client_key: code.client_key,
            open_id: code.open_id,
            scope: code.scope,
            expires_at: now + access_ttl,
        },
    );
    inner.refresh.insert(refresh.clone(), r.clone());
    user_answer(state, &access, &refresh, &r, now, access_ttl)
}

/// `POST /oauth/refresh_token/` (form): a new access token, or the same one extended.
pub(super) fn refresh_token(state: &State, body: &[u8]) -> Reply {
    Counters::bump(&state.counters.refresh_token_calls);
    let f = form(body);
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    if get("grant_type") != "refresh_token" {
        return a_err(10002, "参数错误: grant_type");
    }
    if let Err((c, d)) = check_app(state, get("client_key"), None) {
        return a_err(c, d);
    }
    let mut inner = state.inner.lock().unwrap();
    let now = inner.now();
    let rt = get("refresh_token").to_string();
    let mut r = match inner.refresh.get(&rt) {
        Some(r) if r.expires_at > now && r.client_key == get("client_key") => r.clone(),
        _ => return a_err(10010, "refresh_token过期"),
    };
    let access_ttl = Duration::from_secs(state.opts.access_token_ttl);
    let live = inner
        .users
        .get(&r.access_token)
        .filter(|u| u.expires_at > now)
        .is_some();
    if !live {
        inner.users.remove(&r.access_token);
        r.access_token = super::state::mint("act.");
    }
    inner.users.insert(
        r.access_token.clone(),
        UserToken {
            client_key: r.client_key.clone(),
            open_id: r.open_id.clone(),
            scope: r.scope.clone(),
            expires_at: now + access_ttl,
        },
    );
    if state.opts.refresh_extends {
        r.expires_at = now + Duration::from_secs(state.opts.refresh_token_ttl);
    }
    let rt = if state.opts.rotate_refresh_token {
        inner.refresh.remove(&rt);
        super::state::mint("rft.")
    } else {
        rt
    };
    inner.refresh.insert(rt.clone(), r.clone());
    user_answer(state, &r.access_token, &rt, &r, now, access_ttl)
}

/// `POST /oauth/renew_refresh_token/` (form): the old refresh token dies at once.
pub(super) fn renew_refresh_token(state: &State, body: &[u8]) -> Reply {
    Counters::bump(&state.counters.renew_refresh_token_calls);
    let f = form(body);
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    if let Err((c, d)) = check_app(state, get("client_key"), None) {
        return a_err(c, d);
    }
    let mut inner = state.inner.lock().unwrap();
    let now = inner.now();
    let old = get("refresh_token");
    let mut r = match inner.refresh.get(old) {
        Some(r) if r.expires_at > now && r.client_key == get("client_key") => r.clone(),
        _ => return a_err(10010, "refresh_token过期"),
    };
    if r.renewals >= state.opts.max_renewals {
        return a_err(10020, "刷新次数超过上限");
    }
    inner.refresh.remove(old);
    r.renewals += 1;
    let ttl = Duration::from_secs(state.opts.refresh_token_ttl);
    r.expires_at = now + ttl;
    let new = super::state::mint("rft.");
    inner.refresh.insert(new.clone(), r);
    a_ok(json!({"refresh_token": new, "expires_in": ttl.as_secs()}))
}

fn biz_answer(state: &State, inner: &mut super::state::Inner, client_key: &str, open_id: &str, scope: &str) -> Reply {
    let now = inner.now();
    let (token, refresh) = (super::state::mint("bus_act."), super::state::mint("bus_rft."));
    let ttl = Duration::from_secs(state.opts.biz_token_ttl);
    let refresh_ttl = Duration::from_secs(state.opts.biz_refresh_token_ttl);
    let base = BizToken {
        client_key: client_key.into(),
        open_id: open_id.into(),
        scope: scope.into(),
        expires_at: now + ttl,
    };
    inner.biz.insert(token.clone(), base.clone());
    inner.biz_refresh.insert(
        refresh.clone(),
        BizToken {
            expires_at: now + refresh_ttl,
            ..base
        },
    );
    e_reply(
        0,
        "",
        json!({"biz_token": token, "biz_expires_in": ttl.as_secs(),
        "biz_refresh_token": refresh, "biz_refresh_expires_in": refresh_ttl.as_secs()}),
    )
}

/// `POST /oauth/business_token/` (JSON).
pub(super) fn business_token(state: &State, body: &[u8]) -> Reply {
    Counters::bump(&state.counters.business_token_calls);
    let Some(m) = json_body(body) else {
        return e_reply(10002, "参数错误: body must be JSON", json!({}));
    };
    if let Err((c, d)) = check_app(state, field(&m, "client_key"), Some(field(&m, "client_secret"))) {
        return e_reply(c, d, json!({}));
    }
    if field(&m, "open_id").is_empty() || field(&m, "scope").is_empty() {
        return e_reply(10005, "缺少参数: open_id, scope", json!({}));
    }
    let mut inner = state.inner.lock().unwrap();
    biz_answer(
        state,
        &mut inner,
        field(&m, "client_key"),
        field(&m, "open_id"),
        field(&m, "scope"),
    )
}

/// `POST /oauth/refresh_biz_token/` (JSON).
pub(super) fn refresh_biz_token(state: &State, body: &[u8]) -> Reply {
    Counters::bump(&state.counters.refresh_biz_token_calls);
    let Some(m) = json_body(body) else {
        return e_reply(10002, "参数错误: body must be JSON", json!({}));
    };
    if let Err((c, d)) = check_app(state, field(&m, "client_key"), Some(field(&m, "client_secret"))) {
        return e_reply(c, d, json!({}));
    }
    let mut inner = state.inner.lock().unwrap();
    let now = inner.now();
    let b = match inner.biz_refresh.remove(field(&m, "refresh_token")) {
        Some(b) if b.expires_at > now && b.client_key == field(&m, "client_key") => b,
        _ => return e_reply(10010, "refresh_token过期", json!({})),
    };
    biz_answer(state, &mut inner, &b.client_key, &b.open_id, &b.scope)
}
