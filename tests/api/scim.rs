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

fn user_body(name: &str, filler: usize) -> serde_json::Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "title": "x".repeat(filler),
    })
}

#[tokio::test]
async fn a_resource_over_the_size_bound_is_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let dir = app.scim_directory("org_big", "generic").await;
    let users = format!("{}/Users", dir.url);
    let (status, _, err) = app
        .scim(
            Method::POST,
            &users,
            &dir.token,
            Some(&user_body("big@x.test", 70 * 1024)),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["scimType"], "invalidValue");
    assert_eq!(err["status"], "400");
    let (_, _, list) = app
        .scim(Method::GET, &format!("{users}?count=0"), &dir.token, None)
        .await;
    assert_eq!(list["totalResults"], 0);
}

#[tokio::test]
async fn a_page_past_the_byte_budget_ends_early_and_paging_reaches_every_user() {
    let app = spawn_app().await;
    let dir = app.scim_directory("org_budget", "generic").await;
    let users = format!("{}/Users", dir.url);
    // 300 users of ~60 KiB: ~18 MiB, over the 16 MiB a page may hold.
    for i in 0..300 {
        let (status, _, body) = app
            .scim(
                Method::POST,
                &users,
                &dir.token,
                Some(&user_body(&format!("u{i:03}@x.test"), 60 * 1024)),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let mut seen = Vec::new();
    let mut start = 1;
    loop {
        let (status, _, page) = app
            .scim(
                Method::GET,
                &format!("{users}?startIndex={start}&count=1000&attributes=userName"),
                &dir.token,
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(page["totalResults"], 300, "every match is counted");
        let got = page["Resources"].as_array().unwrap();
        assert_eq!(page["itemsPerPage"], got.len());
        assert_eq!(page["startIndex"], start);
        if got.is_empty() {
            break;
        }
        assert!(got.len() < 300, "the first page ended early: {}", got.len());
        seen.extend(
            got.iter()
                .map(|u| u["userName"].as_str().unwrap().to_owned()),
        );
        start += got.len();
    }
    let expected: Vec<String> = (0..300).map(|i| format!("u{i:03}@x.test")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_request_without_the_token_is_refused_before_its_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let dir = app.scim_directory("org_unread", "okta").await;
    for auth in ["", "Authorization: Bearer rcs_not-the-token\r\n"] {
        let mut conn = tokio::net::TcpStream::connect(app.addr()).await.unwrap();
        let head = format!(
            "POST /scim/v2/{}/Users HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/scim+json\r\nContent-Length: 100000000\r\n\r\n{{",
            dir.id
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut answer))
            .await
            .expect("answered without waiting for the 100 MB body")
            .unwrap();
        let text = String::from_utf8_lossy(&answer[..n]);
        assert!(text.starts_with("HTTP/1.1 401"), "{text}");
        assert!(text.contains("application/scim+json"), "{text}");
        assert!(text.contains("www-authenticate: Bearer"), "{text}");
    }
}

#[tokio::test]
async fn an_export_leaves_scim_directories_out_and_says_so() {
    let app = spawn_app().await;
    let dir = app.scim_directory("org_export", "entra").await;
    let (status, _, _) = app
        .scim(
            Method::POST,
            &format!("{}/Users", dir.url),
            &dir.token,
            Some(&user_body("kept@x.test", 10)),
        )
        .await;
    assert_eq!(status, 201);
    let data = app.db_path.clone();
    let (report, out) = tokio::task::spawn_blocking(move || {
        let server = rollcall::control::connect(&data).unwrap().unwrap();
        let mut out = Vec::new();
        let report = rollcall::control::request_export(server, &mut out, |_| {}).unwrap();
        (report, out)
    })
    .await
    .unwrap();
    assert_eq!(report.scim_directories_skipped, 1);
    assert_eq!(report.directories, 0);
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("scim_directory_"), "{text}");
    assert!(!text.contains("kept@x.test"), "{text}");
}

async fn members_of(app: &TestApp, dir: &ScimDir, group: &str) -> Vec<String> {
    let (status, _, g) = app
        .scim(
            Method::GET,
            &format!("{}/Groups/{group}", dir.url),
            &dir.token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{g}");
    let mut ids: Vec<String> = g["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["value"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[tokio::test]
async fn member_patches_touch_only_the_named_members_and_answer_204() {
    let app = spawn_app().await;
    let dir = app.scim_directory("org_members", "entra").await;
    let mut users = Vec::new();
    for i in 0..40 {
        let (_, _, u) = app
            .scim(
                Method::POST,
                &format!("{}/Users", dir.url),
                &dir.token,
                Some(&user_body(&format!("m{i}@x.test"), 0)),
            )
            .await;
        users.push(u["id"].as_str().unwrap().to_owned());
    }
    let first: Vec<_> = users[..30].iter().map(|u| json!({"value": u})).collect();
    let (status, headers, g) = app
        .scim(
            Method::POST,
            &format!("{}/Groups", dir.url),
            &dir.token,
            Some(&json!({"displayName": "Big", "members": first})),
        )
        .await;
    assert_eq!(status, 201);
    let gid = g["id"].as_str().unwrap().to_owned();
    let v1 = headers["etag"].to_str().unwrap().to_owned();
    let group = format!("{}/Groups/{gid}", dir.url);
    let patch = |ops: serde_json::Value| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});

    // Entra: add two, remove one by value array (only it), in one request.
    let (status, headers, body) = app
        .scim(
            Method::PATCH,
            &group,
            &dir.token,
            Some(&patch(json!([
                {"op": "Add", "path": "members", "value": [{"value": users[30]}, {"value": users[31]}]},
                {"op": "Remove", "path": "members", "value": [{"value": users[0]}]}
            ]))),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let v2 = headers["etag"].to_str().unwrap().to_owned();
    assert_ne!(v1, v2, "the group's version moved on");
    let mut expected: Vec<String> = users[1..32].to_vec();
    expected.sort();
    assert_eq!(members_of(&app, &dir, &gid).await, expected);

    // Okta: remove by filter; removing one that is not there changes nothing.
    let (status, _, _) = app
        .scim(
            Method::PATCH,
            &group,
            &dir.token,
            Some(&patch(
                json!([{"op": "remove", "path": format!("members[value eq \"{}\"]", users[1])}]),
            )),
        )
        .await;
    assert_eq!(status, 204);
    expected.retain(|u| u != &users[1]);
    assert_eq!(members_of(&app, &dir, &gid).await, expected);
    let (status, headers, _) = app
        .scim(
            Method::PATCH,
            &group,
            &dir.token,
            Some(&patch(
                json!([{"op": "remove", "path": format!("members[value eq \"{}\"]", users[39])}]),
            )),
        )
        .await;
    assert_eq!(status, 204);
    let v3 = headers["etag"].to_str().unwrap().to_owned();
    let (_, headers, _) = app.scim(Method::GET, &group, &dir.token, None).await;
    assert_eq!(
        headers["etag"].to_str().unwrap(),
        v3,
        "a no-op kept the version"
    );

    // An unknown member is refused and nothing of the request is applied.
    let (status, _, err) = app
        .scim(
            Method::PATCH,
            &group,
            &dir.token,
            Some(&patch(json!([
                {"op": "add", "path": "members", "value": [{"value": users[35]}, {"value": "not-a-user"}]}
            ]))),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["scimType"], "invalidValue");
    assert_eq!(members_of(&app, &dir, &gid).await, expected);

    // Asking for attributes gets the resource back, members and all.
    let (status, _, body) = app
        .scim(
            Method::PATCH,
            &format!("{group}?attributes=members,displayName"),
            &dir.token,
            Some(&patch(
                json!([{"op": "add", "path": "members", "value": [{"value": users[35]}]}]),
            )),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    expected.push(users[35].clone());
    expected.sort();
    let mut got: Vec<String> = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    assert_eq!(got, expected);

    // Deleting a user takes it out of the group and moves the version on.
    let (_, before, _) = app.scim(Method::GET, &group, &dir.token, None).await;
    let (status, _, _) = app
        .scim(
            Method::DELETE,
            &format!("{}/Users/{}", dir.url, users[2]),
            &dir.token,
            None,
        )
        .await;
    assert_eq!(status, 204);
    expected.retain(|u| u != &users[2]);
    assert_eq!(members_of(&app, &dir, &gid).await, expected);
    let (_, after, _) = app.scim(Method::GET, &group, &dir.token, None).await;
    assert_ne!(before["etag"], after["etag"]);
}

#[tokio::test]
async fn paging_after_a_change_in_between_still_counts_from_the_start() {
    let app = spawn_app().await;
    let dir = app.scim_directory("org_pages", "okta").await;
    let users = format!("{}/Users", dir.url);
    let mut ids = Vec::new();
    for i in 0..25 {
        let (_, _, u) = app
            .scim(
                Method::POST,
                &users,
                &dir.token,
                Some(&user_body(&format!("p{i:02}@x.test"), 0)),
            )
            .await;
        ids.push(u["id"].as_str().unwrap().to_owned());
    }
    let page = |start: usize| {
        let url = format!("{users}?startIndex={start}&count=10&attributes=userName");
        let app = &app;
        let token = dir.token.clone();
        async move {
            let (_, _, p) = app.scim(Method::GET, &url, &token, None).await;
            p["Resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    // Twice through: the second time the pages start where the first ended.
    for _ in 0..2 {
        let mut all = Vec::new();
        for start in [1, 11, 21] {
            all.extend(page(start).await);
        }
        assert_eq!(all, ids);
    }
    // A user deleted between pages: index 11 is now the 12th user created.
    assert_eq!(page(1).await, ids[..10]);
    let (status, _, _) = app
        .scim(
            Method::DELETE,
            &format!("{users}/{}", ids[3]),
            &dir.token,
            None,
        )
        .await;
    assert_eq!(status, 204);
    ids.remove(3);
    assert_eq!(page(11).await, ids[10..20]);
    assert_eq!(page(21).await, ids[20..]);
}

#[tokio::test]
async fn a_user_that_never_said_active_is_active_to_filters_as_in_char() {
    let app = spawn_app().await;
    let dir = app.scim_directory("org_active", "generic").await;
    let users = format!("{}/Users", dir.url);
    for (name, active) in [("quiet", None), ("on", Some(true)), ("off", Some(false))] {
        let mut body = user_body(&format!("{name}@x.test"), 0);
        if let Some(a) = active {
            body["active"] = json!(a);
        }
        let (status, _, _) = app
            .scim(Method::POST, &users, &dir.token, Some(&body))
            .await;
        assert_eq!(status, 201);
    }
    let names = |filter: &str| {
        let url = format!("{users}?filter={}", filter.replace(' ', "%20"));
        let app = &app;
        let token = dir.token.clone();
        async move {
            let (_, _, list) = app.scim(Method::GET, &url, &token, None).await;
            let mut n: Vec<String> = list["Resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["userName"].as_str().unwrap().to_owned())
                .collect();
            n.sort();
            n
        }
    };
    assert_eq!(names("active eq true").await, ["on@x.test", "quiet@x.test"]);
    assert_eq!(names("active eq false").await, ["off@x.test"]);
    let (_, list) = app
        .get_json(
            &format!("/api/directories/{}/users?state=active", dir.id),
            &token_for("org_active"),
        )
        .await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
}

#[test]
fn directory_create_refuses_a_public_url_it_could_not_print_before_creating_anything() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("rollcall.redb");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("--data")
            .arg(&data)
            .args(args)
            .env_remove("ROLLCALL_PUBLIC_URL")
            .env_remove("ROLLCALL_DATA")
            .output()
            .unwrap()
    };
    let out = run(&[
        "directory",
        "create",
        "--org",
        "org_x",
        "--name",
        "X",
        "--public-url",
        "rollcall.local",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ROLLCALL_PUBLIC_URL"), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(!data.exists(), "nothing was created");
    let out = run(&[
        "directory",
        "create",
        "--org",
        "org_x",
        "--name",
        "X",
        "--json",
        "--public-url",
        "https://rollcall.example.com/",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        made["scim_url"],
        format!(
            "https://rollcall.example.com/scim/v2/{}",
            made["id"].as_str().unwrap()
        )
    );
}

#[tokio::test]
async fn work_a_token_holder_could_make_unbounded_is_refused_before_anything_changes() {
    let app = spawn_app().await;
    let dir = app.scim_directory("org_bounds", "entra").await;
    let users = format!("{}/Users", dir.url);
    let count = || {
        let url = format!("{users}?count=0");
        let token = dir.token.clone();
        let app = &app;
        async move { app.scim(Method::GET, &url, &token, None).await.2["totalResults"].clone() }
    };

    // Too many attribute names: refused, and a POST asking for them stores nothing.
    let names = (0..101)
        .map(|i| format!("a{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let (status, _, err) = app
        .scim(
            Method::GET,
            &format!("{users}?attributes={names}"),
            &dir.token,
            None,
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["scimType"], "invalidValue");
    let (status, _, _) = app
        .scim(
            Method::POST,
            &format!("{users}?excludedAttributes={names}"),
            &dir.token,
            Some(&user_body("never@x.test", 0)),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(count().await, 0, "nothing was created");

    // One attribute in two capitals: refused (it would dodge uniqueness).
    let (status, _, _) = app
        .scim(
            Method::POST,
            &users,
            &dir.token,
            Some(&user_body("bob@x.test", 0)),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _, err) = app
        .scim(
            Method::POST,
            &users,
            &dir.token,
            Some(&json!({"USERNAME": "other", "userName": "bob@x.test"})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["scimType"], "invalidSyntax");
    let (status, _, _) = app
        .scim(
            Method::POST,
            &users,
            &dir.token,
            Some(&json!({"userName": "n@x.test", "name": {"givenName": "a", "GIVENNAME": "b"}})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(count().await, 1);

    // A PATCH beyond member changes: at most 100 operations, 64 KiB of values.
    let (_, _, list) = app
        .scim(
            Method::GET,
            &format!("{users}?filter=userName%20eq%20%22bob@x.test%22"),
            &dir.token,
            None,
        )
        .await;
    let bob = format!("{users}/{}", list["Resources"][0]["id"].as_str().unwrap());
    let (_, before, _) = app.scim(Method::GET, &bob, &dir.token, None).await;
    let ops: Vec<_> = (0..101)
        .map(|i| json!({"op": "add", "path": "nickName", "value": format!("n{i}")}))
        .collect();
    let patch = |ops: Vec<serde_json::Value>| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
    let (status, _, err) = app
        .scim(Method::PATCH, &bob, &dir.token, Some(&patch(ops)))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["scimType"], "tooMany");
    let big: Vec<_> = (0..40_000).map(|i| json!(i)).collect();
    let (status, _, err) = app
        .scim(
            Method::PATCH,
            &bob,
            &dir.token,
            Some(&patch(vec![
                json!({"op": "add", "path": "x509Certificates", "value": big}),
                json!({"op": "remove", "path": "x509Certificates"}),
            ])),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["scimType"], "invalidValue");
    let (_, after, _) = app.scim(Method::GET, &bob, &dir.token, None).await;
    assert_eq!(before["etag"], after["etag"], "bob is unchanged");
}
