//! realtime-bench: the native load generator of the payload-realtime-rs benchmarks.
//!
//! ```text
//! realtime-bench run --scenario S --server NAME [options] -- <server command…>
//! realtime-bench echo-server ADDR
//! realtime-bench core-server
//! realtime-bench floor-server
//! realtime-bench report --out BENCHMARKS.md --meta meta.json RESULTS.jsonl…
//! ```
//! `run` spawns the server (pinned with --server-cpus), pins itself to --gen-cpus, runs one
//! scenario and prints one JSON line. See scripts/bench.sh for the whole suite.
//!
//! `--redis` spawns a `redis-server` (pinned with the servers) and hands its URL to every server
//! as `BENCH_REDIS_URL`; `--instances K` (fan-out scenarios) runs K servers sharing it, the
//! subscribers split among them.

mod client;
mod core_server;
mod echo_server;
mod floor_server;
mod hist;
mod jwt;
mod report;
mod scenarios;
mod server;
mod soak;
mod wire;

use std::collections::HashMap;
use std::process::ExitCode;

use serde_json::{json, Value};

use client::{Result, Target};
use scenarios::Params;
use server::{Server, Spawn};

/// Key the servers verify tokens with (`BENCH_JWT_KEY`), shaped like Payload's:
/// the first 32 hex chars of sha256(secret).
const JWT_KEY: &str = "9b8f1c2d3e4a5b6c7d8e9f0a1b2c3d4e";

/// A generator whose CPU use over the window reaches this fraction of its core (issue 13: 80 %)
/// may have been the bottleneck: the row is a lower bound.
const SATURATED: f64 = 0.80;

const USAGE: &str = "usage:
  realtime-bench run --scenario fanout|fanout-authorized|fanout-access|handler|echo|idle|churn --server NAME
      [--clients N] [--duration S] [--warmup S] [--window N] [--depth N] [--cycles N]
      [--first-cycles N] [--concurrency N] [--server-cpus LIST] [--gen-cpus LIST]
      [--rate EVENTS_PER_S] [--server-workers N]
      [--socket-io] [--no-control] [--rep N] [--set NAME]
      [--instances K] [--redis] [--redis-server BIN] -- <server command, {port} replaced>
  realtime-bench echo-server ADDR
  realtime-bench core-server   (the Rust core alone, with the control protocol; see core_server.rs)
  realtime-bench floor-server  (one send per subscriber per batch and nothing else; see floor_server.rs)
  realtime-bench soak [--duration S]   (needs redis-server; see BENCHMARKS.md)
  realtime-bench report --out FILE [--meta FILE] RESULTS.jsonl...";

/// `--key value` options, `--flag` switches, and the words after `--`.
struct Args {
    opts: HashMap<String, String>,
    flags: Vec<String>,
    positional: Vec<String>,
    rest: Vec<String>,
}

const SWITCHES: &[&str] = &["--socket-io", "--no-control", "--redis"];

fn parse_args(args: &[String]) -> std::result::Result<Args, String> {
    let mut a = Args { opts: HashMap::new(), flags: vec![], positional: vec![], rest: vec![] };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            a.rest = it.cloned().collect();
            break;
        } else if SWITCHES.contains(&arg.as_str()) {
            a.flags.push(arg.clone());
        } else if let Some(k) = arg.strip_prefix("--") {
            let v = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
            a.opts.insert(k.to_string(), v.clone());
        } else {
            a.positional.push(arg.clone());
        }
    }
    Ok(a)
}

