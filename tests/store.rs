//! The durable store: SQLite survives restarts and `kill -9`, holds no
//! plaintext token, refuses a wrong key, and rotates keys.

mod common;

use base64::Engine;
use common::*;
use http::Method;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const VIDEO: &str = "/api/douyin/v1/video/video_list/";

fn new_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

/// A unique environment variable holding `key` (tests share one process).
fn key_var(key: &str) -> String {
    let var = format!("DG_TEST_KEY_{}", hex::encode(rand::random::<[u8; 6]>()));
    std::env::set_var(&var, key);
    var
}

fn sqlite_store(db: &Path, var: &str, previous: Option<&str>) -> String {
    let prev = previous
        .map(|p| format!("previous_encryption_key_env = \"{p}\"\n"))
        .unwrap_or_default();
    format!(
        "[store]\nkind = \"sqlite\"\npath = \"{}\"\nencryption_key_env = \"{var}\"\n{prev}",
        db.display()
    )
}

async fn gateway_on(sb: &douyin_gateway::sandbox::Sandbox, store: &str) -> Result<Gateway, String> {
    let upstream = sb.url();
    let secret = secret_file();
    let (listen, admin) = (bind().await, bind().await);
    let addr = admin.local_addr().unwrap();
    let text = TestConfig::standard(&upstream, secret.path())
        .store(store)
        .redirect_to(addr)
        .render();
    let (config, _) = douyin_gateway::config::Config::load_str(&text, "test").map_err(|e| e.to_string())?;
    let running = douyin_gateway::server::start_on(config, None, listen, admin).await?;
    Ok(Gateway {
        running,
        secret,
        config_file: tempfile::NamedTempFile::new().unwrap(),
    })
}

