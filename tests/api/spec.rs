//! `GET /api/spec.json` against the code: the served document is the one in
//! the repository, its paths and methods are exactly the router's, its
//! schemas have exactly the keys the server writes, and every status the
//! server answers for each operation is documented. (CI also runs
//! schemathesis against a live server with this document.)

use reqwest::{Method, StatusCode};
use rollcall::api::ROUTES;
use rollcall::model::*;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::workos::*;

fn spec() -> Value {
    serde_json::from_str(include_str!("../../api/openapi.json")).unwrap()
}

fn schema_keys(spec: &Value, name: &str) -> (Vec<String>, Vec<String>) {
    let schema = &spec["components"]["schemas"][name];
    let props = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let required = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    (props, required)
}

fn json_keys(bytes: &[u8]) -> Vec<String> {
    serde_json::from_slice::<Value>(bytes)
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[tokio::test]
async fn the_served_document_is_the_repository_one() {
    let app = spawn_app().await;

    let resp = app.get("/api/spec.json", None).await;

    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let served: Value = resp.json().await.unwrap();
    assert_eq!(served, spec());
    assert_eq!(served["openapi"], "3.0.3");
}

#[test]
fn documented_paths_and_methods_are_exactly_the_routers() {
    let spec = spec();
    let documented: Vec<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (path.clone(), m.to_uppercase()))
        })
        .collect();
    let routed: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(path, methods)| (path.to_string(), methods[0].to_owned()))
        .collect();
    let (mut a, mut b) = (documented.clone(), routed.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b, "api/openapi.json and api::ROUTES disagree");
}

#[test]
fn schemas_have_exactly_the_keys_the_server_writes() {
    let spec = spec();
    let user = DirectoryUser {
        id: DirectoryUserId::new_v7(),
        directory_id: DirectoryId::new_v7(),
        user_id: None,
        workos_directory_user_id: "directory_user_1".into(),
        email: "a@b.test".into(),
        first_name: None,
        last_name: None,
        state: UserState::Active,
        raw_attributes: None,
        idp_id: None,
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
        workos_state: "active".into(),
        emails: vec![],
        custom_attributes: None,
        source: Provenance::default(),
    };
    let group = DirectoryGroup {
        id: DirectoryGroupId::new_v7(),
        directory_id: DirectoryId::new_v7(),
        workos_directory_group_id: "directory_group_1".into(),
        name: "G".into(),
        idp_id: None,
        raw_attributes: None,
        mapped_role: None,
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
        source: Provenance::default(),
    };
    let directory = Directory {
        id: DirectoryId::new_v7(),
        organization_id: "org_1".into(),
        workos_directory_id: "directory_1".into(),
        name: "D".into(),
        workos_type: "okta scim v2.0".into(),
        workos_state: "active".into(),
        domains: vec![],
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
        user_count: 0,
        group_count: 0,
        revision: 0,
        users_digest: 0,
        groups_digest: 0,
        source: Provenance::default(),
    };
    for (name, bytes) in [
        ("DirectoryUser", user.to_json()),
        ("DirectoryGroup", group.to_json()),
        ("Directory", directory.to_json()),
    ] {
        let (props, required) = schema_keys(&spec, name);
        let written = json_keys(&bytes);
        assert_eq!(
            props, written,
            "{name}: documented properties vs written keys (and their order)"
        );
        assert_eq!(
            required, written,
            "{name}: every key is required (always present, null included)"
        );
    }
}

