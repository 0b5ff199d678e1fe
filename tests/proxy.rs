//! The proxy against the sandbox: token injection, caching, refresh-and-retry.

mod common;

use common::*;
use http::Method;
use serde_json::json;
use sha2::{Digest, Sha256};

#[tokio::test]
async fn injects_client_token_in_header_and_in_query() {
    let sb = sandbox().await;
    let gw = gateway(&sb).await;
    let http = Http::default();

    let r = http
        .post(
            &gw.url("/api/douyin/v1/role/check/"),
            r#"{"role_labels":["AUTH_COMPANY"]}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["err_no"], 0);
    let r = http.get(&gw.url("/js/getticket/?x=1")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["error_code"], 0);

    let log = http.requests(&sb).await;
    assert_eq!(log.len(), 2);
    let (header_call, query_call) = (&log[0], &log[1]);
    let h = header_call["access_token_headers"].as_array().unwrap();
    assert_eq!(h.len(), 1);
    assert!(h[0].as_str().unwrap().starts_with("clt."));
    assert!(header_call["access_token_params"].as_array().unwrap().is_empty());
    assert!(query_call["access_token_headers"].as_array().unwrap().is_empty());
    let q = query_call["access_token_params"].as_array().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0], h[0], "both routes use the app's one client_token");
    assert!(query_call["query"].as_str().unwrap().starts_with("x=1&access_token="));
    // The caller's key never reaches the platform.
    for entry in &log {
        let names: Vec<&str> = entry["header_names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(!names.contains(&"x-gateway-key"), "{names:?}");
    }
}

