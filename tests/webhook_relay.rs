//! `[[webhook_forward]]`: the platform's one webhook URL relayed to backends. The sandbox sends
//! signed events as the platform does, retrying (at once, not after the platform's 5 s) an event
//! whose delivery was not answered 2xx; its receiver stands in for the backends.

mod common;

use common::*;
use http::Method;
use serde_json::{json, Value};

const RELAY_KEY_ENV: &str = "DG_TEST_RELAY_KEY";
const RELAY_KEY: &str = "relay-hmac-key";

/// Two relay targets on the sandbox's receiver (`/a` signed, `/b` only `im_receive_msg` and
/// `unauthorize`), on a gateway whose app has a redirect_uri (for users to revoke).
async fn relay_gateway(sb: &douyin_gateway::sandbox::Sandbox) -> Gateway {
    std::env::set_var(RELAY_KEY_ENV, RELAY_KEY);
    let s = sb.url();
    gateway_knowing_admin(|admin, secret| {
        TestConfig::new(&s, secret)
            .redirect_to(admin)
            .app("scopes = [\"user_info\", \"video.list.bytes\"]")
            .extra(&format!(
                r#"
[[webhook_forward]]
url = "{s}/sandbox/receiver/a"
secret_env = "{RELAY_KEY_ENV}"
timeout_ms = 2000

[[webhook_forward]]
url = "{s}/sandbox/receiver/b"
events = ["im_receive_msg", "unauthorize"]
apps = ["main"]
"#
            ))
            .render()
    })
    .await
}

