//! `[log]`: how the gateway logs.

use serde::Deserialize;

/// `[log]`: the format, and whether each proxied call gets an access line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (one readable line per event) or `json` (one JSON object per line, for shipping).
    pub format: LogFormat,
    /// One info line per proxied call (`target` `access`): request id, caller, route, method,
    /// path (never the query), status, duration, upstream status, the platform's log id.
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            access: true,
        }
    }
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    #[default]
    Text,
    /// JSON lines.
    Json,
}
