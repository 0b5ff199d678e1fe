//! Properties of the parsers at the edge, checked on generated inputs (proptest, stable Rust).
//!
//! - config: a file damaged anyhow (bytes inserted, deleted, replaced, cut) never panics the
//!   loader, an undamaged one loads, and every injected problem is reported under its key;
//! - paths: a path the gateway accepts routes the same for every normalising hop after it, so the
//!   route (and permission) the gateway checked is the one the upstream serves; plain paths (long
//!   ones, mixed case) are accepted, and paths with a piece some hop reads as a separator or
//!   dot-segment, or with a percent-encoded letter, digit or `-_~`, are refused;
//! - query and headers: no caller credential survives in any spelling, exactly one token attached;
//!   a name any of PHP, Rack, Spring, nginx (or, for headers, CGI and Node) reads as the
//!   credential is stripped from a query, form body, cookie, multipart body or JSON body, and
//!   plain names are kept byte for byte;
//! - envelopes: reading never panics, and a fixture's verdict survives reformatting.
//!
//! 2,000 cases each by default; `PROPTEST_CASES=1000000 cargo test --release --test properties`
//! is the long run (figures in docs/reliability.md).

use douyin_gateway::config::Config;
use douyin_gateway::inspect::{self, CodeTable, Context};
use douyin_gateway::proxy::canonical::path_problem;
use douyin_gateway::proxy::headers::{rewrite_query, strip_request};
use douyin_gateway::route::PathPattern;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// 2,000 cases unless `PROPTEST_CASES` says (`.ci/run` pins it). A failure's seed is saved in
/// `proptest-regressions/properties.txt` (commit it) and tried first on every later run.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(2000);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/properties.txt"
        )))),
        ..ProptestConfig::default()
    }
}

// ---------- config ----------

/// Problems a config can be given, each independent of the others: (where, text, key reported).
const PROBLEMS: &[(&str, &str, &str)] = &[
    ("server", "request_timeout_ms = 0", "server.request_timeout_ms"),
    ("server", "header_read_timeout_ms = 0", "server.header_read_timeout_ms"),
    ("server", "idle_timeout_ms = 0", "server.idle_timeout_ms"),
    ("server", "max_in_flight = 0", "server.max_in_flight"),
    ("server", "max_connections = 0", "server.max_connections"),
    ("server", "worker_threads = 0", "server.worker_threads"),
    ("server", "max_header_bytes = 0", "server.max_header_bytes"),
    ("route", "path = \"nostart\"", "routes[3].path"),
    ("route2", "app = \"nope\"", "routes[4].app"),
    ("caller", "routes = [\"missing\"]", "callers[1].routes"),
];

fn config_with(problems: &[bool]) -> String {
    let pick = |what: &str| -> String {
        PROBLEMS
            .iter()
            .zip(problems)
            .filter(|((w, _, _), on)| *w == what && **on)
            .map(|((_, t, _), _)| format!("{t}\n"))
            .collect()
    };
    let route = pick("route");
    let route_path = if route.is_empty() { "path = \"/extra/\"\n" } else { "" };
    let caller = pick("caller");
    let caller_routes = if caller.is_empty() { "routes = [\"*\"]\n" } else { "" };
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{server}
[upstream]
base_url = "http://127.0.0.1:1"
[store]
kind = "memory"
[[apps]]
name = "main"
client_key = "k"
client_secret_env = "PATH"
[[callers]]
name = "a"
api_key_sha256 = "{hash}"
[[callers]]
name = "b"
api_key_sha256 = "{hash}"
{caller}{caller_routes}
[[routes]]
name = "r0"
path = "/js/getticket/"
token = "client"
[[routes]]
name = "r1"
path = "/a/"
token = "none"
[[routes]]
name = "r2"
path = "/b/*"
token = "user"
[[routes]]
name = "r3"
token = "client"
{route}{route_path}
[[routes]]
name = "r4"
path = "/c/"
token = "client"
{route2}
"#,
        server = pick("server"),
        route2 = pick("route2"),
        hash = "0".repeat(64),
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_reports_every_injected_problem(problems in proptest::collection::vec(any::<bool>(), PROBLEMS.len())) {
        let text = config_with(&problems);
        let expected: Vec<&str> = PROBLEMS.iter().zip(&problems).filter(|(_, on)| **on).map(|((_, _, k), _)| *k).collect();
        match Config::load_str(&text, "t") {
            Ok(_) => prop_assert!(expected.is_empty(), "{expected:?} not reported for:\n{text}"),
            Err(e) => {
                let errors: Vec<&str> = e.problems.iter().filter(|p| p.severity == douyin_gateway::config::Severity::Error).map(|p| p.key.as_str()).collect();
                for k in &expected {
                    prop_assert!(errors.contains(k), "{k} not reported: {errors:?}\n{text}");
                }
                prop_assert_eq!(errors.len(), expected.len(), "{:?}\n{}", errors, text);
            }
        }
    }

    #[test]
    fn a_damaged_config_file_never_panics_and_an_undamaged_one_loads(edits in proptest::collection::vec(edit(), 0..4)) {
        let base = config_with(&[false; 10]).into_bytes();
        let mut bytes = base.clone();
        for e in &edits {
            e.apply(&mut bytes);
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, &bytes).unwrap();
        match Config::load(file.path()) {
            Ok(_) => {}
            Err(e) => {
                prop_assert!(bytes != base, "the undamaged config was refused: {}", e);
                prop_assert!(!e.problems.is_empty());
                for p in &e.problems {
                    prop_assert!(!p.message.trim().is_empty(), "a problem without a message: {:?}", p);
                }
            }
        }
    }
}

