//! The fake WorkOS API (`tests/support/fake_workos.rs`) as a process, for
//! benchmarks and for the check against the official Python SDK
//! (`tests/python/check_fake_workos.py`).
//!
//! ```sh
//! cargo run --release --example fake_workos -- --listen 127.0.0.1:0 \
//!     --seed-directories 10 --seed-users 100000 --rate-limits
//! ```
//!
//! Prints one JSON line on stdout once serving — `base_url`, `api_key`, and
//! what it holds (`directories` with their user and group counts, `events`
//! by type) — then serves until SIGINT/SIGTERM. Commands on stdin, one per
//! line, each answered with one JSON line: `fail PREFIX COUNT STATUS`,
//! `drop PREFIX COUNT`, `latency MS`, `limits on|off`, `stats`.

#[path = "../tests/support/fake_workos.rs"]
mod fake_workos;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use fake_workos::{
    DirectoryState, FakeOptions, FakeWorkos, MembershipStatus, RateLimits, Role, Seed, UserState,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser)]
#[command(about = "A fake WorkOS API (directory sync, AuthKit users, Events API)")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[arg(long, default_value = "sk_test_fake_workos")]
    api_key: String,
    /// Seed of the generated content.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 0)]
    seed_directories: usize,
    /// Directory users in all, spread evenly over the directories.
    #[arg(long, default_value_t = 0)]
    seed_users: usize,
    /// Groups per directory.
    #[arg(long, default_value_t = 4)]
    seed_groups: usize,
    /// Groups each seeded user is a member of.
    #[arg(long, default_value_t = 1)]
    groups_per_user: usize,
    /// AuthKit users (with an active membership) per directory.
    #[arg(long, default_value_t = 0)]
    seed_authkit: usize,
    /// Enforce WorkOS's published rate limits.
    #[arg(long)]
    rate_limits: bool,
    /// Latency added to every answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Also apply the scripted changes the Python SDK check walks: every
    /// event type, nulls, a suspended user, a deleting directory, AuthKit
    /// users and organization memberships.
    #[arg(long)]
    scenario: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let fake = FakeWorkos::start(FakeOptions {
        listen: args.listen,
        api_key: args.api_key.clone(),
        rate_limits: args.rate_limits.then_some(RateLimits::WORKOS),
        latency: (args.latency_ms > 0).then(|| Duration::from_millis(args.latency_ms)),
        frozen_at: None,
    })
    .await;
    if args.seed_directories > 0 {
        let started = std::time::Instant::now();
        let seeded = fake.seed(&Seed {
            seed: args.seed,
            directories: args.seed_directories,
            users_per_directory: args.seed_users / args.seed_directories,
            groups_per_directory: args.seed_groups,
            groups_per_user: args.groups_per_user,
            authkit_users_per_directory: args.seed_authkit,
        });
        eprintln!(
            "seeded {} directories, {} users, {} groups in {} ms",
            seeded.directories.len(),
            seeded.users,
            seeded.groups,
            started.elapsed().as_millis()
        );
    }
    if args.scenario {
        scenario(&fake);
    }
    say(&summary(&fake));

    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM can be watched");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) => say(&command(&fake, &line)),
                _ => stdin_open = false,
            },
        }
    }
    fake.stop().await;
    // Not a return: tokio's stdin reader would hold the runtime open.
    std::process::exit(0);
}

/// One JSON line on stdout; a reader gone is not an error worth a panic.
fn say(line: &Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn command(fake: &FakeWorkos, line: &str) -> Value {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["fail", prefix, count, status] => match (count.parse(), status.parse()) {
            (Ok(count), Ok(status)) => {
                fake.fail_next(prefix, count, status);
                json!({"ok": true})
            }
            _ => json!({"error": "fail PREFIX COUNT STATUS"}),
        },
        ["drop", prefix, count] => match count.parse() {
            Ok(count) => {
                fake.drop_next(prefix, count);
                json!({"ok": true})
            }
            Err(_) => json!({"error": "drop PREFIX COUNT"}),
        },
        ["latency", ms] => match ms.parse::<u64>() {
            Ok(ms) => {
                fake.set_latency((ms > 0).then(|| Duration::from_millis(ms)));
                json!({"ok": true})
            }
            Err(_) => json!({"error": "latency MS"}),
        },
        ["limits", "on"] => {
            fake.set_rate_limits(Some(RateLimits::WORKOS));
            json!({"ok": true})
        }
        ["limits", "off"] => {
            fake.set_rate_limits(None);
            json!({"ok": true})
        }
        ["stats"] => {
            let mut routes: BTreeMap<&str, usize> = BTreeMap::new();
            for r in fake.requests() {
                *routes.entry(r.route).or_default() += 1;
            }
            json!({
                "requests": routes,
                "throttled": fake.throttled(),
                "peak_directory_users_per_second": fake.peak_directory_rate(Duration::from_secs(1)),
            })
        }
        _ => json!({"error": format!("unknown command: {line}")}),
    }
}

