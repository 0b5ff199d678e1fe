//! Calls to the platform's token endpoints. Each answer is read with the
//! envelope rules of [`crate::inspect`]: errors arrive with HTTP 200.
//!
//! | class | obtain | renew the access token | renew the refresh token |
//! |---|---|---|---|
//! | client | `client_token` (JSON) | fetch again | — |
//! | user | code exchange `access_token` (form) | `refresh_token` (form) | `renew_refresh_token` (form) |
//! | biz | `business_token` (JSON) | `refresh_biz_token` (JSON) | — |
//! | mini_app | `/api/apps/v2/token` (JSON, on the app's `mini_app_upstream`) | fetch again | — |

use super::{unix_now, Grant, GrantState, Token, TokenClass, TokenError, TokenKey};
use crate::body::ProxyBody;
use crate::inspect::{self, CodeTable, Context, Lenient, Verdict};
use crate::secret::Secret;
use crate::upstream::{describe, Base, HttpClient};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

/// An answer larger than this is not a token.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// The platform's refresh_token lifetime, for answers that do not say.
pub const REFRESH_TOKEN_LIFETIME: u64 = 30 * 24 * 3600;

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

/// What a fetch obtained.
#[derive(Debug)]
pub struct Fetched {
    /// The token.
    pub value: String,
    /// Its lifetime in seconds.
    pub expires_in: u64,
    /// How to renew it (user and biz).
    pub grant: Option<Grant>,
}

/// An app's credentials.
#[derive(Debug, Clone)]
pub struct AppCreds {
    /// client_key.
    pub client_key: String,
    /// client_secret.
    pub client_secret: Secret,
    /// Path of the client_token endpoint.
    pub client_token_endpoint: String,
    /// Where its mini-app server access_token comes from (`mini_app_upstream`), if it has one.
    pub mini_app: Option<MiniAppIssuer>,
}

/// The host that issues an app's mini-app token, and the client that reaches it (that upstream's
/// `ca_file` and connect timeout).
#[derive(Debug, Clone)]
pub struct MiniAppIssuer {
    /// developer.toutiao.com, or a stand-in.
    pub base: Base,
    /// A client with that upstream's settings.
    pub client: HttpClient,
}

/// The path of the mini-app token endpoint.
pub const MINI_APP_TOKEN_PATH: &str = "/api/apps/v2/token";

/// Everything a fetch needs; swapped whole on reload.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// Where token endpoints live.
    pub base: Base,
    /// Apps by name.
    pub apps: HashMap<Arc<str>, AppCreds>,
    /// Code tables.
    pub codes: CodeTable,
}

/// The fields of an A-envelope (oauth) answer's `data`.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct OauthData {
    access_token: Option<String>,
    expires_in: Lenient,
    refresh_token: Option<String>,
    refresh_expires_in: Lenient,
    /// The user, on code exchange and refresh.
    pub open_id: Option<String>,
    scope: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OauthEnvelope {
    data: Option<OauthData>,
}

/// A D-envelope (mini-app) answer: `{"err_no","err_tips","data"}`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct MiniAppEnvelope {
    data: Option<MiniAppData>,
    err_tips: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MiniAppData {
    access_token: Option<String>,
    expires_in: Lenient,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BizData {
    biz_token: Option<String>,
    biz_expires_in: Lenient,
    biz_refresh_token: Option<String>,
    biz_refresh_expires_in: Lenient,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BizEnvelope {
    data: Option<BizData>,
    message: Option<String>,
}

fn app<'a>(cfg: &'a IssuerConfig, key: &TokenKey) -> Result<&'a AppCreds, TokenError> {
    cfg.apps
        .get(&key.app)
        .ok_or_else(|| TokenError::UnknownApp(key.app.to_string()))
}

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish().into_bytes()
}

