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

use super::reply::Reply;
use super::state::{Inner, State};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// The sandbox provider's client_key on open.douyin.com (its V2 calls carry a client_token of it).
pub const PROVIDER_CLIENT_KEY: &str = "tt_provider_sandbox";
/// Its client_secret.
pub const PROVIDER_CLIENT_SECRET: &str = "sandbox-provider-secret";

/// An authorization code lives this long (the docs' `AuthorizationCodeExpiresIn`).
const CODE_TTL: Duration = Duration::from_secs(3600);
/// Authorizer access tokens live this long unless `authorizer_expires_in` says otherwise.
const ACCESS_TTL_SECS: u64 = 7200;
/// Refresh tokens live a month (the docs' `refresh_expires_in`).
const REFRESH_TTL: Duration = Duration::from_secs(2_592_000);
/// Codes kept per app: enough for any test, bounded against a loop of pushes.
const CODES_PER_APP: usize = 8;
/// Access tokens kept per app and version: a new one beyond this ends the oldest.
const ACCESS_PER_APP: usize = 4;
/// Used refresh tokens remembered, to count a second use.
const USED_KEPT: usize = 1024;
/// What a V2 authorizer access token starts with, as the docs' example.
const V2_PREFIX: &str = "isvact.";

/// The permissions a merchant grants when a push or the control names none.
const DEFAULT_PERMISSIONS: [u64; 4] = [1, 2, 3, 4];

/// The docs' permission table (`authorize_permission` is `[{id, category, description}]`).
const PERMISSIONS: [(u64, &str, &str); 8] = [
    (1, "开发管理权限", "帮助小程序进行基础功能开发及配置开发所需信息"),
    (2, "基本信息设置权限", "帮助小程序管理名称、头像、简介、服务类目等信息"),
    (
        3,
        "运营管理权限",
        "帮助小程序接入平台提供的开放能力,包括自主挂载、达人推广、搜索等",
    ),
    (
        4,
        "数据分析权限",
        "能够获得小程序相关数据并进行数据分析,主要包括小程序用户数据及交易数据",
    ),
    (5, "广告管理权限", "帮助小程序进行广告投放及管理"),
    (
        6,
        "支付服务权限",
        "帮助小程序开通及使用支付产品,并获得支付产生的相关数据",
    ),
    (7, "流量主权限", "帮助开发者管理小程序内的广告变现业务"),
    (
        8,
        "小程序推广计划-任务管理权限",
        "帮助开发者发布小程序推广任务并查看任务相关信息",
    ),
];

/// Which token endpoint issued a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

impl Version {
    fn index(self) -> usize {
        match self {
            Version::V1 => 0,
            Version::V2 => 1,
        }
    }
}

#[derive(Debug)]
struct Code {
    appid: String,
    expires_at: Instant,
}

#[derive(Debug)]
struct Access {
    appid: String,
    version: Version,
    expires_at: Instant,
}

#[derive(Debug)]
struct Refresh {
    appid: String,
    version: Version,
    expires_at: Instant,
    /// The access token issued with it, cleared when it is used.
    access: String,
}

/// Counters of one version.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    code_exchanges: u64,
    refresh_calls: u64,
    refreshes: u64,
    refresh_reused: u64,
    retrieves: u64,
}

impl Counts {
    fn json(&self) -> Value {
        json!({"code_exchanges": self.code_exchanges, "refresh_calls": self.refresh_calls,
            "refreshes": self.refreshes, "refresh_reused": self.refresh_reused, "retrieves": self.retrieves})
    }
}

/// What the platform remembers of merchants' authorizations (part of
/// [`super::provider::ProviderState`]).
#[derive(Debug, Default)]
pub struct Authorizers {
    /// Authorized apps and the permissions they granted (`authorize_permission`).
    authorized: HashMap<String, Value>,
    codes: HashMap<String, Code>,
    access: HashMap<String, Access>,
    refresh: HashMap<String, Refresh>,
    /// Refresh tokens already used, oldest first, to count a second use.
    used: VecDeque<String>,
    used_set: HashSet<String>,
    counts: [Counts; 2],
    /// `authorizer_expires_in`: the lifetime of the access tokens issued next.
    expires_in: Option<u64>,
    /// `token_delay_ms`: how long the token endpoints wait before answering.
    pub(super) token_delay_ms: u64,
}

