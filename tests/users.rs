//! User and biz tokens: the authorization flow, refresh, renewal, re-consent,
//! the admin API and the unauthorize webhook, against the sandbox.

mod common;

use common::*;
use http::Method;
use serde_json::json;
use sha1::Digest;
use std::time::{Duration, Instant};

const VIDEO: &str = "/api/douyin/v1/video/video_list/";

async fn tokens_of(http: &Http, gw: &Gateway) -> Vec<serde_json::Value> {
    let r = http.admin(gw, Method::GET, "/admin/tokens", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["tokens"].as_array().unwrap().clone()
}

#[tokio::test]
async fn authorization_round_trip_then_user_calls_work() {
    let sb = sandbox().await;
    let gw = user_gateway(&sb).await;
    let http = Http::default();

    // The redirect carries what the platform needs.
    let r = http
        .send(Method::GET, &gw.admin("/oauth/authorize?app=main"), &[], "")
        .await;
    assert_eq!(r.status, 302);
    let loc = r.headers["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with(&format!("{}/platform/oauth/connect/?", sb.url())),
        "{loc}"
    );
    let q: std::collections::HashMap<String, String> =
        form_urlencoded::parse(loc.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(q["client_key"], CLIENT_KEY);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["scope"], "user_info,video.list.bytes");
    assert_eq!(q["redirect_uri"], gw.admin("/oauth/callback"));
    // A signed state: at least 128 bits of nonce and a 128-bit tag, URL-safe.
    let state = &q["state"];
    assert!(state.len() >= 43, "{state}");
    assert!(
        state
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{state}"
    );

    let page = http.authorize(&gw, "main").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let open_id = open_id_of(&page.text());
    assert!(!open_id.is_empty());

    let r = http
        .get(&gw.url(&format!("{VIDEO}?open_id={open_id}&cursor=0&count=10")))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["error_code"], 0, "{}", r.text());
    let log = http.requests(&sb).await;
    assert!(log[0]["access_token_headers"][0].as_str().unwrap().starts_with("act."));
    // The callback put the token in the cache: the call was a hit, counted once.
    let m = http.metrics(&gw).await;
    let cache = |result: &str| {
        metric(
            &m,
            &format!(r#"douyin_gateway_token_cache_total{{class="user",result="{result}"}}"#),
        )
    };
    assert_eq!((cache("hit"), cache("miss")), (Some(1.0), Some(0.0)));

    let list = tokens_of(&http, &gw).await;
    let user = list.iter().find(|t| t["class"] == "user").unwrap();
    assert_eq!(user["open_id"], open_id.as_str());
    assert_eq!(user["state"], "valid");
    assert_eq!(user["scope"], "user_info,video.list.bytes");
    assert!(user["reauthorize_by"].as_u64().unwrap() > user["refresh_expires_at"].as_u64().unwrap());
    // Never a token value in the listing.
    let listing = serde_json::to_string(&list).unwrap();
    assert!(!listing.contains("act.") && !listing.contains("rft."), "{listing}");
}

#[tokio::test]
async fn bad_replayed_and_refused_states_store_nothing() {
    let sb = sandbox().await;
    let gw = user_gateway(&sb).await;
    let http = Http::default();
    let cb = |q: &str| gw.admin(&format!("/oauth/callback?{q}"));

    let r = http.send(Method::GET, &cb("code=x&state=forged"), &[], "").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("Unknown or already used state"), "{}", r.text());

    // A real state, used once: the replay is refused.
    let r = http
        .send(Method::GET, &gw.admin("/oauth/authorize?app=main"), &[], "")
        .await;
    let consent = r.headers["location"].to_str().unwrap().to_string();
    let r = http.send(Method::GET, &consent, &[], "").await;
    let callback = r.headers["location"].to_str().unwrap().to_string();
    assert_eq!(http.send(Method::GET, &callback, &[], "").await.status, 200);
    let r = http.send(Method::GET, &callback, &[], "").await;
    assert_eq!(r.status, 400, "replayed state: {}", r.text());
    assert_eq!(tokens_of(&http, &gw).await.len(), 1);

    // A fresh state with a code the platform refuses (expired or used: 10007).
    let r = http
        .send(Method::GET, &gw.admin("/oauth/authorize?app=main"), &[], "")
        .await;
    let loc = r.headers["location"].to_str().unwrap().to_string();
    let state = form_urlencoded::parse(loc.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let r = http
        .send(Method::GET, &cb(&format!("code=not-a-code&state={state}")), &[], "")
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("10007"), "{}", r.text());
    // No code at all (the user declined).
    let r = http
        .send(Method::GET, &gw.admin("/oauth/authorize?app=main"), &[], "")
        .await;
    let loc = r.headers["location"].to_str().unwrap().to_string();
    let state = loc.split("state=").nth(1).unwrap().to_string();
    let r = http.send(Method::GET, &cb(&format!("state={state}")), &[], "").await;
    assert_eq!(r.status, 400);
    assert_eq!(tokens_of(&http, &gw).await.len(), 1, "failed callbacks stored nothing");
    assert_eq!(n(&http.stats(&sb).await["access_token_calls"]), 2);
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_once_for_fifty_concurrent_calls() {
    let sb = sandbox().await;
    let gw = user_gateway(&sb).await;
    let http = Http::default();
    let open_id = open_id_of(&http.authorize(&gw, "main").await.text());
    assert_eq!(
        http.get(&gw.url(&format!("{VIDEO}?open_id={open_id}"))).await.status,
        200
    );
    http.control(&sb, "/sandbox/revoke", json!({"expire_user": open_id}))
        .await;

    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (http, url) = (http.clone(), gw.url(&format!("{VIDEO}?open_id={open_id}")));
        calls.spawn(async move { http.get(&url).await });
    }
    while let Some(r) = calls.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.json()["data"]["error_code"], 0, "{}", r.text());
    }
    assert_eq!(n(&http.stats(&sb).await["refresh_token_calls"]), 1);
}

