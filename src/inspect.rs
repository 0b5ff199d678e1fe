//! Reading the platform's answers: which error code a body carries, in any of
//! the envelopes (A–F of the platform doc, and developer.toutiao.com's G
//! `{"err":{"err_code","err_msg"}}` and H `{"err_no","err_tips"}`), and what the gateway should do.
//!
//! Parsing is typed and skips everything but the code fields, so a 64 KiB
//! video list costs one pass and no allocations for its content.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;

/// Codes that mean "the access token is dead: refresh and retry once".
/// 11016 is developer.toutiao.com's "access_token is wrong or expired" (mini-app server APIs).
pub const DEFAULT_REFRESH_CODES: &[i64] = &[10008, 2190008, 2190002, 28001008, 28001003, 40004, 11016];
/// Codes that mean "the user (or enterprise) must authorize again".
pub const DEFAULT_REAUTHORIZE_CODES: &[i64] = &[10010];
/// The renewal limit on `/oauth/renew_refresh_token/` (the same number means
/// "rate limited" on the client_token endpoint).
pub const RENEWAL_LIMIT: i64 = 10020;

/// The non-zero error codes a body carries, in envelope order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Codes(Vec<i64>);

impl Codes {
    /// Whether the body said "success".
    pub fn is_ok(&self) -> bool {
        self.0.is_empty()
    }
    /// The first code.
    pub fn first(&self) -> Option<i64> {
        self.0.first().copied()
    }
    /// All codes.
    pub fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        self.0.iter().copied()
    }
}

