//! The Neon project of one instance behind the [`ExternalResource`]
//! contract, with the role and database its default branch is created
//! with. Neon projects have no labels or description, so the name carries
//! the marker: [`Marker::labelled_name`] (`wn-<hex> winston:<uid>`), and a
//! project found by the short name is adopted or deleted only when its name
//! carries the full marker.
use super::{NeonClient, NeonProject, ProjectOptions};
use crate::platform::Platform;
use crate::providers::error::not_found_to_none;
use crate::providers::{
    Applied, Created, ExternalResource, Marker, Observation, ProviderError, find_by_id_or_marker, only_marked,
};

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
        let name = spec.marker.name();
        let by_id = |id| self.0.get_project(id);
        let by_marker = async {
            let found = self.0.find_projects(&name).await?;
            let carries = |p: &NeonProject| spec.marker.is_in(&p.name);
            Ok(only_marked(Platform::Neon, &spec.marker, found, |p| &p.id, carries))
        };
        let project = match find_by_id_or_marker(known_id, by_id, by_marker, |p: &NeonProject| &p.id).await? {
            Ok(project) => project,
            Err(settled) => return Ok(settled),
        };
        if let Some(op) = self.0.running_operation(&project.id).await? {
            return Ok(Observation::InProgress { id: project.id, operation_id: op.id });
        }
        let up_to_date = project.region_id == spec.region_id && project.pg_version == spec.pg_version;
        let uri = self.0.connection_uri(&project.id, &spec.database_name, &spec.role_name).await;
        // A project adopted without the spec's role or database has no URI yet.
        let connection_uri = not_found_to_none(uri)?;
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
        let created = self.0.create_project(&spec.marker.labelled_name(), &opts).await?;
        Ok(Created { operation_id: created.pending_operation(), id: created.project.id })
    }

    /// Region and PostgreSQL version cannot change on an existing project.
    async fn update(&self, id: &str, spec: &NeonProjectSpec) -> Result<Applied, ProviderError> {
        Err(ProviderError::Invalid {
            platform: Platform::Neon,
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
