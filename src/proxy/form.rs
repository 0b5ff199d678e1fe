//! Request bodies the platform reads fields from: no caller credential goes through in one.
//!
//! - `application/x-www-form-urlencoded` (`POST /oauth/userinfo/` takes its token there): read
//!   whole on every route, up to `retry_buffer_bytes` (a larger one is 413 `body_too_large`, as it
//!   could not be cleaned without holding it), and sent on without the fields named like a
//!   credential ([`super::headers::without_credentials`], the query's rule), every other byte
//!   kept and `Content-Length` set to match;
//! - `multipart/*`: a part named like a credential is 400 ([`super::multipart`]), held whole or
//!   streamed;
//! - either kind with two `Content-Type`s, a `Content-Encoding` the gateway cannot read through, or
//!   (multipart) no usable `boundary`: 400, since the platform might read what the gateway cannot.
//!
//! [`super::KeepBodyLayer`] calls these; a body of any other type passes as it is.

use super::multipart::Scanner;
use crate::error::GatewayError;
use bytes::Bytes;
use http::{header, HeaderMap};

/// What the gateway must look at in a request body.
#[derive(Debug)]
pub enum Fields {
    /// A form body, read whole up to this many bytes (`retry_buffer_bytes`).
    Form(u64),
    /// A multipart body, scanned as it passes.
    Multipart(Box<Scanner>),
    /// Anything else: passed as it is.
    Opaque,
}

/// The longest `boundary` taken (RFC 2046 allows 70; some clients send more).
const MAX_BOUNDARY: usize = 200;

/// What a request with these headers carries; `form_limit` is `retry_buffer_bytes`.
pub fn fields(headers: &HeaderMap, form_limit: u64) -> Result<Fields, GatewayError> {
    let types = headers.get_all(header::CONTENT_TYPE);
    let has = |needle: &[u8]| types.iter().any(|t| contains_ignore_case(t.as_bytes(), needle));
    let (form, multipart) = (has(b"x-www-form-urlencoded"), has(b"multipart/"));
    if !form && !multipart {
        return Ok(Fields::Opaque);
    }
    let bad = |why: &str| {
        Err(GatewayError::BadRequest(format!(
            "{why}: the gateway reads form and multipart bodies to remove caller credentials"
        )))
    };
    if types.iter().nth(1).is_some() || (form && multipart) {
        return bad("more than one Content-Type");
    }
    let encoded = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return bad("a Content-Encoding on a form or multipart body");
    }
    if form {
        return Ok(Fields::Form(form_limit));
    }
    match types.iter().next().and_then(|t| boundary(t.as_bytes())) {
        Some(b) => Ok(Fields::Multipart(Box::new(Scanner::new(b)))),
        None => bad("a multipart Content-Type without one plain boundary parameter"),
    }
}

/// A body read whole, cleaned: a form without its credential fields (and `Content-Length` set to
/// match), a multipart body checked.
pub fn clean_whole(fields: Fields, headers: &mut HeaderMap, body: Bytes) -> Result<Bytes, GatewayError> {
    match fields {
        Fields::Form(_) => match super::headers::without_credentials(&body) {
            Some(kept) => {
                headers.insert(header::CONTENT_LENGTH, kept.len().into());
                Ok(Bytes::from(kept))
            }
            None => Ok(body),
        },
        Fields::Multipart(mut s) => {
            s.feed(&body)
                .and_then(|()| s.finish())
                .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
            Ok(body)
        }
        Fields::Opaque => Ok(body),
    }
}

/// A form body with its `access_token` field set to `token` (`inject = "form_body"`): every field
/// named like a credential removed ([`super::headers::without_credentials`]: the caller's, or the
/// token of an attempt being replayed), every other byte kept in order, the token appended last.
pub fn with_token(body: &[u8], token: &str) -> Bytes {
    let kept = super::headers::without_credentials(body);
    let kept = kept.as_deref().unwrap_or(body);
    let mut out = Vec::with_capacity(kept.len() + token.len() + 16);
    out.extend_from_slice(kept);
    if !kept.is_empty() {
        out.push(b'&');
    }
    out.extend_from_slice(super::headers::ACCESS_TOKEN_PARAM.as_bytes());
    out.push(b'=');
    out.extend(form_urlencoded::byte_serialize(token.as_bytes()).flat_map(str::bytes));
    Bytes::from(out)
}

/// A body that streams on after `prefix` (what was read of it, if anything): a form cannot (413);
/// a multipart body's prefix is checked, and its scanner goes along for the rest.
pub fn stream_on(
    fields: Fields,
    prefix: Option<&[u8]>,
) -> Result<Option<Box<dyn crate::body::BodyCheck>>, GatewayError> {
    match fields {
        Fields::Form(limit) => Err(GatewayError::FormTooLarge(limit)),
        Fields::Multipart(mut s) => {
            if let Some(p) = prefix {
                s.feed(p).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
            }
            Ok(Some(s))
        }
        Fields::Opaque => Ok(None),
    }
}

