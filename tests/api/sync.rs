//! WorkOS sync against the fake WorkOS API (tests/support/fake_workos.rs,
//! itself checked against the official SDK): a backfill copies the account
//! field by field, events during and after it converge, limits are kept,
//! faults retried, a killed backfill resumes, reconcile repairs drift and
//! never deletes on a failed listing, and instances fed by different paths
//! answer byte for byte alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rollcall::ingest::sync::SyncSettings;
use rollcall::ingest::workos_api::ApiSettings;
use rollcall::store::{Store, StoreOptions};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::fake_workos::{
    self, DirectoryState, FakeOptions, FakeWorkos, MembershipStatus, RateLimits, UserState,
};
use crate::helpers::*;
use crate::process::Process;

/// Sync settings against `fake`: no limits of rollcall's own unless asked,
/// quick polls and short backoffs.
fn sync_settings(fake: &FakeWorkos, limits: bool) -> SyncSettings {
    SyncSettings {
        api: ApiSettings {
            base_url: fake.base_url(),
            api_key: fake.api_key().to_owned(),
            requests_per_minute: if limits { 6_000 } else { 0 },
            directory_users_per_second: if limits { 4 } else { 0 },
            max_backoff: Duration::from_millis(400),
        },
        organizations: Vec::new(),
        poll_interval: Duration::from_millis(200),
        reconcile_interval: None,
        concurrency: 4,
    }
}

async fn app_syncing(fake: &FakeWorkos, configure: impl FnOnce(&mut SyncSettings)) -> TestApp {
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    let mut sync = sync_settings(fake, false);
    configure(&mut sync);
    s.sync = Some(sync);
    spawn_with(s, Arc::new(dir)).await
}

// ---- what the fake's state must look like through the Char API -----------------

fn char_type(workos: &str) -> String {
    rollcall::model::char_directory_type(workos)
}

fn char_directory_state(s: DirectoryState) -> &'static str {
    match s {
        DirectoryState::Active => "active",
        DirectoryState::Deleting => "deleting",
        _ => "inactive",
    }
}

/// The newest of some RFC 3339 times, as the API renders it.
fn latest(times: &[&str]) -> String {
    times
        .iter()
        .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap())
        .max()
        .unwrap()
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn ms(t: &str) -> String {
    latest(&[t])
}

/// Every Char answer the fake's current state should give, per
/// organization: `(directories, {directory id: (users, groups)})`.
fn expected(fake: &FakeWorkos, org: &str) -> (Value, Vec<(String, Value, Value)>) {
    let mut dirs: Vec<_> = fake
        .directories()
        .into_iter()
        .filter(|d| d.organization_id == org)
        .collect();
    dirs.sort_by_key(|d| derived_id(&d.id, &d.created_at));
    let mut directories = Vec::new();
    let mut lists = Vec::new();
    for d in dirs {
        let id = derived_id(&d.id, &d.created_at);
        let mut users: Vec<Value> = fake
            .user_ids(&d.id)
            .iter()
            .map(|u| expected_user(fake, &fake.user(u).unwrap(), &id, org))
            .collect();
        users.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        let mut groups: Vec<Value> = fake
            .group_ids(&d.id)
            .iter()
            .map(|g| {
                let g = fake.group(g).unwrap();
                json!({
                    "id": derived_id(&g.id, &g.created_at), "directory_id": id,
                    "workos_directory_group_id": g.id, "name": g.name,
                    "idp_id": (!g.idp_id.is_empty()).then_some(&g.idp_id),
                    "raw_attributes": g.raw_attributes.as_ref().map(|r| r.to_string()),
                    "mapped_role": null, "created_at": ms(&g.created_at), "updated_at": ms(&g.updated_at),
                })
            })
            .collect();
        groups.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        directories.push(json!({
            "id": id, "organization_id": d.organization_id, "workos_directory_id": d.id,
            "name": d.name, "type": char_type(&d.kind), "state": char_directory_state(d.state),
            "domain": d.domains.first(), "created_at": ms(&d.created_at), "updated_at": ms(&d.updated_at),
            "user_count": users.len(), "group_count": groups.len(),
        }));
        lists.push((id, Value::Array(users), Value::Array(groups)));
    }
    (Value::Array(directories), lists)
}

