//! Connections and requests within bounds: slow heads cut, idle connections closed, a cap on
//! connections that spares the established ones and the admin listener, a cap on requests in
//! progress, and the caller's own faults reported as the caller's.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GET_TICKET: &str = "GET /js/getticket/ HTTP/1.1\r\nHost: g\r\nx-gateway-key: caller-key-1\r\n\r\n";

/// Reads until the connection closes (Ok) or `within` passes (Err), discarding what arrives.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Result<(), &'static str> {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .map_err(|_| "still open")
}

/// One request on an open keep-alive connection; the status of its answer.
async fn request_on(s: &mut TcpStream, req: &str) -> u16 {
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before answering: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if out.len() >= head_end + 4 + len {
                return text[9..12].parse().unwrap();
            }
        }
    }
}

/// Tries new connections until one gets an answer: 200, within `limit`.
async fn served_again_within(addr: SocketAddr, limit: Duration, why: &str) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(GET_TICKET.as_bytes()).await;
        let mut buf = [0u8; 12];
        if let Ok(Ok(12)) = tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await {
            assert_eq!(&buf, b"HTTP/1.1 200");
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long after `since` the connection closed, read until then; panics if still open after
/// `timer` and a second.
async fn closed_after(s: &mut TcpStream, since: Instant, timer: Duration) -> Duration {
    let limit = timer + Duration::from_secs(1);
    closed_within(s, (since + limit).saturating_duration_since(Instant::now()))
        .await
        .unwrap_or_else(|_| panic!("still open {limit:?} after, for a {timer:?} timer"));
    since.elapsed()
}

/// The timer did the work: the connection closed no sooner than `timer` (less a tick of the
/// clock) and within a second after it, so no longer timer could have.
fn by_the_timer(took: Duration, timer: Duration, what: &str) {
    assert!(
        took + Duration::from_millis(50) >= timer && took <= timer + Duration::from_secs(1),
        "{what}: closed after {took:?}, for a {timer:?} timer"
    );
}

#[tokio::test]
async fn a_slow_head_is_cut_and_an_idle_connection_closed_but_not_sooner() {
    const HEAD: Duration = Duration::from_millis(300);
    const IDLE: Duration = Duration::from_millis(3000);
    let sb = sandbox().await;
    let gw = gateway_with(
        &sb,
        |s| {
            s.header_read_timeout_ms = 300;
            s.idle_timeout_ms = 3000;
        },
        "",
    )
    .await;
    let addr = gw.running.addr;

    // Half a head, then nothing.
    let since = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /js/getticket/ HTTP/1.1\r\nHo").await.unwrap();
    by_the_timer(closed_after(&mut s, since, HEAD).await, HEAD, "a stalled head");

    // A head dripping one byte every 100 ms never completes in time either: the head timer runs
    // from the first byte, not from the last.
    let since = Instant::now();
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let drip = tokio::spawn(async move {
        for b in GET_TICKET.bytes().take(60) {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut buf = [0u8; 1024];
    let took = tokio::time::timeout(HEAD + Duration::from_secs(1), async {
        while let Ok(1..) = rd.read(&mut buf).await {}
        since.elapsed()
    })
    .await
    .expect("a dripping head is cut");
    by_the_timer(took, HEAD, "a dripping head");
    drip.abort();

    // A connection that sends nothing at all must send a head in time too.
    let since = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    by_the_timer(closed_after(&mut s, since, HEAD).await, HEAD, "a silent connection");

    // Keep-alive: still usable after longer than the head timeout, closed once idle for idle_timeout_ms.
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(request_on(&mut s, GET_TICKET).await, 200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        request_on(&mut s, GET_TICKET).await,
        200,
        "idle is not cut at the head timeout"
    );
    let since = Instant::now();
    by_the_timer(closed_after(&mut s, since, IDLE).await, IDLE, "an idle connection");
}

#[tokio::test]
async fn past_the_per_address_cap_new_ones_close_at_once_while_the_rest_keep_working() {
    let sb = sandbox().await;
    let gw = gateway_with(
        &sb,
        |s| {
            s.max_connections = Some(100);
            s.max_connections_per_ip = Some(20);
            s.header_read_timeout_ms = 60000;
        },
        "",
    )
    .await;
    let http = Http::default();
    let addr = gw.running.addr;
    let mut established = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(request_on(&mut s, GET_TICKET).await, 200);
        established.push(s);
    }
    let mut slow = Vec::new();
    for _ in 0..15 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"G").await.unwrap();
        slow.push(s);
    }
    // The established ones are surely counted before more arrive.
    assert_eq!(request_on(&mut established[0], GET_TICKET).await, 200);
    for _ in 0..50 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(GET_TICKET.as_bytes()).await;
        closed_within(&mut s, Duration::from_secs(5))
            .await
            .expect("a connection past the address's cap is closed at once");
    }
    for s in &mut established {
        assert_eq!(
            request_on(s, GET_TICKET).await,
            200,
            "established connections keep working"
        );
    }
    let r = http.send(http::Method::GET, &gw.admin("/healthz"), &[], "").await;
    assert_eq!(r.status, 200, "the admin listener stays reachable");
    // Freeing slots lets new connections in again.
    drop(slow);
    served_again_within(addr, Duration::from_secs(10), "slots were never freed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn under_a_1024_fd_limit_1100_slow_connections_do_not_take_the_gateway_down() {
    // This test holds 1,100 sockets itself.
    rlimit::increase_nofile_limit(4096).unwrap();
    let sb = sandbox().await;
    let secret = secret_file();
    let text = config_text(&sb.url(), secret.path(), |s| s.header_read_timeout_ms = 2000, "");
    let cfg = text_file(&text);
    let mut cmd = std::process::Command::new("bash");
    cmd.args([
        "-c",
        "ulimit -n 1024 && exec \"$0\" serve --config \"$1\"",
        BIN,
        cfg.path().to_str().unwrap(),
    ]);
    let mut p = Proc::spawn_command(cmd);
    let line = p.wait_for("gateway listening");
    let addr: SocketAddr = field(&line, "addr").parse().unwrap();
    let admin = field(&line, "admin_addr").to_string();
    let http = Http::default();

    let mut slow = Vec::new();
    for _ in 0..1100 {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let _ = s.write_all(b"G").await;
            slow.push(s);
        }
    }
    let r = http
        .send(http::Method::GET, &format!("http://{admin}/healthz"), &[], "")
        .await;
    assert_eq!(r.status, 200, "the admin listener answers while the proxy is flooded");
    // Every connection past the address's share was taken from the backlog and refused at once,
    // and counted: none waits there for a descriptor. (A slot freed by a head cut after
    // header_read_timeout_ms may admit one more, so those cuts count as room.)
    let limits = p.seen.iter().find(|l| l.contains("connection limits")).unwrap().clone();
    let share: usize = field(&limits, "max_connections_per_ip").parse().unwrap();
    assert_eq!((field(&limits, "max_connections"), share), ("448", 56), "{limits}");
    let closed = |m: &str, reason: &str| -> usize {
        let series = format!(r#"douyin_gateway_connections_closed_total{{listener="proxy",reason="{reason}"}}"#);
        metric(m, &series).expect("the series is there from the start") as usize
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let per_ip = loop {
        let m = http
            .send(http::Method::GET, &format!("http://{admin}/metrics"), &[], "")
            .await
            .text();
        let (per_ip, cut) = (closed(&m, "per_ip"), closed(&m, "head_timeout"));
        if per_ip + cut + share >= slow.len() {
            break per_ip;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} connections, {per_ip} refused, {cut} cut, {share} admitted at a time",
            slow.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(per_ip > 0, "refused connections are counted");
    // Another address is served at once, while the slow connections are held: one address may
    // hold an eighth of max_connections (56 of 448).
    let other = Http::from_address("127.0.0.2");
    for i in 0..47 {
        let r = other
            .send(
                http::Method::GET,
                &format!("http://{addr}/js/getticket/"),
                &[("x-gateway-key", CALLER_KEY), ("connection", "close")],
                "",
            )
            .await;
        assert_eq!(r.status, 200, "call {i} from another address: {}", r.text());
    }
    // The slow heads are cut after header_read_timeout_ms, and their address is served again.
    served_again_within(addr, Duration::from_secs(30), "the proxy never served again").await;
    drop(slow);
    p.signal("-TERM");
    let (code, out) = p.finish();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("fd_limit=1024"), "{out}");
    assert!(
        !out.contains("accept failed"),
        "the gateway never ran out of descriptors: {out}"
    );
    // Refusals are logged once in a while, saying how many, not once per connection.
    let logged: Vec<&str> = out.lines().filter(|l| l.contains("max_connections_per_ip):")).collect();
    assert!((1..=5).contains(&logged.len()), "{logged:#?}");
}

#[tokio::test]
async fn past_max_in_flight_calls_get_503_overloaded_at_once() {
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        api_latency_ms: 1500,
        ..Default::default()
    })
    .await;
    let gw = gateway_with(&sb, |s| s.max_in_flight = 2, "").await;
    let http = Http::default();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (http, url) = (http.clone(), gw.url("/js/getticket/"));
            tokio::spawn(async move { http.get(&url).await.status })
        })
        .collect();
    // Wait until both are in progress (the sandbox holds them for 1.5 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gw.running.shared.in_flight.load(std::sync::atomic::Ordering::Acquire) < 2 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = http.get(&gw.url("/js/getticket/")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.gateway_error().as_deref(), Some("overloaded"));
    assert!(r.headers.contains_key("x-request-id"));
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
    assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
}

