//! Values shipped as examples that must never face anyone: the example admin and caller keys
//! (their plaintext is printed in `config.toml`), the all-zero hashes and `awxxxx…` client_key
//! of `deploy/`, and secrets still holding a placeholder such as the systemd env template's
//! `replace-me-with-the-client-secret`. `serve` and `check` refuse them (an unedited install
//! does not serve); `--allow-example-keys` turns them into warnings for a deliberate test
//! install; the demo, a reload and the library's `Config::load` warn.
//!
//! ```text
//! error: config.toml:57: admin.api_key_sha256: is the example's key ("example-admin-key", …)
//! error: config.toml:81: apps[0].client_secret_env: environment variable DOUYIN_CLIENT_SECRET holds a placeholder, not the secret
//! ```

use super::validate::{Collector, Severity};
use super::Config;

/// What loading makes of the repository's example keys and placeholder secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Examples {
    /// A warning each (the demo, a reload, tests, `--allow-example-keys`).
    Warn,
    /// An error each: `serve` and `check` refuse the config.
    Refuse,
}

/// The hex SHA-256 every shipped placeholder hash uses (`deploy/`): "replace it".
const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Whether a secret's value is a placeholder left from a template: `replace-me…`, `change-me…`,
/// `example…`, or the `…` of a documentation line.
pub(super) fn is_placeholder(value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    let words = [
        "replace-me",
        "replace_me",
        "replaceme",
        "change-me",
        "change_me",
        "changeme",
        "example",
    ];
    words.iter().any(|w| v.starts_with(w)) || v == "…" || v == "..."
}

/// A client_key copied from the examples: `aw` and only `x`s.
fn is_placeholder_client_key(key: &str) -> bool {
    key.len() > 2 && key.starts_with("aw") && key[2..].bytes().all(|b| b == b'x' || b == b'X')
}

impl Config {
    /// Every example key and placeholder secret, at severity `examples` asks for.
    pub(super) fn check_example_values(&self, c: &mut Collector<'_>, text: &str, examples: Examples) {
        let sev = match examples {
            Examples::Warn => Severity::Warning,
            Examples::Refuse => Severity::Error,
        };
        let before = c.len();
        let example_admin = crate::secret::hash_key("example-admin-key");
        let example_caller = crate::secret::hash_key("example-caller-key");
        let what = |hash: &str| {
            if hash == example_admin {
                Some("is the example's key (\"example-admin-key\", printed in config.toml)")
            } else if hash == example_caller {
                Some("is the example's key (\"example-caller-key\", printed in config.toml)")
            } else if hash == ZERO_HASH {
                Some("is the example's placeholder (all zeros)")
            } else {
                None
            }
        };
        if let Some(said) = self.admin.api_key_sha256.as_deref().and_then(what) {
            let msg = format!(
                "{said}: anyone could use the admin API; set the hash of your own key (echo -n KEY | douyin-gateway hash-key)"
            );
            c.push(sev, "admin", None, "api_key_sha256", msg);
        }
        for (i, caller) in self.callers.iter().enumerate() {
            if let Some(said) = what(&caller.api_key_sha256) {
                let msg = format!("{said}: anyone could call as this caller; set the hash of your own key");
                c.push(sev, "callers", Some(i), "api_key_sha256", msg);
            }
        }
        for (i, app) in self.apps.iter().enumerate() {
            if is_placeholder_client_key(&app.client_key) {
                let msg =
                    "is the example's placeholder: put the app's client_key from the Douyin Open Platform console";
                c.push(sev, "apps", Some(i), "client_key", msg.into());
            }
        }
        for (table, index, key, problem) in placeholder_secrets(text) {
            c.push(sev, &table, index, &key, problem);
        }
        if examples == Examples::Refuse {
            // Said once per problem, where the operator reads it: how a test install starts.
            for p in c.out_mut().iter_mut().skip(before) {
                p.message.push_str(" (a deliberate test install: --allow-example-keys)");
            }
        }
    }
}

/// Every `*_env` and `*_file` key of the file (in a table or an `[[array]]` entry) whose secret
/// holds a placeholder: (table, entry, key, what is wrong). The value itself is never named.
fn placeholder_secrets(text: &str) -> Vec<(String, Option<usize>, String, String)> {
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut look = |table: &str, index: Option<usize>, t: &toml::Table| {
        for (key, value) in t {
            let Some(named) = value.as_str() else { continue };
            if let Some(problem) = secret_placeholder(key, named) {
                out.push((table.to_string(), index, key.clone(), problem));
            }
        }
    };
    for (name, value) in &doc {
        match value {
            toml::Value::Table(t) => look(name, None, t),
            toml::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(t) = item.as_table() {
                        look(name, Some(i), t);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The problem with the secret `key` names (`*_env`: a variable, `*_file`: a file), when it is a
/// placeholder. Files over 64 KiB are no secret of ours and are not read.
fn secret_placeholder(key: &str, named: &str) -> Option<String> {
    if key.ends_with("_env") {
        let value = std::env::var(named).ok()?;
        return is_placeholder(&value).then(|| {
            format!("environment variable {named} holds a placeholder, not the secret: put the real one in it")
        });
    }
    if key.ends_with("_file") {
        let small = std::fs::metadata(named).is_ok_and(|m| m.len() <= 64 * 1024);
        let value = small.then(|| std::fs::read_to_string(named).ok()).flatten()?;
        return is_placeholder(&value)
            .then(|| format!("file {named} holds a placeholder, not the secret: put the real one in it"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised_and_secrets_are_not() {
        for p in [
            "replace-me-with-the-client-secret",
            "CHANGE_ME",
            "changeme",
            "example-secret",
            "…",
            " replace-me\n",
        ] {
            assert!(is_placeholder(p), "{p}");
        }
        for s in ["3f9a2c7e1b", "a-client-secret", "sandbox-secret", "my-example"] {
            assert!(!is_placeholder(s), "{s}");
        }
        assert!(is_placeholder_client_key("awxxxxxxxxxxxxxx"));
        assert!(!is_placeholder_client_key("awsandbox0000001"));
        assert!(!is_placeholder_client_key("aw"));
    }

    #[test]
    fn a_placeholder_file_is_named_without_its_value() {
        let dir = std::env::temp_dir().join(format!("dg-examples-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "replace-me-please\n").unwrap();
        let text = format!(
            "[[apps]]\nname = \"a\"\nclient_key = \"aw1\"\nclient_secret_file = \"{}\"\n",
            file.display()
        );
        let found = placeholder_secrets(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        let (table, index, key, problem) = &found[0];
        assert_eq!(
            (table.as_str(), *index, key.as_str()),
            ("apps", Some(0), "client_secret_file")
        );
        assert!(!problem.contains("replace-me-please"), "{problem}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
