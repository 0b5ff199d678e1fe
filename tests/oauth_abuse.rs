//! The authorization flow under abuse by anyone who can reach it (no key): callbacks that bring
//! no code, an `error`, a forged state or a made-up code remember nothing; made-up codes reach the
//! platform no faster than `oauth.max_exchanges_per_sec`; one address past its rate gets 429
//! while others are served. All with the default `[oauth]` settings (20 exchanges/s for the
//! gateway, 5 requests/s with a burst of 20 per address).
//!
//! Other client addresses are other loopback addresses (127.0.0.2…), which Linux accepts as a
//! connection's source without configuration.

mod common;

use common::*;
use http::Method;
use std::time::Instant;

/// The `state` parameter of a URL.
fn state_of(url: &str) -> String {
    form_urlencoded::parse(url.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned()
}

#[tokio::test]
async fn callbacks_without_a_code_with_an_error_or_with_a_forged_state_remember_nothing() {
    let sb = sandbox().await;
    let gw = user_gateway(&sb).await;
    let http = Http::default();
    let oauth = &gw.running.admin.oauth;
    let cb = |q: String| gw.admin(&format!("/oauth/callback?{q}"));
    for i in 0..4 {
        // The user declined: no code...
        let r = http
            .send(Method::GET, &cb(format!("state={}", oauth.issue("main"))), &[], "")
            .await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("did not consent"), "{}", r.text());
        // ...or the platform's `error`, even beside a code.
        let q = format!(
            "state={}&error=access_denied&error_description=denied&code=c{i}",
            oauth.issue("main")
        );
        let r = http.send(Method::GET, &cb(q), &[], "").await;
        assert_eq!(r.status, 400, "{}", r.text());
        // A forged state, and a real one with its signature broken.
        let r = http
            .send(Method::GET, &cb(format!("state=forged{i}&code=c")), &[], "")
            .await;
        assert_eq!(r.status, 400, "{}", r.text());
        let mut tampered = oauth.issue("main");
        let last = if tampered.ends_with('A') { "B" } else { "A" };
        tampered.replace_range(tampered.len() - 1.., last);
        let r = http
            .send(Method::GET, &cb(format!("state={tampered}&code=c")), &[], "")
            .await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
    assert_eq!(oauth.remembered(), 0, "no failed callback is remembered");
    assert_eq!(
        n(&http.stats(&sb).await["access_token_calls"]),
        0,
        "no code went to the platform"
    );
    // A real user afterwards (from an address of their own).
    let page = Http::from_address("127.0.0.2").authorize(&gw, "main").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(oauth.remembered(), 1, "the one state whose code was exchanged");
}

#[tokio::test]
async fn a_state_whose_first_callback_had_no_code_still_works_with_one() {
    let sb = sandbox().await;
    let gw = user_gateway(&sb).await;
    let http = Http::default();
    let r = http
        .send(Method::GET, &gw.admin("/oauth/authorize?app=main"), &[], "")
        .await;
    let consent = r.headers["location"].to_str().unwrap().to_string();
    let r = http.send(Method::GET, &consent, &[], "").await;
    let callback = r.headers["location"].to_str().unwrap().to_string();
    // Someone who saw the state (or a browser that lost the code) calls back without the code.
    let state = state_of(&callback);
    let r = http
        .send(
            Method::GET,
            &gw.admin(&format!("/oauth/callback?state={state}")),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // The user's own callback still completes: the state was not spent.
    let r = http.send(Method::GET, &callback, &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("Authorized"), "{}", r.text());
    // And now it is: a replay is refused, and the platform saw one exchange.
    let r = http.send(Method::GET, &callback, &[], "").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("already used"), "{}", r.text());
    assert_eq!(n(&http.stats(&sb).await["access_token_calls"]), 1);
    assert_eq!(gw.running.admin.oauth.remembered(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn made_up_codes_reach_the_platform_no_faster_than_the_exchange_budget() {
    let sb = sandbox().await;
    let gw = user_gateway(&sb).await;
    // 10 addresses, 20 callbacks each, 4 connections per address (the admin listener holds 64):
    // each address stays within its own burst, so only the gateway's exchange budget (at most 20
    // in any one second) holds them back.
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for a in 1..=10 {
        let http = Http::from_address(&format!("127.0.0.{a}"));
        for c in 0..4 {
            let urls: Vec<String> = (0..5)
                .map(|i| {
                    gw.admin(&format!(
                        "/oauth/callback?state={}&code=made-up-{a}-{c}-{i}",
                        gw.running.admin.oauth.issue("main")
                    ))
                })
                .collect();
            let http = http.clone();
            tasks.spawn(async move {
                let mut answers = Vec::new();
                for url in urls {
                    answers.push(http.send(Method::GET, &url, &[], "").await);
                }
                answers
            });
        }
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(answers) = tasks.join_next().await {
        for r in answers.unwrap() {
            if r.status == 429 {
                assert_eq!(r.headers["x-gateway-error"], "rate_limited");
                let after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(after >= 1, "Retry-After: {after}");
                assert!(r.text().contains("Too many"), "{}", r.text());
            }
            *statuses.entry(r.status.as_u16()).or_insert(0u32) += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let exchanges = n(&http_stats(&sb).await["access_token_calls"]);
    let bound = 20 * elapsed.ceil() as u64;
    assert!(
        exchanges <= bound,
        "{exchanges} code exchanges in {elapsed:.2} s: at most {bound} (20 in any one second)"
    );
    assert!(statuses.keys().all(|s| [400, 429].contains(s)), "{statuses:?}");
    assert_eq!(
        u64::from(statuses.get(&400).copied().unwrap_or(0)),
        exchanges,
        "every refused code was one exchange"
    );
    assert_eq!(
        gw.running.admin.oauth.remembered(),
        0,
        "refused codes are not remembered"
    );
}

async fn http_stats(sb: &douyin_gateway::sandbox::Sandbox) -> serde_json::Value {
    Http::default().stats(sb).await
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_past_its_rate_gets_429_while_another_is_served() {
    let sb = sandbox().await;
    let gw = user_gateway(&sb).await;
    let flooder = Http::from_address("127.0.0.3");
    // 80 callbacks from one address on 10 connections (the admin listener holds 16 from one
    // address): past its burst of 20.
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..10 {
        let http = flooder.clone();
        let urls: Vec<String> = (0..8)
            .map(|i| gw.admin(&format!("/oauth/callback?state=forged{c}x{i}")))
            .collect();
        tasks.spawn(async move {
            let mut answers = Vec::new();
            for url in urls {
                answers.push(http.send(Method::GET, &url, &[], "").await);
            }
            answers
        });
    }
    let mut limited = 0;
    for r in tasks.join_all().await.into_iter().flatten() {
        match r.status.as_u16() {
            400 => {}
            429 => {
                limited += 1;
                assert_eq!(r.headers["x-gateway-error"], "rate_limited");
                assert!(r.headers.contains_key("retry-after"));
                assert!(
                    r.headers["content-type"].to_str().unwrap().starts_with("text/html"),
                    "a page for a browser"
                );
                let after = r.headers["retry-after"].to_str().unwrap();
                assert!(
                    r.text()
                        .contains(&format!("<meta http-equiv=\"refresh\" content=\"{after}\">")),
                    "which the browser loads again after Retry-After: {}",
                    r.text()
                );
            }
            s => panic!("{s}: {}", r.text()),
        }
    }
    assert!(limited > 0, "the address went past its rate");
    // A client that asks for JSON gets the contract's error; authorize is limited as well.
    let mut seen_json = false;
    for _ in 0..100 {
        let r = flooder
            .send(
                Method::GET,
                &gw.admin("/oauth/callback?state=forged"),
                &[("accept", "application/json")],
                "",
            )
            .await;
        if r.status == 429 {
            assert_eq!(r.gateway_error().as_deref(), Some("rate_limited"));
            assert!(r.headers.contains_key("retry-after"));
            seen_json = true;
            break;
        }
    }
    assert!(seen_json);
    let mut authorize_limited = false;
    for _ in 0..100 {
        let r = flooder
            .send(Method::GET, &gw.admin("/oauth/authorize?app=main"), &[], "")
            .await;
        if r.status == 429 {
            authorize_limited = true;
            break;
        }
        assert_eq!(r.status, 302);
    }
    assert!(authorize_limited, "/oauth/authorize counts too");
    // Another address is served meanwhile: a whole flow, and the user's first call.
    let user = Http::from_address("127.0.0.4");
    let page = user.authorize(&gw, "main").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let open_id = open_id_of(&page.text());
    let r = user
        .get(&gw.url(&format!("/api/douyin/v1/video/video_list/?open_id={open_id}")))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}
