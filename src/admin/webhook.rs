//! `POST /webhooks/douyin`: the platform's event push. `verify_webhook` is
//! answered with its challenge; `unauthorize` (a user revoked the app) drops
//! that user's tokens at once. Every event must carry `X-Douyin-Signature`,
//! hex SHA-1 of the app's webhook key (default: its client secret) followed by
//! the raw body, as the platform signs them.

use super::{error, json, read_body};
use crate::body::ProxyBody;
use crate::state::Shared;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// Signs a body as the platform does.
pub(super) fn sign(key: &str, body: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(body);
    hex::encode(h.finalize())
}

pub(super) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<ProxyBody> {
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "bad_request", m);
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return bad("body must be a JSON event");
    };
    let rt = shared.runtime.load();
    let client_key = event["client_key"].as_str().unwrap_or("");
    let Some(app) = rt.apps.iter().find(|a| a.platform_key == client_key) else {
        return bad("the event names no configured client_key");
    };
    let given = parts
        .headers
        .get("x-douyin-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let want = sign(app.webhook_key.expose(), &body);
    if given.is_empty() || !bool::from(given.to_ascii_lowercase().as_bytes().ct_eq(want.as_bytes())) {
        tracing::warn!(app = %app.name, "webhook event refused: missing or wrong X-Douyin-Signature");
        return error(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "missing or wrong X-Douyin-Signature",
        );
    }
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
                    json(StatusCode::OK, json!({"dropped": dropped}))
                }
                // Not acknowledged: the platform sends the event again.
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string()),
            }
        }
        other => json(StatusCode::OK, json!({"ignored": other})),
    }
}
