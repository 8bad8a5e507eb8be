//! `report`: the runs of a results file → BENCHMARKS.md (medians per scenario, size and server;
//! ratios against uWebSockets.js; the targets, met or not).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde_json::Value;

use crate::client::Result;

/// Servers in table order; `ours-socketio` is our server with Socket.IO-protocol subscribers;
/// `(2 cores)` rows are our server with both cores; `×K + Redis` rows are K instances of our
/// server sharing a Redis (scenario `fanout-redis`).
const SERVERS: &[&str] = &[
    "ours",
    "ours-core",
    "floor",
    "ours-socketio",
    "ours (2 cores, 1 worker)",
    "ours (2 cores)",
    "ours (wide)",
    "uws (wide)",
    "ours ×1",
    "ours ×1 + Redis",
    "ours ×2 + Redis",
    "ours ×1 (2 cores)",
    "ours ×1 + Redis (2 cores)",
    "ours ×2 + Redis (2 cores)",
    "uws",
    "ws",
    "socketio",
    "fws",
];
const BASE: &str = "uws";
const SCENARIOS: &[&str] = &[
    "fanout-rate",
    "fanout",
    "fanout-authorized",
    "fanout-access",
    "fanout-redis",
    "handler",
    "echo",
    "idle",
    "churn",
];

/// The row a table's ratios are taken against: uWS, or in `fanout-redis` our single instance
/// without Redis on the same cores.
fn base_of(scenario: &str, label: &str) -> String {
    match scenario {
        "fanout-redis" if label.ends_with("(2 cores)") => "ours ×1 (2 cores)".to_string(),
        "fanout-redis" => "ours ×1".to_string(),
        _ => BASE.to_string(),
    }
}

#[derive(Clone, Copy)]
enum Fmt {
    /// Integer with thousands separators.
    Int,
    /// Two decimals.
    F2,
    /// µs shown as ms.
    Ms,
    /// Bytes shown as KiB (per connection) or MiB.
    KiB,
    MiB,
    Pct,
}

struct Col {
    head: &'static str,
    field: &'static str,
    fmt: Fmt,
    /// Show value / uWS's value beside it.
    ratio: bool,
}

const fn col(head: &'static str, field: &'static str, fmt: Fmt, ratio: bool) -> Col {
    Col { head, field, fmt, ratio }
}

