//! Service providers (issue 18, first slice): the authorization event URL
//! `POST /providers/{name}/events` verifies, decrypts and stores the pushed component_ticket
//! durably and encrypted (SQLite, Redis); a forged, tampered, replayed, stale or misaddressed
//! event changes nothing.
//!
//! Events are sealed here with the gateway's own `provider_crypto` (the sandbox's independent
//! implementation is the next slice's cross-check).

mod common;

use base64::Engine;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

use douyin_gateway::sandbox::provider::{COMPONENT_APPID as APPID, MESSAGE_KEY as KEY, MESSAGE_TOKEN as TOKEN};

/// An event for the sandbox's provider ([`provider_event`]).
fn event(message: &Value, appid: &str, token: &str, ts: u64) -> Value {
    provider_event(message, appid, token, ts)
}

fn now() -> u64 {
    douyin_gateway::vocab::unix_now()
}

fn push(ticket: &str) -> Value {
    json!({"Ticket": ticket, "FromUserName": "ByteDanceMicroApp", "CreateTime": "2026-12-05 12:00:00",
           "MsgType": "Ticket", "Event": "PUSH"})
}

async fn post(http: &Http, gw: &Gateway, body: &Value) -> Resp {
    http.post(&gw.admin("/providers/tp/events"), body.to_string()).await
}

async fn ticket_of(gw: &Gateway) -> Option<String> {
    gw.running
        .shared
        .tokens
        .ticket("tp")
        .await
        .unwrap()
        .map(|t| t.value.expose().to_string())
}

#[tokio::test]
async fn a_pushed_ticket_is_stored_encrypted_and_survives_a_restart_on_sqlite() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokens.db");
    let store = fresh_sqlite_store(&db);
    let http = Http::default();
    let gw = provider_gateway(&sb, &store).await;
    assert_eq!(ticket_of(&gw).await, None);
    let ticket = format!("ticket-{}", hex::encode(rand::random::<[u8; 8]>()));
    let r = post(&http, &gw, &event(&push(&ticket), APPID, TOKEN, now())).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "success"));
    assert_eq!(ticket_of(&gw).await.as_deref(), Some(ticket.as_str()));
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            r#"douyin_gateway_provider_events_total{event="PUSH",outcome="ok",provider="tp"}"#
        ),
        Some(1.0)
    );
    gw.running.stop().await;

    for suffix in ["", "-wal"] {
        if let Ok(bytes) = std::fs::read(format!("{}{suffix}", db.display())) {
            assert!(
                !bytes.windows(ticket.len()).any(|w| w == ticket.as_bytes()),
                "the ticket in the clear in tokens.db{suffix}"
            );
        }
    }
    // A restart with no new push still has it.
    let gw = provider_gateway(&sb, &store).await;
    assert_eq!(ticket_of(&gw).await.as_deref(), Some(ticket.as_str()));
    // A newer push replaces it, durably too.
    let newer = format!("{ticket}-2");
    let r = post(&http, &gw, &event(&push(&newer), APPID, TOKEN, now())).await;
    assert_eq!(r.status, 200);
    gw.running.stop().await;
    let gw = provider_gateway(&sb, &store).await;
    assert_eq!(ticket_of(&gw).await.as_deref(), Some(newer.as_str()));
    gw.running.stop().await;
}

