//! The binary as an operator runs it: `check`, `serve` with signals, `demo`,
//! `keygen`, `hash-key`.

mod common;

use common::*;
use http::Method;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(BIN).args(args).envs(env.iter().copied()).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The example config is valid but not deployable as it is: `check` (and so the systemd unit's
/// `ExecStartPre`) refuses its example keys, naming each, until they are replaced or
/// `--allow-example-keys` says this is a test install.
#[test]
fn the_example_config_is_valid_and_its_example_keys_are_refused() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let env = [("DOUYIN_CLIENT_SECRET", "s"), ("DOUYIN_GATEWAY_KEY", key)];
    let must_replace = [
        "admin.api_key_sha256: is the example's key",
        "callers[0].api_key_sha256: is the example's key",
        "apps[0].client_key: is the example's placeholder",
    ];
    let (code, out) = run(&["check", "--config", path], &env);
    assert_eq!(code, 1, "{out}");
    for want in must_replace {
        assert!(out.contains(&format!("error: {path}")), "{out}");
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(out.contains("invalid: 3 error(s)"), "{out}");
    let (code, out) = run(&["check", "--allow-example-keys", "--config", path], &env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid: 1 app(s), 5 route(s)"), "{out}");
    for want in must_replace {
        assert!(out.contains(want), "still warned: {want:?} in:\n{out}");
    }
    // Without the secret it names, it is not.
    let out = Command::new(BIN)
        .args(["check", "--allow-example-keys", "--config", path])
        .env_remove("DOUYIN_CLIENT_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DOUYIN_CLIENT_SECRET is not set"));
}

#[test]
fn check_lists_every_problem_with_its_line() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(
        br#"[server]
listen = "0.0.0.0:8080"
allow_anonymous = true
admin_listen = "nowhere"

[upstream]
base_url = "ftp://x"

[[apps]]
name = "a"
client_key = "k"
client_secret_env = "DG_TEST_SURELY_UNSET_VAR"

[[callers]]
name = "c"
api_key_sha256 = "abc"
routes = ["missing-route"]

[[routes]]
name = "all"
path = "/*"
token = "client"

[[routes]]
name = "shadowed"
path = "/x/"
token = "biz"
app = "nope"
"#,
    )
    .unwrap();
    let (code, out) = run(&["check", "--config", f.path().to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    for want in [
        ":3: server.allow_anonymous: anonymous callers are allowed only on a loopback listener",
        ":4: server.admin_listen:",
        ":7: upstream.base_url:",
        ":12: apps[0].client_secret_env: environment variable DG_TEST_SURELY_UNSET_VAR is not set",
        ":16: callers[0].api_key_sha256:",
        ":17: callers[0].routes: no [[routes]] named \"missing-route\"",
        ":28: routes[1].app: no [[apps]] named \"nope\"",
        "routes[1].biz_scope:",
        "warning: ",
        "routes[1].path: route \"shadowed\" can never match",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }

    // A typo is an error, with its line.
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"[server]\nlisten = \"127.0.0.1:1\"\nmax_body_byte = 5\n")
        .unwrap();
    let (code, out) = run(&["check", "--config", f.path().to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(out.contains(":3:") && out.contains("max_body_byte"), "{out}");
}

#[test]
fn keygen_and_hash_key() {
    use base64::Engine;
    let (code, out) = run(&["keygen"], &[]);
    assert_eq!(code, 0);
    let key = base64::engine::general_purpose::STANDARD.decode(out.trim()).unwrap();
    assert_eq!(key.len(), 32);
    assert_ne!(run(&["keygen"], &[]).1, out, "keys are random");

    let mut child = Command::new(BIN)
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"my-key\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        douyin_gateway::caller::hash_key("my-key")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_reloads_on_sighup_drains_on_sigterm_and_logs_no_secret() {
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        api_latency_ms: 0,
        ..Default::default()
    })
    .await;
    let secret = secret_file();
    let text = config_text(&sb.url(), secret.path(), |_| {}, "");
    let cfg = text_file(&text);
    let cfg_path = cfg.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&["serve", "--config", &cfg_path], &[("RUST_LOG", "debug")]);
    // RUST_LOG=debug includes the access log: proven below to carry no token.
    let line = p.wait_for("gateway listening");
    let (addr, admin) = (field(&line, "addr").to_string(), field(&line, "admin_addr").to_string());
    let http = Http::default();
    let gw = |path: &str| format!("http://{addr}{path}");

    assert_eq!(http.get(&gw("/js/getticket/")).await.status, 200);
    http.control(&sb, "/sandbox/revoke", serde_json::json!({"client_key": CLIENT_KEY}))
        .await;
    assert_eq!(
        http.post(&gw("/api/douyin/v1/role/check/"), "{}").await.status,
        200,
        "refreshed and replayed"
    );
    assert_eq!(http.get(&gw("/new/x")).await.status, 404);

    // SIGHUP with a new route: it serves.
    let with_route = format!("{text}\n[[routes]]\nname = \"new\"\npath = \"/new/*\"\ntoken = \"none\"\n");
    std::fs::write(&cfg_path, &with_route).unwrap();
    p.signal("-HUP");
    p.wait_for("config reloaded");
    let r = http.get(&gw("/new/x")).await;
    assert_eq!(r.status, 404, "forwarded to the sandbox, which has no such API");
    assert!(r.gateway_error().is_none(), "{}", r.text());

    // SIGHUP with a broken config: refused, the old one keeps serving.
    std::fs::write(&cfg_path, "[server]\nlisten = 5\n").unwrap();
    p.signal("-HUP");
    p.wait_for("config reload refused");
    assert_eq!(http.get(&gw("/js/getticket/")).await.status, 200);
    assert!(http.get(&format!("http://{admin}/healthz")).await.status == 200);

    // SIGTERM with a call in flight: it finishes, then the process exits 0.
    http.control(&sb, "/sandbox/faults", serde_json::json!({"api_latency_ms": 700}))
        .await;
    let slow = tokio::spawn({
        let (http, url) = (http.clone(), gw("/js/getticket/"));
        async move { http.get(&url).await }
    });
    // Signal only once the call is surely in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(
        &http
            .send(http::Method::GET, &format!("http://{admin}/metrics"), &[], "")
            .await
            .text(),
        "douyin_gateway_requests_in_flight",
    ) != Some(1.0)
    {
        assert!(std::time::Instant::now() < deadline, "the call never got in flight");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.signal("-TERM");
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "in-flight call finished during shutdown");
    let (code, log) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(
        log.contains("path=/js/getticket/") && log.contains("status=200"),
        "access log: {log}"
    );

    // Nothing secret in the log: not the client secret, not any token the platform saw.
    assert!(!log.contains(CLIENT_SECRET), "client secret in the log");
    let mut tokens = std::collections::HashSet::new();
    for e in http.requests(&sb).await {
        for k in ["access_token_headers", "access_token_params"] {
            for t in e[k].as_array().unwrap() {
                tokens.insert(t.as_str().unwrap().to_string());
            }
        }
    }
    assert!(
        tokens.len() >= 2,
        "the test should have seen the original and the refreshed token"
    );
    for t in tokens {
        assert!(!log.contains(&t), "a token is in the log");
    }
}

