//! The chart's `intake` (off by default): its rendering (hardened pod,
//! every secret a secretKeyRef, the configuration intake parses) and, on
//! the real kube-apiserver, `kubectl auth can-i` as its ServiceAccount:
//! exactly get/list/create/patch/delete of Tenants in its namespace and
//! nothing else, no Secret anywhere, nothing in the release namespace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chart_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};

use chart_support::{documents, dry_run, helm, install, kind_name, render, run};
use serde_json::{Value, json};
use support::{TestNamespace, control_plane, run_with_stdin};

const ON: [&str; 4] = [
    "intake.enabled=true",
    "intake.prices.price_1Qstarter=starter",
    "intake.prices.growth-monthly=growth",
    "intake.onCancel=Pause",
];

fn sets<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    ON.iter().copied().chain(extra.iter().copied()).collect()
}

#[test]
fn intake_is_off_by_default_and_renders_hardened_with_referenced_secrets_when_on() {
    let off = documents(&render("winston", &[]));
    assert!(off.iter().all(|d| !kind_name(d).1.ends_with("-intake")), "intake rendered while disabled");

    let docs = documents(&render("winston", &sets(&["intake.namespace=shop"])));
    assert!(docs.iter().all(|d| d["kind"] != "Secret"), "the chart must only reference Secrets");
    let mine: Vec<&Value> = docs.iter().filter(|d| kind_name(d).1 == "winston-intake").collect();
    let kinds: BTreeSet<String> = mine.iter().map(|d| kind_name(d).0).collect();
    let want: BTreeSet<String> =
        ["ConfigMap", "Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"].map(String::from).into();
    assert_eq!(kinds, want);
    assert!(
        docs.iter().all(|d| !d["kind"].as_str().unwrap().starts_with("Cluster") || !kind_name(d).1.contains("intake"))
    );

    let deployment = mine.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "winston-intake");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], Value::Bool(true));
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert!(c[probe]["httpGet"]["path"].is_string(), "{probe}");
    }
    let env: BTreeMap<String, Value> =
        c["env"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap().to_string(), e.clone())).collect();
    assert_eq!(env["WINSTON_INTAKE_NAMESPACE"]["value"], "shop");
    for var in [
        "WINSTON_DATABASE_URL",
        "WINSTON_STRIPE_WEBHOOK_SECRET",
        "WINSTON_STRIPE_WEBHOOK_SECRET_PREVIOUS",
        "WINSTON_STRIPE_API_KEY",
    ] {
        assert!(env[var]["value"].is_null(), "{var} must come from a secretKeyRef");
        assert!(env[var]["valueFrom"]["secretKeyRef"]["name"].is_string(), "{var}");
    }
    assert_eq!(
        env["WINSTON_STRIPE_WEBHOOK_SECRET_PREVIOUS"]["valueFrom"]["secretKeyRef"]["optional"],
        Value::Bool(true)
    );
    assert_eq!(c["args"][0], "intake");

    // The ConfigMap is what intake parses, with the values' map and policy.
    let config = mine.iter().find(|d| d["kind"] == "ConfigMap").unwrap()["data"]["intake.yaml"].as_str().unwrap();
    let parsed = winston::intake::IntakeConfig::parse(config).unwrap();
    assert_eq!(parsed.plan_for("price_1Qstarter", None), Some("starter"));
    assert_eq!(parsed.plan_for("price_x", Some("growth-monthly")), Some("growth"));
    assert_eq!(parsed.on_cancel, winston::intake::CancelPolicy::Pause);

    // The Role sits in the Tenants' namespace and names Tenants only.
    let role = mine.iter().find(|d| d["kind"] == "Role").unwrap();
    assert_eq!(role["metadata"]["namespace"], "shop");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["winston.dev"], "resources": ["tenants"], "verbs": ["get", "list", "create", "patch", "delete"]}])
    );
}

#[test]
fn intake_values_schema_refuses_mistakes() {
    for (extra, says) in [
        (&["intake.onCancel=Archive"][..], "/intake/onCancel"),
        (&["intake.prices.price_2=Starter"][..], "/intake/prices/price_2"),
        (&["intake.prices.price_2=system"][..], "/intake/prices/price_2"),
        (&["intake.namespace=Shop"][..], "/intake/namespace"),
        (&["intake.secretKey=x"][..], "secretKey"),
    ] {
        let mut args = vec!["template", "winston", "charts/winston"];
        for s in sets(extra) {
            args.extend(["--set", s]);
        }
        let (ok, out) = run(helm(&args), None);
        assert!(!ok && out.contains(says), "{extra:?} should be refused naming {says}:\n{out}");
    }
    let (ok, out) = run(helm(&["template", "winston", "charts/winston", "--set", "intake.enabled=true"]), None);
    assert!(!ok && out.contains("intake.prices"), "enabled without prices must fail:\n{out}");
}

