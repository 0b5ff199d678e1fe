//! The app's client_token: `POST {client_token_endpoint}` (JSON, the app's key and secret),
//! fetched again to renew.

use super::{need, need_secs, post_json, read_oauth, AppCreds, Fetched, IssuerConfig};
use crate::inspect::Context;
use crate::token::TokenError;
use crate::upstream::HttpClient;

/// A new client_token.
pub(super) async fn fetch(client: &HttpClient, cfg: &IssuerConfig, app: &AppCreds) -> Result<Fetched, TokenError> {
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

#[cfg(test)]
mod tests {
    use super::super::read_oauth;
    use crate::inspect::{CodeTable, Context};
    use crate::token::TokenError;

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
}
