//! What the SCIM service provider refuses, and what it keeps: directory
//! isolation and authentication, the SCIM error answers (each leaving
//! everything as it was), paging, durability across restarts, the
//! `rollcall directory` CLI against the real binary, and WorkOS webhooks
//! never reaching a SCIM directory.

use std::process::{Command, Output};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::scim_idp::member_values;
use crate::workos::*;

const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Asserts a SCIM Error answer: the schema, `status` as a string, the
/// `scimType` when one is expected, and the media type.
fn assert_error(
    what: &str,
    (status, headers, body): &(StatusCode, reqwest::header::HeaderMap, Value),
    want: u16,
    scim_type: Option<&str>,
) {
    assert_eq!(status.as_u16(), want, "{what}: {body}");
    assert_eq!(body["schemas"], json!([ERROR]), "{what}: {body}");
    assert_eq!(body["status"], want.to_string(), "{what}: {body}");
    assert!(body["detail"].is_string(), "{what}: {body}");
    if let Some(t) = scim_type {
        assert_eq!(body["scimType"], t, "{what}: {body}");
    }
    assert_eq!(
        headers["content-type"], "application/scim+json",
        "{what}: the media type"
    );
}

fn user_body(name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Given", "familyName": name},
        "emails": [{"value": format!("{name}@example.test"), "type": "work", "primary": true}],
        "active": true
    })
}

/// Creates a user; its id.
async fn new_user(app: &TestApp, dir: &ScimDir, name: &str) -> String {
    let (status, _, u) = app
        .scim(
            Method::POST,
            &format!("{}/Users", dir.url),
            &dir.token,
            Some(&user_body(name)),
        )
        .await;
    assert_eq!(status, 201, "{u}");
    u["id"].as_str().unwrap().to_owned()
}

/// Creates a group with these members; its id.
async fn new_group(app: &TestApp, dir: &ScimDir, name: &str, members: &[&str]) -> String {
    let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    let (status, _, g) = app
        .scim(
            Method::POST,
            &format!("{}/Groups", dir.url),
            &dir.token,
            Some(&json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": name,
                "members": members
            })),
        )
        .await;
    assert_eq!(status, 201, "{g}");
    g["id"].as_str().unwrap().to_owned()
}

/// Everything a directory answers, SCIM and Char, to compare before and
/// after something that must change nothing.
async fn everything(app: &TestApp, org: &str, dir: &ScimDir) -> Vec<Value> {
    let mut out = Vec::new();
    for path in ["/Users", "/Groups"] {
        let (status, _, body) = app
            .scim(Method::GET, &format!("{}{path}", dir.url), &dir.token, None)
            .await;
        assert_eq!(status, 200, "{body}");
        out.push(body);
    }
    let token = token_for(org);
    for path in ["", "/users", "/groups"] {
        let (status, body) = app
            .get_json(&format!("/api/directories/{}{path}", dir.id), &token)
            .await;
        assert_eq!(status, 200, "{body}");
        out.push(body);
    }
    out
}

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// Every endpoint of a directory, with ids of its resources.
fn endpoints(url: &str, user: &str, group: &str) -> Vec<String> {
    [
        "/Users".to_owned(),
        "/Groups".to_owned(),
        format!("/Users/{user}"),
        format!("/Groups/{group}"),
        "/Users/.search".to_owned(),
        "/Groups/.search".to_owned(),
        "/.search".to_owned(),
        "/ServiceProviderConfig".to_owned(),
        "/ResourceTypes".to_owned(),
        "/Schemas".to_owned(),
        "/ResourceTypes/User".to_owned(),
        "/Nope".to_owned(),
        String::new(),
    ]
    .into_iter()
    .map(|p| format!("{url}{p}"))
    .collect()
}