/// `kubectl auth can-i --list` as `sa` in `namespace`: resource -> verbs,
/// without the self-review rules every authenticated user has.
fn rules(sa: (&str, &str), namespace: &str) -> BTreeMap<String, BTreeSet<String>> {
    let user = format!("--as=system:serviceaccount:{}:{}", sa.0, sa.1);
    let out = control_plane().kubectl(&["auth", "can-i", "--list", &user, "-n", namespace]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut r: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1).filter(|l| !l.starts_with(char::is_whitespace)) {
        let resource = line.split_whitespace().next().unwrap_or_default();
        if resource.starts_with("selfsubject") {
            continue;
        }
        let verbs = line.rsplit_once('[').map(|(_, v)| v.trim_end().trim_end_matches(']')).unwrap_or_default();
        r.entry(resource.to_string()).or_default().extend(verbs.split_whitespace().map(String::from));
    }
    r
}

#[tokio::test]
async fn the_intake_service_account_can_write_tenants_in_its_namespace_and_nothing_else() {
    let ns = TestNamespace::new("chart-intake").await;
    let tenants = TestNamespace::new("chart-intake-tn").await;
    let elsewhere = TestNamespace::new("chart-intake-x").await;
    let release = format!("i{}", &ns.name[ns.name.len() - 8..]);
    let target = format!("intake.namespace={}", tenants.name);
    // A namespaced controller and no proxy keep the rest of the install small.
    let watch = format!("controller.watchNamespace={}", tenants.name);
    install(&release, &ns.name, &sets(&[&target, &watch, "proxy.enabled=false"]));
    let sa_name = format!("{release}-winston-intake");
    let sa = (ns.name.as_str(), sa_name.as_str());

    let want: BTreeMap<String, BTreeSet<String>> =
        [("tenants.winston.dev".to_string(), ["create", "delete", "get", "list", "patch"].map(String::from).into())]
            .into();
    assert_eq!(rules(sa, &tenants.name), want, "intake's rules where Tenants live");
    assert!(rules(sa, &ns.name).is_empty(), "intake may do nothing in the release namespace");
    assert!(rules(sa, &elsewhere.name).is_empty(), "intake may do nothing in another namespace");

    // Acting as the ServiceAccount: a Tenant can be created (server-side dry run) ...
    let user = format!("--as=system:serviceaccount:{}:{}", sa.0, sa.1);
    let tenant = json!({"apiVersion": "winston.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "cus-a-1"},
        "spec": {"displayName": "A", "contactEmail": "a@example.com", "plan": "starter"}});
    let (ok, out) =
        run_with_stdin(tenants.kubectl(&["create", "--dry-run=server", &user, "-f", "-"]), &tenant.to_string());
    assert!(ok, "intake should create Tenants: {out}");
    // ... but no Secret read, no other kind written, nothing elsewhere.
    for (args, what) in [
        (vec!["get", "secrets", "-n", tenants.name.as_str()], "read Secrets where Tenants live"),
        (vec!["get", "secrets", "-n", ns.name.as_str()], "read Secrets in the release namespace"),
        (vec!["get", "tenantinstances", "-n", tenants.name.as_str()], "read TenantInstances"),
        (vec!["get", "creditledgers", "-n", tenants.name.as_str()], "read CreditLedgers"),
        (vec!["get", "tenants", "-n", elsewhere.name.as_str()], "read Tenants elsewhere"),
        (vec!["get", "configmaps", "-n", tenants.name.as_str()], "read ConfigMaps"),
    ] {
        let mut full = args.clone();
        full.push(&user);
        let (ok, out) = run(control_plane().kubectl(&full), None);
        assert!(!ok && out.contains("Forbidden"), "intake must not {what}: {out}");
    }
    let tenant_elsewhere = tenant.to_string();
    let (ok, out) =
        run_with_stdin(elsewhere.kubectl(&["create", "--dry-run=server", &user, "-f", "-"]), &tenant_elsewhere);
    assert!(!ok && out.contains("Forbidden"), "intake must not create Tenants elsewhere: {out}");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "stringData": {"a": "b"}});
    let (ok, out) =
        run_with_stdin(tenants.kubectl(&["create", "--dry-run=server", &user, "-f", "-"]), &secret.to_string());
    assert!(!ok && out.contains("Forbidden"), "intake must not create Secrets: {out}");

    // With Tenants in the release namespace (the default), the rendering is accepted as it is.
    let (ok, out) = dry_run(&ns, &render(&ns.name, &sets(&[])));
    assert!(ok, "{out}");
}