/// The one `boundary` parameter of a multipart `Content-Type`, unquoted; `None` when there is none,
/// more than one, or it has characters RFC 2046 does not allow. What is returned is cut before any
/// ` `, `,` or `=` so that it is a prefix of the boundary every parser takes.
fn boundary(content_type: &[u8]) -> Option<&[u8]> {
    let mut found = None;
    for param in content_type.split(|&b| b == b';').skip(1) {
        let (name, value) = match param.iter().position(|&b| b == b'=') {
            Some(i) => (param[..i].trim_ascii(), param[i + 1..].trim_ascii()),
            None => continue,
        };
        // `boundary*=UTF-8''x` and `boundary*0=` are boundaries too to Tomcat (RFC 2231): one
        // such, or two of any kind, could make the platform split the body where this does not.
        if name.len() < 8 || !name[..8].eq_ignore_ascii_case(b"boundary") {
            continue;
        }
        if found.is_some() || name.len() > 8 {
            return None;
        }
        found = Some(
            value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value),
        );
    }
    let value = found?;
    let bchar = |b: &u8| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(b);
    if value.is_empty() || value.len() > MAX_BOUNDARY || !value.iter().all(bchar) {
        return None;
    }
    let core = value.iter().position(|b| b" ,=".contains(b)).unwrap_or(value.len());
    (core > 0).then_some(&value[..core])
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in lines {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn kinds() {
        let form = headers(&[("content-type", "Application/X-WWW-Form-Urlencoded; charset=utf-8")]);
        assert!(matches!(fields(&form, 10), Ok(Fields::Form(10))));
        let multipart = headers(&[("content-type", "multipart/form-data; BOUNDARY=\"a b\"")]);
        assert!(matches!(fields(&multipart, 10), Ok(Fields::Multipart(_))));
        assert!(matches!(
            fields(&headers(&[("content-type", "application/json")]), 10),
            Ok(Fields::Opaque)
        ));
        assert!(matches!(fields(&HeaderMap::new(), 10), Ok(Fields::Opaque)));
        for refused in [
            headers(&[
                ("content-type", "text/plain"),
                ("content-type", "application/x-www-form-urlencoded"),
            ]),
            headers(&[
                ("content-type", "application/x-www-form-urlencoded"),
                ("content-encoding", "gzip"),
            ]),
            headers(&[("content-type", "multipart/form-data")]),
            headers(&[("content-type", "multipart/form-data; boundary=a; boundary=b")]),
            headers(&[("content-type", "multipart/form-data; boundary=\"a\\\"b\"")]),
            headers(&[("content-type", "multipart/form-data; boundary=")]),
            headers(&[("content-type", "multipart/form-data; boundary=a; boundary*=UTF-8''b")]),
            headers(&[("content-type", "multipart/form-data; boundary*=UTF-8''b")]),
        ] {
            assert!(
                matches!(fields(&refused, 10), Err(GatewayError::BadRequest(_))),
                "{refused:?}"
            );
        }
        assert_eq!(boundary(b"multipart/form-data; boundary=abc, x=1"), Some(&b"abc"[..]));
        assert_eq!(boundary(b"multipart/form-data;boundary=\"xyz\""), Some(&b"xyz"[..]));
    }

    #[test]
    fn a_form_loses_its_credential_fields_and_keeps_every_other_byte() {
        let mut h = headers(&[("content-length", "43")]);
        let body = Bytes::from_static(b"a=1&access_token=x&b=%20+&Access.Token=y;c");
        let out = clean_whole(Fields::Form(100), &mut h, body).unwrap();
        assert_eq!(&out[..], b"a=1&b=%20+;c");
        assert_eq!(h["content-length"], "12");
        let kept = Bytes::from_static(b"a=1&b=2");
        assert_eq!(clean_whole(Fields::Form(100), &mut h, kept.clone()).unwrap(), kept);
        assert!(matches!(
            stream_on(Fields::Form(100), None),
            Err(GatewayError::FormTooLarge(100))
        ));
    }

    #[test]
    fn the_token_field_is_set_once_and_every_other_byte_kept() {
        let once = with_token(b"open_id=ou%5F1&b=%20+&Access_Token=evil;c", "t/1");
        assert_eq!(&once[..], b"open_id=ou%5F1&b=%20+;c&access_token=t%2F1");
        // A replay after a refresh: the old token goes, the new one is set.
        assert_eq!(&with_token(&once, "t2")[..], b"open_id=ou%5F1&b=%20+;c&access_token=t2");
        assert_eq!(&with_token(b"", "t")[..], b"access_token=t");
        assert_eq!(&with_token(b"access_token=x", "t")[..], b"access_token=t");
    }
}
