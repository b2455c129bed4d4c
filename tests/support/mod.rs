//! Test support: the real cluster's addresses, a test driver that produces
//! and consumes through mqaudit's own codec, and a protocol fake for what a
//! real broker cannot do on demand.

#![allow(dead_code)]

pub mod driver;
pub mod fake;
pub mod fake_cluster;
pub mod java;
pub mod postgres;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Which brokers a test cluster runs (`scripts/rocketmq-cluster.sh --broker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// rocketmq-rust 1.0.0.
    Rust,
    /// Apache RocketMQ 4.9.8 (Java).
    Java4,
    /// Apache RocketMQ 5.3.3 (Java).
    Java5,
}

impl Flavour {
    /// The `--broker` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::Rust => "rust",
            Flavour::Java4 => "java4",
            Flavour::Java5 => "java5",
        }
    }

    fn parse(text: &str) -> Flavour {
        match text {
            "rust" => Flavour::Rust,
            "java4" => Flavour::Java4,
            "java5" => Flavour::Java5,
            other => panic!("unknown MQAUDIT_BROKER {other:?} in cluster.env"),
        }
    }

    /// A Java broker (4.9.8 or 5.3.3).
    pub fn is_java(self) -> bool {
        self != Flavour::Rust
    }
}

/// Addresses of the real test cluster started by `scripts/rocketmq-cluster.sh`.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The brokers it runs.
    pub flavour: Flavour,
    /// Directory the cluster runs in.
    pub dir: PathBuf,
    /// Name server `host:port`.
    pub namesrv: String,
    /// Cluster name.
    pub name: String,
    /// broker-a master (ASYNC_MASTER, ASYNC_FLUSH).
    pub broker_a: String,
    /// broker-a's slave.
    pub broker_a_slave: String,
    /// broker-b master (SYNC_MASTER, SYNC_FLUSH).
    pub broker_b: String,
    /// Java flavours: the distribution (`lib/*.jar`) and its version.
    pub java: Option<JavaDist>,
}

/// A Java cluster's Apache RocketMQ distribution.
#[derive(Debug, Clone)]
pub struct JavaDist {
    /// Its root (`lib/`, `conf/`).
    pub home: PathBuf,
    /// `4.9.8` or `5.3.3`.
    pub version: String,
    /// The cluster's `mqadmin` wrapper script.
    pub mqadmin: PathBuf,
}

/// The running test cluster. A missing cluster is an error, never a skip:
/// `scripts/test.sh` starts one and sets `MQAUDIT_CLUSTER_ENV`.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let path = std::env::var("MQAUDIT_CLUSTER_ENV").unwrap_or_else(|_| {
            panic!(
                "MQAUDIT_CLUSTER_ENV is not set: these tests need the real RocketMQ test cluster. \
                 Run scripts/test.sh, or scripts/rocketmq-cluster.sh up DIR and set \
                 MQAUDIT_CLUSTER_ENV=DIR/cluster.env"
            )
        });
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read cluster env {path}: {e}"));
        let vars: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| {
            vars.get(k)
                .unwrap_or_else(|| panic!("{path} lacks {k}"))
                .to_string()
        };
        Cluster {
            // Written by every version of the script that knows flavours;
            // older cluster.env files are rocketmq-rust ones.
            flavour: Flavour::parse(vars.get("MQAUDIT_BROKER").copied().unwrap_or("rust")),
            dir: PathBuf::from(get("MQAUDIT_CLUSTER_DIR")),
            namesrv: get("NAMESRV_ADDR"),
            name: get("ROCKETMQ_CLUSTER"),
            broker_a: get("BROKER_A_ADDR"),
            broker_a_slave: get("BROKER_A_SLAVE_ADDR"),
            broker_b: get("BROKER_B_ADDR"),
            java: vars.get("MQADMIN").map(|mqadmin| JavaDist {
                home: PathBuf::from(get("ROCKETMQ_DIST")),
                version: get("ROCKETMQ_VERSION"),
                mqadmin: PathBuf::from(mqadmin),
            }),
        }
    })
}

/// A name unique to this test process and call, so parallel tests never
/// share topics or groups on the shared cluster.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{n}_{nanos:x}", std::process::id())
}

/// Poll `check` until it returns `Some`, or panic after `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {seconds} s waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Poll `check` until it returns `Ok`, or panic after `seconds` with the
/// last `Err` it gave: what was still wrong.
pub async fn eventually_explained<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(why) => why,
        };
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {seconds} s waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A real cluster of the test's own (same script, fresh ports and store), for
/// tests that kill or restart brokers; stopped on drop.
pub struct PrivateCluster {
    /// Its directory.
    pub dir: PathBuf,
    env: BTreeMap<String, String>,
}

/// `scripts/rocketmq-cluster.sh`.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/rocketmq-cluster.sh")
}

impl PrivateCluster {
    /// Start one of the shared cluster's flavour (blocking: call from
    /// `spawn_blocking` in async tests).
    pub fn start() -> PrivateCluster {
        PrivateCluster::start_with(&[])
    }

    /// [`PrivateCluster::start`] with extra `up` options (`--acl`).
    pub fn start_with(options: &[&str]) -> PrivateCluster {
        let dir = std::env::temp_dir().join(unique("mqaudit-private"));
        let status = std::process::Command::new(script())
            .arg("up")
            .arg(&dir)
            .arg("--broker")
            .arg(cluster().flavour.as_str())
            .args(options)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run cluster script");
        assert!(status.success(), "private cluster did not start");
        let text = std::fs::read_to_string(dir.join("cluster.env")).expect("cluster.env");
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PrivateCluster { dir, env }
    }

    /// A value of its cluster.env.
    pub fn get(&self, key: &str) -> &str {
        &self.env[key]
    }

    /// `stop`, `kill` or `start` one node (blocking).
    /// Run `scripts/rocketmq-cluster.sh ACTION DIR [ARGS]` on this cluster.
    pub fn run(&self, args: &[&str]) {
        let (action, rest) = args.split_first().expect("an action");
        let status = std::process::Command::new(script())
            .arg(action)
            .arg(&self.dir)
            .args(rest)
            .status()
            .expect("run cluster script");
        assert!(status.success(), "{args:?} failed");
    }

    pub fn node(&self, action: &str, node: &str) {
        let status = std::process::Command::new(script())
            .arg(action)
            .arg(&self.dir)
            .arg(node)
            .status()
            .expect("run cluster script");
        assert!(status.success(), "{action} {node} failed");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(script())
            .arg("down")
            .arg(&self.dir)
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child process killed on drop.
pub struct Daemon(pub std::process::Child);

impl Daemon {
    /// `mqaudit ARGS` (usually `serve ...`), its output discarded.
    pub fn mqaudit(args: &[&str]) -> Daemon {
        Daemon(
            std::process::Command::new(env!("CARGO_BIN_EXE_mqaudit"))
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start mqaudit"),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Now, in ms since the epoch, by the system clock the daemon reads.
pub fn now_ms() -> i64 {
    mqaudit::clock::Clock::system().now_ms()
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A `kB` field (`VmRSS:`, `VmHWM:`) of `/proc/PID/status` (`PID` may be
/// `self`), in KiB; `None` when the process or the field is gone.
pub fn proc_status_kib(pid: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
