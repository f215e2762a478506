//! The fake WorkOS API itself (`tests/support/fake_workos.rs`): pagination,
//! filters, errors, rate limits, faults, events — what the sync tests and
//! benchmarks stand on. (Its shapes are checked against the official SDK by
//! `tests/python/check_fake_workos.py`.)

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fake_workos::*;

async fn fake() -> FakeWorkos {
    FakeWorkos::start(FakeOptions::default()).await
}

/// A fake whose clock stands still at 2026-01-01T00:00:00Z.
async fn frozen_fake() -> FakeWorkos {
    FakeWorkos::start(FakeOptions {
        frozen_at: Some(t0()),
        ..FakeOptions::default()
    })
    .await
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

struct Got {
    status: StatusCode,
    body: Value,
    raw: Vec<u8>,
    retry_after: Option<String>,
}

thread_local! {
    /// One client per test (each test has its own thread and runtime):
    /// building one per request would dominate these tests' time.
    static CLIENT: reqwest::Client = reqwest::Client::new();
}

fn client() -> reqwest::Client {
    CLIENT.with(Clone::clone)
}

async fn get_with(fake: &FakeWorkos, path: &str, key: Option<&str>) -> Got {
    let mut req = client().get(format!("{}{path}", fake.base_url()));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let raw = resp.bytes().await.unwrap().to_vec();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Got {
        status,
        body,
        raw,
        retry_after,
    }
}

async fn get(fake: &FakeWorkos, path: &str) -> Got {
    get_with(fake, path, Some(fake.api_key())).await
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Follows `list_metadata.after` from `path` (which has a `?`) to the end.
async fn walk(fake: &FakeWorkos, path: &str) -> (Vec<String>, usize) {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &after {
            Some(a) => format!("{path}&after={a}"),
            None => path.to_owned(),
        };
        let got = get(fake, &url).await;
        assert_eq!(got.status, 200, "{url}: {}", got.body);
        pages += 1;
        let page_ids = ids(&got.body);
        let next = got.body["list_metadata"]["after"]
            .as_str()
            .map(str::to_owned);
        if let Some(n) = &next {
            assert_eq!(Some(n), page_ids.last(), "after is the page's last id");
        }
        all.extend(page_ids);
        match next {
            Some(n) => after = Some(n),
            None => return (all, pages),
        }
    }
}

#[tokio::test]
async fn pagination_walks_every_user_once_in_order_for_limits_1_7_100() {
    let fake = fake().await;
    let seeded = fake.seed(&Seed {
        users_per_directory: 250,
        ..Seed::default()
    });
    let dir = &seeded.directories[0];
    let created = fake.user_ids(dir);
    assert_eq!(created.len(), 250);

    for limit in [1, 7, 100] {
        let (asc, pages) = walk(
            &fake,
            &format!("/directory_users?directory={dir}&order=asc&limit={limit}"),
        )
        .await;
        assert_eq!(asc, created, "limit {limit}: every user once, oldest first");
        assert_eq!(
            pages,
            250usize.div_ceil(limit),
            "limit {limit}: no empty last page"
        );

        let (desc, _) = walk(
            &fake,
            &format!("/directory_users?directory={dir}&limit={limit}"),
        )
        .await;
        let mut newest_first = created.clone();
        newest_first.reverse();
        assert_eq!(
            desc, newest_first,
            "limit {limit}: the default order is desc"
        );
    }

    // The default page size is 10.
    let page = get(&fake, &format!("/directory_users?directory={dir}")).await;
    assert_eq!(ids(&page.body).len(), 10);
    assert_eq!(
        page.body["list_metadata"]["before"],
        Value::Null,
        "nothing before the first page"
    );

    // `before` goes back to the page just before the cursor.
    let page = get(
        &fake,
        &format!(
            "/directory_users?directory={dir}&order=asc&limit=7&after={}",
            created[100]
        ),
    )
    .await;
    assert_eq!(ids(&page.body), created[101..108]);
    assert_eq!(page.body["list_metadata"]["before"], created[101].as_str());
    let back = get(
        &fake,
        &format!(
            "/directory_users?directory={dir}&order=asc&limit=7&before={}",
            created[101]
        ),
    )
    .await;
    assert_eq!(ids(&back.body), created[94..101]);
    assert_eq!(back.body["list_metadata"]["after"], created[100].as_str());

    // `normal`: newest first, `before` goes to older records.
    let page = get(
        &fake,
        &format!("/directory_users?directory={dir}&order=normal&limit=5"),
    )
    .await;
    assert_eq!(
        ids(&page.body),
        created[245..].iter().rev().cloned().collect::<Vec<_>>()
    );
    assert_eq!(
        page.body["list_metadata"]["after"],
        Value::Null,
        "nothing newer"
    );
    let older = page.body["list_metadata"]["before"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(older, created[245]);
    let page = get(
        &fake,
        &format!("/directory_users?directory={dir}&order=normal&limit=5&before={older}"),
    )
    .await;
    assert_eq!(
        ids(&page.body),
        created[240..245].iter().rev().cloned().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_limit_outside_1_to_100_or_an_unknown_order_is_a_422_naming_it() {
    let fake = fake().await;
    let dir = fake.seed(&Seed::default()).directories[0].clone();
    for (query, field) in [
        ("limit=101", "limit"),
        ("limit=0", "limit"),
        ("limit=ten", "limit"),
        ("order=sideways", "order"),
    ] {
        let got = get(&fake, &format!("/directory_users?directory={dir}&{query}")).await;
        assert_eq!(got.status, 422, "{query}");
        assert_eq!(got.body["code"], "invalid_request_parameters", "{query}");
        assert_eq!(got.body["errors"][0]["field"], field, "{query}");
    }
    let got = get(
        &fake,
        &format!("/directory_users?directory={dir}&limit=100"),
    )
    .await;
    assert_eq!(got.status, 200);
    let got = get(&fake, "/directory_users").await;
    assert_eq!(got.status, 422, "users need a directory or a group");
    let got = get(&fake, "/directory_groups").await;
    assert_eq!(got.status, 422, "groups need a directory or a user");
    let got = get(&fake, "/user_management/organization_memberships").await;
    assert_eq!(
        got.status, 422,
        "memberships need a user or an organization"
    );
}

#[tokio::test]
async fn filters_select_by_organization_directory_group_and_user() {
    let fake = fake().await;
    let seeded = fake.seed(&Seed {
        directories: 3,
        users_per_directory: 30,
        groups_per_directory: 3,
        groups_per_user: 2,
        ..Seed::default()
    });
    let (org, dir) = (&seeded.organizations[1], &seeded.directories[1]);

    let got = get(&fake, &format!("/directories?organization_id={org}")).await;
    assert_eq!(ids(&got.body), std::slice::from_ref(dir));
    assert_eq!(got.body["data"][0]["organization_id"], org.as_str());
    let (all, _) = walk(&fake, "/directories?order=asc&limit=2").await;
    assert_eq!(all, seeded.directories);

    let groups = fake.group_ids(dir);
    let (listed, _) = walk(
        &fake,
        &format!("/directory_groups?directory={dir}&order=asc"),
    )
    .await;
    assert_eq!(listed, groups);
    for group in &groups {
        let members = fake.member_ids(group);
        assert_eq!(members.len(), 20, "each user is in 2 of the 3 groups");
        let (listed, _) = walk(
            &fake,
            &format!("/directory_users?group={group}&order=asc&limit=7"),
        )
        .await;
        assert_eq!(&listed, &members, "{group}");
        let other_dir = &seeded.directories[0];
        let got = get(
            &fake,
            &format!("/directory_users?group={group}&directory={other_dir}"),
        )
        .await;
        assert_eq!(
            ids(&got.body),
            Vec::<String>::new(),
            "a group of another directory has no members there"
        );
    }
    let user = &fake.user_ids(dir)[4];
    let got = get(&fake, &format!("/directory_groups?user={user}&order=asc")).await;
    let of_user = ids(&got.body);
    assert_eq!(of_user.len(), 2);
    for g in &of_user {
        assert!(fake.member_ids(g).contains(user));
    }
}

#[tokio::test]
async fn unknown_ids_are_404_entity_not_found() {
    let fake = fake().await;
    fake.seed(&Seed::default());
    for path in [
        "/directories/directory_01NOPE",
        "/directory_users/directory_user_01NOPE",
        "/directory_groups/directory_group_01NOPE",
        "/user_management/users/user_01NOPE",
        "/user_management/organization_memberships/om_01NOPE",
        "/directory_users?directory=directory_01NOPE",
        "/directory_users?group=directory_group_01NOPE",
        "/directory_groups?directory=directory_01NOPE",
        "/directory_groups?user=directory_user_01NOPE",
    ] {
        let got = get(&fake, path).await;
        assert_eq!(got.status, 404, "{path}");
        assert_eq!(got.body["code"], "entity_not_found", "{path}");
        assert!(
            got.body["message"].as_str().unwrap().contains("01NOPE"),
            "{path}"
        );
    }
    let got = get(&fake, "/sso/profile").await;
    assert_eq!(got.status, 404, "routes the fake does not serve");
}

#[tokio::test]
async fn a_request_without_the_api_key_is_401() {
    let fake = fake().await;
    for key in [None, Some("sk_test_wrong"), Some("")] {
        let got = get_with(&fake, "/directories", key).await;
        assert_eq!(got.status, 401, "{key:?}");
        assert!(got.body["message"].is_string());
    }
    let resp = client()
        .get(format!("{}/directories", fake.base_url()))
        .header("authorization", format!("Basic {}", fake.api_key()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "only a bearer key");
    assert_eq!(get(&fake, "/directories").await.status, 200);
}

#[tokio::test]
async fn directory_users_are_limited_to_4_requests_per_second_per_directory() {
    let fake = FakeWorkos::start(FakeOptions {
        rate_limits: Some(RateLimits::WORKOS),
        ..FakeOptions::default()
    })
    .await;
    let seeded = fake.seed(&Seed {
        directories: 2,
        ..Seed::default()
    });
    let (a, b) = (&seeded.directories[0], &seeded.directories[1]);

    // A burst of 10 at once: 4 answered, 6 refused.
    let path = format!("/directory_users?directory={a}");
    let burst: Vec<Got> = futures_util::future::join_all((0..10).map(|_| get(&fake, &path))).await;
    // A user fetched by id counts against its directory's budget too.
    let user = &fake.user_ids(a)[0];
    assert_eq!(
        get(&fake, &format!("/directory_users/{user}")).await.status,
        429
    );
    let statuses: Vec<u16> = burst.iter().map(|g| g.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        4,
        "{statuses:?}"
    );
    for got in burst.iter().filter(|g| g.status == 429) {
        assert_eq!(
            got.retry_after.as_deref(),
            Some("1"),
            "a 1-second window frees within a second"
        );
        assert_eq!(got.body["code"], "rate_limit_exceeded");
        assert_eq!(got.body["retry_after"], 1.0);
    }
    assert_eq!(fake.throttled(), 7);
    assert_eq!(fake.count_for_directory(a), 11);
    // Another directory has its own budget; other routes are not limited.
    assert_eq!(
        get(&fake, &format!("/directory_users?directory={b}"))
            .await
            .status,
        200
    );
    assert_eq!(
        get(&fake, &format!("/directory_groups?directory={a}"))
            .await
            .status,
        200
    );

    // 4 per second is never refused: each request leaves 250 ms after the
    // previous answer, so arrivals are at least 250 ms apart.
    fake.reset_requests();
    for _ in 0..9 {
        let got = get(&fake, &path).await;
        assert_eq!(got.status, 200, "{}", got.body);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(fake.throttled(), 0);
    assert!(fake.peak_directory_rate(Duration::from_secs(1)) <= 4);
}

#[tokio::test]
async fn the_per_key_limit_covers_every_route_and_says_when_to_come_back() {
    let fake = FakeWorkos::start(FakeOptions {
        rate_limits: Some(RateLimits {
            requests_per_minute: 5,
            ..RateLimits::WORKOS
        }),
        ..FakeOptions::default()
    })
    .await;
    for path in [
        "/directories",
        "/events?events=dsync.activated",
        "/directories",
        "/directories",
        "/directories",
    ] {
        assert_eq!(get(&fake, path).await.status, 200, "{path}");
    }
    let got = get(&fake, "/user_management/users").await;
    assert_eq!(got.status, 429);
    let secs: u64 = got.retry_after.unwrap().parse().unwrap();
    assert!(
        (59..=60).contains(&secs),
        "the minute's first request frees the budget: {secs}"
    );
    assert_eq!(got.body["retry_after"].as_f64(), Some(secs as f64));
    fake.set_rate_limits(None);
    assert_eq!(get(&fake, "/directories").await.status, 200);
}

#[tokio::test]
async fn injected_faults_answer_the_next_requests_then_stop() {
    let fake = fake().await;
    let dir = fake.seed(&Seed::default()).directories[0].clone();
    let users = format!("/directory_users?directory={dir}");

    fake.fail_next("/directory_users", 2, 503);
    assert_eq!(
        get(&fake, "/directories").await.status,
        200,
        "another route"
    );
    assert_eq!(get(&fake, &users).await.status, 503);
    assert_eq!(get(&fake, &users).await.status, 503);
    assert_eq!(get(&fake, &users).await.status, 200);

    fake.fail_next("/directory_users", 1, 429);
    let got = get(&fake, &users).await;
    assert_eq!(got.status, 429);
    assert_eq!(got.retry_after.as_deref(), Some("1"));
    assert_eq!(got.body["code"], "rate_limit_exceeded");
    assert_eq!(
        fake.throttled(),
        0,
        "an injected 429 is not the rate limiter's"
    );

    for status in [500, 502] {
        fake.fail_next("/events", 1, status);
        assert_eq!(
            get(&fake, "/events?events=dsync.activated").await.status,
            status
        );
    }

    fake.drop_next("/directories", 1);
    let err = client()
        .get(format!("{}/directories", fake.base_url()))
        .bearer_auth(fake.api_key())
        .send()
        .await
        .expect_err("no answer at all");
    assert!(!err.is_status(), "{err}");
    assert_eq!(
        get(&fake, "/directories").await.status,
        200,
        "the next one is answered"
    );

    let log = fake.requests();
    let dropped: Vec<_> = log.iter().filter(|r| r.status == 0).collect();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].route, "/directories");
    assert_eq!(fake.count("/directory_users"), 4);
    assert_eq!(fake.count_for_directory(&dir), 4);
    assert_eq!(fake.count("/directories"), 3);
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let fake = fake().await;
    fake.set_latency(Some(Duration::from_millis(200)));
    let started = Instant::now();
    assert_eq!(get(&fake, "/directories").await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

fn event_of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

#[tokio::test]
async fn every_change_emits_the_event_workos_would_with_the_object_the_api_lists() {
    let fake = frozen_fake().await;
    let org = fake.create_organization("Acme");
    let dir = fake.create_directory(&org, "Acme Okta", |_| {});
    let api = get(&fake, &format!("/directories/{}", dir.id)).await.body;
    assert_eq!(api["state"], "linked", "the REST API's name for active");
    assert_eq!(api["domain"], "acmeokta.test");
    let events = fake.events();
    let activated = event_of(&events, "dsync.activated");
    assert_eq!(activated.len(), 1);
    assert_eq!(activated[0]["data"]["state"], "active", "the events' name");
    assert_eq!(
        activated[0]["data"]["domains"][0]["domain"],
        "acmeokta.test"
    );
    assert_eq!(activated[0]["created_at"], "2026-01-01T00:00:00.000Z");

    fake.advance(Duration::from_secs(60));
    let ada = fake.create_user(&dir.id, "ada.lovelace@acme.test", |_| {});
    assert_eq!(ada.first_name.as_deref(), Some("Ada"));
    let listed = get(&fake, &format!("/directory_users/{}", ada.id)).await;
    let events = fake.events();
    let created = event_of(&events, "dsync.user.created");
    assert_eq!(
        created[0]["data"], listed.body,
        "the same payload as the API"
    );
    assert_eq!(listed.body["created_at"], "2026-01-01T00:01:00.000Z");

    fake.advance(Duration::from_millis(1500));
    fake.update_user(&ada.id, |u| u.first_name = Some("Augusta".into()));
    let events = fake.events();
    let updated = event_of(&events, "dsync.user.updated")[0];
    assert_eq!(updated["data"]["first_name"], "Augusta");
    assert_eq!(updated["data"]["updated_at"], "2026-01-01T00:01:01.500Z");
    assert_eq!(
        updated["data"]["previous_attributes"],
        json!({"first_name": "Ada"})
    );

    let eng = fake.create_group(&dir.id, "Engineering", |_| {});
    assert!(fake.add_member(&eng.id, &ada.id));
    assert!(!fake.add_member(&eng.id, &ada.id), "already a member");
    let events = fake.events();
    let added = event_of(&events, "dsync.group.user_added")[0];
    assert_eq!(added["data"]["directory_id"], dir.id.as_str());
    assert_eq!(
        added["data"]["user"],
        get(&fake, &format!("/directory_users/{}", ada.id))
            .await
            .body
    );
    assert_eq!(
        added["data"]["group"],
        get(&fake, &format!("/directory_groups/{}", eng.id))
            .await
            .body
    );

    // Ids sort in creation order, events included.
    let ids: Vec<String> = fake
        .events()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);

    // Silently: state changes, no event (a lost webhook).
    let before = fake.events().len();
    fake.silently(|f| f.delete_user(&ada.id));
    assert_eq!(fake.events().len(), before);
    assert_eq!(
        get(&fake, &format!("/directory_users/{}", ada.id))
            .await
            .status,
        404
    );
    assert!(
        fake.member_ids(&eng.id).is_empty(),
        "memberships go with the user"
    );

    // Deleting a directory: one dsync.deleted, and everything under it gone.
    fake.create_user(&dir.id, "grace@acme.test", |_| {});
    assert!(fake.delete_directory(&dir.id));
    let events = fake.events();
    let deleted = event_of(&events, "dsync.deleted");
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["data"]["state"], "deleting");
    assert_eq!(
        event_of(&events, "dsync.user.deleted").len(),
        0,
        "no per-user events"
    );
    assert_eq!(
        get(&fake, &format!("/directories/{}", dir.id)).await.status,
        404
    );
    assert_eq!(
        get(&fake, &format!("/directory_groups/{}", eng.id))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn events_page_from_a_cursor_and_from_range_start_within_30_days() {
    let fake = frozen_fake().await;
    let dir = fake.create_directory("org_01EVENTS", "Events", |_| {});
    for i in 0..25 {
        fake.advance(Duration::from_secs(1));
        fake.create_user(&dir.id, &format!("u{i}@events.test"), |_| {});
    }
    let all = fake.events();
    assert_eq!(all.len(), 26);
    let user_events: Vec<String> = all[1..]
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();

    // Oldest first; `after` is the page's last event, null on an empty page.
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    for expected in [10, 10, 5, 0] {
        let path = match &cursor {
            Some(c) => format!("/events?events=dsync.user.created&limit=10&after={c}"),
            None => "/events?events=dsync.user.created&limit=10".to_owned(),
        };
        let got = get(&fake, &path).await;
        assert_eq!(got.status, 200);
        let page = ids(&got.body);
        assert_eq!(page.len(), expected);
        assert_eq!(
            got.body["list_metadata"]["after"].as_str(),
            page.last().map(String::as_str)
        );
        assert!(
            got.body["list_metadata"].get("before").is_none(),
            "the Events API's metadata has only after"
        );
        seen.extend(page.iter().cloned());
        if let Some(last) = page.last() {
            cursor = Some(last.clone());
        }
    }
    assert_eq!(seen, user_events);

    // Several types, comma-joined, as the SDKs send them.
    let got = get(
        &fake,
        "/events?events=dsync.activated,dsync.user.created&limit=100",
    )
    .await;
    assert_eq!(ids(&got.body).len(), 26);
    let got = get(&fake, "/events?events=dsync.group.created").await;
    assert_eq!(ids(&got.body).len(), 0);

    // range_start is inclusive, range_end exclusive.
    let got = get(
        &fake,
        "/events?events=dsync.user.created&limit=100&range_start=2026-01-01T00:00:10.000Z",
    )
    .await;
    assert_eq!(ids(&got.body), user_events[9..]);
    let got = get(&fake, "/events?events=dsync.user.created&limit=100&range_start=2026-01-01T00:00:10Z&range_end=2026-01-01T00:00:12Z").await;
    assert_eq!(ids(&got.body), user_events[9..11]);
    let got = get(
        &fake,
        "/events?events=dsync.user.created&organization_id=org_01OTHER",
    )
    .await;
    assert_eq!(ids(&got.body).len(), 0);
    let got = get(
        &fake,
        "/events?events=dsync.user.created&organization_id=org_01EVENTS&limit=100",
    )
    .await;
    assert_eq!(ids(&got.body).len(), 25);

    // Only `Z` timestamps; `events` is required.
    let got = get(
        &fake,
        "/events?events=dsync.user.created&range_start=2026-01-01T00:00:10%2B00:00",
    )
    .await;
    assert_eq!(got.status, 422);
    assert_eq!(got.body["errors"][0]["field"], "range_start");
    assert_eq!(get(&fake, "/events").await.status, 422);

    // Events up to 30 days old are listed, older ones are gone.
    fake.advance(Duration::from_secs(30 * 24 * 3600));
    let got = get(&fake, "/events?events=dsync.user.created").await;
    assert_eq!(ids(&got.body), user_events[24..], "exactly 30 days old");
    fake.advance(Duration::from_millis(1));
    let got = get(&fake, "/events?events=dsync.user.created").await;
    assert_eq!(ids(&got.body).len(), 0);
}

#[tokio::test]
async fn a_deleted_record_still_works_as_a_cursor() {
    let fake = fake().await;
    let dir = fake
        .seed(&Seed {
            users_per_directory: 30,
            ..Seed::default()
        })
        .directories[0]
        .clone();
    let users = fake.user_ids(&dir);
    let page = get(
        &fake,
        &format!("/directory_users?directory={dir}&order=asc&limit=10"),
    )
    .await;
    let cursor = page.body["list_metadata"]["after"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(cursor, users[9]);
    assert!(fake.delete_user(&cursor));
    let page = get(
        &fake,
        &format!("/directory_users?directory={dir}&order=asc&limit=10&after={cursor}"),
    )
    .await;
    assert_eq!(
        ids(&page.body),
        users[10..20],
        "ids are compared, not looked up"
    );
}

#[tokio::test]
async fn seeding_is_deterministic_and_serves_exactly_what_serde_writes() {
    let seed = Seed {
        directories: 2,
        users_per_directory: 200,
        groups_per_directory: 3,
        authkit_users_per_directory: 5,
        ..Seed::default()
    };
    let (a, b) = (frozen_fake().await, frozen_fake().await);
    let (sa, sb) = (a.seed(&seed), b.seed(&seed));
    assert_eq!(sa.users, 400);
    assert_eq!(sa.group_memberships, 400);
    assert_eq!(sa.authkit_users, 10);
    for (da, db) in sa.directories.iter().zip(&sb.directories) {
        let pa = get(&a, &format!("/directory_users?directory={da}&limit=100")).await;
        let pb = get(&b, &format!("/directory_users?directory={db}&limit=100")).await;
        let strip = |v: &Value| {
            let mut v = v.clone();
            for u in v["data"].as_array_mut().unwrap() {
                for key in ["id", "directory_id", "organization_id"] {
                    u[key] = Value::Null;
                }
            }
            v["list_metadata"] = Value::Null;
            v
        };
        assert_eq!(strip(&pa.body), strip(&pb.body), "same seed, same content");
    }
    let states: Vec<Value> = {
        let (all, _) = walk(
            &a,
            &format!("/directory_users?directory={}&limit=100", sa.directories[0]),
        )
        .await;
        let mut states = Vec::new();
        for id in all {
            let got = get(&a, &format!("/directory_users/{id}")).await;
            let typed = a.user(&id).unwrap();
            assert_eq!(
                got.raw,
                serde_json::to_vec(&typed).unwrap(),
                "byte for byte what serde writes"
            );
            states.push(got.body["state"].clone());
        }
        states
    };
    assert!(states.contains(&json!("suspended")) && states.contains(&json!("inactive")));

    // AuthKit users of the seed are members of their directory's organization.
    let org = &sa.organizations[0];
    let got = get(
        &a,
        &format!("/user_management/users?organization_id={org}&limit=100"),
    )
    .await;
    assert_eq!(ids(&got.body).len(), 5);
    let got = get(
        &a,
        &format!("/user_management/organization_memberships?organization_id={org}&limit=100"),
    )
    .await;
    assert_eq!(ids(&got.body).len(), 5);
    assert_eq!(
        got.body["data"][0]["user"]["object"], "user",
        "the member is nested"
    );
}

#[tokio::test]
async fn memberships_list_active_ones_unless_statuses_say_otherwise() {
    let fake = fake().await;
    let org = fake.create_organization("Memberships");
    let ada = fake.create_authkit_user("ada@m.test", |_| {});
    let bob = fake.create_authkit_user("bob@m.test", |_| {});
    fake.create_authkit_user("carol@m.test", |_| {});
    let active = fake.create_membership(&ada.id, &org, |_| {});
    let pending = fake.create_membership(&bob.id, &org, |m| m.status = MembershipStatus::Pending);

    let base = format!("/user_management/organization_memberships?organization_id={org}");
    assert_eq!(ids(&get(&fake, &base).await.body), [active.id.as_str()]);
    let got = get(&fake, &format!("{base}&statuses=active,pending&order=asc")).await;
    assert_eq!(ids(&got.body), [active.id.clone(), pending.id.clone()]);
    assert_eq!(got.body["data"][1]["user"]["email"], "bob@m.test");
    let got = get(
        &fake,
        &format!(
            "/user_management/organization_memberships?user_id={}&statuses=pending",
            bob.id
        ),
    )
    .await;
    assert_eq!(ids(&got.body), [pending.id.as_str()]);

    let got = get(
        &fake,
        &format!("/user_management/users?organization_id={org}&order=asc"),
    )
    .await;
    assert_eq!(
        ids(&got.body),
        [ada.id.clone(), bob.id.clone()],
        "members in any status"
    );
    let got = get(&fake, "/user_management/users?email=CAROL@m.test").await;
    assert_eq!(got.body["data"][0]["email"], "carol@m.test");

    fake.delete_authkit_user(&bob.id);
    let got = get(&fake, &format!("{base}&statuses=pending")).await;
    assert_eq!(ids(&got.body).len(), 0, "memberships go with their user");
}
