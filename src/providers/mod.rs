//! Clients for the external platforms a tenant lives on (Neon, Railway,
//! Vercel, Supabase, Resend), all behind one observe/create/update/delete
//! contract ([`ExternalResource`]) that the provisioning steps drive.
//!
//! Platform detail (GraphQL, REST paths, enums, envelopes) stays inside
//! `providers/<platform>/`. Planning, pending markers, status and requeues
//! belong to the provisioning engine; budgets, error classification and the
//! observe lookup rule ([`find_by_id_or_marker`]) are shared here
//! ([`budget`], [`error`], [`http`]). Platform names come from
//! [`crate::platform`]; the clients know nothing of any stand-in they may be
//! pointed at (see [`ProvidersConfig::with_base_urls`]).
pub mod budget;
pub mod config;
pub mod error;
pub mod http;
pub mod neon;
pub mod railway;
pub mod resend;
pub mod supabase;
pub mod supabase_auth;
pub mod vercel;

use std::future::Future;

pub use config::{PlatformConfig, ProvidersConfig, Secret};
pub use error::ProviderError;

/// The deterministic identity of one Winston instance on every platform.
///
/// # Guarantees
/// The same UID always yields the same [`Marker::name`] (`wn-` + the first
/// 12 hex digits of the UID) and [`Marker::value`] (`winston:<uid>`), so a
/// restarted controller finds what an earlier run created.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Marker {
    uid: String,
}

impl Marker {
    /// Key under which platforms with labels/metadata/variables store [`Marker::value`].
    pub const KEY: &'static str = "winstonUid";

    /// The marker of the instance with Kubernetes UID `uid`.
    #[must_use]
    pub fn new(uid: &str) -> Self {
        Self { uid: uid.trim().to_ascii_lowercase() }
    }

    /// The full instance UID.
    #[must_use]
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Object name: `wn-<first 12 hex digits of the uid>`.
    #[must_use]
    pub fn name(&self) -> String {
        let hex: String = self.uid.chars().filter(char::is_ascii_hexdigit).take(12).collect();
        format!("wn-{hex}")
    }

    /// [`Marker::name`] as a PostgreSQL-friendly identifier (`wn_<hex>`).
    #[must_use]
    pub fn ident(&self) -> String {
        self.name().replace('-', "_")
    }

    /// The marker value stored in labels/descriptions/metadata: `winston:<uid>`.
    #[must_use]
    pub fn value(&self) -> String {
        format!("winston:{}", self.uid)
    }

    /// The object name on platforms that keep no description or metadata
    /// (Neon, Supabase): [`Marker::name`], a space, then [`Marker::value`].
    /// A search by the short name still finds it, and the full marker can
    /// be verified before the object is adopted or deleted.
    #[must_use]
    pub fn labelled_name(&self) -> String {
        format!("{} {}", self.name(), self.value())
    }

    /// Whether `name` is [`Marker::name`], alone or followed by more words
    /// (a [`Marker::labelled_name`], ours or another instance's).
    #[must_use]
    pub fn names(&self, name: &str) -> bool {
        let short = self.name();
        name == short || name.strip_prefix(&short).is_some_and(|rest| rest.starts_with(' '))
    }

    /// Whether `text` (a description, a variable, a labelled name) carries
    /// exactly this marker: one of its whitespace-separated words is
    /// [`Marker::value`]. Another instance whose UID shares the first 12
    /// hex digits has the same [`Marker::name`] but never this value.
    #[must_use]
    pub fn is_in(&self, text: &str) -> bool {
        let value = self.value();
        text.split_whitespace().any(|word| word.eq_ignore_ascii_case(&value))
    }
}

