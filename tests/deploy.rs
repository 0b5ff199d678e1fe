//! `deploy/`: the alert rules and the dashboard refer only to metrics the gateway serves (the
//! table in docs/operations.md, itself checked against a scrape), and the rules pass `promtool check rules`
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
    let known = documented_metric_names();
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
    let v = Command::new("promtool").arg("--version").output().expect(
        "promtool (found when the tests were built, or CI=true): apt-get install prometheus, or touch build.rs",
    );
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

/// The environment the shipped configs name: a client secret and a fresh store key.
fn secrets_env() -> Vec<(String, String)> {
    let key = Command::new(BIN).arg("keygen").output().unwrap();
    vec![
        ("DOUYIN_CLIENT_SECRET".into(), "a-client-secret".into()),
        (
            "DOUYIN_GATEWAY_KEY".into(),
            String::from_utf8(key.stdout).unwrap().trim().to_string(),
        ),
    ]
}

fn check(config: &Path, env: &[(String, String)], cwd: &Path) -> (bool, String) {
    check_with(config, &[], env, cwd)
}

fn check_with(config: &Path, flags: &[&str], env: &[(String, String)], cwd: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("check")
        .args(flags)
        .arg("--config")
        .arg(config)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// What an operator puts in place of a shipped config's placeholders: a client_key and the hash
/// of a key of their own.
fn edited(text: &str) -> String {
    let own = douyin_gateway::caller::hash_key("a-key-of-our-own");
    text.replace("awxxxxxxxxxxxxxx", "aw0123456789abcd")
        .replace(&"0".repeat(64), &own)
        .replace(&douyin_gateway::caller::hash_key("example-admin-key"), &own)
        .replace(&douyin_gateway::caller::hash_key("example-caller-key"), &own)
}

/// The config.toml inside the Kubernetes ConfigMap and the one compose.yaml mounts: as shipped,
/// `check` refuses their placeholders, naming each (`--allow-example-keys` lets a test install
/// through); with them replaced, they pass with the secrets the manifests reference.
#[test]
fn the_shipped_configs_pass_check_once_their_placeholders_are_replaced() {
    let manifest = std::fs::read_to_string(format!("{DEPLOY}/k8s/douyin-gateway.yaml")).unwrap();
    let block = manifest
        .split_once("  config.toml: |\n")
        .unwrap()
        .1
        .split("\n---")
        .next()
        .unwrap();
    let text: String = block
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l.trim()))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let k8s = dir.path().join("config.toml");
    std::fs::write(&k8s, &text).unwrap();
    let env = secrets_env();
    for path in [k8s, Path::new(DEPLOY).join("compose/gateway.toml")] {
        let (ok, out) = check(&path, &env, dir.path());
        assert!(!ok, "{}: {out}", path.display());
        for key in [
            "admin.api_key_sha256: is the example's placeholder",
            "apps[0].client_key: is the example's placeholder",
            "callers[0].api_key_sha256: is the example's placeholder",
        ] {
            assert!(out.contains(key), "{}: {key:?} not named: {out}", path.display());
        }
        let (ok, out) = check_with(&path, &["--allow-example-keys"], &env, dir.path());
        assert!(ok, "{}: {out}", path.display());
        let mine = dir.path().join("edited.toml");
        std::fs::write(&mine, edited(&std::fs::read_to_string(&path).unwrap())).unwrap();
        let (ok, out) = check(&mine, &env, dir.path());
        assert!(ok, "{}: {out}", path.display());
        assert!(!out.contains("warning"), "{}: {out}", path.display());
    }
    // The Deployment gives the container exactly the variables the config names.
    for var in ["DOUYIN_CLIENT_SECRET", "DOUYIN_GATEWAY_KEY"] {
        assert!(manifest.contains(&format!("- name: {var}")), "{var}");
        assert!(text.contains(&format!("\"{var}\"")), "{var}");
    }
}

#[cfg_attr(
    not(has_kubernetes_validate),
    ignore = "needs kubernetes-validate: pip install kubernetes-validate (CI installs it), then touch build.rs"
)]
#[test]
fn the_kubernetes_manifests_pass_a_strict_schema_check() {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.30.0", "douyin-gateway.yaml"])
        .current_dir(format!("{DEPLOY}/k8s"))
        .output()
        .expect("kubernetes-validate");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    for kind in ["configmap", "deployment", "service", "poddisruptionbudget"] {
        assert!(
            said.contains(&format!("passed for resource {kind}/douyin-gateway")),
            "{said}"
        );
    }
    let manifest = std::fs::read_to_string(format!("{DEPLOY}/k8s/douyin-gateway.yaml")).unwrap();
    for must in [
        "replicas: 2",
        "path: /healthz",
        "path: /readyz",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "kind: PodDisruptionBudget",
        "secretKeyRef",
    ] {
        assert!(manifest.contains(must), "{must}");
    }
}

