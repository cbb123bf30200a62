//! `make bench`, provisioning part: what the engine costs to take tenants to
//! Ready, against instant platform emulators.
//!
//! One real control plane (etcd + kube-apiserver from `tests/controlplane`,
//! CRDs installed), one real PostgreSQL (Winston's control database and the
//! Neon emulator's backing server: every Neon project is a real database
//! that the schema step migrates), and per round a fresh in-process
//! emulator with `async_delay_ms: 0` and a fresh release `winston
//! controller` process with its defaults (8 concurrent reconciles per kind,
//! info logs) and platform budgets lifted so the emulator, not the
//! published rate limits, is the far end.
//!
//! Rounds of 1, 100 and 1,000 Tenants (override with `BENCH_TENANTS=1,100`),
//! each applied at once (32 creates in flight), in a namespace of its own.
//! Per round:
//! - apply-to-Ready p50/p99/max: from each Tenant's create returning to the
//!   watch event that shows its `Ready` condition True;
//! - time until all are Ready;
//! - Kubernetes API writes and reads per tenant, counted by the API server
//!   itself (`apiserver_request_total`, minus the benchmark's own creates),
//!   writes broken down by resource;
//! - platform requests and accepted writes per tenant, counted by the
//!   emulator, beside the objects per tenant (the floor for writes);
//! - the controller's CPU seconds and peak RSS (VmHWM).
//!
//! The comparison baseline, measured in the same run: the same number of
//! Tenants applied with no controller running, until the watch has seen them
//! all: the API server's own floor for "apply N objects and watch them".
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../tests/provisioning_support/mod.rs"]
mod provisioning_support;
#[path = "support/summary.rs"]
mod summary;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use provisioning_support::Stack;
use support::control_plane;
use winston::api::{Tenant, conditions};

const IN_FLIGHT: usize = 32;

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("provisioning benchmark: run it with `make bench` (cargo bench --bench provisioning)");
        return;
    }
    let rounds: Vec<usize> = std::env::var("BENCH_TENANTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 100, 1_000]);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(run(&rounds));
}

