//! The documentation: the README and every page under docs/ link only to files and headings
//! that exist, and every TOML snippet in them is configuration the gateway accepts (no unknown
//! key, no wrong type, no bad value): put into a complete configuration and validated as at start.

mod common;

use base64::Engine;
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

/// `snippet` in a complete configuration (the tests' standard one, each table the snippet names
/// replaced by the snippet's, each `[[array]]` entry added), parsed and validated as the gateway
/// does at start; the environment variables it names (`*_env`) hold a valid key.
fn load_with(snippet: &str, file: &str) -> Result<(), String> {
    let snippet: toml::Table = snippet.parse().map_err(|e| format!("not TOML: {e}"))?;
    let secret = common::secret_file();
    let mut config: toml::Table = common::TestConfig::new("http://127.0.0.1:9", secret.path())
        .render()
        .parse()
        .unwrap();
    for (key, value) in snippet {
        match (config.get_mut(&key), value) {
            (Some(toml::Value::Array(entries)), toml::Value::Array(more)) => entries.extend(more),
            (_, value) => {
                config.insert(key, value);
            }
        }
    }
    let text = toml::to_string(&config).unwrap();
    for line in text.lines() {
        if let Some((key, value)) = line.split_once(" = ") {
            if key.trim().ends_with("_env") {
                let var = value.trim().trim_matches('"');
                if std::env::var_os(var).is_none() {
                    std::env::set_var(var, base64::engine::general_purpose::STANDARD.encode([7u8; 32]));
                }
            }
        }
    }
    douyin_gateway::config::Config::load_str(&text, file)
        .map(|_| ())
        .map_err(|e| format!("{e}\n{text}"))
}

#[test]
fn every_toml_snippet_is_configuration_the_gateway_accepts() {
    // What the check refuses: a snippet that parses but does not validate.
    let bad = "[store]\nkind = \"redis\"\nencryption_key_env = \"DG_TEST_DOCS_KEY\"\n";
    let refused = load_with(bad, "bad").expect_err("a Redis store without url");
    assert!(refused.contains("store.url"), "{refused}");
    let mut snippets = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for part in text.split("```toml\n").skip(1) {
            let snippet = part.split("```").next().unwrap();
            snippets += 1;
            if let Err(e) = load_with(snippet, &page.display().to_string()) {
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

/// The README names every program outside the repository a test runs (the Redis, Chromium and
/// other tests skip or fail without them), and what only benches and scripts need.
#[test]
fn the_readme_names_every_program_the_tests_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut programs: HashSet<String> = ["chromium".to_string()].into();
    for e in std::fs::read_dir(root.join("tests")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
        for part in text.split("Command::new(\"").skip(1) {
            programs.insert(part.split('"').next().unwrap().to_string());
        }
    }
    // The POSIX shell and kill come with any system a Rust toolchain runs on.
    programs.retain(|p| p != "sh" && p != "kill");
    assert!(programs.len() >= 6, "{programs:?}");
    for p in programs.iter().chain(&["nginx".to_string(), "wrk".to_string()]) {
        assert!(readme.contains(&format!("`{p}`")), "the README does not name `{p}`");
    }
}

/// Deploying starts from the release build, in docs/operations.md and in the systemd steps, and
/// the release profile leaves debug info out of the installed binary.
#[test]
fn deploying_starts_from_a_release_build_without_debug_info() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ops = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    let deploying = ops.split("## Deploying").nth(1).expect("a Deploying section");
    let first_block = deploying.split("```").nth(1).unwrap_or_default();
    assert!(first_block.contains("cargo build --release"), "{first_block}");
    let unit = std::fs::read_to_string(root.join("deploy/douyin-gateway.service")).unwrap();
    let build = unit.find("cargo build --release").expect("the steps build");
    let install = unit.find("install -m 0755 target/release/douyin-gateway").unwrap();
    assert!(build < install, "built before it is installed");
    let cargo: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let release = &cargo["profile"]["release"];
    assert_eq!(
        release.get("debug").and_then(|d| d.as_bool()),
        Some(false),
        "{release:?}"
    );
    assert_eq!(
        release.get("strip").and_then(|d| d.as_str()),
        Some("debuginfo"),
        "symbols kept for backtraces"
    );
}
