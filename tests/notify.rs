//! `[[notify]]`: signed JSON events to a receiver, for users about to drop off and app tokens
//! failing, from a bounded queue that a hung receiver fills without slowing a single call.

mod common;

use common::*;
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY_VAR: &str = "DG_TEST_NOTIFY_KEY";
const KEY: &str = "notify-signing-key";

/// What the receiver got: each event's JSON, and whether its signature verified.
type Got = Arc<Mutex<Vec<(Value, bool)>>>;

/// A receiver answering on `listener`; aborting the handle closes every connection it holds
/// (the listener stays bound: nothing else can take its port).
fn receiver(listener: Arc<tokio::net::TcpListener>, got: Got) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let got = Arc::clone(&got);
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let got = Arc::clone(&got);
                    async move {
                        let sig = req
                            .headers()
                            .get("x-gateway-signature")
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
                        mac.update(&body);
                        let ok = sig == format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                        got.lock().unwrap().push((serde_json::from_slice(&body).unwrap(), ok));
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"ok"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

/// A receiver that hangs: it takes connections on `listener` and never reads or answers; aborting
/// the handle closes them unread.
fn hung(listener: Arc<tokio::net::TcpListener>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    })
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn names(got: &Got) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .map(|(v, _)| v["event"].as_str().unwrap().to_string())
        .collect()
}

