//! Neon API v2 client: a project per instance (created with its default
//! branch, read_write endpoint, role and database in one call), its
//! connection URI and the asynchronous operations every mutation returns
//! (polled by id, never waited on inside a call).
//!
//! The observe/create/update/delete implementation is in [`resources`].
//!
//! # Driving it (provisioning engine)
//! [`resources::NeonProjects`] with a [`resources::NeonProjectSpec`]
//! (creates branch `main`, its read_write endpoint, role and database
//! `wn_<hex>`): observe -> create when `Absent` -> while `InProgress`
//! requeue with the operation id (poll [`NeonClient::operation`] or observe
//! again; Neon wants one request's operations settled before the next) ->
//! `Ready`. A 423 (`Locked`) is always retryable. A `Ready` project carries
//! `connection_uri` (a [`Secret`]) for the credentials Secret; the host is
//! inside it. Delete is repeatable.
//!
//! # Facts from the platform this client relies on
//! - A **personal** API key must name the organization on `GET /projects`
//!   and `POST /projects` (`org_id` query / body field), otherwise Neon
//!   answers `ERROR: org_id is required`; organization keys need not
//!   (<https://neon.com/docs/cli/api>, "neon api /projects returns ERROR:
//!   org_id is required unless you add -Q org_id=<org_id> or authenticate
//!   with an organization API key"). The client sends the configured
//!   `WINSTON_NEON_ORG_ID`; when none is configured and Neon asks for one,
//!   it discovers the key's only organization (`GET
//!   /users/me/organizations`) and refuses to guess among several.
//! - A `failed` operation is retried by Neon (`failures_count` counts "the
//!   times the operation has failed and been retried", `retry_at` says when;
//!   <https://schemas.apis.io/schemas/neon/neon-operation/>): only
//!   `finished`, `skipped` and `cancelled` are settled (issue 12).
//! - A delete of something already gone may answer 204 with an empty body
//!   (issue 12, Neon v2 OpenAPI): that is "gone", never a body to decode.
pub mod resources;

use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{PlatformConfig, Secret};
use super::error::{ProviderError, not_found_to_none};
use super::http::{Http, decode, segment};
use crate::platform::Platform;

const P: Platform = Platform::Neon;

/// Projects asked per page: the largest `limit` Neon's v2 OpenAPI allows on
/// `GET /projects` (1..=400); more matches are read page by page.
const PROJECTS_PAGE: u32 = 400;

/// A Neon project as the API reports it (unknown fields ignored).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct NeonProject {
    pub id: String,
    pub name: String,
    pub region_id: String,
    pub pg_version: u64,
    #[serde(default)]
    pub store_passwords: bool,
    #[serde(default)]
    pub org_id: Option<String>,
    /// Direct connection URI of the spec's database as its owner on the
    /// default branch; filled by [`resources::NeonProjects`] once `Ready`.
    #[serde(skip)]
    pub connection_uri: Option<Secret>,
}

/// An asynchronous operation.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct NeonOperation {
    pub id: String,
    pub project_id: String,
    #[serde(default)]
    pub branch_id: Option<String>,
    #[serde(default)]
    pub endpoint_id: Option<String>,
    pub action: String,
    /// `scheduling | running | finished | failed | error | cancelling | cancelled | skipped`.
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub failures_count: u64,
}

impl NeonOperation {
    /// Settled, well or badly: `finished`, `skipped` or `cancelled`. A
    /// `failed` operation is not settled: Neon retries it (its
    /// `failures_count` grows and `retry_at` says when), so callers keep
    /// polling it like a running one.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "finished" | "skipped" | "cancelled")
    }

    /// Settled well.
    #[must_use]
    pub fn succeeded(&self) -> bool {
        matches!(self.status.as_str(), "finished" | "skipped")
    }
}

/// The answer to a project creation: the project plus the operations to poll.
#[derive(Clone, Debug)]
pub struct NeonCreated {
    pub project: NeonProject,
    pub operations: Vec<NeonOperation>,
}

impl NeonCreated {
    /// The first operation still running, to record and poll.
    #[must_use]
    pub fn pending_operation(&self) -> Option<String> {
        self.operations.iter().find(|o| !o.is_terminal()).map(|o| o.id.clone())
    }
}

