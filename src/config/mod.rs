//! Configuration: the TOML schema of the contract as serde structs, then
//! [`Config::validate`], which lists every problem rather than the first.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"
//! [[apps]]
//! name = "main"
//! client_key = "awxxxx"
//! client_secret_env = "DOUYIN_CLIENT_SECRET"
//! [[routes]]
//! name = "all"
//! path = "/*"
//! token = "client"
//! ```

mod locate;
mod routes;
mod tables;
mod validate;

use serde::Deserialize;
use std::path::{Path, PathBuf};

pub(crate) use routes::OpenIdAt;
pub use routes::PathPattern;
pub use validate::{Problem, Severity};

/// Request bodies above this are refused with 413: Douyin's largest uploads
/// (video parts) stay well below 20 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 20 * 1024 * 1024;
/// Bodies up to this size are kept so a call can be replayed once after a
/// token refresh; 2 MiB covers every JSON/form API while bounding memory.
pub const DEFAULT_RETRY_BUFFER_BYTES: u64 = 2 * 1024 * 1024;
/// The platform answers within seconds; 30 s is nginx's `proxy_read_timeout` order.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Long enough for in-flight calls (and a retry) to finish on SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
/// `tokens.client_token_fetch_budget`: 40% of the platform's 500 per 5 minutes, which also
/// counts any other fetcher using the same credentials.
pub const DEFAULT_CLIENT_TOKEN_FETCH_BUDGET: u32 = 200;
/// `server.header_read_timeout_ms`.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// `server.idle_timeout_ms`.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// `server.body_read_timeout_ms`.
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 10_000;
/// `server.max_in_flight`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;
/// `server.max_header_bytes` (nginx allows 4 × 8 KiB by default).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// `server.max_pending_head_bytes`: what unfinished heads may hold together before any caller is
/// known. 64 MiB is 2,000 connections each holding a whole 32 KiB head; ordinary heads (under
/// 8 KiB) are never refused for it.
pub const DEFAULT_MAX_PENDING_HEAD_BYTES: usize = 64 * 1024 * 1024;
/// A healthy TCP+TLS connect to the platform takes well under a second.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Refresh a token in the background once this share of its lifetime has
/// passed, so callers never wait for one that is about to expire.
pub const DEFAULT_REFRESH_AT_FRACTION: f64 = 0.8;
/// First delay after a failed token fetch; doubles per failure.
pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 500;
/// Cap of the back-off: short enough to recover quickly, long enough that an
/// outage cannot turn into the 500-calls-in-5-minutes lock-out (10020).
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 10_000;
/// A token endpoint that has not answered by then counts as failed.
pub const DEFAULT_TOKEN_FETCH_TIMEOUT_MS: u64 = 10_000;
/// Renew refresh_tokens 7 days before they expire: days of slack for an
/// outage, while each renewal still adds 23 of its 30 days.
pub const DEFAULT_RENEW_BEFORE_SECS: u64 = 7 * 24 * 3600;
/// The platform allows 5 renewals of a refresh_token.
pub const DEFAULT_MAX_RENEWALS: u32 = 5;
/// Looking for refresh_tokens due once a minute is ample for a 7-day window.
pub const DEFAULT_MAINTAIN_INTERVAL_MS: u64 = 60_000;
/// `oauth.max_exchanges_per_sec` (the contract's default): code exchanges at the platform for the
/// whole gateway. A real user needs one; twenty a second is 72,000 authorizations an hour, while
/// made-up codes from strangers cost the platform (and the app's standing with it) at most that.
pub const DEFAULT_OAUTH_MAX_EXCHANGES_PER_SEC: u32 = 20;
/// `oauth.per_address_per_sec`: a browser makes two `/oauth/*` requests per authorization, and a
/// person retrying makes a few; a script from one address is held to this.
pub const DEFAULT_OAUTH_PER_ADDRESS_PER_SEC: u32 = 5;
/// `oauth.per_address_burst`: an office behind one address starting several authorizations at
/// once is not refused.
pub const DEFAULT_OAUTH_PER_ADDRESS_BURST: u32 = 20;
/// The platform's API host.
pub const DEFAULT_UPSTREAM: &str = "https://open.douyin.com";
/// Where client tokens come from unless an app says otherwise.
pub const DEFAULT_CLIENT_TOKEN_ENDPOINT: &str = "/oauth/client_token/";

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The listeners and request limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// The Douyin Open Platform (or the sandbox) the gateway forwards to.
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// Other hosts routes may forward to (`upstream = NAME` on a route).
    #[serde(default)]
    pub upstreams: Vec<NamedUpstream>,
    /// Where tokens are kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// The admin API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Token lifecycle tuning (extension of the contract).
    #[serde(default)]
    pub tokens: TokensConfig,
    /// Which platform error codes mean what.
    #[serde(default)]
    pub token_errors: TokenErrorsConfig,
    /// Douyin apps (client_key + secret).
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    /// Services allowed to call the gateway.
    #[serde(default)]
    pub callers: Vec<CallerConfig>,
    /// Route rules, matched in file order.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Where to send events (users about to drop off, token fetches failing).
    #[serde(default)]
    pub notify: Vec<NotifyConfig>,
    /// How the gateway logs.
    #[serde(default)]
    pub log: LogConfig,
    /// What the authorization flow, open to anyone, may cost.
    #[serde(default)]
    pub oauth: OAuthConfig,
}