/// The systemd install steps: an unedited install (the example config.toml, the env template's
/// placeholder secret) fails the unit's own `ExecStartPre` check, naming each key to replace;
/// edited as the steps say, it passes; the steps create the user.
#[test]
fn the_systemd_steps_refuse_an_unedited_install_and_pass_once_edited() {
    let unit = std::fs::read_to_string(format!("{DEPLOY}/douyin-gateway.service")).unwrap();
    assert!(unit.contains("useradd --system"), "the steps create the user");
    assert!(unit.contains("User=douyin-gateway"));
    assert!(unit.contains("echo \"DOUYIN_GATEWAY_KEY=$(douyin-gateway keygen)\" >> /etc/douyin-gateway/env"));
    let pre = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre="))
        .expect("ExecStartPre");
    assert_eq!(
        pre,
        "/usr/local/bin/douyin-gateway check --config /etc/douyin-gateway/config.toml"
    );
    let template = std::fs::read_to_string(format!("{DEPLOY}/douyin-gateway.env")).unwrap();
    let mut env: Vec<(String, String)> = template
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    env.extend(secrets_env().into_iter().filter(|(k, _)| k == "DOUYIN_GATEWAY_KEY"));
    let workdir = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let (ok, out) = check(&config, &env, workdir.path());
    assert!(!ok, "an unedited install must not start: {out}");
    for key in [
        "admin.api_key_sha256",
        "apps[0].client_key",
        "apps[0].client_secret_env: environment variable DOUYIN_CLIENT_SECRET holds a placeholder",
        "callers[0].api_key_sha256",
    ] {
        assert!(out.contains(&format!("error: {}", config.display())), "{out}");
        assert!(out.contains(key), "{key:?} not named: {out}");
    }
    assert!(!out.contains("replace-me-with-the-client-secret"), "{out}");
    // Edited: the config's keys, the secret in the env file.
    let mine = workdir.path().join("config.toml");
    std::fs::write(&mine, edited(&std::fs::read_to_string(&config).unwrap())).unwrap();
    for (k, v) in &mut env {
        if k == "DOUYIN_CLIENT_SECRET" {
            *v = "3f9a2c7e1b5d".into();
        }
    }
    let (ok, out) = check(&mine, &env, workdir.path());
    assert!(ok, "{out}");
}

/// What the image runs, run here (no container engine works on this machine): the Dockerfile's
/// command with a config at the mounted path's stand-in, its health check against it, a
/// non-root user, a distroless runtime stage.
#[tokio::test(flavor = "multi_thread")]
async fn the_image_runs_what_the_dockerfile_says() {
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let json_of = |directive: &str| -> Vec<String> {
        let line = dockerfile
            .lines()
            .find_map(|l| l.strip_prefix(directive))
            .unwrap_or_else(|| panic!("no {directive}"));
        serde_json::from_str(line.trim()).unwrap()
    };
    let entry = json_of("ENTRYPOINT ");
    let cmd = json_of("CMD ");
    assert_eq!(entry, ["/usr/local/bin/douyin-gateway"]);
    assert_eq!(cmd, ["serve", "--config", "/etc/douyin-gateway/config.toml"]);
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(runtime.starts_with("gcr.io/distroless/"), "{runtime}");
    assert!(runtime.contains("\nUSER 65532:65532\n"), "non-root");
    let health = dockerfile
        .split_once("CMD [\"/usr/local/bin/douyin-gateway\", \"healthcheck\"")
        .expect("HEALTHCHECK CMD");
    assert!(
        health.1.starts_with(", \"--url\", \"http://127.0.0.1:9090/healthz\"]"),
        "{}",
        health.1
    );

    // The same command, the config where the mount would put it.
    let sb = sandbox().await;
    let secret = secret_file();
    let dir = tempfile::tempdir().unwrap();
    let mounted = dir.path().join("config.toml");
    std::fs::write(&mounted, TestConfig::standard(&sb.url(), secret.path()).render()).unwrap();
    let args: Vec<String> = cmd
        .iter()
        .map(|a| {
            if a == "/etc/douyin-gateway/config.toml" {
                mounted.display().to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (listeners, _, admin_port) = listeners();
    let [l0, l1] = &listeners;
    let mut p = Proc::spawn_on(&args, &[], [l0, l1]);
    p.wait_for("gateway listening");
    let url = format!("http://127.0.0.1:{admin_port}/healthz");
    let healthy = Command::new(BIN).args(["healthcheck", "--url", &url]).output().unwrap();
    assert!(healthy.status.success(), "{}", String::from_utf8_lossy(&healthy.stderr));
    p.signal("-TERM");
    let (code, _) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
    assert_eq!(code, 0);
    let down = Command::new(BIN).args(["healthcheck", "--url", &url]).output().unwrap();
    assert!(!down.status.success(), "a stopped gateway is unhealthy");
    assert!(String::from_utf8_lossy(&down.stderr).contains("healthcheck:"));
}
