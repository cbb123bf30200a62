//! The Helm chart, the kustomize base and the GitOps example, checked with
//! the real tools against the real local kube-apiserver: generated files do
//! not drift, the catalogs render in the formats the binaries read, every
//! rendering is accepted by `kubectl apply --dry-run=server`, `helm install`
//! creates every object, and `kubectl auth can-i` proves the RBAC is exactly
//! what the controller uses while the proxy can write nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chart_support;
mod support;

use std::collections::BTreeSet;
use std::process::Command;

use chart_support::{documents, dry_run, helm, install, kind_name, render, run};
use serde_json::Value;
use support::{TestNamespace, control_plane, read, root};

#[test]
fn chart_crds_and_manifests_are_generated_and_up_to_date() {
    for entry in std::fs::read_dir(root().join("crds")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let source = read(format!("crds/{name}"));
        for copy in [format!("charts/winston/crds/{name}"), format!("manifests/crds/{name}")] {
            assert!(root().join(&copy).exists() && read(&copy) == source, "{copy} differs from crds/{name}");
        }
    }
    let mut check = Command::new(root().join("scripts/gen-manifests"));
    check.arg("--check");
    let (ok, out) = run(check, None);
    assert!(ok, "{out}");
}

/// The `data.<key>` of the ConfigMap `name` in a rendering.
fn configmap_data(rendered: &str, name: &str, key: &str) -> String {
    let docs = documents(rendered);
    let cm = docs.iter().find(|d| kind_name(d) == ("ConfigMap".into(), name.into())).expect("ConfigMap rendered");
    cm["data"][key].as_str().unwrap().to_string()
}

#[test]
fn default_plan_values_equal_the_builtin_plan_catalog() {
    let plans = configmap_data(&render("winston", &[]), "winston-plans", "plans.yaml");
    let parsed = winston::plans::PlanCatalog::parse(&plans).unwrap();
    assert_eq!(parsed, winston::plans::PlanCatalog::builtin(), "values.yaml plans differ from config/plans.yaml");
    // An operator's own plan reaches the controller as configuration.
    let custom = render(
        "winston",
        &[
            "plans.enterprise.creditsPerMonth=9000000",
            "plans.enterprise.maxInstances=20",
            "--set-string=plans.enterprise.resources.cpu=4",
            "plans.enterprise.resources.memory=8Gi",
        ],
    );
    let parsed = winston::plans::PlanCatalog::parse(&configmap_data(&custom, "winston-plans", "plans.yaml")).unwrap();
    assert_eq!(parsed.get("enterprise").map(|p| (p.credits_per_month, p.max_instances)), Some((9_000_000, 20)));
}

