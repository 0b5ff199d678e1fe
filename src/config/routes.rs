//! `[[routes]]`: the credential each call gets, chosen by path and method in file order.

use super::validate::Collector;
use super::Config;
use serde::Deserialize;

/// The credential a route attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Nothing: plain pass-through.
    None,
    /// The app's client_token.
    Client,
    /// The user's access_token, by open_id.
    User,
    /// The enterprise biz_token, by open_id (+ scope).
    Biz,
    /// The app's mini-app server access_token (`/api/apps/v2/token` on the app's
    /// `mini_app_upstream`).
    #[serde(rename = "mini_app")]
    MiniApp,
    /// No token: the app's `appid` and `secret` set in the JSON body (mini-app
    /// `jscode2session`), so the app's backend never holds the secret. Needs `inject = "json_body"`.
    #[serde(rename = "app_secret")]
    AppSecret,
    /// A service provider's component_access_token (route key `provider`).
    Component,
    /// A merchant app's authorizer_access_token, held by a service provider (route keys
    /// `provider`, `authorizer`).
    Authorizer,
    /// A token endpoint an SDK calls itself (`/oauth/client_token/`, `/api/apps/v2/token`),
    /// answered by the gateway with a placeholder token in that endpoint's envelope; the platform
    /// is never contacted. The placeholder is replaced by the real token on every API route.
    Placeholder,
}

/// Where the token goes: `"header"`, `"query"`, `"header:NAME"`, `"query:NAME"`, `"json_body"` or
/// `"form_body"`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum Inject {
    /// `access-token: T`
    #[default]
    Header,
    /// `access_token=T` in the query.
    Query,
    /// `NAME: T` (the webcast APIs' `X-Token`); the caller's own header of that name is stripped.
    HeaderNamed(http::HeaderName),
    /// `NAME=T` in the query (the third-party platform's V1 APIs: `component_access_token`,
    /// `authorizer_access_token`); the caller's own `NAME` (and `access_token`) are dropped.
    QueryNamed(String),
    /// The top-level `access_token` field of a JSON object body (developer.toutiao.com APIs),
    /// set or replaced; the body is read whole (at most `retry_buffer_bytes`).
    JsonBody,
    /// The `access_token` field of an `application/x-www-form-urlencoded` body (`POST
    /// /oauth/userinfo/`), set or replaced; the body is read whole (at most `retry_buffer_bytes`).
    FormBody,
}

impl TryFrom<String> for Inject {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "header" => Ok(Inject::Header),
            "query" => Ok(Inject::Query),
            "json_body" => Ok(Inject::JsonBody),
            "form_body" => Ok(Inject::FormBody),
            _ => match s.split_once(':') {
                Some(("header", name)) if !name.is_empty() => http::HeaderName::from_bytes(name.as_bytes())
                    .map(Inject::HeaderNamed)
                    .map_err(|_| format!("{name:?} is not a header name")),
                Some(("query", name))
                    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) =>
                {
                    Ok(Inject::QueryNamed(name.to_string()))
                }
                _ => Err(format!(
                    "inject {s:?}: expected \"header\", \"query\", \"header:NAME\", \"query:NAME\", \"json_body\" or \"form_body\""
                )),
            },
        }
    }
}

/// `[[routes]]`: which calls (path, methods) get which credential, from which app, sent where.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in metrics and caller route lists.
    pub name: String,
    /// Exact path, or a prefix ending in `*`.
    pub path: String,
    /// Allowed methods; absent = any.
    pub methods: Option<Vec<String>>,
    /// The credential to attach.
    pub token: TokenKind,
    /// The app; optional when exactly one exists.
    pub app: Option<String>,
    /// Where the token goes: `header`, `query`, `header:NAME`, `json_body` or `form_body`.
    #[serde(default)]
    pub inject: Inject,
    /// `query:NAME`, `header:NAME` or `form:NAME` (a field of a form body).
    #[serde(default = "default_open_id")]
    pub open_id: String,
    /// biz: the scope to request.
    pub biz_scope: Option<String>,
    /// The `[[upstreams]]` entry to forward to; absent: `[upstream]`.
    pub upstream: Option<String>,
    /// `"byte_authorization"`: the forwarded request is signed with the app's RSA key.
    pub sign: Option<super::Sign>,
    /// Whether a signed route's answers must carry the platform's valid `Byte-Signature`;
    /// absent: when the app has a platform public key.
    pub verify_response: Option<bool>,
    /// `token = "component"` or `"authorizer"`: the `[[providers]]` whose token it attaches.
    pub provider: Option<String>,
    /// `token = "authorizer"`: where the merchant app's appid comes from, `header:NAME` (removed
    /// before forwarding) or `query:NAME`; absent: `header:x-authorizer-appid`.
    pub authorizer: Option<String>,
}

