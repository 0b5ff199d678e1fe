//! The mini-app server access_token, `token = "mini_app"`: fetched from `/api/apps/v2/token` on
//! the app's `mini_app_upstream` with the app's client_key as appid, cached, set in the JSON body
//! of developer.toutiao.com APIs, fetched once however many calls wait, refreshed once when the
//! platform rejects it, and stored like the app's client_token.

mod common;

use common::*;
use douyin_gateway::sandbox::Sandbox;
use http::Method;
use serde_json::{json, Value};

const AUTH: &str = "/auth/entity/get_appid_auth";

/// The standard config plus a developer.toutiao.com stand-in (the sandbox serves both hosts) that
/// issues the app's mini-app token, and a route taking it in the body.
fn mini_config(sb: &Sandbox, secret: &std::path::Path, store: Option<&std::path::Path>) -> String {
    let mut c = TestConfig::standard(&sb.url(), secret)
        .app("mini_app_upstream = \"toutiao\"")
        .extra(&format!(
            "[[upstreams]]\nname = \"toutiao\"\nbase_url = \"{}\"\n\n\
             [[routes]]\nname = \"appid-auth\"\npath = \"{AUTH}\"\nmethods = [\"POST\"]\n\
             token = \"mini_app\"\ninject = \"json_body\"\nupstream = \"toutiao\"\n",
            sb.url()
        ));
    if let Some(p) = store {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        if std::env::var_os("DG_TEST_MINI_APP_STORE_KEY").is_none() {
            std::env::set_var("DG_TEST_MINI_APP_STORE_KEY", key);
        }
        c = c.store(&format!(
            "[store]\nkind = \"sqlite\"\npath = \"{}\"\nencryption_key_env = \"DG_TEST_MINI_APP_STORE_KEY\"",
            p.display()
        ));
    }
    c.render()
}

async fn call(http: &Http, gw: &Gateway, body: Value) -> Resp {
    http.send(
        Method::POST,
        &gw.url(AUTH),
        &[("x-gateway-key", CALLER_KEY), ("content-type", "application/json")],
        serde_json::to_vec(&body).unwrap(),
    )
    .await
}

#[tokio::test]
async fn the_mini_app_token_goes_in_the_body_and_survives_a_restart() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokens.db");
    let http = Http::default();
    let secret = secret_file();
    let text = mini_config(&sb, secret.path(), Some(&db));
    let gw = gateway_text(&text, secret).await;

    for _ in 0..3 {
        // A caller's own access_token is replaced, never forwarded.
        let r = call(&http, &gw, json!({"appid": CLIENT_KEY, "access_token": "caller-sent"})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["err"]["err_code"], 0, "{}", r.text());
    }
    let stats = http.stats(&sb).await;
    assert_eq!(
        n(&stats["mini_app_token_calls"]),
        1,
        "one fetch, then the cache: {stats}"
    );
    assert_eq!(n(&stats["client_token_calls"]), 0, "not a client_token: {stats}");
    let log = http.requests(&sb).await;
    let seen: Vec<&str> = log
        .iter()
        .filter(|r| r["path"] == AUTH)
        .map(|r| r["access_token_body"].as_str().unwrap())
        .collect();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|t| t.starts_with("0801121846")), "{seen:?}");
    assert!(log.iter().all(|r| r["accepted"] == true));

    let r = http.admin(&gw, Method::GET, "/admin/tokens", "").await;
    let listing = r.text();
    let tokens = r.json()["tokens"].as_array().unwrap().clone();
    assert!(
        tokens.iter().any(|t| t["class"] == "mini_app" && t["state"] == "valid"),
        "{listing}"
    );
    assert!(!listing.contains("0801121846"), "never a token value: {listing}");
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            "douyin_gateway_token_fetches_total{app=\"main\",class=\"mini_app\",outcome=\"ok\"}"
        ),
        Some(1.0)
    );
    drop(gw);

    // A restart reads it from the store: no new fetch.
    let secret = secret_file();
    let gw = gateway_text(&mini_config(&sb, secret.path(), Some(&db)), secret).await;
    let r = call(&http, &gw, json!({"appid": CLIENT_KEY})).await;
    assert_eq!(r.json()["err"]["err_code"], 0, "{}", r.text());
    assert_eq!(n(&http.stats(&sb).await["mini_app_token_calls"]), 1);
}

