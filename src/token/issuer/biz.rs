//! The enterprise biz_token: generated with `POST /oauth/business_token/` (JSON, the app's key
//! and secret, the open_id and scope), refreshed with `POST /oauth/refresh_biz_token/` while its
//! biz_refresh_token lives; envelope E.

use super::{need, need_secs, post_json, refusal, AppCreds, Fetched, IssuerConfig, REFRESH_TOKEN_LIFETIME};
use crate::inspect::{self, CodeTable, Context, Lenient, Verdict};
use crate::secret::Secret;
use crate::token::{Grant, GrantState, TokenError, TokenKey};
use crate::upstream::HttpClient;
use crate::vocab::unix_now;
use serde::Deserialize;

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

/// A biz token: refreshed with its grant when that still works, else generated anew.
pub(super) async fn fetch(
    client: &HttpClient,
    cfg: &IssuerConfig,
    key: &TokenKey,
    app: &AppCreds,
    grant: Option<&Grant>,
) -> Result<Fetched, TokenError> {
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

/// Reads an E-envelope (biz) answer.
pub(super) fn read_biz(bytes: &[u8], codes: &CodeTable) -> Result<Fetched, TokenError> {
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
            refresh_lifetime_secs: crate::vocab::lifetime(refresh_in),
            renewals: 0,
            scope: std::sync::Arc::from(""),
            state: GrantState::Active,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