#[tokio::test]
async fn forged_tampered_replayed_stale_and_misaddressed_events_change_nothing() {
    let sb = sandbox().await;
    let http = Http::default();
    let gw = provider_gateway(&sb, "[store]\nkind = \"memory\"\n").await;
    let first = "ticket-first";
    let good = event(&push(first), APPID, TOKEN, now());
    assert_eq!(post(&http, &gw, &good).await.status, 200);

    let mut refused = Vec::new();
    // Signed with another token.
    refused.push(event(&push("forged"), APPID, "not-the-token", now()));
    // Encrypt swapped after signing.
    let mut tampered = event(&push("tampered"), APPID, TOKEN, now());
    tampered["Encrypt"] = event(&push("tampered-2"), APPID, TOKEN, now())["Encrypt"].clone();
    refused.push(tampered);
    // The very event already received, again.
    refused.push(good.clone());
    // Correctly signed, but from 11 minutes ago, or 10 minutes ahead.
    refused.push(event(&push("stale"), APPID, TOKEN, now() - 660));
    refused.push(event(&push("ahead"), APPID, TOKEN, now() + 600));
    // Correctly signed and sealed, for another third-party app.
    refused.push(event(&push("other-app"), "tt_someone_else", TOKEN, now()));
    for (i, body) in refused.iter().enumerate() {
        let r = post(&http, &gw, body).await;
        assert_eq!(r.status, 401, "event {i}: {}", r.text());
        assert_eq!(r.gateway_error().as_deref(), Some("bad_signature"), "event {i}");
        assert!(!r.text().contains(TOKEN) && !r.text().contains(KEY), "event {i}");
        assert_eq!(
            ticket_of(&gw).await.as_deref(),
            Some(first),
            "event {i} changed the ticket"
        );
    }
    // Not JSON, or another provider: clean refusals.
    let r = http.post(&gw.admin("/providers/tp/events"), "not json").await;
    assert_eq!(r.status, 400);
    let r = http.post(&gw.admin("/providers/nobody/events"), good.to_string()).await;
    assert_eq!(r.status, 404);
    let m = http.metrics(&gw).await;
    for (outcome, n) in [
        ("bad_signature", 2.0),
        ("replayed", 1.0),
        ("stale", 2.0),
        ("bad_message", 2.0),
    ] {
        assert_eq!(
            metric(
                &m,
                &format!(r#"douyin_gateway_provider_events_total{{event="-",outcome="{outcome}",provider="tp"}}"#)
            ),
            Some(n),
            "{outcome}"
        );
    }
    assert!(!m.contains(first), "no ticket in the metrics");
    // An authorization event, verified, whose code the platform never issued: the exchange is
    // refused, nothing is stored, and the answer is not `success` (the platform delivers it
    // again). tests/authorizers.rs has the platform's own codes.
    let authorized = json!({"AppId": "tt_merchant_1", "TpAppId": APPID, "EventTime": "2026-12-05 12:00:00",
                            "Event": "AUTHORIZED", "AuthorizationCode": "code-1", "AuthorizationCodeExpiresIn": 3600});
    let r = post(&http, &gw, &event(&authorized, APPID, TOKEN, now())).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.gateway_error().as_deref(), Some("token_unavailable"));
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            r#"douyin_gateway_provider_events_total{event="AUTHORIZED",outcome="exchange_failed",provider="tp"}"#
        ),
        Some(1.0)
    );
    gw.running.stop().await;
}

#[tokio::test]
async fn the_event_url_is_on_the_public_listener_when_there_is_one() {
    let sb = sandbox().await;
    let http = Http::default();
    let secret = secret_file();
    let (listen, admin, public) = (bind().await, bind().await, bind().await);
    let public_addr = public.local_addr().unwrap();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .server(|s| s.public_listen = Some(public_addr.to_string()))
        .extra(&provider_table())
        .render();
    let (config, _) = douyin_gateway::config::Config::load_str(&text, "test config").unwrap();
    let running = douyin_gateway::server::start_on_all(config, None, listen, admin, Some(public))
        .await
        .unwrap();
    let gw = Gateway {
        running,
        secret,
        config_file: tempfile::NamedTempFile::new().unwrap(),
    };
    let public = public_addr;
    let body = event(&push("on-public"), APPID, TOKEN, now()).to_string();
    let r = http
        .post(&format!("http://{public}/providers/tp/events"), body.clone())
        .await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "success"));
    let r = http.post(&gw.admin("/providers/tp/events"), body).await;
    assert_eq!(r.status, 404, "served on the public listener only");
    gw.running.stop().await;
}

#[tokio::test]
async fn a_pushed_ticket_survives_a_restart_on_redis() {
    let redis = OwnRedis::start();
    let sb = sandbox().await;
    let http = Http::default();
    let var = format!("DG_TP_REDIS_{}", hex::encode(rand::random::<[u8; 6]>()));
    std::env::set_var(
        &var,
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>()),
    );
    let prefix = format!("dgtp:{}:", hex::encode(rand::random::<[u8; 6]>()));
    let store = format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\nencryption_key_env = \"{var}\"\n",
        redis.url
    );
    let gw = provider_gateway(&sb, &store).await;
    let ticket = format!("ticket-{}", hex::encode(rand::random::<[u8; 8]>()));
    let r = post(&http, &gw, &event(&push(&ticket), APPID, TOKEN, now())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    gw.running.stop().await;

    // Sealed in Redis: the value under the ticket's key does not hold the ticket.
    let mut c = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let raw: Vec<u8> = redis::cmd("GET")
        .arg(format!("{prefix}x:provider_ticket:tp"))
        .query(&mut c)
        .unwrap();
    assert!(!raw.is_empty());
    assert!(!raw.windows(ticket.len()).any(|w| w == ticket.as_bytes()));

    let gw = provider_gateway(&sb, &store).await;
    assert_eq!(ticket_of(&gw).await.as_deref(), Some(ticket.as_str()));
    gw.running.stop().await;
}

