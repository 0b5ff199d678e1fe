//! Events to `[[notify]]` receivers: users about to drop off, token fetches failing, the
//! competing-fetcher alarm. Each receiver has a bounded queue and one sender task: emitting never
//! waits (a full queue drops the new event and counts it), and a slow or dead receiver costs the
//! calls nothing. Deliveries are JSON POSTs signed with `X-Gateway-Signature: sha256=HEX`
//! (HMAC-SHA256 of the body with the receiver's key), retried with doubling back-off.
//!
//! | event | fields |
//! |---|---|
//! | `user.reauthorization_required` | `app`, `open_id`, `reason` |
//! | `user.reauthorization_due` | `app`, `open_id`, `reauthorize_by` (once per user and deadline, inside 7 days) |
//! | `token.fetch_failing` | `app`, `class`, `outcome`, `since` (failing longer than `tokens.fetch_failing_after_secs`) |
//! | `token.fetch_recovered` | `app`, `class`, `since` |
//! | `token.evicted_early` | `app`, `class`, `open_id` (null for app tokens), `age_s` |
//!
//! The names are listed in [`crate::config::NOTIFY_EVENTS`], which a receiver's `events` is
//! checked against.
//!
//! Every event also has `event`, `id` (unique, for the receiver's de-duplication) and `at` (Unix
//! seconds). No event carries a token or a secret.

use crate::body::ProxyBody;
use crate::config::{NotifyConfig, UpstreamConfig, NOTIFY_EVENTS};
use crate::secret::Secret;
use crate::upstream::HttpClient;
use http::{header, HeaderValue, Method, Request};
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// First retry delay; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One event, serialised once for every receiver.
#[derive(Debug)]
struct Event {
    name: &'static str,
    body: bytes::Bytes,
}

struct Receiver {
    name: String,
    events: Vec<String>,
    queue: mpsc::Sender<Arc<Event>>,
}

/// The receivers, and their metrics.
pub struct Notifier {
    receivers: Vec<Receiver>,
    events: IntCounterVec,
    queued: IntGaugeVec,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("receivers", &self.receivers.len())
            .finish()
    }
}

impl Notifier {
    /// Starts a sender task per receiver (inside a tokio runtime). Metrics:
    /// `douyin_gateway_notify_events_total{receiver, outcome}` (`delivered`, `dropped` when its
    /// queue was full, `given_up` after `max_attempts`) and `douyin_gateway_notify_queue{receiver}`.
    pub fn start(configs: &[NotifyConfig], metrics: &crate::metrics::Metrics) -> Result<Arc<Self>, String> {
        let events = IntCounterVec::new(
            Opts::new(
                "douyin_gateway_notify_events_total",
                "Events for [[notify]] receivers, by receiver and outcome (delivered, dropped: queue full, given_up: out of attempts).",
            ),
            &["receiver", "outcome"],
        )
        .expect("metric");
        let queued = IntGaugeVec::new(
            Opts::new(
                "douyin_gateway_notify_queue",
                "Events waiting for a [[notify]] receiver.",
            ),
            &["receiver"],
        )
        .expect("metric");
        metrics.register(Box::new(events.clone()));
        metrics.register(Box::new(queued.clone()));
        let mut receivers = Vec::new();
        for c in configs {
            let name = match &c.name {
                Some(n) => n.clone(),
                None => c
                    .url
                    .parse::<http::Uri>()
                    .ok()
                    .and_then(|u| u.authority().map(|a| a.to_string()))
                    .unwrap_or_else(|| c.url.clone()),
            };
            let key = std::env::var(&c.secret_env)
                .ok()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| format!("[[notify]] {name}: environment variable {} is not set", c.secret_env))?;
            let uri: http::Uri = c.url.parse().map_err(|e| format!("[[notify]] {name}: url: {e}"))?;
            let client = crate::upstream::client(&UpstreamConfig {
                base_url: c.url.clone(),
                connect_timeout_ms: c.timeout_ms,
                ca_file: None,
                lean_http1: false,
            })?;
            for outcome in ["delivered", "dropped", "given_up"] {
                events.with_label_values(&[&name, outcome]);
            }
            queued.with_label_values(&[&name]).set(0);
            let (tx, rx) = mpsc::channel(c.queue);
            let sender = Sender {
                name: name.clone(),
                uri,
                key: Secret::new(key),
                client,
                timeout: Duration::from_millis(c.timeout_ms),
                max_attempts: c.max_attempts,
                events: events.clone(),
                queued: queued.clone(),
            };
            tokio::spawn(sender.run(rx));
            receivers.push(Receiver {
                name,
                events: c.events.clone(),
                queue: tx,
            });
        }
        Ok(Arc::new(Notifier {
            receivers,
            events,
            queued,
        }))
    }

    /// Queues an event for every receiver that wants it; never waits.
    pub fn emit(&self, name: &'static str, mut fields: Value) {
        // A name missing from the list could never be subscribed to: `check` refuses it.
        debug_assert!(NOTIFY_EVENTS.contains(&name), "{name} is not in config::NOTIFY_EVENTS");
        if !self.receivers.iter().any(|r| r.events.iter().any(|e| e == name)) {
            return;
        }
        fields["event"] = name.into();
        fields["id"] = hex::encode(rand::random::<[u8; 12]>()).into();
        fields["at"] = crate::vocab::unix_now().into();
        let event = Arc::new(Event {
            name,
            body: serde_json::to_vec(&fields).expect("json").into(),
        });
        for r in self.receivers.iter().filter(|r| r.events.iter().any(|e| e == name)) {
            match r.queue.try_send(Arc::clone(&event)) {
                Ok(()) => self.queued.with_label_values(&[&r.name]).inc(),
                Err(_) => {
                    self.events.with_label_values(&[&r.name, "dropped"]).inc();
                    tracing::warn!(receiver = %r.name, event = name,
                        "notify queue full: the receiver is slow or down; event dropped");
                }
            }
        }
    }

    /// `user.reauthorization_required`.
    pub fn reauthorization_required(&self, app: &str, open_id: &str, reason: &str) {
        self.emit(
            "user.reauthorization_required",
            json!({"app": app, "open_id": open_id, "reason": reason}),
        );
    }
}

