//! The synchronous hot path of a proxied call, piece by piece: caller auth,
//! route match, token cache lookup, query rewrite, and reading an answer's
//! error codes. `cargo bench --bench hot_path`.
//!
//! Allocations per call of each per-call step, and a driver for callgrind: [`per_call`]
//! (`HOT_PATH_STEP=allocs`, or a step's name with `HOT_PATH_CALLS`).

use criterion::{black_box, Criterion};
use douyin_gateway::caller::{hash_key, Callers};
use douyin_gateway::config::Config;
use douyin_gateway::inspect::{self, CodeTable, Context};
use douyin_gateway::metrics::Metrics;
use douyin_gateway::route::RouteTable;
use douyin_gateway::token::{Need, TokenKey, Tokens};
use std::sync::Arc;

#[path = "hot_path/per_call.rs"]
mod per_call;

#[global_allocator]
static ALLOCATOR: per_call::Counting = per_call::Counting;

const B_OK: &[u8] = br#"{"data":{"list":[{"item_id":"@9VwL3","title":"hello"}],"error_code":0,"description":""},"extra":{"error_code":0,"description":"","logid":"2024","now":1700000000}}"#;

fn config() -> Config {
    let text = format!(
        r#"[upstream]
base_url = "http://127.0.0.1:1"
[store]
kind = "memory"
[[apps]]
name = "main"
client_key = "k"
client_secret_env = "PATH"
[[callers]]
name = "a"
api_key_sha256 = "{}"
[[callers]]
name = "b"
api_key_sha256 = "{}"
[[routes]]
name = "video"
path = "/api/douyin/v1/video/video_list/"
token = "user"
[[routes]]
name = "ticket"
path = "/js/getticket/"
token = "client"
[[routes]]
name = "rest"
path = "/api/*"
token = "client"
"#,
        hash_key("key-a"),
        hash_key("key-b")
    );
    Config::parse(&text, "bench").unwrap()
}

/// The token cache as the gateway holds it, with the app's client_token in it (a real fetch,
/// against the sandbox on a local port), and the runtime its background work runs on.
fn fixture() -> (tokio::runtime::Runtime, per_call::Fixture) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tokens, call) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sb = douyin_gateway::sandbox::start(
            douyin_gateway::sandbox::SandboxOptions {
                apps: vec!["k:secret".into()],
                ..Default::default()
            },
            listener,
        )
        .unwrap();
        let mut cfg = config();
        cfg.upstream.base_url = format!("http://{addr}");
        std::env::set_var("DG_BENCH_SECRET", "secret");
        cfg.apps[0].client_secret_env = Some("DG_BENCH_SECRET".into());
        let metrics = Arc::new(Metrics::new());
        let settings = douyin_gateway::token::Settings::from_config(&cfg).unwrap();
        let client = douyin_gateway::upstream::client(&cfg.upstream).unwrap();
        let tokens = Tokens::new(client, settings, Arc::new(douyin_gateway::store::Store::Memory));
        // As the gateway runs it: the cache's hits and misses counted.
        tokens.events().subscribe(metrics.token_observer());
        tokens
            .obtain(&TokenKey::client("main".into()), Need::Any)
            .await
            .unwrap();
        // A user's and an enterprise's token, as an import puts them in the cache.
        for key in [
            TokenKey::user("main".into(), per_call::OPEN_ID),
            TokenKey::biz("main".into(), per_call::OPEN_ID, per_call::BIZ_SCOPE),
        ] {
            tokens.install(&key, per_call::fetched()).await.unwrap();
        }
        std::mem::forget(sb);
        let settings = douyin_gateway::token::Settings::from_config(&cfg).unwrap();
        let runtime = douyin_gateway::runtime::Runtime::build(cfg, &settings, &metrics).unwrap();
        (tokens, douyin_gateway::proxy::Call::new(Arc::new(runtime)))
    });
    let key = TokenKey::client("main".into());
    (rt, per_call::Fixture { tokens, key, call })
}

fn bench(c: &mut Criterion, f: &per_call::Fixture) {
    let cfg = config();
    let callers = Callers::build(&cfg);
    let mut headers = http::HeaderMap::new();
    headers.insert("x-gateway-key", "key-b".parse().unwrap());
    c.bench_function("caller_authenticate", |b| {
        b.iter(|| black_box(callers.authenticate(black_box(&headers)).is_some()))
    });

    let routes = RouteTable::build(&cfg);
    c.bench_function("route_find_prefix", |b| {
        b.iter(|| {
            black_box(
                routes
                    .find(&http::Method::GET, black_box("/api/douyin/v1/item/list/"))
                    .map(|r| r.index),
            )
        })
    });

    let table = CodeTable::default();
    c.bench_function("inspect_b_ok", |b| {
        b.iter(|| black_box(table.verdict(&inspect::codes(black_box(B_OK)).unwrap(), Context::Api)))
    });

    c.bench_function("rewrite_query_inject", |b| {
        b.iter(|| {
            black_box(douyin_gateway::proxy::headers::rewrite_query(
                black_box(Some("open_id=ou_1&cursor=0&count=10")),
                Some("act.0123456789abcdef"),
            ))
        })
    });

    c.bench_function("token_cache_hit", |b| {
        b.iter(|| black_box(f.tokens.cached(black_box(&f.key)).is_some()))
    });
}

fn main() {
    let (rt, fixture) = fixture();
    let _guard = rt.enter();
    if let Ok(step) = std::env::var("HOT_PATH_STEP") {
        per_call::main(&fixture, &step);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &fixture);
    c.final_summary();
}