/// Fetches a new token for `key`; `current` is the token held now, whose grant
/// renews user and biz tokens.
pub async fn fetch(
    client: &HttpClient,
    cfg: &IssuerConfig,
    key: &TokenKey,
    current: Option<&Token>,
) -> Result<Fetched, TokenError> {
    let app = app(cfg, key)?;
    let grant = current.and_then(|t| t.grant.as_deref());
    match key.class {
        TokenClass::Client => {
            let body = serde_json::json!({
                "client_key": app.client_key,
                "client_secret": app.client_secret.expose(),
                "grant_type": "client_credential",
            });
            let bytes = post_json(client, &cfg.base, &app.client_token_endpoint, body).await?;
            let data = read_oauth(&bytes, &cfg.codes, Context::TokenEndpoint, true)?;
            Ok(Fetched {
                value: need(data.access_token, "access_token")?,
                expires_in: need_secs(data.expires_in, "expires_in")?,
                grant: None,
            })
        }
        TokenClass::MiniApp => {
            let Some(issuer) = &app.mini_app else {
                return Err(TokenError::Refused {
                    code: 0,
                    description: format!("app {:?} has no mini_app_upstream", key.app),
                });
            };
            let body = serde_json::json!({
                "appid": app.client_key,
                "secret": app.client_secret.expose(),
                "grant_type": "client_credential",
            });
            let bytes = post_json(&issuer.client, &issuer.base, MINI_APP_TOKEN_PATH, body).await?;
            read_mini_app(&bytes, &cfg.codes)
        }
        TokenClass::User => {
            let Some(grant) = grant else {
                return Err(TokenError::AuthorizationRequired(
                    "no tokens are stored for this open_id: the user must authorize the app".into(),
                ));
            };
            if let GrantState::Dead(why) = &grant.state {
                return Err(TokenError::AuthorizationRequired(why.to_string()));
            }
            if grant.refresh_expires_unix <= unix_now() {
                return Err(TokenError::AuthorizationRequired(
                    "the refresh_token expired: the user must authorize again".into(),
                ));
            }
            let body = form(&[
                ("client_key", &app.client_key),
                ("grant_type", "refresh_token"),
                ("refresh_token", grant.refresh_token.expose()),
            ]);
            let bytes = post(client, &cfg.base, "/oauth/refresh_token/", FORM, body).await?;
            let data = read_oauth(&bytes, &cfg.codes, Context::TokenEndpoint, false)?;
            user_fetched(data, Some(grant))
        }
        TokenClass::Biz => {
            if let Some(g) = grant.filter(|g| g.usable(unix_now())) {
                let body = serde_json::json!({
                    "client_key": app.client_key,
                    "client_secret": app.client_secret.expose(),
                    "refresh_token": g.refresh_token.expose(),
                });
                let bytes = post_json(client, &cfg.base, "/oauth/refresh_biz_token/", body).await?;
                match read_biz(&bytes, &cfg.codes) {
                    // The biz_refresh_token died: generate a new biz token from the app's credentials.
                    Err(TokenError::AuthorizationRequired(_)) => {}
                    other => return other,
                }
            }
            let (open_id, scope) = (key.open_id().unwrap_or(""), key.biz_scope().unwrap_or(""));
            let body = serde_json::json!({
                "client_key": app.client_key,
                "client_secret": app.client_secret.expose(),
                "open_id": open_id,
                "scope": scope,
            });
            let bytes = post_json(client, &cfg.base, "/oauth/business_token/", body).await?;
            read_biz(&bytes, &cfg.codes)
        }
    }
}

/// Exchanges an authorization code; the user's open_id and tokens.
pub async fn exchange_code(
    client: &HttpClient,
    cfg: &IssuerConfig,
    app_name: &str,
    code: &str,
) -> Result<(String, Fetched), TokenError> {
    let app = cfg
        .apps
        .get(app_name)
        .ok_or_else(|| TokenError::UnknownApp(app_name.to_string()))?;
    let body = form(&[
        ("client_key", &app.client_key),
        ("client_secret", app.client_secret.expose()),
        ("code", code),
        ("grant_type", "authorization_code"),
    ]);
    let bytes = post(client, &cfg.base, "/oauth/access_token/", FORM, body).await?;
    let mut data = read_oauth(&bytes, &cfg.codes, Context::TokenEndpoint, false)?;
    let open_id = data
        .open_id
        .take()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| TokenError::Malformed("no open_id in data".into()))?;
    Ok((open_id, user_fetched(data, None)?))
}

