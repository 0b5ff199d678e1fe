//! `douyin-gateway man`: the manual page, roff. Commands and their options come from the same
//! clap metadata as `--help`; the sections clap has no words for (the configuration file,
//! signals, files, environment, exit status) are written here, naming only what exists.
//!
//! ```text
//! target/release/douyin-gateway man > /usr/local/share/man/man1/douyin-gateway.1 && man douyin-gateway
//! ```

use std::fmt::Write as _;

/// The page for `cmd` (the binary's whole command line), roff.
pub fn render(cmd: &clap::Command) -> String {
    let mut cmd = cmd.clone();
    cmd.build();
    let name = cmd.get_name().to_string();
    let version = cmd.get_version().unwrap_or_default().to_string();
    let mut out = String::new();
    let _ = writeln!(out, ".TH {name} 1 \"\" \"{name} {version}\" \"User Commands\"");
    section(&mut out, "NAME");
    let _ = writeln!(out, "{} \\- {}", escape(&name), escape(&about(&cmd)));
    section(&mut out, "SYNOPSIS");
    let _ = writeln!(out, ".B {}\n.I COMMAND\n[\\fIOPTIONS\\fR]", escape(&name));
    section(&mut out, "DESCRIPTION");
    text(&mut out, DESCRIPTION);
    section(&mut out, "COMMANDS");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        command(&mut out, &name, sub);
    }
    for (title, body) in SECTIONS {
        section(&mut out, title);
        for paragraph in body.split("\n\n") {
            let _ = writeln!(out, ".PP");
            text(&mut out, paragraph);
        }
    }
    out
}

/// A command as `.TP`: its synopsis, what it does, then its options as `--help` lists them.
fn command(out: &mut String, name: &str, sub: &clap::Command) {
    let args: Vec<&clap::Arg> = sub
        .get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_id() != "help")
        .collect();
    let mut synopsis = format!("\\fB{name} {}\\fR", escape(sub.get_name()));
    for arg in &args {
        synopsis.push_str(&format!(" [{}]", shown(arg, true)));
    }
    let _ = writeln!(out, ".TP\n{synopsis}");
    text(out, &sentence(&about(sub)));
    for arg in &args {
        let Some(help) = arg.get_long_help().or_else(|| arg.get_help()) else {
            continue;
        };
        let mut said = sentence(&help.to_string());
        let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into())
            .collect();
        if takes_value && !default.is_empty() {
            said.push_str(&format!(" Default: {}.", default.join(", ")));
        }
        let _ = writeln!(out, ".RS\n.PP\n{}: {}\n.RE", shown(arg, false), escape(&said));
    }
}

/// An argument as roff: `--config FILE` (with its value when `with_value`), or `FILE`.
fn shown(arg: &clap::Arg, with_value: bool) -> String {
    let value = arg
        .get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
    let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
    match arg.get_long() {
        Some(long) if takes_value && with_value => format!("\\fB\\-\\-{}\\fR \\fI{}\\fR", escape(long), escape(&value)),
        Some(long) => format!("\\fB\\-\\-{}\\fR", escape(long)),
        None => format!("\\fI{}\\fR", escape(&value)),
    }
}

/// clap drops a doc comment's final period; a sentence in the page has one.
fn sentence(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() || s.ends_with(['.', '?', '!']) {
        s.to_string()
    } else {
        format!("{s}.")
    }
}

fn about(cmd: &clap::Command) -> String {
    cmd.get_long_about()
        .or_else(|| cmd.get_about())
        .map(|a| a.to_string())
        .unwrap_or_default()
}

fn section(out: &mut String, title: &str) {
    let _ = writeln!(out, ".SH {title}");
}

/// Plain text made safe for roff: backslashes print, hyphens are not broken.
fn escape(s: &str) -> String {
    s.replace('\\', "\\e").replace('-', "\\-")
}

/// Text lines, escaped, none starting a roff request.
fn text(out: &mut String, s: &str) {
    for line in s.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('.') || line.starts_with('\'') {
            out.push_str("\\&");
        }
        out.push_str(&escape(line));
        out.push('\n');
    }
}

const DESCRIPTION: &str = "A reverse proxy in front of the Douyin Open Platform. Callers send plain API calls with \
their own gateway key; the gateway attaches the app's client_token, a user's access_token or a \
biz token, refreshes tokens before they expire and when the platform rejects one, and replays \
the call once. Tokens are kept in SQLite, Redis or memory, encrypted.";

/// The sections clap has no words for: (title, paragraphs separated by blank lines).
const SECTIONS: [(&str, &str); 6] = [
    (
        "CONFIGURATION",
        "One TOML file, config.toml unless --config (or check's FILE) names another. Unknown keys are errors. \
`douyin-gateway check FILE` lists every problem with its line and key, each once.

Secrets are never in the file: keys ending in _env name an environment variable, keys ending in \
_file a file. Caller and admin keys are stored as their SHA-256 (`douyin-gateway hash-key`).

serve and check refuse the example keys of config.toml (\"example-admin-key\", \"example-caller-key\"), \
the all-zero hashes and the awxxxxxxxxxxxxxx client_key of deploy/, and secrets whose value is a \
placeholder (replace-me..., change-me..., example...), naming each key; --allow-example-keys starts a \
deliberate test install with a warning for each.

Every key is described in docs/configuration.md of the source repository; config.toml there is a \
commented example.",
    ),
    (
        "SIGNALS",
        "SIGHUP: reload the configuration file. A file that fails validation, or holds example keys the \
start refused, is refused (each problem is logged) and the running configuration keeps serving.

SIGTERM, SIGINT: stop accepting connections, finish the calls in flight for up to \
shutdown_grace_ms, flush the token store, exit 0.",
    ),
    (
        "FILES",
        "config.toml: the configuration (in the working directory unless --config names another).

data/tokens.db: the SQLite token store of the example configuration ([store] path, relative to the \
working directory).

The source repository's deploy/douyin-gateway.service and deploy/douyin-gateway.env install it under \
systemd: the binary in /usr/local/bin, the configuration in /etc/douyin-gateway/config.toml, its \
secrets in /etc/douyin-gateway/env (mode 0600), the store under /var/lib/douyin-gateway. The unit's \
ExecStartPre runs check first.",
    ),
    (
        "ENVIRONMENT",
        "RUST_LOG: the log filter (default info), e.g. RUST_LOG=debug or RUST_LOG=access=off. Logs go to \
standard error, as text or JSON ([log] format).

The variables the configuration's *_env keys name, e.g. DOUYIN_CLIENT_SECRET (an app's \
client_secret_env) and DOUYIN_GATEWAY_KEY (the store's encryption_key_env, from `douyin-gateway \
keygen`).",
    ),
    (
        "EXIT STATUS",
        "0: success (serve: stopped by SIGTERM or SIGINT after draining; check: the configuration is valid; \
healthcheck: /healthz answered 200).

1: the configuration is invalid or refused, a secret is missing, a listener cannot be bound, or the \
command failed otherwise; what went wrong is on standard error (check: standard output).

2: the command line is wrong (an unknown command or option).",
    ),
    (
        "SEE ALSO",
        "README.md, docs/configuration.md and docs/operations.md in the source repository; \
`douyin-gateway COMMAND --help`.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_never_starts_a_request() {
        let mut out = String::new();
        text(&mut out, ".SH not a section\n'x\na-b");
        assert_eq!(out, "\\&.SH not a section\n\\&'x\na\\-b\n");
    }
}
