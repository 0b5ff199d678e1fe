//! What the gateway removes from requests and responses: credentials the
//! caller sent (so it can neither leak nor override one), the caller's key,
//! headers that make frameworks behind a proxy take another method or path,
//! and hop-by-hop headers (RFC 9110 §7.6.1).

use crate::canonical::{cookie_is, field_is, header_named, header_skeleton, ACCESS_TOKEN as CREDENTIAL};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::borrow::Cow;

/// The platform's token header.
pub static ACCESS_TOKEN: HeaderName = HeaderName::from_static("access-token");
/// The query parameter older APIs take the token in.
pub const ACCESS_TOKEN_PARAM: &str = "access_token";

/// How many [`HOP_BY_HOP`] names there are.
const HOPS: usize = 9;

/// Hop-by-hop headers (RFC 9110 §7.6.1), `Connection` first.
static HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Where `n` is in [`HOP_BY_HOP`]: one `match` on the name, which tells most names apart by
/// their length alone, rather than nine comparisons for every name of every head (profiled:
/// about 1,100 instructions a call over the request and the answer).
fn hop_index(n: &HeaderName) -> Option<usize> {
    Some(match n.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        _ => return None,
    })
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the names first: most heads carry none of them, or only `Connection`, and a
    // lookup per name (ten) cost more than the rest of the cleaning (profiled).
    let mut present = [false; HOPS];
    for n in h.keys() {
        if let Some(i) = hop_index(n) {
            present[i] = true;
        }
    }
    if present[0] {
        // Headers the Connection header names are hop-by-hop too (read from reference-counted
        // copies of its lines: nothing is allocated for one line, the usual case).
        let mut lines = h.get_all(header::CONNECTION).iter();
        let first = lines.next().cloned();
        let rest: Vec<HeaderValue> = lines.cloned().collect();
        for line in first.iter().chain(&rest) {
            for name in line.to_str().into_iter().flat_map(|v| v.split(',')) {
                // A name that is not one removes nothing.
                h.remove(name.trim());
            }
        }
    }
    for (n, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        h.remove(n);
    }
}

/// Headers stripped from every request, in every spelling a lenient server reads as them
/// ([`header_named`]): caller credentials (the platform's token header, the caller's key), and
/// those with which frameworks behind a proxy take another method (`X-HTTP-Method-Override:
/// DELETE`) or serve another path (`X-Original-URL`) than the one the gateway routed.
pub const STRIPPED: [&str; 8] = [
    "access-token",
    "x-gateway-key",
    "authorization",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// [`STRIPPED`] as skeletons ([`header_skeleton`]), compared with each header's.
const STRIPPED_SKELETONS: [&[u8]; 8] = [
    b"accesstoken",
    b"gatewaykey",
    b"authorization",
    b"httpmethodoverride",
    b"httpmethod",
    b"methodoverride",
    b"originalurl",
    b"rewriteurl",
];

/// Cleans a caller's request headers before they go upstream: hop-by-hop headers, `Host`, the
/// [`STRIPPED`] headers in any spelling (`access_token`, `access.token`, `AccessToken`,
/// `x-access-token` are all `access-token`), and cookies named like a credential.
pub fn strip_request(h: &mut HeaderMap) {
    strip_hop_by_hop(h);
    h.remove(header::HOST);
    remove_where(h, |n| {
        let mut buf = [0; 32];
        header_skeleton(n, &mut buf).is_some_and(|s| STRIPPED_SKELETONS.contains(&s))
    });
    strip_credential_cookies(h);
}

/// Removes every header a lenient server would read as `name` (`X_Token`, `token` for `x-token`).
pub fn strip_named(h: &mut HeaderMap, name: &HeaderName) {
    remove_where(h, |n| header_named(n, name.as_str()));
}

/// Rebuilds each `Cookie` line that names a credential ([`cookie_is`]) without those cookies,
/// joined by `; `; a line left empty goes, and every other line stays byte for byte.
fn strip_credential_cookies(h: &mut HeaderMap) {
    let named = |line: &HeaderValue| line.as_bytes().split(|&b| b == b';').any(credential_cookie);
    if !h.get_all(header::COOKIE).iter().any(named) {
        return;
    }
    let lines: Vec<HeaderValue> = h.get_all(header::COOKIE).iter().cloned().collect();
    h.remove(header::COOKIE);
    for line in lines {
        if !named(&line) {
            h.append(header::COOKIE, line);
            continue;
        }
        let kept: Vec<&[u8]> = line
            .as_bytes()
            .split(|&b| b == b';')
            .filter(|c| !credential_cookie(c))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty())
            .collect();
        if let Ok(v) = HeaderValue::from_bytes(&kept.join(&b"; "[..])) {
            if !v.is_empty() {
                h.append(header::COOKIE, v);
            }
        }
    }
}

