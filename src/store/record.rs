//! The stored form of one token: who it is for in the clear (app, class,
//! subject, version), everything secret sealed.

use super::crypto::Keys;
use super::StoreError;
use crate::secret::Secret;
use crate::vocab::{Grant, GrantState, TokenClass, TokenKey};
use serde::{Deserialize, Serialize};

/// One stored token.
#[derive(Debug, Clone)]
pub struct Record {
    /// Which token.
    pub key: TokenKey,
    /// Compare-and-swap version; 0 means never stored.
    pub version: u64,
    /// The token.
    pub access_token: Secret,
    /// Its expiry, Unix seconds.
    pub expires_unix: u64,
    /// How to renew it.
    pub grant: Option<Grant>,
    /// Read under the previous key: rewrite it under the current one.
    pub stale_key: bool,
}

#[derive(Serialize, Deserialize)]
struct SealedBody {
    access_token: String,
    expires_unix: u64,
    grant: Option<SealedGrant>,
}

#[derive(Serialize, Deserialize)]
struct SealedGrant {
    refresh_token: String,
    refresh_expires_unix: u64,
    refresh_lifetime_secs: u64,
    renewals: u32,
    scope: String,
    /// `active`, `exhausted`, or `dead`.
    state: String,
    #[serde(default)]
    dead_reason: String,
}

/// The class's name in the store.
pub fn class_name(c: TokenClass) -> &'static str {
    c.as_str()
}

/// A class from its stored name.
pub fn class_from(s: &str) -> Option<TokenClass> {
    TokenClass::ALL.into_iter().find(|c| c.as_str() == s)
}

impl Record {
    /// The associated data binding a sealed body to its row.
    pub fn aad(key: &TokenKey) -> Vec<u8> {
        format!(
            "douyin-gateway/v1\n{}\n{}\n{}",
            key.app,
            class_name(key.class),
            key.subject()
        )
        .into_bytes()
    }

    /// The body to seal.
    pub fn body(&self) -> Vec<u8> {
        let grant = self.grant.as_ref().map(|g| SealedGrant {
            refresh_token: g.refresh_token.expose().to_string(),
            refresh_expires_unix: g.refresh_expires_unix,
            refresh_lifetime_secs: g.refresh_lifetime_secs.into(),
            renewals: g.renewals,
            scope: g.scope.to_string(),
            state: match g.state {
                GrantState::Active => "active",
                GrantState::RenewalsExhausted => "exhausted",
                GrantState::Dead(_) => "dead",
            }
            .into(),
            dead_reason: match &g.state {
                GrantState::Dead(why) => why.to_string(),
                _ => String::new(),
            },
        });
        serde_json::to_vec(&SealedBody {
            access_token: self.access_token.expose().to_string(),
            expires_unix: self.expires_unix,
            grant,
        })
        .expect("json")
    }

    /// A record from its clear fields and its sealed body.
    pub fn open(keys: &Keys, key: TokenKey, version: u64, sealed: &[u8]) -> Result<Record, StoreError> {
        let name = format!(
            "{}/{}/{}",
            key.app,
            key.class.as_str(),
            key.subject().replace('\n', "/")
        );
        let (body, stale) = keys
            .open(&Record::aad(&key), sealed)
            .map_err(|e| StoreError::Unreadable {
                key: name.clone(),
                reason: e.to_string(),
            })?;
        Record::from_body(key, version, &body, stale).map_err(|reason| StoreError::Unreadable { key: name, reason })
    }

    /// A record from its clear fields and opened body.
    pub fn from_body(key: TokenKey, version: u64, body: &[u8], stale_key: bool) -> Result<Record, String> {
        let b: SealedBody = serde_json::from_slice(body).map_err(|e| format!("unreadable body: {e}"))?;
        let grant = b.grant.map(|g| Grant {
            refresh_token: Secret::new(g.refresh_token),
            refresh_expires_unix: g.refresh_expires_unix,
            refresh_lifetime_secs: crate::vocab::lifetime(g.refresh_lifetime_secs),
            renewals: g.renewals,
            scope: std::sync::Arc::from(g.scope.as_str()),
            state: match g.state.as_str() {
                "exhausted" => GrantState::RenewalsExhausted,
                "dead" => GrantState::Dead(std::sync::Arc::new(g.dead_reason)),
                _ => GrantState::Active,
            },
        });
        Ok(Record {
            key,
            version,
            access_token: Secret::new(b.access_token),
            expires_unix: b.expires_unix,
            grant,
            stale_key,
        })
    }
}
