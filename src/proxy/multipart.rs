//! Multipart bodies: a part named like a credential (`name="access_token"`) is refused, 400
//! `bad_request`, whether the body is held whole or streams through.
//!
//! The [`Scanner`] sees the body as it passes, chunk by chunk. At every occurrence of the
//! delimiter `--BOUNDARY` (not only at the start of a line: some parsers are that lenient) it reads
//! the part's head, up to its blank line (CRLF or bare LF), and looks at every `name` parameter
//! in it ([`canonical::field_is`]: any case, separators, encodings, `name*=UTF-8''…`, RFC 2231
//! continuations, RFC 2047 encoded-words as commons-fileupload decodes them). Across chunks it
//! keeps at most one part head ([`MAX_HEAD`]) or a delimiter's length. A streamed body fails at
//! the chunk that completes such a head, before it is sent: the part's value never leaves the
//! gateway.
//!
//! ```
//! use douyin_gateway::proxy::multipart::Scanner;
//!
//! let mut s = Scanner::new(b"XyZ");
//! assert!(s.feed(b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n").is_ok());
//! assert!(s.feed(b"--XyZ\r\nContent-Disposition: form-data; name=\"Access").is_ok());
//! // The head ends in this chunk: refused before it is sent.
//! assert!(s.feed(b"-Token\"\r\n\r\nevil\r\n--XyZ--\r\n").is_err());
//! ```

use crate::canonical::{self, ACCESS_TOKEN};
use memchr::memmem;

/// The longest part head read: browsers and SDKs send a few hundred bytes; busboy (Node) stops
/// at 16 KiB too. A longer one is refused rather than read past.
pub const MAX_HEAD: usize = 16 * 1024;

/// Why a multipart body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A part is named like a credential.
    #[error("a multipart part is named like a credential (access_token): the gateway attaches the token itself")]
    Credential,
    /// A part head did not end within [`MAX_HEAD`] bytes.
    #[error("a multipart part head is longer than {MAX_HEAD} bytes")]
    HeadTooLong,
}

impl crate::body::BodyCheck for Scanner {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), crate::body::BoxError> {
        Scanner::feed(self, chunk).map_err(Into::into)
    }
    fn finish(&mut self) -> Result<(), crate::body::BoxError> {
        Scanner::finish(self).map_err(Into::into)
    }
}

/// Looks for parts named like a credential in a multipart body, fed chunk by chunk.
#[derive(Debug)]
pub struct Scanner {
    /// `--BOUNDARY`, and `--"BOUNDARY` for parsers that keep a quoted boundary's quotes.
    delimiters: [Vec<u8>; 2],
    /// Bytes not yet settled: a part head being read, or the tail a delimiter may start in.
    held: Vec<u8>,
    /// Whether `held` starts inside a part head (just after a delimiter).
    in_head: bool,
    /// How much of that head was already searched for its end (so that a head arriving a byte at
    /// a time costs linear time, not quadratic).
    searched: usize,
}

impl Scanner {
    /// A scanner for parts delimited by `boundary` (the `boundary` parameter's value, unquoted).
    pub fn new(boundary: &[u8]) -> Self {
        let plain = [b"--", boundary].concat();
        let quoted = [b"--\"", boundary].concat();
        Scanner {
            delimiters: [plain, quoted],
            held: Vec::new(),
            in_head: false,
            searched: 0,
        }
    }

    /// The next piece of the body.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Refused> {
        self.held.extend_from_slice(chunk);
        self.scan(false)
    }

    /// The end of the body: a part head cut short is looked at as it is.
    pub fn finish(&mut self) -> Result<(), Refused> {
        self.scan(true)
    }

    fn scan(&mut self, end: bool) -> Result<(), Refused> {
        let mut at = 0;
        loop {
            let rest = &self.held[at..];
            if self.in_head {
                let (head, len) = match head_len(rest, self.searched) {
                    Some(n) => (&rest[..n], n),
                    None if end => (rest, rest.len()),
                    // A close delimiter (`--BOUNDARY--`) and the epilogue after it: no head to end.
                    None if rest.len() > MAX_HEAD && rest.starts_with(b"--") => (&rest[..MAX_HEAD], MAX_HEAD),
                    None if rest.len() > MAX_HEAD => return Err(Refused::HeadTooLong),
                    None => {
                        self.searched = rest.len();
                        break;
                    }
                };
                if names_a_credential(head) {
                    return Err(Refused::Credential);
                }
                at += len;
                self.in_head = false;
                self.searched = 0;
            } else {
                let found = self
                    .delimiters
                    .iter()
                    .filter_map(|d| memmem::find(rest, d).map(|i| i + d.len()))
                    .min();
                match found {
                    Some(past) => {
                        at += past;
                        self.in_head = true;
                    }
                    None => {
                        // Keep what a delimiter could start in.
                        let longest = self.delimiters.iter().map(Vec::len).max().unwrap_or(0);
                        at = at.max(self.held.len().saturating_sub(longest - 1));
                        break;
                    }
                }
            }
        }
        self.held.drain(..at.min(self.held.len()));
        Ok(())
    }
}