/// Renews a user's refresh_token. The old one dies at once on the platform:
/// the caller must store the answer before anything else.
pub async fn renew(
    client: &HttpClient,
    cfg: &IssuerConfig,
    key: &TokenKey,
    grant: &Grant,
) -> Result<Grant, TokenError> {
    let app = app(cfg, key)?;
    let body = form(&[
        ("client_key", &app.client_key),
        ("refresh_token", grant.refresh_token.expose()),
    ]);
    let bytes = post(client, &cfg.base, "/oauth/renew_refresh_token/", FORM, body).await?;
    let data = read_oauth(&bytes, &cfg.codes, Context::Renew, false)?;
    let lifetime = data
        .expires_in
        .0
        .filter(|e| *e > 0)
        .map_or(REFRESH_TOKEN_LIFETIME, |e| e as u64);
    Ok(Grant {
        refresh_token: Secret::new(need(data.refresh_token, "refresh_token")?),
        refresh_expires_unix: unix_now() + lifetime,
        refresh_lifetime_secs: super::lifetime(lifetime),
        renewals: grant.renewals + 1,
        scope: grant.scope.clone(),
        state: GrantState::Active,
    })
}

fn need(v: Option<String>, what: &str) -> Result<String, TokenError> {
    v.filter(|t| !t.is_empty())
        .ok_or_else(|| TokenError::Malformed(format!("no {what} in data")))
}

fn need_secs(v: Lenient, what: &str) -> Result<u64, TokenError> {
    v.0.filter(|e| *e > 0)
        .map(|e| e as u64)
        .ok_or_else(|| TokenError::Malformed(format!("no {what} in data")))
}

/// A user token from a code exchange or refresh answer. Everything the answer
/// returns is kept: the refresh_token string may change on refresh.
fn user_fetched(data: OauthData, old: Option<&Grant>) -> Result<Fetched, TokenError> {
    let value = need(data.access_token, "access_token")?;
    let expires_in = need_secs(data.expires_in, "expires_in")?;
    let refresh_token = match (data.refresh_token.filter(|r| !r.is_empty()), old) {
        (Some(r), _) => Secret::new(r),
        (None, Some(g)) => g.refresh_token.clone(),
        (None, None) => return Err(TokenError::Malformed("no refresh_token in data".into())),
    };
    let refresh_in = data.refresh_expires_in.0.filter(|e| *e > 0).map(|e| e as u64);
    let grant = Grant {
        refresh_token,
        refresh_expires_unix: match (refresh_in, old) {
            (Some(r), _) => unix_now() + r,
            (None, Some(g)) => g.refresh_expires_unix,
            (None, None) => unix_now() + REFRESH_TOKEN_LIFETIME,
        },
        refresh_lifetime_secs: old.map_or(super::lifetime(refresh_in.unwrap_or(REFRESH_TOKEN_LIFETIME)), |g| {
            g.refresh_lifetime_secs
        }),
        renewals: old.map_or(0, |g| g.renewals),
        scope: match (data.scope, old) {
            (Some(s), _) => super::scope(&s),
            (None, Some(g)) => Arc::clone(&g.scope),
            (None, None) => super::scope(""),
        },
        state: old.map_or(GrantState::Active, |g| g.state.clone()),
    };
    Ok(Fetched {
        value,
        expires_in,
        grant: Some(grant),
    })
}

/// The platform's refusal as a [`TokenError`].
fn refusal(verdict: Verdict, first: Option<i64>, description: String, client_token: bool) -> TokenError {
    match verdict {
        Verdict::Reauthorize(code) => TokenError::AuthorizationRequired(format!(
            "the refresh_token expired ({code}): the user must authorize again"
        )),
        Verdict::ReauthorizeWhenRenewing(code) => TokenError::RenewalsExhausted(code),
        _ => {
            let code = first.unwrap_or(0);
            match code {
                10020 if client_token => TokenError::RateLimited,
                // 40015 wrong appid, 40017 wrong secret: the mini-app token endpoint's.
                10002 | 10003 | 10013 | 40015 | 40017 => TokenError::BadCredentials { code, description },
                _ => TokenError::Refused { code, description },
            }
        }
    }
}