/// Where an authorizer route reads the merchant app's appid by default.
pub const DEFAULT_AUTHORIZER_FROM: &str = "header:x-authorizer-appid";

fn default_open_id() -> String {
    "query:open_id".into()
}

/// A route's path: exact, or a prefix written with a trailing `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// The whole path must be equal.
    Exact(String),
    /// The path must start with this.
    Prefix(String),
}

impl PathPattern {
    /// Parses `"/a/b/"` or `"/a/*"`.
    pub fn parse(path: &str) -> Result<Self, String> {
        if !path.starts_with('/') {
            return Err(format!("{path:?} must start with '/'"));
        }
        match path.find('*') {
            None => Ok(PathPattern::Exact(path.to_string())),
            Some(i) if i == path.len() - 1 => Ok(PathPattern::Prefix(path[..i].to_string())),
            Some(_) => Err(format!("{path:?}: '*' is allowed only at the end")),
        }
    }

    /// Whether a request path fits.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => p == path,
            PathPattern::Prefix(p) => path.starts_with(p.as_str()),
        }
    }

    /// Whether every path `other` matches, `self` matches too.
    pub fn covers(&self, other: &PathPattern) -> bool {
        match (self, other) {
            (PathPattern::Prefix(p), PathPattern::Exact(o) | PathPattern::Prefix(o)) => o.starts_with(p.as_str()),
            (PathPattern::Exact(p), PathPattern::Exact(o)) => p == o,
            (PathPattern::Exact(_), PathPattern::Prefix(_)) => false,
        }
    }
}

/// Where a user or biz route reads the open_id, as `open_id = "query:NAME"`, `"header:NAME"` or
/// `"form:NAME"` writes it; routing compiles it (`route::OpenIdSource`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpenIdAt<'a> {
    /// The query parameter of this name.
    Query(&'a str),
    /// The request header of this name.
    Header(http::HeaderName),
    /// The field of this name in an `application/x-www-form-urlencoded` body.
    Form(&'a str),
}

impl<'a> OpenIdAt<'a> {
    /// `None` unless `s` is `query:NAME`, `header:NAME` or `form:NAME` with a non-empty name (a
    /// valid header name for a header).
    pub(crate) fn parse(s: &'a str) -> Option<Self> {
        let (kind, name) = s.split_once(':')?;
        if name.is_empty() {
            return None;
        }
        match kind {
            "query" => Some(OpenIdAt::Query(name)),
            "form" => Some(OpenIdAt::Form(name)),
            "header" => http::HeaderName::from_bytes(name.as_bytes()).ok().map(OpenIdAt::Header),
            _ => None,
        }
    }
}

impl Config {
    /// Each `[[routes]]`: a unique name, a path pattern, HTTP methods, the app, upstream and
    /// open_id it names, what its token kind needs; and a warning for a route an earlier one
    /// shadows.
    pub(super) fn validate_routes(&self, c: &mut Collector<'_>) {
        if self.routes.is_empty() {
            c.warn("routes", None, "", "no [[routes]]: every call gets 404 no_route");
        }
        // Each route as parsed so far, to find one an earlier route shadows.
        let mut patterns: Vec<Option<(PathPattern, Option<Vec<String>>)>> = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let idx = Some(i);
            self.check_route_name(c, idx, r);
            let pattern = match PathPattern::parse(&r.path) {
                Ok(p) => Some(p),
                Err(e) => {
                    c.err("routes", idx, "path", e);
                    None
                }
            };
            let methods = r.methods.as_ref().map(|ms| {
                check_methods(c, idx, ms);
                ms.clone()
            });
            self.check_route_app(c, idx, r);
            if matches!(r.token, TokenKind::User | TokenKind::Biz) && OpenIdAt::parse(&r.open_id).is_none() {
                c.err(
                    "routes",
                    idx,
                    "open_id",
                    "must be \"query:NAME\", \"header:NAME\" or \"form:NAME\"",
                );
            }
            if let Some(u) = &r.upstream {
                if !self.upstreams.iter().any(|x| &x.name == u) {
                    c.err(
                        "routes",
                        idx,
                        "upstream",
                        format!("no [[upstreams]] named {u:?} (leave it out for [upstream])"),
                    );
                }
            }
            self.check_token_needs(c, idx, r);
            self.check_signing(c, idx, r);
            if let Some((pi, _)) = pattern.as_ref().and_then(|p| {
                patterns.iter().enumerate().find(|(_, prev)| {
                    prev.as_ref()
                        .is_some_and(|(pp, pm)| pp.covers(p) && methods_cover(pm, &methods))
                })
            }) {
                c.warn(
                    "routes",
                    idx,
                    "path",
                    format!(
                        "route {:?} can never match: route {:?} before it catches all its requests",
                        r.name, self.routes[pi].name
                    ),
                );
            }
            patterns.push(pattern.map(|p| (p, methods)));
        }
    }

    /// Not empty, not `*`, not taken by another route.
    fn check_route_name(&self, c: &mut Collector<'_>, idx: Option<usize>, r: &RouteConfig) {
        if r.name.is_empty() || r.name == "*" {
            c.err("routes", idx, "name", "must be a non-empty name other than \"*\"");
        }
        if self.routes.iter().filter(|o| o.name == r.name).count() > 1 {
            c.err(
                "routes",
                idx,
                "name",
                format!("route {:?} is defined more than once", r.name),
            );
        }
    }

    /// A route attaching a token names an app that exists (or there is exactly one).
    fn check_route_app(&self, c: &mut Collector<'_>, idx: Option<usize>, r: &RouteConfig) {
        let provided = super::providers::check_provider_route(self, c, idx, r);
        if r.token != TokenKind::None && !provided {
            match &r.app {
                Some(app) if !self.apps.iter().any(|a| &a.name == app) => {
                    c.err("routes", idx, "app", format!("no [[apps]] named {app:?}"))
                }
                None if self.apps.len() != 1 => c.err(
                    "routes",
                    idx,
                    "app",
                    format!(
                        "token = {} needs app = \"…\" when there is not exactly one [[apps]]",
                        super::words::as_written(&r.token)
                    ),
                ),
                _ => {}
            }
        }
    }

    /// What the token kind needs: `json_body` for app_secret, the app's mini_app_upstream for
    /// mini_app, a scope for biz.
    fn check_token_needs(&self, c: &mut Collector<'_>, idx: Option<usize>, r: &RouteConfig) {
        if r.token == TokenKind::AppSecret && r.inject != Inject::JsonBody {
            c.err(
                "routes",
                idx,
                "inject",
                "token = \"app_secret\" sets the body's appid and secret: it needs inject = \"json_body\"",
            );
        }
        if r.token == TokenKind::MiniApp {
            let app = match &r.app {
                Some(name) => self.apps.iter().find(|a| &a.name == name),
                None if self.apps.len() == 1 => self.apps.first(),
                None => None,
            };
            if app.is_some_and(|a| a.mini_app_upstream.is_none()) {
                c.err(
                        "routes",
                        idx,
                        "token",
                        "token = \"mini_app\" needs the app's mini_app_upstream (the [[upstreams]] entry of developer.toutiao.com)",
                    );
            }
        }
        if r.token == TokenKind::Biz && r.biz_scope.as_deref().unwrap_or("").is_empty() {
            c.err("routes", idx, "biz_scope", "token = \"biz\" needs the scope to request");
        }
    }
}