/// Calls `method path` and checks the status is documented for it.
async fn check(
    app: &TestApp,
    spec: &Value,
    method: Method,
    template: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> StatusCode {
    let mut req = app
        .client
        .request(method.clone(), format!("{}{path}", app.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let op = &spec["paths"][template][method.as_str().to_lowercase()];
    assert!(
        op["responses"].get(status.as_str()).is_some(),
        "{method} {path} answered {status}, which api/openapi.json does not document"
    );
    if status.as_u16() >= 400 {
        let err: Value = resp.json().await.unwrap();
        let (props, _) = schema_keys(spec, "Error");
        let keys: Vec<String> = err.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, props);
        let codes = spec["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap();
        assert!(
            codes.contains(&err["code"]),
            "{} is a documented code",
            err["code"]
        );
    }
    status
}

#[tokio::test]
async fn every_status_the_server_answers_is_documented() {
    let spec = spec();
    let app = spawn_app().await;
    app.send_all(&[
        activated("directory_A", ORG_A, 0),
        activated("directory_B", ORG_B, 0),
    ])
    .await;
    let mine = directory_id(&app, ORG_A, "directory_A").await;
    let theirs = directory_id(&app, ORG_B, "directory_B").await;
    let token = token_for(ORG_A);
    let no_org = rs256(&json!({"exp": now_secs() + 60}));

    for (template, path) in [
        ("/api/directories", "/api/directories".to_owned()),
        ("/api/directories/{id}", format!("/api/directories/{mine}")),
        (
            "/api/directories/{id}/users",
            format!("/api/directories/{mine}/users?limit=1&state=active"),
        ),
        (
            "/api/directories/{id}/groups",
            format!("/api/directories/{mine}/groups?limit=5"),
        ),
    ] {
        assert_eq!(
            check(
                &app,
                &spec,
                Method::GET,
                template,
                &path,
                Some(&token),
                None
            )
            .await,
            StatusCode::OK
        );
        assert_eq!(
            check(&app, &spec, Method::GET, template, &path, None, None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            check(
                &app,
                &spec,
                Method::GET,
                template,
                &path,
                Some(&no_org),
                None
            )
            .await,
            StatusCode::FORBIDDEN
        );
        if path.contains(&mine) {
            let foreign = path.replace(&mine, &theirs);
            assert_eq!(
                check(
                    &app,
                    &spec,
                    Method::GET,
                    template,
                    &foreign,
                    Some(&token),
                    None
                )
                .await,
                StatusCode::NOT_FOUND
            );
            let bad = path.replace(&mine, "not-a-uuid");
            assert_eq!(
                check(&app, &spec, Method::GET, template, &bad, Some(&token), None).await,
                StatusCode::BAD_REQUEST
            );
        }
    }
    let users = format!("/api/directories/{mine}/users?limit=0");
    assert_eq!(
        check(
            &app,
            &spec,
            Method::GET,
            "/api/directories/{id}/users",
            &users,
            Some(&token),
            None
        )
        .await,
        StatusCode::BAD_REQUEST
    );
    for (template, path) in [
        ("/healthz", "/healthz"),
        ("/api/spec.json", "/api/spec.json"),
    ] {
        assert_eq!(
            check(&app, &spec, Method::GET, template, path, None, None).await,
            StatusCode::OK
        );
    }
    let event = serde_json::to_vec(&activated("directory_C", ORG_A, 1)).unwrap();
    assert_eq!(
        check(
            &app,
            &spec,
            Method::POST,
            "/webhooks/workos",
            "/webhooks/workos",
            None,
            Some(event)
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    let good = app.post_event(&activated("directory_D", ORG_A, 1)).await;
    assert_eq!(good.status(), StatusCode::OK);
    let ack: Value = good.json().await.unwrap();
    assert!(
        spec["components"]["schemas"]["WebhookAck"]["properties"]["outcome"]["enum"]
            .as_array()
            .unwrap()
            .contains(&ack["outcome"])
    );
}

#[tokio::test]
async fn undocumented_methods_are_405_with_allow() {
    let app = spawn_app().await;
    let id = uuid::Uuid::now_v7();
    for (method, path, allow) in [
        (Method::PUT, "/api/directories".to_owned(), "GET, HEAD"),
        (
            Method::DELETE,
            format!("/api/directories/{id}/users"),
            "GET, HEAD",
        ),
        (Method::POST, "/api/spec.json".to_owned(), "GET, HEAD"),
        (Method::GET, "/webhooks/workos".to_owned(), "POST"),
        (Method::OPTIONS, "/healthz".to_owned(), "GET, HEAD"),
    ] {
        let resp = app
            .client
            .request(method.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
    }
}
