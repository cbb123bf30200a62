//! Neon objects behind the [`ExternalResource`] contract: a project per
//! tenant, or a branch (with its read_write endpoint) in a shared project,
//! plus the tenant's role and database. Names come from the instance
//! [`Marker`]; Neon has no labels, so the name is the marker.
use super::{NeonBranch, NeonClient, NeonDatabase, NeonEndpoint, NeonProject, NeonRole, ProjectOptions};
use crate::providers::{Applied, Created, ExternalResource, Marker, Observation, ProviderError, single};

fn pending(ops: &[super::NeonOperation]) -> Applied {
    match ops.iter().find(|o| !o.is_terminal()) {
        Some(o) => Applied::InProgress { operation_id: o.id.clone() },
        None => Applied::Done,
    }
}

/// A Neon project named after the marker, created with its default branch,
/// read_write endpoint, role and database.
#[derive(Clone, Debug)]
pub struct NeonProjectSpec {
    pub marker: Marker,
    pub region_id: String,
    pub pg_version: u64,
    /// Role and database created in the default branch.
    pub role_name: String,
    pub database_name: String,
}

impl NeonProjectSpec {
    /// Defaults: role and database named `wn_<hex>`.
    #[must_use]
    pub fn new(marker: Marker, region_id: &str, pg_version: u64) -> Self {
        let ident = marker.ident();
        Self { marker, region_id: region_id.into(), pg_version, role_name: ident.clone(), database_name: ident }
    }
}

/// [`ExternalResource`] for [`NeonProjectSpec`].
#[derive(Clone, Debug)]
pub struct NeonProjects(pub NeonClient);

impl ExternalResource for NeonProjects {
    type Spec = NeonProjectSpec;
    type Observed = NeonProject;

    async fn observe(
        &self,
        spec: &NeonProjectSpec,
        known_id: Option<&str>,
    ) -> Result<Observation<NeonProject>, ProviderError> {
        let project = match known_id {
            Some(id) => self.0.get_project(id).await?,
            None => match single(
                self.0.find_projects(&spec.marker.name()).await?.into_iter().map(|p| (p.id.clone(), p)).collect(),
            ) {
                Ok(found) => found.map(|(_, p)| p),
                Err(ids) => return Ok(Observation::Ambiguous { ids }),
            },
        };
        let Some(project) = project else { return Ok(Observation::Absent) };
        if let Some(op) = self.0.running_operation(&project.id, None).await? {
            return Ok(Observation::InProgress { id: project.id, operation_id: op.id });
        }
        let up_to_date = project.region_id == spec.region_id && project.pg_version == spec.pg_version;
        let uri = self.0.connection_uri_on(&project.id, None, &spec.database_name, &spec.role_name).await;
        // A project adopted without the spec's role or database has no URI yet.
        let connection_uri = match uri {
            Ok(u) => Some(u),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let id = project.id.clone();
        Ok(Observation::Ready { id, observed: NeonProject { connection_uri, ..project }, up_to_date })
    }

    async fn create(&self, spec: &NeonProjectSpec) -> Result<Created, ProviderError> {
        let opts = ProjectOptions {
            region_id: Some(spec.region_id.clone()),
            pg_version: Some(spec.pg_version),
            branch_name: Some("main".into()),
            role_name: Some(spec.role_name.clone()),
            database_name: Some(spec.database_name.clone()),
        };
        let created = self.0.create_project(&spec.marker.name(), &opts).await?;
        Ok(Created { operation_id: created.pending_operation(), id: created.object.id })
    }

    /// Region and PostgreSQL version cannot change on an existing project.
    async fn update(&self, id: &str, spec: &NeonProjectSpec) -> Result<Applied, ProviderError> {
        Err(ProviderError::Invalid {
            platform: crate::platform::Platform::Neon,
            status: 400,
            message: format!(
                "project {id} cannot move to region {} / PostgreSQL {}; delete and recreate it",
                spec.region_id, spec.pg_version
            ),
        })
    }

    async fn delete(&self, id: &str, _spec: &NeonProjectSpec) -> Result<Applied, ProviderError> {
        self.0.delete_project(id).await?;
        Ok(Applied::Done)
    }
}

/// A branch named after the marker in a shared project, with a read_write endpoint.
#[derive(Clone, Debug)]
pub struct NeonBranchSpec {
    pub project_id: String,
    pub marker: Marker,
}

/// What a branch observation reports.
#[derive(Clone, Debug, PartialEq)]
pub struct NeonBranchState {
    pub branch: NeonBranch,
    pub endpoint: Option<NeonEndpoint>,
}

/// [`ExternalResource`] for [`NeonBranchSpec`].
#[derive(Clone, Debug)]
pub struct NeonBranches(pub NeonClient);

impl ExternalResource for NeonBranches {
    type Spec = NeonBranchSpec;
    type Observed = NeonBranchState;

    async fn observe(
        &self,
        spec: &NeonBranchSpec,
        known_id: Option<&str>,
    ) -> Result<Observation<NeonBranchState>, ProviderError> {
        let p = &spec.project_id;
        let branch = match known_id {
            Some(id) => self.0.get_branch(p, id).await?,
            None => match single(
                self.0.find_branches(p, &spec.marker.name()).await?.into_iter().map(|b| (b.id.clone(), b)).collect(),
            ) {
                Ok(found) => found.map(|(_, b)| b),
                Err(ids) => return Ok(Observation::Ambiguous { ids }),
            },
        };
        let Some(branch) = branch else { return Ok(Observation::Absent) };
        if let Some(op) = self.0.running_operation(p, Some(&branch.id)).await? {
            return Ok(Observation::InProgress { id: branch.id, operation_id: op.id });
        }
        let endpoint = self.0.branch_endpoints(p, &branch.id).await?.into_iter().find(|e| e.kind == "read_write");
        let up_to_date = endpoint.is_some();
        Ok(Observation::Ready { id: branch.id.clone(), observed: NeonBranchState { branch, endpoint }, up_to_date })
    }

