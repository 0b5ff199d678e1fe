//! Service providers' merchant apps (issue 18): `AUTHORIZED` exchanges the code at once and
//! stores the grant; calls carry the merchant app's authorizer token (V1 in the query, V2 in
//! `access-token`); a rejected token is refreshed once with the single-use refresh token, which
//! is never sent twice (two instances on one Redis; a process killed between the platform's
//! answer and the write); `UNAUTHORIZED` drops the merchant app; a merchant app that withdrew
//! gets 401 `authorizer_authorization_required`.
//!
//! The sandbox plays the third-party platform: it seals and signs the events, issues codes and
//! single-use refresh tokens, and counts every use.

mod common;

use common::*;
use douyin_gateway::sandbox::Sandbox;
use serde_json::{json, Value};
use std::time::Duration;

const MEMORY: &str = "[store]\nkind = \"memory\"\n";
const V1_API: &str = "/openapi/v1/microapp/app/info";
const V2_API: &str = "/api/tpapp/sandbox/authorizer_info";

/// Two providers with the sandbox's identity: `tp1` on V1, `tp2` on V2; a route for each.
fn providers(secrets: &ProviderSecrets) -> (String, String) {
    let tables = secrets.table("tp1", "v1") + &secrets.table("tp2", "v2");
    let routes = format!(
        "[[routes]]\nname = \"merchant_v2_query\"\npath = \"{V2_API}\"\nmethods = [\"POST\"]\ntoken = \"authorizer\"\n\
         provider = \"tp2\"\nauthorizer = \"query:appid\"\n\n\
         [[routes]]\nname = \"merchant_v1\"\npath = \"{V1_API}\"\ntoken = \"authorizer\"\nprovider = \"tp1\"\n\
         inject = \"query:authorizer_access_token\"\n\n\
         [[routes]]\nname = \"merchant_v2\"\npath = \"{V2_API}\"\ntoken = \"authorizer\"\nprovider = \"tp2\"\n\
         authorizer = \"header:x-merchant\"\n"
    );
    (tables, routes)
}

fn config(sb: &Sandbox, secret: &std::path::Path, store: &str, extra: &str) -> String {
    let (tables, routes) = providers(&ProviderSecrets::set());
    TestConfig::standard(&sb.url(), secret)
        .store(store)
        .routes_first(&routes)
        .extra(&tables)
        .extra(extra)
        .render()
}

async fn start(sb: &Sandbox, store: &str, extra: &str) -> Gateway {
    let secret = secret_file();
    let text = config(sb, secret.path(), store, extra);
    gateway_text(&text, secret).await
}

/// The sandbox pushes `event` for `appid` to `provider`'s event URL; its answer.
async fn push(http: &Http, sb: &Sandbox, gw: &Gateway, provider: &str, event: &str, appid: &str) -> Value {
    let url = gw.admin(&format!("/providers/{provider}/events"));
    http.control(
        sb,
        "/sandbox/provider/push",
        json!({"url": url, "event": event, "authorizer_appid": appid}),
    )
    .await
}

/// The sandbox ends `appid`'s access token now: its next call finds it expired.
async fn expire(http: &Http, sb: &Sandbox, appid: &str) {
    http.control(
        sb,
        "/sandbox/provider/authorizer/expire",
        json!({"authorizer_appid": appid}),
    )
    .await;
}

async fn platform(http: &Http, sb: &Sandbox) -> Value {
    http.get(&format!("{}/sandbox/provider", sb.url())).await.json()
}

/// Authorizes `appid` to `tp1` (after a ticket) and `tp2`.
async fn authorize_both(http: &Http, sb: &Sandbox, gw: &Gateway, appid1: &str, appid2: &str) {
    let r = push(http, sb, gw, "tp1", "PUSH", "").await;
    assert_eq!(
        (r["status"].as_u64(), r["body"].as_str()),
        (Some(200), Some("success")),
        "{r}"
    );
    for (p, a) in [("tp1", appid1), ("tp2", appid2)] {
        let r = push(http, sb, gw, p, "AUTHORIZED", a).await;
        assert_eq!(
            (r["status"].as_u64(), r["body"].as_str()),
            (Some(200), Some("success")),
            "{p}: {r}"
        );
    }
}

