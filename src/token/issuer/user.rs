//! A user's access_token and refresh_token: the code exchange `POST /oauth/access_token/`, the
//! refresh `POST /oauth/refresh_token/` and the refresh_token's renewal
//! `POST /oauth/renew_refresh_token/`, all form-encoded, envelope A.

use super::{
    form, need, need_secs, post, read_oauth, AppCreds, Fetched, IssuerConfig, OauthData, FORM, REFRESH_TOKEN_LIFETIME,
};
use crate::inspect::Context;
use crate::secret::Secret;
use crate::token::{Grant, GrantState, TokenError, TokenKey};
use crate::upstream::HttpClient;
use crate::vocab::unix_now;
use std::sync::Arc;

/// A user's access_token refreshed with their refresh_token.
pub(super) async fn refresh(
    client: &HttpClient,
    cfg: &IssuerConfig,
    app: &AppCreds,
    grant: Option<&Grant>,
) -> Result<Fetched, TokenError> {
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
    let app = super::app(cfg, key)?;
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
        refresh_lifetime_secs: crate::vocab::lifetime(lifetime),
        renewals: grant.renewals + 1,
        scope: grant.scope.clone(),
        state: GrantState::Active,
    })
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
        refresh_lifetime_secs: old.map_or(
            crate::vocab::lifetime(refresh_in.unwrap_or(REFRESH_TOKEN_LIFETIME)),
            |g| g.refresh_lifetime_secs,
        ),
        renewals: old.map_or(0, |g| g.renewals),
        scope: match (data.scope, old) {
            (Some(s), _) => Arc::from(s.as_str()),
            (None, Some(g)) => Arc::clone(&g.scope),
            (None, None) => std::sync::Arc::from(""),
        },
        state: old.map_or(GrantState::Active, |g| g.state.clone()),
    };
    Ok(Fetched {
        value,
        expires_in,
        grant: Some(grant),
    })
}

#[cfg(test)]
mod tests {
    use super::super::OauthEnvelope;
    use super::*;

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
}
