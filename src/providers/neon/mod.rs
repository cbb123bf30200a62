//! Neon API v2 client: projects, branches with a read_write endpoint,
//! roles, databases, connection URIs and the asynchronous operations every
//! mutation returns (polled by id, never waited on inside a call).
//!
//! The observe/create/update/delete implementations are in [`resources`].
//!
//! # Driving it (provisioning engine)
//! Either a project per instance — [`resources::NeonProjects`] with a
//! [`resources::NeonProjectSpec`] (creates branch `main`, its read_write
//! endpoint, role and database `wn_<hex>` in one call) — or a branch in a
//! shared project: [`resources::NeonBranches`] (branch + read_write
//! endpoint), then [`resources::NeonRoles`], then [`resources::NeonDatabases`].
//! For each: observe -> create when `Absent` -> while `InProgress` requeue
//! with the operation id (poll [`NeonClient::operation`] or observe again;
//! Neon wants one request's operations settled before the next) -> `Ready`.
//! A 423 (`Locked`) is always retryable. A `Ready` project or database
//! carries `connection_uri` (a [`Secret`]) for the credentials Secret; the
//! host is inside it. Delete in reverse order; each delete is repeatable.
pub mod resources;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{PlatformConfig, Secret};
use super::error::ProviderError;
use crate::platform::Platform;
use super::http::Http;

const P: Platform = Platform::Neon;

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

/// A branch.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct NeonBranch {
    pub id: String,
    pub project_id: String,
    pub name: String,
    #[serde(default)]
    pub parent_id: Option<String>,
    pub current_state: String,
    #[serde(default)]
    pub default: bool,
}

/// A compute endpoint.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct NeonEndpoint {
    pub id: String,
    pub host: String,
    pub branch_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub current_state: String,
}

/// A role (its password is only in the create answer and `reveal_password`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct NeonRole {
    pub branch_id: String,
    pub name: String,
}

/// A database.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct NeonDatabase {
    pub id: u64,
    pub branch_id: String,
    pub name: String,
    pub owner_name: String,
    /// Direct connection URI as the owner; filled by
    /// [`resources::NeonDatabases`] once `Ready`.
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
    /// Settled, well or badly.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "finished" | "skipped" | "failed" | "error" | "cancelled")
    }

    /// Settled well.
    #[must_use]
    pub fn succeeded(&self) -> bool {
        matches!(self.status.as_str(), "finished" | "skipped")
    }
}

/// The answer to a create call: the object plus the operations to poll.
#[derive(Clone, Debug)]
pub struct NeonCreated<T> {
    pub object: T,
    pub endpoints: Vec<NeonEndpoint>,
    pub operations: Vec<NeonOperation>,
}

impl<T> NeonCreated<T> {
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
    org_id: Option<String>,
}

fn field<T: serde::de::DeserializeOwned>(body: &Value, key: &str) -> Result<T, ProviderError> {
    serde_json::from_value(body.get(key).cloned().unwrap_or(Value::Null))
        .map_err(|e| ProviderError::Decode { platform: P, message: format!("field {key}: {e}") })
}

fn not_found_to_none<T>(r: Result<T, ProviderError>) -> Result<Option<T>, ProviderError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn enc(s: &str) -> String {
    // Neon names are restricted to characters safe in a path except these.
    s.replace('%', "%25").replace('/', "%2F").replace('?', "%3F").replace('#', "%23").replace(' ', "%20")
}

