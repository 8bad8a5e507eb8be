//! Real Redis for the multi-instance tests: REDIS_URL, or a `redis-server` spawned on a free
//! port (always for fault tests), or a 3-node cluster, a minimal RESP client for inspection, and server instances as processes.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether `redis-server` can be spawned; without it the test is skipped loudly (failed in CI).
fn redis_server_on_path(what: &str) -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "redis-server is required in CI");
        eprintln!("\n!!! SKIPPED: redis-server not found on PATH; {what} did not run !!!\n");
    }
    ok
}

/// The Redis of a test: one the test spawned (killed on drop), or the shared one of REDIS_URL.
pub struct Redis {
    host: String,
    pub port: u16,
    password: Option<String>,
    url: String,
    /// Channel and key prefix the instances are given.
    pub prefix: String,
    child: Option<Child>,
    /// Whether the test spawned it (and may kill and restart it).
    spawned: bool,
    extra: Vec<String>,
}

impl Redis {
    /// REDIS_URL under a prefix of this test's own (other users of that Redis are not disturbed),
    /// else a spawned `redis-server`; None (skipped loudly, failed in CI) without either.
    pub async fn shared_or_spawned() -> Option<Redis> {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => {
                let (host, port, password) = parse_url(&url);
                let n = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos();
                let prefix = format!("prt-test-{}-{n:x}", std::process::id());
                let r =
                    Redis { host, port, password, url, prefix, child: None, spawned: false, extra: vec![] };
                r.wait_ready().await;
                Some(r)
            }
            _ => Self::spawned().await,
        }
    }

    /// A `redis-server` of this test's own, on a free port: faults are tested by killing it.
    pub async fn spawned() -> Option<Redis> {
        if !redis_server_on_path("this multi-instance test") {
            return None;
        }
        Some(Self::start_on(free_port(), &[]).await)
    }

    async fn start_on(port: u16, extra: &[&str]) -> Redis {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = spawn_redis(port, &extra);
        let url = format!("redis://127.0.0.1:{port}");
        // The default prefix: the spawned server is the test's alone.
        let (host, prefix) = ("127.0.0.1".to_string(), "prt".to_string());
        let r = Redis { host, port, password: None, url, prefix, child: Some(child), spawned: true, extra };
        r.wait_ready().await;
        r
    }

    /// The arguments that point a `Node` at this Redis (`--prefix` only when not the default).
    pub fn node_args(&self) -> Vec<String> {
        let mut a = vec!["--redis".to_string(), self.url.clone()];
        if self.prefix != "prt" {
            a.extend(["--prefix".to_string(), self.prefix.clone()]);
        }
        a
    }

    /// The URL instances connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A channel or key name under this Redis's prefix.
    pub fn name(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(v) = self.try_cmd(&["PING"]).await {
                if v == Resp::Simple("PONG".into()) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis at {} did not answer", self.url);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// kill -9 (only a spawned server).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port.
    pub async fn restart(&mut self) {
        assert!(self.spawned, "only a spawned redis-server restarts");
        self.kill();
        self.child = Some(spawn_redis(self.port, &self.extra));
        self.wait_ready().await;
    }

    pub async fn cmd(&self, args: &[&str]) -> Resp {
        self.try_cmd(args).await.expect("redis answers")
    }

    /// A command whose arguments are arbitrary bytes (hostile PUBLISH payloads).
    pub async fn cmd_bytes(&self, args: &[&[u8]]) -> Resp {
        resp(&self.host, self.port, self.password.as_deref(), args).await.expect("redis answers")
    }

    async fn try_cmd(&self, args: &[&str]) -> std::io::Result<Resp> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        resp(&self.host, self.port, self.password.as_deref(), &args).await
    }
}