async fn run(rounds: &[usize]) {
    let started = Instant::now();
    let cp = control_plane();
    let client = cp.client().await;
    println!(
        "provisioning benchmark: {} cores; release controller; instant emulator; real apiserver + PostgreSQL",
        cores()
    );
    println!();
    println!(
        "{:>7} | {:>24} | {:>10} | {:>16} | {:>13} | {:>16} | {:>9} | {:>8}",
        "tenants",
        "apply->Ready p50/p99/max",
        "all Ready",
        "kube writes/ten",
        "kube reads/t",
        "platform req/wr",
        "ctl CPU s",
        "peak RSS"
    );
    // A first create of a fresh API server's custom resource is slow; keep it out of the figures.
    baseline(&client, 1).await;
    let mut details = Vec::new();
    for &n in rounds {
        let baseline = baseline(&client, n).await;
        let r = round(&client, n).await;
        println!(
            "{:>7} | {:>7} {:>7} {:>8} | {:>10} | {:>16.1} | {:>13.1} | {:>7.1} / {:>6.1} | {:>9.1} | {:>5} MiB",
            n,
            ms(r.latency.p50),
            ms(r.latency.p99),
            ms(r.latency.max),
            secs(r.all_ready),
            r.kube_writes as f64 / n as f64,
            r.kube_reads as f64 / n as f64,
            r.platform_requests as f64 / n as f64,
            r.platform_writes as f64 / n as f64,
            r.cpu_seconds,
            r.peak_rss_kib / 1024,
        );
        details.push((n, r, baseline));
    }
    println!();
    println!(
        "the emulated platforms' databases (a real one per tenant), made before the clock as a platform makes them on \
         its own machines, then a CHECKPOINT, and claimed by renaming (BENCH_DATABASE_POOL=0: copied from the \
         template inside the round):"
    );
    for (n, r, _) in &details {
        println!("  {n:>5} tenants: {} made in {}", r.pool.0, secs(r.pool.1));
    }
    println!();
    println!("baseline (same run, no controller): apply N Tenants and watch them all arrive");
    for (n, r, b) in &details {
        println!(
            "  {n:>5} tenants: {} until all seen (to all Ready the controller took {}: {:.1}x); {:.1} live platform objects per tenant",
            secs(*b),
            secs(r.all_ready),
            r.all_ready.as_secs_f64() / b.as_secs_f64().max(1e-3),
            r.objects as f64 / *n as f64,
        );
    }
    println!();
    println!("CPU seconds per round by process (where the {} cores went):", cores());
    for (n, r, _) in &details {
        let parts: Vec<String> = r.cpu.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
        let (busy, iowait, wall) = r.machine;
        let named: f64 = r.cpu.iter().map(|(_, v)| v).sum();
        println!("  {n:>5} tenants: {}", parts.join(", "));
        println!(
            "                 machine busy {busy:.1} of {:.1} CPU-s ({:.0}%; iowait {iowait:.1} s), {:.1} of it in no process above",
            wall * cores(),
            r.busy_percent(),
            (busy - named).max(0.0),
        );
    }
    println!();
    println!(
        "reconcile passes per tenant by kind and their mean duration (the controller's \
         winston_reconcile_duration_seconds; a pass waiting in the age-fair queue is not timed):"
    );
    for (n, r, _) in &details {
        let parts: Vec<String> = r
            .passes
            .iter()
            .map(|(k, (count, sum))| {
                format!("{k} {:.2} x {}", count / *n as f64, ms(Duration::from_secs_f64(sum / count.max(1.0))))
            })
            .collect();
        println!("  {n:>5} tenants: {}", parts.join(", "));
    }
    println!();
    println!(
        "kube writes per tenant by resource (API server's count, benchmark's own creates removed; the leader's \
         Lease renewals are not in the per-tenant total):"
    );
    for (n, r, _) in &details {
        let parts: Vec<String> =
            r.writes_by_resource.iter().map(|(k, v)| format!("{k} {:.2}", *v as f64 / *n as f64)).collect();
        println!("  {n:>5} tenants: {}", parts.join(", "));
    }
    println!();
    println!("kube reads per tenant by verb and resource (API server's count):");
    for (n, r, _) in &details {
        let parts: Vec<String> =
            r.reads_by_resource.iter().map(|(k, v)| format!("{k} {:.2}", *v as f64 / *n as f64)).collect();
        println!("  {n:>5} tenants: {}", parts.join(", "));
    }
    println!();
    println!(
        "steady state: a controller restarted on the Ready tenants re-lists and passes over each once (a resync):"
    );
    for (n, r, _) in &details {
        match &r.steady_writes {
            Some(w) => {
                let total: u64 = w.values().sum();
                let parts: Vec<String> = w.iter().map(|(k, v)| format!("{k} {v}")).collect();
                println!(
                    "  {n:>5} tenants: {:.2} kube writes per tenant per resync ({})",
                    total as f64 / *n as f64,
                    if parts.is_empty() { "none".to_string() } else { parts.join(", ") }
                )
            }
            None => {
                println!("  {n:>5} tenants: not measured (the restarted controller did not pass over every tenant)")
            }
        }
    }
    println!();
    record_summary(&details);
    println!("provisioning benchmark done in {}", secs(started.elapsed()));
}