#[cfg_attr(
    not(has_curl),
    ignore = "needs curl: apt-get install curl (CI installs it), then touch build.rs"
)]
#[tokio::test(flavor = "multi_thread")]
async fn demo_prints_curl_lines_that_work() {
    let mut p = Proc::spawn(&["demo"], &[]);
    p.wait_for("Ctrl-C stops it.");
    // The demo's secret file: its owner's only, and gone when the demo ends.
    let secret = std::env::temp_dir().join(format!("douyin-gateway-demo-{}.secret", p.child.id()));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret)
            .expect("the demo's secret file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let curls: Vec<String> = p
        .seen
        .iter()
        .map(|l| l.trim().to_string())
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert!(curls.len() >= 16, "{:?}", p.seen);
    let mut outputs = Vec::new();
    for c in &curls {
        let out = tokio::task::spawn_blocking({
            let c = c.clone();
            move || Command::new("sh").arg("-c").arg(&c).output().unwrap()
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{c}: {}", String::from_utf8_lossy(&out.stderr));
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let out = |needle: &str, nth: usize| -> &str {
        let i = curls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.contains(needle))
            .nth(nth)
            .unwrap_or_else(|| panic!("{needle}"))
            .0;
        &outputs[i]
    };
    assert!(
        out("/js/getticket/", 0).contains("\"ticket\""),
        "{}",
        out("/js/getticket/", 0)
    );
    assert!(out("/role/check/", 0).contains("\"err_no\":0"));
    assert!(
        out("/js/getticket/", 1).contains("\"ticket\""),
        "after the revoke the call still works"
    );
    assert!(
        out("video_list", 0).contains("user_authorization_required") && out("video_list", 0).contains("authorize_url")
    );
    assert!(out("/oauth/authorize", 0).contains("Authorized") && out("/oauth/authorize", 0).contains("demo-user"));
    assert!(
        out("video_list", 1).contains("\"error_code\":0"),
        "{}",
        out("video_list", 1)
    );
    assert!(
        out("/video/list/", 0).contains("\"error_code\":0"),
        "{}",
        out("/video/list/", 0)
    );
    assert!(
        out("video_list", 2).contains("\"error_code\":0"),
        "refreshed after expiry: {}",
        out("video_list", 2)
    );
    assert!(
        out("/enterprise/", 0).contains("\"error_code\":0"),
        "{}",
        out("/enterprise/", 0)
    );
    assert!(
        out("/admin/tokens", 0).contains("\"class\":\"user\""),
        "{}",
        out("/admin/tokens", 0)
    );
    assert!(out("/metrics", 0).contains("douyin_gateway_token_fetches_total"));
    // The platform's webhook event relayed, and a callback forwarded: the platform heard 200 at
    // once, and the backend got both, with the app named.
    for path in ["/webhooks/douyin", "/callbacks/douyin"] {
        let sent: serde_json::Value = serde_json::from_str(out(path, 0)).unwrap();
        assert_eq!(sent["attempts"].as_array().unwrap().len(), 1, "{sent}");
        assert_eq!(sent["attempts"][0]["status"], 200, "{sent}");
    }
    let received: serde_json::Value = serde_json::from_str(out("/sandbox/received", 0)).unwrap();
    let received = received["received"].as_array().unwrap();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(received[0]["headers"]["x-gateway-event"], "item_comment_reply");
    assert_eq!(received[1]["path"], "/sandbox/receiver/callbacks");
    assert!(received.iter().all(|r| r["headers"]["x-gateway-app"] == "demo"));
    // The status page, as the printed URL and key open it: the biz token, and the traffic above.
    let status = out("/status", 0);
    assert!(status.contains("douyin-gateway status"), "{status}");
    assert!(
        status.contains("<tr><td>demo</td><td>biz</td><td class=\"n\">1</td>"),
        "{status}"
    );
    assert!(
        status.contains("<tr><td>ticket</td><td class=\"n\">2</td>"),
        "two calls on ticket: {status}"
    );
    assert!(
        p.seen
            .iter()
            .any(|l| l.contains("/status in a browser") && l.contains("password")),
        "the URL and how to log in"
    );
    assert!(
        out("/oauth/userinfo/", 0).contains("\"open_id\":\"demo-user\""),
        "{}",
        out("/oauth/userinfo/", 0)
    );
    assert!(
        out("/trade/v2/", 0).contains("\"order_status\":\"SUCCESS\""),
        "a signed call, its answer verified: {}",
        out("/trade/v2/", 0)
    );
    // A payment callback signed with the platform's key: forwarded once; its nonce again: 401.
    let paid: serde_json::Value = serde_json::from_str(out("/callbacks/pay", 0)).unwrap();
    assert_eq!(paid["status"], 200, "{paid}");
    let replayed: serde_json::Value = serde_json::from_str(out("/callbacks/pay", 1)).unwrap();
    assert_eq!(replayed["status"], 401, "{replayed}");
    let tampered = out("/trade/v2/", 1);
    assert!(
        tampered.contains("bad_upstream_signature") && !tampered.contains("order_status"),
        "{tampered}"
    );
    // The service provider: both merchant apps authorized by the pushed events and served with their
    // own tokens; one refreshed after expiry; one withdrawn, then refused.
    let pushes: Vec<&str> = (0..4).map(|i| out("/sandbox/provider/push", i)).collect();
    assert!(pushes.iter().all(|r| r.contains("\"body\":\"success\"")), "{pushes:?}");
    let info = |nth| out("authorizer_info", nth);
    for (nth, appid) in [(0, "tt_merchant_a"), (1, "tt_merchant_b"), (2, "tt_merchant_a")] {
        assert!(
            info(nth).contains(&format!("\"authorizer_appid\":\"{appid}\"")) && info(nth).contains("\"err_no\":0"),
            "{nth}: {}",
            info(nth)
        );
    }
    assert!(info(3).contains("authorizer_authorization_required"), "{}", info(3));
    let seen = curls.iter().position(|c| c.ends_with("/sandbox/provider")).unwrap();
    let platform: serde_json::Value = serde_json::from_str(&outputs[seen]).unwrap();
    assert_eq!(
        (
            &platform["code_exchanges"],
            &platform["refreshes"],
            &platform["refresh_reused"]
        ),
        (&json!(2), &json!(1), &json!(0)),
        "{platform}"
    );
    let keys = [
        "-app-private.pem",
        "-platform-public.pem",
        "-tp.secret",
        "-tp-client.secret",
    ]
    .map(|k| std::env::temp_dir().join(format!("douyin-gateway-demo-{}{k}", p.child.id())));
    assert!(keys.iter().all(|k| k.exists()), "the demo prints where its keys are");
    p.signal("-INT");
    let (code, _) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
    assert_eq!(code, 0);
    assert!(!secret.exists(), "the demo removes its secret file on exit");
    assert!(keys.iter().all(|k| !k.exists()), "and its key files");
}

/// systemd socket activation: `serve` takes the sockets it inherits (`LISTEN_FDS`: the proxy's,
/// then the admin's) instead of binding `listen` and `admin_listen`, here addresses it could not
/// bind at all.
#[tokio::test(flavor = "multi_thread")]
async fn serve_listens_on_inherited_sockets() {
    let sb = sandbox().await;
    let secret = secret_file();
    let text = TestConfig::new(&sb.url(), secret.path())
        .listen_at("192.0.2.1:1", "192.0.2.1:2")
        .render();
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), text).unwrap();
    let (bound, port, admin_port) = listeners();
    let mut p = Proc::spawn_on(
        &["serve", "--config", cfg.path().to_str().unwrap()],
        &[],
        [&bound[0], &bound[1]],
    );
    p.wait_for("gateway listening");
    drop(bound);
    let http = Http::default();
    let r = http.get(&format!("http://127.0.0.1:{port}/js/getticket/")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http
        .send(
            http::Method::GET,
            &format!("http://127.0.0.1:{admin_port}/healthz"),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    p.signal("-TERM");
    let (status, log) = p.finish();
    assert_eq!(status, 0, "{log}");
}

/// The block of docs/tokens.md marked `<!-- walkthrough:NAME -->`, exactly as written, run by `sh
/// -e` against a `demo` after the `export` line it prints: the demo (still running), that line,
/// and what the block printed (it must have succeeded).
async fn walkthrough_against_demo(name: &str) -> (Proc, String, String) {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/tokens.md")).unwrap();
    let block = doc
        .split_once(&format!("<!-- walkthrough:{name} -->\n```sh\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .unwrap_or_else(|| panic!("the {name} walkthrough block in docs/tokens.md"))
        .0
        .to_string();
    let mut p = Proc::spawn(&["demo"], &[]);
    p.wait_for("Ctrl-C stops it.");
    let export = p
        .seen
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("export GW="))
        .expect("demo prints the export line")
        .to_string();
    let script = format!("{export}\n{block}");
    let out = tokio::task::spawn_blocking(move || Command::new("sh").arg("-ec").arg(script).output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (p, export, stdout)
}

/// The mini-app walkthrough of docs/tokens.md, exactly as written, against `demo`: a `tt.login` code through
/// `jscode2session`, a `tt.showDouyinOpenAuth` code exchanged by the gateway, the mini-app token in
/// a JSON body, and an SDK's own token request answered with the placeholder.
#[cfg_attr(
    not(has_curl),
    ignore = "needs curl: apt-get install curl (CI installs it), then touch build.rs"
)]
#[tokio::test(flavor = "multi_thread")]
async fn readme_mini_app_walkthrough_runs_against_demo() {
    let (p, export, stdout) = walkthrough_against_demo("mini-app").await;
    let sandbox = export.split("SANDBOX=").nth(1).unwrap().to_string();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    assert_eq!(lines[0]["err_no"], 0, "jscode2session: {}", lines[0]);
    assert!(lines[0]["data"]["openid"].as_str().unwrap().starts_with("_000"));
    assert_eq!(lines[1]["open_id"], "demo-user", "exchange: {}", lines[1]);
    assert!(lines[1].get("access_token").is_none());
    assert_eq!(lines[2]["data"]["error_code"], 0, "user call: {}", lines[2]);
    assert_eq!(lines[3]["err"]["err_code"], 0, "token in the body: {}", lines[3]);
    assert_eq!(
        lines[4]["data"]["access_token"],
        douyin_gateway::proxy::routing::PLACEHOLDER_TOKEN
    );
    assert_eq!(lines[5]["err"]["err_code"], 0, "placeholder replaced: {}", lines[5]);
    let stats = Command::new("curl")
        .args(["-s", &format!("{sandbox}/sandbox/stats")])
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(
        (
            n(&stats["mini_app_token_calls"]),
            n(&stats["jscode2session_calls"]),
            n(&stats["access_token_calls"]),
            n(&stats["client_token_calls"])
        ),
        (1, 1, 1, 0),
        "{stats}"
    );
    p.signal("-INT");
    let (code, _) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
    assert_eq!(code, 0);
}

/// The service-provider walkthrough of docs/tokens.md, exactly as written, against `demo`: two
/// merchant apps authorized by pushed events, one refreshed once, one withdrawn, replayed and
/// tampered events refused.
#[cfg_attr(
    not(has_curl),
    ignore = "needs curl: apt-get install curl (CI installs it), then touch build.rs"
)]
#[tokio::test(flavor = "multi_thread")]
async fn provider_walkthrough_runs_against_demo() {
    let (p, _, stdout) = walkthrough_against_demo("providers").await;
    // One JSON answer per line, the sandbox's and the gateway's without a newline between them.
    let lines: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .map(|v| v.unwrap_or_else(|e| panic!("{stdout}: {e}")))
        .collect();
    assert_eq!(lines.len(), 11, "{stdout}");
    for i in [0, 1, 2, 6] {
        assert_eq!(lines[i]["body"], "success", "push {i}: {}", lines[i]);
    }
    for i in [3, 5] {
        assert_eq!(lines[i]["err_no"], 0, "call {i}: {}", lines[i]);
        assert_eq!(lines[i]["data"]["authorizer_appid"], "tt_merchant_a");
    }
    assert_eq!(
        lines[7]["gateway_error"]["code"], "authorizer_authorization_required",
        "{}",
        lines[7]
    );
    let seen = &lines[8];
    assert_eq!(
        (
            n(&seen["code_exchanges"]),
            n(&seen["refreshes"]),
            n(&seen["refresh_reused"])
        ),
        (2, 1, 0),
        "{seen}"
    );
    assert_eq!(lines[9]["status"], 401, "replayed: {}", lines[9]);
    assert_eq!(lines[10]["status"], 401, "tampered: {}", lines[10]);
    p.signal("-INT");
    let (code, _) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
    assert_eq!(code, 0);
}

