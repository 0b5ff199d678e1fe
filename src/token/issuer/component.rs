//! A service provider's component_access_token:
//! `GET {upstream}/openapi/v1/auth/tp/token?component_appid=&component_appsecret=&component_ticket=`
//! with the latest pushed ticket, answered `{"component_access_token","expires_in"}` (or
//! `{"errno","message"}`); fetched again to renew, like the client_token.

use super::{Fetched, IssuerConfig};
use crate::body::ProxyBody;
use crate::inspect::Lenient;
use crate::secret::Secret;
use crate::token::{TokenError, TokenKey};
use crate::upstream::{Base, HttpClient};
use http::{header, HeaderValue, Method, Request};
use serde::Deserialize;

/// The path of the component token endpoint.
pub const COMPONENT_TOKEN_PATH: &str = "/openapi/v1/auth/tp/token";

/// A provider's credentials, and where its tokens come from.
#[derive(Debug, Clone)]
pub struct ProviderCreds {
    /// `component_appid`.
    pub component_appid: String,
    /// `component_appsecret` (never logged).
    pub component_appsecret: Secret,
    /// Its `upstream`, or `[upstream]`.
    pub base: Base,
    /// A client with that upstream's settings.
    pub client: HttpClient,
    /// `api_version = "v2"`: authorizer tokens from `open.douyin.com/api/tpapp/v2/…` with the
    /// provider's client_token; else V1's with the component token.
    pub v2: bool,
    /// V2: the name its own client_token is kept under (an app of the issuer's, named
    /// [`provider_client_app`]).
    pub client_app: Option<std::sync::Arc<str>>,
}

/// The name a V2 provider's own client_token is kept under, among the apps: `provider:NAME`
/// (an `[[apps]]` of that name is refused).
pub fn provider_client_app(provider: &str) -> String {
    format!("provider:{provider}")
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Answer {
    component_access_token: Option<String>,
    expires_in: Lenient,
    errno: Lenient,
    err_no: Lenient,
    message: Option<String>,
    err_msg: Option<String>,
}

/// A new component token for `key` (its app is the provider's name), made with `ticket`.
pub(crate) async fn fetch(cfg: &IssuerConfig, key: &TokenKey, ticket: &Secret) -> Result<Fetched, TokenError> {
    let (_, p) = super::provider(cfg, &key.app)?;
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("component_appid", &p.component_appid)
        .append_pair("component_appsecret", p.component_appsecret.expose())
        .append_pair("component_ticket", ticket.expose())
        .finish();
    let uri = p
        .base
        .uri(&format!("{COMPONENT_TOKEN_PATH}?{query}"))
        .map_err(|e| TokenError::Network(e.to_string()))?;
    let req = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(header::ACCEPT, HeaderValue::from_static("application/json"))
        .body(ProxyBody::empty())
        .expect("request");
    let (status, bytes) = super::exchange(&p.client, req).await?;
    if status.is_server_error() {
        return Err(TokenError::Status(status.as_u16()));
    }
    read(&bytes)
}

/// Reads the endpoint's answer.
fn read(bytes: &[u8]) -> Result<Fetched, TokenError> {
    let a: Answer = serde_json::from_slice(bytes).map_err(|e| TokenError::Malformed(e.to_string()))?;
    let code = a.errno.0.or(a.err_no.0).unwrap_or(0);
    match a.component_access_token.filter(|t| !t.is_empty()) {
        Some(value) if code == 0 => Ok(Fetched {
            value,
            expires_in: a.expires_in.0.filter(|e| *e > 0).map_or(7200, |e| e as u64),
            grant: None,
        }),
        _ => Err(TokenError::Refused {
            code,
            description: a.message.or(a.err_msg).unwrap_or_default(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_component_token_answers() {
        let f = read(br#"{"component_access_token":"ctok.1","expires_in":7200}"#).unwrap();
        assert_eq!((f.value.as_str(), f.expires_in), ("ctok.1", 7200));
        assert!(matches!(
            read(br#"{"errno":40003,"message":"bad ticket"}"#),
            Err(TokenError::Refused { code: 40003, ref description }) if description == "bad ticket"
        ));
        assert!(matches!(read(b"<html>"), Err(TokenError::Malformed(_))));
    }
}
