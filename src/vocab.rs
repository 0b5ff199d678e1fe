//! The token vocabulary: which token ([`TokenKey`], [`TokenClass`]), what renews a user's
//! ([`Grant`]), and the time helpers they are stored with. It imports nothing of the gateway's
//! but [`crate::secret`]: the store, metrics, notify and the token engine all speak it, and none
//! of them needs another to do so.

use crate::secret::Secret;
use std::sync::Arc;

mod lookup;

pub use lookup::{KeyRef, Lookup};

/// The platform's token classes: three of the Open Platform, and the mini-app server token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TokenClass {
    /// App-level client_token.
    Client,
    /// User access_token, by open_id.
    User,
    /// Enterprise biz_token, by open_id and scope.
    Biz,
    /// The mini-app server access_token (`/api/apps/v2/token` on developer.toutiao.com): app-level,
    /// like the client_token.
    MiniApp,
    /// A service provider's component_access_token (the key's app is the provider's name), from
    /// its latest component_ticket.
    Component,
    /// A merchant app's authorizer_access_token, held by a service provider (the key's app is the
    /// provider's name, its subject the `authorizer_appid`), renewed with a single-use refresh
    /// token.
    Authorizer,
}

impl TokenClass {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenClass::Client => "client",
            TokenClass::User => "user",
            TokenClass::Biz => "biz",
            TokenClass::MiniApp => "mini_app",
            TokenClass::Component => "component",
            TokenClass::Authorizer => "authorizer",
        }
    }

    /// Whether it belongs to the app, not to a user: one per app, fetched with the app's
    /// credentials, and a new one shortens the previous one's life (so one owner must fetch it,
    /// within a budget).
    pub fn is_app_level(self) -> bool {
        matches!(self, TokenClass::Client | TokenClass::MiniApp | TokenClass::Component)
    }

    /// All classes, for metric handles.
    pub const ALL: [TokenClass; 6] = [
        TokenClass::Client,
        TokenClass::User,
        TokenClass::Biz,
        TokenClass::MiniApp,
        TokenClass::Component,
        TokenClass::Authorizer,
    ];
}

/// Which token: app, class and subject: nothing for client tokens, the open_id for user tokens,
/// open_id and scope for biz tokens ([`TokenKey::open_id`], [`TokenKey::biz_scope`]). Found
/// in a map from its borrowed parts too ([`KeyRef`]; its `Hash` is there).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenKey {
    /// App name.
    pub app: Arc<str>,
    /// What kind of token.
    pub class: TokenClass,
    /// The subject in its stored form (one allocation per key: `open_id`, or `open_id\nscope`);
    /// read it through the accessors.
    subject: Arc<str>,
}

impl TokenKey {
    /// An app's client_token.
    pub fn client(app: Arc<str>) -> Self {
        TokenKey {
            app,
            class: TokenClass::Client,
            subject: Arc::from(""),
        }
    }

    /// An app's mini-app server access_token.
    pub fn mini_app(app: Arc<str>) -> Self {
        TokenKey {
            app,
            class: TokenClass::MiniApp,
            subject: Arc::from(""),
        }
    }

    /// A service provider's component_access_token (`provider`: its `[[providers]]` name).
    pub fn component(provider: Arc<str>) -> Self {
        TokenKey {
            app: provider,
            class: TokenClass::Component,
            subject: Arc::from(""),
        }
    }

    /// A merchant app's authorizer_access_token, held by `provider` (its `[[providers]]` name).
    pub fn authorizer(provider: Arc<str>, authorizer_appid: &str) -> Self {
        TokenKey {
            app: provider,
            class: TokenClass::Authorizer,
            subject: Arc::from(authorizer_appid),
        }
    }

    /// A user's access_token.
    pub fn user(app: Arc<str>, open_id: &str) -> Self {
        TokenKey {
            app,
            class: TokenClass::User,
            subject: Arc::from(open_id),
        }
    }

    /// An enterprise biz_token. Its subject `open_id\nscope` is put together on the stack when
    /// short (as it always is): one allocation, the key's own, and no formatter.
    pub fn biz(app: Arc<str>, open_id: &str, scope: &str) -> Self {
        let mut joined = [0u8; 256];
        let len = open_id.len() + 1 + scope.len();
        let subject: Arc<str> = match joined.get_mut(..len) {
            Some(out) => {
                out[..open_id.len()].copy_from_slice(open_id.as_bytes());
                out[open_id.len()] = b'\n';
                out[open_id.len() + 1..].copy_from_slice(scope.as_bytes());
                Arc::from(std::str::from_utf8(out).expect("two strs and a newline"))
            }
            None => Arc::from([open_id, scope].join("\n")),
        };
        TokenKey {
            app,
            class: TokenClass::Biz,
            subject,
        }
    }

