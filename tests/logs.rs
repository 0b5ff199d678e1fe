//! Logs nobody can forge: values from outside (the platform's descriptions, open_ids, a caller's
//! request id) are escaped in text logs, so none can start a line of its own; JSON logs stay one
//! object per line. A caller's `X-Request-Id` is used only when plain.

mod common;

use common::*;
use http::Method;
use serde_json::json;
use std::io::Write;

/// A gateway process logging in `format`, on listeners of its own, against `sb`.
/// The files are kept until the end of the test.
fn spawn(sb: &douyin_gateway::sandbox::Sandbox, format: &str) -> (Proc, u16, u16, [tempfile::NamedTempFile; 2]) {
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .extra(&format!("[log]\nformat = \"{format}\"\n"))
        .render();
    let mut cfg = tempfile::NamedTempFile::new().unwrap();
    cfg.write_all(text.as_bytes()).unwrap();
    let (listeners, port, admin_port) = listeners();
    let [l0, l1] = &listeners;
    let mut p = Proc::spawn_on(
        &["serve", "--config", cfg.path().to_str().unwrap()],
        &[("NO_COLOR", "1")],
        [l0, l1],
    );
    p.wait_for("gateway listening");
    (p, port, admin_port, [cfg, secret])
}

const FORGED: &str = "x\r\nFAKE level=ERROR forged";

#[tokio::test(flavor = "multi_thread")]
async fn values_from_outside_cannot_start_a_log_line_of_their_own() {
    for format in ["text", "json"] {
        let sb = sandbox().await;
        let http = Http::default();
        // The platform refuses every token with a description holding a line break.
        http.control(
            &sb,
            "/sandbox/faults",
            json!({"token_error": {"code": 10013, "description": FORGED}}),
        )
        .await;
        let (mut p, port, admin_port, _cfg) = spawn(&sb, format);
        let r = http.get(&format!("http://127.0.0.1:{port}/js/getticket/")).await;
        assert_eq!(r.status, 503, "{}", r.text());
        // An admin imports, then deletes, a user whose open_id holds CR LF.
        let user = format!("http://127.0.0.1:{admin_port}/admin/users/main/u%0d%0aFAKE%20level=ERROR%20forged");
        let import = json!({"access_token": "act.i", "refresh_token": "rft.i", "expires_in": 1296000,
            "refresh_expires_in": 2592000})
        .to_string();
        let r = http
            .send(Method::PUT, &user, &[("x-admin-key", ADMIN_KEY)], import)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = http
            .send(Method::DELETE, &user, &[("x-admin-key", ADMIN_KEY)], "")
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        p.wait_for("admin deleted");
        p.signal("-TERM");
        let (code, log) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
        assert_eq!(code, 0, "{log}");
        let forged: Vec<&str> = log.lines().filter(|l| l.trim_start().starts_with("FAKE")).collect();
        assert!(forged.is_empty(), "{format}: forged lines {forged:?} in:\n{log}");
        match format {
            "text" => {
                // The values are there, escaped.
                let deleted = log.lines().find(|l| l.contains("admin deleted")).unwrap();
                assert!(deleted.contains(r"u\r\nFAKE level=ERROR forged"), "{deleted}");
                assert!(
                    log.lines().any(|l| l.contains(r"x\r\nFAKE level=ERROR forged")),
                    "the platform's description, escaped:\n{log}"
                );
                assert!(!log.contains('\r'), "{log:?}");
            }
            _ => {
                for l in log.lines().filter(|l| !l.trim().is_empty()) {
                    let v: serde_json::Value =
                        serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON event per line: {l:?}: {e}"));
                    assert!(v.is_object());
                }
                assert!(log.contains(r"u\r\nFAKE level=ERROR forged"), "{log}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callers_request_id_is_kept_only_when_plain_and_logged_escaped_otherwise() {
    let sb = sandbox().await;
    let (p, port, admin_port, _cfg) = spawn(&sb, "text");
    let http = Http::default();
    let call = |rid: String| {
        let http = http.clone();
        async move {
            http.send(
                Method::GET,
                &format!("http://127.0.0.1:{port}/js/getticket/"),
                &[("x-gateway-key", CALLER_KEY), ("x-request-id", &rid)],
                "",
            )
            .await
        }
    };
    let generated = |v: &str| {
        let (prefix, n) = v.split_once('-').unwrap_or_else(|| panic!("{v}"));
        prefix.len() == 8 && (prefix.to_string() + n).bytes().all(|b| b.is_ascii_hexdigit())
    };
    // Plain ids are kept.
    for rid in ["req-123", "a.B_c:9-z", &"x".repeat(64)] {
        let r = call(rid.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.headers["x-request-id"], rid);
    }
    // Markup, another request's id with a space, anything longer than 64: replaced.
    let script = "\"><script>alert(1)</script>";
    for rid in [script, "req-123 status=500", &"x".repeat(65)] {
        let r = call(rid.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let got = r.headers["x-request-id"].to_str().unwrap().to_string();
        assert_ne!(got, rid);
        assert!(generated(&got), "{got}");
    }
    let r = call(script.to_string()).await;
    let replaced = r.headers["x-request-id"].to_str().unwrap().to_string();
    assert!(!r.text().contains("<script>"));
    // The admin listener too.
    let r = http
        .send(
            Method::GET,
            &format!("http://127.0.0.1:{admin_port}/healthz"),
            &[("x-request-id", script)],
            "",
        )
        .await;
    assert!(generated(r.headers["x-request-id"].to_str().unwrap()));
    p.signal("-TERM");
    let (code, log) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
    assert_eq!(code, 0, "{log}");
    // The access line carries the gateway's id, and the caller's, escaped.
    let line = log
        .lines()
        .find(|l| l.contains(&format!("request_id={replaced} ")))
        .unwrap_or_else(|| panic!("no line for {replaced}:\n{log}"));
    assert!(
        line.contains(r"caller_request_id=\x22><script>alert(1)</script>"),
        "{line}"
    );
    let spaced = log
        .lines()
        .find(|l| l.contains("caller_request_id=req-123"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(spaced.contains(r"caller_request_id=req-123\x20status=500 "), "{spaced}");
    assert!(!log.contains("request_id=req-123 status=500"), "{log}");
}