/// Merges the largest round's figures into `target/bench/summary.json`
/// (the 1,000-tenant keys only from a 1,000-tenant round).
fn record_summary(details: &[(usize, Round, Duration)]) {
    let Some((n, r, baseline)) = details.iter().max_by_key(|(n, _, _)| *n) else { return };
    let per = |v: u64| Some(v as f64 / *n as f64);
    let cpu = |name: &str| r.cpu.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let thousand = *n == 1_000;
    let all_ready = thousand.then_some(r.all_ready.as_secs_f64());
    let baseline_s = thousand.then_some(baseline.as_secs_f64());
    let figures = [
        ("provisioning_1000_all_ready_s", all_ready),
        ("provisioning_1000_baseline_all_seen_s", baseline_s),
        ("provisioning_kube_writes_per_tenant", per(r.kube_writes)),
        (
            "provisioning_steady_writes_per_tenant_per_resync",
            r.steady_writes.as_ref().and_then(|w| per(w.values().sum())),
        ),
        ("provisioning_p99_over_p50", Some(r.latency.p99.as_secs_f64() / r.latency.p50.as_secs_f64().max(1e-6))),
        ("provisioning_p50_s", Some(r.latency.p50.as_secs_f64())),
        ("provisioning_p99_s", Some(r.latency.p99.as_secs_f64())),
        ("controller_peak_rss_mib", Some(r.peak_rss_kib as f64 / 1024.0)),
        ("provisioning_tenants", Some(*n as f64)),
        ("provisioning_cpu_s_apiserver", cpu("kube-apiserver")),
        ("provisioning_cpu_s_etcd", cpu("etcd")),
        ("provisioning_cpu_s_controller", cpu("winston controller")),
        ("provisioning_cpu_s_postgres", cpu("postgres")),
        ("provisioning_machine_busy_percent", Some(r.busy_percent())),
        ("provisioning_database_pool", Some(r.pool.0 as f64)),
    ];
    let mut notes = Vec::new();
    if !thousand {
        notes.push(("provisioning_1000_all_ready_s", "no 1,000-tenant round in BENCH_TENANTS"));
        notes.push(("provisioning_1000_baseline_all_seen_s", "no 1,000-tenant round in BENCH_TENANTS"));
    }
    if r.steady_writes.is_none() {
        notes.push((
            "provisioning_steady_writes_per_tenant_per_resync",
            "the restarted controller did not pass over every tenant in time",
        ));
    }
    summary::record_notes(&figures, &notes);
}

/// One round's figures.
struct Round {
    latency: Percentiles,
    all_ready: Duration,
    kube_writes: u64,
    kube_reads: u64,
    writes_by_resource: BTreeMap<String, u64>,
    reads_by_resource: BTreeMap<String, u64>,
    platform_requests: u64,
    platform_writes: u64,
    objects: usize,
    cpu_seconds: f64,
    peak_rss_kib: u64,
    /// CPU seconds of every process on the machine's side of the round.
    cpu: Vec<(&'static str, f64)>,
    /// Empty databases the emulator made before the clock started, and how long that took.
    pool: (usize, Duration),
    /// The whole machine over the same window: (busy CPU seconds, iowait
    /// seconds, wall seconds).
    machine: (f64, f64, f64),
    /// Reconcile passes by kind: how many, and their summed seconds.
    passes: BTreeMap<String, (f64, f64)>,
    /// API writes (the Lease aside) while a restarted controller passed
    /// over every Ready tenant once, by verb and resource; `None` when it
    /// did not in time.
    steady_writes: Option<BTreeMap<String, u64>>,
}

impl Round {
    /// The machine's busy share of the round, in percent.
    fn busy_percent(&self) -> f64 {
        let (busy, _, wall) = self.machine;
        100.0 * busy / (wall * cores()).max(1e-9)
    }
}

struct Percentiles {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn percentiles(mut v: Vec<Duration>) -> Percentiles {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Percentiles { p50: at(0.50), p99: at(0.99), max: *v.last().unwrap() }
}

fn ms(d: Duration) -> String {
    format!("{:.0}ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

async fn namespace(client: &kube::Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    api.create(&Default::default(), &ns).await.unwrap();
    name
}

fn tenant(name: &str) -> Tenant {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "winston.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"displayName": name, "contactEmail": format!("ops@{name}.example"), "plan": "starter"},
    }))
    .unwrap()
}

/// Creates `n` Tenants (IN_FLIGHT at a time); returns when each create returned.
async fn apply(api: &Api<Tenant>, n: usize) -> HashMap<String, Instant> {
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("b{i}");
                api.create(&Default::default(), &tenant(&name)).await.unwrap();
                (name, Instant::now())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await
}

/// Watches Tenants in `api` until `done` holds for all `n`; the task
/// returns when each first did. Returns once the watch's initial list is in.
async fn watch_until(
    api: Api<Tenant>,
    n: usize,
    deadline: Duration,
    done: fn(&Tenant) -> bool,
) -> tokio::task::JoinHandle<HashMap<String, Instant>> {
    let (listed, is_listed) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut listed = Some(listed);
        let mut seen = HashMap::new();
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let stop = Instant::now() + deadline;
        while seen.len() < n {
            let left = stop.saturating_duration_since(Instant::now());
            let ev = tokio::time::timeout(left, stream.try_next())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} tenants within {deadline:?}", seen.len()));
            let objs = match ev.unwrap() {
                Some(watcher::Event::Apply(t) | watcher::Event::InitApply(t)) => vec![t],
                Some(watcher::Event::InitDone) => {
                    listed.take().map(|l| l.send(()));
                    Vec::new()
                }
                Some(_) => Vec::new(),
                None => break,
            };
            let now = Instant::now();
            for t in objs {
                if done(&t) {
                    seen.entry(t.metadata.name.clone().unwrap()).or_insert(now);
                }
            }
        }
        seen
    });
    is_listed.await.expect("the watch's initial list");
    task
}

