//! `spec.connectors[]` delivered to the agent service: each connector's
//! Secret keys become variables `WINSTON_CONNECTOR_<TYPE>_<KEY>` of the
//! service (Railway keeps service variables encrypted at rest). The values
//! pass from the Secret to the platform only: never into status, events,
//! logs or the workspace files (TOOLS.md names the variables, not values).
//! Keys that would become one variable (`api-key` and `api_key`, or `pos` +
//! `api-key` and `pos-api` + `key`) are refused, never merged: the instance
//! stalls with `ConnectorVariableCollision` naming the keys.
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

/// Why the connectors' variables cannot be delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undelivered {
    /// A Secret is missing or holds a value that is not UTF-8 text: the
    /// service step waits (a message naming the connector, Secret and key).
    Waiting(String),
    /// Two or more Secret keys become one variable: delivering them would
    /// keep one value and drop the others, so the instance stalls until the
    /// keys are renamed (a message naming every colliding key, never a value).
    Collision(String),
}

/// Where one variable's value comes from.
struct Origin<'c> {
    type_: &'c str,
    secret: &'c str,
    key: String,
}

/// The variables of `connectors`, or why they cannot be delivered (see
/// [`Undelivered`]): messages name connectors, Secrets and keys, never a
/// value.
///
/// # Errors
/// When the API server cannot be read.
pub async fn variables(
    secrets: &Api<Secret>,
    connectors: &[Connector],
) -> Result<Result<BTreeMap<String, String>, Undelivered>, kube::Error> {
    let mut out = BTreeMap::new();
    let mut origins: BTreeMap<String, Vec<Origin<'_>>> = BTreeMap::new();
    for c in connectors {
        let name = &c.secret_ref.name;
        let Some(secret) = secrets.get_opt(name).await? else {
            return Ok(Err(Undelivered::Waiting(format!("connector {}: waiting for its Secret {name}", c.type_))));
        };
        for (key, value) in secret.data.unwrap_or_default() {
            let Ok(value) = String::from_utf8(value.0) else {
                return Ok(Err(Undelivered::Waiting(format!(
                    "connector {}: key {key} of Secret {name} is not UTF-8 text",
                    c.type_
                ))));
            };
            let variable = variable_name(&c.type_, &key);
            origins.entry(variable.clone()).or_default().push(Origin { type_: &c.type_, secret: name, key });
            out.insert(variable, value);
        }
    }
    Ok(collisions(&origins).map_or(Ok(out), |m| Err(Undelivered::Collision(m))))
}

/// Every variable more than one Secret key would set, with those keys:
/// `None` when each key has a variable of its own.
fn collisions(origins: &BTreeMap<String, Vec<Origin<'_>>>) -> Option<String> {
    let clashes: Vec<String> = origins
        .iter()
        .filter(|(_, from)| from.len() > 1)
        .map(|(variable, from)| {
            let keys: Vec<String> = from
                .iter()
                .map(|o| format!("key \"{}\" of Secret {} (connector {})", o.key, o.secret, o.type_))
                .collect();
            format!("{variable} from {}", keys.join(", "))
        })
        .collect();
    (!clashes.is_empty()).then(|| {
        format!(
            "connector variables collide, so values would be lost: {}; every character other than a letter or \
             digit becomes _ and letters become upper case: rename the Secret keys (or connector types) so each \
             gives its own variable",
            clashes.join("; ")
        )
    })
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

    #[test]
    fn keys_that_become_one_variable_are_named_and_distinct_ones_are_not() {
        let mut origins: BTreeMap<String, Vec<Origin<'_>>> = BTreeMap::new();
        let from = [("pos", "s1", "api-key"), ("pos", "s1", "api_key"), ("pos-api", "s2", "key"), ("pos", "s1", "id")];
        for (type_, secret, key) in from {
            let o = Origin { type_, secret, key: key.into() };
            origins.entry(variable_name(type_, key)).or_default().push(o);
        }
        let m = collisions(&origins).expect("a collision");
        assert!(
            m.contains(
                "WINSTON_CONNECTOR_POS_API_KEY from key \"api-key\" of Secret s1 (connector pos), key \"api_key\" of \
                 Secret s1 (connector pos), key \"key\" of Secret s2 (connector pos-api)"
            ),
            "{m}"
        );
        assert!(!m.contains("POS_ID"), "{m}");
        origins.retain(|v, _| v.ends_with("_ID"));
        assert_eq!(collisions(&origins), None);
    }
}
