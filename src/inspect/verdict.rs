//! What a set of codes means for the gateway: refresh and replay, ask the user again, or pass
//! the answer on. The same number means different things on different endpoints.

use super::Codes;
use std::collections::HashSet;

/// Codes that mean "the access token is dead: refresh and retry once".
/// 11016 is developer.toutiao.com's "access_token is wrong or expired" (mini-app server APIs).
pub const DEFAULT_REFRESH_CODES: &[i64] = &[10008, 2190008, 2190002, 28001008, 28001003, 40004, 11016];
/// Codes that mean "the user (or enterprise) must authorize again".
pub const DEFAULT_REAUTHORIZE_CODES: &[i64] = &[10010];
/// The renewal limit on `/oauth/renew_refresh_token/` (the same number means
/// "rate limited" on the client_token endpoint).
pub const RENEWAL_LIMIT: i64 = 10020;

/// Where a body came from: the same number means different things on
/// different endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// A proxied API call.
    Api,
    /// A token endpoint: client_token, code exchange, business_token, refreshes.
    TokenEndpoint,
    /// `/oauth/renew_refresh_token/`.
    Renew,
}

/// What the gateway should do with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Success: pass it on.
    Ok,
    /// The token was rejected: refresh it, replay the call once.
    Refresh(i64),
    /// The user must authorize again.
    Reauthorize(i64),
    /// The refresh_token may not be renewed again.
    ReauthorizeWhenRenewing(i64),
    /// A token endpoint refused: configuration or rate problem.
    TokenEndpointError(i64),
    /// An error a new token cannot fix: the caller sees it unchanged.
    PassThrough(i64),
}

/// The code tables, defaults from the platform doc or `[token_errors]`.
#[derive(Debug, Clone)]
pub struct CodeTable {
    refresh: HashSet<i64>,
    reauthorize: HashSet<i64>,
}

impl Default for CodeTable {
    fn default() -> Self {
        CodeTable::new(None, None)
    }
}

impl CodeTable {
    /// Tables replacing the defaults where given.
    pub fn new(refresh: Option<&[i64]>, reauthorize: Option<&[i64]>) -> Self {
        CodeTable {
            refresh: refresh.unwrap_or(DEFAULT_REFRESH_CODES).iter().copied().collect(),
            reauthorize: reauthorize
                .unwrap_or(DEFAULT_REAUTHORIZE_CODES)
                .iter()
                .copied()
                .collect(),
        }
    }

    /// Whether a code triggers refresh-and-retry.
    pub fn is_refresh(&self, code: i64) -> bool {
        self.refresh.contains(&code)
    }

    /// The verdict on a set of codes. On API answers a refresh code wins over
    /// the rest (a sub-code may name the token while the main code is generic).
    pub fn verdict(&self, codes: &Codes, ctx: Context) -> Verdict {
        let Some(first) = codes.first() else {
            return Verdict::Ok;
        };
        let find = |set: &HashSet<i64>| codes.iter().find(|c| set.contains(c));
        match ctx {
            Context::Api => {
                if let Some(c) = find(&self.refresh) {
                    Verdict::Refresh(c)
                } else if let Some(c) = find(&self.reauthorize) {
                    Verdict::Reauthorize(c)
                } else {
                    Verdict::PassThrough(first)
                }
            }
            Context::Renew if codes.iter().any(|c| c == RENEWAL_LIMIT) => {
                Verdict::ReauthorizeWhenRenewing(RENEWAL_LIMIT)
            }
            Context::Renew | Context::TokenEndpoint => match find(&self.reauthorize) {
                Some(c) => Verdict::Reauthorize(c),
                None => Verdict::TokenEndpointError(first),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::codes;

    #[test]
    fn configured_codes_replace_defaults() {
        let t = CodeTable::new(Some(&[123]), None);
        let c = codes(br#"{"err_no":123}"#).unwrap();
        assert_eq!(t.verdict(&c, Context::Api), Verdict::Refresh(123));
        let c = codes(br#"{"err_no":28001008}"#).unwrap();
        assert_eq!(t.verdict(&c, Context::Api), Verdict::PassThrough(28001008));
    }
}
