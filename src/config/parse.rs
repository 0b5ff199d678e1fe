//! TOML-level problems (unknown keys, wrong types, bad values, missing keys), all in one run:
//! deserialize, blank out what the error is about, and try again.

use super::words::in_file_words;
use super::{Config, Problem};

/// What [`parse_collecting`] found.
pub(super) struct Parsed {
    /// What deserialized once every bad key and entry was taken out (`None`: a syntax error, or an
    /// error nothing can be blamed for).
    pub(super) config: Option<Config>,
    /// Every problem, with lines and key paths as in the file.
    pub(super) problems: Vec<Problem>,
    /// The text with what was taken out blanked (line breaks kept).
    pub(super) text: String,
    /// Entries of top-level arrays taken out (they lacked a required key): name and index in
    /// the file.
    pub(super) removed: Vec<(String, usize)>,
    /// The `name`s of those entries, beside their array's: a reference to one by name is no new
    /// problem.
    pub(super) removed_names: Vec<(String, String)>,
}

/// Deserializes `text`; on an error, records it (with line and key path), blanks out the key it
/// is about (or, for a missing required key, that `[[array]]` entry; for an unknown table, the
/// whole table) and tries again, so one run reports every such problem, each once: a key left
/// missing because its value was taken out, or because it was misspelt, is not reported again.
pub(super) fn parse_collecting(text: &str, file: &str) -> Parsed {
    let mut out = Parsed {
        config: None,
        problems: Vec::new(),
        text: text.to_string(),
        removed: Vec::new(),
        removed_names: Vec::new(),
    };
    // Keys (paths as in the file) already reported: taken out for their value, or meant by a
    // misspelt key that was.
    let mut reported: Vec<String> = Vec::new();
    for _ in 0..100 {
        let e = match toml::from_str::<Config>(&out.text) {
            Ok(c) => {
                out.config = Some(c);
                break;
            }
            Err(e) => e,
        };
        let line = e.span().map(|s| line_of(&out.text, s.start));
        let Ok(doc) = toml::de::DeTable::parse(&out.text) else {
            // A syntax error: nothing after it can be read.
            out.problems
                .push(Problem::error(file, "", line, e.message().to_string()));
            break;
        };
        let at = e.span().map_or(0, |s| s.start);
        let raw = e.message().trim_end();
        if let Some(field) = raw.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
            if let Some((name, i, entry_name)) = entry_at(doc.get_ref(), at) {
                // The span is the `[[name]]` header of the entry lacking it: take the entry out.
                let orig = original_index(&name, i, &out.removed);
                let key = format!("{name}[{orig}]");
                if !reported.contains(&format!("{key}.{field}")) {
                    out.problems.push(Problem::error(file, &key, line, describe(raw)));
                }
                let end = out.text[at..].find("\n[").map_or(out.text.len(), |p| at + p + 1);
                blank(&mut out.text, at..end);
                out.removed.push((name.clone(), orig));
                out.removed_names.extend(entry_name.map(|n| (name, n)));
                continue;
            }
        }
        let mut best = None;
        deepest(doc.get_ref(), &mut String::new(), at, &mut best);
        let Some((path, cut)) = best.filter(|(_, cut)| !cut.is_empty()) else {
            out.problems.push(Problem::error(file, "", line, describe(raw)));
            break;
        };
        let key = original_path(&path, &out.removed);
        let unknown = raw.starts_with("unknown field `");
        match header_of(&out.text, cut.start).filter(|_| unknown) {
            Some(brackets) => {
                // An unknown table: its keys are not reported one by one under another table.
                let dotted = strip_indices(&path);
                out.problems
                    .push(Problem::error(file, &key, line, unknown_table(raw, &dotted, brackets)));
                let found = sections(&out.text, &dotted);
                if found.is_empty() {
                    blank(&mut out.text, cut); // a header this reader does not follow
                }
                for section in found {
                    blank(&mut out.text, section);
                }
            }
            None => {
                out.problems.push(Problem::error(file, &key, line, describe(raw)));
                blank(&mut out.text, cut);
            }
        }
        reported.push(match suggestion(raw).filter(|_| unknown) {
            Some(meant) => format!(
                "{}{meant}",
                key.rsplit_once('.').map_or(String::new(), |(p, _)| format!("{p}."))
            ),
            None => key,
        });
    }
    out
}

fn line_of(t: &str, at: usize) -> usize {
    t[..at.min(t.len())].matches('\n').count() + 1
}

/// Replaces `cut` with spaces, its line breaks kept (so lines still number as in the file).
fn blank(t: &mut String, cut: std::ops::Range<usize>) {
    let b: String = t[cut.clone()]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    t.replace_range(cut, &b);
}

/// The top-level array, index and `name` of the `[[array]]` entry covering byte `at`.
fn entry_at(doc: &toml::de::DeTable<'_>, at: usize) -> Option<(String, usize, Option<String>)> {
    doc.iter().find_map(|(k, v)| match v.get_ref() {
        toml::de::DeValue::Array(items) => items.into_iter().enumerate().find_map(|(i, item)| {
            if !item.span().contains(&at) {
                return None;
            }
            let name = match item.get_ref() {
                toml::de::DeValue::Table(t) => t.get("name").and_then(|n| n.get_ref().as_str()).map(str::to_string),
                _ => None,
            };
            Some((k.get_ref().to_string(), i, name))
        }),
        _ => None,
    })
}

