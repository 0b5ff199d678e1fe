//! `POST /providers/{name}/events`: a service provider's authorization event URL (授权事件接收
//! URL). The platform POSTs `{"Nonce","TimeStamp","Encrypt","MsgSignature"}`; the gateway
//!
//! 1. checks `MsgSignature` (SHA-1 over the message token, `TimeStamp`, `Nonce`, `Encrypt`:
//!    [`crate::provider_crypto`]): 401 `bad_signature` otherwise, and nothing changes;
//! 2. refuses a `TimeStamp` older than [`MAX_AGE_SECS`] or more than [`MAX_AHEAD_SECS`] ahead
//!    (401), and an event whose (`Nonce`, `MsgSignature`) it verified already within
//!    [`NONCE_WINDOW_SECS`] (401; remembered only once verified, the table capped at
//!    [`MAX_EVENT_NONCES`]);
//! 3. decrypts `Encrypt` and checks the appid it ends with is the provider's `component_appid`;
//! 4. acts: `PUSH` stores the `Ticket` (durably, encrypted: [`crate::token::Tokens::store_ticket`]);
//!    `AUTHORIZED` and `UPDATE_AUTHORIZED` exchange `AuthorizationCode` at once and store the
//!    merchant app's grant before answering ([`crate::token::Tokens::authorize_authorizer`]; a
//!    failure answers 503, so the platform delivers the event again); `UNAUTHORIZED` drops the
//!    merchant app's tokens and tells `[[notify]]` (`authorizer.unauthorized`);
//! 5. answers the plain string `success`, as the platform requires.
//!
//! The platform's docs give no window for `TimeStamp`: the gateway's is the push interval (10
//! minutes) plus the 15 s over which the platform retries a delivery (as its webhook does: 3 times,
//! 5 s apart).

use super::body::read_body;
use super::{text, Answer, Ctx};
use crate::error::GatewayError;
use crate::relay::Refused;
use crate::runtime::Provider;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

/// How old an event's `TimeStamp` may be: the 10-minute push interval and 15 s of retries.
pub(super) const MAX_AGE_SECS: u64 = 600 + 15;
/// How far ahead of the gateway's clock an event's `TimeStamp` may be (clock skew).
pub(super) const MAX_AHEAD_SECS: u64 = 300;
/// How long a verified event's (`Nonce`, `MsgSignature`) is remembered: as long as its
/// `TimeStamp` is accepted, so a replay is refused by one rule or the other.
pub(super) const NONCE_WINDOW_SECS: u64 = MAX_AGE_SECS + MAX_AHEAD_SECS;
/// Verified events remembered at most: the platform sends each provider a few per 10 minutes
/// (a ticket, authorizations); 10,000 leaves room for thousands of merchants authorizing at once.
pub(super) const MAX_EVENT_NONCES: usize = 10_000;
/// A `Nonce` longer than this is not the platform's.
const MAX_NONCE_LEN: usize = 64;

/// The envelope the platform POSTs.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope {
    nonce: String,
    /// A string in the docs' samples; a number is read as its digits.
    time_stamp: serde_json::Value,
    encrypt: String,
    msg_signature: String,
}

/// The decrypted message: the fields the gateway reads.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct Message {
    event: String,
    ticket: Option<String>,
    app_id: Option<String>,
    authorization_code: Option<String>,
}

/// The table of verified events, for the listeners' state.
pub(super) fn event_nonces() -> crate::relay::Nonces {
    crate::relay::Nonces::with_window(MAX_EVENT_NONCES, NONCE_WINDOW_SECS)
}

