//! What the quota store keeps through a restart, a failover and memory pressure: the remembered
//! answers (`crate::replay`) are what tells a caller's retry that its association happened. A store
//! that neither persists nor replicates forgets them all at a restart; an eviction policy other than
//! `noeviction` under a `maxmemory` may drop them before their time (they carry a TTL, so every
//! `volatile-*` policy evicts them among the first). Read from `INFO` (allowed where `CONFIG` is
//! not, as on ElastiCache), and `CONFIG GET save` where it answers.

use super::Verdict;

/// What `INFO persistence`, `INFO replication` and `INFO memory` (and `CONFIG GET save`) say.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Durability {
    pub aof: bool,
    /// RDB save points (`CONFIG GET save`); `None` when CONFIG is not allowed.
    pub rdb: Option<bool>,
    pub replicas: u32,
    pub maxmemory: u64,
    pub policy: String,
}

impl Durability {
    /// From the text of `INFO` sections (every node's, for a cluster: the weakest counts).
    pub(super) fn read(info: &str, save: Option<&str>) -> Self {
        let field = |name: &str| {
            info.lines()
                .filter_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
                .collect::<Vec<_>>()
        };
        Self {
            aof: !field("aof_enabled").is_empty() && field("aof_enabled").iter().all(|v| *v == "1"),
            rdb: save.map(|points| !points.trim().is_empty()),
            replicas: field("connected_slaves")
                .iter()
                .filter_map(|v| v.parse().ok())
                .min()
                .unwrap_or(0),
            maxmemory: field("maxmemory")
                .iter()
                .filter_map(|v| v.parse().ok())
                .max()
                .unwrap_or(0),
            policy: field("maxmemory_policy")
                .into_iter()
                .find(|p| *p != "noeviction")
                .unwrap_or("noeviction")
                .to_owned(),
        }
    }

    pub(super) fn verdict(&self) -> Verdict {
        let persists = self.aof || self.rdb == Some(true);
        let mut problems = Vec::new();
        let mut fixes = Vec::new();
        if !persists && self.replicas == 0 {
            problems.push(format!(
                "it neither persists (AOF off, {}) nor replicates: a restart forgets every \
                 remembered answer",
                match self.rdb {
                    Some(true) => "RDB on",
                    Some(false) => "no RDB save points",
                    None => "RDB unknown: CONFIG is not allowed",
                }
            ));
            fixes.push(
                "turn on AOF (appendonly yes, appendfsync everysec) or add a replica (Sentinel, \
                 ElastiCache Multi-AZ)",
            );
        }
        if self.maxmemory > 0 && self.policy != "noeviction" {
            problems.push(format!(
                "maxmemory-policy {} can evict remembered answers before their time under memory \
                 pressure (they carry a TTL: volatile-* policies evict them among the first)",
                self.policy
            ));
            fixes.push(
                "use maxmemory-policy noeviction (under pressure writes fail and the facade falls \
                 back, answers are not lost) and size maxmemory for the replay window",
            );
        }
        if problems.is_empty() {
            return Verdict::Pass(format!(
                "remembered answers survive a restart or a failover ({}{} replica(s)); \
                 maxmemory-policy {}{}",
                if persists { "persisted, " } else { "" },
                self.replicas,
                self.policy,
                if self.maxmemory == 0 {
                    " (no maxmemory)"
                } else {
                    ""
                }
            ));
        }
        Verdict::warn(
            format!(
                "{}; a retry of a call whose answer was lost is then ALREADY_ASSOCIATED \
                 (remembered: false), or OK with --reconcile-associations",
                problems.join("; ")
            ),
            fixes.join("; "),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOLATILE: &str = "# Persistence\r\naof_enabled:0\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\n# Memory\r\nmaxmemory:104857600\r\nmaxmemory_policy:volatile-lru\r\n";

    #[test]
    fn a_store_that_forgets_at_a_restart_or_under_pressure_is_a_warning_naming_both() {
        let durability = Durability::read(VOLATILE, Some(""));
        assert_eq!(
            durability,
            Durability {
                aof: false,
                rdb: Some(false),
                replicas: 0,
                maxmemory: 104_857_600,
                policy: "volatile-lru".into()
            }
        );
        let Verdict::Warn { message, .. } = durability.verdict() else {
            panic!("a warning")
        };
        assert!(
            message.contains("neither persists") && message.contains("volatile-lru"),
            "{message}"
        );
    }

    #[test]
    fn a_replicated_or_persisted_store_without_eviction_passes() {
        let replicated =
            "aof_enabled:0\r\nconnected_slaves:1\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n";
        assert!(Durability::read(replicated, None).verdict().passed());
        let persisted = "aof_enabled:1\r\nconnected_slaves:0\r\nmaxmemory:1000\r\nmaxmemory_policy:noeviction\r\n";
        assert!(Durability::read(persisted, None).verdict().passed());
        let rdb =
            "aof_enabled:0\r\nconnected_slaves:0\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n";
        assert!(
            Durability::read(rdb, Some("3600 1 300 100"))
                .verdict()
                .passed()
        );
    }
}
