//! The third-party platform (service providers): a control that pushes an encrypted, signed
//! event to a provider's authorization event URL, and the component token endpoint. The
//! authorizer tokens are [`super::authorizer`]'s.
//!
//! | endpoint | what |
//! |---|---|
//! | `POST /sandbox/provider/push` `{"url", "event"?, "authorizer_appid"?, "permissions"?, "tamper"?, "replay"?, "timestamp_offset_secs"?}` | an event (`PUSH`, the default, with a fresh ticket; `AUTHORIZED`, `UPDATE_AUTHORIZED` with an authorization code the platform now knows, for `permissions` (ids, default `[1,2,3,4]`); `UNAUTHORIZED`, whose app's tokens stop) sealed with [`MESSAGE_KEY`] for [`COMPONENT_APPID`] and signed with [`MESSAGE_TOKEN`], POSTed as `{"Nonce","TimeStamp","Encrypt","MsgSignature"}`; `tamper` swaps `Encrypt` after signing (and changes nothing at the platform), `replay` sends the previous event again byte for byte. Answers `{"status","body","ticket","code"}` |
//! | `GET /openapi/v1/auth/tp/token?component_appid=&component_appsecret=&component_ticket=` | a component_access_token (`{"component_access_token","expires_in":7200}`) for the right appid and secret and one of the last two tickets pushed; else `{"errno","message"}` |
//! | `/api/tpapp/sandbox/component_info` | an API that takes a component token (`component_access_token` or `access_token` in the query, or `access-token`): `{"err_no":0,"data":{"component_appid"}}`, or 11016 for a token not in force |
//! | `POST /sandbox/provider` `{"expires_in"?, "authorizer_expires_in"?, "token_delay_ms"?, "event_url"?}` | the lifetime of the component tokens issued next (7200), of the authorizer tokens issued next (7200), a delay before the authorizer token endpoints answer, and the provider's event URL: once set, each retrieved code is also pushed there as `UPDATE_AUTHORIZED`, as the platform does (counted in `retrieved_pushed`) |
//! | `GET /sandbox/provider` | `{"tickets_pushed","token_calls","tokens_issued"}` and the authorizer counters ([`super::authorizer`]) |
//!
//! The sealing and the signature are written here again, with the RustCrypto crates directly,
//! not with the gateway's `provider_crypto`: a test of the gateway's side does not check it
//! against itself.

use super::reply::Reply;
use super::state::State;
use aes_gcm::aes::Aes256;
use base64::Engine;
use bytes::Bytes;
use cbc::cipher::{block_padding::NoPadding, BlockEncryptMut, KeyIvInit};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use std::collections::VecDeque;

/// The sandbox provider's component appid.
pub const COMPONENT_APPID: &str = "tt_component_sandbox";
/// Its component appsecret.
pub const COMPONENT_APPSECRET: &str = "sandbox-component-secret";
/// Its message verification token.
pub const MESSAGE_TOKEN: &str = "sandbox-message-token";
/// Its 43-character message encryption key.
pub const MESSAGE_KEY: &str = "CAoJaFLeTHIV/P5ehOAcKXPehZhj0ZIxRZDu3diVPds";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What the third-party platform remembers.
#[derive(Debug, Default)]
pub struct ProviderState {
    /// The last two tickets pushed, oldest first (the platform accepts either).
    tickets: VecDeque<String>,
    /// Tickets pushed in all.
    tickets_pushed: u64,
    /// Calls to the component token endpoint.
    token_calls: u64,
    /// Component tokens issued, the last two valid (a new one ends the one before the last).
    tokens: VecDeque<String>,
    /// Tokens issued in all.
    tokens_issued: u64,
    /// The last event body sent, for `replay`.
    last_sent: Option<String>,
    /// The lifetime of the component tokens issued next (default 7200 s).
    expires_in: Option<u64>,
    /// Merchants' authorizations: codes, authorizer tokens ([`super::authorizer`]).
    pub(super) auth: super::grants::Authorizers,
    /// The provider's authorization event URL, when a test set it: a retrieved code is pushed
    /// there too, as `UPDATE_AUTHORIZED` (the platform's "授权码找回通知").
    pub(super) event_url: Option<String>,
    /// `UPDATE_AUTHORIZED` events pushed for retrieved codes.
    pub(super) retrieved_pushed: u64,
}

/// What the platform does after a provider retrieves `code` for `app`: when the event URL is
/// known, it pushes `UPDATE_AUTHORIZED` with that code (after answering the retrieval).
pub(super) fn push_retrieved(g: &mut super::state::Inner, app: &str, code: &str) {
    let Some(url) = g.provider.event_url.clone() else {
        return;
    };
    let (message, _) = message("UPDATE_AUTHORIZED", app, Some(code));
    let sent = envelope(&message, 0, false);
    g.provider.retrieved_pushed += 1;
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let headers = [("content-type", "application/json".to_string())];
        let _ = super::callbacks::post(&url, &headers, sent).await;
    });
}

