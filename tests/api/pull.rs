//! Pull mode against a local server speaking the WorkOS Events API's shape:
//! pages, a restart in the middle, a 429 — nothing applied twice, nothing
//! skipped, the cursor resumed from the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollcall::config::PullSettings;
use serde_json::{Value, json};
use tempfile::TempDir;
use warp::Filter;
use warp::http::StatusCode;

use crate::helpers::*;
use crate::workos::*;

#[derive(Default)]
struct Mock {
    events: Vec<Value>,
    /// `after` of every request, in order (`None` for the first ever).
    requests: Vec<Option<String>>,
    /// Answer the next request with 429 and `Retry-After: 1`.
    throttle_next: bool,
    bad_auth: usize,
}

async fn events_api(mock: Arc<Mutex<Mock>>) -> String {
    let route = warp::path!("events")
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("authorization"))
        .map(move |q: HashMap<String, String>, auth: Option<String>| {
            let mut m = mock.lock().unwrap();
            if auth.as_deref() != Some("Bearer sk_test_pull") {
                m.bad_auth += 1;
                return warp::reply::with_status(
                    warp::reply::json(&json!({"message": "Unauthorized"})),
                    StatusCode::UNAUTHORIZED,
                )
                .into_response();
            }
            let after = q.get("after").cloned();
            m.requests.push(after.clone());
            if m.throttle_next {
                m.throttle_next = false;
                let mut resp = warp::reply::with_status(
                    warp::reply::json(&json!({"message": "Too many requests"})),
                    StatusCode::TOO_MANY_REQUESTS,
                )
                .into_response();
                resp.headers_mut()
                    .insert("retry-after", "1".parse().unwrap());
                return resp;
            }
            let wanted: Vec<&str> = q
                .get("events")
                .map(|e| e.split(',').collect())
                .unwrap_or_default();
            assert!(
                wanted.contains(&"dsync.user.created") && wanted.contains(&"user.deleted"),
                "{wanted:?}"
            );
            let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
            let start = match &after {
                None => 0,
                Some(a) => m
                    .events
                    .iter()
                    .position(|e| e["id"] == a.as_str())
                    .map_or(m.events.len(), |i| i + 1),
            };
            let page: Vec<Value> = m.events.iter().skip(start).take(limit).cloned().collect();
            let last = page.last().map(|e| e["id"].clone()).unwrap_or(Value::Null);
            warp::reply::json(
                &json!({"object": "list", "data": page, "list_metadata": {"after": last}}),
            )
            .into_response()
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    format!("http://{addr}")
}

use warp::Reply;

async fn wait_for_users(app: &TestApp, n: usize) -> Value {
    for _ in 0..200 {
        let (_, dirs) = app.get_json("/api/directories", &token_for(ORG_A)).await;
        if let Some(d) = dirs.as_array().and_then(|a| a.first())
            && d["user_count"].as_u64() == Some(n as u64)
        {
            let path = format!("/api/directories/{}/users", d["id"].as_str().unwrap());
            return app.get_json(&path, &token_for(ORG_A)).await.1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never saw {n} users");
}

fn numbered_user(i: usize) -> Value {
    let created = user(
        "directory_P",
        &format!("directory_user_{i:04}"),
        &format!("u{i:04}@acme.test"),
        i as i64,
    );
    user_event("created", created, i as i64)
}

#[tokio::test]
async fn pull_mode_applies_every_page_once_and_resumes_after_a_restart() {
    let mock = Arc::new(Mutex::new(Mock::default()));
    {
        let mut m = mock.lock().unwrap();
        m.events.push(activated("directory_P", ORG_A, 0));
        m.events.extend((1..200).map(numbered_user));
    }
    let url = events_api(mock.clone()).await;
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.webhook_secret = None;
    s.pull = Some(PullSettings {
        api_url: url,
        api_key: "sk_test_pull".into(),
        poll_interval: Duration::from_millis(200),
        max_backoff: Duration::from_secs(2),
    });
    let app = spawn_with(s, Arc::new(dir)).await;

    // Two full pages (200 events), then an empty page while caught up.
    wait_for_users(&app, 199).await;
    let page2_last = mock.lock().unwrap().events[199]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Restart in the middle; meanwhile WorkOS has 50 more events, and the
    // first request after the restart is throttled.
    let (dir, settings) = app.stop().await;
    {
        let mut m = mock.lock().unwrap();
        m.events.extend((200..250).map(numbered_user));
        m.throttle_next = true;
        m.requests.clear();
    }
    let app = spawn_with(settings, dir).await;

    let users = wait_for_users(&app, 249).await;
    let expected: Vec<String> = (1..250).map(|i| format!("u{i:04}@acme.test")).collect();
    assert_eq!(
        emails(&users),
        expected,
        "nothing skipped, nothing doubled, in order"
    );
    let m = mock.lock().unwrap();
    assert_eq!(m.bad_auth, 0, "every request carried the API key");
    assert_eq!(
        m.requests[0].as_deref(),
        Some(page2_last.as_str()),
        "resumed from the stored cursor"
    );
    assert_eq!(
        m.requests[1].as_deref(),
        Some(page2_last.as_str()),
        "retried the throttled page"
    );
    assert!(
        m.requests
            .iter()
            .all(|a| a.as_deref() >= Some(page2_last.as_str())),
        "never asked for events before the cursor again: {:?}",
        m.requests
    );
}
