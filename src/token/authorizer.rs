//! Merchant apps' authorizer tokens (class [`TokenClass::Authorizer`]): the engine's side.
//!
//! A provider's authorizer token comes from an authorization code (pushed to its event URL, or
//! retrieved) and is renewed with a refresh token the platform accepts **once**. So:
//!
//! - one refresh at a time per merchant app, in the process (the slot's flight) and across
//!   instances (the store's lease), as for every token;
//! - before a refresh token is sent, its fingerprint is written to the store as *spent*
//!   ([`KIND_SPENT_REFRESH`]): a process killed between the platform's answer and the write of the
//!   new grant leaves the old grant stored and marked spent, and the next fetch does not send it
//!   again; nor does a fetch after one that failed on the way;
//! - a spent or refused refresh token is not the end: the platform lets a provider retrieve a new
//!   authorization code for any merchant app that still authorizes it (找回授权码), which is
//!   exchanged for a new grant. Only a merchant app that withdrew its authorization needs a human:
//!   `authorizer.reauthorization_required`, and 401 `authorizer_authorization_required` to callers.
//!
//! The credential of these calls is the provider's component token (V1) or its own client_token
//! (V2), each a token of the engine's, obtained and refreshed like any other.

use super::events::Event;
use super::issuer::authorizer::{self as issuer, Credential, Refusal};
use super::issuer::{Fetched, ProviderCreds};
use super::{Need, Settings, Token, TokenClass, TokenError, TokenKey, Tokens};
use crate::store::{StoreError, KIND_SPENT_REFRESH};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Test hook (debug builds only): the process kills itself with SIGKILL at the named point, as a
/// crash would, when `DOUYIN_GATEWAY_CRASH_AT` names it: `authorizer_refreshed` (after the
/// platform answered a refresh, before the new grant is written), `authorizer_exchanged` (after a
/// code exchange answered, before the write).
pub(super) fn crash_point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("DOUYIN_GATEWAY_CRASH_AT").is_ok_and(|v| v == name) {
        eprintln!("crash point {name}: SIGKILL");
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        std::thread::sleep(std::time::Duration::from_secs(5));
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Which event brought an authorization code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationEvent {
    /// `AUTHORIZED`: a merchant app authorized the provider.
    Authorized,
    /// `UPDATE_AUTHORIZED`: the platform's notice of a code retrieved (找回授权码) or an
    /// authorization changed. Its code is not retrieved again when refused.
    Retrieved,
}

/// What a merchant app's authorization needs to be told apart: `provider/appid`.
fn spent_name(key: &TokenKey) -> String {
    format!("{}/{}", key.app, key.subject())
}

/// A refresh token's fingerprint (the marker holds no token).
fn fingerprint(refresh_token: &str) -> Vec<u8> {
    Sha256::digest(refresh_token.as_bytes())[..16].to_vec()
}

impl Tokens {
    /// The provider's credential for the authorizer endpoints: its component token (V1) or its
    /// client_token (V2).
    async fn provider_credential(
        &self,
        name: &Arc<str>,
        p: &ProviderCreds,
        need: Need,
    ) -> Result<Arc<Token>, TokenError> {
        let key = match (&p.v2, &p.client_app) {
            (false, _) => TokenKey::component(Arc::clone(name)),
            (true, Some(app)) => TokenKey::client(Arc::clone(app)),
            (true, None) => {
                return Err(TokenError::BadCredentials {
                    code: 0,
                    description: format!(
                    "provider {name:?} uses api_version \"v2\", whose authorizer tokens need its own client_key and \
                         client_secret_env"
                ),
                })
            }
        };
        Box::pin(self.obtain(&key, need)).await
    }

    /// Runs `call` with the provider's credential; once more with a new one if the platform says
    /// the credential expired or is wrong.
    async fn with_credential<T, F, Fut>(&self, name: &Arc<str>, p: &ProviderCreds, call: F) -> Result<T, TokenError>
    where
        F: Fn(Arc<Token>) -> Fut,
        Fut: std::future::Future<Output = Result<T, TokenError>>,
    {
        let cred = self.provider_credential(name, p, Need::Any).await?;
        self.retry_credential(name, p, cred, call).await?
    }

    /// Runs `call` with `cred`; once more with a new credential if the platform refused that one
    /// (which used nothing else of the call). `Err`: the new credential could not be had; else
    /// the call's own result.
    async fn retry_credential<T, F, Fut>(
        &self,
        name: &Arc<str>,
        p: &ProviderCreds,
        cred: Arc<Token>,
        call: F,
    ) -> Result<Result<T, TokenError>, TokenError>
    where
        F: Fn(Arc<Token>) -> Fut,
        Fut: std::future::Future<Output = Result<T, TokenError>>,
    {
        match call(Arc::clone(&cred)).await {
            Err(e) if Refusal::of(&e) == Some(Refusal::Credential) => {
                tracing::info!(provider = %name, "the platform refused the provider's credential; getting a new one");
                let cred = self
                    .provider_credential(name, p, Need::Rejected(cred.generation))
                    .await?;
                Ok(call(cred).await)
            }
            other => Ok(other),
        }
    }

    /// A new authorizer token for `key` (the engine's fetch for this class): a refresh with the
    /// stored grant, or, when that refresh token is spent or refused, a retrieved code exchanged.
    pub(super) async fn fetch_authorizer(
        &self,
        settings: &Settings,
        key: &TokenKey,
        current: Option<&Token>,
    ) -> Result<Fetched, TokenError> {
        let name = &key.app;
        let (_, p) = super::issuer::provider(&settings.issuer, name)?;
        let appid = key.subject();
        let Some(grant) = current.and_then(|t| t.grant.as_deref()) else {
            return Err(not_authorized(name, appid));
        };
        if let super::GrantState::Dead(why) = &grant.state {
            return Err(TokenError::AuthorizationRequired(why.to_string()));
        }
        let print = fingerprint(grant.refresh_token.expose());
        if !self.is_spent(key, &print).await? {
            // The credential first: a refresh token is marked spent only just before it is sent.
            let cred = self.provider_credential(name, p, Need::Any).await?;
            self.mark_spent(key, &print).await?;
            let refresh = |cred: Arc<Token>| async move { issuer::refresh(p, &Credential(cred.value()), grant).await };
            let refreshed = match self.retry_credential(name, p, cred, refresh).await {
                Ok(r) => r,
                Err(e) => {
                    // Refused for the credential, and no new one: the refresh token was not used.
                    self.mark_spent(key, &[]).await?;
                    return Err(e);
                }
            };
            match refreshed {
                Ok(f) => {
                    crash_point("authorizer_refreshed");
                    return Ok(f);
                }
                Err(e) if matches!(Refusal::of(&e), Some(Refusal::RefreshToken | Refusal::NotAuthorized)) => {
                    tracing::warn!(provider = %name, authorizer_appid = appid,
                        "the platform refused the stored refresh token ({e}); retrieving a new authorization code");
                }
                Err(e @ TokenError::Refused { .. }) => {
                    // The platform answered, and refused for another reason (busy, a rate limit):
                    // the refresh token was not used, and may be sent again.
                    self.mark_spent(key, &[]).await?;
                    return Err(e);
                }
                // No answer, or not one that can be read: the token may have been used. It stays
                // marked spent, and the next fetch retrieves a code.
                Err(e) => return Err(e),
            }
        } else {
            tracing::warn!(provider = %name, authorizer_appid = appid,
                "the stored refresh token was sent before and its answer never stored (a crash, or a failed call): \
                 not sending it again; retrieving a new authorization code");
        }
        self.retrieve_grant(name, p, appid).await
    }

    /// Whether `print` (a refresh token's) is marked spent for `key`, in memory or in the store.
    async fn is_spent(&self, key: &TokenKey, print: &[u8]) -> Result<bool, TokenError> {
        let name = spent_name(key);
        if self.spent.get(&name).is_some_and(|v| *v == print) {
            return Ok(true);
        }
        match self.persist.store().get_value(KIND_SPENT_REFRESH, &name).await {
            Ok(v) => Ok(v.as_deref() == Some(print)),
            // Sealed under a key no longer configured: whether this token was sent is unknown,
            // so it is treated as sent.
            Err(StoreError::Unreadable { .. }) => Ok(true),
            // Without the mark a crash could not be told from a refusal: do not spend the token
            // blind.
            Err(e) => Err(TokenError::Network(format!("token store unavailable: {e}"))),
        }
    }

    /// Marks `print` spent for `key` (empty: nothing spent), in the store and in memory (the
    /// memory store keeps no values). A store that does not take it stops the refresh.
    async fn mark_spent(&self, key: &TokenKey, print: &[u8]) -> Result<(), TokenError> {
        let name = spent_name(key);
        self.persist
            .store()
            .put_value(KIND_SPENT_REFRESH, &name, print)
            .await
            .map_err(|e| TokenError::Network(format!("token store unavailable: {e}")))?;
        if print.is_empty() {
            self.spent.remove(&name);
        } else {
            self.spent.insert(name, print.to_vec());
        }
        Ok(())
    }

    /// A new grant for a merchant app that still authorizes the provider: a retrieved code,
    /// exchanged. The merchant app having withdrawn: [`TokenError::AuthorizationRequired`].
    async fn retrieve_grant(&self, name: &Arc<str>, p: &ProviderCreds, appid: &str) -> Result<Fetched, TokenError> {
        let code = self
            .with_credential(name, p, |cred| async move {
                issuer::retrieve_code(p, &Credential(cred.value()), appid).await
            })
            .await
            .map_err(|e| match Refusal::of(&e) {
                Some(Refusal::NotAuthorized) => TokenError::AuthorizationRequired(format!(
                    "merchant app {appid} no longer authorizes provider {name:?} ({e}): it must authorize again"
                )),
                _ => e,
            })?;
        let (_, fetched) = self
            .with_credential(name, p, |cred| {
                let code = code.clone();
                async move { issuer::exchange_code(p, &Credential(cred.value()), &code).await }
            })
            .await?;
        crash_point("authorizer_exchanged");
        tracing::info!(provider = %name, authorizer_appid = appid, "a new grant from a retrieved authorization code");
        Ok(fetched)
    }

    /// A merchant app authorized the provider (`AUTHORIZED`, `UPDATE_AUTHORIZED`): the code is
    /// exchanged at once and the grant stored before it is used. A code the platform refuses (used
    /// already: the event delivered again after a crash) is replaced by a retrieved one.
    pub async fn authorize_authorizer(
        &self,
        provider: &str,
        appid: &str,
        code: &str,
        event: AuthorizationEvent,
    ) -> Result<Arc<Token>, TokenError> {
        let settings = self.settings.load_full();
        let (name, p) = super::issuer::provider(&settings.issuer, provider)?;
        // The credential's own failures are not the code's: answered as they are (503, delivered
        // again), never a reason to retrieve a code.
        let cred = self.provider_credential(name, p, Need::Any).await?;
        let exchange =
            |cred: Arc<Token>| async move { issuer::exchange_code(p, &Credential(cred.value()), code).await };
        let exchanged = self.retry_credential(name, p, cred, exchange).await?;
        let fetched = match exchanged {
            Ok((named, f)) => {
                if let Some(other) = named.filter(|n| n != appid) {
                    return Err(TokenError::Malformed(format!(
                        "the code was for merchant app {other}, the event for {appid}"
                    )));
                }
                crash_point("authorizer_exchanged");
                f
            }
            // The code itself refused (used, expired, unknown).
            Err(e) if Refusal::of(&e) == Some(Refusal::Other) => {
                let key = TokenKey::authorizer(Arc::clone(name), appid);
                if let Some(held) = self.held_grant(&key).await {
                    // The platform pushes every code a provider retrieves back as
                    // UPDATE_AUTHORIZED; that code was spent by the retrieval itself. Retrieving
                    // again would push again, without end.
                    tracing::info!(
                        provider,
                        authorizer_appid = appid,
                        "the event's code was used already ({e}) and a grant is held: nothing to do"
                    );
                    return Ok(held);
                }
                if event == AuthorizationEvent::Retrieved {
                    // Never retrieve for a retrieval's own notification.
                    return Err(e);
                }
                tracing::warn!(
                    provider,
                    authorizer_appid = appid,
                    "the authorization code was refused ({e}); retrieving one"
                );
                self.retrieve_grant(name, p, appid).await?
            }
            Err(e) => return Err(e),
        };
        let key = TokenKey::authorizer(Arc::clone(name), appid);
        self.install(&key, fetched).await
    }

    /// The token of `key` if a live grant is held for it (in memory, or in a shared store).
    pub async fn held_grant(&self, key: &TokenKey) -> Option<Arc<Token>> {
        let slot = match self.cache.get(key) {
            Some(s) => s,
            None => self.slot_from_store(key).await?,
        };
        slot.current().filter(|t| {
            t.grant
                .as_deref()
                .is_some_and(|g| !matches!(g.state, super::GrantState::Dead(_)))
        })
    }

    /// A merchant app withdrew its authorization (`UNAUTHORIZED`), or the admin API forgets it:
    /// its token and grant go, in memory and in the store. Whether anything was held.
    pub async fn remove_authorizer(&self, provider: &str, appid: &str) -> Result<bool, StoreError> {
        let in_memory = self
            .cache
            .retain(|k| !(k.class == TokenClass::Authorizer && &*k.app == provider && k.subject() == appid));
        let key = TokenKey::authorizer(Arc::from(provider), appid);
        let stored = self.persist.store().delete(&key).await?;
        Ok(in_memory > 0 || stored)
    }

    /// Tells the subscribers a merchant app's authorization is gone or must be given again.
    pub(super) fn authorizer_lost(&self, key: &TokenKey, reason: &str, unauthorized: bool) {
        self.events.publish(&Event::AuthorizerLost {
            provider: &key.app,
            authorizer_appid: key.subject(),
            reason,
            unauthorized,
        });
    }
}

/// No grant held for a merchant app.
pub(super) fn not_authorized(provider: &str, appid: &str) -> TokenError {
    TokenError::AuthorizationRequired(format!(
        "no authorization is stored for merchant app {appid:?} of provider {provider:?}: it must authorize the \
         provider (the platform then pushes AUTHORIZED to /providers/{provider}/events), or import its refresh \
         token through the admin API"
    ))
}