#[tokio::test]
async fn two_hundred_calls_make_one_token_fetch() {
    let sb = sandbox().await;
    let gw = gateway(&sb).await;
    let http = Http::default();
    for _ in 0..200 {
        let r = http.get(&gw.url("/js/getticket/")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let s = http.stats(&sb).await;
    assert_eq!(n(&s["client_token_calls"]), 1);
    assert_eq!(n(&s["api_calls"]), 200);
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            r#"douyin_gateway_token_fetches_total{app="main",class="client",outcome="ok"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, r#"douyin_gateway_token_cache_total{class="client",result="hit"}"#),
        Some(199.0)
    );
    assert_eq!(
        metric(&m, r#"douyin_gateway_requests_total{route="ticket",status="200"}"#),
        Some(200.0)
    );
    assert_eq!(
        metric(&m, r#"douyin_gateway_tokens{app="main",class="client",state="valid"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn revoked_token_with_fifty_concurrent_calls_makes_one_new_fetch() {
    let sb = sandbox().await;
    let gw = gateway(&sb).await;
    let http = Http::default();
    assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
    http.control(&sb, "/sandbox/revoke", json!({"client_key": CLIENT_KEY}))
        .await;

    let mut calls = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (http, url) = (http.clone(), gw.url("/api/douyin/v1/role/check/"));
        calls.spawn(async move { http.post(&url, format!(r#"{{"n":{i}}}"#)).await });
    }
    while let Some(r) = calls.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["err_no"], 0, "caller saw the rejection: {}", r.text());
    }
    let s = http.stats(&sb).await;
    assert_eq!(
        n(&s["client_token_calls"]),
        2,
        "one initial fetch and exactly one refresh"
    );
    let m = http.metrics(&gw).await;
    let retried_ok = metric(
        &m,
        r#"douyin_gateway_token_retries_total{outcome="ok",route="role-check"}"#,
    )
    .unwrap();
    assert!((1.0..=50.0).contains(&retried_ok));
}

#[tokio::test]
async fn a_token_that_keeps_failing_is_retried_once_and_the_platform_answer_passes_through() {
    let sb = sandbox().await;
    // A client token sent to a user API is always invalid: a route misconfigured this way must not loop.
    let gw = gateway_with(
        &sb,
        |_| {},
        "[[routes]]\nname = \"wrong-class\"\npath = \"/video/list/\"\ntoken = \"client\"\ninject = \"query\"\n",
    )
    .await;
    let http = Http::default();
    let r = http.get(&gw.url("/video/list/?open_id=ou_1&cursor=0&count=10")).await;
    assert_eq!(r.status, 200);
    assert!(r.gateway_error().is_none());
    assert_eq!(
        r.json()["data"]["error_code"],
        10008,
        "the platform's own error body reaches the caller"
    );
    let s = http.stats(&sb).await;
    assert_eq!(n(&s["api_calls"]), 2, "sent once, replayed once");
    assert_eq!(n(&s["client_token_calls"]), 2, "one fetch, one refresh");

    // One more try, in case a revocation raced the replay: a second brand-new token rejected too.
    let r = http.get(&gw.url("/video/list/?open_id=ou_1")).await;
    assert_eq!(r.json()["data"]["error_code"], 10008);
    let s = http.stats(&sb).await;
    assert_eq!(n(&s["api_calls"]), 4);
    assert_eq!(n(&s["client_token_calls"]), 3);
    // Now the route is distrusted: its calls pass the platform's answer on and fetch nothing.
    for _ in 0..5 {
        let r = http.get(&gw.url("/video/list/?open_id=ou_1")).await;
        assert_eq!(r.json()["data"]["error_code"], 10008);
    }
    let s = http.stats(&sb).await;
    assert_eq!(n(&s["api_calls"]), 9);
    assert_eq!(n(&s["client_token_calls"]), 3);
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            r#"douyin_gateway_token_retries_total{outcome="rejected_again",route="wrong-class"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"douyin_gateway_token_retries_total{outcome="suppressed",route="wrong-class"}"#
        ),
        Some(5.0)
    );
}

#[tokio::test]
async fn a_replayed_post_body_is_byte_identical() {
    let sb = sandbox().await;
    let gw = gateway(&sb).await;
    let http = Http::default();
    assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
    http.control(&sb, "/sandbox/revoke", json!({"client_key": CLIENT_KEY}))
        .await;
    http.send(
        Method::DELETE,
        &format!("{}/sandbox/requests", sb.url()),
        &[],
        bytes::Bytes::new(),
    )
    .await;

    let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let want = hex::encode(Sha256::digest(&body));
    let r = http.post(&gw.url("/api/douyin/v1/role/check/"), body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["body_sha256"], want.as_str());
    let log = http.requests(&sb).await;
    assert_eq!(log.len(), 2, "the call and its replay");
    for entry in &log {
        assert_eq!(entry["body_sha256"], want.as_str());
        assert_eq!(n(&entry["body_len"]), body.len() as u64);
    }
    assert_eq!(log[0]["accepted"], false);
    assert_eq!(log[1]["accepted"], true);
}

#[tokio::test]
async fn a_body_too_large_to_keep_streams_and_is_not_replayed() {
    let sb = sandbox().await;
    let gw = gateway_with(&sb, |s| s.retry_buffer_bytes = 1000, "").await;
    let http = Http::default();
    assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
    http.control(&sb, "/sandbox/revoke", json!({"client_key": CLIENT_KEY}))
        .await;
    let body = vec![b'x'; 5000];
    let r = http.post(&gw.url("/api/douyin/v1/role/check/"), body.clone()).await;
    assert_eq!(
        r.json()["err_no"],
        28001003,
        "not replayed: the caller sees the rejection"
    );
    // The token was renewed meanwhile, so the caller's own retry works.
    let mut ok = false;
    for _ in 0..50 {
        let r = http.post(&gw.url("/api/douyin/v1/role/check/"), body.clone()).await;
        if r.json()["err_no"] == 0 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok, "the next call should carry the new token");
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            r#"douyin_gateway_token_retries_total{outcome="not_replayable",route="role-check"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn credentials_the_caller_sends_never_reach_the_platform() {
    let sb = sandbox().await;
    let gw = gateway(&sb).await;
    let http = Http::default();
    let r = http
        .send(
            Method::POST,
            &gw.url("/api/douyin/v1/role/check/?access_token=evil1&access%5Ftoken=evil2&keep=1"),
            &[
                ("x-gateway-key", CALLER_KEY),
                ("access-token", "evil3"),
                ("authorization", "Bearer evil4"),
                ("host", "evil.example"),
            ],
            "{}",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http
        .send(
            Method::GET,
            &gw.url("/js/getticket/?access_token=evil5"),
            &[("x-gateway-key", CALLER_KEY), ("access-token", "evil6")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let log = http.requests(&sb).await;
    let all = serde_json::to_string(&log).unwrap();
    assert!(!all.contains("evil"), "a caller credential reached the platform: {all}");
    assert_eq!(log[0]["query"], "keep=1");
    assert!(log.iter().all(|e| e["accepted"] == true));
}

#[tokio::test]
async fn stable_client_token_endpoint() {
    let sb = sandbox().await;
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .app("client_token_endpoint = \"/oauth/stable_client_token/\"")
        .render();
    let gw = gateway_text(&text, secret).await;
    let http = Http::default();
    assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
    let s = http.stats(&sb).await;
    assert_eq!(n(&s["client_token_calls"]), 1);
    assert_eq!(
        n(&s["stable_client_token_calls"]),
        1,
        "the configured endpoint, not the default one"
    );
}

#[tokio::test]
async fn tokens_are_refreshed_in_the_background_before_they_expire() {
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        client_token_ttl: 2,
        ..Default::default()
    })
    .await;
    let gw = gateway(&sb).await;
    let http = Http::default();
    // Keep calling; at 80% of the 2 s lifetime a background fetch replaces the token.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while n(&http.stats(&sb).await["client_token_calls"]) < 2 {
        assert!(std::time::Instant::now() < deadline, "no background refresh happened");
        let r = http.get(&gw.url("/js/getticket/")).await;
        assert_eq!(r.json()["data"]["error_code"], 0, "{}", r.text());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let s = http.stats(&sb).await;
    assert_eq!(n(&s["api_rejected"]), 0, "no call ever carried an expired token");
}

#[tokio::test]
async fn competing_fetchers_are_detected() {
    // Three gateways with stores of their own, one app: each fetches its own client_token,
    // and the platform keeps only the latest two. The first gateway's token dies early.
    let sb = sandbox().await;
    let (a, b, c) = (gateway(&sb).await, gateway(&sb).await, gateway(&sb).await);
    let http = Http::default();
    for gw in [&a, &b, &c] {
        assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
    }
    assert_eq!(n(&http.stats(&sb).await["client_token_calls"]), 3);
    let r = http.get(&a.url("/js/getticket/")).await;
    assert_eq!(
        r.json()["data"]["error_code"],
        0,
        "refreshed and replayed: {}",
        r.text()
    );
    let m = http.metrics(&a).await;
    assert_eq!(
        metric(
            &m,
            r#"douyin_gateway_token_evicted_early_total{app="main",class="client"}"#
        ),
        Some(1.0)
    );
    let m = http.metrics(&b).await;
    assert_eq!(
        metric(
            &m,
            r#"douyin_gateway_token_evicted_early_total{app="main",class="client"}"#
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn an_early_eviction_is_counted_and_logged_once_per_token_not_per_call() {
    // The sandbox holds each call 200 ms, so all 50 carry the token revoked before they left.
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        api_latency_ms: 200,
        ..Default::default()
    })
    .await;
    let gw = gateway(&sb).await;
    let http = Http::default();
    assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
    http.control(&sb, "/sandbox/revoke", serde_json::json!({"client_key": CLIENT_KEY}))
        .await;
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (http, url) = (http.clone(), gw.url("/js/getticket/"));
            tokio::spawn(async move { http.get(&url).await })
        })
        .collect();
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(r.json()["data"]["error_code"], 0, "replayed: {}", r.text());
    }
    let s = http.stats(&sb).await;
    assert!(n(&s["api_rejected"]) > 1, "several calls carried the dead token: {s}");
    assert_eq!(n(&s["client_token_calls"]), 2, "one fetch for the storm");
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            r#"douyin_gateway_token_evicted_early_total{app="main",class="client"}"#
        ),
        Some(1.0),
        "one token was evicted early, however many calls carried it"
    );
}
