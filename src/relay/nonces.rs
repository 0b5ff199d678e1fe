//! The nonces of verified callbacks, remembered for [`NONCE_WINDOW_SECS`] so a replay is refused.
//!
//! Only a callback whose signature verified is recorded, so a stranger without the platform's key
//! cannot add an entry; the table is capped all the same ([`MAX_NONCES`]), and past the cap a new
//! callback is refused (the platform delivers it again later) rather than an unexpired nonce
//! forgotten, which would let its callback be replayed.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// How long a nonce is remembered: 10 minutes, longer than the ±300 s a timestamp may be off, so
/// a replay is refused by one rule or the other. (The platform's callback pages say to verify the
/// raw body with its key; neither window is stated there: these are the gateway's.)
pub const NONCE_WINDOW_SECS: u64 = 600;

/// Nonces remembered at most: 50,000 in 10 minutes is 83 callbacks a second, far above what the
/// platform sends one gateway; at about 150 bytes each, under 8 MB.
pub const MAX_NONCES: usize = 50_000;

/// Why a nonce was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Seen within the window: a replay.
    Replayed,
    /// The table is full of unexpired nonces.
    Full,
}

/// Nonces seen, per app, with their expiry.
#[derive(Debug)]
pub struct Nonces {
    cap: usize,
    window: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashSet<String>,
    /// `(expires, key)`, oldest first: expiries only grow (a clock stepping back keeps an entry
    /// a little longer, never shorter).
    order: VecDeque<(u64, String)>,
}

impl Default for Nonces {
    fn default() -> Self {
        Nonces::new(MAX_NONCES)
    }
}

impl Nonces {
    /// A table of at most `cap` nonces.
    pub fn new(cap: usize) -> Self {
        Nonces::with_window(cap, NONCE_WINDOW_SECS)
    }

    /// A table of at most `cap` nonces, each remembered `window` seconds (a provider's events,
    /// whose timestamps may be older than a callback's).
    pub fn with_window(cap: usize, window: u64) -> Self {
        Nonces {
            cap,
            window,
            inner: Mutex::default(),
        }
    }

    /// Records `nonce` of `app` at `now` (Unix seconds), unless it was seen in the window or the
    /// table is full.
    pub fn record(&self, app: &str, nonce: &str, now: u64) -> Result<(), Refused> {
        let key = format!("{app}\n{nonce}");
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Inner { seen, order } = &mut *g;
        while order.front().is_some_and(|(expires, _)| *expires <= now) {
            if let Some((_, old)) = order.pop_front() {
                seen.remove(&old);
            }
        }
        if seen.contains(&key) {
            return Err(Refused::Replayed);
        }
        if seen.len() >= self.cap {
            return Err(Refused::Full);
        }
        let expires = order.back().map_or(0, |(e, _)| *e).max(now + self.window);
        seen.insert(key.clone());
        order.push_back((expires, key));
        Ok(())
    }

    /// Forgets `nonce` of `app`: what it came with was not acted on (the sender is told to
    /// deliver it again, and its copy must then be taken).
    pub fn forget(&self, app: &str, nonce: &str) {
        let key = format!("{app}\n{nonce}");
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.seen.remove(&key) {
            g.order.retain(|(_, k)| *k != key);
        }
    }

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).seen.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_refused_for_ten_minutes_then_forgotten() {
        let n = Nonces::new(10);
        assert_eq!(n.record("a", "x", 1000), Ok(()));
        assert_eq!(n.record("a", "x", 1599), Err(Refused::Replayed));
        // Another app's nonce is its own.
        assert_eq!(n.record("b", "x", 1599), Ok(()));
        assert_eq!(n.record("a", "x", 1600), Ok(()), "expired");
        assert_eq!(n.len(), 2);
    }

    #[test]
    fn the_table_is_capped_and_refuses_rather_than_forgets() {
        let n = Nonces::new(3);
        for i in 0..3 {
            assert_eq!(n.record("a", &i.to_string(), 1000), Ok(()));
        }
        assert_eq!(n.record("a", "3", 1001), Err(Refused::Full));
        assert_eq!(n.record("a", "0", 1001), Err(Refused::Replayed), "not forgotten");
        assert_eq!(n.len(), 3);
        // Once they expire there is room again.
        assert_eq!(n.record("a", "3", 1600), Ok(()));
        assert_eq!(n.len(), 1);
    }
}