#[tokio::test]
async fn a_directory_token_opens_only_its_own_directory() {
    let app = spawn_app().await;
    let a = app.scim_directory(ORG_A, "okta").await;
    let a2 = app.scim_directory(ORG_A, "entra").await;
    let b = app.scim_directory(ORG_B, "okta").await;
    app.send_all(&[
        activated("directory_W", ORG_A, 1),
        user_event(
            "created",
            user("directory_W", "directory_user_w1", "w1@example.test", 2),
            2,
        ),
    ])
    .await;
    let workos = directory_id(&app, ORG_A, "directory_W").await;

    let a_user = new_user(&app, &a, "ann").await;
    let a_group = new_group(&app, &a, "a-team", &[&a_user]).await;
    let mut others = Vec::new();
    for (org, d) in [(ORG_A, &a2), (ORG_B, &b)] {
        let u = new_user(&app, d, "ann").await;
        let g = new_group(&app, d, "team", &[&u]).await;
        others.push((org, d, u, g));
    }
    let body = serde_json::to_vec(&user_body("mallory")).unwrap();
    let a_bearer = format!("Bearer {}", a.token);

    // A's token on the other directories' URLs, and every other credential
    // on A's: 401 for every endpoint and method, before anything else.
    let jwt = format!("Bearer {}", token_for(ORG_A));
    let workos_url = format!("{}/scim/v2/{workos}", app.base);
    let unknown_url = format!("{}/scim/v2/{}", app.base, uuid::Uuid::now_v7());
    let mut cases: Vec<(String, Option<String>)> = Vec::new();
    for (_, d, u, g) in &others {
        for url in endpoints(&d.url, u, g) {
            cases.push((url, Some(a_bearer.clone())));
        }
    }
    for auth in [
        None,
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
        Some(format!("Basic {}", a.token)),
        Some(format!("Bearer {}x", a.token)),
        Some(format!("Bearer {}", &a.token[..a.token.len() - 1])),
        Some(a.token.clone()),
        Some(jwt.clone()),
        Some(format!("Bearer {}", b.token)),
    ] {
        for url in endpoints(&a.url, &a_user, &a_group) {
            cases.push((url, auth.clone()));
        }
    }
    for auth in [Some(a_bearer.clone()), Some(jwt.clone()), None] {
        for url in endpoints(&workos_url, &a_user, &a_group)
            .into_iter()
            .chain(endpoints(&unknown_url, &a_user, &a_group))
        {
            cases.push((url, auth.clone()));
        }
    }
    cases.push((
        format!("{}/scim/v2/not-a-uuid/Users", app.base),
        Some(a_bearer.clone()),
    ));
    cases.push((format!("{}/scim/v2/", app.base), Some(a_bearer.clone())));
    for (url, auth) in &cases {
        for method in METHODS {
            let answer = app
                .scim_raw(
                    method.clone(),
                    url,
                    auth.as_deref(),
                    Some(body.clone()),
                    &[],
                )
                .await;
            assert_error(&format!("{method} {url} with {auth:?}"), &answer, 401, None);
            assert_eq!(
                answer.1["www-authenticate"], "Bearer realm=\"rollcall-scim\"",
                "{method} {url}"
            );
        }
    }

    // A's token naming another directory's resources under A's URL: 404.
    let befores = {
        let mut v = Vec::new();
        for (org, d, _, _) in &others {
            v.push(everything(&app, org, d).await);
        }
        v
    };
    for (_, _, u, g) in &others {
        for (path, body) in [
            (format!("/Users/{u}"), user_body("stolen")),
            (
                format!("/Groups/{g}"),
                json!({"displayName": "stolen", "members": [{"value": a_user}]}),
            ),
        ] {
            let url = format!("{}{path}", a.url);
            let patch = json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "replace", "path": "displayName", "value": "stolen"}]});
            for (method, body) in [
                (Method::GET, None),
                (Method::PUT, Some(&body)),
                (Method::PATCH, Some(&patch)),
                (Method::DELETE, None),
            ] {
                let answer = app.scim(method.clone(), &url, &a.token, body).await;
                assert_error(&format!("{method} {url}"), &answer, 404, None);
            }
        }
        // Nor does a filter or a search of A's find them.
        let (status, _, list) = app
            .scim(
                Method::GET,
                &format!("{}/Users?filter=id eq \"{u}\"", a.url),
                &a.token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["totalResults"], 0, "{list}");
        // A group of A cannot take them as members.
        let answer = app
            .scim(
                Method::PATCH,
                &format!("{}/Groups/{a_group}", a.url),
                &a.token,
                Some(&json!({"schemas": [PATCH_OP], "Operations": [
                    {"op": "add", "path": "members", "value": [{"value": u}]}]})),
            )
            .await;
        assert_error(
            "another directory's user as a member",
            &answer,
            400,
            Some("invalidValue"),
        );
    }
    let (_, _, ann) = app
        .scim(Method::GET, &format!("{}/Users", a.url), &a.token, None)
        .await;
    assert_eq!(ann["totalResults"], 1, "{ann}");
    let (_, _, team) = app
        .scim(
            Method::GET,
            &format!("{}/Groups/{a_group}", a.url),
            &a.token,
            None,
        )
        .await;
    assert_eq!(member_values(&team), std::slice::from_ref(&a_user));
    for ((org, d, _, _), before) in others.iter().zip(&befores) {
        assert_eq!(&everything(&app, org, d).await, before, "{} changed", d.id);
    }

    // A SCIM token is no Char API credential.
    for path in [
        "/api/directories".to_owned(),
        format!("/api/directories/{}", a.id),
        format!("/api/directories/{}/users", a.id),
    ] {
        let (status, body) = app.get_json(&path, &a.token).await;
        assert_eq!(status, 401, "{path}: {body}");
    }

    // The Char API shows an organization its own directories only.
    let (_, list) = app.get_json("/api/directories", &token_for(ORG_A)).await;
    let mut ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![a.id.as_str(), a2.id.as_str(), workos.as_str()];
    want.sort();
    assert_eq!(ids, want, "{list}");
    for path in ["", "/users", "/groups"] {
        let (status, body) = app
            .get_json(
                &format!("/api/directories/{}{path}", b.id),
                &token_for(ORG_A),
            )
            .await;
        assert_eq!(status, 404, "{body}");
    }
    let (_, list) = app.get_json("/api/directories", &token_for(ORG_B)).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], b.id);
}

