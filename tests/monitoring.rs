//! The chart's monitoring: its PrometheusRule and Grafana dashboard render
//! only when asked, every PromQL expression in them parses, every alert is
//! explained in the README, and every metric (with every label value an
//! expression matches on) is exported by the real processes: a
//! `winston controller` that provisioned a Tenant on the emulator and
//! mirrored its ledger, and a proxy that served a request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chart_support;
mod provisioning_support;
mod proxy_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chart_support::{documents, kind_name, render};
use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, VectorSelector};
use serde_json::{Value, json};
use support::{TestNamespace, eventually, read};

/// Exported only once the `writes` branch (the controller's work queue,
/// issue 18) is merged; the dashboard's queue-depth panel reads it.
const QUEUE_DEPTH: &str = "winston_queue_depth";
const ON: [&str; 2] = ["monitoring.prometheusRule.enabled=true", "monitoring.grafanaDashboard.enabled=true"];

/// One PromQL expression and where it came from.
struct Query {
    origin: String,
    expr: String,
}

/// The rendered PrometheusRule's rules.
fn rules(docs: &[Value]) -> Vec<Value> {
    let rule = docs.iter().find(|d| d["kind"] == "PrometheusRule").expect("a PrometheusRule");
    rule["spec"]["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap().clone()).collect()
}

/// The dashboard JSON from the rendered ConfigMap.
fn dashboard(docs: &[Value]) -> Value {
    let cm = docs.iter().find(|d| kind_name(d) == ("ConfigMap".into(), "winston-dashboard".into())).expect("ConfigMap");
    serde_json::from_str(cm["data"]["winston.json"].as_str().unwrap()).unwrap()
}

/// Every panel of a dashboard, those nested in rows included.
fn panels(dash: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        out.push(p.clone());
        out.extend(p["panels"].as_array().cloned().unwrap_or_default());
    }
    out
}

/// Grafana's variables replaced by what Grafana would send Prometheus.
fn as_prometheus_sees_it(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m").replace("$namespace", "winston")
}

/// Every expression the alerts and the dashboard evaluate.
fn queries(docs: &[Value]) -> Vec<Query> {
    let mut out: Vec<Query> = rules(docs)
        .iter()
        .map(|r| Query { origin: format!("alert {}", r["alert"]), expr: r["expr"].as_str().unwrap().to_string() })
        .collect();
    let dash = dashboard(docs);
    for p in panels(&dash) {
        for t in p["targets"].as_array().cloned().unwrap_or_default() {
            let expr = as_prometheus_sees_it(t["expr"].as_str().unwrap());
            out.push(Query { origin: format!("panel {}", p["title"]), expr });
        }
    }
    // `label_values(<selector>, <label>)` variables query a series.
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str().and_then(|q| q.strip_prefix("label_values(")) {
            let selector = q.rsplit_once(',').unwrap().0;
            out.push(Query { origin: format!("variable {}", v["name"]), expr: selector.to_string() });
        }
    }
    out
}

/// A selector a query reads: the series name and the label values it requires.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Wanted {
    name: String,
    labels: Vec<(String, String)>,
}

fn selector(vs: &VectorSelector, out: &mut Vec<Wanted>) {
    let mut name = vs.name.clone();
    let mut labels = Vec::new();
    for m in &vs.matchers.matchers {
        match (m.name.as_str(), &m.op) {
            ("__name__", MatchOp::Equal) => name = Some(m.value.clone()),
            // Prometheus adds `namespace` (the scraped pod's) itself.
            ("namespace", _) => {}
            (_, MatchOp::Equal) => labels.push((m.name.clone(), m.value.clone())),
            _ => {}
        }
    }
    out.push(Wanted { name: name.expect("every selector names its metric"), labels });
}