fn columns(scenario: &str) -> Vec<Col> {
    use Fmt::*;
    let common = [
        col("server cores", "server_cpu_cores", F2, false),
        col("srv wait", "server_runq_wait_frac", F2, false),
    ];
    let mut cols = match scenario {
        "fanout-rate" => vec![
            col("CPU µs/delivery", "server_cpu_us_per_delivery", F2, true),
            col("deliveries/s", "delivery_per_s", Int, false),
            col("latency p50 ms", "latency_p50_us", Ms, false),
            col("latency p99 ms", "latency_p99_us", Ms, false),
            col("loop delay p99 ms", "eld_p99_us", Ms, true),
            col("deliveries/read", "deliveries_per_read", F2, false),
            col("lost", "lost", Int, false),
            col("dupes", "duplicates", Int, false),
        ],
        "fanout" | "fanout-authorized" | "fanout-access" => vec![
            col("deliveries/s", "delivery_per_s", Int, true),
            col("CPU µs/delivery", "server_cpu_us_per_delivery", F2, true),
            col("latency p50 ms", "latency_p50_us", Ms, false),
            col("latency p99 ms", "latency_p99_us", Ms, false),
            col("loop delay p50 ms", "eld_p50_us", Ms, false),
            col("loop delay p99 ms", "eld_p99_us", Ms, true),
            col("deliveries/read", "deliveries_per_read", F2, false),
            col("lost", "lost", Int, false),
            col("dupes", "duplicates", Int, false),
        ],
        "fanout-redis" => vec![
            col("deliveries/s", "delivery_per_s", Int, true),
            col("CPU µs/delivery", "server_cpu_us_per_delivery", F2, true),
            col("Redis CPU µs/delivery", "redis_cpu_us_per_delivery", F2, false),
            col("latency p50 ms", "latency_p50_us", Ms, false),
            col("latency p99 ms", "latency_p99_us", Ms, false),
            col("loop delay p99 ms", "eld_p99_us", Ms, false),
            col("lost", "lost", Int, false),
        ],
        "handler" => vec![
            col("msgs/s", "message_per_s", Int, true),
            col("CPU µs/msg", "server_cpu_us_per_message", F2, true),
            col("RTT p50 ms", "rtt_p50_us", Ms, false),
            col("RTT p99 ms", "rtt_p99_us", Ms, false),
            col("loop delay p99 ms", "eld_p99_us", Ms, false),
            col("errors", "errors", Int, false),
        ],
        "echo" => vec![
            col("msgs/s", "message_per_s", Int, true),
            col("CPU µs/msg", "server_cpu_us_per_message", F2, true),
            col("RTT p50 ms", "rtt_p50_us", Ms, false),
            col("RTT p99 ms", "rtt_p99_us", Ms, false),
        ],
        "idle" => vec![
            col("connects/s", "connect_per_s", Int, true),
            col("KiB/conn", "bytes_per_conn", KiB, true),
            col("CPU µs/connect", "server_cpu_us_per_connect", F2, true),
            col("SYN drops", "listen_overflows", Int, false),
            col("loop delay p99 ms", "eld_p99_us", Ms, false),
        ],
        "churn" => vec![
            col("cycles/s", "cycle_per_s", Int, true),
            col("CPU µs/cycle", "server_cpu_us_per_cycle", F2, true),
            col("RSS first MiB", "rss_first", MiB, false),
            col("RSS last MiB", "rss_last", MiB, false),
            col("RSS drift", "rss_drift_pct", Pct, false),
            col("SYN drops", "listen_overflows", Int, false),
            col("failed", "failed", Int, false),
        ],
        _ => vec![],
    };
    cols.extend(common);
    cols.push(col("gen CPU", "gen_cpu_frac", F2, false));
    cols.push(col("gen wait", "gen_runq_wait_frac", F2, false));
    cols
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

fn fmt(v: f64, f: Fmt) -> String {
    match f {
        Fmt::Int => thousands(v.round() as i64),
        Fmt::F2 => format!("{v:.2}"),
        Fmt::Ms => format!("{:.2}", v / 1000.0),
        Fmt::KiB => format!("{:.1}", v / 1024.0),
        Fmt::MiB => format!("{:.1}", v / (1024.0 * 1024.0)),
        Fmt::Pct => format!("{v:+.1} %"),
    }
}

pub fn thousands(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn label(run: &Value) -> String {
    let mut server = run["server"].as_str().unwrap_or("?").to_string();
    if run["redis"] == true {
        server = format!("{server} ×{} + Redis", run["instances"].as_u64().unwrap_or(1));
    }
    match run["set"].as_str() {
        Some("both") => format!("{server} (2 cores)"),
        Some("both-w1") => format!("{server} (2 cores, 1 worker)"),
        Some("wide") => format!("{server} (wide)"),
        _ => server,
    }
}

/// The table a run belongs to: fan-out through Redis has its own.
fn scenario_of(run: &Value) -> Option<usize> {
    let fixed_rate = run["rate"].as_f64().unwrap_or(0.0) > 0.0;
    let s = if run["redis"] == true && run["scenario"] == "fanout" {
        "fanout-redis"
    } else if fixed_rate && run["scenario"] == "fanout" {
        "fanout-rate"
    } else {
        run["scenario"].as_str()?
    };
    SCENARIOS.iter().position(|x| *x == s)
}

/// Runs grouped by (scenario, clients) then by server label.
type Groups<'a> = BTreeMap<(usize, u64), BTreeMap<String, Vec<&'a Value>>>;

fn group(runs: &[Value]) -> Groups<'_> {
    let mut g: Groups = BTreeMap::new();
    for r in runs {
        let Some(si) = scenario_of(r) else { continue };
        let clients = r["clients"].as_u64().unwrap_or(0);
        g.entry((si, clients)).or_default().entry(label(r)).or_default().push(r);
    }
    // The Redis table's baseline: our plain fan-out runs of the same size, as `ours ×1`.
    let index = |name: &str| SCENARIOS.iter().position(|s| *s == name).unwrap_or(usize::MAX);
    let (fanout, redis) = (index("fanout"), index("fanout-redis"));
    let sizes: Vec<u64> = g.keys().filter(|k| k.0 == redis).map(|k| k.1).collect();
    for c in sizes {
        let plain: Vec<(String, Vec<&Value>)> = g
            .get(&(fanout, c))
            .map(|servers| {
                servers
                    .iter()
                    .filter(|(l, _)| l.as_str() == "ours" || l.as_str() == "ours (2 cores)")
                    .map(|(l, rs)| (l.replacen("ours", "ours ×1", 1), rs.clone()))
                    .collect()
            })
            .unwrap_or_default();
        g.entry((redis, c)).or_default().extend(plain);
    }
    g
}

/// Median of `field` over the runs that did not fail.
fn med(runs: &[&Value], field: &str) -> Option<f64> {
    median(runs.iter().filter(|r| r.get("error").is_none()).filter_map(|r| r.get(field)?.as_f64()).collect())
}

fn ordered(servers: &BTreeMap<String, Vec<&Value>>) -> Vec<String> {
    let mut names: Vec<String> = servers.keys().cloned().collect();
    names.sort_by_key(|n| SERVERS.iter().position(|s| s == n).unwrap_or(SERVERS.len()));
    names
}

fn table(md: &mut String, scenario: &str, servers: &BTreeMap<String, Vec<&Value>>) {
    let cols = columns(scenario);
    let base_head = if scenario == "fanout-redis" { "×1 inst." } else { "×uWS" };
    let mut head = String::from("| server |");
    let mut rule = String::from("| --- |");
    for c in &cols {
        head.push_str(&format!(" {} |", c.head));
        rule.push_str(" ---: |");
        if c.ratio {
            head.push_str(&format!(" {base_head} |"));
            rule.push_str(" ---: |");
        }
    }
    let _ = writeln!(md, "{head} runs |\n{rule} --- |");
    for name in ordered(servers) {
        let runs = &servers[&name];
        let base = servers.get(&base_of(scenario, &name));
        let mut row = format!("| {name} |");
        for c in &cols {
            let v = med(runs, c.field);
            row.push_str(&format!(" {} |", v.map(|v| fmt(v, c.fmt)).unwrap_or_else(|| "–".into())));
            if c.ratio {
                let r = match (v, base.and_then(|b| med(b, c.field))) {
                    (Some(v), Some(b)) if b > 0.0 => format!("{:.2}×", v / b),
                    _ => "–".into(),
                };
                row.push_str(&format!(" {r} |"));
            }
        }
        let ok = runs.iter().filter(|r| r.get("error").is_none()).count();
        let lb = runs.iter().filter(|r| r["lower_bound"] == true).count();
        let mut note = format!("{ok}");
        if ok < runs.len() {
            note.push_str(&format!(" ({} failed)", runs.len() - ok));
        }
        if lb > 0 {
            note.push_str(&format!(", lower bound in {lb}"));
        }
        let _ = writeln!(md, "{row} {note} |");
    }
    let errors: Vec<String> = servers
        .iter()
        .flat_map(|(n, rs)| {
            rs.iter().filter_map(move |r| Some(format!("{n}: {}", r.get("error")?.as_str()?)))
        })
        .collect();
    for e in errors.iter().take(5) {
        let _ = writeln!(md, "\n> failed run — {e}");
    }
}

/// One target of issues 13 and 14 (and the earlier ones): a ratio (or value) against its bound, for our
/// server on one core and on both cores.
struct Target {
    what: String,
    bound: f64,
    at_most: bool,
    /// (value, a lower bound was among the runs) for `ours` and `ours (2 cores)`.
    values: [Option<(f64, bool)>; 2],
}

/// Who the targets are measured for: our Node server on one core, and on both.
const WHO: [&str; 2] = ["ours", "ours (2 cores)"];

/// Median of `field` for `server` in the (scenario, clients) table.
fn cell(g: &Groups<'_>, key: (usize, u64), server: &str, field: &str) -> Option<f64> {
    g.get(&key)?.get(server).and_then(|r| med(r, field))
}

/// Whether any run of `server` in the table was a lower bound (the generator set the pace).
fn lower(g: &Groups<'_>, key: (usize, u64), server: &str) -> bool {
    g.get(&key).and_then(|s| s.get(server)).is_some_and(|rs| rs.iter().any(|r| r["lower_bound"] == true))
}

/// `a / b` of `field` in one table, flagged when either side had a lower-bound run.
fn ratio_of(g: &Groups<'_>, key: (usize, u64), a: &str, b: &str, field: &str) -> Option<(f64, bool)> {
    let (x, y) = (cell(g, key, a, field)?, cell(g, key, b, field)?);
    let lb = lower(g, key, a) || lower(g, key, b);
    match (x, y) {
        (x, y) if y > 0.0 => Some((x / y, lb)),
        (0.0, _) => Some((0.0, lb)),
        _ => None,
    }
}

/// Deliveries per busy server core (deliveries/s over the cores' worth of CPU it used).
fn per_busy_core(g: &Groups<'_>, key: (usize, u64), server: &str) -> Option<f64> {
    let (d, c) = (cell(g, key, server, "delivery_per_s")?, cell(g, key, server, "server_cpu_cores")?);
    (c > 0.0).then(|| d / c)
}

fn targets(g: &Groups<'_>) -> Vec<Target> {
    let mut t = Vec::new();
    let mut push = |what: String, bound, at_most, f: &dyn Fn(&str) -> Option<(f64, bool)>| {
        t.push(Target { what, bound, at_most, values: WHO.map(f) })
    };
    for &key in g.keys() {
        let (si, c) = key;
        let s = SCENARIOS[si];
        let r = |field: &'static str| move |who: &str| ratio_of(g, key, who, BASE, field);
        // A ratio of two other rows, read once (in the one-core column).
        let once = |a: &'static str, b: &'static str| {
            move |who: &str| {
                (who == "ours").then(|| ratio_of(g, key, a, b, "server_cpu_us_per_delivery")).flatten()
            }
        };
        match s {
            "fanout" | "fanout-rate" => {
                let name = match s {
                    "fanout-rate" => format!("fanout {c} at {} events/s", rate_of(g, key)),
                    _ => format!("fanout {c} (fast readers)"),
                };
                push(
                    format!("{name}: server CPU per delivery, ours / uWS"),
                    0.8,
                    true,
                    &r("server_cpu_us_per_delivery"),
                );
                // The same bound read against the floor (floor_server.rs): where even one send per
                // socket per batch and nothing else misses it, no server that sends every event when
                // it comes can meet it.
                push(
                    format!("{name}: the floor's CPU per delivery / uWS (same bound, for the floor)"),
                    0.8,
                    true,
                    &once("floor", BASE),
                );
                if s == "fanout" {
                    push(format!("{name}: deliveries/s, ours / uWS"), 1.25, false, &r("delivery_per_s"));
                }
                push(format!("{name}: Node event-loop delay p99, ours / uWS"), 0.1, true, &r("eld_p99_us"));
                // Issue 14: Socket.IO subscribers cost within 10 % of our own protocol's (one core).
                push(
                    format!(
                        "{name}: Socket.IO fan-out cost vs ours (CPU per delivery, ours-socketio / ours)"
                    ),
                    1.1,
                    true,
                    &once("ours-socketio", "ours"),
                );
                if s == "fanout" {
                    push(format!("{name}: deliveries/s, ours / ws"), 3.0, false, &|who: &str| {
                        ratio_of(g, key, who, "ws", "delivery_per_s")
                    });
                    push(format!("{name}: deliveries/s, ours / Socket.IO"), 10.0, false, &|who: &str| {
                        ratio_of(g, key, who, "socketio", "delivery_per_s")
                    });
                    // Fan-out grows with cores: per busy core, 2 workers keep 1 worker's rate.
                    push(
                        format!("{name}: deliveries per busy core, 2 workers / 1 worker (2 cores)"),
                        0.9,
                        false,
                        &|who: &str| {
                            if who == "ours" {
                                return None;
                            }
                            let one = "ours (2 cores, 1 worker)";
                            let v = per_busy_core(g, key, who)? / per_busy_core(g, key, one)?;
                            Some((v, lower(g, key, who) || lower(g, key, one)))
                        },
                    );
                }
            }
            "fanout-authorized" => {
                push(format!("{s} {c}: Node event-loop delay p99, ours / uWS"), 0.1, true, &r("eld_p99_us"));
            }
            "handler" => {
                let name = format!("handler {c} × {} in flight", depth_of(g, key));
                push(format!("{name}: msgs/s, ours / uWS"), 1.0, false, &r("message_per_s"));
                push(
                    format!("{name}: server CPU per message, ours / uWS"),
                    1.0,
                    true,
                    &r("server_cpu_us_per_message"),
                );
            }
            "idle" => {
                push(format!("idle {c}: bytes per connection, ours / uWS"), 1.0, true, &r("bytes_per_conn"));
                push(format!("idle {c}: connects/s, ours / uWS"), 1.1, false, &r("connect_per_s"));
            }
            "churn" => push("churn: RSS drift of ours, %".to_string(), 5.0, true, &|who: &str| {
                Some((cell(g, key, who, "rss_drift_pct")?, false))
            }),
            _ => {}
        }
    }
    t
}

/// The fixed event rate of a fanout-rate table.
fn rate_of(g: &Groups<'_>, key: (usize, u64)) -> String {
    let r = g.get(&key).and_then(|s| s.values().flatten().find_map(|r| r["rate"].as_f64())).unwrap_or(0.0);
    thousands(r.round() as i64)
}

/// Messages in flight per connection of a handler or echo table.
fn depth_of(g: &Groups<'_>, key: (usize, u64)) -> u64 {
    g.get(&key).and_then(|s| s.values().flatten().find_map(|r| r["depth"].as_u64())).unwrap_or(1)
}

/// The headline: server CPU per unit of work, ours against uWebSockets.js in the same run, at
/// equal rates first (fixed-rate fan-out), then at each server's own pace.
fn headline(md: &mut String, g: &Groups<'_>) {
    md.push_str("\n## Headline: server CPU per unit of work, ours vs uWebSockets.js (same run)\n\n");
    md.push_str(
        "Medians. Equal rates (fixed events/s) first: both servers did the same work per second, so \
         CPU per delivery compares like for like. `ours-core` is the Rust core alone (no Node, no \
         binding). `floor` does nothing but one `send` per subscriber per batch of events \
         (`realtime-bench floor-server`): the kernel's share, which every server pays. `(lb)`: a run of that row was a lower bound (the generator used or waited for \
         ≥ 80 % of its core).\n\n",
    );
    md.push_str(
        "| work | unit | uWS | ours | ours / uWS | ours (2 cores) | ours-core | floor | floor / uWS |\n",
    );
    md.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (&key, _) in g.iter() {
        let (si, c) = key;
        let (work, unit, field, f) = match SCENARIOS[si] {
            "fanout-rate" => (
                format!("fan-out, {c} subscribers, {} events/s (equal rates)", rate_of(g, key)),
                "CPU µs/delivery",
                "server_cpu_us_per_delivery",
                Fmt::F2,
            ),
            "fanout" => (
                format!("fan-out, {c} subscribers, fast readers, max rate"),
                "CPU µs/delivery",
                "server_cpu_us_per_delivery",
                Fmt::F2,
            ),
            "handler" => (
                format!("JS handler, {c} connections × {} in flight", depth_of(g, key)),
                "CPU µs/msg",
                "server_cpu_us_per_message",
                Fmt::F2,
            ),
            "idle" => {
                (format!("idle, {c} authenticated connections"), "KiB/conn", "bytes_per_conn", Fmt::KiB)
            }
            _ => continue,
        };
        let v = |who: &str| {
            cell(g, key, who, field)
                .map(|v| format!("{}{}", fmt(v, f), if lower(g, key, who) { " (lb)" } else { "" }))
                .unwrap_or_else(|| "–".into())
        };
        let r = |who: &str| {
            ratio_of(g, key, who, BASE, field)
                .map(|(r, lb)| format!("{r:.2}×{}", if lb { " (lb)" } else { "" }))
                .unwrap_or_else(|| "–".into())
        };
        let _ = writeln!(
            md,
            "| {work} | {unit} | {} | {} | {} | {} | {} | {} | {} |",
            v(BASE),
            v("ours"),
            r("ours"),
            v("ours (2 cores)"),
            v("ours-core"),
            v("floor"),
            r("floor")
        );
    }
}

/// Deliveries per busy core with 1 and 2 tokio workers (fan-out at max rate).
fn workers_table(md: &mut String, g: &Groups<'_>) {
    let rows = ["ours", "ours (2 cores, 1 worker)", "ours (2 cores)", "ours (wide)"];
    let fanout = SCENARIOS.iter().position(|s| *s == "fanout").unwrap_or(usize::MAX);
    let keys: Vec<(usize, u64)> = g
        .keys()
        .copied()
        .filter(|&(si, _)| si == fanout)
        .filter(|&k| per_busy_core(g, k, "ours (2 cores, 1 worker)").is_some())
        .collect();
    if keys.is_empty() {
        return;
    }
    md.push_str("\n## Fan-out per busy core: 1 vs 2 tokio workers\n\n");
    md.push_str(
        "Our server at max rate with 1 core and 1 worker, 2 cores and 1 worker, 2 cores and 2 \
         workers (the generator shares core 1 in the 2-core sets). Deliveries per busy core is \
         deliveries/s over the cores' worth of CPU the server used; flat means no shared task or \
         lock caps the fan-out.\n\n",
    );
    md.push_str(
        "| subscribers | server | deliveries/s | busy cores | deliveries/s per busy core | × 1 worker |\n",
    );
    md.push_str("| ---: | --- | ---: | ---: | ---: | ---: |\n");
    for key in keys {
        let one = per_busy_core(g, key, "ours (2 cores, 1 worker)");
        for who in rows {
            let Some(pc) = per_busy_core(g, key, who) else { continue };
            let rel = one.map(|o| format!("{:.2}×", pc / o)).unwrap_or_else(|| "–".into());
            let _ = writeln!(
                md,
                "| {} | {who} | {} | {:.2} | {} | {rel} |",
                thousands(key.1 as i64),
                thousands(cell(g, key, who, "delivery_per_s").unwrap_or(0.0).round() as i64),
                cell(g, key, who, "server_cpu_cores").unwrap_or(0.0),
                thousands(pc.round() as i64),
            );
        }
    }
}

pub fn render(meta: &Value, runs: &[Value]) -> String {
    let g = group(runs);
    let mut md = String::new();
    let s = |k: &str| meta.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "_Generated by `{}` ({} mode, {} repetition(s)); do not edit by hand._\n",
        s("command"),
        s("mode"),
        meta["reps"]
    );
    let _ = writeln!(md, "- date: {}", s("date"));
    let _ = writeln!(
        md,
        "- machine: {}; 1-min load average at start: {}",
        s("machine"),
        meta["loadavg_at_start"]
    );
    if let Some(v) = meta.get("versions").and_then(Value::as_object) {
        let list: Vec<String> = v.iter().map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("?"))).collect();
        let _ = writeln!(md, "- versions: {}", list.join(", "));
    }
    let loads: Vec<f64> = runs.iter().filter_map(|r| r.get("loadavg")?.as_f64()).collect();
    if let (Some(m), Some(lo), Some(hi)) = (
        median(loads.clone()),
        loads.iter().copied().reduce(f64::min),
        loads.iter().copied().reduce(f64::max),
    ) {
        let _ = writeln!(
            md,
            "- 1-min load average during the runs: median {m:.1} (from {lo:.1} to {hi:.1}) on 2 cores: \
             the machine is shared, so rates carry noise; see `srv wait` and `lower bound`"
        );
    }
    let _ = writeln!(
        md,
        "- raw runs: `bench-results/{}.jsonl` (one JSON line per run, not committed)\n",
        s("stamp")
    );
    headline(&mut md, &g);
    md.push_str("\n## Targets (issues 13 and 14; same run, medians)\n\n`ours`: our Node server (addon + manager) on one core like every peer; ");
    md.push_str("`2 cores`: the same on both cores (the generator shares core 1). `(lb)`: lower bound.\n\n");
    md.push_str(
        "| target | bound | ours | met | 2 cores | met |\n| --- | ---: | ---: | --- | ---: | --- |\n",
    );
    for t in targets(&g) {
        let cell = |v: Option<(f64, bool)>| match v {
            Some((v, lb)) => {
                let met = (t.at_most && v <= t.bound) || (!t.at_most && v >= t.bound);
                (format!("{v:.2}{}", if lb { " (lb)" } else { "" }), if met { "yes" } else { "**no**" })
            }
            None => ("–".to_string(), "not measured"),
        };
        let ((v1, m1), (v2, m2)) = (cell(t.values[0]), cell(t.values[1]));
        let bound = format!("{} {}", if t.at_most { "≤" } else { "≥" }, t.bound);
        let _ = writeln!(md, "| {} | {bound} | {v1} | {m1} | {v2} | {m2} |", t.what);
    }
    workers_table(&mut md, &g);
    md.push('\n');
    md.push_str(METHOD);
    md.push_str("\n## Results (medians over the repetitions)\n");
    for ((si, c), servers) in &g {
        let s = SCENARIOS[*si];
        let size = match s {
            "echo" => format!(
                "{c} connections × depth {}",
                servers.values().flatten().find_map(|r| r["depth"].as_u64()).unwrap_or(0)
            ),
            "churn" => format!("{c} parallel loops"),
            "handler" => format!(
                "{c} connections × {} in flight",
                servers.values().flatten().find_map(|r| r["depth"].as_u64()).unwrap_or(1)
            ),
            "fanout-rate" => format!("{c} clients at {} events/s", rate_of(&g, (*si, *c))),
            _ => format!("{c} clients"),
        };
        let _ = writeln!(md, "\n### {s} — {size}\n");
        if s == "fanout-redis" {
            let _ = writeln!(md, "{REDIS_NOTE}\n");
        }
        table(&mut md, s, servers);
    }
    md
}