#[tokio::test]
async fn every_refusal_is_a_scim_error_and_changes_nothing() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.max_scim_body_bytes = 4096;
    let app = spawn_with(s, std::sync::Arc::new(dir)).await;
    let d = app.scim_directory(ORG_A, "okta").await;
    let other = app.scim_directory(ORG_A, "entra").await;
    let ann = new_user(&app, &d, "ann").await;
    let bob = new_user(&app, &d, "bob").await;
    let stranger = new_user(&app, &other, "stranger").await;
    let team = new_group(&app, &d, "team", &[&ann]).await;
    let before = everything(&app, ORG_A, &d).await;
    let bearer = format!("Bearer {}", d.token);
    let auth = Some(bearer.as_str());
    let users = format!("{}/Users", d.url);
    let groups = format!("{}/Groups", d.url);
    let ann_url = format!("{users}/{ann}");
    let team_url = format!("{groups}/{team}");
    let patch = |ops: Value| json!({"schemas": [PATCH_OP], "Operations": ops});

    // Malformed JSON, on every endpoint that reads a body.
    for (method, url) in [
        (Method::POST, &users),
        (Method::POST, &groups),
        (Method::PUT, &ann_url),
        (Method::PATCH, &ann_url),
        (Method::PATCH, &team_url),
        (Method::POST, &format!("{users}/.search")),
        (Method::POST, &format!("{}/.search", d.url)),
    ] {
        let answer = app
            .scim_raw(
                method.clone(),
                url,
                auth,
                Some(b"{\"userName\": ".to_vec()),
                &[],
            )
            .await;
        assert_error(
            &format!("{method} {url} malformed"),
            &answer,
            400,
            Some("invalidSyntax"),
        );
    }

    // Missing or empty userName / displayName.
    for (url, body) in [
        (
            &users,
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "name": {"givenName": "No"}}),
        ),
        (&users, json!({"userName": "  "})),
        (&users, json!({"userName": 7})),
        (&groups, json!({"members": []})),
    ] {
        let answer = app.scim(Method::POST, url, &d.token, Some(&body)).await;
        assert_error(&format!("POST {body}"), &answer, 400, Some("invalidValue"));
    }
    let answer = app
        .scim(
            Method::PUT,
            &ann_url,
            &d.token,
            Some(&json!({"name": {"givenName": "X"}})),
        )
        .await;
    assert_error("PUT without userName", &answer, 400, Some("invalidValue"));

    // A userName another user holds, in any case: on create, PUT and PATCH.
    let answer = app
        .scim(Method::POST, &users, &d.token, Some(&user_body("ANN")))
        .await;
    assert_error("duplicate userName", &answer, 409, Some("uniqueness"));
    let answer = app
        .scim(
            Method::PUT,
            &format!("{users}/{bob}"),
            &d.token,
            Some(&user_body("Ann")),
        )
        .await;
    assert_error(
        "PUT onto a taken userName",
        &answer,
        409,
        Some("uniqueness"),
    );
    let answer = app
        .scim(
            Method::PATCH,
            &format!("{users}/{bob}"),
            &d.token,
            Some(&patch(
                json!([{"op": "replace", "path": "userName", "value": "aNN"}]),
            )),
        )
        .await;
    assert_error(
        "PATCH onto a taken userName",
        &answer,
        409,
        Some("uniqueness"),
    );

    // If-Match that does not match: 412 on PUT, PATCH and DELETE.
    let stale = [("if-match", "W/\"0000000000000000\"")];
    let rename = patch(json!([{"op": "replace", "path": "displayName", "value": "renamed"}]));
    for (method, url, body) in [
        (Method::PUT, &ann_url, Some(user_body("ann2"))),
        (
            Method::PATCH,
            &ann_url,
            Some(patch(
                json!([{"op": "replace", "path": "active", "value": false}]),
            )),
        ),
        (Method::DELETE, &ann_url, None),
        (
            Method::PUT,
            &team_url,
            Some(json!({"displayName": "renamed"})),
        ),
        (Method::PATCH, &team_url, Some(rename.clone())),
        (Method::DELETE, &team_url, None),
    ] {
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        let answer = app.scim_raw(method.clone(), url, auth, body, &stale).await;
        assert_error(
            &format!("{method} {url} stale If-Match"),
            &answer,
            412,
            None,
        );
    }

    // An invalid filter, in the query and in a search body.
    for filter in [
        "userName eq",
        "userName zz \"a\"",
        "(userName eq \"a\"",
        "emails[type eq \"work\"",
    ] {
        let (status, headers, body) = app
            .scim(
                Method::GET,
                &format!("{users}?filter={}", urlencode(filter)),
                &d.token,
                None,
            )
            .await;
        assert_error(
            &format!("filter {filter}"),
            &(status, headers, body),
            400,
            Some("invalidFilter"),
        );
    }
    let answer = app
        .scim(
            Method::POST,
            &format!("{users}/.search"),
            &d.token,
            Some(&json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "userName eq"})),
        )
        .await;
    assert_error(
        "search with a bad filter",
        &answer,
        400,
        Some("invalidFilter"),
    );

    // PATCH with a bad op, a bad path, no Operations.
    for (url, body) in [
        (
            &ann_url,
            patch(json!([{"op": "frobnicate", "path": "active", "value": false}])),
        ),
        (
            &ann_url,
            patch(json!([{"op": "replace", "path": "emails[type eq", "value": "x"}])),
        ),
        (&ann_url, patch(json!([{"op": "remove"}]))),
        (&ann_url, json!({"schemas": [PATCH_OP]})),
        (
            &team_url,
            patch(json!([{"op": "add", "path": "members[", "value": [{"value": bob}]}])),
        ),
    ] {
        let answer = app.scim(Method::PATCH, url, &d.token, Some(&body)).await;
        assert_error(&format!("PATCH {body}"), &answer, 400, None);
        assert!(answer.2["scimType"].is_string(), "{}", answer.2);
    }

    // Members that are not users of this directory.
    for m in [
        stranger.as_str(),
        "not-a-uuid",
        &uuid::Uuid::now_v7().to_string(),
    ] {
        let answer = app
            .scim(
                Method::POST,
                &groups,
                &d.token,
                Some(&json!({"displayName": "bad", "members": [{"value": ann}, {"value": m}]})),
            )
            .await;
        assert_error(
            &format!("POST group with member {m}"),
            &answer,
            400,
            Some("invalidValue"),
        );
        let answer = app
            .scim(
                Method::PATCH,
                &team_url,
                &d.token,
                Some(&patch(json!([
                    {"op": "replace", "path": "displayName", "value": "renamed"},
                    {"op": "add", "path": "members", "value": [{"value": bob}, {"value": m}]}
                ]))),
            )
            .await;
        assert_error(
            &format!("PATCH group with member {m}"),
            &answer,
            400,
            Some("invalidValue"),
        );
        let answer = app
            .scim(
                Method::PUT,
                &team_url,
                &d.token,
                Some(&json!({"displayName": "renamed", "members": [{"value": m}]})),
            )
            .await;
        assert_error(
            &format!("PUT group with member {m}"),
            &answer,
            400,
            Some("invalidValue"),
        );
    }

    // A body over the limit.
    let mut big = user_body("big");
    big["title"] = json!("x".repeat(5000));
    for (method, url) in [
        (Method::POST, &users),
        (Method::PUT, &ann_url),
        (Method::PATCH, &ann_url),
    ] {
        let answer = app.scim(method.clone(), url, &d.token, Some(&big)).await;
        assert_error(&format!("{method} too big"), &answer, 413, None);
        // Without the token the body is not even read: 401, not 413.
        let answer = app
            .scim(method.clone(), url, &other.token, Some(&big))
            .await;
        assert_error(
            &format!("{method} too big, wrong token"),
            &answer,
            401,
            None,
        );
    }

    // Unknown endpoints and resources: 404; a method an endpoint does not answer: 405.
    for url in [
        format!("{}/Nope", d.url),
        format!("{}/Users/{ann}/extra", d.url),
        format!("{}/Schemas/urn:nope", d.url),
        format!("{}/ServiceProviderConfig/extra", d.url),
        format!("{}/Schemas/a/b", d.url),
        format!("{}/ResourceTypes/Nope", d.url),
        format!("{users}/{}", uuid::Uuid::now_v7()),
        format!("{users}/not-a-uuid"),
        format!("{groups}/{ann}"),
        format!("{users}/{team}"),
    ] {
        let answer = app.scim(Method::GET, &url, &d.token, None).await;
        assert_error(&format!("GET {url}"), &answer, 404, None);
    }
    for (method, url, allow) in [
        (Method::DELETE, users.clone(), "GET, POST"),
        (Method::PUT, groups.clone(), "GET, POST"),
        (Method::PATCH, users.clone(), "GET, POST"),
        (Method::POST, ann_url.clone(), "GET, PUT, PATCH, DELETE"),
        (Method::HEAD, team_url.clone(), "GET, PUT, PATCH, DELETE"),
        (Method::GET, format!("{users}/.search"), "POST"),
        (Method::GET, format!("{}/.search", d.url), "POST"),
        (
            Method::POST,
            format!("{}/ServiceProviderConfig", d.url),
            "GET",
        ),
        (Method::DELETE, format!("{}/Schemas", d.url), "GET"),
        (Method::PUT, format!("{}/ResourceTypes/User", d.url), "GET"),
    ] {
        let answer = app.scim(method.clone(), &url, &d.token, None).await;
        assert_eq!(answer.1["allow"], allow, "{method} {url}: Allow");
        if method == Method::HEAD {
            assert_eq!(answer.0, 405);
        } else {
            assert_error(&format!("{method} {url}"), &answer, 405, None);
        }
    }

    assert_eq!(
        everything(&app, ORG_A, &d).await,
        before,
        "a refusal changed something"
    );

    // If-None-Match with the current version: 304; If-Match with it: the change is made.
    let (status, headers, got) = app.scim(Method::GET, &ann_url, &d.token, None).await;
    assert_eq!(status, 200);
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(got["meta"]["version"], etag);
    let (status, headers, body) = app
        .scim_raw(
            Method::GET,
            &ann_url,
            auth,
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(status, 304, "{body}");
    assert_eq!(headers["etag"].to_str().unwrap(), etag);
    let (status, _, body) = app
        .scim_raw(
            Method::GET,
            &ann_url,
            auth,
            None,
            &[("if-none-match", "W/\"0000000000000000\"")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], ann);
    let body = serde_json::to_vec(&patch(
        json!([{"op": "replace", "path": "active", "value": false}]),
    ))
    .unwrap();
    let (status, headers, body) = app
        .scim_raw(
            Method::PATCH,
            &ann_url,
            auth,
            Some(body),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], false);
    let new_etag = headers["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    // The old version no longer matches anything.
    let answer = app
        .scim_raw(Method::DELETE, &ann_url, auth, None, &[("if-match", &etag)])
        .await;
    assert_error("DELETE with the old version", &answer, 412, None);
    let (status, _, _) = app
        .scim_raw(
            Method::GET,
            &ann_url,
            auth,
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(status, 200, "the old version is not current");
    let body = serde_json::to_vec(&user_body("ann")).unwrap();
    let (status, headers, body) = app
        .scim_raw(
            Method::PUT,
            &ann_url,
            auth,
            Some(body),
            &[("if-match", &new_etag)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], true);
    let current = headers["etag"].to_str().unwrap().to_owned();
    let (status, _, _) = app
        .scim_raw(
            Method::DELETE,
            &ann_url,
            auth,
            None,
            &[("if-match", &current)],
        )
        .await;
    assert_eq!(status, 204);
    let (_, _, t) = app.scim(Method::GET, &team_url, &d.token, None).await;
    let team_etag = t["meta"]["version"].as_str().unwrap().to_owned();
    let (status, _, _) = app
        .scim_raw(
            Method::DELETE,
            &team_url,
            auth,
            None,
            &[("if-match", &team_etag)],
        )
        .await;
    assert_eq!(status, 204);
    let (_, list) = app
        .get_json(
            &format!("/api/directories/{}/users", d.id),
            &token_for(ORG_A),
        )
        .await;
    assert_eq!(emails(&list), ["bob@example.test"]);
    let (_, dd) = app
        .get_json(&format!("/api/directories/{}", d.id), &token_for(ORG_A))
        .await;
    assert_eq!(
        (dd["user_count"].clone(), dd["group_count"].clone()),
        (json!(1), json!(0))
    );
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).unwrap()[1..].to_owned()
}