impl Authorizers {
    /// A new authorization of `appid`: its refresh tokens (both versions) end; a fresh code.
    pub(super) fn authorize(&mut self, appid: &str, permissions: Option<&Value>, now: Instant) -> String {
        self.authorized
            .insert(appid.to_string(), permission_objects(permissions));
        self.refresh.retain(|_, r| r.appid != appid);
        self.new_code(appid, now)
    }

    /// The merchant withdrew: its codes and tokens end.
    pub(super) fn unauthorize(&mut self, appid: &str) {
        self.authorized.remove(appid);
        self.codes.retain(|_, c| c.appid != appid);
        self.access.retain(|_, a| a.appid != appid);
        self.refresh.retain(|_, r| r.appid != appid);
    }

    /// Sets the controls of `POST /sandbox/provider` this file owns.
    pub(super) fn set_controls(&mut self, v: &Value) {
        if let Some(e) = v.get("authorizer_expires_in") {
            self.expires_in = e.as_u64();
        }
        if let Some(d) = v.get("token_delay_ms") {
            self.token_delay_ms = d.as_u64().unwrap_or(0);
        }
    }

    /// The counters for `GET /sandbox/provider`.
    pub(super) fn stats(&self) -> serde_json::Map<String, Value> {
        let [v1, v2] = self.counts;
        let mut m = serde_json::Map::new();
        let total = Counts {
            code_exchanges: v1.code_exchanges + v2.code_exchanges,
            refresh_calls: v1.refresh_calls + v2.refresh_calls,
            refreshes: v1.refreshes + v2.refreshes,
            refresh_reused: v1.refresh_reused + v2.refresh_reused,
            retrieves: v1.retrieves + v2.retrieves,
        };
        if let Value::Object(o) = total.json() {
            m.extend(o);
        }
        m.insert("v1".into(), v1.json());
        m.insert("v2".into(), v2.json());
        let mut apps: Vec<&String> = self.authorized.keys().collect();
        apps.sort();
        m.insert("authorizers".into(), json!(apps));
        m
    }

    fn new_code(&mut self, appid: &str, now: Instant) -> String {
        let mine: Vec<(String, Instant)> = self
            .codes
            .iter()
            .filter(|(_, c)| c.appid == appid)
            .map(|(k, c)| (k.clone(), c.expires_at))
            .collect();
        if mine.len() >= CODES_PER_APP {
            if let Some((oldest, _)) = mine.iter().min_by_key(|(_, e)| *e) {
                self.codes.remove(oldest);
            }
        }
        self.codes.retain(|_, c| c.expires_at > now);
        let code = format!("code.{}", hex::encode(rand::random::<[u8; 16]>()));
        self.codes.insert(
            code.clone(),
            Code {
                appid: appid.to_string(),
                expires_at: now + CODE_TTL,
            },
        );
        code
    }

    /// Issues an access token and a refresh token for `appid`.
    fn issue(&mut self, appid: &str, version: Version, now: Instant) -> (String, String, u64) {
        let ttl = self.expires_in.unwrap_or(ACCESS_TTL_SECS);
        let prefix = if version == Version::V2 { V2_PREFIX } else { "" };
        let access = format!("{prefix}{}", hex::encode(rand::random::<[u8; 20]>()));
        let refresh = hex::encode(rand::random::<[u8; 32]>());
        self.access.retain(|_, a| a.expires_at > now);
        let mut mine: Vec<(String, Instant)> = self
            .access
            .iter()
            .filter(|(_, a)| a.appid == appid && a.version == version)
            .map(|(k, a)| (k.clone(), a.expires_at))
            .collect();
        mine.sort_by_key(|(_, e)| *e);
        for (k, _) in mine.iter().take((mine.len() + 1).saturating_sub(ACCESS_PER_APP)) {
            self.access.remove(k);
        }
        self.access.insert(
            access.clone(),
            Access {
                appid: appid.to_string(),
                version,
                expires_at: now + Duration::from_secs(ttl),
            },
        );
        self.refresh.insert(
            refresh.clone(),
            Refresh {
                appid: appid.to_string(),
                version,
                expires_at: now + REFRESH_TTL,
                access: access.clone(),
            },
        );
        (access, refresh, ttl)
    }

