//! What one call costs in the steps done per call, counted rather than timed: heap allocations
//! per call (a counting global allocator around jemalloc, the gateway's own), and a driver that
//! runs one step N times for `valgrind --tool=callgrind` (instructions per call = the difference
//! between N calls and 0 calls, divided by N). Counts are steady on a shared machine; times are
//! not.
//!
//! ```sh
//! HOT_PATH_STEP=allocs target/release/deps/hot_path-*          # the table of allocations
//! HOT_PATH_STEP=access_line HOT_PATH_CALLS=100000 valgrind --tool=callgrind target/release/deps/hot_path-*
//! ```

use bytes::Bytes;
use douyin_gateway::config::Inject;
use douyin_gateway::proxy::{Attached, TokenFor};
use douyin_gateway::token::{KeyRef, Token, TokenKey, Tokens};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tower::{Layer, Service};

/// jemalloc, counting allocations (and reallocations, which may move).
pub struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        tikv_jemallocator::Jemalloc.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        tikv_jemallocator::Jemalloc.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        tikv_jemallocator::Jemalloc.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        tikv_jemallocator::Jemalloc.realloc(ptr, layout, new_size)
    }
}

/// What the steps need: a token in the cache, as a real fetch put it there.
pub struct Fixture {
    pub tokens: Arc<Tokens>,
    pub key: TokenKey,
    /// What the gateway's edge puts in every request's extensions.
    pub call: douyin_gateway::proxy::Call,
}

/// The user of the fixture's user and biz tokens (an open_id's usual length), and the biz
/// token's scope.
pub const OPEN_ID: &str = "_000Hq2RzkAcVZtIm8pCL4xU1eRbMIUsZkd7";
pub const BIZ_SCOPE: &str = "data.external.item";

/// A user or biz token as an import brings it, good for a day.
pub fn fetched() -> douyin_gateway::token::issuer::Fetched {
    use douyin_gateway::token::{unix_now, Grant, GrantState};
    douyin_gateway::token::issuer::Fetched {
        value: "act.bench-user-token".into(),
        expires_in: 86_400,
        grant: Some(Grant {
            refresh_token: douyin_gateway::secret::Secret::new("rft.bench"),
            refresh_expires_unix: unix_now() + 30 * 86_400,
            refresh_lifetime_secs: 30 * 86_400,
            renewals: 0,
            scope: Arc::from(BIZ_SCOPE),
            state: GrantState::Active,
        }),
    }
}

/// The head a forwarded call carries (its credentials already stripped, the token attached).
fn request(token: &Token) -> http::Request<Bytes> {
    let mut req = http::Request::get("/js/getticket/?cursor=0&count=10")
        .header("host", "open.douyin.com")
        .header("user-agent", "bench/1.0")
        .header("accept", "application/json")
        .header("x-request-id", "req-123")
        .body(Bytes::new())
        .unwrap();
    req.headers_mut().insert("access-token", token.header());
    req
}

/// The retry layer around a service that answers at once (never polled here: `call` is what is
/// measured, the copy it keeps for a replay).
fn retry(tokens: &Arc<Tokens>) -> impl Service<http::Request<Bytes>> {
    let answer = tower::service_fn(|_req: http::Request<Bytes>| async {
        Ok::<_, douyin_gateway::error::GatewayError>(http::Response::new(http_body_util::Full::new(Bytes::new())))
    });
    douyin_gateway::proxy::RetryLayer::new(Arc::clone(tokens)).layer(answer)
}

/// The steps, by name: each runs one call's worth of that step.
pub const STEPS: &[&str] = &[
    "request_id",
    "cache_hit",
    "attach",
    "biz_key",
    "user_hit",
    "biz_hit",
    "user_hit_owned",
    "biz_hit_owned",
    "replay_copy",
    "access_line",
    "access_buffered",
];

