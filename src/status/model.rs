//! What `winston status` shows, gathered from the three kinds: each Tenant
//! with its TenantInstances (by ordinal) and its CreditLedger. Pure: the
//! reads live in `fetch`, the drawing in `render`.
use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::api::{CreditLedger, Tenant, TenantInstance};

/// One tenant and everything of it that `status` shows.
#[derive(Clone, Debug)]
pub struct TenantView {
    pub tenant: Tenant,
    /// Its instances, ordered by ordinal.
    pub instances: Vec<TenantInstance>,
    /// Its ledger, when it exists.
    pub ledger: Option<CreditLedger>,
}

/// Groups instances and ledgers under the Tenant they reference (same
/// namespace, `spec.tenantRef`); objects of unknown tenants are left out.
/// Tenants come out sorted by namespace and name.
#[must_use]
pub fn group(tenants: Vec<Tenant>, instances: Vec<TenantInstance>, ledgers: Vec<CreditLedger>) -> Vec<TenantView> {
    let key = |ns: Option<String>, name: &str| (ns.unwrap_or_default(), name.to_string());
    let mut views: BTreeMap<(String, String), TenantView> = tenants
        .into_iter()
        .map(|t| (key(t.namespace(), &t.name_any()), TenantView { tenant: t, instances: Vec::new(), ledger: None }))
        .collect();
    for i in instances {
        if let Some(v) = views.get_mut(&key(i.namespace(), &i.spec.tenant_ref.name)) {
            v.instances.push(i);
        }
    }
    for l in ledgers {
        if let Some(v) = views.get_mut(&key(l.namespace(), &l.spec.tenant_ref.name)) {
            // A tenant has one ledger, named after it; prefer that one if several point here.
            if v.ledger.is_none() || l.name_any() == v.tenant.name_any() {
                v.ledger = Some(l);
            }
        }
    }
    let mut out: Vec<TenantView> = views.into_values().collect();
    for v in &mut out {
        v.instances.sort_by_key(|i| (i.spec.ordinal, i.name_any()));
    }
    out
}

/// Whether there is at least one tenant and every one is in phase Ready.
#[must_use]
pub fn all_ready(views: &[TenantView]) -> bool {
    !views.is_empty()
        && views.iter().all(|v| v.tenant.status.as_ref().and_then(|s| s.phase) == Some(crate::api::Phase::Ready))
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Builders for tests of this module and of `render`.
    use crate::api::{CreditLedger, Tenant, TenantInstance};

    pub fn tenant(ns: &str, name: &str, plan: &str) -> Tenant {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "winston.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2026-11-23T09:00:00Z"},
            "spec": {"displayName": name.to_uppercase(), "contactEmail": "ops@x.example", "plan": plan}
        }))
        .expect("valid tenant")
    }

    pub fn instance(ns: &str, tenant: &str, ordinal: i32, status: serde_json::Value) -> TenantInstance {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "winston.dev/v1alpha1", "kind": "TenantInstance",
            "metadata": {"name": format!("{tenant}-{ordinal}"), "namespace": ns},
            "spec": {"tenantRef": {"name": tenant}, "ordinal": ordinal, "plan": "starter",
                     "profile": {"displayName": "X", "contactEmail": "ops@x.example"}},
            "status": status
        }))
        .expect("valid instance")
    }

    pub fn ledger(ns: &str, name: &str, tenant: &str, status: serde_json::Value) -> CreditLedger {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "winston.dev/v1alpha1", "kind": "CreditLedger",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"tenantRef": {"name": tenant}},
            "status": status
        }))
        .expect("valid ledger")
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn children_are_grouped_under_their_tenant_in_the_same_namespace() {
        let views = group(
            vec![tenant("b", "acme", "starter"), tenant("a", "zeta", "free"), tenant("a", "acme", "growth")],
            vec![
                instance("a", "acme", 1, serde_json::json!({})),
                instance("a", "acme", 0, serde_json::json!({})),
                instance("b", "acme", 0, serde_json::json!({})),
                instance("a", "ghost", 0, serde_json::json!({})),
            ],
            vec![
                ledger("a", "other", "acme", serde_json::json!({})),
                ledger("a", "acme", "acme", serde_json::json!({})),
                ledger("b", "zeta", "zeta", serde_json::json!({})),
            ],
        );
        let order: Vec<_> = views.iter().map(|v| (v.tenant.namespace().unwrap(), v.tenant.name_any())).collect();
        assert_eq!(order, [("a".into(), "acme".into()), ("a".into(), "zeta".into()), ("b".into(), "acme".into())]);
        let names: Vec<_> = views[0].instances.iter().map(ResourceExt::name_any).collect();
        assert_eq!(names, ["acme-0", "acme-1"]);
        assert_eq!(views[0].ledger.as_ref().map(ResourceExt::name_any).as_deref(), Some("acme"));
        assert_eq!(views[2].instances.len(), 1);
        assert!(views[1].ledger.is_none() && views[2].ledger.is_none(), "ledgers do not cross namespaces");
    }

    #[test]
    fn ready_means_every_tenant_ready_and_at_least_one() {
        assert!(!all_ready(&[]));
        let mut views = group(vec![tenant("a", "x", "free"), tenant("a", "y", "free")], vec![], vec![]);
        assert!(!all_ready(&views), "no status yet");
        let ready: crate::api::TenantStatus = serde_json::from_value(serde_json::json!({"phase": "Ready"})).unwrap();
        views[0].tenant.status = Some(ready.clone());
        assert!(!all_ready(&views), "one of two");
        views[1].tenant.status = Some(ready);
        assert!(all_ready(&views));
    }
}