/// The sandbox's own sealing and signature (written apart from the gateway's) against the
/// gateway's event URL: a push is stored; a tampered one and a replay are refused and change
/// nothing; the sandbox issues a component token only for a ticket it pushed.
#[tokio::test]
async fn the_sandbox_platform_pushes_and_the_gateway_verifies() {
    let sb = sandbox().await;
    let http = Http::default();
    let gw = provider_gateway(&sb, "[store]\nkind = \"memory\"\n").await;
    let url = gw.admin("/providers/tp/events");
    let r = http.control(&sb, "/sandbox/provider/push", json!({"url": url})).await;
    assert_eq!(
        (r["status"].as_u64(), r["body"].as_str()),
        (Some(200), Some("success")),
        "{r}"
    );
    let ticket = r["ticket"].as_str().unwrap().to_string();
    assert_eq!(ticket_of(&gw).await.as_deref(), Some(ticket.as_str()));

    let r = http
        .control(&sb, "/sandbox/provider/push", json!({"url": url, "replay": true}))
        .await;
    assert_eq!(r["status"].as_u64(), Some(401), "{r}");
    let r = http
        .control(&sb, "/sandbox/provider/push", json!({"url": url, "tamper": true}))
        .await;
    assert_eq!(r["status"].as_u64(), Some(401), "{r}");
    let r = http
        .control(
            &sb,
            "/sandbox/provider/push",
            json!({"url": url, "timestamp_offset_secs": -700}),
        )
        .await;
    assert_eq!(r["status"].as_u64(), Some(401), "{r}");
    assert_eq!(
        ticket_of(&gw).await.as_deref(),
        Some(ticket.as_str()),
        "nothing changed"
    );
    for event in ["AUTHORIZED", "UPDATE_AUTHORIZED", "UNAUTHORIZED"] {
        let r = http
            .control(&sb, "/sandbox/provider/push", json!({"url": url, "event": event}))
            .await;
        assert_eq!(
            (r["status"].as_u64(), r["body"].as_str()),
            (Some(200), Some("success")),
            "{event}: {r}"
        );
    }

    // The sandbox's component token endpoint takes the tickets it pushed, and no other.
    let tp = |t: &str| {
        format!(
            "{}/openapi/v1/auth/tp/token?component_appid={APPID}&component_appsecret=sandbox-component-secret&component_ticket={t}",
            sb.url()
        )
    };
    let r = http.get(&tp(&ticket)).await.json();
    assert!(
        r["component_access_token"].as_str().is_some_and(|t| !t.is_empty()),
        "{r}"
    );
    assert_eq!(r["expires_in"], 7200);
    assert!(http.get(&tp("made-up")).await.json()["errno"].as_i64().is_some());
    gw.running.stop().await;
}

const COMPONENT_ROUTE: &str = "[[routes]]\nname = \"tp-info\"\npath = \"/api/tpapp/sandbox/component_info\"\n\
                               token = \"component\"\nprovider = \"tp\"\ninject = \"query\"\n";

async fn component_gateway(sb: &douyin_gateway::sandbox::Sandbox) -> Gateway {
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .routes_first(COMPONENT_ROUTE)
        .extra(&provider_table())
        .render();
    gateway_text(&text, secret).await
}

async fn call_component_api(http: &Http, gw: &Gateway) -> Resp {
    http.get(&gw.url("/api/tpapp/sandbox/component_info")).await
}

#[tokio::test]
async fn a_component_route_without_a_ticket_yet_is_a_clear_503() {
    let sb = sandbox().await;
    let http = Http::default();
    let gw = component_gateway(&sb).await;
    let r = call_component_api(&http, &gw).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.gateway_error().as_deref(), Some("token_unavailable"));
    let message = r.json()["gateway_error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("component_ticket") && message.contains("/providers/tp/events"),
        "{message}"
    );
    let s = http.get(&format!("{}/sandbox/provider", sb.url())).await.json();
    assert_eq!(s["token_calls"], 0, "no call to the platform without a ticket");
    gw.running.stop().await;
}

#[tokio::test]
async fn a_component_route_gets_one_token_from_the_ticket_for_many_concurrent_calls() {
    let sb = sandbox().await;
    let http = Http::default();
    let gw = component_gateway(&sb).await;
    let r = push_ticket(&http, &sb, &gw).await;
    assert_eq!(r["status"].as_u64(), Some(200), "{r}");
    let calls = (0..50).map(|_| call_component_api(&http, &gw));
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["err_no"], 0, "the sandbox took the token: {}", r.text());
    }
    let s = http.get(&format!("{}/sandbox/provider", sb.url())).await.json();
    assert_eq!(
        (s["token_calls"].as_u64(), s["tokens_issued"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            r#"douyin_gateway_token_fetches_total{app="tp",class="component",outcome="ok"}"#
        ),
        Some(1.0)
    );
    gw.running.stop().await;
}

