//! One reading of a request for routing, permission and forwarding.
//!
//! The gateway matches routes on the raw path and forwards that same path, byte for byte. That is
//! only safe if no hop after it can read the path differently: so a path any normaliser would
//! rewrite (a dot-segment, an encoded separator, an empty segment, an encoded letter) is refused
//! before routing. Douyin's API paths never contain any of these.
//!
//! Names are compared the way lenient servers read them: a query parameter `Access.Token[]` or a
//! header `Access_Token` is the credential to PHP, nginx-with-underscores, Rack or Spring, so it
//! is one to the gateway too.

/// Why a path is not canonical; `None` when it is.
pub fn path_problem(path: &str) -> Option<&'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Some("the path must start with '/'");
    };
    let bytes = rest.as_bytes();
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg.is_empty() && !last {
            return Some("empty path segment ('//')");
        }
        if seg == "." || seg == ".." {
            return Some("dot-segment ('.' or '..') in the path");
        }
    }
    if bytes.contains(&b'\\') {
        return Some("backslash in the path");
    }
    // `/a;x/b` is `/a/b` to servers that strip path parameters (and `..;` is `..`).
    if bytes.contains(&b';') {
        return Some("path parameter (';') in the path");
    }
    let mut i = 0;
    while let Some(p) = bytes[i..].iter().position(|&b| b == b'%') {
        let at = i + p;
        let hex = bytes.get(at + 1..at + 3).and_then(|h| std::str::from_utf8(h).ok());
        let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
            return Some("bad percent-escape in the path");
        };
        match b {
            b'/' | b'\\' => return Some("encoded '/' or '\\' in the path"),
            b'%' => return Some("encoded '%' in the path (double encoding)"),
            b'.' => return Some("encoded '.' in the path"),
            0..=0x1f | 0x7f => return Some("encoded control character in the path"),
            b if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'~' => {
                return Some("encoded letter, digit or '-_~' in the path (a normaliser would decode it)")
            }
            _ => {}
        }
        i = at + 3;
    }
    None
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

/// Whether a header name is `target` (lower case, with `-`) to a server that reads `_` as `-`.
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
            "/a/...",
            "/a/.x",
            "/a/%20b",
            "/a/%E4%BD%A0",
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
        ] {
            assert!(path_problem(p).is_some(), "{p}");
        }
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