/// `[oauth]`: limits on the authorization flow (`/oauth/authorize`, `/oauth/callback`), which
/// anyone can reach without a key. Read at each request: a reload applies at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// Code exchanges at the platform per second from callbacks, for the whole gateway, with a
    /// burst of one second's worth; past it, 429 `rate_limited` with `Retry-After`. At least 1.
    pub max_exchanges_per_sec: u32,
    /// `/oauth/*` requests per second from one client address (an IPv6 address counts by its
    /// /64); past it, 429 `rate_limited`. 0 turns the limit off (behind a reverse proxy every
    /// browser comes from the proxy's address; `X-Forwarded-For` is not trusted).
    pub per_address_per_sec: u32,
    /// `/oauth/*` requests one address may make at once before its rate applies. At least 1.
    pub per_address_burst: u32,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            max_exchanges_per_sec: DEFAULT_OAUTH_MAX_EXCHANGES_PER_SEC,
            per_address_per_sec: DEFAULT_OAUTH_PER_ADDRESS_PER_SEC,
            per_address_burst: DEFAULT_OAUTH_PER_ADDRESS_BURST,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (one readable line per event) or `json` (one JSON object per line, for shipping).
    pub format: LogFormat,
    /// One info line per proxied call (`target` `access`): request id, caller, route, method,
    /// path (never the query), status, duration, upstream status, the platform's log id.
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            access: true,
        }
    }
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    #[default]
    Text,
    /// JSON lines.
    Json,
}

/// `[[notify]]`: a receiver of signed JSON events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Its name in metrics and logs (default: the URL's host and port).
    pub name: Option<String>,
    /// Where events are POSTed (http or https).
    pub url: String,
    /// Environment variable holding the HMAC-SHA256 key the `X-Gateway-Signature` is made with.
    pub secret_env: String,
    /// Events to send (default: every event).
    #[serde(default = "all_notify_events")]
    pub events: Vec<String>,
    /// Events held for it while it is slow or down; past this, new events are dropped (counted).
    #[serde(default = "default_notify_queue")]
    pub queue: usize,
    /// Attempts per event before it is given up (counted), with doubling back-off from 0.5 s to 30 s.
    #[serde(default = "default_notify_attempts")]
    pub max_attempts: u32,
    /// Timeout of one delivery.
    #[serde(default = "default_notify_timeout_ms")]
    pub timeout_ms: u64,
}

