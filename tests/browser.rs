//! The authorization flow in a real browser: headless Chromium follows the
//! gateway's redirect to the platform's consent page and back to the callback.
//! Needs Debian's Chromium: reported as ignored where the build found none, required when
//! `CI=true` (`.ci/run` installs it).

mod common;

use common::*;
use http::Method;

#[cfg_attr(
    not(has_chromium),
    ignore = "needs Chromium: apt-get install chromium (CI installs it), then touch build.rs"
)]
#[tokio::test(flavor = "multi_thread")]
async fn a_browser_completes_the_authorization_flow() {
    let bin = chromium();
    let sb = sandbox().await;
    let gw = user_gateway(&sb).await;
    let dom = headless(&bin, &["--dump-dom"], &gw.admin("/oauth/authorize?app=main")).await;
    assert!(dom.contains("<h1>Authorized</h1>"), "{dom}");
    let open_id = open_id_of(&dom);
    let r = Http::default()
        .get(&gw.url(&format!("/api/douyin/v1/video/video_list/?open_id={open_id}")))
        .await;
    assert_eq!(r.json()["data"]["error_code"], 0, "{}", r.text());

    // A callback with a state already spent, loaded again: the browser sees the refusal, and the
    // code is not taken to the platform a second time. (The flow is walked by hand up to the
    // callback, for its URL with the state the gateway issued.)
    let http = Http::default();
    let r = http
        .send(Method::GET, &gw.admin("/oauth/authorize?app=main"), &[], "")
        .await;
    let consent = r.headers["location"].to_str().unwrap().to_string();
    let r = http.send(Method::GET, &consent, &[], "").await;
    let callback = r.headers["location"].to_str().unwrap().to_string();
    assert!(callback.starts_with(&gw.admin("/oauth/callback?")), "{callback}");
    let dom = headless(&bin, &["--dump-dom"], &callback).await;
    assert!(dom.contains("<h1>Authorized</h1>"), "{dom}");
    let exchanges = n(&http.stats(&sb).await["access_token_calls"]);
    let dom = headless(&bin, &["--dump-dom"], &callback).await;
    assert!(dom.contains("Authorization failed"), "{dom}");
    assert!(dom.contains("already used state"), "{dom}");
    assert_eq!(
        n(&http.stats(&sb).await["access_token_calls"]),
        exchanges,
        "the spent state stopped the replay before any exchange"
    );
}
