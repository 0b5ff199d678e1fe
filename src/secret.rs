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

/// The 32 bytes of an encryption key written in base64 (as `douyin-gateway keygen` prints it).
pub fn key_from_base64(b64: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| "the key is not base64".to_string())?;
    <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| format!("the key is {} bytes; it must be 32", raw.len()))
}

/// The encryption key an environment variable holds: what the store opens with, and what
/// `check` tries, so both refuse the same keys with the same words.
pub fn key_from_env(var: &str) -> Result<[u8; 32], String> {
    let v = std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?;
    key_from_base64(&v).map_err(|e| format!("{var}: {e} (douyin-gateway keygen prints a good one)"))
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

    #[test]
    fn keys_are_32_bytes_of_base64() {
        use base64::Engine;
        let good = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(key_from_base64(&format!(" {good}\n")), Ok([7u8; 32]));
        assert_eq!(
            key_from_base64("c2hvcnQ=").unwrap_err(),
            "the key is 5 bytes; it must be 32"
        );
        assert_eq!(key_from_base64("not base64!").unwrap_err(), "the key is not base64");
    }
}
