//! `[oauth]`: what the authorization flow, open to anyone, may cost.

use super::validate::Collector;
use super::Config;
use serde::Deserialize;

/// `oauth.max_exchanges_per_sec` (the contract's default): code exchanges at the platform for the
/// whole gateway. A real user needs one; twenty a second is 72,000 authorizations an hour, while
/// made-up codes from strangers cost the platform (and the app's standing with it) at most that.
pub const DEFAULT_OAUTH_MAX_EXCHANGES_PER_SEC: u32 = 20;
/// `oauth.per_address_per_sec`: a browser makes two `/oauth/*` requests per authorization, and a
/// person retrying makes a few; a script from one address is held to this.
pub const DEFAULT_OAUTH_PER_ADDRESS_PER_SEC: u32 = 5;
/// `oauth.per_address_burst`: an office behind one address starting several authorizations at
/// once is not refused.
pub const DEFAULT_OAUTH_PER_ADDRESS_BURST: u32 = 20;

/// `[oauth]`: limits on the authorization flow (`/oauth/authorize`, `/oauth/callback`), which
/// anyone can reach without a key. Read at each request: a reload applies at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// Code exchanges at the platform per second from callbacks, for the whole gateway, with a
    /// burst of one second's worth; past it, 429 `rate_limited` with `Retry-After`. At least 1.
    pub max_exchanges_per_sec: u32,
    /// `/oauth/*` requests per second from one client address (an IPv6 address counts by its
    /// /64); past it, 429 `rate_limited`. 0 turns the limit off (behind a reverse proxy every
    /// browser comes from the proxy's address; `X-Forwarded-For` is not trusted).
    pub per_address_per_sec: u32,
    /// `/oauth/*` requests one address may make at once before its rate applies. At least 1.
    pub per_address_burst: u32,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            max_exchanges_per_sec: DEFAULT_OAUTH_MAX_EXCHANGES_PER_SEC,
            per_address_per_sec: DEFAULT_OAUTH_PER_ADDRESS_PER_SEC,
            per_address_burst: DEFAULT_OAUTH_PER_ADDRESS_BURST,
        }
    }
}

impl Config {
    /// `[oauth]`: the limits that cannot be turned off are at least 1.
    pub(super) fn validate_oauth(&self, c: &mut Collector<'_>) {
        let o = &self.oauth;
        if o.max_exchanges_per_sec == 0 {
            c.err(
                "oauth",
                None,
                "max_exchanges_per_sec",
                "must be at least 1 (to stop authorizations, remove the apps' redirect_uri)",
            );
        }
        if o.per_address_burst == 0 {
            c.err(
                "oauth",
                None,
                "per_address_burst",
                "must be at least 1 (per_address_per_sec = 0 turns the per-address limit off)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_limits_default_to_the_contract_and_zero_is_off_only_per_address() {
        let memory = "[store]\nkind = \"memory\"\n";
        let (c, _) = Config::load_str(memory, "t").unwrap();
        assert_eq!(
            (
                c.oauth.max_exchanges_per_sec,
                c.oauth.per_address_per_sec,
                c.oauth.per_address_burst
            ),
            (20, 5, 20)
        );
        let text = format!("{memory}[oauth]\nmax_exchanges_per_sec = 0\nper_address_burst = 0\n");
        let err = Config::load_str(&text, "t").unwrap_err();
        for key in ["oauth.max_exchanges_per_sec", "oauth.per_address_burst"] {
            let p = err
                .problems
                .iter()
                .find(|p| p.key == key)
                .unwrap_or_else(|| panic!("{key}: {err}"));
            assert_eq!(p.line, Some(if key.ends_with("sec") { 4 } else { 5 }), "{p}");
        }
        let text = format!("{memory}[oauth]\nper_address_per_sec = 0\n");
        assert_eq!(Config::load_str(&text, "t").unwrap().0.oauth.per_address_per_sec, 0);
        assert!(Config::load_str(&format!("{memory}[oauth]\nper_address = 1\n"), "t").is_err());
    }
}
