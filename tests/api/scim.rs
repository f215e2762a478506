//! SCIM 2.0 through the real server: a directory made with the control
//! socket, its identity provider's requests, and the Char answers they lead to.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_scim_user_appears_in_the_char_api_with_the_mapped_fields() {
    let app = spawn_app().await;
    let dir = app.scim_directory("org_scim", "okta").await;
    let (status, headers, user) = app
        .scim(
            Method::POST,
            &format!("{}/Users", dir.url),
            &dir.token,
            Some(&json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "ann@example.com",
                "externalId": "00u1",
                "name": {"givenName": "Ann", "familyName": "Lee"},
                "emails": [{"value": "ann@example.com", "type": "work", "primary": true}],
                "active": true
            })),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(
        headers["content-type"].to_str().unwrap(),
        "application/scim+json"
    );
    let id = user["id"].as_str().unwrap();
    assert_eq!(
        headers["location"].to_str().unwrap(),
        format!("{}/Users/{id}", dir.url)
    );

    let token = token_for("org_scim");
    let (status, list) = app
        .get_json(&format!("/api/directories/{}/users", dir.id), &token)
        .await;
    assert_eq!(status, 200, "{list}");
    let char_user = &list[0];
    assert_eq!(char_user["id"], id);
    assert_eq!(char_user["workos_directory_user_id"], id);
    assert_eq!(char_user["email"], "ann@example.com");
    assert_eq!(char_user["first_name"], "Ann");
    assert_eq!(char_user["last_name"], "Lee");
    assert_eq!(char_user["state"], "active");
    assert_eq!(char_user["idp_id"], "00u1");
    let raw: serde_json::Value =
        serde_json::from_str(char_user["raw_attributes"].as_str().unwrap()).unwrap();
    assert_eq!(raw["userName"], "ann@example.com");
    assert_eq!(
        keys(&raw),
        [
            "schemas",
            "id",
            "userName",
            "externalId",
            "name",
            "emails",
            "active"
        ],
        "the resource as sent, in its order"
    );

    let (_, d) = app
        .get_json(&format!("/api/directories/{}", dir.id), &token)
        .await;
    assert_eq!(d["type"], "okta_scim");
    assert_eq!(d["user_count"], 1);
}