/// Handles a request under `/providers/`.
pub(super) async fn handle(cx: Ctx<'_>, req: Request<Incoming>) -> Answer {
    let rt = cx.shared.runtime.load_full();
    let name = req
        .uri()
        .path()
        .strip_prefix("/providers/")
        .and_then(|r| r.strip_suffix("/events"))
        .unwrap_or("");
    let Some(p) = rt.providers.iter().find(|p| *p.name == *name) else {
        return Err(GatewayError::NotFound(
            "no such provider: the event URL is /providers/NAME/events for a [[providers]] NAME".into(),
        ));
    };
    if req.method() != http::Method::POST {
        return Err(GatewayError::BadRequest("the platform POSTs its events".into()));
    }
    let body = read_body(cx, req.into_body()).await?;
    let count = |event: &str, outcome: &str| {
        cx.shared
            .metrics
            .provider_events
            .with_label_values(&[&p.name, event, outcome])
            .inc()
    };
    let (message, seen) = match open(cx, p, &body) {
        Ok(m) => m,
        Err((outcome, e)) => {
            count("-", outcome);
            tracing::warn!(provider = %p.name, outcome, "provider event refused, nothing changed: {e}");
            return Err(e);
        }
    };
    if let Err(e) = act(cx, p, message, &count).await {
        // Not acted on: the platform is told to deliver it again, and that copy must be taken.
        cx.own.provider_nonces.forget(&p.name, &seen);
        return Err(e);
    }
    Ok(text(StatusCode::OK, "success"))
}

/// Verifies and opens an event: its message and the (`Nonce`, `MsgSignature`) recorded for it, or
/// the outcome to count and the error to answer.
fn open(cx: Ctx<'_>, p: &Provider, body: &[u8]) -> Result<(Message, String), (&'static str, GatewayError)> {
    let refused = |outcome, why: String| (outcome, GatewayError::CallbackRefused(why));
    let env: Envelope = serde_json::from_slice(body).map_err(|e| {
        (
            "bad_message",
            GatewayError::BadRequest(format!(
                "the body must be the platform's JSON {{Nonce, TimeStamp, Encrypt, MsgSignature}}: {e}"
            )),
        )
    })?;
    let timestamp = match &env.time_stamp {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err(refused("bad_signature", "TimeStamp must be Unix seconds".into())),
    };
    if env.nonce.is_empty() || env.nonce.len() > MAX_NONCE_LEN {
        return Err(refused(
            "bad_signature",
            format!("Nonce must be 1 to {MAX_NONCE_LEN} characters"),
        ));
    }
    let token = p.message_token.expose();
    if !crate::provider_crypto::verify_signature(token, &timestamp, &env.nonce, &env.encrypt, &env.msg_signature) {
        return Err(refused(
            "bad_signature",
            "MsgSignature does not verify with the provider's message token".into(),
        ));
    }
    let now = crate::vocab::unix_now();
    match timestamp.parse::<u64>() {
        Ok(t) if t <= now + MAX_AHEAD_SECS && now.saturating_sub(t) <= MAX_AGE_SECS => {}
        _ => {
            return Err(refused(
                "stale",
                format!(
                    "TimeStamp {timestamp:?} is older than {MAX_AGE_SECS} s or more than {MAX_AHEAD_SECS} s ahead \
                     of now ({now})"
                ),
            ))
        }
    }
    let seen = format!("{}\n{}", env.nonce, env.msg_signature.to_ascii_lowercase());
    match cx.own.provider_nonces.record(&p.name, &seen, now) {
        Ok(()) => {}
        Err(Refused::Replayed) => {
            return Err(refused(
                "replayed",
                format!("this event (Nonce and MsgSignature) was received in the last {NONCE_WINDOW_SECS} s: a replay"),
            ))
        }
        Err(Refused::Full) => {
            return Err((
                "nonces_full",
                GatewayError::StoreUnavailable(
                    "the table of recent provider events is full; the platform will deliver this again".into(),
                ),
            ))
        }
    }
    let (plain, appid) = crate::provider_crypto::decrypt(&p.message_key, &env.encrypt).map_err(|e| {
        (
            "bad_message",
            GatewayError::BadRequest(format!("Encrypt did not open with the provider's message key: {e}")),
        )
    })?;
    if appid != p.component_appid {
        return Err(refused(
            "bad_message",
            format!(
                "the event is for appid {appid:?}, not this provider's component_appid {:?}",
                p.component_appid
            ),
        ));
    }
    let message = serde_json::from_slice(&plain).map_err(|e| {
        (
            "bad_message",
            GatewayError::BadRequest(format!("the decrypted event is not a JSON object: {e}")),
        )
    })?;
    Ok((message, seen))
}

