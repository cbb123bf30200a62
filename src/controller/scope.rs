//! Which namespaces the controllers watch, and the watches themselves: the
//! whole cluster with one watch per kind, or a list of namespaces with one
//! watch per namespace and kind, merged so that each kind still has one
//! stream and one store.
//!
//! The list exists for least privilege. A cluster-wide watch needs
//! cluster-wide `list` and `watch` permissions (on Secrets too: the
//! TenantInstance controller watches the credentials Secrets it owns), so a
//! controller that only watches listed namespaces can be granted its rules
//! by a Role in each of them and nothing anywhere else. Reconciles, their
//! writes and their Events are namespaced by the object they act on and are
//! the controllers' business.
use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use k8s_openapi::NamespaceResourceScope;
use kube::api::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// The namespaces the controllers watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchScope {
    /// Every namespace: one cluster-wide watch per kind.
    All,
    /// These namespaces (sorted, without duplicates, never empty): one
    /// watch per namespace and kind.
    Namespaces(Vec<String>),
}

impl WatchScope {
    /// The scope `--namespace` and `--namespaces` ask for: their union,
    /// blank entries dropped; every namespace when nothing is left.
    #[must_use]
    pub fn new(namespace: Option<&str>, namespaces: &[String]) -> Self {
        let listed: BTreeSet<String> = namespace
            .into_iter()
            .chain(namespaces.iter().map(String::as_str))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        if listed.is_empty() { Self::All } else { Self::Namespaces(listed.into_iter().collect()) }
    }
}

impl std::fmt::Display for WatchScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("all namespaces"),
            Self::Namespaces(list) => write!(f, "namespaces {}", list.join(", ")),
        }
    }
}

/// The objects of one kind in the watched namespaces, as the controllers
/// watch and cache them. With one source (all namespaces, or one) each
/// method does what kube-runtime does with that source's `Api`.
#[derive(Clone)]
pub struct Watched<K> {
    client: Client,
    /// The namespace of each watch; `None` for the cluster-wide one.
    sources: Vec<Option<String>>,
    kind: std::marker::PhantomData<fn() -> K>,
}

/// The API of `T` in `namespace`, or in all namespaces.
fn api<T>(client: &Client, namespace: Option<&str>) -> Api<T>
where
    T: Resource<Scope = NamespaceResourceScope>,
    T::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

impl<K> Watched<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    /// The kind `K` in `scope`.
    #[must_use]
    pub fn new(client: &Client, scope: &WatchScope) -> Self {
        let sources = match scope {
            WatchScope::All => vec![None],
            WatchScope::Namespaces(list) => list.iter().cloned().map(Some).collect(),
        };
        Self { client: client.clone(), sources, kind: std::marker::PhantomData }
    }

    /// The watch events of every source, `modify`'d, kept in `writer`'s
    /// store and passed on, with the default backoff after errors. One
    /// source: kube-runtime's `reflector`. Several: each watch backs off on
    /// its own, and a namespace's re-list replaces only that namespace's
    /// objects in the store (see [`MergedStore`]).
    pub fn reflect(
        &self,
        wc: &watcher::Config,
        writer: Writer<K>,
        modify: fn(&mut K),
    ) -> BoxStream<'static, watcher::Result<Event<K>>> {
        if let [ns] = self.sources.as_slice() {
            let events = watcher::watcher(api(&self.client, ns.as_deref()), wc.clone()).modify(modify);
            return reflector::reflector(writer, events).default_backoff().boxed();
        }
        let mut store = MergedStore::new(writer);
        stream::select_all(self.sources.iter().map(|ns| {
            let api = api(&self.client, ns.as_deref());
            let ns = ns.clone().unwrap_or_default();
            watcher::watcher(api, wc.clone())
                .modify(modify)
                .default_backoff()
                .map(move |event| (ns.clone(), event))
                .boxed()
        }))
        .map(move |(ns, event)| {
            if let Ok(e) = &event {
                store.apply(&ns, e);
            }
            event
        })
        .boxed()
    }

    /// The metadata of every object `wc` selects, as touched: what
    /// `Controller::owns` watches (metadata-only requests; the watch never
    /// reads a Secret's data). Several sources: each backs off on its own.
    pub fn metadata_touched(&self, wc: &watcher::Config) -> BoxStream<'static, watcher::Result<PartialObjectMeta<K>>> {
        let watch = |ns: &Option<String>| {
            watcher::watcher(api::<PartialObjectMeta<K>>(&self.client, ns.as_deref()), wc.clone())
        };
        if let [ns] = self.sources.as_slice() {
            return watch(ns).touched_objects().boxed();
        }
        stream::select_all(self.sources.iter().map(|ns| watch(ns).default_backoff().touched_objects().boxed())).boxed()
    }
}