/// A number that may arrive as a string: `0`, `"0"`, `0.0`; anything else is `None`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lenient(pub Option<i64>);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Lenient;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or numeric string")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Lenient, E> {
                Ok(Lenient(Some(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Lenient, E> {
                Ok(Lenient(i64::try_from(v).ok()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Lenient, E> {
                Ok(Lenient((v.fract() == 0.0).then_some(v as i64)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Lenient, E> {
                Ok(Lenient(v.trim().parse().ok()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E>(self) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Lenient, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Lenient, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `data` / `extra` / `err`: an object whose code fields we read, or anything else.
#[derive(Default)]
struct Part {
    error_code: Option<i64>,
    sub_error_code: Option<i64>,
    err_code: Option<i64>,
}

impl<'de> Deserialize<'de> for Part {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Part;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Part, A::Error> {
                let mut p = Part::default();
                while let Some(k) = a.next_key::<std::borrow::Cow<'de, str>>()? {
                    match &*k {
                        "error_code" => p.error_code = a.next_value::<Lenient>()?.0,
                        "sub_error_code" => p.sub_error_code = a.next_value::<Lenient>()?.0,
                        "err_code" => p.err_code = a.next_value::<Lenient>()?.0,
                        _ => {
                            a.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(p)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Part, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Part::default())
            }
            fn visit_unit<E>(self) -> Result<Part, E> {
                Ok(Part::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Part, E> {
                Ok(Part::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Part, E> {
                Ok(Part::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Part, E> {
                Ok(Part::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Part, E> {
                Ok(Part::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Part, E> {
                Ok(Part::default())
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Envelope {
    data: Part,
    extra: Part,
    err: Part,
    error_code: Lenient,
    err_no: Lenient,
    errcode: Lenient,
}

/// The error codes in a JSON body; `None` when it is not a JSON object.
pub fn codes(body: &[u8]) -> Option<Codes> {
    // serde would also read a struct from an array; only objects are envelopes.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let env: Envelope = serde_json::from_slice(body).ok()?;
    let all = [
        env.data.error_code,
        env.extra.error_code,
        env.extra.sub_error_code,
        env.err.err_code,
        env.error_code.0,
        env.err_no.0,
        env.errcode.0,
    ];
    let mut out = Vec::new();
    for c in all.into_iter().flatten() {
        if c != 0 && !out.contains(&c) {
            out.push(c);
        }
    }
    Some(Codes(out))
}

/// Where a body came from: the same number means different things on
/// different endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// A proxied API call.
    Api,
    /// A token endpoint: client_token, code exchange, business_token, refreshes.
    TokenEndpoint,
    /// `/oauth/renew_refresh_token/`.
    Renew,
}

/// What the gateway should do with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Success: pass it on.
    Ok,
    /// The token was rejected: refresh it, replay the call once.
    Refresh(i64),
    /// The user must authorize again.
    Reauthorize(i64),
    /// The refresh_token may not be renewed again.
    ReauthorizeWhenRenewing(i64),
    /// A token endpoint refused: configuration or rate problem.
    TokenEndpointError(i64),
    /// An error a new token cannot fix: the caller sees it unchanged.
    PassThrough(i64),
}

/// The code tables, defaults from the platform doc or `[token_errors]`.
#[derive(Debug, Clone)]
pub struct CodeTable {
    refresh: HashSet<i64>,
    reauthorize: HashSet<i64>,
}

impl Default for CodeTable {
    fn default() -> Self {
        CodeTable::new(None, None)
    }
}

impl CodeTable {
    /// Tables replacing the defaults where given.
    pub fn new(refresh: Option<&[i64]>, reauthorize: Option<&[i64]>) -> Self {
        CodeTable {
            refresh: refresh.unwrap_or(DEFAULT_REFRESH_CODES).iter().copied().collect(),
            reauthorize: reauthorize
                .unwrap_or(DEFAULT_REAUTHORIZE_CODES)
                .iter()
                .copied()
                .collect(),
        }
    }

    /// Whether a code triggers refresh-and-retry.
    pub fn is_refresh(&self, code: i64) -> bool {
        self.refresh.contains(&code)
    }

    /// The verdict on a set of codes. On API answers a refresh code wins over
    /// the rest (a sub-code may name the token while the main code is generic).
    pub fn verdict(&self, codes: &Codes, ctx: Context) -> Verdict {
        let Some(first) = codes.first() else {
            return Verdict::Ok;
        };
        let find = |set: &HashSet<i64>| codes.iter().find(|c| set.contains(c));
        match ctx {
            Context::Api => {
                if let Some(c) = find(&self.refresh) {
                    Verdict::Refresh(c)
                } else if let Some(c) = find(&self.reauthorize) {
                    Verdict::Reauthorize(c)
                } else {
                    Verdict::PassThrough(first)
                }
            }
            Context::Renew if codes.iter().any(|c| c == RENEWAL_LIMIT) => {
                Verdict::ReauthorizeWhenRenewing(RENEWAL_LIMIT)
            }
            Context::Renew | Context::TokenEndpoint => match find(&self.reauthorize) {
                Some(c) => Verdict::Reauthorize(c),
                None => Verdict::TokenEndpointError(first),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository's sample bodies (`fixtures/responses`).
    const OWN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/responses");
    /// The workplace's shared samples, read as extra cases when the checkout sits beside them.
    const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/responses");

    /// Every sample body of `fixtures/responses` (envelopes A–H), with its verdict; and those of
    /// `../shared/fixtures/responses` when present.
    #[test]
    fn fixtures_reach_their_verdicts() {
        let own = std::path::Path::new(OWN);
        let checked = check_fixtures(own);
        let files = std::fs::read_dir(own)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count();
        assert_eq!(
            checked, files,
            "a sample without a verdict in fixtures/responses/README.md"
        );
        assert!(checked >= 31, "only {checked} fixtures read");
        let shared = std::path::Path::new(SHARED);
        if shared.join("README.md").is_file() {
            check_fixtures(shared);
        }
    }

    /// Reads a fixture directory's README table (`| file | verdict |`) and checks each body's
    /// verdict; returns how many it checked.
    fn check_fixtures(dir: &std::path::Path) -> usize {
        let readme = std::fs::read_to_string(dir.join("README.md"))
            .unwrap_or_else(|e| panic!("fixtures missing at {}: {e}", dir.display()));
        let table = CodeTable::default();
        let mut checked = 0;
        for line in readme.lines() {
            let cols: Vec<&str> = line.split('|').map(|c| c.trim().trim_matches('`')).collect();
            if cols.len() < 4 || !cols[1].ends_with(".json") {
                continue;
            }
            let (file, want) = (cols[1], cols[2]);
            let body = std::fs::read(dir.join(file)).unwrap();
            let codes = codes(&body).unwrap_or_else(|| panic!("{file}: not parsed"));
            let ctx = if file.contains("renew") {
                Context::Renew
            } else if file.contains("client-token")
                || file.contains("miniapp")
                || file.contains("refresh-expired")
                || file.starts_with("E-")
                || file.starts_with("A-access-token")
            {
                Context::TokenEndpoint
            } else {
                Context::Api
            };
            let got = match table.verdict(&codes, ctx) {
                Verdict::Ok => "ok",
                Verdict::Refresh(_) => "refresh",
                Verdict::Reauthorize(_) => "reauthorize",
                Verdict::ReauthorizeWhenRenewing(_) => "reauthorize_when_renewing",
                Verdict::TokenEndpointError(_) => "token_endpoint_error",
                Verdict::PassThrough(_) => "pass_through",
            };
            assert_eq!(got, want, "{file}");
            checked += 1;
        }
        checked
    }

    /// Every fixture cut at every byte, and with every byte replaced: reading
    /// never panics, and whatever parses gives a verdict (fuzz seeds, run as a test).
    #[test]
    fn mangled_fixtures_never_panic() {
        let entries = std::fs::read_dir(OWN).expect("this repository's fixtures");
        // The shared samples, when present, are extra seeds.
        let shared = std::fs::read_dir(SHARED).into_iter().flatten();
        let table = CodeTable::default();
        let mut cases = 0;
        for e in entries
            .chain(shared)
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        {
            let body = std::fs::read(e.path()).unwrap();
            for i in 0..body.len() {
                let mut variants = vec![body[..i].to_vec()];
                for b in [b'"', b'{', b'}', b'0', b'-', b'9', 0xff] {
                    let mut m = body.clone();
                    m[i] = b;
                    variants.push(m);
                }
                for v in variants {
                    if let Some(c) = codes(&v) {
                        for ctx in [Context::Api, Context::TokenEndpoint, Context::Renew] {
                            let _ = table.verdict(&c, ctx);
                        }
                    }
                    cases += 1;
                }
            }
        }
        assert!(cases > 10_000, "only {cases} cases");
    }

    #[test]
    fn lenient_and_odd_shapes() {
        assert!(codes(br#"{"data":{"error_code":"0"},"extra":{"error_code":"0"}}"#)
            .unwrap()
            .is_ok());
        assert_eq!(
            codes(br#"{"err_no":"28001008","data":null}"#).unwrap().first(),
            Some(28001008)
        );
        assert_eq!(
            codes(br#"{"data":[1,2],"errcode":40004}"#).unwrap().first(),
            Some(40004)
        );
        assert_eq!(
            codes(br#"{"data":"x","error_code":10010.0}"#).unwrap().first(),
            Some(10010)
        );
        assert!(codes(b"not json").is_none());
        assert!(codes(b"[1,2]").is_none());
    }

    #[test]
    fn configured_codes_replace_defaults() {
        let t = CodeTable::new(Some(&[123]), None);
        let c = codes(br#"{"err_no":123}"#).unwrap();
        assert_eq!(t.verdict(&c, Context::Api), Verdict::Refresh(123));
        let c = codes(br#"{"err_no":28001008}"#).unwrap();
        assert_eq!(t.verdict(&c, Context::Api), Verdict::PassThrough(28001008));
    }
}
