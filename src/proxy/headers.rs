//! What the gateway removes from requests and responses: credentials the
//! caller sent (so it can neither leak nor override one), the caller's key,
//! headers that make frameworks behind a proxy take another method or path,
//! and hop-by-hop headers (RFC 9110 §7.6.1).

use super::canonical::{header_is, header_skeleton, param_is, pieces};
use http::header::{self, HeaderMap, HeaderName};
use std::borrow::Cow;

/// The platform's token header.
pub static ACCESS_TOKEN: HeaderName = HeaderName::from_static("access-token");
/// The query parameter older APIs take the token in.
pub const ACCESS_TOKEN_PARAM: &str = "access_token";

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
    h.remove(header::UPGRADE);
}

/// Headers with which frameworks behind a proxy take another method (`X-HTTP-Method-Override:
/// DELETE`) or serve another path (`X-Original-URL`) than the one the gateway routed, as
/// skeletons ([`header_skeleton`]: any case, `-` `_` `.`, with or without `x-`).
const REWRITES: [&[u8]; 5] = [
    b"httpmethodoverride",
    b"httpmethod",
    b"methodoverride",
    b"originalurl",
    b"rewriteurl",
];

/// Cleans a caller's request headers before they go upstream: hop-by-hop headers, `Host`, the
/// method-override and original-URL headers in any spelling, the caller's key and any
/// `access-token` the caller sent, in every spelling a server reading `_` as `-` would take for
/// one (`access_token`, `Access_Token`).
pub fn strip_request(h: &mut HeaderMap) {
    strip_hop_by_hop(h);
    h.remove(header::HOST);
    remove_where(h, |n| {
        let mut buf = [0; 32];
        header_is(n, ACCESS_TOKEN.as_str())
            || header_is(n, crate::caller::GATEWAY_KEY.as_str())
            || n == "authorization"
            || header_skeleton(n, &mut buf).is_some_and(|s| REWRITES.contains(&s))
    });
}

/// Removes every header a lenient server would read as `name` (`X_Token` for `x-token`).
pub fn strip_named(h: &mut HeaderMap, name: &HeaderName) {
    remove_where(h, |n| header_is(n, name.as_str()));
}

/// Removes every header whose name `drop` picks (nothing is collected when none is).
fn remove_where(h: &mut HeaderMap, drop: impl Fn(&str) -> bool) {
    if h.keys().any(|n| drop(n.as_str())) {
        let names: Vec<HeaderName> = h.keys().filter(|n| drop(n.as_str())).cloned().collect();
        for n in names {
            h.remove(n);
        }
    }
}

/// Cleans an upstream response's headers before they go to the caller.
pub fn strip_response(h: &mut HeaderMap) {
    strip_hop_by_hop(h);
}

/// The query to send upstream: without any `access_token` the caller sent (in any spelling a
/// lenient server reads as one, with `&` or `;` as separator), with the route's token appended
/// when it goes in the query. Everything else is kept byte for byte.
pub fn rewrite_query<'a>(query: Option<&'a str>, inject: Option<&str>) -> Option<Cow<'a, str>> {
    let has_param = query.is_some_and(|q| pieces(q).any(is_token_param));
    let kept: Option<Cow<'a, str>> = match query {
        Some(q) if has_param => Some(Cow::Owned(without_token_params(q))),
        Some(q) => Some(Cow::Borrowed(q)),
        None => None,
    };
    let kept = kept.filter(|q| !q.is_empty());
    let Some(token) = inject else { return kept };
    let mut out = kept.map(Cow::into_owned).unwrap_or_default();
    if !out.is_empty() {
        out.push('&');
    }
    out.push_str(ACCESS_TOKEN_PARAM);
    out.push('=');
    out.extend(form_urlencoded::byte_serialize(token.as_bytes()));
    Some(Cow::Owned(out))
}

/// `uri`'s path with another query (or none), in origin form.
pub fn with_query(uri: &http::Uri, query: Option<&str>) -> Result<http::Uri, http::Error> {
    let pq = match query {
        Some(q) => format!("{}?{q}", uri.path()),
        None => uri.path().to_owned(),
    };
    http::Uri::builder().path_and_query(pq).build()
}

/// `q` without its token pieces; each kept piece keeps the separator before it.
fn without_token_params(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    let mut start = 0;
    for (i, piece) in pieces(q).enumerate() {
        let sep = if i == 0 { "" } else { &q[start - 1..start] };
        if !is_token_param(piece) {
            if !out.is_empty() {
                out.push_str(sep);
            }
            out.push_str(piece);
        }
        start += piece.len() + 1;
    }
    out
}

fn is_token_param(piece: &str) -> bool {
    param_is(piece, ACCESS_TOKEN_PARAM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        assert_eq!(rewrite_query(Some("a=1&b=2"), None).as_deref(), Some("a=1&b=2"));
        assert_eq!(rewrite_query(Some("access_token=x&a=1"), None).as_deref(), Some("a=1"));
        assert_eq!(rewrite_query(Some("access%5Ftoken=x"), None), None);
        assert_eq!(
            rewrite_query(Some("a=1&access_token=evil"), Some("clt.t/+")).as_deref(),
            Some("a=1&access_token=clt.t%2F%2B")
        );
        assert_eq!(rewrite_query(None, Some("t")).as_deref(), Some("access_token=t"));
        assert_eq!(
            rewrite_query(Some("access_tokens=1"), None).as_deref(),
            Some("access_tokens=1")
        );
        assert_eq!(
            rewrite_query(Some("ACCESS_TOKEN=x&Access%5FToken=y&a=1"), None).as_deref(),
            Some("a=1")
        );
    }

    #[test]
    fn strips_credentials_and_hop_by_hop() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("access-token", "evil"),
            ("x-gateway-key", "k"),
            ("authorization", "Bearer k"),
            ("connection", "x-hop, keep-alive"),
            ("x-hop", "1"),
            ("host", "attacker.example"),
            ("content-type", "application/json"),
        ] {
            h.append(HeaderName::from_static(k), v.parse().unwrap());
        }
        strip_request(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn method_overrides_and_original_urls_are_removed() {
        let mut h = HeaderMap::new();
        for n in [
            "x-http-method-override",
            "X_HTTP_Method",
            "x-method-override",
            "x-original-url",
            "x_rewrite_url",
            "x-url",
        ] {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), "v".parse().unwrap());
        }
        strip_request(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["x-url"]);
    }
}
