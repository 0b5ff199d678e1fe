//! Many instances on one Redis: shared tokens, one fetch in total, changes
//! propagated, a dead lease holder replaced, Redis restarted under load.
//!
//! The Redis is `REDIS_URL` when set (it must answer), else a `redis-server` each test starts
//! on a unix socket of its own. Where neither is possible (no `redis-server` when the tests were
//! built, no `REDIS_URL`), the tests are reported as ignored, with what to install; under
//! `CI=true` they always run.

mod common;

use base64::Engine;
use common::*;
use http::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const VIDEO: &str = "/api/douyin/v1/video/video_list/";

/// The Redis a test shares between its gateways; a server of the test's own is stopped when dropped.
struct TestRedis {
    url: String,
    _own: Option<UnixRedis>,
}

/// `REDIS_URL` (which must answer), else a `redis-server` of the test's own on a unix socket.
async fn test_redis() -> TestRedis {
    match std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => {
            let up = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if let Err(e) = up {
                panic!("REDIS_URL={url} does not answer ({e}): start it, or unset REDIS_URL to have the tests start their own");
            }
            TestRedis { url, _own: None }
        }
        None => {
            let own = UnixRedis::start().await;
            TestRedis {
                url: own.url(),
                _own: Some(own),
            }
        }
    }
}

/// A store section for Redis with a fresh key prefix and key; removes its keys when dropped.
struct Shared {
    url: String,
    prefix: String,
    var: String,
}

impl Shared {
    fn new(url: &str) -> Shared {
        let var = format!("DG_REDIS_KEY_{}", hex::encode(rand::random::<[u8; 6]>()));
        std::env::set_var(
            &var,
            base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>()),
        );
        Shared {
            url: url.into(),
            prefix: format!("dgtest:{}:", hex::encode(rand::random::<[u8; 6]>())),
            var,
        }
    }
    fn store(&self) -> String {
        format!(
            "[store]\nkind = \"redis\"\nurl = \"{}\"\nkey_prefix = \"{}\"\nencryption_key_env = \"{}\"\n",
            self.url, self.prefix, self.var
        )
    }
    fn keys(&self) -> Vec<String> {
        let mut c = redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut c)
            .unwrap_or_default()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(mut c) = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection()) {
            for k in redis::cmd("KEYS")
                .arg(format!("{}*", self.prefix))
                .query::<Vec<String>>(&mut c)
                .unwrap_or_default()
            {
                let _ = redis::cmd("DEL").arg(k).query::<()>(&mut c);
            }
        }
    }
}

/// A gateway on the shared store, with `tokens` applied to `[tokens]`.
async fn instance(sb: &douyin_gateway::sandbox::Sandbox, shared: &Shared, tokens: fn(&mut TokensConfig)) -> Gateway {
    let (upstream, store) = (sb.url(), shared.store());
    gateway_knowing_admin(|admin, secret| {
        TestConfig::new(&upstream, secret)
            .tokens(tokens)
            .store(&store)
            .redirect_to(admin)
            .render()
    })
    .await
}

async fn version_of(http: &Http, gw: &Gateway, class: &str) -> u64 {
    let r = http.admin(gw, Method::GET, "/admin/tokens", "").await;
    r.json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["class"] == class)
        .map_or(0, |t| n(&t["version"]))
}

async fn eventually(what: &str, check: impl AsyncFnMut() -> bool) {
    eventually_within(what, Duration::from_secs(10), check).await
}