/// One change to a config file's bytes; positions are taken modulo the length.
#[derive(Clone, Debug)]
enum Edit {
    /// Bytes inserted, any bytes (not UTF-8, NUL, control characters included).
    Insert(usize, Vec<u8>),
    /// A run of bytes deleted.
    Delete(usize, usize),
    /// One byte replaced by any byte.
    Replace(usize, u8),
    /// Everything from here on cut.
    Truncate(usize),
}

impl Edit {
    fn apply(&self, b: &mut Vec<u8>) {
        let at = |i: usize| if b.is_empty() { 0 } else { i % (b.len() + 1) };
        match self {
            Edit::Insert(i, more) => {
                let i = at(*i);
                b.splice(i..i, more.iter().copied());
            }
            Edit::Delete(i, n) => {
                let i = at(*i);
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Edit::Replace(i, v) => {
                if !b.is_empty() {
                    let i = *i % b.len();
                    b[i] = *v;
                }
            }
            Edit::Truncate(i) => {
                let i = at(*i);
                b.truncate(i);
            }
        }
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 0..12)).prop_map(|(i, v)| Edit::Insert(i, v)),
        (
            any::<usize>(),
            proptest::sample::select(vec![
                b"\"".to_vec(),
                b"[".to_vec(),
                b"]\n".to_vec(),
                b"=".to_vec(),
                b"\n[[routes]]\n".to_vec(),
                b"\xef\xbb\xbf".to_vec()
            ])
        )
            .prop_map(|(i, v)| Edit::Insert(i, v)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Edit::Replace(i, v)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

// ---------- paths ----------

const SEGMENTS: &[&str] = &[
    "a",
    "b",
    "api",
    "v1",
    ".",
    "..",
    "%2e",
    "%2E",
    ".%2e",
    "%2f",
    "%2F",
    "%5c",
    "\\",
    "",
    "x%20y",
    "%41",
    "%7e",
    "~",
    ";",
    "..;",
    "a;b",
    "%252e",
    "%25",
    "%e4%bd%a0",
    "%00",
    "%zz",
    "%",
    "..%3b",
    "%3B",
    "x%3bx",
    "%c0%ae%c0%ae",
    "%e0%80%ae",
    "%ef%bc%8e%ef%bc%8e",
    "%e2%80%a5",
    "..%20",
    "%20..",
    "...",
    "x%ef%bc%8f",
    "%ff",
    "\u{e9}",
];
const PLAIN: &[&str] = &["a", "b", "api", "v1"];

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    for (i, s) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match *s {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

fn decode(s: &str, only_unreserved: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                let unreserved = v.is_ascii_alphanumeric() || b"-._~".contains(&v);
                if !only_unreserved || unreserved {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What hops after the gateway might make of a path.
/// A hop's reading of a path.
type Normaliser = fn(&str) -> String;

fn normalisers() -> Vec<(&'static str, Normaliser)> {
    vec![
        ("rfc3986 dot-segments", |p| remove_dot_segments(p)),
        ("unreserved decoded", |p| remove_dot_segments(&decode(p, true))),
        ("fully decoded, \\ as /, // merged, ;params dropped", |p| {
            let d = decode(p, false).replace('\\', "/");
            let d: String = d
                .split('/')
                .map(|s| s.split(';').next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("/");
            let mut merged = String::new();
            for c in d.chars() {
                if !(c == '/' && merged.ends_with('/')) {
                    merged.push(c);
                }
            }
            remove_dot_segments(&merged)
        }),
        ("decoded twice", |p| {
            remove_dot_segments(&decode(&decode(p, false), false))
        }),
        (
            "lenient: overlong UTF-8, NFKC, ;params dropped, segments trimmed, '...' as '..'",
            lenient_server,
        ),
    ]
}

/// Every escape decoded, as bytes.
fn decode_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(v) if b[i] == b'%' => {
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

/// UTF-8 read as old decoders did: overlong forms accepted (`C0 AE` is `.`).
fn lenient_utf8(b: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as u32;
        let cont = |k: usize| b.get(i + k).map_or(0, |x| (*x & 0x3f) as u32);
        let (cp, n) = if c < 0x80 {
            (c, 1)
        } else if c & 0xe0 == 0xc0 {
            ((c & 0x1f) << 6 | cont(1), 2)
        } else if c & 0xf0 == 0xe0 {
            ((c & 0x0f) << 12 | cont(1) << 6 | cont(2), 3)
        } else {
            (0xfffd, 1)
        };
        out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
        i += n;
    }
    out
}

/// A server that decodes leniently, applies NFKC, drops path parameters, trims each segment and
/// reads a run of three or more dots as `..` (as some file-system-backed servers do).
fn lenient_server(p: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let d: String = lenient_utf8(&decode_bytes(p)).nfkc().collect();
    let d = d.replace('\\', "/");
    let segs: Vec<String> = d
        .split('/')
        .map(|s| {
            let s = s.split(';').next().unwrap_or("").trim();
            if s.len() >= 3 && s.chars().all(|c| c == '.') {
                "..".to_string()
            } else {
                s.to_string()
            }
        })
        .collect();
    let mut merged = String::new();
    for c in segs.join("/").chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    remove_dot_segments(&merged)
}

fn first_match(routes: &[PathPattern], path: &str) -> Option<usize> {
    routes.iter().position(|r| r.matches(path))
}

fn route_strategy() -> impl Strategy<Value = PathPattern> {
    (
        proptest::collection::vec(proptest::sample::select(PLAIN), 0..3),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(segs, prefix, slash)| {
            let mut p = format!("/{}", segs.join("/"));
            if slash && !p.ends_with('/') {
                p.push('/');
            }
            if prefix {
                p.push('*');
            }
            PathPattern::parse(&p).unwrap()
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn an_accepted_path_routes_the_same_after_any_normaliser(
        segs in path_segments(),
        trailing in any::<bool>(),
        routes in proptest::collection::vec(route_strategy(), 1..5),
    ) {
        let mut path = String::new();
        for (seg, _) in &segs {
            path.push('/');
            path.push_str(seg);
        }
        if trailing {
            path.push('/');
        }
        let accepted = path_problem(&path).is_none();
        match segs.iter().map(|(_, kind)| *kind).max().unwrap() {
            // Every piece is read as itself by every hop: the path is accepted.
            Kind::Plain => prop_assert!(accepted, "{:?} refused: {:?}", path, path_problem(&path)),
            // A hop that decodes unreserved characters reads another path, which another route
            // may match: refused.
            Kind::EncodedUnreserved => prop_assert!(!accepted, "{:?} accepted", path),
            Kind::Other => {}
        }
        if accepted {
            let here = first_match(&routes, &path);
            for (name, n) in normalisers() {
                let there = n(&path);
                prop_assert_eq!(first_match(&routes, &there), here, "{} reads {:?} as {:?}", name, path, there);
            }
            prop_assert_eq!(remove_dot_segments(&path), path.clone());
        }
    }

    #[test]
    fn plain_paths_are_accepted(segs in proptest::collection::vec(plain_segment(), 0..6), trailing in any::<bool>()) {
        let mut path = format!("/{}", segs.join("/"));
        if trailing && !segs.is_empty() {
            path.push('/');
        }
        prop_assert_eq!(path_problem(&path), None, "{}", path);
    }

    #[test]
    fn a_path_with_a_piece_some_hop_reads_as_a_separator_or_dots_is_refused(
        before in proptest::collection::vec(plain_segment(), 0..3),
        hostile in hostile_segment(),
        after in proptest::collection::vec(plain_segment(), 0..3),
        trailing in any::<bool>(),
    ) {
        let mut segs = before;
        segs.push(hostile);
        segs.extend(after);
        let mut path = format!("/{}", segs.join("/"));
        if trailing {
            path.push('/');
        }
        prop_assert!(path_problem(&path).is_some(), "{:?} was accepted", path);
    }
}

/// What a generated path segment is, worst last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Read as itself by every hop.
    Plain,
    /// Something else from [`SEGMENTS`]: accepted or refused, it must route the same.
    Other,
    /// A character of the route alphabet (letters, digits, `-_~`) percent-encoded.
    EncodedUnreserved,
}

/// A segment the routes are made of ([`PLAIN`]), spelt as a caller may: each character kept, in
/// the other case, or (with `encoded`) percent-encoded with either case of hex digits.
fn route_alphabet_segment(encoded: bool) -> impl Strategy<Value = (String, Kind)> {
    let from = if encoded { 0u8 } else { 2 };
    (proptest::sample::select(PLAIN), proptest::collection::vec(from..10, 3)).prop_map(|(seg, picks)| {
        let mut out = String::new();
        let mut kind = Kind::Plain;
        for (c, pick) in seg.chars().zip(picks.into_iter().cycle()) {
            match pick {
                0 => {
                    out.push_str(&format!("%{:02x}", c as u8));
                    kind = Kind::EncodedUnreserved;
                }
                1 => {
                    out.push_str(&format!("%{:02X}", c.to_ascii_uppercase() as u8));
                    kind = Kind::EncodedUnreserved;
                }
                2 | 3 => out.push(c.to_ascii_uppercase()),
                _ => out.push(c),
            }
        }
        (out, kind)
    })
}

/// The segments of a path: half the time only plain ones, up to 40 of them and some long (every
/// such path must be accepted); else up to 8 of any kind. Mostly the route alphabet, so that the
/// routes match.
fn path_segments() -> impl Strategy<Value = Vec<(String, Kind)>> {
    let plain = prop_oneof![
        8 => route_alphabet_segment(false),
        2 => plain_segment().prop_map(|s| (s, Kind::Plain)),
        1 => "[a-zA-Z0-9_~-]{60,200}".prop_map(|s| (s, Kind::Plain)),
    ];
    let any = prop_oneof![
        8 => route_alphabet_segment(true),
        2 => plain_segment().prop_map(|s| (s, Kind::Plain)),
        4 => proptest::sample::select(SEGMENTS).prop_map(|s| {
            let kind = if PLAIN.contains(&s) { Kind::Plain } else { Kind::Other };
            (s.to_string(), kind)
        }),
    ];
    prop_oneof![
        proptest::collection::vec(plain, 1..40),
        proptest::collection::vec(any, 1..8),
    ]
}

/// Segments any server reads as themselves: letters, digits, `-_~`, a dot inside, an encoded
/// space inside, an encoded CJK character.
fn plain_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_~-]{1,6}",
        "[a-z0-9]{1,4}\\.[a-z0-9]{1,4}",
        "\\.[a-z]{1,4}",
        "[a-z]{1,3}\\.\\.[a-z]{1,3}",
        "[a-z]{1,3}%20[a-z]{1,3}",
        Just("%E4%BD%A0".to_string()),
    ]
}

/// A dot as some hop reads it: plain, encoded, overlong UTF-8, or a character NFKC makes `.`.
const DOTS: &[&str] = &[
    ".",
    "%2e",
    "%2E",
    "%c0%ae",
    "%C0%AE",
    "%e0%80%ae",
    "%ef%bc%8e",
    "%EF%BC%8E",
    "%e2%80%a4",
    "\u{ff0e}",
];
/// What a lenient hop trims from a segment.
const PADS: &[&str] = &[
    "",
    "",
    "",
    "%20",
    " ",
    "%09",
    "%0b",
    "%c2%a0",
    "%e3%80%80",
    "\u{3000}",
    "\t",
];
/// A path parameter, which servers that strip them drop with what follows.
const PARAMS: &[&str] = &["", "", "", ";", ";x", "%3b", "%3B", "%3bx", "%ef%bc%9b"];
/// A separator as some hop reads it.
const SEPARATORS: &[&str] = &[
    "%2f",
    "%2F",
    "%5c",
    "%5C",
    "\\",
    "%ef%bc%8f",
    "%ef%bc%bc",
    "%c0%af",
    "%e0%80%af",
    "\u{ff0f}",
    ";",
    "%3b",
];
/// Bytes that are not UTF-8 once decoded, or not ASCII as they are.
const NOT_UTF8: &[&str] = &[
    "%ff",
    "%80",
    "%c0%af",
    "%e4%bd",
    "%ed%a0%80",
    "%f8%88%80%80%80",
    "\u{e9}",
    "\u{4f60}",
];

/// A segment some hop reads as a dot-segment, a separator, or cannot read at all, built by
/// mutating each piece of `.`, `..` or `...`, or of `a/b`.
fn hostile_segment() -> impl Strategy<Value = String> {
    let pick = |list: &'static [&'static str]| proptest::sample::select(list);
    let dots = (
        pick(PADS),
        proptest::collection::vec(pick(DOTS), 1..4),
        pick(PADS),
        pick(PARAMS),
    )
        .prop_map(|(a, dots, b, param)| format!("{a}{}{b}{param}", dots.concat()));
    let split = (pick(SEPARATORS), "[a-z]{1,3}", "[a-z]{1,3}").prop_map(|(sep, a, b)| format!("{a}{sep}{b}"));
    let bad = (pick(NOT_UTF8), "[a-z]{0,3}").prop_map(|(b, a)| format!("{a}{b}"));
    prop_oneof![dots, split, bad]
}

// ---------- query and headers ----------

const NAMES: &[&str] = &[
    "access_token",
    "ACCESS_TOKEN",
    "Access_Token",
    "access%5Ftoken",
    "access%5ftoken",
    "access-token",
    "Access.Token",
    "access_token[]",
    "access_token%5B%5D",
    "access_token[0]",
    "access_token%20",
    "%20access_token",
    "access_token+",
    "+access_token",
    "a",
    "b",
    "open_id",
    "access_tokens",
    "token",
    "xaccess_token",
    "",
];
const VALUES: &[&str] = &["1", "evil", "", "x%26y", "a=b", "%3B"];

fn query_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        (
            proptest::sample::select(NAMES),
            proptest::option::of(proptest::sample::select(VALUES)),
            proptest::sample::select(&["&", ";"][..]),
        ),
        0..8,
    )
    .prop_map(|pieces| {
        let mut q = String::new();
        for (i, (n, v, sep)) in pieces.into_iter().enumerate() {
            if i > 0 {
                q.push_str(sep);
            }
            q.push_str(n);
            if let Some(v) = v {
                q.push('=');
                q.push_str(v);
            }
        }
        q
    })
}

const TOKEN: &str = "clt.the-gateways+token/==";

/// Names a query must keep, byte for byte (near the credential, but no server reads them as it).
const KEPT_NAMES: &[&str] = &["a", "b", "open_id", "access_tokens", "token", "xaccess_token"];

/// The name of a query piece, as sent.
fn name_of(piece: &str) -> &str {
    piece.split('=').next().unwrap_or("")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_caller_credential_survives_and_exactly_one_token_is_attached(q in query_strategy(), inject in any::<bool>()) {
        let out = rewrite_query(Some(&q), inject.then_some(TOKEN));
        let out = out.as_deref().unwrap_or("");
        // What the servers' models read as the credential in the query sent.
        let credentials: Vec<Vec<u8>> = out
            .split(['&', ';'])
            .filter(|p| any_server_reads_credential(name_of(p)))
            .map(|p| www_decode(p.split_once('=').map_or("", |(_, v)| v)))
            .collect();
        if inject {
            prop_assert_eq!(credentials, vec![TOKEN.as_bytes().to_vec()], "{:?} became {:?}", q, out);
        } else {
            prop_assert!(credentials.is_empty(), "{:?} became {:?}", q, out);
        }
        // The names no server reads as the credential are kept, byte for byte, in order.
        let kept = |query: &str| -> Vec<String> {
            query.split(['&', ';']).filter(|p| KEPT_NAMES.contains(&name_of(p))).map(str::to_string).collect()
        };
        prop_assert_eq!(kept(&q), kept(out), "{:?} became {:?}", q, out);
    }

    #[test]
    fn no_caller_credential_header_survives(
        names in proptest::collection::vec(proptest::sample::select(&[
            "access-token", "access_token", "ACCESS_TOKEN", "Access-Token", "access_TOKEN", "x-gateway-key",
            "x_gateway_key", "X-Gateway_Key", "authorization", "content-type", "x-other", "access-tokens",
        ][..]), 0..8),
    ) {
        let mut h = HeaderMap::new();
        for n in &names {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_static("evil"));
        }
        strip_request(&mut h);
        h.insert(HeaderName::from_static("access-token"), HeaderValue::from_static("clt.ok"));
        // The oracle: a server reading `_` as `-`, in any case.
        let read = |n: &HeaderName| n.as_str().to_ascii_lowercase().replace('_', "-");
        let tokens: Vec<_> = h.iter().filter(|(n, _)| read(n) == "access-token").map(|(_, v)| v.clone()).collect();
        prop_assert_eq!(tokens, vec![HeaderValue::from_static("clt.ok")]);
        for (n, _) in h.iter() {
            prop_assert!(read(n) != "x-gateway-key" && read(n) != "authorization", "{} survived", n);
        }
    }
}