async fn call_v1(http: &Http, gw: &Gateway, appid: &str) -> Resp {
    let url = gw.url(&format!("{V1_API}?component_appid=tt_component_sandbox"));
    http.send(
        http::Method::GET,
        &url,
        &[("x-authorizer-appid", appid), ("x-gateway-key", CALLER_KEY)],
        "",
    )
    .await
}

async fn call_v2(http: &Http, gw: &Gateway, appid: &str) -> Resp {
    let headers = [("x-merchant", appid), ("x-gateway-key", CALLER_KEY)];
    http.send(http::Method::GET, &gw.url(V2_API), &headers, "").await
}

#[tokio::test]
async fn authorized_merchant_apps_get_their_tokens_on_v1_and_v2_side_by_side() {
    let sb = sandbox().await;
    let http = Http::default();
    let gw = start(&sb, MEMORY, "").await;
    authorize_both(&http, &sb, &gw, "tt_m1", "tt_m2").await;
    let p = platform(&http, &sb).await;
    assert_eq!(n(&p["code_exchanges"]), 2, "{p}");

    let r = call_v1(&http, &gw, "tt_m1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["app_id"], "tt_m1");
    let r = call_v2(&http, &gw, "tt_m2").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["authorizer_appid"], "tt_m2");
    assert_eq!(r.json()["data"]["version"], "v2");

    // A header-named merchant app's header is the gateway's: the platform never sees it.
    let r = http
        .send(
            http::Method::GET,
            &gw.url(V2_API),
            &[("x-gateway-key", CALLER_KEY), ("x-merchant", "tt_m2")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = http.requests(&sb).await;
    let last = seen.iter().rev().find(|r| r["path"] == V2_API).unwrap();
    let names: Vec<&str> = last["header_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"access-token") && !names.contains(&"x-merchant"),
        "{names:?}"
    );

    // The appid from the query (authorizer = "query:appid").
    let url = gw.url(&format!("{V2_API}?appid=tt_m2"));
    let r = http
        .send(http::Method::POST, &url, &[("x-gateway-key", CALLER_KEY)], "")
        .await;
    assert_eq!(r.json()["data"]["authorizer_appid"], "tt_m2", "{}", r.text());

    // Not interchangeable: tt_m1 authorized only V1's provider.
    let r = call_v2(&http, &gw, "tt_m1").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.gateway_error().as_deref(), Some("authorizer_authorization_required"));
    // A merchant app nobody authorized: 401 and no call to the platform.
    let before = platform(&http, &sb).await;
    let r = call_v1(&http, &gw, "tt_nobody").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.gateway_error().as_deref(), Some("authorizer_authorization_required"));
    assert_eq!(
        platform(&http, &sb).await,
        before,
        "an unknown merchant app reached the platform"
    );
    // No appid, or one that is no appid: 400.
    let r = http.get(&gw.url(V1_API)).await;
    assert_eq!(r.gateway_error().as_deref(), Some("bad_request"), "{}", r.text());
    let r = call_v2(&http, &gw, "tt%0Abad").await;
    assert_eq!(r.gateway_error().as_deref(), Some("bad_request"), "{}", r.text());
    gw.running.stop().await;
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_once_and_each_refresh_token_used_once() {
    let sb = sandbox().await;
    let http = Http::default();
    let gw = start(&sb, MEMORY, "").await;
    authorize_both(&http, &sb, &gw, "tt_r1", "tt_r2").await;
    for round in 0..3 {
        for (appid, call) in [("tt_r1", 1), ("tt_r2", 2)] {
            expire(&http, &sb, appid).await;
            let r = if call == 1 {
                call_v1(&http, &gw, appid).await
            } else {
                call_v2(&http, &gw, appid).await
            };
            assert_eq!(r.status, 200, "round {round} {appid}: {}", r.text());
        }
    }
    // The platform revokes the V2 provider's own client_token: the refresh is refused for it, a
    // new client_token is fetched, and the refresh goes through with it.
    http.control(&sb, "/sandbox/revoke", json!({"client_key": "tt_provider_sandbox"}))
        .await;
    expire(&http, &sb, "tt_r2").await;
    let r = call_v2(&http, &gw, "tt_r2").await;
    assert_eq!(r.status, 200, "after the client_token's revocation: {}", r.text());
    let p = platform(&http, &sb).await;
    assert_eq!(n(&p["refreshes"]), 7, "{p}");
    assert_eq!(n(&p["refresh_reused"]), 0, "a refresh token was sent twice: {p}");
    assert_eq!(n(&p["retrieves"]), 0, "{p}");
    gw.running.stop().await;
}

#[tokio::test]
async fn unauthorized_drops_the_merchant_app_and_a_withdrawn_one_gets_401() {
    let sb = sandbox().await;
    let http = Http::default();
    std::env::set_var("DG_AZ_NOTIFY_KEY", "notify-key");
    let notify = format!(
        "[[notify]]\nurl = \"{}/sandbox/receiver/notify\"\nsecret_env = \"DG_AZ_NOTIFY_KEY\"\n\
         events = [\"authorizer.unauthorized\", \"authorizer.reauthorization_required\"]\n",
        sb.url()
    );
    let gw = start(&sb, MEMORY, &notify).await;
    authorize_both(&http, &sb, &gw, "tt_u1", "tt_u2").await;
    assert_eq!(call_v1(&http, &gw, "tt_u1").await.status, 200);
    let r = push(&http, &sb, &gw, "tp1", "UNAUTHORIZED", "tt_u1").await;
    assert_eq!(r["body"].as_str(), Some("success"), "{r}");
    let r = call_v1(&http, &gw, "tt_u1").await;
    assert_eq!(
        r.gateway_error().as_deref(),
        Some("authorizer_authorization_required"),
        "{}",
        r.text()
    );

    // Withdrawn at the platform without the gateway hearing of it (the event went elsewhere):
    // the refresh is refused, no code can be retrieved, the caller gets 401.
    http.control(
        &sb,
        "/sandbox/provider/push",
        json!({"url": format!("{}/sandbox/sink", sb.url()), "event": "UNAUTHORIZED", "authorizer_appid": "tt_u2"}),
    )
    .await;
    expire(&http, &sb, "tt_u2").await;
    let r = call_v2(&http, &gw, "tt_u2").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.gateway_error().as_deref(), Some("authorizer_authorization_required"));
    let before = platform(&http, &sb).await;
    let r = call_v2(&http, &gw, "tt_u2").await;
    assert_eq!(r.status, 401, "{}", r.text());
    let after = platform(&http, &sb).await;
    assert_eq!(
        (n(&after["refresh_calls"]), n(&after["retrieves"])),
        (n(&before["refresh_calls"]), n(&before["retrieves"])),
        "a dead grant was tried again"
    );
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            r#"douyin_gateway_provider_events_total{event="UNAUTHORIZED",outcome="ok",provider="tp1"}"#
        ),
        Some(1.0)
    );
    // [[notify]] heard both, once each, naming provider and merchant app.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let events = loop {
        let got = http.get(&format!("{}/sandbox/received", sb.url())).await.json();
        let events: Vec<Value> = got["received"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["path"] == "/sandbox/receiver/notify")
            .map(|r| serde_json::from_str(r["body"].as_str().unwrap()).unwrap())
            .collect();
        if events.len() >= 2 || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seen: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["provider"].as_str().unwrap(),
                e["authorizer_appid"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("authorizer.unauthorized", "tp1", "tt_u1"),
            ("authorizer.reauthorization_required", "tp2", "tt_u2")
        ],
        "{events:?}"
    );
    gw.running.stop().await;
}

