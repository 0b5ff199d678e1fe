//! serde's messages in the words of the file being checked: "a whole number ≥ 0" where serde
//! says `usize`, `"user"` where it says `User` or `` `user` ``. An operator reads `check`'s
//! output beside a TOML file, not beside the Rust structs.
//!
//! ```text
//! invalid value: integer `-1`, expected usize  →  expected a whole number ≥ 0, not -1
//! unknown variant `users`, expected one of `none`, `user`  →  unknown value "users", expected one of "none", "user"
//! ```

/// A serde/toml error message rephrased for the file (unknown messages pass unchanged).
pub(super) fn in_file_words(message: &str) -> String {
    let message = message.trim_end();
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.rsplit_once(", expected ") {
            return format!("expected {}, not {}", expected_words(expected), found_words(found));
        }
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        if let Some((found, expected)) = rest.rsplit_once(", expected ") {
            return format!("expected {}, not {}", expected_words(expected), found_words(found));
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        // Values are strings in the file: quoted as there.
        return format!("unknown value {}", rest.replace('`', "\""));
    }
    message.to_string()
}

/// What serde expected (a Rust type or a phrase), as the file would write it.
fn expected_words(expected: &str) -> String {
    let words = match expected.trim() {
        "usize" | "u64" | "u128" => "a whole number ≥ 0",
        "u32" => "a whole number from 0 to 4294967295",
        "u16" => "a whole number from 0 to 65535",
        "u8" => "a whole number from 0 to 255",
        "isize" | "i64" | "i32" | "i16" | "i8" | "i128" => "a whole number",
        "f64" | "f32" => "a number",
        "a boolean" | "bool" => "true or false",
        "a string" | "string" | "a borrowed string" => "a string in quotes",
        "a sequence" => "an array [ … ]",
        e if e.starts_with("struct ") || e == "a map" => "a table",
        e if e.starts_with("enum ") || e == "a string or map" => "one of the names listed in docs/configuration.md",
        other => return other.replace('`', "\""),
    };
    words.to_string()
}

/// What serde found, as it was written in the file: `-1`, `"big"`, `true`.
fn found_words(found: &str) -> String {
    let quoted = |s: &str| s.trim_matches('`').to_string();
    if let Some(n) = found.strip_prefix("integer ") {
        return quoted(n);
    }
    if let Some(n) = found.strip_prefix("floating point ") {
        return quoted(n);
    }
    if let Some(b) = found.strip_prefix("boolean ") {
        return quoted(b);
    }
    if let Some(s) = found.strip_prefix("string ") {
        return format!("the string {s}");
    }
    match found {
        "sequence" => "an array".into(),
        "map" => "a table".into(),
        other => other.to_string(),
    }
}

/// An enum value as the file spells it: `MiniApp` → `"mini_app"` (the configs' enums are
/// lower-case, words joined by `_`).
pub(super) fn as_written(debug: &impl std::fmt::Debug) -> String {
    let mut out = String::from('"');
    for (i, ch) in format!("{debug:?}").chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_types_become_the_files_words() {
        assert_eq!(
            in_file_words("invalid value: integer `-1`, expected usize"),
            "expected a whole number ≥ 0, not -1"
        );
        assert_eq!(
            in_file_words("invalid type: string \"big\", expected u64"),
            "expected a whole number ≥ 0, not the string \"big\""
        );
        assert_eq!(
            in_file_words("invalid type: integer `5`, expected a string"),
            "expected a string in quotes, not 5"
        );
        assert_eq!(
            in_file_words("invalid type: string \"yes\", expected a boolean"),
            "expected true or false, not the string \"yes\""
        );
        assert_eq!(
            in_file_words("unknown variant `users`, expected one of `none`, `user`"),
            "unknown value \"users\", expected one of \"none\", \"user\""
        );
        assert_eq!(in_file_words("missing field `token`"), "missing field `token`");
    }

    #[test]
    fn enum_values_as_the_file_writes_them() {
        #[derive(Debug)]
        enum Kind {
            User,
            MiniApp,
        }
        assert_eq!(as_written(&Kind::User), "\"user\"");
        assert_eq!(as_written(&Kind::MiniApp), "\"mini_app\"");
    }
}
