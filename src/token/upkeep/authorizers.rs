//! What the admin API sees of one service provider's merchant apps: each one's state, from the
//! cache and, with a shared store, from the store too (merchant apps authorized through another
//! instance, or not needed here since the start).

use super::view::TokenInfo;
use crate::store::StoreError;
use crate::token::{unix_now, TokenClass, Tokens};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

impl Tokens {
    /// `provider`'s merchant apps by appid, without token values: those cached, and with a
    /// shared store every one it holds (the newer of the two where both have one).
    pub async fn authorizers(&self, provider: &str) -> Result<Vec<TokenInfo>, StoreError> {
        let (now, now_unix, tuning) = (Instant::now(), unix_now(), self.settings.load().tuning);
        let mut out: BTreeMap<String, TokenInfo> = self
            .cached_authorizers(provider)
            .into_iter()
            .map(|i| (i.key.subject().to_string(), i))
            .collect();
        for r in self
            .persist
            .store()
            .shared_records(provider, TokenClass::Authorizer)
            .await?
        {
            let appid = r.key.subject().to_string();
            if out.get(&appid).is_some_and(|cached| cached.version >= r.version) {
                continue;
            }
            let key = r.key.clone();
            let Ok(t) = self.token_of(r) else { continue };
            out.insert(appid, Self::info(&key, Some(&Arc::new(t)), now, now_unix, tuning));
        }
        Ok(out.into_values().collect())
    }

    /// `provider`'s merchant apps this instance holds, by appid, without token values (no store
    /// read: for the status page).
    pub fn cached_authorizers(&self, provider: &str) -> Vec<TokenInfo> {
        let (now, now_unix, tuning) = (Instant::now(), unix_now(), self.settings.load().tuning);
        let mut out = Vec::new();
        self.cache.for_each(|key, slot| {
            if key.class == TokenClass::Authorizer && &*key.app == provider {
                out.push(Self::info(key, slot.current().as_ref(), now, now_unix, tuning));
            }
        });
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}