/// Per-plan email templates from values reach the controller as files in
/// the directory its `WINSTON_EMAIL_TEMPLATES` names, in the format the
/// controller loads; the operator's address and the deadline as variables.
#[test]
fn email_templates_render_into_a_mounted_directory_the_controller_loads() {
    let rendered = render(
        "winston",
        &[
            "--set-string=emails.templates.growth\\.welcome\\.subject=Growth {{agent_name}} is live",
            "--set-string=emails.templates.welcome\\.txt=Open {{agent_url}}",
            "emails.operatorEmail=oncall@example.com",
            "emails.provisioningDeadlineSeconds=600",
        ],
    );
    let docs = documents(&rendered);
    let cm = docs.iter().find(|d| kind_name(d) == ("ConfigMap".into(), "winston-emails".into())).expect("ConfigMap");
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in cm["data"].as_object().unwrap() {
        std::fs::write(dir.path().join(name), text.as_str().unwrap()).unwrap();
    }
    let t = winston::engine::mail::Templates::load(Some(dir.path())).unwrap();
    let mut v = winston::engine::mail::Values::default();
    v.set("agent_name", "Ava").set("agent_url", "https://a.example");
    use winston::engine::mail::Kind;
    assert_eq!(t.render(Kind::Welcome, "growth", &v).subject, "Growth Ava is live");
    assert_eq!(t.render(Kind::Welcome, "free", &v).text, "Open https://a.example");
    let deploy = docs.iter().find(|d| kind_name(d) == ("Deployment".into(), "winston-controller".into())).unwrap();
    let pod = &deploy["spec"]["template"]["spec"];
    let env = pod["containers"][0]["env"].as_array().unwrap();
    let var = |n: &str| env.iter().find(|e| e["name"] == n).map(|e| e["value"].clone());
    assert_eq!(var("WINSTON_EMAIL_TEMPLATES"), Some(Value::from("/etc/winston/email")));
    assert_eq!(var("WINSTON_OPERATOR_EMAIL"), Some(Value::from("oncall@example.com")));
    assert_eq!(var("WINSTON_PROVISIONING_DEADLINE_SECONDS"), Some(Value::from("600")));
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    let mount = mounts.iter().find(|m| m["mountPath"] == "/etc/winston/email").expect("mounted");
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap();
    assert_eq!(volume["configMap"]["name"], "winston-emails");
    // Without templates the directory is empty and the built-in ones apply.
    let plain = documents(&render("winston", &[]));
    let cm = plain.iter().find(|d| kind_name(d) == ("ConfigMap".into(), "winston-emails".into())).unwrap();
    assert!(cm["data"].as_object().is_none_or(serde_json::Map::is_empty), "{cm}");
}

#[test]
fn model_values_render_into_the_proxy_catalog_format() {
    let models = configmap_data(&render("winston", &[]), "winston-models", "models.yaml");
    // The chart mounts each upstream-key Secret at /etc/winston/upstream/<secret>/;
    // stand in files there so the proxy's own loader reads every key file it names.
    let dir = tempfile::tempdir().unwrap();
    let mut expected_keys = BTreeSet::new();
    for line in models.lines().filter_map(|l| l.trim().strip_prefix("api_key_file: ")) {
        let path = line.trim_matches('"').strip_prefix("/etc/winston/upstream/").expect("key under the mount");
        let file = dir.path().join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, format!("key-of-{path}\n")).unwrap();
        expected_keys.insert(path.to_string());
    }
    assert_eq!(expected_keys.len(), 2, "anthropic and moonshot keys: {expected_keys:?}");
    let local = models.replace("/etc/winston/upstream/", &format!("{}/", dir.path().display()));
    let catalog = winston::proxy::Catalog::parse(&local).unwrap();
    let sonnet = &catalog.models["claude-sonnet-4-5"];
    assert_eq!((sonnet.kind, sonnet.multiplier), (winston::proxy::UpstreamKind::Anthropic, 5));
    assert_eq!(sonnet.endpoint(), "https://api.anthropic.com/v1/messages");
    assert_eq!(sonnet.key.as_ref().unwrap().expose(), "key-of-winston-upstream-keys/anthropic");
    assert_eq!(catalog.models["kimi-k2"].endpoint(), "https://api.moonshot.ai/v1/chat/completions");
    assert_eq!(catalog.models.len(), 3);
    // Cache prices and the priced web search reach the proxy as the catalog says.
    assert_eq!((sonnet.prices.cache_write, sonnet.prices.cache_read), (6250, 500));
    let (name, search) = sonnet.server_tool_for("web_search_20250305").unwrap();
    assert_eq!((name, search.credits_per_use, search.max_uses), ("web_search", 16667, 5));
}

