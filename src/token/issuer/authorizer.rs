//! A merchant app's authorizer_access_token, as a service provider gets it: from an
//! authorization code (pushed with `AUTHORIZED` / `UPDATE_AUTHORIZED`, or retrieved), and renewed
//! with the **single-use** authorizer_refresh_token.
//!
//! | | V1 (`open.microapp.bytedance.com`) | V2 (`open.douyin.com`) |
//! |---|---|---|
//! | credential | `component_access_token` in the query | the provider's client_token in `access-token` |
//! | code or refresh | `GET /openapi/v1/oauth/token` | `GET /api/tpapp/v2/auth/get_auth_token/` |
//! | retrieve a code | `POST /openapi/v1/auth/retrieve` | `POST /api/tpapp/v2/auth/retrieve_auth_code/` (JSON) |
//! | answer | plain JSON, errors `{"errno","message"}` | `{"err_no","err_msg","log_id","data"}` |
//!
//! V2's error numbers are V1's plus 20,000,000 (20040022 is V1's 40022): [`Refusal`] reads both.

use super::{exchange, Fetched, ProviderCreds, REFRESH_TOKEN_LIFETIME};
use crate::body::ProxyBody;
use crate::inspect::Lenient;
use crate::secret::Secret;
use crate::token::{Grant, GrantState, TokenError};
use crate::vocab::unix_now;
use http::{header, HeaderValue, Method, Request};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// V1's token endpoint.
pub const V1_TOKEN_PATH: &str = "/openapi/v1/oauth/token";
/// V2's token endpoint.
pub const V2_TOKEN_PATH: &str = "/api/tpapp/v2/auth/get_auth_token/";
/// V1's "retrieve an authorization code" (找回授权码).
pub const V1_RETRIEVE_PATH: &str = "/openapi/v1/auth/retrieve";
/// V2's.
pub const V2_RETRIEVE_PATH: &str = "/api/tpapp/v2/auth/retrieve_auth_code/";

/// What a refusal means to the engine, by the platform's number (V1's; V2's less 20,000,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 40021: the refresh token is wrong, expired or used (a code can be retrieved).
    RefreshToken,
    /// 40009/40010: the component_access_token expired or is wrong; V2's client_token
    /// (28001003/28001008, as open.douyin.com's other APIs say it).
    Credential,
    /// 40004/40022: the merchant app has not authorized the provider (any more).
    NotAuthorized,
    /// 40045 ("生成 token 失败,请重试"), busy or rate-limited: try again later; nothing was used.
    Transient,
    /// 40020 and other refusals of an authorization code.
    Other,
}

impl Refusal {
    /// The meaning of a token endpoint's refusal.
    pub fn of(e: &TokenError) -> Option<Refusal> {
        let TokenError::Refused { code, .. } = e else {
            return None;
        };
        // V2's open.douyin.com answers a bad or expired client_token as its other APIs do.
        if matches!(*code, 28001003 | 28001008 | 2190002 | 2190008 | 10008) {
            return Some(Refusal::Credential);
        }
        let code = match *code {
            c @ 20_000_000..20_100_000 => c - 20_000_000,
            c => c,
        };
        Some(match code {
            40021 => Refusal::RefreshToken,
            40009 | 40010 => Refusal::Credential,
            40004 | 40022 => Refusal::NotAuthorized,
            40045 | 2100004 | 28003018 | 10020 => Refusal::Transient,
            _ => Refusal::Other,
        })
    }
}

/// The credential a token call carries: V1's component token or V2's client_token.
pub struct Credential<'a>(pub &'a str);

#[derive(Deserialize, Default)]
#[serde(default)]
struct Answer {
    authorizer_access_token: Option<String>,
    expires_in: Lenient,
    authorizer_refresh_token: Option<String>,
    refresh_expires_in: Lenient,
    authorizer_appid: Option<String>,
    authorize_permission: Value,
    authorization_code: Option<String>,
    // V1's errors
    errno: Lenient,
    message: Option<String>,
    // V2's envelope
    err_no: Lenient,
    err_msg: Option<String>,
    data: Option<Box<Answer>>,
}

impl Answer {
    /// The answer's fields (V2: its `data`), or the platform's refusal.
    fn read(bytes: &[u8]) -> Result<Answer, TokenError> {
        let mut a: Answer = serde_json::from_slice(bytes).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let code = a.errno.0.or(a.err_no.0).unwrap_or(0);
        if code != 0 {
            return Err(TokenError::Refused {
                code,
                description: a.message.or(a.err_msg).unwrap_or_default().chars().take(200).collect(),
            });
        }
        Ok(match a.data.take() {
            Some(d) => *d,
            None => a,
        })
    }
}

