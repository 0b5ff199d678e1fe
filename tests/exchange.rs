//! `POST /_gateway/exchange_code`: a code the app received itself (mini-app
//! `tt.showDouyinOpenAuth`, mobile SDKs) exchanged by the gateway, which holds the secret.

mod common;

use common::*;
use http::Method;
use serde_json::json;

const OTHER_KEY: &str = "caller-key-2";

async fn gateway_exchanging(sb: &douyin_gateway::sandbox::Sandbox) -> Gateway {
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .caller("exchange_codes = true")
        .extra(&format!(
            "[[callers]]\nname = \"reporting\"\napi_key_sha256 = \"{}\"\n",
            douyin_gateway::caller::hash_key(OTHER_KEY)
        ))
        .render();
    gateway_text(&text, secret).await
}

#[tokio::test]
async fn a_code_the_app_received_is_exchanged_once_and_the_user_is_served() {
    let sb = sandbox().await;
    let gw = gateway_exchanging(&sb).await;
    let http = Http::default();
    let code = http.code_for(&sb, CLIENT_KEY).await;

    let r = http
        .exchange_code(&gw, CALLER_KEY, json!({"app": "main", "code": code}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let open_id = v["open_id"].as_str().unwrap().to_string();
    assert!(!open_id.is_empty());
    assert_eq!(v["scope"], "user_info");
    assert!(v["expires_at"].as_u64().unwrap() > 0);
    assert!(v["refresh_expires_at"].as_u64().unwrap() > v["expires_at"].as_u64().unwrap());
    assert!(
        !r.text().contains("act.") && !r.text().contains("rft."),
        "never a token: {}",
        r.text()
    );

    // The user is served at once.
    let call = http
        .get(&gw.url(&format!("/api/douyin/v1/video/video_list/?open_id={open_id}")))
        .await;
    assert_eq!(call.json()["data"]["error_code"], 0, "{}", call.text());

    // The same code again: the platform's refusal, with its code, and nothing changed.
    let again = http
        .exchange_code(&gw, CALLER_KEY, json!({"app": "main", "code": code}))
        .await;
    assert_eq!(again.status, 400, "{}", again.text());
    assert_eq!(again.gateway_error().as_deref(), Some("code_refused"));
    assert_eq!(again.json()["gateway_error"]["platform_code"], 10007);
    assert_eq!(http.stats(&sb).await["access_token_calls"], 2);
}

#[tokio::test]
async fn only_callers_allowed_to_may_exchange_and_failures_store_nothing() {
    let sb = sandbox().await;
    let gw = gateway_exchanging(&sb).await;
    let http = Http::default();
    let code = http.code_for(&sb, CLIENT_KEY).await;

    let r = http
        .exchange_code(&gw, OTHER_KEY, json!({"app": "main", "code": code}))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.gateway_error().as_deref(), Some("caller_forbidden"));
    let r = http
        .exchange_code(&gw, "wrong-key", json!({"app": "main", "code": code}))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        http.stats(&sb).await["access_token_calls"],
        0,
        "the platform was never asked"
    );

    for (body, what) in [
        (json!({"app": "nope", "code": code}), "unknown app"),
        (json!({"code": code}), "no app"),
        (json!({"app": "main", "code": ""}), "empty code"),
    ] {
        let r = http.exchange_code(&gw, CALLER_KEY, body).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.gateway_error().as_deref(), Some("bad_request"), "{what}");
    }

    // The platform out of reach: 502, and no user stored.
    http.control(&sb, "/sandbox/faults", json!({"token_endpoint": "down"}))
        .await;
    let r = http
        .exchange_code(&gw, CALLER_KEY, json!({"app": "main", "code": code}))
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.gateway_error().as_deref(), Some("upstream_unavailable"));
    let tokens = http.admin(&gw, Method::GET, "/admin/tokens", "").await.json();
    assert!(
        !tokens["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["class"] == "user"),
        "{tokens}"
    );
}
