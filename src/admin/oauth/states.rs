//! The authorization flow's `state`s: signed, self-contained, and single-use once their code was
//! exchanged.

use crate::token::unix_now;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// A `state` is good this long: the platform's code lives 10 minutes too.
pub(super) const STATE_TTL_SECS: u64 = 600;
/// States remembered at most (spent, or with an exchange in progress; about 80 bytes each). Only
/// states whose code the platform accepted are kept, and exchanges are bounded by
/// `oauth.max_exchanges_per_sec` (20 a second: at most 12,000 in 10 minutes), so this is reached
/// only by a rate above 1,600 a second; past it, callbacks are refused until some expire.
const MAX_REMEMBERED: usize = 1_000_000;
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 16;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why a state is refused, as the page says it.
pub(super) const UNKNOWN: &str = "Unknown or already used state: start the authorization again.";
const EXPIRED: &str = "This authorization expired: start again.";
const IN_PROGRESS: &str = "This authorization is being completed already.";
const TOO_MANY: &str = "Too many authorizations in progress: try again in a few minutes.";

type Nonce = [u8; NONCE_LEN];

/// The authorization flow's `state`s. A state is self-contained and signed:
/// `base64url(expiry ‖ nonce ‖ app ‖ HMAC-SHA256(key, expiry ‖ nonce ‖ app)[..16])`, so starting a
/// flow stores nothing and a flood of `/oauth/authorize` costs no memory. Checking a state
/// ([`OAuthStates::verify`]) stores nothing either. Only a callback that goes on to exchange a
/// code reserves the state's nonce ([`OAuthStates::reserve`]), so that two callbacks with one
/// state never both exchange; the nonce is remembered until the state expires if the exchange
/// succeeded, and forgotten if it failed: a callback without a code, with a forged state or with a
/// made-up code leaves nothing behind.
pub struct OAuthStates {
    key: [u8; 32],
    spent: Mutex<Spent>,
}

#[derive(Default)]
struct Spent {
    /// Nonces being exchanged (`false`) or exchanged (`true`).
    nonces: HashMap<Nonce, bool>,
    /// Exchanged nonces in the order they were kept, each with when it may be forgotten: that
    /// order is also the order of those times, so expired ones are popped from the front, a few
    /// at each reservation, never by a scan.
    expiry: VecDeque<(u64, Nonce)>,
}

impl Spent {
    fn forget_expired(&mut self, now: u64) {
        while let Some(&(at, nonce)) = self.expiry.front() {
            if at > now {
                break;
            }
            self.expiry.pop_front();
            self.nonces.remove(&nonce);
        }
    }
}

/// A state whose signature and expiry check out.
#[derive(Debug)]
pub struct Verified {
    /// The app it was issued for.
    pub app: String,
    nonce: Nonce,
}

/// A state's nonce reserved for one code exchange: [`Reservation::keep`] spends it; dropping the
/// reservation releases it (the exchange failed: the state may be used again).
pub struct Reservation<'a> {
    states: &'a OAuthStates,
    nonce: Nonce,
    kept: bool,
}

impl Reservation<'_> {
    /// The code was exchanged: the state is spent until it expires.
    pub fn keep(mut self) {
        self.kept = true;
        let now = unix_now();
        let mut spent = self.states.spent.lock().expect("not poisoned");
        spent.nonces.insert(self.nonce, true);
        // Forgotten no earlier than the state's own expiry, which is at most a TTL from now; in
        // the order kept, so the queue stays sorted.
        spent.expiry.push_back((now + STATE_TTL_SECS, self.nonce));
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            let mut spent = self.states.spent.lock().expect("not poisoned");
            spent.nonces.remove(&self.nonce);
        }
    }
}

impl OAuthStates {
    /// States signed with `key`; instances sharing it accept each other's states.
    pub fn new(key: [u8; 32]) -> Self {
        OAuthStates {
            key,
            spent: Mutex::default(),
        }
    }

