//! `[[callbacks]]` (the platform calling a backend back: payment results, refunds, trade events,
//! verified by the gateway) and `[[webhook_forward]]` (the platform's one webhook URL relayed to
//! backends).

use super::validate::Collector;
use super::Config;
use serde::Deserialize;

/// How long a backend may take to answer a relayed callback or event: under the 5 s the platform
/// waits for its webhook (and its callbacks), so the platform hears the backend's answer, or the
/// gateway's 502/504, before it gives up on its own.
pub const DEFAULT_RELAY_TIMEOUT_MS: u64 = 4000;

/// Paths the admin and public listeners serve themselves, which no `[[callbacks]]` may take.
const OWN_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics", "/status", "/webhooks/douyin"];
/// Path prefixes the listeners serve themselves.
const OWN_PREFIXES: &[&str] = &["/oauth/", "/admin/", "/providers/", "/_gateway/"];

/// How a `[[callbacks]]` request is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackVerify {
    /// `Byte-Signature` with the app's platform public key over `TIMESTAMP\nNONCE\nBODY\n`, the
    /// timestamp within 300 s of now and the nonce unseen for 10 minutes.
    ByteSignature,
    /// `X-Douyin-Signature`, as the webhook: hex SHA-1 of the app's webhook key and the body.
    DouyinWebhook,
}

/// `[[callbacks]]`: a URL the platform calls back, verified and forwarded to a backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackConfig {
    /// Its name in metrics and logs.
    pub name: String,
    /// The path it is served at: on `server.public_listen` when set, else on `admin_listen`.
    pub path: String,
    /// The `[[apps]]` whose keys verify it.
    pub app: String,
    /// How it is verified.
    pub verify: CallbackVerify,
    /// Where a verified callback is forwarded (http or https URL, used as written).
    pub forward_to: String,
    /// Environment variable holding the HMAC-SHA256 key of `X-Gateway-Signature` on what is
    /// forwarded (none: not signed).
    pub secret_env: Option<String>,
    /// How long the backend may take to answer, body included.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// `[[webhook_forward]]`: a backend that receives the platform's webhook events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookForwardConfig {
    /// Where events are POSTed (http or https URL, used as written).
    pub url: String,
    /// The events it takes, by the platform's `event` name (default: every event but
    /// `verify_webhook`, which the gateway answers itself).
    pub events: Option<Vec<String>>,
    /// The `[[apps]]` whose events it takes (default: every app).
    pub apps: Option<Vec<String>>,
    /// Environment variable holding the HMAC-SHA256 key of `X-Gateway-Signature` (none: not signed).
    pub secret_env: Option<String>,
    /// How long it may take to answer.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_RELAY_TIMEOUT_MS
}

impl Config {
    /// Each `[[callbacks]]`: a unique name, a unique path the listeners do not serve already, a
    /// known app (with a platform public key for `byte_signature`), a URL, a key that is set.
    pub(super) fn validate_callbacks(&self, c: &mut Collector<'_>) {
        for (i, cb) in self.callbacks.iter().enumerate() {
            let idx = Some(i);
            if cb.name.is_empty() {
                c.err(
                    "callbacks",
                    idx,
                    "name",
                    "give the callback a name (metrics and logs use it)",
                );
            } else if self.callbacks[..i].iter().any(|o| o.name == cb.name) {
                c.err(
                    "callbacks",
                    idx,
                    "name",
                    format!("another [[callbacks]] is named {:?}", cb.name),
                );
            }
            if let Some(why) = path_problem(&cb.path) {
                c.err("callbacks", idx, "path", why);
            } else if self.callbacks[..i].iter().any(|o| o.path == cb.path) {
                c.err(
                    "callbacks",
                    idx,
                    "path",
                    format!("another [[callbacks]] is served at {}", cb.path),
                );
            }
            match self.apps.iter().find(|a| a.name == cb.app) {
                None => c.err("callbacks", idx, "app", format!("no [[apps]] named {:?}", cb.app)),
                Some(a)
                    if cb.verify == CallbackVerify::ByteSignature
                        && a.platform_public_key_env.is_none()
                        && a.platform_public_key_file.is_none() =>
                {
                    c.err(
                        "callbacks",
                        idx,
                        "verify",
                        format!(
                            "byte_signature needs the platform's public key for app {:?}: set its \
                             platform_public_key_file or platform_public_key_env",
                            cb.app
                        ),
                    )
                }
                Some(_) => {}
            }
            if !is_http_url(&cb.forward_to) {
                c.err("callbacks", idx, "forward_to", "must be an http:// or https:// URL");
            }
            check_secret_env(c, "callbacks", idx, &cb.secret_env);
            if cb.timeout_ms == 0 {
                c.err("callbacks", idx, "timeout_ms", "must be greater than 0");
            }
        }
    }

