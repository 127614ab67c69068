//! Routes: one facade for many Connect instances in many AWS accounts and regions (`--routes`).
//!
//! - [`spec`] reads and checks the routes file;
//! - [`router`] builds each route's client and middleware, finds a call's route, and replaces the
//!   routes when a reload ([`crate::reload`]) brings a new file or new middleware settings. A file
//!   that cannot be used is refused with its name and line, and the routes in use stay.

mod metrics;
pub(crate) mod router;
pub(crate) mod spec;

pub(crate) use spec::RoutesError;

pub(crate) use metrics::RouteMetrics;

/// What a reload changed, by route name, for its log line.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Change<'a> {
    pub added: Vec<&'a str>,
    pub removed: Vec<&'a str>,
    pub changed: Vec<&'a str>,
}

impl<'a> Change<'a> {
    pub(crate) fn between(before: &'a [spec::RouteSpec], after: &'a [spec::RouteSpec]) -> Self {
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
