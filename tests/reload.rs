//! A reload that moves listeners (issue 20, item 2): `listen`, `admin_listen` and `public_listen`
//! changed while calls flow, then SIGHUP. The new addresses answer, the old ones stop accepting,
//! no call fails (one in flight on a keep-alive connection included), and the log says what
//! happened; an address that cannot be bound keeps the old one, with an error naming the key.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Three loopback addresses free now (bound together, so they differ, and released; the gateway
/// binds them moments later).
fn free_addresses() -> [String; 3] {
    let held = [(); 3].map(|()| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    held.map(|l| l.local_addr().unwrap().to_string())
}

/// The test config with the three listeners at these addresses; `/oauth/*` not rate limited, so
/// the public listener's loop is answered every time.
fn config(sb: &douyin_gateway::sandbox::Sandbox, secret: &std::path::Path, at: [&str; 3]) -> String {
    config_public(sb, secret, [at[0], at[1]], Some(at[2]))
}

/// [`config`], the public listener optional.
fn config_public(
    sb: &douyin_gateway::sandbox::Sandbox,
    secret: &std::path::Path,
    at: [&str; 2],
    public: Option<&str>,
) -> String {
    TestConfig::standard(&sb.url(), secret)
        .server(|s| {
            s.listen = at[0].into();
            s.admin_listen = at[1].into();
            s.public_listen = public.map(Into::into);
        })
        .app("redirect_uri = \"https://gw.example.com/oauth/callback\"")
        .extra("[oauth]\nper_address_per_sec = 0\n")
        .render()
}

/// One call on a connection of its own (`Connection: close`): the whole answer, or why none came.
async fn call(at: SocketAddr, request: &str) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(at).await?;
    s.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("no answer within 10 s"))??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// What a loop of calls saw: answers by address, and every failure.
#[derive(Default, Debug)]
struct Tally {
    answered: std::collections::BTreeMap<SocketAddr, u32>,
    failed: Vec<String>,
}

/// Calls `target` in a loop until `stop`: each must be answered with `want`. A refused
/// connection is a failure before the reload, and after it means the old address stopped
/// accepting: the loop then waits for the test to point it at the new one.
async fn calls(
    mut target: watch::Receiver<SocketAddr>,
    request: String,
    want: &'static str,
    reloaded: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let at = *target.borrow_and_update();
        let result = call(at, &request).await;
        let mut t = tally.lock().unwrap();
        match result {
            Ok(answer) if answer.starts_with(want) && answer.contains("\r\n\r\n") => {
                *t.answered.entry(at).or_default() += 1;
            }
            Ok(answer) => t.failed.push(format!("{at}: {answer}")),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && reloaded.load(Ordering::Relaxed) => {
                drop(t);
                if target.changed().await.is_err() {
                    return;
                }
            }
            Err(e) => t.failed.push(format!("{at}: {e}")),
        }
    }
}