fn is_ready(t: &Tenant) -> bool {
    t.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, "Ready"))
}

/// Apply `n` Tenants with no controller and wait until the watch saw all.
async fn baseline(client: &kube::Client, n: usize) -> Duration {
    let ns = namespace(client, "bench-base").await;
    let api: Api<Tenant> = Api::namespaced(client.clone(), &ns);
    let watch = watch_until(api.clone(), n, Duration::from_secs(600), |_| true).await;
    let start = Instant::now();
    apply(&api, n).await;
    let seen = watch.await.unwrap();
    seen.values().max().unwrap().duration_since(start)
}

async fn round(client: &kube::Client, n: usize) -> Round {
    let ns = namespace(client, "bench").await;
    // Resend's 2 requests a second per team would time the welcome emails,
    // not Winston: lifted here like every other platform budget.
    // A platform creates databases on its own machines; the emulator's
    // `CREATE DATABASE` copies the template on this one (60-90 ms of a core
    // each). Made before the clock starts, they are claimed by renaming
    // (`BENCH_DATABASE_POOL=0` measures with the copies inside the round).
    let pool = std::env::var("BENCH_DATABASE_POOL").ok().and_then(|v| v.parse().ok()).unwrap_or(n);
    let lifted = winston::emulator::EmulatorConfig {
        resend_per_second: 100_000,
        limits: winston::emulator::limits::PlatformLimits::none(),
        database_pool: pool,
        ..Default::default()
    };
    let setup = Instant::now();
    let stack = Stack::start_with(lifted).await;
    // Copying the template dirtied gigabytes of pages: flushed now, not by
    // a checkpoint that would run on inside the round.
    let admin = sqlx::PgPool::connect(&provisioning_support::pg().url("postgres")).await.unwrap();
    sqlx::query("CHECKPOINT").execute(&admin).await.unwrap();
    admin.close().await;
    let pool_setup = setup.elapsed();
    let before = apiserver_requests(client).await;
    let cpu_before = cpu_by_process();
    let (machine_before, window) = (machine_cpu(), Instant::now());
    let mut ctl = Controller::start(&stack, &ns);
    let api: Api<Tenant> = Api::namespaced(client.clone(), &ns);
    // Generous: the deadline only stops a broken run.
    let deadline = Duration::from_secs(120 + 2 * n as u64);
    let watch = watch_until(api.clone(), n, deadline, is_ready).await;
    let start = Instant::now();
    let applied = apply(&api, n).await;
    let ready = watch.await.unwrap();
    let all_ready = ready.values().max().unwrap().duration_since(start);
    let latency = percentiles(ready.iter().map(|(name, at)| at.duration_since(applied[name])).collect());
    let cpu_after = cpu_by_process();
    let machine_after = machine_cpu();
    let machine =
        (machine_after.0 - machine_before.0, machine_after.1 - machine_before.1, window.elapsed().as_secs_f64());
    let passes = ctl.passes().await;
    let cpu_seconds = ctl.cpu_seconds();
    let mut cpu: Vec<(&'static str, f64)> =
        cpu_after.iter().zip(&cpu_before).map(|((name, a), (_, b))| (*name, a - b)).collect();
    cpu.insert(0, ("winston controller", cpu_seconds));
    let peak_rss_kib = ctl.status_kib("VmHWM:");
    ctl.stop();
    let after = apiserver_requests(client).await;
    let steady_writes = steady_state(client, &stack, &ns, n).await;

    let mut writes_by_resource: BTreeMap<String, u64> = BTreeMap::new();
    let mut reads_by_resource: BTreeMap<String, u64> = BTreeMap::new();
    let (mut kube_writes, mut kube_reads) = (0u64, 0u64);
    for ((verb, resource), count) in &after {
        let d = count - before.get(&(verb.clone(), resource.clone())).copied().unwrap_or(0);
        if matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION") {
            *writes_by_resource.entry(resource.clone()).or_default() += d;
            // The leader's Lease renewals are a heartbeat, not a tenant's
            // cost: shown by resource, left out of the per-tenant figure.
            if resource != "leases" {
                kube_writes += d;
            }
        } else if matches!(verb.as_str(), "GET" | "LIST") {
            *reads_by_resource.entry(format!("{verb} {resource}")).or_default() += d;
            kube_reads += d;
        }
    }
    // The benchmark's own writes: the namespace is created before `before`, the Tenants after.
    kube_writes -= n as u64;
    if let Some(t) = writes_by_resource.get_mut("tenants") {
        *t -= n as u64;
    }
    writes_by_resource.retain(|_, v| *v > 0);
    reads_by_resource.retain(|_, v| *v > 0);

    let objects = stack.objects().await;
    let per_platform =
        |field: &str| -> u64 { objects.as_object().unwrap().values().filter_map(|p| p[field].as_u64()).sum() };
    let live: usize = objects
        .as_object()
        .unwrap()
        .values()
        .filter_map(|p| p["objects"].as_object())
        .flat_map(|kinds| kinds.values())
        .filter_map(serde_json::Value::as_array)
        .map(Vec::len)
        .sum();
    Round {
        latency,
        all_ready,
        kube_writes,
        kube_reads,
        writes_by_resource,
        reads_by_resource,
        platform_requests: per_platform("requests"),
        platform_writes: per_platform("mutations"),
        objects: live,
        cpu_seconds,
        peak_rss_kib,
        cpu,
        machine,
        pool: (pool, pool_setup),
        passes,
        steady_writes,
    }
}

