//! The token engine and the compiled config a gateway runs on, built once at start: the engine's
//! settings and store, its subscribers (the token metrics, `[[notify]]`, the status page's lists),
//! the tokens the store holds, and the maintenance rounds.

use crate::config::Config;
use crate::conn::HeadBudget;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::state::Shared;
use crate::token::events::{FetchCounts, Observer, RecentErrors, RecentEvents};
use crate::token::Tokens;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Builds what every request and the admin listener share: the compiled config, the token engine
/// with its subscribers and the tokens the store holds, the metrics.
pub(super) async fn start(config: Config, budget: &Arc<HeadBudget>) -> Result<Arc<Shared>, String> {
    let metrics = Arc::new(Metrics::new());
    let client = crate::upstream::client(&config.upstream)?;
    let store_config = config.store.clone();
    let settings = crate::token::Settings::from_config(&config)?;
    let runtime = Runtime::build(config, &settings, &metrics)?;
    let store = Arc::new(crate::store::Store::open(&store_config).await?);
    for c in store.collectors() {
        metrics.register(c);
    }
    let notify = crate::notify::Notifier::start(&runtime.config.notify, &metrics)?;
    let tokens = Tokens::new(client, settings, store);
    // Who hears what the engine does: the token metrics, `[[notify]]`, the status page's lists.
    let recent_errors = Arc::new(RecentErrors::default());
    let fetch_counts = Arc::new(FetchCounts::default());
    let recent_events = Arc::new(RecentEvents::default());
    tokens.events().subscribe(metrics.token_observer());
    tokens.events().subscribe(notify);
    tokens
        .events()
        .subscribe(Arc::clone(&recent_errors) as Arc<dyn Observer>);
    tokens
        .events()
        .subscribe(Arc::clone(&fetch_counts) as Arc<dyn Observer>);
    tokens
        .events()
        .subscribe(Arc::clone(&recent_events) as Arc<dyn Observer>);
    let loaded = tokens.load().await.map_err(|e| e.to_string())?;
    if loaded > 0 {
        tracing::info!(tokens = loaded, "tokens loaded from the store");
    }
    Ok(Arc::new(Shared {
        runtime: arc_swap::ArcSwap::from_pointee(runtime),
        tokens,
        metrics,
        in_flight: Default::default(),
        head_budget: Arc::clone(budget),
        recent_errors,
        fetch_counts,
        recent_events,
    }))
}

/// The maintenance rounds (renewals, the store sweep) every `tokens.maintain_interval_ms`, until
/// `stop`.
pub(super) fn maintenance(shared: &Arc<Shared>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let tokens = Arc::clone(&shared.tokens);
    let every = Duration::from_millis(shared.runtime.load().config.tokens.maintain_interval_ms);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => tokens.maintain().await,
                _ = stop.changed() => break,
            }
        }
    })
}