/// Every token value the platform has seen.
async fn seen_tokens(http: &Http, sb: &douyin_gateway::sandbox::Sandbox) -> Vec<String> {
    let mut out = Vec::new();
    for e in http.requests(sb).await {
        for k in ["access_token_headers", "access_token_params"] {
            for t in e[k].as_array().unwrap() {
                out.push(t.as_str().unwrap().to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// No token value appears anywhere in the database files (main, WAL, shared memory).
fn assert_no_plaintext(db: &Path, tokens: &[String]) {
    assert!(!tokens.is_empty());
    let mut files = 0;
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", db.display());
        let Ok(bytes) = std::fs::read(&p) else { continue };
        files += 1;
        for t in tokens {
            assert!(!bytes.windows(t.len()).any(|w| w == t.as_bytes()), "token bytes in {p}");
        }
        for marker in [&b"act."[..], b"rft.", b"clt."] {
            assert!(!bytes.windows(4).any(|w| w == marker), "token-like bytes in {p}");
        }
    }
    assert!(files >= 1);
}

#[tokio::test]
async fn sqlite_keeps_users_and_client_tokens_across_restarts_encrypted() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/tokens.db");
    let var = key_var(&new_key());
    let http = Http::default();

    let gw = gateway_on(&sb, &sqlite_store(&db, &var, None)).await.unwrap();
    let open_id = open_id_of(&http.authorize(&gw, "main").await.text());
    assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
    assert_eq!(
        http.get(&gw.url(&format!("{VIDEO}?open_id={open_id}"))).await.status,
        200
    );
    gw.running.stop().await;

    let gw = gateway_on(&sb, &sqlite_store(&db, &var, None)).await.unwrap();
    let r = http.get(&gw.url(&format!("{VIDEO}?open_id={open_id}"))).await;
    assert_eq!(
        r.json()["data"]["error_code"],
        0,
        "the user survived the restart: {}",
        r.text()
    );
    assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
    let s = http.stats(&sb).await;
    assert_eq!(
        n(&s["client_token_calls"]),
        1,
        "the client_token survived too: no fetch after restart"
    );
    assert_eq!(n(&s["access_token_calls"]), 1);

    // A refresh after the restart writes the new state; a third start sees it.
    http.control(&sb, "/sandbox/revoke", json!({"expire_user": open_id}))
        .await;
    assert_eq!(
        http.get(&gw.url(&format!("{VIDEO}?open_id={open_id}"))).await.json()["data"]["error_code"],
        0
    );
    gw.running.stop().await;
    let gw = gateway_on(&sb, &sqlite_store(&db, &var, None)).await.unwrap();
    assert_eq!(
        http.get(&gw.url(&format!("{VIDEO}?open_id={open_id}"))).await.json()["data"]["error_code"],
        0
    );
    assert_eq!(
        n(&http.stats(&sb).await["refresh_token_calls"]),
        1,
        "the refreshed token was stored"
    );
    gw.running.stop().await;

    assert_no_plaintext(&db, &seen_tokens(&http, &sb).await);
    #[cfg(unix)]
    for suffix in ["", "-wal"] {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(format!("{}{suffix}", db.display())) {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{suffix}");
        }
    }
}

#[tokio::test]
async fn a_wrong_key_refuses_to_start_and_overwrites_nothing() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokens.db");
    let http = Http::default();
    let gw = gateway_on(&sb, &sqlite_store(&db, &key_var(&new_key()), None))
        .await
        .unwrap();
    http.authorize(&gw, "main").await;
    gw.running.stop().await;
    let before = std::fs::read(&db).unwrap();

    let err = gateway_on(&sb, &sqlite_store(&db, &key_var(&new_key()), None))
        .await
        .err()
        .expect("must not start");
    assert!(err.contains("key id"), "{err}");
    assert!(err.contains("encryption_key_env"), "says what to do: {err}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "nothing overwritten");

    std::env::set_var("DG_TEST_SHORT_KEY", "c2hvcnQ=");
    let err = gateway_on(&sb, &sqlite_store(&db, "DG_TEST_SHORT_KEY", None))
        .await
        .err()
        .expect("bad key");
    assert!(err.contains("32"), "{err}");
}

#[tokio::test]
async fn key_rotation_round_trip() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokens.db");
    let http = Http::default();
    let (old, new) = (key_var(&new_key()), key_var(&new_key()));

    let gw = gateway_on(&sb, &sqlite_store(&db, &old, None)).await.unwrap();
    let open_id = open_id_of(&http.authorize(&gw, "main").await.text());
    gw.running.stop().await;

    // New key alone cannot read the old records; with the old one as previous it can,
    // and records are rewritten under the new key as they load.
    assert!(gateway_on(&sb, &sqlite_store(&db, &new, None)).await.is_err());
    let gw = gateway_on(&sb, &sqlite_store(&db, &new, Some(&old))).await.unwrap();
    assert_eq!(
        http.get(&gw.url(&format!("{VIDEO}?open_id={open_id}"))).await.json()["data"]["error_code"],
        0
    );
    gw.running.stop().await;
    let gw = gateway_on(&sb, &sqlite_store(&db, &new, None)).await.unwrap();
    assert_eq!(
        http.get(&gw.url(&format!("{VIDEO}?open_id={open_id}"))).await.json()["data"]["error_code"],
        0
    );
    gw.running.stop().await;

    // `douyin-gateway rekey` rewrites everything under the current key in one go.
    let newest = key_var(&new_key());
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .store(&sqlite_store(&db, &newest, Some(&new)))
        .render();
    let out = rekey(&text);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 record(s) rewritten"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let gw = gateway_on(&sb, &sqlite_store(&db, &newest, None)).await.unwrap();
    assert_eq!(
        http.get(&gw.url(&format!("{VIDEO}?open_id={open_id}"))).await.json()["data"]["error_code"],
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_load_and_during_a_renewal_loses_no_user() {
    // Renewals run back to back (every refresh_token is always inside the window).
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        refresh_token_ttl: 3600,
        max_renewals: 100_000,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokens.db");
    let var = key_var(&new_key());
    let secret = secret_file();
    let make = |port: u16, admin_port: u16| {
        TestConfig::new(&sb.url(), secret.path())
            .tokens(|t| {
                t.renew_before_secs = 7200;
                t.max_renewals = 100000;
                t.maintain_interval_ms = 10;
            })
            .listen_port(port)
            .admin_port(admin_port)
            .store(&sqlite_store(&db, &var, None))
            .redirect_to(([127, 0, 0, 1], admin_port).into())
            .render()
    };
    let cfg = tempfile::NamedTempFile::new().unwrap();
    let cfg_path = cfg.path().to_str().unwrap().to_string();
    let env = [(var.as_str(), std::env::var(&var).unwrap())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let http = Http::default();
    // Ports known before the process starts (the redirect_uri names the admin one): the test
    // binds them and hands the sockets over.
    let start = || {
        let (bound, port, admin_port) = listeners();
        std::fs::write(&cfg_path, make(port, admin_port)).unwrap();
        let mut p = Proc::spawn_on(&["serve", "--config", &cfg_path], &env, [&bound[0], &bound[1]]);
        p.wait_for("gateway listening");
        (p, port, admin_port)
    };

    let (mut p, port, admin_port) = start();
    let admin = |path: &str| format!("http://127.0.0.1:{admin_port}{path}");
    let call = |open_id: &str| format!("http://127.0.0.1:{port}{VIDEO}?open_id={open_id}");

    // Authorize users through the running process.
    let mut users = Vec::new();
    for _ in 0..8 {
        let r = http
            .send(Method::GET, &admin("/oauth/authorize?app=main"), &[], "")
            .await;
        let consent = r.headers["location"].to_str().unwrap().to_string();
        let r = http.send(Method::GET, &consent, &[], "").await;
        let cb = r.headers["location"].to_str().unwrap().to_string();
        let page = http.send(Method::GET, &cb, &[], "").await;
        assert_eq!(page.status, 200, "{}", page.text());
        users.push(open_id_of(&page.text()));
    }
    // Renewals are running; load goes on meanwhile.
    let deadline = Instant::now() + Duration::from_secs(10);
    while n(&http.stats(&sb).await["renew_refresh_token_calls"]) < 40 {
        assert!(Instant::now() < deadline, "renewals did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let load = {
        let (http, urls) = (http.clone(), users.iter().map(|u| call(u)).collect::<Vec<_>>());
        tokio::spawn(async move {
            for i in 0.. {
                let _ = tokio::time::timeout(Duration::from_millis(500), http.get(&urls[i % urls.len()])).await;
            }
        })
    };
    // Make the platform slow, wait until a renewal is in flight, and kill the gateway right then.
    http.control(&sb, "/sandbox/faults", json!({"token_latency_ms": 800}))
        .await;
    let before = n(&http.stats(&sb).await["token_endpoint_requests"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while n(&http.stats(&sb).await["token_endpoint_requests"]) == before {
        assert!(Instant::now() < deadline, "no renewal went out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p.signal("-9");
    let _ = p.child.wait();
    load.abort();
    // Let the slow platform finish (or abandon) whatever it was doing, then behave.
    let deadline = Instant::now() + Duration::from_secs(10);
    while n(&http.stats(&sb).await["token_endpoint_in_flight"]) > 0 {
        assert!(Instant::now() < deadline, "the platform is still busy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    http.control(&sb, "/sandbox/faults", json!({})).await;

    let (p, port, _) = start();
    let call = |open_id: &str| format!("http://127.0.0.1:{port}{VIDEO}?open_id={open_id}");
    for u in &users {
        // Force a refresh: only the refresh_token the store holds can make this call work.
        http.control(&sb, "/sandbox/revoke", json!({"expire_user": u})).await;
        let r = http.get(&call(u)).await;
        assert_eq!(
            r.json()["data"]["error_code"],
            0,
            "user lost after kill -9: {}",
            r.text()
        );
    }
    p.signal("-TERM");
    let _ = tokio::task::spawn_blocking(move || p.finish()).await;
    let mut tokens = seen_tokens(&http, &sb).await;
    tokens.retain(|t| t.starts_with("act."));
    assert_no_plaintext(&db, &tokens);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_deleted_during_their_refresh_stays_deleted() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokens.db");
    let var = key_var(&new_key());
    let http = Http::default();
    let gw = gateway_on(&sb, &sqlite_store(&db, &var, None)).await.unwrap();
    let open_id = open_id_of(&http.authorize(&gw, "main").await.text());

    // A refresh is in flight (the platform is slow) when the user is forgotten.
    http.control(&sb, "/sandbox/revoke", json!({"expire_user": open_id}))
        .await;
    http.control(&sb, "/sandbox/faults", json!({"token_latency_ms": 600}))
        .await;
    let before = n(&http.stats(&sb).await["token_endpoint_requests"]);
    let call = tokio::spawn({
        let (http, url) = (http.clone(), gw.url(&format!("{VIDEO}?open_id={open_id}")));
        async move { http.get(&url).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while n(&http.stats(&sb).await["token_endpoint_requests"]) == before {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        http.admin(&gw, Method::DELETE, &format!("/admin/users/main/{open_id}"), "")
            .await
            .status,
        200
    );
    let _ = call.await.unwrap();
    http.control(&sb, "/sandbox/faults", json!({})).await;
    gw.running.stop().await;

    let gw = gateway_on(&sb, &sqlite_store(&db, &var, None)).await.unwrap();
    let r = http.get(&gw.url(&format!("{VIDEO}?open_id={open_id}"))).await;
    assert_eq!(r.status, 401, "the refresh brought a deleted user back: {}", r.text());
}