fn expected_user(fake: &FakeWorkos, u: &fake_workos::DirectoryUser, dir: &str, org: &str) -> Value {
    let email = u
        .email
        .clone()
        .or_else(|| {
            let emails = u.emails.as_ref()?;
            emails
                .iter()
                .find(|e| e.primary)
                .or_else(|| emails.first())
                .map(|e| e.value.clone())
        })
        .unwrap_or_default();
    // Linked: an AuthKit user with the email, active in the organization.
    let link = fake.membership_ids().into_iter().find_map(|m| {
        let m = fake.membership(&m)?;
        let a = fake.authkit_user(&m.user_id)?;
        (m.organization_id == org
            && m.status == MembershipStatus::Active
            && a.email.eq_ignore_ascii_case(&email))
        .then_some((a, m))
    });
    let updated_at = match &link {
        Some((a, m)) => latest(&[&u.updated_at, &a.updated_at, &m.updated_at]),
        None => ms(&u.updated_at),
    };
    json!({
        "id": derived_id(&u.id, &u.created_at), "directory_id": dir,
        "user_id": link.map(|(a, _)| a.id),
        "workos_directory_user_id": u.id, "email": email,
        "first_name": u.first_name, "last_name": u.last_name,
        "state": if u.state == UserState::Active { "active" } else { "inactive" },
        "raw_attributes": u.raw_attributes.as_ref().map(|r| r.to_string()),
        "idp_id": (!u.idp_id.is_empty()).then_some(&u.idp_id),
        "created_at": ms(&u.created_at), "updated_at": updated_at,
    })
}