async fn user_call(http: &Http, gw: &Gateway, open_id: &str) -> Resp {
    http.get(&gw.url(&format!(
        "/api/douyin/v1/video/video_list/?open_id={open_id}&cursor=0&count=10"
    )))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_signed_and_a_hung_receiver_fills_a_bounded_queue_without_slowing_calls() {
    std::env::set_var(KEY_VAR, KEY);
    let listener = Arc::new(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let addr = listener.local_addr().unwrap();
    let got: Got = Default::default();
    let server = receiver(Arc::clone(&listener), Arc::clone(&got));

    let sb = sandbox().await;
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .tokens(|t| t.fetch_failing_after_secs = 0)
        .extra(&format!(
            "[[notify]]\nname = \"ops\"\nurl = \"http://{addr}/hook\"\nsecret_env = \"{KEY_VAR}\"\nqueue = 3\nmax_attempts = 1000\ntimeout_ms = 1000\n"
        ))
        .render();
    let gw = gateway_text(&text, secret).await;
    let http = Http::default();

    // token.evicted_early and token.fetch_failing: the platform revokes the client_token while its
    // token endpoint is failing; then token.fetch_recovered once it answers again.
    assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
    http.control(&sb, "/sandbox/faults", json!({"token_endpoint": "status500"}))
        .await;
    http.control(&sb, "/sandbox/revoke", json!({"client_key": CLIENT_KEY}))
        .await;
    assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 503);
    http.control(&sb, "/sandbox/faults", json!({"token_endpoint": "none"}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get(&gw.url("/js/getticket/")).await.status != 200 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // user.reauthorization_required: a user whose refresh_token the platform refuses.
    import_dead_user(&http, &gw, "ou_dead0").await;
    assert_eq!(user_call(&http, &gw, "ou_dead0").await.status, 401);

    wait_until("five events", || got.lock().unwrap().len() >= 5).await;
    assert_eq!(
        names(&got),
        [
            "token.evicted_early",
            "token.fetch_failing",
            "token.fetch_recovered",
            // The user's token was rejected long before its expiry, then their refresh refused.
            "token.evicted_early",
            "user.reauthorization_required"
        ]
    );
    {
        let got = got.lock().unwrap();
        assert!(got.iter().all(|(_, ok)| *ok), "every signature verifies");
        let failing = &got[1].0;
        assert_eq!(
            (
                failing["app"].as_str(),
                failing["class"].as_str(),
                failing["outcome"].as_str()
            ),
            (Some("main"), Some("client"), Some("http_status"))
        );
        assert_eq!(got[2].0["since"], failing["since"]);
        assert_eq!(
            (got[3].0["class"].as_str(), got[3].0["open_id"].as_str()),
            (Some("user"), Some("ou_dead0"))
        );
        assert_eq!(got[0].0["open_id"], Value::Null);
        let user = &got[4].0;
        assert_eq!(
            (user["app"].as_str(), user["open_id"].as_str()),
            (Some("main"), Some("ou_dead0"))
        );
        assert!(user["reason"].as_str().unwrap().contains("10010"), "{user}");
        let ids: std::collections::HashSet<&str> = got.iter().map(|(v, _)| v["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 5, "each event has its own id");
        let all = serde_json::to_string(&*got).unwrap();
        assert!(
            !all.contains("act.") && !all.contains("rft.") && !all.contains("clt."),
            "no token: {all}"
        );
    }

    // The receiver hangs: it takes connections and never answers. Ten more users drop off (two
    // events each): their calls answer at once, one event waits in the sender, three in the
    // queue, and the other sixteen are dropped and counted.
    server.abort();
    let _ = server.await;
    let hanging = hung(Arc::clone(&listener));
    for i in 1..=10 {
        import_dead_user(&http, &gw, &format!("ou_dead{i}")).await;
        // Emitting never waits for the receiver: each call answers in well under the 1 s a
        // delivery may take (a call that waited for room in the queue would wait until the
        // receiver came back).
        let started = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(5), user_call(&http, &gw, &format!("ou_dead{i}")))
            .await
            .unwrap_or_else(|_| panic!("call {i} waited for the hung receiver"));
        assert_eq!(r.status, 401);
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "call {i} took {took:?}");
    }
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            "douyin_gateway_notify_events_total{outcome=\"dropped\",receiver=\"ops\"}"
        ),
        Some(16.0),
        "{m}"
    );
    assert_eq!(metric(&m, "douyin_gateway_notify_queue{receiver=\"ops\"}"), Some(4.0));

    // It comes back on the same listener: the four held events arrive, retried with back-off.
    hanging.abort();
    let _ = hanging.await;
    let _server = receiver(Arc::clone(&listener), Arc::clone(&got));
    wait_until("the held events", || got.lock().unwrap().len() >= 9).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_now = got.lock().unwrap().clone();
    let later: Vec<(&str, &str)> = got_now[5..]
        .iter()
        .map(|(v, _)| (v["event"].as_str().unwrap(), v["open_id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        later,
        [
            ("token.evicted_early", "ou_dead1"),
            ("user.reauthorization_required", "ou_dead1"),
            ("token.evicted_early", "ou_dead2"),
            ("user.reauthorization_required", "ou_dead2")
        ],
        "oldest first, none twice"
    );
    assert!(got_now.iter().all(|(_, ok)| *ok));
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            "douyin_gateway_notify_events_total{outcome=\"delivered\",receiver=\"ops\"}"
        ),
        Some(9.0)
    );
    assert_eq!(metric(&m, "douyin_gateway_notify_queue{receiver=\"ops\"}"), Some(0.0));
}

/// A user whose consent runs out within 7 days is announced once, before their calls fail.
#[tokio::test(flavor = "multi_thread")]
async fn a_user_entering_the_seven_day_window_is_announced_once() {
    std::env::set_var(KEY_VAR, KEY);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Got = Default::default();
    let _server = receiver(Arc::new(listener), Arc::clone(&got));
    // The platform's refresh_tokens live 3 days here and the gateway may not renew them.
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        refresh_token_ttl: 3 * 24 * 3600,
        ..Default::default()
    })
    .await;
    let upstream = sb.url();
    let gw = gateway_knowing_admin(|admin, secret| {
        TestConfig::new(&upstream, secret)
            .redirect_to(admin)
            .tokens(|t| { t.max_renewals = 0; t.renew_before_secs = 3600; t.maintain_interval_ms = 100; })
            .extra(&format!(
                "[[notify]]\nurl = \"http://{addr}/hook\"\nsecret_env = \"{KEY_VAR}\"\nevents = [\"user.reauthorization_due\"]\n"
            ))
            .render()
    })
    .await;
    let http = Http::default();
    let page = http.authorize(&gw, "main").await;
    let open_id = open_id_of(&page.text());
    wait_until("the due event", || !got.lock().unwrap().is_empty()).await;
    // Several more maintenance rounds: still one event.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let (e, ok) = &got[0];
    assert!(ok);
    assert_eq!(e["event"], "user.reauthorization_due");
    assert_eq!(
        (e["app"].as_str(), e["open_id"].as_str()),
        (Some("main"), Some(open_id.as_str()))
    );
    let by = e["reauthorize_by"].as_u64().unwrap();
    let in_3_days = douyin_gateway::token::unix_now() + 3 * 24 * 3600;
    assert!(by.abs_diff(in_3_days) < 60, "{by} vs {in_3_days}");
    // The user's calls still work: this is a warning, not a failure.
    let r = user_call(&http, &gw, &open_id).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn check_refuses_unknown_events_a_missing_key_and_a_url_that_is_not_http() {
    let secret = secret_file();
    // The errors `[[notify]]` gets, as (key, message).
    let errors = |notify: &str| -> Vec<(String, String)> {
        let text = TestConfig::new("http://127.0.0.1:9", secret.path())
            .extra(notify)
            .render();
        match douyin_gateway::config::Config::load_str(&text, "t") {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems
                .into_iter()
                .filter(|p| p.severity == douyin_gateway::config::Severity::Error)
                .map(|p| (p.key, p.message))
                .collect(),
        }
    };
    let got = errors(
        "[[notify]]\nurl = \"http://127.0.0.1:1/\"\nsecret_env = \"DG_TEST_NOTIFY_UNSET\"\nevents = [\"user.gone\"]\n",
    );
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["notify[0].secret_env", "notify[0].events"], "{got:?}");
    assert!(got[0].1.contains("DG_TEST_NOTIFY_UNSET is not set"), "{got:?}");
    assert!(got[1].1.contains("unknown event \"user.gone\""), "{got:?}");
    for url in ["ftp://x/", "/hook", "http:///hook"] {
        let got = errors(&format!("[[notify]]\nurl = \"{url}\"\nsecret_env = \"PATH\"\n"));
        assert_eq!(
            got,
            [(
                "notify[0].url".to_string(),
                "must be an http:// or https:// URL".to_string()
            )],
            "{url}"
        );
    }
    for url in ["http://127.0.0.1:1/hook", "https://ops.example/hook"] {
        let got = errors(&format!("[[notify]]\nurl = \"{url}\"\nsecret_env = \"PATH\"\n"));
        assert_eq!(got, [], "{url}");
    }
}
