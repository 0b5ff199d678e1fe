//! The flow's limits: a rate per client address on `/oauth/*`, and the gateway's budget of code
//! exchanges.

use crate::config::OAuthConfig;
use crate::error::GatewayError;
use crate::limit::{retry_after_secs, PerAddress, Window};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Logged at most this often while code exchanges are at their limit.
const WARN_EVERY_SECS: u64 = 60;

/// The limits of the flow: a rate per client address on `/oauth/*`, and the gateway's budget of
/// code exchanges. Bounded memory whatever arrives (128 KiB of address slots).
#[derive(Default)]
pub struct OAuthLimits {
    /// At most `max_exchanges_per_sec` in any one second: what the platform sees is the rate.
    exchanges: Window,
    per_address: PerAddress,
    /// When (unix seconds) "exchanges at their limit" was last logged.
    warned_at: AtomicU64,
}

impl OAuthLimits {
    /// One `/oauth/*` request from `ip`.
    pub fn admit(&self, ip: IpAddr, config: &OAuthConfig) -> Result<(), GatewayError> {
        if config.per_address_per_sec == 0 {
            return Ok(());
        }
        self.per_address
            .take(ip, config.per_address_per_sec, config.per_address_burst)
            .map_err(|wait| GatewayError::RateLimited {
                what: "too many authorization requests from this address",
                retry_after_secs: retry_after_secs(wait),
            })
    }

    /// One code exchange at the platform.
    pub fn exchange(&self, config: &OAuthConfig) -> Result<(), GatewayError> {
        let rate = config.max_exchanges_per_sec;
        self.exchanges.take(rate).map_err(|wait| {
            let now = crate::token::unix_now();
            let last = self.warned_at.load(Ordering::Relaxed);
            if now >= last + WARN_EVERY_SECS
                && self
                    .warned_at
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    max_exchanges_per_sec = rate,
                    "authorization callbacks refused: code exchanges are at oauth.max_exchanges_per_sec \
                     (made-up codes from strangers, or more real users than the limit allows)"
                );
            }
            GatewayError::RateLimited {
                what: "the gateway is exchanging as many authorization codes as it may",
                retry_after_secs: retry_after_secs(wait),
            }
        })
    }
}