/// The loops' answers on `at`.
fn answered(tally: &Mutex<Tally>, at: SocketAddr) -> u32 {
    tally.lock().unwrap().answered.get(&at).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_moves_the_listeners_under_load_without_failing_a_call() {
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        api_latency_ms: 20,
        ..Default::default()
    })
    .await;
    let secret = secret_file();
    let text = config(&sb, secret.path(), ["127.0.0.1:0"; 3]);
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), &text).unwrap();
    let mut p = Proc::spawn(&["serve", "--config", cfg.path().to_str().unwrap()], &[]);
    let line = p.wait_for("gateway listening");
    let old: [SocketAddr; 3] = ["addr", "admin_addr", "public_addr"].map(|f| field(&line, f).parse().unwrap());

    // Loops of calls on each listener: the proxy (a token route, the platform 20 ms away), the
    // admin listener's health check, the public listener's authorize redirect.
    let requests = [
        (
            "GET /js/getticket/ HTTP/1.1\r\nHost: gw\r\nX-Gateway-Key: caller-key-1\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 200",
        ),
        (
            "GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 200",
        ),
        (
            "GET /oauth/authorize?app=main HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 302",
        ),
    ];
    let (reloaded, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut targets = Vec::new();
    let mut loops = Vec::new();
    for (i, (request, want)) in requests.into_iter().enumerate() {
        let (tx, rx) = watch::channel(old[i]);
        targets.push(tx);
        for _ in 0..2 {
            loops.push(tokio::spawn(calls(
                rx.clone(),
                request.to_string(),
                want,
                Arc::clone(&reloaded),
                Arc::clone(&stop),
                Arc::clone(&tally),
            )));
        }
    }
    // A call in flight on a keep-alive connection to the old proxy address while it moves.
    let http = Http::default();
    http.control(&sb, "/sandbox/faults", serde_json::json!({"api_latency_ms": 600}))
        .await;
    let mut keep_alive = tokio::net::TcpStream::connect(old[0]).await.unwrap();
    keep_alive
        .write_all(b"GET /js/getticket/ HTTP/1.1\r\nHost: gw\r\nX-Gateway-Key: caller-key-1\r\n\r\n")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(
        &http.get(&format!("http://{}/metrics", old[1])).await.text(),
        "douyin_gateway_requests_in_flight",
    ) < Some(1.0)
    {
        assert!(std::time::Instant::now() < deadline, "no call got in flight");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let new = free_addresses();
    std::fs::write(cfg.path(), config(&sb, secret.path(), [&new[0], &new[1], &new[2]])).unwrap();
    reloaded.store(true, Ordering::Relaxed);
    p.signal("-HUP");
    for key in ["server.listen", "server.admin_listen", "server.public_listen"] {
        let line = p.wait_for(&format!("{key} moved"));
        assert!(line.contains("stopped accepting"), "{line}");
    }
    p.wait_for("config reloaded");
    let new: [SocketAddr; 3] = new.map(|a| a.parse().unwrap());
    for (tx, at) in targets.iter().zip(new) {
        tx.send(at).unwrap();
    }

    // The call in flight finished on its old connection, which then closed.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), keep_alive.read_to_end(&mut answer))
        .await
        .expect("the keep-alive connection closed after its call")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    http.control(&sb, "/sandbox/faults", serde_json::json!({"api_latency_ms": 20}))
        .await;

    // The new addresses answer; the old ones refuse connections.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while new.iter().any(|&at| answered(&tally, at) < 5) {
        assert!(std::time::Instant::now() < deadline, "{:?}", tally.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for at in old {
        let e = tokio::net::TcpStream::connect(at).await.err();
        assert_eq!(e.map(|e| e.kind()), Some(std::io::ErrorKind::ConnectionRefused), "{at}");
    }
    // Each old address says when its last connection ended, in whatever order: an address
    // with no connection left may say so before the next listener's "moved" line.
    for name in ["proxy", "admin", "public"] {
        let line = p.line_with(&format!("the {name} listener's old address"));
        assert!(line.contains("is drained"), "{line}");
    }
    stop.store(true, Ordering::Relaxed);
    drop(targets);
    for l in loops {
        l.await.unwrap();
    }
    {
        let tally = tally.lock().unwrap();
        assert!(tally.failed.is_empty(), "calls failed: {:#?}", tally.failed);
        for at in old {
            assert!(tally.answered.get(&at).copied().unwrap_or(0) > 0, "{at}: {tally:?}");
        }
    }

    p.signal("-TERM");
    let (code, log) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
    assert_eq!(code, 0, "{log}");
    assert!(
        !log.contains("needs a restart") && !log.contains("only after a restart"),
        "{log}"
    );
}

/// An address that cannot be bound (the sandbox holds it): the listener stays where it is, the
/// error names the key, address and reason, and the rest of the config applies.
#[tokio::test(flavor = "multi_thread")]
async fn a_listener_that_cannot_move_stays_and_says_why() {
    let sb = sandbox().await;
    let secret = secret_file();
    let text = config(&sb, secret.path(), ["127.0.0.1:0"; 3]);
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), &text).unwrap();
    let mut p = Proc::spawn(&["serve", "--config", cfg.path().to_str().unwrap()], &[]);
    let line = p.wait_for("gateway listening");
    let (proxy, admin) = (field(&line, "addr").to_string(), field(&line, "admin_addr").to_string());
    let taken = sb.url().trim_start_matches("http://").trim_end_matches('/').to_string();
    let moved = config(&sb, secret.path(), ["127.0.0.1:0", &taken, "127.0.0.1:0"])
        + "\n[[routes]]\nname = \"added\"\npath = \"/added/*\"\ntoken = \"none\"\n";
    std::fs::write(cfg.path(), moved).unwrap();
    p.signal("-HUP");
    let error = p.wait_for("cannot be bound");
    assert!(
        error.contains(&format!("server.admin_listen = \"{taken}\" cannot be bound"))
            && error.contains("in use")
            && error.contains(&format!("the listener stays on {admin}")),
        "{error}"
    );
    p.wait_for("config reloaded");
    let http = Http::default();
    assert_eq!(http.get(&format!("http://{admin}/healthz")).await.status, 200);
    let r = http.get(&format!("http://{proxy}/added/x")).await;
    assert!(r.gateway_error().is_none(), "the new route applies: {}", r.text());
    p.signal("-TERM");
    let (code, log) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
    assert_eq!(code, 0, "{log}");
}

/// `public_listen` set by a reload: the public listener starts and takes `/oauth/*` from the
/// admin listener; removed: it stops, and the admin listener serves them again.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_starts_and_stops_the_public_listener() {
    let sb = sandbox().await;
    let secret = secret_file();
    let any = "127.0.0.1:0";
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), config_public(&sb, secret.path(), [any, any], None)).unwrap();
    let mut p = Proc::spawn(&["serve", "--config", cfg.path().to_str().unwrap()], &[]);
    let admin = field(&p.wait_for("gateway listening"), "admin_addr").to_string();
    let http = Http::default();
    let authorize = |at: &str| format!("http://{at}/oauth/authorize?app=main");
    assert_eq!(http.get(&authorize(&admin)).await.status, 302);

    let [public, ..] = free_addresses();
    std::fs::write(cfg.path(), config_public(&sb, secret.path(), [any, any], Some(&public))).unwrap();
    p.signal("-HUP");
    let line = p.wait_for("server.public_listen set");
    assert!(
        line.contains(&format!("serving /oauth/* and the webhook on {public}")),
        "{line}"
    );
    p.wait_for("config reloaded");
    assert_eq!(http.get(&authorize(&public)).await.status, 302);
    assert_eq!(
        http.get(&authorize(&admin)).await.status,
        404,
        "now on the public listener"
    );

    std::fs::write(cfg.path(), config_public(&sb, secret.path(), [any, any], None)).unwrap();
    p.signal("-HUP");
    p.wait_for("server.public_listen removed");
    p.wait_for("config reloaded");
    assert_eq!(
        http.get(&authorize(&admin)).await.status,
        302,
        "back on the admin listener"
    );
    let e = tokio::net::TcpStream::connect(&public).await.err();
    assert_eq!(e.map(|e| e.kind()), Some(std::io::ErrorKind::ConnectionRefused));
    p.signal("-TERM");
    let (code, log) = tokio::task::spawn_blocking(move || p.finish()).await.unwrap();
    assert_eq!(code, 0, "{log}");
}
