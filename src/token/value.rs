//! A token as the cache holds it ([`Token`]): its value once, as the header calls attach, and
//! when it was obtained, is to be refreshed and expires.

use super::{unix_now, Grant, TokenError};
use http::HeaderValue;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A token with its pre-built header value.
#[derive(Debug, Clone)]
pub struct Token {
    /// Distinguishes this token from the one before it: a rejection names the
    /// generation it saw, so a newer token is never dropped for an older one's failure.
    /// Four bytes, like the other figures here: with them a cached token is 80 bytes (jemalloc's
    /// 96-byte class with its reference counts) rather than 88 (the 112-byte class).
    pub generation: u32,
    /// The token as the header calls carry, built and checked once, when the token is stored,
    /// and marked sensitive (a debug view shows `Sensitive`): the one copy of it, shared by every
    /// request that carries it ([`Token::header`], [`Token::value`]). A call clones it (a
    /// reference count) rather than building and checking a header value of its own.
    header: HeaderValue,
    /// When it was obtained: whole seconds since the process started ([`Token::obtained_at`]).
    /// Offsets, not instants: 4 bytes instead of 16 in every cached token.
    obtained_s: u32,
    /// Milliseconds after `obtained_at` to refresh it in the background ([`Token::refresh_at`]).
    /// Offsets, not instants: 8 bytes instead of 32 in every cached token.
    refresh_after_ms: u32,
    /// Milliseconds after `obtained_at` to stop using it ([`Token::expires_at`]).
    expires_after_ms: u32,
    /// The platform's expiry, Unix seconds (for the admin API and the store); [`unix_u32`] keeps
    /// it in four bytes, good until 2106.
    pub expires_unix: u32,
    /// How to renew it (user and biz tokens).
    pub grant: Option<Arc<Grant>>,
    /// Fetched because the platform rejected the token before it.
    pub replaced_rejected: bool,
    /// Its early eviction was counted and logged already (once per token, however many calls
    /// carried it).
    pub evicted_noted: Flag,
    /// The store's version of the record this token was written as (0: never written).
    pub version: u64,
}

impl Token {
    /// Builds a token obtained now, valid `expires_in` seconds.
    pub fn new(generation: u32, value: String, expires_in: u64, refresh_fraction: f64) -> Result<Self, TokenError> {
        let Ok(mut header) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) else {
            return Err(TokenError::Malformed("token is not a valid header value".into()));
        };
        header.set_sensitive(true);
        let since = since_start(Instant::now());
        // The offsets count from the whole second the token was obtained in.
        let (obtained_s, within) = (u32::try_from(since / 1000).unwrap_or(u32::MAX), (since % 1000) as u32);
        let life = Duration::from_secs(expires_in.max(1));
        // Stop using it a little early so a call in flight does not carry a token that dies on the way.
        let margin = (life / 10).min(Duration::from_secs(30));
        Ok(Token {
            generation,
            header,
            obtained_s,
            refresh_after_ms: millis(life.mul_f64(refresh_fraction)).saturating_add(within),
            expires_after_ms: millis(life - margin).saturating_add(within),
            expires_unix: unix_u32(unix_now().saturating_add(expires_in)),
            grant: None,
            replaced_rejected: false,
            evicted_noted: Flag::default(),
            version: 0,
        })
    }

    /// The token itself, for query injection and the store.
    pub fn value(&self) -> &str {
        std::str::from_utf8(self.header.as_bytes()).expect("built from a str")
    }

    /// The `access-token` header value, marked sensitive (never printed by a debug view): the
    /// token's own, shared (a reference count, no allocation, no check).
    pub fn header(&self) -> HeaderValue {
        self.header.clone()
    }

    /// When it was obtained (to the second).
    pub fn obtained_at(&self) -> Instant {
        start() + Duration::from_secs(self.obtained_s.into())
    }

    /// After this, refresh it in the background.
    pub fn refresh_at(&self) -> Instant {
        self.obtained_at() + Duration::from_millis(self.refresh_after_ms.into())
    }

    /// After this, do not use it (a margin before the platform's expiry).
    pub fn expires_at(&self) -> Instant {
        self.obtained_at() + Duration::from_millis(self.expires_after_ms.into())
    }

    /// The same token, no longer to be used (the platform rejected it), its grant kept.
    pub fn killed(&self) -> Token {
        Token {
            expires_after_ms: 0,
            refresh_after_ms: 0,
            ..self.clone()
        }
    }

    /// The same token with another grant.
    pub fn with_grant(&self, grant: Grant) -> Token {
        Token {
            grant: Some(Arc::new(grant)),
            ..self.clone()
        }
    }
}

/// Unix seconds in the four bytes a token keeps them in: later than 2106 reads as 2106.
pub fn unix_u32(secs: u64) -> u32 {
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// A flag set once, from any thread.
#[derive(Debug, Default)]
pub struct Flag(std::sync::atomic::AtomicBool);

impl Flag {
    /// Sets it; true if it was set already.
    pub fn set(&self) -> bool {
        self.0.swap(true, std::sync::atomic::Ordering::AcqRel)
    }
}

impl Clone for Flag {
    fn clone(&self) -> Self {
        Flag(std::sync::atomic::AtomicBool::new(
            self.0.load(std::sync::atomic::Ordering::Acquire),
        ))
    }
}

/// The process's start, as the zero of every token's `obtained_ms`.
fn start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds from the process's start to `t`.
fn since_start(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(start()).as_millis()).unwrap_or(u64::MAX)
}

/// A lifetime in milliseconds; one over 49 days counts as 49 days (refreshed early, never late).
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_prints_and_its_header_is_sensitive() {
        let t = Token::new(1, "act.secret-value".into(), 3600, 0.8).unwrap();
        assert!(!format!("{t:?}").contains("secret-value"));
        assert_eq!(t.value(), "act.secret-value");
        assert!(t.header().is_sensitive());
        assert_eq!(t.header(), "act.secret-value");
        // Built once: every call's header shares the token's bytes.
        assert_eq!(t.header().as_bytes().as_ptr(), t.value().as_ptr());
        assert_eq!(t.clone().header().as_bytes().as_ptr(), t.value().as_ptr());
        assert!(Token::new(2, "bad\nvalue".into(), 3600, 0.8).is_err());
    }

    #[test]
    fn offsets_count_from_the_second_obtained_in() {
        let before = Instant::now();
        let t = Token::new(1, "v".into(), 100, 0.5).unwrap();
        let after = Instant::now();
        // 100 s of life, a 10 s margin: usable until 90 s after it was obtained, refreshed at 50 s.
        assert!(t.expires_at() >= before + Duration::from_secs(90) - Duration::from_millis(1));
        assert!(t.expires_at() <= after + Duration::from_secs(90));
        assert!(t.refresh_at() >= before + Duration::from_secs(50) - Duration::from_millis(1));
        assert!(t.refresh_at() <= after + Duration::from_secs(50));
        assert!(t.obtained_at() <= after);
    }

    #[test]
    fn a_token_is_at_most_80_bytes_for_the_96_byte_class() {
        // With an `Arc`'s two counts: 96 bytes, not 112, in every cached user's token.
        assert!(std::mem::size_of::<Token>() <= 80, "{}", std::mem::size_of::<Token>());
        // A platform expiry past 2106 reads as 2106 rather than wrapping to the past.
        let t = Token::new(1, "v".into(), u64::MAX, 0.5).unwrap();
        assert_eq!(t.expires_unix, u32::MAX);
        assert_eq!(unix_u32(1_800_000_000), 1_800_000_000);
    }
}