impl ProviderState {
    /// Whether `token` is one of the component tokens in force.
    pub fn valid_token(&self, token: &str) -> bool {
        self.tokens.iter().any(|t| t == token)
    }
}

/// The requests this file answers; `None` for others.
pub(super) async fn handle(
    state: &State,
    method: &Method,
    path: &str,
    query: &str,
    headers: &http::HeaderMap,
    body: &Bytes,
) -> Option<Reply> {
    Some(match (method, path) {
        (&Method::POST, "/sandbox/provider/push") => match serde_json::from_slice(body) {
            Ok(p) => push(state, p).await,
            Err(e) => Reply::json(json!({"error": format!("push: {e}")})).with_status(StatusCode::BAD_REQUEST),
        },
        (&Method::POST, "/sandbox/provider") => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let mut g = state.inner.lock().unwrap();
            if let Some(e) = v.get("expires_in") {
                g.provider.expires_in = e.as_u64();
            }
            if let Some(u) = v.get("event_url") {
                g.provider.event_url = u.as_str().map(str::to_string);
            }
            g.provider.auth.set_controls(&v);
            Reply::json(json!({"ok": true}))
        }
        (&Method::GET, "/sandbox/provider") => {
            let g = state.inner.lock().unwrap();
            let p = &g.provider;
            let mut stats = p.auth.stats();
            stats.insert("tickets_pushed".into(), p.tickets_pushed.into());
            stats.insert("retrieved_pushed".into(), p.retrieved_pushed.into());
            stats.insert("token_calls".into(), p.token_calls.into());
            stats.insert("tokens_issued".into(), p.tokens_issued.into());
            Reply::json(Value::Object(stats))
        }
        (&Method::GET, "/openapi/v1/auth/tp/token" | "/openapi/v1/auth/tp/token/") => component_token(state, query),
        (_, "/api/tpapp/sandbox/component_info") => component_info(state, query, headers),
        _ => return super::authorizer::handle(state, method, path, query, headers, body).await,
    })
}

/// `POST /sandbox/provider/push`.
#[derive(Deserialize)]
struct Push {
    url: String,
    #[serde(default = "default_event")]
    event: String,
    authorizer_appid: Option<String>,
    #[serde(default)]
    tamper: bool,
    #[serde(default)]
    replay: bool,
    #[serde(default)]
    timestamp_offset_secs: i64,
    /// What the merchant grants (`AUTHORIZED`, `UPDATE_AUTHORIZED`): ids of the docs' table.
    permissions: Option<Value>,
}

fn default_event() -> String {
    "PUSH".into()
}

async fn push(state: &State, p: Push) -> Reply {
    let (sent, ticket, code) = if p.replay {
        match state.inner.lock().unwrap().provider.last_sent.clone() {
            Some(s) => (s, None, None),
            None => return Reply::json(json!({"error": "nothing to replay"})).with_status(StatusCode::BAD_REQUEST),
        }
    } else {
        let mut g = state.inner.lock().unwrap();
        let now = g.now();
        let app = p.authorizer_appid.as_deref().unwrap_or(DEFAULT_AUTHORIZER);
        // The platform acts before it tells: the code works (and an unauthorized app's tokens
        // stop) by the time the provider reads the event. A tampered event is not the
        // platform's: it changes nothing.
        let code = match p.event.as_str() {
            "AUTHORIZED" | "UPDATE_AUTHORIZED" if !p.tamper => {
                Some(g.provider.auth.authorize(app, p.permissions.as_ref(), now))
            }
            "AUTHORIZED" | "UPDATE_AUTHORIZED" => Some(format!("code.{}", hex::encode(rand::random::<[u8; 16]>()))),
            "UNAUTHORIZED" if !p.tamper => {
                g.provider.auth.unauthorize(app);
                None
            }
            _ => None,
        };
        let (message, ticket) = message(&p.event, app, code.as_deref());
        let sent = envelope(&message, p.timestamp_offset_secs, p.tamper);
        let pr = &mut g.provider;
        // A tampered event is not the platform's: its ticket is not one the platform knows.
        if let Some(t) = ticket.as_ref().filter(|_| !p.tamper) {
            pr.tickets.push_back(t.clone());
            if pr.tickets.len() > 2 {
                pr.tickets.pop_front();
            }
            pr.tickets_pushed += 1;
        }
        pr.last_sent = Some(sent.clone());
        (sent, ticket, code)
    };
    let headers = [("content-type", "application/json".to_string())];
    let (status, answer) = super::callbacks::post(&p.url, &headers, sent.clone()).await;
    Reply::json(json!({"status": status, "body": answer, "ticket": ticket, "code": code, "sent": sent}))
}

/// The merchant app of an authorization event that names none.
const DEFAULT_AUTHORIZER: &str = "tt_merchant_sandbox";

