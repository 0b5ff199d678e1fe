//! Trade system v2 (`/api/apps/trade/v2/*` on developer.toutiao.com), as the platform's "签名算法"
//! page describes its signed calls: the app's token in the `access-token` header or the JSON
//! body's `access_token` (a client_token or the mini-app token), a `Byte-Authorization` the sandbox checks with the app's public key
//! over `METHOD\nURI\nTIMESTAMP\nNONCE\nBODY\n` of the bytes it received (any other bytes: 401,
//! unsigned), and answers signed with the platform's key for the app (`Byte-Timestamp`,
//! `Byte-Nonce-Str`, `Byte-Signature`, with an `X-Tt-Logid`).
//!
//! The keys are the published test keys of `fixtures/keys/` (never to be trusted for anything
//! real): `app-public.pem` checks requests, `platform-private.pem` signs answers.
//!
//! Test controls: `POST /sandbox/trade {"next": "tampered" | "unsigned" | "status500"}` makes the
//! next trade answer's body differ from what was signed, carry no signature, or be an unsigned
//! HTTP 500; `GET /sandbox/signed` lists the signed calls received (nonce, timestamp, whether the
//! signature verified).

use super::state::{Counters, State};
use super::Reply;
use crate::signature::{self, SigningKey, VerifyingKey};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// Where the trade APIs live.
pub const PREFIX: &str = "/api/apps/trade/v2/";
/// The app's public key the sandbox checks requests with (`fixtures/keys/app-public.pem`).
pub const APP_PUBLIC_KEY: &str = include_str!("../../fixtures/keys/app-public.pem");
/// The platform's private key the sandbox signs answers with (`fixtures/keys/platform-private.pem`).
pub const PLATFORM_PRIVATE_KEY: &str = include_str!("../../fixtures/keys/platform-private.pem");
/// Signed calls remembered for `GET /sandbox/signed`.
const SIGNED_CAP: usize = 1000;
/// How far a request's timestamp may be from now.
const CLOCK_SKEW_SECS: u64 = 300;

fn keys() -> &'static (VerifyingKey, SigningKey) {
    static KEYS: OnceLock<(VerifyingKey, SigningKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        (
            VerifyingKey::from_pem(APP_PUBLIC_KEY).expect("the fixture public key"),
            SigningKey::from_pem(PLATFORM_PRIVATE_KEY).expect("the fixture private key"),
        )
    })
}

/// How the next trade answer misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Next {
    /// Signed, then its body changed.
    Tampered,
    /// No signature headers.
    Unsigned,
    /// HTTP 500 without a signature ("treat as a timeout").
    Status500,
}

/// One signed call as received.
#[derive(Debug, Clone, Serialize)]
pub struct SignedCall {
    /// Path and query.
    pub uri: String,
    /// `nonce_str`.
    pub nonce: String,
    /// `timestamp`.
    pub timestamp: String,
    /// `key_version`.
    pub key_version: String,
    /// Whether the signature verified over the bytes received.
    pub valid: bool,
    /// The `access-token` header received.
    pub access_token: String,
    /// Body SHA-256, hex.
    pub body_sha256: String,
    /// Headers a lenient server would read as `Byte-Authorization` (`byte_authorization` too).
    pub authorization_headers: usize,
}

/// What the trade endpoints remember.
#[derive(Debug, Default)]
pub struct Trade {
    /// The next answer's fault, once.
    pub next: Option<Next>,
    /// Signed calls received, oldest first.
    pub signed: std::collections::VecDeque<SignedCall>,
}

/// `POST /sandbox/trade` and `GET /sandbox/signed`.
pub(super) fn control(state: &State, method: &http::Method, body: &[u8]) -> Reply {
    let mut inner = state.inner.lock().unwrap();
    if method == http::Method::GET {
        return Reply::json(json!({ "signed": inner.trade.signed }));
    }
    #[derive(Deserialize)]
    struct Set {
        next: Next,
    }
    match serde_json::from_slice::<Set>(body) {
        Ok(s) => {
            inner.trade.next = Some(s.next);
            Reply::json(json!({ "next": s.next }))
        }
        Err(e) => Reply::json(json!({ "error": format!("trade: {e}") })).with_status(StatusCode::BAD_REQUEST),
    }
}

