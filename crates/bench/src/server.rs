//! The server under test: spawned by the generator (pinned to its cores), read through /proc,
//! and, for the Node servers, driven over a JSON-lines control channel on stdin/stdout.
//!
//! Control protocol (lines starting with `@bench ` on the server's stdout; commands on stdin):
//! - server: `@bench {"ready":true}` once listening on `$PORT`
//! - `{"cmd":"start"}`: reset the event-loop-delay histogram; reply `{"ok":true}`
//! - `{"cmd":"credit","n":K}`: emit K events (fanout); no reply
//! - `{"cmd":"stop"}`: reply `{"emitted":N,"eld_p50_us":…,"eld_p99_us":…,"eld_max_us":…}`
//!
//! The server exits when its stdin closes, so it never outlives the generator.

use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::client::Result;

pub struct Server {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    stdin: Option<ChildStdin>,
    control: bool,
    replies: mpsc::UnboundedReceiver<Value>,
}

pub struct Spawn<'a> {
    /// Program and arguments; `{port}` is replaced by the chosen port.
    pub cmd: &'a [String],
    pub cpus: &'a [usize],
    pub env: Vec<(String, String)>,
    /// Whether the server speaks the control protocol.
    pub control: bool,
}

/// A free loopback port (bound then released; the server binds it right after).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    pub async fn spawn(s: Spawn<'_>) -> Result<Server> {
        let port = free_port()?;
        let args: Vec<String> = s.cmd.iter().map(|a| a.replace("{port}", &port.to_string())).collect();
        let (prog, rest) = args.split_first().ok_or("empty server command")?;
        let mut cmd = Command::new(prog);
        cmd.args(rest)
            .env("PORT", port.to_string())
            .envs(s.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let cpus = s.cpus.to_vec();
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Dies with the generator, even when the generator is killed.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if !cpus.is_empty() {
                    pin_current(&cpus)?;
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let pid = child.id().ok_or("server exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, replies) = mpsc::unbounded_channel();
        tokio::task::spawn_local(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match line.strip_prefix("@bench ") {
                    Some(json) => match serde_json::from_str(json) {
                        Ok(v) => {
                            let _ = tx.send(v);
                        }
                        Err(e) => eprintln!("bench: bad control line {json:?}: {e}"),
                    },
                    None => eprintln!("[server] {line}"),
                }
            }
        });
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut server = Server { child, pid, addr, stdin: None, control: s.control, replies };
        server.stdin = server.child.stdin.take();
        if s.control {
            let v = tokio::time::timeout(Duration::from_secs(60), server.replies.recv())
                .await
                .map_err(|_| "server not ready within 60 s")?
                .ok_or("server exited before it was ready")?;
            if v.get("ready") != Some(&Value::Bool(true)) {
                return Err(format!("unexpected first control line {v}").into());
            }
        } else {
            let deadline = Instant::now() + Duration::from_secs(60);
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                if Instant::now() > deadline {
                    return Err("server not listening within 60 s".into());
                }
                if let Some(status) = server.child.try_wait()? {
                    return Err(format!("server exited: {status}").into());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(server)
    }

    pub fn has_control(&self) -> bool {
        self.control
    }

    /// Sends one command line.
    pub async fn send(&mut self, cmd: &Value) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or("server has no control channel")?;
        let mut line = serde_json::to_vec(cmd)?;
        line.push(b'\n');
        stdin.write_all(&line).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Sends a command and waits for its reply line.
    pub async fn request(&mut self, cmd: &Value) -> Result<Value> {
        self.send(cmd).await?;
        self.reply().await
    }

    /// The next control line from the server (30 s at most).
    pub async fn reply(&mut self) -> Result<Value> {
        let v = tokio::time::timeout(Duration::from_secs(30), self.replies.recv())
            .await
            .map_err(|_| "no control reply within 30 s")?
            .ok_or("server exited")?;
        Ok(v)
    }

    /// Takes the stdin so another task can write commands (see `Writer`).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    pub fn rss(&self) -> Result<u64> {
        proc_rss(self.pid)
    }

    pub async fn stop(mut self) {
        drop(self.stdin.take());
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// utime + stime of all threads of `pid` (/proc/<pid>/stat fields 14 and 15), in µs.
pub fn proc_cpu_us(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(parse_stat_ticks(&stat).ok_or("bad /proc/<pid>/stat")? * 1_000_000 / clk_tck())
}

/// utime + stime in clock ticks from the text of /proc/<pid>/stat.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parens: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 → index 11, stime → 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Resident set size of `pid` in bytes (/proc/<pid>/statm, field 2, in pages).
pub fn proc_rss(pid: u32) -> Result<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    let pages: u64 = statm.split_whitespace().nth(1).ok_or("bad statm")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    Ok(pages * page)
}

/// Nanoseconds that the threads of `pid` spent waiting on a run queue (runnable, not running),
/// summed from /proc/<pid>/task/*/schedstat (field 2). Threads that exited are not counted.
pub fn proc_runq_wait_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// `TcpExt: ListenOverflows` of /proc/net/netstat: SYNs dropped because an accept queue was full
/// (the listen backlog is too small for the connect rate). System-wide; this machine's loopback.
pub fn listen_overflows() -> u64 {
    std::fs::read_to_string("/proc/net/netstat")
        .ok()
        .and_then(|s| netstat_field(&s, "TcpExt", "ListenOverflows"))
        .unwrap_or(0)
}

/// A counter of /proc/net/netstat: a header line `Group: names…` followed by `Group: values…`.
pub fn netstat_field(text: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// The 1-minute load average (other work on the machine skews every figure).
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// CPU time (user + system) this process has used, in µs.
pub fn self_cpu_us() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// Pins the calling thread (and what it execs or spawns afterwards) to `cpus`.
pub fn pin_current(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds-checks against its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// "0" / "0,1" / "0-1" → [0] / [0, 1] / [0, 1].
pub fn parse_cpus(s: &str) -> std::result::Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("bad cpu list {s:?}");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_skip_odd_command_names() {
        let stat = "4242 (node (x) y) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 11 0";
        assert_eq!(parse_stat_ticks(stat), Some(175));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(proc_rss(pid).unwrap() > 0);
        proc_cpu_us(pid).unwrap();
        proc_runq_wait_ns(pid);
        assert!(loadavg() >= 0.0);
    }

    #[test]
    fn netstat_counters() {
        let t = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 610 612\nIpExt: A\nIpExt: 1\n";
        assert_eq!(netstat_field(t, "TcpExt", "ListenOverflows"), Some(610));
        assert_eq!(netstat_field(t, "IpExt", "A"), Some(1));
        assert_eq!(netstat_field(t, "TcpExt", "Nope"), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("0"), Ok(vec![0]));
        assert_eq!(parse_cpus("0,1"), Ok(vec![0, 1]));
        assert_eq!(parse_cpus("0-2"), Ok(vec![0, 1, 2]));
        assert_eq!(parse_cpus(""), Ok(vec![]));
        assert!(parse_cpus("x").is_err());
    }
}