// ---------- credential names, against models of the servers that read them ----------

/// `+` as space, every valid escape decoded: how form decoders read a name.
fn www_decode(s: &str) -> Vec<u8> {
    decode_bytes(&s.replace('+', " "))
}

/// PHP's `parse_str` / `$_GET`: the name cut at a NUL, leading spaces dropped, ` ` and `.` as
/// `_`; `name[...]` is an array called `name`; an unmatched `[` is `_` too (PHP 8: and so are the
/// ` `, `.` and `[` after it).
fn php_reads(raw: &str) -> String {
    let b = www_decode(raw);
    let b = &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())];
    let name = String::from_utf8_lossy(b);
    let name = name.trim_start_matches(' ');
    let mangle = |s: &str, also: &[char]| -> String {
        s.chars()
            .map(|c| {
                if c == ' ' || c == '.' || also.contains(&c) {
                    '_'
                } else {
                    c
                }
            })
            .collect()
    };
    match name.find('[') {
        None => mangle(name, &[]),
        Some(i) if name[i + 1..].contains(']') => mangle(&name[..i], &[]),
        Some(i) => format!("{}_{}", mangle(&name[..i], &[]), mangle(&name[i + 1..], &['['])),
    }
}

/// Rack: `\A[\[\]]*([^\[\]]+)` of the decoded name (`a[]`, `a[x]`, `[a]` are all `a`).
fn rack_reads(raw: &str) -> String {
    let name = String::from_utf8_lossy(&www_decode(raw)).into_owned();
    name.trim_start_matches(['[', ']'])
        .split(['[', ']'])
        .next()
        .unwrap_or("")
        .to_string()
}

