//! What the emulated platform remembers: issued tokens, codes, call budgets,
//! faults, a clock offset for tests, counters and a log of API calls.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The platform's window for the client_token budget.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(300);
/// A new client_token shortens the previous one to this.
pub const OVERLAP: Duration = Duration::from_secs(300);
/// An authorization code lives this long.
pub const CODE_TTL: Duration = Duration::from_secs(600);
/// API calls remembered for `/sandbox/requests`.
const LOG_CAP: usize = 2000;

/// How token endpoints misbehave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TokenFault {
    /// Behave.
    #[default]
    None,
    /// Close the connection without an answer.
    Down,
    /// HTTP 500.
    Status500,
    /// Not JSON.
    Malformed,
    /// 10020 on every call.
    RateLimited,
}

/// Faults, settable at start (flags) and at run time (`POST /sandbox/faults`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Token endpoint behaviour.
    pub token_endpoint: TokenFault,
    /// Extra latency of token endpoints.
    pub token_latency_ms: u64,
    /// Extra latency of API calls.
    pub api_latency_ms: u64,
    /// Share of API calls answered with HTTP 500.
    pub api_status500_rate: f64,
    /// Share of API calls answered with malformed JSON.
    pub api_malformed_rate: f64,
    /// Every token endpoint refuses with this error (envelope A), whatever is asked.
    pub token_error: Option<PlatformError>,
}

/// An error the platform answers with: its code and description.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformError {
    /// `error_code`.
    pub code: i64,
    /// `description`, any text (a test puts line breaks in it).
    pub description: String,
}

/// Counters, as `GET /sandbox/stats` shows them.
#[derive(Default)]
pub struct Counters {
    /// Requests to any token endpoint, faulty answers included.
    pub token_endpoint_requests: AtomicU64,
    /// Token endpoint requests being handled now (answered or abandoned ones are not).
    pub token_endpoint_in_flight: AtomicU64,
    /// Calls to `/oauth/client_token/` and `/oauth/stable_client_token/`.
    pub client_token_calls: AtomicU64,
    /// Of those, calls to `/oauth/stable_client_token/`.
    pub stable_client_token_calls: AtomicU64,
    /// Client tokens minted.
    pub client_tokens_issued: AtomicU64,
    /// Code exchanges.
    pub access_token_calls: AtomicU64,
    /// `/oauth/refresh_token/` calls.
    pub refresh_token_calls: AtomicU64,
    /// `/oauth/renew_refresh_token/` calls.
    pub renew_refresh_token_calls: AtomicU64,
    /// `/oauth/business_token/` calls.
    pub business_token_calls: AtomicU64,
    /// `/oauth/refresh_biz_token/` calls.
    pub refresh_biz_token_calls: AtomicU64,
    /// `/api/apps/v2/token` calls.
    pub mini_app_token_calls: AtomicU64,
    /// Mini-app tokens minted.
    pub mini_app_tokens_issued: AtomicU64,
    /// `/api/apps/v2/jscode2session` calls.
    pub jscode2session_calls: AtomicU64,
    /// Sample API calls.
    pub api_calls: AtomicU64,
    /// Sample API calls whose token was refused.
    pub api_rejected: AtomicU64,
}

impl Counters {
    /// Adds one.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// As JSON.
    pub fn json(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "token_endpoint_requests": g(&self.token_endpoint_requests),
            "token_endpoint_in_flight": g(&self.token_endpoint_in_flight),
            "client_token_calls": g(&self.client_token_calls),
            "stable_client_token_calls": g(&self.stable_client_token_calls),
            "client_tokens_issued": g(&self.client_tokens_issued),
            "access_token_calls": g(&self.access_token_calls),
            "refresh_token_calls": g(&self.refresh_token_calls),
            "renew_refresh_token_calls": g(&self.renew_refresh_token_calls),
            "business_token_calls": g(&self.business_token_calls),
            "refresh_biz_token_calls": g(&self.refresh_biz_token_calls),
            "mini_app_token_calls": g(&self.mini_app_token_calls),
            "mini_app_tokens_issued": g(&self.mini_app_tokens_issued),
            "jscode2session_calls": g(&self.jscode2session_calls),
            "api_calls": g(&self.api_calls),
            "api_rejected": g(&self.api_rejected),
        })
    }
}

/// A client token the sandbox issued.
#[derive(Debug, Clone)]
pub struct ClientToken {
    /// Value.
    pub value: String,
    /// Expiry (sandbox clock).
    pub expires_at: Instant,
}

/// A user's access token.
#[derive(Debug, Clone)]
pub struct UserToken {
    /// App.
    pub client_key: String,
    /// User.
    pub open_id: String,
    /// Granted scopes.
    pub scope: String,
    /// Expiry.
    pub expires_at: Instant,
}

/// A refresh token.
#[derive(Debug, Clone)]
pub struct RefreshToken {
    /// App.
    pub client_key: String,
    /// User.
    pub open_id: String,
    /// Granted scopes.
    pub scope: String,
    /// Expiry.
    pub expires_at: Instant,
    /// Renewals used.
    pub renewals: u32,
    /// The access token it last produced.
    pub access_token: String,
}

