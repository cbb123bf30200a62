//! One verified event, handled once: record the id, lock the subscription,
//! decide, write the Tenant, commit. Every step that fails before the
//! commit leaves nothing behind, so the 500 it becomes makes Stripe retry
//! an event that will be handled from scratch.
use chrono::Utc;

use super::config::{CancelPolicy, IntakeConfig};
use super::event::{self, CheckoutSession, Event, Intent, Subscription, tenant_name};
use super::store::{EventTx, Store, StoreError, SubscriptionRow};
use super::stripe_api::{StripeApi, StripeApiError};
use super::tenants::{Created, TenantError, Tenants};
use crate::api::AgentProfile;

/// The profiles a checkout tries in turn while admission refuses them: as
/// given, without the website (free text), without any hint; each only when
/// it differs from the one before.
fn with_fewer_hints(profile: AgentProfile) -> Vec<AgentProfile> {
    let no_site = AgentProfile { website: None, ..profile.clone() };
    let bare = AgentProfile { industry: None, persona: None, ..no_site.clone() };
    let mut out = vec![profile];
    for candidate in [no_site, bare] {
        if out.last() != Some(&candidate) {
            out.push(candidate);
        }
    }
    out
}

/// What intake did with an event (answered 2xx).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The event id was processed before.
    Duplicate,
    /// A Tenant was created.
    Created,
    /// The Tenant existed already (a retry after a crash, or a second checkout).
    AlreadyCreated,
    /// Plan and paused were set on the Tenant.
    Updated,
    /// The Tenant was paused (failed payment).
    Paused,
    /// The Tenant was deleted (cancellation, `onCancel: Delete`).
    Deleted,
    /// The Tenant was paused and its deletion scheduled (`onCancel: Pause`).
    DeletionScheduled,
    /// Older than the newest state applied to the subscription: ignored.
    Stale,
    /// The state was recorded; there is no Tenant to change (yet, or any more).
    NoTenant,
    /// The subscription had ended before its checkout was handled.
    Ended,
    /// The contact email belongs to another Tenant: none is created.
    EmailTaken,
    /// The event is about a subscription the customer's Tenant no longer
    /// follows (a later checkout replaced it): recorded, the Tenant untouched.
    Superseded,
    /// The subscription the Tenant followed ended while another of the
    /// customer's is live: the Tenant now follows that one.
    Switched,
    /// The event can never produce a Tenant (no email, refused by admission, malformed).
    Rejected(&'static str),
    /// Not something intake acts on (unknown type, payment-mode checkout, pausing off).
    Ignored(&'static str),
}

impl Outcome {
    /// Stable label for metrics, logs and the `stripe_events.outcome` column.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::Created => "created",
            Self::AlreadyCreated => "already_created",
            Self::Updated => "updated",
            Self::Paused => "paused",
            Self::Deleted => "deleted",
            Self::DeletionScheduled => "deletion_scheduled",
            Self::Stale => "stale",
            Self::NoTenant => "no_tenant",
            Self::Ended => "ended",
            Self::EmailTaken => "email_taken",
            Self::Superseded => "superseded",
            Self::Switched => "switched",
            Self::Rejected(_) => "rejected",
            Self::Ignored(_) => "ignored",
        }
    }
}

/// Why an event could not be handled now (answered 500: Stripe retries).
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error(transparent)]
    Stripe(#[from] StripeApiError),
    /// Configuration the operator can fix; retries succeed once it is.
    #[error("price {0} maps to no plan in the intake configuration")]
    UnmappedPrice(String),
    #[error("subscription {0} has no price")]
    NoPrice(String),
}

impl ProcessError {
    /// Stable label for metrics.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::Store(_) => "database",
            Self::Tenant(_) => "kube",
            Self::Stripe(_) => "stripe_api",
            Self::UnmappedPrice(_) => "unmapped_price",
            Self::NoPrice(_) => "no_price",
        }
    }
}

/// Everything an event needs.
#[derive(Clone)]
pub struct Processor {
    pub config: IntakeConfig,
    pub namespace: String,
    pub store: Store,
    pub tenants: Tenants,
    pub stripe: StripeApi,
}

