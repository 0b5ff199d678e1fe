//! The documentation: the README and every page under docs/ link only to files and headings
//! that exist, and every TOML snippet in them is configuration the gateway accepts (no unknown
//! key, no wrong type, no bad value).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn pages() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![root.join("README.md"), root.join("benches/README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// GitHub's anchor for a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> HashSet<String> {
    let mut in_code = false;
    let mut out = HashSet::new();
    for l in text.lines() {
        if l.starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && l.starts_with('#') {
            out.insert(slug(l.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn every_link_leads_somewhere() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            let tail = &rest[i + 2..];
            let end = tail.find(')').unwrap_or(tail.len());
            let link = &tail[..end];
            rest = &tail[end..];
            if link.starts_with("http://") || link.starts_with("https://") || link.contains(' ') {
                continue;
            }
            checked += 1;
            let (path, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if path.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(path)
            };
            if !target.exists() {
                broken.push(format!("{}: {link}: no such file", page.display()));
                continue;
            }
            if !anchor.is_empty() && target.extension().is_some_and(|x| x == "md") {
                let heads = anchors(&std::fs::read_to_string(&target).unwrap());
                if !heads.contains(anchor) {
                    broken.push(format!("{}: {link}: no such heading", page.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
    assert!(checked > 20, "only {checked} links found");
}

#[test]
fn every_toml_snippet_is_configuration_the_gateway_accepts() {
    let mut snippets = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let mut parts = text.split("```toml\n").skip(1);
        for part in parts.by_ref() {
            let snippet = part.split("```").next().unwrap();
            snippets += 1;
            if let Err(e) = douyin_gateway::config::Config::parse(snippet, &page.display().to_string()) {
                panic!("a snippet in {} is not accepted:\n{snippet}\n{e}", page.display());
            }
        }
    }
    assert!(snippets >= 2, "{snippets} snippets");
}

/// The README is the front door: what it is, the two commands, pointing a service at it, and
/// where to go next; the reference lives in docs/.
#[test]
fn the_readme_stays_a_front_door() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.len() < 16 * 1024, "README is {} bytes", readme.len());
    for section in ["## Quick start", "## Pointing a service at it", "## Where to go next"] {
        assert!(readme.contains(section), "{section}");
    }
    for page in [
        "docs/configuration.md",
        "docs/tokens.md",
        "docs/stores.md",
        "docs/errors.md",
        "docs/operations.md",
    ] {
        assert!(readme.contains(&format!("]({page})")), "{page} not linked");
    }
}
