//! `deploy/`: the alert rules and the dashboard refer only to metrics the gateway serves (the
//! README's table, itself checked against a scrape), and the rules pass `promtool check rules`
//! and their unit tests (`promtool test rules`).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

/// The metric names an expression text mentions (histogram series back to their family).
fn metrics_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in ["douyin_gateway_", "process_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|_| name.contains("_seconds")))
                .unwrap_or(name);
            out.push(family.to_string());
            rest = &tail[end..];
        }
    }
    out
}

#[test]
fn the_dashboard_and_the_alerts_name_only_metrics_the_gateway_serves() {
    let known = readme_metric_names();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{DEPLOY}/grafana/douyin-gateway.json")).unwrap())
            .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut exprs = Vec::new();
    for p in panels {
        assert_eq!(p["datasource"]["uid"], "prometheus", "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        exprs.extend(targets.iter().map(|t| t["expr"].as_str().unwrap().to_string()));
    }
    let titles: Vec<&str> = panels.iter().map(|p| p["title"].as_str().unwrap()).collect();
    for wanted in [
        "Calls by route",
        "Errors by route and status",
        "Latency percentiles",
        "Token fetches by outcome",
        "Tokens by state",
        "Re-consent forecast",
        "Competing-fetcher alarm",
        "Store health",
    ] {
        assert!(titles.contains(&wanted), "no panel {wanted:?}: {titles:?}");
    }
    let alerts = std::fs::read_to_string(format!("{DEPLOY}/prometheus/alerts.yml")).unwrap();
    let provisioning =
        std::fs::read_to_string(format!("{DEPLOY}/grafana/provisioning/datasources/prometheus.yml")).unwrap();
    assert!(provisioning.contains("uid: prometheus"));
    for (what, text) in exprs
        .iter()
        .map(|e| ("dashboard", e.as_str()))
        .chain([("alerts.yml", &*alerts)])
    {
        let names = metrics_in(text);
        assert!(!names.is_empty() || what == "dashboard", "{what}");
        for n in names {
            assert!(known.contains(&n), "{what} uses {n}, which the gateway does not serve");
        }
    }
}

#[cfg_attr(
    not(has_promtool),
    ignore = "needs promtool: apt-get install prometheus (CI installs it), then touch build.rs"
)]
#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let Ok(v) = Command::new("promtool").arg("--version").output() else {
        assert!(
            std::env::var("CI").is_err(),
            "promtool (Debian's prometheus package) is required under CI"
        );
        eprintln!("SKIPPED: promtool not installed (apt-get install prometheus); the alert rules were not checked");
        return;
    };
    assert!(v.status.success());
    let dir = Path::new(DEPLOY).join("prometheus");
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts.test.yml"],
        &["check", "config", "prometheus.yml"],
    ] {
        let out = Command::new("promtool").args(args).current_dir(&dir).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
