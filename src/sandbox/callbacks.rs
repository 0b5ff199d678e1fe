//! The platform calling out: signed callbacks (payment results and the like) and webhook events,
//! sent where a test or `demo` says; and a backend to receive what the gateway forwards.
//!
//! | control | what |
//! |---|---|
//! | `POST /sandbox/callback` `{"url", "body"?, "nonce"?, "tamper"?, "timestamp_offset_secs"?}` | a callback signed with the platform's key (`fixtures/keys/platform-private.pem`) as `Byte-Timestamp`, `Byte-Nonce-Str`, `Byte-Signature`; `nonce` replays an earlier one, `tamper` changes the body after signing; answers what the URL answered |
//! | `POST /sandbox/webhook` `{"url", "event", "client_key"?, "from_user_id"?, "msg_id"?, "retries"?}` | an event (`comment`, `message`, `video`, `trade`, `unauthorize`, `verify_webhook`, or any platform name) signed with `X-Douyin-Signature`, with a `Msg-Id`; after an answer other than 2xx it is sent again with the same `Msg-Id`, up to `retries` times (default 3, as the platform), at once rather than after the platform's 5 s |
//! | `POST /sandbox/receiver` (any path below it) | a backend: records the request, answers 200 `{"err_no":0}`, or `fail_status` to the next `fail_next` requests |
//! | `GET` / `DELETE /sandbox/received` | what the receiver got (path, headers, body, the status it answered) / forget it |
//! | `POST /sandbox/receiver_faults` `{"fail_next", "fail_status"?}` | make the receiver fail |

use super::reply::Reply;
use super::state::{Receiver, State};
use base64::Engine;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls::pki_types::{pem::PemObject, PrivatePkcs8KeyDer};
use serde::Deserialize;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use std::sync::OnceLock;
use std::time::Duration;

/// The platform's private key for the sandbox apps: published test material, never trusted.
const PLATFORM_PRIVATE_PEM: &str = include_str!("../../fixtures/keys/platform-private.pem");
/// How long the platform waits for an answer.
const PLATFORM_TIMEOUT: Duration = Duration::from_secs(5);

/// `TIMESTAMP\nNONCE\nBODY\n` signed with the platform's key: RSA PKCS#1 v1.5 over SHA-256,
/// base64. Made here with ring directly, not with the gateway's own code, so a test of the
/// gateway's verifier does not check it against itself.
fn platform_sign(timestamp: &str, nonce: &str, body: &str) -> String {
    static KEY: OnceLock<RsaKeyPair> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let der = PrivatePkcs8KeyDer::from_pem_slice(PLATFORM_PRIVATE_PEM.as_bytes()).expect("the fixture key is PEM");
        RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("the fixture key is RSA")
    });
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        format!("{timestamp}\n{nonce}\n{body}\n").as_bytes(),
        &mut signature,
    )
    .expect("a 2048-bit key signs");
    base64::engine::general_purpose::STANDARD.encode(signature)
}

/// A fresh nonce, 32 letters and digits as the platform's.
fn fresh_nonce() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// The platform-side controls this file serves; `None` for any other path.
pub(super) async fn handle(
    state: &State,
    method: &Method,
    path: &str,
    body: &Bytes,
    headers: &http::HeaderMap,
) -> Option<Reply> {
    Some(match (method, path) {
        (&Method::POST, "/sandbox/callback") => match serde_json::from_slice(body) {
            Ok(c) => callback(c).await,
            Err(e) => bad(format!("callback: {e}")),
        },
        (&Method::POST, "/sandbox/webhook") => match serde_json::from_slice(body) {
            Ok(w) => webhook(state, w).await,
            Err(e) => bad(format!("webhook: {e}")),
        },
        (&Method::POST, "/sandbox/receiver_faults") => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let mut inner = state.inner.lock().unwrap();
            inner.receiver.fail_next = v["fail_next"].as_u64().unwrap_or(0) as u32;
            inner.receiver.fail_status = v["fail_status"].as_u64().unwrap_or(500) as u16;
            Reply::json(json!({"ok": true}))
        }
        (&Method::POST, p) if p == "/sandbox/receiver" || p.starts_with("/sandbox/receiver/") => {
            receive(&mut state.inner.lock().unwrap().receiver, p, headers, body)
        }
        (&Method::GET, "/sandbox/received") => {
            Reply::json(json!({"received": state.inner.lock().unwrap().receiver.received}))
        }
        (&Method::DELETE, "/sandbox/received") => {
            state.inner.lock().unwrap().receiver.received.clear();
            Reply::json(json!({"ok": true}))
        }
        _ => return None,
    })
}

fn bad(why: String) -> Reply {
    Reply::json(json!({ "error": why })).with_status(StatusCode::BAD_REQUEST)
}

/// `POST /sandbox/callback`.
#[derive(Deserialize)]
struct Callback {
    url: String,
    body: Option<String>,
    nonce: Option<String>,
    #[serde(default)]
    tamper: bool,
    #[serde(default)]
    timestamp_offset_secs: i64,
}

