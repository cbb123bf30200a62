//! The Tenant writes intake makes, all idempotent so that a retried event
//! (after a crash between the write and the answer) changes nothing twice:
//! create-if-absent by the stable name, merge patches of `plan` and
//! `paused`, delete that treats "gone" as done. Intake never reads or
//! writes anything but Tenants in its namespace.
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::api::{AgentProfile, StackSpec, Tenant, TenantSpec};

/// Field manager of intake's writes (the controller's is `winston`).
pub const FIELD_MANAGER: &str = "winston-intake";
/// Annotation: the Stripe customer a Tenant was created for.
pub const ANNOTATION_CUSTOMER: &str = "winston.dev/stripe-customer";
/// Annotation: the Stripe subscription a Tenant was created for.
pub const ANNOTATION_SUBSCRIPTION: &str = "winston.dev/stripe-subscription";

/// Errors writing Tenants.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// The API server refused the object as invalid (422/400): retrying
    /// the same event cannot help.
    #[error("the API server refused the Tenant: {0}")]
    Refused(String),
    /// Anything else (unreachable, 5xx, forbidden, conflict): Stripe retries.
    #[error("failed to write the Tenant: {0}")]
    Kube(#[source] kube::Error),
    /// A Tenant of that name is still being deleted (a customer who
    /// cancelled and bought again within seconds): Stripe retries until it is gone.
    #[error("the Tenant {0} is still being deleted")]
    StillDeleting(String),
}

fn classify(e: kube::Error) -> TenantError {
    match &e {
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => {
            TenantError::Refused(crate::api::conditions::api_error_message(&e))
        }
        _ => TenantError::Kube(e),
    }
}

/// What [`Tenants::create_if_absent`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    Created,
    AlreadyThere,
}

/// Tenants of one namespace.
#[derive(Clone)]
pub struct Tenants {
    api: Api<Tenant>,
}

impl Tenants {
    #[must_use]
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self { api: Api::namespaced(client, namespace) }
    }

    /// The name of another Tenant (not `except`) whose contact email is
    /// `email` (compared without case), if any.
    ///
    /// # Errors
    /// The list fails.
    pub async fn email_owner(&self, email: &str, except: &str) -> Result<Option<String>, TenantError> {
        let list = self.api.list(&ListParams::default()).await.map_err(classify)?;
        Ok(list
            .items
            .into_iter()
            .find(|t| {
                t.spec.profile.contact_email.eq_ignore_ascii_case(email) && t.metadata.name.as_deref() != Some(except)
            })
            .and_then(|t| t.metadata.name))
    }

    /// Creates the Tenant `name` unless it exists (then leaves it as it is).
    ///
    /// # Errors
    /// [`TenantError::Refused`] when admission refuses it, else [`TenantError::Kube`].
    pub async fn create_if_absent(
        &self,
        name: &str,
        profile: AgentProfile,
        plan: &str,
        paused: bool,
        stripe: (&str, &str),
    ) -> Result<Created, TenantError> {
        let mut tenant = Tenant::new(
            name,
            TenantSpec {
                profile,
                stack: StackSpec { plan: plan.to_string(), paused, ..StackSpec::default() },
                instances: 1,
                credits: None,
                approved: None,
            },
        );
        tenant.metadata.annotations = Some(
            [
                (ANNOTATION_CUSTOMER.to_string(), stripe.0.to_string()),
                (ANNOTATION_SUBSCRIPTION.to_string(), stripe.1.to_string()),
            ]
            .into(),
        );
        tenant.metadata.labels = Some([(crate::names::LABEL_MANAGED_BY.to_string(), FIELD_MANAGER.to_string())].into());
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        match self.api.create(&params, &tenant).await {
            Ok(_) => Ok(Created::Created),
            Err(kube::Error::Api(s)) if s.code == 409 => match self.api.get_opt(name).await.map_err(classify)? {
                Some(t) if t.metadata.deletion_timestamp.is_some() => Err(TenantError::StillDeleting(name.to_string())),
                // Gone between the two calls: the same as still deleting, retried.
                None => Err(TenantError::StillDeleting(name.to_string())),
                Some(_) => Ok(Created::AlreadyThere),
            },
            Err(e) => Err(classify(e)),
        }
    }

    /// The subscription the Tenant `name` follows (its
    /// [`ANNOTATION_SUBSCRIPTION`]): `None` when there is no such Tenant,
    /// `Some(None)` when it names none (made by hand).
    ///
    /// # Errors
    /// The read fails.
    pub async fn subscription_of(&self, name: &str) -> Result<Option<Option<String>>, TenantError> {
        let tenant = self.api.get_opt(name).await.map_err(classify)?;
        Ok(tenant.map(|t| t.metadata.annotations.and_then(|mut a| a.remove(ANNOTATION_SUBSCRIPTION))))
    }

    /// Sets `plan` (when given) and `paused` on the Tenant `name`, and the
    /// subscription it follows (when given); `false` when there is no such
    /// Tenant.
    ///
    /// # Errors
    /// The patch fails.
    pub async fn set(
        &self,
        name: &str,
        plan: Option<&str>,
        paused: bool,
        subscription: Option<&str>,
    ) -> Result<bool, TenantError> {
        let spec = match plan {
            Some(plan) => json!({"plan": plan, "paused": paused}),
            None => json!({"paused": paused}),
        };
        let mut patch = json!({"spec": spec});
        if let Some(sub) = subscription {
            patch["metadata"] = json!({"annotations": {ANNOTATION_SUBSCRIPTION: sub}});
        }
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        match self.api.patch(name, &params, &Patch::Merge(patch)).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(classify(e)),
        }
    }

    /// Deletes the Tenant `name`; gone already counts as done. The
    /// controller's finalizer tears its stack down; its ledger history stays.
    ///
    /// # Errors
    /// The delete fails.
    pub async fn delete(&self, name: &str) -> Result<(), TenantError> {
        match self.api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    /// Whether the API server answers for Tenants here (readiness).
    pub async fn reachable(&self) -> bool {
        self.api.list(&ListParams::default().limit(1)).await.is_ok()
    }
}