    /// The signing key: derived from the store's encryption key when there is one (so every
    /// instance of a Redis deployment accepts the others' states), else random for this process.
    pub fn key_for(store: &crate::config::StoreConfig) -> [u8; 32] {
        let raw = store
            .encryption_key_env
            .as_deref()
            .and_then(|var| std::env::var(var).ok())
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v.trim()).ok());
        match raw {
            Some(k) => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&k).expect("any key length");
                mac.update(b"douyin-gateway oauth state v1");
                mac.finalize().into_bytes().into()
            }
            None => rand::random(),
        }
    }

    fn tag(&self, signed: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        mac.update(signed);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        tag
    }

    /// A fresh state for `app`.
    pub fn issue(&self, app: &str) -> String {
        self.issue_until(app, unix_now() + STATE_TTL_SECS)
    }

    fn issue_until(&self, app: &str, expires: u64) -> String {
        let mut b = Vec::with_capacity(8 + NONCE_LEN + app.len() + TAG_LEN);
        b.extend_from_slice(&expires.to_be_bytes());
        b.extend_from_slice(&rand::random::<Nonce>());
        b.extend_from_slice(app.as_bytes());
        let tag = self.tag(&b);
        b.extend_from_slice(&tag);
        B64.encode(b)
    }

    /// Checks a state's signature and expiry; remembers nothing.
    pub fn verify(&self, state: &str) -> Result<Verified, &'static str> {
        let b = B64.decode(state).map_err(|_| UNKNOWN)?;
        if b.len() < 8 + NONCE_LEN + TAG_LEN {
            return Err(UNKNOWN);
        }
        let (signed, tag) = b.split_at(b.len() - TAG_LEN);
        let good: bool = subtle::ConstantTimeEq::ct_eq(&self.tag(signed)[..], tag).into();
        if !good {
            return Err(UNKNOWN);
        }
        let expires = u64::from_be_bytes(signed[..8].try_into().expect("8 bytes"));
        if unix_now() >= expires {
            return Err(EXPIRED);
        }
        let nonce: Nonce = signed[8..8 + NONCE_LEN].try_into().expect("nonce");
        let app = std::str::from_utf8(&signed[8 + NONCE_LEN..]).map_err(|_| UNKNOWN)?;
        Ok(Verified {
            app: app.to_owned(),
            nonce,
        })
    }

    /// Reserves a verified state for one code exchange: refused while another callback exchanges
    /// with it, and once it was spent.
    pub fn reserve(&self, state: &Verified) -> Result<Reservation<'_>, &'static str> {
        let mut spent = self.spent.lock().expect("not poisoned");
        spent.forget_expired(unix_now());
        match spent.nonces.get(&state.nonce) {
            Some(true) => return Err(UNKNOWN),
            Some(false) => return Err(IN_PROGRESS),
            None => {}
        }
        if spent.nonces.len() >= MAX_REMEMBERED {
            tracing::warn!(
                max = MAX_REMEMBERED,
                "too many authorizations in 10 minutes: callbacks refused until some expire"
            );
            return Err(TOO_MANY);
        }
        spent.nonces.insert(state.nonce, false);
        Ok(Reservation {
            states: self,
            nonce: state.nonce,
            kept: false,
        })
    }

    /// States remembered: spent and not yet expired, or being exchanged.
    pub fn remembered(&self) -> usize {
        self.spent.lock().expect("not poisoned").nonces.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_spent_by_a_kept_exchange_only_and_cannot_be_forged() {
        let states = OAuthStates::new([7; 32]);
        let s = states.issue("main");
        let v = states.verify(&s).unwrap();
        assert_eq!(v.app, "main");
        assert_eq!(states.remembered(), 0, "verifying stores nothing");
        // A failed exchange releases the state; a second callback meanwhile is refused.
        let r = states.reserve(&v).unwrap();
        assert_eq!(states.reserve(&v).err(), Some(IN_PROGRESS));
        drop(r);
        assert_eq!(states.remembered(), 0);
        // A successful one spends it.
        states.reserve(&v).unwrap().keep();
        assert_eq!(states.reserve(&states.verify(&s).unwrap()).err(), Some(UNKNOWN));
        assert_eq!(states.remembered(), 1);
        // Another key's state, a flipped bit, a truncated state, garbage: all refused.
        assert!(OAuthStates::new([8; 32]).verify(&states.issue("main")).is_err());
        let mut raw = B64.decode(states.issue("main")).unwrap();
        raw[10] ^= 1;
        assert!(states.verify(&B64.encode(&raw)).is_err());
        assert!(states.verify(&s[..20]).is_err());
        assert!(states.verify("not base64 at all!").is_err());
        assert_eq!(states.remembered(), 1);
    }

    #[test]
    fn an_expired_state_is_refused_and_stores_nothing() {
        let states = OAuthStates::new([7; 32]);
        let s = states.issue_until("main", unix_now() - 1);
        assert_eq!(states.verify(&s).err(), Some(EXPIRED));
        assert_eq!(states.remembered(), 0);
    }

    #[test]
    fn spent_states_are_forgotten_in_order_once_expired() {
        let states = OAuthStates::new([7; 32]);
        for _ in 0..3 {
            states
                .reserve(&states.verify(&states.issue("main")).unwrap())
                .unwrap()
                .keep();
        }
        assert_eq!(states.remembered(), 3);
        // As if a TTL had passed.
        states.spent.lock().unwrap().forget_expired(unix_now() + STATE_TTL_SECS);
        assert_eq!(states.remembered(), 0);
        assert!(states.spent.lock().unwrap().expiry.is_empty());
    }
}
