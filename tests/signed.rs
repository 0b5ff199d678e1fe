//! Signed calls: the app's RSA keys in the config.

mod common;
use common::*;

fn keys_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys")
}

fn load_app(app: &str) -> Result<(), String> {
    let secret = secret_file();
    let text = TestConfig::new("http://127.0.0.1:9", secret.path()).app(app).render();
    douyin_gateway::config::Config::load_str(&text, "t")
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn check_reads_the_apps_rsa_keys_and_refuses_weak_or_unreadable_ones() {
    let k = keys_dir();
    for private in ["app-private.pem", "app-private-pkcs1.pem"] {
        load_app(&format!(
            "signing_key_file = {:?}\nsigning_key_version = \"2\"\nplatform_public_key_file = {:?}",
            k.join(private),
            k.join("platform-public.pem")
        ))
        .unwrap_or_else(|e| panic!("{private}: {e}"));
    }
    let err = load_app(&format!("signing_key_file = {:?}", k.join("weak-1024.pem"))).unwrap_err();
    assert!(err.contains("signing_key_file") && err.contains("2048"), "{err}");
    let err = load_app(&format!("signing_key_file = {:?}", k.join("app-public.pem"))).unwrap_err();
    assert!(err.contains("signing_key_file"), "{err}");
    let given_private = load_app(&format!(
        "platform_public_key_file = {:?}",
        k.join("platform-private.pem")
    ))
    .unwrap_err();
    assert!(given_private.contains("platform_public_key_file"), "{given_private}");
    let err = load_app("signing_key_env = \"DGW_TEST_NO_SUCH_KEY_VAR\"").unwrap_err();
    assert!(err.contains("DGW_TEST_NO_SUCH_KEY_VAR"), "{err}");
    let err = load_app(&format!(
        "signing_key_file = {:?}\nsigning_key_version = \"\"",
        k.join("app-private.pem")
    ))
    .unwrap_err();
    assert!(err.contains("signing_key_version"), "{err}");
    // A key's text never appears in what check says, even about a key in the wrong place.
    let pem = std::fs::read_to_string(k.join("platform-private.pem")).unwrap();
    for line in pem.lines().skip(1).take(3) {
        assert!(!given_private.contains(line), "{given_private}");
    }
}
