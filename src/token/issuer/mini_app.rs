//! The mini-app server access_token: `POST /api/apps/v2/token` (JSON, appid and secret) on the
//! app's `mini_app_upstream` (developer.toutiao.com), answered in envelope D; fetched again to
//! renew, like the client_token.

use super::{need, need_secs, post_json, refusal, AppCreds, Fetched, IssuerConfig};
use crate::inspect::{self, CodeTable, Context, Lenient, Verdict};
use crate::token::{TokenError, TokenKey};
use serde::Deserialize;

/// The path of the mini-app token endpoint.
pub const MINI_APP_TOKEN_PATH: &str = "/api/apps/v2/token";

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

/// A new mini-app token.
pub(super) async fn fetch(cfg: &IssuerConfig, key: &TokenKey, app: &AppCreds) -> Result<Fetched, TokenError> {
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

/// Reads a D-envelope (mini-app token) answer.
pub(super) fn read_mini_app(bytes: &[u8], codes: &CodeTable) -> Result<Fetched, TokenError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
