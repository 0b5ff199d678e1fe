//! The third-party platform's authorizer tokens: a merchant's mini-app authorizes the sandbox
//! provider ([`super::provider`] pushes the event), the provider exchanges the code for an
//! authorizer_access_token and a **single-use** refresh token, in V1 or V2 (not interchangeable),
//! and calls the merchant's APIs with it.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /openapi/v1/oauth/token` `?component_appid=&component_access_token=&grant_type=app_to_tp_authorization_code&authorization_code=` (or `grant_type=app_to_tp_refresh_token&authorizer_refresh_token=`) | V1: `{"authorizer_access_token","expires_in","authorizer_refresh_token","refresh_expires_in","authorizer_appid","authorize_permission"}` (a refresh answers the first four); else `{"errno","message"}`: 40002 missing, 40003 wrong component_appid, 40010 component token not in force, 40040 grant_type, 40020 code unknown, used or expired, 40021 refresh token wrong, used or ended |
//! | `GET /api/tpapp/v2/auth/get_auth_token/` with `access-token` (a client_token of [`PROVIDER_CLIENT_KEY`]) | V2: the same in `{"err_no","err_msg","log_id","data"}`, access tokens `isvact.…`; 28001003/28001008 for the client_token, 2004xxxx for the rest |
//! | `POST /openapi/v1/auth/retrieve?component_appid=&component_access_token=&authorization_appid=` | V1: a fresh code for an authorized app, `{"authorization_code","expires_in":3600}`; 40022 not authorized, 40004 no appid |
//! | `POST /api/tpapp/v2/auth/retrieve_auth_code/` `{"authorization_appid"}` with `access-token` | V2: the same in the envelope; 20040022, 20040004 |
//! | `GET /openapi/v1/microapp/app/info?component_appid=&authorizer_access_token=` | a V1 API: `{"errno":0,"message":"success","data":{"app_id",…}}`, or errno 11016 |
//! | `GET /api/tpapp/sandbox/authorizer_info` with `access-token` | a V2 API: `{"err_no":0,"data":{"authorizer_appid","version":"v2"}}`, or err_no 11016 |
//! | `POST /sandbox/provider/authorize` `{"authorizer_appid","permissions"?}` | authorizes without pushing: `{"code"}` |
//! | `POST /sandbox/provider/authorizer/expire` `{"authorizer_appid"}` | that app's access tokens end now (its refresh token still works) |
//!
//! A refresh clears the refresh token used and the access token it came with; a new authorization
//! (`AUTHORIZED`, `UPDATE_AUTHORIZED`, the authorize control) ends the app's refresh tokens of
//! both versions; `UNAUTHORIZED` ends all its codes and tokens. Exchanging a code ends the
//! previous refresh token of that version (the sandbox keeps one per app and version).

use super::grants::{Refusal, Version};
use super::reply::Reply;
use super::state::{Inner, State};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// The sandbox provider's client_key on open.douyin.com (its V2 calls carry a client_token of it).
pub const PROVIDER_CLIENT_KEY: &str = "tt_provider_sandbox";
/// Its client_secret.
pub const PROVIDER_CLIENT_SECRET: &str = "sandbox-provider-secret";

/// The requests this file answers; `None` for others.
pub(super) async fn handle(
    state: &State,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<Reply> {
    let token_endpoint = matches!(
        path,
        "/openapi/v1/oauth/token"
            | "/openapi/v1/oauth/token/"
            | "/api/tpapp/v2/auth/get_auth_token"
            | "/api/tpapp/v2/auth/get_auth_token/"
    );
    if token_endpoint {
        let delay = state.inner.lock().unwrap().provider.auth.token_delay_ms;
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        // `refuse_next`: "生成 token 失败,请重试" (40045) before anything is used.
        let mut g = state.inner.lock().unwrap();
        if g.provider.auth.refuse_next > 0 {
            g.provider.auth.refuse_next -= 1;
            let msg = "生成 token 失败,请重试";
            return Some(if path.starts_with("/api/tpapp/v2/") {
                Reply::json(json!({"err_no": 20_040_045, "err_msg": msg, "log_id": "sandbox", "data": null}))
            } else {
                Reply::json(json!({"errno": 40045, "message": msg}))
            });
        }
    }
    let q = QueryView::parse(query);
    let reply = match (method, path) {
        (&Method::GET, "/openapi/v1/oauth/token" | "/openapi/v1/oauth/token/") => v1_token(state, &q),
        (&Method::GET, "/api/tpapp/v2/auth/get_auth_token" | "/api/tpapp/v2/auth/get_auth_token/") => {
            v2_token(state, &q, headers)
        }
        (&Method::GET | &Method::POST, "/openapi/v1/auth/retrieve" | "/openapi/v1/auth/retrieve/") => {
            v1_retrieve(state, &q)
        }
        (&Method::POST, "/api/tpapp/v2/auth/retrieve_auth_code" | "/api/tpapp/v2/auth/retrieve_auth_code/") => {
            v2_retrieve(state, headers, body)
        }
        (_, "/openapi/v1/microapp/app/info") => v1_app_info(state, &q, headers),
        (_, "/api/tpapp/sandbox/authorizer_info") => v2_authorizer_info(state, &q, headers),
        (&Method::POST, "/sandbox/provider/authorize") => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            match v["authorizer_appid"].as_str().filter(|a| !a.is_empty()) {
                Some(app) => {
                    let mut g = state.inner.lock().unwrap();
                    let now = g.now();
                    let code = g.provider.auth.authorize(app, v.get("permissions"), now);
                    Reply::json(json!({"code": code, "authorizer_appid": app}))
                }
                None => bad("body must be {\"authorizer_appid\", \"permissions\"?}"),
            }
        }
        (&Method::POST, "/sandbox/provider/authorizer/expire") => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            match v["authorizer_appid"].as_str() {
                Some(app) => {
                    let mut g = state.inner.lock().unwrap();
                    let now = g.now();
                    Reply::json(json!({"expired": g.provider.auth.expire(app, now)}))
                }
                None => bad("body must be {\"authorizer_appid\"}"),
            }
        }
        _ => return None,
    };
    if token_endpoint {
        // After the answer is decided (a refresh token used): an answer that comes too late for
        // the caller, whose token is spent all the same.
        let delay = state.inner.lock().unwrap().provider.auth.answer_delay_ms;
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }
    Some(reply)
}