/// Reads an A-envelope token answer.
fn read_oauth(bytes: &[u8], codes: &CodeTable, ctx: Context, client_token: bool) -> Result<OauthData, TokenError> {
    let found = inspect::codes(bytes).ok_or_else(|| TokenError::Malformed("not a JSON object".into()))?;
    let env: OauthEnvelope = serde_json::from_slice(bytes).map_err(|e| TokenError::Malformed(e.to_string()))?;
    let mut data = env.data.unwrap_or_default();
    match codes.verdict(&found, ctx) {
        Verdict::Ok => Ok(data),
        v => Err(refusal(
            v,
            found.first(),
            data.description.take().unwrap_or_default(),
            client_token,
        )),
    }
}

/// Reads a D-envelope (mini-app token) answer.
fn read_mini_app(bytes: &[u8], codes: &CodeTable) -> Result<Fetched, TokenError> {
    let found = inspect::codes(bytes).ok_or_else(|| TokenError::Malformed("not a JSON object".into()))?;
    let env: MiniAppEnvelope = serde_json::from_slice(bytes).map_err(|e| TokenError::Malformed(e.to_string()))?;
    match codes.verdict(&found, Context::TokenEndpoint) {
        Verdict::Ok => {}
        v => return Err(refusal(v, found.first(), env.err_tips.unwrap_or_default(), false)),
    }
    let data = env.data.unwrap_or_default();
    Ok(Fetched {
        value: need(data.access_token, "access_token")?,
        expires_in: need_secs(data.expires_in, "expires_in")?,
        grant: None,
    })
}

/// Reads an E-envelope (biz) answer.
fn read_biz(bytes: &[u8], codes: &CodeTable) -> Result<Fetched, TokenError> {
    let found = inspect::codes(bytes).ok_or_else(|| TokenError::Malformed("not a JSON object".into()))?;
    let env: BizEnvelope = serde_json::from_slice(bytes).map_err(|e| TokenError::Malformed(e.to_string()))?;
    match codes.verdict(&found, Context::TokenEndpoint) {
        Verdict::Ok => {}
        v => return Err(refusal(v, found.first(), env.message.unwrap_or_default(), false)),
    }
    let data = env.data.unwrap_or_default();
    let refresh_in = data
        .biz_refresh_expires_in
        .0
        .filter(|e| *e > 0)
        .map_or(REFRESH_TOKEN_LIFETIME, |e| e as u64);
    Ok(Fetched {
        value: need(data.biz_token, "biz_token")?,
        expires_in: need_secs(data.biz_expires_in, "biz_expires_in")?,
        grant: Some(Grant {
            refresh_token: Secret::new(need(data.biz_refresh_token, "biz_refresh_token")?),
            refresh_expires_unix: unix_now().saturating_add(refresh_in),
            refresh_lifetime_secs: super::lifetime(refresh_in),
            renewals: 0,
            scope: super::scope(""),
            state: GrantState::Active,
        }),
    })
}

/// POSTs a JSON body to a token endpoint.
async fn post_json(client: &HttpClient, base: &Base, path: &str, body: serde_json::Value) -> Result<Bytes, TokenError> {
    post(client, base, path, JSON, serde_json::to_vec(&body).expect("json")).await
}

