//! What a stranger without a key can make the gateway hold, and whose fault a slow call is
//! (issue #15): unfinished heads bounded per connection and in all, the admin and public
//! listeners answering under slow heads and stalled bodies, fair shares between addresses, 408
//! whenever the caller's body is what the gateway waits on, `Content-Length` with
//! `Transfer-Encoding` refused, hyper's own refusals in the access log, and one caller's bad calls
//! not stopping refreshes for the others. The load versions, with figures, are
//! `scripts/abuse-load.py` (docs/reliability.md).

mod common;

use common::*;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const GET_TICKET: &str = "GET /js/getticket/ HTTP/1.1\r\nHost: g\r\nx-gateway-key: caller-key-1\r\n\r\n";
const STALLED_WEBHOOK: &str = "POST /webhooks/douyin HTTP/1.1\r\nHost: g\r\ncontent-type: application/json\r\n\
                               content-length: 1000\r\n\r\n{\"event\":";

/// A connection to `addr` from the loopback address `from`.
async fn connect_from(from: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from.parse().unwrap(), 0))?;
    s.connect(addr).await
}

/// What comes back on `s` until it closes, a whole answer is in, or `within` passes.
async fn answer(s: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let _ = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            let text = String::from_utf8_lossy(&out);
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if out.len() >= end + 4 + len {
                    return;
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// One request from `from` on a new connection; the answer's status, or 0 when none came.
async fn status_from(from: &str, addr: SocketAddr, request: &str) -> u16 {
    let Ok(mut s) = connect_from(from, addr).await else {
        return 0;
    };
    if s.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let a = answer(&mut s, Duration::from_secs(5)).await;
    a.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// `n` connections from `from`, each having sent `bytes` (those refused at once included).
async fn hold(from: &str, addr: SocketAddr, n: usize, bytes: &str) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        if let Ok(mut s) = connect_from(from, addr).await {
            let _ = s.write_all(bytes.as_bytes()).await;
            held.push(s);
        }
    }
    held
}

#[tokio::test]
async fn an_unfinished_head_past_the_limit_is_refused_not_buffered() {
    let sb = sandbox().await;
    // The head timeout is long: only the buffer limit can end this.
    let gw = gateway_with(&sb, |s| s.header_read_timeout_ms = 60000, "").await;
    let mut s = TcpStream::connect(gw.running.addr).await.unwrap();
    s.write_all(b"GET /js/getticket/ HTTP/1.1\r\nHost: g\r\nx-pad: ")
        .await
        .unwrap();
    // 100 KiB of one header line that never ends: hyper alone would buffer up to ~400 KiB.
    let pad = vec![b'a'; 1024];
    let mut refused = false;
    for _ in 0..100 {
        if s.write_all(&pad).await.is_err() {
            refused = true;
            break;
        }
    }
    let a = answer(&mut s, Duration::from_secs(5)).await;
    assert!(
        refused || a.starts_with("HTTP/1.1 431"),
        "a head past max_header_bytes is answered 431 and closed, not held: {a:?}"
    );
}

#[tokio::test]
async fn the_head_budget_closes_big_unfinished_heads_and_spares_small_ones() {
    let sb = sandbox().await;
    let gw = gateway_with(
        &sb,
        |s| {
            s.header_read_timeout_ms = 60000;
            s.max_pending_head_bytes = 131072;
            s.max_connections_per_ip = Some(0);
        },
        "",
    )
    .await;
    let addr = gw.running.addr;
    let big = format!(
        "GET /js/getticket/ HTTP/1.1\r\nHost: g\r\nx-pad: {}",
        "a".repeat(30 * 1024)
    );
    // 20 connections of 30 KiB unfinished heads: 600 KiB wanted, 128 KiB allowed.
    let mut held = hold("127.0.0.1", addr, 20, &big).await;
    let mut closed = 0;
    for s in &mut held {
        let mut b = [0u8; 1];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(500), s.read(&mut b)).await {
            if matches!(r, Ok(0) | Err(_)) {
                closed += 1;
            }
        }
    }
    assert!(
        closed >= 14,
        "past the budget, big unfinished heads are closed: {closed} of 20"
    );
    // A small head still goes through, and the gauge stays within the budget plus small heads.
    assert_eq!(status_from("127.0.0.1", addr, GET_TICKET).await, 200);
    let m = Http::default().metrics(&gw).await;
    let pending = metric(&m, "douyin_gateway_pending_head_bytes").unwrap();
    assert!(pending <= (131072 + 20 * 8192) as f64, "{pending}");
    let budget_closed = metric(
        &m,
        "douyin_gateway_connections_closed_total{listener=\"proxy\",reason=\"head_budget\"}",
    )
    .unwrap();
    assert!(budget_closed >= 14.0, "{budget_closed}");
    drop(held);
}

