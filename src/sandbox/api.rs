//! Sample APIs that check the token the way the platform does and answer in
//! the envelope of their family: B (classic), C (newer `/api/*`), A (oauth).

use super::state::{Counters, Inner, Logged, State};
use super::{form, Reply};
use http::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// What is wrong with a presented token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reject {
    Missing,
    Invalid,
    Expired,
    Mismatch,
}

#[derive(Clone, Copy)]
enum Class {
    Client,
    User,
}

fn check(inner: &Inner, class: Class, token: Option<&str>, open_id: Option<&str>) -> Result<(), Reject> {
    let token = token.filter(|t| !t.is_empty()).ok_or(Reject::Missing)?;
    let now = inner.now();
    match class {
        Class::Client => {
            let t = inner
                .client_tokens
                .values()
                .flatten()
                .find(|t| t.value == token)
                .ok_or(Reject::Invalid)?;
            if t.expires_at <= now {
                return Err(Reject::Expired);
            }
        }
        Class::User => {
            // Biz tokens are accepted where user tokens are: enterprise APIs share the header.
            if let Some(b) = inner.biz.get(token) {
                if b.expires_at <= now {
                    return Err(Reject::Expired);
                }
                if open_id.is_some_and(|o| o != b.open_id) {
                    return Err(Reject::Mismatch);
                }
                return Ok(());
            }
            let u = inner.users.get(token).ok_or(Reject::Invalid)?;
            if u.expires_at <= now {
                return Err(Reject::Expired);
            }
            if open_id.is_some_and(|o| o != u.open_id) {
                return Err(Reject::Mismatch);
            }
        }
    }
    Ok(())
}

fn b_ok(mut data: Value) -> Reply {
    data["error_code"] = 0.into();
    data["description"] = "".into();
    Reply::json(
        json!({"data": data, "extra": {"error_code": 0, "description": "", "sub_error_code": 0,
        "sub_description": "", "logid": "sandbox", "now": 0}}),
    )
}

fn b_err(code: i64, d: &str) -> Reply {
    Reply::json(
        json!({"data": {"error_code": code, "description": d}, "extra": {"error_code": code, "description": d,
        "sub_error_code": 0, "sub_description": "", "logid": "sandbox", "now": 0}}),
    )
}

fn c_reply(code: i64, msg: &str, data: Value) -> Reply {
    Reply::json(json!({"err_no": code, "err_msg": msg, "log_id": "sandbox", "data": data}))
}

/// A request as the sample APIs see it.
pub(super) struct ApiRequest<'a> {
    pub(super) method: &'a http::Method,
    pub(super) path: &'a str,
    pub(super) query: Option<&'a str>,
    pub(super) headers: &'a http::HeaderMap,
    pub(super) body: &'a [u8],
}

/// The credentials a request presents, everywhere some sample API looks for them.
struct Presented {
    /// `access-token` headers.
    headers: Vec<String>,
    /// `access_token` query parameters.
    params: Vec<String>,
    /// The query's fields.
    query: HashMap<String, String>,
    /// The body's form fields.
    form: HashMap<String, String>,
}

impl Presented {
    fn of(r: &ApiRequest<'_>) -> Presented {
        Presented {
            headers: r
                .headers
                .get_all("access-token")
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect(),
            params: form_urlencoded::parse(r.query.unwrap_or("").as_bytes())
                .filter(|(k, _)| k == "access_token")
                .map(|(_, v)| v.into_owned())
                .collect(),
            query: form(r.query.unwrap_or("").as_bytes()),
            form: form(r.body),
        }
    }

    /// The class of token the API at `path` wants, and the token and open_id presented where it
    /// looks for them; `None` when the path is no sample API.
    fn for_api(&self, method: &Method, path: &str) -> Option<(Class, Option<&str>, Option<&str>)> {
        let header = self.headers.first().map(String::as_str);
        let param = self.params.first().map(String::as_str);
        let open_id = self.query.get("open_id").map(String::as_str);
        Some(match (method, path) {
            (&Method::GET, "/js/getticket/") => (Class::Client, header.or(param), None),
            (&Method::POST, "/api/douyin/v1/role/check/") => (Class::Client, header, None),
            (&Method::GET, "/api/douyin/v1/video/video_list/") => (Class::User, header, open_id),
            (&Method::GET, "/video/list/") => (Class::User, param, open_id),
            // An enterprise API: biz token in the header, the enterprise's open_id in the query.
            (&Method::GET, "/api/douyin/v1/enterprise/item/list/") => (Class::User, header, open_id),
            (&Method::POST, "/oauth/userinfo/") => (
                Class::User,
                self.form.get("access_token").map(String::as_str),
                self.form.get("open_id").map(String::as_str),
            ),
            _ => return None,
        })
    }
}