/// Restarts the controller on the Ready tenants of `ns`: its re-list passes
/// over every Tenant and instance once, as a resync would. Returns the API
/// writes meanwhile by verb and resource (the leader's Lease aside), once
/// every instance had its pass and the Tenants theirs.
async fn steady_state(client: &kube::Client, stack: &Stack, ns: &str, n: usize) -> Option<BTreeMap<String, u64>> {
    let before = apiserver_requests(client).await;
    let mut ctl = Controller::start(stack, ns);
    let deadline = Instant::now() + Duration::from_secs(60 + n as u64 / 5);
    let mut passed = false;
    while Instant::now() < deadline {
        let reconciles = ctl.reconciles().await;
        if ["Tenant", "TenantInstance"].iter().all(|k| reconciles.get(*k).copied().unwrap_or(0.0) >= n as f64) {
            passed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ctl.stop();
    let after = apiserver_requests(client).await;
    passed.then(|| {
        after
            .iter()
            .filter(|((verb, resource), _)| {
                resource != "leases"
                    && matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION")
            })
            .map(|((verb, resource), count)| {
                (
                    format!("{verb} {resource}"),
                    count - before.get(&(verb.clone(), resource.clone())).copied().unwrap_or(0),
                )
            })
            .filter(|(_, d)| *d > 0)
            .collect()
    })
}

/// CPU seconds (user + system, including reaped children) of a process;
/// /proc counts clock ticks of 1/100 s on Linux.
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the parenthesised command name: utime, stime, cutime, cstime are fields 14-17.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    (11..=14).filter_map(|i| f.get(i)?.parse::<f64>().ok()).sum::<f64>() / 100.0
}

/// CPU seconds of a process and its live children: PostgreSQL's pooled
/// backends are alive at the end of a round, so the postmaster's reaped
/// children alone would leave out most of its work.
fn cpu_of_tree(pid: u32) -> f64 {
    let children: f64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // The parent pid is the second field after the command name.
            stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)?.parse::<u32>().ok()) == Some(pid)
        })
        .map(cpu_of)
        .sum();
    cpu_of(pid) + children
}

/// The machine's CPU seconds so far: (busy, iowait), from /proc/stat's
/// `cpu` line (user nice system idle iowait irq softirq steal, in ticks).
fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|t| t.parse().ok())
        .collect();
    let get = |i: usize| ticks.get(i).copied().unwrap_or(0.0);
    let busy = ticks.iter().sum::<f64>() - get(3) - get(4);
    (busy / 100.0, get(4) / 100.0)
}