/// One store fed by the watches of several namespaces. kube-runtime's
/// reflector takes a re-list (`Init`, `InitApply`..., `InitDone`) as the
/// whole truth and swaps the store for it, which would drop every other
/// namespace's objects; here a namespace's re-list is buffered and then
/// replaces only that namespace's objects, in one swap.
struct MergedStore<K: Resource<DynamicType = ()> + Clone + 'static> {
    writer: Writer<K>,
    reader: reflector::Store<K>,
    relisting: HashMap<String, Vec<K>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> MergedStore<K> {
    fn new(writer: Writer<K>) -> Self {
        let reader = writer.as_reader();
        Self { writer, reader, relisting: HashMap::new() }
    }

    /// Applies `event` of the watch of `namespace`.
    fn apply(&mut self, namespace: &str, event: &Event<K>) {
        match event {
            Event::Apply(_) | Event::Delete(_) => self.writer.apply_watcher_event(event),
            Event::Init => {
                self.relisting.insert(namespace.to_string(), Vec::new());
            }
            Event::InitApply(o) => self.relisting.entry(namespace.to_string()).or_default().push(o.clone()),
            Event::InitDone => {
                let fresh = self.relisting.remove(namespace).unwrap_or_default();
                let others: Vec<K> = self
                    .reader
                    .state()
                    .iter()
                    .filter(|o| o.namespace().as_deref() != Some(namespace))
                    .map(|o| K::clone(o))
                    .collect();
                self.writer.apply_watcher_event(&Event::Init);
                for o in others.into_iter().chain(fresh) {
                    self.writer.apply_watcher_event(&Event::InitApply(o));
                }
                self.writer.apply_watcher_event(&Event::InitDone);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures::FutureExt;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_string()).collect()
    }

    #[test]
    fn the_scope_is_the_union_of_both_flags_or_everything() {
        for (one, many, want) in [
            (None, &[][..], WatchScope::All),
            (Some(""), &[" ", ""][..], WatchScope::All),
            (Some("shop"), &[][..], WatchScope::Namespaces(list(&["shop"]))),
            (None, &["b", "a", "b"][..], WatchScope::Namespaces(list(&["a", "b"]))),
            (Some("c"), &[" a ", "c"][..], WatchScope::Namespaces(list(&["a", "c"]))),
        ] {
            assert_eq!(WatchScope::new(one, &list(many)), want, "{one:?} {many:?}");
        }
        assert_eq!(WatchScope::new(None, &list(&["b", "a"])).to_string(), "namespaces a, b");
        assert_eq!(WatchScope::All.to_string(), "all namespaces");
    }

    fn cm(ns: &str, name: &str, value: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns}, "data": {"v": value}
        }))
        .unwrap()
    }

    /// The store's objects as `ns/name=value`, sorted.
    fn contents(store: &reflector::Store<ConfigMap>) -> Vec<String> {
        let mut all: Vec<String> = store
            .state()
            .iter()
            .map(|o| format!("{}/{}={}", o.namespace().unwrap(), o.name_any(), o.data.as_ref().unwrap()["v"]))
            .collect();
        all.sort();
        all
    }

    fn relist(store: &mut MergedStore<ConfigMap>, ns: &str, objects: &[ConfigMap]) {
        store.apply(ns, &Event::Init);
        for o in objects {
            store.apply(ns, &Event::InitApply(o.clone()));
        }
        store.apply(ns, &Event::InitDone);
    }

    #[test]
    fn a_namespace_relist_replaces_only_that_namespace_in_the_merged_store() {
        let writer = Writer::default();
        let reader = writer.as_reader();
        let mut store = MergedStore::new(writer);
        relist(&mut store, "a", &[cm("a", "x", "1"), cm("a", "y", "1")]);
        assert!(reader.wait_until_ready().now_or_never().is_some(), "ready after the first re-list");
        relist(&mut store, "b", &[cm("b", "x", "1")]);
        assert_eq!(contents(&reader), ["a/x=1", "a/y=1", "b/x=1"]);

        // Events of one namespace interleaved with another's re-list.
        store.apply("a", &Event::Init);
        store.apply("b", &Event::Apply(cm("b", "z", "2")));
        store.apply("a", &Event::InitApply(cm("a", "x", "3")));
        assert_eq!(contents(&reader), ["a/x=1", "a/y=1", "b/x=1", "b/z=2"], "a re-list shows only when done");
        store.apply("a", &Event::InitDone);
        assert_eq!(contents(&reader), ["a/x=3", "b/x=1", "b/z=2"], "a/y went away while the watch was down");

        store.apply("b", &Event::Delete(cm("b", "x", "1")));
        relist(&mut store, "a", &[]);
        assert_eq!(contents(&reader), ["b/z=2"]);
    }
}