    /// Each `[[webhook_forward]]`: a URL, known apps, event names, a key that is set.
    pub(super) fn validate_webhook_forward(&self, c: &mut Collector<'_>) {
        for (i, w) in self.webhook_forward.iter().enumerate() {
            let idx = Some(i);
            if !is_http_url(&w.url) {
                c.err("webhook_forward", idx, "url", "must be an http:// or https:// URL");
            }
            for app in w.apps.iter().flatten() {
                if !self.apps.iter().any(|a| a.name == *app) {
                    c.err("webhook_forward", idx, "apps", format!("no [[apps]] named {app:?}"));
                }
            }
            if w.events
                .as_ref()
                .is_some_and(|e| e.is_empty() || e.iter().any(|n| n.is_empty()))
            {
                c.err(
                    "webhook_forward",
                    idx,
                    "events",
                    "name the platform's events (e.g. \"im_receive_msg\"), or leave the key out for every event",
                );
            }
            check_secret_env(c, "webhook_forward", idx, &w.secret_env);
            if w.timeout_ms == 0 {
                c.err("webhook_forward", idx, "timeout_ms", "must be greater than 0");
            }
        }
    }
}

/// Why a callback's path cannot be served, if it cannot.
fn path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.len() < 2 {
        return Some("must be an absolute path such as \"/callbacks/pay\"".into());
    }
    if !path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
        || path.contains("//")
        || path.split('/').any(|s| s == "." || s == "..")
    {
        return Some("may hold only letters, digits and / - _ . ~ (no empty, . or .. segments)".into());
    }
    if OWN_PATHS.contains(&path)
        || OWN_PREFIXES
            .iter()
            .any(|p| path.starts_with(p) || *path == p[..p.len() - 1])
    {
        return Some(format!(
            "{path} is the gateway's own (it serves {} and {}*)",
            OWN_PATHS.join(", "),
            OWN_PREFIXES.join("*, ")
        ));
    }
    None
}

fn is_http_url(url: &str) -> bool {
    matches!(url.parse::<http::Uri>(),
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some())
}

fn check_secret_env(c: &mut Collector<'_>, table: &str, idx: Option<usize>, env: &Option<String>) {
    match env.as_deref() {
        None => {}
        Some("") => c.err(
            table,
            idx,
            "secret_env",
            "name the environment variable holding the signing key",
        ),
        Some(var) if std::env::var(var).map_or(true, |v| v.is_empty()) => c.err(
            table,
            idx,
            "secret_env",
            format!("environment variable {var} is not set (any random string: douyin-gateway keygen prints one)"),
        ),
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::path_problem;

    #[test]
    fn a_callback_path_may_not_take_the_listeners_own() {
        assert_eq!(path_problem("/callbacks/pay"), None);
        for bad in [
            "callbacks",
            "/",
            "/webhooks/douyin",
            "/oauth/callback",
            "/admin/tokens",
            "/admin",
            "/metrics",
            "/a/../b",
            "/a//b",
            "/a b",
            "/a?x=1",
            "/providers/p/events",
        ] {
            assert!(path_problem(bad).is_some(), "{bad}");
        }
    }
}