fn statuses(sent: &Value) -> Vec<u64> {
    sent["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| n(&a["status"]))
        .collect()
}

#[tokio::test]
async fn a_target_that_answers_500_gets_the_event_on_the_platforms_retry() {
    let sb = sandbox().await;
    let gw = relay_gateway(&sb).await;
    let http = Http::default();
    let webhook = gw.admin("/webhooks/douyin");
    http.control(&sb, "/sandbox/receiver_faults", json!({"fail_next": 1}))
        .await;
    let sent = http
        .control(&sb, "/sandbox/webhook", json!({"url": webhook, "event": "message"}))
        .await;
    // The first delivery: one target answered 500, so the platform hears 502 and delivers again.
    assert_eq!(statuses(&sent), [502, 200], "{sent}");
    let got = received(&http, &sb).await;
    assert_eq!(got.len(), 4, "both targets, both deliveries: {got:?}");
    let msg_id = sent["msg_id"].as_str().unwrap();
    for r in &got {
        assert_eq!(r["headers"]["msg-id"], msg_id);
        assert_eq!(r["headers"]["x-gateway-app"], "main");
        assert_eq!(r["headers"]["x-gateway-event"], "im_receive_msg");
        assert!(r["headers"]["x-douyin-signature"].is_string());
        let event: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert_eq!(event["event"], "im_receive_msg");
        match r["path"].as_str().unwrap() {
            "/sandbox/receiver/a" => assert_eq!(
                r["headers"]["x-gateway-signature"],
                hmac_hex(RELAY_KEY, r["body"].as_str().unwrap())
            ),
            _ => assert!(r["headers"].get("x-gateway-signature").is_none()),
        }
    }
    assert_eq!(got.iter().filter(|r| r["status"] == 500).count(), 1);
    // Every target took it: a further delivery is acknowledged and relayed to none.
    let again = http
        .control(
            &sb,
            "/sandbox/webhook",
            json!({"url": webhook, "event": "message", "msg_id": msg_id}),
        )
        .await;
    assert_eq!(statuses(&again), [200]);
    assert_eq!(
        serde_json::from_str::<Value>(again["attempts"][0]["body"].as_str().unwrap()).unwrap()["duplicate"],
        true
    );
    assert_eq!(received(&http, &sb).await.len(), 4);
    let m = http.metrics(&gw).await;
    let port = sb.addr.port();
    let count = |t: usize, outcome: &str| {
        metric(
            &m,
            &format!("douyin_gateway_webhook_forwards_total{{outcome=\"{outcome}\",target=\"{t}:127.0.0.1:{port}\"}}"),
        )
        .unwrap()
    };
    assert_eq!(count(0, "delivered") + count(1, "delivered"), 3.0);
    assert_eq!(count(0, "refused") + count(1, "refused"), 1.0);
    assert_eq!(count(0, "failed") + count(1, "failed"), 0.0);
}

#[tokio::test]
async fn unauthorize_is_still_acted_on_once_while_relayed() {
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        consent_open_id: Some("_000relayed-user".into()),
        ..Default::default()
    })
    .await;
    let gw = relay_gateway(&sb).await;
    let http = Http::default();
    let open_id = open_id_of(&http.authorize(&gw, "main").await.text());
    let video = gw.url(&format!("/api/douyin/v1/video/video_list/?open_id={open_id}"));
    assert_eq!(http.get(&video).await.status, 200);
    http.control(&sb, "/sandbox/receiver_faults", json!({"fail_next": 1}))
        .await;
    let sent = http
        .control(
            &sb,
            "/sandbox/webhook",
            json!({"url": gw.admin("/webhooks/douyin"), "event": "unauthorize", "from_user_id": open_id}),
        )
        .await;
    assert_eq!(statuses(&sent), [502, 200], "{sent}");
    // Acted on at the first delivery; the retry only relays again.
    let answer: Value = serde_json::from_str(sent["attempts"][1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(answer["relayed_again"], true, "{answer}");
    let r = http.get(&video).await;
    assert_eq!(
        r.gateway_error().as_deref(),
        Some("user_authorization_required"),
        "{}",
        r.text()
    );
    // The user authorizes again; the platform's retry of the old event does not drop them again.
    assert_eq!(open_id_of(&http.authorize(&gw, "main").await.text()), open_id);
    let again = http
        .control(
            &sb,
            "/sandbox/webhook",
            json!({"url": gw.admin("/webhooks/douyin"), "event": "unauthorize", "from_user_id": open_id,
                "msg_id": sent["msg_id"]}),
        )
        .await;
    assert_eq!(statuses(&again), [200]);
    assert_eq!(http.get(&video).await.status, 200, "still authorized");
    let got = received(&http, &sb).await;
    assert!(got.iter().all(|r| r["headers"]["x-gateway-event"] == "unauthorize"));
    assert_eq!(got.len(), 4, "{got:?}");
}

#[tokio::test]
async fn targets_get_only_their_events_and_nothing_unverified() {
    let sb = sandbox().await;
    let gw = relay_gateway(&sb).await;
    let http = Http::default();
    let webhook = gw.admin("/webhooks/douyin");
    for kind in ["comment", "video", "trade"] {
        let sent = http
            .control(&sb, "/sandbox/webhook", json!({"url": webhook, "event": kind}))
            .await;
        assert_eq!(statuses(&sent), [200], "{kind}: {sent}");
    }
    let got = received(&http, &sb).await;
    let events: Vec<_> = got
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap(),
                r["headers"]["x-gateway-event"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("/sandbox/receiver/a", "item_comment_reply"),
            ("/sandbox/receiver/a", "create_video"),
            ("/sandbox/receiver/a", "life_trade_order_notify")
        ]
    );
    // verify_webhook is the gateway's to answer, relayed to no default target.
    let sent = http
        .control(
            &sb,
            "/sandbox/webhook",
            json!({"url": webhook, "event": "verify_webhook"}),
        )
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(sent["attempts"][0]["body"].as_str().unwrap()).unwrap()["challenge"],
        12345
    );
    // An event with a wrong signature: 401, relayed to nobody.
    let event = json!({"event": "im_receive_msg", "client_key": CLIENT_KEY, "content": "{}"}).to_string();
    let r = http
        .send(
            Method::POST,
            &webhook,
            &[("x-douyin-signature", "0123"), ("msg-id", "forged")],
            event,
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(received(&http, &sb).await.len(), 3);
}
