//! Cached list bodies never outlive a write; ETags answer 304.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;
use crate::workos::*;

#[tokio::test]
async fn a_cached_list_reflects_every_acknowledged_write() {
    let app = spawn_app().await;
    app.send_all(&[activated("directory_A", ORG_A, 0)]).await;
    let dir = directory_id(&app, ORG_A, "directory_A").await;
    let path = format!("/api/directories/{dir}/users");
    let token = token_for(ORG_A);

    for i in 0..10i64 {
        let email = format!("u{i}@acme.test");
        app.send_all(&[user_event(
            "created",
            user("directory_A", &format!("directory_user_{i}"), &email, i + 1),
            i + 1,
        )])
        .await;
        // Twice: the second answer comes from the cache.
        for _ in 0..2 {
            let (_, list) = app.get_json(&path, &token).await;
            assert_eq!(
                emails(&list).last().map(String::as_str),
                Some(email.as_str()),
                "after write {i}"
            );
            assert_eq!(list.as_array().unwrap().len() as i64, i + 1);
        }
    }
    let renamed = with(
        user("directory_A", "directory_user_0", "u0@acme.test", 50),
        "first_name",
        json!("Changed"),
    );
    app.send_all(&[user_event("updated", renamed, 50)]).await;
    let (_, list) = app.get_json(&path, &token).await;
    assert_eq!(list[0]["first_name"], "Changed");
}

#[tokio::test]
async fn etags_answer_304_until_the_directory_changes() {
    let app = spawn_app().await;
    app.send_all(&[
        activated("directory_A", ORG_A, 0),
        user_event(
            "created",
            user("directory_A", "directory_user_1", "a@acme.test", 1),
            1,
        ),
    ])
    .await;
    let dir = directory_id(&app, ORG_A, "directory_A").await;
    let url = format!("{}/api/directories/{dir}/users", app.base);
    let token = token_for(ORG_A);

    let first = app
        .client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let again = app
        .client
        .get(&url)
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    assert!(again.bytes().await.unwrap().is_empty());

    let paged = app
        .client
        .get(format!("{url}?limit=1"))
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        paged.status(),
        StatusCode::OK,
        "a different query has a different tag"
    );

    app.send_all(&[user_event(
        "created",
        user("directory_A", "directory_user_2", "b@acme.test", 2),
        2,
    )])
    .await;
    let changed = app
        .client
        .get(&url)
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);

    let other_org = app
        .client
        .get(&url)
        .bearer_auth(token_for(ORG_B))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        other_org.status(),
        StatusCode::NOT_FOUND,
        "a tag reveals nothing across organizations"
    );
}

#[tokio::test]
async fn an_etag_names_its_directory_and_never_confirms_another() {
    let app = spawn_app().await;
    app.send_all(&[
        activated("directory_A", ORG_A, 0),
        activated("directory_B", ORG_A, 0),
    ])
    .await;
    let token = token_for(ORG_A);
    let mut tags = Vec::new();
    for workos in ["directory_A", "directory_B"] {
        let dir = directory_id(&app, ORG_A, workos).await;
        for list in ["users", "groups"] {
            let resp = app
                .get(&format!("/api/directories/{dir}/{list}"), Some(&token))
                .await;
            tags.push((
                dir.clone(),
                resp.headers()["etag"].to_str().unwrap().to_owned(),
            ));
        }
    }
    // Both directories are empty and at the same revision: the same body,
    // yet four different validators.
    let distinct: std::collections::HashSet<_> = tags.iter().map(|(_, t)| t).collect();
    assert_eq!(distinct.len(), 4, "{tags:?}");

    // A's users ETag sent to B's users: a full answer, never a 304.
    let (a, a_users) = (&tags[0].0, &tags[0].1);
    let (b, _) = &tags[2];
    assert_ne!(a, b);
    let resp = app
        .client
        .get(format!("{}/api/directories/{b}/users", app.base))
        .bearer_auth(&token)
        .header("if-none-match", a_users)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "[]");
}