/// A trade API call, or `None` for a path outside [`PREFIX`].
pub(super) fn answer(state: &State, parts: &http::request::Parts, body: &[u8]) -> Option<Reply> {
    if !parts.uri.path().starts_with(PREFIX) {
        return None;
    }
    Counters::bump(&state.counters.api_calls);
    let uri = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    // The header, else the JSON body's `access_token` (as developer.toutiao.com's APIs take it).
    let in_body = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["access_token"].as_str().map(String::from));
    let token = parts
        .headers
        .get("access-token")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .or(in_body)
        .unwrap_or_default();
    let token = token.as_str();
    let authorization = parts
        .headers
        .get(&signature::BYTE_AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let verdict = check_signature(state, parts.method.as_str(), uri, body, authorization);
    let mut inner = state.inner.lock().unwrap();
    if let Some(fields) = &verdict.1 {
        if inner.trade.signed.len() == SIGNED_CAP {
            inner.trade.signed.pop_front();
        }
        inner.trade.signed.push_back(SignedCall {
            uri: uri.into(),
            nonce: fields.get("nonce_str").cloned().unwrap_or_default(),
            timestamp: fields.get("timestamp").cloned().unwrap_or_default(),
            key_version: fields.get("key_version").cloned().unwrap_or_default(),
            valid: verdict.0.is_ok(),
            access_token: token.into(),
            body_sha256: hex::encode(Sha256::digest(body)),
            authorization_headers: parts
                .headers
                .iter()
                .filter(|(n, _)| n.as_str().replace('_', "-") == "byte-authorization")
                .count(),
        });
    }
    if let Err(why) = verdict.0 {
        Counters::bump(&state.counters.api_rejected);
        return Some(
            Reply::json(json!({"err_no": 401, "err_msg": why, "log_id": "sandbox-trade"}))
                .with_status(StatusCode::UNAUTHORIZED)
                .with_header("x-tt-logid", "sandbox-trade".into()),
        );
    }
    let now = inner.now();
    let known = |ts: &Vec<super::state::ClientToken>| ts.iter().any(|t| t.value == token && t.expires_at > now);
    let token_ok =
        !token.is_empty() && (inner.client_tokens.values().any(known) || inner.mini_app_tokens.values().any(known));
    let next = inner.trade.next.take();
    drop(inner);
    let answer = if token_ok {
        json!({"err_no": 0, "err_msg": "", "log_id": "sandbox-trade", "data": {
            "order_id": order_id(body), "order_status": "SUCCESS", "total_amount": 100,
            "body_sha256": hex::encode(Sha256::digest(body)) }})
    } else {
        Counters::bump(&state.counters.api_rejected);
        json!({"err_no": 28001003, "err_msg": "access_token无效", "log_id": "sandbox-trade", "data": null})
    };
    Some(signed_answer(answer, next))
}

/// Whether `authorization` signs these bytes with the app's key, and its fields when it parses.
#[allow(clippy::type_complexity)]
fn check_signature(
    state: &State,
    method: &str,
    uri: &str,
    body: &[u8],
    authorization: Option<&str>,
) -> (Result<(), String>, Option<std::collections::HashMap<String, String>>) {
    let Some(fields) = authorization.and_then(signature::authorization_fields) else {
        return (Err("签名验证失败: no SHA256-RSA2048 Byte-Authorization".into()), None);
    };
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
    let verdict = (|| {
        if !state.apps.contains_key(field("appid")) {
            return Err(format!("签名验证失败: unknown appid {:?}", field("appid")));
        }
        if field("nonce_str").is_empty() || field("key_version").is_empty() {
            return Err("签名验证失败: nonce_str and key_version are required".into());
        }
        let timestamp: u64 = field("timestamp").parse().map_err(|_| "签名验证失败: bad timestamp")?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if now.abs_diff(timestamp) > CLOCK_SKEW_SECS {
            return Err("签名验证失败: timestamp too far from now".into());
        }
        let message = signature::request_message(method, uri, timestamp, field("nonce_str"), body);
        if !keys().0.verify(&message, field("signature")) {
            return Err("签名验证失败: the signature does not cover these bytes".into());
        }
        Ok(())
    })();
    (verdict, Some(fields))
}

/// The order a request names, for the answer.
fn order_id(body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    v.get("order_id")
        .or_else(|| v.get("out_order_no"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// `answer` signed with the platform's key, then spoiled as `next` says.
fn signed_answer(answer: Value, next: Option<Next>) -> Reply {
    if next == Some(Next::Status500) {
        return Reply::status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            r#"{"err_no":500}"#,
        )
        .with_header("x-tt-logid", "sandbox-trade-500".into());
    }
    let mut reply = Reply::json(answer).with_header("x-tt-logid", "sandbox-trade".into());
    if next == Some(Next::Unsigned) {
        return reply;
    }
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string();
    let nonce = signature::nonce();
    let sig = keys()
        .1
        .sign(&signature::answer_message(&timestamp, &nonce, &reply.body));
    if next == Some(Next::Tampered) {
        let text = String::from_utf8_lossy(&reply.body);
        let mut tampered = text.replace("SUCCESS", "REFUNDED");
        if tampered == text {
            tampered.push(' ');
        }
        reply.body = tampered.into_bytes().into();
    }
    reply
        .with_header("byte-timestamp", timestamp)
        .with_header("byte-nonce-str", nonce)
        .with_header("byte-signature", sig)
}
