//! Tansu (a Kafka-protocol broker) for the Kafka tests, started through
//! `tests/services/tansu.sh` on a loopback port, killed on drop; and an rdkafka consumer
//! that reads events back.
#![allow(dead_code)]

use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the Tansu binary is expected (`$TANSU_BIN`, else the cache `tansu.sh build` fills).
pub fn tansu_bin() -> PathBuf {
    std::env::var_os("TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/connbeat-test/tansu/bin/tansu"))
}

/// Skips the calling test, loudly, when there is no Tansu binary.
#[macro_export]
macro_rules! require_tansu {
    () => {
        if !shipkit::kafka::tansu_bin().exists() {
            let msg = format!(
                "skipped: no tansu binary at {} (run tests/services/tansu.sh build)",
                shipkit::kafka::tansu_bin().display()
            );
            // Straight to the process's stderr: the test harness captures println!/eprintln!
            // of passing tests, and a skip must be seen.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "{msg}");
            return;
        }
    };
}

/// A running broker on 127.0.0.1:port; SIGKILLed on drop.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/services/tansu.sh")
}

impl Broker {
    /// Starts a broker and waits until it answers a metadata request.
    pub fn start(dir: &Path) -> Broker {
        let port = super::free_port();
        let mut b = Broker {
            port,
            child: None,
            log: dir.join(format!("tansu-{port}.log")),
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        // tansu.sh execs the broker, so the child's pid is the broker's.
        let child = Command::new(script())
            .args(["start", &self.port.to_string()])
            .env("TANSU_BIN", tansu_bin())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let admin = self.admin();
        super::wait_for(Duration::from_secs(60), "tansu to answer metadata", || {
            admin
                .inner()
                .fetch_metadata(None, Duration::from_secs(2))
                .ok()
                .map(|_| ())
        });
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn admin(&self) -> AdminClient<DefaultClientContext> {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap()
    }

    /// Creates a topic with `partitions` partitions (waits for the broker to confirm).
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin = self.admin();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let r = rt
            .block_on(admin.create_topics([&t], &AdminOptions::new()))
            .expect("create_topics");
        for x in r {
            if let Err((topic, e)) = x {
                panic!("creating topic {topic}: {e}");
            }
        }
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One message read back.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: serde_json::Value,
}

/// A consumer assigned to every partition of `topic` from the beginning.
pub struct Reader {
    consumer: BaseConsumer,
}

impl Reader {
    pub fn new(bootstrap: &str, topic: &str, partitions: i32) -> Reader {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("connbeat-test-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        Reader { consumer }
    }

    /// Reads until `want` records in total are in `into` or `timeout` passes.
    pub fn read_into(&self, into: &mut Vec<Record>, want: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while into.len() < want && Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let value = serde_json::from_slice(m.payload().unwrap_or(b"null"))
                        .unwrap_or(serde_json::Value::Null);
                    into.push(Record {
                        topic: m.topic().to_string(),
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(|k| k.to_vec()),
                        value,
                    });
                }
                Some(Err(e)) => eprintln!("consumer: {e}"),
                None => {}
            }
        }
    }

    /// Reads for `quiet` after the last message, to catch duplicates beyond `want`.
    pub fn drain(&self, into: &mut Vec<Record>, quiet: Duration) {
        let mut last = Instant::now();
        while last.elapsed() < quiet {
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(100)) {
                last = Instant::now();
                into.push(Record {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| k.to_vec()),
                    value: serde_json::from_slice(m.payload().unwrap_or(b"null"))
                        .unwrap_or(serde_json::Value::Null),
                });
            }
        }
    }
}