/// 400 with `{"error": why}`.
fn bad(why: &str) -> Reply {
    Reply::json(json!({ "error": why })).with_status(StatusCode::BAD_REQUEST)
}

/// Query fields: the first value of each, and how many values each name had.
struct QueryView {
    first: HashMap<String, String>,
    counts: HashMap<String, usize>,
}

impl QueryView {
    fn parse(query: &str) -> QueryView {
        let mut first = HashMap::new();
        let mut counts = HashMap::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            *counts.entry(k.to_string()).or_insert(0) += 1;
            first.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
        QueryView { first, counts }
    }
    fn get(&self, k: &str) -> &str {
        self.first.get(k).map_or("", String::as_str)
    }
    fn count(&self, k: &str) -> usize {
        self.counts.get(k).copied().unwrap_or(0)
    }
}

fn v1_err((errno, message): Refusal) -> Reply {
    Reply::json(json!({"errno": errno, "message": message}))
}

fn v2_reply(err_no: i64, err_msg: &str, data: Value) -> Reply {
    let log_id = hex::encode(rand::random::<[u8; 8]>());
    Reply::json(json!({"err_no": err_no, "err_msg": err_msg, "log_id": log_id, "data": data}))
}

/// V2 answers a refusal `20040000 + errno % 100` under the same message, as the V2 retrieve page
/// numbers its errors.
fn v2_err((errno, message): Refusal) -> Reply {
    v2_reply(20_040_000 + errno % 100, message, Value::Null)
}

/// Checks the V1 caller: the sandbox provider's appid and a component token in force.
fn v1_caller(inner: &Inner, q: &QueryView) -> Result<(), Refusal> {
    if q.get("component_appid").is_empty() || q.get("component_access_token").is_empty() {
        return Err((40002, "缺少参数"));
    }
    if q.get("component_appid") != super::provider::COMPONENT_APPID {
        return Err((40003, "找不到相关第三方小程序应用"));
    }
    if !inner.provider.valid_token(q.get("component_access_token")) {
        return Err((40010, "第三方小程序应用 component_access_token 不正确"));
    }
    Ok(())
}

/// Checks the V2 caller's `access-token`: a client_token of [`PROVIDER_CLIENT_KEY`] in force;
/// `Err` is the answer (envelope C's codes for a client_token).
fn v2_caller(inner: &Inner, headers: &HeaderMap) -> Result<(), Reply> {
    let values: Vec<&str> = headers
        .get_all("access-token")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.len() > 1 {
        return Err(v2_reply(
            28_001_007,
            "参数不合法: more than one access-token",
            Value::Null,
        ));
    }
    let token = values.first().copied().unwrap_or("");
    let now = inner.now();
    match inner
        .client_tokens
        .get(PROVIDER_CLIENT_KEY)
        .and_then(|ts| ts.iter().find(|t| !token.is_empty() && t.value == token))
    {
        Some(t) if t.expires_at > now => Ok(()),
        Some(_) => Err(v2_reply(28_001_008, "access_token过期，请刷新或重新授权", Value::Null)),
        None => Err(v2_reply(28_001_003, "access_token无效", Value::Null)),
    }
}

/// The token endpoints' grant, from the query.
fn grant(inner: &mut Inner, q: &QueryView, version: Version) -> Result<Value, Refusal> {
    let now = inner.now();
    inner.provider.auth.grant(
        q.get("grant_type"),
        q.get("authorization_code"),
        q.get("authorizer_refresh_token"),
        version,
        now,
    )
}

/// `GET /openapi/v1/oauth/token`.
fn v1_token(state: &State, q: &QueryView) -> Reply {
    let mut g = state.inner.lock().unwrap();
    if let Err(r) = v1_caller(&g, q) {
        return v1_err(r);
    }
    match grant(&mut g, q, Version::V1) {
        Ok(grant) => Reply::json(grant),
        Err(r) => v1_err(r),
    }
}

