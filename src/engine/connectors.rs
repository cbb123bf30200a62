//! `spec.connectors[]` delivered to the agent service: each connector's
//! Secret keys become variables `WINSTON_CONNECTOR_<TYPE>_<KEY>` of the
//! service (Railway keeps service variables encrypted at rest). The values
//! pass from the Secret to the platform only: never into status, events,
//! logs or the workspace files (TOOLS.md names the variables, not values).
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::api::Connector;

/// Prefix of every connector variable.
pub const PREFIX: &str = "WINSTON_CONNECTOR_";

/// The variable carrying `key` of a connector of type `type_`: upper case,
/// every other character than a letter or digit as `_`.
#[must_use]
pub fn variable_name(type_: &str, key: &str) -> String {
    format!("{PREFIX}{}_{}", env_part(type_), env_part(key))
}

/// The variable prefix of a connector type (for TOOLS.md).
#[must_use]
pub fn variable_prefix(type_: &str) -> String {
    format!("{PREFIX}{}_", env_part(type_))
}

fn env_part(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// The variables of `connectors`, or why they cannot be delivered yet (a
/// Secret missing or holding a value that is not UTF-8): a message naming
/// the connector, the Secret and the key, never a value.
///
/// # Errors
/// When the API server cannot be read.
pub async fn variables(
    secrets: &Api<Secret>,
    connectors: &[Connector],
) -> Result<Result<BTreeMap<String, String>, String>, kube::Error> {
    let mut out = BTreeMap::new();
    for c in connectors {
        let name = &c.secret_ref.name;
        let Some(secret) = secrets.get_opt(name).await? else {
            return Ok(Err(format!("connector {}: waiting for its Secret {name}", c.type_)));
        };
        for (key, value) in secret.data.unwrap_or_default() {
            let Ok(value) = String::from_utf8(value.0) else {
                return Ok(Err(format!("connector {}: key {key} of Secret {name} is not UTF-8 text", c.type_)));
            };
            out.insert(variable_name(&c.type_, &key), value);
        }
    }
    Ok(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_names_are_environment_names() {
        assert_eq!(variable_name("pos", "api-key"), "WINSTON_CONNECTOR_POS_API_KEY");
        assert_eq!(variable_name("crm-x", "a.b"), "WINSTON_CONNECTOR_CRM_X_A_B");
        assert_eq!(variable_prefix("pos"), "WINSTON_CONNECTOR_POS_");
    }
}
