//! Rate limits on what anyone may ask for without a key: a token bucket ([`Bucket`]), and a
//! fixed table of them keyed by client address ([`PerAddress`]).
//!
//! A bucket is one atomic word, the time at which it will be empty again (the generic cell rate
//! algorithm): taking a token is a compare-and-swap, never a lock. The rate and burst are given at
//! each take, so a reloaded config applies at once.
//!
//! ```
//! use douyin_gateway::limit::Bucket;
//! let b = Bucket::default();
//! assert!((0..3).all(|_| b.take(1, 3).is_ok()));
//! assert!(b.take(1, 3).is_err(), "a burst of 3, then one a second");
//! ```

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Slots of a [`PerAddress`] table: 128 KiB, whatever the number of addresses. Two addresses
/// whose keyed hashes meet share a slot (and so a rate); which ones do changes at every start.
pub const ADDRESS_SLOTS: usize = 16_384;

/// Microseconds since the first bucket was used: the clock of every bucket.
fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// A token bucket: `rate` tokens a second, up to `burst` saved up; full when new.
#[derive(Debug, Default)]
pub struct Bucket {
    /// When (µs on [`now_us`]'s clock) the bucket would be full again had nothing more been taken,
    /// less the burst's worth: a take is allowed while this is at most `(burst − 1)` intervals
    /// ahead of now.
    empty_at: AtomicU64,
}

impl Bucket {
    /// Takes one token, or says how long until one is there.
    pub fn take(&self, rate: u32, burst: u32) -> Result<(), Duration> {
        self.take_at(now_us(), rate, burst)
    }

    fn take_at(&self, now: u64, rate: u32, burst: u32) -> Result<(), Duration> {
        // Rounded up, so the rate is never exceeded.
        let interval = 1_000_000u64.div_ceil(u64::from(rate.max(1)));
        let tolerance = interval * u64::from(burst.max(1) - 1);
        let mut at = self.empty_at.load(Ordering::Relaxed);
        loop {
            let start = at.max(now);
            if start - now > tolerance {
                return Err(Duration::from_micros(start - now - tolerance));
            }
            match self
                .empty_at
                .compare_exchange_weak(at, start + interval, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(actual) => at = actual,
            }
        }
    }
}

/// At most `rate` events in any one second: the times of the last `rate`, oldest first. Unlike a
/// [`Bucket`], whose burst comes on top of its rate, it never lets more than the rate through in
/// any second, and still lets that many through at once. For rare events (a lock per take).
#[derive(Debug, Default)]
pub struct Window(std::sync::Mutex<std::collections::VecDeque<u64>>);

impl Window {
    /// Takes one, or says how long until the oldest of the last `rate` is a second old.
    pub fn take(&self, rate: u32) -> Result<(), Duration> {
        self.take_at(now_us(), rate)
    }

    fn take_at(&self, now: u64, rate: u32) -> Result<(), Duration> {
        let mut times = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let rate = rate.max(1) as usize;
        // Forget what is a second old, and (after a reload lowered the rate) what is beyond it.
        while times.front().is_some_and(|&t| t + 1_000_000 <= now) || times.len() > rate {
            times.pop_front();
        }
        if times.len() < rate {
            times.push_back(now);
            return Ok(());
        }
        Err(Duration::from_micros(times[0] + 1_000_000 - now))
    }
}

/// A rate per client address, in a fixed table: a stranger with many addresses cannot make it
/// grow. An IPv6 address counts by its /64 (what one host or home usually gets), an IPv4-mapped
/// one as its IPv4 address.
pub struct PerAddress {
    slots: Box<[Bucket]>,
    /// Keyed (random per process): nobody outside can aim at another address's slot.
    hasher: std::collections::hash_map::RandomState,
}

impl Default for PerAddress {
    fn default() -> Self {
        PerAddress {
            slots: (0..ADDRESS_SLOTS).map(|_| Bucket::default()).collect(),
            hasher: Default::default(),
        }
    }
}

impl PerAddress {
    /// Takes one token from `ip`'s bucket, or says how long until one is there.
    pub fn take(&self, ip: IpAddr, rate: u32, burst: u32) -> Result<(), Duration> {
        self.slot(ip).take(rate, burst)
    }

