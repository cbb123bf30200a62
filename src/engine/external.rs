//! Drives one external object through the provider contract
//! (observe -> create/update) with the crash-safety protocol: a pending
//! marker is persisted before every create, the id right after it, and an
//! object found by marker is adopted (searched for only when a create was
//! announced and its id never recorded). More than one match stalls; nothing is
//! ever deleted automatically. Nothing here waits for a platform: long
//! operations come back as [`Converged::Waiting`] and are polled by requeue.
//!
//! Where each object's id lives in the status is said once, by [`Object`].
use super::EngineError;
use super::record::Recorder;
use crate::api::tenant_instance::ExternalIds;
use crate::api::{PendingCreate, StepName, TenantInstanceSpec};
use crate::providers::{Applied, ExternalResource, Observation};

/// Where the object stands after one pass.
#[derive(Debug)]
pub enum Converged<O> {
    /// Exists and matches the spec.
    Ready { id: String, observed: O },
    /// Exists (or is being created) and a platform operation runs. The id
    /// is empty while an announced create is not listed yet (see
    /// [`Object::listed_late`]).
    Waiting { id: String, message: String },
}

/// The external objects of an instance. Each belongs to a step, has its
/// id in one place of `status.external`, and may be deployed again when it
/// failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    NeonProject,
    SupabaseProject,
    RailwayProject,
    RailwayService,
    VercelProject,
    WelcomeEmail,
    /// The application's admin user in Supabase Auth.
    AdminUser,
}

impl Object {
    /// The step that converges the object.
    #[must_use]
    pub fn step(self) -> StepName {
        match self {
            Self::NeonProject | Self::SupabaseProject => StepName::Database,
            Self::RailwayProject | Self::RailwayService => StepName::Service,
            Self::VercelProject => StepName::Frontend,
            Self::WelcomeEmail => StepName::Notify,
            Self::AdminUser => StepName::AdminUser,
        }
    }

    /// A failed object (a failed deployment) is asked to deploy again, once
    /// per backoff period since the failure still fails the pass.
    #[must_use]
    pub fn redeploys(self) -> bool {
        matches!(self, Self::RailwayService | Self::VercelProject)
    }

    /// Whether the platform's list (which the search by marker reads) may
    /// lag behind a create: the projects and services of Neon, Supabase,
    /// Railway and Vercel. The welcome email and the admin user are found
    /// by an idempotency key or an exact address, not by a lagging list.
    #[must_use]
    pub fn listed_late(self) -> bool {
        !matches!(self, Self::WelcomeEmail | Self::AdminUser)
    }

    /// Whether another object of the step follows under the same marker
    /// (the Railway project, before its service): finding or creating it
    /// leaves the step's marker in place for the next one.
    #[must_use]
    pub fn leads(self) -> bool {
        matches!(self, Self::RailwayProject)
    }

    /// The announced objects `step` may create for `spec`, in the order it
    /// creates them.
    #[must_use]
    pub fn of_step(step: StepName, spec: &TenantInstanceSpec) -> &'static [Self] {
        match step {
            StepName::Database if super::wanted::on_supabase(spec) => &[Self::SupabaseProject],
            StepName::Database => &[Self::NeonProject],
            StepName::Service => &[Self::RailwayProject, Self::RailwayService],
            StepName::Frontend => &[Self::VercelProject],
            StepName::AdminUser => &[Self::AdminUser],
            _ => &[],
        }
    }

    /// Whether a create is announced (a pending marker written first). The
    /// welcome email is not: Resend cannot be searched, so a marker would
    /// find nothing after a crash; its create is idempotent by key instead
    /// (the instance UID), and a repeat returns the same id.
    #[must_use]
    pub fn announced(self) -> bool {
        !matches!(self, Self::WelcomeEmail)
    }

    /// The id recorded in `ext` (a status's `external`).
    #[must_use]
    pub fn known(self, ext: Option<&ExternalIds>) -> Option<String> {
        let ext = ext?;
        let id = match self {
            Self::NeonProject => ext.neon.as_ref()?.project_id.as_ref(),
            Self::SupabaseProject => ext.supabase.as_ref()?.project_ref.as_ref(),
            Self::RailwayProject => ext.railway.as_ref()?.project_id.as_ref(),
            Self::RailwayService => ext.railway.as_ref()?.service_id.as_ref(),
            Self::VercelProject => ext.vercel.as_ref()?.project_id.as_ref(),
            Self::WelcomeEmail => ext.welcome_email_id.as_ref(),
            Self::AdminUser => ext.supabase.as_ref()?.admin_user_id.as_ref(),
        };
        id.cloned()
    }

    /// Records `id` in `ext` (`None` forgets it), resetting what belonged
    /// to the old one: a new project makes every other id of its platform
    /// stale, a new Railway service its deployment and domain.
    pub fn set(self, ext: &mut ExternalIds, id: Option<&str>) {
        match self {
            Self::NeonProject => renew(&mut ext.neon, id, |n| &mut n.project_id),
            Self::SupabaseProject => renew(&mut ext.supabase, id, |s| &mut s.project_ref),
            Self::RailwayProject => renew(&mut ext.railway, id, |r| &mut r.project_id),
            Self::RailwayService => {
                let ids = ext.railway.get_or_insert_default();
                if ids.service_id.as_deref() != id {
                    ids.service_id = id.map(str::to_string);
                    ids.deployment_id = None;
                    ids.domain = None;
                }
            }
            Self::VercelProject => renew(&mut ext.vercel, id, |v| &mut v.project_id),
            Self::WelcomeEmail => ext.welcome_email_id = id.map(str::to_string),
            Self::AdminUser => ext.supabase.get_or_insert_default().admin_user_id = id.map(str::to_string),
        }
    }
}

