//! Opt-in cursor pages (`limit`, `after`, `Link`), filters, and the plain
//! array staying the default.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::*;
use crate::workos::*;

/// A directory with `n` users, every third one suspended.
fn users(n: i64) -> Vec<serde_json::Value> {
    let mut events = vec![activated("directory_A", ORG_A, 0)];
    for i in 0..n {
        let mut u = user(
            "directory_A",
            &format!("directory_user_{i:03}"),
            &format!("u{i:03}@acme.test"),
            i + 1,
        );
        if i % 3 == 0 {
            u["state"] = json!("suspended");
        }
        events.push(user_event("created", u, i + 1));
    }
    events
}

async fn directory_with_users(n: i64) -> (TestApp, String) {
    let app = spawn_app().await;
    let events = users(n);
    app.send_all(&events).await;
    let dir = directory_id(&app, ORG_A, "directory_A").await;
    (app, dir)
}

fn next_link(resp: &reqwest::Response) -> Option<String> {
    let link = resp.headers().get("link")?.to_str().unwrap().to_owned();
    let start = link.find('<')? + 1;
    let end = link.find('>')?;
    assert!(link.ends_with("rel=\"next\""), "{link}");
    Some(link[start..end].to_owned())
}

#[tokio::test]
async fn following_next_links_walks_every_user_once_in_order() {
    let (app, dir) = directory_with_users(23).await;
    let token = token_for(ORG_A);
    let (_, all) = app
        .get_json(&format!("/api/directories/{dir}/users"), &token)
        .await;

    let mut seen = Vec::new();
    let mut path = Some(format!("/api/directories/{dir}/users?limit=5"));
    let mut pages = 0;
    while let Some(p) = path {
        let resp = app.get(&p, Some(&token)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        path = next_link(&resp);
        let page: Value = resp.json().await.unwrap();
        assert!(page.as_array().unwrap().len() <= 5);
        seen.extend(page.as_array().unwrap().iter().cloned());
        pages += 1;
    }

    assert_eq!(pages, 5);
    assert_eq!(
        Value::Array(seen),
        all,
        "pages concatenate to the plain list"
    );
}

#[tokio::test]
async fn the_plain_list_has_no_link_and_an_exact_last_page_has_none_either() {
    let (app, dir) = directory_with_users(10).await;
    let token = token_for(ORG_A);

    let plain = app
        .get(&format!("/api/directories/{dir}/users"), Some(&token))
        .await;
    let exact = app
        .get(
            &format!("/api/directories/{dir}/users?limit=10"),
            Some(&token),
        )
        .await;

    assert!(plain.headers().get("link").is_none());
    assert!(exact.headers().get("link").is_none());
    assert_eq!(
        exact
            .json::<Value>()
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        10
    );
}

#[tokio::test]
async fn state_and_email_filters_combine_with_pages() {
    let (app, dir) = directory_with_users(12).await;
    let token = token_for(ORG_A);

    let (_, inactive) = app
        .get_json(
            &format!("/api/directories/{dir}/users?state=inactive"),
            &token,
        )
        .await;
    let (_, active) = app
        .get_json(
            &format!("/api/directories/{dir}/users?state=active&limit=100"),
            &token,
        )
        .await;
    let first = app
        .get(
            &format!("/api/directories/{dir}/users?state=inactive&limit=2"),
            Some(&token),
        )
        .await;
    let next = next_link(&first).expect("more inactive users remain");
    let (_, by_email) = app
        .get_json(
            &format!("/api/directories/{dir}/users?email=U005@ACME.test"),
            &token,
        )
        .await;

    assert_eq!(
        emails(&inactive),
        [
            "u000@acme.test",
            "u003@acme.test",
            "u006@acme.test",
            "u009@acme.test"
        ]
    );
    assert_eq!(active.as_array().unwrap().len(), 8);
    assert!(
        active
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["state"] == "active")
    );
    assert!(
        next.contains("state=inactive") && next.contains("limit=2"),
        "{next}"
    );
    let (_, second) = app.get_json(&next, &token).await;
    assert_eq!(emails(&second), ["u006@acme.test", "u009@acme.test"]);
    assert_eq!(emails(&by_email), ["u005@acme.test"]);
}

