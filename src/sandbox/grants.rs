//! What the third-party platform remembers of merchants' authorizations, and its rules: codes
//! that work once, refresh tokens that work once, versions that do not mix. The endpoints that
//! reach it are [`super::authorizer`]'s.

use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// A refusal of the token and retrieve endpoints, as (V1 errno, message).
pub(super) type Refusal = (i64, &'static str);

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
pub(super) enum Version {
    /// `open.microapp.bytedance.com/openapi/v1`.
    V1,
    /// `open.douyin.com/api/tpapp/v2`.
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
pub(super) struct Authorizers {
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
    /// `answer_delay_ms`: how long they wait after acting (a refresh token used), before answering.
    pub(super) answer_delay_ms: u64,
    /// `refuse_next`: the next token endpoint calls answered 40045 (retry), nothing used.
    pub(super) refuse_next: u64,
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

    /// Sets the authorizer controls of `POST /sandbox/provider` (`authorizer_expires_in`, `token_delay_ms`).
    pub(super) fn set_controls(&mut self, v: &Value) {
        if let Some(e) = v.get("authorizer_expires_in") {
            self.expires_in = e.as_u64();
        }
        if let Some(d) = v.get("token_delay_ms") {
            self.token_delay_ms = d.as_u64().unwrap_or(0);
        }
        if let Some(d) = v.get("answer_delay_ms") {
            self.answer_delay_ms = d.as_u64().unwrap_or(0);
        }
        if let Some(n) = v.get("refuse_next") {
            self.refuse_next = n.as_u64().unwrap_or(0);
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

    /// A token endpoint's answer to `grant_type` with `code` or `refresh_token` (`data` for V2).
    pub(super) fn grant(
        &mut self,
        grant_type: &str,
        code: &str,
        refresh_token: &str,
        version: Version,
        now: Instant,
    ) -> Result<Value, Refusal> {
        let i = version.index();
        match grant_type {
            "app_to_tp_authorization_code" => {
                self.counts[i].code_exchanges += 1;
                if code.is_empty() {
                    return Err((40002, "缺少参数"));
                }
                // Single use: taken out whether or not it is still good.
                let c = self
                    .codes
                    .remove(code)
                    .filter(|c| c.expires_at > now && self.authorized.contains_key(&c.appid))
                    .ok_or((40020, "第三方小程序应用 authorization_code 不正确或者已过期"))?;
                self.refresh
                    .retain(|_, r| !(r.appid == c.appid && r.version == version));
                let (access, refresh, ttl) = self.issue(&c.appid, version, now);
                Ok(json!({
                    "authorizer_access_token": access, "expires_in": ttl,
                    "authorizer_refresh_token": refresh, "refresh_expires_in": REFRESH_TTL.as_secs(),
                    "authorizer_appid": c.appid,
                    "authorize_permission": self.authorized.get(&c.appid).cloned().unwrap_or(json!([])),
                }))
            }
            "app_to_tp_refresh_token" => {
                self.counts[i].refresh_calls += 1;
                let presented = refresh_token;
                if presented.is_empty() {
                    return Err((40002, "缺少参数"));
                }
                let refused = (40021, "第三方小程序应用 authorizer_refresh_token 不正确或者已过期");
                if self.used_set.contains(presented) {
                    self.counts[i].refresh_reused += 1;
                    return Err(refused);
                }
                let good = self
                    .refresh
                    .get(presented)
                    .is_some_and(|r| r.version == version && r.expires_at > now);
                if !good {
                    return Err(refused);
                }
                let r = self.refresh.remove(presented).ok_or(refused)?;
                self.access.remove(&r.access);
                self.counts[i].refreshes += 1;
                self.mark_used(presented.to_string());
                let (access, refresh, ttl) = self.issue(&r.appid, version, now);
                Ok(json!({
                    "authorizer_access_token": access, "expires_in": ttl,
                    "authorizer_refresh_token": refresh, "refresh_expires_in": REFRESH_TTL.as_secs(),
                }))
            }
            "" => Err((40002, "缺少参数")),
            _ => Err((40040, "无效的 grant_type")),
        }
    }

    /// A fresh code for an authorized app (the retrieve endpoints of both versions).
    pub(super) fn retrieve(&mut self, appid: &str, version: Version, now: Instant) -> Result<Value, Refusal> {
        self.counts[version.index()].retrieves += 1;
        if appid.is_empty() {
            return Err((40004, "找不到相关授权小程序"));
        }
        if !self.authorized.contains_key(appid) {
            return Err((40022, "此小程序未授权给第三方小程序应用"));
        }
        let code = self.new_code(appid, now);
        Ok(json!({"authorization_code": code, "expires_in": CODE_TTL.as_secs()}))
    }

    /// `appid`'s access tokens end now; how many there were.
    pub(super) fn expire(&mut self, appid: &str, now: Instant) -> usize {
        let mut n = 0;
        for a in self.access.values_mut().filter(|a| a.appid == appid) {
            a.expires_at = a.expires_at.min(now);
            n += 1;
        }
        n
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
    pub(super) fn access_app(&self, token: &str, version: Version, now: Instant) -> Option<&str> {
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
