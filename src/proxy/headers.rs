//! What the gateway removes from requests and responses: credentials the
//! caller sent (so it can neither leak nor override one), the caller's key,
//! and hop-by-hop headers (RFC 9110 §7.6.1).

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

/// Cleans a caller's request headers before they go upstream.
pub fn strip_request(h: &mut HeaderMap) {
    strip_hop_by_hop(h);
    h.remove(header::HOST);
    h.remove(&crate::caller::GATEWAY_KEY);
    h.remove(header::AUTHORIZATION);
    h.remove(&ACCESS_TOKEN);
}

/// Cleans an upstream response's headers before they go to the caller.
pub fn strip_response(h: &mut HeaderMap) {
    strip_hop_by_hop(h);
}

/// The query to send upstream: without any `access_token` the caller sent,
/// with the route's token appended when it goes in the query.
pub fn rewrite_query<'a>(query: Option<&'a str>, inject: Option<&str>) -> Option<Cow<'a, str>> {
    let has_param = query.is_some_and(|q| q.split('&').any(is_token_param));
    let kept: Option<Cow<'a, str>> = match query {
        Some(q) if has_param => {
            let kept: Vec<&str> = q.split('&').filter(|p| !is_token_param(p)).collect();
            Some(Cow::Owned(kept.join("&")))
        }
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

fn is_token_param(pair: &str) -> bool {
    let name = pair.split('=').next().unwrap_or("");
    // Compare decoded and in any case, so neither `access%5Ftoken=` nor `ACCESS_TOKEN=` can slip a
    // credential past the gateway to a backend that reads names loosely.
    name.eq_ignore_ascii_case(ACCESS_TOKEN_PARAM)
        || (name.contains('%') || name.contains('+'))
            && form_urlencoded::parse(name.as_bytes())
                .next()
                .is_some_and(|(k, _)| k.eq_ignore_ascii_case(ACCESS_TOKEN_PARAM))
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
}