/// 64 webhook bodies that stall after `{"event":` and 100 slow heads, from one address.
async fn flood_admin(addr: SocketAddr) -> (Vec<TcpStream>, Vec<TcpStream>) {
    let bodies = hold("127.0.0.1", addr, 64, STALLED_WEBHOOK).await;
    let slow = hold("127.0.0.1", addr, 100, "GET /healthz HTTP/1.1\r\nHo").await;
    (slow, bodies)
}

#[tokio::test]
async fn health_checks_answer_while_slow_heads_and_stalled_bodies_hold_the_admin_listener() {
    let sb = sandbox().await;
    let gw = gateway_with(
        &sb,
        |s| {
            s.body_read_timeout_ms = 1500;
            s.header_read_timeout_ms = 60000;
        },
        "",
    )
    .await;
    let admin = gw.running.admin_addr;
    let (_slow, mut bodies) = flood_admin(admin).await;
    // Another address is answered at once, every time.
    for _ in 0..20 {
        let s = status_from("127.0.0.2", admin, "GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n").await;
        assert_eq!(s, 200, "/healthz from another address");
    }
    // The stalled bodies that got in are the callers' fault: 408 once body_read_timeout_ms has
    // passed; none is a 5xx.
    let mut timeouts = 0;
    for s in &mut bodies {
        let a = answer(s, Duration::from_secs(4)).await;
        if a.starts_with("HTTP/1.1 408") {
            assert!(a.contains("\"code\":\"client_timeout\""), "{a}");
            timeouts += 1;
        }
        assert!(!a.starts_with("HTTP/1.1 5"), "{a}");
    }
    assert!(timeouts >= 1, "a stalled webhook body is cut with 408");
}

#[tokio::test]
async fn with_no_per_address_limit_slow_heads_make_room_and_bodies_have_a_cap() {
    let sb = sandbox().await;
    let gw = gateway_with(
        &sb,
        |s| {
            s.body_read_timeout_ms = 60000;
            s.header_read_timeout_ms = 60000;
            s.max_connections_per_ip = Some(0);
        },
        "",
    )
    .await;
    let admin = gw.running.admin_addr;
    let (_slow, mut bodies) = flood_admin(admin).await;
    // The same address: the admin listener's 64 slots are full of slow heads and bodies, yet a
    // probe gets in (a slow head makes room) and is answered.
    for _ in 0..20 {
        let s = status_from("127.0.0.1", admin, "GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n").await;
        assert_eq!(s, 200, "/healthz from the flooding address");
    }
    // Past half the listener's connections reading bodies, more bodies are refused at once.
    let mut overloaded = 0;
    for s in &mut bodies {
        if answer(s, Duration::from_millis(200)).await.starts_with("HTTP/1.1 503") {
            overloaded += 1;
        }
    }
    assert!(overloaded >= 1, "bodies past the cap get 503 at once");
}