#[tokio::test]
async fn a_dead_refresh_token_means_401_with_authorize_url_and_no_retry_loop() {
    let sb = sandbox().await;
    let gw = user_gateway(&sb).await;
    let http = Http::default();
    let open_id = open_id_of(&http.authorize(&gw, "main").await.text());
    http.control(&sb, "/sandbox/revoke", json!({"revoke_user": open_id}))
        .await;

    for _ in 0..3 {
        let r = http.get(&gw.url(&format!("{VIDEO}?open_id={open_id}"))).await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.gateway_error().as_deref(), Some("user_authorization_required"));
        assert_eq!(
            r.json()["gateway_error"]["authorize_url"],
            gw.admin("/oauth/authorize?app=main").as_str()
        );
    }
    let s = http.stats(&sb).await;
    assert_eq!(
        n(&s["refresh_token_calls"]),
        1,
        "one refresh found the refresh_token dead; no more were tried"
    );
    assert_eq!(n(&s["api_calls"]), 1, "later calls were answered by the gateway");
    let list = tokens_of(&http, &gw).await;
    assert_eq!(list[0]["state"], "reauthorization_required");
    assert!(list[0]["reason"].as_str().unwrap().contains("10010"));
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(&m, r#"douyin_gateway_reauthorization{app="main",when="required"}"#),
        Some(1.0)
    );

    // Authorizing again brings the user back.
    let again = open_id_of(&http.authorize(&gw, "main").await.text());
    assert_ne!(again, open_id, "the sandbox gives each consent a new open_id");
}

