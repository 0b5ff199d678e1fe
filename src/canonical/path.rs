//! Whether a request path is canonical: one no hop after the gateway could read differently.

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
}
