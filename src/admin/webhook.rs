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
//!
//! Then each event is relayed to the `[[webhook_forward]]` targets that want it ([`super::relay`]):
//! the platform gets 200 only when every one took it, else 502, and its retry (same `Msg-Id`)
//! relays it again to every target, without handling it again here.

use super::body::read_body;
use super::{json, Answer, Ctx};
use crate::error::GatewayError;
use crate::runtime::App;
use crate::state::Shared;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// `Msg-Id`s remembered, oldest forgotten first: the platform retries within about 20 s, so a
/// few minutes' worth of deliveries is plenty.
pub(super) const REMEMBERED: usize = 10_000;

/// How far a delivery got, by `Msg-Id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The gateway's own handling is done; some `[[webhook_forward]]` target has not taken it.
    Handled,
    /// Handled, and every target took it: a repeat is acknowledged and nothing more.
    Done,
}

/// The `Msg-Id`s of events handled already, and whether every relay target took them.
#[derive(Default)]
pub struct Delivered(
    std::sync::Mutex<(
        std::collections::HashMap<String, Stage>,
        std::collections::VecDeque<String>,
    )>,
);

impl Delivered {
    fn stage(&self, id: &str) -> Option<Stage> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).0.get(id).copied()
    }

    fn remember(&self, id: &str, stage: Stage) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *g;
        if map.insert(id.to_string(), stage).is_none() {
            order.push_back(id.to_string());
            if order.len() > REMEMBERED {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
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

/// Handles `POST /webhooks/douyin`.
pub(super) async fn handle(cx: Ctx<'_>, req: Request<Incoming>) -> Answer {
    let (parts, body) = req.into_parts();
    let body = read_body(cx, body).await?;
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return Err(bad("body must be a JSON event"));
    };
    // Held across the relay's awaits: a whole Arc, not a guard.
    let rt = cx.shared.runtime.load_full();
    let given = parts
        .headers
        .get("x-douyin-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let app = signer(&rt.apps, event["client_key"].as_str().unwrap_or(""), &given, &body)?;
    let msg_id = parts
        .headers
        .get("msg-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 256);
    let stage = msg_id.and_then(|id| cx.own.webhooks.stage(id));
    if stage == Some(Stage::Done) {
        tracing::debug!(app = %app.name, "webhook delivery repeated (Msg-Id seen): acknowledged, not processed again");
        return Ok(json(StatusCode::OK, json!({"duplicate": true})));
    }
    let answer = match stage {
        // Handled before, but a relay target did not take it: only the relay is done again.
        Some(_) => json(StatusCode::OK, json!({"relayed_again": true})),
        None => {
            let name = event["event"].as_str().unwrap_or("");
            let relayed = rt.webhook_forwards.iter().any(|f| f.wants(&app.name, name));
            process(cx.shared, app, &event, relayed).await?
        }
    };
    if let Some(id) = msg_id {
        cx.own.webhooks.remember(id, Stage::Handled);
    }
    let name = event["event"].as_str().unwrap_or("");
    super::relay::relay(cx.shared, &rt, app, name, &parts.headers, body).await?;
    if let Some(id) = msg_id {
        cx.own.webhooks.remember(id, Stage::Done);
    }
    Ok(answer)
}

/// The app whose webhook key signed the event: the one its `client_key` names, or with none (the
/// platform's own verify_webhook example names no app) the one whose key verifies the signature.
fn signer<'a>(apps: &'a [App], client_key: &str, given: &str, body: &[u8]) -> Result<&'a App, GatewayError> {
    let verifies = |app: &App| {
        !given.is_empty() && bool::from(given.as_bytes().ct_eq(sign(app.webhook_key.expose(), body).as_bytes()))
    };
    if client_key.is_empty() {
        return apps.iter().find(|a| verifies(a)).ok_or_else(|| {
            tracing::warn!("webhook event naming no client_key refused: its signature verifies under no app's key");
            GatewayError::BadSignature
        });
    }
    let Some(app) = apps.iter().find(|a| a.platform_key == client_key) else {
        return Err(bad("the event names no configured client_key"));
    };
    if !verifies(app) {
        tracing::warn!(app = %app.name, "webhook event refused: missing or wrong X-Douyin-Signature");
        return Err(GatewayError::BadSignature);
    }
    Ok(app)
}

fn bad(m: &str) -> GatewayError {
    GatewayError::BadRequest(m.into())
}

/// What a signed event does.
async fn process(shared: &Shared, app: &App, event: &Value, relayed: bool) -> Answer {
    // `content` arrives as an object or as a JSON string holding one.
    let content = match &event["content"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
        v => v.clone(),
    };
    match event["event"].as_str().unwrap_or("") {
        "verify_webhook" => Ok(json(StatusCode::OK, json!({"challenge": content["challenge"]}))),
        "unauthorize" => {
            let Some(open_id) = event["from_user_id"].as_str().filter(|o| !o.is_empty()) else {
                return Err(bad("unauthorize event without from_user_id"));
            };
            // An error is not acknowledged: the platform sends the event again.
            let dropped = shared
                .tokens
                .remove_user(&app.name, open_id)
                .await
                .map_err(|e| GatewayError::StoreUnavailable(e.to_string()))?;
            tracing::info!(app = %app.name, dropped, "user revoked the app: tokens dropped");
            shared
                .tokens
                .announce(&crate::token::events::Event::ReauthorizationRequired {
                    app: &app.name,
                    open_id,
                    reason: "the user revoked the app (unauthorize event)",
                });
            Ok(json(StatusCode::OK, json!({"dropped": dropped})))
        }
        // Nothing for the gateway itself to do; said so, unless a relay target takes it.
        other if relayed => Ok(json(StatusCode::OK, json!({"relayed": other}))),
        other => Ok(json(StatusCode::OK, json!({"ignored": other}))),
    }
}
