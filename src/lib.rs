//! douyin-gateway: a reverse proxy that attaches Douyin Open Platform
//! credentials to plain calls, refreshes them when the platform rejects them,
//! and replays the call once.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
// The token futures (a fetch under a lease, a renewal inside the store sweep) nest deeper than the
// default limit lets an optimised build lay them out.
#![recursion_limit = "256"]

pub mod admin;
pub mod body;
pub mod caller;
pub mod canonical;
pub mod config;
pub mod conn;
pub mod demo;
pub mod error;
pub mod head;
pub mod inspect;
pub mod limit;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod provider_crypto;
pub mod proxy;
pub mod relay;
pub mod route;
pub mod runtime;
pub mod sandbox;
pub mod secret;
pub mod server;
pub mod signature;
pub mod state;
pub mod store;
pub mod token;
pub mod upstream;
pub mod vocab;
