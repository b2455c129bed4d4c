//! The real Java client (`tests/java/MqTestClient.java`, compiled here with
//! `javac` against the cluster's own Apache RocketMQ distribution) and the
//! distribution's `mqadmin`, for tests on Java brokers.
//!
//! The client writes message trace exactly as applications do (it is the
//! Apache client, not ours), so audit tests on Java brokers read real trace
//! records. `mqadmin` is an oracle we did not write: tests compare the
//! exporter's numbers with its tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use super::{Cluster, JavaDist, cluster, unique};

/// The compiled client for one distribution.
#[derive(Debug)]
pub struct JavaClient {
    dist: JavaDist,
    namesrv: String,
    classpath: String,
    logback: PathBuf,
    home: PathBuf,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The distribution's class path: `classpath.txt`'s order when present,
/// else every jar in `lib/` (an Apache binary distribution).
fn dist_classpath(home: &Path) -> String {
    let listed = std::fs::read_to_string(home.join("classpath.txt")).ok();
    let jars: Vec<PathBuf> = match listed {
        Some(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| home.join(l.trim()))
            .collect(),
        None => {
            let mut jars: Vec<PathBuf> = std::fs::read_dir(home.join("lib"))
                .unwrap_or_else(|e| panic!("{}: {e}", home.join("lib").display()))
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "jar"))
                .collect();
            jars.sort();
            jars
        }
    };
    jars.iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// The Java client of the running (Java) test cluster, compiled once per
/// test process. Panics, naming what is missing, on a rocketmq-rust cluster
/// or without `javac`.
pub fn client() -> &'static JavaClient {
    static CLIENT: OnceLock<JavaClient> = OnceLock::new();
    CLIENT.get_or_init(|| JavaClient::compile(cluster()))
}

impl JavaClient {
    fn compile(c: &Cluster) -> JavaClient {
        let dist = c.java.clone().unwrap_or_else(|| {
            panic!(
                "this test needs a Java cluster (scripts/rocketmq-cluster.sh up DIR --broker java4|java5); \
                 the running cluster is {}",
                c.flavour.as_str()
            )
        });
        let dist_cp = dist_classpath(&dist.home);
        let out =
            std::env::temp_dir().join(unique(&format!("mqaudit-java-client-{}", dist.version)));
        std::fs::create_dir_all(&out).expect("class dir");
        let status = std::process::Command::new("javac")
            .arg("-nowarn")
            .arg("-d")
            .arg(&out)
            .arg("-cp")
            .arg(&dist_cp)
            .arg(repo().join("tests/java/MqTestClient.java"))
            .stderr(Stdio::inherit())
            .status()
            .unwrap_or_else(|e| {
                panic!("javac not found ({e}): install a JDK (Debian: openjdk-17-jdk-headless)")
            });
        assert!(
            status.success(),
            "javac failed on tests/java/MqTestClient.java"
        );
        let home = out.join("home");
        std::fs::create_dir_all(&home).expect("client home");
        JavaClient {
            namesrv: c.namesrv.clone(),
            classpath: format!("{}:{dist_cp}", out.display()),
            logback: repo().join("tests/java/logback-client.xml"),
            home,
            dist,
        }
    }

    /// The same client for another cluster of the same distribution (a
    /// private cluster a test kills brokers of).
    pub fn with_namesrv(&self, namesrv: &str) -> JavaClient {
        JavaClient {
            dist: self.dist.clone(),
            namesrv: namesrv.to_string(),
            classpath: self.classpath.clone(),
            logback: self.logback.clone(),
            home: self.home.clone(),
        }
    }

    /// The distribution's version (`4.9.8`, `5.3.3`).
    pub fn version(&self) -> &str {
        &self.dist.version
    }

    /// True for a 5.x client and broker.
    pub fn is_v5(&self) -> bool {
        self.dist.version.starts_with('5')
    }

    fn java(&self, args: &[String]) -> Command {
        let mut cmd = Command::new("java");
        cmd.args([
            "-Xms32m",
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-XX:-UsePerfData",
        ])
        .arg(format!("-Duser.home={}", self.home.display()))
        .arg(format!(
            "-Dlogback.configurationFile={}",
            self.logback.display()
        ))
        .arg(format!(
            "-Drmq.logback.configurationFile={}",
            self.logback.display()
        ))
        .arg("-cp")
        .arg(&self.classpath)
        .arg("MqTestClient")
        .args(args)
        .kill_on_drop(true);
        cmd
    }