async fn callback(c: Callback) -> Reply {
    let body = c.body.unwrap_or_else(|| {
        let msg = json!({"app_id": "tt0000sandbox", "out_order_no": format!("order-{}", rand::random::<u32>()),
            "order_id": "N0000000000000000001", "status": "SUCCESS", "total_amount": 100})
        .to_string();
        json!({"version": "3.0", "type": "payment", "msg": msg}).to_string()
    });
    let now = unix_now().saturating_add_signed(c.timestamp_offset_secs).to_string();
    let nonce = c.nonce.unwrap_or_else(fresh_nonce);
    let signature = platform_sign(&now, &nonce, &body);
    let sent = if c.tamper {
        body.replacen("100", "1", 1) + " "
    } else {
        body.clone()
    };
    let headers = [
        ("content-type", "application/json".to_string()),
        ("byte-timestamp", now.clone()),
        ("byte-nonce-str", nonce.clone()),
        ("byte-signature", signature),
    ];
    let (status, answer) = post(&c.url, &headers, sent.clone()).await;
    Reply::json(json!({"status": status, "body": answer, "sent_body": sent, "nonce": nonce, "timestamp": now}))
}

/// `POST /sandbox/webhook`.
#[derive(Deserialize)]
struct Webhook {
    url: String,
    event: String,
    client_key: Option<String>,
    from_user_id: Option<String>,
    msg_id: Option<String>,
    retries: Option<u32>,
}

async fn webhook(state: &State, w: Webhook) -> Reply {
    let Some((client_key, secret)) = (match &w.client_key {
        Some(k) => state.apps.get_key_value(k),
        // The smallest of the apps it was started with (the provider's own client_key, always
        // there, is not one of them).
        None => state
            .apps
            .iter()
            .filter(|(k, _)| k.as_str() != super::authorizer::PROVIDER_CLIENT_KEY)
            .min_by_key(|(k, _)| k.as_str()),
    }) else {
        return bad("no such client_key".into());
    };
    let (name, content) = event(&w.event);
    let client_key = if name == "verify_webhook" {
        ""
    } else {
        client_key.as_str()
    };
    let from = w.from_user_id.unwrap_or_else(|| "_000sandbox-user".into());
    let body =
        json!({"event": name, "client_key": client_key, "from_user_id": from, "to_user_id": "_000sandbox-account",
        "content": content.to_string(), "log_id": format!("sandbox{}", rand::random::<u32>())})
        .to_string();
    let mut h = Sha1::new();
    h.update(secret.as_bytes());
    h.update(body.as_bytes());
    let msg_id = w
        .msg_id
        .unwrap_or_else(|| format!("sandbox-{:016x}", rand::random::<u64>()));
    let headers = [
        ("content-type", "application/json".to_string()),
        ("x-douyin-signature", hex::encode(h.finalize())),
        ("msg-id", msg_id.clone()),
    ];
    let mut attempts = Vec::new();
    for _ in 0..=w.retries.unwrap_or(3) {
        let (status, answer) = post(&w.url, &headers, body.clone()).await;
        attempts.push(json!({"status": status, "body": answer}));
        if (200..300).contains(&status) {
            break;
        }
    }
    Reply::json(json!({"msg_id": msg_id, "event": name, "attempts": attempts}))
}

/// A sample event of a kind: its platform name and content.
fn event(kind: &str) -> (&str, Value) {
    let now = unix_now();
    match kind {
        "comment" => (
            "item_comment_reply",
            json!({"comment_id": "@sandbox-comment", "comment_user_id": "_000commenter",
            "content": "nice video", "create_time": now, "digg_count": 0, "reply_comment_total": 0,
            "reply_to_comment_id": "", "reply_to_item_id": "@sandbox-item"}),
        ),
        "message" => (
            "im_receive_msg",
            json!({"message_type": "text", "text": "hello", "conversation_short_id": "7000000000000000001",
            "server_message_id": "7000000000000000002", "create_time": now}),
        ),
        "video" => (
            "create_video",
            json!({"item_id": "@sandbox-item", "share_id": "7000000000000000003"}),
        ),
        "trade" => (
            "life_trade_order_notify",
            json!({"action": "pay_success", "msg_time": now,
            "order": {"order_id": "1000000000000000001", "pay_amount": 100, "original_amount": 100, "pay_time": now}}),
        ),
        "unauthorize" => ("unauthorize", json!({"scopes": ["user_info"]})),
        "verify_webhook" => ("verify_webhook", json!({"challenge": 12345})),
        other => (other, json!({})),
    }
}

/// The receiver: records the request and answers.
fn receive(r: &mut Receiver, path: &str, headers: &http::HeaderMap, body: &Bytes) -> Reply {
    let status = if r.fail_next > 0 {
        r.fail_next -= 1;
        StatusCode::from_u16(r.fail_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    } else {
        StatusCode::OK
    };
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    r.received.push_back(json!({"path": path, "headers": headers,
        "body": String::from_utf8_lossy(body), "status": status.as_u16()}));
    if r.received.len() > Receiver::KEPT {
        r.received.pop_front();
    }
    Reply::json(json!({"err_no": if status.is_success() { 0 } else { 1 }, "err_tips": "sandbox receiver"}))
        .with_status(status)
}

/// POSTs `body`: the status and body of the answer, or 0 and why none came.
pub(super) async fn post(url: &str, headers: &[(&str, String)], body: String) -> (u16, String) {
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::builder().method(Method::POST).uri(url);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let Ok(req) = req.body(Full::new(Bytes::from(body))) else {
        return (0, format!("bad url {url:?}"));
    };
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    match tokio::time::timeout(PLATFORM_TIMEOUT, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => (0, e),
        Err(_) => (0, "no answer within 5 s".into()),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
