//! The part of Railway's public GraphQL schema the emulator serves, as the
//! introspection schema shipped in Railway's CLI repository
//! (`railwayapp/cli`, `src/gql/schema.json`) and the fact sheet record it:
//! every type's fields and every field's arguments. A query or mutation
//! that selects a field the type does not have, or passes an argument the
//! field does not take, is answered with a GraphQL validation error, as
//! Railway answers it, instead of `null`: a client that drifts from the
//! schema fails a test.
//!
//! Only the fields the emulator resolves are listed (the real types have
//! more): a field missing here that Railway has is a difference to add,
//! never a field to answer with `null`.
use super::graphql::Field;

/// A field: its name, the arguments it takes and the type it returns
/// (`None` for a scalar, JSON or enum).
type FieldDef = (&'static str, &'static [&'static str], Option<&'static str>);

const PAGE: &[&str] = &["first", "after", "last", "before"];

/// Every object type the emulator serves, with its fields.
fn fields(type_name: &str) -> Option<&'static [FieldDef]> {
    Some(match type_name {
        "Query" => &[
            ("project", &["id"], Some("Project")),
            (
                "projects",
                &["workspaceId", "teamId", "userId", "includeDeleted", "first", "after", "last", "before"],
                Some("ProjectConnection"),
            ),
            (
                "environments",
                &["projectId", "isEphemeral", "first", "after", "last", "before"],
                Some("EnvironmentConnection"),
            ),
            ("service", &["id"], Some("Service")),
            ("variables", &["projectId", "environmentId", "serviceId", "unrendered"], None),
            ("deployment", &["id"], Some("Deployment")),
            ("deployments", &["input", "first", "after", "last", "before"], Some("DeploymentConnection")),
            ("domains", &["projectId", "environmentId", "serviceId"], Some("AllDomains")),
            ("me", &[], Some("User")),
        ],
        "Mutation" => &[
            ("projectCreate", &["input"], Some("Project")),
            ("projectUpdate", &["id", "input"], Some("Project")),
            ("projectDelete", &["id"], None),
            ("environmentCreate", &["input"], Some("Environment")),
            ("serviceCreate", &["input"], Some("Service")),
            ("serviceInstanceUpdate", &["serviceId", "environmentId", "input"], None),
            ("serviceDelete", &["id", "environmentId"], None),
            ("variableCollectionUpsert", &["input"], None),
            ("variableUpsert", &["input"], None),
            ("serviceInstanceDeployV2", &["serviceId", "environmentId", "commitSha"], None),
            ("serviceInstanceDeploy", &["serviceId", "environmentId", "commitSha", "latestCommit"], None),
            ("serviceInstanceRedeploy", &["serviceId", "environmentId"], None),
            ("deploymentRemove", &["id"], None),
            ("serviceDomainCreate", &["input"], Some("ServiceDomain")),
            ("serviceDomainDelete", &["id"], None),
        ],
        "Project" => &[
            ("id", &[], None),
            ("name", &[], None),
            ("description", &[], None),
            ("workspaceId", &[], None),
            ("teamId", &[], None),
            ("createdAt", &[], None),
            ("updatedAt", &[], None),
            ("deletedAt", &[], None),
            ("isPublic", &[], None),
            ("prDeploys", &[], None),
            ("baseEnvironmentId", &[], None),
            ("environments", PAGE, Some("EnvironmentConnection")),
            ("services", PAGE, Some("ServiceConnection")),
            ("volumes", PAGE, Some("VolumeConnection")),
        ],
        "Environment" => &[
            ("id", &[], None),
            ("name", &[], None),
            ("projectId", &[], None),
            ("isEphemeral", &[], None),
            ("createdAt", &[], None),
            ("updatedAt", &[], None),
            ("deletedAt", &[], None),
        ],
        "Service" => &[
            ("id", &[], None),
            ("name", &[], None),
            ("projectId", &[], None),
            ("icon", &[], None),
            ("templateServiceId", &[], None),
            ("createdAt", &[], None),
            ("updatedAt", &[], None),
            ("deletedAt", &[], None),
            ("serviceInstances", PAGE, Some("ServiceInstanceConnection")),
        ],
        "ServiceInstance" => &[
            ("id", &[], None),
            ("serviceId", &[], None),
            ("environmentId", &[], None),
            ("serviceName", &[], None),
            ("source", &[], Some("ServiceSource")),
        ],
        "ServiceSource" => &[("image", &[], None), ("repo", &[], None)],
        "Deployment" => &[
            ("id", &[], None),
            ("status", &[], None),
            ("statusUpdatedAt", &[], None),
            ("createdAt", &[], None),
            ("updatedAt", &[], None),
            ("url", &[], None),
            ("staticUrl", &[], None),
            ("serviceId", &[], None),
            ("environmentId", &[], None),
            ("projectId", &[], None),
            ("meta", &[], None),
            ("canRedeploy", &[], None),
            ("canRollback", &[], None),
            ("deploymentStopped", &[], None),
        ],
        "ServiceDomain" => &[
            ("id", &[], None),
            ("domain", &[], None),
            ("suffix", &[], None),
            ("serviceId", &[], None),
            ("environmentId", &[], None),
            ("targetPort", &[], None),
            ("syncStatus", &[], None),
            ("createdAt", &[], None),
            ("updatedAt", &[], None),
            ("deletedAt", &[], None),
        ],
        "CustomDomain" => &[("id", &[], None), ("domain", &[], None), ("serviceId", &[], None)],
        "AllDomains" => &[("serviceDomains", &[], Some("ServiceDomain")), ("customDomains", &[], Some("CustomDomain"))],
        "User" => {
            &[("id", &[], None), ("name", &[], None), ("email", &[], None), ("workspaces", &[], Some("Workspace"))]
        }
        "Workspace" => &[("id", &[], None), ("name", &[], None)],
        "Volume" => &[("id", &[], None), ("name", &[], None)],
        "PageInfo" => &[
            ("hasNextPage", &[], None),
            ("hasPreviousPage", &[], None),
            ("startCursor", &[], None),
            ("endCursor", &[], None),
        ],
        _ => return None,
    })
}