/// Every event a `[[notify]]` receiver may ask for (`events`); the token engine emits them.
pub const NOTIFY_EVENTS: &[&str] = &[
    "user.reauthorization_required",
    "user.reauthorization_due",
    "token.fetch_failing",
    "token.fetch_recovered",
    "token.evicted_early",
];

fn all_notify_events() -> Vec<String> {
    NOTIFY_EVENTS.iter().map(|e| e.to_string()).collect()
}

fn default_notify_queue() -> usize {
    1000
}

fn default_notify_attempts() -> u32 {
    10
}

fn default_notify_timeout_ms() -> u64 {
    5000
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The proxy listener; callers point their base URL here.
    pub listen: String,
    /// Metrics, health, OAuth and admin API.
    pub admin_listen: String,
    /// Larger request bodies get 413.
    pub max_body_bytes: u64,
    /// Bodies up to this size are buffered so a call can be retried once.
    pub retry_buffer_bytes: u64,
    /// Time allowed for the upstream to answer (headers and inspected body).
    pub request_timeout_ms: u64,
    /// Time in-flight requests get on SIGTERM/SIGINT.
    pub shutdown_grace_ms: u64,
    /// No caller key needed; refused unless `listen` is loopback.
    pub allow_anonymous: bool,
    /// How users' browsers reach the admin listener (or `public_listen`, when set), for
    /// `authorize_url` (default `http://{public_listen or admin_listen}`).
    pub public_admin_url: Option<String>,
    /// A listener for what must be reachable from the internet: `/oauth/*` (the authorization
    /// flow) and `/webhooks/douyin`, and nothing else. When set, the admin listener no longer
    /// serves those, and can stay private.
    pub public_listen: Option<String>,
    /// Serve the proxy over HTTPS.
    pub tls: Option<TlsConfig>,
    /// Threads serving proxy requests, each with a current-thread runtime, accept loop and
    /// upstream pool of its own (default: one per core). Read at start only.
    pub worker_threads: Option<usize>,
    /// A request head not complete this long after its first byte: connection closed.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in progress and no bytes for this long: closed.
    pub idle_timeout_ms: u64,
    /// The longest the gateway waits, in all, for a caller's request body (the time the upstream
    /// takes to accept it does not count): past it, 408 `client_timeout`. A body trickling in is
    /// cut as surely as one that stops.
    pub body_read_timeout_ms: u64,
    /// Open proxy connections at most (default: from the file-descriptor limit). At the cap, the
    /// connection waiting longest for its head (else the one idle longest) is closed to make room;
    /// when all are inside requests, new connections are closed at once. Read at start only.
    pub max_connections: Option<usize>,
    /// Connections one address (an IPv6 address by its /64) may hold on each listener; past it,
    /// its new connections are closed at once. 0: no such limit (behind a load balancer, where
    /// every connection comes from its address). Default: an eighth of `max_connections` (at
    /// least 32) on the proxy listener, 16 on the admin and public listeners. Read at start only.
    pub max_connections_per_ip: Option<usize>,
    /// Bytes of unfinished request heads all connections may hold together; past it, a
    /// connection whose unfinished head is over 8 KiB is closed. Read at start only.
    pub max_pending_head_bytes: usize,
    /// Requests in progress at most; past it, 503 `overloaded` at once.
    pub max_in_flight: usize,
    /// A request head (names, values, 4 bytes a line) larger than this: 431 `headers_too_large`.
    pub max_header_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            retry_buffer_bytes: DEFAULT_RETRY_BUFFER_BYTES,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            allow_anonymous: false,
            public_admin_url: None,
            public_listen: None,
            tls: None,
            worker_threads: None,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            body_read_timeout_ms: DEFAULT_BODY_READ_TIMEOUT_MS,
            max_connections: None,
            max_connections_per_ip: None,
            max_pending_head_bytes: DEFAULT_MAX_PENDING_HEAD_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// `[server.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_path: PathBuf,
    /// PEM private key.
    pub key_path: PathBuf,
}