/// The plain message of an event for `app` (with `code` for an authorization), and the ticket
/// it carries (`PUSH`).
fn message(event: &str, app: &str, code: Option<&str>) -> (Value, Option<String>) {
    let now = "2026-12-05 12:00:00";
    match event {
        "PUSH" => {
            let ticket = format!("ticket.{}", hex::encode(rand::random::<[u8; 12]>()));
            let m = json!({"Ticket": ticket, "FromUserName": "ByteDanceMicroApp", "CreateTime": now,
                "MsgType": "Ticket", "Event": "PUSH"});
            (m, Some(ticket))
        }
        "AUTHORIZED" | "UPDATE_AUTHORIZED" => (
            json!({"AppId": app, "TpAppId": COMPONENT_APPID, "EventTime": now, "Event": event,
                "AuthorizationCode": code.unwrap_or_default(),
                "AuthorizationCodeExpiresIn": 3600}),
            None,
        ),
        other => (
            json!({"AppId": app, "TpAppId": COMPONENT_APPID, "EventTime": now, "Event": other}),
            None,
        ),
    }
}

/// The body the platform POSTs: `message` sealed and signed.
fn envelope(message: &Value, offset: i64, tamper: bool) -> String {
    let timestamp = unix_now().saturating_add_signed(offset).to_string();
    let nonce = hex::encode(rand::random::<[u8; 5]>());
    let encrypt = seal(message.to_string().as_bytes());
    let signature = sign(&timestamp, &nonce, &encrypt);
    let encrypt = if tamper {
        seal(
            json!({"Ticket": "forged", "MsgType": "Ticket", "Event": "PUSH"})
                .to_string()
                .as_bytes(),
        )
    } else {
        encrypt
    };
    json!({"Nonce": nonce, "TimeStamp": timestamp, "Encrypt": encrypt, "MsgSignature": signature}).to_string()
}

/// 32 random bytes, the length (BE u32), the message, the appid; PKCS#7 to 32; AES-256-CBC with
/// the decoded key and its first 16 bytes as IV; base64.
fn seal(message: &[u8]) -> String {
    let key = B64
        .decode(format!("{MESSAGE_KEY}="))
        .expect("the sandbox key is base64");
    let mut plain: Vec<u8> = rand::random::<[u8; 32]>().to_vec();
    plain.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
    plain.extend_from_slice(message);
    plain.extend_from_slice(COMPONENT_APPID.as_bytes());
    let pad = 32 - plain.len() % 32;
    plain.extend(std::iter::repeat_n(pad as u8, pad));
    let n = plain.len();
    let cipher = cbc::Encryptor::<Aes256>::new_from_slices(&key, &key[..16]).expect("32-byte key, 16-byte IV");
    let sealed = cipher
        .encrypt_padded_mut::<NoPadding>(&mut plain, n)
        .expect("whole blocks");
    B64.encode(sealed)
}

/// Hex SHA-1 of the token, timestamp, nonce and ciphertext, sorted.
fn sign(timestamp: &str, nonce: &str, encrypt: &str) -> String {
    let mut parts = [MESSAGE_TOKEN, timestamp, nonce, encrypt];
    parts.sort();
    hex::encode(Sha1::digest(parts.concat().as_bytes()))
}

/// `GET /openapi/v1/auth/tp/token`.
fn component_token(state: &State, query: &str) -> Reply {
    let q: std::collections::HashMap<String, String> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let mut g = state.inner.lock().unwrap();
    let p = &mut g.provider;
    p.token_calls += 1;
    let refuse = |errno: i64, message: &str| Reply::json(json!({"errno": errno, "message": message}));
    if get("component_appid") != COMPONENT_APPID {
        return refuse(40001, "component_appid 不正确");
    }
    if get("component_appsecret") != COMPONENT_APPSECRET {
        return refuse(40002, "component_appsecret 不正确");
    }
    if !p.tickets.iter().any(|t| t == get("component_ticket")) {
        return refuse(40003, "component_ticket 不正确或已过期");
    }
    let token = format!("ctok.{}", hex::encode(rand::random::<[u8; 16]>()));
    p.tokens.push_back(token.clone());
    if p.tokens.len() > 2 {
        p.tokens.pop_front();
    }
    p.tokens_issued += 1;
    Reply::json(json!({"component_access_token": token, "expires_in": p.expires_in.unwrap_or(7200)}))
}

/// `/api/tpapp/sandbox/component_info`: checks the component token, as the provider APIs do.
fn component_info(state: &State, query: &str, headers: &http::HeaderMap) -> Reply {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let tokens = pairs
        .iter()
        .filter(|(k, _)| k == "component_access_token" || k == "access_token")
        .count();
    if tokens > 1 {
        return Reply::json(json!({"err_no": 40001, "err_tips": "more than one token in the query"}));
    }
    let q: std::collections::HashMap<String, String> = pairs.into_iter().collect();
    let token = q
        .get("component_access_token")
        .or_else(|| q.get("access_token"))
        .cloned()
        .or_else(|| {
            headers
                .get("access-token")
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        })
        .unwrap_or_default();
    if state.inner.lock().unwrap().provider.valid_token(&token) {
        Reply::json(json!({"err_no": 0, "err_tips": "success", "data": {"component_appid": COMPONENT_APPID}}))
    } else {
        Reply::json(json!({"err_no": 11016, "err_tips": "access_token不正确或者已过期"}))
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
