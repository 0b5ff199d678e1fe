//! Names as lenient servers read them: query parameters, form and JSON fields, cookies and
//! headers, reduced to what PHP, Rack, Spring or nginx would take them for.

use unicode_normalization::UnicodeNormalization;

/// The pieces of a query, split on `&` and on `;` (which some servers take as a separator too).
pub fn pieces(query: &str) -> impl Iterator<Item = &str> {
    query.split(['&', ';'])
}

/// A query piece's name as a lenient server reads it: decoded, trimmed, without an array suffix
/// (`[]`, `[0]`), lower-cased, with `-`, `.` and spaces as `_`.
fn normalized_param(piece: &str) -> String {
    let raw = piece.split('=').next().unwrap_or("");
    let decoded: String = form_urlencoded::parse(raw.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default();
    let name = decoded.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0');
    let name = name.split('[').next().unwrap_or("");
    name.chars()
        .map(|c| match c {
            '-' | '.' | ' ' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Whether a query piece's name is `name` (already normalized) to a lenient server.
pub fn param_is(piece: &str, normalized_name: &str) -> bool {
    let raw = piece.split('=').next().unwrap_or("");
    // Fast path: a plain name of another length cannot be it.
    let plain = raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain && raw.len() != normalized_name.len() {
        return false;
    }
    normalized_param(piece) == normalized_name
}

/// The normalized form of a configured parameter name.
pub fn normalize_param_name(name: &str) -> String {
    normalized_param(name)
}

/// The platform's credential (`access_token`, `access-token`) as a skeleton.
pub const ACCESS_TOKEN: &str = "accesstoken";

/// Rounds of percent-decoding a field name gets: `access%255Ftoken` is `access_token` to a server
/// that decodes twice; a third round covers a proxy that decodes once more on the way.
const DECODE_ROUNDS: usize = 3;

/// Whether a field name as sent (query parameter, form field, multipart part, JSON member) is the
/// one whose skeleton is `skeleton` to some lenient server.
///
/// The name is percent-decoded (up to [`DECODE_ROUNDS`] times), read whole and cut at a NUL
/// (PHP reads C strings), characters outside ASCII folded as NFKC or case-insensitive comparisons
/// fold them (`ａ`, `ſ`), and read two ways: PHP's (`name[...]` is an array called `name`, an
/// unmatched `[` is `_`) and Rack's (the first run without brackets: `[name]`, `name]`). Either
/// reading's letters and digits, lower-cased, equal to `skeleton` is a match: `access[token`,
/// `access_token[0]`, `accessToken`, `Access.Token`, `access_token%0b` are all `accesstoken`.
/// Names that are only near it (`access_tokens`, `xaccess_token`, `a[access_token]`) are not.
pub fn field_is(raw: &[u8], skeleton: &str) -> bool {
    named(raw, skeleton, false)
}

/// [`field_is`] for a cookie name, which like a header name may also carry an `x-` prefix.
pub fn cookie_is(raw: &[u8], skeleton: &str) -> bool {
    named(raw, skeleton, true)
}

fn named(raw: &[u8], skeleton: &str, x_prefix: bool) -> bool {
    let is =
        |name: &[u8]| letters(name).eq(skeleton.bytes()) || (x_prefix && without_x(letters(name)).eq(skeleton.bytes()));
    let plain = raw
        .iter()
        .all(|&b| b.is_ascii() && !matches!(b, b'%' | b'[' | b']' | 0));
    if plain {
        return is(raw);
    }
    let whole = readable(raw);
    // PHP reads a name as a C string (`access_token%00x` is `access_token`); Java's trim drops a
    // NUL like a space (`%00access_token`).
    let cut = &whole[..whole.iter().position(|&b| b == 0).unwrap_or(whole.len())];
    let found = [&whole[..], cut].into_iter().any(|name| {
        let php = match name.iter().position(|&b| b == b'[') {
            Some(i) if name[i..].contains(&b']') => &name[..i],
            _ => name,
        };
        let rack_start = name.iter().position(|&b| b != b'[' && b != b']').unwrap_or(name.len());
        let rack = name[rack_start..]
            .split(|&b| b == b'[' || b == b']')
            .next()
            .unwrap_or_default();
        is(php) || is(rack)
    });
    found
}

/// A name's ASCII letters and digits, lower-cased.
fn letters(name: &[u8]) -> impl Iterator<Item = u8> + Clone + '_ {
    name.iter()
        .filter(|b| b.is_ascii_alphanumeric())
        .map(u8::to_ascii_lowercase)
}

/// `it` without one leading `x` (the `x-` of `x-access-token`).
fn without_x<I: Iterator<Item = u8> + Clone>(it: I) -> I {
    let mut rest = it.clone();
    if rest.next() == Some(b'x') {
        rest
    } else {
        it
    }
}

/// A field name decoded, and folded to ASCII where some server would fold it.
fn readable(raw: &[u8]) -> Vec<u8> {
    let mut name = raw.to_vec();
    for _ in 0..DECODE_ROUNDS {
        if !name.contains(&b'%') {
            break;
        }
        let next: Vec<u8> = percent_encoding::percent_decode(&name).collect();
        if next == name {
            break;
        }
        name = next;
    }
    if name.is_ascii() {
        return name;
    }
    let mut out = Vec::with_capacity(name.len());
    for c in String::from_utf8_lossy(&name).chars() {
        let nfkc: String = std::iter::once(c).nfkc().collect();
        if nfkc.is_ascii() {
            out.extend_from_slice(nfkc.as_bytes());
        } else if let Some(a) = c
            .to_lowercase()
            .chain(c.to_uppercase())
            .find(char::is_ascii_alphanumeric)
        {
            // Java's equalsIgnoreCase reads `ſ` as `s` and `K` (Kelvin) as `k`.
            out.push(a as u8);
        }
    }
    out
}

/// The skeleton of a name the gateway itself sets (`access_token` is `accesstoken`), for
/// [`field_is`].
pub fn skeleton(name: &str) -> String {
    String::from_utf8(letters(name.as_bytes()).collect()).expect("ASCII")
}

/// A header name's skeleton without a leading `x` (what [`header_named`] compares), written into
/// `buf`; `None` when it is longer than `buf`, as no name the gateway strips is. No allocation:
/// this runs on every header of every request.
pub fn header_skeleton<'b>(name: &str, buf: &'b mut [u8; 32]) -> Option<&'b [u8]> {
    let mut len = 0;
    for b in without_x(letters(name.as_bytes())) {
        *buf.get_mut(len)? = b;
        len += 1;
    }
    Some(&buf[..len])
}

/// Whether two header names are one to a lenient server: equal once case, `-`, `_`, `.` (every
/// character but letters and digits) and a leading `x-` are set aside. `access.token`,
/// `AccessToken` and `X_Access_Token` are all `access-token`; `token` and `x_token` are `x-token`.
/// Header names are never decoded.
pub fn header_named(name: &str, other: &str) -> bool {
    without_x(letters(name.as_bytes())).eq(without_x(letters(other.as_bytes())))
}

/// Whether a header name is `target` (lower case, with `-`) to a server that reads `_` as `-`
/// (the open_id header's lookalikes; credentials use the wider [`header_named`]).
pub fn header_is(name: &str, target: &str) -> bool {
    name.len() == target.len()
        && name
            .bytes()
            .zip(target.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_field_names() {
        for name in [
            "access_token",
            "ACCESS_TOKEN",
            "accessToken",
            "access-token",
            "Access.Token",
            "access token",
            "access+token",
            "access__token",
            "access%5Ftoken",
            "access%255Ftoken",
            "access_token%20",
            "%20access_token",
            "access_token%0b",
            "access_token%00junk",
            "%00access_token",
            "access%00_token",
            "access[token",
            "access%5btoken",
            "access.token[",
            "access_token[]",
            "access_token[0]",
            "access_token%5B%5D",
            "access_token[a][b]",
            "[access_token]",
            "access_token]",
            "\u{ff41}ccess_token",
            "acce\u{17f}\u{17f}_token",
        ] {
            assert!(field_is(name.as_bytes(), ACCESS_TOKEN), "{name}");
        }
        for name in [
            "access_tokens",
            "xaccess_token",
            "x-access-token",
            "access",
            "token",
            "",
            "a[access_token]",
            "access[token]",
            "access%5Btoken%5D",
        ] {
            assert!(!field_is(name.as_bytes(), ACCESS_TOKEN), "{name}");
        }
        assert!(cookie_is(b"x-access-token", ACCESS_TOKEN));
        assert!(cookie_is(b"X_Access%5FToken", ACCESS_TOKEN));
        assert!(!cookie_is(b"xx-access-token", ACCESS_TOKEN));
    }

    #[test]
    fn credential_header_names() {
        for name in [
            "access-token",
            "access_token",
            "access.token",
            "accesstoken",
            "x-access-token",
            "x_access.token",
        ] {
            assert!(header_named(name, "access-token"), "{name}");
        }
        for name in ["access-tokens", "xx-access-token", "token", "x-open-id"] {
            assert!(!header_named(name, "access-token"), "{name}");
        }
        let mut buf = [0; 32];
        assert_eq!(header_skeleton("X_Access.Token", &mut buf), Some(&b"accesstoken"[..]));
        assert_eq!(header_skeleton(&"a".repeat(33), &mut buf), None);
        assert!(header_named("token", "x-token"));
        assert!(header_named("x_token", "x-token"));
        assert!(!header_named("x-tokens", "x-token"));
    }

    #[test]
    fn lenient_names() {
        for piece in [
            "access_token=x",
            "ACCESS_TOKEN=x",
            "access%5Ftoken=x",
            "access_token%20=x",
            "%20access_token=x",
            "access_token+=x",
            "access_token[]=x",
            "access_token%5B%5D=x",
            "access_token[0]=x",
            "access-token=x",
            "Access.Token=x",
            "access_token",
        ] {
            assert!(param_is(piece, "access_token"), "{piece}");
        }
        for piece in [
            "access_tokens=x",
            "access=x",
            "token=x",
            "",
            "=access_token",
            "xaccess_token=1",
        ] {
            assert!(!param_is(piece, "access_token"), "{piece}");
        }
        assert!(header_is("access_token", "access-token"));
        assert!(header_is("access-token", "access-token"));
        assert!(!header_is("access-tokens", "access-token"));
        assert!(!header_is("x-access-token", "access-token"));
    }
}
