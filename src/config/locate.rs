//! Finds the line of a key in TOML text, so validation problems can name it.
//! serde forgets spans once a value is parsed; a line scan of the source is
//! enough for the flat layout of our config.

/// Line (1-based) of `key` inside table `table` (`"server"`, `"server.tls"`)
/// or inside the `index`-th `[[table]]`. Falls back to the table header line,
/// `None` when the table is not in the text at all.
pub(super) fn line_of(text: &str, table: &str, index: Option<usize>, key: &str) -> Option<usize> {
    let header = match index {
        Some(_) => format!("[[{table}]]"),
        None => format!("[{table}]"),
    };
    let mut seen = 0usize;
    let mut inside = false;
    let mut header_line = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            let name = line.split('#').next().unwrap_or("").trim();
            if name.replace(' ', "") == header {
                let wanted = index.is_none_or(|i| i == seen);
                seen += 1;
                inside = wanted;
                if wanted {
                    header_line = Some(n + 1);
                }
            } else if inside {
                break;
            }
            continue;
        }
        if inside && !key.is_empty() {
            if let Some(rest) = line.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return Some(n + 1);
                }
            }
        }
    }
    header_line
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[server]\nlisten = \"x\"\n\n[[routes]]\nname = \"a\"\npath = \"/a\"\n\n[[routes]]\nname = \"b\"\n# c\npath = \"/b\"\n";

    #[test]
    fn finds_keys_in_tables_and_arrays() {
        assert_eq!(line_of(TEXT, "server", None, "listen"), Some(2));
        assert_eq!(line_of(TEXT, "routes", Some(0), "path"), Some(6));
        assert_eq!(line_of(TEXT, "routes", Some(1), "path"), Some(11));
        assert_eq!(line_of(TEXT, "routes", Some(1), "methods"), Some(8));
        assert_eq!(line_of(TEXT, "apps", Some(0), "name"), None);
    }
}