/// Whether one `;`-piece of a `Cookie` line names a credential; `a=1, access_token=x` is two
/// cookies to servers that also split on `,` (RFC 2965).
fn credential_cookie(piece: &[u8]) -> bool {
    piece.split(|&b| b == b',').any(|c| {
        let name = c.split(|&b| b == b'=').next().unwrap_or_default();
        cookie_is(name.trim_ascii(), CREDENTIAL)
    })
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

/// The query to send upstream: without any credential the caller sent ([`without_credentials`]),
/// with the route's token appended when it goes in the query. Everything else is kept byte for
/// byte.
pub fn rewrite_query<'a>(query: Option<&'a str>, inject: Option<&str>) -> Option<Cow<'a, str>> {
    let kept: Option<Cow<'a, str>> = query.map(|q| match without_credentials(q.as_bytes()) {
        // Whole pieces cut at ASCII separators: still UTF-8.
        Some(v) => Cow::Owned(String::from_utf8(v).expect("cut at ASCII separators")),
        None => Cow::Borrowed(q),
    });
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

/// A query or `application/x-www-form-urlencoded` body without the pieces that name a credential
/// ([`field_is`]), or `None` when none does. Pieces are split on `&` and on `;` (which some
/// servers take as a separator too); each kept piece keeps the separator before it (the first one
/// kept, none), so every other byte is kept.
pub fn without_credentials(q: &[u8]) -> Option<Vec<u8>> {
    let is_separator = |b: &u8| *b == b'&' || *b == b';';
    let credential = |piece: &[u8]| field_is(piece.split(|&b| b == b'=').next().unwrap_or_default(), CREDENTIAL);
    if !q.split(is_separator).any(credential) {
        return None;
    }
    let mut out = Vec::with_capacity(q.len());
    let (mut start, mut kept_any) = (0, false);
    for piece in q.split(is_separator) {
        if !credential(piece) {
            if kept_any {
                out.push(q[start - 1]);
            }
            out.extend_from_slice(piece);
            kept_any = true;
        }
        start += piece.len() + 1;
    }
    Some(out)
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
        assert_eq!(
            rewrite_query(Some("a=1;access[token=x&&b;accessToken=y"), None).as_deref(),
            Some("a=1&&b")
        );
        assert_eq!(without_credentials(b"a=%FF&access_token=1"), Some(b"a=%FF".to_vec()));
        assert_eq!(without_credentials(b"a=1&b"), None);
    }

    #[test]
    fn cookies_named_like_a_credential_are_removed() {
        let mut h = HeaderMap::new();
        for line in [
            "a=1;access_token=x; b=2",
            "X-Access-Token=y",
            "c=3",
            "d=4, accessToken=z; e=5",
        ] {
            h.append(header::COOKIE, line.parse().unwrap());
        }
        strip_request(&mut h);
        let lines: Vec<&str> = h.get_all(header::COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(lines, ["a=1; b=2", "c=3", "e=5"]);
    }

    #[test]
    fn the_stripped_skeletons_are_the_stripped_names() {
        let mut buf = [0; 32];
        for (name, skeleton) in STRIPPED.iter().zip(STRIPPED_SKELETONS) {
            assert_eq!(header_skeleton(name, &mut buf), Some(skeleton));
        }
        assert_eq!(STRIPPED[0], ACCESS_TOKEN.as_str());
        assert_eq!(STRIPPED[1], crate::caller::GATEWAY_KEY.as_str());
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

    /// [`hop_index`] finds each name of [`HOP_BY_HOP`] at its place, and no other name: the
    /// `match` and the list say the same.
    #[test]
    fn each_hop_by_hop_name_is_found_and_no_other() {
        for (i, n) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_index(n), Some(i), "{n}");
        }
        for n in [
            "content-type",
            "host",
            "connection-x",
            "x-connection",
            "t",
            "trailers",
            "upgrade-insecure-requests",
        ] {
            assert_eq!(hop_index(&HeaderName::from_bytes(n.as_bytes()).unwrap()), None, "{n}");
        }
    }

    /// Each hop-by-hop header goes, and those every `Connection` line names, whatever else the
    /// head holds; a head with none keeps every header.
    #[test]
    fn hop_by_hop_headers_go_however_many_connection_lines_name_them() {
        let head = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            h
        };
        let mut h = head(&[
            ("connection", "X-One"),
            ("connection", "x-two ,, not a name"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("x-three", "3"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("trailer", "x"),
        ]);
        strip_response(&mut h);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-three"]);
        // An upstream's usual answer: only `Connection: keep-alive` goes.
        let mut h = head(&[
            ("server", "nginx"),
            ("content-type", "application/json"),
            ("content-length", "2"),
            ("connection", "keep-alive"),
        ]);
        strip_response(&mut h);
        assert_eq!(h.len(), 3);
        assert!(!h.contains_key(header::CONNECTION));
        // Upgrade alone, and a head with none of them.
        let mut h = head(&[("upgrade", "h2c"), ("x-a", "1")]);
        strip_response(&mut h);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-a"]);
        let mut h = head(&[("x-a", "1"), ("keep-alive", "timeout=5")]);
        strip_response(&mut h);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-a"]);
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