/// POSTs to a token endpoint; the answer body when the status is not an error.
pub async fn post(
    client: &HttpClient,
    base: &Base,
    path: &str,
    content_type: &'static str,
    body: Vec<u8>,
) -> Result<Bytes, TokenError> {
    let uri = base.uri(path).map_err(|e| TokenError::Network(e.to_string()))?;
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, HeaderValue::from_static(content_type))
        .header(header::ACCEPT, HeaderValue::from_static("application/json"))
        .body(ProxyBody::full(body))
        .expect("request");
    let resp = client
        .request(req)
        .await
        .map_err(|e| TokenError::Network(describe(&e)))?;
    let status = resp.status();
    let limited = http_body_util::Limited::new(resp.into_body(), MAX_TOKEN_RESPONSE);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| TokenError::Network(format!("reading the answer: {e}")))?
        .to_bytes();
    // Errors come with 200; a 4xx that still carries a platform envelope is read as one.
    if status.is_server_error() || (status.is_client_error() && inspect::codes(&bytes).is_none_or(|c| c.is_ok())) {
        return Err(TokenError::Status(status.as_u16()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_client_token_answers() {
        let t = CodeTable::default();
        let ctx = Context::TokenEndpoint;
        let ok = read_oauth(
            br#"{"data":{"access_token":"clt.x","description":"","error_code":"0","expires_in":"7200"},"message":"success"}"#,
            &t,
            ctx,
            true,
        )
        .unwrap();
        assert_eq!(
            (ok.access_token.as_deref(), ok.expires_in.0),
            (Some("clt.x"), Some(7200))
        );
        let err = read_oauth(
            br#"{"data":{"description":"x","error_code":10020},"message":"error"}"#,
            &t,
            ctx,
            true,
        );
        assert_eq!(err.unwrap_err(), TokenError::RateLimited);
        assert!(matches!(
            read_oauth(br#"{"data":{"description":"x","error_code":10013}}"#, &t, ctx, true),
            Err(TokenError::BadCredentials { code: 10013, .. })
        ));
        assert!(matches!(
            read_oauth(b"<html>", &t, ctx, true),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            read_oauth(
                br#"{"data":{"description":"x","error_code":10020}}"#,
                &t,
                Context::Renew,
                false
            ),
            Err(TokenError::RenewalsExhausted(10020))
        ));
    }

    #[test]
    fn user_answers_keep_what_the_platform_returns() {
        let old = Grant {
            refresh_token: Secret::new("rft.old"),
            refresh_expires_unix: 123,
            refresh_lifetime_secs: 2592000,
            renewals: 2,
            scope: "user_info".into(),
            state: GrantState::Active,
        };
        let data: OauthEnvelope = serde_json::from_str(
            r#"{"data":{"access_token":"act.n","expires_in":"1296000","refresh_token":"rft.new"}}"#,
        )
        .unwrap();
        let f = user_fetched(data.data.unwrap(), Some(&old)).unwrap();
        let g = f.grant.unwrap();
        assert_eq!((f.value.as_str(), f.expires_in), ("act.n", 1296000));
        assert_eq!(g.refresh_token.expose(), "rft.new", "a changed refresh_token is stored");
        assert_eq!((g.refresh_expires_unix, g.renewals, &*g.scope), (123, 2, "user_info"));
    }

    #[test]
    fn reads_mini_app_token_answers() {
        let t = CodeTable::default();
        let f = read_mini_app(
            br#"{"err_no":0,"err_tips":"success","data":{"access_token":"0801121846","expires_in":"7200"}}"#,
            &t,
        )
        .unwrap();
        assert_eq!(
            (f.value.as_str(), f.expires_in, f.grant.is_none()),
            ("0801121846", 7200, true)
        );
        assert!(matches!(
            read_mini_app(br#"{"err_no":40017,"err_tips":"bad secret","data":null}"#, &t),
            Err(TokenError::BadCredentials { code: 40017, ref description }) if description == "bad secret"
        ));
        assert!(matches!(
            read_mini_app(br#"{"err_no":40020,"err_tips":"bad grant_type"}"#, &t),
            Err(TokenError::Refused { code: 40020, .. })
        ));
        assert!(matches!(
            read_mini_app(br#"{"err_no":0,"err_tips":"success","data":{}}"#, &t),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn reads_biz_answers() {
        let t = CodeTable::default();
        let f = read_biz(br#"{"error_code":0,"message":"","data":{"biz_token":"bus_act.1","biz_expires_in":2592000,"biz_refresh_token":"bus_rft.1","biz_refresh_expires_in":3153600000}}"#, &t).unwrap();
        assert_eq!(f.value, "bus_act.1");
        assert_eq!(f.grant.unwrap().refresh_token.expose(), "bus_rft.1");
        assert!(matches!(
            read_biz(
                br#"{"error_code":10010,"message":"refresh_token expired","data":{}}"#,
                &t
            ),
            Err(TokenError::AuthorizationRequired(_))
        ));
    }
}