const METHOD: &str = "## How it is measured

`realtime-bench` (crates/bench) is a native generator: one thread (tokio current-thread runtime)
pinned to core 1, with its own WebSocket client (frames parsed in place off the socket; a
subscriber takes everything one `read` brought at once, with no allocation per message; `_seq`
and `_ts` found by a backward scan, not a JSON parse). Against uWebSockets.js it costs ~0.15 µs
of CPU per delivery, so it can read several million deliveries/s on its core; `gen CPU` shows
what it used. It spawns each server pinned to core 0 (`2 cores`: cores 0-1, sharing core 1 with
the generator), a fresh process per run, over loopback. Each run prints one JSON line.

- **fanout / fanout-authorized**: C subscribers join `collection:posts`; the server's Node process
  emits one ~300-byte event per credit, and a credit returns when an event reached every recipient
  (16 in flight), so each server runs as fast as it absorbs events, to fast readers. Latency is end
  to end from when the generator sent the event's credit (the app's request to emit it), not
  from the `_ts` the server stamps: a server that reads its next credit only after its current
  pass (a single-threaded one) would otherwise leave the wait before that out. `lost`: deliveries that never came; `dupes`: deliveries
  of an event beyond its recipient count. `authorized`: an `authorize` callback (one call per
  event with the room's users) allows even user ids, half of them. Peers keep the room's members
  in JS to do so.
- **fanout-rate**: the same subscribers with events emitted at a fixed rate (open loop, credits
  every 10 ms): every server does the same work per second, so CPU per delivery compares at
  equal rates (the headline).
- **ours-socketio**: our server with subscribers that speak Socket.IO (Engine.IO v4 over
  WebSocket, as `socket.io-client` with `transports: ['websocket']`): the same events reach them
  as `42[\"update\",{…}]` packets (issue 14: within 10 % of `ours` in CPU per delivery, compared at
  a fixed rate first, where both write one frame per socket per event).
- **deliveries/read**: deliveries per subscriber `read` during the window (fan-out): how many
  frames the server wrote to a socket at once (or the generator let pile up). At max rate CPU per
  delivery falls as this rises (one `sendmsg` per socket carries more frames), so compare
  max-rate rows at similar values; at a fixed rate it is ~1 for every server.
- **ours-core**: the Rust core alone (`realtime-bench core-server`: no Node, no binding), same
  events, as a floor for what the binding and the JS thread add.
- **floor**: `realtime-bench floor-server`, the least a server can do per delivery: after the
  join, one blocking `send` of a batch's frames (the events of every `credit` line come in since
  the last send, built once) to each subscriber from one thread, and nothing else: no reads,
  queues, wake-ups, JSON per socket or Node. Its CPU per delivery is the kernel's share (the loopback send, including the receive-side
  TCP work done on the sender's core); `floor / uWS` is how far below uWS any server that sends
  each event as it comes can go. The targets table reads the fan-out CPU bound against it too.
