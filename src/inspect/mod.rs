//! Reading the platform's answers: which error code a body carries, in any of
//! the envelopes (A–F of the platform doc, and developer.toutiao.com's G
//! `{"err":{"err_code","err_msg"}}` and H `{"err_no","err_tips"}`), and what the gateway should do.
//!
//! Parsing is typed and skips everything but the code fields, so a 64 KiB
//! video list costs one pass and no allocations for its content.
//!
//! `envelope` reads the codes out of a body; `verdict` says what they mean on each endpoint.

mod envelope;
mod verdict;

pub use envelope::{codes, Codes, Lenient};
pub use verdict::{CodeTable, Context, Verdict, DEFAULT_REAUTHORIZE_CODES, DEFAULT_REFRESH_CODES, RENEWAL_LIMIT};

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
}