/// Spring: the decoded name exactly, or relaxed-bound to a field `accessToken` (an index
/// `[..]` naming an element of it).
fn spring_reads_credential(raw: &str) -> bool {
    let name = String::from_utf8_lossy(&www_decode(raw)).into_owned();
    let name = name.split('[').next().unwrap_or("");
    ["access_token", "accessToken", "access-token", "ACCESS_TOKEN"].contains(&name)
}

/// A framework that trims the decoded name as Java's `String.trim` does (every character up to
/// U+0020) and compares it exactly.
fn trimming_reads_credential(raw: &str) -> bool {
    let name = String::from_utf8_lossy(&www_decode(raw)).into_owned();
    name.trim_matches(|c: char| c <= ' ') == "access_token"
}

/// nginx's `$arg_access_token`: the raw name, not decoded, in any case.
fn nginx_reads_credential(raw: &str) -> bool {
    raw.eq_ignore_ascii_case("access_token")
}

fn any_server_reads_credential(raw: &str) -> bool {
    php_reads(raw) == "access_token"
        || rack_reads(raw) == "access_token"
        || spring_reads_credential(raw)
        || trimming_reads_credential(raw)
        || nginx_reads_credential(raw)
}

fn percent(c: char, upper: bool) -> String {
    let mut buf = [0; 4];
    c.encode_utf8(&mut buf)
        .bytes()
        .map(|b| {
            if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

/// `access_token` mutated character by character: case flips, percent-encoding of any character,
/// `_` swapped for another separator (or dropped: camelCase), whitespace and control characters
/// around, bracket suffixes. Each character is mostly left alone, so that the servers' models
/// read many of the names as the credential.
fn mutated_credential_name() -> impl Strategy<Value = String> {
    let per_char: Vec<BoxedStrategy<String>> = "access_token"
        .chars()
        .map(|c| {
            let changed: Vec<String> = if c == '_' {
                ["-", ".", "+", "%20", "%5f", "%5F", "%2e", "%2d", "", "[", "%5b"]
                    .map(String::from)
                    .to_vec()
            } else {
                vec![
                    c.to_ascii_uppercase().to_string(),
                    percent(c, false),
                    percent(c.to_ascii_uppercase(), true),
                ]
            };
            let inserted = prop_oneof![
                12 => Just(String::new()),
                1 => proptest::sample::select(&["%20", "%0b", "%09", "%e2%80%8b", "%00"][..]).prop_map(String::from),
            ];
            let char = prop_oneof![6 => Just(c.to_string()), 2 => proptest::sample::select(changed)];
            (inserted, char).prop_map(|(i, v)| format!("{i}{v}")).boxed()
        })
        .collect();
    let rarely = |list: &'static [&'static str]| prop_oneof![2 => Just(""), 1 => proptest::sample::select(list)];
    (
        rarely(&["%20", "+", "%0b", "%09", "[", "%5b", " ", "%20%20"]),
        per_char,
        rarely(&["%20", "+", "%0b", "%00", "%00junk", "%09", "%0a", "%0d"]),
        rarely(&["[]", "[0]", "[", "]", "[x]", "%5b%5d", "%5B0%5D", "[a][b]"]),
    )
        .prop_map(|(lead, chars, trail, suffix)| format!("{lead}{}{trail}{suffix}", chars.concat()))
}

/// Header names a server reads as the credential: nginx (`$http_access_token`, `_` read as `-`),
/// CGI (`HTTP_ACCESS_TOKEN`, every non-alphanumeric as `_`), Node and Spring (case-insensitive
/// `access-token`), and the common `x-access-token` convention of each.
fn any_server_reads_credential_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let nginx = lower.replace('-', "_");
    let cgi: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    ["access_token", "x_access_token"].contains(&nginx.as_str())
        || ["ACCESS_TOKEN", "X_ACCESS_TOKEN"].contains(&cgi.as_str())
        || ["access-token", "x-access-token"].contains(&lower.as_str())
}

fn mutated_credential_header() -> impl Strategy<Value = String> {
    let per_char: Vec<BoxedStrategy<String>> = "access-token"
        .chars()
        .map(|c| {
            let variants: Vec<String> = if c == '-' {
                ["-", "_", ".", "", "--"].map(String::from).to_vec()
            } else {
                vec![c.to_string(), c.to_ascii_uppercase().to_string()]
            };
            proptest::sample::select(variants).boxed()
        })
        .collect();
    (
        proptest::sample::select(&["", "", "x-", "X_", "x.", "X-"][..]),
        per_char,
    )
        .prop_map(|(prefix, chars)| format!("{prefix}{}", chars.concat()))
}

/// `name=value` put in each place a caller can put a field, beside a caller `access_token` and
/// a kept field, through the gateway's own functions; for each place, what of `name=value` is
/// sent on (`None`: nothing).
fn everywhere(name: &str, value: &str) -> Vec<(&'static str, Option<String>)> {
    use douyin_gateway::proxy::{attach::json_with_token, headers::without_credentials, multipart::Scanner};
    let field = format!("{name}={value}");
    let mut out = Vec::new();
    // The query: `;` and `&` both separate.
    let q = format!("access_token=x&{field};keep=1");
    let sent = rewrite_query(Some(&q), None)
        .map(|q| q.into_owned())
        .unwrap_or_default();
    out.push(("query", sent.strip_suffix(";keep=1").map(str::to_string)));
    // A form body.
    let body = format!("{field}&access_token=x&keep=1");
    let sent = without_credentials(body.as_bytes()).unwrap_or_else(|| body.clone().into_bytes());
    out.push((
        "form body",
        String::from_utf8(sent)
            .unwrap()
            .strip_suffix("&keep=1")
            .map(str::to_string),
    ));
    // A cookie.
    let mut h = HeaderMap::new();
    h.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&format!("{field}; access_token=x; keep=1")).unwrap(),
    );
    strip_request(&mut h);
    let sent = h
        .get(http::header::COOKIE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    out.push((
        "cookie",
        sent.strip_suffix("; keep=1")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    ));
    // A multipart part: refused, or passed whole.
    let body = format!("--b0\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n--b0--\r\n");
    let mut s = Scanner::new(b"b0");
    let passed = s.feed(body.as_bytes()).and_then(|()| s.finish()).is_ok();
    out.push(("multipart part", passed.then(|| field.clone())));
    // A JSON member on a json_body route (a name is a JSON string there, read as it is).
    let json = format!(
        "{{{}:{},\"keep\":1}}",
        serde_json::to_string(name).unwrap(),
        serde_json::to_string(value).unwrap()
    );
    let sent: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json_with_token(json.as_bytes(), TOKEN).unwrap()).unwrap();
    let caller = sent.get(name).and_then(|v| v.as_str()).filter(|v| *v != TOKEN);
    out.push(("JSON member", caller.map(|v| format!("{name}={v}"))));
    out
}