- **1 vs 2 workers**: our server on cores 0-1 with 1 tokio worker, and with 2; deliveries per busy
  core = deliveries/s over the server's CPU in cores.
- **fanout-access** (ours only): the plugin's default read check in place of `authorize`: per
  event and distinct user an owner-based `Where` (`owner equals user.id` or `sharedWith equals`
  the user's group, half of the users), evaluated in memory against the document by the
  plugin's `evaluateWhere`, identical Where results once per event. Compare with ours in
  fanout-authorized.
- **fanout-redis**: the same fan-out with the C subscribers split over K instances of our server
  (separate Node processes) sharing one `redis-server` (no persistence) spawned by the generator;
  credits are dealt among the instances, so each emits its share of the events and every event
  reaches the other instance through Redis. `ours ×1` is the plain fanout row (no Redis).
- **handler**: C clients each keep D messages `{type:'echo',id,data}` in flight (100 × 16 and
  1,000 × 1) and send the next when `{type:'reply',id,data}` comes back from a JS handler. **echo**: raw transport, 16 messages in flight per connection; ours is the
  core's native echo mode, `fws` a bare fastwebsockets echo server (the machine's reference).
- **idle**: C connections with a JWT (HS256, checked at upgrade) opened 256 at a time: connect
  rate, and RSS growth per connection after 0.5-1 s; `SYN drops`: TcpExt ListenOverflows during
  the run (accept queue full: a listen backlog below 256 costs 1 s SYN retransmits). **churn**: connect, join, leave, close in 32
  loops; RSS after the first N cycles vs after all.
