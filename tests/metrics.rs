//! The metrics an operator graphs: every family there from the first scrape (at zero, not
//! missing), docs/operations.md's table naming exactly what `/metrics` serves, requests refused before
//! routing counted apart from those no route matched.

mod common;

use common::*;
use std::collections::BTreeSet;

fn scraped_families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn every_family_is_there_from_the_start_and_the_readme_names_them_all() {
    std::env::set_var("DG_TEST_METRICS_NOTIFY_KEY", "k");
    let sb = sandbox().await;
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .extra(
            "[[notify]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9/\"\nsecret_env = \"DG_TEST_METRICS_NOTIFY_KEY\"\n",
        )
        .extra(
            "[[callbacks]]\nname = \"pay\"\npath = \"/callbacks/pay\"\napp = \"main\"\nverify = \"douyin_webhook\"\n\
             forward_to = \"http://127.0.0.1:9/pay\"\n[[webhook_forward]]\nurl = \"http://127.0.0.1:9/events\"\n",
        )
        .render();
    let gw = gateway_text(&text, secret).await;
    let http = Http::default();
    // Not one call yet.
    let m = http.metrics(&gw).await;
    let scraped = scraped_families(&m);
    let documented = documented_metric_names();
    assert_eq!(
        scraped,
        documented,
        "scraped but not in docs/operations.md: {:?}; in docs/operations.md but not scraped: {:?}",
        scraped.difference(&documented).collect::<Vec<_>>(),
        documented.difference(&scraped).collect::<Vec<_>>()
    );
    // Zeros an operator's graphs and alerts can rely on.
    for series in [
        "douyin_gateway_reauthorization{app=\"main\",when=\"required\"}",
        "douyin_gateway_reauthorization{app=\"main\",when=\"within_7d\"}",
        "douyin_gateway_tokens{app=\"main\",class=\"client\",state=\"failed\"}",
        "douyin_gateway_tokens{app=\"main\",class=\"user\",state=\"reauthorization_required\"}",
        "douyin_gateway_token_fetches_total{app=\"main\",class=\"client\",outcome=\"ok\"}",
        "douyin_gateway_token_evicted_early_total{app=\"main\",class=\"client\"}",
        "douyin_gateway_requests_total{route=\"ticket\",status=\"200\"}",
        "douyin_gateway_notify_queue{receiver=\"ops\"}",
        "douyin_gateway_callbacks_total{callback=\"pay\",outcome=\"bad_signature\"}",
        "douyin_gateway_callback_nonces",
        "douyin_gateway_webhook_forwards_total{outcome=\"refused\",target=\"0:127.0.0.1:9\"}",
    ] {
        assert_eq!(metric(&m, series), Some(0.0), "{series}");
    }
    assert_eq!(metric(&m, "douyin_gateway_store_ready"), Some(1.0));
    let build = m
        .lines()
        .find(|l| l.starts_with("douyin_gateway_build_info{"))
        .expect("build info");
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    assert!(build.ends_with(" 1"), "{build}");
    assert!(metric(&m, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(metric(&m, "process_open_fds").unwrap() > 0.0);
}

#[tokio::test]
async fn requests_refused_before_routing_are_not_counted_as_unrouted() {
    let sb = sandbox().await;
    let gw = gateway(&sb).await;
    let http = Http::default();
    // No caller key: refused before routing.
    let r = http.send(http::Method::GET, &gw.url("/js/getticket/"), &[], "").await;
    assert_eq!(r.status, 401, "{}", r.text());
    // A path no route matches.
    let r = http.get(&gw.url("/nowhere")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    // Every non-zero count of the two pseudo-routes: exactly these, nothing counted twice or
    // under the other.
    let m = http.metrics(&gw).await;
    let counted: Vec<(&str, f64)> = m
        .lines()
        .filter(|l| l.starts_with("douyin_gateway_requests_total{route=\"_"))
        .filter_map(|l| {
            let (series, n) = l.rsplit_once(' ')?;
            let n: f64 = n.parse().ok()?;
            (n != 0.0).then_some((series, n))
        })
        .collect();
    assert_eq!(
        counted,
        [
            (r#"douyin_gateway_requests_total{route="_no_route",status="404"}"#, 1.0),
            (r#"douyin_gateway_requests_total{route="_refused",status="401"}"#, 1.0),
        ],
        "{m}"
    );
}
