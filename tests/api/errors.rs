//! The JSON error shape from every route, unknown paths and wrong methods included.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

async fn error_body(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    assert_eq!(
        resp.headers()["content-type"],
        "application/json",
        "errors are JSON, never HTML"
    );
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn a_malformed_directory_id_is_400_naming_id_on_every_route() {
    let app = spawn_app().await;
    let token = token_for(ORG_A);
    for path in [
        "/api/directories/not-a-uuid",
        "/api/directories/not-a-uuid/users",
        "/api/directories/not-a-uuid/groups",
        "/api/directories/123/users",
    ] {
        let (status, body) = error_body(app.get(path, Some(&token)).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(body["code"], "BAD_REQUEST");
        assert_eq!(body["status"], 400);
        assert_eq!(body["data"]["code"], "VALIDATION_ERROR");
        assert_eq!(body["data"]["field"], "id", "{path}");
    }
}

#[tokio::test]
async fn unknown_paths_are_404_json() {
    let app = spawn_app().await;
    for path in [
        "/",
        "/nope",
        "/api",
        "/api/directories/x/y/z",
        "/api/users",
        "/webhooks",
    ] {
        let (status, body) = error_body(app.get(path, Some(&token_for(ORG_A))).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["code"], "NOT_FOUND");
        assert_eq!(body["status"], 404);
        assert_eq!(body["data"]["code"], "RESOURCE_NOT_FOUND");
    }
}

#[tokio::test]
async fn wrong_methods_are_405_json() {
    let app = spawn_app().await;
    let id = uuid::Uuid::now_v7();
    for (method, path) in [
        (reqwest::Method::POST, "/api/directories".to_owned()),
        (reqwest::Method::DELETE, format!("/api/directories/{id}")),
        (reqwest::Method::PUT, format!("/api/directories/{id}/users")),
        (
            reqwest::Method::PATCH,
            format!("/api/directories/{id}/groups"),
        ),
        (reqwest::Method::POST, "/healthz".to_owned()),
        (reqwest::Method::GET, "/webhooks/workos".to_owned()),
    ] {
        let resp = app
            .client
            .request(method.clone(), format!("{}{path}", app.base))
            .bearer_auth(token_for(ORG_A))
            .send()
            .await
            .unwrap();
        let (status, body) = error_body(resp).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(body["code"], "METHOD_NOT_ALLOWED");
        assert_eq!(body["data"]["code"], "METHOD_NOT_ALLOWED");
    }
}

#[tokio::test]
async fn healthz_answers_without_authentication() {
    let app = spawn_app().await;

    let resp = app.get("/healthz", None).await;

    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "ok");
}