#[tokio::test]
async fn refresh_tokens_are_renewed_in_the_window_until_the_platform_refuses() {
    // Every refresh_token is inside the renewal window at once; the gateway is told the
    // platform allows 6 renewals, the sandbox allows 5: the 6th is refused.
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        refresh_token_ttl: 3600,
        ..Default::default()
    })
    .await;
    let gw = user_gateway_with(&sb, |t| {
        t.renew_before_secs = 7200;
        t.max_renewals = 6;
        t.maintain_interval_ms = 20;
    })
    .await;
    let http = Http::default();
    let open_id = open_id_of(&http.authorize(&gw, "main").await.text());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = tokens_of(&http, &gw).await;
        if list[0]["state"] == "reauthorization_required" {
            assert_eq!(list[0]["renewals"], 5);
            break;
        }
        assert!(Instant::now() < deadline, "no renewal limit reached: {list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(n(&http.stats(&sb).await["renew_refresh_token_calls"]), 6);
    // The user still works: the last renewed refresh_token (the others died on renewal) refreshes.
    http.control(&sb, "/sandbox/revoke", json!({"expire_user": open_id}))
        .await;
    let r = http.get(&gw.url(&format!("{VIDEO}?open_id={open_id}"))).await;
    assert_eq!(r.json()["data"]["error_code"], 0, "{}", r.text());
    assert_eq!(n(&http.stats(&sb).await["refresh_token_calls"]), 1);
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            r#"douyin_gateway_refresh_token_renewals_total{app="main",outcome="ok"}"#
        ),
        Some(5.0)
    );
    assert_eq!(
        metric(&m, r#"douyin_gateway_reauthorization{app="main",when="required"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn renewals_stop_at_the_configured_limit_and_the_forecast_counts_them() {
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        refresh_token_ttl: 3600,
        ..Default::default()
    })
    .await;
    let gw = user_gateway_with(&sb, |t| {
        t.renew_before_secs = 7200;
        t.maintain_interval_ms = 20;
    })
    .await;
    let http = Http::default();
    http.authorize(&gw, "main").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokens_of(&http, &gw).await[0]["state"] != "reauthorization_required" {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        n(&http.stats(&sb).await["renew_refresh_token_calls"]),
        5,
        "the gateway never asked for a 6th"
    );
    // The forecast counts the renewals used: none left, so the user must re-consent by the
    // last refresh_token's expiry, and the gauge counts them as required now.
    let t = &tokens_of(&http, &gw).await[0];
    assert_eq!(n(&t["renewals"]), 5, "{t}");
    assert_eq!(t["reauthorize_by"], t["refresh_expires_at"], "{t}");
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(&m, "douyin_gateway_reauthorization{app=\"main\",when=\"required\"}"),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn the_forecast_names_users_who_must_reconsent_within_a_week() {
    // A refresh_token of 1 hour with no renewal window left to use: re-consent is due within 7 days.
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        refresh_token_ttl: 3600,
        ..Default::default()
    })
    .await;
    let gw = user_gateway_with(&sb, |t| {
        t.renew_before_secs = 60;
        t.max_renewals = 0;
    })
    .await;
    let http = Http::default();
    http.authorize(&gw, "main").await;
    let list = tokens_of(&http, &gw).await;
    let by = list[0]["reauthorize_by"].as_u64().unwrap();
    let refresh_by = list[0]["refresh_expires_at"].as_u64().unwrap();
    assert_eq!(by, refresh_by);
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(&m, r#"douyin_gateway_reauthorization{app="main",when="within_7d"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn biz_tokens_are_generated_refreshed_and_injected() {
    let sb = sandbox().await;
    let extra = "[[routes]]\nname = \"enterprise\"\npath = \"/api/douyin/v1/enterprise/*\"\ntoken = \"biz\"\nbiz_scope = \"data.external.item\"\n";
    let gw = gateway_with(&sb, |_| {}, extra).await;
    let http = Http::default();
    let url = gw.url("/api/douyin/v1/enterprise/item/list/?open_id=ent_1");
    let r = http.get(&url).await;
    assert_eq!(r.json()["data"]["error_code"], 0, "{}", r.text());
    assert_eq!(n(&http.stats(&sb).await["business_token_calls"]), 1);
    let log = http.requests(&sb).await;
    assert!(log[0]["access_token_headers"][0]
        .as_str()
        .unwrap()
        .starts_with("bus_act."));
    for _ in 0..5 {
        http.get(&url).await;
    }
    assert_eq!(n(&http.stats(&sb).await["business_token_calls"]), 1, "cached");
    // Each cached call counted once, as a hit, and the first one a miss (the routing layer finds
    // a hit from the request's parts; a miss is counted where the key is built).
    let m = http.metrics(&gw).await;
    let cache = |result: &str| {
        metric(
            &m,
            &format!(r#"douyin_gateway_token_cache_total{{class="biz",result="{result}"}}"#),
        )
    };
    assert_eq!((cache("hit"), cache("miss")), (Some(5.0), Some(1.0)));

    http.control(&sb, "/sandbox/revoke", json!({"expire_user": "ent_1"}))
        .await;
    let r = http.get(&url).await;
    assert_eq!(r.json()["data"]["error_code"], 0, "{}", r.text());
    let s = http.stats(&sb).await;
    assert_eq!(n(&s["refresh_biz_token_calls"]), 1);
    assert_eq!(n(&s["business_token_calls"]), 1);
    let list = tokens_of(&http, &gw).await;
    let biz = list.iter().find(|t| t["class"] == "biz").unwrap();
    assert_eq!(
        (biz["open_id"].as_str(), biz["scope"].as_str()),
        (Some("ent_1"), Some("data.external.item"))
    );
    // A missing open_id is the caller's error.
    let r = http.get(&gw.url("/api/douyin/v1/enterprise/item/list/")).await;
    assert_eq!(r.gateway_error().as_deref(), Some("open_id_missing"));
}

#[tokio::test]
async fn admin_api_imports_lists_refreshes_and_forgets_users() {
    let sb = sandbox().await;
    let gw = user_gateway(&sb).await;
    let http = Http::default();
    // Tokens minted by the platform for a user, imported as a legacy system would.
    let open_id = open_id_of(&http.authorize(&gw, "main").await.text());
    assert_eq!(
        http.admin(&gw, Method::DELETE, &format!("/admin/users/main/{open_id}"), "")
            .await
            .status,
        200
    );
    let r = http.get(&gw.url(&format!("{VIDEO}?open_id={open_id}"))).await;
    assert_eq!(r.status, 401);

    // Auth.
    let r = http.send(Method::GET, &gw.admin("/admin/tokens"), &[], "").await;
    assert_eq!(r.status, 401);
    let r = http
        .send(Method::GET, &gw.admin("/admin/tokens"), &[("x-admin-key", "wrong")], "")
        .await;
    assert_eq!(r.status, 401);
    let r = http
        .send(
            Method::GET,
            &gw.admin("/admin/tokens"),
            &[("authorization", &format!("Bearer {ADMIN_KEY}"))],
            "",
        )
        .await;
    assert_eq!(r.status, 200);

    // Bad bodies.
    for (body, says) in [
        ("{not json", "body must be"),
        (
            r#"{"access_token":"a","expires_in":1,"refresh_expires_in":1}"#,
            "refresh_token",
        ),
        (
            r#"{"access_token":"a","refresh_token":"r","expires_in":"soon","refresh_expires_in":1}"#,
            "positive numbers",
        ),
        (
            r#"{"access_token":"a","refresh_token":"r","expires_in":1,"refresh_expires_in":1,"extra":1}"#,
            "unknown field",
        ),
    ] {
        let r = http.admin(&gw, Method::PUT, "/admin/users/main/ou_x", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(says), "{body}: {}", r.text());
    }
    // Tokens another system got from the platform, imported: the gateway attaches them as they are.
    let (access, refresh, migrated) = platform_tokens(&http, &sb).await;
    let good = json!({"access_token": access, "refresh_token": refresh, "expires_in": "1296000",
        "refresh_expires_in": 2592000, "scope": "user_info"})
    .to_string();
    assert_eq!(
        http.admin(&gw, Method::PUT, &format!("/admin/users/nope/{migrated}"), &good)
            .await
            .status,
        404
    );
    let r = http
        .admin(&gw, Method::PUT, &format!("/admin/users/main/{migrated}"), &good)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = tokens_of(&http, &gw).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["open_id"], migrated.as_str());
    assert!(!serde_json::to_string(&list).unwrap().contains(&access));
    let r = http.get(&gw.url(&format!("{VIDEO}?open_id={migrated}"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        http.requests(&sb).await.last().unwrap()["access_token_headers"][0],
        access.as_str()
    );
    let r = http
        .admin(
            &gw,
            Method::POST,
            "/admin/refresh",
            &format!(r#"{{"app":"main","class":"user","open_id":"{migrated}"}}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(n(&http.stats(&sb).await["refresh_token_calls"]), 1);

    // Tokens the platform never issued: the call fails, the refresh is refused (10010), the user must authorize.
    let fake = r#"{"access_token":"act.imported","refresh_token":"rft.imported","expires_in":1296000,"refresh_expires_in":2592000}"#;
    assert_eq!(
        http.admin(&gw, Method::PUT, "/admin/users/main/ou_x", fake)
            .await
            .status,
        200
    );
    // Force refresh of a user the sandbox does not know: the refresh_token is refused (10010).
    // Asked again at once, during the back-off that followed: still the documented 401, not a 503.
    for attempt in ["first", "during the back-off"] {
        let r = http
            .admin(
                &gw,
                Method::POST,
                "/admin/refresh",
                r#"{"app":"main","class":"user","open_id":"ou_x"}"#,
            )
            .await;
        assert_eq!(r.status, 401, "{attempt}: {}", r.text());
        assert_eq!(r.gateway_error().as_deref(), Some("user_authorization_required"));
    }
    assert_eq!(http.get(&gw.url(&format!("{VIDEO}?open_id=ou_x"))).await.status, 401);
    let r = http
        .admin(
            &gw,
            Method::POST,
            "/admin/refresh",
            r#"{"app":"main","class":"client"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http
        .admin(&gw, Method::POST, "/admin/refresh", r#"{"app":"main"}"#)
        .await;
    assert_eq!(r.status, 400);

    assert_eq!(
        http.admin(&gw, Method::DELETE, "/admin/users/main/ou_x", "")
            .await
            .status,
        200
    );
    assert_eq!(
        http.admin(&gw, Method::DELETE, "/admin/users/main/ou_x", "")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn admin_api_is_off_without_a_key() {
    let sb = sandbox().await;
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .without_admin_key()
        .render();
    let gw = gateway_text(&text, secret).await;
    let r = Http::default().admin(&gw, Method::GET, "/admin/tokens", "").await;
    assert_eq!(r.status, 404);
}

/// Tokens straight from the platform (as a legacy system holds them): consent, then code exchange.
async fn platform_tokens(http: &Http, sb: &douyin_gateway::sandbox::Sandbox) -> (String, String, String) {
    let connect = format!(
        "{}/platform/oauth/connect/?client_key={CLIENT_KEY}&response_type=code&scope=user_info&redirect_uri=https%3A%2F%2Flegacy.example%2Fcb&state=s",
        sb.url()
    );
    let r = http.send(Method::GET, &connect, &[], "").await;
    let loc = r.headers["location"].to_str().unwrap().to_string();
    let code = loc
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    let form =
        format!("client_key={CLIENT_KEY}&client_secret={CLIENT_SECRET}&code={code}&grant_type=authorization_code");
    let r = http
        .send(
            Method::POST,
            &format!("{}/oauth/access_token/", sb.url()),
            &[("content-type", "application/x-www-form-urlencoded")],
            form,
        )
        .await;
    let d = r.json()["data"].clone();
    (
        d["access_token"].as_str().unwrap().into(),
        d["refresh_token"].as_str().unwrap().into(),
        d["open_id"].as_str().unwrap().into(),
    )
}

fn signed(body: &str, key: &str) -> String {
    let mut h = sha1::Sha1::new();
    h.update(key.as_bytes());
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

#[tokio::test]
async fn the_unauthorize_webhook_drops_the_user_when_signed() {
    let sb = sandbox().await;
    let gw = user_gateway(&sb).await;
    let http = Http::default();
    let open_id = open_id_of(&http.authorize(&gw, "main").await.text());
    let url = gw.admin("/webhooks/douyin");

    let challenge =
        json!({"event": "verify_webhook", "client_key": CLIENT_KEY, "content": {"challenge": 24680}}).to_string();
    let r = http
        .send(
            Method::POST,
            &url,
            &[("x-douyin-signature", &signed(&challenge, CLIENT_SECRET))],
            challenge.clone(),
        )
        .await;
    assert_eq!(r.json()["challenge"], 24680);

    let event = json!({"event": "unauthorize", "client_key": CLIENT_KEY, "from_user_id": open_id,
        "content": "{\"scopes\":[\"user_info\"]}"})
    .to_string();
    let r = http.send(Method::POST, &url, &[], event.clone()).await;
    assert_eq!(r.status, 401, "unsigned: {}", r.text());
    let r = http
        .send(
            Method::POST,
            &url,
            &[("x-douyin-signature", &signed(&event, "wrong-secret"))],
            event.clone(),
        )
        .await;
    assert_eq!(r.status, 401, "wrongly signed");
    assert_eq!(
        http.get(&gw.url(&format!("{VIDEO}?open_id={open_id}"))).await.status,
        200,
        "still there"
    );

    let r = http
        .send(
            Method::POST,
            &url,
            &[("x-douyin-signature", &signed(&event, CLIENT_SECRET))],
            event,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["dropped"], 1);
    let r = http.get(&gw.url(&format!("{VIDEO}?open_id={open_id}"))).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.gateway_error().as_deref(), Some("user_authorization_required"));
    assert!(tokens_of(&http, &gw).await.iter().all(|t| t["class"] != "user"));
}

#[tokio::test]
async fn a_refresh_that_rotates_the_refresh_token_is_followed() {
    // The platform doc leaves open whether refresh returns a new refresh_token; this sandbox does,
    // and kills the old one: a gateway that kept the old string would lose the user at the second refresh.
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        rotate_refresh_token: true,
        ..Default::default()
    })
    .await;
    let gw = user_gateway(&sb).await;
    let http = Http::default();
    let open_id = open_id_of(&http.authorize(&gw, "main").await.text());
    // Refreshes one after another (forced: the gateway would not refetch a token it has just
    // refreshed when the platform rejects it within seconds, which only a test can arrange).
    let body = format!(r#"{{"app":"main","class":"user","open_id":"{open_id}"}}"#);
    for round in 1..=3 {
        let r = http.admin(&gw, Method::POST, "/admin/refresh", &body).await;
        assert_eq!(r.status, 200, "refresh {round}: {}", r.text());
        assert_eq!(n(&http.stats(&sb).await["refresh_token_calls"]), round);
    }
    // And a refresh on demand, after the platform expired the token, uses the latest refresh_token.
    http.control(&sb, "/sandbox/revoke", json!({"expire_user": open_id}))
        .await;
    let r = http.get(&gw.url(&format!("{VIDEO}?open_id={open_id}"))).await;
    assert_eq!(r.json()["data"]["error_code"], 0, "{}", r.text());
    assert_eq!(n(&http.stats(&sb).await["refresh_token_calls"]), 4);
}

/// The platform's own `verify_webhook` example carries `"client_key": ""`: answered when its
/// signature verifies under a configured app's key. A delivery the platform retries (same
/// `Msg-Id`) is acknowledged and not processed twice.
#[tokio::test]
async fn webhooks_without_a_client_key_and_repeated_deliveries() {
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        consent_open_id: Some("_000webhook-user".into()),
        ..Default::default()
    })
    .await;
    let gw = user_gateway(&sb).await;
    let http = Http::default();
    let url = gw.admin("/webhooks/douyin");
    let challenge = json!({"event": "verify_webhook", "client_key": "", "content": {"challenge": 13579}}).to_string();
    let r = http
        .send(
            Method::POST,
            &url,
            &[("x-douyin-signature", &signed(&challenge, CLIENT_SECRET))],
            challenge.clone(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["challenge"], 13579);
    let r = http
        .send(
            Method::POST,
            &url,
            &[("x-douyin-signature", &signed(&challenge, "not-ours"))],
            challenge,
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());

    let open_id = open_id_of(&http.authorize(&gw, "main").await.text());
    let event = json!({"event": "unauthorize", "client_key": CLIENT_KEY, "from_user_id": open_id}).to_string();
    let sig = signed(&event, CLIENT_SECRET);
    let deliver = |msg_id: &'static str| {
        let (http, url, event, sig) = (http.clone(), url.clone(), event.clone(), sig.clone());
        async move {
            http.send(
                Method::POST,
                &url,
                &[("x-douyin-signature", &sig), ("msg-id", msg_id)],
                event,
            )
            .await
        }
    };
    let r = deliver("msg-1").await;
    assert_eq!(r.json()["dropped"], 1, "{}", r.text());
    // The user authorizes again; the platform retries the old delivery: acknowledged, not replayed.
    assert_eq!(open_id_of(&http.authorize(&gw, "main").await.text()), open_id);
    let r = deliver("msg-1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["duplicate"], true, "{}", r.text());
    assert_eq!(
        http.get(&gw.url(&format!("{VIDEO}?open_id={open_id}"))).await.status,
        200,
        "still authorized"
    );
    // A new delivery is processed.
    assert_eq!(deliver("msg-2").await.json()["dropped"], 1);
}

/// Some apps are configured so that a refresh also extends the refresh_token's life: the expiry
/// the platform answers is stored, and the re-consent forecast follows it, rather than the one
/// the 5-renewal rule would assume.
#[tokio::test]
async fn a_refresh_that_extends_the_refresh_token_moves_the_forecast() {
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        refresh_token_ttl: 3600,
        refresh_extends: true,
        ..Default::default()
    })
    .await;
    let gw = user_gateway_with(&sb, |t| t.renew_before_secs = 60).await;
    let http = Http::default();
    let open_id = open_id_of(&http.authorize(&gw, "main").await.text());
    let user = |tokens: Vec<serde_json::Value>| tokens.into_iter().find(|t| t["class"] == "user").unwrap();
    let before = user(tokens_of(&http, &gw).await);
    // Half the refresh_token's life passes on the platform; then a refresh.
    http.control(&sb, "/sandbox/clock", json!({"advance_secs": 1800})).await;
    let body = format!(r#"{{"app":"main","class":"user","open_id":"{open_id}"}}"#);
    let r = http.admin(&gw, Method::POST, "/admin/refresh", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let after = user(tokens_of(&http, &gw).await);
    let (b, a) = (n(&before["refresh_expires_at"]), n(&after["refresh_expires_at"]));
    // A full hour again (not the half hour left before the refresh).
    assert!(
        a + 5 >= b && a >= douyin_gateway::token::unix_now() + 3590,
        "before {b}, after {a}"
    );
    assert!(
        n(&after["reauthorize_by"]) + 5 >= n(&before["reauthorize_by"]),
        "{before} {after}"
    );
}

/// `optional_scopes` reach the authorize page as `optionalScope` (ticked by default unless `,0`),
/// and what the user kept is the scope stored for them.
#[tokio::test]
async fn optional_scopes_are_offered_and_what_the_user_keeps_is_stored() {
    let sb = sandbox().await;
    let upstream = sb.url();
    let gw = gateway_knowing_admin(|admin, secret| {
        TestConfig::new(&upstream, secret)
            .redirect_to(admin)
            .app("scopes = [\"user_info\"]\noptional_scopes = [\"mobile\", \"friend_relation,0\"]")
            .render()
    })
    .await;
    let http = Http::default();
    let r = http
        .send(Method::GET, &gw.admin("/oauth/authorize?app=main"), &[], "")
        .await;
    assert_eq!(r.status, 302);
    let loc = r.headers["location"].to_str().unwrap().to_string();
    let q: std::collections::HashMap<String, String> =
        form_urlencoded::parse(loc.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(q["scope"], "user_info");
    assert_eq!(q["optionalScope"], "mobile,1,friend_relation,0");

    let page = http.authorize(&gw, "main").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let list = tokens_of(&http, &gw).await;
    let user = list.iter().find(|t| t["class"] == "user").unwrap();
    assert_eq!(
        user["scope"], "user_info,mobile",
        "the ticked optional scope was granted"
    );
}

#[test]
fn check_refuses_malformed_optional_scopes() {
    let secret = secret_file();
    let text = |scopes: &str| {
        TestConfig::new("http://127.0.0.1:9", secret.path())
            .app(&format!("optional_scopes = {scopes}"))
            .render()
    };
    for bad in [r#"[""]"#, r#"["mobile,2"]"#, r#"["mobile, 1"]"#, r#"[",1"]"#] {
        let err = douyin_gateway::config::Config::load_str(&text(bad), "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("optional_scopes"), "{bad}: {err}");
    }
    douyin_gateway::config::Config::load_str(&text(r#"["mobile", "friend_relation,0"]"#), "t")
        .expect("well-formed optional scopes");
}