    fn mark_used(&mut self, refresh: String) {
        if self.used.len() == USED_KEPT {
            if let Some(old) = self.used.pop_front() {
                self.used_set.remove(&old);
            }
        }
        self.used_set.insert(refresh.clone());
        self.used.push_back(refresh);
    }

    /// The app whose access token `token` is, if it is in force and of `version`.
    fn access_app(&self, token: &str, version: Version, now: Instant) -> Option<&str> {
        self.access
            .get(token)
            .filter(|a| a.version == version && a.expires_at > now && self.authorized.contains_key(&a.appid))
            .map(|a| a.appid.as_str())
    }
}

/// `permissions` (ids of the docs' table, or names) as `authorize_permission`.
fn permission_objects(permissions: Option<&Value>) -> Value {
    let given: Vec<Value> = match permissions.and_then(Value::as_array) {
        Some(a) => a.clone(),
        None => DEFAULT_PERMISSIONS.iter().map(|&i| json!(i)).collect(),
    };
    let objects: Vec<Value> = given
        .iter()
        .map(|p| match p {
            Value::Number(n) => {
                let id = n.as_u64().unwrap_or(0);
                let (category, description) = PERMISSIONS
                    .iter()
                    .find(|(i, _, _)| *i == id)
                    .map_or(("", ""), |(_, c, d)| (*c, *d));
                json!({"id": id, "category": category, "description": description})
            }
            Value::String(s) => {
                let found = PERMISSIONS.iter().find(|(_, c, _)| c == s);
                json!({"id": found.map_or(0, |f| f.0), "category": s,
                    "description": found.map_or("", |f| f.2)})
            }
            other => other.clone(),
        })
        .collect();
    Value::Array(objects)
}

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
    }
    let q = QueryView::parse(query);
    Some(match (method, path) {
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
                    let mut n = 0;
                    for a in g.provider.auth.access.values_mut().filter(|a| a.appid == app) {
                        a.expires_at = a.expires_at.min(now);
                        n += 1;
                    }
                    Reply::json(json!({"expired": n}))
                }
                None => bad("body must be {\"authorizer_appid\"}"),
            }
        }
        _ => return None,
    })
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

