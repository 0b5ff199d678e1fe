//! `Config::validate`: every semantic problem at once, each with its key path
//! and line, so `douyin-gateway check` can list them all.

use super::{locate::line_of, Config, Examples};
use std::fmt;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The config is refused.
    Error,
    /// Worth a look; the config still loads.
    Warning,
}

/// One thing wrong with a config.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The file.
    pub file: String,
    /// Dotted key path, e.g. `routes[2].path`.
    pub key: String,
    /// Line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong, for a human.
    pub message: String,
}

impl Problem {
    pub(crate) fn error(file: &str, key: &str, line: Option<usize>, message: String) -> Self {
        Problem {
            severity: Severity::Error,
            file: file.into(),
            key: key.into(),
            line,
            message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: {}", self.located())
    }
}

impl Problem {
    /// The problem without its severity word (for a log line whose level says it):
    /// `file:line: key: message`.
    pub fn located(&self) -> String {
        let mut s = self.file.clone();
        if let Some(line) = self.line {
            s.push_str(&format!(":{line}"));
        }
        if !self.key.is_empty() {
            s.push_str(&format!(": {}", self.key));
        }
        s.push_str(&format!(": {}", self.message));
        s
    }
}

/// Gathers problems, each with its key path and the line `locate` finds for it.
pub(super) struct Collector<'a> {
    text: &'a str,
    file: &'a str,
    out: Vec<Problem>,
}

impl Collector<'_> {
    pub(super) fn push(&mut self, sev: Severity, table: &str, index: Option<usize>, key: &str, msg: String) {
        let path = match index {
            Some(i) => format!("{table}[{i}]"),
            None => table.to_string(),
        };
        let path = if key.is_empty() { path } else { format!("{path}.{key}") };
        self.out.push(Problem {
            severity: sev,
            file: self.file.into(),
            line: line_of(self.text, table, index, key),
            key: path,
            message: msg,
        });
    }
    pub(super) fn err(&mut self, table: &str, index: Option<usize>, key: &str, msg: impl Into<String>) {
        self.push(Severity::Error, table, index, key, msg.into());
    }
    /// How many problems are gathered so far.
    pub(super) fn len(&self) -> usize {
        self.out.len()
    }
    /// The problems gathered so far.
    pub(super) fn out_mut(&mut self) -> &mut Vec<Problem> {
        &mut self.out
    }
    pub(super) fn warn(&mut self, table: &str, index: Option<usize>, key: &str, msg: impl Into<String>) {
        self.push(Severity::Warning, table, index, key, msg.into());
    }
}

pub(super) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether an env var or file secret is present and non-empty.
pub(super) fn secret_present(env: &Option<String>, file: &Option<std::path::PathBuf>) -> Result<(), String> {
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(()),
            Ok(_) => Err(format!("environment variable {var} is empty")),
            Err(_) => Err(format!(
                "environment variable {var} is not set: export {var}=… (the secret from the Douyin Open Platform console)"
            )),
        };
    }
    if let Some(path) = file {
        return match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => Ok(()),
            Ok(_) => Err(format!("secret file {} is empty", path.display())),
            Err(e) => Err(format!("cannot read secret file {}: {e}", path.display())),
        };
    }
    Ok(())
}

impl Config {
    /// Every problem of the config; also checks that named secrets exist. The example keys and
    /// placeholder secrets are warnings here ([`Config::validate_with`] can refuse them).
    pub fn validate(&self, text: &str, file: &str) -> Vec<Problem> {
        self.validate_with(text, file, Examples::Warn)
    }

    /// [`Config::validate`], with the example keys and placeholder secrets warned about or
    /// refused as `examples` says.
    pub fn validate_with(&self, text: &str, file: &str, examples: Examples) -> Vec<Problem> {
        let mut c = Collector {
            text,
            file,
            out: Vec::new(),
        };
        // `load_str` sorts problems by line; those on one line (a table's header, for a key left
        // out) keep this order.
        self.validate_server(&mut c);
        self.validate_upstreams(&mut c);
        self.validate_admin(&mut c);
        self.validate_tokens(&mut c);
        self.validate_oauth(&mut c);
        self.validate_store(&mut c);
        self.validate_apps(&mut c);
        self.validate_routes(&mut c);
        self.validate_callers(&mut c);
        self.validate_notify(&mut c);
        self.validate_callbacks(&mut c);
        self.validate_webhook_forward(&mut c);
        self.validate_providers(&mut c);
        self.check_example_values(&mut c, text, examples);
        c.out
    }
}