/// As [`eventually`], for steps that take longer on a loaded machine (replication, Sentinel).
async fn eventually_within(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg_attr(
    not(has_redis),
    ignore = "needs a Redis: apt-get install redis-server (the test starts its own; CI installs it) or set REDIS_URL, then touch build.rs"
)]
#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_share_tokens_and_fetch_once_in_total() {
    let redis = test_redis().await;
    let shared = Shared::new(&redis.url);
    let sb = sandbox().await;
    let (a, b) = (
        instance(&sb, &shared, |_| {}).await,
        instance(&sb, &shared, |_| {}).await,
    );
    let http = Http::default();
    assert_eq!(http.get(&a.url("/js/getticket/")).await.status, 200);
    assert_eq!(http.get(&b.url("/js/getticket/")).await.status, 200);
    assert_eq!(n(&http.stats(&sb).await["client_token_calls"]), 1, "B used A's token");

    http.control(&sb, "/sandbox/revoke", json!({"client_key": CLIENT_KEY}))
        .await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..50 {
        let url = if i % 2 == 0 {
            a.url("/api/douyin/v1/role/check/")
        } else {
            b.url("/api/douyin/v1/role/check/")
        };
        let http = http.clone();
        calls.spawn(async move { http.post(&url, "{}").await });
    }
    while let Some(r) = calls.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.json()["err_no"], 0, "{}", r.text());
    }
    assert_eq!(
        n(&http.stats(&sb).await["client_token_calls"]),
        2,
        "exactly one fetch for both instances"
    );
    // Stored encrypted: no token value in any Redis value.
    let mut c = redis::Client::open(shared.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    for k in shared.keys() {
        let t: String = redis::cmd("TYPE").arg(&k).query(&mut c).unwrap();
        if t == "hash" {
            let vals: Vec<Vec<u8>> = redis::cmd("HVALS").arg(&k).query(&mut c).unwrap();
            assert!(
                vals.iter().all(|v| !v.windows(4).any(|w| w == b"clt.")),
                "plaintext token in {k}"
            );
        }
    }
}

#[cfg_attr(
    not(has_redis),
    ignore = "needs a Redis: apt-get install redis-server (the test starts its own; CI installs it) or set REDIS_URL, then touch build.rs"
)]
#[tokio::test(flavor = "multi_thread")]
async fn users_and_their_changes_reach_every_instance() {
    let redis = test_redis().await;
    let shared = Shared::new(&redis.url);
    let sb = sandbox().await;
    let (a, b) = (
        instance(&sb, &shared, |_| {}).await,
        instance(&sb, &shared, |_| {}).await,
    );
    let http = Http::default();
    let open_id = open_id_of(&http.authorize(&a, "main").await.text());
    let on_b = b.url(&format!("{VIDEO}?open_id={open_id}"));
    assert_eq!(
        http.get(&on_b).await.json()["data"]["error_code"],
        0,
        "authorized on A, usable on B"
    );

    // A refreshes; B learns the new token from the event and never sends the dead one.
    http.control(&sb, "/sandbox/revoke", json!({"expire_user": open_id}))
        .await;
    assert_eq!(
        http.get(&a.url(&format!("{VIDEO}?open_id={open_id}"))).await.json()["data"]["error_code"],
        0
    );
    let v = version_of(&http, &a, "user").await;
    eventually("B adopts A's refresh", async || {
        version_of(&http, &b, "user").await == v
    })
    .await;
    let rejected = n(&http.stats(&sb).await["api_rejected"]);
    assert_eq!(http.get(&on_b).await.json()["data"]["error_code"], 0);
    assert_eq!(
        n(&http.stats(&sb).await["api_rejected"]),
        rejected,
        "B used the refreshed token first time"
    );
    assert_eq!(n(&http.stats(&sb).await["refresh_token_calls"]), 1);

    // Forgotten on A: gone on B too.
    assert_eq!(
        http.admin(&a, Method::DELETE, &format!("/admin/users/main/{open_id}"), "")
            .await
            .status,
        200
    );
    eventually("B forgets the user", async || http.get(&on_b).await.status == 401).await;
}