/// A refusal of the token endpoints, as (V1 errno, message); V2 answers `20040000 + errno % 100`
/// under the same message, as the V2 retrieve page numbers its errors.
type Refusal = (i64, &'static str);

fn v1_err((errno, message): Refusal) -> Reply {
    Reply::json(json!({"errno": errno, "message": message}))
}

fn v2_reply(err_no: i64, err_msg: &str, data: Value) -> Reply {
    let log_id = hex::encode(rand::random::<[u8; 8]>());
    Reply::json(json!({"err_no": err_no, "err_msg": err_msg, "log_id": log_id, "data": data}))
}

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

/// The grant both versions answer with (`data` for V2).
fn exchange(inner: &mut Inner, q: &QueryView, version: Version) -> Result<Value, Refusal> {
    let now = inner.now();
    let auth = &mut inner.provider.auth;
    let i = version.index();
    match q.get("grant_type") {
        "app_to_tp_authorization_code" => {
            auth.counts[i].code_exchanges += 1;
            let code = q.get("authorization_code");
            if code.is_empty() {
                return Err((40002, "缺少参数"));
            }
            // Single use: taken out whether or not it is still good.
            let c = auth
                .codes
                .remove(code)
                .filter(|c| c.expires_at > now && auth.authorized.contains_key(&c.appid))
                .ok_or((40020, "第三方小程序应用 authorization_code 不正确或者已过期"))?;
            auth.refresh
                .retain(|_, r| !(r.appid == c.appid && r.version == version));
            let (access, refresh, ttl) = auth.issue(&c.appid, version, now);
            Ok(json!({
                "authorizer_access_token": access, "expires_in": ttl,
                "authorizer_refresh_token": refresh, "refresh_expires_in": REFRESH_TTL.as_secs(),
                "authorizer_appid": c.appid,
                "authorize_permission": auth.authorized.get(&c.appid).cloned().unwrap_or(json!([])),
            }))
        }
        "app_to_tp_refresh_token" => {
            auth.counts[i].refresh_calls += 1;
            let presented = q.get("authorizer_refresh_token");
            if presented.is_empty() {
                return Err((40002, "缺少参数"));
            }
            let refused = (40021, "第三方小程序应用 authorizer_refresh_token 不正确或者已过期");
            if auth.used_set.contains(presented) {
                auth.counts[i].refresh_reused += 1;
                return Err(refused);
            }
            let good = auth
                .refresh
                .get(presented)
                .is_some_and(|r| r.version == version && r.expires_at > now);
            if !good {
                return Err(refused);
            }
            let r = auth.refresh.remove(presented).ok_or(refused)?;
            auth.access.remove(&r.access);
            auth.counts[i].refreshes += 1;
            auth.mark_used(presented.to_string());
            let (access, refresh, ttl) = auth.issue(&r.appid, version, now);
            Ok(json!({
                "authorizer_access_token": access, "expires_in": ttl,
                "authorizer_refresh_token": refresh, "refresh_expires_in": REFRESH_TTL.as_secs(),
            }))
        }
        "" => Err((40002, "缺少参数")),
        _ => Err((40040, "无效的 grant_type")),
    }
}

/// `GET /openapi/v1/oauth/token`.
fn v1_token(state: &State, q: &QueryView) -> Reply {
    let mut g = state.inner.lock().unwrap();
    if let Err(r) = v1_caller(&g, q) {
        return v1_err(r);
    }
    match exchange(&mut g, q, Version::V1) {
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
    match exchange(&mut g, q, Version::V2) {
        Ok(grant) => v2_reply(0, "", grant),
        Err(r) => v2_err(r),
    }
}

/// A fresh code for an authorized app (both versions).
fn retrieve(inner: &mut Inner, appid: &str, version: Version) -> Result<Value, Refusal> {
    let now = inner.now();
    let auth = &mut inner.provider.auth;
    auth.counts[version.index()].retrieves += 1;
    if appid.is_empty() {
        return Err((40004, "找不到相关授权小程序"));
    }
    if !auth.authorized.contains_key(appid) {
        return Err((40022, "此小程序未授权给第三方小程序应用"));
    }
    let code = auth.new_code(appid, now);
    Ok(json!({"authorization_code": code, "expires_in": CODE_TTL.as_secs()}))
}

/// `POST /openapi/v1/auth/retrieve`.
fn v1_retrieve(state: &State, q: &QueryView) -> Reply {
    let mut g = state.inner.lock().unwrap();
    if let Err(r) = v1_caller(&g, q) {
        return v1_err(r);
    }
    match retrieve(&mut g, q.get("authorization_appid"), Version::V1) {
        Ok(v) => Reply::json(v),
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
    match retrieve(&mut g, v["authorization_appid"].as_str().unwrap_or(""), Version::V2) {
        Ok(data) => v2_reply(0, "", data),
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
    let g = state.inner.lock().unwrap();
    let now = g.now();
    match g
        .provider
        .auth
        .access_app(token.as_deref().unwrap_or(""), Version::V2, now)
    {
        Some(app) => v2_reply(0, "", json!({"authorizer_appid": app, "version": "v2"})),
        None => v2_reply(11016, TOKEN_REFUSED, Value::Null),
    }
}
