//! End-to-end load: the sandbox and the gateway as processes of their own, on loopback, driven by
//! a load generator written here (hyper, keep-alive connections). Prints, per mode, requests per
//! second, p50 and p99 latency, and the gateway's CPU per call (its user + system time over the
//! run, from /proc, divided by the calls it served).
//!
//! ```sh
//! cargo bench --bench e2e                        # client and user modes, 3 rounds × 6 s, 50 connections
//! E2E_SECS=10 E2E_CONNS=100 E2E_ROUNDS=5 E2E_USERS=10000 cargo bench --bench e2e
//! E2E_SERVER_EXTRA="worker_threads = 1" cargo bench --bench e2e   # lines for the gateway's [server]
//! ```
//!
//! After the load modes: a storm of `E2E_STORM` (2,000) calls on a just-revoked token, and a
//! `E2E_STREAM_MIB` (200) MiB upload and download, straight to the sandbox and through the
//! gateway, with the gateway's peak RSS growth while it carries them.
//!
//! No script of this repository's surroundings is needed. The load generator shares the machine
//! with the gateway and the sandbox: compare figures taken on the same machine, and read
//! `benches/README.md` for the measured table.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{env_or, field, spawn};

/// User + system CPU seconds a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), counted from after the command name.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// One round: `conns` keep-alive connections calling `paths` in turn for `secs`.
async fn round(
    addr: &str,
    paths: Arc<Vec<String>>,
    conns: usize,
    secs: u64,
    gateway_pid: u32,
) -> (f64, f64, f64, f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = cpu_secs(gateway_pid);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (addr, paths, stop) = (addr.to_string(), Arc::clone(&paths), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let (mut lat, mut bad, mut i) = (Vec::with_capacity(1 << 16), 0u64, c);
            while !stop.load(Ordering::Relaxed) {
                let path = &paths[i % paths.len()];
                i += 1;
                let req = http::Request::get(path)
                    .header(http::header::HOST, "bench")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let start = Instant::now();
                match send.send_request(req).await {
                    Ok(resp) => {
                        // A failure is the gateway's own error or a 5xx; the user probe's 404 is the
                        // sandbox's answer to a path it does not serve, and expected.
                        let ok = !resp.status().is_server_error() && resp.headers().get("x-gateway-error").is_none();
                        let _ = resp.into_body().collect().await;
                        bad += u64::from(!ok);
                    }
                    Err(_) => {
                        bad += 1;
                        break;
                    }
                }
                lat.push(start.elapsed().as_micros() as u32);
            }
            (lat, bad)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut bad) = (Vec::new(), 0);
    for t in tasks {
        let (lat, b) = t.await.unwrap();
        all.extend(lat);
        bad += b;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(gateway_pid) - cpu0;
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1000.0;
    let n = all.len() as f64;
    (n / elapsed, pct(0.50), pct(0.99), cpu / n * 1e6, bad)
}

/// A JSON call to the sandbox; its answer as JSON.
async fn sandbox_json(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<Bytes>,
    >,
    method: http::Method,
    url: String,
    body: &str,
) -> serde_json::Value {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap_or_default()
}

/// `n` calls at once, each on a connection of its own opened beforehand, right after the
/// platform revoked the app's client_token: the fetches they caused, the calls that failed, and
/// their latencies (ms, sorted).
async fn storm(addr: &str, n: usize, revoke: impl std::future::Future<Output = ()>) -> Vec<(bool, f64)> {
    let mut senders = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        senders.push(send);
    }
    revoke.await;
    let go = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut send| {
            let go = Arc::clone(&go);
            tokio::spawn(async move {
                go.wait().await;
                let req = http::Request::get("/js/getticket/")
                    .header(http::header::HOST, "bench")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let start = Instant::now();
                let ok = match send.send_request(req).await {
                    Ok(resp) => {
                        let body = resp
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v["data"]["error_code"] == 0)
                    }
                    Err(_) => false,
                };
                (ok, start.elapsed().as_secs_f64() * 1000.0)
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out.sort_by(|a, b| a.1.total_cmp(&b.1));
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let (rounds, secs, conns, users) = (
        env_or("E2E_ROUNDS", 3) as usize,
        env_or("E2E_SECS", 6),
        env_or("E2E_CONNS", 50) as usize,
        env_or("E2E_USERS", 10_000) as usize,
    );
    let server_extra = std::env::var("E2E_SERVER_EXTRA").unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, line) = spawn(&["sandbox", "--listen", "127.0.0.1:0"], "sandbox listening on");
    let upstream = line.split_whitespace().last().unwrap().to_string();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "sandbox-secret").unwrap();
    let admin_key = "e2e-admin-key";
    let cfg = dir.path().join("config.toml");
    let mut f = std::fs::File::create(&cfg).unwrap();
    write!(
        f,
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
allow_anonymous = true
max_body_bytes = 1073741824
# Every call comes from 127.0.0.1: the default cap per address (an eighth of max_connections,
# 1,242 with a 20,000-fd limit) would refuse part of the storm's 2,000 connections.
max_connections_per_ip = 0
{server_extra}
[upstream]
base_url = "{upstream}"
[store]
kind = "memory"
[admin]
api_key_sha256 = "{admin}"
[[apps]]
name = "main"
client_key = "awsandbox0000001"
client_secret_file = "{secret}"
[[routes]]
name = "ticket"
path = "/js/getticket/"
token = "client"
[[routes]]
name = "user-probe"
path = "/e2e/probe/"
token = "user"
[[routes]]
name = "stream"
path = "/sandbox/*"
methods = ["GET", "POST"]
token = "client"
"#,
        admin = douyin_gateway::caller::hash_key(admin_key),
        secret = secret.display(),
    )
    .unwrap();
    let (gateway, line) = spawn(&["serve", "--config", cfg.to_str().unwrap()], "gateway listening");
    let (addr, admin_addr) = (field(&line, "addr"), field(&line, "admin_addr"));
    let pid = gateway.0.id();

    // User mode: users imported through the admin API, called on a path the sandbox answers 404
    // without checking the token (so nothing is refreshed): the gateway's user path, measured.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    for i in 0..users {
        let body = format!(
            r#"{{"access_token":"act.e2e{i:08}","refresh_token":"rft.e2e{i:08}","expires_in":1296000,"refresh_expires_in":2592000}}"#
        );
        let req = http::Request::put(format!("http://{admin_addr}/admin/users/main/e2e-{i:08}"))
            .header("x-admin-key", admin_key)
            .body(http_body_util::Full::new(Bytes::from(body)))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "import");
    }
    let modes: Vec<(&str, Vec<String>)> = vec![
        ("client", vec!["/js/getticket/".to_string()]),
        (
            "user",
            (0..users.max(1))
                .map(|i| format!("/e2e/probe/?open_id=e2e-{i:08}"))
                .collect(),
        ),
    ];
    println!("e2e: {rounds} rounds × {secs} s, {conns} connections, {users} users; server extra: {server_extra:?}");
    println!("mode    rps      p50_ms  p99_ms  cpu_us_per_call  failed");
    for (mode, paths) in modes {
        let paths = Arc::new(paths);
        let (mut rps, mut p50, mut p99, mut cpu, mut failed) = (vec![], vec![], vec![], vec![], 0);
        for _ in 0..rounds {
            let (r, a, b, c, bad) = round(&addr, Arc::clone(&paths), conns, secs, pid).await;
            println!("{mode:<7} {r:<8.0} {a:<7.3} {b:<7.3} {c:<16.1} {bad}");
            rps.push(r);
            p50.push(a);
            p99.push(b);
            cpu.push(c);
            failed += bad;
        }
        println!(
            "median {mode}: rps={:.0} p50_ms={:.3} p99_ms={:.3} cpu_us_per_call={:.1} failed={failed}",
            median(rps),
            median(p50),
            median(p99),
            median(cpu)
        );
    }

    // A storm: many calls at once on a token the platform has just revoked.
    let n = env_or("E2E_STORM", 2000) as usize;
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let stats = |c| sandbox_json(c, http::Method::GET, format!("{upstream}/sandbox/stats"), "");
    // The same storm on a live token first: what 2,000 calls at once cost here anyway (after a
    // storm that warms the gateway's upstream pool, whose connections the first one opens).
    let _warm = storm(&addr, n, async {}).await;
    let calm = storm(&addr, n, async {}).await;
    let calm_slowest = calm.last().map_or(0.0, |c| c.1);
    let before = stats(&client).await["client_token_calls"].as_u64().unwrap_or(0);
    let revoke = sandbox_json(
        &client,
        http::Method::POST,
        format!("{upstream}/sandbox/revoke"),
        r#"{"client_key":"awsandbox0000001"}"#,
    );
    let calls = storm(&addr, n, async {
        revoke.await;
    })
    .await;
    let fetches = stats(&client).await["client_token_calls"].as_u64().unwrap_or(0) - before;
    // What one fetch costs, measured the same way (a client_token call to the sandbox).
    let t = Instant::now();
    let fetched = sandbox_json(
        &client,
        http::Method::POST,
        format!("{upstream}/oauth/client_token/"),
        r#"{"client_key":"awsandbox0000001","client_secret":"sandbox-secret","grant_type":"client_credential"}"#,
    )
    .await;
    let fetch_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(fetched["data"]["error_code"], 0, "{fetched}");
    let failed = calls.iter().filter(|(ok, _)| !ok).count();
    let p50 = calls[calls.len() / 2].1;
    let slowest = calls.last().map_or(0.0, |c| c.1);
    println!(
        "storm: {n} concurrent calls on a live token: slowest_ms={calm_slowest:.1} p50_ms={:.1}",
        calm[calm.len() / 2].1
    );
    println!(
        "storm: {n} concurrent calls after a revocation: token_fetches={fetches} failed={failed} \
         p50_ms={p50:.1} slowest_ms={slowest:.1} one_fetch_ms={fetch_ms:.1} \
         added_by_the_refresh_ms={:.1}",
        slowest - calm_slowest
    );

    // Large bodies stream through: each way, straight to the sandbox and through the gateway (a
    // client_token route, so the token path with its inspection is what streams), and the
    // gateway's RSS growth while it carries them.
    let size = env_or("E2E_STREAM_MIB", 200) << 20;
    for (what, path) in [("upload", "/sandbox/sink"), ("download", "/sandbox/bytes")] {
        let (mut direct, mut via, mut growth) = (vec![], vec![], vec![]);
        for _ in 0..rounds {
            direct.push(transfer(&format!("{upstream}{path}"), what, size).await);
            let base = common::rss_mib(pid);
            let peak = Arc::new(std::sync::Mutex::new(base));
            let done = Arc::new(AtomicBool::new(false));
            let sampler = std::thread::spawn({
                let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
                move || {
                    while !done.load(Ordering::Relaxed) {
                        let now = common::rss_mib(pid);
                        let mut p = peak.lock().unwrap();
                        *p = p.max(now);
                        drop(p);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            });
            via.push(transfer(&format!("http://{addr}{path}"), what, size).await);
            done.store(true, Ordering::Relaxed);
            sampler.join().unwrap();
            growth.push(*peak.lock().unwrap() - base);
        }
        let (d, v) = (median(direct), median(via));
        println!(
            "stream: {what} {} MiB: direct_mb_s={d:.0} gateway_mb_s={v:.0} ratio={:.2} gateway_peak_rss_growth_mib={:.1}",
            size >> 20,
            v / d,
            growth.iter().copied().fold(0.0, f64::max)
        );
    }
    drop(gateway);
}

/// A body of `left` bytes, sent in 64 KiB pieces of one shared buffer: an upload of any size
/// without holding it.
struct Repeat {
    chunk: Bytes,
    left: u64,
}

impl http_body::Body for Repeat {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64);
        self.left -= n;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.slice(..n as usize)))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// Sends `size` bytes to (upload) or fetches them from (download) `url`; MB/s.
async fn transfer(url: &str, what: &str, size: u64) -> f64 {
    let start = Instant::now();
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Repeat>();
    let resp = if what == "upload" {
        let body = Repeat {
            chunk: Bytes::from(vec![b'u'; 64 * 1024]),
            left: size,
        };
        client
            .request(http::Request::post(url).body(body).unwrap())
            .await
            .unwrap()
    } else {
        let body = Repeat {
            chunk: Bytes::new(),
            left: 0,
        };
        client
            .request(http::Request::get(format!("{url}?n={size}")).body(body).unwrap())
            .await
            .unwrap()
    };
    assert_eq!(resp.status(), 200, "{what} {url}");
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        got += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    if what == "download" {
        assert_eq!(got, size, "download {url}");
    }
    size as f64 / 1e6 / start.elapsed().as_secs_f64()
}