#[cfg_attr(
    not(has_redis),
    ignore = "needs a Redis: apt-get install redis-server (the test starts its own; CI installs it) or set REDIS_URL, then touch build.rs"
)]
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_holder_killed_mid_fetch_is_replaced() {
    let redis = test_redis().await;
    let shared = Shared::new(&redis.url);
    let sb = sandbox().await;
    let tokens: fn(&mut TokensConfig) = |t| {
        t.fetch_timeout_ms = 1500;
        t.backoff_initial_ms = 100;
        t.backoff_max_ms = 400;
    };
    let b = instance(&sb, &shared, tokens).await;
    let http = Http::default();
    // Instance P, a separate process, starts a fetch against a slow platform and dies holding the lease.
    let secret = secret_file();
    let cfg = tempfile::NamedTempFile::new().unwrap();
    let env_val = std::env::var(&shared.var).unwrap();
    let env = [(shared.var.as_str(), env_val.as_str())];
    let (bound, port, admin) = listeners();
    let text = TestConfig::new(&sb.url(), secret.path())
        .tokens(tokens)
        .store(&shared.store())
        .listen_port(port)
        .admin_port(admin)
        .render();
    std::fs::write(cfg.path(), text).unwrap();
    let mut p = Proc::spawn_on(
        &["serve", "--config", cfg.path().to_str().unwrap()],
        &env,
        [&bound[0], &bound[1]],
    );
    p.wait_for("gateway listening");
    http.control(&sb, "/sandbox/faults", json!({"token_latency_ms": 5000}))
        .await;
    let slow = tokio::spawn({
        let (http, url) = (http.clone(), format!("http://127.0.0.1:{port}/js/getticket/"));
        async move { tokio::time::timeout(Duration::from_secs(3), http.get(&url)).await }
    });
    eventually("P asks the platform", async || {
        n(&http.stats(&sb).await["token_endpoint_requests"]) == 1
    })
    .await;
    assert!(shared.keys().iter().any(|k| k.contains("lease:")), "P holds the lease");
    p.signal("-9");
    let _ = p.child.wait();
    let _ = slow.await;
    http.control(&sb, "/sandbox/faults", json!({})).await;

    // B waits out the dead holder's lease, takes it, and fetches.
    let started = Instant::now();
    let r = http.get(&b.url("/js/getticket/")).await;
    assert_eq!(r.json()["data"]["error_code"], 0, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(n(&http.stats(&sb).await["token_endpoint_requests"]) >= 2);
}

#[cfg_attr(
    not(has_redis_server),
    ignore = "needs redis-server: apt-get install redis-server (CI installs it), then touch build.rs"
)]
#[tokio::test(flavor = "multi_thread")]
async fn redis_restarted_under_load() {
    let mut redis = UnixRedis::start().await;
    let shared = Shared::new(&redis.url());
    let http = Http::default();
    let sb = sandbox().await;
    let gw = instance(&sb, &shared, |_| {}).await;
    assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
    let open_id = open_id_of(&http.authorize(&gw, "main").await.text());

    redis.stop();
    // Cached tokens keep serving; readiness says the store is gone.
    for _ in 0..20 {
        assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
    }
    let r = http.send(Method::GET, &gw.admin("/readyz"), &[], "").await;
    assert_eq!(r.status, 503, "{}", r.text());

    redis.restart().await;
    eventually("ready again", async || {
        http.send(Method::GET, &gw.admin("/readyz"), &[], "").await.status == 200
    })
    .await;
    // Redis came back empty: the gateway writes back the user it still holds, so a
    // new instance can serve them.
    eventually("the user is written back", async || {
        shared.keys().iter().any(|k| k.contains(":user:"))
    })
    .await;
    let fresh = instance(&sb, &shared, |_| {}).await;
    let r = http.get(&fresh.url(&format!("{VIDEO}?open_id={open_id}"))).await;
    assert_eq!(r.json()["data"]["error_code"], 0, "{}", r.text());
    // Writes work again: a refresh lands in the (empty, restarted) Redis.
    http.control(&sb, "/sandbox/revoke", json!({"client_key": CLIENT_KEY}))
        .await;
    assert_eq!(
        http.get(&gw.url("/js/getticket/")).await.json()["data"]["error_code"],
        0
    );
    eventually("the new token is stored", async || {
        shared.keys().iter().any(|k| k.contains(":t:"))
    })
    .await;
}