/// `GET /api/tpapp/v2/auth/get_auth_token/`.
fn v2_token(state: &State, q: &QueryView, headers: &HeaderMap) -> Reply {
    let mut g = state.inner.lock().unwrap();
    if let Err(reply) = v2_caller(&g, headers) {
        return reply;
    }
    match grant(&mut g, q, Version::V2) {
        Ok(grant) => v2_reply(0, "", grant),
        Err(r) => v2_err(r),
    }
}

/// `POST /openapi/v1/auth/retrieve`.
fn v1_retrieve(state: &State, q: &QueryView) -> Reply {
    let mut g = state.inner.lock().unwrap();
    if let Err(r) = v1_caller(&g, q) {
        return v1_err(r);
    }
    let now = g.now();
    let appid = q.get("authorization_appid").to_string();
    match g.provider.auth.retrieve(&appid, Version::V1, now) {
        Ok(v) => {
            super::provider::push_retrieved(&mut g, &appid, v["authorization_code"].as_str().unwrap_or(""));
            Reply::json(v)
        }
        Err(r) => v1_err(r),
    }
}

/// `POST /api/tpapp/v2/auth/retrieve_auth_code/`.
fn v2_retrieve(state: &State, headers: &HeaderMap, body: &[u8]) -> Reply {
    let mut g = state.inner.lock().unwrap();
    if let Err(reply) = v2_caller(&g, headers) {
        return reply;
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return v2_reply(20_040_001, "参数错误", Value::Null);
    };
    let now = g.now();
    let appid = v["authorization_appid"].as_str().unwrap_or("");
    match g.provider.auth.retrieve(appid, Version::V2, now) {
        Ok(data) => {
            super::provider::push_retrieved(&mut g, appid, data["authorization_code"].as_str().unwrap_or(""));
            v2_reply(0, "", data)
        }
        Err(r) => v2_err(r),
    }
}

const TOKEN_REFUSED: &str = "access_token不正确或者已过期";

/// Tokens a request carries in the query under `names` and in `access-token`.
fn tokens_in(q: &QueryView, names: &[&str], headers: &HeaderMap) -> (usize, Option<String>) {
    let in_query: usize = names.iter().map(|n| q.count(n)).sum();
    let in_header = headers.get_all("access-token").iter().count();
    let token = names
        .iter()
        .map(|n| q.get(n))
        .find(|t| !t.is_empty())
        .map(String::from)
        .or_else(|| {
            headers
                .get("access-token")
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        });
    (in_query + in_header, token)
}

/// `GET /openapi/v1/microapp/app/info` (获取小程序基本信息): takes a V1 authorizer token.
fn v1_app_info(state: &State, q: &QueryView, headers: &HeaderMap) -> Reply {
    let (n, token) = tokens_in(q, &["authorizer_access_token"], headers);
    if n > 1 {
        return Reply::json(json!({"errno": 40001, "message": "参数错误: more than one token"}))
            .with_status(StatusCode::BAD_REQUEST);
    }
    let g = state.inner.lock().unwrap();
    let now = g.now();
    match g
        .provider
        .auth
        .access_app(token.as_deref().unwrap_or(""), Version::V1, now)
    {
        Some(app) => Reply::json(json!({"errno": 0, "message": "success", "data": {
            "app_id": app, "app_name": format!("sandbox {app}"), "app_intro": "a merchant's mini-app in the sandbox",
            "app_category": "sandbox", "app_icon": "", "app_state": 1}})),
        None => Reply::json(json!({"errno": 11016, "message": TOKEN_REFUSED})),
    }
}

/// `/api/tpapp/sandbox/authorizer_info`: takes a V2 authorizer token in `access-token`.
fn v2_authorizer_info(state: &State, q: &QueryView, headers: &HeaderMap) -> Reply {
    let (n, token) = tokens_in(q, &["access_token", "authorizer_access_token"], headers);
    if n > 1 {
        return v2_reply(40001, "more than one token", Value::Null).with_status(StatusCode::BAD_REQUEST);
    }
    let mut g = state.inner.lock().unwrap();
    let now = g.now();
    let app = g
        .provider
        .auth
        .access_app(token.as_deref().unwrap_or(""), Version::V2, now)
        .map(|a| a.to_string());
    // In the request log (`GET /sandbox/requests`), so a test sees which headers arrived.
    g.log(super::state::Logged {
        method: "GET".into(),
        path: "/api/tpapp/sandbox/authorizer_info".into(),
        query: None,
        access_token_headers: Vec::new(),
        access_token_params: Vec::new(),
        access_token_body: None,
        body_len: 0,
        body_sha256: String::new(),
        accepted: app.is_some(),
        header_names: headers.keys().map(|k| k.as_str().to_string()).collect(),
    });
    match app {
        Some(app) => v2_reply(0, "", json!({"authorizer_appid": app, "version": "v2"})),
        None => v2_reply(11016, TOKEN_REFUSED, Value::Null),
    }
}