/// `[upstream]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// API calls and token endpoints go here.
    pub base_url: String,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout_ms: u64,
    /// An extra CA (PEM) to trust besides the webpki roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            base_url: DEFAULT_UPSTREAM.into(),
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            ca_file: None,
        }
    }
}

/// `[[upstreams]]`: another host a route may forward to, such as `developer.toutiao.com`
/// (mini-app server APIs) or `webcast.bytedance.com` (live streaming).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedUpstream {
    /// What routes call it (`upstream = NAME`).
    pub name: String,
    /// `scheme://host[:port]`.
    pub base_url: String,
    /// TCP (and TLS) connect timeout.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// An extra CA (PEM) to trust besides the webpki roots.
    pub ca_file: Option<PathBuf>,
}

fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}

impl NamedUpstream {
    /// Its connection settings, as `[upstream]` has them.
    pub fn settings(&self) -> UpstreamConfig {
        UpstreamConfig {
            base_url: self.base_url.clone(),
            connect_timeout_ms: self.connect_timeout_ms,
            ca_file: self.ca_file.clone(),
        }
    }
}

impl Config {
    /// Every upstream's settings, in the order routes refer to them: `[upstream]` first, then each
    /// `[[upstreams]]` in file order.
    pub fn all_upstreams(&self) -> Vec<UpstreamConfig> {
        std::iter::once(self.upstream.clone())
            .chain(self.upstreams.iter().map(NamedUpstream::settings))
            .collect()
    }
}

/// Which store keeps tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Embedded SQLite file (the default).
    #[default]
    Sqlite,
    /// Redis, shared by many instances.
    Redis,
    /// In process only; lost on restart.
    Memory,
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite`, `redis` or `memory`.
    pub kind: StoreKind,
    /// SQLite file.
    pub path: PathBuf,
    /// Redis URL.
    pub url: Option<String>,
    /// Prefix of every Redis key.
    pub key_prefix: String,
    /// Environment variable holding the base64 32-byte encryption key.
    pub encryption_key_env: Option<String>,
    /// During a key rotation: the variable holding the key records were written with before.
    pub previous_encryption_key_env: Option<String>,
    /// Redis with replicas: how long a write whose loss loses a user (authorization, refresh,
    /// renewal) waits for a replica to acknowledge it.
    pub replica_ack_timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Sqlite,
            path: "data/tokens.db".into(),
            url: None,
            key_prefix: "douyin-gateway:".into(),
            encryption_key_env: None,
            previous_encryption_key_env: None,
            replica_ack_timeout_ms: 1000,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Hex SHA-256 of the admin key; absent = admin API off.
    pub api_key_sha256: Option<String>,
}

/// `[tokens]` (extension): how tokens are kept fresh.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Share of a token's lifetime after which it is refreshed in the background.
    pub refresh_at_fraction: f64,
    /// First back-off delay after a failed fetch.
    pub backoff_initial_ms: u64,
    /// Largest back-off delay.
    pub backoff_max_ms: u64,
    /// Timeout of one call to a token endpoint.
    pub fetch_timeout_ms: u64,
    /// Renew a user's refresh_token once it expires within this many seconds.
    pub renew_before_secs: u64,
    /// Renewals the platform allows per refresh_token chain.
    pub max_renewals: u32,
    /// How often refresh_tokens due for renewal are looked for.
    pub maintain_interval_ms: u64,
    /// client_token fetches one app may make in any 5 minutes (the platform allows 500).
    pub client_token_fetch_budget: u32,
    /// An app-level token (client, mini_app) whose fetches have failed this long is announced
    /// (`token.fetch_failing` to `[[notify]]`).
    pub fetch_failing_after_secs: u64,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            refresh_at_fraction: DEFAULT_REFRESH_AT_FRACTION,
            backoff_initial_ms: DEFAULT_BACKOFF_INITIAL_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
            fetch_timeout_ms: DEFAULT_TOKEN_FETCH_TIMEOUT_MS,
            renew_before_secs: DEFAULT_RENEW_BEFORE_SECS,
            max_renewals: DEFAULT_MAX_RENEWALS,
            client_token_fetch_budget: DEFAULT_CLIENT_TOKEN_FETCH_BUDGET,
            maintain_interval_ms: DEFAULT_MAINTAIN_INTERVAL_MS,
            fetch_failing_after_secs: 60,
        }
    }
}

/// `[token_errors]`: replaces the default code tables when given.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenErrorsConfig {
    /// Codes meaning "this access token is dead": refresh and retry once.
    pub refresh: Option<Vec<i64>>,
    /// Codes meaning "the user must authorize again".
    pub reauthorize: Option<Vec<i64>>,
}

/// `[[apps]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Name routes refer to.
    pub name: String,
    /// The platform's client_key.
    pub client_key: String,
    /// Environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// File holding the client secret.
    pub client_secret_file: Option<PathBuf>,
    /// OAuth redirect URI (https, no query).
    pub redirect_uri: Option<String>,
    /// OAuth scopes to request.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Scopes the user may decline on the authorize page (`optionalScope`): `"NAME"` (ticked by
    /// default) or `"NAME,0"` (not ticked).
    #[serde(default)]
    pub optional_scopes: Vec<String>,
    /// The `[[upstreams]]` entry that issues this app's mini-app server access_token
    /// (`token = "mini_app"` routes): developer.toutiao.com, or open-sandbox.douyin.com.
    pub mini_app_upstream: Option<String>,
    /// `/oauth/client_token/` or `/oauth/stable_client_token/`.
    #[serde(default = "default_client_token_endpoint")]
    pub client_token_endpoint: String,
    /// Environment variable holding the key webhook events are signed with
    /// (default: the client secret, as the platform signs them).
    pub webhook_secret_env: Option<String>,
    /// File holding that key.
    pub webhook_secret_file: Option<PathBuf>,
}

