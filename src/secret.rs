//! Secrets as a type: a value that never prints.

use std::fmt;

/// A secret string (client secret, API key, token). `Debug` and `Display` print
/// `[redacted]`, so a secret that ends up in a log line or an error shows nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        // Boxed, not a String: 16 bytes in every cached user's grant instead of 24.
        Secret(value.into().into_boxed_str())
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A secret read from where the config says: the environment variable `env`, or the file `file`
/// (trimmed); `None` when neither is given. `what` names it in errors.
pub fn read(what: &str, env: &Option<String>, file: &Option<std::path::PathBuf>) -> Result<Option<Secret>, String> {
    let raw = if let Some(var) = env {
        std::env::var(var).map_err(|_| format!("app {what:?}: environment variable {var} is not set"))?
    } else if let Some(path) = file {
        std::fs::read_to_string(path).map_err(|e| format!("app {what:?}: cannot read {}: {e}", path.display()))?
    } else {
        return Ok(None);
    };
    Ok(Some(Secret::new(raw.trim())))
}

/// Hex SHA-256 of a key, as `hash-key` prints it: keys are kept only as this digest.
pub fn hash_key(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("clt.very-secret");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "clt.very-secret");
    }
}