/// `[log] format = "json"`: one JSON object per line, the access log at info with what an
/// operator ships (request id, caller, route, method, path without the query, status, ms to the
/// microsecond, upstream status, the platform's log id), an audit line per admin action, and no
/// token anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_access_log_and_audit_lines_one_event_per_line() {
    let sb = sandbox().await;
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .extra("[log]\nformat = \"json\"\n")
        .render();
    let cfg = text_file(&text);
    let (mut p, port, admin_port) = Proc::serve(&["serve", "--config", cfg.path().to_str().unwrap()], &[]);
    let http = Http::default();
    let r = http
        .send(
            Method::GET,
            &format!("http://127.0.0.1:{port}/js/getticket/?secret_in_query=xyz"),
            &[("x-gateway-key", CALLER_KEY), ("x-request-id", "req-123")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let import = json!({"access_token": "act.imported", "refresh_token": "rft.imported",
        "expires_in": 1296000, "refresh_expires_in": 2592000})
    .to_string();
    let r = http
        .send(
            Method::PUT,
            &format!("http://127.0.0.1:{admin_port}/admin/users/main/ou_audit"),
            &[("x-admin-key", ADMIN_KEY)],
            import,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    p.wait_for("admin imported");
    p.signal("-TERM");
    let (code, log) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
    assert_eq!(code, 0, "{log}");
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON event per line: {l:?}: {e}")))
        .collect();
    let access = events
        .iter()
        .find(|e| e["target"] == "access")
        .unwrap_or_else(|| panic!("no access line: {log}"));
    assert_eq!(access["level"], "INFO");
    assert_eq!(access["request_id"], "req-123");
    assert_eq!(access["caller"], "backend");
    assert_eq!(access["route"], "ticket");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["path"], "/js/getticket/", "never the query");
    assert_eq!(access["status"], 200);
    assert_eq!(access["upstream_status"], 200);
    let ms = access["ms"].as_f64().unwrap();
    assert!(
        ms > 0.0 && (ms * 1000.0 - (ms * 1000.0).round()).abs() < 1e-6,
        "ms to the µs: {ms}"
    );
    let audit = events
        .iter()
        .find(|e| e["target"] == "audit")
        .unwrap_or_else(|| panic!("no audit line: {log}"));
    assert_eq!(
        (
            audit["action"].as_str(),
            audit["app"].as_str(),
            audit["open_id"].as_str()
        ),
        (Some("import"), Some("main"), Some("ou_audit"))
    );
    assert!(!log.contains("xyz"), "the query is never logged");
    assert!(
        !log.contains("act.") && !log.contains("clt.") && !log.contains("rft."),
        "{log}"
    );
}

/// Text logs: a config warning is logged once under WARN without a second "warning:", and a
/// failed start says "cannot start" once.
#[test]
fn text_logs_have_no_doubled_prefixes() {
    let secret = secret_file();
    // The proxy address is taken: the start fails after the config was read.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = TestConfig::new("http://127.0.0.1:9", secret.path())
        .listen_at(&taken.local_addr().unwrap().to_string(), "127.0.0.1:0")
        .extra("[[routes]]\nname = \"shadowed\"\npath = \"/js/getticket/\"\ntoken = \"client\"\n")
        .render();
    let cfg = text_file(&text);
    let out = Command::new(BIN)
        .args(["serve", "--config", cfg.path().to_str().unwrap()])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("can never match"), "the warning is there: {log}");
    assert!(!log.contains("WARN warning:") && !log.contains("ERROR error:"), "{log}");
    assert_eq!(log.matches("cannot start").count(), 1, "{log}");
}