impl Processor {
    /// Handles `event` exactly once.
    ///
    /// # Errors
    /// [`ProcessError`]; nothing is recorded then.
    pub async fn process(&self, event: &Event) -> Result<Outcome, ProcessError> {
        let Some(mut tx) = self.store.begin(&event.id, &event.kind).await? else { return Ok(Outcome::Duplicate) };
        let outcome = match event::intent(event) {
            Err(e) => {
                tracing::warn!(event = %event.id, error = %e, "event object is malformed; acknowledged without action");
                Outcome::Rejected("malformed_object")
            }
            Ok(Intent::Ignore(why)) => Outcome::Ignored(why),
            Ok(Intent::Checkout(session)) => self.checkout(&mut tx, event, session).await?,
            Ok(Intent::Subscription(sub)) => self.updated(&mut tx, event, &sub).await?,
            Ok(Intent::Cancelled(sub)) => self.cancelled(&mut tx, event, &sub).await?,
            Ok(Intent::PaymentFailed { subscription, customer }) => {
                self.payment_failed(&mut tx, event, &subscription, &customer).await?
            }
        };
        tx.finish(outcome.label()).await?;
        Ok(outcome)
    }

    /// Locks the customer's Tenant (events of all its subscriptions run one
    /// at a time) and the subscription's row.
    async fn lock(&self, tx: &mut EventTx, subscription: &str, customer: &str) -> Result<SubscriptionRow, StoreError> {
        let tenant = tenant_name(customer);
        tx.lock_key("tenant", &format!("{}/{tenant}", self.namespace)).await?;
        tx.lock_subscription(subscription, customer, &self.namespace, &tenant).await
    }

    /// Whether the Tenant follows `subscription` (or there is no Tenant, or
    /// it names no subscription: then the event applies as it always did).
    async fn follows(&self, tenant: &str, subscription: &str) -> Result<bool, TenantError> {
        Ok(match self.tenants.subscription_of(tenant).await? {
            Some(Some(current)) => current == subscription,
            _ => true,
        })
    }

    fn plan_of(&self, sub: &Subscription) -> Result<String, ProcessError> {
        let price = &sub.items.data.first().ok_or_else(|| ProcessError::NoPrice(sub.id.clone()))?.price;
        self.config
            .plan_for(&price.id, price.lookup_key.as_deref())
            .map(str::to_string)
            .ok_or_else(|| ProcessError::UnmappedPrice(price.id.clone()))
    }

    async fn checkout(
        &self,
        tx: &mut EventTx,
        event: &Event,
        session: CheckoutSession,
    ) -> Result<Outcome, ProcessError> {
        let (Some(customer), Some(subscription)) = (session.customer.clone(), session.subscription.clone()) else {
            return Ok(Outcome::Ignored("not_a_subscription_checkout"));
        };
        let mut row = self.lock(tx, &subscription, &customer).await?;
        if row.ended {
            return Ok(Outcome::Ended);
        }
        let profile = match event::profile(&session) {
            Ok(p) => p,
            Err(why) => return Ok(Outcome::Rejected(why)),
        };
        // The subscription as Stripe holds it now: the prices bought, and
        // newer than any subscription event, whatever order they came in.
        let sub = self.stripe.subscription(&subscription).await?;
        if event::ended_by_status(&sub.status) {
            row.ended = true;
            tx.save_subscription(&row).await?;
            return Ok(Outcome::Ended);
        }
        let plan = self.plan_of(&sub)?;
        // Held until this event commits: a concurrent checkout with the same
        // address waits, then finds this one's Tenant.
        tx.lock_key("email", &profile.contact_email.to_lowercase()).await?;
        if let Some(owner) = self.tenants.email_owner(&profile.contact_email, &row.tenant).await? {
            // The email is personal data: the log names the customer and the other tenant only.
            tracing::warn!(customer = %customer, other_tenant = %owner, "checkout refused: its contact email belongs to another tenant");
            return Ok(Outcome::EmailTaken);
        }
        let paused = event::paused_by_status(&sub.status, self.config.pause_on_payment_failed);
        let stripe = (customer.as_str(), subscription.as_str());
        // What the customer typed (website, industry, agent name) is a hint:
        // a paid checkout never fails on one admission refuses.
        let mut created = Err(TenantError::Refused(String::new()));
        for (i, candidate) in with_fewer_hints(profile).into_iter().enumerate() {
            if i == 1 {
                tracing::warn!(customer = %customer, "the API server refused the checkout's hints; creating the Tenant without them");
            }
            created = self.tenants.create_if_absent(&row.tenant, candidate, &plan, paused, stripe).await;
            if !matches!(created, Err(TenantError::Refused(_))) {
                break;
            }
        }
        let created = match created {
            Ok(c) => c,
            Err(TenantError::Refused(_)) => {
                tracing::warn!(customer = %customer, "checkout refused: the API server does not admit the Tenant");
                return Ok(Outcome::Rejected("refused_by_api_server"));
            }
            Err(e) => return Err(e.into()),
        };
        if created == Created::AlreadyThere {
            // A retry after a crash, a returning customer whose earlier
            // subscription was cancelled, or a second subscription: the
            // newest checkout decides, and the Tenant follows it from now on.
            self.tenants.set(&row.tenant, Some(&plan), paused, Some(&subscription)).await?;
            tx.cancel_other_deletions(&row.tenant, &subscription).await?;
        }
        row.plan = Some(plan);
        row.last_event_created = row.last_event_created.max(event.created);
        tx.save_subscription(&row).await?;
        Ok(if created == Created::Created { Outcome::Created } else { Outcome::AlreadyCreated })
    }