    /// Send `plan` to `topic` as producer `group` (trace on unless
    /// `opts.trace` is false); one result per plan line, in order.
    pub async fn produce(
        &self,
        topic: &str,
        group: &str,
        plan: &[Msg],
        opts: Produce,
    ) -> Vec<Produced> {
        let plan_file = self.home.join(format!("{}.plan", unique("plan")));
        let text: String = plan.iter().map(|m| m.line() + "\n").collect();
        std::fs::write(&plan_file, text).expect("write plan");
        let mut args = vec![
            "produce".to_string(),
            "--namesrv".to_string(),
            self.namesrv.clone(),
            "--topic".to_string(),
            topic.to_string(),
            "--group".to_string(),
            group.to_string(),
            "--plan".to_string(),
            plan_file.to_string_lossy().into_owned(),
        ];
        if let Some(ledger) = &opts.ledger {
            args.extend([
                "--ledger".to_string(),
                ledger.to_string_lossy().into_owned(),
            ]);
        }
        if !opts.trace {
            args.push("--no-trace".to_string());
        }
        if opts.stay_ms > 0 {
            args.extend(["--stay-ms".to_string(), opts.stay_ms.to_string()]);
        }
        if let Some(topic) = &opts.trace_topic {
            args.extend(["--trace-topic".to_string(), topic.clone()]);
        }
        // Sync sends: allow 20 ms each on a loaded machine.
        let limit = 120 + opts.stay_ms / 1000 + plan.len() as u64 / 50;
        let output = tokio::time::timeout(
            Duration::from_secs(limit),
            self.java(&args).stderr(Stdio::inherit()).output(),
        )
        .await
        .expect("Java producer finished within its limit")
        .expect("run the Java producer");
        assert!(
            output.status.success(),
            "Java producer failed: {:?}",
            output.status
        );
        let results: Vec<Produced> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("producer line {l}: {e}")))
            .collect();
        assert_eq!(results.len(), plan.len(), "one result per plan line");
        results
    }

    /// Start a push consumer (trace on unless `opts.trace` is false) of
    /// `topic` (several, comma-separated); it runs until [`Consumer::stop`].
    pub async fn consume(&self, topic: &str, group: &str, opts: Consume) -> Consumer {
        let mut args = vec![
            "consume".to_string(),
            "--namesrv".to_string(),
            self.namesrv.clone(),
            "--topic".to_string(),
            topic.to_string(),
            "--group".to_string(),
            group.to_string(),
            "--max-reconsume".to_string(),
            opts.max_reconsume.to_string(),
        ];
        match (&opts.expr, &opts.sql) {
            (_, Some(sql)) => args.extend(["--sql".to_string(), sql.clone()]),
            (Some(expr), None) => args.extend(["--expr".to_string(), expr.clone()]),
            (None, None) => {}
        }
        if !opts.fail.is_empty() {
            args.extend(["--fail".to_string(), opts.fail.join(",")]);
        }
        if opts.fail_delay_level > 0 {
            args.extend([
                "--fail-delay-level".to_string(),
                opts.fail_delay_level.to_string(),
            ]);
        }
        if !opts.ack_no_ledger.is_empty() {
            args.extend(["--ack-no-ledger".to_string(), opts.ack_no_ledger.join(",")]);
        }
        if let Some(ledger) = &opts.ledger {
            args.extend([
                "--ledger".to_string(),
                ledger.to_string_lossy().into_owned(),
            ]);
        }
        if let Some(instance) = &opts.instance {
            args.extend(["--instance".to_string(), instance.clone()]);
        }
        if let Some(topic) = &opts.trace_topic {
            args.extend(["--trace-topic".to_string(), topic.clone()]);
        }
        for (flag, on) in [
            ("--no-trace", !opts.trace),
            ("--broadcast", opts.broadcast),
            ("--orderly", opts.orderly),
            ("--pop", opts.pop),
        ] {
            if on {
                args.push(flag.to_string());
            }
        }
        let mut child = self
            .java(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Java consumer");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("consumer stdout");
        let events: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let ready = Arc::new(tokio::sync::Notify::new());
        let reader = {
            let events = events.clone();
            let ready = ready.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if !line.starts_with('{') {
                        continue;
                    }
                    let event: Event = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("consumer line {line}: {e}"));
                    match event.event.as_str() {
                        "ready" => ready.notify_one(),
                        "deliver" => events.lock().expect("events").push(event.delivery),
                        _ => {}
                    }
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(60), ready.notified())
            .await
            .expect("Java consumer started within 60 s");
        Consumer {
            child,
            stdin,
            events,
            reader: Some(reader),
        }
    }

    /// Run the cluster's `mqadmin` with `args` (the name server is added);
    /// returns its standard output.
    pub async fn mqadmin(&self, args: &[&str]) -> String {
        let output = tokio::time::timeout(
            Duration::from_secs(120),
            Command::new(&self.dist.mqadmin)
                .args(args)
                .arg("-n")
                .arg(&self.namesrv)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("mqadmin finished within 120 s")
        .expect("run mqadmin");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "mqadmin {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// `mqadmin updateTopic` on every master of the cluster.
    pub async fn create_topic(&self, topic: &str, queues: u32) {
        let queues = queues.to_string();
        self.mqadmin(&[
            "updateTopic",
            "-c",
            &cluster().name,
            "-t",
            topic,
            "-r",
            &queues,
            "-w",
            &queues,
        ])
        .await;
    }

    /// `mqadmin updateTopic` on one broker only.
    pub async fn create_topic_on(&self, topic: &str, queues: u32, broker_addr: &str) {
        let queues = queues.to_string();
        self.mqadmin(&[
            "updateTopic",
            "-b",
            broker_addr,
            "-t",
            topic,
            "-r",
            &queues,
            "-w",
            &queues,
        ])
        .await;
    }

    /// `mqadmin consumerProgress -g GROUP`.
    pub async fn consumer_progress(&self, group: &str) -> ConsumerProgress {
        ConsumerProgress::parse(&self.mqadmin(&["consumerProgress", "-g", group]).await)
    }

    /// `mqadmin topicStatus -t TOPIC`: (broker, queue) → (min, max).
    pub async fn topic_status(&self, topic: &str) -> BTreeMap<(String, i32), (i64, i64)> {
        parse_topic_status(&self.mqadmin(&["topicStatus", "-t", topic]).await)
    }

    /// `mqadmin getBrokerConfig -b ADDR`: key → value.
    pub async fn broker_config(&self, addr: &str) -> BTreeMap<String, String> {
        self.mqadmin(&["getBrokerConfig", "-b", addr])
            .await
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    /// `mqadmin brokerStatus -b ADDR`: key → value.
    pub async fn broker_status(&self, addr: &str) -> BTreeMap<String, String> {
        self.mqadmin(&["brokerStatus", "-b", addr])
            .await
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    /// `mqadmin clusterList`: (broker name, broker id, address) per row.
    pub async fn cluster_list(&self) -> Vec<(String, i64, String)> {
        let text = self.mqadmin(&["clusterList"]).await;
        text.lines()
            .skip(1)
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                Some((
                    cols.get(1)?.to_string(),
                    cols.get(2)?.parse().ok()?,
                    cols.get(3)?.to_string(),
                ))
            })
            .collect()
    }

    /// `mqadmin queryMsgByKey -t TOPIC -k KEY`: (msgId, queue, offset) per hit.
    pub async fn query_msg_by_key(&self, topic: &str, key: &str) -> Vec<(String, i32, i64)> {
        let text = self
            .mqadmin(&["queryMsgByKey", "-t", topic, "-k", key])
            .await;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                Some((
                    cols.first()?.to_string(),
                    cols.get(1)?.parse().ok()?,
                    cols.get(2)?.parse().ok()?,
                ))
            })
            .collect()
    }
}

