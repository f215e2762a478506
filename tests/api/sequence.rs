//! A scripted sequence of realistic events gives exactly the expected API
//! answers after every step; the same sequence sent twice, re-sent under new
//! event ids, or shuffled ends in the same state as sent once in order.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::workos::*;

const S: &str = "directory_S";
const T: &str = "directory_T";

/// The scenario: a directory with users created, updated, suspended and
/// deleted, groups with memberships added and removed, a second directory
/// deleted, a member removed and re-added, and an AuthKit sign-in linking a
/// user once it joins the organization.
fn scenario() -> Vec<Value> {
    let ada = user(S, "directory_user_ada", "ada@acme.test", 10);
    let bob = user(S, "directory_user_bob", "bob@acme.test", 11);
    let cy = bare_user(S, "directory_user_cy", "cy@acme.test", 12);
    let augusta = with(
        with(ada.clone(), "first_name", json!("Augusta")),
        "updated_at",
        json!(t(20)),
    );
    let suspended = with(
        with(bob.clone(), "state", json!("suspended")),
        "updated_at",
        json!(t(21)),
    );
    let eng = group(S, "directory_group_eng", "Engineering", 22);
    let platform = with(
        with(eng.clone(), "name", json!("Platform")),
        "updated_at",
        json!(t(27)),
    );
    let tim = user(T, "directory_user_tim", "tim@acme.test", 31);
    let ops = group(T, "directory_group_ops", "Ops", 32);
    vec![
        activated(S, ORG_A, 1),
        user_event("created", ada, 10),
        user_event("created", bob, 11),
        user_event("created", cy.clone(), 12),
        user_event("updated", augusta.clone(), 20),
        user_event("updated", suspended.clone(), 21),
        group_event("created", eng.clone(), 22),
        member_event("user_added", S, augusta, eng.clone(), 23),
        member_event("user_added", S, suspended.clone(), eng.clone(), 24),
        member_event("user_removed", S, suspended.clone(), eng.clone(), 25),
        user_event("deleted", with(cy, "updated_at", json!(t(26))), 26),
        group_event("updated", platform.clone(), 27),
        member_event("user_added", S, suspended, platform, 28),
        activated(T, ORG_A, 30),
        user_event("created", tim.clone(), 31),
        group_event("created", ops.clone(), 32),
        member_event("user_added", T, tim, ops, 33),
        directory_deleted(T, ORG_A, 40),
        authkit_event("created", authkit_user("user_ada", "ADA@acme.test", 41), 41),
        member_of("user_ada", ORG_A, 42),
    ]
}

/// The API's view of ORG_A with rollcall's own ids and times removed,
/// records sorted by WorkOS id.
async fn view(app: &TestApp) -> Value {
    let token = token_for(ORG_A);
    let (_, dirs) = app.get_json("/api/directories", &token).await;
    let mut out = serde_json::Map::new();
    let mut directories = Vec::new();
    for d in dirs.as_array().unwrap() {
        let id = d["id"].as_str().unwrap();
        let (s1, users) = app
            .get_json(&format!("/api/directories/{id}/users"), &token)
            .await;
        let (s2, groups) = app
            .get_json(&format!("/api/directories/{id}/groups"), &token)
            .await;
        assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
        let strip = |list: &Value, key: &str| {
            let mut v: Vec<Value> = list
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    for k in ["id", "directory_id", "created_at", "updated_at"] {
                        r.as_object_mut().unwrap().remove(k);
                    }
                    r
                })
                .collect();
            v.sort_by(|a, b| a[key].as_str().cmp(&b[key].as_str()));
            Value::Array(v)
        };
        let mut d = d.clone();
        for k in ["id", "created_at", "updated_at"] {
            d.as_object_mut().unwrap().remove(k);
        }
        d["users"] = strip(&users, "workos_directory_user_id");
        d["groups"] = strip(&groups, "workos_directory_group_id");
        directories.push(d);
    }
    directories.sort_by(|a, b| {
        a["workos_directory_id"]
            .as_str()
            .cmp(&b["workos_directory_id"].as_str())
    });
    out.insert("directories".into(), Value::Array(directories));
    Value::Object(out)
}

/// Compact summary of one directory in a view: (user_count, group_count,
/// [(user, state, first_name, user_id)], [group names]).
fn summary(view: &Value, workos_id: &str) -> Option<Value> {
    let d = view["directories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["workos_directory_id"] == workos_id)?;
    let users: Vec<Value> = d["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            json!([
                u["workos_directory_user_id"],
                u["state"],
                u["first_name"],
                u["user_id"]
            ])
        })
        .collect();
    let groups: Vec<Value> = d["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].clone())
        .collect();
    Some(json!([d["user_count"], d["group_count"], users, groups]))
}