#[test]
fn renderings_hold_no_secret_and_harden_every_pod() {
    let variants: [&[&str]; 4] = [
        &[],
        &["platforms.baseUrls.neon=http://emulator:8081", "platforms.vercelTeamId=team_1"],
        &["proxy.autoscaling.enabled=true", "serviceMonitor.enabled=true", "controller.watchNamespace=tenants"],
        &["controller.tenantNamespaces={shop,clinic}", "controller.watchNamespace=shop"],
    ];
    for sets in variants {
        let docs = documents(&render("winston", sets));
        assert!(docs.iter().all(|d| d["kind"] != "Secret"), "{sets:?}: the chart must only reference Secrets");
        let deployments: Vec<_> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();
        assert_eq!(deployments.len(), 2, "{sets:?}: controller and proxy");
        for d in deployments {
            let (_, name) = kind_name(d);
            let pod = &d["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true), "{name}");
            for c in pod["containers"].as_array().unwrap() {
                let sc = &c["securityContext"];
                assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{name}");
                assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{name}");
                assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{name}");
                for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                    assert!(c[probe]["httpGet"]["path"].is_string(), "{name}: {probe}");
                }
                assert!(c["resources"]["requests"]["memory"].is_string(), "{name}: resources");
                for env in c["env"].as_array().unwrap() {
                    let var = env["name"].as_str().unwrap();
                    if var.ends_with("_TOKEN") || var == "WINSTON_DATABASE_URL" {
                        assert!(env["value"].is_null(), "{name}: {var} must come from a secretKeyRef");
                        assert!(env["valueFrom"]["secretKeyRef"]["name"].is_string(), "{name}: {var}");
                    }
                }
            }
            if name.ends_with("-proxy") {
                assert_eq!(pod["automountServiceAccountToken"], Value::Bool(false), "the proxy gets no API token");
                if sets.contains(&"proxy.autoscaling.enabled=true") {
                    assert!(d["spec"]["replicas"].is_null(), "the HPA owns the proxy's replica count");
                }
            }
        }
        let env_of = |var: &str| {
            docs.iter()
                .filter(|d| d["kind"] == "Deployment")
                .flat_map(|d| d["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap().clone())
                .find(|e| e["name"] == var)
        };
        if sets.contains(&"platforms.baseUrls.neon=http://emulator:8081") {
            assert_eq!(env_of("WINSTON_NEON_BASE_URL").unwrap()["value"], "http://emulator:8081");
            assert_eq!(env_of("WINSTON_VERCEL_TEAM_ID").unwrap()["value"], "team_1");
        } else {
            assert!(env_of("WINSTON_NEON_BASE_URL").is_none(), "empty base URL means the real platform");
        }
        // One watch scope, said three ways: the controller's environment, a
        // Role in each watched namespace (beside the Lease's in the release
        // namespace), and a ClusterRole only when every namespace is watched.
        let watched = env_of("WINSTON_WATCH_NAMESPACES").map(|e| e["value"].as_str().unwrap().to_string());
        let watched = watched.unwrap_or_default();
        let role_namespaces: BTreeSet<&str> =
            docs.iter().filter(|d| d["kind"] == "Role").map(|d| d["metadata"]["namespace"].as_str().unwrap()).collect();
        let mut want: BTreeSet<&str> = watched.split(',').filter(|n| !n.is_empty()).collect();
        want.insert("winston");
        assert_eq!(role_namespaces, want, "{sets:?}: Roles");
        let cluster_wide = docs.iter().any(|d| d["kind"].as_str().unwrap().starts_with("Cluster"));
        assert_eq!(cluster_wide, watched.is_empty(), "{sets:?}: a ClusterRole exactly when all namespaces are watched");
        if sets.contains(&"controller.tenantNamespaces={shop,clinic}") {
            assert_eq!(watched, "clinic,shop", "the list and watchNamespace together, once each");
        }
        let monitors = docs.iter().filter(|d| d["kind"] == "ServiceMonitor").count();
        assert_eq!(monitors, if sets.contains(&"serviceMonitor.enabled=true") { 2 } else { 0 });
    }
}

/// The proxy address every instance receives (`WINSTON_PROXY_URL`): the
/// release's own proxy Service by default, the public URL when agents run
/// outside the cluster.
#[test]
fn instances_are_pointed_at_this_releases_proxy() {
    let proxy_url = |sets: &[&str]| {
        let docs = documents(&chart_support::render_release("acme", "sys", sets));
        let deploy =
            docs.iter().find(|d| kind_name(d) == ("Deployment".into(), "acme-winston-controller".into())).unwrap();
        let env = deploy["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap().clone();
        env.iter().find(|e| e["name"] == "WINSTON_PROXY_URL").map(|e| e["value"].clone())
    };
    assert_eq!(proxy_url(&[]), Some(Value::from("http://acme-winston-proxy.sys:80")));
    assert_eq!(proxy_url(&["proxy.service.port=8088"]), Some(Value::from("http://acme-winston-proxy.sys:8088")));
    assert_eq!(proxy_url(&["proxy.publicUrl=https://llm.example.com"]), Some(Value::from("https://llm.example.com")));
}

#[test]
fn values_schema_refuses_mistakes() {
    for (sets, says) in [
        (&["controller.replicas=-1"][..], "/controller/replicas"),
        (&["proxy.replica=3"][..], "replica"),
        (&["models.bad.kind=grpc", "models.bad.baseUrl=https://x", "models.bad.multiplier=1"][..], "/models/bad/kind"),
        (&["platforms.baseUrls.neon=ftp://x"][..], "/platforms/baseUrls/neon"),
        (
            &["proxy.autoscaling.enabled=true", "proxy.autoscaling.minReplicas=5", "proxy.autoscaling.maxReplicas=2"][..],
            "minReplicas (5) must not exceed proxy.autoscaling.maxReplicas (2)",
        ),
        (&["models.claude-sonnet-4-5.serverTools.web_search.maxUses=0"][..], "maxUses"),
        (&["controller.tenantNamespaces={shop,Clinic}"][..], "/controller/tenantNamespaces/1"),
        (&["controller.tenantNamespaces={shop,shop}"][..], "/controller/tenantNamespaces"),
        // The release namespace ("default" here) holds the proxy's upstream keys.
        (&["controller.tenantNamespaces={shop,default}"][..], "must not include the release namespace \"default\""),
        (&["controller.watchNamespace=default"][..], "must not include the release namespace \"default\""),
        (&["proxy.publicUrl=llm.example.com"][..], "/proxy/publicUrl"),
    ] {
        let mut args = vec!["template", "winston", "charts/winston"];
        for s in sets {
            args.extend(["--set", s]);
        }
        let (ok, out) = run(helm(&args), None);
        assert!(!ok && out.contains(says), "{sets:?} should be refused naming {says}:\n{out}");
    }
}

#[tokio::test]
async fn every_rendering_and_the_kustomize_base_are_accepted_by_the_apiserver() {
    let ns = TestNamespace::new("chart-dry").await;
    let watch = format!("controller.watchNamespace={}", ns.name);
    let variants: [&[&str]; 4] = [
        &[],
        &[&watch, "proxy.enabled=false"],
        &["proxy.autoscaling.enabled=true", "proxy.podDisruptionBudget.maxUnavailable=50%"],
        &["proxy.enabled=false", "controller.leaderElection.enabled=false", "controller.replicas=2"],
    ];
    for sets in variants {
        let rendered = render(&ns.name, sets);
        let (ok, out) = dry_run(&ns, &rendered);
        assert!(ok, "{sets:?} refused:\n{out}");
        let objects = documents(&rendered).len();
        assert_eq!(out.lines().filter(|l| l.contains("(server dry run)")).count(), objects, "{out}");
    }
    // The kustomize base installs into its own namespace "winston".
    let cp = control_plane();
    let (ok, out) = run(cp.kubectl(&["create", "namespace", "winston"]), None);
    assert!(ok || out.contains("AlreadyExists"), "{out}");
    // As docs/install.md says to install it: server-side.
    let mut apply = cp.kubectl(&["apply", "--server-side", "--dry-run=server", "-k"]);
    apply.arg(root().join("manifests"));
    let (ok, out) = run(apply, None);
    assert!(ok, "manifests/ refused:\n{out}");
    assert!(
        out.contains("deployment.apps/winston-controller") && out.contains("deployment.apps/winston-proxy"),
        "{out}"
    );
}

/// `kubectl auth can-i` as a ServiceAccount; `target` is (verb, resource,
/// subresource, namespace).
fn can_i(sa: (&str, &str), verb: &str, resource: &str, subresource: &str, namespace: &str) -> bool {
    let user = format!("--as=system:serviceaccount:{}:{}", sa.0, sa.1);
    let mut args = vec!["auth", "can-i", verb, resource, &user, "-n", namespace];
    let sub = format!("--subresource={subresource}");
    if !subresource.is_empty() {
        args.push(&sub);
    }
    let out = control_plane().kubectl(&args).output().unwrap();
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl auth can-i {args:?}: {other} {}", String::from_utf8_lossy(&out.stderr)),
    }
}

type Rules = std::collections::BTreeMap<String, BTreeSet<String>>;

fn verbs(list: &str) -> BTreeSet<String> {
    list.split_whitespace().map(String::from).collect()
}

/// The controller's rules on a tenant namespace, as the design states them.
fn designed_controller_rules() -> Rules {
    let mut r = Rules::new();
    r.insert("tenants.winston.dev".into(), verbs("get list watch patch update"));
    for kind in &WINSTON_KINDS[1..] {
        r.insert((*kind).into(), verbs("get list watch create patch update delete"));
    }
    for kind in WINSTON_KINDS {
        r.insert(format!("{kind}/status"), verbs("get patch update"));
        r.insert(format!("{kind}/finalizers"), verbs("update"));
    }
    r.insert("secrets".into(), verbs("get list watch create patch delete"));
    r.insert("configmaps".into(), verbs("get"));
    r.insert("events".into(), verbs("create patch"));
    r.insert("events.events.k8s.io".into(), verbs("create patch"));
    r
}

/// The resource rules of a ServiceAccount in `namespace` (`kubectl auth
/// can-i --list`), without the self-review rules every authenticated user has.
fn rules(sa: (&str, &str), namespace: &str) -> Rules {
    let user = format!("--as=system:serviceaccount:{}:{}", sa.0, sa.1);
    let out = control_plane().kubectl(&["auth", "can-i", "--list", &user, "-n", namespace]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "kubectl auth can-i --list: {text}{}", String::from_utf8_lossy(&out.stderr));
    let mut r = Rules::new();
    // Columns: Resources, Non-Resource URLs, Resource Names, Verbs ("[get list]").
    for line in text.lines().skip(1).filter(|l| !l.starts_with(char::is_whitespace)) {
        let resource = line.split_whitespace().next().unwrap_or_default();
        if resource.starts_with("selfsubject") {
            continue;
        }
        let verbs_col = line.rsplit_once('[').map(|(_, v)| v.trim_end().trim_end_matches(']')).unwrap_or_default();
        r.entry(resource.to_string()).or_default().extend(verbs(verbs_col));
    }
    r
}

const WINSTON_KINDS: [&str; 3] = ["tenants.winston.dev", "tenantinstances.winston.dev", "creditledgers.winston.dev"];

#[tokio::test]
async fn helm_install_creates_every_object_with_least_privilege_rbac() {
    let ns = TestNamespace::new("chart-install").await;
    let tenants = TestNamespace::new("chart-tenants").await;
    let release = format!("w{}", &ns.name[ns.name.len() - 8..]);
    let notes = install(&release, &ns.name, &[]);
    assert!(notes.contains("STATUS: deployed") && notes.contains("winston-database"), "{notes}");

    // Every rendered object exists on the server.
    let rendered = documents(&render(&ns.name, &[]));
    let (ok, listed) = run(
        ns.kubectl(&[
            "get",
            "deployments,services,serviceaccounts,configmaps,roles,rolebindings,poddisruptionbudgets",
            "-o",
            "name",
        ]),
        None,
    );
    assert!(ok, "{listed}");
    let controller = format!("{release}-winston-controller");
    let proxy = format!("{release}-winston-proxy");
    for want in [
        format!("deployment.apps/{controller}"),
        format!("deployment.apps/{proxy}"),
        format!("service/{proxy}"),
        format!("service/{controller}-metrics"),
        format!("serviceaccount/{controller}"),
        format!("serviceaccount/{proxy}"),
        format!("configmap/{release}-winston-plans"),
        format!("configmap/{release}-winston-models"),
        format!("role.rbac.authorization.k8s.io/{controller}-leader-election"),
        format!("rolebinding.rbac.authorization.k8s.io/{controller}-leader-election"),
        format!("poddisruptionbudget.policy/{proxy}"),
    ] {
        assert!(listed.lines().any(|l| l == want), "{want} missing in:\n{listed}");
    }
    let namespaced = rendered.iter().filter(|d| !d["kind"].as_str().unwrap().starts_with("Cluster")).count();
    let installed = listed.lines().filter(|l| l.contains(&release)).count();
    assert_eq!(installed, namespaced, "helm install and helm template disagree:\n{listed}");
    for kind in ["clusterrole", "clusterrolebinding"] {
        let (ok, out) = run(control_plane().kubectl(&["get", kind, &controller]), None);
        assert!(ok, "{kind} {controller}: {out}");
    }

    let sa = (ns.name.as_str(), controller.as_str());
    let other = tenants.name.as_str();
    // Allowed (samples; the exact rule set is compared below): what the
    // controller uses, in any tenant namespace.
    for kind in WINSTON_KINDS {
        for verb in ["watch", "patch"] {
            assert!(can_i(sa, verb, kind, "", other), "controller should {verb} {kind}");
        }
        assert!(can_i(sa, "patch", kind, "status", other), "controller should patch {kind}/status");
        assert!(can_i(sa, "update", kind, "finalizers", other), "controller should update {kind}/finalizers");
        assert!(!can_i(sa, "delete", kind, "status", other), "{kind}/status delete");
    }
    for kind in &WINSTON_KINDS[1..] {
        for verb in ["create", "delete"] {
            assert!(can_i(sa, verb, kind, "", other), "controller should {verb} {kind}");
        }
    }
    for verb in ["watch", "create", "delete"] {
        assert!(can_i(sa, verb, "secrets", "", other), "controller should {verb} secrets");
    }
    for events in ["events", "events.events.k8s.io"] {
        assert!(can_i(sa, "create", events, "", other) && can_i(sa, "patch", events, "", other), "{events}");
        assert!(!can_i(sa, "delete", events, "", other), "{events} delete");
    }
    for verb in ["get", "create", "update", "patch"] {
        assert!(can_i(sa, verb, "leases.coordination.k8s.io", "", &ns.name), "controller should {verb} its lease");
    }
    // Denied: the rest. Tenants belong to users; leases elsewhere; workloads, RBAC, namespaces.
    for (verb, resource, namespace) in [
        ("create", "tenants.winston.dev", other),
        ("delete", "tenants.winston.dev", other),
        ("deletecollection", "tenantinstances.winston.dev", other),
        ("get", "leases.coordination.k8s.io", other),
        ("delete", "leases.coordination.k8s.io", ns.name.as_str()),
        ("list", "leases.coordination.k8s.io", ns.name.as_str()),
        ("list", "configmaps", other),
        ("patch", "configmaps", other),
        ("list", "pods", other),
        ("create", "deployments.apps", other),
        ("create", "rolebindings.rbac.authorization.k8s.io", other),
        ("create", "clusterroles.rbac.authorization.k8s.io", ""),
        ("delete", "namespaces", ""),
        ("patch", "customresourcedefinitions.apiextensions.k8s.io", ""),
        ("create", "serviceaccounts/token", other),
    ] {
        let namespace = if namespace.is_empty() { "default" } else { namespace };
        let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
        assert!(!can_i(sa, verb, resource, sub, namespace), "controller must not {verb} {resource} in {namespace}");
    }

    // The whole rule set, not only samples: exactly the designed rules in a
    // tenant namespace, plus the Lease in the controller's own namespace.
    let mut want = designed_controller_rules();
    assert_eq!(rules(sa, other), want, "controller rules in a tenant namespace");
    want.insert("leases.coordination.k8s.io".into(), verbs("get create update patch"));
    assert_eq!(rules(sa, &ns.name), want, "controller rules in its own namespace");

    // The proxy has no rule at all: it can neither write nor read the Kubernetes API.
    let proxy_sa = (ns.name.as_str(), proxy.as_str());
    for namespace in [ns.name.as_str(), other] {
        assert_eq!(rules(proxy_sa, namespace), Rules::new(), "proxy rules in {namespace}");
        for verb in ["get", "list", "create", "patch", "delete"] {
            for resource in
                ["secrets", "tenants.winston.dev", "creditledgers.winston.dev", "leases.coordination.k8s.io"]
            {
                assert!(!can_i(proxy_sa, verb, resource, "", namespace), "proxy must not {verb} {resource}");
            }
        }
    }

    let (ok, out) = run(
        helm(&[
            "uninstall",
            &release,
            "--namespace",
            &ns.name,
            "--kubeconfig",
            &control_plane().kubeconfig.display().to_string(),
        ]),
        None,
    );
    assert!(ok, "{out}");
    let (_, left) = run(control_plane().kubectl(&["get", "clusterrole", &controller]), None);
    assert!(left.contains("NotFound"), "uninstall leaves the ClusterRole: {left}");
}

#[tokio::test]
async fn a_namespaced_install_grants_nothing_outside_its_watch_namespace() {
    let ns = TestNamespace::new("chart-ns").await;
    let watched = TestNamespace::new("chart-watched").await;
    let elsewhere = TestNamespace::new("chart-elsewhere").await;
    let release = format!("n{}", &ns.name[ns.name.len() - 8..]);
    install(&release, &ns.name, &[&format!("controller.watchNamespace={}", watched.name), "proxy.enabled=false"]);
    let controller = format!("{release}-winston-controller");
    let sa = (ns.name.as_str(), controller.as_str());
    for kind in WINSTON_KINDS.iter().copied().chain(["secrets"]) {
        assert!(can_i(sa, "watch", kind, "", &watched.name), "{kind} in the watched namespace");
        assert!(!can_i(sa, "get", kind, "", &elsewhere.name), "{kind} outside the watched namespace");
    }
    assert!(can_i(sa, "update", "leases.coordination.k8s.io", "", &ns.name), "its own lease");
    let (ok, _) = run(control_plane().kubectl(&["get", "clusterrole", &controller]), None);
    assert!(!ok, "a namespaced install must not create a ClusterRole");
    let (ok, out) = run(ns.kubectl(&["get", "deployment,service,serviceaccount", "-o", "name"]), None);
    assert!(ok && !out.contains("proxy"), "proxy.enabled=false still rendered the proxy:\n{out}");
}

/// The per-namespace mode (`controller.tenantNamespaces`): the controller's
/// rules, Secrets included, exist in each tenant namespace and nowhere else:
/// not in kube-system, not in another namespace, and in its own namespace
/// only the Lease, so the proxy's upstream-key Secrets are out of its reach.
/// The proxy's ServiceAccount can do nothing anywhere.
#[tokio::test]
async fn with_tenant_namespaces_the_controller_reads_secrets_only_where_tenants_live() {
    let ns = TestNamespace::new("chart-list").await;
    let shop = TestNamespace::new("chart-shop").await;
    let clinic = TestNamespace::new("chart-clinic").await;
    let elsewhere = TestNamespace::new("chart-elsewhere").await;
    let release = format!("t{}", &ns.name[ns.name.len() - 8..]);
    let list = format!("controller.tenantNamespaces={{{},{}}}", shop.name, clinic.name);
    let notes = install(&release, &ns.name, &[&list]);
    assert!(notes.contains(&format!("{}, {}", clinic.name, shop.name)) && notes.contains("only"), "{notes}");
    let controller = format!("{release}-winston-controller");
    let sa = (ns.name.as_str(), controller.as_str());

    for tenants in [&shop.name, &clinic.name] {
        assert_eq!(rules(sa, tenants), designed_controller_rules(), "controller rules in tenant namespace {tenants}");
        for verb in ["get", "list", "watch", "create", "patch", "delete"] {
            assert!(can_i(sa, verb, "secrets", "", tenants), "controller should {verb} secrets in {tenants}");
        }
    }
    let lease_only = Rules::from([("leases.coordination.k8s.io".into(), verbs("get create update patch"))]);
    for (namespace, want) in
        [("kube-system", Rules::new()), (elsewhere.name.as_str(), Rules::new()), (ns.name.as_str(), lease_only)]
    {
        assert_eq!(rules(sa, namespace), want, "controller rules in {namespace}");
        for verb in ["get", "list", "watch", "create", "patch", "update", "delete"] {
            assert!(!can_i(sa, verb, "secrets", "", namespace), "controller must not {verb} secrets in {namespace}");
        }
    }
    // By name too: the upstream keys the proxy mounts, in the release namespace.
    assert!(!can_i(sa, "get", "secrets/winston-upstream-keys", "", &ns.name), "the proxy's upstream keys");
    for kind in ["clusterrole", "clusterrolebinding"] {
        let (ok, _) = run(control_plane().kubectl(&["get", kind, &controller]), None);
        assert!(!ok, "the per-namespace mode must not create a {kind}");
    }

    let proxy_sa = (ns.name.as_str(), &*format!("{release}-winston-proxy"));
    for namespace in [ns.name.as_str(), shop.name.as_str(), "kube-system"] {
        assert_eq!(rules(proxy_sa, namespace), Rules::new(), "proxy rules in {namespace}");
        for verb in ["create", "update", "patch", "delete"] {
            for resource in ["secrets", "tenants.winston.dev", "leases.coordination.k8s.io", "events", "configmaps"] {
                assert!(
                    !can_i(proxy_sa, verb, resource, "", namespace),
                    "proxy must not {verb} {resource} in {namespace}"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_gitops_example_builds_and_is_accepted_and_both_tools_point_at_it() {
    let ns = TestNamespace::new("gitops").await;
    let dir = root().join("examples/gitops/tenants");
    let mut build = control_plane().kubectl(&["kustomize"]);
    build.arg(&dir);
    let (ok, built) = run(build, None);
    assert!(ok, "kubectl kustomize examples/gitops/tenants:\n{built}");
    let (ok, out) = dry_run(&ns, &built);
    assert!(ok, "the tenants folder was refused:\n{out}");
    assert_eq!(out.lines().filter(|l| l.contains("(server dry run)")).count(), 3, "{out}");
    // Every tenant file is listed, so none is silently left out of the sync.
    let listed = read("examples/gitops/tenants/kustomization.yaml");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(name == "kustomization.yaml" || listed.contains(&format!("- {name}")), "{name} not in kustomization");
    }

    let argo = documents(&read("examples/gitops/argocd-application.yaml"));
    assert_eq!(kind_name(&argo[0]).0, "Application");
    assert_eq!(argo[0]["spec"]["source"]["path"], "examples/gitops/tenants");
    let options = argo[0]["spec"]["syncPolicy"]["syncOptions"].as_array().unwrap();
    assert!(options.iter().any(|o| o == "ServerSideApply=true"), "Argo CD must apply server-side");

    let flux = documents(&read("examples/gitops/flux-kustomization.yaml"));
    let source = flux.iter().find(|d| d["kind"] == "GitRepository").unwrap();
    let kustomization = flux.iter().find(|d| d["kind"] == "Kustomization").unwrap();
    assert_eq!(kustomization["spec"]["path"], "./examples/gitops/tenants");
    assert_eq!(kustomization["spec"]["sourceRef"]["name"], source["metadata"]["name"]);
    assert_eq!(kustomization["spec"]["targetNamespace"], argo[0]["spec"]["destination"]["namespace"]);
}