/// Shell completions that the shell accepts, and a manual page naming every subcommand.
#[test]
fn completions_and_the_man_page() {
    let out = Command::new(BIN).args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for sub in ["serve", "check", "demo", "keygen", "hash-key", "rekey", "sandbox"] {
        assert!(script.contains(sub), "{sub} not completed");
    }
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(script.as_bytes()).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(file.path()).output().unwrap();
    assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));
    let out = Command::new(BIN).arg("man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.contains(".TH douyin-gateway 1") && page.contains(".SH NAME"),
        "{page}"
    );
    assert!(page.contains(env!("CARGO_PKG_VERSION")));
    let out = Command::new(BIN).arg("--version").output().unwrap();
    let version = String::from_utf8(out.stdout).unwrap();
    assert!(version.contains("(git "), "--version names the commit: {version}");
}

/// `man douyin-gateway` covers the commands (every one `--help` lists, with its options), the
/// configuration file, signals, files, environment and exit status, and names no manual page or
/// repository file that does not exist.
#[test]
fn the_man_page_covers_what_an_operator_needs_and_names_only_what_exists() {
    let out = Command::new(BIN).arg("man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    let plain = page
        .replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "");
    for section in [
        ".SH COMMANDS",
        ".SH CONFIGURATION",
        ".SH SIGNALS",
        ".SH FILES",
        ".SH ENVIRONMENT",
        ".SH EXIT STATUS",
    ] {
        assert!(page.contains(section), "no {section}:\n{page}");
    }
    for word in [
        "SIGHUP",
        "SIGTERM",
        "SIGINT",
        "RUST_LOG",
        "--allow-example-keys",
        "check FILE",
    ] {
        assert!(plain.contains(word), "no {word}:\n{plain}");
    }
    // Every command `--help` lists, and every option of each.
    let help = String::from_utf8(Command::new(BIN).arg("--help").output().unwrap().stdout).unwrap();
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 10, "{help}");
    for c in commands {
        assert!(
            plain.contains(&format!("douyin-gateway {c} ")) || plain.contains(&format!("douyin-gateway {c}\n")),
            "{c} missing"
        );
        let sub = String::from_utf8(Command::new(BIN).args([c, "--help"]).output().unwrap().stdout).unwrap();
        for option in sub.split_whitespace().filter(|w| w.starts_with("--") && *w != "--help") {
            let option = option.trim_end_matches([',', '.', '`']);
            assert!(plain.contains(option), "{c} {option} missing");
        }
    }
    // Manual pages it names: none but its own (the old page pointed at douyin-gateway-serve(1)…).
    let named: Vec<&str> = plain
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter(|w| {
            w.len() > 3
                && w.ends_with(')')
                && w[..w.len() - 1].ends_with(|c: char| c.is_ascii_digit())
                && w.contains('(')
        })
        .collect();
    assert!(named.is_empty(), "names pages that do not exist: {named:?}");
    // Repository files it names exist.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = 0;
    for word in plain.split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '(' || c == ')') {
        let word = word.trim_end_matches([':', '.']);
        let relative = !word.starts_with('/') && !word.contains('*');
        if relative && [".md", ".toml", ".service", ".env"].iter().any(|e| word.ends_with(e)) && word.len() > 5 {
            assert!(root.join(word).is_file(), "{word} does not exist");
            files += 1;
        }
    }
    assert!(files >= 5, "{files} files named");
    // roff that renders without warnings, when groff is here.
    if let Ok(mut groff) = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        groff.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
        let done = groff.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&done.stderr);
        assert!(done.status.success() && said.is_empty(), "{said}");
    }
}