/// Stops the app and returns the memberships in an export, as sorted pairs.
async fn memberships_after_stop(app: TestApp) -> Vec<(String, String)> {
    let (_dir, settings) = app.stop().await;
    let store = rollcall::store::Store::open(&settings.data, Default::default()).unwrap();
    let mut out = Vec::new();
    rollcall::ingest::ndjson::export(&store, &mut out, |_| {}).unwrap();
    let mut pairs: Vec<(String, String)> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["object"] == "directory_group_membership")
        .map(|v| {
            (
                v["directory_group_id"].as_str().unwrap().to_owned(),
                v["directory_user_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

#[tokio::test]
async fn a_scripted_sequence_gives_the_expected_answers_after_every_step() {
    let app = spawn_app().await;
    let active = |id: &str, first: &str| json!([id, "active", first, null]);
    let n = Value::Null;
    // Expected summary of S (and of T where it matters) after each event.
    let expected: Vec<(Value, Value)> = vec![
        (json!([0, 0, [], []]), n.clone()),
        (
            json!([1, 0, [active("directory_user_ada", "Ada")], []]),
            n.clone(),
        ),
        (
            json!([
                2,
                0,
                [
                    active("directory_user_ada", "Ada"),
                    active("directory_user_bob", "Ada")
                ],
                []
            ]),
            n.clone(),
        ),
        (
            json!([
                3,
                0,
                [
                    active("directory_user_ada", "Ada"),
                    active("directory_user_bob", "Ada"),
                    ["directory_user_cy", "inactive", null, null]
                ],
                []
            ]),
            n.clone(),
        ),
        (
            json!([
                3,
                0,
                [
                    active("directory_user_ada", "Augusta"),
                    active("directory_user_bob", "Ada"),
                    ["directory_user_cy", "inactive", null, null]
                ],
                []
            ]),
            n.clone(),
        ),
        (
            json!([
                3,
                0,
                [
                    active("directory_user_ada", "Augusta"),
                    ["directory_user_bob", "inactive", "Ada", null],
                    ["directory_user_cy", "inactive", null, null]
                ],
                []
            ]),
            n.clone(),
        ),
    ];
    let after_groups = json!([
        3,
        1,
        [
            active("directory_user_ada", "Augusta"),
            ["directory_user_bob", "inactive", "Ada", null],
            ["directory_user_cy", "inactive", null, null]
        ],
        ["Engineering"]
    ]);
    let after_cy = json!([
        2,
        1,
        [
            active("directory_user_ada", "Augusta"),
            ["directory_user_bob", "inactive", "Ada", null]
        ],
        ["Engineering"]
    ]);
    let renamed = json!([
        2,
        1,
        [
            active("directory_user_ada", "Augusta"),
            ["directory_user_bob", "inactive", "Ada", null]
        ],
        ["Platform"]
    ]);
    let linked = json!([
        2,
        1,
        [
            ["directory_user_ada", "active", "Augusta", "user_ada"],
            ["directory_user_bob", "inactive", "Ada", null]
        ],
        ["Platform"]
    ]);
    let t_full = json!([
        1,
        1,
        [["directory_user_tim", "active", "Ada", null]],
        ["Ops"]
    ]);
    let mut expected = expected;
    for _ in 6..10 {
        expected.push((after_groups.clone(), n.clone()));
    }
    expected.push((after_cy.clone(), n.clone()));
    expected.push((renamed.clone(), n.clone()));
    expected.push((renamed.clone(), n.clone()));
    expected.push((renamed.clone(), json!([0, 0, [], []])));
    expected.push((
        renamed.clone(),
        json!([1, 0, [["directory_user_tim", "active", "Ada", null]], []]),
    ));
    expected.push((
        renamed.clone(),
        json!([
            1,
            1,
            [["directory_user_tim", "active", "Ada", null]],
            ["Ops"]
        ]),
    ));
    expected.push((renamed.clone(), t_full));
    expected.push((renamed.clone(), n.clone()));
    // Signed up, but not yet a member of the organization: not linked.
    expected.push((renamed.clone(), n.clone()));
    expected.push((linked.clone(), n.clone()));

    let events = scenario();
    assert_eq!(events.len(), expected.len());
    for (step, (event, (s, t))) in events.iter().zip(expected).enumerate() {
        app.send_all(std::slice::from_ref(event)).await;
        let v = view(&app).await;
        assert_eq!(
            summary(&v, S),
            Some(s),
            "S after step {step} ({})",
            event["event"]
        );
        assert_eq!(
            summary(&v, T).unwrap_or(Value::Null),
            t,
            "T after step {step} ({})",
            event["event"]
        );
    }

    let pairs = memberships_after_stop(app).await;
    assert_eq!(
        pairs,
        [
            (
                "directory_group_eng".to_owned(),
                "directory_user_ada".to_owned()
            ),
            (
                "directory_group_eng".to_owned(),
                "directory_user_bob".to_owned()
            ),
        ],
        "bob was removed, then added again"
    );
}

#[tokio::test]
async fn the_sequence_sent_twice_or_under_new_event_ids_changes_nothing_more() {
    let app = spawn_app().await;
    let events = scenario();
    app.send_all(&events).await;
    let dir = directory_id(&app, ORG_A, S).await;
    let token = token_for(ORG_A);
    let paths = [
        "/api/directories".to_owned(),
        format!("/api/directories/{dir}/users"),
        format!("/api/directories/{dir}/groups"),
    ];
    let mut once = Vec::new();
    for p in &paths {
        once.push(app.get_raw(p, &token).await.1);
    }

    for e in &events {
        let resp = app.post_event(e).await;
        assert_eq!(resp.json::<Value>().await.unwrap()["outcome"], "duplicate");
    }
    let renamed: Vec<Value> = events
        .iter()
        .map(|e| with(e.clone(), "id", json!(event_id())))
        .collect();
    app.send_all(&renamed).await;

    for (p, before) in paths.iter().zip(&once) {
        assert_eq!(
            &app.get_raw(p, &token).await.1,
            before,
            "{p} changed on replay"
        );
    }
}

#[tokio::test]
async fn the_sequence_shuffled_ends_in_the_same_state_as_in_order() {
    let in_order = spawn_app().await;
    in_order.send_all(&scenario()).await;
    let expected = view(&in_order).await;
    let expected_pairs = memberships_after_stop(in_order).await;

    for seed in 1..=6u64 {
        let mut events = scenario();
        events.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let app = spawn_app().await;
        app.send_all(&events).await;
        assert_eq!(view(&app).await, expected, "seed {seed}");
        assert_eq!(
            memberships_after_stop(app).await,
            expected_pairs,
            "seed {seed}"
        );
    }
}