/// A GET or POST to one of the provider's endpoints: V1 with the component token and appid in
/// the query, V2 with the client_token in `access-token`.
async fn call(
    p: &ProviderCreds,
    cred: &Credential<'_>,
    post_json: Option<Value>,
    paths: (&str, &str),
    pairs: &[(&str, &str)],
) -> Result<Answer, TokenError> {
    let query = {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if !p.v2 {
            query
                .append_pair("component_appid", &p.component_appid)
                .append_pair("component_access_token", cred.0);
        }
        for (k, v) in pairs {
            query.append_pair(k, v);
        }
        query.finish()
    };
    let path = if p.v2 { paths.1 } else { paths.0 };
    let target = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let uri = p.base.uri(&target).map_err(|e| TokenError::Network(e.to_string()))?;
    let mut req = Request::builder()
        .method(if post_json.is_some() { Method::POST } else { Method::GET })
        .uri(uri)
        .header(header::ACCEPT, HeaderValue::from_static("application/json"));
    if p.v2 {
        let v = HeaderValue::from_str(cred.0)
            .map_err(|_| TokenError::Malformed("a client_token unfit for a header".into()))?;
        req = req.header("access-token", v);
    }
    let body = match post_json {
        Some(v) if !v.is_null() => {
            req = req.header(header::CONTENT_TYPE, HeaderValue::from_static(super::JSON));
            ProxyBody::full(serde_json::to_vec(&v).expect("json"))
        }
        _ => ProxyBody::empty(),
    };
    let (status, bytes) = exchange(&p.client, req.body(body).expect("request")).await?;
    if status.is_server_error() {
        return Err(TokenError::Status(status.as_u16()));
    }
    Answer::read(&bytes)
}

/// Exchanges an authorization code: the grant, and the appid the answer names (V1 names it).
pub async fn exchange_code(
    p: &ProviderCreds,
    cred: &Credential<'_>,
    code: &str,
) -> Result<(Option<String>, Fetched), TokenError> {
    let pairs = [
        ("grant_type", "app_to_tp_authorization_code"),
        ("authorization_code", code),
    ];
    let a = call(p, cred, None, (V1_TOKEN_PATH, V2_TOKEN_PATH), &pairs).await?;
    let appid = a.authorizer_appid.clone().filter(|s| !s.is_empty());
    Ok((appid, fetched(a, None)?))
}

/// Refreshes with `grant`'s refresh token, which the platform then kills: the answer must be
/// stored before anything else.
pub async fn refresh(p: &ProviderCreds, cred: &Credential<'_>, grant: &Grant) -> Result<Fetched, TokenError> {
    let pairs = [
        ("grant_type", "app_to_tp_refresh_token"),
        ("authorizer_refresh_token", grant.refresh_token.expose()),
    ];
    let a = call(p, cred, None, (V1_TOKEN_PATH, V2_TOKEN_PATH), &pairs).await?;
    fetched(a, Some(grant))
}

/// Retrieves a new authorization code for a merchant app that authorized the provider (the
/// platform's remedy for a lost refresh token).
pub async fn retrieve_code(
    p: &ProviderCreds,
    cred: &Credential<'_>,
    authorizer_appid: &str,
) -> Result<String, TokenError> {
    let a = if p.v2 {
        let body = serde_json::json!({ "authorization_appid": authorizer_appid });
        call(p, cred, Some(body), (V1_RETRIEVE_PATH, V2_RETRIEVE_PATH), &[]).await?
    } else {
        let pairs = [("authorization_appid", authorizer_appid)];
        call(p, cred, Some(Value::Null), (V1_RETRIEVE_PATH, V2_RETRIEVE_PATH), &pairs).await?
    };
    a.authorization_code
        .filter(|c| !c.is_empty())
        .ok_or_else(|| TokenError::Malformed("no authorization_code in the answer".into()))
}

