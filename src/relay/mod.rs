//! Deliveries to backends of what the platform sends the gateway: `[[callbacks]]` (payment
//! results, refunds, trade events, verified, then forwarded byte for byte) and
//! `[[webhook_forward]]` (the platform's one webhook URL, relayed). Each is sent once, within the
//! platform's own request and bounded by its `timeout_ms`: nothing is queued, so a restart loses
//! nothing the platform thinks delivered; the platform's retries are the retries.
//!
//! ```
//! use douyin_gateway::relay::Nonces;
//! let nonces = Nonces::new(2);
//! assert!(nonces.record("app", "n1", 1_000).is_ok());
//! assert!(nonces.record("app", "n1", 1_001).is_err()); // replayed
//! ```
//!
//! A delivery carries `X-Gateway-Signature: sha256=HEX` (HMAC-SHA256 of the body, as
//! `[[notify]]`) when the receiver has a `secret_env`.

mod nonces;

pub use nonces::{Nonces, Refused, MAX_NONCES, NONCE_WINDOW_SECS};

use crate::body::ProxyBody;
use crate::config::{CallbackVerify, Config, UpstreamConfig};
use crate::secret::Secret;
use crate::upstream::HttpClient;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;

/// A backend's answer is read whole, up to this: what the platform reads of it is a short
/// acknowledgement (`success`, `{"err_no":0}`).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The app a delivery is for, by its `[[apps]]` name.
pub static X_GATEWAY_APP: HeaderName = HeaderName::from_static("x-gateway-app");
/// The webhook event a relayed delivery carries.
pub static X_GATEWAY_EVENT: HeaderName = HeaderName::from_static("x-gateway-event");

/// Headers of one hop, not forwarded (RFC 9110 §7.6.1), and what the gateway sets itself.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
    "x-gateway-app",
    "x-gateway-event",
    "x-gateway-signature",
];

/// The `X-Gateway-App` value for an app name: as written (UTF-8 bytes pass as obs-text), or `-`
/// for a name no header can carry (a control character).
pub fn app_header(name: &str) -> HeaderValue {
    HeaderValue::from_bytes(name.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// A backend: where deliveries go, signed with its key, within its timeout.
pub struct Target {
    /// Its name in metrics and logs: never its URL, which may hold a secret.
    pub label: Arc<str>,
    uri: http::Uri,
    key: Option<Secret>,
    client: HttpClient,
    timeout: Duration,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("label", &self.label).finish()
    }
}

/// A backend's answer, read whole.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its `Content-Type`, if any.
    pub content_type: Option<HeaderValue>,
    /// Its body.
    pub body: Bytes,
}

/// Why a backend's answer did not come.
#[derive(Debug)]
pub enum Failure {
    /// No connection, or it failed (hosts and OS errors only).
    Unreachable(String),
    /// No whole answer within the timeout, in ms.
    Timeout(u64),
}

impl Target {
    /// A backend at `url` (checked by `check`), its key read from `secret_env`.
    pub fn new(label: String, url: &str, secret_env: Option<&str>, timeout_ms: u64) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{label}: url: {e}"))?;
        let key = match secret_env {
            None => None,
            Some(var) => Some(Secret::new(
                std::env::var(var)
                    .ok()
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| format!("{label}: environment variable {var} is not set"))?,
            )),
        };
        let client = crate::upstream::client(&UpstreamConfig {
            base_url: url.to_string(),
            connect_timeout_ms: timeout_ms,
            ca_file: None,
            lean_http1: false,
        })?;
        Ok(Target {
            label: label.into(),
            uri,
            key,
            client,
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    /// POSTs `body` with `headers` (less those of one hop), signed when the target has a key;
    /// the answer read whole within the timeout.
    pub async fn send(
        &self,
        headers: &HeaderMap,
        extra: &[(&HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Answer, Failure> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .body(ProxyBody::full(body.clone()))
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        let out = req.headers_mut();
        for (name, value) in headers {
            if !NOT_FORWARDED.contains(&name.as_str()) {
                out.append(name, value.clone());
            }
        }
        for (name, value) in extra {
            out.insert(*name, value.clone());
        }
        if let Some(key) = &self.key {
            let signature = crate::signature::gateway_signature(key.expose().as_bytes(), &body);
            out.insert(
                &crate::signature::X_GATEWAY_SIGNATURE,
                HeaderValue::from_str(&signature).expect("hex"),
            );
        }
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| Failure::Unreachable(crate::upstream::describe(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = http_body_util::Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    Failure::Unreachable(format!(
                        "its answer could not be read (over {MAX_ANSWER_BYTES} bytes?): {e}"
                    ))
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(Failure::Timeout(self.timeout.as_millis() as u64)))
    }
}

/// A `[[callbacks]]`, compiled.
#[derive(Debug)]
pub struct Callback {
    /// Its name (metrics, logs).
    pub name: Arc<str>,
    /// Where it is served.
    pub path: String,
    /// Its app, as an index into the runtime's apps (config order).
    pub app: usize,
    /// How it is verified.
    pub verify: CallbackVerify,
    /// Its backend.
    pub target: Target,
}

/// A `[[webhook_forward]]`, compiled.
#[derive(Debug)]
pub struct Forward {
    /// Its backend, labelled `N:HOST:PORT` (N its place among the `[[webhook_forward]]`).
    pub target: Target,
    events: Option<Vec<String>>,
    apps: Option<Vec<String>>,
}

impl Forward {
    /// Whether it takes `event` of `app`: by default every event but `verify_webhook` of every app.
    pub fn wants(&self, app: &str, event: &str) -> bool {
        let event_ok = match &self.events {
            Some(events) => events.iter().any(|e| e == event),
            None => event != "verify_webhook",
        };
        event_ok && self.apps.as_ref().is_none_or(|apps| apps.iter().any(|a| a == app))
    }
}

/// The `[[callbacks]]` and `[[webhook_forward]]` of a validated config.
pub fn compile(config: &Config) -> Result<(Vec<Callback>, Vec<Forward>), String> {
    let mut callbacks = Vec::new();
    for c in &config.callbacks {
        let app = config
            .apps
            .iter()
            .position(|a| a.name == c.app)
            .ok_or_else(|| format!("[[callbacks]] {}: no [[apps]] named {:?}", c.name, c.app))?;
        callbacks.push(Callback {
            name: c.name.as_str().into(),
            path: c.path.clone(),
            app,
            verify: c.verify,
            target: Target::new(
                format!("[[callbacks]] {}", c.name),
                &c.forward_to,
                c.secret_env.as_deref(),
                c.timeout_ms,
            )?,
        });
    }
    let mut forwards = Vec::new();
    for (i, w) in config.webhook_forward.iter().enumerate() {
        let authority = w
            .url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| {
                u.authority()
                    .map(|a| a.as_str().rsplit('@').next().unwrap_or("").to_string())
            })
            .unwrap_or_default();
        let mut target = Target::new(
            format!("[[webhook_forward]] {i}"),
            &w.url,
            w.secret_env.as_deref(),
            w.timeout_ms,
        )?;
        target.label = format!("{i}:{authority}").into();
        forwards.push(Forward {
            target,
            events: w.events.clone(),
            apps: w.apps.clone(),
        });
    }
    Ok((callbacks, forwards))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_app_name_makes_a_header() {
        assert_eq!(app_header("main"), "main");
        assert_eq!(app_header("商城").as_bytes(), "商城".as_bytes());
        assert_eq!(app_header("a\nb"), "-");
    }
}