const HOP_BY_HOP_OR_HOST: &[&str] = &["host", "te", "trailer", "upgrade", "keepalive"];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_name_any_server_reads_as_the_credential_is_stripped_wherever_it_is_put(name in mutated_credential_name()) {
        if any_server_reads_credential(&name) {
            for (place, kept) in everywhere(&name, "evil") {
                prop_assert!(kept.is_none(), "{:?} kept in {}: {:?}", name, place, kept);
            }
        }
    }

    #[test]
    fn plain_names_are_kept_byte_for_byte_wherever_they_are_put(name in "[a-z0-9_]{1,10}", value in "[a-zA-Z0-9%._~-]{0,8}") {
        // Ten characters at most: never `access_token` in any spelling.
        for (place, kept) in everywhere(&name, &value) {
            prop_assert_eq!(kept, Some(format!("{name}={value}")), "{}", place);
        }
    }

    #[test]
    fn a_header_any_server_reads_as_the_credential_is_stripped(name in mutated_credential_header()) {
        let mut h = HeaderMap::new();
        h.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("evil"));
        h.insert(HeaderName::from_static("x-kept"), HeaderValue::from_static("1"));
        strip_request(&mut h);
        if any_server_reads_credential_header(&name) {
            prop_assert_eq!(h.len(), 1, "{:?} kept: {:?}", name, h);
        }
        prop_assert_eq!(h.get("x-kept"), Some(&HeaderValue::from_static("1")));
    }

    #[test]
    fn plain_headers_are_kept(name in "(x-)?[a-z]{1,7}") {
        prop_assume!(!HOP_BY_HOP_OR_HOST.contains(&name.as_str()));
        let mut h = HeaderMap::new();
        h.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("v"));
        strip_request(&mut h);
        prop_assert_eq!(h.len(), 1, "{:?} was removed", name);
    }
}

