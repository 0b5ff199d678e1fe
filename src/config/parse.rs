//! TOML-level problems (unknown keys, wrong types, bad values, missing keys), all in one run:
//! deserialize, blank out what the error is about, and try again.

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
}

/// Deserializes `text`; on an error, records it (with line and key path), blanks out the key it
/// is about (or, for a missing required key, that `[[array]]` entry) and tries again, so one run
/// reports every such problem.
pub(super) fn parse_collecting(text: &str, file: &str) -> Parsed {
    let mut out = Parsed {
        config: None,
        problems: Vec::new(),
        text: text.to_string(),
        removed: Vec::new(),
    };
    let line_of = |t: &str, at: usize| t[..at.min(t.len())].matches('\n').count() + 1;
    let blank = |t: &mut String, cut: std::ops::Range<usize>| {
        let b: String = t[cut.clone()]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        t.replace_range(cut, &b);
    };
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
        let message = with_suggestion(e.message());
        if message.starts_with("missing field") {
            // The span is the `[[name]]` header of the entry lacking it: take the entry out.
            let entry = doc.get_ref().iter().find_map(|(k, v)| match v.get_ref() {
                toml::de::DeValue::Array(items) => items
                    .into_iter()
                    .position(|i| i.span().contains(&at))
                    .map(|i| (k.get_ref().to_string(), i)),
                _ => None,
            });
            if let Some((name, i)) = entry {
                let orig = original_index(&name, i, &out.removed);
                out.problems
                    .push(Problem::error(file, &format!("{name}[{orig}]"), line, message));
                let end = out.text[at..].find("\n[").map_or(out.text.len(), |p| at + p + 1);
                blank(&mut out.text, at..end);
                out.removed.push((name, orig));
                continue;
            }
        }
        let mut best = None;
        deepest(doc.get_ref(), &mut String::new(), at, &mut best);
        match best {
            Some((path, cut)) if !cut.is_empty() => {
                out.problems
                    .push(Problem::error(file, &original_path(&path, &out.removed), line, message));
                blank(&mut out.text, cut);
            }
            _ => {
                out.problems.push(Problem::error(file, "", line, message));
                break;
            }
        }
    }
    out
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

/// An "unknown field `x`, expected one of `a`, `b`" or "unknown variant" message, with the
/// nearest expected name when one is close: "did you mean `token`?".
fn with_suggestion(message: &str) -> String {
    let message = message.trim_end();
    let Some(rest) = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))
    else {
        return message.to_string();
    };
    let Some((got, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|name| (strsim::damerau_levenshtein(got, name), name))
        .min();
    match best {
        Some((d, name)) if d <= 2.max(got.len() / 3) && d > 0 => format!("{message}; did you mean `{name}`?"),
        _ => message.to_string(),
    }
}
