//! Logs nobody can forge: values from outside (the platform's descriptions, open_ids, a caller's
//! request id) are escaped in text logs, so none can start a line of its own; JSON logs stay one
//! object per line. A caller's `X-Request-Id` is used only when plain.

mod common;

use common::*;
use http::Method;
use serde_json::json;

/// A gateway process logging in `format`, on listeners of its own, against `sb`.
/// The files are kept until the end of the test.
fn spawn(sb: &douyin_gateway::sandbox::Sandbox, format: &str) -> (Proc, u16, u16, [tempfile::NamedTempFile; 2]) {
    spawn_with(sb, &format!("[log]\nformat = \"{format}\"\n"), &[])
}

/// [`spawn`] with more config (`[log]` and after) and environment.
fn spawn_with(
    sb: &douyin_gateway::sandbox::Sandbox,
    extra: &str,
    env: &[(&str, &str)],
) -> (Proc, u16, u16, [tempfile::NamedTempFile; 2]) {
    let (cfg, secret) = config_files(sb, extra);
    let env: Vec<(&str, &str)> = [("NO_COLOR", "1")].into_iter().chain(env.iter().copied()).collect();
    let (p, port, admin_port) = Proc::serve(&["serve", "--config", cfg.path().to_str().unwrap()], &env);
    (p, port, admin_port, [cfg, secret])
}

/// The standard config with `extra`, and the secret file it names.
fn config_files(
    sb: &douyin_gateway::sandbox::Sandbox,
    extra: &str,
) -> (tempfile::NamedTempFile, tempfile::NamedTempFile) {
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path()).extra(extra).render();
    let cfg = text_file(&text);
    (cfg, secret)
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

/// `n` calls on the client route, `conns` at a time; each answered 200.
async fn calls(port: u16, n: usize, conns: usize) {
    let http = Http::default();
    let url = format!("http://127.0.0.1:{port}/js/getticket/");
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..conns {
        let (http, url) = (http.clone(), url.clone());
        let mine = n / conns + usize::from(c < n % conns);
        tasks.spawn(async move {
            for _ in 0..mine {
                let r = http.get(&url).await;
                assert_eq!(r.status, 200, "{}", r.text());
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// The access lines of a log, in either format.
fn access_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" INFO access request_id=") || l.contains(r#""target":"access""#))
        .collect()
}

/// The access log is written in batches off the request path: every line of every call is there
/// once the process has stopped (SIGTERM flushes what was still buffered), in both formats, with
/// the fields the log had before.
#[tokio::test(flavor = "multi_thread")]
async fn every_access_line_is_written_by_the_time_the_gateway_stops() {
    const N: usize = 300;
    for format in ["text", "json"] {
        let sb = sandbox().await;
        let (p, port, _, _files) = spawn(&sb, format);
        calls(port, N, 4).await;
        // At once: lines of the last calls are still in the buffers.
        p.signal("-TERM");
        let (code, log) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
        assert_eq!(code, 0, "{log}");
        let lines = access_lines(&log);
        assert_eq!(
            lines.len(),
            N,
            "{format}: {} access lines of {N} calls:\n{log}",
            lines.len()
        );
        let ids: std::collections::HashSet<String> = lines
            .iter()
            .map(|l| match format {
                "text" => field(l, "request_id").to_string(),
                _ => serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"].to_string(),
            })
            .collect();
        assert_eq!(ids.len(), N, "one line per call");
        let last = lines[N - 1];
        match format {
            "text" => {
                for f in [
                    "peer=127.0.0.1:",
                    "caller=\"backend\"",
                    "route=\"ticket\"",
                    "method=GET",
                    "path=/js/getticket/",
                    "status=200",
                    "upstream_status=200",
                    "logid=",
                ] {
                    assert!(last.contains(f), "{f} in {last}");
                }
            }
            _ => {
                let v: serde_json::Value = serde_json::from_str(last).unwrap();
                assert_eq!(
                    (v["level"].as_str(), v["message"].as_str()),
                    (Some("INFO"), Some("access")),
                    "{last}"
                );
                assert_eq!(
                    (v["route"].as_str(), v["status"].as_u64()),
                    (Some("ticket"), Some(200)),
                    "{last}"
                );
            }
        }
    }
}

/// `RUST_LOG=…,access=off` and `[log] access = false` still turn the access log off.
#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_is_still_turned_off_by_rust_log_and_by_the_config() {
    let sb = sandbox().await;
    for (extra, env) in [
        ("", &[("RUST_LOG", "info,access=off")][..]),
        ("[log]\naccess = false\n", &[][..]),
    ] {
        let (p, port, _, _files) = spawn_with(&sb, extra, env);
        calls(port, 20, 2).await;
        p.signal("-TERM");
        let (code, log) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
        assert_eq!(code, 0, "{log}");
        assert!(log.contains("stopped"), "{log}");
        assert_eq!(access_lines(&log), Vec::<&str>::new(), "{extra:?} {env:?}");
    }
}

/// stderr a pipe nobody reads: once it is full, the access log's writer is stuck. Calls go on
/// being answered at once; their lines are dropped (a bounded buffer per thread) and counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_log_writer_drops_access_lines_and_counts_them_and_no_call_waits() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let sb = sandbox().await;
    let (cfg, _secret) = config_files(&sb, "");
    let (listeners, port, admin_port) = listeners();
    let [l0, l1] = &listeners;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two new descriptors, owned from here on.
    let (_unread, write_end) = unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    let mut cmd = Proc::command_on(&["serve", "--config", cfg.path().to_str().unwrap()], &[], [l0, l1]);
    cmd.stdout(std::process::Stdio::null()).stderr(write_end);
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let http = Http::default();
    let dropped = |m: &str| metric(m, "douyin_gateway_access_log_dropped_total").unwrap_or(-1.0);
    // The listeners were bound before the process started: the first scrape waits for it.
    let scrape = format!("http://127.0.0.1:{admin_port}/metrics");
    let first = http.send(Method::GET, &scrape, &[], "").await.text();
    assert_eq!(dropped(&first), 0.0, "{first}");
    // Bounded: a 64 KiB pipe, then 512 KiB per proxy thread, are some 5,000 lines.
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        for round in 0..40 {
            calls(port, 500, 8).await;
            let m = http.send(Method::GET, &scrape, &[], "").await.text();
            if dropped(&m) > 0.0 {
                return (round + 1) * 500;
            }
        }
        panic!("20,000 calls and no line dropped");
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let made = outcome.expect("calls answered while the log writer was stuck");
    assert!(made >= 2_500, "dropped after only {made} calls");
}
