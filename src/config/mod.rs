//! Configuration: the TOML schema of the contract as serde structs, then
//! [`Config::validate`], which lists every problem rather than the first.
//!
//! One file per table (`server`, `upstream`, `store`, `admin`, `tokens`, `apps`, `callers`,
//! `routes`, `notify`, `log`, `oauth`): its structs, its `DEFAULT_*` values and its part of the
//! validation. `parse` reports TOML-level problems (unknown keys, wrong types), `validate` the
//! rest, `locate` finds their lines. Config reads no module above it: the vocabulary the others
//! share (route path patterns, notify event names) is defined here.
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

mod admin;
mod apps;
mod callbacks;
mod callers;
mod examples;
mod locate;
mod log;
mod notify;
mod oauth;
mod parse;
mod providers;
mod routes;
mod server;
mod signing;
mod store;
mod tokens;
mod upstream;
mod validate;
mod words;

use parse::{original_path, parse_collecting, Parsed};
use serde::Deserialize;
use std::path::Path;

pub use admin::AdminConfig;
pub use apps::{AppConfig, DEFAULT_CLIENT_TOKEN_ENDPOINT};
pub use callbacks::{CallbackConfig, CallbackVerify, WebhookForwardConfig, DEFAULT_RELAY_TIMEOUT_MS};
pub use callers::CallerConfig;
pub use examples::Examples;
pub use log::{LogConfig, LogFormat};
pub use notify::{NotifyConfig, NOTIFY_EVENTS};
pub use oauth::{
    OAuthConfig, DEFAULT_OAUTH_MAX_EXCHANGES_PER_SEC, DEFAULT_OAUTH_PER_ADDRESS_BURST,
    DEFAULT_OAUTH_PER_ADDRESS_PER_SEC,
};
pub use providers::{ProviderApiVersion, ProviderConfig};
pub(crate) use routes::OpenIdAt;
pub use routes::{Inject, PathPattern, RouteConfig, TokenKind, DEFAULT_AUTHORIZER_FROM};
pub use server::{
    ServerConfig, TlsConfig, DEFAULT_BODY_READ_TIMEOUT_MS, DEFAULT_HEADER_READ_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PENDING_HEAD_BYTES,
    DEFAULT_REQUEST_TIMEOUT_MS, DEFAULT_RETRY_BUFFER_BYTES, DEFAULT_SHUTDOWN_GRACE_MS,
};
pub use signing::Sign;
pub use store::{StoreConfig, StoreKind};
pub use tokens::{
    TokenErrorsConfig, TokensConfig, DEFAULT_BACKOFF_INITIAL_MS, DEFAULT_BACKOFF_MAX_MS,
    DEFAULT_CLIENT_TOKEN_FETCH_BUDGET, DEFAULT_MAINTAIN_INTERVAL_MS, DEFAULT_MAX_RENEWALS, DEFAULT_REFRESH_AT_FRACTION,
    DEFAULT_RENEW_BEFORE_SECS, DEFAULT_TOKEN_FETCH_TIMEOUT_MS,
};
pub use upstream::{NamedUpstream, UpstreamConfig, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_UPSTREAM};
pub use validate::{Problem, Severity};

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
    /// URLs the platform calls back, verified and forwarded to backends (extension).
    #[serde(default)]
    pub callbacks: Vec<CallbackConfig>,
    /// Backends the platform's webhook events are relayed to (extension).
    #[serde(default)]
    pub webhook_forward: Vec<WebhookForwardConfig>,
    /// How the gateway logs.
    #[serde(default)]
    pub log: LogConfig,
    /// What the authorization flow, open to anyone, may cost.
    #[serde(default)]
    pub oauth: OAuthConfig,
    /// Service providers (third-party platforms): their event URL and component token (extension).
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
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

    /// Reads, parses and validates a file; warnings are returned beside the config. The example
    /// keys and placeholder secrets are warnings ([`Config::load_with`] can refuse them).
    pub fn load(path: &Path) -> Result<(Config, Vec<Problem>), LoadError> {
        Self::load_with(path, Examples::Warn)
    }

    /// [`Config::load`], with the example keys and placeholder secrets warned about or refused
    /// as `examples` says (`serve` and `check` refuse them unless `--allow-example-keys`).
    pub fn load_with(path: &Path, examples: Examples) -> Result<(Config, Vec<Problem>), LoadError> {
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
        Self::load_str_with(&text, &file, examples)
    }

    /// Parses and validates text: every problem, TOML-level ones (unknown keys, wrong types, bad
    /// values) and the rest, in file order.
    pub fn load_str(text: &str, file: &str) -> Result<(Config, Vec<Problem>), LoadError> {
        Self::load_str_with(text, file, Examples::Warn)
    }

    /// [`Config::load_str`], with the example keys and placeholder secrets as `examples` says.
    pub fn load_str_with(text: &str, file: &str, examples: Examples) -> Result<(Config, Vec<Problem>), LoadError> {
        let mut parsed = parse_collecting(text, file);
        let mut problems = std::mem::take(&mut parsed.problems);
        let Some(config) = parsed.config.take() else {
            return Err(LoadError { problems });
        };
        // Validated on the text as parsed (entries taken out blanked, lines kept), its key paths
        // then numbered as in the file.
        // (A warning about a whole array, such as "no [[routes]]", is moot when its entries were
        // taken out for the errors above; so is a reference to an entry taken out.)
        problems.extend(
            config
                .validate_with(&parsed.text, file, examples)
                .into_iter()
                .filter(|p| !parsed.removed.iter().any(|(name, _)| p.key == *name))
                .filter(|p| !follows_from_removed(p, &parsed))
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

/// Whether a problem of validation only follows from `[[array]]` entries the parse took out:
/// "no [[apps]] named \"main\"" when the entry named `main` lacked a key, "not exactly one
/// [[apps]]" when the only app did. The entry's own error said it already.
fn follows_from_removed(p: &Problem, parsed: &Parsed) -> bool {
    parsed.removed.iter().any(|(array, _)| {
        let tag = format!("[[{array}]]");
        let Some((_, after)) = p.message.split_once(&tag) else {
            return false;
        };
        match after.strip_prefix(" named \"").and_then(|r| r.split('"').next()) {
            // A name the file does define, in an entry taken out (or one whose name is unknown).
            Some(name) => {
                parsed.removed_names.iter().any(|(a, n)| a == array && n == name)
                    || parsed.removed_names.iter().filter(|(a, _)| a == array).count()
                        < parsed.removed.iter().filter(|(a, _)| a == array).count()
            }
            None => true,
        }
    })
}