/// Records the project `id` in a platform's `ids`; a different project
/// resets every other id of the platform.
fn renew<T: Default>(ids: &mut Option<T>, id: Option<&str>, project: fn(&mut T) -> &mut Option<String>) {
    let ids = ids.get_or_insert_default();
    if project(ids).as_deref() != id {
        *ids = T::default();
        *project(ids) = id.map(str::to_string);
    }
}

/// How a step's wait on an operation the platform runs (a deployment
/// building, a project starting) begins: a pass that finds a step waiting
/// so only polls it (see `run::Look`).
pub const WAITING_FOR_OPERATION: &str = "waiting for operation ";

/// One pass over `object` carrying `marker`: observe, then
/// adopt, update or create.
///
/// # Errors
/// Provider errors (classified by the caller), status write failures,
/// `AmbiguousObjects` for more than one object with the marker and
/// `ObjectFailed` for an object in a terminal failed state (after asking
/// for a redeploy when the object redeploys).
pub async fn converge<R: ExternalResource>(
    resource: &R,
    spec: &R::Spec,
    object: Object,
    marker: &str,
    rec: &mut Recorder<'_>,
) -> Result<Converged<R::Observed>, EngineError> {
    let known = object.known(rec.status.external.as_ref());
    let known = known.as_deref();
    match observe(resource, spec, object, known, rec).await? {
        Observation::Absent => {
            if let Some(message) = unlisted(object, known, rec) {
                return Ok(Converged::Waiting { id: String::new(), message });
            }
            let created = create(resource, spec, object, marker, known, rec).await?;
            Ok(second_look(resource, spec, created).await)
        }
        Observation::Ambiguous { ids } => {
            Err(EngineError::AmbiguousObjects { step: object.step(), marker: marker.to_string(), ids })
        }
        Observation::Failed { id, reason } => {
            remember(rec, object, &id, known);
            if object.redeploys() {
                resource.update(&id, spec).await?;
            }
            Err(EngineError::ObjectFailed { step: object.step(), id, reason, redeploying: object.redeploys() })
        }
        Observation::InProgress { id, operation_id } => {
            remember(rec, object, &id, known);
            Ok(Converged::Waiting { id, message: format!("{WAITING_FOR_OPERATION}{operation_id}") })
        }
        Observation::Ready { id, observed, up_to_date } => {
            remember(rec, object, &id, known);
            if up_to_date {
                return Ok(Converged::Ready { id, observed });
            }
            update(resource, spec, id).await
        }
    }
}

/// What the platform holds for the object. With no id and no create ever
/// announced (announcing is a conditional status write that precedes every
/// create) there is nothing to adopt: the search, which on Railway pages
/// through every project of the workspace, is skipped.
async fn observe<R: ExternalResource>(
    resource: &R,
    spec: &R::Spec,
    object: Object,
    known: Option<&str>,
    rec: &Recorder<'_>,
) -> Result<Observation<R::Observed>, EngineError> {
    if known.is_none() && rec.pending_for(object).is_none() {
        return Ok(Observation::Absent);
    }
    Ok(resource.observe(spec, known).await?)
}

