//! The Redis deployments operators run, built by each test from real `redis-server` processes on free
//! loopback ports: a Redis Cluster (`--cluster-enabled yes`, then `redis-cli --cluster create`),
//! a master with a replica watched by three sentinels (`redis-server FILE --sentinel`), and a hung
//! node (a listener that accepts and never answers). Nothing is saved to disk; everything stops when
//! dropped.

use super::app::{eventually, loopback};

use std::{path::PathBuf, time::Duration};

/// A scratch directory of the test's own (cluster node files, sentinel configuration).
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("connect-facade-redis-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// A Redis Cluster of `masters` masters, each with `replicas_each` replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    dir: PathBuf,
}

/// A free port whose cluster bus port (the port + 10,000) is free too: a node whose bus port is
/// taken by another test's socket never starts.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        let bus = std::net::TcpListener::bind(("127.0.0.1", port.saturating_add(10_000)));
        if port <= 55_535 && bus.is_ok() {
            return port;
        }
    }
}

impl RedisCluster {
    pub async fn start(masters: usize, replicas_each: usize) -> Self {
        let dir = scratch();
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas_each) {
            let port = free_cluster_port();
            let node = RedisServer::start_on(
                port,
                vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    dir.join(format!("nodes-{port}.conf")).display().to_string(),
                    "--cluster-node-timeout".into(),
                    "1000".into(),
                    // A replica fails over whatever the age of its data (it may not have finished
                    // its first sync in a test this short).
                    "--cluster-replica-validity-factor".into(),
                    "0".into(),
                    "--dir".into(),
                    dir.display().to_string(),
                ],
            )
            .await;
            nodes.push(node);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let created = tokio::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args([
                "--cluster-replicas",
                &replicas_each.to_string(),
                "--cluster-yes",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .expect("redis-cli is installed beside redis-server");
        assert!(created.success(), "redis-cli --cluster create");
        let cluster = Self { nodes, dir };
        cluster.wait_until_ok().await;
        cluster
    }

    /// Waits until every live node says the cluster is ok and knows every slot's master.
    pub async fn wait_until_ok(&self) {
        let started = std::time::Instant::now();
        loop {
            let mut ok = true;
            for node in self.nodes.iter().filter(|node| node.is_running()) {
                // A bulk string: its length, then `cluster_state:…` first.
                let info = node
                    .lines(&["CLUSTER", "INFO"], 2)
                    .await
                    .unwrap_or_default();
                ok &= info.get(1).is_some_and(|line| line == "cluster_state:ok");
            }
            if ok {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the cluster is ok within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node that is master of `key`'s slot now: the one that answers for it (the others,
    /// replicas included, redirect with MOVED).
    pub async fn master_of(&self, key: &str) -> usize {
        let started = std::time::Instant::now();
        loop {
            for (index, node) in self.nodes.iter().enumerate() {
                if node.is_running()
                    && node
                        .command(&["EXISTS", key])
                        .await
                        .is_some_and(|answer| answer.starts_with(':'))
                {
                    return index;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "a master serves {key} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A master, its replica, and three sentinels watching them as `mymaster`.
pub struct RedisSentinels {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<RedisServer>,
    dir: PathBuf,
}

pub const SERVICE: &str = "mymaster";

impl RedisSentinels {
    pub async fn start() -> Self {
        let dir = scratch();
        let master = RedisServer::start().await;
        let replica = RedisServer::start_with(vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            master.port.to_string(),
        ])
        .await;
        let mut sentinels = Vec::new();
        for index in 0..3 {
            let port = free_port();
            let file = dir.join(format!("sentinel-{index}.conf"));
            std::fs::write(
                &file,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {SERVICE} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {SERVICE} 1000\n\
                     sentinel failover-timeout {SERVICE} 5000\n\
                     sentinel parallel-syncs {SERVICE} 1\n",
                    dir = dir.display(),
                    master = master.port,
                ),
            )
            .expect("a sentinel configuration");
            sentinels.push(RedisServer::start_sentinel(port, file).await);
        }
        let group = Self {
            master,
            replica,
            sentinels,
            dir,
        };
        // The sentinels know the replica (from the master) before the test relies on a failover.
        let started = std::time::Instant::now();
        while group.sentinels[0]
            .command(&["SENTINEL", "REPLICAS", SERVICE])
            .await
            .is_none_or(|answer| answer == "*0")
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the sentinels find the replica within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        group
    }

    /// `redis+sentinel://` naming the three sentinels.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|sentinel| format!("127.0.0.1:{}", sentinel.port))
            .collect();
        format!("redis+sentinel://{}/{SERVICE}", sentinels.join(","))
    }

    /// The master's port, as the sentinels name it.
    pub async fn master_port(&self) -> Option<u16> {
        let answer = self.sentinels[0]
            .lines(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE], 5)
            .await?;
        answer.get(4)?.parse().ok()
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for sentinel in &mut self.sentinels {
            sentinel.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis address that accepts connections and never answers (a stuck node, a dropped route).
pub struct HungRedis {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl HungRedis {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let port = listener.local_addr().expect("bound").port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Self { port, task }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for HungRedis {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `redis-server` of the test's own, on a free loopback port: never the machine's shared one on
/// 6379, so tests and CI runs never see each other's keys. Nothing is saved to disk unless a test
/// asks (AOF), and then in a scratch directory of its own, never the working directory; it stops
/// when dropped.
pub struct RedisServer {
    child: Option<std::process::Child>,
    pub port: u16,
    /// Its working directory (before `extra`, which may name another).
    dir: PathBuf,
    /// `redis-server`'s arguments before the port: a sentinel's configuration file.
    leading: Vec<String>,
    extra: Vec<String>,
}

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(loopback())
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

impl RedisServer {
    pub async fn start() -> Self {
        Self::start_with(Vec::new()).await
    }

    /// With more `redis-server` arguments (a TLS port, ACL users…); the plain port stays open for
    /// the test's own commands.
    pub async fn start_with(extra: Vec<String>) -> Self {
        Self::start_on(free_port(), extra).await
    }

    /// On `port`, with more arguments.
    pub async fn start_on(port: u16, extra: Vec<String>) -> Self {
        let mut server = Self {
            child: None,
            port,
            dir: scratch(),
            leading: Vec::new(),
            extra,
        };
        server.restart().await;
        server
    }

    /// A sentinel on `port`, configured by `file` (which the sentinel rewrites as it learns).
    pub async fn start_sentinel(port: u16, file: std::path::PathBuf) -> Self {
        let mut server = Self {
            child: None,
            port,
            dir: scratch(),
            leading: vec![file.display().to_string()],
            extra: vec!["--sentinel".into()],
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (as a crash would: SIGKILL, nothing saved).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on its port, empty, and waits until it answers PING.
    pub async fn restart(&mut self) {
        self.kill();
        let child = std::process::Command::new("redis-server")
            .args(&self.leading)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            // A sentinel's configuration file names its own directory.
            .args(self.leading.is_empty().then_some(["--dir".as_ref(), self.dir.as_os_str()]).into_iter().flatten())
            .args(&self.extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect(
                "this test needs redis-server on the PATH: install it (Debian: apt-get install redis-server); each test starts its own on a free port",
            );
        self.child = Some(child);
        let this = &*self;
        eventually(
            "redis-server answers",
            std::time::Duration::from_secs(10),
            || async move { this.command(&["PING"]).await.as_deref() == Some("+PONG") },
        )
        .await;
    }

    /// Whether the facade's bucket for us-east-1 (under the default key prefix) is in Redis.
    pub async fn holds_the_account_bucket(&self) -> bool {
        self.command(&["EXISTS", "connect-facade:{us-east-1}:account"])
            .await
            .as_deref()
            == Some(":1")
    }

    /// Sends one command (inline protocol) and returns the first line of the answer.
    pub async fn command(&self, words: &[&str]) -> Option<String> {
        self.lines(words, 1).await.map(|mut lines| lines.remove(0))
    }

    /// Sends one command and returns the first `count` lines of the answer (RESP, unparsed).
    pub async fn lines(&self, words: &[&str], count: usize) -> Option<Vec<String>> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .ok()?;
            stream
                .write_all(format!("{}\r\n", words.join(" ")).as_bytes())
                .await
                .ok()?;
            let mut reader = tokio::io::BufReader::new(stream);
            let mut lines = Vec::new();
            while lines.len() < count {
                let mut line = String::new();
                if reader.read_line(&mut line).await.ok()? == 0 {
                    break;
                }
                lines.push(line.trim_end().to_owned());
            }
            (!lines.is_empty()).then_some(lines)
        };
        tokio::time::timeout(std::time::Duration::from_secs(2), exchange)
            .await
            .ok()
            .flatten()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