/// The objects a search by [`Marker::name`] found that carry the full
/// marker (`carries`). The others share the 48-bit short name with another
/// instance, or carry no marker at all (made by hand): they are never
/// adopted nor deleted, only reported in a warning with their ids.
pub fn only_marked<T>(
    platform: crate::platform::Platform,
    marker: &Marker,
    found: Vec<T>,
    id_of: impl Fn(&T) -> &str,
    carries: impl Fn(&T) -> bool,
) -> Vec<T> {
    let (ours, foreign): (Vec<T>, Vec<T>) = found.into_iter().partition(|o| carries(o));
    if !foreign.is_empty() {
        let ids: Vec<&str> = foreign.iter().map(&id_of).collect();
        tracing::warn!(
            %platform,
            name = %marker.name(),
            ?ids,
            "objects share this instance's name but not its marker {}: neither adopted nor deleted",
            marker.value()
        );
    }
    ours
}

/// What `observe` found for one external object.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation<O> {
    /// Nothing exists under the known id or the marker: create it.
    Absent,
    /// More than one object carries the marker. Never resolved
    /// automatically: the caller stalls with the ids in its reason.
    Ambiguous { ids: Vec<String> },
    /// The object exists and a platform operation on it is still running;
    /// poll again later with `operation_id` recorded in status.
    InProgress { id: String, operation_id: String },
    /// The object exists and is settled. `up_to_date` is false when the
    /// spec asks for a change `update` can make.
    Ready { id: String, observed: O, up_to_date: bool },
    /// The object exists but ended in a terminal bad state (e.g. a failed
    /// deployment), with the platform's reason.
    Failed { id: String, reason: String },
}

impl<O> Observation<O> {
    /// The platform id of the observed object, if one exists.
    #[must_use]
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Absent | Self::Ambiguous { .. } => None,
            Self::InProgress { id, .. } | Self::Ready { id, .. } | Self::Failed { id, .. } => Some(id),
        }
    }
}

/// The result of `create`: the new object's id, to be written to status at
/// once, and the platform operation to poll, if the creation is asynchronous.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    pub id: String,
    pub operation_id: Option<String>,
}

/// The result of `update` / `delete`: done, or an operation to poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    InProgress { operation_id: String },
}

/// The one contract every external object implements.
///
/// # Idempotency rules
/// - `observe` never mutates. With `known_id` (from status) it reads that
///   object; without it, it looks the object up by the spec's [`Marker`]:
///   zero matches -> `Absent`, one -> that object (adoption), more ->
///   `Ambiguous`. A known id that no longer exists is `Absent` (drift:
///   recreate).
/// - `create` is NOT idempotent on most platforms (Resend, with its
///   Idempotency-Key, is the exception): call it only right after an
///   `observe` returned `Absent`, and record the returned id at once. A lost
///   answer is recovered by the next `observe` finding the object by marker.
/// - `update` converges an existing object to the spec; repeating it is
///   harmless. It is only needed when `observe` said `up_to_date: false`,
///   so a steady state makes no platform writes.
/// - `delete` succeeds when the object is already gone; repeating it is
///   harmless. Asynchronous deletions return an operation to poll.
/// - No call sleeps waiting for a platform operation: long work is reported
///   as `InProgress` with an id and polled by a later `observe`.
pub trait ExternalResource: Send + Sync {
    /// What Winston wants.
    type Spec: Send + Sync;
    /// What the platform reports.
    type Observed: Send + Sync;

    /// Reads the object (see the trait's idempotency rules).
    fn observe(
        &self,
        spec: &Self::Spec,
        known_id: Option<&str>,
    ) -> impl Future<Output = Result<Observation<Self::Observed>, ProviderError>> + Send;

    /// Creates the object; only after `observe` returned `Absent`.
    fn create(&self, spec: &Self::Spec) -> impl Future<Output = Result<Created, ProviderError>> + Send;

    /// Converges the existing object `id` to `spec`.
    fn update(&self, id: &str, spec: &Self::Spec) -> impl Future<Output = Result<Applied, ProviderError>> + Send;

    /// Deletes the object `id` (the spec names its parents); success if already gone.
    fn delete(&self, id: &str, spec: &Self::Spec) -> impl Future<Output = Result<Applied, ProviderError>> + Send;
}

