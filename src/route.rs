//! Route rules: which credential a request gets. Routes match in file order;
//! the first whose path and method fit wins.

pub use crate::config::PathPattern;
use crate::config::{Config, Inject, OpenIdAt, TokenKind};
use http::Method;
use std::sync::Arc;

/// Where a caller names the user a user/biz route acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenIdSource {
    /// A query parameter.
    Query {
        /// Its name as configured.
        name: String,
        /// Its name as a lenient server reads it (for spotting repeats), computed once.
        lenient: String,
    },
    /// A request header (lower-cased).
    Header(http::HeaderName),
    /// A field of an `application/x-www-form-urlencoded` body (read once the body is in:
    /// [`OpenIdSource::extract_form`]).
    Form {
        /// Its name as configured.
        name: String,
        /// Its name as a lenient server reads it, computed once.
        lenient: String,
    },
}

impl OpenIdSource {
    /// The query parameter `name`.
    pub fn query(name: &str) -> Self {
        OpenIdSource::Query {
            name: name.to_string(),
            lenient: crate::canonical::normalize_param_name(name),
        }
    }

    /// Parses `"query:NAME"` / `"header:NAME"` / `"form:NAME"` (the syntax is config's, [`OpenIdAt`]).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match OpenIdAt::parse(s)? {
            OpenIdAt::Query(name) => OpenIdSource::query(name),
            OpenIdAt::Header(h) => OpenIdSource::Header(h),
            OpenIdAt::Form(name) => OpenIdSource::Form {
                name: name.to_string(),
                lenient: crate::canonical::normalize_param_name(name),
            },
        })
    }

    /// Where a human looks for it, for `open_id_missing`.
    pub fn describe(&self) -> String {
        match self {
            OpenIdSource::Query { name, .. } => format!("query parameter {name:?}"),
            OpenIdSource::Header(h) => format!("header {h:?}"),
            OpenIdSource::Form { name, .. } => format!("form field {name:?}"),
        }
    }

    /// The open_id a form body carries ([`OpenIdSource::Form`]), as the query's is read: `Err`
    /// when it is given more than once (lookalike names count) or the body is not UTF-8; `None`
    /// for another source.
    pub fn extract_form<'a>(&self, body: &'a [u8]) -> Result<Option<std::borrow::Cow<'a, str>>, String> {
        let OpenIdSource::Form { name, lenient } = self else {
            return Ok(None);
        };
        let text = std::str::from_utf8(body)
            .map_err(|_| format!("the form body is not UTF-8, so its open_id field {name:?} cannot be read"))?;
        one_param(text, name, lenient).map_err(|()| format!("the open_id form field {name:?} is given more than once"))
    }

    /// The open_id a request carries, if any; `Err` when it is given more than once. Lookalike
    /// names count as repeats (`Open_Id`, `open_id[]`, `x_open_id` for `x-open-id`), and `;`
    /// separates query parameters too: whatever the platform reads, it reads this one.
    pub fn extract<'a>(
        &self,
        uri: &'a http::Uri,
        headers: &'a http::HeaderMap,
    ) -> Result<Option<std::borrow::Cow<'a, str>>, String> {
        match self {
            OpenIdSource::Header(h) => {
                let lookalikes = headers
                    .keys()
                    .filter(|n| crate::canonical::header_is(n.as_str(), h.as_str()))
                    .map(|n| headers.get_all(n).iter().count())
                    .sum::<usize>();
                if lookalikes > 1 {
                    return Err(format!("the open_id header {h:?} is given more than once"));
                }
                Ok(headers
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .map(Into::into))
            }
            OpenIdSource::Query { name, lenient } => {
                let Some(q) = uri.query() else { return Ok(None) };
                one_param(q, name, lenient)
                    .map_err(|()| format!("the open_id query parameter {name:?} is given more than once"))
            }
            OpenIdSource::Form { .. } => Ok(None),
        }
    }
}

/// The one parameter `name` of a query or form text (non-empty); `Err` when it, or a name a
/// lenient server reads as it (`lenient`), is there more than once.
fn one_param<'a>(q: &'a str, name: &str, lenient: &str) -> Result<Option<std::borrow::Cow<'a, str>>, ()> {
    let mut found = None;
    let mut count = 0;
    for piece in crate::canonical::pieces(q) {
        if crate::canonical::param_is(piece, lenient) {
            count += 1;
            found = form_urlencoded::parse(piece.as_bytes())
                .next()
                .filter(|(k, _)| k == name);
        }
    }
    if count > 1 {
        return Err(());
    }
    Ok(found.map(|(_, v)| v).filter(|v| !v.is_empty()))
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Its name (metrics label, caller lists).
    pub name: Arc<str>,
    /// Position in the table.
    pub index: usize,
    /// Path rule.
    pub path: PathPattern,
    /// Allowed methods; `None` = any.
    pub methods: Option<Vec<Method>>,
    /// The credential to attach.
    pub token: TokenKind,
    /// Index into the app list (meaningless for `token = "none"`).
    pub app: usize,
    /// Header, query, JSON or form body.
    pub inject: Inject,
    /// Where the open_id comes from (user/biz).
    pub open_id: OpenIdSource,
    /// Whether requests are signed with the app's key (`sign = "byte_authorization"`).
    pub sign: bool,
    /// Whether a signed route's answers must carry the platform's valid `Byte-Signature`
    /// (`verify_response`, by default when the app has a platform public key).
    pub verify_response: bool,
    /// biz: the scope.
    pub biz_scope: Option<Arc<str>>,
    /// `token = "component"`: the provider's component token (`"authorizer"`: its app is the
    /// provider's name).
    pub provider: Option<crate::vocab::TokenKey>,
    /// `token = "authorizer"`: where the merchant app's appid is (`authorizer`).
    pub authorizer_from: Option<OpenIdSource>,
    /// Where it forwards: 0 for `[upstream]`, else 1 + its `[[upstreams]]` position
    /// ([`Config::all_upstreams`] order).
    pub upstream: usize,
}