/// Does what a verified event says.
async fn act(cx: Ctx<'_>, p: &Provider, m: Message, count: &(dyn Fn(&str, &str) + Sync)) -> Result<(), GatewayError> {
    let app_id = m.app_id.as_deref().unwrap_or("-");
    match m.event.as_str() {
        "PUSH" => {
            let Some(ticket) = m.ticket.filter(|t| !t.is_empty()) else {
                count("PUSH", "bad_message");
                return Err(GatewayError::BadRequest("a PUSH event without its Ticket".into()));
            };
            if let Err(e) = cx.shared.tokens.store_ticket(&p.name, &ticket).await {
                count("PUSH", "store_failed");
                tracing::warn!(provider = %p.name, "a component_ticket could not be stored (kept in memory): {e}");
                return Err(GatewayError::StoreUnavailable(e.to_string()));
            }
            count("PUSH", "ok");
            tracing::info!(provider = %p.name, "component_ticket received and stored");
        }
        event @ ("AUTHORIZED" | "UPDATE_AUTHORIZED") => {
            let (Some(appid), Some(code)) = (
                m.app_id.as_deref().filter(|a| crate::vocab::valid_appid(a)),
                m.authorization_code.filter(|c| !c.is_empty()),
            ) else {
                count(event, "bad_message");
                return Err(GatewayError::BadRequest(format!(
                    "{event} without an AppId or AuthorizationCode"
                )));
            };
            let kind = match event {
                "AUTHORIZED" => crate::token::AuthorizationEvent::Authorized,
                _ => crate::token::AuthorizationEvent::Retrieved,
            };
            match cx.shared.tokens.authorize_authorizer(&p.name, appid, &code, kind).await {
                Ok(_) => {
                    count(event, "ok");
                    tracing::info!(provider = %p.name, authorizer_appid = %appid, event, "merchant app authorized; its grant is stored");
                }
                Err(e) => {
                    // Not `success`: the platform delivers the event again.
                    count(event, "exchange_failed");
                    tracing::warn!(provider = %p.name, authorizer_appid = %appid, event, "merchant app authorized, but its code could not be exchanged and stored: {e}");
                    return Err(GatewayError::TokenUnavailable(e.to_string()));
                }
            }
        }
        "UNAUTHORIZED" => {
            let Some(appid) = m.app_id.as_deref().filter(|a| crate::vocab::valid_appid(a)) else {
                count("UNAUTHORIZED", "bad_message");
                return Err(GatewayError::BadRequest("UNAUTHORIZED without an AppId".into()));
            };
            let held = cx
                .shared
                .tokens
                .remove_authorizer(&p.name, appid)
                .await
                .map_err(|e| GatewayError::StoreUnavailable(e.to_string()))?;
            cx.shared.tokens.announce(&crate::token::events::Event::AuthorizerLost {
                provider: &p.name,
                authorizer_appid: appid,
                reason: "the merchant app withdrew its authorization (UNAUTHORIZED)",
                unauthorized: true,
            });
            count("UNAUTHORIZED", "ok");
            tracing::info!(provider = %p.name, authorizer_appid = %appid, held, "merchant app withdrew its authorization; its tokens are dropped");
        }
        other => {
            count("other", "ok");
            tracing::info!(provider = %p.name, authorizer_appid = %app_id, event = %other.chars().take(40).collect::<String>(), "provider event of a kind the gateway does not act on");
        }
    }
    Ok(())
}
