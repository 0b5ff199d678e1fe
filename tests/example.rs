//! `examples/own_client.rs` runs: a program's own client wrapped in the token-attaching and
//! retry layers calls the sandbox directly, with no gateway in between.

mod common;

#[allow(dead_code)] // its main() is the example's, not the test's
#[path = "../examples/own_client.rs"]
mod own_client;

use common::*;

#[tokio::test]
async fn own_client_gets_tokens_and_a_replay_from_the_layers() {
    let sb = sandbox().await;
    let secret = secret_file();
    let report = own_client::run(&sb.url(), CLIENT_KEY, secret.path()).await.unwrap();
    assert_eq!(report.calls.len(), 2);
    for (status, body) in &report.calls {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["err_no"], 0, "{body}");
    }
    // The replay carried the very bytes of the first attempt.
    assert_eq!(
        report.calls[0].1["data"]["body_sha256"],
        report.calls[1].1["data"]["body_sha256"]
    );
    let stats = sb.state.counters.json();
    // One token for the first call, one after the revocation: no more.
    assert_eq!(stats["client_token_calls"], 2, "{stats}");
    // The second call was rejected once, then replayed with the new token.
    assert_eq!(stats["api_rejected"], 1, "{stats}");
    assert_eq!(stats["api_calls"], 3, "{stats}");
}