#[tokio::test]
async fn a_reauthorization_replaces_the_grant_and_a_forged_event_changes_nothing() {
    let sb = sandbox().await;
    let http = Http::default();
    let gw = start(&sb, MEMORY, "").await;
    authorize_both(&http, &sb, &gw, "tt_a1", "tt_a2").await;
    // UPDATE_AUTHORIZED: the platform ends the old refresh token; the new grant must be the one used.
    let r = push(&http, &sb, &gw, "tp1", "UPDATE_AUTHORIZED", "tt_a1").await;
    assert_eq!(r["body"].as_str(), Some("success"), "{r}");
    expire(&http, &sb, "tt_a1").await;
    let r = call_v1(&http, &gw, "tt_a1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = platform(&http, &sb).await;
    assert_eq!((n(&p["refreshes"]), n(&p["retrieves"])), (1, 0), "{p}");

    // Forged (tampered after signing) and replayed authorization events: refused, no exchange.
    let before = platform(&http, &sb).await;
    let url = gw.admin("/providers/tp1/events");
    let r = http
        .control(
            &sb,
            "/sandbox/provider/push",
            json!({"url": url, "event": "AUTHORIZED", "authorizer_appid": "tt_forged", "tamper": true}),
        )
        .await;
    assert_eq!(r["status"].as_u64(), Some(401), "{r}");
    let r = http
        .control(&sb, "/sandbox/provider/push", json!({"url": url, "replay": true}))
        .await;
    assert_eq!(r["status"].as_u64(), Some(401), "{r}");
    assert_eq!(
        n(&platform(&http, &sb).await["code_exchanges"]),
        n(&before["code_exchanges"]),
        "a refused event reached the platform"
    );
    assert_eq!(call_v1(&http, &gw, "tt_forged").await.status, 401);
    gw.running.stop().await;
}

/// An event answered 503 (here: no ticket yet, so no component token to exchange its code with)
/// is delivered again by the platform, byte for byte: that copy is taken, not refused as a replay.
#[tokio::test]
async fn an_authorization_answered_503_is_taken_when_delivered_again() {
    let sb = sandbox().await;
    let http = Http::default();
    let gw = start(&sb, MEMORY, "").await;
    let r = push(&http, &sb, &gw, "tp1", "AUTHORIZED", "tt_again").await;
    assert_eq!(r["status"].as_u64(), Some(503), "{r}");
    let sent = r["sent"].as_str().unwrap().to_string();
    let r = push(&http, &sb, &gw, "tp1", "PUSH", "").await;
    assert_eq!(r["body"].as_str(), Some("success"), "{r}");
    let r = http.post(&gw.admin("/providers/tp1/events"), sent.clone()).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "success"));
    assert_eq!(call_v1(&http, &gw, "tt_again").await.status, 200);
    // Taken once: the same bytes again are a replay.
    let r = http.post(&gw.admin("/providers/tp1/events"), sent).await;
    assert_eq!(r.status, 401, "{}", r.text());
    gw.running.stop().await;
}