#[tokio::test]
async fn the_public_listener_answers_another_address_under_the_same_flood() {
    let sb = sandbox().await;
    let gw = gateway_knowing_admin(|_, secret| {
        TestConfig::standard(&sb.url(), secret)
            .server(|s| {
                s.public_listen = Some("127.0.0.1:0".into());
                s.body_read_timeout_ms = 1500;
                s.header_read_timeout_ms = 60000;
            })
            .app("redirect_uri = \"https://app.example/oauth/callback\"")
            .render()
    })
    .await;
    let public = gw.running.public_addr.unwrap();
    let (_slow, _bodies) = flood_admin(public).await;
    // A user's browser elsewhere: authorize, consent, callback, all answered.
    let user = Http::from_address("127.0.0.2");
    let r = user
        .send(
            http::Method::GET,
            &format!("http://{public}/oauth/authorize?app=main"),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.text());
    let consent = r.headers["location"].to_str().unwrap().to_string();
    let r = user.send(http::Method::GET, &consent, &[], "").await;
    let callback = r.headers["location"].to_str().unwrap().to_string();
    let query = callback.split_once('?').unwrap().1;
    let r = user
        .send(
            http::Method::GET,
            &format!("http://{public}/oauth/callback?{query}"),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "the callback is answered: {}", r.text());
}

#[tokio::test]
async fn one_address_holding_slow_connections_does_not_lock_out_another() {
    let sb = sandbox().await;
    for per_ip in [None, Some(0)] {
        let gw = gateway_with(
            &sb,
            |s| {
                s.max_connections = Some(40);
                s.header_read_timeout_ms = 60000;
                s.max_connections_per_ip = per_ip;
            },
            "",
        )
        .await;
        let addr = gw.running.addr;
        let _slow = hold("127.0.0.1", addr, 100, "G").await;
        for i in 0..50 {
            assert_eq!(
                status_from("127.0.0.2", addr, GET_TICKET).await,
                200,
                "call {i} from another address ({per_ip:?})"
            );
        }
        let m = Http::default().metrics(&gw).await;
        let reason = if per_ip.is_none() { "per_ip" } else { "evicted" };
        let n = metric(
            &m,
            &format!("douyin_gateway_connections_closed_total{{listener=\"proxy\",reason=\"{reason}\"}}"),
        )
        .unwrap();
        assert!(n >= 50.0, "{reason}: {n}");
    }
}

#[tokio::test]
async fn connections_inside_requests_are_never_closed_to_make_room() {
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        api_latency_ms: 2000,
        ..Default::default()
    })
    .await;
    let gw = gateway_with(
        &sb,
        |s| {
            s.max_connections = Some(10);
            s.max_connections_per_ip = Some(0);
        },
        "",
    )
    .await;
    let addr = gw.running.addr;
    let mut busy = hold("127.0.0.1", addr, 10, GET_TICKET).await;
    // All ten are inside requests (the platform takes 2 s): a newcomer is closed at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(GET_TICKET.as_bytes()).await;
    let a = answer(&mut s, Duration::from_secs(1)).await;
    assert_eq!(a, "", "refused, not queued behind the requests");
    for s in &mut busy {
        assert!(answer(s, Duration::from_secs(5)).await.starts_with("HTTP/1.1 200"));
    }
}

