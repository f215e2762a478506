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
