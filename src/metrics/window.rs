//! Each route's traffic over the last 5 minutes, for the status page ([`Window`]): calls, errors
//! by code (the gateway's and the platform's) and latency, in 10-second buckets.
//!
//! Recording is on the path of every proxied call, so it is cheap and never waits: a fixed ring
//! of [`BUCKETS`] buckets per route, allocated once when the route's handles are made, each a set
//! of atomic counters and a log-scale latency histogram from which p50 and p99 are estimated. A
//! call costs an `Instant` subtraction and a division (its 10-second slot), one atomic load (the
//! bucket's slot tag), two relaxed `fetch_add`s (calls, its latency bucket) and a third on an
//! error; no lock, no allocation, no system call. The first call of each 10 s on a route also
//! wins a compare-and-swap and zeroes its bucket (about 100 stores); a call of another core that
//! lands in that bucket in those nanoseconds may go uncounted: the page is an operator's glance,
//! the Prometheus counters are the accounts.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Seconds one bucket covers.
pub const BUCKET_SECS: u64 = 10;
/// Buckets the window holds: 30 × 10 s = the last 5 minutes (the newest one filling).
pub const BUCKETS: usize = 30;
/// Latency buckets: two per power of two from 32 µs (everything faster) to 50 s (everything
/// slower), so an estimate is within a factor of about 1.5 of the truth.
const LATENCY_BUCKETS: usize = 42;
/// The smallest latency bucket's power of two, in µs (2^5 = 32 µs).
const MIN_POW: u32 = 5;
/// Distinct platform codes a bucket keeps apart; further ones count as "other".
const PLATFORM_SLOTS: usize = 8;

/// The gateway's error codes (`GatewayError::code`), each with its own counter; an unknown one
/// counts as `other`.
pub const GATEWAY_CODES: &[&str] = &[
    "open_id_missing",
    "bad_request",
    "caller_unauthenticated",
    "user_authorization_required",
    "caller_forbidden",
    "no_route",
    "body_too_large",
    "upstream_unavailable",
    "token_unavailable",
    "upstream_timeout",
    "client_timeout",
    "headers_too_large",
    "overloaded",
    "code_refused",
    "rate_limited",
    "internal_error",
    "not_found",
    "unknown_app",
    "admin_unauthenticated",
    "store_unavailable",
    "bad_signature",
    "bad_upstream_signature",
    "authorizer_authorization_required",
];

/// One 10-second slot's counters.
struct Bucket {
    /// The slot it counts (slot number + 1; 0: never used).
    tag: AtomicU64,
    calls: AtomicU32,
    latency: [AtomicU32; LATENCY_BUCKETS],
    /// One per [`GATEWAY_CODES`] entry, then `other`.
    gateway: [AtomicU32; GATEWAY_CODES.len() + 1],
    /// The platform codes seen (0: free slot), and their counts; the last count is "other".
    platform_codes: [AtomicI64; PLATFORM_SLOTS],
    platform: [AtomicU32; PLATFORM_SLOTS + 1],
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            tag: AtomicU64::new(0),
            calls: AtomicU32::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
            gateway: std::array::from_fn(|_| AtomicU32::new(0)),
            platform_codes: std::array::from_fn(|_| AtomicI64::new(0)),
            platform: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

impl Bucket {
    fn clear(&self) {
        let zero = |c: &AtomicU32| c.store(0, Relaxed);
        zero(&self.calls);
        self.latency.iter().for_each(zero);
        self.gateway.iter().for_each(zero);
        self.platform.iter().for_each(zero);
        self.platform_codes.iter().for_each(|c| c.store(0, Relaxed));
    }

    fn platform_error(&self, code: i64) {
        for (slot, count) in self.platform_codes.iter().zip(&self.platform) {
            let mine = match slot.compare_exchange(0, code, AcqRel, Acquire) {
                Ok(_) => true,
                Err(c) => c == code,
            };
            if mine {
                count.fetch_add(1, Relaxed);
                return;
            }
        }
        self.platform[PLATFORM_SLOTS].fetch_add(1, Relaxed);
    }
}

/// A route's last 5 minutes: a fixed ring of 10-second buckets (about 12 KiB, made once).
pub struct Window {
    origin: Instant,
    buckets: Box<[Bucket]>,
}

impl Default for Window {
    fn default() -> Self {
        Self::starting_at(Instant::now())
    }
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window").finish_non_exhaustive()
    }
}

/// The latency bucket of `d`.
fn latency_index(d: Duration) -> usize {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    let pow = 63 - us.leading_zeros();
    let half = if pow > 0 { (us >> (pow - 1)) & 1 } else { 0 };
    let raw = u64::from(2 * pow) + half;
    (raw.saturating_sub(u64::from(2 * MIN_POW)) as usize).min(LATENCY_BUCKETS - 1)
}