/// `serve` with no config file says how to give one.
#[test]
fn serve_without_a_config_file_says_how_to_give_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("--config PATH") && log.contains("demo"), "{log}");
}

/// TOML-level problems (unknown keys, wrong types, bad values, a missing required key) are all
/// listed in one run, in file order, each with its line and key path, beside the others; a near
/// miss gets a "did you mean".
#[test]
fn check_lists_toml_level_problems_all_at_once() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(
        br#"[server]
listen = "127.0.0.1:8080"
admin_listne = "127.0.0.1:9090"
max_body_bytes = "big"

[store]
kind = "memory"

[[apps]]
name = "main"
client_key = "aw1"
client_secret_env = "DG_TEST_SURELY_UNSET_VAR"

[[routes]]
name = "r1"
path = "/a"
token = "clinet"

[[routes]]
name = "r2"
path = "/b"

[[routes]]
name = "r3"
path = "/c"
tokn = "client"
inject = "json_body"
"#,
    )
    .unwrap();
    let (code, out) = run(&["check", "--config", f.path().to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    let wanted = [
        ":3: server.admin_listne: unknown field `admin_listne`",
        ":4: server.max_body_bytes: expected a whole number ≥ 0, not the string \"big\"",
        ":12: apps[0].client_secret_env: environment variable DG_TEST_SURELY_UNSET_VAR is not set",
        ":17: routes[0].token: unknown value \"clinet\"",
        ":19: routes[1]: missing field `token`",
        ":26: routes[2].tokn: unknown field `tokn`",
    ];
    let mut last = 0;
    for want in wanted {
        let at = out.find(want).unwrap_or_else(|| panic!("missing {want:?} in:\n{out}"));
        assert!(at >= last, "not in file order: {want:?} in:\n{out}");
        last = at;
    }
    assert!(out.contains("did you mean `admin_listen`?"), "{out}");
    assert!(out.contains("did you mean \"client\"?"), "{out}");
    assert!(out.contains("did you mean `token`?"), "{out}");
    // `tokn` was the token key: its absence is not a second problem.
    assert!(!out.contains(":24: routes[2]: missing field"), "{out}");
    assert!(
        !out.contains("no [[routes]]"),
        "no warning caused by the entries taken out: {out}"
    );
}

/// A config file written to a temporary file, and what `check FILE` says of it: exit code, the
/// `error:` lines, everything.
fn check_text(text: &str) -> (i32, Vec<String>, String) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    let (code, out) = run(&["check", f.path().to_str().unwrap()], &[]);
    let errors = out
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(String::from)
        .collect();
    (code, errors, out)
}

