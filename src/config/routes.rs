//! `[[routes]]`: the credential each call gets, chosen by path and method in file order.

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

/// Where a user or biz route reads the open_id, as `open_id = "query:NAME"` or `"header:NAME"`
/// writes it; routing compiles it (`route::OpenIdSource`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpenIdAt<'a> {
    /// The query parameter of this name.
    Query(&'a str),
    /// The request header of this name.
    Header(http::HeaderName),
}

impl<'a> OpenIdAt<'a> {
    /// `None` unless `s` is `query:NAME` or `header:NAME` with a non-empty name (a valid header
    /// name for a header).
    pub(crate) fn parse(s: &'a str) -> Option<Self> {
        let (kind, name) = s.split_once(':')?;
        if name.is_empty() {
            return None;
        }
        match kind {
            "query" => Some(OpenIdAt::Query(name)),
            "header" => http::HeaderName::from_bytes(name.as_bytes()).ok().map(OpenIdAt::Header),
            _ => None,
        }
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
        for bad in ["query:", "header:", "header:bad name", "cookie:x", "open_id"] {
            assert_eq!(OpenIdAt::parse(bad), None, "{bad}");
        }
    }
}
