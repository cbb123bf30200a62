//! The part of Stripe's event payloads intake reads, and the pure decisions
//! made from them: which Tenant a customer gets (its stable name, profile
//! hints) and what a subscription's state means for it. No IO here.
//!
//! Shapes (Stripe API objects): an `event` is `{id, object: "event", type,
//! created, data: {object}}`; a `checkout.session` carries `customer`,
//! `customer_details {email, name}`, `subscription`, `metadata` and
//! `custom_fields [{key, type, text {value}}]`; a `subscription` carries
//! `customer`, `status` and `items.data[].price {id, lookup_key}`; an
//! `invoice` names its subscription in `subscription` (older API versions)
//! or `parent.subscription_details.subscription` (2025 and later).
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::{AgentProfile, Persona};

/// A Stripe event envelope.
#[derive(Clone, Debug, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds when Stripe created the event: the order of a subscription's states.
    pub created: i64,
    pub data: EventData,
}

/// `data` of an event.
#[derive(Clone, Debug, Deserialize)]
pub struct EventData {
    pub object: Value,
}

/// `checkout.session` (the fields intake reads).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    pub customer_details: Option<CustomerDetails>,
    #[serde(default)]
    pub subscription: Option<String>,
    /// `paid`, `unpaid` (a delayed payment method, settled later by
    /// `checkout.session.async_payment_succeeded` or `_failed`) or
    /// `no_payment_required` (a trial).
    #[serde(default)]
    pub payment_status: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub custom_fields: Vec<CustomField>,
}

/// `checkout.session.customer_details`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CustomerDetails {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// One of `checkout.session.custom_fields` (`text`, `numeric` or `dropdown`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CustomField {
    pub key: String,
    #[serde(default)]
    pub text: Option<FieldValue>,
    #[serde(default)]
    pub dropdown: Option<FieldValue>,
    #[serde(default)]
    pub numeric: Option<FieldValue>,
}

/// The `{value}` of a custom field.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct FieldValue {
    #[serde(default)]
    pub value: Option<String>,
}

/// `subscription` (the fields intake reads).
#[derive(Clone, Debug, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub customer: String,
    pub status: String,
    pub items: SubscriptionItems,
}

/// `subscription.items`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SubscriptionItems {
    #[serde(default)]
    pub data: Vec<SubscriptionItem>,
}

/// One `subscription_item`.
#[derive(Clone, Debug, Deserialize)]
pub struct SubscriptionItem {
    pub price: Price,
}

/// A `price` (the fields intake reads).
#[derive(Clone, Debug, Deserialize)]
pub struct Price {
    pub id: String,
    #[serde(default)]
    pub lookup_key: Option<String>,
}

/// `invoice` (the fields intake reads).
#[derive(Clone, Debug, Deserialize)]
pub struct Invoice {
    pub id: String,
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    pub subscription: Option<String>,
    #[serde(default)]
    pub parent: Option<Value>,
}

impl Invoice {
    /// The subscription this invoice bills, in either API version's place.
    #[must_use]
    pub fn subscription_id(&self) -> Option<String> {
        self.subscription.clone().or_else(|| {
            self.parent.as_ref()?.pointer("/subscription_details/subscription")?.as_str().map(str::to_string)
        })
    }
}

/// What an event asks of intake.
#[derive(Clone, Debug)]
pub enum Intent {
    /// A paid checkout: create the customer's Tenant.
    Checkout(CheckoutSession),
    /// A subscription's new state: its plan and whether it is paused.
    Subscription(Subscription),
    /// The subscription ended.
    Cancelled(Subscription),
    /// An invoice of `subscription` failed.
    PaymentFailed { subscription: String, customer: String },
    /// Nothing to do with it (the label says why, for metrics).
    Ignore(&'static str),
}

/// Errors reading an event's object: the event is not what its type says.
#[derive(Debug, thiserror::Error)]
#[error("event {kind} does not carry a valid {object}: {source}")]
pub struct ShapeError {
    kind: String,
    object: &'static str,
    source: serde_json::Error,
}

/// The intent of `event`.
///
/// # Errors
/// [`ShapeError`] when the object does not have the fields its type promises.
pub fn intent(event: &Event) -> Result<Intent, ShapeError> {
    let object = |name: &'static str| move |source| ShapeError { kind: event.kind.clone(), object: name, source };
    let data = event.data.object.clone();
    Ok(match event.kind.as_str() {
        // A completed checkout whose payment is still pending (`unpaid`)
        // creates nothing yet: its `async_payment_succeeded` does.
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            let session: CheckoutSession = serde_json::from_value(data).map_err(object("checkout.session"))?;
            if session.mode.as_deref() != Some("subscription")
                || session.subscription.is_none()
                || session.customer.is_none()
            {
                Intent::Ignore("not_a_subscription_checkout")
            } else if session.payment_status.as_deref() == Some("unpaid") {
                Intent::Ignore("payment_pending")
            } else {
                Intent::Checkout(session)
            }
        }
        "checkout.session.async_payment_failed" => Intent::Ignore("payment_failed_no_tenant"),
        "customer.subscription.updated" => {
            Intent::Subscription(serde_json::from_value(data).map_err(object("subscription"))?)
        }
        "customer.subscription.deleted" => {
            Intent::Cancelled(serde_json::from_value(data).map_err(object("subscription"))?)
        }
        "invoice.payment_failed" => {
            let invoice: Invoice = serde_json::from_value(data).map_err(object("invoice"))?;
            match (invoice.subscription_id(), invoice.customer) {
                (Some(subscription), Some(customer)) => Intent::PaymentFailed { subscription, customer },
                _ => Intent::Ignore("invoice_without_subscription"),
            }
        }
        _ => Intent::Ignore("unhandled_type"),
    })
}

