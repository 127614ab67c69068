//! Routes: one facade for many Connect instances in many AWS accounts and regions (`--routes`).
//!
//! - [`spec`] reads and checks the routes file;
//! - [`router`] builds each route's client and middleware, and finds a call's route;
//! - [`reload_on_change`] replaces the routes on SIGHUP and when the file changes. A file that cannot
//!   be used is refused with its name and line, and the routes in use stay.

mod metrics;
pub(crate) mod router;
pub(crate) mod spec;

use std::{path::PathBuf, sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

pub(crate) use spec::RoutesError;

pub(crate) use metrics::RouteMetrics;

use crate::serving::reload::Triggers;
use router::Router;

/// Re-reads `path` on SIGHUP, and every `interval` when its contents changed, until `stop`: the
/// task, to spawn when serving starts (SIGHUP is watched from now).
pub fn reload_on_change(
    router: Arc<Router>,
    path: PathBuf,
    interval: Duration,
    metrics: RouteMetrics,
    stop: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let mut triggers = Triggers::new(interval, "the routes file", stop);
    let mut seen = std::fs::read(&path).ok();
    let mut in_use = spec::read(&path).unwrap_or_default();
    async move {
        while let Some(forced) = triggers.next().await {
            let contents = std::fs::read(&path).ok();
            if contents == seen && !forced {
                continue;
            }
            seen = contents;
            match spec::read(&path) {
                Ok(specs) => {
                    router.replace(&specs).await;
                    metrics.reloaded(true, specs.len());
                    let change = Change::between(&in_use, &specs);
                    tracing::info!(
                        file = %path.display(),
                        added = ?change.added,
                        removed = ?change.removed,
                        changed = ?change.changed,
                        routes = specs.len(),
                        "routes reloaded"
                    );
                    in_use = specs;
                }
                Err(error) => {
                    metrics.reloaded(false, router.table().routes().len());
                    tracing::error!(%error, "routes reload failed: still serving the previous routes");
                }
            }
        }
    }
}

/// What a reload changed, by route name, for its log line.
#[derive(Debug, Default, PartialEq)]
struct Change<'a> {
    added: Vec<&'a str>,
    removed: Vec<&'a str>,
    changed: Vec<&'a str>,
}

impl<'a> Change<'a> {
    fn between(before: &'a [spec::RouteSpec], after: &'a [spec::RouteSpec]) -> Self {
        let find = |specs: &'a [spec::RouteSpec], name: &str| specs.iter().find(|s| s.name == name);
        let mut change = Change::default();
        for route in after {
            match find(before, &route.name) {
                None => change.added.push(route.name.as_str()),
                Some(old) if old != route => change.changed.push(route.name.as_str()),
                Some(_) => {}
            }
        }
        for route in before {
            if find(after, &route.name).is_none() {
                change.removed.push(route.name.as_str());
            }
        }
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_names_what_it_added_removed_and_changed() {
        let before = spec::parse(
            "routes:\n  - {name: a, instances: [x], region: r}\n  - {name: b, instances: [y], region: r}\n",
            "before",
        )
        .unwrap();
        let after = spec::parse(
            "routes:\n  - {name: a, instances: [x, z], region: r}\n  - {name: c, instances: [y], region: r}\n",
            "after",
        )
        .unwrap();
        assert_eq!(
            Change::between(&before, &after),
            Change {
                added: vec!["c"],
                removed: vec!["b"],
                changed: vec!["a"],
            }
        );
    }
}