/// Why nothing is created yet although the search found nothing: a create
/// of the object was announced less than the settle window ago, so its
/// object may exist and not be listed yet (a lost answer, a controller killed
/// after the create). Creating again would duplicate it; the search runs
/// again at the next poll. `None` lets the create go ahead: no announced
/// create, a window passed, or a known id whose object was deleted out of
/// band (then a pending marker belongs to the step's next object: the
/// Railway service beside its known project).
fn unlisted(object: Object, known: Option<&str>, rec: &Recorder<'_>) -> Option<String> {
    settling(object, known, rec.pending_for(object), rec.list_settle(), chrono::Utc::now())
}

/// [`unlisted`] at `now`, for the step's `pending` create and a settle `window`.
fn settling(
    object: Object,
    known: Option<&str>,
    pending: Option<&PendingCreate>,
    window: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    if known.is_some() || !object.listed_late() {
        return None;
    }
    let pending = pending?;
    // A clock that went back counts as no time elapsed: still settling.
    let elapsed = (now - pending.since).to_std().unwrap_or_default();
    (elapsed < window).then(|| {
        format!(
            "a create of {} announced {}s ago is not listed yet; searching again before creating \
             (list settle window {}s)",
            pending.marker,
            elapsed.as_secs(),
            window.as_secs()
        )
    })
}

/// Announces, creates and records a new object (forgetting a known id whose
/// object was deleted out of band).
async fn create<R: ExternalResource>(
    resource: &R,
    spec: &R::Spec,
    object: Object,
    marker: &str,
    known: Option<&str>,
    rec: &mut Recorder<'_>,
) -> Result<Converged<R::Observed>, EngineError> {
    if known.is_some() {
        object.set(rec.status.external.get_or_insert_default(), None);
    }
    if object.announced() {
        rec.announce(object, marker).await?;
    }
    let created = resource.create(spec).await?;
    // The id joins the next status write of this pass (the next announce
    // or the pass's last write), not a write of its own: until then the
    // announced marker, already stored, finds the object after a crash.
    object.set(rec.status.external.get_or_insert_default(), Some(&created.id));
    rec.settled(object);
    let message = match created.operation_id {
        Some(op) => format!("created {}; {WAITING_FOR_OPERATION}{op}", created.id),
        None => format!("created {}", created.id),
    };
    Ok(Converged::Waiting { id: created.id, message })
}

/// Many creates finish at once (or within a round trip): one more look in
/// the same pass lets it go on to the next step instead of ending with a
/// status write and coming back later. The look only reads: anything but
/// an up-to-date Ready object (still working, not found yet, an error)
/// keeps the create's own `Waiting`, and the next pass judges it as usual;
/// it never creates or updates.
async fn second_look<R: ExternalResource>(
    resource: &R,
    spec: &R::Spec,
    created: Converged<R::Observed>,
) -> Converged<R::Observed> {
    let Converged::Waiting { id, message } = created else { return created };
    match resource.observe(spec, Some(&id)).await {
        Ok(Observation::Ready { id: seen, observed, up_to_date: true }) if seen == id => {
            Converged::Ready { id, observed }
        }
        _ => Converged::Waiting { id, message },
    }
}

/// Brings a drifted object back to the spec.
async fn update<R: ExternalResource>(
    resource: &R,
    spec: &R::Spec,
    id: String,
) -> Result<Converged<R::Observed>, EngineError> {
    let message = match resource.update(&id, spec).await? {
        Applied::Done => "updated; verifying".to_string(),
        Applied::InProgress { operation_id } => format!("updating (operation {operation_id})"),
    };
    Ok(Converged::Waiting { id, message })
}