/// The platform uses the refresh token, but its answer comes after the gateway gave up on it
/// (`fetch_timeout_ms`): on the memory store too, the spent token is not sent again; a retrieved
/// code gives the next grant.
#[tokio::test]
async fn a_refresh_whose_answer_never_came_is_not_sent_again() {
    let sb = sandbox().await;
    let http = Http::default();
    let secret = secret_file();
    let (tables, routes) = providers(&ProviderSecrets::set());
    let text = TestConfig::standard(&sb.url(), secret.path())
        .store(MEMORY)
        .tokens(|t| {
            t.fetch_timeout_ms = 400;
            t.backoff_initial_ms = 10;
            t.backoff_max_ms = 20;
        })
        .routes_first(&routes)
        .extra(&tables)
        .render();
    let gw = gateway_text(&text, secret).await;
    authorize_both(&http, &sb, &gw, "tt_lost1", "tt_lost2").await;
    http.control(&sb, "/sandbox/provider", json!({"answer_delay_ms": 1500}))
        .await;
    expire(&http, &sb, "tt_lost1").await;
    let r = call_v1(&http, &gw, "tt_lost1").await;
    assert_eq!(r.status, 503, "the refresh timed out: {}", r.text());
    http.control(&sb, "/sandbox/provider", json!({"answer_delay_ms": 0}))
        .await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let r = call_v1(&http, &gw, "tt_lost1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = platform(&http, &sb).await;
    assert_eq!(
        (n(&p["refreshes"]), n(&p["refresh_reused"]), n(&p["retrieves"])),
        (1, 0, 1),
        "{p}"
    );
    gw.running.stop().await;
}

/// The provider's own credential cannot be had when a refresh is due (its ticket is one the
/// platform no longer accepts): the refresh token is not spent, and once a ticket comes the same
/// token refreshes, with no code retrieved.
#[tokio::test]
async fn a_refresh_without_a_credential_leaves_the_refresh_token_unspent() {
    let sb = sandbox().await;
    let http = Http::default();
    let gw = start(&sb, MEMORY, "").await;
    http.control(&sb, "/sandbox/provider", json!({"expires_in": 1})).await;
    authorize_both(&http, &sb, &gw, "tt_cred1", "tt_cred2").await;
    // Three tickets the gateway never hears of: the platform accepts only its last two.
    let sink = format!("{}/sandbox/sink", sb.url());
    for _ in 0..3 {
        http.control(&sb, "/sandbox/provider/push", json!({"url": sink})).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    expire(&http, &sb, "tt_cred1").await;
    let r = call_v1(&http, &gw, "tt_cred1").await;
    assert_eq!(r.status, 503, "no component token: {}", r.text());
    let r = push(&http, &sb, &gw, "tp1", "PUSH", "").await;
    assert_eq!(r["body"].as_str(), Some("success"), "{r}");
    // Past the merchant app's own back-off (100 ms in tests) after the failure.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = call_v1(&http, &gw, "tt_cred1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = platform(&http, &sb).await;
    assert_eq!(
        (n(&p["refreshes"]), n(&p["refresh_reused"]), n(&p["retrieves"])),
        (1, 0, 0),
        "{p}"
    );
    gw.running.stop().await;
}

/// The platform answers "try again" (40045) to an authorization's code exchange: the gateway
/// retrieves no code for it (nothing was wrong with the code), answers 503, and takes the
/// redelivery; and a refresh answered so keeps its refresh token for the next attempt.
#[tokio::test]
async fn a_try_again_answer_retrieves_nothing_and_spends_nothing() {
    let sb = sandbox().await;
    let http = Http::default();
    let gw = start(&sb, MEMORY, "").await;
    let r = push(&http, &sb, &gw, "tp1", "PUSH", "").await;
    assert_eq!(r["body"].as_str(), Some("success"), "{r}");
    http.control(&sb, "/sandbox/provider", json!({"refuse_next": 1})).await;
    let r = push(&http, &sb, &gw, "tp1", "AUTHORIZED", "tt_try").await;
    assert_eq!(r["status"].as_u64(), Some(503), "{r}");
    let r = http
        .post(
            &gw.admin("/providers/tp1/events"),
            r["sent"].as_str().unwrap().to_string(),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "success"));
    http.control(&sb, "/sandbox/provider", json!({"refuse_next": 1})).await;
    expire(&http, &sb, "tt_try").await;
    assert_eq!(call_v1(&http, &gw, "tt_try").await.status, 503);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(call_v1(&http, &gw, "tt_try").await.status, 200);
    let p = platform(&http, &sb).await;
    assert_eq!(
        (n(&p["retrieves"]), n(&p["refreshes"]), n(&p["refresh_reused"])),
        (0, 1, 0),
        "{p}"
    );
    gw.running.stop().await;
}

/// The platform pushes each code a provider retrieves back to its event URL as
/// `UPDATE_AUTHORIZED`. The gateway that retrieved it has spent it: it must not retrieve again
/// (which would push again, without end).
#[tokio::test]
async fn a_retrieved_code_pushed_back_as_update_authorized_is_not_retrieved_again() {
    let sb = sandbox().await;
    let http = Http::default();
    let gw = start(&sb, MEMORY, "").await;
    authorize_both(&http, &sb, &gw, "tt_loop1", "tt_loop2").await;
    http.control(
        &sb,
        "/sandbox/provider",
        json!({"event_url": gw.admin("/providers/tp1/events")}),
    )
    .await;
    // The merchant authorizes again without the gateway hearing (the event went elsewhere): the
    // refresh token it holds is dead; the next refresh is refused and a code retrieved.
    let sink = format!("{}/sandbox/sink", sb.url());
    http.control(
        &sb,
        "/sandbox/provider/push",
        json!({"url": sink, "event": "UPDATE_AUTHORIZED", "authorizer_appid": "tt_loop1"}),
    )
    .await;
    expire(&http, &sb, "tt_loop1").await;
    let r = call_v1(&http, &gw, "tt_loop1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The pushed-back event arrives and is taken (`success`); then nothing more happens.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let ok = r#"douyin_gateway_provider_events_total{event="UPDATE_AUTHORIZED",outcome="ok",provider="tp1"}"#;
    while metric(&http.metrics(&gw).await, ok) != Some(1.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the pushed-back event was not taken"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = platform(&http, &sb).await;
    assert_eq!((n(&p["retrieves"]), n(&p["retrieved_pushed"])), (1, 1), "{p}");
    // The grant the retrieval gave is the one in use, and it renews.
    expire(&http, &sb, "tt_loop1").await;
    assert_eq!(call_v1(&http, &gw, "tt_loop1").await.status, 200);
    let p = platform(&http, &sb).await;
    assert_eq!((n(&p["retrieves"]), n(&p["refresh_reused"])), (1, 0), "{p}");
    gw.running.stop().await;
}

#[cfg_attr(
    not(has_redis),
    ignore = "needs a Redis: apt-get install redis-server (the test starts its own; CI installs it) or set REDIS_URL, then touch build.rs"
)]
#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_one_redis_spend_one_refresh_token_for_200_calls_at_expiry() {
    let redis = OwnRedis::start();
    let sb = sandbox().await;
    let http = Http::default();
    let store = fresh_redis_store(&redis.url);
    let a = start(&sb, &store, "").await;
    let b = start(&sb, &store, "").await;
    authorize_both(&http, &sb, &a, "tt_redis1", "tt_redis2").await;
    // Both instances have served it once: both hold the token in memory.
    for gw in [&a, &b] {
        assert_eq!(call_v1(&http, gw, "tt_redis1").await.status, 200);
    }
    http.control(&sb, "/sandbox/provider", json!({"token_delay_ms": 300}))
        .await;
    expire(&http, &sb, "tt_redis1").await;
    let before = platform(&http, &sb).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (http, url) = (
            http.clone(),
            [&a, &b][i % 2].url(&format!("{V1_API}?component_appid=tt_component_sandbox")),
        );
        calls.spawn(async move {
            http.send(
                http::Method::GET,
                &url,
                &[("x-authorizer-appid", "tt_redis1"), ("x-gateway-key", CALLER_KEY)],
                "",
            )
            .await
            .status
        });
    }
    let mut ok = 0;
    while let Some(s) = calls.join_next().await {
        ok += usize::from(s.unwrap() == 200);
    }
    assert_eq!(ok, 200);
    let after = platform(&http, &sb).await;
    assert_eq!(n(&after["refresh_calls"]) - n(&before["refresh_calls"]), 1, "{after}");
    assert_eq!(n(&after["refresh_reused"]), 0, "{after}");
    assert_eq!(n(&after["retrieves"]), 0, "{after}");
    a.running.stop().await;
    b.running.stop().await;
}

