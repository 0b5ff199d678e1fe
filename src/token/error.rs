//! Why a token could not be had ([`TokenError`]).

/// Why a token could not be had. Messages name no token or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The endpoint could not be reached.
    #[error("token endpoint unreachable: {0}")]
    Network(String),
    /// The endpoint did not answer in time.
    #[error("token endpoint did not answer within {0} ms")]
    Timeout(u64),
    /// An HTTP error status.
    #[error("token endpoint answered HTTP {0}")]
    Status(u16),
    /// Not the JSON the platform documents.
    #[error("token endpoint answered malformed JSON: {0}")]
    Malformed(String),
    /// 10020 on the client_token endpoint.
    #[error("token endpoint rate-limited the app (10020: over 500 calls in 5 minutes)")]
    RateLimited,
    /// 10002/10003/10013: a configuration error.
    #[error(
        "token endpoint refused the app's credentials ({code}: {description}); check client_key and the client secret"
    )]
    BadCredentials {
        /// Platform code.
        code: i64,
        /// Platform description.
        description: String,
    },
    /// Any other platform error code.
    #[error("token endpoint refused ({code}: {description})")]
    Refused {
        /// Platform code.
        code: i64,
        /// Platform description.
        description: String,
    },
    /// No tokens for this user, or their refresh_token is dead.
    #[error("{0}")]
    AuthorizationRequired(String),
    /// The platform refuses to renew the refresh_token again (its renewal limit): it still works
    /// until it expires, and the user must re-consent before then.
    #[error("the refresh_token may not be renewed again ({0}): the user must authorize again before it expires")]
    RenewalsExhausted(i64),
    /// The app used its fetch budget for an app-level token (`tokens.client_token_fetch_budget`,
    /// which counts client_token and mini-app token fetches apart).
    #[error("the app made {budget} fetches of this token in the last 5 minutes, its budget (tokens.client_token_fetch_budget); next fetch allowed in {retry_in_ms} ms")]
    BudgetExhausted {
        /// The budget.
        budget: u32,
        /// Time until a fetch leaves the window.
        retry_in_ms: u64,
    },
    /// The app named by a route no longer exists.
    #[error("app {0:?} is not configured")]
    UnknownApp(String),
    /// A recent fetch failed; waiting before the next.
    #[error("{last}; next attempt in {retry_in_ms} ms")]
    BackingOff {
        /// The failure that started the back-off.
        last: Box<TokenError>,
        /// Time left.
        retry_in_ms: u64,
    },
}

impl TokenError {
    /// Metric outcome label.
    pub fn outcome(&self) -> &'static str {
        match self {
            TokenError::Network(_) => "network",
            TokenError::Timeout(_) => "timeout",
            TokenError::Status(_) => "http_status",
            TokenError::Malformed(_) => "malformed",
            TokenError::RateLimited => "rate_limited",
            TokenError::BadCredentials { .. } => "bad_credentials",
            TokenError::Refused { .. } => "refused",
            TokenError::AuthorizationRequired(_) | TokenError::RenewalsExhausted(_) => "reauthorize",
            TokenError::UnknownApp(_) => "unknown_app",
            TokenError::BudgetExhausted { .. } => "budget_exhausted",
            TokenError::BackingOff { .. } => "backing_off",
        }
    }

    /// Whether the token endpoint could not be reached or did not answer as documented: the
    /// platform's trouble (502), not the request's.
    pub fn platform_unreachable(&self) -> bool {
        matches!(
            self,
            TokenError::Network(_) | TokenError::Timeout(_) | TokenError::Status(_) | TokenError::Malformed(_)
        )
    }

    /// Whether the caller must send the user through authorization.
    pub fn needs_authorization(&self) -> bool {
        match self {
            TokenError::AuthorizationRequired(_) | TokenError::RenewalsExhausted(_) => true,
            TokenError::BackingOff { last, .. } => last.needs_authorization(),
            _ => false,
        }
    }
}