- Server CPU: utime+stime of all its threads from /proc/<pid>/stat (10 ms ticks) over the window.
  `srv wait`: the share of the window the server's threads waited for a CPU while runnable
  (/proc/<pid>/task/*/schedstat) — this machine is shared, so other work steals cycles; CPU per
  unit of work is the figure least disturbed by that, rates the most.
- Loop delay: `perf_hooks.monitorEventLoopDelay({resolution: 1})` in the server's Node process
  during the window, minus the 1 ms sampling period.
- `lower bound` / `(lb)`: the generator used (or waited for) ≥ 80 % of its core during the window,
  so it, not the server, may have set the pace; that server's rates are lower bounds.
- `--server-cpus LIST --gen-cpus LIST` (scripts/bench.sh) adds a `wide` set for a bigger machine:
  ours and uWS on the listed cores, the generator on its own.
";

const REDIS_NOTE: &str = "Same total subscribers, split over the instances. CPU µs/delivery sums \
the instances' Node processes; Redis's own CPU is the next column. `pinned`: every instance and \
Redis share core 0, so this shows what the backplane costs for the same CPU, not scale-out (that \
needs a core per instance, which a 2-core machine with the generator on one core cannot give).";

pub fn main(opts: &HashMap<String, String>, files: &[String]) -> Result<()> {
    let meta: Value = match opts.get("meta") {
        Some(p) => serde_json::from_str(&std::fs::read_to_string(p)?)?,
        None => Value::Null,
    };
    let mut runs = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(f)?.lines().filter(|l| l.starts_with('{')) {
            match serde_json::from_str::<Value>(line) {
                Ok(v) => runs.push(v),
                Err(e) => eprintln!("report: skipping a bad line of {f}: {e}"),
            }
        }
    }
    if runs.is_empty() {
        return Err("report: no runs".into());
    }
    let out = opts.get("out").map(String::as_str).unwrap_or("BENCHMARKS.md");
    std::fs::write(out, render(&meta, &runs))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0]), Some(3.0));
        assert_eq!(median(vec![5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn number_formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(-1234567), "-1,234,567");
        assert_eq!(fmt(1500.0, Fmt::Ms), "1.50");
        assert_eq!(fmt(2.5, Fmt::Pct), "+2.5 %");
    }

    #[test]
    fn redis_runs_get_their_own_table_against_the_single_instance() {
        let run = |instances: u64, redis: bool, d: f64| {
            json!({"scenario": "fanout", "server": "ours", "set": "pinned", "clients": 1000, "rep": 1,
                   "instances": instances, "redis": redis, "delivery_per_s": d, "redis_cpu_us_per_delivery": 0.25})
        };
        let runs = vec![run(1, false, 100.0), run(1, true, 80.0), run(2, true, 60.0)];
        let md = render(&json!({}), &runs);
        assert!(md.contains("### fanout-redis — 1000 clients"), "{md}");
        assert!(md.contains("| ours ×1 | 100 | 1.00× |"), "{md}");
        assert!(md.contains("| ours ×1 + Redis | 80 | 0.80× |"), "{md}");
        assert!(md.contains("| ours ×2 + Redis | 60 | 0.60× | – | – | 0.25 |"), "{md}");
        // The plain fanout table keeps only the plain run.
        let fanout = md.split("### fanout — 1000 clients").nth(1).unwrap().split("###").next().unwrap();
        assert!(fanout.contains("| ours | 100 |") && !fanout.contains("Redis"), "{fanout}");
    }

    #[test]
    fn renders_medians_ratios_and_targets() {
        let run = |server: &str, rep: u32, d: f64, cpu: f64| {
            json!({"scenario": "fanout", "server": server, "set": "pinned", "clients": 1000, "rep": rep,
                   "delivery_per_s": d, "server_cpu_us_per_delivery": cpu, "eld_p99_us": 100.0})
        };
        let mut runs = vec![
            run("uws", 1, 100.0, 1.0),
            run("uws", 2, 300.0, 1.0),
            run("uws", 3, 200.0, 1.0),
            run("ours", 1, 400.0, 0.5),
            run("ours", 2, 400.0, 0.5),
            json!({"scenario": "fanout", "server": "ws", "set": "pinned", "clients": 1000, "error": "boom"}),
        ];
        runs[4]["lower_bound"] = json!(true);
        let md = render(&json!({"command": "npm run bench", "reps": 3}), &runs);
        assert!(md.contains("| ours | 400 | 2.00× | 0.50 | 0.50× |"), "{md}");
        assert!(
            md.contains("| fan-out, 1000 subscribers, fast readers, max rate | CPU µs/delivery | 1.00 | 0.50 (lb) | 0.50× (lb) | – | – | – | – |"),
            "{md}"
        );
        assert!(md.contains("| uws | 200 | 1.00× |"), "{md}");
        assert!(md.contains("lower bound in 1"));
        assert!(md.contains("0 (1 failed)"));
        assert!(md.contains("> failed run — ws: boom"));
        let na = "– | not measured";
        assert!(
            md.contains(&format!(
                "| fanout 1000 (fast readers): server CPU per delivery, ours / uWS | ≤ 0.8 | 0.50 (lb) | yes | {na} |"
            )),
            "{md}"
        );
        assert!(
            md.contains(&format!(
                "| fanout 1000 (fast readers): deliveries/s, ours / ws | ≥ 3 | {na} | {na} |"
            )),
            "{md}"
        );
        // ELD p99 equal: ratio 1 > 0.1
        assert!(
            md.contains("| fanout 1000 (fast readers): Node event-loop delay p99, ours / uWS | ≤ 0.1 | 1.00 (lb) | **no** |"),
            "{md}"
        );
    }

    #[test]
    fn fixed_rate_handler_depth_and_workers_tables() {
        let fan = |server: &str, set: &str, rate: f64, d: f64, cpu: f64, cores: f64| {
            json!({"scenario": "fanout", "server": server, "set": set, "clients": 1000, "rep": 1, "rate": rate,
                   "delivery_per_s": d, "server_cpu_us_per_delivery": cpu, "server_cpu_cores": cores})
        };
        let hand = |server: &str, clients: u64, depth: u64, m: f64, cpu: f64| {
            json!({"scenario": "handler", "server": server, "set": "pinned", "clients": clients, "rep": 1,
                   "depth": depth, "message_per_s": m, "server_cpu_us_per_message": cpu})
        };
        let runs = vec![
            fan("uws", "pinned", 100.0, 100_000.0, 4.0, 0.4),
            fan("ours", "pinned", 100.0, 100_000.0, 3.0, 0.3),
            fan("ours-socketio", "pinned", 100.0, 100_000.0, 3.3, 0.33),
            fan("floor", "pinned", 100.0, 100_000.0, 3.6, 0.36),
            fan("ours-socketio", "pinned", 0.0, 1_000_000.0, 1.2, 1.2),
            fan("ours", "pinned", 0.0, 1_000_000.0, 1.0, 1.0),
            fan("ours", "both-w1", 0.0, 1_000_000.0, 1.0, 1.0),
            fan("ours", "both", 0.0, 1_800_000.0, 1.0, 2.0),
            hand("uws", 100, 16, 500.0, 2.0),
            hand("ours", 100, 16, 600.0, 1.0),
        ];
        let md = render(&json!({}), &runs);
        // The equal-rate row leads the headline.
        let head = md.split("## Headline").nth(1).unwrap().split("\n## ").next().unwrap();
        let first = head.lines().find(|l| l.starts_with("| fan-out")).unwrap();
        assert_eq!(first, "| fan-out, 1000 subscribers, 100 events/s (equal rates) | CPU µs/delivery | 4.00 | 3.00 | 0.75× | – | – | 3.60 | 0.90× |");
        assert!(
            head.contains(
                "| JS handler, 100 connections × 16 in flight | CPU µs/msg | 2.00 | 1.00 | 0.50× |"
            ),
            "{head}"
        );
        assert!(md.contains("### fanout-rate — 1000 clients at 100 events/s"), "{md}");
        assert!(md.contains("### handler — 100 connections × 16 in flight"), "{md}");
        assert!(
            md.contains(
                "| fanout 1000 at 100 events/s: server CPU per delivery, ours / uWS | ≤ 0.8 | 0.75 | yes |"
            ),
            "{md}"
        );
        // The floor against the same bound: read in the `ours` column only.
        assert!(
            md.contains(
                "| fanout 1000 at 100 events/s: the floor's CPU per delivery / uWS (same bound, for the floor) | ≤ 0.8 | 0.90 | **no** | – | not measured |"
            ),
            "{md}"
        );
        assert!(md.contains("| handler 100 × 16 in flight: msgs/s, ours / uWS | ≥ 1 | 1.20 | yes |"), "{md}");
        // Issue 14: Socket.IO subscribers against ours, at a fixed rate and at max rate.
        let sio = "Socket.IO fan-out cost vs ours (CPU per delivery, ours-socketio / ours)";
        assert!(
            md.contains(&format!(
                "| fanout 1000 at 100 events/s: {sio} | ≤ 1.1 | 1.10 | yes | – | not measured |"
            )),
            "{md}"
        );
        assert!(
            md.contains(&format!("| fanout 1000 (fast readers): {sio} | ≤ 1.1 | 1.20 | **no** |")),
            "{md}"
        );
        // 900,000 per busy core with 2 workers against 1,000,000 with 1.
        assert!(
            md.contains("deliveries per busy core, 2 workers / 1 worker (2 cores) | ≥ 0.9 | – | not measured | 0.90 | yes |"),
            "{md}"
        );
        assert!(md.contains("| 1,000 | ours (2 cores) | 1,800,000 | 2.00 | 900,000 | 0.90× |"), "{md}");
    }
}