/// The gateway binary on SQLite, killed at `crash_at` (a debug build's test hook) on the first
/// refresh; restarted without it, the merchant app still works and no refresh token was sent twice.
async fn crash_at(point: &str) -> (Value, Value) {
    let sb = sandbox().await;
    let http = Http::default();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokens.db");
    // The store key and the providers' secrets are in this process's environment, which the
    // gateway processes inherit.
    let store = fresh_sqlite_store(&db);
    let secret = secret_file();
    let secrets = ProviderSecrets::set();
    let cfg = tempfile::NamedTempFile::new().unwrap();
    let cfg_path = cfg.path().to_str().unwrap().to_string();
    let run = |crash: Option<&str>| {
        let (bound, port, admin_port) = listeners();
        let (tables, routes) = providers(&secrets);
        let text = TestConfig::standard(&sb.url(), secret.path())
            .listen_port(port)
            .admin_port(admin_port)
            .store(&store)
            .routes_first(&routes)
            .extra(&tables)
            .render();
        std::fs::write(&cfg_path, text).unwrap();
        let env: Vec<(&str, &str)> = crash.map(|c| ("DOUYIN_GATEWAY_CRASH_AT", c)).into_iter().collect();
        let mut p = Proc::spawn_on(&["serve", "--config", &cfg_path], &env, [&bound[0], &bound[1]]);
        p.wait_for("gateway listening");
        (p, port, admin_port)
    };
    let (mut p, port, admin_port) = run(Some(point));
    let call = |port: u16| {
        let http = http.clone();
        async move {
            let url = format!("http://127.0.0.1:{port}{V1_API}?component_appid=tt_component_sandbox");
            http.send(
                http::Method::GET,
                &url,
                &[("x-authorizer-appid", "tt_crash"), ("x-gateway-key", CALLER_KEY)],
                "",
            )
            .await
        }
    };
    let events = format!("http://127.0.0.1:{admin_port}/providers/tp1/events");
    for event in ["PUSH", "AUTHORIZED"] {
        let r = http
            .control(
                &sb,
                "/sandbox/provider/push",
                json!({"url": events, "event": event, "authorizer_appid": "tt_crash"}),
            )
            .await;
        if point == "authorizer_exchanged" && event == "AUTHORIZED" {
            // Killed after the exchange answered, before the grant was stored: the platform did not
            // hear `success` and delivers the event again, to the restarted gateway.
            assert_ne!(r["body"].as_str(), Some("success"), "{r}");
        } else {
            assert_eq!(r["body"].as_str(), Some("success"), "{event}: {r}");
        }
    }
    if point == "authorizer_refreshed" {
        assert_eq!(call(port).await.status, 200);
        expire(&http, &sb, "tt_crash").await;
        // The refresh answers; the process dies before writing the new grant (the call's
        // connection drops with it: the task's panic is that).
        let _ = tokio::time::timeout(Duration::from_secs(10), tokio::spawn(call(port))).await;
    }
    p.wait_for(&format!("crash point {point}"));
    let status = p.child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed by SIGKILL"
    );
    let killed = platform(&http, &sb).await;

    let (p, port, admin_port) = run(None);
    let _ = &p;
    if point == "authorizer_exchanged" {
        let events = format!("http://127.0.0.1:{admin_port}/providers/tp1/events");
        let r = http
            .control(&sb, "/sandbox/provider/push", json!({"url": events, "replay": true}))
            .await;
        // The same event again (its nonce was held only by the dead process): taken this time.
        assert_eq!(r["body"].as_str(), Some("success"), "{r}");
    }
    let r = call(port).await;
    assert_eq!(r.status, 200, "after the restart: {}", r.text());
    // And the grant it holds now renews as any other.
    expire(&http, &sb, "tt_crash").await;
    let r = call(port).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let after = platform(&http, &sb).await;
    let mut p = p;
    let _ = p.child.kill();
    let _ = p.child.wait();
    (killed, after)
}

#[tokio::test]
async fn killed_between_the_refresh_answer_and_the_write_loses_no_grant() {
    let (killed, after) = crash_at("authorizer_refreshed").await;
    assert_eq!(n(&killed["refreshes"]), 1, "{killed}");
    assert_eq!(
        n(&after["refresh_reused"]),
        0,
        "the spent refresh token was sent again: {after}"
    );
    assert_eq!(
        n(&after["retrieves"]),
        1,
        "the lost grant comes back by a retrieved code: {after}"
    );
    assert_eq!(n(&after["refreshes"]), 2, "{after}");
}

#[tokio::test]
async fn killed_between_the_code_exchange_and_the_write_loses_no_grant() {
    let (killed, after) = crash_at("authorizer_exchanged").await;
    assert_eq!(n(&killed["code_exchanges"]), 1, "{killed}");
    assert_eq!(
        n(&after["retrieves"]),
        1,
        "the used code is replaced by a retrieved one: {after}"
    );
    assert_eq!(n(&after["refresh_reused"]), 0, "{after}");
}
