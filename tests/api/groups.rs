//! `GET /api/directories/{id}/groups`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::workos::*;

const GROUP_KEYS: [&str; 9] = [
    "id",
    "directory_id",
    "workos_directory_group_id",
    "name",
    "idp_id",
    "raw_attributes",
    "mapped_role",
    "created_at",
    "updated_at",
];

#[tokio::test]
async fn groups_list_has_the_documented_keys_in_creation_order() {
    let app = spawn_app().await;
    let mut bare = group("directory_A", "directory_group_2", "Bare", 3);
    bare["idp_id"] = json!("");
    bare.as_object_mut().unwrap().remove("raw_attributes");
    app.send_all(&[
        activated("directory_A", ORG_A, 0),
        group_event(
            "created",
            group("directory_A", "directory_group_1", "Engineering", 2),
            2,
        ),
        group_event("created", bare, 3),
    ])
    .await;
    let dir = directory_id(&app, ORG_A, "directory_A").await;

    let (status, list) = app
        .get_json(&format!("/api/directories/{dir}/groups"), &token_for(ORG_A))
        .await;

    assert_eq!(status, StatusCode::OK);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    for g in list {
        assert_eq!(keys(g), GROUP_KEYS);
        assert_eq!(g["directory_id"], dir.as_str());
        assert_eq!(g["mapped_role"], Value::Null);
    }
    assert_eq!(list[0]["name"], "Engineering");
    assert_eq!(list[0]["workos_directory_group_id"], "directory_group_1");
    assert_eq!(list[0]["idp_id"], "idp-directory_group_1");
    assert_eq!(
        serde_json::from_str::<Value>(list[0]["raw_attributes"].as_str().unwrap()).unwrap(),
        json!({"displayName": "Engineering"})
    );
    assert_eq!(list[1]["name"], "Bare");
    assert_eq!(list[1]["idp_id"], Value::Null);
    assert_eq!(list[1]["raw_attributes"], Value::Null);
}
