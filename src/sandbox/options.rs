//! The sandbox's options: the apps it knows, token lifetimes and budgets, faults at start (also
//! the `douyin-gateway sandbox` command line).

use super::state::TokenFault;

/// The sandbox app every test and `demo` use unless told otherwise.
pub const DEFAULT_APP: &str = "awsandbox0000001:sandbox-secret";

/// Sandbox options (`douyin-gateway sandbox --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxOptions {
    /// An app the platform knows, as CLIENT_KEY:SECRET (repeatable).
    #[arg(long = "app", default_value = DEFAULT_APP)]
    pub apps: Vec<String>,
    /// client_token lifetime, seconds.
    #[arg(long, default_value_t = 7200)]
    pub client_token_ttl: u64,
    /// User access_token lifetime, seconds.
    #[arg(long, default_value_t = 1_296_000)]
    pub access_token_ttl: u64,
    /// refresh_token lifetime, seconds.
    #[arg(long, default_value_t = 2_592_000)]
    pub refresh_token_ttl: u64,
    /// biz_token lifetime, seconds.
    #[arg(long, default_value_t = 2_592_000)]
    pub biz_token_ttl: u64,
    /// biz_refresh_token lifetime, seconds.
    #[arg(long, default_value_t = 3_153_600_000)]
    pub biz_refresh_token_ttl: u64,
    /// client_token calls allowed per app in 5 minutes before 10020.
    #[arg(long, default_value_t = 500)]
    pub client_token_budget: u64,
    /// refresh_token renewals allowed.
    #[arg(long, default_value_t = 5)]
    pub max_renewals: u32,
    /// Token endpoint fault at start.
    #[arg(long, value_enum, default_value_t = TokenFault::None)]
    pub token_fault: TokenFault,
    /// Extra latency of API calls, ms.
    #[arg(long, default_value_t = 0)]
    pub api_latency_ms: u64,
    /// Share of API calls answered with HTTP 500.
    #[arg(long, default_value_t = 0.0)]
    pub api_status500_rate: f64,
    /// Share of API calls answered with malformed JSON.
    #[arg(long, default_value_t = 0.0)]
    pub api_malformed_rate: f64,
    /// The open_id every consent on the authorization page gives (default: a fresh one each time).
    #[arg(long)]
    pub consent_open_id: Option<String>,
    /// `/oauth/refresh_token/` also rotates the refresh_token (the old one dies): the platform
    /// doc leaves open whether it can, so the gateway must cope with both.
    #[arg(long)]
    pub rotate_refresh_token: bool,
    /// `/oauth/refresh_token/` also extends the refresh_token's life to a full
    /// `refresh_token_ttl` (some apps are configured so): the answer's `refresh_expires_in` says so.
    #[arg(long)]
    pub refresh_extends: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            o: SandboxOptions,
        }
        P::parse_from(["sandbox"]).o
    }
}