fn default_client_token_endpoint() -> String {
    DEFAULT_CLIENT_TOKEN_ENDPOINT.into()
}

/// `[[callers]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// Name used in logs.
    pub name: String,
    /// Hex SHA-256 of the caller's key.
    pub api_key_sha256: String,
    /// Route names it may use; `"*"` = all.
    #[serde(default = "all_routes")]
    pub routes: Vec<String>,
    /// May exchange authorization codes its app received itself (`POST /_gateway/exchange_code`).
    #[serde(default)]
    pub exchange_codes: bool,
}

fn all_routes() -> Vec<String> {
    vec!["*".into()]
}

/// The credential a route attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Nothing: plain pass-through.
    None,
    /// The app's client_token.
    Client,
    /// The user's access_token, by open_id.
    User,
    /// The enterprise biz_token, by open_id (+ scope).
    Biz,
    /// The app's mini-app server access_token (`/api/apps/v2/token` on the app's
    /// `mini_app_upstream`).
    #[serde(rename = "mini_app")]
    MiniApp,
    /// No token: the app's `appid` and `secret` set in the JSON body (mini-app
    /// `jscode2session`), so the app's backend never holds the secret. Needs `inject = "json_body"`.
    #[serde(rename = "app_secret")]
    AppSecret,
    /// A token endpoint an SDK calls itself (`/oauth/client_token/`, `/api/apps/v2/token`),
    /// answered by the gateway with a placeholder token in that endpoint's envelope; the platform
    /// is never contacted. The placeholder is replaced by the real token on every API route.
    Placeholder,
}