/// Runs `step` `n` times; returns the allocations made inside the measured part.
pub fn run(f: &Fixture, step: &str, n: u64) -> u64 {
    let token = f.tokens.cached(&f.key).expect("a cached token");
    let no_headers = http::HeaderMap::new();
    let mut svc = retry(&f.tokens);
    let app: Arc<str> = Arc::clone(&f.key.app);
    let mut req = request(&token);
    let mut counted = 0;
    let mut measure = |work: &mut dyn FnMut()| {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        work();
        counted += ALLOCATIONS.load(Ordering::Relaxed) - before;
    };
    for _ in 0..n {
        match step {
            "request_id" => measure(&mut || {
                std::hint::black_box(douyin_gateway::proxy::request_id(std::hint::black_box(&no_headers)));
            }),
            "cache_hit" => measure(&mut || {
                std::hint::black_box(f.tokens.cached(std::hint::black_box(&f.key)));
            }),
            "attach" => measure(&mut || {
                let t = f.tokens.cached(&f.key).expect("cached");
                douyin_gateway::proxy::attach::attach(&mut req, &t, &Inject::Header).unwrap();
                std::hint::black_box(&req);
            }),
            "biz_key" => measure(&mut || {
                std::hint::black_box(TokenKey::biz(Arc::clone(&app), "ou_0123456789", "video.data"));
            }),
            // As the routing layer looks a user's token up: the key (the cache's copy) and the
            // token, from the request's parts.
            "user_hit" => measure(&mut || {
                let parts = KeyRef::user(&app, std::hint::black_box(OPEN_ID));
                std::hint::black_box(f.tokens.cached_by(parts).expect("cached"));
            }),
            "biz_hit" => measure(&mut || {
                let parts = KeyRef::biz(&app, std::hint::black_box(OPEN_ID), BIZ_SCOPE);
                std::hint::black_box(f.tokens.cached_by(parts).expect("cached"));
            }),
            // The same with the key built first, as the routing layer did before.
            "user_hit_owned" => measure(&mut || {
                let key = TokenKey::user(Arc::clone(&app), std::hint::black_box(OPEN_ID));
                std::hint::black_box(f.tokens.cached(&key).expect("cached"));
            }),
            "biz_hit_owned" => measure(&mut || {
                let key = TokenKey::biz(Arc::clone(&app), std::hint::black_box(OPEN_ID), BIZ_SCOPE);
                std::hint::black_box(f.tokens.cached(&key).expect("cached"));
            }),
            "replay_copy" => {
                // The extensions a request has there: the connection's peer, the call, the token.
                let mut r = request(&token);
                r.extensions_mut()
                    .insert(douyin_gateway::conn::Peer(([127, 0, 0, 1], 40312).into()));
                r.extensions_mut().insert(f.call.clone());
                r.extensions_mut().insert(Attached {
                    need: TokenFor {
                        key: f.key.clone(),
                        inject: Inject::Header,
                    },
                    token: Arc::clone(&token),
                });
                measure(&mut || {
                    drop(std::hint::black_box(
                        svc.call(std::mem::replace(&mut r, http::Request::new(Bytes::new()))),
                    ));
                })
            }
            "access_line" => measure(&mut || access_line()),
            "access_buffered" => measure(&mut || access_buffered()),
            other => panic!("no step {other:?}; steps: {STEPS:?}"),
        }
    }
    counted
}

/// One access line as the gateway writes it: through tracing's fmt layer, escaped, to a sink.
fn access_line() {
    tracing::info!(
        target: "access",
        request_id = %"5f3a9c1e-1f",
        peer = %std::net::SocketAddr::from(([127, 0, 0, 1], 40312)),
        caller = "backend",
        route = "ticket",
        method = %http::Method::GET,
        path = %"/js/getticket/",
        status = 200u16,
        ms = 1.234,
        upstream_status = 200u64,
        logid = "20261205132243010225251194",
        "access"
    );
}

/// The same line as the gateway writes it now: into this thread's buffer, written in batches by
/// the access log's writer thread (to nowhere here).
fn access_buffered() {
    use douyin_gateway::logs::access;
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| access::install(douyin_gateway::logs::Format::Text, Box::new(std::io::sink())));
    access::log(&access::AccessLine {
        request_id: "5f3a9c1e-1f",
        peer: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 40312))),
        caller_request_id: None,
        caller: "backend",
        route: "ticket",
        method: &http::Method::GET,
        path: "/js/getticket/",
        status: 200,
        micros: 1234,
        upstream_status: 200,
        logid: "20261205132243010225251194",
    });
}

/// The access log's subscriber as `serve` sets it (text format), writing to nowhere.
pub fn logging() -> tracing::subscriber::DefaultGuard {
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(douyin_gateway::logs::EscapeControls(std::io::sink))
        .with_target(false)
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_default(subscriber)
}

/// `HOT_PATH_STEP=allocs`: allocations per call of each step; `HOT_PATH_STEP=NAME`: run it
/// `HOT_PATH_CALLS` times.
pub fn main(f: &Fixture, step: &str) {
    let _logging = logging();
    if step == "allocs" {
        const N: u64 = 10_000;
        for s in STEPS {
            // Once first: what a thread or a token does only the first time is not per call.
            run(f, s, 1);
            let a = run(f, s, N);
            println!("allocations per call: {s:<15} {:.2}", a as f64 / N as f64);
        }
        return;
    }
    let n = std::env::var("HOT_PATH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    run(f, step, n);
    println!("{step}: {n} calls");
}
