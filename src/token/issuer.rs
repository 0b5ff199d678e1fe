//! Calls to the platform's token endpoints. Each answer is read with the
//! envelope rules of [`crate::inspect`]: errors arrive with HTTP 200.

use super::{TokenClass, TokenError, TokenKey};
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

/// What a fetch obtained.
#[derive(Debug)]
pub struct Fetched {
    /// The token.
    pub value: String,
    /// Its lifetime in seconds.
    pub expires_in: u64,
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
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OauthData {
    access_token: Option<String>,
    expires_in: Lenient,
    description: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OauthEnvelope {
    data: Option<OauthData>,
}

/// Fetches a new token for `key`.
pub async fn fetch(client: &HttpClient, cfg: &IssuerConfig, key: &TokenKey) -> Result<Fetched, TokenError> {
    let app = cfg
        .apps
        .get(&key.app)
        .ok_or_else(|| TokenError::UnknownApp(key.app.to_string()))?;
    match key.class {
        TokenClass::Client => {
            let body = serde_json::json!({
                "client_key": app.client_key,
                "client_secret": app.client_secret.expose(),
                "grant_type": "client_credential",
            });
            let bytes = post(
                client,
                &cfg.base,
                &app.client_token_endpoint,
                "application/json",
                serde_json::to_vec(&body).expect("json"),
            )
            .await?;
            read_oauth(&bytes, &cfg.codes, true)
        }
        TokenClass::User | TokenClass::Biz => Err(TokenError::AuthorizationRequired(
            "no tokens are stored for this open_id: the user must authorize the app".into(),
        )),
    }
}

/// Reads an A-envelope token answer.
fn read_oauth(bytes: &[u8], codes: &CodeTable, client_token: bool) -> Result<Fetched, TokenError> {
    let found = inspect::codes(bytes).ok_or_else(|| TokenError::Malformed("not a JSON object".into()))?;
    let env: OauthEnvelope = serde_json::from_slice(bytes).map_err(|e| TokenError::Malformed(e.to_string()))?;
    let data = env.data.unwrap_or_default();
    let description = data.description.clone().unwrap_or_default();
    match codes.verdict(&found, Context::TokenEndpoint) {
        Verdict::Ok => {}
        Verdict::Reauthorize(code) => {
            return Err(TokenError::AuthorizationRequired(format!(
                "the refresh_token expired ({code}): the user must authorize again"
            )))
        }
        v => {
            let code = match v {
                Verdict::TokenEndpointError(c) | Verdict::PassThrough(c) | Verdict::Refresh(c) => c,
                _ => found.first().unwrap_or(0),
            };
            return Err(match code {
                10020 if client_token => TokenError::RateLimited,
                10002 | 10003 | 10013 => TokenError::BadCredentials { code, description },
                _ => TokenError::Refused { code, description },
            });
        }
    }
    let value = data
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| TokenError::Malformed("no access_token in data".into()))?;
    let expires_in = data
        .expires_in
        .0
        .filter(|e| *e > 0)
        .ok_or_else(|| TokenError::Malformed("no expires_in in data".into()))?;
    Ok(Fetched {
        value,
        expires_in: expires_in as u64,
    })
}

/// POSTs to a token endpoint; the answer body when the status is not 5xx/4xx.
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
        let ok = read_oauth(br#"{"data":{"access_token":"clt.x","description":"","error_code":"0","expires_in":"7200"},"message":"success"}"#, &t, true).unwrap();
        assert_eq!((ok.value.as_str(), ok.expires_in), ("clt.x", 7200));
        assert_eq!(
            read_oauth(
                br#"{"data":{"description":"x","error_code":10020},"message":"error"}"#,
                &t,
                true
            )
            .unwrap_err(),
            TokenError::RateLimited
        );
        assert!(matches!(
            read_oauth(br#"{"data":{"description":"x","error_code":10013}}"#, &t, true),
            Err(TokenError::BadCredentials { code: 10013, .. })
        ));
        assert!(matches!(read_oauth(b"<html>", &t, true), Err(TokenError::Malformed(_))));
        assert!(matches!(
            read_oauth(br#"{"data":{"error_code":0}}"#, &t, true),
            Err(TokenError::Malformed(_))
        ));
    }
}