/// Where the token goes: `"header"`, `"query"`, `"header:NAME"` or `"json_body"`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum Inject {
    /// `access-token: T`
    #[default]
    Header,
    /// `access_token=T` in the query.
    Query,
    /// `NAME: T` (the webcast APIs' `X-Token`); the caller's own header of that name is stripped.
    HeaderNamed(http::HeaderName),
    /// The top-level `access_token` field of a JSON object body (developer.toutiao.com APIs),
    /// set or replaced; the body is read whole (at most `retry_buffer_bytes`).
    JsonBody,
}

impl TryFrom<String> for Inject {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "header" => Ok(Inject::Header),
            "query" => Ok(Inject::Query),
            "json_body" => Ok(Inject::JsonBody),
            _ => match s.split_once(':') {
                Some(("header", name)) if !name.is_empty() => http::HeaderName::from_bytes(name.as_bytes())
                    .map(Inject::HeaderNamed)
                    .map_err(|_| format!("{name:?} is not a header name")),
                _ => Err(format!(
                    "inject {s:?}: expected \"header\", \"query\", \"header:NAME\" or \"json_body\""
                )),
            },
        }
    }
}

/// `[[routes]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in metrics and caller route lists.
    pub name: String,
    /// Exact path, or a prefix ending in `*`.
    pub path: String,
    /// Allowed methods; absent = any.
    pub methods: Option<Vec<String>>,
    /// The credential to attach.
    pub token: TokenKind,
    /// The app; optional when exactly one exists.
    pub app: Option<String>,
    /// `header` or `query`.
    #[serde(default)]
    pub inject: Inject,
    /// `query:NAME` or `header:NAME`.
    #[serde(default = "default_open_id")]
    pub open_id: String,
    /// biz: the scope to request.
    pub biz_scope: Option<String>,
    /// The `[[upstreams]]` entry to forward to; absent: `[upstream]`.
    pub upstream: Option<String>,
}

fn default_open_id() -> String {
    "query:open_id".into()
}

/// A config that failed to load, with every problem found.
#[derive(Debug)]
pub struct LoadError {
    /// What was wrong, in file order where known.
    pub problems: Vec<Problem>,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

impl Config {
    /// Parses TOML text; `file` names it in problems. Every key that is unknown, of the wrong type
    /// or holds a bad value is reported, not only the first.
    pub fn parse(text: &str, file: &str) -> Result<Config, LoadError> {
        match parse_collecting(text, file) {
            Parsed {
                config: Some(c),
                problems,
                ..
            } if problems.is_empty() => Ok(c),
            Parsed { problems, .. } => Err(LoadError { problems }),
        }
    }

    /// Reads, parses and validates a file; warnings are returned beside the config.
    pub fn load(path: &Path) -> Result<(Config, Vec<Problem>), LoadError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            let message = match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "no config file here: give one with --config PATH (the repository's config.toml is a commented \
                     example to start from; `douyin-gateway demo` runs without one) ({e})"
                ),
                _ => format!("cannot read: {e}"),
            };
            LoadError {
                problems: vec![Problem::error(&file, "", None, message)],
            }
        })?;
        Self::load_str(&text, &file)
    }

    /// Parses and validates text: every problem, TOML-level ones (unknown keys, wrong types, bad
    /// values) and the rest, in file order.
    pub fn load_str(text: &str, file: &str) -> Result<(Config, Vec<Problem>), LoadError> {
        let parsed = parse_collecting(text, file);
        let mut problems = parsed.problems;
        let Some(config) = parsed.config else {
            return Err(LoadError { problems });
        };
        // Validated on the text as parsed (entries taken out blanked, lines kept), its key paths
        // then numbered as in the file.
        // (A warning about a whole array, such as "no [[routes]]", is moot when its entries were
        // taken out for the errors above.)
        problems.extend(
            config
                .validate(&parsed.text, file)
                .into_iter()
                .filter(|p| !parsed.removed.iter().any(|(name, _)| p.key == *name))
                .map(|mut p| {
                    p.key = original_path(&p.key, &parsed.removed);
                    p
                }),
        );
        problems.sort_by_key(|p| p.line.unwrap_or(0));
        if problems.iter().any(|p| p.severity == Severity::Error) {
            return Err(LoadError { problems });
        }
        Ok((config, problems))
    }
}

