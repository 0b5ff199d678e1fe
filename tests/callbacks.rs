//! `[[callbacks]]`: the platform's signed callbacks (payment results and the like), sent by the
//! sandbox with the platform's key, verified by the gateway and forwarded to a backend (the
//! sandbox's receiver) — or refused with nothing forwarded.

mod common;

use common::*;
use http::Method;
use serde_json::{json, Value};

const CALLBACK_KEY_ENV: &str = "DG_TEST_CALLBACK_KEY";
const CALLBACK_KEY: &str = "callback-hmac-key";

fn keys_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys")
}

/// The standard gateway with the platform's public key for the app and two callbacks: a
/// `byte_signature` one forwarded (signed) to the sandbox's receiver, a `douyin_webhook` one.
fn config(sb: &douyin_gateway::sandbox::Sandbox, secret: &std::path::Path, public: bool) -> String {
    std::env::set_var(CALLBACK_KEY_ENV, CALLBACK_KEY);
    let s = sb.url();
    TestConfig::new(&s, secret)
        .server(|srv| {
            srv.body_read_timeout_ms = 500;
            if public {
                srv.public_listen = Some("127.0.0.1:0".into());
            }
        })
        .app(&format!(
            "platform_public_key_file = {:?}",
            keys_dir().join("platform-public.pem")
        ))
        .extra(&format!(
            r#"
[[callbacks]]
name = "pay"
path = "/callbacks/pay"
app = "main"
verify = "byte_signature"
forward_to = "{s}/sandbox/receiver/pay"
secret_env = "{CALLBACK_KEY_ENV}"
timeout_ms = 2000

[[callbacks]]
name = "events"
path = "/callbacks/events"
app = "main"
verify = "douyin_webhook"
forward_to = "{s}/sandbox/receiver/events"
"#
        ))
        .render()
}

async fn callback_gateway(sb: &douyin_gateway::sandbox::Sandbox) -> Gateway {
    let secret = secret_file();
    let text = config(sb, secret.path(), false);
    gateway_text(&text, secret).await
}