    async fn create(&self, spec: &NeonBranchSpec) -> Result<Created, ProviderError> {
        let created = self.0.create_branch(&spec.project_id, &spec.marker.name()).await?;
        Ok(Created { operation_id: created.pending_operation(), id: created.object.id })
    }

    /// Adds the read_write endpoint when it is missing.
    async fn update(&self, id: &str, spec: &NeonBranchSpec) -> Result<Applied, ProviderError> {
        if self.0.branch_endpoints(&spec.project_id, id).await?.iter().any(|e| e.kind == "read_write") {
            return Ok(Applied::Done);
        }
        Ok(pending(&self.0.create_endpoint(&spec.project_id, id).await?.operations))
    }

    async fn delete(&self, id: &str, spec: &NeonBranchSpec) -> Result<Applied, ProviderError> {
        Ok(pending(&self.0.delete_branch(&spec.project_id, id).await?))
    }
}

/// A login role in a branch (the id is the role name).
#[derive(Clone, Debug)]
pub struct NeonRoleSpec {
    pub project_id: String,
    pub branch_id: String,
    pub name: String,
}

/// [`ExternalResource`] for [`NeonRoleSpec`].
#[derive(Clone, Debug)]
pub struct NeonRoles(pub NeonClient);

impl ExternalResource for NeonRoles {
    type Spec = NeonRoleSpec;
    type Observed = NeonRole;

    async fn observe(
        &self,
        spec: &NeonRoleSpec,
        known_id: Option<&str>,
    ) -> Result<Observation<NeonRole>, ProviderError> {
        let name = known_id.unwrap_or(&spec.name);
        let Some(role) = self.0.get_role(&spec.project_id, &spec.branch_id, name).await? else {
            return Ok(Observation::Absent);
        };
        if let Some(op) = self.0.running_operation(&spec.project_id, Some(&spec.branch_id)).await? {
            return Ok(Observation::InProgress { id: role.name, operation_id: op.id });
        }
        Ok(Observation::Ready { id: role.name.clone(), up_to_date: role.name == spec.name, observed: role })
    }

    async fn create(&self, spec: &NeonRoleSpec) -> Result<Created, ProviderError> {
        let created = self.0.create_role(&spec.project_id, &spec.branch_id, &spec.name).await?;
        Ok(Created { operation_id: created.pending_operation(), id: created.object.name })
    }

    /// A role has nothing Winston changes after creation (the password is
    /// read through the connection URI), so an update is complete at once.
    async fn update(&self, _id: &str, _spec: &NeonRoleSpec) -> Result<Applied, ProviderError> {
        Ok(Applied::Done)
    }

    async fn delete(&self, id: &str, spec: &NeonRoleSpec) -> Result<Applied, ProviderError> {
        Ok(pending(&self.0.delete_role(&spec.project_id, &spec.branch_id, id).await?))
    }
}

/// A database in a branch owned by a role (the id is the database name).
#[derive(Clone, Debug)]
pub struct NeonDatabaseSpec {
    pub project_id: String,
    pub branch_id: String,
    pub name: String,
    pub owner_name: String,
}

/// [`ExternalResource`] for [`NeonDatabaseSpec`].
#[derive(Clone, Debug)]
pub struct NeonDatabases(pub NeonClient);

impl ExternalResource for NeonDatabases {
    type Spec = NeonDatabaseSpec;
    type Observed = NeonDatabase;

    async fn observe(
        &self,
        spec: &NeonDatabaseSpec,
        known_id: Option<&str>,
    ) -> Result<Observation<NeonDatabase>, ProviderError> {
        let name = known_id.unwrap_or(&spec.name);
        let Some(db) = self.0.get_database(&spec.project_id, &spec.branch_id, name).await? else {
            return Ok(Observation::Absent);
        };
        if let Some(op) = self.0.running_operation(&spec.project_id, Some(&spec.branch_id)).await? {
            return Ok(Observation::InProgress { id: db.name, operation_id: op.id });
        }
        let uri = self.0.connection_uri(&spec.project_id, &spec.branch_id, &db.name, &db.owner_name).await;
        // The branch may still lack its read_write endpoint: no URI yet.
        let connection_uri = match uri {
            Ok(u) => Some(u),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let up_to_date = db.owner_name == spec.owner_name;
        Ok(Observation::Ready { id: db.name.clone(), up_to_date, observed: NeonDatabase { connection_uri, ..db } })
    }

    async fn create(&self, spec: &NeonDatabaseSpec) -> Result<Created, ProviderError> {
        let created = self.0.create_database(&spec.project_id, &spec.branch_id, &spec.name, &spec.owner_name).await?;
        Ok(Created { operation_id: created.pending_operation(), id: created.object.name })
    }

    /// Moves the database to the spec's owner.
    async fn update(&self, id: &str, spec: &NeonDatabaseSpec) -> Result<Applied, ProviderError> {
        Ok(pending(&self.0.set_database_owner(&spec.project_id, &spec.branch_id, id, &spec.owner_name).await?))
    }

    async fn delete(&self, id: &str, spec: &NeonDatabaseSpec) -> Result<Applied, ProviderError> {
        Ok(pending(&self.0.delete_database(&spec.project_id, &spec.branch_id, id).await?))
    }
}
