//! Other fetchers and broken routes: a competing fetcher that keeps killing the app's
//! client_token causes no outage; a route whose API rejects every token of its class costs a few
//! fetches and is named; the per-app fetch budget is never exceeded.

mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A call the platform accepted: HTTP 200 and a zero code in its envelope.
fn accepted(r: &Resp) -> bool {
    r.status == 200 && r.json()["extra"]["error_code"].as_i64() == Some(0) && r.json()["data"]["error_code"] == 0
}

/// Steady load on `url` from `workers` callers until `stop`; returns (calls, accepted).
fn load(http: &Http, url: String, workers: usize, stop: Arc<AtomicU64>) -> tokio::task::JoinSet<(u64, u64)> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (http, url, stop) = (http.clone(), url.clone(), Arc::clone(&stop));
        set.spawn(async move {
            let (mut calls, mut ok) = (0, 0);
            while stop.load(Ordering::Acquire) == 0 {
                let r = http.get(&url).await;
                calls += 1;
                ok += accepted(&r) as u64;
            }
            (calls, ok)
        });
    }
    set
}

#[tokio::test(flavor = "multi_thread")]
async fn a_competing_fetcher_revoking_every_few_seconds_causes_no_outage() {
    let sb = sandbox().await;
    let gw = gateway(&sb).await;
    let http = Http::default();
    assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
    let stop = Arc::new(AtomicU64::new(0));
    let mut workers = load(&http, gw.url("/js/getticket/"), 4, Arc::clone(&stop));
    // Revocations 1.5 to 2.5 s apart: all well inside the old 10 s storm guard.
    let revocations = 8;
    let fetches_before = n(&http.stats(&sb).await["client_token_calls"]);
    for i in 0..revocations {
        tokio::time::sleep(Duration::from_millis(1500 + (i % 3) * 500)).await;
        http.control(&sb, "/sandbox/revoke", json!({"client_key": CLIENT_KEY}))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(1, Ordering::Release);
    let (mut calls, mut ok) = (0, 0);
    while let Some(r) = workers.join_next().await {
        let (c, o) = r.unwrap();
        calls += c;
        ok += o;
    }
    let fetches = n(&http.stats(&sb).await["client_token_calls"]) - fetches_before;
    let rate = ok as f64 / calls as f64;
    println!(
        "competing fetcher: {ok} of {calls} calls accepted ({:.3}%), {fetches} fetches for {revocations} revocations",
        rate * 100.0
    );
    assert!(calls > 100, "enough load to see an outage: {calls}");
    assert!(rate >= 0.995, "{ok} of {calls} calls succeeded ({:.2}%)", rate * 100.0);
    assert!(
        fetches <= 2 * revocations,
        "{fetches} fetches for {revocations} revocations"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_whose_api_rejects_every_token_costs_few_fetches_and_is_named() {
    let sb = sandbox().await;
    // A user API configured as a client route: the platform rejects every client_token there.
    let extra = "[[routes]]\nname = \"misrouted\"\npath = \"/video/list/\"\ntoken = \"client\"\ninject = \"query\"\n";
    let gw = gateway_with(&sb, |_| {}, extra).await;
    let http = Http::default();
    assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
    let stop = Arc::new(AtomicU64::new(0));
    let mut good = load(&http, gw.url("/js/getticket/"), 2, Arc::clone(&stop));
    let mut bad = load(&http, gw.url("/video/list/?open_id=u1"), 2, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(1, Ordering::Release);
    let (mut calls, mut ok) = (0, 0);
    while let Some(r) = good.join_next().await {
        let (c, o) = r.unwrap();
        calls += c;
        ok += o;
    }
    let mut bad_calls = 0;
    while let Some(r) = bad.join_next().await {
        let (c, o) = r.unwrap();
        bad_calls += c;
        assert_eq!(o, 0, "the misrouted API never accepts");
    }
    let fetches = n(&http.stats(&sb).await["client_token_calls"]);
    assert!(bad_calls > 50, "{bad_calls}");
    assert!(
        fetches <= 4,
        "{fetches} fetches for {bad_calls} rejected calls (the first, and one more to be sure)"
    );
    assert!(
        ok as f64 / calls as f64 >= 0.999,
        "the other route on the same token: {ok} of {calls}"
    );
    let m = http.metrics(&gw).await;
    let named = metric(
        &m,
        "douyin_gateway_route_rejects_fresh_tokens_total{route=\"misrouted\"}",
    );
    assert!(named.is_some_and(|v| v >= 1.0), "{m}");
    assert_eq!(
        metric(&m, "douyin_gateway_route_rejects_fresh_tokens_total{route=\"ticket\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn the_per_app_fetch_budget_is_never_exceeded() {
    let sb = sandbox().await;
    let secret = secret_file();
    let text = TestConfig::new(&sb.url(), secret.path())
        .tokens(|t| {
            t.backoff_initial_ms = 100;
            t.backoff_max_ms = 400;
            t.client_token_fetch_budget = 3;
        })
        .render();
    let gw = gateway_text(&text, secret).await;
    let http = Http::default();
    let started = Instant::now();
    let mut refused = None;
    for _ in 0..6 {
        let r = http.get(&gw.url("/js/getticket/")).await;
        if r.status == 503 {
            refused = Some(r);
            break;
        }
        assert!(accepted(&r), "{}", r.text());
        http.control(&sb, "/sandbox/revoke", json!({"client_key": CLIENT_KEY}))
            .await;
    }
    let r = refused.expect("the fourth fetch is refused");
    assert_eq!(r.gateway_error().as_deref(), Some("token_unavailable"));
    let message = r.json()["gateway_error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("budget"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(300));
    assert_eq!(n(&http.stats(&sb).await["client_token_calls"]), 3);
    let m = http.metrics(&gw).await;
    assert!(
        metric(
            &m,
            "douyin_gateway_token_fetches_total{app=\"main\",class=\"client\",outcome=\"budget_exhausted\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );
}