/// The gateway's error code in an answer body the sandbox relays as text.
fn code_of(answer: &Value) -> String {
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap_or(Value::Null);
    body["gateway_error"]["code"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn a_verified_callback_reaches_the_backend_byte_for_byte_and_its_answer_comes_back() {
    let sb = sandbox().await;
    let gw = callback_gateway(&sb).await;
    let http = Http::default();
    let url = gw.admin("/callbacks/pay");
    let sent = http.control(&sb, "/sandbox/callback", json!({"url": url})).await;
    assert_eq!(sent["status"], 200, "{sent}");
    assert_eq!(
        serde_json::from_str::<Value>(sent["body"].as_str().unwrap()).unwrap()["err_no"],
        0
    );
    let got = received(&http, &sb).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let (r, body) = (&got[0], sent["sent_body"].as_str().unwrap());
    assert_eq!(r["path"], "/sandbox/receiver/pay");
    assert_eq!(r["body"], body, "byte for byte");
    assert_eq!(r["headers"]["x-gateway-app"], "main");
    assert_eq!(r["headers"]["x-gateway-signature"], hmac_hex(CALLBACK_KEY, body));
    // The platform's own headers too: the backend may verify again.
    assert_eq!(r["headers"]["byte-nonce-str"], sent["nonce"]);
    assert_eq!(r["headers"]["content-type"], "application/json");

    // The backend's status and body come back to the platform as they are.
    http.control(
        &sb,
        "/sandbox/receiver_faults",
        json!({"fail_next": 1, "fail_status": 503}),
    )
    .await;
    let sent = http.control(&sb, "/sandbox/callback", json!({"url": url})).await;
    assert_eq!(sent["status"], 503, "{sent}");
    assert_eq!(
        serde_json::from_str::<Value>(sent["body"].as_str().unwrap()).unwrap()["err_tips"],
        "sandbox receiver"
    );
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            "douyin_gateway_callbacks_total{callback=\"pay\",outcome=\"forwarded\"}"
        ),
        Some(2.0)
    );
    assert_eq!(metric(&m, "douyin_gateway_callback_nonces"), Some(2.0));

    // `douyin_webhook`: X-Douyin-Signature as the webhook's, no X-Gateway-Signature without a key.
    let sent = http
        .control(
            &sb,
            "/sandbox/webhook",
            json!({"url": gw.admin("/callbacks/events"), "event": "trade", "retries": 0}),
        )
        .await;
    assert_eq!(sent["attempts"][0]["status"], 200, "{sent}");
    let got = received(&http, &sb).await;
    let last = got.last().unwrap();
    assert_eq!(last["path"], "/sandbox/receiver/events");
    assert_eq!(last["headers"]["msg-id"], sent["msg_id"]);
    assert!(last["headers"].get("x-gateway-signature").is_none(), "{last}");
    let r = http
        .send(
            Method::POST,
            &gw.admin("/callbacks/events"),
            &[("x-douyin-signature", "00")],
            "{}",
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(received(&http, &sb).await.len(), got.len(), "nothing forwarded");
}

#[tokio::test]
async fn replayed_stale_or_tampered_callbacks_get_401_and_nothing_is_forwarded() {
    let sb = sandbox().await;
    let gw = callback_gateway(&sb).await;
    let http = Http::default();
    let url = gw.admin("/callbacks/pay");
    let first = http.control(&sb, "/sandbox/callback", json!({"url": url})).await;
    assert_eq!(first["status"], 200, "{first}");
    assert_eq!(received(&http, &sb).await.len(), 1);

    for (what, control) in [
        ("a replayed nonce", json!({"url": url, "nonce": first["nonce"]})),
        (
            "a timestamp 301 s old",
            json!({"url": url, "timestamp_offset_secs": -301}),
        ),
        (
            "a timestamp 400 s ahead",
            json!({"url": url, "timestamp_offset_secs": 400}),
        ),
        ("a body changed after signing", json!({"url": url, "tamper": true})),
    ] {
        let sent = http.control(&sb, "/sandbox/callback", control).await;
        assert_eq!(sent["status"], 401, "{what}: {sent}");
        assert_eq!(code_of(&sent), "bad_signature", "{what}: {sent}");
    }
    // Unsigned, and signed with a key that is not the platform's.
    let r = http.send(Method::POST, &url, &[], "{}").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.gateway_error().as_deref(), Some("bad_signature"));
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let other = douyin_gateway::signature::SigningKey::from_pem(
        &std::fs::read_to_string(keys_dir().join("app-private.pem")).unwrap(),
    )
    .unwrap();
    let sig = other.sign(&douyin_gateway::signature::answer_message(&ts, "n1", b"{}"));
    let r = http
        .send(
            Method::POST,
            &url,
            &[
                ("byte-timestamp", &ts),
                ("byte-nonce-str", "n1"),
                ("byte-signature", &sig),
            ],
            "{}",
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    // The message says what was wrong, never the signature.
    assert!(
        r.text().contains("Byte-Signature") && !r.text().contains(&sig[..20]),
        "{}",
        r.text()
    );

    assert_eq!(received(&http, &sb).await.len(), 1, "the backend saw only the first");
    let m = http.metrics(&gw).await;
    let count = |outcome: &str| {
        metric(
            &m,
            &format!("douyin_gateway_callbacks_total{{callback=\"pay\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(count("replayed"), Some(1.0));
    assert_eq!(count("stale"), Some(2.0));
    assert_eq!(count("bad_signature"), Some(3.0));
    assert_eq!(count("forwarded"), Some(1.0));
}

/// A stranger without the platform's key cannot grow the nonce table: a flood of callbacks with
/// fresh nonces and bad signatures leaves it as it was.
#[tokio::test(flavor = "multi_thread")]
async fn the_nonce_table_stays_bounded_under_a_flood_of_bad_signatures() {
    let sb = sandbox().await;
    let gw = callback_gateway(&sb).await;
    let http = Http::default();
    let url = gw.admin("/callbacks/pay");
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    const SENDERS: usize = 8;
    const EACH: usize = 100;
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let (http, url, ts) = (http.clone(), url.clone(), ts.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let nonce = format!("flood-{s}-{i}");
                let r = http
                    .send(
                        Method::POST,
                        &url,
                        &[
                            ("byte-timestamp", &ts),
                            ("byte-nonce-str", &nonce),
                            ("byte-signature", "AAAA"),
                        ],
                        format!("{{\"n\":{i}}}"),
                    )
                    .await;
                assert_eq!(r.status, 401, "{}", r.text());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            "douyin_gateway_callbacks_total{callback=\"pay\",outcome=\"bad_signature\"}"
        ),
        Some((SENDERS * EACH) as f64)
    );
    assert_eq!(metric(&m, "douyin_gateway_callback_nonces"), Some(0.0));
    assert!(gw.running.admin.nonces.is_empty());
    // A real one is recorded, and only it.
    let sent = http.control(&sb, "/sandbox/callback", json!({"url": url})).await;
    assert_eq!(sent["status"], 200, "{sent}");
    assert_eq!(gw.running.admin.nonces.len(), 1);
    assert_eq!(
        metric(&http.metrics(&gw).await, "douyin_gateway_callback_nonces"),
        Some(1.0)
    );
    assert_eq!(received(&http, &sb).await.len(), 1);
}

/// With `server.public_listen`, callbacks are served there (the internet reaches them) and no
/// longer on the admin listener; a body over the listeners' limit or too slow is refused, nothing
/// forwarded.
#[tokio::test]
async fn callbacks_are_served_on_the_public_listener_when_there_is_one() {
    let sb = sandbox().await;
    let secret = secret_file();
    let text = config(&sb, secret.path(), true);
    let gw = gateway_text(&text, secret).await;
    let http = Http::default();
    let public = format!("http://{}/callbacks/pay", gw.running.public_addr.unwrap());
    let sent = http.control(&sb, "/sandbox/callback", json!({"url": public})).await;
    assert_eq!(sent["status"], 200, "{sent}");
    let r = http.send(Method::POST, &gw.admin("/callbacks/pay"), &[], "{}").await;
    assert_eq!(r.status, 404, "{}", r.text());
    let big = "x".repeat(65 * 1024);
    let r = http.send(Method::POST, &public, &[], big).await;
    assert_eq!(r.status, 413, "{}", r.text());
    // A body that stalls is cut at body_read_timeout_ms.
    let stalled = raw(
        gw.running.public_addr.unwrap(),
        "POST /callbacks/pay HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
    )
    .await;
    assert!(
        stalled.starts_with("HTTP/1.1 408") && stalled.contains("client_timeout"),
        "{stalled}"
    );
    assert_eq!(received(&http, &sb).await.len(), 1);
}

#[test]
fn check_refuses_callbacks_it_could_not_serve() {
    std::env::set_var(CALLBACK_KEY_ENV, CALLBACK_KEY);
    let secret = secret_file();
    let text = TestConfig::new("http://127.0.0.1:9", secret.path())
        .extra(
            r#"
[[apps]]
name = "second"
client_key = "awsecond"
client_secret_env = "DG_TEST_CALLBACK_KEY"

[[callbacks]]
name = "pay"
path = "/callbacks/pay"
app = "nope"
verify = "byte_signature"
forward_to = "http://127.0.0.1:9/pay"

[[callbacks]]
name = "pay"
path = "/callbacks/pay"
app = "main"
verify = "byte_signature"
forward_to = "not a url"
secret_env = "DG_TEST_NO_SUCH_CALLBACK_KEY"

[[callbacks]]
name = "hook"
path = "/webhooks/douyin"
app = "second"
verify = "douyin_webhook"
forward_to = "ftp://127.0.0.1/x"

[[webhook_forward]]
url = "http://127.0.0.1:9/events"
apps = ["nope"]
events = []
"#,
        )
        .render();
    let err = douyin_gateway::config::Config::load_str(&text, "t")
        .unwrap_err()
        .to_string();
    for needle in [
        "callbacks[0].app: no [[apps]] named \"nope\"",
        "callbacks[1].name: another [[callbacks]] is named \"pay\"",
        "callbacks[1].path: another [[callbacks]] is served at /callbacks/pay",
        "callbacks[1].verify: byte_signature needs the platform's public key for app \"main\"",
        "callbacks[1].forward_to: must be an http:// or https:// URL",
        "callbacks[1].secret_env: environment variable DG_TEST_NO_SUCH_CALLBACK_KEY is not set",
        "callbacks[2].path: /webhooks/douyin is the gateway's own",
        "callbacks[2].forward_to",
        "webhook_forward[0].apps: no [[apps]] named \"nope\"",
        "webhook_forward[0].events",
    ] {
        assert!(err.contains(needle), "{needle}:\n{err}");
    }
    assert!(!err.contains(CALLBACK_KEY), "{err}");
}

/// Callbacks are part of the compiled config: a SIGHUP reload adds (or drops) them.
#[tokio::test]
async fn a_reload_adds_a_callback() {
    let sb = sandbox().await;
    let secret = secret_file();
    let without = TestConfig::new(&sb.url(), secret.path()).render();
    let with = config(&sb, secret.path(), false);
    let gw = gateway_text(&without, secret).await;
    let http = Http::default();
    let url = gw.admin("/callbacks/pay");
    let r = http.send(Method::POST, &url, &[], "{}").await;
    assert_eq!(r.status, 404, "{}", r.text());
    std::fs::write(gw.config_file.path(), with).unwrap();
    gw.running.reload().await.unwrap();
    let sent = http.control(&sb, "/sandbox/callback", json!({"url": url})).await;
    assert_eq!(sent["status"], 200, "{sent}");
    assert_eq!(received(&http, &sb).await.len(), 1);
}
