//! The authorization flow in a real browser: headless Chromium follows the
//! gateway's redirect to the platform's consent page and back to the callback.
//! Needs Debian's Chromium: skipped with a notice on a developer machine
//! without it, required when `CI=true` (`.ci/run` installs it).

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn chromium() -> Option<String> {
    for bin in ["chromium", "chromium-browser"] {
        if Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(bin.to_string());
        }
    }
    assert!(std::env::var("CI").is_err(), "CI=true but Chromium is not installed");
    eprintln!("NOTICE: Chromium not installed; browser test skipped");
    None
}

/// Loads `url` headless and returns the final page's DOM (after redirects).
async fn dump_dom(bin: &str, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--dump-dom",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(url)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("chromium hung")
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg_attr(
    not(has_chromium),
    ignore = "needs Chromium: apt-get install chromium (CI installs it), then touch build.rs"
)]
#[tokio::test(flavor = "multi_thread")]
async fn a_browser_completes_the_authorization_flow() {
    let Some(bin) = chromium() else { return };
    let sb = sandbox().await;
    let gw = user_gateway(&sb, "", "").await;
    let dom = dump_dom(&bin, &gw.admin("/oauth/authorize?app=main")).await;
    assert!(dom.contains("<h1>Authorized</h1>"), "{dom}");
    let open_id = open_id_of(&dom);
    let r = Http::default()
        .get(&gw.url(&format!("/api/douyin/v1/video/video_list/?open_id={open_id}")))
        .await;
    assert_eq!(r.json()["data"]["error_code"], 0, "{}", r.text());

    // The same page, reloaded: the state was single-use, so the browser sees the refusal.
    let callback = format!("{}?code=x&state=used", gw.admin("/oauth/callback"));
    let dom = dump_dom(&bin, &callback).await;
    assert!(dom.contains("Authorization failed"), "{dom}");
}