#[tokio::test]
async fn bad_page_parameters_are_400_naming_the_parameter() {
    let (app, dir) = directory_with_users(2).await;
    let token = token_for(ORG_A);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("after=not-a-uuid", "after"),
        ("after=", "after"),
        ("state=suspended", "state"),
        ("email=", "email"),
    ] {
        let (status, body) = app
            .get_json(&format!("/api/directories/{dir}/users?{query}"), &token)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["data"]["field"], field, "{query}");
    }
    let (status, body) = app
        .get_json(&format!("/api/directories/{dir}/groups?limit=0"), &token)
        .await;
    assert_eq!(
        (status, body["data"]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("limit"))
    );
}

#[tokio::test]
async fn groups_page_the_same_way() {
    let app = spawn_app().await;
    let mut events = vec![activated("directory_A", ORG_A, 0)];
    for i in 0..7 {
        events.push(group_event(
            "created",
            group(
                "directory_A",
                &format!("directory_group_{i}"),
                &format!("G{i}"),
                i + 1,
            ),
            i + 1,
        ));
    }
    app.send_all(&events).await;
    let dir = directory_id(&app, ORG_A, "directory_A").await;
    let token = token_for(ORG_A);

    let first = app
        .get(
            &format!("/api/directories/{dir}/groups?limit=4"),
            Some(&token),
        )
        .await;
    let next = next_link(&first).unwrap();
    let first: Value = first.json().await.unwrap();
    let (_, second) = app.get_json(&next, &token).await;

    let names: Vec<&str> = first
        .as_array()
        .unwrap()
        .iter()
        .chain(second.as_array().unwrap())
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["G0", "G1", "G2", "G3", "G4", "G5", "G6"]);
}

#[tokio::test]
async fn a_streamed_list_is_identical_to_a_rendered_one() {
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.stream_threshold = 5;
    let streaming = spawn_with(s, Arc::new(dir)).await;
    let (rendered, rendered_dir) = directory_with_users(40).await;
    streaming.send_all(&users(40)).await;
    let streamed_dir = directory_id(&streaming, ORG_A, "directory_A").await;

    assert_eq!(
        streamed_dir, rendered_dir,
        "ids derive from the WorkOS data"
    );

    let resp = streaming
        .get(
            &format!("/api/directories/{streamed_dir}/users"),
            Some(&token_for(ORG_A)),
        )
        .await;
    // Streamed from a body file: chunked while the file is being written,
    // with its length once it is complete.
    assert!(
        resp.headers().get("transfer-encoding").is_some()
            || resp.headers().get("content-length").is_some()
    );
    let streamed_tag = resp.headers()["etag"].clone();
    let streamed = resp.bytes().await.unwrap();
    let whole = rendered
        .get(
            &format!("/api/directories/{rendered_dir}/users"),
            Some(&token_for(ORG_A)),
        )
        .await;
    assert_eq!(whole.headers()["etag"], streamed_tag, "the same ETag");
    let whole = whole.bytes().await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&streamed)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        40
    );
    assert!(streamed == whole, "byte for byte the same list");
}

#[tokio::test]
async fn a_streamed_list_follows_every_write() {
    // Each write retires the directory's body file; the next list renders
    // a new one. (Retiring the last reference to a body once deadlocked the
    // body-file registry: every later list of any directory hung.)
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.stream_threshold = 5;
    let app = spawn_with(s, Arc::new(dir)).await;
    app.send_all(&users(20)).await;
    let id = directory_id(&app, ORG_A, "directory_A").await;
    let path = format!("/api/directories/{id}/users");
    for round in 0..4i64 {
        let n = 20 + round;
        let listed = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            app.get_json(&path, &token_for(ORG_A)),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: the list never came"));
        assert_eq!(listed.0, StatusCode::OK);
        let got = emails(&listed.1);
        assert_eq!(got.len() as i64, n, "round {round}");
        assert_eq!(got.last().unwrap(), &format!("u{:03}@acme.test", n - 1));
        let next = user(
            "directory_A",
            &format!("directory_user_{n:03}"),
            &format!("u{n:03}@acme.test"),
            n + 1,
        );
        app.send_all(&[user_event("created", next, n + 1)]).await;
    }
}