    /// A key as a store keeps it (app, class, [`TokenKey::subject`]).
    pub fn stored(app: Arc<str>, class: TokenClass, subject: &str) -> Self {
        TokenKey {
            app,
            class,
            subject: Arc::from(subject),
        }
    }

    /// The same key under another copy of its app's name (the one copy the config owns).
    pub fn with_app(self, app: Arc<str>) -> Self {
        debug_assert_eq!(*app, *self.app);
        TokenKey { app, ..self }
    }

    /// The user a user or biz token acts for; `None` for a client token.
    pub fn open_id(&self) -> Option<&str> {
        match self.class {
            TokenClass::Client | TokenClass::MiniApp | TokenClass::Component | TokenClass::Authorizer => None,
            TokenClass::User => Some(&self.subject),
            TokenClass::Biz => Some(self.subject.split_once('\n').map_or(&*self.subject, |(o, _)| o)),
        }
    }

    /// The merchant app an authorizer token acts for; `None` for the other classes.
    pub fn authorizer_appid(&self) -> Option<&str> {
        (self.class == TokenClass::Authorizer).then_some(&*self.subject)
    }

    /// A biz token's scope; `None` for the other classes.
    pub fn biz_scope(&self) -> Option<&str> {
        match self.class {
            TokenClass::Biz => Some(self.subject.split_once('\n').map_or("", |(_, s)| s)),
            _ => None,
        }
    }

    /// The subject's stored form: part of a store's key and of a sealed record's associated data,
    /// so it never changes (`""`, `open_id`, `open_id\nscope`).
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// An appid as the platform writes them (`tt` and hex; letters, digits, `_`, `-`), at most 64
/// bytes: what a merchant app's key may be made of.
pub fn valid_appid(a: &str) -> bool {
    !a.is_empty() && a.len() <= 64 && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where a user's (or enterprise's) consent stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantState {
    /// The refresh_token works and can be renewed.
    Active,
    /// The refresh_token works until it expires but cannot be renewed again:
    /// the user must re-consent before `refresh_expires_unix`.
    RenewalsExhausted,
    /// The refresh_token is dead (expired, 10010, revoked): the user must authorize again. A thin
    /// pointer to the reason, so the state takes 16 bytes of every cached user's grant, not 24.
    Dead(Arc<String>),
}

/// What renews a user or biz token: its refresh_token and how long it lives.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The refresh_token (biz: biz_refresh_token).
    pub refresh_token: Secret,
    /// When it expires, Unix seconds.
    pub refresh_expires_unix: u64,
    /// Its full lifetime when issued or renewed (the platform says 30 days); see [`lifetime`].
    pub refresh_lifetime_secs: u32,
    /// Renewals used (the platform allows 5).
    pub renewals: u32,
    /// Granted scopes, comma-separated (the engine keeps one shared copy per distinct value).
    pub scope: Arc<str>,
    /// Whether it still works.
    pub state: GrantState,
}

impl Grant {
    /// Whether the refresh_token can still be used.
    pub fn usable(&self, now_unix: u64) -> bool {
        !matches!(self.state, GrantState::Dead(_)) && self.refresh_expires_unix > now_unix
    }
}

/// A lifetime in seconds as a grant keeps it: 4 bytes (136 years) rather than 8.
pub fn lifetime(secs: u64) -> u32 {
    u32::try_from(secs).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_biz_key_keeps_open_id_and_scope_however_long() {
        let long = "o".repeat(300);
        for (open_id, scope) in [("ou_1", "video.data"), ("", ""), (&long[..], "s"), ("ou_é", &long[..])] {
            let k = TokenKey::biz(Arc::from("main"), open_id, scope);
            assert_eq!(k.subject(), format!("{open_id}\n{scope}"));
            assert_eq!((k.open_id(), k.biz_scope()), (Some(open_id), Some(scope)));
            assert_eq!(
                k,
                TokenKey::stored(Arc::from("main"), TokenClass::Biz, &format!("{open_id}\n{scope}"))
            );
        }
    }
}