#[tokio::test]
async fn many_waiting_calls_make_one_fetch() {
    let sb = sandbox().await;
    http_fault(&sb, json!({"token_latency_ms": 200})).await;
    let secret = secret_file();
    let gw = gateway_text(&mini_config(&sb, secret.path(), None), secret).await;
    let http = Http::default();
    let calls = (0..50).map(|_| call(&http, &gw, json!({"appid": CLIENT_KEY})));
    let answers = futures_util::future::join_all(calls).await;
    assert!(answers
        .iter()
        .all(|r| r.status == 200 && r.json()["err"]["err_code"] == 0));
    assert_eq!(n(&http.stats(&sb).await["mini_app_token_calls"]), 1);
}

async fn http_fault(sb: &Sandbox, faults: Value) {
    Http::default().control(sb, "/sandbox/faults", faults).await;
}

/// Another fetcher with the same credentials (an SDK, a home-made token server) makes the
/// platform drop the gateway's token: the rejected call is refreshed once and replayed, and the
/// early eviction is counted for the mini_app class.
#[tokio::test]
async fn a_competing_fetcher_costs_one_refresh_and_raises_the_alarm() {
    let sb = sandbox().await;
    let secret = secret_file();
    let gw = gateway_text(&mini_config(&sb, secret.path(), None), secret).await;
    let http = Http::default();
    assert_eq!(call(&http, &gw, json!({"appid": CLIENT_KEY})).await.status, 200);
    // Two fetches elsewhere: only the latest two tokens stay valid.
    revoke_mini_app_token(&http, &sb).await;
    let r = call(&http, &gw, json!({"appid": CLIENT_KEY, "n": 1})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["err"]["err_code"], 0, "refreshed and replayed: {}", r.text());
    let stats = http.stats(&sb).await;
    assert_eq!(
        n(&stats["mini_app_token_calls"]),
        4,
        "1 + 2 elsewhere + 1 refresh: {stats}"
    );
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            "douyin_gateway_token_evicted_early_total{app=\"main\",class=\"mini_app\"}"
        ),
        Some(1.0)
    );
}

/// A wrong secret is a configuration error the caller and the operator can tell apart.
#[tokio::test]
async fn a_wrong_secret_is_named_and_nothing_is_forwarded() {
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        apps: vec![format!("{CLIENT_KEY}:another-secret")],
        ..Default::default()
    })
    .await;
    let secret = secret_file();
    let gw = gateway_text(&mini_config(&sb, secret.path(), None), secret).await;
    let http = Http::default();
    let r = call(&http, &gw, json!({"appid": CLIENT_KEY})).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let body = r.text();
    assert!(body.contains("40017"), "{body}");
    assert!(
        !body.contains("another-secret") && !body.contains(CLIENT_SECRET),
        "{body}"
    );
    assert_eq!(n(&http.stats(&sb).await["api_calls"]), 0, "nothing forwarded");
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            "douyin_gateway_token_fetches_total{app=\"main\",class=\"mini_app\",outcome=\"bad_credentials\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn check_wants_a_known_mini_app_upstream() {
    let secret = secret_file();
    let route = "[[routes]]\nname = \"m\"\npath = \"/auth/*\"\ntoken = \"mini_app\"\ninject = \"json_body\"\n";
    let up = "[[upstreams]]\nname = \"toutiao\"\nbase_url = \"https://developer.toutiao.com\"\n";
    let load = |app: &str, extra: &str| {
        let text = TestConfig::new("http://127.0.0.1:9", secret.path())
            .app(app)
            .extra(extra)
            .render();
        douyin_gateway::config::Config::load_str(&text, "t").map_err(|e| e.to_string())
    };
    let err = load("", &format!("{up}\n{route}")).unwrap_err();
    assert!(err.contains("mini_app_upstream"), "{err}");
    let err = load("mini_app_upstream = \"nope\"", &format!("{up}\n{route}")).unwrap_err();
    assert!(err.contains("no [[upstreams]] named \"nope\""), "{err}");
    load("mini_app_upstream = \"toutiao\"", &format!("{up}\n{route}")).expect("valid");
}