    async fn updated(&self, tx: &mut EventTx, event: &Event, sub: &Subscription) -> Result<Outcome, ProcessError> {
        let mut row = self.lock(tx, &sub.id, &sub.customer).await?;
        // Equal `created` (one second) cannot be ordered: the later delivery wins.
        if row.ended || event.created < row.last_event_created {
            return Ok(Outcome::Stale);
        }
        let plan = self.plan_of(sub)?;
        row.plan = Some(plan.clone());
        row.last_event_created = event.created;
        let outcome = if self.follows(&row.tenant, &sub.id).await? {
            let paused = event::paused_by_status(&sub.status, self.config.pause_on_payment_failed);
            let found = self.tenants.set(&row.tenant, Some(&plan), paused, None).await?;
            if found { Outcome::Updated } else { Outcome::NoTenant }
        } else {
            Outcome::Superseded
        };
        tx.save_subscription(&row).await?;
        Ok(outcome)
    }

    async fn cancelled(&self, tx: &mut EventTx, event: &Event, sub: &Subscription) -> Result<Outcome, ProcessError> {
        let mut row = self.lock(tx, &sub.id, &sub.customer).await?;
        // A cancellation is final: it applies whatever arrived before it.
        row.ended = true;
        row.last_event_created = row.last_event_created.max(event.created);
        if !self.follows(&row.tenant, &sub.id).await? {
            tx.save_subscription(&row).await?;
            return Ok(Outcome::Superseded);
        }
        if let Some(live) = tx.live_subscription_of(&sub.customer, &sub.id).await? {
            // The customer still pays for another subscription: the Tenant
            // follows it instead of going away.
            let found = self.tenants.set(&row.tenant, live.plan.as_deref(), false, Some(&live.subscription_id)).await?;
            tx.save_subscription(&row).await?;
            return Ok(if found { Outcome::Switched } else { Outcome::NoTenant });
        }
        let outcome = match self.config.on_cancel {
            CancelPolicy::Delete => {
                self.tenants.delete(&row.tenant).await?;
                row.delete_due_at = None;
                Outcome::Deleted
            }
            CancelPolicy::Pause => {
                let found = self.tenants.set(&row.tenant, None, true, None).await?;
                let grace =
                    chrono::Duration::seconds(i64::try_from(self.config.grace_period_seconds).unwrap_or(i64::MAX / 2));
                // A retried cancellation keeps the first due time.
                row.delete_due_at = row.delete_due_at.or_else(|| Utc::now().checked_add_signed(grace));
                if found { Outcome::DeletionScheduled } else { Outcome::NoTenant }
            }
        };
        tx.save_subscription(&row).await?;
        Ok(outcome)
    }

    async fn payment_failed(
        &self,
        tx: &mut EventTx,
        event: &Event,
        subscription: &str,
        customer: &str,
    ) -> Result<Outcome, ProcessError> {
        if !self.config.pause_on_payment_failed {
            return Ok(Outcome::Ignored("pause_on_payment_failed_off"));
        }
        let mut row = self.lock(tx, subscription, customer).await?;
        if row.ended || event.created < row.last_event_created {
            return Ok(Outcome::Stale);
        }
        row.last_event_created = event.created;
        let outcome = if self.follows(&row.tenant, subscription).await? {
            let found = self.tenants.set(&row.tenant, None, true, None).await?;
            if found { Outcome::Paused } else { Outcome::NoTenant }
        } else {
            Outcome::Superseded
        };
        tx.save_subscription(&row).await?;
        Ok(outcome)
    }
}