#[tokio::test]
async fn any_timer_firing_while_the_body_is_incomplete_is_the_callers_408() {
    let sb = sandbox().await;
    let with_server = |server: fn(&mut ServerConfig)| {
        let secret = secret_file();
        let text = TestConfig::standard(&sb.url(), secret.path())
            .server(server)
            .caller("exchange_codes = true")
            .render();
        gateway_text_owned(text, secret)
    };
    let gw = with_server(|s| {
        s.retry_buffer_bytes = 1024;
        s.body_read_timeout_ms = 1000;
        s.request_timeout_ms = 4000;
    })
    .await;
    let addr = gw.running.addr;
    let head = |path: &str, len: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: g\r\nx-gateway-key: {CALLER_KEY}\r\ncontent-type: application/json\r\n\
             content-length: {len}\r\n\r\n"
        )
    };
    // A trickle: one byte every 300 ms never pauses as long as the limit, but is cut at it in all.
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(head("/api/douyin/v1/role/check/", 100).as_bytes())
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            if wr.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut a = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(6), rd.read_to_end(&mut a)).await;
    trickle.abort();
    let a = String::from_utf8_lossy(&a);
    assert!(a.starts_with("HTTP/1.1 408"), "{a}");
    assert!(a.contains("\"code\":\"client_timeout\""), "{a}");

    // The request timer firing while the gateway waits on the body: kept (token route),
    // streamed (larger than the replay buffer), and the code exchange.
    let gw2 = with_server(|s| {
        s.retry_buffer_bytes = 1024;
        s.body_read_timeout_ms = 60000;
        s.request_timeout_ms = 1000;
    })
    .await;
    for (addr, path, len, sent) in [
        (addr, "/_gateway/exchange_code", 100, 10),
        (gw2.running.addr, "/api/douyin/v1/role/check/", 100, 10),
        (gw2.running.addr, "/api/douyin/v1/role/check/", 5000, 2000),
        (gw2.running.addr, "/_gateway/exchange_code", 100, 10),
    ] {
        let out = raw(addr, &format!("{}{}", head(path, len), "y".repeat(sent))).await;
        assert!(out.starts_with("HTTP/1.1 408"), "{path} {len}/{sent}: {out}");
        assert!(out.contains("x-gateway-error: client_timeout"), "{out}");
    }
    let http = Http::default();
    for g in [&gw, &gw2] {
        let m = http.metrics(g).await;
        assert!(!m.contains("status=\"504\""), "no upstream timeout counted: {m}");
        assert!(!m.contains("status=\"502\""), "{m}");
    }
    let m = http.metrics(&gw2).await;
    assert_eq!(
        metric(&m, "douyin_gateway_requests_total{route=\"role-check\",status=\"408\"}"),
        Some(2.0)
    );
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_and_the_connection_closed() {
    let sb = sandbox().await;
    let gw = gateway(&sb).await;
    for (addr, path, key) in [
        (gw.running.addr, "/api/douyin/v1/role/check/", CALLER_KEY),
        (gw.running.admin_addr, "/webhooks/douyin", ""),
    ] {
        for order in [
            "content-length: 5\r\ntransfer-encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: g\r\nx-gateway-key: {key}\r\ncontent-type: application/json\r\n\
                 {order}\r\n2\r\n{{}}\r\n0\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let a = answer(&mut s, Duration::from_secs(5)).await;
            assert!(a.starts_with("HTTP/1.1 400"), "{path}: {a}");
            assert!(a.contains("\"code\":\"bad_request\""), "{a}");
            assert!(a.contains("Transfer-Encoding"), "{a}");
            // And the connection is closed after it.
            let mut b = [0u8; 1];
            let end = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
            assert!(matches!(end, Ok(Ok(0)) | Ok(Err(_))), "closed: {end:?}");
        }
    }
    let received = Http::default().requests(&sb).await;
    assert!(received.is_empty(), "nothing forwarded: {received:?}");
}