/// Answers a sample API, or `None` when the path is not one.
pub(super) fn answer(state: &State, r: &ApiRequest<'_>) -> Option<Reply> {
    let presented = Presented::of(r);
    let (class, token, open_id) = presented.for_api(r.method, r.path)?;
    Counters::bump(&state.counters.api_calls);
    let mut inner = state.inner.lock().unwrap();
    let verdict = check(&inner, class, token, open_id);
    inner.log(Logged {
        method: r.method.to_string(),
        path: r.path.to_string(),
        query: r.query.map(str::to_string),
        access_token_headers: presented.headers.clone(),
        access_token_params: presented.params.clone(),
        access_token_body: presented.form.get("access_token").cloned(),
        body_len: r.body.len(),
        body_sha256: hex::encode(Sha256::digest(r.body)),
        accepted: verdict.is_ok(),
        header_names: r.headers.keys().map(|k| k.as_str().to_string()).collect(),
    });
    drop(inner);
    if verdict.is_err() {
        Counters::bump(&state.counters.api_rejected);
    }
    Some(reply(r, verdict, open_id))
}

/// The answer of the sample API at `r`'s path, in its family's envelope, given the token's verdict.
fn reply(r: &ApiRequest<'_>, verdict: Result<(), Reject>, open_id: Option<&str>) -> Reply {
    match r.path {
        "/api/douyin/v1/role/check/" => match verdict {
            Ok(()) => c_reply(
                0,
                "",
                json!({"result": true, "body_len": r.body.len(), "body_sha256": hex::encode(Sha256::digest(r.body))}),
            ),
            Err(Reject::Expired) => c_reply(28001008, "access_token过期，请刷新或重新授权", Value::Null),
            Err(_) => c_reply(28001003, "access_token无效", Value::Null),
        },
        "/oauth/userinfo/" => match verdict {
            Ok(()) => Reply::json(
                json!({"data": {"open_id": open_id, "nickname": "sandbox user", "avatar": "",
                "error_code": 0, "description": ""}, "message": "success"}),
            ),
            Err(Reject::Expired) => super::oauth::a_err(2190008, "access_token过期,请刷新或重新授权"),
            Err(Reject::Mismatch) => super::oauth::a_err(2190015, "access_token与open_id不匹配"),
            Err(_) => super::oauth::a_err(2190002, "access_token无效"),
        },
        "/video/list/" => match verdict {
            Ok(()) => {
                b_ok(json!({"list": [{"item_id": "@sandbox1", "title": "hello"}], "cursor": 0, "has_more": false}))
            }
            Err(Reject::Mismatch) => b_err(2190015, "access_token与open_id不匹配"),
            Err(_) => b_err(10008, "access_token无效或过期"),
        },
        "/js/getticket/" => match verdict {
            Ok(()) => b_ok(
                json!({"ticket": "bxLdikRXVbTPdHSM05e5u5sUoXNKd8-41ZO3MhKoyN5OfkWITDGgnr2fwJ0m9E8NYzWKVZvdVtaUgWvsdshFKA", "expires_in": 7200}),
            ),
            Err(Reject::Expired) => b_err(2190008, "access_token过期,请刷新或重新授权"),
            Err(_) => b_err(2190002, "access_token无效"),
        },
        _ => match verdict {
            Ok(()) => {
                b_ok(json!({"list": [{"item_id": "@sandbox1", "title": "hello"}], "cursor": 0, "has_more": false}))
            }
            Err(Reject::Expired) => b_err(2190008, "access_token过期,请刷新或重新授权"),
            Err(Reject::Mismatch) => b_err(2190015, "access_token与open_id不匹配"),
            Err(_) => b_err(2190002, "access_token无效"),
        },
    }
}