#[tokio::test]
async fn the_component_token_is_kept_across_a_restart_on_sqlite() {
    let sb = sandbox().await;
    let http = Http::default();
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_sqlite_store(&dir.path().join("tokens.db"));
    let start = || async {
        let secret = secret_file();
        let text = TestConfig::standard(&sb.url(), secret.path())
            .store(&store)
            .routes_first(COMPONENT_ROUTE)
            .extra(&provider_table())
            .render();
        gateway_text(&text, secret).await
    };
    let gw = start().await;
    push_ticket(&http, &sb, &gw).await;
    assert_eq!(call_component_api(&http, &gw).await.status, 200);
    gw.running.stop().await;
    let gw = start().await;
    let r = call_component_api(&http, &gw).await;
    assert_eq!(
        (r.status.as_u16(), &r.json()["err_no"]),
        (200, &json!(0)),
        "{}",
        r.text()
    );
    let s = http.get(&format!("{}/sandbox/provider", sb.url())).await.json();
    assert_eq!(
        s["token_calls"], 1,
        "the stored component token was used after the restart: {s}"
    );
    gw.running.stop().await;
}

/// `inject = "query:component_access_token"`, as the V1 APIs take it: the caller's own
/// parameter of that name (any case or separator) is dropped, the rest kept.
#[tokio::test]
async fn a_v1_route_puts_the_component_token_in_its_named_query_parameter() {
    let sb = sandbox().await;
    let http = Http::default();
    let secret = secret_file();
    let route = COMPONENT_ROUTE.replace("inject = \"query\"", "inject = \"query:component_access_token\"");
    let text = TestConfig::standard(&sb.url(), secret.path())
        .routes_first(&route)
        .extra(&provider_table())
        .render();
    let gw = gateway_text(&text, secret).await;
    push_ticket(&http, &sb, &gw).await;
    for query in [
        "",
        "?x=1",
        "?component_access_token=forged&x=1",
        "?Component-Access-Token=forged",
        "?x=1;component_access_token=forged",
    ] {
        let r = http
            .get(&gw.url(&format!("/api/tpapp/sandbox/component_info{query}")))
            .await;
        assert_eq!(
            (r.status.as_u16(), &r.json()["err_no"]),
            (200, &json!(0)),
            "{query}: {}",
            r.text()
        );
    }
    gw.running.stop().await;
}

/// A component token with 30 minutes or less left is fetched again in the background on its next
/// use, the old one serving that call; one with more left is not.
#[tokio::test]
async fn a_component_token_is_fetched_again_once_under_30_minutes_remain() {
    let sb = sandbox().await;
    let http = Http::default();
    let gw = component_gateway(&sb).await;
    push_ticket(&http, &sb, &gw).await;
    let token_calls = || async {
        http.get(&format!("{}/sandbox/provider", sb.url())).await.json()["token_calls"]
            .as_u64()
            .unwrap()
    };
    // 31 minutes of life: used twice, fetched once.
    http.control(&sb, "/sandbox/provider", json!({"expires_in": 1860}))
        .await;
    for _ in 0..2 {
        assert_eq!(call_component_api(&http, &gw).await.json()["err_no"], 0);
    }
    assert_eq!(token_calls().await, 1);
    gw.running.stop().await;

    // 30 minutes of life: the second use starts a fetch, and is served with the token at hand.
    let gw = component_gateway(&sb).await;
    push_ticket(&http, &sb, &gw).await;
    http.control(&sb, "/sandbox/provider", json!({"expires_in": 1800}))
        .await;
    let before = token_calls().await;
    for _ in 0..2 {
        assert_eq!(call_component_api(&http, &gw).await.json()["err_no"], 0);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while token_calls().await < before + 2 {
        assert!(std::time::Instant::now() < deadline, "no second fetch");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.running.stop().await;
}

/// `douyin-gateway rekey` rewrites the sealed values too: a ticket stored under one key is read
/// under the next one alone, after a rekey with the first as previous.
#[tokio::test]
async fn rekey_rewrites_the_stored_ticket_under_the_new_key() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokens.db");
    let http = Http::default();
    let old = fresh_sqlite_store(&db);
    let gw = provider_gateway(&sb, &old).await;
    let r = post(&http, &gw, &event(&push("ticket-to-rekey"), APPID, TOKEN, now())).await;
    assert_eq!(r.status, 200);
    gw.running.stop().await;

    let old_var = old
        .lines()
        .find_map(|l| l.strip_prefix("encryption_key_env = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    let fresh = fresh_sqlite_store(&db);
    let rotated = format!("{fresh}previous_encryption_key_env = \"{old_var}\"\n");
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .store(&rotated)
        .extra(&provider_table())
        .render();
    rekey(&text);
    let gw = provider_gateway(&sb, &fresh).await;
    assert_eq!(ticket_of(&gw).await.as_deref(), Some("ticket-to-rekey"));
    gw.running.stop().await;
}