/// All routes, in file order.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Compiles a validated config.
    pub fn build(config: &Config) -> Self {
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, r)| (index, r, r.sign.is_some(), Self::verifies(config, r)))
            .map(|(index, r, sign, verify_response)| Route {
                name: r.name.as_str().into(),
                index,
                path: PathPattern::parse(&r.path).expect("validated"),
                methods: r.methods.as_ref().map(|ms| {
                    ms.iter()
                        .map(|m| Method::from_bytes(m.as_bytes()).expect("validated"))
                        .collect()
                }),
                token: r.token,
                app: r
                    .app
                    .as_ref()
                    .and_then(|a| config.apps.iter().position(|x| &x.name == a))
                    .unwrap_or(0),
                inject: r.inject.clone(),
                open_id: OpenIdSource::parse(&r.open_id).unwrap_or_else(|| OpenIdSource::query("open_id")),
                biz_scope: r.biz_scope.as_deref().map(Into::into),
                sign,
                verify_response,
                provider: r
                    .provider
                    .as_deref()
                    .map(|p| crate::vocab::TokenKey::component(p.into())),
                authorizer_from: (r.token == crate::config::TokenKind::Authorizer).then(|| {
                    let from = r
                        .authorizer
                        .as_deref()
                        .unwrap_or(crate::config::DEFAULT_AUTHORIZER_FROM);
                    OpenIdSource::parse(from).expect("validated")
                }),
                upstream: r
                    .upstream
                    .as_ref()
                    .and_then(|u| config.upstreams.iter().position(|x| &x.name == u))
                    .map_or(0, |i| i + 1),
            })
            .collect();
        RouteTable { routes }
    }

    /// Whether a signed route's answers are verified: as `verify_response` says, else when its app
    /// has a platform public key.
    fn verifies(config: &Config, r: &crate::config::RouteConfig) -> bool {
        if r.sign.is_none() {
            return false;
        }
        let app = match &r.app {
            Some(a) => config.apps.iter().find(|x| &x.name == a),
            None => config.apps.first(),
        };
        let has_key = app.is_some_and(|a| a.platform_public_key_env.is_some() || a.platform_public_key_file.is_some());
        r.verify_response.unwrap_or(has_key)
    }

    /// The first route whose path and method fit.
    pub fn find(&self, method: &Method, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.path.matches(path) && r.methods.as_ref().is_none_or(|ms| ms.contains(method)))
    }

    /// The route at `index`.
    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    /// All routes.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_wins_with_methods() {
        let text = r#"
[[apps]]
name = "a"
client_key = "k"
client_secret_env = "PATH"
[[routes]]
name = "post-only"
path = "/x"
methods = ["POST"]
token = "client"
[[routes]]
name = "any"
path = "/*"
token = "none"
"#;
        let config = Config::parse(text, "t").unwrap();
        let t = RouteTable::build(&config);
        assert_eq!(&*t.find(&Method::POST, "/x").unwrap().name, "post-only");
        assert_eq!(&*t.find(&Method::GET, "/x").unwrap().name, "any");
    }

    #[test]
    fn open_id_sources() {
        let req = http::Request::get("/v?a=1&open_id=ou%5F1")
            .header("x-open-id", "h1")
            .body(())
            .unwrap();
        let (parts, _) = req.into_parts();
        assert_eq!(
            OpenIdSource::parse("query:open_id")
                .unwrap()
                .extract(&parts.uri, &parts.headers)
                .unwrap()
                .unwrap(),
            "ou_1"
        );
        assert_eq!(
            OpenIdSource::parse("header:X-Open-Id")
                .unwrap()
                .extract(&parts.uri, &parts.headers)
                .unwrap()
                .unwrap(),
            "h1"
        );
        assert!(OpenIdSource::parse("query:missing")
            .unwrap()
            .extract(&parts.uri, &parts.headers)
            .unwrap()
            .is_none());
        assert!(OpenIdSource::parse("body:x").is_none());
    }

    #[test]
    fn a_form_field_names_the_user_once() {
        let form = OpenIdSource::parse("form:open_id").unwrap();
        assert_eq!(form.extract_form(b"a=1&open_id=ou%5F1").unwrap().unwrap(), "ou_1");
        assert!(form.extract_form(b"a=1").unwrap().is_none());
        assert!(form.extract_form(b"open_id=").unwrap().is_none());
        for repeated in [
            &b"open_id=a&open_id=b"[..],
            b"open_id=a;Open-Id=b",
            b"open_id=a&open_id[]=b",
        ] {
            assert!(form.extract_form(repeated).is_err(), "{repeated:?}");
        }
        assert!(form.extract_form(b"open_id=a&x=\xff").is_err(), "not UTF-8");
        assert_eq!(form.describe(), "form field \"open_id\"");
        // The query and headers are not where a form route looks.
        let req = http::Request::get("/v?open_id=q").body(()).unwrap();
        assert!(form.extract(req.uri(), req.headers()).unwrap().is_none());
    }
}