/// A small valid config: one app whose secret is a file, a caller, two routes.
fn small_config(secret: &std::path::Path) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:8080"

[upstream]
base_url = "https://open.douyin.com"

[store]
kind = "memory"

[[apps]]
name = "main"
client_key = "aw0123456789abcd"
client_secret_file = "{}"

[[callers]]
name = "backend"
api_key_sha256 = "{}"
routes = ["*"]

[[routes]]
name = "video-list"
path = "/api/douyin/v1/video/video_list/"
token = "user"

[[routes]]
name = "everything-else"
path = "/*"
token = "client"
"#,
        secret.display(),
        douyin_gateway::caller::hash_key("a-key-of-our-own")
    )
}

/// `check FILE`, as an operator types it first, is `check --config FILE`.
#[test]
fn check_takes_the_file_as_its_argument() {
    let secret = secret_file();
    let (code, errors, out) = check_text(&small_config(secret.path()));
    assert_eq!((code, errors.len()), (0, 0), "{out}");
    assert!(out.contains("valid: 1 app(s), 2 route(s)"), "{out}");
    let (code, out) = run(&["check", "a.toml", "--config", "b.toml"], &[]);
    assert_eq!(code, 2, "one file, not two: {out}");
}

/// A missing `client_key` is one error: not also "token = … needs app" for every route of the
/// one app it took out.
#[test]
fn a_missing_key_is_reported_once() {
    let secret = secret_file();
    let text = small_config(secret.path()).replace("client_key = \"aw0123456789abcd\"\n", "");
    let (code, errors, out) = check_text(&text);
    assert_eq!(code, 1, "{out}");
    assert_eq!(errors.len(), 1, "{out}");
    assert!(errors[0].contains(":10: apps[0]: missing field `client_key`"), "{out}");
    assert!(!out.contains("needs app"), "{out}");
}

