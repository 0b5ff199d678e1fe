//! Records the git commit the binary is built from, for `--version` and
//! `douyin_gateway_build_info` ("unknown" outside a git checkout).

fn main() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DOUYIN_GATEWAY_GIT={commit}");
    tools_for_tests();
    // A new commit changes HEAD (or the branch it points at).
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// Tests that need a program (Chromium, curl, promtool, redis-server) are compiled as ignored,
/// with the reason, where it is missing, so `cargo test` reports them as ignored rather than
/// passing them silently. Under CI they always run (and fail if the program is missing).
/// Installed one since the last build? `touch build.rs`.
///
/// `has_redis`: a Redis for the shared-store tests, theirs (`redis-server`, started on a unix
/// socket) or the one `REDIS_URL` names (which must then answer: a server is not probed here,
/// as what answers at build time need not answer when the tests run).
fn tools_for_tests() {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    let on_path =
        |bin: &str| std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()));
    for (cfg, bins) in [
        ("has_chromium", &["chromium", "chromium-browser"][..]),
        ("has_curl", &["curl"]),
        ("has_promtool", &["promtool"]),
        ("has_redis_server", &["redis-server"]),
        ("has_kubernetes_validate", &["kubernetes-validate"]),
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if ci || bins.iter().any(|b| on_path(b)) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    println!("cargo::rustc-check-cfg=cfg(has_redis)");
    if ci || on_path("redis-server") || std::env::var("REDIS_URL").is_ok_and(|u| !u.is_empty()) {
        println!("cargo::rustc-cfg=has_redis");
    }
    println!("cargo::rerun-if-env-changed=REDIS_URL");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=PATH");
}
