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
    std::env::set_var("DG_TEST_METRICS_TP_KEY", "CAoJaFLeTHIV/P5ehOAcKXPehZhj0ZIxRZDu3diVPds");
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
        .extra(
            "[[providers]]\nname = \"tp\"\ncomponent_appid = \"tt1\"\ncomponent_appsecret_env = \"DG_TEST_METRICS_NOTIFY_KEY\"\n\
             message_token_env = \"DG_TEST_METRICS_NOTIFY_KEY\"\nmessage_key_env = \"DG_TEST_METRICS_TP_KEY\"\napi_version = \"v1\"\n",
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
        "douyin_gateway_provider_events_total{event=\"-\",outcome=\"bad_signature\",provider=\"tp\"}",
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

/// A successful `POST /_gateway/exchange_code` counts under `_exchange_code` (an alert on
/// `_no_route` fired on it), and a refused one there too, not under `_refused`.
#[tokio::test]
async fn the_code_exchange_counts_under_its_own_route() {
    let sb = sandbox().await;
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .caller("exchange_codes = true")
        .render();
    let gw = gateway_text(&text, secret).await;
    let http = Http::default();
    let code = http.code_for(&sb, CLIENT_KEY).await;
    let body = serde_json::json!({"app": "main", "code": code});
    assert_eq!(http.exchange_code(&gw, CALLER_KEY, body.clone()).await.status, 200);
    assert_eq!(
        http.exchange_code(&gw, CALLER_KEY, body).await.status,
        400,
        "the code is spent"
    );
    let m = http.metrics(&gw).await;
    let counted: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("douyin_gateway_requests_total{") && !l.ends_with(" 0"))
        .collect();
    assert_eq!(
        counted,
        [
            r#"douyin_gateway_requests_total{route="_exchange_code",status="200"} 1"#,
            r#"douyin_gateway_requests_total{route="_exchange_code",status="400"} 1"#,
        ],
        "{m}"
    );
}

/// The series one app and ten routes create before any call: per route, the platform codes its
/// token class can see (none on a route without a token); retries, rejected fresh tokens and
/// upstream times only where they can happen; no 200 for requests refused before routing.
#[tokio::test]
async fn only_series_that_can_occur_are_there_from_the_start() {
    let sb = sandbox().await;
    let secret = secret_file();
    // With the three standard routes (client, client, user): ten.
    let mut routes = String::new();
    for (name, token) in [
        ("plain-1", "none"),
        ("plain-2", "none"),
        ("plain-3", "none"),
        ("user-2", "user"),
        ("client-3", "client"),
    ] {
        routes += &format!("[[routes]]\nname = \"{name}\"\npath = \"/{name}/*\"\ntoken = \"{token}\"\n\n");
    }
    routes += "[[routes]]\nname = \"own-ticket\"\npath = \"/oauth/client_token/\"\ntoken = \"placeholder\"\n\n\
               [[routes]]\nname = \"mini\"\npath = \"/auth/entity/get_appid_auth\"\nmethods = [\"POST\"]\n\
               token = \"mini_app\"\ninject = \"json_body\"\nupstream = \"toutiao\"\n\n";
    routes += &format!("[[upstreams]]\nname = \"toutiao\"\nbase_url = \"{}\"\n", sb.url());
    let text = TestConfig::standard(&sb.url(), secret.path())
        .app("mini_app_upstream = \"toutiao\"")
        .extra(&routes)
        .render();
    let gw = gateway_text(&text, secret).await;
    let m = Http::default().metrics(&gw).await;
    let series = |prefix: &str| m.lines().filter(|l| l.starts_with(prefix)).count();
    // Labels come sorted by name: `code` before `route`.
    let routes_with = |family: &str, route: &str| {
        m.lines()
            .any(|l| l.starts_with(&format!("{family}{{")) && l.contains(&format!("route=\"{route}\"")))
    };

    // client routes 9 codes + other, user routes 12 + other, the mini-app route 2 + other; the
    // old 15 a route (150 for ten routes, 30 more for _no_route and _refused).
    assert_eq!(
        series("douyin_gateway_platform_errors_total{"),
        3 * 10 + 2 * 13 + 3,
        "{m}"
    );
    for route in ["_refused", "_no_route", "plain-1", "own-ticket"] {
        for family in [
            "douyin_gateway_platform_errors_total",
            "douyin_gateway_token_retries_total",
            "douyin_gateway_route_rejects_fresh_tokens_total",
        ] {
            assert!(!routes_with(family, route), "{family} {route}: {m}");
        }
    }
    assert_eq!(
        series("douyin_gateway_token_retries_total{"),
        6 * 5,
        "five outcomes on six token routes"
    );
    for route in ["_refused", "_no_route", "own-ticket"] {
        assert!(
            !routes_with("douyin_gateway_upstream_duration_seconds_count", route),
            "{route}: {m}"
        );
    }
    assert!(routes_with("douyin_gateway_upstream_duration_seconds_count", "plain-1"));
    assert!(
        routes_with("douyin_gateway_platform_errors_total", "ticket"),
        "the check can see a route"
    );
    assert_eq!(
        metric(&m, r#"douyin_gateway_platform_errors_total{code="11016",route="mini"}"#),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"douyin_gateway_platform_errors_total{code="11016",route="ticket"}"#
        ),
        None,
        "a client token route never sees developer.toutiao.com's code"
    );
    assert!(!m.contains(r#"route="_refused",status="200""#), "{m}");
    assert_eq!(
        metric(&m, r#"douyin_gateway_requests_total{route="_no_route",status="404"}"#),
        Some(0.0)
    );
}

/// `process_cpu_seconds_total` to the clock tick: between what /proc said just before and just
/// after the scrape (the prometheus crate's collector rounded down to whole seconds: 0 while
/// /proc said 0.83).
#[tokio::test]
async fn process_cpu_seconds_keep_their_fraction() {
    let sb = sandbox().await;
    let gw = gateway(&sb).await;
    let http = Http::default();
    // Some CPU to count.
    for _ in 0..50 {
        http.get(&gw.url("/js/getticket/")).await;
    }
    // The test and the gateway share this process: /proc/self/stat is what the scrape reads.
    let cpu = || {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let f: Vec<u64> = stat[stat.rfind(')').unwrap() + 2..]
            .split(' ')
            .skip(11)
            .take(2)
            .map(|v| v.parse().unwrap())
            .collect();
        (f[0] + f[1]) as f64 / 100.0
    };
    let before = cpu();
    let scraped = metric(&http.metrics(&gw).await, "process_cpu_seconds_total").unwrap();
    let after = cpu();
    assert!(before > 0.0, "{before}");
    assert!(
        before <= scraped && scraped <= after,
        "process_cpu_seconds_total {scraped}, /proc said {before} then {after}"
    );
    assert_eq!(scraped, (scraped * 100.0).round() / 100.0, "to the tick");
}
