//! Routes: one facade for many Connect instances in many AWS accounts and regions (`--routes`).
//!
//! - [`spec`] reads and checks the routes file;
//! - [`router`] builds each route's client and middleware, and finds a call's route;
//! - [`reload_on_change`] replaces the routes on SIGHUP and when the file changes. A file that cannot
//!   be used is refused with its name and line, and the routes in use stay.

pub mod router;
pub mod spec;

use std::{path::PathBuf, sync::Arc, time::Duration};

pub use spec::RoutesError;

use crate::{metrics::Metrics, reload::Triggers};
use router::Router;

/// Re-reads `path` on SIGHUP, and every `interval` when its contents changed, until aborted.
pub fn reload_on_change(
    router: Arc<Router>,
    path: PathBuf,
    interval: Duration,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let mut triggers = Triggers::new(interval, "the routes file");
    let mut seen = std::fs::read(&path).ok();
    tokio::spawn(async move {
        loop {
            let forced = triggers.next().await;
            let contents = std::fs::read(&path).ok();
            if contents == seen && !forced {
                continue;
            }
            seen = contents;
            match spec::read(&path) {
                Ok(specs) => {
                    router.replace(&specs).await;
                    metrics.routes_reloaded(true, specs.len());
                    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                    tracing::info!(file = %path.display(), routes = ?names, "routes reloaded");
                }
                Err(error) => {
                    metrics.routes_reloaded(false, router.table().routes().len());
                    tracing::error!(%error, "routes reload failed: still serving the previous routes");
                }
            }
        }
    })
}