#[tokio::test]
async fn a_list_pages_through_every_match_and_counts_them_all() {
    let app = spawn_app().await;
    let d = app.scim_directory(ORG_A, "generic").await;
    for i in 1..=25 {
        new_user(&app, &d, &format!("user{i:02}")).await;
    }
    let names = |list: &Value| -> Vec<String> {
        list["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["userName"].as_str().unwrap().to_owned())
            .collect()
    };
    let expect = |from: usize, to: usize| -> Vec<String> {
        (from..=to).map(|i| format!("user{i:02}")).collect()
    };
    let get = |query: &str| {
        let url = format!("{}/Users{query}", d.url);
        let token = d.token.clone();
        let app = &app;
        async move {
            let (status, _, list) = app.scim(Method::GET, &url, &token, None).await;
            assert_eq!(status, 200, "{url}: {list}");
            list
        }
    };

    let all = get("").await;
    assert_eq!(all["totalResults"], 25);
    assert_eq!(all["itemsPerPage"], 25);
    assert_eq!(all["startIndex"], 1);
    assert_eq!(names(&all), expect(1, 25));

    let page = get("?startIndex=11&count=10").await;
    assert_eq!(page["totalResults"], 25, "the total, not the page size");
    assert_eq!(page["itemsPerPage"], 10);
    assert_eq!(page["startIndex"], 11);
    assert_eq!(names(&page), expect(11, 20));

    let last = get("?startIndex=21&count=10").await;
    assert_eq!(
        (last["totalResults"].clone(), last["itemsPerPage"].clone()),
        (json!(25), json!(5))
    );
    assert_eq!(names(&last), expect(21, 25));

    let past = get("?startIndex=26&count=10").await;
    assert_eq!(past["totalResults"], 25);
    assert_eq!(names(&past), Vec::<String>::new());

    let none = get("?count=0").await;
    assert_eq!(none["totalResults"], 25);
    assert_eq!(none["Resources"], json!([]));

    // A filter the index cannot answer, then paged: the total counts every match.
    let filtered = get("?filter=userName%20sw%20%22user1%22&startIndex=3&count=4").await;
    assert_eq!(filtered["totalResults"], 10);
    assert_eq!(names(&filtered), expect(12, 15));
    let zero = get("?filter=userName%20sw%20%22user1%22&count=0").await;
    assert_eq!(
        (zero["totalResults"].clone(), zero["Resources"].clone()),
        (json!(10), json!([]))
    );
    // An indexed one.
    let one = get("?filter=userName%20eq%20%22USER07%22&startIndex=1&count=100").await;
    assert_eq!(one["totalResults"], 1);
    assert_eq!(names(&one), ["user07"]);
    let or = get("?filter=userName%20eq%20%22user07%22%20or%20userName%20eq%20%22user08%22&startIndex=2&count=5").await;
    assert_eq!(or["totalResults"], 2);
    assert_eq!(names(&or), ["user08"]);

    // The same through POST .search.
    let (status, _, search) = app
        .scim(
            Method::POST,
            &format!("{}/Users/.search", d.url),
            &d.token,
            Some(&json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": "userName sw \"user2\"",
                "startIndex": 2,
                "count": 3
            })),
        )
        .await;
    assert_eq!(status, 200, "{search}");
    assert_eq!(search["totalResults"], 6);
    assert_eq!(names(&search), expect(21, 23));
}