/// What the fake holds, for the caller to compare its listing with.
fn summary(fake: &FakeWorkos) -> Value {
    let directories: serde_json::Map<String, Value> = fake
        .directories()
        .into_iter()
        .map(|d| {
            let groups: serde_json::Map<String, Value> = fake
                .group_ids(&d.id)
                .into_iter()
                .map(|g| {
                    let members = fake.member_ids(&g).len();
                    (g, json!(members))
                })
                .collect();
            let value = json!({
                "organization_id": d.organization_id,
                "state": d.state.api_name(),
                "users": fake.user_ids(&d.id).len(),
                "groups": groups,
            });
            (d.id, value)
        })
        .collect();
    let mut events: BTreeMap<String, usize> = BTreeMap::new();
    for e in fake.events() {
        if let Some(kind) = e["event"].as_str() {
            *events.entry(kind.to_owned()).or_default() += 1;
        }
    }
    let memberships: Vec<Value> = fake
        .membership_ids()
        .iter()
        .filter_map(|id| fake.membership(id))
        .map(|m| json!({"id": m.id, "user_id": m.user_id, "organization_id": m.organization_id, "status": m.status}))
        .collect();
    json!({
        "base_url": fake.base_url(),
        "api_key": fake.api_key(),
        "directories": directories,
        "authkit_users": fake.authkit_user_ids(),
        "memberships": memberships,
        "events": events,
    })
}

/// Every kind of change once or more, with the awkward values a client
/// must survive.
fn scenario(fake: &FakeWorkos) {
    let org = fake.create_organization("Scenario Corp");
    let dir = fake.create_directory(&org, "Scenario Okta", |_| {});
    let ada = fake.create_user(&dir.id, "ada.lovelace@scenario.test", |u| {
        u.job_title = Some("Engineer".into());
    });
    // Every nullable field null, `emails` and `raw_attributes` absent-ish.
    let bare = fake.create_user(&dir.id, "bare@scenario.test", |u| {
        u.email = None;
        u.emails = None;
        u.first_name = None;
        u.last_name = None;
        u.username = None;
        u.role = None;
        u.raw_attributes = None;
        u.idp_id = String::new();
    });
    let suspended = fake.create_user(&dir.id, "grace.hopper@scenario.test", |u| {
        u.state = UserState::Suspended;
        u.custom_attributes
            .insert("department".into(), json!("Navy"));
    });
    let gone = fake.create_user(&dir.id, "gone@scenario.test", |_| {});
    let eng = fake.create_group(&dir.id, "Engineering", |_| {});
    let ops = fake.create_group(&dir.id, "Operations", |g| g.raw_attributes = None);
    let temp = fake.create_group(&dir.id, "Temporary", |_| {});
    fake.add_member(&eng.id, &ada.id);
    fake.add_member(&eng.id, &suspended.id);
    fake.add_member(&ops.id, &ada.id);
    fake.add_member(&ops.id, &bare.id);
    fake.remove_member(&ops.id, &ada.id);
    fake.update_user(&ada.id, |u| u.last_name = Some("King".into()));
    fake.update_group(&eng.id, |g| g.name = "Engineering & Research".into());
    fake.delete_user(&gone.id);
    fake.delete_group(&temp.id);

    // A directory being deleted (still listed), one deleted, one inactive.
    let leaving = fake.create_directory(&org, "Scenario Azure", |d| {
        d.kind = "azure scim v2.0".into()
    });
    fake.create_user(&leaving.id, "leaving@scenario.test", |_| {});
    fake.update_directory(&leaving.id, |d| d.state = DirectoryState::Deleting);
    let deleted = fake.create_directory(&org, "Scenario Google", |d| {
        d.kind = "gsuite directory".into()
    });
    fake.delete_directory(&deleted.id);
    fake.create_directory(&org, "Scenario Rippling", |d| {
        d.kind = "rippling scim v2.0".into();
        d.state = DirectoryState::Inactive;
        d.domains.clear();
    });

    // AuthKit: a user matching ada (linked once a member), a pending one, one deleted.
    let ak = fake.create_authkit_user("Ada.Lovelace@scenario.test", |_| {});
    fake.update_authkit_user(&ak.id, |u| u.last_sign_in_at = Some(u.created_at.clone()));
    let pending = fake.create_authkit_user("new.hire@scenario.test", |u| {
        u.email_verified = false;
        u.last_name = None;
    });
    let leaver = fake.create_authkit_user("leaver@scenario.test", |_| {});
    let m = fake.create_membership(&ak.id, &org, |_| {});
    fake.update_membership(&m.id, |m| {
        m.role = Role {
            slug: "admin".into(),
        };
        m.roles = vec![m.role.clone()];
    });
    fake.create_membership(&pending.id, &org, |m| m.status = MembershipStatus::Pending);
    let old = fake.create_membership(&leaver.id, &org, |m| m.status = MembershipStatus::Inactive);
    fake.delete_membership(&old.id);
    fake.delete_authkit_user(&leaver.id);
}