impl Args {
    fn get<T: std::str::FromStr>(&self, k: &str, default: T) -> std::result::Result<T, String> {
        match self.opts.get(k) {
            Some(v) => v.parse().map_err(|_| format!("bad --{k} {v:?}")),
            None => Ok(default),
        }
    }
    fn flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let args = match parse_args(rest) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let res: Result<()> = match cmd.as_str() {
        "run" => run(&args),
        "echo-server" => match args.positional.first() {
            Some(addr) => echo_server::run(addr).map_err(Into::into),
            None => Err(USAGE.into()),
        },
        "core-server" => core_server::run(),
        "floor-server" => floor_server::run(),
        "report" => report::main(&args.opts, &args.positional),
        "soak" => args.get("duration", 600.0).map_err(Into::into).and_then(soak::run),
        _ => Err(USAGE.into()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("realtime-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let scenario = args.opts.get("scenario").ok_or("--scenario is required")?.clone();
    let name = args.opts.get("server").ok_or("--server is required")?.clone();
    if args.rest.is_empty() {
        return Err("the server command goes after --".into());
    }
    let server_cpus = server::parse_cpus(&args.get("server-cpus", String::new())?)?;
    let gen_cpus = server::parse_cpus(&args.get("gen-cpus", String::new())?)?;
    let p = Params {
        clients: args.get("clients", 1000)?,
        duration: args.get("duration", 5.0)?,
        warmup: args.get("warmup", 1.0)?,
        window: args.get("window", 16)?,
        rate: args.get("rate", 0.0)?,
        depth: args.get("depth", if scenario == "handler" { 1 } else { 16 })?,
        cycles: args.get("cycles", 100_000)?,
        first_cycles: args.get("first-cycles", 10_000)?,
        concurrency: args.get("concurrency", 0)?,
        authorized: matches!(scenario.as_str(), "fanout-authorized" | "fanout-access"),
        jwt_key: JWT_KEY.to_string(),
    };
    let p = Params {
        concurrency: match p.concurrency {
            0 if scenario == "churn" => 32,
            0 => 256,
            n => n,
        },
        ..p
    };
    if !gen_cpus.is_empty() {
        server::pin_current(&gen_cpus)?;
    }
    let instances: usize = args.get("instances", 1)?;
    let redis = args.flag("--redis");
    let fanout = matches!(scenario.as_str(), "fanout" | "fanout-authorized" | "fanout-access");
    if instances == 0 || (instances > 1 && !fanout) {
        return Err("--instances K > 1 is for the fanout scenarios only".into());
    }
    let redis_bin = args.get("redis-server", "redis-server".to_string())?;
    let mode = if scenario == "echo" { "echo" } else { "app" };
    // Tokio worker threads of our servers (0: their default, the cores they may run on).
    let workers: usize = args.get("server-workers", 0)?;
    let mut env = vec![
        ("BENCH_JWT_KEY".to_string(), JWT_KEY.to_string()),
        ("BENCH_MODE".to_string(), mode.to_string()),
        (
            "BENCH_AUTHORIZE".to_string(),
            match scenario.as_str() {
                "fanout-access" => "access",
                _ if p.authorized => "half",
                _ => "none",
            }
            .to_string(),
        ),
    ];
    if workers > 0 {
        env.push(("BENCH_WORKERS".to_string(), workers.to_string()));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let mut line = json!({
        "scenario": scenario,
        "server": name,
        "set": args.get("set", "pinned".to_string())?,
        // churn's parallelism is its --concurrency
        "clients": if scenario == "churn" { p.concurrency } else { p.clients },
        "rep": args.get("rep", 1u32)?,
        "server_cpus": format!("{server_cpus:?}"),
        "gen_cpus": format!("{gen_cpus:?}"),
        "instances": instances,
        "workers": workers,
        "redis": redis,
        "time": scenarios::now_us() / 1_000_000,
    });
    let control = !args.flag("--no-control");
    let socket_io = args.flag("--socket-io");
    let res: Result<Value> = local.block_on(&rt, async {
        let redis = match redis {
            true => Some(spawn_redis(&redis_bin, &server_cpus).await?),
            false => None,
        };
        let mut servers = Vec::with_capacity(instances);
        for i in 0..instances {
            let mut env = env.clone();
            if let Some(r) = &redis {
                env.push(("BENCH_REDIS_URL".to_string(), format!("redis://{}", r.addr)));
            }
            // Each instance numbers its events i, i+K, i+2K…: one sequence over all of them.
            env.push(("BENCH_SEQ_START".to_string(), i.to_string()));
            env.push(("BENCH_SEQ_STEP".to_string(), instances.to_string()));
            servers.push(Server::spawn(Spawn { cmd: &args.rest, cpus: &server_cpus, env, control }).await?);
        }
        let targets: Vec<Target> = servers.iter().map(|s| Target::new(s.addr, socket_io)).collect();
        let srv = &mut servers[0];
        let target = &targets[0];
        let out = match scenario.as_str() {
            "fanout" | "fanout-authorized" | "fanout-access" => {
                scenarios::fanout(&mut servers, &targets, &p, redis.as_ref().map(|r| r.pid)).await
            }
            "handler" => scenarios::handler(srv, target, &p).await,
            "echo" => scenarios::echo(srv, target, &p).await,
            "idle" => scenarios::idle(srv, target, &p).await,
            "churn" => scenarios::churn(srv, target, &p).await,
            s => Err(format!("unknown scenario {s:?}").into()),
        };
        for s in servers {
            s.stop().await;
        }
        if let Some(r) = redis {
            r.stop().await;
        }
        out
    });
    let ok = res.is_ok();
    match res {
        Ok(v) => {
            let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            let (cpu, wait) = (f("gen_cpu_frac"), f("gen_runq_wait_frac"));
            scenarios::merge(&mut line, v);
            // The generator has one thread on one core: when it used (or, on this shared machine,
            // waited for) that core nearly all the window, it set the pace and the server's
            // figures are a lower bound.
            let sat = cpu >= SATURATED || cpu + wait >= SATURATED;
            scenarios::merge(&mut line, json!({"gen_saturated": cpu >= SATURATED, "lower_bound": sat}));
        }
        Err(e) => scenarios::merge(&mut line, json!({"error": e.to_string()})),
    }
    println!("{line}");
    // Tasks still parked on sockets are dropped with the runtime; exit without waiting on them.
    drop(local);
    drop(rt);
    if ok {
        Ok(())
    } else {
        Err("run failed (see the error field)".into())
    }
}

/// A throwaway `redis-server` on a free loopback port: no persistence, pinned like the servers.
async fn spawn_redis(bin: &str, cpus: &[usize]) -> Result<Server> {
    let cmd: Vec<String> = [
        bin,
        "--port",
        "{port}",
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--logfile",
        "/dev/null",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Server::spawn(Spawn { cmd: &cmd, cpus, env: vec![], control: false })
        .await
        .map_err(|e| format!("redis-server ({bin}): {e}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_split_options_switches_and_command() {
        let v: Vec<String> = ["--clients", "10", "--socket-io", "x", "--", "node", "--foo", "s.js"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a = parse_args(&v).unwrap();
        assert_eq!(a.get("clients", 0usize).unwrap(), 10);
        assert_eq!(a.get("duration", 2.5f64).unwrap(), 2.5);
        assert!(a.flag("--socket-io"));
        assert!(!a.flag("--no-control"));
        assert_eq!(a.positional, vec!["x"]);
        assert_eq!(a.rest, vec!["node", "--foo", "s.js"]);
        assert!(parse_args(&["--clients".to_string()]).is_err());
        assert!(a.get::<usize>("clients", 0).is_ok());
    }
}