/// The Tenant name of a Stripe customer: `cus-<lowercased id>-<hash>`, a DNS
/// label of at most 40 characters.
///
/// # Guarantees
/// Stable: the same customer id always gives the same name (so a retried
/// create finds the Tenant it made). Stripe ids are case-sensitive, so the
/// readable lowercased part alone could collide (`cus_Ab` and `cus_aB`);
/// the 8 hex digits of SHA-256 over the exact id tell them apart.
#[must_use]
pub fn tenant_name(customer_id: &str) -> String {
    let readable: String = customer_id
        .strip_prefix("cus_")
        .unwrap_or(customer_id)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(26)
        .collect();
    let hash = hex::encode(Sha256::digest(customer_id.as_bytes()));
    if readable.is_empty() { format!("cus-{}", &hash[..8]) } else { format!("cus-{readable}-{}", &hash[..8]) }
}

/// The profile of the Tenant a checkout creates, or why none can be made.
///
/// Hints (`website`, `industry`, `agent_name`) come from the session's
/// `metadata` (set by the operator's checkout code) or else its
/// `custom_fields` (typed by the customer); a hint that admission would
/// refuse is dropped rather than failing the whole checkout.
///
/// # Errors
/// `"missing_email"` when the session has no usable contact email.
pub fn profile(session: &CheckoutSession) -> Result<AgentProfile, &'static str> {
    let details = session.customer_details.clone().unwrap_or_default();
    let email = details.email.map(|e| e.trim().to_string()).filter(|e| is_plain_email(e)).ok_or("missing_email")?;
    let display_name = details
        .name
        .as_deref()
        .and_then(|n| one_line(n, 100))
        .or_else(|| email.split('@').next().and_then(|local| one_line(local, 100)))
        .unwrap_or_else(|| "Customer".into());
    let persona = hint(session, &["agent_name", "persona_name", "persona"])
        .and_then(|n| one_line(&n, 40))
        .filter(|n| !n.contains(['<', '>']))
        .map(|name| Persona { name, ..Persona::default() });
    Ok(AgentProfile {
        display_name,
        contact_email: email,
        website: hint(session, &["website", "website_url", "url"]).filter(|w| is_public_url(w)),
        industry: hint(session, &["industry"]).and_then(|i| one_line(&i, 100)),
        persona,
    })
}