/// The length of a part head up to and including its blank line (`\n\r\n` or `\n\n`); the
/// first `searched` bytes are known to hold none.
fn head_len(b: &[u8], searched: usize) -> Option<usize> {
    let from = searched.saturating_sub(2);
    let crlf = memmem::find(&b[from..], b"\n\r\n").map(|i| from + i + 3);
    let lf = memmem::find(&b[from..], b"\n\n").map(|i| from + i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether any `name` parameter in a part head names a credential.
fn names_a_credential(head: &[u8]) -> bool {
    let lower = head.to_ascii_lowercase();
    // RFC 2231 continuations (`name*0="access"; name*1="_token"`), joined in order.
    let mut sections: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut from = 0;
    while let Some(p) = memmem::find(&lower[from..], b"name") {
        let start = from + p;
        from = start + 4;
        // `name`, not `filename` or `x-name`.
        if start > 0 && !matches!(lower[start - 1], b';' | b' ' | b'\t' | b'\r' | b'\n' | b':') {
            continue;
        }
        let mut i = from;
        let extended = lower.get(i) == Some(&b'*');
        let mut section = None;
        if extended {
            i += 1;
            let digits = lower[i..].iter().take_while(|b| b.is_ascii_digit()).count();
            section = std::str::from_utf8(&lower[i..i + digits])
                .ok()
                .and_then(|d| d.parse().ok());
            i += digits;
            if lower.get(i) == Some(&b'*') {
                i += 1;
            }
        }
        i += lower[i..].iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
        if lower.get(i) != Some(&b'=') {
            continue;
        }
        i += 1;
        i += lower[i..].iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
        let rest = &head[i..];
        // A quoted value up to its closing quote; and, for parsers that do not unquote, the
        // value up to `;` or the line's end.
        let unquoted = rest
            .iter()
            .position(|&b| matches!(b, b';' | b'\r' | b'\n'))
            .unwrap_or(rest.len());
        let mut values = vec![&rest[..unquoted]];
        if rest.first() == Some(&b'"') {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' && rest[j] != b'\n' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            values.push(&rest[1..j.min(rest.len())]);
        }
        for v in values {
            let v = if extended { without_charset(v) } else { v };
            if canonical::field_is(v, ACCESS_TOKEN)
                || encoded_words(v).is_some_and(|d| canonical::field_is(&d, ACCESS_TOKEN))
            {
                return true;
            }
        }
        if let Some(n) = section {
            sections.push((n, without_charset(&rest[..unquoted]).to_vec()));
        }
    }
    sections.sort_by_key(|(n, _)| *n);
    let joined: Vec<u8> = sections.into_iter().flat_map(|(_, v)| v).collect();
    !joined.is_empty() && canonical::field_is(&joined, ACCESS_TOKEN)
}

/// A value with its RFC 2047 encoded-words (`=?UTF-8?B?YWNjZXNzX3Rva2Vu?=`,
/// `=?UTF-8?Q?access=5Ftoken?=`) decoded, as commons-fileupload (Spring, Tomcat) decodes every
/// part parameter; `None` when it has none. The charset is not looked at: a credential's name is
/// ASCII in any of them.
fn encoded_words(v: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut rest = v;
    let mut any = false;
    while let Some(start) = memmem::find(rest, b"=?") {
        let word = &rest[start + 2..];
        let mut fields = word.splitn(3, |&b| b == b'?');
        let (Some(_charset), Some(encoding), Some(tail)) = (fields.next(), fields.next(), fields.next()) else {
            break;
        };
        let Some(end) = memmem::find(tail, b"?=") else { break };
        let text = &tail[..end];
        let decoded = match encoding {
            b"B" | b"b" => base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
                .ok()?,
            b"Q" | b"q" => {
                let spaced: Vec<u8> = text.iter().map(|&b| if b == b'_' { b' ' } else { b }).collect();
                quoted_printable(&spaced)
            }
            _ => return None,
        };
        out.extend_from_slice(&rest[..start]);
        out.extend_from_slice(&decoded);
        any = true;
        rest = &tail[end + 2..];
    }
    out.extend_from_slice(rest);
    any.then_some(out)
}

/// `=XX` escapes decoded (RFC 2047's Q encoding, after `_` is read as a space).
fn quoted_printable(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(v) if b[i] == b'=' => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// An extended value without its `charset'language'` prefix (`UTF-8''access%5Ftoken`).
fn without_charset(v: &[u8]) -> &[u8] {
    let mut quotes = v.iter().enumerate().filter(|(_, &b)| b == b'\'').map(|(i, _)| i);
    match (quotes.next(), quotes.next()) {
        (Some(_), Some(second)) => &v[second + 1..],
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(disposition: &str, value: &str) -> String {
        format!("--b0\r\nContent-Disposition: form-data; {disposition}\r\nContent-Type: text/plain\r\n\r\n{value}\r\n")
    }

    /// The scanner's verdict on `body` fed whole, and fed one byte at a time.
    fn verdicts(body: &[u8]) -> [Result<(), Refused>; 2] {
        let mut whole = Scanner::new(b"b0");
        let whole = whole.feed(body).and_then(|()| whole.finish());
        let mut bytes = Scanner::new(b"b0");
        let bytes = body
            .iter()
            .try_for_each(|b| bytes.feed(&[*b]))
            .and_then(|()| bytes.finish());
        [whole, bytes]
    }

    #[test]
    fn a_part_named_like_a_credential_is_found_however_the_body_is_cut() {
        for disposition in [
            r#"name="access_token""#,
            "name=access_token",
            r#"NAME = "Access-Token""#,
            r#"name="accessToken"; filename="x""#,
            r#"filename="x";name="access[token""#,
            r#"name="access_token[]""#,
            r#"name="access\_token""#,
            r#"name*=UTF-8''access%5Ftoken"#,
            r#"name*0="access"; name*1="_token""#,
            r#"name="=?UTF-8?B?YWNjZXNzX3Rva2Vu?=""#,
            r#"name="=?utf-8?q?access=5Ftoken?=""#,
            r#"name="=?UTF-8?Q?access?= =?UTF-8?Q?_token?=""#,
            "name=\"a\";\r\n name=\"access_token\"",
        ] {
            let body = [part(r#"name="a""#, "1"), part(disposition, "evil"), "--b0--\r\n".into()].concat();
            assert_eq!(
                verdicts(body.as_bytes()),
                [Err(Refused::Credential), Err(Refused::Credential)],
                "{disposition}"
            );
        }
        // Bare LF line ends, a delimiter not at a line start, a quoted boundary kept quoted.
        for body in [
            "--b0\nContent-Disposition: form-data; name=access_token\n\nevil\n--b0--\n",
            "x--b0\r\nContent-Disposition: form-data; name=access_token\r\n\r\nevil",
            "--\"b0\"\r\nContent-Disposition: form-data; name=access_token\r\n\r\nevil",
            "--b0\r\nContent-Disposition: form-data; name=access_token",
        ] {
            assert_eq!(verdicts(body.as_bytes())[1], Err(Refused::Credential), "{body:?}");
        }
    }

    #[test]
    fn other_parts_pass() {
        let body = [
            part(r#"name="open_id""#, "u1"),
            part(
                r#"name="file"; filename="access_token""#,
                &"access_token=x\r\n".repeat(100),
            ),
            part(r#"name="access_tokens""#, "1"),
            part(r#"name="a"; x-name="access_token""#, "1"),
            "--b0--\r\n".into(),
            "epilogue ".repeat(5000),
        ]
        .concat();
        assert_eq!(verdicts(body.as_bytes()), [Ok(()), Ok(())]);
    }

    #[test]
    fn a_head_that_does_not_end_is_refused() {
        let body = format!(
            "--b0\r\nContent-Disposition: form-data; name=\"a\"\r\nX: {}",
            "y".repeat(MAX_HEAD)
        );
        assert_eq!(
            verdicts(body.as_bytes()),
            [Err(Refused::HeadTooLong), Err(Refused::HeadTooLong)]
        );
    }
}