/// The node types served as Relay connections (`<Node>Connection { edges
/// { cursor node } pageInfo }`).
const NODES: [&str; 6] = ["Project", "Environment", "Service", "ServiceInstance", "Deployment", "Volume"];

/// A connection's or edge's fields: (field, the type it returns).
fn relay(type_name: &str) -> Option<Vec<(&'static str, Option<String>)>> {
    if let Some(n) = type_name.strip_suffix("Connection").filter(|n| NODES.contains(n)) {
        return Some(vec![("edges", Some(format!("{n}Edge"))), ("pageInfo", Some("PageInfo".to_string()))]);
    }
    let n = type_name.strip_suffix("Edge").filter(|n| NODES.contains(n))?;
    Some(vec![("cursor", None), ("node", Some(n.to_string()))])
}

/// Checks `selection` against `type_name`: the first field the type lacks
/// or argument its field does not take, as Railway words it.
///
/// # Errors
/// The validation message.
pub fn validate(type_name: &str, selection: &[Field]) -> Result<(), String> {
    if let Some(defs) = relay(type_name) {
        for f in selection.iter().filter(|f| f.name != "__typename") {
            let Some((_, returns)) = defs.iter().find(|(name, _)| *name == f.name) else {
                return Err(format!("Cannot query field \"{}\" on type \"{type_name}\".", f.name));
            };
            if let Some((arg, _)) = f.args.first() {
                return Err(format!("Unknown argument \"{arg}\" on field \"{type_name}.{}\".", f.name));
            }
            if let Some(child) = returns {
                validate(child, &f.selection)?;
            }
        }
        return Ok(());
    }
    let Some(defs) = fields(type_name) else { return Ok(()) };
    for f in selection {
        if f.name == "__typename" {
            continue;
        }
        let Some((_, args, returns)) = defs.iter().find(|(name, _, _)| *name == f.name) else {
            return Err(format!("Cannot query field \"{}\" on type \"{type_name}\".", f.name));
        };
        if let Some((arg, _)) = f.args.iter().find(|(a, _)| !args.contains(&a.as_str())) {
            return Err(format!("Unknown argument \"{arg}\" on field \"{type_name}.{}\".", f.name));
        }
        if let Some(child) = returns {
            validate(child, &f.selection)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::graphql::parse;

    fn check(doc: &str) -> Result<(), String> {
        let op = parse(doc, None).unwrap();
        validate(if op.mutation { "Mutation" } else { "Query" }, &op.fields)
    }

    #[test]
    fn unknown_fields_and_arguments_are_errors() {
        assert!(check("query { project(id: \"p\") { id name environments { edges { node { id name } } } } }").is_ok());
        assert!(check("query { projects(workspaceId: \"w\", first: 1) { pageInfo { endCursor } } }").is_ok());
        assert_eq!(
            check("query { project(id: \"p\") { id owner } }"),
            Err("Cannot query field \"owner\" on type \"Project\".".into())
        );
        assert_eq!(
            check("query { projects(search: \"x\") { edges { node { id } } } }"),
            Err("Unknown argument \"search\" on field \"Query.projects\".".into())
        );
        assert_eq!(
            check("query { deployments(input: {}) { edges { node { id state } } } }"),
            Err("Cannot query field \"state\" on type \"Deployment\".".into())
        );
        assert!(check("mutation { serviceDelete(id: \"s\", force: true) }").is_err());
        assert!(check("query { nope }").is_err());
    }
}