#[tokio::test]
async fn refusals_before_routing_reach_the_access_log_with_the_peer() {
    let sb = sandbox().await;
    let secret = secret_file();
    let cfg = text_file(&config_text(&sb.url(), secret.path(), |_| {}, ""));
    let (mut p, port, admin_port) = Proc::serve(&["serve", "--config", cfg.path().to_str().unwrap()], &[]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // hyper's own refusals: a 70,000-character path (past hyper's read buffer, which is bounded
    // near max_header_bytes: 431) and a head it cannot parse (400).
    let long = format!("GET /{} HTTP/1.1\r\nHost: g\r\n\r\n", "a".repeat(70_000));
    assert!(raw(addr, &long).await.starts_with("HTTP/1.1 431"));
    let line = p.wait_for("refused before routing");
    assert!(line.contains("status=431"), "{line}");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    assert!(raw(addr, "GET / HTTP/1.1\r\nbad header\r\n\r\n")
        .await
        .starts_with("HTTP/1.1 400"));
    let line = p.wait_for("status=400");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    // The gateway's own refusal before routing (a dot-segment) carries the peer too.
    assert!(raw(addr, "GET /js/../x HTTP/1.1\r\nHost: g\r\n\r\n")
        .await
        .starts_with("HTTP/1.1 400"));
    let line = loop {
        // The error line first, then the access line.
        let l = p.wait_for("path=/js/../x");
        if l.contains("status=400") {
            break l;
        }
    };
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    // The admin listener's refusals too: an oversized head, with the peer.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: g\r\nx-big: {}\r\n\r\n",
        "x".repeat(36_000)
    );
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    assert!(raw(admin, &big).await.starts_with("HTTP/1.1 431"));
    let line = p.wait_for("listener=\"admin\"");
    assert!(
        line.contains("status=431") && line.contains("peer=127.0.0.1:"),
        "{line}"
    );
    p.signal("-TERM");
    p.finish();
}

/// A second caller, whose calls name another app's appid: the platform answers them 11016
/// ("access_token incorrect"), a token error like a revocation's.
const BAD_CALLER_KEY: &str = "caller-key-bad";

#[tokio::test]
async fn one_callers_malformed_calls_do_not_stop_refreshes_for_another() {
    const AUTH: &str = "/auth/entity/get_appid_auth";
    let sb = sandbox().await;
    let secret = secret_file();
    let text = TestConfig::standard(&sb.url(), secret.path())
        .app("mini_app_upstream = \"toutiao\"")
        .extra(&format!(
            "[[upstreams]]\nname = \"toutiao\"\nbase_url = \"{}\"\n\n\
             [[routes]]\nname = \"appid-auth\"\npath = \"{AUTH}\"\nmethods = [\"POST\"]\n\
             token = \"mini_app\"\ninject = \"json_body\"\nupstream = \"toutiao\"\n\n\
             [[callers]]\nname = \"careless\"\napi_key_sha256 = \"{}\"\n",
            sb.url(),
            douyin_gateway::caller::hash_key(BAD_CALLER_KEY)
        ))
        .render();
    let gw = gateway_text(&text, secret).await;
    let http = Http::default();
    let call = |key: &'static str, appid: &'static str| {
        let (http, url) = (http.clone(), gw.url(AUTH));
        async move {
            http.send(
                http::Method::POST,
                &url,
                &[("x-gateway-key", key), ("content-type", "application/json")],
                serde_json::to_vec(&json!({ "appid": appid })).unwrap(),
            )
            .await
        }
    };
    assert_eq!(call(CALLER_KEY, CLIENT_KEY).await.json()["err"]["err_code"], 0);
    // The careless caller's calls: rejected however fresh the token, until the route is
    // distrusted for that caller.
    for _ in 0..4 {
        let r = call(BAD_CALLER_KEY, "tt-someone-else").await;
        assert_eq!(r.json()["err"]["err_code"], 11016, "{}", r.text());
    }
    let m = http.metrics(&gw).await;
    assert!(
        metric(
            &m,
            "douyin_gateway_token_retries_total{outcome=\"suppressed\",route=\"appid-auth\"}"
        )
        .unwrap()
            >= 1.0,
        "the careless caller's rejections fetch nothing now: {m}"
    );
    // A real revocation right after: another fetcher takes the token twice.
    revoke_mini_app_token(&http, &sb).await;
    // The other caller's next call is refreshed and replayed, not refused for the route's sake.
    let r = call(CALLER_KEY, CLIENT_KEY).await;
    assert_eq!(r.json()["err"]["err_code"], 0, "{}", r.text());
}