/// host, port and password of `redis://[[user]:password@]host[:port][/db]`.
fn parse_url(url: &str) -> (String, u16, Option<String>) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or(rest);
    let (auth, hostport) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let password =
        auth.map(|a| a.rsplit_once(':').map_or(a, |(_, p)| p).to_string()).filter(|p| !p.is_empty());
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().expect("REDIS_URL port")),
        None => (hostport.to_string(), 6379),
    };
    (host, port, password)
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_redis(port: u16, extra: &[String]) -> Child {
    // A fresh directory: a cluster node must not find an old nodes.conf of a reused port.
    let dir = std::env::temp_dir().join(format!("rt-redis-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server")
}

/// Three cluster-enabled nodes joined with `redis-cli --cluster create` (no replicas).
pub struct Cluster {
    pub nodes: Vec<Redis>,
}

impl Cluster {
    /// None (skipped loudly, failed in CI) without redis-server on PATH.
    pub async fn start() -> Option<Cluster> {
        if !redis_server_on_path("the Redis Cluster test") {
            return None;
        }
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let conf = format!("nodes-{port}.conf");
            nodes.push(
                Redis::start_on(port, &["--cluster-enabled", "yes", "--cluster-config-file", &conf]).await,
            );
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let deadline = Instant::now() + Duration::from_secs(15);
        for n in &nodes {
            loop {
                if let Resp::Bulk(info) = n.cmd(&["CLUSTER", "INFO"]).await {
                    if info.contains("cluster_state:ok") {
                        break;
                    }
                }
                assert!(Instant::now() < deadline, "cluster did not become ok");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Some(Cluster { nodes })
    }

    pub fn node_args(&self) -> Vec<String> {
        vec!["--redis".to_string(), format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port)]
    }
}

impl Cluster {
    /// Moves an empty hash slot from node `from` to node `to` (the documented resharding steps,
    /// with no keys to migrate).
    pub async fn move_slot(&self, slot: &str, from: usize, to: usize) {
        let id = |r: Resp| match r {
            Resp::Bulk(s) => s,
            other => panic!("CLUSTER MYID: {other:?}"),
        };
        let from_id = id(self.nodes[from].cmd(&["CLUSTER", "MYID"]).await);
        let to_id = id(self.nodes[to].cmd(&["CLUSTER", "MYID"]).await);
        let ok = |r: Resp, what: &str| assert_eq!(r, Resp::Simple("OK".into()), "{what}");
        ok(self.nodes[to].cmd(&["CLUSTER", "SETSLOT", slot, "IMPORTING", &from_id]).await, "importing");
        ok(self.nodes[from].cmd(&["CLUSTER", "SETSLOT", slot, "MIGRATING", &to_id]).await, "migrating");
        ok(self.nodes[to].cmd(&["CLUSTER", "SETSLOT", slot, "NODE", &to_id]).await, "node (target)");
        ok(self.nodes[from].cmd(&["CLUSTER", "SETSLOT", slot, "NODE", &to_id]).await, "node (source)");
        for (i, n) in self.nodes.iter().enumerate() {
            if i != from && i != to {
                ok(n.cmd(&["CLUSTER", "SETSLOT", slot, "NODE", &to_id]).await, "node (others)");
            }
        }
    }
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(String),
    Nil,
    Array(Vec<Resp>),
}

impl Resp {
    pub fn int(&self) -> i64 {
        match self {
            Resp::Int(i) => *i,
            other => panic!("not an integer: {other:?}"),
        }
    }
}

/// Sends one command on a fresh connection (after AUTH when a password is given) and reads the reply.
async fn resp(host: &str, port: u16, password: Option<&str>, args: &[&[u8]]) -> std::io::Result<Resp> {
    let s = TcpStream::connect((host, port)).await?;
    let mut r = BufReader::new(s);
    if let Some(p) = password {
        r.get_mut().write_all(&encode(&[b"AUTH", p.as_bytes()])).await?;
        if let Resp::Error(e) = read_resp(&mut r).await? {
            return Err(std::io::Error::other(format!("AUTH: {e}")));
        }
    }
    r.get_mut().write_all(&encode(args)).await?;
    read_resp(&mut r).await
}

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a);
        req.extend_from_slice(b"\r\n");
    }
    req
}

fn read_resp<'a>(
    r: &'a mut BufReader<TcpStream>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Resp>> + Send + 'a>> {
    Box::pin(async move {
        let mut line = String::new();
        r.read_line(&mut line).await?;
        let line = line.trim_end();
        let (t, rest) = line.split_at(1.min(line.len()));
        Ok(match t {
            "+" => Resp::Simple(rest.into()),
            "-" => Resp::Error(rest.into()),
            ":" => Resp::Int(rest.parse().unwrap_or(0)),
            "$" => {
                let n: i64 = rest.parse().unwrap_or(-1);
                if n < 0 {
                    Resp::Nil
                } else {
                    let mut buf = vec![0u8; n as usize + 2];
                    r.read_exact(&mut buf).await?;
                    Resp::Bulk(String::from_utf8_lossy(&buf[..n as usize]).into())
                }
            }
            "*" => {
                let n: i64 = rest.parse().unwrap_or(-1);
                let mut items = Vec::new();
                for _ in 0..n.max(0) {
                    items.push(read_resp(r).await?);
                }
                Resp::Array(items)
            }
            _ => Resp::Error(format!("unparsed: {line}")),
        })
    })
}

/// A server instance (examples/backplane_node) as a separate process, killed on drop.
pub struct Node {
    pub port: u16,
    child: Child,
}

fn node_binary() -> PathBuf {
    super::example_binary("backplane_node")
}

impl Node {
    /// An instance on `redis` (`Redis::node_args` / `Cluster::node_args`).
    pub async fn start(redis: &[String], instance: &str, extra: &[&str]) -> Node {
        use std::io::BufRead;
        let mut child = Command::new(node_binary())
            .args(redis)
            .args(["--instance", instance])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn backplane_node (cargo test builds examples)");
        let stdout = child.stdout.take().unwrap();
        let port = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
            line.trim().strip_prefix("listening ").expect("listening line").parse::<u16>().unwrap()
        })
        .await
        .unwrap();
        Node { port, child }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