/// `routes[2].extra` → `routes.extra`: a table's name as its header writes it.
fn strip_indices(path: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for ch in path.chars() {
        match ch {
            '[' => skipping = true,
            ']' => skipping = false,
            _ if !skipping => out.push(ch),
            _ => {}
        }
    }
    out
}

/// When byte `at` is on a table header line (`[name]` or `[[name]]`): how many brackets open it.
fn header_of(text: &str, at: usize) -> Option<usize> {
    let start = text[..at.min(text.len())].rfind('\n').map_or(0, |p| p + 1);
    let line = text[start..].trim_start();
    line.starts_with('[')
        .then(|| if line.starts_with("[[") { 2 } else { 1 })
}

/// The dotted name a header line opens (`[ server . tls ] # x` → `server.tls`), if it is one.
fn header_name(line: &str) -> Option<String> {
    let line = line.trim_start();
    if !line.starts_with('[') {
        return None;
    }
    let inner = line.trim_start_matches('[');
    let name = inner.split(']').next()?;
    Some(
        name.chars()
            .filter(|c| !c.is_whitespace() && *c != '"' && *c != '\'')
            .collect(),
    )
}

/// The byte ranges of every section whose header is `dotted` or a table under it: header line
/// through the line before the next other header.
fn sections(text: &str, dotted: &str) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    let mut inside = false;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if let Some(name) = header_name(line) {
            inside = name == dotted || name.starts_with(&format!("{dotted}."));
        }
        if inside {
            match out.last_mut() {
                Some(last) if last.end == at => last.end = at + line.len(),
                _ => out.push(at..at + line.len()),
            }
        }
        at += line.len();
    }
    out
}

/// "unknown table [upstreem]; did you mean [upstream]?", in the header's own brackets.
fn unknown_table(raw: &str, dotted: &str, brackets: usize) -> String {
    let (open, close) = if brackets == 2 { ("[[", "]]") } else { ("[", "]") };
    let parent = dotted.rsplit_once('.').map_or(String::new(), |(p, _)| format!("{p}."));
    match suggestion(raw) {
        Some(meant) => format!("unknown table {open}{dotted}{close}; did you mean {open}{parent}{meant}{close}?"),
        None => {
            let expected = raw.split_once(", expected ").map_or("", |(_, e)| e);
            format!("unknown table {open}{dotted}{close}; expected {expected}")
        }
    }
}

/// A key path as numbered in the file, given the `[[array]]` entries taken out before it.
pub(super) fn original_path(path: &str, removed: &[(String, usize)]) -> String {
    let Some((name, rest)) = path.split_once('[') else {
        return path.to_string();
    };
    let Some((index, tail)) = rest.split_once(']') else {
        return path.to_string();
    };
    let Ok(i) = index.parse::<usize>() else {
        return path.to_string();
    };
    format!("{name}[{}]{tail}", original_index(name, i, removed))
}

/// The file's index of what is now entry `i` of the array `name`, given the entries taken out.
fn original_index(name: &str, mut i: usize, removed: &[(String, usize)]) -> usize {
    let mut gone: Vec<usize> = removed.iter().filter(|(n, _)| n == name).map(|(_, i)| *i).collect();
    gone.sort_unstable();
    for g in gone {
        if g <= i {
            i += 1;
        }
    }
    i
}

/// The key path (`routes[2].tokn`) and byte range (key through value) of the innermost key
/// whose key or value covers byte `at`.
fn deepest(
    table: &toml::de::DeTable<'_>,
    path: &mut String,
    at: usize,
    best: &mut Option<(String, std::ops::Range<usize>)>,
) {
    for (key, value) in table {
        let before = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key.get_ref());
        let (k, v) = (key.span(), value.span());
        if k.contains(&at)
            || (v.contains(&at)
                && !matches!(
                    value.get_ref(),
                    toml::de::DeValue::Table(_) | toml::de::DeValue::Array(_)
                ))
        {
            *best = Some((path.clone(), k.start.min(v.start)..k.end.max(v.end)));
        }
        match value.get_ref() {
            toml::de::DeValue::Table(t) => deepest(t, path, at, best),
            toml::de::DeValue::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    let mark = path.len();
                    path.push_str(&format!("[{i}]"));
                    match item.get_ref() {
                        toml::de::DeValue::Table(t) => deepest(t, path, at, best),
                        _ if item.span().contains(&at) => {
                            *best = Some((path.clone(), k.start.min(v.start)..k.end.max(v.end)));
                        }
                        _ => {}
                    }
                    path.truncate(mark);
                }
            }
            _ => {}
        }
        path.truncate(before);
    }
}

/// A serde message in the file's words ([`in_file_words`]), with the nearest expected name when
/// one is close: "did you mean `token`?" for a key, "did you mean \"user\"?" for a value.
fn describe(raw: &str) -> String {
    let message = in_file_words(raw);
    match suggestion(raw) {
        Some(name) if raw.starts_with("unknown variant") => format!("{message}; did you mean \"{name}\"?"),
        Some(name) => format!("{message}; did you mean `{name}`?"),
        None => message,
    }
}

/// For an "unknown field `x`, expected one of `a`, `b`" or "unknown variant" message: the
/// expected name nearest `x`, when one is close.
fn suggestion(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (got, expected) = rest.split_once('`')?;
    let (d, name) = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|name| (strsim::damerau_levenshtein(got, name), name))
        .min()?;
    (d <= 2.max(got.len() / 3) && d > 0).then_some(name)
}
