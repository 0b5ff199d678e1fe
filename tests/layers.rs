//! The layering of `src/`, as `docs/design.md` declares it: every `crate::…` path in a module
//! (comments and test modules aside) names a module of a lower layer, never its own layer or a
//! higher one; only the composition root may import from every layer. Strict layers admit no
//! import circle between modules either.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers `docs/design.md` declares between its `<!-- layers -->` markers: one line each,
/// bottom first, `N  module module …`; the last is the composition root.
fn declared_layers() -> Vec<BTreeSet<String>> {
    let design = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/design.md")).unwrap();
    let start = design
        .find("<!-- layers -->")
        .expect("docs/design.md declares the layers")
        + 15;
    let end = start
        + design[start..]
            .find("<!-- /layers -->")
            .expect("the layers' end marker");
    design[start..end]
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.next()?.parse::<usize>().ok()?;
            Some(words.take_while(|w| !w.starts_with('(')).map(String::from).collect())
        })
        .collect()
}

/// The code of a file without its comments and its `#[cfg(test)] mod tests`.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            // Not inside a string: good enough for this code base's paths (checked below).
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file's code names through `crate::`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c}`: the first segment of each path in the group.
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for path in inner.split(',') {
                let name: String = path
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Every file under `src/` by its top-level module, with what it imports.
fn graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, files);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
        if rel == "lib.rs" || rel == "main.rs" {
            continue; // the crate root and the binary: they name every module
        }
        let module = rel.split('/').next().unwrap().trim_end_matches(".rs").to_string();
        let found = imports(&code(&std::fs::read_to_string(&f).unwrap()));
        let found: BTreeSet<String> = found.into_iter().filter(|m| *m != module).collect();
        out.entry(module).or_default().insert(rel, found);
    }
    out
}

#[test]
fn every_import_goes_to_a_lower_layer() {
    let layers = declared_layers();
    assert!(layers.len() >= 3, "{layers:?}");
    let layer_of = |m: &str| layers.iter().position(|l| l.contains(m));
    let root = layers.len() - 1;
    let graph = graph();
    let mut problems = Vec::new();
    for (module, files) in &graph {
        let Some(own) = layer_of(module) else {
            problems.push(format!("{module}: in no layer of docs/design.md"));
            continue;
        };
        if own == root {
            continue;
        }
        for (file, imports) in files {
            for m in imports {
                match layer_of(m) {
                    Some(l) if l < own => {}
                    Some(l) => problems.push(format!(
                        "src/{file}: {module} (layer {own}) imports {m} (layer {l}): only lower layers"
                    )),
                    None => problems.push(format!("src/{file}: imports {m}, in no layer")),
                }
            }
        }
    }
    // Every layer names real modules (a stale name would hide a module's absence).
    for (i, layer) in layers.iter().enumerate() {
        for m in layer {
            assert!(
                graph.contains_key(m.as_str()),
                "layer {i} names {m}, which src/ has not"
            );
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_reader_sees_what_the_compiler_sees() {
    // The check above would pass on a reader that found nothing: it finds the imports it must.
    let graph = graph();
    let imports = |m: &str| -> BTreeSet<String> { graph[m].values().flatten().cloned().collect() };
    assert!(imports("proxy").contains("token"), "{:?}", imports("proxy"));
    assert!(imports("token").contains("store"), "{:?}", imports("token"));
    assert!(imports("server").contains("admin"));
    assert!(!imports("token").contains("metrics"), "comments are not imports");
    let found = super_imports("use crate::{a::b, c};\nlet x = crate::d::e(); // crate::f\n");
    assert_eq!(found, ["a", "c", "d"].map(String::from).into_iter().collect());
}

fn super_imports(text: &str) -> BTreeSet<String> {
    imports(&code(text))
}