// ---------- envelopes ----------

const CODE_FIELDS: &[&str] = &[
    "error_code",
    "err_no",
    "errcode",
    "sub_error_code",
    "data",
    "extra",
    "message",
    "x",
];

fn json_strategy() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        proptest::sample::select(&["0", "10008", "2190008", "-1", "1e3", " 28001008", "x", ""][..])
            .prop_map(|s| Value::String(s.into())),
        proptest::sample::select(&[0i64, 10008, 2190008, 2190002, 28001008, 10010, 40004, 10020][..])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::vec((proptest::sample::select(CODE_FIELDS), inner), 0..6).prop_map(|kv| {
                serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

/// The repository's sample bodies, and those of `../shared/fixtures/responses` it has no copy of
/// (extra cases, when the checkout sits beside it).
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |dir: &std::path::Path| -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let mut all = read(&root.join("fixtures/responses"));
    assert!(
        all.len() >= 31,
        "the repository's fixtures/responses: {} samples",
        all.len()
    );
    for (name, body) in read(&root.join("../shared/fixtures/responses")) {
        if !all.iter().any(|(n, _)| *n == name) {
            all.push((name, body));
        }
    }
    all
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn reading_any_json_or_bytes_never_panics(v in json_strategy(), bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let table = CodeTable::default();
        for body in [serde_json::to_vec(&v).unwrap(), bytes] {
            if let Some(c) = inspect::codes(&body) {
                for ctx in [Context::Api, Context::TokenEndpoint, Context::Renew] {
                    let _ = table.verdict(&c, ctx);
                }
            }
        }
    }

    #[test]
    fn a_fixture_verdict_survives_reformatting(pick in any::<proptest::sample::Index>(), pretty in any::<bool>(), extra in "[a-z]{1,8}") {
        static ALL: std::sync::LazyLock<Vec<(String, Vec<u8>)>> = std::sync::LazyLock::new(fixtures);
        let (name, body) = &ALL[pick.index(ALL.len())];
        let mut v: serde_json::Value = serde_json::from_slice(body).unwrap();
        let table = CodeTable::default();
        let before = inspect::codes(body).map(|c| table.verdict(&c, Context::Api));
        prop_assert!(before.is_some(), "{} not read", name);
        if let Some(o) = v.as_object_mut() {
            if !["data", "extra", "error_code", "err_no", "errcode", "message", "description"].contains(&extra.as_str()) {
                o.insert(format!("zz_{extra}"), serde_json::json!({"note": extra}));
            }
        }
        let again = if pretty { serde_json::to_vec_pretty(&v) } else { serde_json::to_vec(&v) }.unwrap();
        let after = inspect::codes(&again).map(|c| table.verdict(&c, Context::Api));
        prop_assert_eq!(before, after, "{}", name);
    }
}