/// A misspelt table is an unknown table, with the one it means: its keys are not reported one by
/// one under the table above it.
#[test]
fn an_unknown_table_is_reported_once_with_the_table_it_means() {
    let secret = secret_file();
    let text = small_config(secret.path()).replace("[upstream]", "[upstreem]");
    let (code, errors, out) = check_text(&text);
    assert_eq!(code, 1, "{out}");
    assert_eq!(errors.len(), 1, "{out}");
    assert!(
        errors[0].contains(":4: upstreem: unknown table [upstreem]; did you mean [upstream]?"),
        "{out}"
    );
    assert!(!out.contains("server.base_url"), "{out}");
    // An array of tables, and a table inside a known one, likewise.
    let text = small_config(secret.path())
        .replace("[[callers]]", "[[caller]]")
        .replace(
            "[store]\nkind = \"memory\"\n",
            "[store]\nkind = \"memory\"\n[store.tls]\nca = \"x\"\n",
        );
    let (code, errors, out) = check_text(&text);
    assert_eq!((code, errors.len()), (1, 2), "{out}");
    assert!(out.contains("unknown table [store.tls]"), "{out}");
    assert!(
        out.contains("unknown table [[caller]]; did you mean [[callers]]?"),
        "{out}"
    );
}

/// A bad value of a key with a fixed set of values is one error, in the file's words, with the
/// values it accepts: not also `missing field token`.
#[test]
fn a_bad_value_is_reported_once_in_the_files_words() {
    let secret = secret_file();
    let text = small_config(secret.path()).replacen("token = \"user\"", "token = \"users\"", 1);
    let (code, errors, out) = check_text(&text);
    assert_eq!(code, 1, "{out}");
    assert_eq!(errors.len(), 1, "{out}");
    assert!(
        errors[0]
            .contains(":23: routes[0].token: unknown value \"users\", expected one of \"none\", \"client\", \"user\""),
        "{out}"
    );
    assert!(errors[0].ends_with("did you mean \"user\"?"), "{out}");
    assert!(!out.contains("missing field"), "{out}");
}

/// Numbers and values as the file writes them: "a whole number ≥ 0", not `usize`; `"user"`, not
/// `User`.
#[test]
fn messages_use_the_files_words() {
    let secret = secret_file();
    let text = small_config(secret.path()).replace(
        "listen = \"127.0.0.1:8080\"\n",
        "listen = \"127.0.0.1:8080\"\nmax_in_flight = -1\nallow_anonymous = \"no\"\n",
    );
    let (code, errors, out) = check_text(&text);
    assert_eq!((code, errors.len()), (1, 2), "{out}");
    assert!(
        out.contains(":3: server.max_in_flight: expected a whole number ≥ 0, not -1"),
        "{out}"
    );
    assert!(
        out.contains(":4: server.allow_anonymous: expected true or false, not the string \"no\""),
        "{out}"
    );
    assert!(
        !out.contains("usize") && !out.contains("u64") && !out.contains("boolean"),
        "{out}"
    );
    // Two apps, a route naming neither.
    let text = small_config(secret.path()).replace(
        "[[callers]]",
        &format!(
            "[[apps]]\nname = \"second\"\nclient_key = \"aw2\"\nclient_secret_file = \"{}\"\n\n[[callers]]",
            secret.path().display()
        ),
    );
    let (code, _, out) = check_text(&text);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("routes[0].app: token = \"user\" needs app = \"…\" when there is not exactly one [[apps]]"),
        "{out}"
    );
    assert!(!out.contains("User"), "{out}");
}

