//! Tokens: what the gateway attaches, where it keeps them, how it gets new ones.
//!
//! - [`cache`]: the in-memory map read on every request, with one fetch in
//!   flight per token however many requests wait, and back-off after failures.
//! - [`issuer`]: the calls to the platform's token endpoints.
//! - `persist`: the store side (writes with their conflict rules, coordination between
//!   instances), owned by [`Tokens`] and knowing nothing of its slots.
//! - [`upkeep`]: renewals, store events, what the admin API and gauges see.

pub mod cache;
pub mod issuer;
mod persist;
pub mod upkeep;

use crate::secret::Secret;
use http::HeaderValue;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use cache::{Need, Tokens};
pub use upkeep::TokenInfo;

/// The three token classes of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TokenClass {
    /// App-level client_token.
    Client,
    /// User access_token, by open_id.
    User,
    /// Enterprise biz_token, by open_id and scope.
    Biz,
}

impl TokenClass {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenClass::Client => "client",
            TokenClass::User => "user",
            TokenClass::Biz => "biz",
        }
    }

    /// All classes, for metric handles.
    pub const ALL: [TokenClass; 3] = [TokenClass::Client, TokenClass::User, TokenClass::Biz];
}

/// Which token: app, class and subject: nothing for client tokens, the open_id for user tokens,
/// open_id and scope for biz tokens ([`TokenKey::open_id`], [`TokenKey::biz_scope`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenKey {
    /// App name.
    pub app: Arc<str>,
    /// Class.
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

    /// A user's access_token.
    pub fn user(app: Arc<str>, open_id: &str) -> Self {
        TokenKey {
            app,
            class: TokenClass::User,
            subject: Arc::from(open_id),
        }
    }

    /// An enterprise biz_token.
    pub fn biz(app: Arc<str>, open_id: &str, scope: &str) -> Self {
        TokenKey {
            app,
            class: TokenClass::Biz,
            subject: Arc::from(format!("{open_id}\n{scope}")),
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

    /// The user a user or biz token acts for; `None` for a client token.
    pub fn open_id(&self) -> Option<&str> {
        match self.class {
            TokenClass::Client => None,
            TokenClass::User => Some(&self.subject),
            TokenClass::Biz => Some(self.subject.split_once('\n').map_or(&*self.subject, |(o, _)| o)),
        }
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
    /// The refresh_token is dead (expired, 10010, revoked): the user must authorize again.
    Dead(String),
}

/// What renews a user or biz token: its refresh_token and how long it lives.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The refresh_token (biz: biz_refresh_token).
    pub refresh_token: Secret,
    /// When it expires, Unix seconds.
    pub refresh_expires_unix: u64,
    /// Its full lifetime when issued or renewed (the platform says 30 days).
    pub refresh_lifetime_secs: u64,
    /// Renewals used (the platform allows 5).
    pub renewals: u32,
    /// Granted scopes, comma-separated; one shared copy per distinct value ([`scope`]).
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

/// A token with its pre-built header value.
#[derive(Debug, Clone)]
pub struct Token {
    /// Distinguishes this token from the one before it: a rejection names the
    /// generation it saw, so a newer token is never dropped for an older one's failure.
    pub generation: u64,
    /// `access-token` header value, marked sensitive; the one copy of the token (see [`Token::value`]).
    pub header: HeaderValue,
    /// When it was obtained.
    pub obtained_at: Instant,
    /// Milliseconds after `obtained_at` to refresh it in the background ([`Token::refresh_at`]).
    /// Offsets, not instants: 8 bytes instead of 32 in every cached token.
    refresh_after_ms: u32,
    /// Milliseconds after `obtained_at` to stop using it ([`Token::expires_at`]).
    expires_after_ms: u32,
    /// The platform's expiry, Unix seconds (for the admin API and the store).
    pub expires_unix: u64,
    /// How to renew it (user and biz tokens).
    pub grant: Option<Arc<Grant>>,
    /// Fetched because the platform rejected the token before it.
    pub replaced_rejected: bool,
    /// Its early eviction was counted and logged already (once per token, however many calls
    /// carried it).
    pub evicted_noted: Flag,
    /// The store's version of the record this token was written as (0: never written).
    pub version: u64,
}

impl Token {
    /// Builds a token obtained now, valid `expires_in` seconds.
    pub fn new(generation: u64, value: String, expires_in: u64, refresh_fraction: f64) -> Result<Self, TokenError> {
        let mut header = HeaderValue::from_str(&value)
            .map_err(|_| TokenError::Malformed("token is not a valid header value".into()))?;
        header.set_sensitive(true);
        let now = Instant::now();
        let life = Duration::from_secs(expires_in.max(1));
        // Stop using it a little early so a call in flight does not carry a token that dies on the way.
        let margin = (life / 10).min(Duration::from_secs(30));
        Ok(Token {
            generation,
            header,
            obtained_at: now,
            refresh_after_ms: millis(life.mul_f64(refresh_fraction)),
            expires_after_ms: millis(life - margin),
            expires_unix: unix_now() + expires_in,
            grant: None,
            replaced_rejected: false,
            evicted_noted: Flag::default(),
            version: 0,
        })
    }

    /// The token itself, for query injection and the store. Kept only in `header`, so a cache of
    /// many users holds each token once.
    pub fn value(&self) -> &str {
        self.header.to_str().expect("built from a str of visible ASCII")
    }

    /// After this, refresh it in the background.
    pub fn refresh_at(&self) -> Instant {
        self.obtained_at + Duration::from_millis(self.refresh_after_ms.into())
    }

    /// After this, do not use it (a margin before the platform's expiry).
    pub fn expires_at(&self) -> Instant {
        self.obtained_at + Duration::from_millis(self.expires_after_ms.into())
    }

    /// The same token, no longer to be used (the platform rejected it), its grant kept.
    pub fn killed(&self) -> Token {
        Token {
            expires_after_ms: 0,
            refresh_after_ms: 0,
            ..self.clone()
        }
    }

    /// The same token with another grant.
    pub fn with_grant(&self, grant: Grant) -> Token {
        Token {
            grant: Some(Arc::new(grant)),
            ..self.clone()
        }
    }
}

/// The one shared copy of a scope string: most users grant the same scopes, so a cache of many
/// users holds each distinct scope once.
pub fn scope(s: &str) -> Arc<str> {
    static SCOPES: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<Arc<str>>>> =
        std::sync::OnceLock::new();
    let mut set = SCOPES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(s) = set.get(s) {
        return Arc::clone(s);
    }
    let s: Arc<str> = Arc::from(s);
    set.insert(Arc::clone(&s));
    s
}

/// A flag set once, from any thread.
#[derive(Debug, Default)]
pub struct Flag(std::sync::atomic::AtomicBool);

impl Flag {
    /// Sets it; true if it was set already.
    pub fn set(&self) -> bool {
        self.0.swap(true, std::sync::atomic::Ordering::AcqRel)
    }
}

impl Clone for Flag {
    fn clone(&self) -> Self {
        Flag(std::sync::atomic::AtomicBool::new(
            self.0.load(std::sync::atomic::Ordering::Acquire),
        ))
    }
}

/// A lifetime in milliseconds; one over 49 days counts as 49 days (refreshed early, never late).
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Why a token could not be had. Messages name no token or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The endpoint could not be reached.
    #[error("token endpoint unreachable: {0}")]
    Network(String),
    /// The endpoint did not answer in time.
    #[error("token endpoint did not answer within {0} ms")]
    Timeout(u64),
    /// An HTTP error status.
    #[error("token endpoint answered HTTP {0}")]
    Status(u16),
    /// Not the JSON the platform documents.
    #[error("token endpoint answered malformed JSON: {0}")]
    Malformed(String),
    /// 10020 on the client_token endpoint.
    #[error("token endpoint rate-limited the app (10020: over 500 calls in 5 minutes)")]
    RateLimited,
    /// 10002/10003/10013: a configuration error.
    #[error(
        "token endpoint refused the app's credentials ({code}: {description}); check client_key and the client secret"
    )]
    BadCredentials {
        /// Platform code.
        code: i64,
        /// Platform description.
        description: String,
    },
    /// Any other platform error code.
    #[error("token endpoint refused ({code}: {description})")]
    Refused {
        /// Platform code.
        code: i64,
        /// Platform description.
        description: String,
    },
    /// No tokens for this user, or their refresh_token is dead.
    #[error("{0}")]
    AuthorizationRequired(String),
    /// The platform refuses to renew the refresh_token again (its renewal limit): it still works
    /// until it expires, and the user must re-consent before then.
    #[error("the refresh_token may not be renewed again ({0}): the user must authorize again before it expires")]
    RenewalsExhausted(i64),
    /// The app used its client_token fetch budget (`tokens.client_token_fetch_budget`).
    #[error("the app made {budget} client_token fetches in the last 5 minutes, its budget (tokens.client_token_fetch_budget); next fetch allowed in {retry_in_ms} ms")]
    BudgetExhausted {
        /// The budget.
        budget: u32,
        /// Time until a fetch leaves the window.
        retry_in_ms: u64,
    },
    /// The app named by a route no longer exists.
    #[error("app {0:?} is not configured")]
    UnknownApp(String),
    /// A recent fetch failed; waiting before the next.
    #[error("{last}; next attempt in {retry_in_ms} ms")]
    BackingOff {
        /// The failure that started the back-off.
        last: Box<TokenError>,
        /// Time left.
        retry_in_ms: u64,
    },
}

impl TokenError {
    /// Metric outcome label.
    pub fn outcome(&self) -> &'static str {
        match self {
            TokenError::Network(_) => "network",
            TokenError::Timeout(_) => "timeout",
            TokenError::Status(_) => "http_status",
            TokenError::Malformed(_) => "malformed",
            TokenError::RateLimited => "rate_limited",
            TokenError::BadCredentials { .. } => "bad_credentials",
            TokenError::Refused { .. } => "refused",
            TokenError::AuthorizationRequired(_) | TokenError::RenewalsExhausted(_) => "reauthorize",
            TokenError::UnknownApp(_) => "unknown_app",
            TokenError::BudgetExhausted { .. } => "budget_exhausted",
            TokenError::BackingOff { .. } => "backing_off",
        }
    }

    /// Whether the caller must send the user through authorization.
    pub fn needs_authorization(&self) -> bool {
        match self {
            TokenError::AuthorizationRequired(_) | TokenError::RenewalsExhausted(_) => true,
            TokenError::BackingOff { last, .. } => last.needs_authorization(),
            _ => false,
        }
    }
}