/// What the server answers an organization, in the same form.
async fn actual(
    client: &reqwest::Client,
    base: &str,
    org: &str,
) -> (Value, Vec<(String, Value, Value)>) {
    let get = |path: String| async move {
        client
            .get(format!("{base}{path}"))
            .bearer_auth(token_for(org))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let dirs = get("/api/directories".into()).await;
    let mut lists = Vec::new();
    for d in dirs.as_array().unwrap() {
        let id = d["id"].as_str().unwrap().to_owned();
        let users = get(format!("/api/directories/{id}/users")).await;
        let groups = get(format!("/api/directories/{id}/groups")).await;
        lists.push((id, users, groups));
    }
    (dirs, lists)
}

async fn converged(fake: &FakeWorkos, base: &str, orgs: &[String]) -> bool {
    let client = reqwest::Client::new();
    for org in orgs {
        if actual(&client, base, org).await != expected(fake, org) {
            return false;
        }
    }
    true
}

async fn assert_converges(fake: &FakeWorkos, base: &str, orgs: &[String], what: &str) {
    let started = Instant::now();
    while !converged(fake, base, orgs).await {
        if started.elapsed() > Duration::from_secs(60) {
            let client = reqwest::Client::new();
            for org in orgs {
                assert_eq!(
                    actual(&client, base, org).await,
                    expected(fake, org),
                    "{what}: {org}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Two organizations with every kind of object and edge case: nulls, an
/// empty IdP id, a suspended user, a directory being deleted, an inactive
/// one, group memberships, AuthKit users linked, pending, and of another
/// organization.
fn account(fake: &FakeWorkos) -> Vec<String> {
    let acme = fake.create_organization("Acme");
    let globex = fake.create_organization("Globex");
    let okta = fake.create_directory(&acme, "Acme Okta", |d| d.domains = vec!["acme.test".into()]);
    let gsuite = fake.create_directory(&acme, "Acme Google", |d| {
        d.kind = "gsuite directory".into();
        d.state = DirectoryState::Deleting;
        d.domains = vec![];
    });
    let azure = fake.create_directory(&globex, "Globex Entra", |d| {
        d.kind = "azure scim v2.0".into();
        d.state = DirectoryState::Inactive;
    });
    let ada = fake.create_user(&okta.id, "ada@acme.test", |_| {});
    let bob = fake.create_user(&okta.id, "bob@acme.test", |u| {
        u.state = UserState::Suspended
    });
    let _cy = fake.create_user(&okta.id, "cy@acme.test", |u| {
        u.first_name = None;
        u.last_name = None;
        u.idp_id = String::new();
        u.raw_attributes = None;
    });
    fake.create_user(&gsuite.id, "gus@acme.test", |_| {});
    let pat = fake.create_user(&azure.id, "pat@globex.test", |_| {});
    fake.create_user(&azure.id, "ada@acme.test", |_| {});
    let eng = fake.create_group(&okta.id, "Engineering", |_| {});
    let admins = fake.create_group(&okta.id, "Admins", |g| g.raw_attributes = None);
    fake.create_group(&azure.id, "Sales", |_| {});
    fake.add_member(&eng.id, &ada.id);
    fake.add_member(&eng.id, &bob.id);
    fake.add_member(&admins.id, &ada.id);
    let ada_auth = fake.create_authkit_user("Ada@Acme.test", |_| {});
    fake.create_membership(&ada_auth.id, &acme, |_| {});
    let pat_auth = fake.create_authkit_user("pat@globex.test", |_| {});
    fake.create_membership(&pat_auth.id, &globex, |m| {
        m.status = MembershipStatus::Pending
    });
    let _ = pat;
    vec![acme, globex]
}

#[tokio::test]
async fn a_backfill_copies_the_account_field_by_field_then_is_ready() {
    let fake = FakeWorkos::start(FakeOptions::default()).await;
    let orgs = account(&fake);
    // Slow enough to see the server not ready while it copies.
    fake.set_latency(Some(Duration::from_millis(150)));
    let app = app_syncing(&fake, |_| {}).await;
    let (status, body) = ready(&app.base).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready before the backfill: {body}"
    );
    assert_eq!(body["data"]["code"], "NOT_READY");
    assert!(body["data"]["sync"].is_object(), "{body}");
    fake.set_latency(None);
    wait_ready(&app.base).await;
    let (_, body) = ready(&app.base).await;
    assert_eq!(body["status"], "ready");
    assert!(body["sync"]["backfill_completed_at"].is_string(), "{body}");
    assert!(!body.to_string().contains("org_"), "no tenant data: {body}");

    let client = reqwest::Client::new();
    for org in &orgs {
        assert_eq!(
            actual(&client, &app.base, org).await,
            expected(&fake, org),
            "{org}"
        );
    }
    // Memberships are not in the Char API: read them from the database.
    let (_dir, settings) = app.stop().await;
    let store = rollcall::store::Store::open(&settings.data, Default::default()).unwrap();
    let snapshot = store.snapshot().unwrap();
    let mut members = Vec::new();
    for d in snapshot.all_directories().unwrap() {
        snapshot
            .visit_memberships(d.id, |g, u, _| {
                members.push((g.to_owned(), u.to_owned()));
                Ok::<_, rollcall::store::StoreError>(())
            })
            .unwrap();
    }
    members.sort();
    let mut want: Vec<(String, String)> = fake
        .directories()
        .iter()
        .flat_map(|d| fake.group_ids(&d.id))
        .flat_map(|g| fake.member_ids(&g).into_iter().map(move |u| (g.clone(), u)))
        .collect();
    want.sort();
    assert_eq!(members, want);
}

#[tokio::test]
async fn changes_during_and_after_the_backfill_converge() {
    let fake = FakeWorkos::start(FakeOptions::default()).await;
    let orgs = account(&fake);
    let okta = fake
        .directories()
        .into_iter()
        .find(|d| d.name == "Acme Okta")
        .unwrap();
    fake.set_latency(Some(Duration::from_millis(60)));
    let app = app_syncing(&fake, |_| {}).await;
    // While the lists are being read: changes the lists may or may not show.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let late = fake.create_user(&okta.id, "late@acme.test", |_| {});
    let ada = fake
        .user_ids(&okta.id)
        .into_iter()
        .find(|u| fake.user(u).unwrap().email.as_deref() == Some("ada@acme.test"))
        .unwrap();
    fake.update_user(&ada, |u| u.first_name = Some("Augusta".into()));
    let eng = fake.group_ids(&okta.id)[0].clone();
    fake.add_member(&eng, &late.id);
    fake.set_latency(None);
    wait_ready(&app.base).await;
    // After it: the events carry on.
    let bob = fake
        .user_ids(&okta.id)
        .into_iter()
        .find(|u| fake.user(u).unwrap().email.as_deref() == Some("bob@acme.test"))
        .unwrap();
    fake.delete_user(&bob);
    fake.update_user(&late.id, |u| u.state = UserState::Inactive);
    let new_dir = fake.create_directory(&orgs[1], "Globex Okta", |_| {});
    fake.create_user(&new_dir.id, "neo@globex.test", |_| {});
    let pat = fake
        .authkit_user_ids()
        .into_iter()
        .find(|a| fake.authkit_user(a).unwrap().email == "pat@globex.test")
        .unwrap();
    let om = fake
        .membership_ids()
        .into_iter()
        .find(|m| fake.membership(m).unwrap().user_id == pat)
        .unwrap();
    fake.update_membership(&om, |m| m.status = MembershipStatus::Active);
    assert_converges(&fake, &app.base, &orgs, "after the backfill").await;
}

#[tokio::test]
async fn workos_limits_are_kept_and_faults_are_retried() {
    let fake = FakeWorkos::start(FakeOptions {
        rate_limits: Some(RateLimits::WORKOS),
        ..FakeOptions::default()
    })
    .await;
    let seeded = fake.seed(&fake_workos::Seed {
        directories: 2,
        users_per_directory: 700,
        groups_per_directory: 3,
        groups_per_user: 1,
        ..Default::default()
    });
    // A 429 storm on the directory list, 5xx on a middle page of users, a
    // dropped connection on the groups.
    fake.fail_next("/directories", 3, 429);
    fake.fail_next("/directory_users", 2, 503);
    fake.drop_next("/directory_groups", 1);
    // rollcall is held to 3 /directory_users requests a second against the
    // fake's 4: the fake stamps a request when it gets to run, and on a
    // loaded 2-core machine running every test at once that can bunch
    // requests sent a window apart (the pacing itself, to the millisecond,
    // is the unit test `a_pace_never_lets_more_than_its_count_leave_in_a_window`).
    // Without pacing, a 700-user directory's pages would hit the limit.
    let app = app_syncing(&fake, |s| {
        *s = sync_settings(&fake, true);
        s.api.directory_users_per_second = 3;
    })
    .await;
    wait_ready(&app.base).await;
    assert_converges(
        &fake,
        &app.base,
        &seeded.organizations,
        "with limits and faults",
    )
    .await;
    let throttled: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.throttled)
        .collect();
    assert!(
        throttled.is_empty(),
        "rollcall never exceeded WorkOS's limits: {throttled:?}"
    );
    assert!(
        fake.peak_directory_rate(Duration::from_secs(1)) <= 4,
        "at most 4 requests/s per directory on /directory_users"
    );
    for d in &seeded.directories {
        // 7 pages of users, each group's members, nothing listed twice.
        assert!(fake.count_for_directory(d) >= 10, "{d}");
    }
}

#[tokio::test]
async fn a_failing_workos_keeps_the_instance_unready_and_says_so_without_details() {
    let fake = FakeWorkos::start(FakeOptions::default()).await;
    let orgs = account(&fake);
    // More failures than the retries of one step: the step fails, is
    // reported, and is tried again after a backoff.
    fake.fail_next("/directory_users", 40, 500);
    let app = app_syncing(&fake, |_| {}).await;
    eventually(Duration::from_secs(30), "a failure reported", || async {
        !ready(&app.base).await.1["data"]["sync"]["last_error"].is_null()
    })
    .await;
    let (status, body) = ready(&app.base).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["data"]["code"], "NOT_READY", "{body}");
    assert_eq!(
        body["data"]["sync"]["last_error"], "WorkOS answered 500",
        "{body}"
    );
    // Nothing of any tenant: no WorkOS id, no path, no WorkOS message.
    let text = body.to_string();
    for leak in ["directory_", "org_", "/directory", "user_"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    fake.clear_faults();
    wait_ready(&app.base).await;
    assert_converges(&fake, &app.base, &orgs, "after the outage").await;
}

#[tokio::test]
async fn reconcile_repairs_silent_drift_and_deletes_only_what_workos_confirms_gone() {
    let fake = FakeWorkos::start(FakeOptions::default()).await;
    let orgs = account(&fake);
    let app = app_syncing(&fake, |s| {
        s.reconcile_interval = Some(Duration::from_millis(700))
    })
    .await;
    wait_ready(&app.base).await;
    assert_converges(&fake, &app.base, &orgs, "backfilled").await;
    let okta = fake
        .directories()
        .into_iter()
        .find(|d| d.name == "Acme Okta")
        .unwrap();
    let azure = fake
        .directories()
        .into_iter()
        .find(|d| d.name == "Globex Entra")
        .unwrap();
    let users = fake.user_ids(&okta.id);
    let groups = fake.group_ids(&okta.id);

    // Drift no event reports: a deletion, an update, a removed membership, a
    // new user, a whole directory gone.
    fake.silently(|f| {
        f.delete_user(&users[1]);
        f.update_user(&users[0], |u| u.last_name = Some("Byron".into()));
        f.remove_member(&groups[0], &users[0]);
        f.create_user(&okta.id, "missed@acme.test", |_| {});
        f.delete_directory(&azure.id);
    });
    assert_converges(&fake, &app.base, &orgs, "repaired by reconcile").await;
    let (_, body) = ready(&app.base).await;
    let report = &body["sync"]["last_reconcile"];
    assert!(report["deleted"].as_u64().unwrap() >= 1, "{report}");

    // A listing that fails midway deletes nothing in its directory.
    fake.silently(|f| f.delete_user(&users[2]));
    fake.fail_next("/directory_users", 1000, 500);
    let at = ready(&app.base).await.1["sync"]["last_reconcile"]["at"].clone();
    eventually(
        Duration::from_secs(30),
        "a round with the failing listing",
        || async { ready(&app.base).await.1["sync"]["last_reconcile"]["at"] != at },
    )
    .await;
    let client = reqwest::Client::new();
    let (_, lists) = actual(&client, &app.base, &orgs[0]).await;
    let okta_id = derived_id(&okta.id, &okta.created_at);
    let held = &lists.iter().find(|(id, _, _)| *id == okta_id).unwrap().1;
    assert!(
        held.as_array()
            .unwrap()
            .iter()
            .any(|u| u["workos_directory_user_id"] == users[2].as_str()),
        "kept while its directory could not be listed completely"
    );
    let (_, body) = ready(&app.base).await;
    assert_eq!(body["sync"]["last_reconcile"]["complete"], false, "{body}");
    fake.clear_faults();
    assert_converges(
        &fake,
        &app.base,
        &orgs,
        "deleted once the listing is complete",
    )
    .await;

    // A round that finds nothing to change writes nothing: not a byte of
    // the file, not an ETag.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = std::fs::read(&app.db_path).unwrap();
    let tags = every_answer(&app.client, &app.base, &[&orgs[0], &orgs[1]]).await;
    let at = ready(&app.base).await.1["sync"]["last_reconcile"]["at"].clone();
    eventually(Duration::from_secs(10), "another round", || async {
        ready(&app.base).await.1["sync"]["last_reconcile"]["at"] != at
    })
    .await;
    assert!(
        std::fs::read(&app.db_path).unwrap() == before,
        "the file is untouched"
    );
    let again = every_answer(&app.client, &app.base, &[&orgs[0], &orgs[1]]).await;
    assert_same_answers(&again, &tags, "after a no-change reconcile");
}

#[tokio::test]
async fn a_killed_backfill_resumes_and_converges() {
    let fake = FakeWorkos::start(FakeOptions::default()).await;
    let seeded = fake.seed(&fake_workos::Seed {
        directories: 6,
        users_per_directory: 300,
        groups_per_directory: 2,
        groups_per_user: 1,
        authkit_users_per_directory: 3,
        ..Default::default()
    });
    fake.set_latency(Some(Duration::from_millis(40)));
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("db.redb");
    let args = [
        "--workos-api-key",
        fake.api_key(),
        "--workos-api-url",
        &fake.base_url(),
        "--workos-requests-per-minute",
        "0",
        "--workos-directory-users-per-second",
        "0",
        "--sync-concurrency",
        "2",
        "--poll-interval-secs",
        "1",
    ];
    let first = Process::start(dir.path(), &data, &args);
    eventually(
        Duration::from_secs(60),
        "some directories copied",
        || async {
            ready(&first.base).await.1["data"]["sync"]["backfill_directories"][0]
                .as_u64()
                .is_some_and(|done| done >= 2)
        },
    )
    .await;
    first.kill();
    let copied_before: Vec<usize> = seeded
        .directories
        .iter()
        .map(|d| fake.count_for_directory(d))
        .collect();
    fake.set_latency(None);
    // Changes while it was down arrive as events after the restart.
    let first_dir = seeded.directories[0].clone();
    fake.create_user(&first_dir, "while-down@x.test", |_| {});

    let second = Process::start(dir.path(), &data, &args);
    wait_ready(&second.base).await;
    assert_converges(
        &fake,
        &second.base,
        &seeded.organizations,
        "after the restart",
    )
    .await;
    let (_, body) = ready(&second.base).await;
    let resumed: usize = seeded
        .directories
        .iter()
        .zip(&copied_before)
        .filter(|(d, before)| fake.count_for_directory(d) == **before)
        .count();
    assert!(
        resumed >= 1,
        "directories done before the kill are not read again ({body})"
    );
    assert!(second.stop().success());
}

/// Pretends the server last followed the events `ago` before now (its own
/// clock), as after an outage, by writing the marker sync keeps.
fn last_followed(data: &std::path::Path, ago: Duration) {
    let store = Store::open(data, StoreOptions::default()).unwrap();
    let then = rollcall::model::Timestamp::now().0 - i64::try_from(ago.as_micros()).unwrap();
    store
        .write(|tx| tx.set_mark("sync.events.polled_at", Some(&then.to_le_bytes())))
        .unwrap();
}

#[tokio::test]
async fn a_gap_longer_than_the_events_window_backfills_again_and_repairs_deletions() {
    let fake = FakeWorkos::start(FakeOptions::default()).await;
    let orgs = account(&fake);
    let app = app_syncing(&fake, |_| {}).await;
    wait_ready(&app.base).await;
    assert_converges(&fake, &app.base, &orgs, "backfilled").await;
    let (dir, settings) = app.stop().await;

    // While rollcall is away for 31 days: a deletion, an update and a new
    // user, whose events then fall out of the Events API's 30 days.
    let okta = fake
        .directories()
        .into_iter()
        .find(|d| d.name == "Acme Okta")
        .unwrap();
    let users = fake.user_ids(&okta.id);
    fake.delete_user(&users[0]);
    fake.update_user(&users[1], |u| u.job_title = Some("Away".into()));
    fake.create_user(&okta.id, "joined@acme.test", |_| {});
    let away = fake_workos::EVENT_RETENTION + Duration::from_secs(24 * 3600);
    fake.advance(away);
    last_followed(&settings.data, away);

    // No reconcile is scheduled: the repair comes with the new backfill.
    let app = spawn_with(settings, dir).await;
    wait_ready(&app.base).await;
    assert_converges(&fake, &app.base, &orgs, "backfilled again and repaired").await;
    let (_, body) = ready(&app.base).await;
    let report = &body["sync"]["last_reconcile"];
    assert_eq!(report["deleted"], 1, "{body}");
    assert_eq!(report["complete"], true, "{body}");
    // The repair is paid: the next start owes none.
    let (dir, settings) = app.stop().await;
    let store = Store::open(&settings.data, StoreOptions::default()).unwrap();
    let owed = store
        .snapshot()
        .unwrap()
        .mark("sync.backfill.repair_owed")
        .unwrap();
    assert_eq!(owed, None);
    drop((store, dir));
}

/// `rollcall sync` against `fake`, run off the test's own runtime (which
/// serves the fake meanwhile).
async fn rollcall_sync(fake: &FakeWorkos, data: &std::path::Path) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--data")
        .arg(data)
        .args([
            "sync",
            "--workos-api-key",
            fake.api_key(),
            "--workos-api-url",
            &fake.base_url(),
        ])
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn rollcall_sync_copies_offline_and_reports() {
    let fake = FakeWorkos::start(FakeOptions::default()).await;
    let orgs = account(&fake);
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("db.redb");
    let out = rollcall_sync(&fake, &data).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("synced: backfill 3 directories"),
        "{stderr}"
    );
    assert!(
        stderr.contains("no reconcile needed after a first backfill"),
        "{stderr}"
    );

    // Run again after silent drift: nothing to backfill, a reconcile round.
    let okta = fake
        .directories()
        .into_iter()
        .find(|d| d.name == "Acme Okta")
        .unwrap();
    fake.silently(|f| f.delete_user(&f.user_ids(&okta.id)[0]));
    let out = rollcall_sync(&fake, &data).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("synced: backfill 0 directories"),
        "{stderr}"
    );
    assert!(
        stderr.contains("reconcile 0 created, 0 updated, 1 deleted"),
        "{stderr}"
    );

    let mut s = settings(dir.path());
    s.data = data;
    let app = spawn_with(s, Arc::new(dir)).await;
    for org in &orgs {
        assert_eq!(
            actual(&app.client, &app.base, org).await,
            expected(&fake, org)
        );
    }
}

/// Three instances fed differently — one by `rollcall sync` (backfill
/// only), one by the whole event history as webhooks, one killed mid-
/// backfill and restarted, then following events — answer every route
/// byte for byte alike: bodies, ids, ETags, `Link` headers.
#[tokio::test]
async fn three_instances_fed_differently_answer_byte_identically() {
    let fake = FakeWorkos::start(FakeOptions::default()).await;
    let orgs = account(&fake);
    // WorkOS sends no event when a directory turns inactive or starts
    // deleting, so those states reach rollcall only through the lists (the
    // backfill test covers them). Here every directory is activated, after
    // its users were created: the event-fed instance meets users first.
    for d in fake
        .directories()
        .iter()
        .filter(|d| d.state != DirectoryState::Active)
    {
        fake.update_directory(&d.id, |d| d.state = DirectoryState::Active);
    }
    // More history: updates, deletions, memberships coming and going.
    let okta = fake
        .directories()
        .into_iter()
        .find(|d| d.name == "Acme Okta")
        .unwrap();
    for i in 0..40 {
        let u = fake.create_user(&okta.id, &format!("u{i}@acme.test"), |_| {});
        if i % 3 == 0 {
            fake.update_user(&u.id, |u| u.job_title = Some("Lead".into()));
        }
        if i % 5 == 0 {
            fake.add_member(&fake.group_ids(&okta.id)[0], &u.id);
        }
        if i % 7 == 0 {
            fake.delete_user(&u.id);
        }
    }
    let temp = fake.create_directory(&orgs[0], "Temp", |_| {});
    fake.create_user(&temp.id, "temp@acme.test", |_| {});
    fake.delete_directory(&temp.id);

    // 3: killed mid-backfill, restarted, then events.
    fake.set_latency(Some(Duration::from_millis(60)));
    let dir3 = TempDir::new().unwrap();
    let data3 = dir3.path().join("db.redb");
    let args = [
        "--workos-api-key",
        fake.api_key(),
        "--workos-api-url",
        &fake.base_url(),
        "--sync-concurrency",
        "1",
        "--poll-interval-secs",
        "1",
    ];
    let first = Process::start(dir3.path(), &data3, &args);
    eventually(Duration::from_secs(60), "a directory copied", || async {
        ready(&first.base).await.1["data"]["sync"]["backfill_directories"][0]
            .as_u64()
            .is_some_and(|done| done >= 1)
    })
    .await;
    first.kill();
    fake.set_latency(None);
    // Changes after the kill: followed as events by 3, listed by 1.
    let late = fake.create_user(&okta.id, "late@acme.test", |_| {});
    fake.add_member(&fake.group_ids(&okta.id)[1], &late.id);
    let third = Process::start(dir3.path(), &data3, &args);
    wait_ready(&third.base).await;
    assert_converges(&fake, &third.base, &orgs, "instance 3").await;

    // 1: rollcall sync, offline, from the final state.
    let dir1 = TempDir::new().unwrap();
    let data1 = dir1.path().join("db.redb");
    let out = rollcall_sync(&fake, &data1).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut s1 = settings(dir1.path());
    s1.data = data1;
    let first_instance = spawn_with(s1, Arc::new(dir1)).await;

    // 2: every event, from the start, as signed webhooks.
    let second_instance = spawn_app().await;
    second_instance.send_all(&fake.events()).await;

    let orgs: Vec<&str> = orgs.iter().map(String::as_str).collect();
    let one = every_answer(&first_instance.client, &first_instance.base, &orgs).await;
    let two = every_answer(&second_instance.client, &second_instance.base, &orgs).await;
    let three = every_answer(&reqwest::Client::new(), &third.base, &orgs).await;
    assert!(one.len() > 10);
    assert_same_answers(&one, &two, "backfill only vs the whole event history");
    assert_same_answers(
        &one,
        &three,
        "backfill only vs killed mid-backfill, then events",
    );
    assert!(third.stop().success());
}
