//! A gateway on a Redis store holding many users: how long a new instance takes to be ready, and
//! whether its memory grows with the users it serves rather than with the store.
//!
//! ```sh
//! cargo bench --bench redis_scale                       # 1,000,000 stored users, 10,000 called
//! REDIS_USERS=100000 REDIS_CALLS=1000 cargo bench --bench redis_scale
//! ```
//!
//! It fills a fresh key prefix of the Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`)
//! with sealed user records (pipelined, as `RedisStore::insert_new` writes them), starts the
//! gateway binary on it, and prints the time from start to `/readyz` answering 200, the RSS then,
//! and the RSS after `REDIS_CALLS` distinct users were each called once. The prefix is deleted at
//! the end. Measured figures are in `benches/README.md`.

mod common;

use base64::Engine;
use bytes::Bytes;
use common::{env_or, field, rss_mib, spawn, spawn_env};
use douyin_gateway::secret::Secret;
use douyin_gateway::store::crypto::{Key, Keys};
use douyin_gateway::store::redis::RedisStore;
use douyin_gateway::store::Record;
use douyin_gateway::token::{unix_now, Grant, GrantState, TokenKey};
use http_body_util::{BodyExt, Empty};
use std::io::Write;
use std::time::{Duration, Instant};

fn open_id(i: u64) -> String {
    format!("_scale{i:032x}")
}

#[tokio::main]
async fn main() {
    let (users, calls) = (env_or("REDIS_USERS", 1_000_000), env_or("REDIS_CALLS", 10_000));
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("dgw-scale-{:08x}:", rand::random::<u32>());
    let key_b64 = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let keys = Keys {
        current: Key::from_base64(&key_b64).unwrap(),
        previous: None,
    };
    let store = RedisStore::open(&url, &prefix, keys, Duration::from_millis(100))
        .await
        .unwrap_or_else(|e| panic!("Redis at {url}: {e}"));

    let t0 = Instant::now();
    let now = unix_now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..users {
        batch.push(Record {
            key: TokenKey::user("main".into(), &open_id(i)),
            version: 0,
            access_token: Secret::new(format!("act.scale{i:012}{}", "a".repeat(28))),
            expires_unix: now + 1_296_000,
            grant: Some(Grant {
                refresh_token: Secret::new(format!("rft.scale{i:012}{}", "b".repeat(28))),
                refresh_expires_unix: now + 2_592_000,
                refresh_lifetime_secs: 2_592_000,
                renewals: 0,
                scope: std::sync::Arc::from("user_info,video.list.bytes"),
                state: GrantState::Active,
            }),
            stale_key: false,
        });
        if batch.len() == batch.capacity() || i + 1 == users {
            store.insert_new(&batch).await.unwrap();
            batch.clear();
        }
    }
    println!(
        "redis_scale: {users} users stored under {prefix} in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, line) = spawn(&["sandbox", "--listen", "127.0.0.1:0"], "sandbox listening on");
    let upstream = line.split_whitespace().last().unwrap().to_string();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "sandbox-secret").unwrap();
    let cfg = dir.path().join("config.toml");
    write!(
        std::fs::File::create(&cfg).unwrap(),
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
allow_anonymous = true
[upstream]
base_url = "{upstream}"
[store]
kind = "redis"
url = "{url}"
key_prefix = "{prefix}"
encryption_key_env = "SCALE_STORE_KEY"
[[apps]]
name = "main"
client_key = "awsandbox0000001"
client_secret_file = "{secret}"
[[routes]]
name = "user-probe"
path = "/scale/probe/"
token = "user"
"#,
        secret = secret.display(),
    )
    .unwrap();
    let started = Instant::now();
    let (gateway, line) = spawn_env(
        &["serve", "--config", cfg.to_str().unwrap()],
        &[("SCALE_STORE_KEY", &key_b64)],
        "gateway listening",
    );
    let (addr, admin_addr) = (field(&line, "addr"), field(&line, "admin_addr"));
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = |url: String| {
        let client = client.clone();
        async move {
            let resp = client.get(url.parse().unwrap()).await.unwrap();
            let (parts, body) = resp.into_parts();
            let _ = body.collect().await;
            parts
        }
    };
    while get(format!("http://{admin_addr}/readyz")).await.status != 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ready = started.elapsed();
    let pid = gateway.0.id();
    let rss_ready = rss_mib(pid);
    println!(
        "redis_scale: ready in {:.3} s with {users} users stored; rss_mib={rss_ready:.1}",
        ready.as_secs_f64()
    );
    let t1 = Instant::now();
    for i in 0..calls.min(users) {
        let parts = get(format!(
            "http://{addr}/scale/probe/?open_id={}",
            open_id(i * (users / calls.max(1)).max(1))
        ))
        .await;
        assert!(
            parts.headers.get("x-gateway-error").is_none(),
            "call {i}: the gateway refused: {:?}",
            parts.headers.get("x-gateway-error")
        );
    }
    let rss_called = rss_mib(pid);
    println!(
        "redis_scale: {calls} distinct users called once in {:.1} s; rss_mib={rss_called:.1} (+{:.1} MiB, {:.0} bytes per user served)",
        t1.elapsed().as_secs_f64(),
        rss_called - rss_ready,
        (rss_called - rss_ready) * 1_048_576.0 / calls.max(1) as f64
    );
    drop(gateway);

    // Delete the prefix.
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut cursor = 0u64;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !found.is_empty() {
            let _: () = redis::cmd("UNLINK").arg(&found).query_async(&mut conn).await.unwrap();
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}