/// The lower bound of latency bucket `i`, in µs (bucket 0 starts at 0).
fn latency_floor_us(i: usize) -> f64 {
    if i == 0 {
        return 0.0;
    }
    let raw = i as u32 + 2 * MIN_POW;
    let base = (1u64 << (raw / 2)) as f64;
    if raw % 2 == 1 {
        base * 1.5
    } else {
        base
    }
}

/// The `q` quantile (0 < q ≤ 1) of a latency histogram, in ms, interpolated within its bucket;
/// `None` when it is empty.
fn quantile_ms(hist: &[u64; LATENCY_BUCKETS], q: f64) -> Option<f64> {
    let n: u64 = hist.iter().sum();
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    let mut below = 0;
    for (i, &c) in hist.iter().enumerate() {
        if below + c >= rank {
            let lo = latency_floor_us(i);
            let hi = if i + 1 < LATENCY_BUCKETS {
                latency_floor_us(i + 1)
            } else {
                lo
            };
            let frac = (rank - below) as f64 / c as f64;
            return Some((lo + (hi - lo) * frac) / 1000.0);
        }
        below += c;
    }
    None
}

/// An error code as the window counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorCode {
    /// The gateway's own (`no_route`, …; `other` for one it does not list).
    Gateway(&'static str),
    /// A non-zero code in the platform's answer.
    Platform(i64),
    /// Platform codes beyond the [`PLATFORM_SLOTS`] a bucket keeps apart.
    PlatformOther,
}

/// One error code's counts over the window.
#[derive(Debug, Clone)]
pub struct CodeCount {
    /// Which code.
    pub code: ErrorCode,
    /// Its count per bucket, oldest first.
    pub per_bucket: [u64; BUCKETS],
}

impl CodeCount {
    /// Its count over the window.
    pub fn total(&self) -> u64 {
        self.per_bucket.iter().sum()
    }
}

/// What a window held when read: per bucket, oldest first, and over the whole window.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Calls answered, per bucket.
    pub calls: [u64; BUCKETS],
    /// Errors (gateway and platform codes), per bucket.
    pub errors: [u64; BUCKETS],
    /// Median latency per bucket, ms (`None`: no call).
    pub p50_ms: [Option<f64>; BUCKETS],
    /// 99th percentile latency per bucket, ms.
    pub p99_ms: [Option<f64>; BUCKETS],
    /// Median over the window, ms.
    pub p50_all_ms: Option<f64>,
    /// 99th percentile over the window, ms.
    pub p99_all_ms: Option<f64>,
    /// Each code seen, most frequent first.
    pub codes: Vec<CodeCount>,
}

impl Snapshot {
    /// Calls over the window.
    pub fn total_calls(&self) -> u64 {
        self.calls.iter().sum()
    }

    /// Errors over the window.
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }
}

impl Window {
    /// A window whose first bucket starts at `origin` (tests choose it).
    pub fn starting_at(origin: Instant) -> Self {
        Window {
            origin,
            buckets: (0..BUCKETS).map(|_| Bucket::default()).collect(),
        }
    }

    fn slot(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_secs() / BUCKET_SECS
    }

    /// The bucket counting `slot`, recycled by the first call of the slot.
    fn bucket(&self, slot: u64) -> &Bucket {
        let b = &self.buckets[(slot % BUCKETS as u64) as usize];
        let (tag, seen) = (slot + 1, b.tag.load(Acquire));
        if seen < tag && b.tag.compare_exchange(seen, tag, AcqRel, Acquire).is_ok() {
            b.clear();
        }
        b
    }

    /// One answered call, ended at `at` after `latency`, with the gateway's error code if it
    /// refused or failed it.
    pub fn record(&self, at: Instant, latency: Duration, error: Option<&str>) {
        let b = self.bucket(self.slot(at));
        b.calls.fetch_add(1, Relaxed);
        b.latency[latency_index(latency)].fetch_add(1, Relaxed);
        if let Some(code) = error {
            let i = GATEWAY_CODES
                .iter()
                .position(|c| *c == code)
                .unwrap_or(GATEWAY_CODES.len());
            b.gateway[i].fetch_add(1, Relaxed);
        }
    }

    /// A non-zero error code in the platform's answer, at `at`.
    pub fn platform_error(&self, at: Instant, code: i64) {
        if code != 0 {
            self.bucket(self.slot(at)).platform_error(code);
        }
    }

