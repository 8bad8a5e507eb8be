//! Real Redis for the multi-instance tests: a `redis-server` spawned on a free port (or a
//! 3-node cluster), a minimal RESP client for inspection, and server instances as processes.

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
pub fn redis_available() -> bool {
    let ok = Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "redis-server is required in CI");
        eprintln!("\n!!! SKIPPED: redis-server not found on PATH; multi-instance tests did not run !!!\n");
    }
    ok
}

/// A `redis-server` child process, killed on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    extra: Vec<String>,
}

impl Redis {
    pub async fn start() -> Redis {
        Self::start_on(free_port(), &[]).await
    }

    pub async fn start_on(port: u16, extra: &[&str]) -> Redis {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = spawn_redis(port, &extra);
        let r = Redis { port, child: Some(child), extra };
        r.wait_ready().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(v) = resp(self.port, &["PING"]).await {
                if v == Resp::Simple("PONG".into()) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis on {} did not start", self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn_redis(self.port, &self.extra));
        self.wait_ready().await;
    }

    pub async fn cmd(&self, args: &[&str]) -> Resp {
        resp(self.port, args).await.expect("redis answers")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_redis(port: u16, extra: &[String]) -> Child {
    let dir = std::env::temp_dir().join(format!("rt-redis-{port}"));
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
    pub async fn start() -> Cluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let conf = format!("nodes-{port}.conf");
            nodes.push(Redis::start_on(port, &["--cluster-enabled", "yes", "--cluster-config-file", &conf]).await);
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
        Cluster { nodes }
    }

    pub fn url(&self) -> String {
        format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port)
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

/// Sends one command on a fresh connection and reads the reply.
pub async fn resp(port: u16, args: &[&str]) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).await?;
    let mut r = BufReader::new(s);
    read_resp(&mut r).await
}

fn read_resp<'a>(r: &'a mut BufReader<TcpStream>) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Resp>> + Send + 'a>> {
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
    // target/<profile>/deps/<test> -> target/<profile>/examples/backplane_node
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples").join("backplane_node")
}

impl Node {
    pub async fn start(redis_url: &str, instance: &str, extra: &[&str]) -> Node {
        use std::io::BufRead;
        let mut child = Command::new(node_binary())
            .args(["--redis", redis_url, "--instance", instance])
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
