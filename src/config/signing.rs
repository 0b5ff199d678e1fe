//! Signed calls in the config: a route's `sign`, and what it needs of its app's keys.

use super::routes::RouteConfig;
use super::validate::Collector;
use super::{Config, TokenKind};
use serde::Deserialize;

/// How a route's requests are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sign {
    /// `Byte-Authorization: SHA256-RSA2048 …` over `METHOD\nURI\nTIMESTAMP\nNONCE\nBODY\n`.
    ByteAuthorization,
}

impl Config {
    /// The app a route acts for: the one it names, or the only one.
    fn route_app(&self, r: &RouteConfig) -> Option<&super::AppConfig> {
        match &r.app {
            Some(name) => self.apps.iter().find(|a| &a.name == name),
            None if self.apps.len() == 1 => self.apps.first(),
            None => None,
        }
    }

    /// A signing route's app has a signing key (and a platform public key when the route asks
    /// for answers to be verified); `verify_response` only on a signing route.
    pub(super) fn check_signing(&self, c: &mut Collector<'_>, idx: Option<usize>, r: &RouteConfig) {
        let Some(Sign::ByteAuthorization) = r.sign else {
            if r.verify_response == Some(true) {
                c.err(
                    "routes",
                    idx,
                    "verify_response",
                    "only a route with sign = \"byte_authorization\" gets signed answers to verify",
                );
            }
            return;
        };
        let Some(app) = self.route_app(r) else {
            if r.token == TokenKind::None {
                c.err(
                    "routes",
                    idx,
                    "sign",
                    "a signing route needs app = \"…\" (whose key signs) when there is not exactly one [[apps]]",
                );
            }
            return;
        };
        if app.signing_key_env.is_none() && app.signing_key_file.is_none() {
            c.err(
                "routes",
                idx,
                "sign",
                format!(
                    "app {:?} has no signing key: set its signing_key_file or signing_key_env (the RSA private \
                     key whose public half is uploaded in the console)",
                    app.name
                ),
            );
        }
        let platform_key = app.platform_public_key_env.is_some() || app.platform_public_key_file.is_some();
        if r.verify_response == Some(true) && !platform_key {
            c.err(
                "routes",
                idx,
                "verify_response",
                format!(
                    "app {:?} has no platform public key to verify answers with: set its \
                     platform_public_key_file or platform_public_key_env",
                    app.name
                ),
            );
        }
    }
}