    fn slot(&self, ip: IpAddr) -> &Bucket {
        let hash = match ip.to_canonical() {
            IpAddr::V4(v4) => self.hasher.hash_one((4u8, v4.octets())),
            IpAddr::V6(v6) => {
                let prefix: [u8; 8] = v6.octets()[..8].try_into().expect("8 bytes");
                self.hasher.hash_one((6u8, prefix))
            }
        };
        &self.slots[(hash % self.slots.len() as u64) as usize]
    }
}

/// Seconds to send as `Retry-After`: the wait rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_micros().div_ceil(1_000_000).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_never_lets_more_than_its_rate_through_in_any_second() {
        let w = Window::default();
        let t0 = 5_000_000;
        // All at once, then nothing until the first is a second old.
        assert_eq!((0..30).filter(|_| w.take_at(t0, 20).is_ok()).count(), 20);
        assert_eq!(w.take_at(t0 + 400_000, 20), Err(Duration::from_millis(600)));
        assert!(w.take_at(t0 + 1_000_000, 20).is_ok());
        // Spread out: in any second, at most 20 (checked every 10 ms over 5 s).
        let w = Window::default();
        let mut taken = Vec::new();
        for step in 0..500u64 {
            let now = t0 + step * 10_000;
            for _ in 0..3 {
                if w.take_at(now, 20).is_ok() {
                    taken.push(now);
                }
            }
        }
        for &start in &taken {
            let in_second = taken.iter().filter(|&&t| t >= start && t < start + 1_000_000).count();
            assert!(in_second <= 20, "{in_second} in the second from {start}");
        }
        assert!(taken.len() >= 5 * 20 - 20, "{}", taken.len());
    }

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let b = Bucket::default();
        let t0 = 10_000_000;
        for _ in 0..20 {
            assert!(b.take_at(t0, 5, 20).is_ok());
        }
        // Empty: the next token in 1/5 s.
        assert_eq!(b.take_at(t0, 5, 20), Err(Duration::from_millis(200)));
        assert_eq!(b.take_at(t0 + 150_000, 5, 20), Err(Duration::from_millis(50)));
        assert!(b.take_at(t0 + 200_000, 5, 20).is_ok());
        assert!(b.take_at(t0 + 200_000, 5, 20).is_err());
        // One second later: five more, not six.
        let t1 = t0 + 1_200_000;
        assert_eq!((0..10).filter(|_| b.take_at(t1, 5, 20).is_ok()).count(), 5);
        // Idle long enough, it is full again, and never fuller.
        let t2 = t1 + 3_600_000_000;
        assert_eq!((0..100).filter(|_| b.take_at(t2, 5, 20).is_ok()).count(), 20);
    }

    #[test]
    fn over_any_window_a_bucket_allows_at_most_rate_times_window_plus_burst() {
        let b = Bucket::default();
        let mut allowed = 0u64;
        // A take every millisecond for 10 s at 20/s with a burst of 20.
        for ms in 0..10_000u64 {
            allowed += u64::from(b.take_at(ms * 1000, 20, 20).is_ok());
        }
        assert!((200..=220).contains(&allowed), "{allowed}");
    }

    #[test]
    fn addresses_have_buckets_of_their_own_and_a_v6_host_counts_by_its_64() {
        let t = PerAddress::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(t.take(a, 1, 1).is_ok() && t.take(a, 1, 1).is_err());
        // Another address is (almost always) another slot: 1,000 addresses take nearly 1,000.
        let slots: std::collections::HashSet<*const Bucket> = (0..1000u32)
            .map(|i| t.slot(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))) as *const _)
            .collect();
        assert!(slots.len() > 950, "{}", slots.len());
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert!(std::ptr::eq(t.slot(a), t.slot(mapped)));
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(std::ptr::eq(t.slot(v6a), t.slot(v6b)), "one /64");
        assert_eq!(std::mem::size_of::<Bucket>() * ADDRESS_SLOTS, 128 * 1024);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }
}