/// The permissions an answer lists, as one comma-separated line (`authorize_permission`: names,
/// numbers, or objects with an `id` or `name`).
fn permissions(v: &Value) -> Option<String> {
    let items = v.as_array()?;
    let names: Vec<String> = items
        .iter()
        .filter_map(|i| match i {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Object(o) => o.get("id").or_else(|| o.get("name")).map(|x| match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
            _ => None,
        })
        .collect();
    Some(names.join(","))
}

/// The token and grant an answer carries; a refresh keeps what the answer leaves out.
fn fetched(a: Answer, old: Option<&Grant>) -> Result<Fetched, TokenError> {
    let value = super::need(a.authorizer_access_token, "authorizer_access_token")?;
    let expires_in = a.expires_in.0.filter(|e| *e > 0).map_or(7200, |e| e as u64);
    let refresh_token = super::need(a.authorizer_refresh_token, "authorizer_refresh_token")?;
    let refresh_in = a
        .refresh_expires_in
        .0
        .filter(|e| *e > 0)
        .map_or(REFRESH_TOKEN_LIFETIME, |e| e as u64);
    let scope = match (permissions(&a.authorize_permission), old) {
        (Some(s), _) => Arc::from(s.as_str()),
        (None, Some(g)) => Arc::clone(&g.scope),
        (None, None) => Arc::from(""),
    };
    Ok(Fetched {
        value,
        expires_in,
        grant: Some(Grant {
            refresh_token: Secret::new(refresh_token),
            refresh_expires_unix: unix_now() + refresh_in,
            refresh_lifetime_secs: crate::vocab::lifetime(refresh_in),
            // Not counted: a merchant app's grants are told apart by their expiry (a later grant
            // expires later), whether refreshed or from a (retrieved) code.
            renewals: 0,
            scope,
            state: GrantState::Active,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v1_and_v2_answers_and_refusals() {
        let v1 = br#"{"authorizer_access_token":"a1","expires_in":7200,"authorizer_refresh_token":"r1",
            "refresh_expires_in":2592000,"authorizer_appid":"tt_m","authorize_permission":[{"id":1,"category":"x"},{"id":2}]}"#;
        let a = Answer::read(v1).unwrap();
        assert_eq!(a.authorizer_appid.as_deref(), Some("tt_m"));
        let f = fetched(a, None).unwrap();
        let g = f.grant.unwrap();
        assert_eq!(
            (f.value.as_str(), f.expires_in, g.refresh_token.expose()),
            ("a1", 7200, "r1")
        );
        assert_eq!(&*g.scope, "1,2");
        let v2 = br#"{"err_no":0,"err_msg":"","log_id":"x","data":{"authorizer_access_token":"isvact.2",
            "expires_in":7200,"authorizer_refresh_token":"r2","refresh_expires_in":2592000,"authorize_permission":["a","b"]}}"#;
        let f = fetched(Answer::read(v2).unwrap(), None).unwrap();
        assert_eq!((f.value.as_str(), &*f.grant.unwrap().scope), ("isvact.2", "a,b"));
        for (body, want) in [
            (&br#"{"errno":40021,"message":"bad"}"#[..], Refusal::RefreshToken),
            (br#"{"err_no":20040021,"err_msg":"bad"}"#, Refusal::RefreshToken),
            (br#"{"errno":40010,"message":"x"}"#, Refusal::Credential),
            (br#"{"err_no":20040022,"err_msg":"x"}"#, Refusal::NotAuthorized),
            (br#"{"errno":40020,"message":"x"}"#, Refusal::Other),
            (
                br#"{"err_no":28001003,"err_msg":"access_token is invalid"}"#,
                Refusal::Credential,
            ),
            (br#"{"errno":40045,"message":"retry"}"#, Refusal::Transient),
        ] {
            let e = Answer::read(body).err().unwrap();
            assert_eq!(Refusal::of(&e), Some(want), "{}", String::from_utf8_lossy(body));
        }
        assert!(matches!(Answer::read(b"<html>"), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn a_refresh_keeps_the_permissions() {
        let old = Grant {
            refresh_token: Secret::new("r0"),
            refresh_expires_unix: 1,
            refresh_lifetime_secs: 10,
            renewals: 3,
            scope: "1,2".into(),
            state: GrantState::Active,
        };
        let a = Answer::read(br#"{"authorizer_access_token":"a","expires_in":7200,"authorizer_refresh_token":"r9"}"#)
            .unwrap();
        let g = fetched(a, Some(&old)).unwrap().grant.unwrap();
        assert_eq!((&*g.scope, g.renewals, g.refresh_token.expose()), ("1,2", 0, "r9"));
        assert!(g.refresh_expires_unix > unix_now() + 29 * 24 * 3600);
    }
}