/// What [`parse_collecting`] found.
struct Parsed {
    /// What deserialized once every bad key and entry was taken out (`None`: a syntax error, or an
    /// error nothing can be blamed for).
    config: Option<Config>,
    /// Every problem, with lines and key paths as in the file.
    problems: Vec<Problem>,
    /// The text with what was taken out blanked (line breaks kept).
    text: String,
    /// Entries of top-level arrays taken out (they lacked a required key): name and index in
    /// the file.
    removed: Vec<(String, usize)>,
}

/// Deserializes `text`; on an error, records it (with line and key path), blanks out the key it
/// is about (or, for a missing required key, that `[[array]]` entry) and tries again, so one run
/// reports every such problem.
fn parse_collecting(text: &str, file: &str) -> Parsed {
    let mut out = Parsed {
        config: None,
        problems: Vec::new(),
        text: text.to_string(),
        removed: Vec::new(),
    };
    let line_of = |t: &str, at: usize| t[..at.min(t.len())].matches('\n').count() + 1;
    let blank = |t: &mut String, cut: std::ops::Range<usize>| {
        let b: String = t[cut.clone()]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        t.replace_range(cut, &b);
    };
    for _ in 0..100 {
        let e = match toml::from_str::<Config>(&out.text) {
            Ok(c) => {
                out.config = Some(c);
                break;
            }
            Err(e) => e,
        };
        let line = e.span().map(|s| line_of(&out.text, s.start));
        let Ok(doc) = toml::de::DeTable::parse(&out.text) else {
            // A syntax error: nothing after it can be read.
            out.problems
                .push(Problem::error(file, "", line, e.message().to_string()));
            break;
        };
        let at = e.span().map_or(0, |s| s.start);
        let message = with_suggestion(e.message());
        if message.starts_with("missing field") {
            // The span is the `[[name]]` header of the entry lacking it: take the entry out.
            let entry = doc.get_ref().iter().find_map(|(k, v)| match v.get_ref() {
                toml::de::DeValue::Array(items) => items
                    .into_iter()
                    .position(|i| i.span().contains(&at))
                    .map(|i| (k.get_ref().to_string(), i)),
                _ => None,
            });
            if let Some((name, i)) = entry {
                let orig = original_index(&name, i, &out.removed);
                out.problems
                    .push(Problem::error(file, &format!("{name}[{orig}]"), line, message));
                let end = out.text[at..].find("\n[").map_or(out.text.len(), |p| at + p + 1);
                blank(&mut out.text, at..end);
                out.removed.push((name, orig));
                continue;
            }
        }
        let mut best = None;
        deepest(doc.get_ref(), &mut String::new(), at, &mut best);
        match best {
            Some((path, cut)) if !cut.is_empty() => {
                out.problems
                    .push(Problem::error(file, &original_path(&path, &out.removed), line, message));
                blank(&mut out.text, cut);
            }
            _ => {
                out.problems.push(Problem::error(file, "", line, message));
                break;
            }
        }
    }
    out
}

/// A key path as numbered in the file, given the `[[array]]` entries taken out before it.
fn original_path(path: &str, removed: &[(String, usize)]) -> String {
    let Some((name, rest)) = path.split_once('[') else {
        return path.to_string();
    };
    let Some((index, tail)) = rest.split_once(']') else {
        return path.to_string();
    };
    let Ok(i) = index.parse::<usize>() else {
        return path.to_string();
    };
    format!("{name}[{}]{tail}", original_index(name, i, removed))
}