/// An authorization code.
#[derive(Debug, Clone)]
pub struct Code {
    /// App.
    pub client_key: String,
    /// User.
    pub open_id: String,
    /// Scopes.
    pub scope: String,
    /// Expiry.
    pub expires_at: Instant,
}

/// A `tt.login` code.
#[derive(Debug, Clone)]
pub struct LoginCode {
    /// The mini-app.
    pub appid: String,
    /// The user.
    pub openid: String,
    /// Expiry.
    pub expires_at: Instant,
}

/// A biz token or its refresh token.
#[derive(Debug, Clone)]
pub struct BizToken {
    /// App.
    pub client_key: String,
    /// Enterprise user.
    pub open_id: String,
    /// Scope.
    pub scope: String,
    /// Expiry.
    pub expires_at: Instant,
}

/// One API call as the sandbox received it.
#[derive(Debug, Clone, Serialize)]
pub struct Logged {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Raw query.
    pub query: Option<String>,
    /// The `access-token` header values received.
    pub access_token_headers: Vec<String>,
    /// The `access_token` query values received.
    pub access_token_params: Vec<String>,
    /// The body's `access_token` field (JSON or form), for APIs that take it there.
    pub access_token_body: Option<String>,
    /// Body length.
    pub body_len: usize,
    /// Body SHA-256, hex.
    pub body_sha256: String,
    /// Whether the token was accepted.
    pub accepted: bool,
    /// Request headers (names, lower case).
    pub header_names: Vec<String>,
}

/// Mutable state, behind one mutex never held across an await.
#[derive(Default)]
pub struct Inner {
    /// Faults in force.
    pub faults: Faults,
    /// Test clock offset.
    pub offset: Duration,
    /// Client tokens per client_key, oldest first, at most two.
    pub client_tokens: HashMap<String, Vec<ClientToken>>,
    /// Mini-app tokens per appid (client_key), oldest first, at most two.
    pub mini_app_tokens: HashMap<String, Vec<ClientToken>>,
    /// `tt.login` codes.
    pub login_codes: HashMap<String, LoginCode>,
    /// Recent client_token calls per client_key.
    pub client_calls: HashMap<String, VecDeque<Instant>>,
    /// Access tokens.
    pub users: HashMap<String, UserToken>,
    /// Refresh tokens.
    pub refresh: HashMap<String, RefreshToken>,
    /// Authorization codes.
    pub codes: HashMap<String, Code>,
    /// Biz tokens.
    pub biz: HashMap<String, BizToken>,
    /// Biz refresh tokens.
    pub biz_refresh: HashMap<String, BizToken>,
    /// API call log.
    pub log: VecDeque<Logged>,
    /// `/sandbox/receiver`: a backend for callbacks and relayed webhook events.
    pub receiver: Receiver,
    /// The trade APIs' signed calls and faults.
    pub trade: super::trade::Trade,
    /// The third-party platform: tickets pushed, component tokens issued.
    pub provider: super::provider::ProviderState,
}

/// What `/sandbox/receiver` (a backend standing in for a developer's) was sent, and how it answers.
#[derive(Debug, Default)]
pub struct Receiver {
    /// Requests received, oldest first (the last [`Receiver::KEPT`]): path, headers, body.
    pub received: VecDeque<serde_json::Value>,
    /// How many of the next requests get `fail_status`.
    pub fail_next: u32,
    /// The status of a failed answer (500 unless set).
    pub fail_status: u16,
}

impl Receiver {
    /// Requests kept.
    pub const KEPT: usize = 1000;
}

impl Inner {
    /// The sandbox clock: real time plus the test offset.
    pub fn now(&self) -> Instant {
        Instant::now() + self.offset
    }

    /// Remembers an API call.
    pub fn log(&mut self, entry: Logged) {
        if self.log.len() == LOG_CAP {
            self.log.pop_front();
        }
        self.log.push_back(entry);
    }
}

/// The whole sandbox state.
pub struct State {
    /// Options it started with.
    pub opts: super::SandboxOptions,
    /// Apps: client_key → secret.
    pub apps: HashMap<String, String>,
    /// Mutable part.
    pub inner: Mutex<Inner>,
    /// Counters.
    pub counters: Counters,
}

/// Issues an app-level token (client_token, mini-app token) as the platform does: the previous
/// ones now expire within [`OVERLAP`], and only the latest two stay valid. Returns its value.
pub fn issue_app_token(tokens: &mut Vec<ClientToken>, prefix: &str, now: Instant, ttl: Duration) -> String {
    for t in tokens.iter_mut() {
        t.expires_at = t.expires_at.min(now + OVERLAP);
    }
    let value = mint(prefix);
    tokens.push(ClientToken {
        value: value.clone(),
        expires_at: now + ttl,
    });
    if tokens.len() > 2 {
        tokens.remove(0);
    }
    value
}

/// A fresh random token with a prefix like the platform's.
pub fn mint(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}