/// Records an id that observe found (an adoption, or a new id) and clears
/// the step's pending marker, both stored by the pass's next status write
/// (until then the stored marker still finds the object). The Railway
/// project's marker is not cleared: it stands for its service too, which
/// may have been created under it without a write of its own (see
/// [`Recorder::announce`]). A confirmed known id changes nothing: a
/// pending marker beside it belongs to the step's next object and must
/// survive until that object is found or created.
fn remember(rec: &mut Recorder<'_>, object: Object, id: &str, known: Option<&str>) {
    if known != Some(id) {
        object.set(rec.status.external.get_or_insert_default(), Some(id));
        rec.settled(object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tenant_instance::{NeonIds, RailwayIds};

    fn railway(project: &str, service: &str) -> ExternalIds {
        ExternalIds {
            railway: Some(RailwayIds {
                project_id: Some(project.into()),
                environment_id: Some("env".into()),
                service_id: Some(service.into()),
                deployment_id: Some("dep".into()),
                domain: Some("x.up.railway.app".into()),
            }),
            ..ExternalIds::default()
        }
    }

    #[test]
    fn an_unlisted_announced_create_waits_out_the_settle_window_only() {
        let since = chrono::Utc::now();
        let pending = PendingCreate { step: StepName::Service, marker: "wn-abc".into(), since };
        let window = std::time::Duration::from_secs(30);
        let at = |s| since + chrono::TimeDelta::seconds(s);
        let wait = settling(Object::RailwayProject, None, Some(&pending), window, at(5)).unwrap();
        assert!(wait.contains("wn-abc") && wait.contains("not listed yet"), "{wait}");
        assert!(settling(Object::RailwayProject, None, Some(&pending), window, at(30)).is_none(), "window passed");
        assert!(settling(Object::RailwayProject, None, None, window, at(1)).is_none(), "nothing announced");
        // Beside a known project, the pending marker is the service's: a
        // project deleted out of band is recreated at once.
        assert!(settling(Object::RailwayProject, Some("p"), Some(&pending), window, at(1)).is_none());
        assert!(settling(Object::RailwayService, None, Some(&pending), window, at(1)).is_some());
        let email = PendingCreate { step: StepName::Notify, ..pending.clone() };
        assert!(settling(Object::WelcomeEmail, None, Some(&email), window, at(1)).is_none(), "not a lagging list");
        assert!(settling(Object::NeonProject, None, Some(&pending), std::time::Duration::ZERO, at(0)).is_none());
        assert!(settling(Object::NeonProject, None, Some(&pending), window, at(-3)).is_some(), "clock went back");
    }

    #[test]
    fn every_object_reads_back_what_it_records() {
        for object in [
            Object::NeonProject,
            Object::SupabaseProject,
            Object::RailwayProject,
            Object::RailwayService,
            Object::VercelProject,
            Object::WelcomeEmail,
            Object::AdminUser,
        ] {
            let mut ext = ExternalIds::default();
            assert_eq!(object.known(None), None);
            object.set(&mut ext, Some("id-1"));
            assert_eq!(object.known(Some(&ext)).as_deref(), Some("id-1"), "{object:?}");
            object.set(&mut ext, None);
            assert_eq!(object.known(Some(&ext)), None, "{object:?} forgets");
        }
    }

    #[test]
    fn a_new_id_resets_what_belonged_to_the_old_one() {
        // (object, new id, what is left of the Railway ids)
        let rows = [
            (Object::RailwayProject, "p", railway("p", "s").railway),
            (Object::RailwayProject, "p2", Some(RailwayIds { project_id: Some("p2".into()), ..RailwayIds::default() })),
            (Object::RailwayService, "s", railway("p", "s").railway),
            (
                Object::RailwayService,
                "s2",
                Some(RailwayIds {
                    project_id: Some("p".into()),
                    environment_id: Some("env".into()),
                    service_id: Some("s2".into()),
                    ..RailwayIds::default()
                }),
            ),
        ];
        for (object, id, want) in rows {
            let mut ext = railway("p", "s");
            object.set(&mut ext, Some(id));
            assert_eq!(ext.railway, want, "{object:?} {id}");
        }
        let mut ext = ExternalIds {
            neon: Some(NeonIds { project_id: Some("n".into()), role_name: Some("r".into()), ..NeonIds::default() }),
            ..ExternalIds::default()
        };
        Object::NeonProject.set(&mut ext, Some("n2"));
        assert_eq!(ext.neon, Some(NeonIds { project_id: Some("n2".into()), ..NeonIds::default() }));
        assert!(Object::RailwayService.redeploys() && Object::VercelProject.redeploys());
        assert!(!Object::NeonProject.redeploys());
    }
}
