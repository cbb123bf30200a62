//! Winston: a Kubernetes operator that turns a `Tenant` into a provisioned,
//! metered AI-agent customer.
//!
//! The library holds every part; the `winston` binary only wires them to a
//! command line. `ledger` and `proxy` never import `kube`: money stays out of
//! Kubernetes, and only the controllers bridge the two halves.
pub mod agent;
pub mod analyzer;
pub mod api;
pub mod approve;
pub mod controller;
pub mod devenv;
pub mod emulator;
pub mod engine;
pub mod history;
pub mod intake;
pub mod ledger;
pub mod names;
pub mod outbound;
pub mod plans;
pub mod platform;
pub mod providers;
pub mod proxy;
pub mod skills;
pub mod status;
pub mod status_patch;
pub mod telemetry;
pub mod tenant_schema;
