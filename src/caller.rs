//! Caller authentication: who is calling, and may they use this route.
//! Keys are kept only as SHA-256 digests and compared in constant time.

use crate::config::Config;
use http::{header, HeaderMap, HeaderName};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The header a caller's key may come in (besides `Authorization: Bearer`).
pub static GATEWAY_KEY: HeaderName = HeaderName::from_static("x-gateway-key");

/// A configured caller.
#[derive(Debug)]
pub struct Caller {
    /// Name, for logs.
    pub name: String,
    digest: [u8; 32],
    /// Route indices it may use; `None` = all.
    routes: Option<Vec<usize>>,
    /// May exchange authorization codes (`POST /_gateway/exchange_code`).
    pub exchange_codes: bool,
}

impl Caller {
    /// Whether this caller may use the route at `index`.
    pub fn may_use(&self, index: usize) -> bool {
        self.routes.as_ref().is_none_or(|r| r.contains(&index))
    }
}

/// Outcome of authenticating a request.
#[derive(Debug)]
pub enum Identity<'a> {
    /// A known caller.
    Caller(&'a Caller),
    /// No key, and anonymous calls are allowed.
    Anonymous,
}

impl<'a> Identity<'a> {
    /// Name for logs, for as long as the callers it came from.
    pub fn into_name(self) -> &'a str {
        match self {
            Identity::Caller(c) => &c.name,
            Identity::Anonymous => "anonymous",
        }
    }

    /// Whether the route at `index` is allowed.
    pub fn may_use(&self, index: usize) -> bool {
        match self {
            Identity::Caller(c) => c.may_use(index),
            Identity::Anonymous => true,
        }
    }

    /// Whether it may exchange authorization codes; an anonymous caller never may.
    pub fn may_exchange_codes(&self) -> bool {
        matches!(self, Identity::Caller(c) if c.exchange_codes)
    }

    /// Name for logs.
    pub fn name(&self) -> &str {
        match self {
            Identity::Caller(c) => &c.name,
            Identity::Anonymous => "anonymous",
        }
    }
}

/// All callers, and whether anonymous calls are allowed.
#[derive(Debug, Default)]
pub struct Callers {
    callers: Vec<Caller>,
    allow_anonymous: bool,
}

pub use crate::secret::hash_key;

/// The key a request presents, if any.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(&GATEWAY_KEY) {
        return v.to_str().ok();
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

impl Callers {
    /// Compiles a validated config.
    pub fn build(config: &Config) -> Self {
        let callers = config
            .callers
            .iter()
            .map(|c| {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(&c.api_key_sha256, &mut digest).expect("validated");
                let routes = (!c.routes.iter().any(|r| r == "*")).then(|| {
                    c.routes
                        .iter()
                        .filter_map(|name| config.routes.iter().position(|r| &r.name == name))
                        .collect()
                });
                Caller {
                    name: c.name.clone(),
                    digest,
                    routes,
                    exchange_codes: c.exchange_codes,
                }
            })
            .collect();
        Callers {
            callers,
            allow_anonymous: config.server.allow_anonymous,
        }
    }

    /// Who is calling: `None` means no or wrong key.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<Identity<'_>> {
        self.identify(headers).map(|who| self.identity(who))
    }

    /// Who is calling, by position: `None` no or wrong key, `Some(None)` anonymous (allowed),
    /// `Some(Some(i))` the i-th caller.
    pub fn identify(&self, headers: &HeaderMap) -> Option<Option<usize>> {
        let Some(key) = presented_key(headers) else {
            return self.allow_anonymous.then_some(None);
        };
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Compare against every caller so the time taken does not say which matched.
        let mut found = None;
        for (i, c) in self.callers.iter().enumerate() {
            if bool::from(c.digest.ct_eq(&digest)) {
                found = Some(i);
            }
        }
        found.map(Some)
    }

    /// How many `[[callers]]` entries there are.
    pub fn len(&self) -> usize {
        self.callers.len()
    }

    /// Whether there are none (every call is anonymous).
    pub fn is_empty(&self) -> bool {
        self.callers.is_empty()
    }

    /// The identity [`Callers::identify`] found.
    pub fn identity(&self, who: Option<usize>) -> Identity<'_> {
        match who.and_then(|i| self.callers.get(i)) {
            Some(c) => Identity::Caller(c),
            None => Identity::Anonymous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callers(anon: bool) -> Callers {
        let text = format!(
            "[server]\nallow_anonymous = {anon}\n[[callers]]\nname = \"b\"\napi_key_sha256 = \"{}\"\nroutes = [\"r2\"]\n\
             [[routes]]\nname = \"r1\"\npath = \"/a\"\ntoken = \"none\"\n[[routes]]\nname = \"r2\"\npath = \"/b\"\ntoken = \"none\"\n",
            hash_key("k1")
        );
        Callers::build(&Config::parse(&text, "t").unwrap())
    }

    #[test]
    fn keys_and_routes() {
        let c = callers(false);
        let mut h = HeaderMap::new();
        assert!(c.authenticate(&h).is_none());
        h.insert(&GATEWAY_KEY, "k1".parse().unwrap());
        let id = c.authenticate(&h).unwrap();
        assert!(id.may_use(1) && !id.may_use(0));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer k1".parse().unwrap());
        assert!(c.authenticate(&h).is_some());
        h.insert(header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert!(c.authenticate(&h).is_none());
    }

    #[test]
    fn anonymous_only_without_key() {
        let c = callers(true);
        assert!(matches!(c.authenticate(&HeaderMap::new()), Some(Identity::Anonymous)));
        let mut h = HeaderMap::new();
        h.insert(&GATEWAY_KEY, "bad".parse().unwrap());
        assert!(c.authenticate(&h).is_none());
    }
}