/// One message of a producer plan (see the header of MqTestClient.java).
#[derive(Debug, Clone, Default)]
pub struct Msg {
    fields: Vec<(String, String)>,
}

impl Msg {
    /// A message with these keys (the first is the one ledgers name).
    pub fn keys(keys: &[&str]) -> Msg {
        Msg::default().with("keys", &keys.join(" "))
    }

    /// A message with one key.
    pub fn key(key: &str) -> Msg {
        Msg::keys(&[key])
    }

    fn with(mut self, name: &str, value: &str) -> Msg {
        assert!(!value.contains(['\t', '\n']), "plan values are one field");
        self.fields.push((name.to_string(), value.to_string()));
        self
    }

    /// The tag.
    pub fn tag(self, tag: &str) -> Msg {
        self.with("tag", tag)
    }

    /// A user property.
    pub fn prop(self, name: &str, value: &str) -> Msg {
        self.with(&format!("prop.{name}"), value)
    }

    /// A delay level.
    pub fn delay(self, level: u32) -> Msg {
        self.with("delay", &level.to_string())
    }

    /// 5.x timer message due `ms` after its send.
    pub fn deliver_after_ms(self, ms: u64) -> Msg {
        self.with("deliver_ms", &ms.to_string())
    }

    /// Part of batch `id` (consecutive messages with one id are one send).
    pub fn batch(self, id: &str) -> Msg {
        self.with("batch", id)
    }

