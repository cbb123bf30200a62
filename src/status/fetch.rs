//! The reads behind `winston status`: one list of each kind for a snapshot,
//! or watches (reflector stores) that redraw the view as objects change.
//! On a terminal the view is redrawn in place every second (running steps'
//! durations tick); otherwise a new frame is printed only when it changed,
//! so `winston status -w | tee log` stays readable.
use std::io::{IsTerminal, Write};
use std::time::Duration;

use chrono::Utc;
use futures::{StreamExt, stream};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::format::{Style, Tone};
use super::model::{TenantView, all_ready, group};
use super::{Scope, StatusError, render};
use crate::api::{CreditLedger, Tenant, TenantInstance};

fn api<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match scope {
        Scope::All => Api::all(client.clone()),
        Scope::Namespace(ns) | Scope::Tenant { namespace: ns, .. } => Api::namespaced(client.clone(), ns),
    }
}

async fn list<K>(client: &Client, scope: &Scope, what: &'static str) -> Result<Vec<K>, StatusError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match api::<K>(client, scope).list(&Default::default()).await {
        Ok(list) => Ok(list.items),
        // The resource type itself is unknown: the CRDs are not installed.
        Err(kube::Error::Api(e)) if e.code == 404 => Err(StatusError::NotInstalled),
        Err(source) => Err(StatusError::Read { what, source }),
    }
}

/// Prints the view once.
pub(super) async fn once(client: Client, scope: Scope) -> Result<(), StatusError> {
    let tenants = list::<Tenant>(&client, &scope, "Tenants").await?;
    let instances = list::<TenantInstance>(&client, &scope, "TenantInstances").await?;
    let ledgers = list::<CreditLedger>(&client, &scope, "CreditLedgers").await?;
    let views = group(tenants, instances, ledgers);
    if let Scope::Tenant { namespace, name } = &scope
        && !views.iter().any(|v| &v.tenant.name_any() == name)
    {
        return Err(StatusError::NotFound { namespace: namespace.clone(), name: name.clone() });
    }
    let mut out = std::io::stdout().lock();
    out.write_all(frame(&scope, &views, style()).as_bytes())?;
    Ok(())
}

/// Colour on a terminal unless `NO_COLOR` is set (<https://no-color.org>).
fn style() -> Style {
    Style { color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) }
}

/// The whole view for `scope`.
fn frame(scope: &Scope, views: &[TenantView], style: Style) -> String {
    let now = Utc::now();
    match scope {
        Scope::Tenant { namespace, name } => match views.iter().find(|v| &v.tenant.name_any() == name) {
            Some(v) => render::detail(v, now, style),
            None => style.paint(Tone::Quiet, &format!("Tenant {namespace}/{name} does not exist (yet).\n")),
        },
        Scope::Namespace(ns) if views.is_empty() => {
            style.paint(Tone::Quiet, &format!("No Tenants in namespace {ns}.\n"))
        }
        Scope::All if views.is_empty() => style.paint(Tone::Quiet, "No Tenants in any namespace.\n"),
        Scope::Namespace(_) => render::table(views, false, now, style),
        Scope::All => render::table(views, true, now, style),
    }
}

fn store_items<K: Clone + kube::runtime::reflector::Lookup>(store: &Store<K>) -> Vec<K>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store.state().iter().map(|k| (**k).clone()).collect()
}

/// Follows the objects and redraws until Ctrl-C (or, with `until_ready`,
/// until every tenant shown is Ready).
pub(super) async fn follow(client: Client, scope: Scope, until_ready: bool) -> Result<(), StatusError> {
    let config = watcher::Config::default();
    let (tenants, tw) = reflector::store::<Tenant>();
    let (instances, iw) = reflector::store::<TenantInstance>();
    let (ledgers, lw) = reflector::store::<CreditLedger>();
    // Each item: which kind (0..3) and what happened to its watch.
    let changes = stream::select_all([
        reflector::reflector(tw, watcher(api::<Tenant>(&client, &scope), config.clone()))
            .default_backoff()
            .map(|e| (0, Change::from(e)))
            .boxed(),
        reflector::reflector(iw, watcher(api::<TenantInstance>(&client, &scope), config.clone()))
            .default_backoff()
            .map(|e| (1, Change::from(e)))
            .boxed(),
        reflector::reflector(lw, watcher(api::<CreditLedger>(&client, &scope), config))
            .default_backoff()
            .map(|e| (2, Change::from(e)))
            .boxed(),
    ]);
    tokio::pin!(changes);
    let terminal = std::io::stdout().is_terminal();
    let style = style();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_frame = String::new();
    let mut last_error: Option<String> = None;
    let mut listed = [false; 3];
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            change = changes.next() => match change {
                Some((kind, Change::Listed)) => { listed[kind] = true; last_error = None; }
                Some((_, Change::Object)) => last_error = None,
                Some((_, Change::Failed(error))) => last_error = Some(error),
                None => return Ok(()),
            },
            _ = tick.tick(), if terminal => {},
            _ = &mut ctrl_c => return Ok(()),
        }
        // Draw only once every kind has been listed, so a frame is never half empty.
        if listed.contains(&false) && last_error.is_none() {
            continue;
        }
        let views = group(store_items(&tenants), store_items(&instances), store_items(&ledgers));
        let mut view = frame(&scope, &views, style);
        if let Some(e) = &last_error {
            view.push_str(&style.paint(Tone::Bad, &format!("\nwatch interrupted, retrying: {e}\n")));
        }
        let mut out = std::io::stdout().lock();
        if terminal {
            let footer = format!("\nupdated {} · Ctrl-C to stop\n", Utc::now().format("%H:%M:%S"));
            // Home, clear to end of screen: redraw in place without flicker.
            write!(out, "\x1b[H\x1b[J{view}{}", style.paint(Tone::Quiet, &footer))?;
        } else if view != last_frame {
            write!(out, "--- {} ---\n{view}", Utc::now().format("%H:%M:%S"))?;
        }
        out.flush()?;
        last_frame = view;
        if until_ready && all_ready(&views) {
            return Ok(());
        }
    }
}

/// What one watch reported.
enum Change {
    /// The initial list is complete.
    Listed,
    /// An object changed (or a relist is in progress).
    Object,
    /// The watch failed; it retries with backoff.
    Failed(String),
}

impl<K> From<Result<watcher::Event<K>, watcher::Error>> for Change {
    fn from(e: Result<watcher::Event<K>, watcher::Error>) -> Self {
        match e {
            Ok(watcher::Event::InitDone) => Self::Listed,
            Ok(_) => Self::Object,
            Err(e) => Self::Failed(e.to_string()),
        }
    }
}
