//! `POST /webhooks/douyin`: the platform's event push. `verify_webhook` is
//! answered with its challenge; `unauthorize` (a user revoked the app) drops
//! that user's tokens at once. Every event must carry `X-Douyin-Signature`,
//! hex SHA-1 of the app's webhook key (default: its client secret) followed by
//! the raw body, as the platform signs them.
//!
//! The platform's own `verify_webhook` example carries `"client_key": ""`: an event naming no
//! client_key is taken for the configured app whose key its signature verifies under. Deliveries
//! carry `Msg-Id` and are retried (5 s timeout, up to 3 retries): an event whose `Msg-Id` was
//! processed already is acknowledged and not processed again (the last [`REMEMBERED`] ids).

use super::{error, json, read_body};
use crate::body::ProxyBody;
use crate::state::Shared;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// `Msg-Id`s remembered, oldest forgotten first: the platform retries within about 20 s, so a
/// few minutes' worth of deliveries is plenty.
pub(super) const REMEMBERED: usize = 10_000;

/// The `Msg-Id`s of events processed already.
#[derive(Default)]
pub struct Delivered(std::sync::Mutex<(std::collections::HashSet<String>, std::collections::VecDeque<String>)>);

impl Delivered {
    fn seen(&self, id: &str) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).0.contains(id)
    }

    fn remember(&self, id: &str) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *g;
        if set.insert(id.to_string()) {
            order.push_back(id.to_string());
            if order.len() > REMEMBERED {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }
}

/// Signs a body as the platform does.
pub(super) fn sign(key: &str, body: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(body);
    hex::encode(h.finalize())
}

pub(super) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<ProxyBody> {
    let (parts, body) = req.into_parts();
    let body = match read_body(shared, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "bad_request", m);
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return bad("body must be a JSON event");
    };
    let rt = shared.runtime.load();
    let client_key = event["client_key"].as_str().unwrap_or("");
    let given = parts
        .headers
        .get("x-douyin-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let verifies = |app: &crate::runtime::App| {
        !given.is_empty() && bool::from(given.as_bytes().ct_eq(sign(app.webhook_key.expose(), &body).as_bytes()))
    };
    let app = if client_key.is_empty() {
        // The platform's own verify_webhook example names no app: the one whose key signed it.
        match rt.apps.iter().find(|a| verifies(a)) {
            Some(app) => app,
            None => {
                tracing::warn!("webhook event naming no client_key refused: its signature verifies under no app's key");
                return error(
                    StatusCode::UNAUTHORIZED,
                    "bad_signature",
                    "missing or wrong X-Douyin-Signature",
                );
            }
        }
    } else {
        let Some(app) = rt.apps.iter().find(|a| a.platform_key == client_key) else {
            return bad("the event names no configured client_key");
        };
        if !verifies(app) {
            tracing::warn!(app = %app.name, "webhook event refused: missing or wrong X-Douyin-Signature");
            return error(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                "missing or wrong X-Douyin-Signature",
            );
        }
        app
    };
    let msg_id = parts
        .headers
        .get("msg-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 256);
    if let Some(id) = msg_id {
        if shared.webhooks.seen(id) {
            tracing::debug!(app = %app.name, "webhook delivery repeated (Msg-Id seen): acknowledged, not processed again");
            return json(StatusCode::OK, json!({"duplicate": true}));
        }
    }
    let answer = process(shared, app, &event).await;
    if let (Some(id), true) = (msg_id, answer.status().is_success()) {
        shared.webhooks.remember(id);
    }
    answer
}

/// What a signed event does.
async fn process(shared: &Shared, app: &crate::runtime::App, event: &Value) -> Response<ProxyBody> {
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "bad_request", m);
    // `content` arrives as an object or as a JSON string holding one.
    let content = match &event["content"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
        v => v.clone(),
    };
    match event["event"].as_str().unwrap_or("") {
        "verify_webhook" => json(StatusCode::OK, json!({"challenge": content["challenge"]})),
        "unauthorize" => {
            let Some(open_id) = event["from_user_id"].as_str().filter(|o| !o.is_empty()) else {
                return bad("unauthorize event without from_user_id");
            };
            match shared.tokens.remove_user(&app.name, open_id).await {
                Ok(dropped) => {
                    tracing::info!(app = %app.name, dropped, "user revoked the app: tokens dropped");
                    shared
                        .tokens
                        .announce(&crate::token::events::Event::ReauthorizationRequired {
                            app: &app.name,
                            open_id,
                            reason: "the user revoked the app (unauthorize event)",
                        });
                    json(StatusCode::OK, json!({"dropped": dropped}))
                }
                // Not acknowledged: the platform sends the event again.
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string()),
            }
        }
        other => json(StatusCode::OK, json!({"ignored": other})),
    }
}
