//! Grants brought in from outside the platform's flows: a merchant app's refresh token imported
//! from a home-made token server (`PUT /admin/providers/{name}/authorizers/{appid}`).
//!
//! The home-made server may still hold the access token, but the gateway cannot know how long it
//! lives: the grant is stored with no live access token, so the first call refreshes with it (and
//! from then on the refresh token is the gateway's alone, sent at most once).

use super::issuer::REFRESH_TOKEN_LIFETIME;
use super::persist::Mode;
use super::{unix_now, Grant, GrantState, Token, TokenError, TokenKey, Tokens};
use crate::secret::Secret;
use std::sync::Arc;

/// A merchant app's grant to import.
#[derive(Debug)]
pub struct ImportedGrant {
    /// The authorizer_refresh_token (never printed).
    pub refresh_token: Secret,
    /// Seconds it has left; `None`: a full lifetime ([`REFRESH_TOKEN_LIFETIME`]).
    pub refresh_expires_in: Option<u64>,
    /// The merchant app's permissions (the platform's `authorize_permission`), as the grant's
    /// comma-separated scope.
    pub permissions: Vec<String>,
}

impl Tokens {
    /// Stores `grant` as the merchant app `appid`'s of `provider`, replacing what was held (a
    /// dead grant, a back-off), with no live access token: the next call refreshes with it.
    pub async fn import_authorizer(
        &self,
        provider: &str,
        appid: &str,
        grant: ImportedGrant,
    ) -> Result<Arc<Token>, TokenError> {
        let settings = self.settings.load_full();
        let (name, _) = super::issuer::provider(&settings.issuer, provider)?;
        let refresh_in = grant.refresh_expires_in.unwrap_or(REFRESH_TOKEN_LIFETIME);
        let now = unix_now();
        let grant = Grant {
            refresh_token: grant.refresh_token,
            refresh_expires_unix: now + refresh_in,
            // Its history is unknown: issued a full platform lifetime before it expires.
            refresh_lifetime_secs: super::lifetime(REFRESH_TOKEN_LIFETIME.max(refresh_in)),
            renewals: 0,
            scope: Arc::from(grant.permissions.join(",")),
            state: GrantState::Active,
        };
        // An empty value that is expired from the start: never attached, and a restart reads it
        // back as expired too.
        let mut token = Token::new(self.cache.next_generation(), String::new(), 1, 0.5)?.killed();
        token.expires_unix = super::unix_u32(now);
        token.grant = Some(Arc::new(self.names.grant(grant)));
        self.install_token(&TokenKey::authorizer(Arc::clone(name), appid), token)
            .await
    }

    /// Stores a token obtained outside a fetch (an authorization, an import), replacing whatever
    /// the slot held and clearing any back-off.
    pub(super) async fn install_token(&self, key: &TokenKey, token: Token) -> Result<Arc<Token>, TokenError> {
        let settings = self.settings.load();
        // The key under the config's copy of the app's name: not one copy per user.
        let key = &self.names.key(&settings, key.clone());
        let slot = self.cache.slot(key);
        let mut flight = slot.flight().await;
        let expected = slot.current().map_or(0, |c| c.version);
        let token = self.put(&slot, key, token, expected, Mode::Overwrite, None).await;
        flight.reset();
        if slot.is_dirty() {
            // In use, and written by the next sweep; but not durable yet, which the caller must hear.
            return Err(TokenError::Network(
                "the token store is unavailable: the tokens are in use but only in memory until it answers".into(),
            ));
        }
        Ok(token)
    }
}