impl NeonClient {
    /// A client for `config` (base URL `.../api/v2`).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(config: &PlatformConfig, org_id: Option<String>) -> Result<Self, ProviderError> {
        Ok(Self { http: Http::new(P, config)?, org_id })
    }

    /// The HTTP layer (budget inspection).
    #[must_use]
    pub fn http(&self) -> &Http {
        &self.http
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
    pub async fn create_project(
        &self,
        name: &str,
        opts: &ProjectOptions,
    ) -> Result<NeonCreated<NeonProject>, ProviderError> {
        let mut project = json!({"name": name});
        if let Some(r) = &opts.region_id {
            project["region_id"] = json!(r);
        }
        if let Some(v) = opts.pg_version {
            project["pg_version"] = json!(v);
        }
        if let Some(o) = &self.org_id {
            project["org_id"] = json!(o);
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
        let body = self.send(Method::POST, "/projects", Some(&json!({"project": project}))).await?.body;
        Ok(NeonCreated {
            object: field(&body, "project")?,
            endpoints: field(&body, "endpoints")?,
            operations: field(&body, "operations")?,
        })
    }

    /// `GET /projects/{id}`; `None` when absent.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn get_project(&self, id: &str) -> Result<Option<NeonProject>, ProviderError> {
        not_found_to_none(async { field(&self.get(&format!("/projects/{}", enc(id)), &[]).await?, "project") }.await)
    }

    /// Every project named exactly `name` (all pages of `GET /projects?search=`).
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn find_projects(&self, name: &str) -> Result<Vec<NeonProject>, ProviderError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = vec![("search", name.to_string()), ("limit", "400".to_string())];
            if let Some(c) = &cursor {
                q.push(("cursor", c.clone()));
            }
            if let Some(o) = &self.org_id {
                q.push(("org_id", o.clone()));
            }
            let body = self.get("/projects", &q).await?;
            let page: Vec<NeonProject> = field(&body, "projects")?;
            let next = body.pointer("/pagination/cursor").and_then(Value::as_str).map(str::to_string);
            let done = page.is_empty() || next.is_none() || next == cursor;
            out.extend(page.into_iter().filter(|p| p.name == name));
            if done {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// `DELETE /projects/{id}`; false when it was already gone.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn delete_project(&self, id: &str) -> Result<bool, ProviderError> {
        Ok(not_found_to_none(self.send(Method::DELETE, &format!("/projects/{}", enc(id)), None).await)?.is_some())
    }

    /// `POST /projects/{project}/branches` with one read_write endpoint.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn create_branch(&self, project: &str, name: &str) -> Result<NeonCreated<NeonBranch>, ProviderError> {
        let req = json!({"branch": {"name": name}, "endpoints": [{"type": "read_write"}]});
        let body = self.send(Method::POST, &format!("/projects/{}/branches", enc(project)), Some(&req)).await?.body;
        Ok(NeonCreated {
            object: field(&body, "branch")?,
            endpoints: field(&body, "endpoints")?,
            operations: field(&body, "operations")?,
        })
    }

    /// `GET /projects/{project}/branches/{id}`; `None` when absent.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn get_branch(&self, project: &str, id: &str) -> Result<Option<NeonBranch>, ProviderError> {
        let path = format!("/projects/{}/branches/{}", enc(project), enc(id));
        not_found_to_none(async { field(&self.get(&path, &[]).await?, "branch") }.await)
    }

    /// Every branch of `project` named exactly `name` (all pages).
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn find_branches(&self, project: &str, name: &str) -> Result<Vec<NeonBranch>, ProviderError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = vec![("search", name.to_string()), ("limit", "1000".to_string())];
            if let Some(c) = &cursor {
                q.push(("cursor", c.clone()));
            }
            let body = self.get(&format!("/projects/{}/branches", enc(project)), &q).await?;
            let page: Vec<NeonBranch> = field(&body, "branches")?;
            let next = body.pointer("/pagination/next").and_then(Value::as_str).map(str::to_string);
            let done = page.is_empty() || next.is_none() || next == cursor;
            out.extend(page.into_iter().filter(|b| b.name == name));
            if done {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// `DELETE /projects/{project}/branches/{id}`: the operations to poll
    /// (empty when it was already gone).
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn delete_branch(&self, project: &str, id: &str) -> Result<Vec<NeonOperation>, ProviderError> {
        let path = format!("/projects/{}/branches/{}", enc(project), enc(id));
        match not_found_to_none(self.send(Method::DELETE, &path, None).await)? {
            Some(r) if r.status != 204 && !r.body.is_null() => field(&r.body, "operations"),
            _ => Ok(Vec::new()),
        }
    }

    /// `GET /projects/{project}/branches/{branch}/endpoints`.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn branch_endpoints(&self, project: &str, branch: &str) -> Result<Vec<NeonEndpoint>, ProviderError> {
        field(
            &self.get(&format!("/projects/{}/branches/{}/endpoints", enc(project), enc(branch)), &[]).await?,
            "endpoints",
        )
    }

    /// `POST /projects/{project}/endpoints`: adds a read_write endpoint to `branch`.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn create_endpoint(
        &self,
        project: &str,
        branch: &str,
    ) -> Result<NeonCreated<NeonEndpoint>, ProviderError> {
        let req = json!({"endpoint": {"branch_id": branch, "type": "read_write"}});
        let body = self.send(Method::POST, &format!("/projects/{}/endpoints", enc(project)), Some(&req)).await?.body;
        let ep: NeonEndpoint = field(&body, "endpoint")?;
        Ok(NeonCreated { endpoints: vec![ep.clone()], object: ep, operations: field(&body, "operations")? })
    }

    /// `POST .../roles`: creates a login role.
    ///
    /// # Errors
    /// Any [`ProviderError`] (409-style conflicts come back as `Invalid`).
    pub async fn create_role(
        &self,
        project: &str,
        branch: &str,
        name: &str,
    ) -> Result<NeonCreated<NeonRole>, ProviderError> {
        let path = format!("/projects/{}/branches/{}/roles", enc(project), enc(branch));
        let body = self.send(Method::POST, &path, Some(&json!({"role": {"name": name}}))).await?.body;
        Ok(NeonCreated {
            object: field(&body, "role")?,
            endpoints: Vec::new(),
            operations: field(&body, "operations")?,
        })
    }

    /// `GET .../roles/{name}`; `None` when absent.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn get_role(&self, project: &str, branch: &str, name: &str) -> Result<Option<NeonRole>, ProviderError> {
        let path = format!("/projects/{}/branches/{}/roles/{}", enc(project), enc(branch), enc(name));
        not_found_to_none(async { field(&self.get(&path, &[]).await?, "role") }.await)
    }

    /// `DELETE .../roles/{name}`: operations to poll (empty when already gone).
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn delete_role(
        &self,
        project: &str,
        branch: &str,
        name: &str,
    ) -> Result<Vec<NeonOperation>, ProviderError> {
        let path = format!("/projects/{}/branches/{}/roles/{}", enc(project), enc(branch), enc(name));
        match not_found_to_none(self.send(Method::DELETE, &path, None).await)? {
            Some(r) => field(&r.body, "operations"),
            None => Ok(Vec::new()),
        }
    }

    /// `POST .../databases`.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn create_database(
        &self,
        project: &str,
        branch: &str,
        name: &str,
        owner: &str,
    ) -> Result<NeonCreated<NeonDatabase>, ProviderError> {
        let path = format!("/projects/{}/branches/{}/databases", enc(project), enc(branch));
        let body =
            self.send(Method::POST, &path, Some(&json!({"database": {"name": name, "owner_name": owner}}))).await?.body;
        Ok(NeonCreated {
            object: field(&body, "database")?,
            endpoints: Vec::new(),
            operations: field(&body, "operations")?,
        })
    }

    /// `GET .../databases/{name}`; `None` when absent.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn get_database(
        &self,
        project: &str,
        branch: &str,
        name: &str,
    ) -> Result<Option<NeonDatabase>, ProviderError> {
        let path = format!("/projects/{}/branches/{}/databases/{}", enc(project), enc(branch), enc(name));
        not_found_to_none(async { field(&self.get(&path, &[]).await?, "database") }.await)
    }

    /// `PATCH .../databases/{name}`: changes the owner.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn set_database_owner(
        &self,
        project: &str,
        branch: &str,
        name: &str,
        owner: &str,
    ) -> Result<Vec<NeonOperation>, ProviderError> {
        let path = format!("/projects/{}/branches/{}/databases/{}", enc(project), enc(branch), enc(name));
        let body = self.send(Method::PATCH, &path, Some(&json!({"database": {"owner_name": owner}}))).await?.body;
        field(&body, "operations")
    }

    /// `DELETE .../databases/{name}`: operations to poll (empty when already gone).
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn delete_database(
        &self,
        project: &str,
        branch: &str,
        name: &str,
    ) -> Result<Vec<NeonOperation>, ProviderError> {
        let path = format!("/projects/{}/branches/{}/databases/{}", enc(project), enc(branch), enc(name));
        match not_found_to_none(self.send(Method::DELETE, &path, None).await)? {
            Some(r) => field(&r.body, "operations"),
            None => Ok(Vec::new()),
        }
    }

    /// `GET /projects/{project}/connection_uri` for `database` as `role` on
    /// `branch` (direct, not pooled). The URI contains the password.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn connection_uri(
        &self,
        project: &str,
        branch: &str,
        database: &str,
        role: &str,
    ) -> Result<Secret, ProviderError> {
        self.connection_uri_on(project, Some(branch), database, role).await
    }

    /// As [`NeonClient::connection_uri`], on the project's default branch when
    /// `branch` is `None`.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn connection_uri_on(
        &self,
        project: &str,
        branch: Option<&str>,
        database: &str,
        role: &str,
    ) -> Result<Secret, ProviderError> {
        let mut q = vec![
            ("database_name", database.to_string()),
            ("role_name", role.to_string()),
            ("pooled", "false".to_string()),
        ];
        if let Some(b) = branch {
            q.push(("branch_id", b.to_string()));
        }
        let body = self.get(&format!("/projects/{}/connection_uri", enc(project)), &q).await?;
        let uri: String = field(&body, "uri")?;
        Ok(Secret::new(uri))
    }

    /// `GET /projects/{project}/operations/{id}`.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn operation(&self, project: &str, id: &str) -> Result<NeonOperation, ProviderError> {
        field(&self.get(&format!("/projects/{}/operations/{}", enc(project), enc(id)), &[]).await?, "operation")
    }

    /// The newest operation of `project` (restricted to `branch` if given)
    /// that has not settled yet.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn running_operation(
        &self,
        project: &str,
        branch: Option<&str>,
    ) -> Result<Option<NeonOperation>, ProviderError> {
        let body = self.get(&format!("/projects/{}/operations", enc(project)), &[("limit", "100".to_string())]).await?;
        let ops: Vec<NeonOperation> = field(&body, "operations")?;
        Ok(ops.into_iter().find(|o| !o.is_terminal() && branch.is_none_or(|b| o.branch_id.as_deref() == Some(b))))
    }
}