#[tokio::test]
async fn scim_data_and_tokens_survive_a_restart() {
    let app = spawn_app().await;
    let d = app.scim_directory(ORG_A, "okta").await;
    let ann = new_user(&app, &d, "ann").await;
    let bob = new_user(&app, &d, "bob").await;
    let carl = new_user(&app, &d, "carl").await;
    let (status, _, _) = app
        .scim(
            Method::PATCH,
            &format!("{}/Users/{carl}", d.url),
            &d.token,
            Some(&json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "active", "value": false}]})),
        )
        .await;
    assert_eq!(status, 200);
    let team = new_group(&app, &d, "team", &[&ann, &bob]).await;
    let solo = new_group(&app, &d, "solo", &[&carl]).await;
    let paths = [
        "/Users".to_owned(),
        "/Groups".to_owned(),
        format!("/Users/{ann}"),
        format!("/Users/{carl}"),
        format!("/Groups/{team}"),
        format!("/Groups/{solo}"),
        "/Users?filter=userName%20eq%20%22bob%22".to_owned(),
        "/Groups?filter=displayName%20eq%20%22team%22&excludedAttributes=members".to_owned(),
    ];
    async fn answers(app: &TestApp, d: &ScimDir, paths: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for p in paths {
            let (status, headers, body) = app
                .scim(Method::GET, &format!("{}{p}", d.url), &d.token, None)
                .await;
            assert_eq!(status, 200, "{p}: {body}");
            let etag = headers.get("etag").map(|e| e.to_str().unwrap().to_owned());
            // The base URL holds the port, which a restart changes.
            out.push(format!("{status} {etag:?} {body}").replace(&app.base, "BASE"));
        }
        out.extend(
            everything(app, ORG_A, d)
                .await
                .iter()
                .map(|v| v.to_string().replace(&app.base, "BASE")),
        );
        out
    }
    let before = answers(&app, &d, &paths).await;
    assert_eq!(
        member_values(
            &app.scim(
                Method::GET,
                &format!("{}/Groups/{team}", d.url),
                &d.token,
                None
            )
            .await
            .2
        ),
        {
            let mut v = vec![ann.clone(), bob.clone()];
            v.sort();
            v
        }
    );

    let app = app.restart().await;
    let d = ScimDir {
        url: format!("{}/scim/v2/{}", app.base, d.id),
        ..d
    };
    assert_eq!(answers(&app, &d, &paths).await, before);

    // A token rotated, then a restart: the new one opens the directory, the old one does not.
    let rotated = app
        .directory_op(rollcall::scim::admin::DirectoryOp::RotateToken { id: d.id.clone() })
        .await
        .unwrap();
    let new_token = rotated["token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, d.token);
    let app = app.restart().await;
    let url = format!("{}/scim/v2/{}/Users", app.base, d.id);
    let answer = app.scim(Method::GET, &url, &d.token, None).await;
    assert_error("the old token after a restart", &answer, 401, None);
    let (status, _, list) = app.scim(Method::GET, &url, &new_token, None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["totalResults"], 3);
}

#[tokio::test]
async fn workos_webhooks_never_touch_a_scim_directory() {
    let app = spawn_app().await;
    let d = app.scim_directory(ORG_A, "okta").await;
    let ann = new_user(&app, &d, "ann").await;
    new_group(&app, &d, "team", &[&ann]).await;
    let (_, info) = app
        .get_json(&format!("/api/directories/{}", d.id), &token_for(ORG_A))
        .await;
    let workos_id = info["workos_directory_id"].as_str().unwrap().to_owned();
    assert!(workos_id.starts_with("scim_directory_"), "{info}");
    let before = everything(&app, ORG_A, &d).await;

    let events = [
        user_event(
            "created",
            user(&workos_id, "directory_user_x", "x@example.test", 5),
            5,
        ),
        user_event(
            "updated",
            user(&workos_id, "directory_user_x", "x@example.test", 6),
            6,
        ),
        group_event(
            "created",
            group(&workos_id, "directory_group_x", "Intruders", 7),
            7,
        ),
        envelope(
            "dsync.activated",
            directory(
                &workos_id,
                ORG_B,
                "Hijacked",
                "azure scim v2.0",
                "active",
                8,
            ),
            8,
        ),
        envelope(
            "dsync.updated",
            directory(
                &workos_id,
                ORG_A,
                "Renamed",
                "okta scim v2.0",
                "inactive",
                9,
            ),
            9,
        ),
        directory_deleted(&workos_id, ORG_A, 10),
    ];
    // Each is ignored or refused (a SCIM directory's id is no WorkOS id);
    // none changes anything.
    for e in &events {
        let resp = app.post_event(e).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status == 200 || status == 400, "{e}: {status} {text}");
        assert_eq!(everything(&app, ORG_A, &d).await, before, "after {e}");
    }
    assert_eq!(everything(&app, ORG_A, &d).await, before);
    let (_, list) = app.get_json("/api/directories", &token_for(ORG_B)).await;
    assert_eq!(list, json!([]), "no directory was made for another org");
}

// ---- the CLI, against the real binary --------------------------------------