#[tokio::test]
async fn a_caller_body_that_breaks_or_stalls_is_the_callers_fault() {
    let sb = sandbox().await;
    let gw = gateway_with(
        &sb,
        |s| {
            s.retry_buffer_bytes = 1024;
            s.body_read_timeout_ms = 500;
            s.request_timeout_ms = 20000;
        },
        "",
    )
    .await;
    let http = Http::default();
    let addr = gw.running.addr;
    let head = |extra: &str| {
        format!("POST /api/douyin/v1/role/check/ HTTP/1.1\r\nHost: g\r\nx-gateway-key: {CALLER_KEY}\r\ncontent-type: application/json\r\n{extra}\r\n")
    };

    // Malformed chunking past the replay buffer (streamed to the platform): 400, not 502.
    let big = "x".repeat(2048);
    let req = format!("{}800\r\n{big}\r\nzz\r\n", head("transfer-encoding: chunked\r\n"));
    let out = raw(addr, &req).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("x-gateway-error: bad_request"), "{out}");
    // Malformed chunking in a body small enough to keep: 400 too.
    let req = format!("{}5\r\nhello\r\nzz\r\n", head("transfer-encoding: chunked\r\n"));
    let out = raw(addr, &req).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");

    // A body that stalls: 408 client_timeout after body_read_timeout_ms, whether kept or
    // streamed; not 504 after request_timeout_ms.
    for (len, sent) in [(100, 10), (5000, 2000)] {
        let req = format!("{}{}", head(&format!("content-length: {len}\r\n")), "y".repeat(sent));
        let started = Instant::now();
        let out = raw(addr, &req).await;
        let took = started.elapsed();
        assert!(out.starts_with("HTTP/1.1 408"), "{len}/{sent}: {out}");
        assert!(out.contains("x-gateway-error: client_timeout"), "{out}");
        assert!(out.contains("\"code\":\"client_timeout\""), "{out}");
        assert!(
            took >= Duration::from_millis(450) && took <= Duration::from_millis(1500),
            "{len}/{sent}: answered after {took:?}, for a 500 ms body timeout"
        );
    }
    // Counted as the caller's faults (two 400s, two 408s), none as the platform's.
    let m = http.metrics(&gw).await;
    let count = |status: &str| {
        metric(
            &m,
            &format!("douyin_gateway_requests_total{{route=\"role-check\",status=\"{status}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(
        [count("400"), count("408"), count("502"), count("504")],
        [2.0, 2.0, 0.0, 0.0],
        "{m}"
    );
}

#[tokio::test]
async fn a_head_over_the_limit_gets_431_with_the_contract_json() {
    let sb = sandbox().await;
    let gw = gateway(&sb).await;
    let big = "x".repeat(40_000);
    let out = raw(
        gw.running.addr,
        &format!("GET /js/getticket/ HTTP/1.1\r\nHost: g\r\nx-gateway-key: {CALLER_KEY}\r\nx-big: {big}\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 431"), "{}", &out[..out.len().min(300)]);
    assert!(out.contains("x-gateway-error: headers_too_large"), "{out}");
    assert!(out.to_ascii_lowercase().contains("x-request-id:"), "{out}");
    assert!(out.contains("\"code\":\"headers_too_large\""), "{out}");
    // The same head on the admin listener gets the same treatment.
    let out = raw(
        gw.running.admin_addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: g\r\nx-big: {big}\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 431"), "{}", &out[..out.len().min(300)]);
    assert!(out.contains("x-gateway-error: headers_too_large"), "{out}");
    assert!(out.to_ascii_lowercase().contains("x-request-id:"), "{out}");
}