    /// The last 5 minutes as of `now`.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let newest = self.slot(now);
        let mut s = Snapshot {
            calls: [0; BUCKETS],
            errors: [0; BUCKETS],
            p50_ms: [None; BUCKETS],
            p99_ms: [None; BUCKETS],
            p50_all_ms: None,
            p99_all_ms: None,
            codes: Vec::new(),
        };
        let mut all = [0u64; LATENCY_BUCKETS];
        let mut codes: std::collections::BTreeMap<ErrorCode, [u64; BUCKETS]> = Default::default();
        for i in 0..BUCKETS {
            let Some(slot) = newest.checked_sub((BUCKETS - 1 - i) as u64) else {
                continue;
            };
            let b = &self.buckets[(slot % BUCKETS as u64) as usize];
            if b.tag.load(Acquire) != slot + 1 {
                continue;
            }
            s.calls[i] = u64::from(b.calls.load(Relaxed));
            let hist: [u64; LATENCY_BUCKETS] = std::array::from_fn(|j| u64::from(b.latency[j].load(Relaxed)));
            all.iter_mut().zip(&hist).for_each(|(a, h)| *a += h);
            (s.p50_ms[i], s.p99_ms[i]) = (quantile_ms(&hist, 0.5), quantile_ms(&hist, 0.99));
            let mut count = |code: ErrorCode, n: u32| {
                if n > 0 {
                    codes.entry(code).or_insert([0; BUCKETS])[i] += u64::from(n);
                    s.errors[i] += u64::from(n);
                }
            };
            for (j, c) in b.gateway.iter().enumerate() {
                count(
                    ErrorCode::Gateway(GATEWAY_CODES.get(j).copied().unwrap_or("other")),
                    c.load(Relaxed),
                );
            }
            for (code, c) in b.platform_codes.iter().zip(&b.platform) {
                match code.load(Acquire) {
                    0 => {}
                    code => count(ErrorCode::Platform(code), c.load(Relaxed)),
                }
            }
            count(ErrorCode::PlatformOther, b.platform[PLATFORM_SLOTS].load(Relaxed));
        }
        (s.p50_all_ms, s.p99_all_ms) = (quantile_ms(&all, 0.5), quantile_ms(&all, 0.99));
        s.codes = codes
            .into_iter()
            .map(|(code, per_bucket)| CodeCount { code, per_bucket })
            .collect();
        s.codes.sort_by_key(|c| std::cmp::Reverse(c.total()));
        s
    }
}

/// Every route's window by name, so a reload that rebuilds the routes' handles keeps their
/// last 5 minutes. Names come from the config (and the two pseudo-routes), so it is bounded by it.
#[derive(Debug, Default)]
pub struct Windows(Mutex<std::collections::HashMap<String, Arc<Window>>>);

impl Windows {
    /// `route`'s window, made on first use.
    pub fn of(&self, route: &str) -> Arc<Window> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(all.entry(route.to_owned()).or_default())
    }
}

#[cfg(test)]
mod tests {
    /// Every code `GatewayError::code` can answer has its own counter, so none shows as "other"
    /// on the status page (`bad_upstream_signature` did, before this test).
    #[test]
    fn every_gateway_error_code_is_kept_apart() {
        let source = include_str!("../error.rs");
        let start = source.find("pub fn code(&self)").expect("GatewayError::code");
        let body = &source[start..start + source[start..].find("\n    }\n").expect("its end")];
        let codes: Vec<&str> = body
            .split("=> \"")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').expect("a closing quote")])
            .collect();
        assert!(codes.len() >= 20, "{codes:?}");
        for code in codes {
            assert!(
                super::GATEWAY_CODES.contains(&code),
                "{code} is missing from GATEWAY_CODES"
            );
        }
    }

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn latency_buckets_are_ordered_and_bounded() {
        assert_eq!(latency_index(Duration::ZERO), 0);
        assert_eq!(latency_index(Duration::from_micros(31)), 0);
        assert_eq!(latency_index(Duration::from_micros(32)), 0);
        assert_eq!(latency_index(Duration::from_micros(48)), 1);
        assert_eq!(latency_index(Duration::from_micros(64)), 2);
        assert_eq!(latency_index(Duration::from_secs(3600)), LATENCY_BUCKETS - 1);
        let mut last = 0;
        for us in 1..200_000u64 {
            let i = latency_index(Duration::from_micros(us));
            assert!(i >= last && i <= last + 1, "{us} µs");
            assert!(latency_floor_us(i) <= us as f64, "{us} µs in bucket {i}");
            if i + 1 < LATENCY_BUCKETS {
                assert!(latency_floor_us(i + 1) > us as f64, "{us} µs in bucket {i}");
            }
            last = i;
        }
    }