/// The file's index of what is now entry `i` of the array `name`, given the entries taken out.
fn original_index(name: &str, mut i: usize, removed: &[(String, usize)]) -> usize {
    let mut gone: Vec<usize> = removed.iter().filter(|(n, _)| n == name).map(|(_, i)| *i).collect();
    gone.sort_unstable();
    for g in gone {
        if g <= i {
            i += 1;
        }
    }
    i
}

/// The key path (`routes[2].tokn`) and byte range (key through value) of the innermost key
/// whose key or value covers byte `at`.
fn deepest(
    table: &toml::de::DeTable<'_>,
    path: &mut String,
    at: usize,
    best: &mut Option<(String, std::ops::Range<usize>)>,
) {
    for (key, value) in table {
        let before = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key.get_ref());
        let (k, v) = (key.span(), value.span());
        if k.contains(&at)
            || (v.contains(&at)
                && !matches!(
                    value.get_ref(),
                    toml::de::DeValue::Table(_) | toml::de::DeValue::Array(_)
                ))
        {
            *best = Some((path.clone(), k.start.min(v.start)..k.end.max(v.end)));
        }
        match value.get_ref() {
            toml::de::DeValue::Table(t) => deepest(t, path, at, best),
            toml::de::DeValue::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    let mark = path.len();
                    path.push_str(&format!("[{i}]"));
                    match item.get_ref() {
                        toml::de::DeValue::Table(t) => deepest(t, path, at, best),
                        _ if item.span().contains(&at) => {
                            *best = Some((path.clone(), k.start.min(v.start)..k.end.max(v.end)));
                        }
                        _ => {}
                    }
                    path.truncate(mark);
                }
            }
            _ => {}
        }
        path.truncate(before);
    }
}

/// An "unknown field `x`, expected one of `a`, `b`" or "unknown variant" message, with the
/// nearest expected name when one is close: "did you mean `token`?".
fn with_suggestion(message: &str) -> String {
    let message = message.trim_end();
    let Some(rest) = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))
    else {
        return message.to_string();
    };
    let Some((got, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|name| (strsim::damerau_levenshtein(got, name), name))
        .min();
    match best {
        Some((d, name)) if d <= 2.max(got.len() / 3) && d > 0 => format!("{message}; did you mean `{name}`?"),
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_zero_is_refused() {
        let text = "[server]\nworker_threads = 0\n[store]\nkind = \"memory\"\n";
        let err = Config::load_str(text, "t").unwrap_err();
        assert!(err.problems.iter().any(|p| p.key == "server.worker_threads"), "{err}");
        let (c, _) = Config::load_str("[server]\nworker_threads = 1\n[store]\nkind = \"memory\"\n", "t").unwrap();
        assert_eq!(c.server.worker_threads, Some(1));
    }

    #[test]
    fn oauth_limits_default_to_the_contract_and_zero_is_off_only_per_address() {
        let memory = "[store]\nkind = \"memory\"\n";
        let (c, _) = Config::load_str(memory, "t").unwrap();
        assert_eq!(
            (
                c.oauth.max_exchanges_per_sec,
                c.oauth.per_address_per_sec,
                c.oauth.per_address_burst
            ),
            (20, 5, 20)
        );
        let text = format!("{memory}[oauth]\nmax_exchanges_per_sec = 0\nper_address_burst = 0\n");
        let err = Config::load_str(&text, "t").unwrap_err();
        for key in ["oauth.max_exchanges_per_sec", "oauth.per_address_burst"] {
            let p = err
                .problems
                .iter()
                .find(|p| p.key == key)
                .unwrap_or_else(|| panic!("{key}: {err}"));
            assert_eq!(p.line, Some(if key.ends_with("sec") { 4 } else { 5 }), "{p}");
        }
        let text = format!("{memory}[oauth]\nper_address_per_sec = 0\n");
        assert_eq!(Config::load_str(&text, "t").unwrap().0.oauth.per_address_per_sec, 0);
        assert!(Config::load_str(&format!("{memory}[oauth]\nper_address = 1\n"), "t").is_err());
    }
}
