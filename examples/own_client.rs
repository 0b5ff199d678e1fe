//! Your own HTTP client, with the gateway's token layers and no gateway process.
//!
//! A Rust service that calls the platform itself can still stop handling tokens: wrap its own
//! client (here hyper's pooled client) in [`AttachTokenLayer`] and [`RetryLayer`]. Every request
//! then leaves with the app's client_token (fetched once, cached, refreshed in the background),
//! and a request the platform answers with a token rejection is replayed once, byte for byte,
//! with a new token.
//!
//! ```text
//! cargo run --example own_client                 # against a sandbox it starts itself
//! cargo run --example own_client -- http://127.0.0.1:8081 CLIENT_KEY SECRET_FILE
//! ```
//!
//! What it does: calls `POST /api/douyin/v1/role/check/` (a client_token API), revokes the
//! app's client tokens at the sandbox (as a competing fetcher or the platform would), and calls
//! again: the second call is rejected, refreshed and replayed, and still answers 200.

use bytes::Bytes;
use douyin_gateway::config::{Config, Inject};
use douyin_gateway::proxy::{AttachTokenLayer, RetryLayer, TokenFor};
use douyin_gateway::token::{TokenKey, Tokens};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use tower::ServiceExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// What a run saw: each call's status and the platform's answer.
#[derive(Debug)]
pub struct Report {
    /// Status and JSON body of the call before the revocation, and the one after.
    pub calls: Vec<(u16, serde_json::Value)>,
}

/// The config a program of its own needs: where the platform is, the app, a store.
fn config(base_url: &str, client_key: &str, secret_file: &std::path::Path) -> Result<Config, Error> {
    let text = format!(
        "[upstream]\nbase_url = {base_url:?}\n\n[store]\nkind = \"memory\"\n\n\
         [[apps]]\nname = \"main\"\nclient_key = {client_key:?}\nclient_secret_file = {:?}\n",
        secret_file.display().to_string()
    );
    Ok(Config::load_str(&text, "own_client")?.0)
}

/// Calls the platform at `base_url` twice through one's own client wrapped in the token layers,
/// revoking the app's client tokens in between (a sandbox control).
pub async fn run(base_url: &str, client_key: &str, secret_file: &std::path::Path) -> Result<Report, Error> {
    let tokens: Arc<Tokens> = Tokens::from_config(config(base_url, client_key, secret_file)?).await?;
    // Your own client: anything that is a tower Service of http requests will do.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let need = TokenFor {
        key: TokenKey::client("main".into()),
        inject: Inject::Header,
    };
    // Outermost first, as in the gateway: attach the token, then retry once on a rejection.
    let api = tower::ServiceBuilder::new()
        .layer(AttachTokenLayer::fixed(Arc::clone(&tokens), need))
        .layer(RetryLayer::new(tokens))
        .service(client.clone());
    let call = || async {
        let req = http::Request::post(format!("{base_url}/api/douyin/v1/role/check/"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"douyin_shortid":"demo","role_labels":["a"]}"#,
            )))?;
        let resp = api.clone().oneshot(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, Error>((status, serde_json::from_slice(&body)?))
    };
    let mut calls = vec![call().await?];
    // Something else invalidates the app's tokens (a sandbox control; on the real platform: two
    // newer fetches elsewhere).
    let revoke = http::Request::post(format!("{base_url}/sandbox/revoke"))
        .body(Full::new(Bytes::from(format!("{{\"client_key\":{client_key:?}}}"))))?;
    client.request(revoke).await?;
    calls.push(call().await?);
    Ok(Report { calls })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (report, _sandbox) = match args.as_slice() {
        [base, key, secret] => (run(base, key, std::path::Path::new(secret)).await?, None),
        [] => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let sandbox = douyin_gateway::sandbox::start(Default::default(), listener)?;
            let (key, secret) = douyin_gateway::sandbox::DEFAULT_APP
                .split_once(':')
                .expect("key:secret");
            let secret_file = std::env::temp_dir().join(format!("own-client-secret-{}", std::process::id()));
            std::fs::write(&secret_file, secret)?;
            let report = run(&sandbox.url(), key, &secret_file).await;
            std::fs::remove_file(&secret_file)?;
            (report?, Some(sandbox))
        }
        _ => return Err("usage: own_client [BASE_URL CLIENT_KEY SECRET_FILE]".into()),
    };
    for (i, (status, body)) in report.calls.iter().enumerate() {
        println!("call {}: HTTP {status} {body}", i + 1);
    }
    Ok(())
}
