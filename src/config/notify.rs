//! `[[notify]]`: receivers of signed JSON events, and the events there are.

use super::validate::Collector;
use super::Config;
use serde::Deserialize;

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
    "authorizer.unauthorized",
    "authorizer.reauthorization_required",
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

impl Config {
    /// Each `[[notify]]`: an http(s) URL, a signing key that is set, known events, no zero limit.
    pub(super) fn validate_notify(&self, c: &mut Collector<'_>) {
        for (i, n) in self.notify.iter().enumerate() {
            let idx = Some(i);
            match n.url.parse::<http::Uri>() {
                Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => {}
                _ => c.err("notify", idx, "url", "must be an http:// or https:// URL"),
            }
            if n.secret_env.is_empty() {
                c.err(
                    "notify",
                    idx,
                    "secret_env",
                    "name the environment variable holding the signing key",
                );
            } else if std::env::var(&n.secret_env).map_or(true, |v| v.is_empty()) {
                c.err(
                    "notify",
                    idx,
                    "secret_env",
                    format!(
                        "environment variable {} is not set (any random string: douyin-gateway keygen prints one)",
                        n.secret_env
                    ),
                );
            }
            for e in &n.events {
                if !super::NOTIFY_EVENTS.contains(&e.as_str()) {
                    c.err(
                        "notify",
                        idx,
                        "events",
                        format!("unknown event {e:?} (known: {})", super::NOTIFY_EVENTS.join(", ")),
                    );
                }
            }
            if n.queue == 0 || n.max_attempts == 0 || n.timeout_ms == 0 {
                c.err(
                    "notify",
                    idx,
                    "queue",
                    "queue, max_attempts and timeout_ms must be greater than 0",
                );
            }
        }
    }
}