#[cfg_attr(
    not(has_redis),
    ignore = "needs a Redis: apt-get install redis-server (the test starts its own; CI installs it) or set REDIS_URL, then touch build.rs"
)]
#[tokio::test(flavor = "multi_thread")]
async fn two_instances_renew_a_user_without_ever_using_a_dead_refresh_token() {
    let redis = test_redis().await;
    let shared = Shared::new(&redis.url);
    // Access tokens that are as good as expired: a renewed record is then newer only by its grant.
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        refresh_token_ttl: 3600,
        access_token_ttl: 1,
        ..Default::default()
    })
    .await;
    let tokens: fn(&mut TokensConfig) = |t| {
        t.renew_before_secs = 7200;
        t.max_renewals = 3;
        t.maintain_interval_ms = 15;
    };
    let (a, b) = (
        instance(&sb, &shared, tokens).await,
        instance(&sb, &shared, tokens).await,
    );
    let http = Http::default();
    let open_id = open_id_of(&http.authorize(&a, "main").await.text());
    // B learns the user too, so both sweep it.
    assert_eq!(
        http.get(&b.url(&format!("{VIDEO}?open_id={open_id}"))).await.json()["data"]["error_code"],
        0
    );
    for gw in [&a, &b] {
        eventually("renewals exhausted", async || {
            let r = http.admin(gw, Method::GET, "/admin/tokens", "").await;
            r.json()["tokens"][0]["state"] == "reauthorization_required"
        })
        .await;
    }
    assert_eq!(
        n(&http.stats(&sb).await["renew_refresh_token_calls"]),
        3,
        "each renewal made once, by one instance"
    );
    // Counted by the instances: three renewals that worked, none with a dead refresh_token.
    let mut renewed = 0.0;
    for gw in [&a, &b] {
        let m = http.metrics(gw).await;
        let renewals = |outcome: &str| {
            metric(
                &m,
                &format!(r#"douyin_gateway_refresh_token_renewals_total{{app="main",outcome="{outcome}"}}"#),
            )
        };
        renewed += renewals("ok").expect("the ok series is there from the start");
        assert_eq!(
            renewals("reauthorize").unwrap_or(0.0),
            0.0,
            "no instance renewed with a dead refresh_token"
        );
    }
    assert_eq!(renewed, 3.0, "each renewal counted once, by the instance that made it");
    // The last renewed refresh_token works from either instance.
    http.control(&sb, "/sandbox/revoke", json!({"expire_user": open_id}))
        .await;
    assert_eq!(
        http.get(&b.url(&format!("{VIDEO}?open_id={open_id}"))).await.json()["data"]["error_code"],
        0
    );
}