/// Finds the object an `observe` reads, by the rule the [`ExternalResource`]
/// contract states: with the id recorded in status, `by_id` of that id (gone
/// -> `Absent`: drift, recreate); without it, the objects `by_marker` finds
/// (none -> `Absent`, one -> adopt it, several -> `Ambiguous` with their ids
/// from `id_of`).
///
/// `by_marker` is a future not yet started: it is awaited only when no id
/// is known. A platform that cannot be searched passes
/// `std::future::ready(Ok(Vec::new()))`.
///
/// # Returns
/// `Ok(object)` to observe further, or `Err(observation)`: the answer
/// `observe` returns at once.
///
/// # Errors
/// Whatever the awaited lookup returns.
pub async fn find_by_id_or_marker<'id, T, O, ById>(
    known_id: Option<&'id str>,
    by_id: impl FnOnce(&'id str) -> ById,
    by_marker: impl Future<Output = Result<Vec<T>, ProviderError>>,
    id_of: impl Fn(&T) -> &str,
) -> Result<Result<T, Observation<O>>, ProviderError>
where
    ById: Future<Output = Result<Option<T>, ProviderError>>,
{
    let found = match known_id {
        Some(id) => by_id(id).await?,
        None => match single(by_marker.await?.into_iter().map(|o| (id_of(&o).to_string(), o)).collect()) {
            Ok(found) => found.map(|(_, o)| o),
            Err(ids) => return Ok(Err(Observation::Ambiguous { ids })),
        },
    };
    Ok(found.ok_or(Observation::Absent))
}

/// Picks the single object whose marker matches: 0 -> `None`, 1 -> it,
/// more -> the ids for `Ambiguous`.
fn single<T>(mut matches: Vec<(String, T)>) -> Result<Option<(String, T)>, Vec<String>> {
    match matches.len() {
        0 => Ok(None),
        1 => Ok(matches.pop()),
        _ => Err(matches.into_iter().map(|(id, _)| id).collect()),
    }
}

/// One client per platform, each with its own shared request budget.
/// Build it once per process and clone it: clones share budgets and
/// connection pools.
#[derive(Clone, Debug)]
pub struct Providers {
    pub neon: neon::NeonClient,
    pub railway: railway::RailwayClient,
    pub vercel: vercel::VercelClient,
    pub resend: resend::ResendClient,
    pub supabase: supabase::SupabaseClient,
}

