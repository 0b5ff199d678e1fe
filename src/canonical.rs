//! One reading of a request for routing, permission and forwarding.
//!
//! The gateway matches routes on the raw path and forwards that same path, byte for byte. That is
//! only safe if no hop after it can read the path differently: so a path any normaliser would
//! rewrite (a dot-segment in any disguise, an encoded separator or `;`, an empty segment, an
//! encoded letter, anything but valid UTF-8, raw bytes outside ASCII) is refused before routing.
//! Douyin's API paths never contain any of these.
//!
//! Names are compared the way lenient servers read them: a query parameter `access[token` or
//! `accessToken`, or a header `X_Access.Token`, is the credential to PHP, Rack, Spring or nginx,
//! so it is one to the gateway too. The rule is a name's *skeleton*: its ASCII letters and digits,
//! lower-cased, after decoding (see [`field_is`] and [`header_named`]).

use unicode_normalization::UnicodeNormalization;

/// Why a path is not canonical; `None` when it is.
///
/// A path of plain ASCII without `%` (nearly every call) costs one scan of its bytes and one of
/// its segments; only a path with escapes is decoded.
pub fn path_problem(path: &str) -> Option<&'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Some("the path must start with '/'");
    };
    let mut escaped = false;
    for &b in rest.as_bytes() {
        match b {
            b'%' => escaped = true,
            b'\\' => return Some("backslash in the path"),
            // `/a;x/b` is `/a/b` to servers that strip path parameters (and `..;` is `..`).
            b';' => return Some("path parameter (';') in the path"),
            0x80.. => return Some("raw byte outside ASCII in the path (percent-encode it)"),
            0..=0x20 | 0x7f => return Some("space or control character in the path"),
            _ => {}
        }
    }
    if !escaped {
        return segments_problem(rest);
    }
    let decoded = match decode_path(rest) {
        Ok(d) => d,
        Err(problem) => return Some(problem),
    };
    // std refuses overlong forms (`%C0%AE` is not `.`), surrogates and stray bytes.
    let Ok(text) = String::from_utf8(decoded) else {
        return Some("invalid or overlong UTF-8 in the path");
    };
    if text.chars().any(|c| !c.is_ascii() && reads_as_syntax(c)) {
        return Some(
            "a character Unicode compatibility normalisation (NFKC) reads as '.', '/', '\\', ';' or '%' in the path",
        );
    }
    segments_problem(&text)
}

/// The path's escapes decoded, or why one may not be: an escape a normaliser would decode into
/// something else (`%2F`, `%2E`, `%3B`, `%41`), or a bad one.
fn decode_path(rest: &str) -> Result<Vec<u8>, &'static str> {
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
            return Err("bad percent-escape in the path");
        };
        match b {
            b'/' | b'\\' => return Err("encoded '/' or '\\' in the path"),
            b'%' => return Err("encoded '%' in the path (double encoding)"),
            b'.' => return Err("encoded '.' in the path"),
            // nginx decodes `..%3B` to `..;` on the way, which Tomcat-style servers read as `..`.
            b';' => return Err("encoded ';' (%3B) in the path"),
            0..=0x1f | 0x7f => return Err("encoded control character in the path"),
            b if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'~' => {
                return Err("encoded letter, digit or '-_~' in the path (a normaliser would decode it)")
            }
            _ => out.push(b),
        }
        i += 3;
    }
    Ok(out)
}

/// Whether NFKC turns `c` into (or into something with) a character of path syntax: `．` (U+FF0E)
/// is `.`, `／` (U+FF0F) is `/`, `‥` (U+2025) is `..`.
fn reads_as_syntax(c: char) -> bool {
    std::iter::once(c)
        .nfkc()
        .any(|d| matches!(d, '.' | '/' | '\\' | ';' | '%'))
}

/// An empty segment (but the last), or one of only dots and spaces (`.`, `..`, `...`, `.. `,
/// ` ..`), which some server reads as a dot-segment once it trims or collapses it.
fn segments_problem(rest: &str) -> Option<&'static str> {
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        if seg.is_empty() {
            if segments.peek().is_some() {
                return Some("empty path segment ('//')");
            }
        } else if seg.chars().all(|c| c == '.' || c.is_whitespace() || invisible(c)) {
            return Some("dot-segment ('.', '..', or only dots and spaces) in the path");
        }
    }
    None
}

/// Characters some servers drop as if they were not there: zero-width ones, the soft hyphen, the
/// byte-order mark.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{ad}' | '\u{180e}' | '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}'
    )
}

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
    fn canonical_paths_pass() {
        for p in [
            "/",
            "/js/getticket/",
            "/api/douyin/v1/video/video_list/",
            "/a/b",
            "/a/b.c/",
            "/a/a..b",
            "/a/.x",
            "/a/x.",
            "/a/%20b",
            "/a/%E4%BD%A0",
            "/a/%E3%80%82",
            "/a/%22x%22",
        ] {
            assert_eq!(path_problem(p), None, "{p}");
        }
    }

    #[test]
    fn non_canonical_paths_are_named() {
        for p in [
            "a",
            "/a/../b",
            "/a/..",
            "/a/.",
            "/./a",
            "/a//b",
            "//a",
            "/a/%2e%2e/b",
            "/a/.%2E/",
            "/a/%2F",
            "/a/%5c",
            "/a\\b",
            "/a/%252e",
            "/a/%00",
            "/a/%7e",
            "/a/%41",
            "/a/%",
            "/a/%4",
            "/a/%zz",
            "/a/..;x/b",
            "/a/b;c",
            "/a;x/b",
            // Issue #15: every disguise of a dot-segment, separator or path parameter.
            "/a/...",
            "/a/....",
            "/a/..%3B/b",
            "/a/x%3b",
            "/a/%c0%ae%c0%ae/b",
            "/a/%C0%AE",
            "/a/%e0%80%ae",
            "/a/%ef%bc%8e%ef%bc%8e/b",
            "/a/%e2%80%a5/b",
            "/a/x%ef%bc%8fy",
            "/a/x%ef%bc%bcy",
            "/a/x%ef%bc%9by",
            "/a/..%20",
            "/a/%20..",
            "/a/.%20.",
            "/a/%20",
            "/a/..%c2%a0",
            "/a/..%e2%80%8b",
            "/a/%ff",
            "/a/%e4%bd",
            "/a/%ed%a0%80",
            "/a/\u{e9}",
            "/a/\u{ff0e}\u{ff0e}/b",
            "/a b",
            "/a/\tb",
        ] {
            assert!(path_problem(p).is_some(), "{p}");
        }
    }

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