    #[test]
    fn quantiles_are_close_to_the_truth() {
        let t0 = Instant::now();
        let w = Window::starting_at(t0);
        // 98 calls of 2 ms, 2 of 400 ms: p50 near 2 ms, p99 near 400 ms.
        for i in 0..100 {
            let ms = if i < 98 { 2 } else { 400 };
            w.record(t0, ms * MS, None);
        }
        let s = w.snapshot(t0);
        let (p50, p99) = (s.p50_all_ms.unwrap(), s.p99_all_ms.unwrap());
        assert!((1.5..=3.0).contains(&p50), "{p50}");
        assert!((300.0..=600.0).contains(&p99), "{p99}");
        assert_eq!(s.p50_ms[BUCKETS - 1], s.p50_all_ms);
        assert_eq!(s.p50_ms[0], None);
        assert_eq!(Window::default().snapshot(Instant::now()).p99_all_ms, None);
    }

    #[test]
    fn buckets_roll_over_and_old_ones_leave_the_window() {
        let t0 = Instant::now();
        let w = Window::starting_at(t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        w.record(at(0), MS, None);
        w.record(at(5), MS, Some("no_route"));
        w.record(at(10), MS, None);
        w.record(at(295), MS, None);
        let s = w.snapshot(at(299));
        assert_eq!(s.total_calls(), 4);
        assert_eq!((s.calls[0], s.calls[1], s.calls[BUCKETS - 1]), (2, 1, 1));
        assert_eq!((s.errors[0], s.total_errors()), (1, 1));
        // 5 minutes on, the first bucket has left the window; its ring entry is reused.
        let s = w.snapshot(at(300));
        assert_eq!((s.total_calls(), s.total_errors()), (2, 0));
        w.record(at(301), MS, None);
        let s = w.snapshot(at(301));
        assert_eq!((s.calls[BUCKETS - 1], s.total_calls()), (1, 3));
        // Long idle: nothing left.
        assert_eq!(w.snapshot(at(3600)).total_calls(), 0);
    }

    #[test]
    fn errors_are_counted_by_code() {
        let t0 = Instant::now();
        let w = Window::starting_at(t0);
        for _ in 0..3 {
            w.record(t0, MS, Some("upstream_timeout"));
        }
        w.record(t0, MS, Some("something_new"));
        for code in 1..=PLATFORM_SLOTS as i64 + 2 {
            w.platform_error(t0, 28001000 + code);
        }
        w.platform_error(t0, 28001001);
        w.platform_error(t0, 0);
        let s = w.snapshot(t0);
        let count = |c: ErrorCode| s.codes.iter().find(|x| x.code == c).map(CodeCount::total);
        assert_eq!(s.codes[0].code, ErrorCode::Gateway("upstream_timeout"));
        assert_eq!(count(ErrorCode::Gateway("upstream_timeout")), Some(3));
        assert_eq!(count(ErrorCode::Gateway("other")), Some(1));
        assert_eq!(count(ErrorCode::Platform(28001001)), Some(2));
        assert_eq!(count(ErrorCode::Platform(28001008)), Some(1));
        assert_eq!(count(ErrorCode::Platform(28001009)), None);
        assert_eq!(count(ErrorCode::PlatformOther), Some(2));
        assert_eq!(s.total_errors(), 3 + 1 + PLATFORM_SLOTS as u64 + 2 + 1);
        assert_eq!(
            s.total_calls(),
            4,
            "platform codes are in calls counted once, by the edge"
        );
    }

    #[test]
    fn concurrent_calls_in_one_bucket_are_all_counted() {
        let t0 = Instant::now();
        let w = Arc::new(Window::starting_at(t0));
        w.record(t0, MS, None);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = Arc::clone(&w);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        w.record(t0 + Duration::from_millis(i % 9000), MS, Some("rate_limited"));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let s = w.snapshot(t0);
        assert_eq!((s.total_calls(), s.total_errors()), (40_001, 40_000));
    }

    #[test]
    fn a_window_is_the_size_the_docs_say() {
        // docs/operations.md and the type's doc: about 12 KiB per route, made once.
        let size = std::mem::size_of::<Bucket>() * BUCKETS + std::mem::size_of::<Window>();
        assert!(size <= 12 * 1024, "{size} bytes");
    }

    #[test]
    fn windows_outlive_a_reload_by_name() {
        let all = Windows::default();
        let a = all.of("video_list");
        a.record(Instant::now(), MS, None);
        assert!(Arc::ptr_eq(&a, &all.of("video_list")));
        assert!(!Arc::ptr_eq(&a, &all.of("other")));
    }
}