/// The token engine's events that receivers can be told of.
impl crate::token::events::Observer for Notifier {
    fn on(&self, event: &crate::token::events::Event<'_>) {
        use crate::token::events::Event;
        match *event {
            Event::EvictedEarly { key, age_s } => self.emit(
                "token.evicted_early",
                json!({"app": &*key.app, "class": key.class.as_str(), "open_id": key.open_id(), "age_s": age_s}),
            ),
            Event::FetchFailing {
                key,
                outcome,
                since_unix,
            } => self.emit(
                "token.fetch_failing",
                json!({"app": &*key.app, "class": key.class.as_str(), "outcome": outcome, "since": since_unix}),
            ),
            Event::FetchRecovered { key, since_unix } => self.emit(
                "token.fetch_recovered",
                json!({"app": &*key.app, "class": key.class.as_str(), "since": since_unix}),
            ),
            Event::ReauthorizationRequired { app, open_id, reason } => {
                self.reauthorization_required(app, open_id, reason)
            }
            Event::AuthorizerLost {
                provider,
                authorizer_appid,
                reason,
                unauthorized,
            } => self.emit(
                if unauthorized {
                    "authorizer.unauthorized"
                } else {
                    "authorizer.reauthorization_required"
                },
                json!({"provider": provider, "authorizer_appid": authorizer_appid, "reason": reason}),
            ),
            Event::ReauthorizationDue { app, open_id, by_unix } => self.emit(
                "user.reauthorization_due",
                json!({"app": app, "open_id": open_id, "reauthorize_by": by_unix}),
            ),
            _ => {}
        }
    }

    fn wants_due(&self) -> bool {
        self.receivers
            .iter()
            .any(|r| r.events.iter().any(|e| e == "user.reauthorization_due"))
    }
}

/// One receiver's sender task.
struct Sender {
    name: String,
    uri: http::Uri,
    key: Secret,
    client: HttpClient,
    timeout: Duration,
    max_attempts: u32,
    events: IntCounterVec,
    queued: IntGaugeVec,
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<Arc<Event>>) {
        while let Some(event) = rx.recv().await {
            let mut delay = FIRST_BACKOFF;
            let mut attempt = 1;
            let delivered = loop {
                match self.deliver(&event).await {
                    Ok(()) => break true,
                    Err(e) if attempt >= self.max_attempts => {
                        tracing::warn!(receiver = %self.name, event = event.name, attempts = attempt,
                            "notify: giving up on an event: {e}");
                        break false;
                    }
                    Err(e) => {
                        tracing::debug!(receiver = %self.name, event = event.name, attempt, "notify: {e}; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(MAX_BACKOFF);
                        attempt += 1;
                    }
                }
            };
            self.queued.with_label_values(&[&self.name]).dec();
            let outcome = if delivered { "delivered" } else { "given_up" };
            self.events.with_label_values(&[&self.name, outcome]).inc();
        }
    }

    async fn deliver(&self, event: &Event) -> Result<(), String> {
        let signature = crate::signature::gateway_signature(self.key.expose().as_bytes(), &event.body);
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("x-gateway-event", event.name)
            .header(&crate::signature::X_GATEWAY_SIGNATURE, signature)
            .body(ProxyBody::full(event.body.clone()))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| format!("no answer within {} ms", self.timeout.as_millis()))?
            .map_err(|e| crate::upstream::describe(&e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered HTTP {}", resp.status().as_u16()))
        }
    }
}
