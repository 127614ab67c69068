//! Where the shared store is, as `--quota-store` names it, parsed once at startup.
//!
//! | URL | topology |
//! |---|---|
//! | `redis://[USER:PASS@]HOST:PORT[/DB]`, `rediss://…` | one node: a standalone Redis, or any node of a Redis Cluster (told apart when connecting) |
//! | `redis+cluster://[USER:PASS@]HOST:PORT[,HOST:PORT…]`, `rediss+cluster://…` | a Redis Cluster, from several seed nodes (ElastiCache's configuration endpoint is one) |
//! | `redis+sentinel://[USER:PASS@]HOST:PORT[,HOST:PORT…]/SERVICE`, `rediss+sentinel://…` | the master of SERVICE, found through its sentinels and again after a failover |
//!
//! The credentials and TLS (`rediss`) of a cluster or sentinel URL apply to every node, as in a
//! `rediss://` URL; a sentinel URL's credentials are the master's (sentinels without a password are
//! the usual setup). The password never shows: [`StoreAddress`]'s `Debug` and `Display` redact it.

use std::{fmt, str::FromStr};

/// How the replicas reach the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topology {
    /// One node: standalone, or a cluster node (cluster mode is detected when connecting).
    Node,
    /// A Redis Cluster, from its seed nodes.
    Cluster,
    /// The master of a Sentinel-monitored service.
    Sentinel { service: String },
}

/// A parsed `--quota-store` Redis URL.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreAddress {
    pub topology: Topology,
    /// One `redis://` or `rediss://` URL per node named (with the credentials and the database),
    /// as the `redis` crate reads them.
    pub nodes: Vec<String>,
    /// Whether the nodes are reached over TLS.
    pub tls: bool,
    /// The URL as given, for the redacted rendering.
    given: String,
}

impl StoreAddress {
    /// The one node of a `redis://` or `rediss://` URL.
    pub(crate) fn node(&self) -> &str {
        &self.nodes[0]
    }
}

/// Why a `--quota-store` URL is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0}: expected `redis://[USER:PASS@]HOST:PORT[/DB]`, `redis+cluster://HOST:PORT[,HOST:PORT…]` or \
     `redis+sentinel://HOST:PORT[,HOST:PORT…]/SERVICE` (`rediss` for TLS)"
)]
pub struct AddressError(String);

impl FromStr for StoreAddress {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| AddressError("no scheme".into()))?;
        let (tls, topology_name) = match scheme {
            "redis" => (false, ""),
            "rediss" => (true, ""),
            "redis+cluster" => (false, "cluster"),
            "rediss+cluster" => (true, "cluster"),
            "redis+sentinel" => (false, "sentinel"),
            "rediss+sentinel" => (true, "sentinel"),
            other => return Err(AddressError(format!("unknown scheme `{other}`"))),
        };
        let node_scheme = if tls { "rediss" } else { "redis" };
        // The credentials end at the last `@` (a password may hold `@`, `/` or `,`).
        let (credentials, rest) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let hosts: Vec<&str> = hosts.split(',').map(str::trim).collect();
        if hosts.iter().any(|host| host.is_empty()) {
            return Err(AddressError("a node without a host".into()));
        }
        let topology = match topology_name {
            "" if hosts.len() > 1 => {
                return Err(AddressError(format!(
                    "several nodes need `{node_scheme}+cluster://` or `{node_scheme}+sentinel://`"
                )));
            }
            "" => Topology::Node,
            "cluster" if !path.is_empty() => {
                return Err(AddressError(
                    "a cluster has one database, 0: no `/DB`".into(),
                ));
            }
            "cluster" => Topology::Cluster,
            _ => match path {
                "" => {
                    return Err(AddressError(
                        "no `/SERVICE` name after the sentinels".into(),
                    ));
                }
                service if service.contains('/') => {
                    return Err(AddressError(format!("`{service}` is not a service name")));
                }
                service => Topology::Sentinel {
                    service: service.to_owned(),
                },
            },
        };
        let credentials = credentials.map_or_else(String::new, |c| format!("{c}@"));
        let database = match &topology {
            Topology::Node if !path.is_empty() => format!("/{path}"),
            _ => String::new(),
        };
        let nodes = hosts
            .iter()
            .map(|host| format!("{node_scheme}://{credentials}{host}{database}"))
            .collect::<Vec<_>>();
        for node in &nodes {
            redis::Client::open(node.as_str())
                .map_err(|error| AddressError(format!("{}: {error}", redact(node))))?;
        }
        Ok(Self {
            topology,
            nodes,
            tls,
            given: text.to_owned(),
        })
    }
}

/// `text` with the password of its credentials replaced.
pub(crate) fn redact(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://<credentials>{}", &text[..scheme], &text[at..])
        }
        _ => text.to_owned(),
    }
}

impl fmt::Display for StoreAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.given))
    }
}

impl fmt::Debug for StoreAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact(&self.given))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StoreAddress, AddressError> {
        text.parse()
    }

    #[test]
    fn one_node_urls_keep_their_database_and_credentials() {
        let address = parse("rediss://app:s3cret@cache:6380/2").unwrap();
        assert_eq!(address.topology, Topology::Node);
        assert_eq!(address.nodes, ["rediss://app:s3cret@cache:6380/2"]);
        assert!(address.tls);
        assert_eq!(address.to_string(), "rediss://<credentials>@cache:6380/2");
        assert!(!format!("{address:?}").contains("s3cret"));
    }

    #[test]
    fn a_cluster_url_names_every_seed_with_the_same_credentials_and_tls() {
        let address = parse("rediss+cluster://u:p@a:7000, b:7001").unwrap();
        assert_eq!(address.topology, Topology::Cluster);
        assert_eq!(
            address.nodes,
            ["rediss://u:p@a:7000", "rediss://u:p@b:7001"]
        );
        assert!(parse("redis+cluster://a:7000/3").is_err(), "no database");
    }

    #[test]
    fn a_sentinel_url_names_the_sentinels_and_the_service() {
        let address = parse("redis+sentinel://:pw@s1:26379,s2:26379,s3:26379/mymaster").unwrap();
        assert_eq!(
            address.topology,
            Topology::Sentinel {
                service: "mymaster".into()
            }
        );
        assert_eq!(address.nodes.len(), 3);
        assert_eq!(address.nodes[1], "redis://:pw@s2:26379");
        assert!(!address.tls);
        let error = parse("redis+sentinel://s1:26379").unwrap_err();
        assert!(error.to_string().contains("SERVICE"), "{error}");
    }

    #[test]
    fn unknown_schemes_empty_hosts_and_several_plain_nodes_are_refused() {
        for bad in [
            "memcached://x",
            "cache:6379",
            "redis+cluster://a:1,,b:2",
            "redis://a:1,b:2",
            "redis://",
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