    /// Transactional: `commit`, `rollback`, `unknown`, `check_commit`, `check_rollback`.
    pub fn tx(self, outcome: &str) -> Msg {
        self.with("tx", outcome)
    }

    /// Sent to one queue.
    pub fn queue(self, broker: &str, queue_id: i32) -> Msg {
        self.with("queue", &format!("{broker}/{queue_id}"))
    }

    /// Sent, but left out of the producer ledger.
    pub fn no_ledger(self) -> Msg {
        self.with("ledger", "no")
    }

    /// In the producer ledger, never sent.
    pub fn not_sent(self) -> Msg {
        self.with("send", "no")
    }

    fn line(&self) -> String {
        self.fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\t")
    }
}

/// Producer options.
#[derive(Debug, Clone)]
pub struct Produce {
    /// Message trace on (the default).
    pub trace: bool,
    /// Append ledger lines here.
    pub ledger: Option<PathBuf>,
    /// Keep a transactional producer alive this long after the last send.
    pub stay_ms: u64,
    /// Trace to this topic instead of RMQ_SYS_TRACE_TOPIC.
    pub trace_topic: Option<String>,
}

impl Default for Produce {
    fn default() -> Produce {
        Produce {
            trace: true,
            ledger: None,
            stay_ms: 0,
            trace_topic: None,
        }
    }
}

/// One producer result (MqTestClient's JSON line).
#[derive(Debug, Clone, Deserialize)]
pub struct Produced {
    /// Plan line.
    pub index: usize,
    /// First key.
    pub key: Option<String>,
    /// Every key.
    pub keys: Vec<String>,
    /// Client message id (`UNIQ_KEY`).
    pub msg_id: Option<String>,
    /// Broker message id (host + commit-log offset).
    pub offset_msg_id: Option<String>,
    /// `SEND_OK`, `SLAVE_NOT_AVAILABLE`, ..., `FAILED`, `NOT_SENT`.
    pub status: String,
    /// Broker name.
    pub broker: Option<String>,
    /// Queue.
    pub queue_id: i32,
    /// Queue offset.
    pub queue_offset: i64,
    /// Local transaction state after the send (`COMMIT_MESSAGE`,
    /// `ROLLBACK_MESSAGE`, `UNKNOW`).
    #[serde(rename = "transaction")]
    pub tx_state: Option<String>,
    /// When sent, epoch ms.
    pub time_ms: i64,
    /// The exception, when the send failed.
    pub error: Option<String>,
}

impl Produced {
    /// The broker stored it (any status but a failure or no send).
    pub fn stored(&self) -> bool {
        self.status != "FAILED" && self.status != "NOT_SENT"
    }
}

/// Consumer options.
#[derive(Debug, Clone)]
pub struct Consume {
    /// Tag expression (`*`, `TagA || TagB`).
    pub expr: Option<String>,
    /// SQL92 expression instead.
    pub sql: Option<String>,
    /// Keys whose every delivery fails.
    pub fail: Vec<String>,
    /// Keys acknowledged without a ledger line.
    pub ack_no_ledger: Vec<String>,
    /// Append ledger lines here.
    pub ledger: Option<PathBuf>,
    /// Message trace on (the default).
    pub trace: bool,
    /// Broadcast model.
    pub broadcast: bool,
    /// Orderly listener.
    pub orderly: bool,
    /// 5.x POP consumption: the broker assigns queues and tracks pops and
    /// acks (`setClientRebalance(false)`; the group must be set to POP mode
    /// with `mqadmin setConsumeMode` first).
    pub pop: bool,
    /// Tries before the DLQ.
    pub max_reconsume: u32,
    /// The delay level a failed delivery is sent back with (the client's
    /// `setDelayLevelWhenNextConsume`; 0: the broker's 3 + retries).
    pub fail_delay_level: u32,
    /// Client instance name.
    pub instance: Option<String>,
    /// Trace to this topic instead of RMQ_SYS_TRACE_TOPIC.
    pub trace_topic: Option<String>,
}