/// `serve` with the example keys and a placeholder secret (the repository's `config.toml` and the
/// systemd env template, unedited) exits 1 before listening, naming each key and never the
/// secret's value.
#[test]
fn serve_refuses_the_example_keys_and_a_placeholder_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let placeholder = "replace-me-with-the-client-secret";
    let out = Command::new(BIN)
        .args(["serve", "--config", path])
        .env("DOUYIN_CLIENT_SECRET", placeholder)
        .env("DOUYIN_GATEWAY_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    for key in [
        "admin.api_key_sha256: is the example's key",
        "apps[0].client_key: is the example's placeholder",
        "apps[0].client_secret_env: environment variable DOUYIN_CLIENT_SECRET holds a placeholder",
        "callers[0].api_key_sha256: is the example's key",
    ] {
        assert!(log.contains(key), "{key:?} not named in:\n{log}");
    }
    assert!(log.contains("--allow-example-keys"), "{log}");
    assert!(!log.contains(placeholder), "the secret's value is never printed: {log}");
    assert!(!log.contains("listening"), "{log}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "no store created"
    );
}

/// A reload is held to what the start was: example keys written into the file later are refused
/// by SIGHUP as by the start, and the running config keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_refuses_the_example_keys_too() {
    let sb = sandbox().await;
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path()).render();
    let cfg = text_file(&text);
    let (mut p, _, admin_port) = Proc::serve(&["serve", "--config", cfg.path().to_str().unwrap()], &[]);
    let example = text.replace(
        &douyin_gateway::caller::hash_key(ADMIN_KEY),
        &douyin_gateway::caller::hash_key("example-admin-key"),
    );
    std::fs::write(cfg.path(), example).unwrap();
    p.signal("-HUP");
    let line = p.wait_for_any(&["config reload refused", "config reloaded"]);
    assert!(
        line.contains("config reload refused") && line.contains("admin.api_key_sha256: is the example's key"),
        "{line}"
    );
    let tokens = format!("http://127.0.0.1:{admin_port}/admin/tokens");
    let http = Http::default();
    let r = http
        .send(Method::GET, &tokens, &[("x-admin-key", "example-admin-key")], "")
        .await;
    assert_ne!(r.status, 200, "{}", r.text());
    let r = http.send(Method::GET, &tokens, &[("x-admin-key", ADMIN_KEY)], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    p.signal("-TERM");
    let (code, _) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
    assert_eq!(code, 0);
}

/// `--allow-example-keys` starts a deliberate test install with the example keys, warning of
/// each; the example caller key then works.
#[tokio::test(flavor = "multi_thread")]
async fn serve_with_allow_example_keys_serves_and_warns() {
    let sb = sandbox().await;
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .render()
        .replace(
            &douyin_gateway::caller::hash_key(ADMIN_KEY),
            &douyin_gateway::caller::hash_key("example-admin-key"),
        )
        .replace(
            &douyin_gateway::caller::hash_key(CALLER_KEY),
            &douyin_gateway::caller::hash_key("example-caller-key"),
        );
    let cfg = text_file(&text);
    let cfg_path = cfg.path().to_str().unwrap();
    let (code, out) = run(&["serve", "--config", cfg_path], &[]);
    assert_eq!(code, 1, "refused without the flag: {out}");
    let (p, port, _) = Proc::serve(&["serve", "--allow-example-keys", "--config", cfg_path], &[]);
    let warned = p.seen.join("\n");
    assert!(
        warned.contains("WARN") && warned.contains("admin.api_key_sha256: is the example's key"),
        "{warned}"
    );
    assert!(
        warned.contains("callers[0].api_key_sha256: is the example's key"),
        "{warned}"
    );
    let r = Http::default()
        .send(
            Method::GET,
            &format!("http://127.0.0.1:{port}/js/getticket/"),
            &[("x-gateway-key", "example-caller-key")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    p.signal("-TERM");
    let (code, _) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
    assert_eq!(code, 0);
}

/// SIGHUP with a change that needs a restart: the reload goes ahead and each such key is named.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_names_the_settings_that_need_a_restart() {
    let sb = sandbox().await;
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path()).render();
    let cfg = text_file(&text);
    let (mut p, _, _) = Proc::serve(&["serve", "--config", cfg.path().to_str().unwrap()], &[]);
    let changed = text
        .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"")
        .replace("connect_timeout_ms = 1000", "connect_timeout_ms = 1500")
        + "\n[log]\nformat = \"json\"\n";
    std::fs::write(cfg.path(), changed).unwrap();
    p.signal("-HUP");
    let seen = p.wait_for("config reloaded");
    let _ = seen;
    p.signal("-TERM");
    let (_, log) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
    for key in ["server.listen", "upstream.connect_timeout_ms", "log.format"] {
        assert!(
            log.contains(&format!(
                "{key} changed in the config file: it takes effect only after a restart"
            )),
            "{key}: {log}"
        );
    }
    assert!(!log.contains("store changed"), "{log}");
}
