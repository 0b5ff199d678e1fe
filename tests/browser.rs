//! The authorization flow in a real browser: headless Chromium follows the
//! gateway's redirect to the platform's consent page and back to the callback.
//! Needs Debian's Chromium: skipped with a notice on a developer machine
//! without it, required when `CI=true` (`.ci/run` installs it).

mod common;

use common::*;

#[cfg_attr(
    not(has_chromium),
    ignore = "needs Chromium: apt-get install chromium (CI installs it), then touch build.rs"
)]
#[tokio::test(flavor = "multi_thread")]
async fn a_browser_completes_the_authorization_flow() {
    let Some(bin) = chromium() else { return };
    let sb = sandbox().await;
    let gw = user_gateway(&sb, "", "").await;
    let dom = headless(&bin, &["--dump-dom"], &gw.admin("/oauth/authorize?app=main")).await;
    assert!(dom.contains("<h1>Authorized</h1>"), "{dom}");
    let open_id = open_id_of(&dom);
    let r = Http::default()
        .get(&gw.url(&format!("/api/douyin/v1/video/video_list/?open_id={open_id}")))
        .await;
    assert_eq!(r.json()["data"]["error_code"], 0, "{}", r.text());

    // The same page, reloaded: the state was single-use, so the browser sees the refusal.
    let callback = format!("{}?code=x&state=used", gw.admin("/oauth/callback"));
    let dom = headless(&bin, &["--dump-dom"], &callback).await;
    assert!(dom.contains("Authorization failed"), "{dom}");
}