impl Default for Consume {
    fn default() -> Consume {
        Consume {
            expr: None,
            sql: None,
            fail: Vec::new(),
            ack_no_ledger: Vec::new(),
            ledger: None,
            trace: true,
            broadcast: false,
            orderly: false,
            pop: false,
            max_reconsume: 2,
            fail_delay_level: 0,
            instance: None,
            trace_topic: None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Event {
    event: String,
    #[serde(flatten)]
    delivery: Delivery,
}

/// One delivery to the consumer's listener.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Delivery {
    /// First key.
    #[serde(default)]
    pub key: Option<String>,
    /// Client message id.
    #[serde(default)]
    pub msg_id: Option<String>,
    /// Topic (the original topic for redeliveries).
    #[serde(default)]
    pub topic: Option<String>,
    /// Delivery attempt (0 first).
    #[serde(default)]
    pub reconsume: i32,
    /// `success`, `fail`, `ack_no_ledger`.
    #[serde(default)]
    pub result: String,
    /// Broker name of the delivered copy.
    #[serde(default)]
    pub broker: Option<String>,
    /// When the listener ran, epoch ms.
    #[serde(default)]
    pub time_ms: i64,
}

/// A running Java push consumer.
pub struct Consumer {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Arc<Mutex<Vec<Delivery>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Consumer {
    /// Deliveries so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.events.lock().expect("events").clone()
    }

    /// Wait until `done(deliveries)`, or panic after `seconds`.
    pub async fn wait_until(&self, seconds: u64, what: &str, done: impl Fn(&[Delivery]) -> bool) {
        super::eventually(seconds, what, || async {
            done(&self.events.lock().expect("events")).then_some(())
        })
        .await
    }

    /// Shut down cleanly (offsets committed, trace flushed); the deliveries.
    pub async fn stop(mut self) -> Vec<Delivery> {
        drop(self.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("Java consumer stopped within 60 s")
            .expect("wait for the Java consumer");
        assert!(status.success(), "Java consumer exited with {status:?}");
        if let Some(reader) = self.reader.take() {
            let _ = reader.await;
        }
        self.deliveries()
    }
}

/// `mqadmin consumerProgress` for one group.
#[derive(Debug, Clone, Default)]
pub struct ConsumerProgress {
    /// (topic, broker, queue) → (broker offset, consumer offset, diff).
    pub queues: BTreeMap<(String, String, i32), (i64, i64, i64)>,
    /// "Diff Total" (4.x) / "Consume Diff Total" (5.x).
    pub diff_total: i64,
}

impl ConsumerProgress {
    /// Read the table (either version's columns).
    pub fn parse(text: &str) -> ConsumerProgress {
        let mut out = ConsumerProgress::default();
        let mut header: Vec<&str> = Vec::new();
        for line in text.lines() {
            if line.starts_with("#Topic") {
                // Column names have spaces ("#Broker Name"): split on '#'.
                header = line
                    .split('#')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .collect();
                continue;
            }
            if let Some(total) = line
                .strip_prefix("Diff Total:")
                .or_else(|| line.strip_prefix("Consume Diff Total:"))
            {
                out.diff_total = total.trim().parse().expect("diff total");
                continue;
            }
            if header.is_empty() || line.trim().is_empty() {
                continue;
            }
            let cols: Vec<&str> = line.split_whitespace().collect();
            let at = |name: &str| -> Option<&str> {
                header.iter().position(|h| *h == name).and_then(|i| {
                    // "#Broker Name" is one column holding one word.
                    cols.get(i).copied()
                })
            };
            let (Some(topic), Some(broker), Some(qid), Some(bo), Some(co), Some(diff)) = (
                at("Topic"),
                at("Broker Name"),
                at("QID"),
                at("Broker Offset"),
                at("Consumer Offset"),
                at("Diff"),
            ) else {
                continue;
            };
            let (Ok(qid), Ok(bo), Ok(co), Ok(diff)) =
                (qid.parse(), bo.parse(), co.parse(), diff.parse())
            else {
                continue;
            };
            out.queues
                .insert((topic.to_string(), broker.to_string(), qid), (bo, co, diff));
        }
        out
    }
}

fn parse_topic_status(text: &str) -> BTreeMap<(String, i32), (i64, i64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            Some((
                (cols.first()?.to_string(), cols.get(1)?.parse().ok()?),
                (cols.get(2)?.parse().ok()?, cols.get(3)?.parse().ok()?),
            ))
        })
        .collect()
}

/// What the Java client really wrote to `trace_topic` since `since_ms`,
/// over every queue of every master, read with raw pulls — observed
/// independently of the audit. (Its asynchronous trace sends can fail on a
/// loaded machine and drop a record.)
#[derive(Debug, Default)]
pub struct TraceSeen {
    /// Message ids of every `Pub` record.
    pub published: std::collections::BTreeSet<String>,
    /// Message ids whose successful `SubAfter` names `group`: in the record
    /// (5.x), or through the `SubBefore` of the same request anywhere in the
    /// trace topic (4.9 writes SubAfter without group and time, and can
    /// batch the pair into different messages, queues and brokers).
    pub confirmed: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Message ids with a `SubBefore` of any group (to explain what the
    /// trace lacks for a consumption it cannot attribute).
    pub before: std::collections::BTreeSet<String>,
    /// Message ids with a successful `SubAfter`, attributed or not.
    pub after: std::collections::BTreeSet<String>,
}

/// Read [`TraceSeen`] from `trace_topic`.
pub async fn trace_seen(namesrv: &str, trace_topic: &str, since_ms: i64) -> TraceSeen {
    use mqaudit::admin::TraceRecord;
    let driver = super::driver::Driver::new();
    let route =
        mqaudit::admin::Cluster::new("trace", vec![namesrv.to_string()], driver.admin.clone())
            .topic_route(trace_topic)
            .await
            .expect("trace topic route");
    let mut seen = TraceSeen::default();
    // A pair can be split across trace messages, queues and brokers.
    let mut groups = std::collections::BTreeMap::new();
    let mut afters = Vec::new();
    for data in &route.broker_datas {
        let Some(master) = data.master_addr() else {
            continue;
        };
        let queues = route
            .queues_of(&data.broker_name)
            .map_or(0, |q| q.read_queue_nums);
        for queue_id in 0..queues {
            let from = driver
                .admin
                .offset_at(master, trace_topic, queue_id, since_ms)
                .await
                .expect("trace offset");
            let queue = mqaudit::admin::MessageQueue {
                topic: trace_topic.to_string(),
                broker_name: data.broker_name.clone(),
                queue_id,
            };
            for m in driver
                .pull_all(master, "TOOLS_CONSUMER", &queue, from)
                .await
            {
                let body = m.uncompressed_body(64 << 20).expect("trace body");
                let records = mqaudit::admin::decode_trace(&body).expect("trace records");
                for record in records {
                    match record {
                        TraceRecord::Pub(p) => {
                            seen.published
                                .extend(p.msg_id.split(',').map(str::to_string));
                        }
                        TraceRecord::SubBefore(b) => {
                            seen.before.insert(b.msg_id);
                            groups.insert(b.request_id, b.group);
                        }
                        TraceRecord::SubAfter(a) if a.success => {
                            seen.after.insert(a.msg_id.clone());
                            afters.push(a);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    for a in afters {
        if let Some(group) = a.group.as_ref().or(groups.get(&a.request_id)) {
            seen.confirmed
                .entry(group.clone())
                .or_default()
                .insert(a.msg_id);
        }
    }
    seen
}

/// The message ids of every `Pub` record stored in `trace_topic` since
/// `since_ms` (see [`trace_seen`]).
pub async fn traced_pub_ids(
    namesrv: &str,
    trace_topic: &str,
    since_ms: i64,
) -> std::collections::BTreeSet<String> {
    trace_seen(namesrv, trace_topic, since_ms).await.published
}