fn rollcall(data: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("ROLLCALL_DATA")
        .env_remove("ROLLCALL_PUBLIC_URL")
        .env_remove("ROLLCALL_LISTEN")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// The one JSON value a successful `--json` command printed.
fn json_out(out: &Output) -> Value {
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        out.status.success(),
        "{}: {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "exactly one line: {stdout:?}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
}

fn refused(out: &Output, message: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "not refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains(message), "{message:?} not in {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_directory_cli_works_on_the_database_file_without_a_server() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("rollcall.redb");
    let created = json_out(&rollcall(
        &data,
        &[
            "directory",
            "create",
            "--org",
            "o",
            "--name",
            "n",
            "--provider",
            "entra",
            "--json",
            "--public-url",
            "https://scim.example.test",
        ],
        &[],
    ));
    assert_eq!(keys(&created), ["id", "scim_url", "token"]);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["scim_url"],
        format!("https://scim.example.test/scim/v2/{id}")
    );
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("rcs_") && token.len() > 40, "{token}");

    let second = json_out(&rollcall(
        &data,
        &[
            "directory",
            "create",
            "--org",
            "o2",
            "--name",
            "second",
            "--provider",
            "okta",
            "--json",
        ],
        &[("ROLLCALL_PUBLIC_URL", "https://env.example.test")],
    ));
    let second_id = second["id"].as_str().unwrap().to_owned();
    assert_eq!(
        second["scim_url"],
        format!("https://env.example.test/scim/v2/{second_id}")
    );

    let list = json_out(&rollcall(&data, &["directory", "list", "--json"], &[]));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["organization_id"], "o");
    assert_eq!(list[0]["name"], "n");
    assert_eq!(list[0]["type"], "azure_scim");
    assert_eq!(list[0]["user_count"], 0);
    assert_eq!(list[1]["id"], second_id);
    assert_eq!(list[1]["type"], "okta_scim");
    assert!(list.iter().all(|d| d.get("token").is_none()), "{list:?}");
    assert!(!serde_json::to_string(list).unwrap().contains(&token));

    let rotated = json_out(&rollcall(
        &data,
        &["directory", "rotate-token", &id, "--json"],
        &[],
    ));
    assert_eq!(rotated["id"], id);
    assert_ne!(rotated["token"], token);

    let deleted = json_out(&rollcall(
        &data,
        &["directory", "delete", &id, "--json"],
        &[],
    ));
    assert_eq!(deleted, json!({"deleted": id}));
    let list = json_out(&rollcall(&data, &["directory", "list", "--json"], &[]));
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], second_id);

    refused(
        &rollcall(
            &data,
            &[
                "directory",
                "create",
                "--org",
                "o",
                "--name",
                "n",
                "--provider",
                "ping",
                "--json",
            ],
            &[],
        ),
        "unknown provider",
    );
    refused(
        &rollcall(
            &data,
            &["directory", "create", "--org", " ", "--name", "n", "--json"],
            &[],
        ),
        "must not be empty",
    );
    refused(
        &rollcall(&data, &["directory", "delete", &id, "--json"], &[]),
        "not a SCIM directory",
    );
    refused(
        &rollcall(&data, &["directory", "rotate-token", "nope"], &[]),
        "not a directory id",
    );
    let list = json_out(&rollcall(&data, &["directory", "list", "--json"], &[]));
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "refusals created nothing"
    );
}

