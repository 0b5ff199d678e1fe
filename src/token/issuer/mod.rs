//! Calls to the platform's token endpoints. Each answer is read with the
//! envelope rules of [`crate::inspect`]: errors arrive with HTTP 200.
//!
//! | class | obtain | renew the access token | renew the refresh token |
//! |---|---|---|---|
//! | client | `client_token` (JSON) | fetch again | — |
//! | user | code exchange `access_token` (form) | `refresh_token` (form) | `renew_refresh_token` (form) |
//! | biz | `business_token` (JSON) | `refresh_biz_token` (JSON) | — |
//! | mini_app | `/api/apps/v2/token` (JSON, on the app's `mini_app_upstream`) | fetch again | — |
//! | component | `/openapi/v1/auth/tp/token` (GET, the provider's latest ticket) | fetch again | — |
//! | authorizer | code exchange (V1 `/openapi/v1/oauth/token`, V2 `/api/tpapp/v2/auth/get_auth_token/`) | single-use refresh token (same endpoint) | — (a new authorization; a retrieved code) |

pub mod authorizer;
mod biz;
mod client;
mod component;
mod mini_app;
mod user;

pub(crate) use component::fetch as fetch_component;
pub use component::{provider_client_app, ProviderCreds, COMPONENT_TOKEN_PATH};
pub use mini_app::MINI_APP_TOKEN_PATH;

use super::{Grant, Token, TokenClass, TokenError, TokenKey};
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

pub(super) const FORM: &str = "application/x-www-form-urlencoded";
pub(super) const JSON: &str = "application/json";

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
    /// The platform's client_key (also the mini-app token's appid).
    pub client_key: String,
    /// The secret it is fetched with (never logged).
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

/// Everything a fetch needs; swapped whole on reload.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// Where token endpoints live.
    pub base: Base,
    /// Apps by name.
    pub apps: HashMap<Arc<str>, AppCreds>,
    /// Code tables.
    pub codes: CodeTable,
    /// Service providers by name (component tokens).
    pub providers: HashMap<Arc<str>, ProviderCreds>,
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
pub(super) struct OauthEnvelope {
    data: Option<OauthData>,
}

pub(super) fn app<'a>(cfg: &'a IssuerConfig, key: &TokenKey) -> Result<&'a AppCreds, TokenError> {
    cfg.apps
        .get(&key.app)
        .ok_or_else(|| TokenError::UnknownApp(key.app.to_string()))
}

/// The `[[providers]]` named `name`, with the config's copy of its name.
pub(crate) fn provider<'a>(cfg: &'a IssuerConfig, name: &str) -> Result<(&'a Arc<str>, &'a ProviderCreds), TokenError> {
    cfg.providers
        .get_key_value(name)
        .ok_or_else(|| TokenError::UnknownApp(name.to_string()))
}

pub(super) fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish().into_bytes()
}

/// Fetches a new token for `key`; `current` is the token held now, whose grant renews user and
/// biz tokens. Each class's way with the platform is a file of its own; this is where a class is
/// registered.
pub async fn fetch(
    client: &HttpClient,
    cfg: &IssuerConfig,
    key: &TokenKey,
    current: Option<&Token>,
) -> Result<Fetched, TokenError> {
    let app = app(cfg, key)?;
    let grant = current.and_then(|t| t.grant.as_deref());
    match key.class {
        TokenClass::Client => client::fetch(client, cfg, app).await,
        TokenClass::MiniApp => mini_app::fetch(cfg, key, app).await,
        TokenClass::User => user::refresh(client, cfg, app, grant).await,
        TokenClass::Biz => biz::fetch(client, cfg, key, app, grant).await,
        // Fetched with the provider's latest ticket (`fetch_component`), and with the provider's
        // credential (`authorizer`): the engine's.
        TokenClass::Component | TokenClass::Authorizer => Err(TokenError::UnknownApp(key.app.to_string())),
    }
}

pub use user::{exchange_code, renew};

pub(super) fn need(v: Option<String>, what: &str) -> Result<String, TokenError> {
    v.filter(|t| !t.is_empty())
        .ok_or_else(|| TokenError::Malformed(format!("no {what} in data")))
}

pub(super) fn need_secs(v: Lenient, what: &str) -> Result<u64, TokenError> {
    v.0.filter(|e| *e > 0)
        .map(|e| e as u64)
        .ok_or_else(|| TokenError::Malformed(format!("no {what} in data")))
}

/// The platform's refusal as a [`TokenError`].
pub(super) fn refusal(verdict: Verdict, first: Option<i64>, description: String, client_token: bool) -> TokenError {
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
pub(super) fn read_oauth(
    bytes: &[u8],
    codes: &CodeTable,
    ctx: Context,
    client_token: bool,
) -> Result<OauthData, TokenError> {
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

/// POSTs a JSON body to a token endpoint.
pub(super) async fn post_json(
    client: &HttpClient,
    base: &Base,
    path: &str,
    body: serde_json::Value,
) -> Result<Bytes, TokenError> {
    post(client, base, path, JSON, serde_json::to_vec(&body).expect("json")).await
}

/// Sends `req` to a token endpoint: the answer's status and body (at most
/// [`MAX_TOKEN_RESPONSE`] bytes).
pub(super) async fn exchange(
    client: &HttpClient,
    req: Request<ProxyBody>,
) -> Result<(http::StatusCode, Bytes), TokenError> {
    let resp = client
        .request(req)
        .await
        .map_err(|e| TokenError::Network(describe(&e)))?;
    let status = resp.status();
    let bytes = http_body_util::Limited::new(resp.into_body(), MAX_TOKEN_RESPONSE)
        .collect()
        .await
        .map_err(|e| TokenError::Network(format!("reading the answer: {e}")))?
        .to_bytes();
    Ok((status, bytes))
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
    let (status, bytes) = exchange(client, req).await?;
    // Errors come with 200; a 4xx that still carries a platform envelope is read as one.
    if status.is_server_error() || (status.is_client_error() && inspect::codes(&bytes).is_none_or(|c| c.is_ok())) {
        return Err(TokenError::Status(status.as_u16()));
    }
    Ok(bytes)
}