/// What a project creation sets up besides the project itself.
#[derive(Clone, Debug, Default)]
pub struct ProjectOptions {
    pub region_id: Option<String>,
    pub pg_version: Option<u64>,
    pub branch_name: Option<String>,
    pub role_name: Option<String>,
    pub database_name: Option<String>,
}

/// The Neon client. Cloning shares the connection pool and budget.
#[derive(Clone, Debug)]
pub struct NeonClient {
    http: Http,
    /// Configured, or discovered once for a personal key with one organization.
    org_id: Arc<Mutex<Option<String>>>,
}

fn field<T: serde::de::DeserializeOwned>(body: &Value, key: &str) -> Result<T, ProviderError> {
    decode(P, body.get(key).cloned().unwrap_or(Value::Null), &format!("field {key}"))
}

impl NeonClient {
    /// A client for `config` (base URL `.../api/v2`).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(config: &PlatformConfig, org_id: Option<String>) -> Result<Self, ProviderError> {
        Ok(Self { http: Http::new(P, config)?, org_id: Arc::new(Mutex::new(org_id)) })
    }

    /// The HTTP layer (budget inspection).
    #[must_use]
    pub fn http(&self) -> &Http {
        &self.http
    }

    /// The organization sent on project list and create, if known.
    #[must_use]
    pub fn org_id(&self) -> Option<String> {
        self.org_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Runs `call` with the known organization; when none is known and Neon
    /// answers that `org_id` is required (a personal API key), discovers the
    /// key's organization and runs `call` once more.
    async fn with_org<T, F, Fut>(&self, call: F) -> Result<T, ProviderError>
    where
        F: Fn(Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let known = self.org_id();
        match call(known.clone()).await {
            Err(ProviderError::Invalid { message, .. }) if known.is_none() && message.contains("org_id") => {
                let org = self.discover_org_id().await?;
                call(Some(org)).await
            }
            other => other,
        }
    }

    /// `GET /users/me/organizations`: the only organization of a personal
    /// key, remembered for later calls.
    ///
    /// # Errors
    /// [`ProviderError::Invalid`] when the key belongs to no or several
    /// organizations (set `WINSTON_NEON_ORG_ID`); any other [`ProviderError`].
    pub async fn discover_org_id(&self) -> Result<String, ProviderError> {
        #[derive(Deserialize)]
        struct Org {
            id: String,
        }
        let orgs: Vec<Org> = field(&self.get("/users/me/organizations", &[]).await?, "organizations")?;
        let [org] = orgs.as_slice() else {
            return Err(ProviderError::Invalid {
                platform: P,
                status: 400,
                message: format!(
                    "the API key is personal and belongs to {} organizations; set WINSTON_NEON_ORG_ID",
                    orgs.len()
                ),
            });
        };
        *self.org_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(org.id.clone());
        Ok(org.id.clone())
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ProviderError> {
        Ok(self.http.send(Method::GET, path, query, None, &[]).await?.body)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<crate::providers::http::Reply, ProviderError> {
        self.http.send(method, path, &[], body, &[]).await
    }

    /// `POST /projects` with a default branch, role and database.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn create_project(&self, name: &str, opts: &ProjectOptions) -> Result<NeonCreated, ProviderError> {
        let mut project = json!({"name": name});
        if let Some(r) = &opts.region_id {
            project["region_id"] = json!(r);
        }
        if let Some(v) = opts.pg_version {
            project["pg_version"] = json!(v);
        }
        let mut branch = serde_json::Map::new();
        for (k, v) in
            [("name", &opts.branch_name), ("role_name", &opts.role_name), ("database_name", &opts.database_name)]
        {
            if let Some(v) = v {
                branch.insert(k.into(), json!(v));
            }
        }
        if !branch.is_empty() {
            project["branch"] = Value::Object(branch);
        }
        let body = self
            .with_org(|org| {
                let mut project = project.clone();
                if let Some(o) = org {
                    project["org_id"] = json!(o);
                }
                async move { Ok(self.send(Method::POST, "/projects", Some(&json!({"project": project}))).await?.body) }
            })
            .await?;
        Ok(NeonCreated { project: field(&body, "project")?, operations: field(&body, "operations")? })
    }

    /// `GET /projects/{id}`; `None` when absent.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn get_project(&self, id: &str) -> Result<Option<NeonProject>, ProviderError> {
        not_found_to_none(
            async { field(&self.get(&format!("/projects/{}", segment(id)), &[]).await?, "project") }.await,
        )
    }

    /// Every project named `name`, alone or followed by a space and more
    /// words (a labelled name), over all pages of `GET /projects?search=`.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn find_projects(&self, name: &str) -> Result<Vec<NeonProject>, ProviderError> {
        self.with_org(|org| self.find_projects_in(name, org)).await
    }

    async fn find_projects_in(&self, name: &str, org: Option<String>) -> Result<Vec<NeonProject>, ProviderError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        // Cursor pagination, not a retry: each turn reads the next page and
        // the loop ends on the last one; a failed page fails the whole call
        // (retrying is the caller's requeue).
        loop {
            let mut q = vec![("search", name.to_string()), ("limit", PROJECTS_PAGE.to_string())];
            if let Some(c) = &cursor {
                q.push(("cursor", c.clone()));
            }
            if let Some(o) = &org {
                q.push(("org_id", o.clone()));
            }
            let body = self.get("/projects", &q).await?;
            let page: Vec<NeonProject> = field(&body, "projects")?;
            let next = body.pointer("/pagination/cursor").and_then(Value::as_str).map(str::to_string);
            let done = page.is_empty() || next.is_none() || next == cursor;
            let named =
                |p: &NeonProject| p.name == name || p.name.strip_prefix(name).is_some_and(|r| r.starts_with(' '));
            out.extend(page.into_iter().filter(named));
            if done {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// `DELETE /projects/{id}`; false when it was already gone: a 404, or a
    /// 204 with an empty body (nothing in it is decoded).
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn delete_project(&self, id: &str) -> Result<bool, ProviderError> {
        let reply = not_found_to_none(self.send(Method::DELETE, &format!("/projects/{}", segment(id)), None).await)?;
        Ok(reply.is_some_and(|r| r.status != 204 && !r.body.is_null()))
    }

    /// `GET /projects/{project}/connection_uri` for `database` as `role` on
    /// the project's default branch (direct, not pooled). The URI contains
    /// the password.
    ///
    /// # Errors
    /// Any [`ProviderError`]; not-found while the role, database or endpoint
    /// does not exist (yet).
    pub async fn connection_uri(&self, project: &str, database: &str, role: &str) -> Result<Secret, ProviderError> {
        let q =
            [("database_name", database.to_string()), ("role_name", role.to_string()), ("pooled", "false".to_string())];
        let body = self.get(&format!("/projects/{}/connection_uri", segment(project)), &q).await?;
        let uri: String = field(&body, "uri")?;
        Ok(Secret::new(uri))
    }

    /// `GET /projects/{project}/operations/{id}`.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn operation(&self, project: &str, id: &str) -> Result<NeonOperation, ProviderError> {
        field(&self.get(&format!("/projects/{}/operations/{}", segment(project), segment(id)), &[]).await?, "operation")
    }

    /// The newest operation of `project` that has not settled yet.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn running_operation(&self, project: &str) -> Result<Option<NeonOperation>, ProviderError> {
        let body =
            self.get(&format!("/projects/{}/operations", segment(project)), &[("limit", "100".to_string())]).await?;
        let ops: Vec<NeonOperation> = field(&body, "operations")?;
        Ok(ops.into_iter().find(|o| !o.is_terminal()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finished_skipped_and_cancelled_operations_are_settled() {
        let op = |status: &str| NeonOperation {
            id: "op".into(),
            project_id: "p".into(),
            branch_id: None,
            endpoint_id: None,
            action: "create_timeline".into(),
            status: status.into(),
            error: None,
            failures_count: 0,
        };
        for (status, terminal, succeeded) in [
            ("scheduling", false, false),
            ("running", false, false),
            ("failed", false, false),
            ("cancelling", false, false),
            ("finished", true, true),
            ("skipped", true, true),
            ("cancelled", true, false),
        ] {
            assert_eq!((op(status).is_terminal(), op(status).succeeded()), (terminal, succeeded), "{status}");
        }
        let created = NeonCreated {
            project: NeonProject {
                id: "p".into(),
                name: "n".into(),
                region_id: "r".into(),
                pg_version: 17,
                store_passwords: true,
                org_id: None,
                connection_uri: None,
            },
            operations: vec![op("finished"), op("failed")],
        };
        assert_eq!(created.pending_operation().as_deref(), Some("op"), "a failed operation is still pending");
    }
}
