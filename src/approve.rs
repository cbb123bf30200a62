//! `winston approve <tenant> [-n NS]`: approves a Tenant declared with
//! `spec.approved: false`, for people who do not change it in Git. One
//! merge patch sets `spec.approved: true` and records who and when in the
//! annotations `winston.dev/approved-by` and `winston.dev/approved-at`
//! (the controller copies them into `status.approval`). Who is the
//! authenticated user as the API server sees it (a SelfSubjectReview),
//! else the kubeconfig context's user name.
//!
//! Uses `api` and `names` only; it provisions nothing itself: the Tenant
//! controller starts provisioning once the field flips.
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::api::Tenant;
use crate::names;

/// Arguments of `winston approve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ApproveArgs {
    /// The Tenant to approve.
    pub tenant: String,
    /// Its namespace (default: the kubeconfig context's namespace).
    #[arg(short, long)]
    pub namespace: Option<String>,
}

/// Errors of `winston approve`.
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    #[error("failed to connect to the Kubernetes API server: {0}")]
    Connect(#[source] kube::Error),
    #[error("failed to find Tenant {name:?} in namespace {namespace:?}")]
    NotFound { namespace: String, name: String },
    #[error(
        "failed to approve Tenant {0:?}: it does not wait for approval (spec.approved is not set; only a Tenant \
         created with spec.approved: false does)"
    )]
    NotAwaiting(String),
    #[error("failed to approve Tenant {name:?}: {}", crate::api::conditions::api_error_message(.source))]
    Api { name: String, source: kube::Error },
}

impl ApproveError {
    /// A stable, low-cardinality name.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::NotFound { .. } => "not_found",
            Self::NotAwaiting(_) => "not_awaiting",
            Self::Api { .. } => "api",
        }
    }
}

/// What an approval did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The field flipped now.
    Approved { by: String, at: String },
    /// It was approved before (nothing changed).
    AlreadyApproved,
}

/// The patch that approves: the field and the record of who and when (pure).
#[must_use]
pub fn patch(by: &str, at: &str) -> Value {
    json!({
        "metadata": {"annotations": {names::ANNOTATION_APPROVED_BY: by, names::ANNOTATION_APPROVED_AT: at}},
        "spec": {"approved": true},
    })
}

/// Approves the Tenant and prints what happened.
///
/// # Errors
/// See [`ApproveError`].
pub async fn run(args: ApproveArgs) -> Result<(), ApproveError> {
    let client = Client::try_default().await.map_err(ApproveError::Connect)?;
    let namespace = args.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
    match approve(client, &namespace, &args.tenant).await? {
        Outcome::Approved { by, at } => println!("Tenant {namespace}/{} approved by {by} at {at}", args.tenant),
        Outcome::AlreadyApproved => println!("Tenant {namespace}/{} was already approved", args.tenant),
    }
    Ok(())
}

/// Flips `spec.approved` of `namespace/name` to true (see the module docs).
///
/// # Errors
/// See [`ApproveError`].
pub async fn approve(client: Client, namespace: &str, name: &str) -> Result<Outcome, ApproveError> {
    let api: Api<Tenant> = Api::namespaced(client.clone(), namespace);
    let api_err = |source| ApproveError::Api { name: name.to_string(), source };
    let tenant = api.get_opt(name).await.map_err(api_err)?;
    let tenant = tenant.ok_or_else(|| ApproveError::NotFound { namespace: namespace.into(), name: name.into() })?;
    match tenant.spec.approved {
        Some(true) => return Ok(Outcome::AlreadyApproved),
        None => return Err(ApproveError::NotAwaiting(name.to_string())),
        Some(false) => {}
    }
    let by = who(&client).await;
    let at = k8s_openapi::jiff::Timestamp::now().round(k8s_openapi::jiff::Unit::Second).unwrap_or_default().to_string();
    let params = PatchParams { field_manager: Some("winston-approve".into()), ..PatchParams::default() };
    api.patch(name, &params, &Patch::Merge(patch(&by, &at))).await.map_err(api_err)?;
    Ok(Outcome::Approved { by, at })
}

/// The user the API server authenticates this client as; else the
/// kubeconfig context's user; else `unknown`.
async fn who(client: &Client) -> String {
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let request = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&review).unwrap_or_default());
    if let Ok(request) = request
        && let Ok(answer) = client.request::<Value>(request).await
        && let Some(user) = answer.pointer("/status/userInfo/username").and_then(Value::as_str)
        && !user.is_empty()
    {
        return user.to_string();
    }
    kube::config::Kubeconfig::read()
        .ok()
        .and_then(|k| {
            let current = k.current_context.clone()?;
            let ctx = k.contexts.iter().find(|c| c.name == current)?.context.clone()?;
            ctx.user
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_flips_one_field_and_records_who_and_when() {
        let p = patch("alice", "2026-12-02T15:00:00Z");
        assert_eq!(p["spec"], json!({"approved": true}), "one spec field, nothing else");
        assert_eq!(p["metadata"]["annotations"]["winston.dev/approved-by"], "alice");
        assert_eq!(p["metadata"]["annotations"]["winston.dev/approved-at"], "2026-12-02T15:00:00Z");
    }
}