/// A store may hold far more users than one instance serves: a new instance reads only its
/// apps' client tokens at start, a user the first time a call needs them; its renewal sweep still
/// pages through every stored user (renewing those no instance serves) and counts them all for
/// the gauges.
#[cfg_attr(
    not(has_redis),
    ignore = "needs a Redis: apt-get install redis-server (the test starts its own; CI installs it) or set REDIS_URL, then touch build.rs"
)]
#[tokio::test(flavor = "multi_thread")]
async fn a_new_instance_reads_users_lazily_and_its_sweep_covers_the_whole_store() {
    let redis = test_redis().await;
    let shared = Shared::new(&redis.url);
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        refresh_token_ttl: 3600,
        ..Default::default()
    })
    .await;
    // A and B never sweep during the test.
    let quiet: fn(&mut TokensConfig) = |t| t.maintain_interval_ms = 600000;
    let a = instance(&sb, &shared, quiet).await;
    let http = Http::default();
    let users = [
        open_id_of(&http.authorize(&a, "main").await.text()),
        open_id_of(&http.authorize(&a, "main").await.text()),
    ];
    assert_ne!(users[0], users[1]);

    let b = instance(&sb, &shared, quiet).await;
    let listed = async |gw: &Gateway| -> Vec<String> {
        let r = http.admin(gw, Method::GET, "/admin/tokens", "").await;
        r.json()["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["class"] == "user")
            .map(|t| t["open_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed(&b).await, Vec::<String>::new(), "no user read at start");
    let on_b = b.url(&format!("{VIDEO}?open_id={}", users[0]));
    assert_eq!(http.get(&on_b).await.json()["data"]["error_code"], 0);
    assert_eq!(listed(&b).await, vec![users[0].clone()], "read when a call needed it");

    // C sweeps: it renews both users, which no call on C ever needed, once each (max_renewals),
    // and counts both for its gauges.
    let c = instance(&sb, &shared, |t| {
        t.maintain_interval_ms = 50;
        t.renew_before_secs = 7200;
        t.max_renewals = 1;
    })
    .await;
    eventually("C's sweep renews both stored users", async || {
        n(&http.stats(&sb).await["renew_refresh_token_calls"]) == 2
    })
    .await;
    eventually("C's gauges count every stored user", async || {
        let m = http.metrics(&c).await;
        metric(
            &m,
            r#"douyin_gateway_tokens{app="main",class="user",state="reauthorization_required"}"#,
        ) == Some(2.0)
    })
    .await;
    assert_eq!(
        n(&http.stats(&sb).await["renew_refresh_token_calls"]),
        2,
        "one renewal per user"
    );
}

/// Deadline for replication and Sentinel steps, which a loaded CI machine slows down.
const SLOW: Duration = Duration::from_secs(30);

/// A redis-server (or Sentinel) process of the test's own, killed when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `redis-server` with `args`, keeping nothing on disk, working in `dir`.
fn redis_command(args: &[&str], dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("redis-server");
    cmd.args(args)
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .stdout(std::process::Stdio::null());
    cmd
}

fn spawn(mut cmd: std::process::Command) -> Server {
    Server(
        cmd.spawn()
            .expect("redis-server (found when the tests were built; uninstalled since? touch build.rs)"),
    )
}

/// A redis-server on a unix socket in a directory of its own: no port to race for. It can be
/// stopped and started again on the same socket.
struct UnixRedis {
    server: Option<Server>,
    dir: tempfile::TempDir,
}

impl UnixRedis {
    async fn start() -> UnixRedis {
        // Under /tmp: a unix socket's path may not be longer than 107 bytes.
        let dir = tempfile::Builder::new().prefix("dg-redis").tempdir_in("/tmp").unwrap();
        let mut r = UnixRedis { server: None, dir };
        r.restart().await;
        r
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.dir.path().join("redis.sock").display())
    }

    fn stop(&mut self) {
        self.server = None;
    }

    /// Starts it (again); returns once it answers.
    async fn restart(&mut self) {
        let socket = self.dir.path().join("redis.sock");
        let socket = socket.to_str().unwrap();
        let mut server = spawn(redis_command(
            &["--port", "0", "--unixsocket", socket, "--unixsocketperm", "700"],
            self.dir.path(),
        ));
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while client
            .get_connection_with_timeout(Duration::from_secs(1))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err()
        {
            assert!(
                server.0.try_wait().unwrap().is_none(),
                "redis-server on {socket} exited"
            );
            assert!(Instant::now() < deadline, "redis-server on {socket} never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.server = Some(server);
    }
}

/// A server that must listen on TCP (a primary a replica or Sentinel reaches by address, a
/// Sentinel): `make(port)` on a port below the kernel's ephemeral range, where no `bind(0)` or
/// outgoing connection of this machine lands; another port while the one picked is another
/// process's. Returns once the server on the port is the one started (its `process_id`).
async fn on_a_free_port(make: impl Fn(u16) -> std::process::Command) -> (Server, u16) {
    let ephemeral_from: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    assert!(ephemeral_from > 11_000, "ephemeral ports from {ephemeral_from}");
    for _ in 0..20 {
        let port = rand::random_range(10_000..ephemeral_from);
        let mut server = spawn(make(port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if server.0.try_wait().unwrap().is_some() {
                break; // the port is taken: another one
            }
            let info = text(query(port, redis::cmd("INFO").arg("server")));
            if info.contains(&format!("process_id:{}\r\n", server.0.id())) {
                return (server, port);
            }
            assert!(Instant::now() < deadline, "redis-server on port {port} never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("no free port for redis-server in 20 tries");
}

/// A redis-server on 127.0.0.1 (more `args` after the port), and its port.
async fn tcp_redis(args: &[&str], dir: &std::path::Path) -> (Server, u16) {
    on_a_free_port(|port| {
        let mut cmd = redis_command(&["--bind", "127.0.0.1", "--port", &port.to_string()], dir);
        cmd.args(args);
        cmd
    })
    .await
}

fn query(port: u16, cmd: &mut redis::Cmd) -> Option<redis::Value> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .ok()?
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()?;
    cmd.query(&mut c).ok()
}

fn text(v: Option<redis::Value>) -> String {
    match v {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        Some(redis::Value::Array(items)) => items.into_iter().map(|i| text(Some(i))).collect::<Vec<_>>().join(" "),
        Some(redis::Value::VerbatimString { text, .. }) => text,
        Some(redis::Value::SimpleString(s)) => s,
        Some(redis::Value::Int(i)) => i.to_string(),
        _ => String::new(),
    }
}

#[cfg_attr(
    not(has_redis_server),
    ignore = "needs redis-server: apt-get install redis-server (CI installs it), then touch build.rs"
)]
#[tokio::test(flavor = "multi_thread")]
async fn sentinel_failover_keeps_serving_and_writes_to_the_new_primary() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (primary, p1) = tcp_redis(&[], dirs[0].path()).await;
    let (_replica, p2) = tcp_redis(&["--replicaof", "127.0.0.1", &p1.to_string()], dirs[1].path()).await;
    let (_sentinel, ps) = sentinel_watching(dirs[2].path(), p1, p2).await;

    let shared = Shared::new(&format!("redis+sentinel://127.0.0.1:{ps}/gw"));
    let sb = sandbox().await;
    let tokens: fn(&mut TokensConfig) = |t| t.maintain_interval_ms = 100;
    let gw = instance(&sb, &shared, tokens).await;
    let http = Http::default();
    assert_eq!(http.get(&gw.url("/js/getticket/")).await.status, 200);
    let record = format!("{}t:main:client:", shared.prefix);
    eventually_within("the token reached the replica", SLOW, async || {
        text(query(p2, redis::cmd("HGET").arg(&record).arg("v")))
            .parse::<u64>()
            .is_ok_and(|v| v >= 1)
    })
    .await;

    drop(primary);
    for _ in 0..10 {
        assert_eq!(
            http.get(&gw.url("/js/getticket/")).await.status,
            200,
            "cached tokens keep serving"
        );
    }
    failed_over_to(ps, p2).await;

    // A refresh after the failover lands on the new primary.
    http.control(&sb, "/sandbox/revoke", json!({"client_key": CLIENT_KEY}))
        .await;
    assert_eq!(
        http.get(&gw.url("/js/getticket/")).await.json()["data"]["error_code"],
        0
    );
    eventually_within("the refreshed token is on the new primary", SLOW, async || {
        text(query(p2, redis::cmd("HGET").arg(&record).arg("v")))
            .parse::<u64>()
            .is_ok_and(|v| v >= 2)
    })
    .await;
    eventually_within("ready again", SLOW, async || {
        http.send(Method::GET, &gw.admin("/readyz"), &[], "").await.status == 200
    })
    .await;
    // A new instance finds the token through Sentinel.
    let fresh = instance(&sb, &shared, tokens).await;
    assert_eq!(http.get(&fresh.url("/js/getticket/")).await.status, 200);
    assert_eq!(n(&http.stats(&sb).await["client_token_calls"]), 2);
}

/// Once the replica on `replica` is in sync: a Sentinel (and its port) monitoring the primary on
/// `primary` as `gw`, returned when it has seen the replica.
async fn sentinel_watching(dir: &std::path::Path, primary: u16, replica: u16) -> (Server, u16) {
    eventually_within("replica in sync", SLOW, async || {
        text(query(replica, redis::cmd("INFO").arg("replication"))).contains("master_link_status:up")
    })
    .await;
    // Not too eager: on a loaded 2-core machine a 500 ms stall must not look like a dead primary.
    let conf = dir.join("sentinel.conf");
    let (sentinel, port) = on_a_free_port(|port| {
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor gw 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds gw 3000\nsentinel failover-timeout gw 6000\n"
            ),
        )
        .unwrap();
        let mut cmd = std::process::Command::new("redis-server");
        cmd.arg(&conf).arg("--sentinel").stdout(std::process::Stdio::null());
        cmd
    })
    .await;
    eventually_within("Sentinel sees the replica", SLOW, async || {
        text(query(port, redis::cmd("SENTINEL").arg("replicas").arg("gw"))).contains(&replica.to_string())
    })
    .await;
    (sentinel, port)
}

/// Waits until Sentinel names the server on `port` as the primary.
async fn failed_over_to(sentinel: u16, port: u16) {
    let deadline = Instant::now() + SLOW;
    while !text(query(
        sentinel,
        redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg("gw"),
    ))
    .contains(&port.to_string())
    {
        assert!(Instant::now() < deadline, "Sentinel did not fail over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP relay between a replica and its primary that the test can pause (holding what the
/// primary sends) and cut (losing what it held), as a slow or broken replication link would.
struct Relay {
    paused: tokio::sync::watch::Sender<bool>,
    /// The links' copying tasks.
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The accepting task, which owns the listener: kept through a cut (a replica reconnecting
    /// reaches the relay, and through it a dead primary), stopped with the relay.
    accept: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(t) = self.accept.lock().unwrap().take() {
            t.abort();
        }
    }
}

impl Relay {
    /// A relay to the primary on `primary`, and the port the relay listens on (bound here and
    /// kept: no other process can take it).
    async fn start(primary: u16) -> (std::sync::Arc<Relay>, u16) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (paused, rx) = tokio::sync::watch::channel(false);
        let relay = std::sync::Arc::new(Relay {
            paused,
            tasks: std::sync::Mutex::new(Vec::new()),
            accept: std::sync::Mutex::new(None),
        });
        let accept = {
            let relay = std::sync::Arc::downgrade(&relay);
            tokio::spawn(async move {
                while let Ok((replica, _)) = listener.accept().await {
                    let Ok(upstream) = tokio::net::TcpStream::connect(("127.0.0.1", primary)).await else {
                        continue;
                    };
                    let (mut rr, mut rw) = replica.into_split();
                    let (mut pr, mut pw) = upstream.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut rr, &mut pw).await;
                    });
                    let mut rx = rx.clone();
                    let down = tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match pr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            // Held while paused: read, but not passed on.
                            if rx.wait_for(|p| !*p).await.is_err() || rw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                    match relay.upgrade() {
                        Some(r) => r.tasks.lock().unwrap().extend([up, down]),
                        None => return,
                    }
                }
            })
        };
        *relay.accept.lock().unwrap() = Some(accept);
        (relay, port)
    }

    fn pause(&self, on: bool) {
        self.paused.send_replace(on);
    }

    /// Cuts the links: whatever the relay still held is lost.
    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

#[cfg_attr(
    not(has_redis_server),
    ignore = "needs redis-server: apt-get install redis-server (CI installs it), then touch build.rs"
)]
#[tokio::test(flavor = "multi_thread")]
async fn a_failover_right_after_a_refresh_keeps_the_rotated_refresh_token() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (primary, p1) = tcp_redis(&[], dirs[0].path()).await;
    let (relay, relay_port) = Relay::start(p1).await;
    let (_replica, p2) = tcp_redis(&["--replicaof", "127.0.0.1", &relay_port.to_string()], dirs[1].path()).await;
    let (_sentinel, ps) = sentinel_watching(dirs[2].path(), p1, p2).await;

    // A platform whose refresh rotates the refresh_token: the old one dies as it answers.
    let sb = sandbox_with(douyin_gateway::sandbox::SandboxOptions {
        rotate_refresh_token: true,
        ..Default::default()
    })
    .await;
    let shared = Shared::new(&format!("redis+sentinel://127.0.0.1:{ps}/gw"));
    let gw = instance(&sb, &shared, |_| {}).await;
    let http = Http::default();
    let page = http.authorize(&gw, "main").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let open_id = open_id_of(&page.text());
    let record = format!("{}t:main:user:{open_id}", shared.prefix);
    eventually_within("the user reached the replica", SLOW, async || {
        text(query(p2, redis::cmd("HGET").arg(&record).arg("v"))) == "1"
    })
    .await;

    // The replication link stalls for 300 ms just as the refresh is written.
    relay.pause(true);
    let resume = {
        let relay = std::sync::Arc::clone(&relay);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            relay.pause(false);
        })
    };
    let refresh = format!(r#"{{"app":"main","class":"user","open_id":"{open_id}"}}"#);
    let r = http.admin(&gw, Method::POST, "/admin/refresh", &refresh).await;
    // The gateway said done: the primary dies at once, with whatever the link still held.
    drop(primary);
    relay.cut();
    resume.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(n(&http.stats(&sb).await["refresh_token_calls"]), 1);
    failed_over_to(ps, p2).await;
    assert_eq!(
        text(query(p2, redis::cmd("HGET").arg(&record).arg("v"))),
        "2",
        "the promoted replica holds the refreshed record"
    );
    eventually_within("ready again", SLOW, async || {
        http.send(Method::GET, &gw.admin("/readyz"), &[], "").await.status == 200
    })
    .await;
    // A new instance, through Sentinel, refreshes with the rotated refresh_token: the user is kept.
    let fresh = instance(&sb, &shared, |_| {}).await;
    let r = http.admin(&fresh, Method::POST, "/admin/refresh", &refresh).await;
    assert_eq!(r.status, 200, "the user survived the failover: {}", r.text());
    let m = http.metrics(&gw).await;
    assert_eq!(
        metric(&m, "douyin_gateway_store_replica_ack_timeouts_total"),
        Some(0.0),
        "{m}"
    );
}