/// Walks `e` for every selector.
fn selectors(e: &Expr, out: &mut Vec<Wanted>) {
    match e {
        Expr::Aggregate(a) => {
            selectors(&a.expr, out);
            if let Some(p) = &a.param {
                selectors(p, out);
            }
        }
        Expr::Unary(u) => selectors(&u.expr, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Subquery(s) => selectors(&s.expr, out),
        Expr::VectorSelector(vs) => selector(vs, out),
        Expr::MatrixSelector(ms) => selector(&ms.vs, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| selectors(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Parses every query (failing on a syntax error) and returns what they read.
fn wanted(docs: &[Value]) -> BTreeMap<Wanted, BTreeSet<String>> {
    let mut all: BTreeMap<Wanted, BTreeSet<String>> = BTreeMap::new();
    for q in queries(docs) {
        let expr = parser::parse(&q.expr).unwrap_or_else(|e| panic!("{}: invalid PromQL {:?}: {e}", q.origin, q.expr));
        let mut found = Vec::new();
        selectors(&expr, &mut found);
        assert!(!found.is_empty(), "{} reads no metric: {}", q.origin, q.expr);
        for w in found {
            all.entry(w).or_default().insert(q.origin.clone());
        }
    }
    all
}

/// The series of an OpenMetrics text: name and labels of every sample.
fn series(text: &str) -> Vec<(String, BTreeMap<String, String>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let end = l.find(['{', ' ']).unwrap();
            let mut labels = BTreeMap::new();
            if l[end..].starts_with('{') {
                let body = &l[end + 1..l.rfind('}').unwrap()];
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap();
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
            }
            (l[..end].to_string(), labels)
        })
        .collect()
}

/// The selectors of `wanted` that no series of `scraped` satisfies.
fn missing<'a>(wanted: impl Iterator<Item = &'a Wanted>, scraped: &str) -> Vec<Wanted> {
    let series = series(scraped);
    wanted
        .filter(|w| {
            !series.iter().any(|(name, labels)| {
                *name == w.name && w.labels.iter().all(|(k, v)| labels.get(k).is_some_and(|x| x == v))
            })
        })
        .cloned()
        .collect()
}

#[test]
fn monitoring_is_off_by_default_and_every_alert_is_valid_and_documented() {
    let plain = documents(&render("winston", &[]));
    assert!(plain.iter().all(|d| d["kind"] != "PrometheusRule"), "no PrometheusRule by default");
    assert!(plain.iter().all(|d| !kind_name(d).1.ends_with("-dashboard")), "no dashboard by default");

    let docs = documents(&render("winston", &ON));
    let readme = read("README.md");
    let monitoring = &readme[readme.find("## Monitoring").expect("a Monitoring section in the README")..];
    let alerts = rules(&docs);
    let names: BTreeSet<&str> = alerts.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    let expected = [
        "WinstonInstancesPastDeadline",
        "WinstonInstancesStalled",
        "WinstonProxyUnbilledCredits",
        "WinstonProxyUpstreamAuthFailing",
        "WinstonLedgerMirrorLagging",
        "WinstonProxyLatencyHigh",
        "WinstonNoLeader",
    ];
    assert_eq!(names, expected.into_iter().collect(), "the alerts issue 18 asks for");
    for r in &alerts {
        let name = r["alert"].as_str().unwrap();
        assert!(["warning", "critical"].contains(&r["labels"]["severity"].as_str().unwrap()), "{name}: severity");
        assert!(r["annotations"]["summary"].is_string() && r["annotations"]["description"].is_string(), "{name}");
        assert!(monitoring.contains(name), "{name} is not explained under ## Monitoring in the README");
        // Scoped to this release's series.
        assert!(r["expr"].as_str().unwrap().contains("namespace=\"winston\""), "{name}: {}", r["expr"]);
    }
    // Every expression parses (by a parser that refuses what Prometheus refuses);
    // the dashboard carries the sidecar's label and the chart's file.
    for bad in ["sum(rate(x[5m])", "rate(x)", "histogram_quantile(0.99 x)", "x{a=b}"] {
        assert!(parser::parse(bad).is_err(), "{bad} must not parse");
    }
    wanted(&docs);
    let cm = docs.iter().find(|d| kind_name(d).1 == "winston-dashboard").unwrap();
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let file: Value = serde_json::from_str(&read("charts/winston/dashboards/winston.json")).unwrap();
    assert_eq!(dashboard(&docs), file);
    for p in panels(&file).iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        assert!(!p["targets"].as_array().unwrap().is_empty(), "{}", p["title"]);
    }

    // Thresholds and the selector are values.
    let tuned = documents(&render(
        "winston",
        &[
            ON[0],
            "monitoring.prometheusRule.selector=job=\"winston-proxy\"",
            "--set-json=monitoring.prometheusRule.proxyAddedLatencyP99Seconds=0.005",
            "monitoring.prometheusRule.alertLabels.team=platform",
        ],
    ));
    let latency = rules(&tuned).into_iter().find(|r| r["alert"] == "WinstonProxyLatencyHigh").unwrap();
    let expr = latency["expr"].as_str().unwrap();
    assert!(expr.contains("{job=\"winston-proxy\"}") && expr.ends_with("> 0.005"), "{expr}");
    assert_eq!(latency["labels"]["team"], "platform");
    parser::parse(expr).unwrap();
    // The schema refuses values that would render a broken rule.
    for (bad, says) in [
        (r#"monitoring.prometheusRule.stalledFor="soon""#, "/monitoring/prometheusRule/stalledFor"),
        (r#"monitoring.prometheusRule.selector="{job=\"x\"}""#, "/monitoring/prometheusRule/selector"),
        ("monitoring.prometheusRule.ledgerMirrorLagSeconds=0", "/monitoring/prometheusRule/ledgerMirrorLagSeconds"),
        ("monitoring.grafanaDashboard.enable=true", "enable"),
    ] {
        let args = ["template", "winston", "charts/winston", "--set", ON[0], "--set-json", bad];
        let (ok, out) = chart_support::run(chart_support::helm(&args), None);
        assert!(!ok && out.contains(says), "{bad} must be refused naming {says}:\n{out}");
    }
}

const READY_WITHIN: Duration = Duration::from_secs(120);

/// The controller's `/metrics` once the Tenant `name` is Ready and its
/// ledger mirrored, with one failed reconcile (an injected platform error).
async fn controller_scrape(name: &str) -> String {
    let ns = TestNamespace::new("monitoring").await;
    let stack = provisioning_support::Stack::start(50).await;
    // One 500 from Neon: the database step fails once and is retried.
    stack.fault(json!({"platform": "neon", "kind": "server_error"})).await;
    let (ctl, addr) = stack.controller(&ns.name, "a", &[]);
    provisioning_support::apply_tenant(&ns, name, "");
    provisioning_support::ready(&ns, &format!("{name}-0"), READY_WITHIN).await;
    let ledgers: kube::Api<winston::api::CreditLedger> = kube::Api::namespaced(ns.client.clone(), &ns.name);
    eventually("the CreditLedger mirrored", READY_WITHIN, || {
        let ledgers = ledgers.clone();
        async move { ledgers.get_opt(name).await.ok()??.status?.balance.map(|_| ()) }
    })
    .await;
    let url = format!("http://{addr}/metrics");
    let text = eventually("/metrics with the failure and the tenant's credits", READY_WITHIN, || {
        let url = url.clone();
        async move {
            let text = reqwest::get(url).await.ok()?.text().await.ok()?;
            (text.contains("winston_reconcile_failures_total{") && text.contains("winston_tenant_credits_used{"))
                .then_some(text)
        }
    })
    .await;
    drop(ctl);
    text
}

/// The proxy's `/metrics` after it served one request.
async fn proxy_scrape() -> String {
    let mut h = proxy_support::harness(1_000_000, proxy_support::test_settings()).await;
    let body =
        json!({"model": proxy_support::SONNET, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]});
    let resp = h.anthropic(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    // And one the provider refuses (its key was revoked): what WinstonProxyUpstreamAuthFailing counts.
    let mut refused = body.clone();
    refused["mock"] = json!({"error": "401"});
    assert_eq!(h.anthropic(&refused).send().await.unwrap().status(), 502);
    let text = h.http.get(format!("{}/metrics", h.admin_url)).send().await.unwrap().text().await.unwrap();
    h.shutdown().await;
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_dashboard_read_is_exported() {
    let wanted = wanted(&documents(&render("winston", &ON)));
    assert!(wanted.keys().any(|w| w.name == QUEUE_DEPTH), "the dashboard shows the queue depth");
    let controller = controller_scrape("watched").await;
    let proxy = proxy_scrape().await;
    let (of_proxy, of_controller): (Vec<&Wanted>, Vec<&Wanted>) =
        wanted.keys().partition(|w| w.name.starts_with("winston_proxy_"));
    let mut gaps: Vec<Wanted> = missing(of_controller.into_iter(), &controller);
    gaps.extend(missing(of_proxy.into_iter(), &proxy));
    let report: Vec<String> = gaps
        .iter()
        .map(|w| {
            let note = if w.name == QUEUE_DEPTH {
                " (the controller's queue-depth gauge comes with the `writes` branch of issue 18: merge it)"
            } else {
                ""
            };
            format!("{}{:?} read by {:?} is not exported{note}", w.name, w.labels, wanted[w])
        })
        .collect();
    assert!(
        report.is_empty(),
        "{}\n--- controller /metrics ---\n{controller}\n--- proxy /metrics ---\n{proxy}",
        report.join("\n")
    );
    // The figures are the tenant's: 0 used of the starter plan's 500,000.
    assert!(controller.contains("winston_tenant_credits_remaining{tenant_namespace=\""), "{controller}");
    assert!(controller.contains(",tenant=\"watched\"} 500000\n"), "{controller}");
    assert!(controller.contains("winston_instances{state=\"ready\"} 1\n"), "{controller}");
    assert!(controller.contains("winston_leader 1\n"), "{controller}");
}