impl Providers {
    /// Clients for every platform in `config`.
    ///
    /// # Errors
    /// When an HTTP client cannot be built.
    pub fn new(config: &ProvidersConfig) -> Result<Self, ProviderError> {
        Ok(Self {
            neon: neon::NeonClient::new(&config.neon, config.neon_org_id.clone())?,
            railway: railway::RailwayClient::new(&config.railway, config.railway_workspace_id.clone())?,
            vercel: vercel::VercelClient::new(&config.vercel, config.vercel_team_id.clone())?,
            resend: resend::ResendClient::new(&config.resend)?,
            supabase: supabase::SupabaseClient::new(&config.supabase)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Platform;

    #[test]
    fn marker_is_deterministic() {
        let m = Marker::new("3F2504E0-4F89-11D3-9A0C-0305E82C3301");
        assert_eq!(m.name(), "wn-3f2504e04f89");
        assert_eq!(m.ident(), "wn_3f2504e04f89");
        assert_eq!(m.value(), "winston:3f2504e0-4f89-11d3-9a0c-0305e82c3301");
        assert_eq!(Marker::new("3f2504e0-4f89-11d3-9a0c-0305e82c3301"), m);
        assert_eq!(m.labelled_name(), "wn-3f2504e04f89 winston:3f2504e0-4f89-11d3-9a0c-0305e82c3301");
    }

    /// Two UIDs sharing their first 12 hex digits share the short name;
    /// only the full marker tells them apart.
    #[test]
    fn the_full_marker_tells_colliding_short_names_apart() {
        let a = Marker::new("3f2504e0-4f89-11d3-9a0c-0305e82c3301");
        let b = Marker::new("3f2504e0-4f89-41d3-8a0c-0305e82c3302");
        assert_eq!(a.name(), b.name());
        assert!(a.names(&b.labelled_name()) && a.names(&a.name()));
        assert!(!a.names("wn-3f2504e04f891") && !a.names("xwn-3f2504e04f89"));
        assert!(a.is_in(&a.labelled_name()) && a.is_in(&a.value()));
        assert!(!a.is_in(&b.labelled_name()) && !a.is_in(&b.value()));
        assert!(!a.is_in(&a.name()), "the short name alone is not the marker");
        assert!(!a.is_in(&format!("{}0", a.value())), "a longer word is not the marker");
        let found = vec![a.labelled_name(), b.labelled_name(), a.name()];
        let ours = only_marked(Platform::Neon, &a, found, String::as_str, |n| a.is_in(n));
        assert_eq!(ours, vec![a.labelled_name()]);
    }

    #[test]
    fn no_client_shows_its_token_in_debug() {
        let p =
            Providers::new(&ProvidersConfig::with_base_urls(|p| format!("http://127.0.0.1:1/{p}"), "tok-very-secret"))
                .unwrap();
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        for platform in Platform::ALL {
            assert!(dbg.contains(&format!("platform: {platform:?}")), "{platform} missing from {dbg}");
        }
    }

    /// One row per branch of the lookup rule: (known id, what the id
    /// lookup finds, what the marker lookup finds, expected outcome).
    #[tokio::test]
    async fn find_by_id_or_marker_follows_the_contract() {
        type Outcome = Result<&'static str, Observation<()>>;
        type Row = (Option<&'static str>, Option<&'static str>, Vec<&'static str>, Outcome);
        let ambiguous = Observation::Ambiguous { ids: vec!["a".into(), "b".into()] };
        let rows: [Row; 6] = [
            (Some("a"), Some("a"), vec![], Ok("a")),
            (Some("a"), None, vec!["b"], Err(Observation::Absent)),
            (Some("a"), Some("a"), vec!["a", "b"], Ok("a")),
            (None, None, vec![], Err(Observation::Absent)),
            (None, None, vec!["b"], Ok("b")),
            (None, None, vec!["a", "b"], Err(ambiguous)),
        ];
        for (known, by_id, by_marker, want) in rows {
            let id_lookup = |id: &str| {
                assert_eq!(Some(id), known);
                std::future::ready(Ok(by_id))
            };
            let marker_lookup = std::future::ready(Ok(by_marker.clone()));
            let got = find_by_id_or_marker(known, id_lookup, marker_lookup, |s: &&str| s).await.unwrap();
            assert_eq!(got, want, "known {known:?}, by id {by_id:?}, by marker {by_marker:?}");
        }
    }

    #[tokio::test]
    async fn find_by_id_or_marker_awaits_only_the_lookup_it_needs() {
        let never = async { panic!("the marker lookup ran although the id is known") };
        let by_id = |id: &str| std::future::ready(Ok(Some(id.to_string())));
        let got = find_by_id_or_marker::<String, (), _>(Some("a"), by_id, never, String::as_str).await.unwrap();
        assert_eq!(got, Ok("a".to_string()));
        let failing = async { Err(ProviderError::NotFound { platform: Platform::Neon, message: "m".into() }) };
        let e = find_by_id_or_marker::<String, (), _>(None, by_id, failing, String::as_str).await;
        assert!(e.unwrap_err().is_not_found(), "a failed lookup is an error, not an observation");
    }

    #[test]
    fn single_distinguishes_zero_one_many() {
        assert_eq!(single::<()>(vec![]), Ok(None));
        assert_eq!(single(vec![("a".to_string(), 1)]), Ok(Some(("a".to_string(), 1))));
        assert_eq!(single(vec![("a".to_string(), 1), ("b".to_string(), 2)]), Err(vec!["a".into(), "b".into()]));
    }
}