/// CPU seconds so far of PostgreSQL (the postmaster, its live backends and
/// the reaped ones), etcd, kube-apiserver, and this process (the emulator,
/// the watches and the creates).
fn cpu_by_process() -> Vec<(&'static str, f64)> {
    let pids = std::fs::read_to_string(control_plane().dir.join("pids")).unwrap_or_default();
    let mut pids = pids.lines().filter_map(|l| l.trim().parse::<u32>().ok());
    let (etcd, apiserver) = (pids.next(), pids.next());
    vec![
        ("postgres", provisioning_support::pg().pid().map_or(0.0, cpu_of_tree)),
        ("kube-apiserver", apiserver.map_or(0.0, cpu_of)),
        ("etcd", etcd.map_or(0.0, cpu_of)),
        ("emulator + benchmark", cpu_of(std::process::id())),
    ]
}

/// The machine's cores, as a factor of CPU seconds per wall second.
fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// The values of `metric{kind="K",...} value` lines in `text`, by K.
fn by_kind(text: &str, metric: &str) -> BTreeMap<String, f64> {
    let prefix = format!("{metric}{{");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let kind = rest.split("kind=\"").nth(1)?.split('"').next()?.to_string();
            Some((kind, rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// `apiserver_request_total` by (verb, resource), from the API server's /metrics.
async fn apiserver_requests(client: &kube::Client) -> HashMap<(String, String), u64> {
    let mut out = HashMap::new();
    for r in support::apiserver_requests(client).await {
        *out.entry((r.verb, r.resource)).or_insert(0) += r.count;
    }
    out
}

/// The release `winston controller` under measurement.
struct Controller {
    child: Child,
    metrics: String,
}

impl Controller {
    fn start(stack: &Stack, ns: &str) -> Self {
        let cp = control_plane();
        let port = winston::devenv::free_port().unwrap();
        let log = cp.dir.join(format!("controller-{ns}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut env = stack.env(winston::emulator::DEFAULT_TOKEN);
        // Production's poll (the emulator is instant, so polls are rare) and
        // list-settle window (the tests' 1 s would have a create whose marker
        // was stored ahead more than 250 ms before write its own).
        let lifted = [("WINSTON_RESEND_RATE_PER_MINUTE", "100000"), ("WINSTON_RESEND_BURST", "1000")];
        let defaults = ["WINSTON_POLL_MILLIS", "WINSTON_LIST_SETTLE_SECONDS"];
        env.retain(|(k, _)| !defaults.contains(&k.as_str()) && lifted.iter().all(|(l, _)| k != l));
        env.extend(lifted.map(|(k, v)| (k.to_string(), v.to_string())));
        let child = Command::new(env!("CARGO_BIN_EXE_winston"))
            .args(["controller", "--namespace", ns, "--lease-namespace", ns, "--identity", "bench"])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .envs(env)
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start winston controller");
        Self { child, metrics: format!("http://127.0.0.1:{port}/metrics") }
    }

    /// The controller's /metrics (empty while it does not answer yet).
    async fn scrape(&self) -> String {
        let Ok(resp) = reqwest::get(&self.metrics).await else { return String::new() };
        resp.text().await.unwrap_or_default()
    }

    /// `winston_reconciles_total` by kind.
    async fn reconciles(&self) -> BTreeMap<String, f64> {
        by_kind(&self.scrape().await, "winston_reconciles_total")
    }

    /// Reconcile passes by kind: (count, summed seconds).
    async fn passes(&self) -> BTreeMap<String, (f64, f64)> {
        let text = self.scrape().await;
        let sums = by_kind(&text, "winston_reconcile_duration_seconds_sum");
        by_kind(&text, "winston_reconcile_duration_seconds_count")
            .into_iter()
            .map(|(kind, count)| {
                let sum = sums.get(&kind).copied().unwrap_or(0.0);
                (kind, (count, sum))
            })
            .collect()
    }

    fn proc_file(&self, name: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{name}", self.child.id())).unwrap_or_default()
    }

    fn status_kib(&self, field: &str) -> u64 {
        self.proc_file("status")
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// User + system CPU time so far.
    fn cpu_seconds(&self) -> f64 {
        cpu_of(self.child.id())
    }

    fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
