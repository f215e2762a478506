//! The SCIM discovery documents (RFC 7644 §4): `ServiceProviderConfig`,
//! `ResourceTypes` and `Schemas`, truthful about what rollcall does.
//!
//! The schema definitions are RFC 7643 §8.7's core User and Group and the
//! Enterprise User extension (`schemas.json`, generated once from the
//! `scim2-models` package's models of them), except that group members are
//! users only — rollcall keeps no nested groups.

use serde_json::{Value, json};

use super::patch::ENTERPRISE_USER_SCHEMA;
use super::service::{GROUP_SCHEMA, MAX_RESULTS, USER_SCHEMA};

const SCHEMA_DEFINITIONS: &str = include_str!("schemas.json");

/// The ServiceProviderConfig of a directory whose SCIM base URL is `base`.
pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/rollcall/rollcall#scim",
        "patch": { "supported": true },
        "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
        "filter": { "supported": true, "maxResults": MAX_RESULTS },
        "changePassword": { "supported": false },
        "sort": { "supported": false },
        "etag": { "supported": true },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "The directory's token from `rollcall directory create` or `rotate-token`, as `Authorization: Bearer …`.",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig"),
        },
    })
}

/// The User and Group resource types.
pub fn resource_types(base: &str) -> Vec<Value> {
    vec![
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "description": "User Account",
            "schema": USER_SCHEMA,
            "schemaExtensions": [{ "schema": ENTERPRISE_USER_SCHEMA, "required": false }],
            "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User") },
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "Group",
            "schema": GROUP_SCHEMA,
            "schemaExtensions": [],
            "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group") },
        }),
    ]
}

/// The schema definitions, each with its `meta`.
pub fn schemas(base: &str) -> Vec<Value> {
    static DEFINITIONS: std::sync::LazyLock<Vec<Value>> =
        std::sync::LazyLock::new(|| serde_json::from_str(SCHEMA_DEFINITIONS).unwrap_or_default());
    let mut all = DEFINITIONS.clone();
    for schema in &mut all {
        let id = schema["id"].as_str().unwrap_or_default().to_owned();
        schema["meta"] = json!({
            "resourceType": "Schema",
            "location": format!("{base}/Schemas/{id}"),
        });
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_definitions_parse_and_name_the_three_schemas() {
        let ids: Vec<String> = schemas("http://x")
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, [USER_SCHEMA, GROUP_SCHEMA, ENTERPRISE_USER_SCHEMA]);
    }
}