#[tokio::test]
async fn the_directory_cli_goes_through_a_running_server() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("db").join("rollcall.redb");
    let server = crate::process::Process::start(dir.path(), &data, &["--create"]);
    let client = reqwest::Client::new();
    let run = |args: Vec<String>| {
        let data = data.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            rollcall(&data, &args, &[])
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    let created = json_out(
        &run(args(&[
            "directory",
            "create",
            "--org",
            ORG_A,
            "--name",
            "Okta",
            "--provider",
            "okta",
            "--json",
            "--public-url",
            "https://id.example.test",
        ]))
        .await
        .unwrap(),
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(
        created["scim_url"],
        format!("https://id.example.test/scim/v2/{id}")
    );
    let users = format!("{}/scim/v2/{id}/Users", server.base);
    let scim = |token: String, method: Method, body: Option<Value>| {
        let req = client.request(method, &users).bearer_auth(token);
        let req = match body {
            Some(b) => req
                .header("content-type", "application/scim+json")
                .body(b.to_string()),
            None => req,
        };
        async move {
            let resp = req.send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = scim(token.clone(), Method::POST, Some(user_body("ann"))).await;
    assert_eq!(status, 201, "{body}");
    let char_get = |path: String, org: &str| {
        let req = client
            .get(format!("{}{path}", server.base))
            .bearer_auth(token_for(org));
        async move {
            let resp = req.send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, list) = char_get(format!("/api/directories/{id}/users"), ORG_A).await;
    assert_eq!(status, 200);
    assert_eq!(emails(&list), ["ann@example.test"]);

    // Rotation: the old token is refused from the moment the command returns.
    let rotated = json_out(
        &run(args(&["directory", "rotate-token", &id, "--json"]))
            .await
            .unwrap(),
    );
    let new_token = rotated["token"].as_str().unwrap().to_owned();
    let (status, body) = scim(token.clone(), Method::GET, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["status"], "401");
    let (status, body) = scim(new_token.clone(), Method::GET, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["totalResults"], 1);

    let list = json_out(&run(args(&["directory", "list", "--json"])).await.unwrap());
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["user_count"], 1);

    // A WorkOS directory is not the CLI's to delete.
    let body = serde_json::to_vec(&activated("directory_W", ORG_A, 1)).unwrap();
    let resp = client
        .post(format!("{}/webhooks/workos", server.base))
        .header("content-type", "application/json")
        .header(
            "WorkOS-Signature",
            sign_webhook(WEBHOOK_SECRET.as_bytes(), &body, now_ms()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, dirs) = char_get("/api/directories".to_owned(), ORG_A).await;
    let workos = dirs
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["workos_directory_id"] == "directory_W")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    refused(
        &run(args(&["directory", "delete", &workos])).await.unwrap(),
        "not a SCIM directory",
    );
    refused(
        &run(args(&["directory", "rotate-token", &workos]))
            .await
            .unwrap(),
        "not a SCIM directory",
    );
    refused(
        &run(args(&[
            "directory",
            "create",
            "--org",
            ORG_A,
            "--name",
            "x",
            "--provider",
            "azure-ad-b2c",
        ]))
        .await
        .unwrap(),
        "unknown provider",
    );
    refused(
        &run(args(&["directory", "create", "--org", "", "--name", "x"]))
            .await
            .unwrap(),
        "must not be empty",
    );
    let (status, _) = char_get(format!("/api/directories/{workos}"), ORG_A).await;
    assert_eq!(status, 200, "the WorkOS directory stays");

    // Deletion: the token stops working and the Char API forgets it.
    let deleted = json_out(
        &run(args(&["directory", "delete", &id, "--json"]))
            .await
            .unwrap(),
    );
    assert_eq!(deleted, json!({"deleted": id}));
    let (status, body) = scim(new_token.clone(), Method::GET, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = char_get(format!("/api/directories/{id}"), ORG_A).await;
    assert_eq!(status, 404);
    let (_, dirs) = char_get("/api/directories".to_owned(), ORG_A).await;
    assert_eq!(dirs.as_array().unwrap().len(), 1, "{dirs}");
    assert_eq!(dirs[0]["id"], workos);
    let list = json_out(&run(args(&["directory", "list", "--json"])).await.unwrap());
    assert_eq!(list, json!([]));

    // No token is ever logged, not even a refused one.
    let logs = server.logs_after_stop();
    assert!(
        logs.iter().any(|l| l.contains("SCIM directory created")),
        "{logs:?}"
    );
    for t in [&token, &new_token] {
        assert!(
            !logs.iter().any(|l| l.contains(t.as_str())),
            "a token in the logs"
        );
    }
}

#[tokio::test]
async fn renamed_and_deleted_names_are_free_again_and_lookups_follow() {
    let app = spawn_app().await;
    let d = app.scim_directory(ORG_A, "okta").await;
    let ann = new_user(&app, &d, "ann").await;
    let users = format!("{}/Users", d.url);
    let find = |filter: &str| {
        let url = format!("{users}?filter={}", urlencode(filter));
        let token = d.token.clone();
        let app = &app;
        async move {
            let (status, _, list) = app.scim(Method::GET, &url, &token, None).await;
            assert_eq!(status, 200, "{list}");
            list["Resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    // Rename through PUT: the old name, email and externalId find nothing.
    let mut renamed = user_body("anna");
    renamed["externalId"] = json!("ext-anna");
    let (status, _, _) = app
        .scim(
            Method::PUT,
            &format!("{users}/{ann}"),
            &d.token,
            Some(&renamed),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(find("userName eq \"ann\"").await, Vec::<String>::new());
    assert_eq!(
        find("emails.value eq \"ann@example.test\"").await,
        Vec::<String>::new()
    );
    assert_eq!(
        find("userName eq \"anna\"").await,
        std::slice::from_ref(&ann)
    );
    assert_eq!(
        find("externalId eq \"ext-anna\"").await,
        std::slice::from_ref(&ann)
    );
    assert_eq!(
        find("emails.value eq \"ANNA@example.test\"").await,
        std::slice::from_ref(&ann)
    );
    let (_, list) = app
        .get_json(
            &format!("/api/directories/{}/users?email=anna@example.test", d.id),
            &token_for(ORG_A),
        )
        .await;
    assert_eq!(emails(&list), ["anna@example.test"]);

    // The old name is free; so is a deleted user's.
    let second = new_user(&app, &d, "ann").await;
    assert_eq!(
        find("userName eq \"ann\"").await,
        std::slice::from_ref(&second)
    );
    let (status, _, _) = app
        .scim(Method::DELETE, &format!("{users}/{second}"), &d.token, None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(find("userName eq \"ann\"").await, Vec::<String>::new());
    let third = new_user(&app, &d, "ANN").await;
    assert_eq!(find("userName eq \"ann\"").await, [third]);

    // Group renames move the name lookup too.
    let g = new_group(&app, &d, "Before", &[]).await;
    let (status, _, _) = app
        .scim(
            Method::PATCH,
            &format!("{}/Groups/{g}", d.url),
            &d.token,
            Some(&json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "displayName", "value": "After"}]})),
        )
        .await;
    assert_eq!(status, 204, "a group PATCH answers without a body");
    for (name, want) in [("before", 0), ("AFTER", 1)] {
        let (_, _, list) = app
            .scim(
                Method::GET,
                &format!(
                    "{}/Groups?filter={}",
                    d.url,
                    urlencode(&format!("displayName eq \"{name}\""))
                ),
                &d.token,
                None,
            )
            .await;
        assert_eq!(list["totalResults"], want, "{name}: {list}");
    }
}

#[tokio::test]
async fn concurrent_creates_of_one_user_name_make_one_user() {
    let app = spawn_app().await;
    let d = app.scim_directory(ORG_A, "okta").await;
    let url = format!("{}/Users", d.url);
    let answers = futures_util::future::join_all((0..12).map(|i| {
        let body = user_body(if i % 2 == 0 { "same" } else { "SAME" });
        let (app, url, token) = (&app, url.clone(), d.token.clone());
        async move { app.scim(Method::POST, &url, &token, Some(&body)).await }
    }))
    .await;
    let created = answers.iter().filter(|a| a.0 == 201).count();
    assert_eq!(
        created,
        1,
        "{:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    for a in answers.iter().filter(|a| a.0 != 201) {
        assert_error("a concurrent duplicate", a, 409, Some("uniqueness"));
    }
    let (_, d2) = app
        .get_json(&format!("/api/directories/{}", d.id), &token_for(ORG_A))
        .await;
    assert_eq!(d2["user_count"], 1);
}

#[tokio::test]
async fn an_export_leaves_scim_directories_out_and_imports_whole() {
    let app = spawn_app().await;
    app.send_all(&[
        activated("directory_W", ORG_B, 1),
        user_event(
            "created",
            user("directory_W", "directory_user_w1", "w1@example.test", 2),
            2,
        ),
    ])
    .await;
    let d = app.scim_directory(ORG_A, "okta").await;
    let ann = new_user(&app, &d, "ann").await;
    new_group(&app, &d, "team", &[&ann]).await;
    let (dir, settings) = app.stop().await;

    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--data")
        .arg(&settings.data)
        .arg("export")
        .env_remove("ROLLCALL_DATA")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("exported 1 directories, 1 users, 0 groups, 0 memberships"),
        "{stderr}"
    );
    assert!(stderr.contains("left out 1 SCIM directories"), "{stderr}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        !text.contains("scim_directory_") && !text.contains(&ann),
        "{text}"
    );

    let file = dir.path().join("export.ndjson");
    std::fs::write(&file, &text).unwrap();
    let other = tempfile::TempDir::new().unwrap();
    let s2 = crate::helpers::settings(other.path());
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--data")
        .arg(&s2.data)
        .arg("import")
        .arg(&file)
        .env_remove("ROLLCALL_DATA")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the export imports: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let original = spawn_with(settings, dir).await;
    let imported = spawn_with(s2, std::sync::Arc::new(other)).await;
    assert_same_answers(
        &every_answer(&original.client, &original.base, &[ORG_B]).await,
        &every_answer(&imported.client, &imported.base, &[ORG_B]).await,
        "the WorkOS directory after export and import",
    );
    let (_, list) = imported
        .get_json("/api/directories", &token_for(ORG_A))
        .await;
    assert_eq!(list, json!([]));
    // The original still holds the SCIM directory.
    let (_, list) = original
        .get_json("/api/directories", &token_for(ORG_A))
        .await;
    assert_eq!(list[0]["id"], d.id);
}

#[tokio::test]
async fn paging_parameters_out_of_range_are_bounded_and_bad_ones_refused() {
    let app = spawn_app().await;
    let d = app.scim_directory(ORG_A, "okta").await;
    for i in 1..=3 {
        new_user(&app, &d, &format!("u{i}")).await;
    }
    for (query, start, items) in [
        ("?startIndex=0", 1, 3),
        ("?startIndex=-4&count=2", 1, 2),
        ("?count=-1", 1, 0),
        ("?count=5000", 1, 3),
        ("?StartIndex=2&COUNT=1", 2, 1),
    ] {
        let (status, _, list) = app
            .scim(
                Method::GET,
                &format!("{}/Users{query}", d.url),
                &d.token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{query}: {list}");
        assert_eq!(list["totalResults"], 3, "{query}");
        assert_eq!(list["startIndex"], start, "{query}: {list}");
        assert_eq!(list["itemsPerPage"], items, "{query}: {list}");
        assert_eq!(
            list["Resources"].as_array().unwrap().len(),
            items,
            "{query}"
        );
    }
    for (query, scim_type) in [
        ("?count=ten", "invalidValue"),
        ("?startIndex=1.5", "invalidValue"),
        ("?filter=%ZZ", "invalidFilter"),
    ] {
        let answer = app
            .scim(
                Method::GET,
                &format!("{}/Users{query}", d.url),
                &d.token,
                None,
            )
            .await;
        assert_error(query, &answer, 400, Some(scim_type));
    }
}

#[tokio::test]
async fn preconditions_take_weak_strong_and_star_tags() {
    let app = spawn_app().await;
    let d = app.scim_directory(ORG_A, "okta").await;
    let ann = new_user(&app, &d, "ann").await;
    let url = format!("{}/Users/{ann}", d.url);
    let bearer = format!("Bearer {}", d.token);
    let auth = Some(bearer.as_str());
    let (_, headers, _) = app.scim(Method::GET, &url, &d.token, None).await;
    let weak = headers["etag"].to_str().unwrap().to_owned();
    assert!(weak.starts_with("W/\""), "{weak}");
    let strong = weak.trim_start_matches("W/").to_owned();

    for tag in [strong.as_str(), "*", &format!("\"nope\", {weak}")] {
        let (status, _, _) = app
            .scim_raw(Method::GET, &url, auth, None, &[("if-none-match", tag)])
            .await;
        assert_eq!(status, 304, "If-None-Match: {tag}");
    }
    // A PATCH that changes nothing keeps the version.
    let same = serde_json::to_vec(&json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "replace", "path": "userName", "value": "ann"}]}))
    .unwrap();
    let (status, headers, _) = app
        .scim_raw(
            Method::PATCH,
            &url,
            auth,
            Some(same),
            &[("if-match", &strong)],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["etag"].to_str().unwrap(), weak);
    let body = serde_json::to_vec(&user_body("ann2")).unwrap();
    let (status, headers, _) = app
        .scim_raw(Method::PUT, &url, auth, Some(body), &[("if-match", "*")])
        .await;
    assert_eq!(status, 200);
    let next = headers["etag"].to_str().unwrap().to_owned();
    assert_ne!(next, weak);
    let (status, _, _) = app
        .scim_raw(
            Method::DELETE,
            &url,
            auth,
            None,
            &[("if-match", &format!("{weak}, {next}"))],
        )
        .await;
    assert_eq!(status, 204);
    let answer = app
        .scim_raw(Method::DELETE, &url, auth, None, &[("if-match", "*")])
        .await;
    assert_error("DELETE of a deleted user", &answer, 404, None);
}

#[tokio::test]
async fn a_backup_restored_elsewhere_keeps_scim_directories_and_their_tokens() {
    let app = spawn_app().await;
    let d = app.scim_directory(ORG_A, "jumpcloud").await;
    let ann = new_user(&app, &d, "ann").await;
    new_group(&app, &d, "team", &[&ann]).await;
    let copy = app.dir().path().join("copy.redb");
    let (dir, settings) = app.stop().await;
    let out = rollcall(&settings.data, &["backup", copy.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let other = tempfile::TempDir::new().unwrap();
    let s2 = crate::helpers::settings(other.path());
    let out = rollcall(&s2.data, &["restore", copy.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = json_out(&rollcall(&s2.data, &["directory", "list", "--json"], &[]));
    assert_eq!(list[0]["id"], d.id);
    assert_eq!(list[0]["type"], "jump_cloud_scim");
    assert_eq!(
        (
            list[0]["user_count"].clone(),
            list[0]["group_count"].clone()
        ),
        (json!(1), json!(1))
    );

    let restored = spawn_with(s2, std::sync::Arc::new(other)).await;
    let url = format!("{}/scim/v2/{}", restored.base, d.id);
    let (status, _, list) = restored
        .scim(Method::GET, &format!("{url}/Groups"), &d.token, None)
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        member_values(&list["Resources"][0]),
        std::slice::from_ref(&ann)
    );
    let (status, _, list) = restored
        .scim(
            Method::GET,
            &format!("{url}/Users?filter=userName%20eq%20%22ANN%22"),
            &d.token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["Resources"][0]["id"], ann);
    drop(dir);
}