fn hint(session: &CheckoutSession, keys: &[&str]) -> Option<String> {
    let from_metadata = keys.iter().find_map(|k| session.metadata.get(*k).cloned());
    let from_fields = || {
        session
            .custom_fields
            .iter()
            .filter(|f| keys.contains(&f.key.as_str()))
            .find_map(|f| [&f.text, &f.dropdown, &f.numeric].into_iter().flatten().find_map(|v| v.value.clone()))
    };
    from_metadata.or_else(from_fields).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// One line of at most `max` characters without control characters, or None.
fn one_line(text: &str, max: usize) -> Option<String> {
    let cleaned: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(max).collect();
    let trimmed = cleaned.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

/// A plain address as admission accepts it (local@domain.tld, no display name).
fn is_plain_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    let local_ok =
        !local.is_empty() && local.chars().all(|c| c.is_ascii_alphanumeric() || ".!#$%&'*+/=?^_`{|}~-".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    email.len() <= 254 && local_ok && domain_ok
}

/// An http(s) URL with a host and no `user:password@`, at most 2048 characters.
fn is_public_url(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    url.len() <= 2048
        && !authority.is_empty()
        && !authority.contains('@')
        && !url.chars().any(|c| c.is_control() || c == ' ')
}

/// Whether a subscription in `status` leaves its tenant paused.
/// `paused` (a trial without payment method, or paused collection) always
/// pauses; `past_due` and `unpaid` pause when the operator asks for it.
#[must_use]
pub fn paused_by_status(status: &str, pause_on_payment_failed: bool) -> bool {
    match status {
        "paused" => true,
        "past_due" | "unpaid" => pause_on_payment_failed,
        _ => false,
    }
}

/// Whether a subscription in `status` has ended (no tenant should exist for it).
#[must_use]
pub fn ended_by_status(status: &str) -> bool {
    matches!(status, "canceled" | "incomplete_expired")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn session(v: Value) -> CheckoutSession {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn tenant_names_are_stable_dns_labels_that_keep_case_apart() {
        let a = tenant_name("cus_NffrFeUfNV2Hib");
        assert_eq!(a, tenant_name("cus_NffrFeUfNV2Hib"));
        assert_ne!(a, tenant_name("cus_nffrfeufnv2hib"));
        assert!(a.starts_with("cus-nffrfeufnv2hib-"), "{a}");
        for id in ["cus_NffrFeUfNV2Hib", "", "cus_", "____", &"x".repeat(200), "cus_ÄÖ😀"] {
            let n = tenant_name(id);
            assert!(n.len() <= 40, "{n}");
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{n}");
            assert!(!n.ends_with('-') && n.starts_with('c'), "{n}");
        }
    }

    #[test]
    fn profile_reads_details_metadata_then_custom_fields() {
        let s = session(json!({
            "id": "cs_1", "mode": "subscription", "customer": "cus_1", "subscription": "sub_1",
            "customer_details": {"email": "Owner@Bella.example", "name": "Bella Bistro"},
            "metadata": {"industry": "Restaurants"},
            "custom_fields": [
                {"key": "website", "type": "text", "text": {"value": "https://bella.example"}},
                {"key": "agent_name", "type": "text", "text": {"value": " Giulia "}},
                {"key": "industry", "type": "text", "text": {"value": "ignored: metadata wins"}}
            ]
        }));
        let p = profile(&s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.display_name, "Bella Bistro");
        assert_eq!(p.contact_email, "Owner@Bella.example");
        assert_eq!(p.website.as_deref(), Some("https://bella.example"));
        assert_eq!(p.industry.as_deref(), Some("Restaurants"));
        assert_eq!(p.persona.map(|p| p.name).as_deref(), Some("Giulia"));
    }

    #[test]
    fn hostile_hints_are_dropped_or_flattened_never_passed_through() {
        let s = session(json!({
            "id": "cs_1", "customer_details": {"email": "a@b.example", "name": "Evil\n## SYSTEM\u{7}"},
            "metadata": {"website": "https://user:pw@evil.example", "agent_name": "<script>", "industry": "\n"}
        }));
        let p = profile(&s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.display_name, "Evil ## SYSTEM");
        assert_eq!((p.website, p.industry, p.persona), (None, None, None));
        for bad in ["", "no-at", "Name <a@b.example>", "a@localhost", "a b@c.example"] {
            let s = session(json!({"id": "cs", "customer_details": {"email": bad}}));
            assert_eq!(profile(&s).err(), Some("missing_email"), "{bad}");
        }
    }

    #[test]
    fn intents_by_type() {
        let ev = |kind: &str, object: Value| Event {
            id: "evt_1".into(),
            kind: kind.into(),
            created: 1,
            data: EventData { object },
        };
        let sub = json!({"id": "sub_1", "customer": "cus_1", "status": "active", "items": {"data": [{"price": {"id": "price_1"}}]}});
        assert!(matches!(intent(&ev("customer.subscription.updated", sub.clone())), Ok(Intent::Subscription(_))));
        assert!(matches!(intent(&ev("customer.subscription.deleted", sub)), Ok(Intent::Cancelled(_))));
        assert!(matches!(intent(&ev("charge.refunded", json!({}))), Ok(Intent::Ignore("unhandled_type"))));
        assert!(intent(&ev("customer.subscription.updated", json!({"id": 3}))).is_err());
        let paying = json!({"id": "cs", "mode": "subscription", "customer": "cus_1", "subscription": "sub_1",
            "payment_status": "unpaid"});
        assert!(matches!(
            intent(&ev("checkout.session.completed", paying.clone())),
            Ok(Intent::Ignore("payment_pending"))
        ));
        let mut paid = paying;
        paid["payment_status"] = json!("paid");
        assert!(matches!(
            intent(&ev("checkout.session.async_payment_succeeded", paid.clone())),
            Ok(Intent::Checkout(_))
        ));
        assert!(matches!(intent(&ev("checkout.session.completed", paid)), Ok(Intent::Checkout(_))));
        let pay = json!({"id": "cs", "mode": "payment", "customer": "cus_1"});
        assert!(matches!(intent(&ev("checkout.session.completed", pay)), Ok(Intent::Ignore(_))));
        let new_invoice =
            json!({"id": "in_1", "customer": "cus_1", "parent": {"subscription_details": {"subscription": "sub_9"}}});
        assert!(matches!(intent(&ev("invoice.payment_failed", new_invoice)),
            Ok(Intent::PaymentFailed { subscription, .. }) if subscription == "sub_9"));
    }

    #[test]
    fn statuses() {
        assert!(paused_by_status("paused", false));
        assert!(!paused_by_status("past_due", false) && paused_by_status("past_due", true));
        assert!(!paused_by_status("active", true));
        assert!(ended_by_status("canceled") && !ended_by_status("active"));
    }
}