/// `methods`: not empty, upper-case HTTP methods, never CONNECT.
fn check_methods(c: &mut Collector<'_>, idx: Option<usize>, ms: &[String]) {
    if ms.is_empty() {
        c.err(
            "routes",
            idx,
            "methods",
            "an empty list matches nothing; leave it out to allow any method",
        );
    }
    for m in ms {
        if http::Method::from_bytes(m.as_bytes()).is_err() || m.to_ascii_uppercase() != *m {
            c.err(
                "routes",
                idx,
                "methods",
                format!("{m:?} is not an upper-case HTTP method"),
            );
        }
        if m == "CONNECT" {
            c.err("routes", idx, "methods", "CONNECT is never proxied");
        }
    }
}

/// Whether an earlier route's methods include all of a later one's.
fn methods_cover(earlier: &Option<Vec<String>>, later: &Option<Vec<String>>) -> bool {
    match (earlier, later) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => l.iter().all(|m| e.contains(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = PathPattern::parse("/api/*").unwrap();
        assert!(p.matches("/api/x"));
        assert!(!p.matches("/ap"));
        assert!(PathPattern::parse("/a*b").is_err());
        assert!(PathPattern::parse("a").is_err());
        let e = PathPattern::parse("/api/x").unwrap();
        assert!(p.covers(&e));
        assert!(!e.covers(&p));
    }

    #[test]
    fn open_id_syntax() {
        assert_eq!(OpenIdAt::parse("query:uid"), Some(OpenIdAt::Query("uid")));
        assert_eq!(
            OpenIdAt::parse("header:X-Open-Id"),
            Some(OpenIdAt::Header(http::HeaderName::from_static("x-open-id")))
        );
        assert_eq!(OpenIdAt::parse("form:open_id"), Some(OpenIdAt::Form("open_id")));
        for bad in ["query:", "header:", "form:", "header:bad name", "cookie:x", "open_id"] {
            assert_eq!(OpenIdAt::parse(bad), None, "{bad}");
        }
    }
}
